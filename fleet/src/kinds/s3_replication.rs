//! S3 replication as the fleet sees it (issue 6; docs/s3.md, "Replication"): the report a
//! primary `lattice-s3` serves at `GET /_lattice/replication`, read by the gateway
//! ([`crate::gateway::replication`]) and kept in the store, and what the consumer is told of
//! it: in `lattice workload show` and, when the primary's node is lost and the replica is
//! promoted, in the promotion's event. Pure: no I/O.

use serde::{Deserialize, Serialize};

/// The path a primary serves its report at.
pub const REPORT_PATH: &str = "/_lattice/replication";
/// A report is a few hundred bytes; anything longer than this is not one.
pub const MAX_REPORT_BYTES: usize = 16 * 1024;

/// What a primary reports (the fields the fleet uses; others are ignored).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Report {
    /// `primary`, or `standalone` (a server started without its replica).
    pub role: String,
    /// `reachable`, `unreachable`, `unknown` (not contacted yet) or `none`.
    pub replica: String,
    /// Changes not yet acknowledged by the replica, and the object bytes they name.
    pub pending_changes: u64,
    pub pending_bytes: u64,
    /// Age of the oldest unacknowledged change: the replication lag (0 when caught up).
    pub oldest_pending_age_ms: u64,
    /// When the replica last acknowledged a change (ms since the epoch).
    #[serde(default)]
    pub last_acknowledged_ms: Option<u64>,
    /// The last failure to ship (operation and status; never a bucket or key).
    #[serde(default)]
    pub last_error: Option<String>,
    /// A damaged journal record (file and offset): shipping stopped there.
    #[serde(default)]
    pub journal_error: Option<String>,
}

/// Parses a report body; the error says what was wrong with it.
pub fn parse(body: &[u8]) -> Result<Report, String> {
    if body.len() > MAX_REPORT_BYTES {
        return Err(format!(
            "replication report of {} bytes (at most {MAX_REPORT_BYTES})",
            body.len()
        ));
    }
    let mut r: Report =
        serde_json::from_slice(body).map_err(|e| format!("unreadable replication report: {e}"))?;
    // The container wrote these: they reach events and terminals, so no control characters
    // (a terminal's escape sequences) and a bounded length.
    for text in [&mut r.last_error, &mut r.journal_error]
        .into_iter()
        .flatten()
    {
        *text = clean(text);
    }
    if !matches!(r.role.as_str(), "primary" | "standalone") {
        return Err(format!("replication report with unknown role {:?}", r.role));
    }
    if !matches!(
        r.replica.as_str(),
        "reachable" | "unreachable" | "unknown" | "none"
    ) {
        return Err(format!(
            "replication report with unknown replica state {:?}",
            r.replica
        ));
    }
    Ok(r)
}

/// The most a replica may be behind (its primary's oldest unacknowledged change) and still be
/// promoted when the primary's node is lost.
pub const MAX_PROMOTION_LAG_MS: u64 = 60_000;
/// The last report must have been read at most this long before the lost node was last heard
/// from (reports are read every 5 s; heartbeats come every 10 s).
pub const REPORT_FRESH_MS: u64 = 15_000;

/// Whether a replica may be promoted in place of a primary whose node was last heard from at
/// `last_heard_ms`, from the last report read (`last`: report and when): promotion deletes the
/// primary, so only a replica known to be close behind takes over. The error says why not.
pub fn promotable(last: Option<(&Report, u64)>, last_heard_ms: u64) -> Result<(), String> {
    let Some((r, read_ms)) = last else {
        return Err("no replication report was ever read from the primary".into());
    };
    if read_ms.saturating_add(REPORT_FRESH_MS) < last_heard_ms {
        return Err(format!(
            "the last replication report was read {} before the node was last heard from",
            secs(last_heard_ms - read_ms)
        ));
    }
    if r.journal_error.is_some() {
        return Err("replication had stopped at a damaged journal record".into());
    }
    if r.replica != "reachable" {
        return Err(format!(
            "the primary last reported its replica {}",
            r.replica
        ));
    }
    if r.oldest_pending_age_ms > MAX_PROMOTION_LAG_MS {
        return Err(format!(
            "the replica was {} behind (at most {} for a promotion)",
            secs(r.oldest_pending_age_ms),
            secs(MAX_PROMOTION_LAG_MS)
        ));
    }
    Ok(())
}

