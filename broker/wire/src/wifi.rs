//! The Wi-Fi file on a node's config partition (`wifi`), which a provider writes from any
//! computer (or `lattice image provision --wifi-ssid`), and the `wpa_supplicant` configuration
//! the node makes from it at boot.
//!
//! ```text
//! # Wi-Fi for this node; delete the file for wired only.
//! ssid=Home Network
//! psk=correct horse battery staple
//! country=DE
//! ```
//!
//! Keys: `ssid` (1 to 32 bytes), `psk` (a WPA2 passphrase of 8 to 63 printable ASCII
//! characters, or the 64 hex digits of the key itself), `open=yes` instead of `psk` for a
//! network without a password, `country` (ISO 3166 code, for the radio's legal channels) and
//! `hidden=yes` (probe for an SSID that is not broadcast). Spaces around keys and values do
//! not count; to keep them, wrap the value in double quotes (which are removed; what is
//! between them is taken literally). Lines starting with `#` are comments; Windows line ends
//! and a byte-order mark are fine (Notepad writes them).
//!
//! The configuration handed to `wpa_supplicant` carries the derived key (PBKDF2, as WPA2
//! defines it), never the passphrase, and the SSID in hex, so no character of either can break
//! its syntax. No I/O here.

use pbkdf2::pbkdf2_hmac;
use sha1::Sha1;

/// The file's name on the config partition.
pub const WIFI_FILE: &str = "wifi";

/// The exit status of `latticed --write-wpa-config` for a file it cannot use (`EX_CONFIG` of
/// sysexits.h); the image's unit does not restart on it.
pub const EXIT_CONFIG: i32 = 78;

/// What the file asks for.
#[derive(Clone, PartialEq, Eq)]
pub struct WifiConfig {
    pub ssid: String,
    pub security: Security,
    /// Upper-case ISO 3166-1 alpha-2.
    pub country: Option<String>,
    pub hidden: bool,
}

/// How the network is protected.
#[derive(Clone, PartialEq, Eq)]
pub enum Security {
    /// No password (`open=yes`).
    Open,
    /// WPA2-Personal with a passphrase.
    Passphrase(String),
    /// WPA2-Personal with the 32-byte key itself (given as 64 hex digits).
    Key([u8; 32]),
}

impl std::fmt::Debug for Security {
    /// Never prints the passphrase or key.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Security::Open => "Open",
            Security::Passphrase(_) => "Passphrase(hidden)",
            Security::Key(_) => "Key(hidden)",
        })
    }
}

impl std::fmt::Debug for WifiConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WifiConfig")
            .field("ssid", &self.ssid)
            .field("security", &self.security)
            .field("country", &self.country)
            .field("hidden", &self.hidden)
            .finish()
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum WifiError {
    #[error("wifi file, line {line}: {problem}")]
    Line { line: usize, problem: String },
    #[error("wifi file: no `ssid=` line")]
    NoSsid,
    #[error("wifi file: no `psk=` line (write `open=yes` for a network without a password)")]
    NoPsk,
    #[error("wifi file: `psk=` and `open=yes` contradict each other")]
    PskAndOpen,
    #[error("Wi-Fi: {0}")]
    Value(String),
}

fn check_ssid(ssid: &str) -> Result<(), String> {
    if ssid.is_empty() || ssid.len() > 32 {
        return Err(format!(
            "the SSID must be 1 to 32 bytes long; it is {}",
            ssid.len()
        ));
    }
    if ssid.chars().any(char::is_control) {
        return Err("the SSID holds a control character".into());
    }
    Ok(())
}

