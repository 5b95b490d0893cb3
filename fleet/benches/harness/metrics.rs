//! Reading what the fleet's `/metrics` says over a measuring window, and naming the machine.

/// A Prometheus histogram's cumulative buckets, (upper bound, count).
pub fn buckets(metrics: &str, name: &str) -> Vec<(f64, f64)> {
    let prefix = format!("{name}_bucket{{le=\"");
    let mut b: Vec<(f64, f64)> = metrics
        .lines()
        .filter_map(|l| l.strip_prefix(&prefix))
        .filter_map(|rest| {
            let (le, v) = rest.split_once("\"} ")?;
            let le = if le == "+Inf" {
                f64::INFINITY
            } else {
                le.parse().ok()?
            };
            Some((le, v.trim().parse().ok()?))
        })
        .collect();
    b.sort_by(|x, y| x.0.total_cmp(&y.0));
    b
}

/// (quantile, count) of the observations between two scrapes, interpolated within the bucket
/// as Prometheus' histogram_quantile does.
pub fn window_quantile(before: &str, after: &str, name: &str, q: f64) -> (f64, f64) {
    let b0 = buckets(before, name);
    let b1 = buckets(after, name);
    let diff: Vec<(f64, f64)> = b1
        .iter()
        .map(|(le, c)| {
            let c0 = b0.iter().find(|(l, _)| l == le).map(|x| x.1).unwrap_or(0.0);
            (*le, c - c0)
        })
        .collect();
    let total = diff.last().map(|b| b.1).unwrap_or(0.0);
    let rank = q * total;
    let (mut prev_le, mut prev_c) = (0.0, 0.0);
    for (le, c) in diff {
        if c >= rank {
            if le.is_infinite() {
                return (prev_le, total);
            }
            let frac = if c > prev_c {
                (rank - prev_c) / (c - prev_c)
            } else {
                0.0
            };
            return (prev_le + (le - prev_le) * frac, total);
        }
        prev_le = le;
        prev_c = c;
    }
    (f64::NAN, total)
}

/// The machine, for the JSON results: `2 x <CPU model>`.
pub fn machine() -> String {
    let cpus = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    let model = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("model name"))
                .map(|l| l.split(':').nth(1).unwrap_or("").trim().to_string())
        })
        .unwrap_or_default();
    format!("{cpus} x {model}")
}
