//! Standard 5-field cron schedules as upstream's CronJob accepts them
//! (robfig/cron's standard parser): `*`, `?`, values, ranges, steps, lists,
//! month and weekday names, and the `@yearly`/`@annually`, `@monthly`,
//! `@weekly`, `@daily`/`@midnight`, `@hourly` descriptors. When both
//! day-of-month and day-of-week are restricted, either may match (as cron).

use jiff::Timestamp;
use jiff::civil::{Date, DateTime, Time};
use jiff::tz::TimeZone;

/// A parsed schedule.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Schedule {
    minutes: u64,
    hours: u64,
    dom: u64,
    months: u64,
    dow: u64,
    /// Day-of-month or day-of-week was `*`/`?`: both must then match.
    dom_star: bool,
    dow_star: bool,
}

/// Why a schedule does not parse.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[error("invalid schedule {0:?}: {1}")]
pub struct ParseError(String, String);

const MONTHS: &[&str] = &[
    "jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec",
];
const DAYS: &[&str] = &["sun", "mon", "tue", "wed", "thu", "fri", "sat"];

fn value(s: &str, names: &[&str], base: u32) -> Option<u32> {
    if let Some(i) = names.iter().position(|n| n.eq_ignore_ascii_case(s)) {
        return Some(i as u32 + base);
    }
    s.parse().ok()
}

/// Parses one field into a bit set; returns (bits, started with * or ?).
fn field(s: &str, min: u32, max: u32, names: &[&str], base: u32) -> Result<(u64, bool), String> {
    let mut bits = 0u64;
    let mut star = false;
    for part in s.split(',') {
        let (range, step) = match part.split_once('/') {
            Some((r, st)) => (
                r,
                Some(st.parse::<u32>().map_err(|_| format!("bad step {st:?}"))?),
            ),
            None => (part, None),
        };
        let (lo, hi) = if range == "*" || range == "?" {
            star = star || step.is_none();
            (min, max)
        } else if let Some((a, b)) = range.split_once('-') {
            let a = value(a, names, base).ok_or(format!("bad value {a:?}"))?;
            let b = value(b, names, base).ok_or(format!("bad value {b:?}"))?;
            (a, b)
        } else {
            let a = value(range, names, base).ok_or(format!("bad value {range:?}"))?;
            // "a/n" means a to the end, stepping n.
            (a, if step.is_some() { max } else { a })
        };
        if lo < min || hi > max || lo > hi {
            return Err(format!("{part:?} outside {min}-{max}"));
        }
        let step = step.unwrap_or(1);
        if step == 0 {
            return Err("step of zero".into());
        }
        let mut v = lo;
        while v <= hi {
            bits |= 1 << v;
            v += step;
        }
    }
    Ok((bits, star))
}

impl Schedule {
    /// Parses a schedule.
    pub fn parse(spec: &str) -> Result<Schedule, ParseError> {
        let err = |m: String| ParseError(spec.to_string(), m);
        let s = spec.trim();
        let expanded = match s.to_ascii_lowercase().as_str() {
            "@yearly" | "@annually" => "0 0 1 1 *".to_string(),
            "@monthly" => "0 0 1 * *".to_string(),
            "@weekly" => "0 0 * * 0".to_string(),
            "@daily" | "@midnight" => "0 0 * * *".to_string(),
            "@hourly" => "0 * * * *".to_string(),
            d if d.starts_with('@') => return Err(err(format!("unrecognized descriptor {d}"))),
            _ => s.to_string(),
        };
        let f: Vec<&str> = expanded.split_whitespace().collect();
        if f.len() != 5 {
            return Err(err(format!("expected exactly 5 fields, found {}", f.len())));
        }
        let (minutes, _) = field(f[0], 0, 59, &[], 0).map_err(err)?;
        let (hours, _) = field(f[1], 0, 23, &[], 0).map_err(err)?;
        let (dom, dom_star) = field(f[2], 1, 31, &[], 0).map_err(err)?;
        let (months, _) = field(f[3], 1, 12, MONTHS, 1).map_err(err)?;
        let (mut dow, dow_star) = field(f[4], 0, 7, DAYS, 0).map_err(err)?;
        // 7 is Sunday too.
        if dow & (1 << 7) != 0 {
            dow |= 1;
        }
        Ok(Schedule {
            minutes,
            hours,
            dom,
            months,
            dow,
            dom_star,
            dow_star,
        })
    }

