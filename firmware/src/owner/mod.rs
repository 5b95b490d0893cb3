//! The host owner first (issue 3, item 4): the provider's availability windows for batch work,
//! and the CPU the provider's own processes take back when they need it.
//!
//! - [`windows`]: when batch work may run (weekly windows in the provider's time zone); outside
//!   them the reconciler pauses batch containers through Docker and resumes them inside.
//! - [`governor`]: lowers the envelope's CPU cap while the host's load outside Lattice is above
//!   a threshold, and raises it again slowly once it is quiet.
//! - [`Policy`] puts both together without I/O (fed a local time and a load sample, it returns
//!   [`Effect`]s); [`spawn`] is the thin async shell that samples `/proc/stat` and the
//!   envelope's CPU accounting, applies the effects and queues an event for the fleet for each
//!   change ([`EventSink`], drained into the next status by the agent).

pub mod governor;
pub mod windows;

use crate::cgroup::CgroupManager;
use crate::reconcile::shell::ReconcileHandle;
use crate::shutdown::Shutdown;
use governor::{Change, Governor};
use serde::{Deserialize, Serialize};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use windows::Schedule;

/// `[availability]` in latticed's config.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AvailabilityConfig {
    /// IANA zone the windows are written in (`Europe/Berlin`); empty: the machine's zone.
    pub time_zone: String,
    /// Weekly windows for batch work (`"Mon-Fri 19:00-07:00"`); empty: always (24/7).
    pub windows: Vec<String>,
}

/// `[host_load]` in latticed's config.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct HostLoadConfig {
    /// Load outside Lattice, in percent of the whole machine, above which the envelope's CPU
    /// cap is lowered; 0 turns the governor off.
    pub threshold_percent: u32,
    /// The lowest the cap goes, in percent of the whole machine.
    pub min_cpu_percent: u32,
    /// Seconds between load samples.
    pub sample_secs: u32,
}

impl Default for HostLoadConfig {
    fn default() -> Self {
        HostLoadConfig {
            threshold_percent: 50,
            min_cpu_percent: 5,
            sample_secs: 5,
        }
    }
}

/// Both sections, validated.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OwnerSettings {
    pub schedule: Schedule,
    /// Checked to resolve at validation; empty: the machine's zone.
    pub time_zone: String,
    pub threshold_percent: u32,
    pub min_cpu_percent: u32,
    pub sample: Duration,
}

impl Default for OwnerSettings {
    fn default() -> Self {
        OwnerSettings::validate(&AvailabilityConfig::default(), &HostLoadConfig::default())
            .expect("the defaults are valid")
    }
}

impl OwnerSettings {
    /// Checks both sections; every problem is returned, named by key.
    pub fn validate(a: &AvailabilityConfig, h: &HostLoadConfig) -> Result<Self, Vec<String>> {
        let mut problems = Vec::new();
        let schedule = Schedule::parse(&a.windows).unwrap_or_else(|errs| {
            problems.extend(errs.iter().map(|e| format!("availability.windows: {e}")));
            Schedule::default()
        });
        if let Err(e) = zone(&a.time_zone) {
            problems.push(format!("availability.time_zone: {e}"));
        }
        if h.threshold_percent > 100 {
            problems.push(format!(
                "host_load.threshold_percent: must be 0 (off) to 100, got {}",
                h.threshold_percent
            ));
        }
        if !(1..=100).contains(&h.min_cpu_percent) {
            problems.push(format!(
                "host_load.min_cpu_percent: must be 1 to 100, got {}",
                h.min_cpu_percent
            ));
        }
        if !(1..=3600).contains(&h.sample_secs) {
            problems.push(format!(
                "host_load.sample_secs: must be 1 to 3600, got {}",
                h.sample_secs
            ));
        }
        if !problems.is_empty() {
            return Err(problems);
        }
        Ok(OwnerSettings {
            schedule,
            time_zone: a.time_zone.clone(),
            threshold_percent: h.threshold_percent,
            min_cpu_percent: h.min_cpu_percent,
            sample: Duration::from_secs(u64::from(h.sample_secs)),
        })
    }
}

/// The zone named, or the machine's own for "".
pub fn zone(name: &str) -> Result<jiff::tz::TimeZone, String> {
    if name.is_empty() {
        return Ok(jiff::tz::TimeZone::system());
    }
    jiff::tz::TimeZone::get(name).map_err(|e| format!("unknown time zone {name:?} ({e})"))
}

