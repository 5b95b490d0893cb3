//! [`Iptables`]: the [`Firewall`] applied with the `iptables` and `iptables-restore` tools
//! (Debian's `iptables` package; either backend, legacy or nf_tables, as long as it is the one
//! Docker uses, which is the system's default `iptables`). `-w` makes each call wait for the
//! xtables lock, so several latticed processes on one host do not trip over each other.

use super::plan::{clear_script, jumps, restore_script};
use super::{Firewall, FirewallError, Guarded};
use std::io::Write as _;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::sync::Mutex;

#[derive(Debug)]
pub struct Iptables {
    iptables: PathBuf,
    restore: PathBuf,
    /// One sync at a time from this process (the tools' lock covers other processes).
    busy: Mutex<()>,
}

impl Default for Iptables {
    fn default() -> Self {
        Self::with_tools("iptables", "iptables-restore")
    }
}

impl Iptables {
    /// The tools found on `PATH`.
    pub fn new() -> Self {
        Self::default()
    }

    /// Given tool paths (tests point these at missing files to see the error).
    pub fn with_tools(iptables: impl Into<PathBuf>, restore: impl Into<PathBuf>) -> Self {
        Iptables {
            iptables: iptables.into(),
            restore: restore.into(),
            busy: Mutex::new(()),
        }
    }

    fn run(
        &self,
        tool: &PathBuf,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<Output, FirewallError> {
        let name = tool.display().to_string();
        let mut child = Command::new(tool)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| match e.kind() {
                std::io::ErrorKind::NotFound => FirewallError::Missing(format!(
                    "{name} not found: install Debian's iptables package (workloads are not \
                     started without their firewall)"
                )),
                _ => FirewallError::Refused {
                    tool: name.clone(),
                    reason: e.to_string(),
                },
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            match pipe.write_all(text.as_bytes()) {
                // The tool exited before reading everything: its exit status and what it said
                // tell why, below.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => {}
                Err(e) => {
                    return Err(FirewallError::Refused {
                        tool: name.clone(),
                        reason: format!("writing rules: {e}"),
                    })
                }
                Ok(()) => {}
            }
        }
        child
            .wait_with_output()
            .map_err(|e| FirewallError::Refused {
                tool: name,
                reason: e.to_string(),
            })
    }

    fn check(
        &self,
        tool: &PathBuf,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<(), FirewallError> {
        let out = self.run(tool, args, stdin)?;
        if out.status.success() {
            return Ok(());
        }
        Err(FirewallError::Refused {
            tool: format!("{} {}", tool.display(), args.join(" ")),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        })
    }

    /// True when `from` already jumps to `to`.
    fn has_jump(&self, from: &str, to: &str) -> Result<bool, FirewallError> {
        Ok(self
            .run(&self.iptables, &["-w", "-C", from, "-j", to], None)?
            .status
            .success())
    }
}

impl Firewall for Iptables {
    fn sync(&self, node_id: &str, guarded: &[Guarded]) -> Result<(), FirewallError> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        if guarded.is_empty() {
            // Nothing to guard: no chains at all, so a node without workloads (or one that
            // never runs any) leaves nothing in the host's tables.
            return self.remove_chains(node_id);
        }
        // Rules first (creating the chains), then the jumps into them.
        self.check(
            &self.restore,
            &["-w", "--noflush"],
            Some(&restore_script(node_id, guarded)),
        )?;
        for jump in jumps(node_id) {
            if self.has_jump(jump.from, &jump.to)? {
                continue;
            }
            self.check(
                &self.iptables,
                &["-w", "-I", jump.from, "1", "-j", &jump.to],
                None,
            )
            .map_err(|e| match e {
                FirewallError::Refused { tool, reason } if jump.from == "DOCKER-USER" => {
                    FirewallError::Refused {
                        tool,
                        reason: format!(
                            "{reason} (Docker makes DOCKER-USER when it manages iptables: \
                                 is dockerd running with --iptables=false?)"
                        ),
                    }
                }
                e => e,
            })?;
        }
        Ok(())
    }

    fn clear(&self, node_id: &str) -> Result<(), FirewallError> {
        let _one = self.busy.lock().unwrap_or_else(|p| p.into_inner());
        self.remove_chains(node_id)
    }
}

impl Iptables {
    /// The jumps, then the chains (callers hold `busy`).
    fn remove_chains(&self, node_id: &str) -> Result<(), FirewallError> {
        for jump in jumps(node_id) {
            while self.has_jump(jump.from, &jump.to)? {
                self.check(
                    &self.iptables,
                    &["-w", "-D", jump.from, "-j", &jump.to],
                    None,
                )?;
            }
        }
        // The chains may not exist (never synced): declaring them first makes -X safe.
        self.check(
            &self.restore,
            &["-w", "--noflush"],
            Some(&clear_script(node_id)),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one() -> Vec<Guarded> {
        vec![Guarded {
            workload_id: "w-a".into(),
            bridge: "ltabc".into(),
            egress: false,
            upstreams: None,
        }]
    }

    #[test]
    fn a_missing_tool_is_named_with_its_package() {
        let fw = Iptables::with_tools("/nonexistent/iptables", "/nonexistent/iptables-restore");
        // An empty set removes the chains, which needs iptables itself.
        let err = fw.sync("n-1", &[]).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/iptables not found"),
            "{err}"
        );
        let err = fw.sync("n-1", &one()).unwrap_err();
        assert!(matches!(err, FirewallError::Missing(_)), "{err:?}");
        let text = err.to_string();
        assert!(
            text.contains("/nonexistent/iptables-restore") && text.contains("iptables package"),
            "{text}"
        );
    }

    #[test]
    fn a_refusal_carries_what_the_tool_said() {
        // `false` stands in for a tool that refuses the rules.
        let fw = Iptables::with_tools("false", "false");
        let err = fw.sync("n-1", &one()).unwrap_err();
        assert!(matches!(err, FirewallError::Refused { .. }), "{err:?}");
        assert!(err.to_string().contains("false -w --noflush"), "{err}");
    }
}