    fn day_matches(&self, d: Date) -> bool {
        if self.months & (1 << d.month()) == 0 {
            return false;
        }
        let dom = self.dom & (1 << d.day()) != 0;
        let dow = self.dow & (1 << d.weekday().to_sunday_zero_offset()) != 0;
        if self.dom_star || self.dow_star {
            dom && dow
        } else {
            dom || dow
        }
    }

    /// The first schedule time strictly after `t`, in time zone `tz`
    /// (None if there is none within five years, e.g. "0 0 30 2 *").
    pub fn next_after(&self, t: Timestamp, tz: &TimeZone) -> Option<Timestamp> {
        let local = t.to_zoned(tz.clone()).datetime();
        let mut day = local.date();
        // The first candidate minute on the first day.
        let mut from = (local.hour() as u32, local.minute() as u32 + 1);
        for _ in 0..(366 * 5) {
            if self.day_matches(day) {
                for h in from.0..24 {
                    if self.hours & (1 << h) == 0 {
                        continue;
                    }
                    let m0 = if h == from.0 { from.1 } else { 0 };
                    for m in m0..60 {
                        if self.minutes & (1 << m) == 0 {
                            continue;
                        }
                        let dt = DateTime::from_parts(day, Time::new(h as i8, m as i8, 0, 0).ok()?);
                        let ts = tz.to_ambiguous_zoned(dt).compatible().ok()?.timestamp();
                        if ts > t {
                            return Some(ts);
                        }
                    }
                }
            }
            day = day.tomorrow().ok()?;
            from = (0, 0);
        }
        None
    }
}

/// What the schedule says at `now`, given the earliest time still due.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Due {
    /// The most recent schedule time in (earliest, now], if any.
    pub most_recent: Option<Timestamp>,
    /// How many schedule times were missed in that window (capped at 101).
    pub missed: u32,
    /// The next schedule time after `now`.
    pub next: Option<Timestamp>,
}

