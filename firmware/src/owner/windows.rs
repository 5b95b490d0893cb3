//! The provider's weekly availability windows for batch work, without I/O.
//!
//! A window is written `DAYS HH:MM-HH:MM`: `DAYS` is `daily`, a day (`Mon`), a range
//! (`Mon-Fri`, which may wrap: `Sat-Mon`) or a comma list of those (`Mon,Wed,Fri-Sun`); the
//! times are local to the configured zone, `24:00` means the end of the day, and an end before
//! the start runs past midnight into the next day (`Mon-Fri 19:00-07:00` includes Saturday
//! 06:00, from Friday's window). `always` is every minute. No windows at all means always.

use std::fmt;

/// Days of the week, Monday first (ISO 8601).
const DAYS: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];
const MINUTES_PER_DAY: u16 = 24 * 60;

/// One parsed window.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    /// Bit `d` set: the window starts on day `d` (0 = Monday).
    days: u8,
    /// Minutes after midnight, `start < 1440`, `end <= 1440`; `end <= start` wraps.
    start: u16,
    end: u16,
}

/// A window that could not be read, with the reason.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("availability window {text:?}: {reason}")]
pub struct WindowError {
    pub text: String,
    pub reason: String,
}

fn day(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    let s = s.get(..3)?;
    DAYS.iter().position(|d| *d == s).map(|p| p as u8)
}

fn days(spec: &str) -> Result<u8, String> {
    if spec.eq_ignore_ascii_case("daily") {
        return Ok(0x7f);
    }
    let mut mask = 0u8;
    for part in spec.split(',') {
        let unknown = |d: &str| format!("unknown day {d:?} (use Mon, Tue, … Sun, or daily)");
        match part.split_once('-') {
            Some((a, b)) => {
                let a = day(a).ok_or_else(|| unknown(a))?;
                let b = day(b).ok_or_else(|| unknown(b))?;
                let mut d = a;
                loop {
                    mask |= 1 << d;
                    if d == b {
                        break;
                    }
                    d = (d + 1) % 7;
                }
            }
            None => mask |= 1 << day(part).ok_or_else(|| unknown(part))?,
        }
    }
    Ok(mask)
}

fn minutes(s: &str) -> Result<u16, String> {
    let bad = || format!("{s:?} is not a time (HH:MM, 00:00 to 24:00)");
    let (h, m) = s.trim().split_once(':').ok_or_else(bad)?;
    let (h, m): (u16, u16) = (h.parse().map_err(|_| bad())?, m.parse().map_err(|_| bad())?);
    if m > 59 || h > 24 || (h == 24 && m != 0) {
        return Err(bad());
    }
    Ok(h * 60 + m)
}

impl Window {
    pub fn parse(text: &str) -> Result<Window, WindowError> {
        let err = |reason: String| WindowError {
            text: text.to_string(),
            reason,
        };
        let t = text.trim();
        if t.eq_ignore_ascii_case("always") {
            return Ok(Window {
                days: 0x7f,
                start: 0,
                end: MINUTES_PER_DAY,
            });
        }
        let (d, times) = t
            .split_once(char::is_whitespace)
            .ok_or_else(|| err("expected DAYS HH:MM-HH:MM, e.g. \"Mon-Fri 19:00-07:00\"".into()))?;
        let (a, b) = times
            .trim()
            .split_once('-')
            .ok_or_else(|| err(format!("{times:?} is not a time range HH:MM-HH:MM")))?;
        let (start, end) = (minutes(a).map_err(err)?, minutes(b).map_err(err)?);
        if start == MINUTES_PER_DAY {
            return Err(err("a window cannot start at 24:00".into()));
        }
        if start == end {
            return Err(err("an empty window (start equals end)".into()));
        }
        Ok(Window {
            days: days(d).map_err(err)?,
            start,
            end,
        })
    }

    /// Whether the window covers `minute` (after midnight) of `weekday` (0 = Monday).
    pub fn covers(&self, weekday: u8, minute: u16) -> bool {
        let starts_on = |d: u8| self.days & (1 << (d % 7)) != 0;
        if self.start < self.end {
            starts_on(weekday) && (self.start..self.end).contains(&minute)
        } else {
            // Wraps: the evening part on its own day, the morning part on the next.
            (starts_on(weekday) && minute >= self.start)
                || (starts_on(weekday + 6) && minute < self.end)
        }
    }
}

impl fmt::Display for Window {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names: Vec<&str> = (0..7)
            .filter(|d| self.days & (1 << d) != 0)
            .map(|d| DAYS[d as usize])
            .collect();
        write!(
            f,
            "{} {:02}:{:02}-{:02}:{:02}",
            names.join(","),
            self.start / 60,
            self.start % 60,
            self.end / 60,
            self.end % 60
        )
    }
}

