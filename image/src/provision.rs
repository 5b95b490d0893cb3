//! `lattice image provision`: writes the provisioning string (and optionally SSH public keys
//! and a Wi-Fi network) into the config partition of an existing raw image, without mounting anything: mtools
//! writes into the FAT at the partition's byte offset (`IMAGE@@OFFSET`). The image must pass
//! the GPT checks and have the `lattice-config` partition; the string must parse.

use crate::gpt::{GptError, GptTable};
use crate::layout::Role;
use crate::system::{AUTHORIZED_KEYS_FILE, PROVISIONING_FILE, WIFI_FILE};
use crate::tools::{Cmd, Runner, ToolError};
use lattice_wire::register::{Provisioning, ProvisioningError};
use lattice_wire::wifi::WifiConfig;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error("invalid provisioning string: {0}")]
    Provisioning(#[from] ProvisioningError),
    #[error("invalid SSH public key on line {line}: expected `TYPE BASE64 [COMMENT]` with TYPE ssh-ed25519, ssh-rsa, ecdsa-sha2-… or sk-…")]
    SshKey { line: usize },
    #[error(transparent)]
    Gpt(#[from] GptError),
    #[error(transparent)]
    Tool(#[from] ToolError),
    #[error("writing {path}: {source}")]
    Temp {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

/// What to write.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Provision {
    pub provisioning: String,
    /// `authorized_keys` text; SSH is turned on only when present.
    pub authorized_keys: Option<String>,
    /// The Wi-Fi network to join (checked when it was made: [`WifiConfig::new`]).
    pub wifi: Option<WifiConfig>,
}

impl Provision {
    /// Checks both inputs; returns the provisioning string normalised to one line.
    pub fn validate(&self) -> Result<Provision, ProvisionError> {
        let p = Provisioning::parse(&self.provisioning)?;
        let keys = match &self.authorized_keys {
            None => None,
            Some(text) => {
                check_keys(text)?;
                Some(text.trim().to_string() + "\n")
            }
        };
        Ok(Provision {
            provisioning: p.encode() + "\n",
            authorized_keys: keys,
            wifi: self.wifi.clone(),
        })
    }
}

fn check_keys(text: &str) -> Result<(), ProvisionError> {
    let mut any = false;
    for (i, line) in text.lines().enumerate() {
        let l = line.trim();
        if l.is_empty() || l.starts_with('#') {
            continue;
        }
        let mut f = l.split_whitespace();
        let ty = f.next().unwrap_or("");
        let body = f.next().unwrap_or("");
        let known = ty.starts_with("ssh-") || ty.starts_with("ecdsa-") || ty.starts_with("sk-");
        if !known || body.len() < 16 {
            return Err(ProvisionError::SshKey { line: i + 1 });
        }
        any = true;
    }
    if any {
        Ok(())
    } else {
        Err(ProvisionError::SshKey { line: 1 })
    }
}

/// The mtools commands that write `files` (name on the partition, local file) into the FAT
/// starting at byte `offset` of `image`.
pub fn write_cmds(image: &Path, offset: u64, files: &[(&str, PathBuf)]) -> Vec<Cmd> {
    let target = format!("{}@@{offset}", image.display());
    files
        .iter()
        .map(|(name, local)| {
            Cmd::new("mcopy")
                .args(["-o", "-i"])
                .arg(&target)
                .arg(local)
                .arg(format!("::/{name}"))
        })
        .collect()
}

/// Validates, finds the config partition, and writes the files into it.
pub fn provision(
    image: &Path,
    request: &Provision,
    runner: &mut dyn Runner,
) -> Result<u64, ProvisionError> {
    let valid = request.validate()?;
    let table = GptTable::read(image)?;
    let part = table.find(Role::Config.part_label(), image)?;
    runner.require(&["mcopy"])?;
    // A private directory of its own (0700, a name no one can guess or take first): the files
    // hold the token and the Wi-Fi passphrase.
    let tmp_dir = tempfile::Builder::new()
        .prefix("lattice-provision-")
        .tempdir()
        .map_err(|source| ProvisionError::Temp {
            path: std::env::temp_dir(),
            source,
        })?;
    let tmp = tmp_dir.path();
    let mut files = vec![(PROVISIONING_FILE, tmp.join(PROVISIONING_FILE))];
    write_private(&files[0].1, &valid.provisioning)?;
    if let Some(keys) = &valid.authorized_keys {
        let p = tmp.join(AUTHORIZED_KEYS_FILE);
        write_private(&p, keys)?;
        files.push((AUTHORIZED_KEYS_FILE, p));
    }
    if let Some(wifi) = &valid.wifi {
        let p = tmp.join(WIFI_FILE);
        write_private(&p, &wifi.encode())?;
        files.push((WIFI_FILE, p));
    }
    let result = write_cmds(image, part.offset_bytes(), &files)
        .iter()
        .try_for_each(|c| runner.run(c).map(|_| ()));
    drop(tmp_dir);
    result?;
    Ok(part.offset_bytes())
}

fn write_private(path: &Path, text: &str) -> Result<(), ProvisionError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .create_new(true)
        .write(true)
        .mode(0o600)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .map_err(|source| ProvisionError::Temp {
            path: path.to_path_buf(),
            source,
        })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tools::FakeRunner;
    use lattice_wire::keys::IdentityKey;

    fn good_string() -> String {
        Provisioning {
            url: "https://10.0.2.2:8443".into(),
            token: "tok".into(),
            fleet_key: IdentityKey::generate().public().to_string(),
        }
        .encode()
    }

    fn image_with_config(dir: &Path) -> PathBuf {
        let img = dir.join("disk.img");
        let d = crate::gpt::tests::disk(&[("lattice-config", 40, 59)], 64 * 512);
        std::fs::write(&img, d).unwrap();
        img
    }

    #[test]
    fn writes_the_string_into_the_config_partition_at_its_offset() {
        let dir = tempfile::tempdir().unwrap();
        let img = image_with_config(dir.path());
        let mut r = FakeRunner::default();
        let req = Provision {
            provisioning: format!("  {}\n", good_string()),
            authorized_keys: Some("ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIabc test\n".into()),
            wifi: Some(WifiConfig::new("Home", Some("correct horse"), Some("de")).unwrap()),
        };
        let offset = provision(&img, &req, &mut r).unwrap();
        assert_eq!(offset, 40 * 512);
        assert_eq!(r.ran.len(), 3);
        assert!(r.ran[2].display().ends_with("::/wifi"));
        let shown = r.ran[0].display();
        assert!(
            shown.contains(&format!("{}@@20480", img.display())),
            "{shown}"
        );
        assert!(shown.ends_with("::/provisioning"));
        assert!(r.ran[1].display().ends_with("::/authorized_keys"));
    }

    #[test]
    fn a_bad_string_is_refused_before_the_image_is_touched() {
        let dir = tempfile::tempdir().unwrap();
        let img = image_with_config(dir.path());
        let mut r = FakeRunner::default();
        let req = Provision {
            provisioning: "lattice1:not-base64!".into(),
            authorized_keys: None,
            wifi: None,
        };
        let e = provision(&img, &req, &mut r).unwrap_err();
        assert!(
            e.to_string().starts_with("invalid provisioning string"),
            "{e}"
        );
        assert!(r.ran.is_empty());
        let req = Provision {
            provisioning: good_string(),
            authorized_keys: Some("hello world".into()),
            wifi: None,
        };
        let e = provision(&img, &req, &mut r).unwrap_err();
        assert!(matches!(e, ProvisionError::SshKey { line: 1 }), "{e}");
    }

    #[test]
    fn a_damaged_or_foreign_image_is_refused_with_the_reason() {
        let dir = tempfile::tempdir().unwrap();
        let req = Provision {
            provisioning: good_string(),
            authorized_keys: None,
            wifi: None,
        };
        let mut r = FakeRunner::default();

        let img = image_with_config(dir.path());
        let mut bytes = std::fs::read(&img).unwrap();
        bytes[1024 + 70] ^= 0xff;
        std::fs::write(&img, &bytes).unwrap();
        let e = provision(&img, &req, &mut r).unwrap_err();
        assert!(e.to_string().contains("entries checksum mismatch"), "{e}");

        let other = dir.path().join("other.img");
        std::fs::write(
            &other,
            crate::gpt::tests::disk(&[("EFI", 40, 59)], 64 * 512),
        )
        .unwrap();
        let e = provision(&other, &req, &mut r).unwrap_err();
        assert!(
            e.to_string().contains("no partition named lattice-config"),
            "{e}"
        );

        let e = provision(&dir.path().join("absent.img"), &req, &mut r).unwrap_err();
        assert!(e.to_string().contains("cannot read"), "{e}");
        assert!(r.ran.is_empty());
    }
}