/// Upstream's mostRecentScheduleTime: schedule times after `earliest` up to
/// `now` (counting at most 101 of them, enough to warn about too many).
pub fn due(s: &Schedule, tz: &TimeZone, earliest: Timestamp, now: Timestamp) -> Due {
    let mut most_recent = None;
    let mut missed = 0;
    let mut t = earliest;
    while let Some(n) = s.next_after(t, tz) {
        if n > now {
            break;
        }
        most_recent = Some(n);
        missed += 1;
        if missed > 100 {
            // Find the last schedule time before now from a window just
            // wide enough to hold one; the count only feeds a warning.
            let mut last = n;
            for hours in [1, 24, 24 * 32, 24 * 366, 24 * 366 * 5] {
                let from = now
                    .checked_sub(jiff::SignedDuration::from_hours(hours))
                    .unwrap_or(n)
                    .max(n);
                let mut probe = from;
                while let Some(x) = s.next_after(probe, tz) {
                    if x > now {
                        break;
                    }
                    last = x;
                    probe = x;
                }
                if last > n || from == n {
                    break;
                }
            }
            most_recent = Some(last);
            break;
        }
        t = n;
    }
    Due {
        most_recent,
        missed,
        next: s.next_after(now, tz),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(s: &str) -> Timestamp {
        s.parse().unwrap()
    }

    #[test]
    fn every_minute_and_steps() {
        let s = Schedule::parse("*/1 * * * *").unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T10:00:30Z"), &TimeZone::UTC),
            Some(ts("2024-01-01T10:01:00Z"))
        );
        let s = Schedule::parse("*/15 * * * *").unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T10:15:00Z"), &TimeZone::UTC),
            Some(ts("2024-01-01T10:30:00Z"))
        );
        assert_eq!(
            s.next_after(ts("2024-01-01T23:50:00Z"), &TimeZone::UTC),
            Some(ts("2024-01-02T00:00:00Z"))
        );
    }

    #[test]
    fn descriptors_names_and_ranges() {
        let h = Schedule::parse("@hourly").unwrap();
        assert_eq!(
            h.next_after(ts("2024-03-05T07:59:59Z"), &TimeZone::UTC),
            Some(ts("2024-03-05T08:00:00Z"))
        );
        let d = Schedule::parse("@daily").unwrap();
        assert_eq!(
            d.next_after(ts("2024-12-31T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2025-01-01T00:00:00Z"))
        );
        // Weekdays at 09:30 in March only; 2024-03-02 is a Saturday.
        let w = Schedule::parse("30 9 * mar MON-FRI").unwrap();
        assert_eq!(
            w.next_after(ts("2024-03-01T10:00:00Z"), &TimeZone::UTC),
            Some(ts("2024-03-04T09:30:00Z"))
        );
        assert!(Schedule::parse("61 * * * *").is_err());
        assert!(Schedule::parse("* * * *").is_err());
        assert!(Schedule::parse("@every 5m").is_err());
    }

    #[test]
    fn day_of_month_or_day_of_week_when_both_restricted() {
        // The 15th, or any Sunday (7 = Sunday); 2024-06-02 is a Sunday.
        let s = Schedule::parse("0 0 15 * 7").unwrap();
        assert_eq!(
            s.next_after(ts("2024-06-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2024-06-02T00:00:00Z"))
        );
        // With dom "*", only the weekday restricts.
        let s = Schedule::parse("0 0 * * 1").unwrap();
        assert_eq!(
            s.next_after(ts("2024-06-01T00:00:00Z"), &TimeZone::UTC),
            Some(ts("2024-06-03T00:00:00Z"))
        );
        // February 30th never comes.
        let s = Schedule::parse("0 0 30 2 *").unwrap();
        assert_eq!(
            s.next_after(ts("2024-01-01T00:00:00Z"), &TimeZone::UTC),
            None
        );
    }

    #[test]
    fn time_zones_shift_the_schedule() {
        let tz = TimeZone::get("America/New_York")
            .expect("the tz database is missing: apt-get install tzdata");
        let s = Schedule::parse("0 9 * * *").unwrap();
        // 09:00 EST is 14:00 UTC.
        assert_eq!(
            s.next_after(ts("2024-01-10T12:00:00Z"), &tz),
            Some(ts("2024-01-10T14:00:00Z"))
        );
    }

    #[test]
    fn missed_schedules_pick_the_most_recent() {
        let s = Schedule::parse("*/10 * * * *").unwrap();
        let d = due(
            &s,
            &TimeZone::UTC,
            ts("2024-01-01T10:00:00Z"),
            ts("2024-01-01T10:35:00Z"),
        );
        assert_eq!(d.most_recent, Some(ts("2024-01-01T10:30:00Z")));
        assert_eq!(d.missed, 3);
        assert_eq!(d.next, Some(ts("2024-01-01T10:40:00Z")));
        let none = due(
            &s,
            &TimeZone::UTC,
            ts("2024-01-01T10:30:00Z"),
            ts("2024-01-01T10:35:00Z"),
        );
        assert_eq!(none.most_recent, None);
        // Days of missed minutes: capped count, still the latest time.
        let s = Schedule::parse("* * * * *").unwrap();
        let d = due(
            &s,
            &TimeZone::UTC,
            ts("2024-01-01T00:00:00Z"),
            ts("2024-01-03T00:00:30Z"),
        );
        assert_eq!(d.most_recent, Some(ts("2024-01-03T00:00:00Z")));
        assert!(d.missed > 100);
    }
}