/// At most [`MAX_TEXT`] characters of `text`, control characters as `?`.
fn clean(text: &str) -> String {
    let mut out: String = text
        .chars()
        .take(MAX_TEXT)
        .map(|c| if c.is_control() { '?' } else { c })
        .collect();
    if text.chars().count() > MAX_TEXT {
        out.push('…');
    }
    out
}

/// The longest error text kept from a report.
pub const MAX_TEXT: usize = 300;

/// Replication as `lattice workload show` gives it for an S3 primary.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ReplicationView {
    /// The replica's workload name (`NAME--replica`) and node.
    pub replica: String,
    pub replica_node: Option<String>,
    /// The last report read from the primary (none read yet: `null`).
    pub report: Option<Report>,
    /// When it was read (ms since the epoch).
    pub read_ms: Option<u64>,
}

fn bytes(n: u64) -> String {
    const UNITS: [&str; 4] = ["B", "KiB", "MiB", "GiB"];
    let mut v = n as f64;
    let mut unit = 0;
    while v >= 1024.0 && unit + 1 < UNITS.len() {
        v /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{n} B")
    } else {
        format!("{v:.1} {}", UNITS[unit])
    }
}

fn secs(ms: u64) -> String {
    format!("{:.1} s", ms as f64 / 1000.0)
}