fn parse_psk(psk: &str) -> Result<Security, String> {
    if psk.len() == 64 && psk.bytes().all(|b| b.is_ascii_hexdigit()) {
        let mut key = [0u8; 32];
        hex::decode_to_slice(psk, &mut key).map_err(|e| e.to_string())?;
        return Ok(Security::Key(key));
    }
    if !(8..=63).contains(&psk.len()) {
        // The length only: the passphrase itself is never repeated in an error.
        return Err(format!(
            "a WPA2 passphrase is 8 to 63 characters (or 64 hex digits); this one is {}",
            psk.chars().count()
        ));
    }
    if !psk.bytes().all(|b| (0x20..=0x7e).contains(&b)) {
        return Err("a WPA2 passphrase holds printable ASCII characters only".into());
    }
    Ok(Security::Passphrase(psk.to_string()))
}

fn parse_country(c: &str) -> Result<String, String> {
    if c.len() == 2 && c.bytes().all(|b| b.is_ascii_alphabetic()) {
        Ok(c.to_ascii_uppercase())
    } else {
        Err("`country` is a two-letter ISO 3166 code (like DE or US)".into())
    }
}

/// Errors never repeat the value: a passphrase written on the wrong line would land in the
/// journal.
fn parse_yes_no(key: &str, v: &str) -> Result<bool, String> {
    match v.to_ascii_lowercase().as_str() {
        "yes" | "true" | "1" => Ok(true),
        "no" | "false" | "0" => Ok(false),
        _ => Err(format!("`{key}` is yes or no")),
    }
}

/// A value as the file holds it: in double quotes when reading it bare would change it.
fn quoted(v: &str) -> String {
    let bare_changes = v.trim() != v || (v.len() >= 2 && v.starts_with('"') && v.ends_with('"'));
    if bare_changes {
        format!("\"{v}\"")
    } else {
        v.to_string()
    }
}

impl WifiConfig {
    /// A WPA2 network with a passphrase (or 64 hex digits), checked as [`WifiConfig::parse`]
    /// checks the file.
    pub fn new(ssid: &str, psk: Option<&str>, country: Option<&str>) -> Result<Self, WifiError> {
        check_ssid(ssid).map_err(WifiError::Value)?;
        let security = match psk {
            Some(p) => parse_psk(p).map_err(WifiError::Value)?,
            None => Security::Open,
        };
        let country = country
            .map(parse_country)
            .transpose()
            .map_err(WifiError::Value)?;
        Ok(WifiConfig {
            ssid: ssid.to_string(),
            security,
            country,
            hidden: false,
        })
    }

