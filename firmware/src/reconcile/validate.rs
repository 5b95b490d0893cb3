//! Checks a target before the reconciler sees it: a malformed target is refused as a whole,
//! with every problem named, instead of half-applied.

use lattice_wire::msg::{Target, WorkloadSpec};
use std::collections::HashSet;

/// The smallest memory limit accepted for a workload: Docker refuses anything below 6 MiB.
pub const MIN_MEMORY_BYTES: u64 = 6 << 20;
/// The smallest CPU limit (a hundredth of a core), as the runtime accepts it.
pub const MIN_CPU_MILLIS: u32 = 10;
/// Longest workload id or name (container, network and cgroup names are built from them).
pub const MAX_NAME_LEN: usize = 63;

/// Every problem of `target`, each naming the workload and field; empty when it is valid.
pub fn problems(target: &Target) -> Vec<String> {
    let mut out = Vec::new();
    let mut ids = HashSet::new();
    for (i, w) in target.workloads.iter().enumerate() {
        let at = if w.id.is_empty() {
            format!("workloads[{i}]")
        } else {
            format!("workload {}", w.id)
        };
        if !ids.insert(w.id.as_str()) {
            out.push(format!("{at}: id appears more than once"));
        }
        check_spec(&at, w, &mut out);
    }
    out
}

fn check_spec(at: &str, w: &WorkloadSpec, out: &mut Vec<String>) {
    check_name(at, "id", &w.id, out);
    check_name(at, "name", &w.name, out);
    if w.image.trim().is_empty() {
        out.push(format!("{at}: image is empty"));
    }
    if w.cpu_millis < MIN_CPU_MILLIS {
        out.push(format!(
            "{at}: cpu_millis {} is below the minimum of {MIN_CPU_MILLIS} (a hundredth of a core)",
            w.cpu_millis
        ));
    }
    if w.memory_bytes < MIN_MEMORY_BYTES {
        out.push(format!(
            "{at}: memory_bytes {} is below the minimum of {MIN_MEMORY_BYTES} (6 MiB)",
            w.memory_bytes
        ));
    }
    if w.pids_max == 0 {
        out.push(format!("{at}: pids_max must be at least 1"));
    }
    let mut volumes = HashSet::new();
    for v in &w.volumes {
        check_name(at, "volume name", &v.name, out);
        if !volumes.insert(v.name.as_str()) {
            out.push(format!("{at}: volume {} appears more than once", v.name));
        }
        if !v.mount_path.starts_with('/') {
            out.push(format!(
                "{at}: volume {} mount_path {:?} is not absolute",
                v.name, v.mount_path
            ));
        }
        if v.size_bytes == 0 {
            out.push(format!(
                "{at}: volume {} size_bytes must be more than 0",
                v.name
            ));
        }
    }
}

fn check_name(at: &str, what: &str, value: &str, out: &mut Vec<String>) {
    let valid_chars = value
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
    if value.is_empty() || value.len() > MAX_NAME_LEN || !valid_chars {
        out.push(format!(
            "{at}: {what} {value:?} must be 1 to {MAX_NAME_LEN} characters of a-z, 0-9 and -"
        ));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::tests::spec;
    use lattice_wire::msg::VolumeSpec;

    fn target(workloads: Vec<WorkloadSpec>) -> Target {
        Target {
            revision: 1,
            workloads,
            heartbeat_secs: 30,
        }
    }

    #[test]
    fn a_good_target_has_no_problems() {
        assert!(problems(&target(vec![spec("w-a"), spec("w-b")])).is_empty());
        assert!(problems(&target(vec![])).is_empty());
    }

    #[test]
    fn every_problem_is_named_at_once() {
        let mut bad = spec("W_A");
        bad.cpu_millis = 0;
        bad.memory_bytes = (6 << 20) - 1;
        bad.pids_max = 0;
        bad.volumes = vec![VolumeSpec {
            name: "data".into(),
            mount_path: "data".into(),
            size_bytes: 0,
        }];
        let found = problems(&target(vec![bad, spec("w-b"), spec("w-b")]));
        let all = found.join("\n");
        for needle in [
            "workload W_A: id \"W_A\" must be",
            "cpu_millis 0 is below the minimum of 10",
            "below the minimum of 6291456",
            "pids_max must be at least 1",
            "mount_path \"data\" is not absolute",
            "volume data size_bytes",
            "workload w-b: id appears more than once",
        ] {
            assert!(all.contains(needle), "{needle:?} missing from:\n{all}");
        }
        assert_eq!(found.len(), 7, "{all}");
    }

    #[test]
    fn names_reject_uppercase_dots_slashes_and_length() {
        for name in ["", "Web", "a.b", "a/b", "a_b", &"x".repeat(64)] {
            let mut w = spec("w-a");
            w.name = name.to_string();
            assert_eq!(problems(&target(vec![w])).len(), 1, "{name:?}");
        }
        let mut w = spec("w-a");
        w.name = "x".repeat(63);
        assert!(problems(&target(vec![w])).is_empty());
    }
}