/// A provider's whole schedule.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Schedule {
    windows: Vec<Window>,
}

impl Schedule {
    /// Parses every window, reporting all the bad ones.
    pub fn parse<S: AsRef<str>>(texts: &[S]) -> Result<Schedule, Vec<WindowError>> {
        let (ok, bad): (Vec<_>, Vec<_>) = texts
            .iter()
            .map(|t| Window::parse(t.as_ref()))
            .partition(Result::is_ok);
        if !bad.is_empty() {
            return Err(bad.into_iter().filter_map(Result::err).collect());
        }
        Ok(Schedule {
            windows: ok.into_iter().filter_map(Result::ok).collect(),
        })
    }

    /// True when there are no windows (the node offers 24/7).
    pub fn is_always(&self) -> bool {
        (0..7u8).all(|d| (0..MINUTES_PER_DAY).all(|m| self.allows(d, m)))
    }

    /// Whether batch work may run at `minute` of `weekday` (0 = Monday), local time.
    pub fn allows(&self, weekday: u8, minute: u16) -> bool {
        self.windows.is_empty() || self.windows.iter().any(|w| w.covers(weekday, minute))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MON: u8 = 0;
    const FRI: u8 = 4;
    const SAT: u8 = 5;
    const SUN: u8 = 6;

    fn at(h: u16, m: u16) -> u16 {
        h * 60 + m
    }

    #[test]
    fn an_overnight_window_runs_into_the_next_morning() {
        let s = Schedule::parse(&["Mon-Fri 19:00-07:00"]).unwrap();
        assert!(s.allows(MON, at(19, 0)));
        assert!(s.allows(MON, at(23, 59)));
        assert!(s.allows(1, at(6, 59))); // Tuesday morning, from Monday's window
        assert!(!s.allows(1, at(7, 0)));
        assert!(!s.allows(MON, at(12, 0)));
        assert!(!s.allows(MON, at(6, 0))); // Monday morning belongs to Sunday: not listed
        assert!(s.allows(SAT, at(6, 0))); // Saturday morning, from Friday's window
        assert!(!s.allows(SAT, at(20, 0)));
    }

    #[test]
    fn day_lists_ranges_that_wrap_and_whole_days() {
        let s = Schedule::parse(&["Sat-Mon 00:00-24:00", "wed 12:00-13:00"]).unwrap();
        for d in [SAT, SUN, MON] {
            assert!(s.allows(d, 0) && s.allows(d, at(23, 59)));
        }
        assert!(!s.allows(FRI, at(12, 0)));
        assert!(s.allows(2, at(12, 30)));
        assert!(!s.allows(2, at(13, 0)));
        let s = Schedule::parse(&["Mon,Wed,Fri 08:00-09:00"]).unwrap();
        assert!(s.allows(FRI, at(8, 30)) && !s.allows(1, at(8, 30)));
    }

    #[test]
    fn no_windows_or_always_means_always() {
        let none: [&str; 0] = [];
        assert!(Schedule::parse(&none).unwrap().is_always());
        assert!(Schedule::parse(&["always"]).unwrap().is_always());
        assert!(Schedule::parse(&["daily 00:00-24:00"]).unwrap().is_always());
        assert!(!Schedule::parse(&["daily 01:00-24:00"]).unwrap().is_always());
    }

    #[test]
    fn every_bad_window_is_reported_with_its_reason() {
        let errs = Schedule::parse(&[
            "Mon-Fri 19:00-07:00",
            "Funday 10:00-11:00",
            "Mon 25:00-26:00",
            "Mon 10:00-10:00",
            "Mon",
            "Mon 10:00",
        ])
        .unwrap_err();
        assert_eq!(errs.len(), 5, "{errs:?}");
        let text: Vec<String> = errs.iter().map(ToString::to_string).collect();
        assert!(text[0].contains("unknown day \"Funday\""), "{}", text[0]);
        assert!(text[1].contains("not a time"), "{}", text[1]);
        assert!(text[2].contains("empty window"), "{}", text[2]);
        assert!(text[3].contains("DAYS HH:MM-HH:MM"), "{}", text[3]);
        assert!(text[4].contains("time range"), "{}", text[4]);
    }

    #[test]
    fn display_reads_back() {
        let w = Window::parse("Fri-Sun 22:30-06:15").unwrap();
        assert_eq!(w.to_string(), "fri,sat,sun 22:30-06:15");
        assert_eq!(Window::parse(&w.to_string()).unwrap(), w);
    }
}