    /// Reads the file. The error names the line and what is wrong with it, never the
    /// passphrase.
    pub fn parse(text: &str) -> Result<Self, WifiError> {
        let text = text.strip_prefix('\u{feff}').unwrap_or(text);
        let (mut ssid, mut psk, mut open, mut country, mut hidden) = (None, None, None, None, None);
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |problem: String| WifiError::Line { line, problem };
            let l = raw.trim_end_matches('\r');
            if l.trim().is_empty() || l.trim_start().starts_with('#') {
                continue;
            }
            let Some((key, value)) = l.split_once('=') else {
                return Err(err("expected `key=value`".into()));
            };
            let key = key.trim().to_ascii_lowercase();
            let value = value.trim();
            let value = value
                .strip_prefix('"')
                .and_then(|v| v.strip_suffix('"'))
                .unwrap_or(value);
            let slot = match key.as_str() {
                "ssid" => &mut ssid,
                "psk" | "password" => &mut psk,
                "open" => &mut open,
                "country" => &mut country,
                "hidden" => &mut hidden,
                // Not repeated: it may be a passphrase written without its `psk=`.
                _ => {
                    return Err(err(
                        "unknown key (known: ssid, psk, open, country, hidden)".into()
                    ))
                }
            };
            if slot.is_some() {
                return Err(err(format!("`{key}` is given twice")));
            }
            *slot = Some((line, value.to_string()));
        }
        let at = |line: usize| move |problem: String| WifiError::Line { line, problem };
        let (ssid_line, ssid) = ssid.ok_or(WifiError::NoSsid)?;
        check_ssid(&ssid).map_err(at(ssid_line))?;
        let open = match open {
            Some((line, v)) => parse_yes_no("open", v.trim()).map_err(at(line))?,
            None => false,
        };
        let security = match (psk, open) {
            (Some(_), true) => return Err(WifiError::PskAndOpen),
            (Some((line, p)), false) => parse_psk(&p).map_err(at(line))?,
            (None, true) => Security::Open,
            (None, false) => return Err(WifiError::NoPsk),
        };
        let country = match country {
            Some((line, c)) => Some(parse_country(c.trim()).map_err(at(line))?),
            None => None,
        };
        let hidden = match hidden {
            Some((line, v)) => parse_yes_no("hidden", v.trim()).map_err(at(line))?,
            None => false,
        };
        Ok(WifiConfig {
            ssid,
            security,
            country,
            hidden,
        })
    }

    /// The file's text ([`WifiConfig::parse`] reads it back as the same value).
    pub fn encode(&self) -> String {
        let mut s = String::from("# Wi-Fi for this node; delete this file for wired only.\n");
        s.push_str(&format!("ssid={}\n", quoted(&self.ssid)));
        match &self.security {
            Security::Open => s.push_str("open=yes\n"),
            Security::Passphrase(p) => s.push_str(&format!("psk={}\n", quoted(p))),
            Security::Key(k) => s.push_str(&format!("psk={}\n", hex::encode(k))),
        }
        if let Some(c) = &self.country {
            s.push_str(&format!("country={c}\n"));
        }
        if self.hidden {
            s.push_str("hidden=yes\n");
        }
        s
    }

    /// The 32-byte WPA2 key: PBKDF2-HMAC-SHA1(passphrase, SSID, 4096 rounds), as IEEE 802.11i
    /// defines it. `None` for an open network.
    pub fn key(&self) -> Option<[u8; 32]> {
        match &self.security {
            Security::Open => None,
            Security::Key(k) => Some(*k),
            Security::Passphrase(p) => {
                let mut k = [0u8; 32];
                pbkdf2_hmac::<Sha1>(p.as_bytes(), self.ssid.as_bytes(), 4096, &mut k);
                Some(k)
            }
        }
    }

    /// `wpa_supplicant`'s configuration for this network, its control sockets in `ctrl_dir`.
    pub fn wpa_supplicant_conf(&self, ctrl_dir: &str) -> String {
        let mut s = format!(
            "# Made by latticed from the config partition's `{WIFI_FILE}` file.\n\
             ctrl_interface={ctrl_dir}\n\
             update_config=0\n"
        );
        if let Some(c) = &self.country {
            s.push_str(&format!("country={c}\n"));
        }
        s.push_str("network={\n");
        s.push_str(&format!("\tssid={}\n", hex::encode(self.ssid.as_bytes())));
        if self.hidden {
            s.push_str("\tscan_ssid=1\n");
        }
        match self.key() {
            None => s.push_str("\tkey_mgmt=NONE\n"),
            Some(k) => {
                // Management-frame protection when the network offers it (and the SHA-256
                // key management networks that require it use).
                s.push_str("\tkey_mgmt=WPA-PSK WPA-PSK-SHA256\n\tproto=RSN\n\tieee80211w=1\n");
                s.push_str(&format!("\tpsk={}\n", hex::encode(k)));
            }
        }
        s.push_str("}\n");
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn the_wpa2_key_is_ieee_802_11i_s_own_test_vector() {
        // IEEE 802.11i-2004, annex H.4.1: passphrase "password", SSID "IEEE".
        let w = WifiConfig::new("IEEE", Some("password"), None).unwrap();
        assert_eq!(
            hex::encode(w.key().unwrap()),
            "f42c6fc52df0ebef9ebb4b90b38a5f902e83fe1b135a70e23aed762e9710a12e"
        );
    }

    #[test]
    fn a_file_from_notepad_reads() {
        let w = WifiConfig::parse(
            "\u{feff}# home\r\nSSID = Home Network\r\npsk=\" correct horse\"\r\ncountry=de\r\n",
        )
        .unwrap();
        assert_eq!(w.ssid, "Home Network");
        assert_eq!(w.security, Security::Passphrase(" correct horse".into()));
        assert_eq!(w.country.as_deref(), Some("DE"));
        assert!(!w.hidden);
    }

    #[test]
    fn the_supplicant_gets_the_key_and_the_ssid_in_hex_never_the_passphrase() {
        let w = WifiConfig::parse("ssid=a\"b}\npsk=pa\"ss}word\nhidden=yes\ncountry=US\n").unwrap();
        let conf = w.wpa_supplicant_conf("/run/wpa");
        assert!(!conf.contains("pa\"ss}word"), "{conf}");
        assert!(
            conf.contains(&format!("\tssid={}\n", hex::encode("a\"b}"))),
            "{conf}"
        );
        assert!(conf.contains(&format!("\tpsk={}\n", hex::encode(w.key().unwrap()))));
        assert!(conf.contains("\tkey_mgmt=WPA-PSK WPA-PSK-SHA256\n\tproto=RSN\n\tieee80211w=1\n"));
        assert!(conf.contains("\tscan_ssid=1\n"));
        assert!(conf.contains("country=US\n"));
        assert!(conf.contains("ctrl_interface=/run/wpa\n"));
        assert!(!format!("{w:?}").contains("ss}word"));
    }

    #[test]
    fn an_open_network_needs_saying_so() {
        assert_eq!(WifiConfig::parse("ssid=cafe\n"), Err(WifiError::NoPsk));
        let w = WifiConfig::parse("ssid=cafe\nopen=yes\n").unwrap();
        assert!(w.wpa_supplicant_conf("/r").contains("key_mgmt=NONE"));
        assert_eq!(
            WifiConfig::parse("ssid=cafe\nopen=yes\npsk=12345678\n"),
            Err(WifiError::PskAndOpen)
        );
    }

    #[test]
    fn each_mistake_is_named_with_its_line_and_never_shows_the_passphrase() {
        let cases = [
            ("ssid=x\npsk=short\n", 2, "8 to 63"),
            ("ssid=x\npsk=secret\u{e9}word\n", 2, "printable ASCII"),
            ("\nssid=\npsk=12345678\n", 2, "1 to 32 bytes"),
            ("ssid=x\npsk=12345678\ncountry=secret\n", 3, "two-letter"),
            ("ssid=x\nopen=yes\nhidden=secret\n", 3, "yes or no"),
            ("ssid=x\npsk=12345678\nsecret=6\n", 3, "unknown key"),
            ("ssid=x\nssid=y\n", 2, "given twice"),
            ("ssid x\n", 1, "key=value"),
            ("ssid=x\nopen=secret\n", 2, "yes or no"),
        ];
        for (text, line, words) in cases {
            let e = WifiConfig::parse(text).unwrap_err();
            let msg = e.to_string();
            assert!(
                matches!(e, WifiError::Line { line: l, .. } if l == line),
                "{text:?}: {msg}"
            );
            assert!(msg.contains(words), "{text:?}: {msg}");
            assert!(!msg.contains("secret") && !msg.contains("short"), "{msg}");
        }
        assert_eq!(WifiConfig::parse("# nothing\n"), Err(WifiError::NoSsid));
    }

    #[test]
    fn a_hex_key_is_used_as_is() {
        let hexkey = "00".repeat(31) + "ff";
        let w = WifiConfig::parse(&format!("ssid=x\npsk={hexkey}\n")).unwrap();
        assert_eq!(hex::encode(w.key().unwrap()), hexkey);
    }

    proptest! {
        #[test]
        fn what_is_encoded_parses_back(
            ssid in "[ -~]{1,32}",
            psk in "[ -~]{8,63}",
            country in proptest::option::of("[A-Z]{2}"),
            hidden: bool,
        ) {
            let mut w = WifiConfig::new(&ssid, Some(&psk), country.as_deref()).unwrap();
            w.hidden = hidden;
            prop_assert_eq!(WifiConfig::parse(&w.encode()), Ok(w));
        }
    }
}
