//! `latticed --write-wpa-config FROM TO`: the config partition's Wi-Fi file
//! ([`lattice_wire::wifi`]) turned into `wpa_supplicant`'s configuration, run by
//! `lattice-wifi@.service` on the image before `wpa_supplicant` starts on each wireless
//! interface. It fails with [`EXIT_CONFIG`], which the unit does not restart on (the config
//! partition is read-only while the node runs: retrying cannot help). The file written holds the network's key, so it is the owner's alone (0600) and
//! appears whole or not at all (written beside, then renamed).

use anyhow::Context;
use lattice_wire::wifi::WifiConfig;
use std::io::Write;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::Path;

pub use lattice_wire::wifi::EXIT_CONFIG;

/// Where `wpa_supplicant` puts its control sockets (`wpa_cli`'s default).
pub const CTRL_DIR: &str = "/run/wpa_supplicant";

/// Reads `from`, checks it and writes the configuration to `to`. The error names the file and
/// the line that is wrong, never the passphrase.
pub fn write_wpa_config(from: &Path, to: &Path) -> anyhow::Result<WifiConfig> {
    let bytes = std::fs::read(from)
        .with_context(|| format!("reading the Wi-Fi file {}", from.display()))?;
    let text = String::from_utf8(bytes).map_err(|_| {
        anyhow::anyhow!(
            "{} is not UTF-8 text: save it as UTF-8 (Notepad: Save as, Encoding UTF-8)",
            from.display()
        )
    })?;
    let wifi = WifiConfig::parse(&text).with_context(|| format!("{}", from.display()))?;
    if let Some(dir) = to.parent() {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .with_context(|| format!("creating {}", dir.display()))?;
    }
    let tmp = to.with_extension("tmp");
    let _ = std::fs::remove_file(&tmp);
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&tmp)
        .with_context(|| format!("creating {}", tmp.display()))?;
    f.write_all(wifi.wpa_supplicant_conf(CTRL_DIR).as_bytes())
        .and_then(|_| f.sync_all())
        .with_context(|| format!("writing {}", tmp.display()))?;
    std::fs::rename(&tmp, to).with_context(|| format!("renaming to {}", to.display()))?;
    Ok(wifi)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn the_configuration_is_private_and_holds_the_key() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("wifi");
        std::fs::write(&from, "ssid=Home\r\npsk=correct horse\r\n").unwrap();
        let to = dir.path().join("run/wifi/wlan0.conf");
        let w = write_wpa_config(&from, &to).unwrap();
        let conf = std::fs::read_to_string(&to).unwrap();
        assert_eq!(conf, w.wpa_supplicant_conf(CTRL_DIR));
        assert!(!conf.contains("correct horse"));
        let mode = |p: &Path| std::fs::metadata(p).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode(&to), 0o600);
        assert_eq!(mode(to.parent().unwrap()), 0o700);
    }

    #[test]
    fn a_bad_file_names_itself_and_its_line_and_writes_nothing() {
        let dir = tempfile::tempdir().unwrap();
        let from = dir.path().join("wifi");
        std::fs::write(&from, "ssid=Home\npsk=hunter2\n").unwrap();
        let to = dir.path().join("wlan0.conf");
        let e = format!("{:#}", write_wpa_config(&from, &to).unwrap_err());
        assert!(e.contains(&from.display().to_string()), "{e}");
        assert!(e.contains("line 2") && e.contains("8 to 63"), "{e}");
        assert!(!e.contains("hunter2"), "{e}");
        assert!(!to.exists());
        let e = format!(
            "{:#}",
            write_wpa_config(&dir.path().join("none"), &to).unwrap_err()
        );
        assert!(e.contains("reading the Wi-Fi file"), "{e}");
        // Notepad's "ANSI" (cp1252) or UTF-16: said so, not a bare decoding error.
        std::fs::write(&from, b"ssid=Caf\xe9\npsk=12345678\n").unwrap();
        let e = format!("{:#}", write_wpa_config(&from, &to).unwrap_err());
        assert!(e.contains("is not UTF-8 text: save it as UTF-8"), "{e}");
    }
}