/// Something the shell must do.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// Batch work may run (true) or must pause (false); `why` is for the event.
    Batch { allowed: bool, why: String },
    /// Change the envelope's CPU cap.
    Cpu(Change),
}

/// Windows and governor together, without I/O.
#[derive(Debug, Clone)]
pub struct Policy {
    schedule: Schedule,
    governor: Option<Governor>,
    batch_allowed: Option<bool>,
}

impl Policy {
    /// `configured_cpu`: the envelope's configured cap (percent of the machine).
    pub fn new(settings: &OwnerSettings, configured_cpu: u32) -> Policy {
        Policy {
            schedule: settings.schedule.clone(),
            governor: (settings.threshold_percent > 0).then(|| {
                Governor::new(
                    configured_cpu,
                    settings.min_cpu_percent,
                    settings.threshold_percent,
                )
            }),
            batch_allowed: None,
        }
    }

    /// One step at local time `now`, with a load sample (host busy, envelope busy; percent of
    /// the machine) when one is available. The first step always says whether batch may run.
    /// `floor_pct`: the envelope's CPU cap may not go below this (the largest workload's own
    /// limit, in percent of the machine).
    pub fn step(
        &mut self,
        now: &jiff::Zoned,
        load: Option<(f64, f64)>,
        floor_pct: u32,
    ) -> Vec<Effect> {
        let mut effects = Vec::new();
        let weekday = now.weekday().to_monday_zero_offset() as u8;
        let minute = now.hour() as u16 * 60 + now.minute() as u16;
        let allowed = self.schedule.allows(weekday, minute);
        if self.batch_allowed != Some(allowed) {
            self.batch_allowed = Some(allowed);
            let when = now.strftime("%a %H:%M %Z");
            effects.push(Effect::Batch {
                allowed,
                why: if allowed {
                    format!("inside the provider's availability windows ({when})")
                } else {
                    format!("outside the provider's availability windows ({when})")
                },
            });
        }
        if let Some(g) = self.governor.as_mut() {
            if let Some(c) = g.set_floor(floor_pct) {
                effects.push(Effect::Cpu(c));
            }
            if let Some((host, env)) = load {
                if let Some(c) = g.sample(host, env) {
                    effects.push(Effect::Cpu(c));
                }
            }
        }
        effects
    }

    /// The kernel refused a CPU change: the governor stays where it was.
    pub fn refused(&mut self, change: Change) {
        if let Some(g) = self.governor.as_mut() {
            g.refused(change);
        }
    }
}

/// Events for the fleet, queued by background tasks and drained into the agent's next status.
#[derive(Debug, Clone, Default)]
pub struct EventSink(Arc<Mutex<Vec<(String, String)>>>);

impl EventSink {
    pub fn push(&self, kind: &str, detail: impl Into<String>) {
        if let Ok(mut q) = self.0.lock() {
            // Bounded: a flapping cause must not grow memory without end.
            if q.len() >= 256 {
                q.remove(0);
            }
            q.push((kind.to_string(), detail.into()));
        }
    }

    pub fn drain(&self) -> Vec<(String, String)> {
        self.0
            .lock()
            .map(|mut q| std::mem::take(&mut *q))
            .unwrap_or_default()
    }
}

/// Busy and total CPU time of the machine from `/proc/stat`, in nanoseconds.
fn host_cpu_ns() -> Option<(u64, u64)> {
    use procfs::CurrentSI;
    let stat = procfs::KernelStats::current().ok()?;
    let t = stat.total;
    let busy = t.user
        + t.nice
        + t.system
        + t.irq.unwrap_or(0)
        + t.softirq.unwrap_or(0)
        + t.steal.unwrap_or(0);
    let total = busy + t.idle + t.iowait.unwrap_or(0);
    let tps = procfs::ticks_per_second().max(1);
    Some((busy * 1_000_000_000 / tps, total * 1_000_000_000 / tps))
}

/// Turns cumulative counters into percent-of-machine samples.
#[derive(Debug, Default)]
struct LoadMeter {
    last: Option<(u64, u64, u64)>,
}

