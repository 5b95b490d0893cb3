//! What a provider offers with a node, beyond what the node itself reports: where it is
//! (region), labels consumers can select on, its storage classes, whether it runs 24/7, and the
//! provider's asking price. The scheduler reads it ([`crate::workloads::node_views`]); the
//! provider (or an operator) sets it with `PUT /api/v1/nodes/{id}/offer`; deploys select on
//! region and labels ([`Placement`]), and a workload keeps its selection when it moves.
//!
//! Pure: validation and parsing only, no I/O.

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// Most labels an offer or a selection may carry.
pub const MAX_LABELS: usize = 16;
/// Storage classes a node may offer.
pub const STORAGE_CLASSES: &[&str] = &["ssd", "hdd", "nvme"];

/// A node's offer, as stored in `nodes.offer` (JSON; empty: the defaults).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NodeOffer {
    /// e.g. `eu-west`, `home-berlin`: 1 to 32 of `a-z 0-9 -`; empty: none.
    #[serde(default)]
    pub region: String,
    /// Labels consumers can select on (`gpu=none`, `net=fiber`); up to 16.
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Storage classes (`ssd`, `hdd`, `nvme`).
    #[serde(default)]
    pub storage_classes: Vec<String>,
    /// Runs 24/7 (no availability windows): may take always-on work.
    #[serde(default = "yes")]
    pub always_available: bool,
    /// Asking price per core-hour, in the fleet's smallest currency unit; 0: none asked.
    #[serde(default)]
    pub price: u64,
}

fn yes() -> bool {
    true
}

impl Default for NodeOffer {
    fn default() -> Self {
        NodeOffer {
            region: String::new(),
            labels: BTreeMap::new(),
            storage_classes: vec![],
            always_available: true,
            price: 0,
        }
    }
}

/// Where a workload may run, as its owner asked at deploy: kept with the workload, so a move
/// (drain, node loss, update) stays inside it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct Placement {
    /// Only nodes in this region.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub region: Option<String>,
    /// Only nodes carrying every one of these labels.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub labels: BTreeMap<String, String>,
}

fn is_token(s: &str, max: usize) -> bool {
    !s.is_empty()
        && s.len() <= max
        && s.bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.')
}

fn check_labels(labels: &BTreeMap<String, String>) -> Result<(), String> {
    if labels.len() > MAX_LABELS {
        return Err(format!("{} labels: at most {MAX_LABELS}", labels.len()));
    }
    for (k, v) in labels {
        if !is_token(k, 63) {
            return Err(format!(
                "label name {k:?}: 1 to 63 of a-z, 0-9, '-' and '.'"
            ));
        }
        if !v.is_empty() && !is_token(v, 63) {
            return Err(format!(
                "label {k}={v:?}: the value may hold up to 63 of a-z, 0-9, '-' and '.'"
            ));
        }
    }
    Ok(())
}

fn check_region(region: &str) -> Result<(), String> {
    if region.is_empty() || is_token(region, 32) && !region.contains('.') {
        Ok(())
    } else {
        Err(format!("region {region:?}: 1 to 32 of a-z, 0-9 and '-'"))
    }
}

impl NodeOffer {
    /// Checks an offer; the error names the field and what is allowed.
    pub fn check(&self) -> Result<(), String> {
        check_region(&self.region)?;
        check_labels(&self.labels)?;
        for c in &self.storage_classes {
            if !STORAGE_CLASSES.contains(&c.as_str()) {
                return Err(format!(
                    "storage class {c:?}: one of {}",
                    STORAGE_CLASSES.join(", ")
                ));
            }
        }
        Ok(())
    }

    /// The stored offer (`nodes.offer`); empty or unreadable text is the default offer.
    pub fn parse(stored: &str) -> NodeOffer {
        if stored.is_empty() {
            return NodeOffer::default();
        }
        serde_json::from_str(stored).unwrap_or_else(|e| {
            tracing::warn!(error = %e, "unreadable node offer; taking the defaults");
            NodeOffer::default()
        })
    }
}

impl Placement {
    /// Checks a selection; the error names the field.
    pub fn check(&self) -> Result<(), String> {
        if let Some(r) = &self.region {
            if r.is_empty() {
                return Err("region: empty (leave it out for any region)".into());
            }
            check_region(r)?;
        }
        check_labels(&self.labels)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offers_are_checked_field_by_field() {
        assert!(NodeOffer::default().check().is_ok());
        let ok = NodeOffer {
            region: "eu-west".into(),
            labels: [("net".to_string(), "fiber".to_string())].into(),
            storage_classes: vec!["ssd".into()],
            always_available: false,
            price: 12,
        };
        assert!(ok.check().is_ok());
        let bad = |f: fn(&mut NodeOffer), why: &str| {
            let mut o = ok.clone();
            f(&mut o);
            let e = o.check().unwrap_err();
            assert!(e.contains(why), "{e}");
        };
        bad(|o| o.region = "EU West".into(), "region");
        bad(|o| o.region = "a".repeat(33), "region");
        bad(|o| o.region = "eu.west".into(), "region");
        bad(
            |o| {
                o.labels.insert("Bad Key".into(), "x".into());
            },
            "label name",
        );
        bad(
            |o| {
                o.labels.insert("k".into(), "a b".into());
            },
            "label k=",
        );
        bad(
            |o| o.labels = (0..17).map(|i| (format!("k{i}"), String::new())).collect(),
            "at most 16",
        );
        bad(|o| o.storage_classes = vec!["tape".into()], "one of ssd");
    }

    #[test]
    fn stored_offers_parse_with_defaults() {
        assert_eq!(NodeOffer::parse(""), NodeOffer::default());
        assert!(NodeOffer::parse("{}").always_available);
        assert_eq!(NodeOffer::parse("not json"), NodeOffer::default());
        let o = NodeOffer::parse(r#"{"region":"r1","price":5,"always_available":false}"#);
        assert_eq!(
            (o.region.as_str(), o.price, o.always_available),
            ("r1", 5, false)
        );
    }

    #[test]
    fn selections_are_checked() {
        assert!(Placement::default().check().is_ok());
        let p = Placement {
            region: Some(String::new()),
            ..Default::default()
        };
        assert!(p.check().unwrap_err().contains("empty"));
        let p = Placement {
            region: Some("eu-west".into()),
            labels: [("net".to_string(), "fiber".to_string())].into(),
        };
        assert!(p.check().is_ok());
    }
}