/// What the consumer is told of the replication lag when the replica is promoted at `now_ms`:
/// the last report read from the primary (`last`: report and when it was read), and that
/// whatever the primary acknowledged after that read is not known to be on the replica.
pub fn lag_at_loss(last: Option<(&Report, u64)>, now_ms: u64) -> String {
    let Some((r, read_ms)) = last else {
        return "replication lag unknown: no report had been read from the primary, so \
                changes it acknowledged may be missing"
            .into();
    };
    let ago = secs(now_ms.saturating_sub(read_ms));
    let since = format!(
        "as last read from the primary {ago} before the promotion; changes it acknowledged after \
         that read may be missing"
    );
    if let Some(e) = &r.journal_error {
        return format!("replication had stopped at a damaged journal record ({e}); {} changes ({}) were not on the replica, {since}", r.pending_changes, bytes(r.pending_bytes));
    }
    if r.pending_changes == 0 {
        return format!("replication lag 0: the replica had every change, {since}");
    }
    format!(
        "replication lag {}: {} changes ({}) were not on the replica ({}), {since}",
        secs(r.oldest_pending_age_ms),
        r.pending_changes,
        bytes(r.pending_bytes),
        match r.replica.as_str() {
            "reachable" => "replica reachable",
            "unreachable" => "replica unreachable",
            _ => "replica not contacted yet",
        },
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    const CAUGHT_UP: &str = r#"{"role":"primary","replica":"reachable","pending_changes":0,
        "pending_bytes":0,"oldest_pending_age_ms":0,"last_acknowledged_ms":1764180000123,
        "acknowledged_seq":42,"journal_seq":42,"last_error":null,"journal_error":null}"#;

    #[test]
    fn the_servers_report_parses_and_unknown_fields_are_ignored() {
        let r = parse(CAUGHT_UP.as_bytes()).unwrap();
        assert_eq!(r.role, "primary");
        assert_eq!(r.replica, "reachable");
        assert_eq!(r.last_acknowledged_ms, Some(1764180000123));
        assert_eq!(r.pending_changes, 0);
    }

    #[test]
    fn bad_reports_are_refused_naming_what_was_wrong() {
        let e = parse(b"<html>502</html>").unwrap_err();
        assert!(e.contains("unreadable replication report"), "{e}");
        let e = parse(CAUGHT_UP.replace("primary", "leader").as_bytes()).unwrap_err();
        assert!(e.contains("unknown role \"leader\""), "{e}");
        let e = parse(CAUGHT_UP.replace("reachable", "maybe").as_bytes()).unwrap_err();
        assert!(e.contains("unknown replica state \"maybe\""), "{e}");
        let e = parse(CAUGHT_UP.replace("\"pending_bytes\":0,", "").as_bytes()).unwrap_err();
        assert!(e.contains("pending_bytes"), "{e}");
        let big = vec![b' '; MAX_REPORT_BYTES + 1];
        assert!(parse(&big).unwrap_err().contains("at most"));
    }

    #[test]
    fn a_reports_error_texts_lose_control_characters_and_excess_length() {
        let body = CAUGHT_UP.replace(
            r#""last_error":null"#,
            &format!(r#""last_error":"bad\u001b[2Jthing{}""#, "x".repeat(1000)),
        );
        let r = parse(body.as_bytes()).unwrap();
        let e = r.last_error.unwrap();
        assert!(e.starts_with("bad?[2Jthing"), "{e}");
        assert!(!e.chars().any(char::is_control));
        assert_eq!(e.chars().count(), MAX_TEXT + 1, "cut, with an ellipsis");
    }

    #[test]
    fn only_a_replica_known_to_be_close_behind_may_be_promoted() {
        let heard = 1_000_000;
        let ok = parse(CAUGHT_UP.as_bytes()).unwrap();
        assert_eq!(promotable(Some((&ok, heard - 4_000)), heard), Ok(()));
        // Read after the node was last heard of (its heartbeat was older): fine too.
        assert_eq!(promotable(Some((&ok, heard + 3_000)), heard), Ok(()));
        let why = |r: &Report, read: u64| promotable(Some((r, read)), heard).unwrap_err();
        assert!(promotable(None, heard)
            .unwrap_err()
            .contains("no replication report was ever read"));
        let e = why(&ok, heard - REPORT_FRESH_MS - 1);
        assert!(
            e.contains("15.0 s before the node was last heard from"),
            "{e}"
        );
        let e = why(
            &Report {
                replica: "unreachable".into(),
                ..ok.clone()
            },
            heard,
        );
        assert!(e.contains("replica unreachable"), "{e}");
        let e = why(
            &Report {
                journal_error: Some("x".into()),
                ..ok.clone()
            },
            heard,
        );
        assert!(e.contains("damaged journal"), "{e}");
        let behind = |ms| Report {
            pending_changes: 9,
            oldest_pending_age_ms: ms,
            ..ok.clone()
        };
        assert_eq!(
            promotable(Some((&behind(MAX_PROMOTION_LAG_MS), heard)), heard),
            Ok(())
        );
        let e = why(&behind(MAX_PROMOTION_LAG_MS + 1), heard);
        assert!(e.contains("60.0 s behind (at most 60.0 s"), "{e}");
    }

    #[test]
    fn the_lag_told_at_promotion_says_what_was_last_known_and_when() {
        let now = 1_000_000;
        let unknown = lag_at_loss(None, now);
        assert!(unknown.contains("unknown") && unknown.contains("may be missing"));

        let r = parse(CAUGHT_UP.as_bytes()).unwrap();
        let told = lag_at_loss(Some((&r, now - 4_200)), now);
        assert!(told.starts_with("replication lag 0"), "{told}");
        assert!(told.contains("4.2 s before the promotion"), "{told}");

        let behind = Report {
            replica: "unreachable".into(),
            pending_changes: 7,
            pending_bytes: 3 << 20,
            oldest_pending_age_ms: 12_500,
            ..r.clone()
        };
        let told = lag_at_loss(Some((&behind, now - 1_000)), now);
        assert!(
            told.starts_with("replication lag 12.5 s: 7 changes (3.0 MiB)"),
            "{told}"
        );
        assert!(told.contains("replica unreachable"), "{told}");

        let damaged = Report {
            journal_error: Some("journal 0001.jnl at byte 165".into()),
            ..behind
        };
        let told = lag_at_loss(Some((&damaged, now)), now);
        assert!(told.contains("damaged journal record (journal 0001.jnl at byte 165)"));
    }
}