impl LoadMeter {
    /// (host busy, envelope busy) in percent of the machine since the previous call.
    fn sample(&mut self, host: Option<(u64, u64)>, envelope_ns: Option<u64>) -> Option<(f64, f64)> {
        let ((busy, total), env) = (host?, envelope_ns?);
        let prev = self.last.replace((busy, total, env));
        let (pb, pt, pe) = prev?;
        let dt = total.checked_sub(pt).filter(|d| *d > 0)? as f64;
        let host = busy.saturating_sub(pb) as f64 / dt * 100.0;
        let env = env.saturating_sub(pe) as f64 / dt * 100.0;
        Some((host.clamp(0.0, 100.0), env.clamp(0.0, 100.0)))
    }
}

/// Starts the owner-first loop: every `settings.sample` it checks the windows and the load,
/// pauses or resumes batch work through `reconcile`, sets the envelope's CPU cap, and queues
/// an event for each change.
pub fn spawn<M: CgroupManager + 'static>(
    settings: OwnerSettings,
    configured_cpu: u32,
    envelope: Arc<M>,
    reconcile: ReconcileHandle,
    events: EventSink,
    mut shutdown: Shutdown,
) {
    tokio::spawn(async move {
        let tz = zone(&settings.time_zone).unwrap_or(jiff::tz::TimeZone::UTC);
        let mut policy = Policy::new(&settings, configured_cpu);
        let mut meter = LoadMeter::default();
        let mut tick = tokio::time::interval(settings.sample);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.wait() => return,
            }
            let now = jiff::Timestamp::now().to_zoned(tz.clone());
            let env = Arc::clone(&envelope);
            let started = Instant::now();
            let load = tokio::task::spawn_blocking(move || {
                (host_cpu_ns(), env.stats().ok().map(|s| s.cpu_usage_ns))
            })
            .await
            .ok()
            .and_then(|(h, e)| meter.sample(h, e));
            // A workload's own CPU limit, as percent of the machine, rounded up.
            let machine_millis = u64::from(crate::cgroup::online_cpus().max(1)) * 1000;
            let floor = (u64::from(reconcile.largest_cpu_millis()) * 100).div_ceil(machine_millis);
            let floor = u32::try_from(floor).unwrap_or(100);
            for effect in policy.step(&now, load, floor) {
                match effect {
                    Effect::Batch { allowed, why } => {
                        reconcile.set_batch_allowed(allowed);
                        tracing::info!(allowed, "batch work {why}");
                        events.push(
                            if allowed {
                                "batch_resumed"
                            } else {
                                "batch_paused"
                            },
                            why,
                        );
                    }
                    Effect::Cpu(change) => {
                        let env = Arc::clone(&envelope);
                        let set =
                            tokio::task::spawn_blocking(move || env.set_cpu_percent(change.to))
                                .await;
                        let detail = if change.other_load.is_nan() {
                            format!(
                                "{}% -> {}% of the machine (a workload needs that much)",
                                change.from, change.to
                            )
                        } else {
                            format!(
                                "{}% -> {}% of the machine (load outside Lattice {:.0}%)",
                                change.from, change.to, change.other_load
                            )
                        };
                        match set {
                            Ok(Ok(())) => {
                                let kind = if change.to < change.from {
                                    "cpu_cap_lowered"
                                } else {
                                    "cpu_cap_raised"
                                };
                                tracing::info!("envelope CPU cap {detail}");
                                events.push(kind, detail);
                            }
                            Ok(Err(e)) => {
                                policy.refused(change);
                                tracing::warn!("envelope CPU cap {detail} refused: {e}");
                                events.push("cpu_cap_refused", format!("{detail}: {e}"));
                            }
                            Err(e) => {
                                policy.refused(change);
                                tracing::warn!("envelope CPU cap task failed: {e}");
                            }
                        }
                    }
                }
            }
            tracing::trace!(took_us = started.elapsed().as_micros() as u64, "owner tick");
        }
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings(windows: &[&str], threshold: u32) -> OwnerSettings {
        OwnerSettings::validate(
            &AvailabilityConfig {
                time_zone: "Europe/Berlin".into(),
                windows: windows.iter().map(|s| s.to_string()).collect(),
            },
            &HostLoadConfig {
                threshold_percent: threshold,
                ..Default::default()
            },
        )
        .unwrap()
    }

    fn berlin(s: &str) -> jiff::Zoned {
        format!("{s}[Europe/Berlin]").parse().unwrap()
    }

    #[test]
    fn batch_follows_the_windows_in_the_providers_zone_and_reports_each_change() {
        let mut p = Policy::new(&settings(&["Mon-Fri 19:00-07:00"], 0), 50);
        // 2026-11-23 is a Monday.
        let e = p.step(&berlin("2026-11-23T12:00"), None, 0);
        assert!(
            matches!(&e[..], [Effect::Batch { allowed: false, why }] if why.contains("outside")),
            "{e:?}"
        );
        assert!(p.step(&berlin("2026-11-23T18:59"), None, 0).is_empty());
        let e = p.step(&berlin("2026-11-23T19:00"), None, 0);
        assert!(
            matches!(&e[..], [Effect::Batch { allowed: true, .. }]),
            "{e:?}"
        );
        assert!(p.step(&berlin("2026-11-24T06:59"), None, 0).is_empty());
        assert_eq!(p.step(&berlin("2026-11-24T07:00"), None, 0).len(), 1);
        // The same instant in UTC is an hour earlier on the clock; the zone decides.
        let utc: jiff::Zoned = "2026-11-23T18:30[UTC]".parse().unwrap();
        let mut p = Policy::new(&settings(&["Mon-Fri 19:00-07:00"], 0), 50);
        let e = p.step(&utc.with_time_zone(zone("Europe/Berlin").unwrap()), None, 0);
        assert!(
            matches!(&e[..], [Effect::Batch { allowed: true, .. }]),
            "{e:?}"
        );
    }

    #[test]
    fn the_governor_acts_only_with_a_sample_and_only_when_on() {
        let mut p = Policy::new(&settings(&[], 40), 60);
        let now = berlin("2026-11-23T12:00");
        assert_eq!(p.step(&now, None, 0).len(), 1); // batch allowed (no windows: always)
        let e = p.step(&now, Some((90.0, 10.0)), 0);
        assert!(matches!(&e[..], [Effect::Cpu(c)] if c.to == 30), "{e:?}");
        // A workload needing 40% of the machine holds the cap there, and raises it at once.
        let e = p.step(&now, Some((90.0, 10.0)), 40);
        assert!(
            matches!(&e[..], [Effect::Cpu(c)] if c.from == 30 && c.to == 40),
            "{e:?}"
        );
        let e = p.step(&now, Some((90.0, 10.0)), 40);
        assert!(e.is_empty(), "{e:?}");
        let mut off = Policy::new(&settings(&[], 0), 60);
        off.step(&now, None, 0);
        assert!(off.step(&now, Some((100.0, 0.0)), 0).is_empty());
    }

    #[test]
    fn bad_sections_name_every_key() {
        let errs = OwnerSettings::validate(
            &AvailabilityConfig {
                time_zone: "Mars/Olympus".into(),
                windows: vec!["Someday 10:00-11:00".into()],
            },
            &HostLoadConfig {
                threshold_percent: 150,
                min_cpu_percent: 0,
                sample_secs: 0,
            },
        )
        .unwrap_err();
        let all = errs.join("\n");
        for key in [
            "availability.windows",
            "availability.time_zone",
            "host_load.threshold_percent",
            "host_load.min_cpu_percent",
            "host_load.sample_secs",
        ] {
            assert!(all.contains(key), "{key} missing in\n{all}");
        }
    }

    #[test]
    fn the_meter_needs_two_readings_and_reports_percent_of_the_machine() {
        let mut m = LoadMeter::default();
        assert_eq!(m.sample(Some((100, 1000)), Some(10)), None);
        let (host, env) = m.sample(Some((600, 2000)), Some(260)).unwrap();
        assert!((host - 50.0).abs() < 1e-9 && (env - 25.0).abs() < 1e-9);
        assert_eq!(m.sample(None, Some(1)), None);
    }

    #[test]
    fn the_event_queue_is_bounded_and_drains() {
        let s = EventSink::default();
        for i in 0..300 {
            s.push("k", i.to_string());
        }
        let d = s.drain();
        assert_eq!(d.len(), 256);
        assert_eq!(d.last().unwrap().1, "299");
        assert!(s.drain().is_empty());
    }
}
