//! A network partition between one process and a loopback server, made in the kernel with
//! iptables (root): the process reaches the server through its own port, which a NAT rule
//! redirects to the server's; [`Partition::cut`] then drops every packet of those connections
//! in both directions (conntrack matches the port the connection was opened to). Nothing is
//! closed or reset: open connections go silent, new ones hang in SYN, and the server's TCP
//! keepalives go unanswered, as when a host drops off the network. [`Partition::heal`] lets
//! packets through again. The rules go when it is dropped.
//!
//! Used by `#[path]` (not every test binary needs it).

use std::process::Command;

pub struct Partition {
    /// The port the cut-off process connects to.
    pub port: u16,
    target: u16,
    cut: bool,
}

fn iptables(args: &[String]) -> Result<(), String> {
    let out = Command::new("iptables")
        .args(["-w", "5"])
        .args(args)
        .output()
        .map_err(|e| format!("iptables: {e}"))?;
    if out.status.success() {
        Ok(())
    } else {
        Err(format!(
            "iptables {}: {}",
            args.join(" "),
            String::from_utf8_lossy(&out.stderr).trim()
        ))
    }
}

fn strings(a: &[&str]) -> Vec<String> {
    a.iter().map(|s| s.to_string()).collect()
}

impl Partition {
    /// Redirects loopback port `port` (free) to `target` (the server's). `Err` when iptables is
    /// missing or this is not root.
    pub fn new(port: u16, target: u16) -> Result<Partition, String> {
        let p = Partition {
            port,
            target,
            cut: false,
        };
        iptables(&p.redirect_rule("-A"))?;
        Ok(p)
    }

    /// Like [`Partition::new`], or `None` (the test skipped, reason printed) where iptables
    /// cannot be used; under CI that is a failure.
    pub fn new_or_skip(port: u16, target: u16) -> Option<Partition> {
        match Partition::new(port, target) {
            Ok(p) => Some(p),
            Err(e) => {
                assert!(
                    std::env::var_os("CI").is_none(),
                    "a partition needs iptables as root: {e}"
                );
                eprintln!("SKIPPED: a partition needs iptables as root: {e}");
                None
            }
        }
    }

    fn redirect_rule(&self, op: &str) -> Vec<String> {
        strings(&[
            "-t",
            "nat",
            op,
            "OUTPUT",
            "-o",
            "lo",
            "-p",
            "tcp",
            "-d",
            "127.0.0.1",
            "--dport",
            &self.port.to_string(),
            "-j",
            "REDIRECT",
            "--to-ports",
            &self.target.to_string(),
        ])
    }

    /// Dropped on arrival (INPUT), so the sender's writes succeed and go nowhere; both
    /// directions belong to the connection opened to `port`.
    fn drop_rule(&self, op: &str) -> Vec<String> {
        strings(&[
            op,
            "INPUT",
            "-i",
            "lo",
            "-p",
            "tcp",
            "-m",
            "conntrack",
            "--ctorigdst",
            "127.0.0.1",
            "--ctorigdstport",
            &self.port.to_string(),
            "-j",
            "DROP",
        ])
    }

    pub fn cut(&mut self) {
        assert!(!self.cut, "already cut");
        iptables(&self.drop_rule("-I")).unwrap();
        self.cut = true;
    }

    pub fn heal(&mut self) {
        assert!(self.cut, "not cut");
        iptables(&self.drop_rule("-D")).unwrap();
        self.cut = false;
    }
}

impl Drop for Partition {
    fn drop(&mut self) {
        if self.cut {
            let _ = iptables(&self.drop_rule("-D"));
        }
        let _ = iptables(&self.redirect_rule("-D"));
    }
}
