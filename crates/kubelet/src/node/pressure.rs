//! Node pressure: the eviction signals upstream's eviction manager watches
//! (`memory.available`, `nodefs.*`, `imagefs.*`, `pid.available`), compared
//! with hard thresholds in `--eviction-hard` syntax, turned into the
//! MemoryPressure, DiskPressure and PIDPressure conditions. The node
//! lifecycle controller taints a node under pressure, so the scheduler
//! stops placing pods there; the agent itself refuses pods the way
//! upstream's admission does and reclaims images under disk pressure.
//!
//! Defaults depart from upstream's for disks: a developer machine's disk
//! is shared with everything else on it, and upstream's `nodefs.available<10%`
//! and `imagefs.available<15%` of a 250 GB disk would refuse pods with
//! 25–38 GB still free (kind turns those thresholds off for the same
//! reason). r8s's defaults are absolute; `--eviction-hard` takes upstream's
//! values, percentages included.

use std::path::Path;
use std::time::{Duration, Instant};

/// What a threshold measures.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Signal {
    /// Memory the host can still give (MemAvailable).
    MemoryAvailable,
    /// Free bytes on the data dir's filesystem.
    NodefsAvailable,
    /// Free inodes there.
    NodefsInodesFree,
    /// Free bytes on the image store's filesystem.
    ImagefsAvailable,
    /// Free inodes there.
    ImagefsInodesFree,
    /// PIDs left below `kernel.pid_max`.
    PidAvailable,
}

impl Signal {
    fn parse(s: &str) -> Option<Signal> {
        Some(match s {
            "memory.available" => Signal::MemoryAvailable,
            "nodefs.available" => Signal::NodefsAvailable,
            "nodefs.inodesFree" => Signal::NodefsInodesFree,
            "imagefs.available" => Signal::ImagefsAvailable,
            "imagefs.inodesFree" => Signal::ImagefsInodesFree,
            "pid.available" => Signal::PidAvailable,
            _ => return None,
        })
    }

    /// The flag name (`memory.available`).
    pub fn name(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "memory.available",
            Signal::NodefsAvailable => "nodefs.available",
            Signal::NodefsInodesFree => "nodefs.inodesFree",
            Signal::ImagefsAvailable => "imagefs.available",
            Signal::ImagefsInodesFree => "imagefs.inodesFree",
            Signal::PidAvailable => "pid.available",
        }
    }

    /// The condition this signal feeds.
    pub fn condition(self) -> &'static str {
        match self {
            Signal::MemoryAvailable => "MemoryPressure",
            Signal::PidAvailable => "PIDPressure",
            _ => "DiskPressure",
        }
    }
}

/// A threshold's value: an amount or a share of the capacity.
#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Amount {
    /// Bytes, inodes or PIDs.
    Absolute(u64),
    /// Percent of the capacity.
    Percent(f64),
}

/// One hard eviction threshold: pressure while `signal < value`.
#[derive(Debug, Clone, PartialEq)]
pub struct Threshold {
    /// The signal.
    pub signal: Signal,
    /// Its minimum.
    pub value: Amount,
}

/// r8s's default `--eviction-hard` (see the module comment for the disk
/// values; memory is upstream's).
pub const DEFAULT_EVICTION_HARD: &str =
    "memory.available<100Mi,nodefs.available<1Gi,nodefs.inodesFree<5%,imagefs.available<1Gi";

/// Parses `memory.available<100Mi,nodefs.available<10%` (upstream's
/// syntax; only `<` exists upstream). An empty string means no thresholds.
pub fn parse_thresholds(s: &str) -> Result<Vec<Threshold>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part.split_once('<').ok_or_else(|| {
            format!("{part:?}: expected signal<value, e.g. memory.available<100Mi")
        })?;
        let signal = Signal::parse(name.trim()).ok_or_else(|| {
            format!(
                "{part:?}: unknown signal {name:?} (memory.available, nodefs.available, nodefs.inodesFree, imagefs.available, imagefs.inodesFree, pid.available)"
            )
        })?;
        let value = parse_amount(part, value.trim())?;
        out.push(Threshold { signal, value });
    }
    Ok(out)
}

/// `100Mi` or `10%`.
fn parse_amount(part: &str, v: &str) -> Result<Amount, String> {
    if let Some(p) = v.strip_suffix('%') {
        let p: f64 = p
            .parse()
            .map_err(|_| format!("{part:?}: {v:?} is not a percentage"))?;
        if !(0.0..=100.0).contains(&p) {
            return Err(format!("{part:?}: a percentage must be within 0% and 100%"));
        }
        Ok(Amount::Percent(p))
    } else {
        Ok(Amount::Absolute(parse_quantity(v).ok_or_else(|| {
            format!("{part:?}: {v:?} is not a quantity")
        })?))
    }
}

/// Parses `--eviction-minimum-reclaim` (`nodefs.available=500Mi,...`):
/// once a threshold drives evictions, they go on until the signal is this
/// much above it, so the node does not hover at the threshold.
pub fn parse_minimum_reclaim(s: &str) -> Result<Vec<(Signal, Amount)>, String> {
    parse_signal_list(
        s,
        "signal=quantity, e.g. nodefs.available=500Mi",
        parse_amount,
    )
}

/// Parses `--eviction-soft-grace-period` (`memory.available=1m30s,...`):
/// how long each soft threshold must hold before pods are evicted for it.
pub fn parse_grace_periods(s: &str) -> Result<Vec<(Signal, Duration)>, String> {
    parse_signal_list(
        s,
        "signal=duration, e.g. memory.available=1m30s",
        |part, v| {
            parse_go_duration(v).ok_or_else(|| format!("{part:?}: {v:?} is not a duration (1m30s)"))
        },
    )
}

/// Parses a `signal=value,...` flag with `value` read by `parse`.
fn parse_signal_list<T>(
    s: &str,
    expected: &str,
    parse: impl Fn(&str, &str) -> Result<T, String>,
) -> Result<Vec<(Signal, T)>, String> {
    let mut out = Vec::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        let (name, value) = part
            .split_once('=')
            .ok_or_else(|| format!("{part:?}: expected {expected}"))?;
        let signal = Signal::parse(name.trim())
            .ok_or_else(|| format!("{part:?}: unknown signal {name:?}"))?;
        out.push((signal, parse(part, value.trim())?));
    }
    Ok(out)
}

/// Soft thresholds with their grace periods; every soft threshold needs
/// one, as upstream's kubelet insists.
pub fn soft_thresholds(
    thresholds: &str,
    grace: &str,
) -> Result<Vec<(Threshold, Duration)>, String> {
    let periods = parse_grace_periods(grace)?;
    parse_thresholds(thresholds)?
        .into_iter()
        .map(|t| {
            let g = periods
                .iter()
                .find(|(s, _)| *s == t.signal)
                .map(|(_, d)| *d)
                .ok_or_else(|| {
                    format!(
                        "grace period must be specified for the soft eviction threshold {}",
                        t.signal.name()
                    )
                })?;
            Ok((t, g))
        })
        .collect()
}

/// `1m30s`, `90s`, `500ms`, `2h` (Go's duration syntax, as the kubelet's
/// flags take).
fn parse_go_duration(s: &str) -> Option<Duration> {
    if s == "0" {
        return Some(Duration::ZERO);
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.')
            .filter(|i| *i > 0)?;
        let n: f64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let (unit, len) = ["ms", "h", "m", "s"]
            .iter()
            .find(|u| rest.starts_with(**u))
            .map(|u| (*u, u.len()))?;
        rest = &rest[len..];
        let secs = match unit {
            "ms" => n / 1000.0,
            "h" => n * 3600.0,
            "m" => n * 60.0,
            _ => n,
        };
        total += Duration::from_secs_f64(secs);
    }
    Some(total)
}

/// `100Mi`, `1G`, `5000` to a number.
fn parse_quantity(s: &str) -> Option<u64> {
    controller_runtime::quantity::parse_scaled(s, 1).and_then(|v| u64::try_from(v).ok())
}

/// One reading of a signal: what is left, of how much.
#[derive(Debug, Clone, Copy, Default)]
pub struct Reading {
    /// Available amount.
    pub available: u64,
    /// Capacity (for percentages).
    pub capacity: u64,
}

/// Reads a signal off the host.
pub fn observe(signal: Signal, data_dir: &Path, images_dir: &Path) -> Option<Reading> {
    let fs = |p: &Path, inodes: bool| {
        let p = if p.exists() { p } else { data_dir };
        let s = nix::sys::statvfs::statvfs(p).ok()?;
        Some(if inodes {
            Reading {
                available: s.files_available(),
                capacity: s.files(),
            }
        } else {
            Reading {
                available: s.blocks_available() * s.fragment_size(),
                capacity: s.blocks() * s.fragment_size(),
            }
        })
    };
    match signal {
        Signal::MemoryAvailable => {
            let text = std::fs::read_to_string("/proc/meminfo").ok()?;
            let kb = |key: &str| {
                text.lines()
                    .find(|l| l.starts_with(key))
                    .and_then(|l| l.split_whitespace().nth(1))
                    .and_then(|v| v.parse::<u64>().ok())
                    .map(|v| v * 1024)
            };
            Some(Reading {
                available: kb("MemAvailable:")?,
                capacity: kb("MemTotal:")?,
            })
        }
        Signal::NodefsAvailable => fs(data_dir, false),
        Signal::NodefsInodesFree => fs(data_dir, true),
        Signal::ImagefsAvailable => fs(images_dir, false),
        Signal::ImagefsInodesFree => fs(images_dir, true),
        Signal::PidAvailable => {
            let max: u64 = std::fs::read_to_string("/proc/sys/kernel/pid_max")
                .ok()?
                .trim()
                .parse()
                .ok()?;
            let used = std::fs::read_dir("/proc")
                .ok()?
                .flatten()
                .filter(|e| e.file_name().to_string_lossy().parse::<u32>().is_ok())
                .count() as u64;
            Some(Reading {
                available: max.saturating_sub(used),
                capacity: max,
            })
        }
    }
}

/// Whether a reading crosses a threshold.
pub fn crossed(t: &Threshold, r: Reading) -> bool {
    r.available < amount_of(t.value, r.capacity)
}

/// An amount in the signal's unit, given its capacity.
pub fn amount_of(a: Amount, capacity: u64) -> u64 {
    match a {
        Amount::Absolute(v) => v,
        Amount::Percent(p) => (capacity as f64 * p / 100.0) as u64,
    }
}

/// Whether a threshold that drove evictions is still unresolved: the
/// signal is not yet `reclaim` above it (upstream's
/// `thresholdsNotYetResolved`).
pub fn unresolved(t: &Threshold, reclaim: Amount, r: Reading) -> bool {
    r.available < amount_of(t.value, r.capacity) + amount_of(reclaim, r.capacity)
}

/// The pressure conditions over time: each stays True for the transition
/// period after its signals clear (upstream's
/// `--eviction-pressure-transition-period`), so a node does not flap.
pub struct Tracker {
    thresholds: Vec<Threshold>,
    transition_period: Duration,
    last_seen: [Option<Instant>; 3],
    /// Why each condition is True now, for its message.
    why: [Vec<String>; 3],
}

const CONDITIONS: [&str; 3] = ["MemoryPressure", "DiskPressure", "PIDPressure"];

impl Tracker {
    /// A tracker for these thresholds.
    pub fn new(thresholds: Vec<Threshold>, transition_period: Duration) -> Tracker {
        Tracker {
            thresholds,
            transition_period,
            last_seen: [None; 3],
            why: Default::default(),
        }
    }

    /// Reads every signal now and updates the conditions.
    pub fn observe(&mut self, data_dir: &Path, images_dir: &Path) {
        self.why = Default::default();
        let now = Instant::now();
        for t in &self.thresholds {
            let Some(r) = observe(t.signal, data_dir, images_dir) else {
                continue;
            };
            if crossed(t, r) {
                let i = CONDITIONS
                    .iter()
                    .position(|c| *c == t.signal.condition())
                    .unwrap_or(0);
                self.last_seen[i] = Some(now);
                self.why[i].push(format!("{:?}", t.signal));
            }
        }
    }

    /// Keeps the conditions of these signals True now: their thresholds
    /// still drive evictions (see `--eviction-minimum-reclaim`).
    pub fn hold(&mut self, signals: &[Signal]) {
        let now = Instant::now();
        for s in signals {
            let i = CONDITIONS
                .iter()
                .position(|c| *c == s.condition())
                .unwrap_or(0);
            self.last_seen[i] = Some(now);
            let why = format!("{s:?}");
            if !self.why[i].contains(&why) {
                self.why[i].push(why);
            }
        }
    }

    /// Whether `condition` (e.g. "DiskPressure") holds now.
    pub fn under(&self, condition: &str) -> bool {
        CONDITIONS
            .iter()
            .position(|c| *c == condition)
            .and_then(|i| self.last_seen[i])
            .is_some_and(|t| t.elapsed() < self.transition_period)
    }

    /// The signals that crossed their thresholds in the last reading.
    pub fn signals(&self, condition: &str) -> Vec<String> {
        CONDITIONS
            .iter()
            .position(|c| *c == condition)
            .map(|i| self.why[i].clone())
            .unwrap_or_default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn minimum_reclaim_holds_a_threshold_until_the_margin_is_free() {
        let m = parse_minimum_reclaim("nodefs.available=500Mi, memory.available=5%").unwrap();
        assert_eq!(m[0], (Signal::NodefsAvailable, Amount::Absolute(500 << 20)));
        assert_eq!(m[1], (Signal::MemoryAvailable, Amount::Percent(5.0)));
        assert!(parse_minimum_reclaim("nodefs.available<1Gi").is_err());
        let t = parse_thresholds("nodefs.available<1Gi").unwrap().remove(0);
        let r = |avail: u64| Reading {
            available: avail,
            capacity: 10 << 30,
        };
        assert!(!crossed(&t, r(1200 << 20)));
        assert!(unresolved(&t, m[0].1, r(1200 << 20)));
        assert!(!unresolved(&t, m[0].1, r(1600 << 20)));
    }

    #[test]
    fn parses_upstream_syntax() {
        let t = parse_thresholds("memory.available<100Mi, nodefs.available<10%,pid.available<500")
            .unwrap();
        assert_eq!(t.len(), 3);
        assert_eq!(t[0].value, Amount::Absolute(100 << 20));
        assert_eq!(t[1].signal, Signal::NodefsAvailable);
        assert_eq!(t[1].value, Amount::Percent(10.0));
        assert_eq!(t[2].value, Amount::Absolute(500));
        assert!(parse_thresholds("").unwrap().is_empty());
        assert!(parse_thresholds(DEFAULT_EVICTION_HARD).is_ok());
        let e = parse_thresholds("memory.free<1Gi").unwrap_err();
        assert!(e.contains("unknown signal"), "{e}");
        assert!(parse_thresholds("nodefs.available<120%").is_err());
        assert!(parse_thresholds("nodefs.available<lots").is_err());
        assert!(parse_thresholds("nodefs.available>1Gi").is_err());
    }

    #[test]
    fn soft_thresholds_need_grace_periods() {
        let s = soft_thresholds(
            "memory.available<1Gi,nodefs.available<15%",
            "memory.available=1m30s,nodefs.available=2m",
        )
        .unwrap();
        assert_eq!(s[0].1, Duration::from_secs(90));
        assert_eq!(s[1].1, Duration::from_secs(120));
        let e = soft_thresholds("memory.available<1Gi", "").unwrap_err();
        assert_eq!(
            e,
            "grace period must be specified for the soft eviction threshold memory.available"
        );
        assert!(parse_grace_periods("memory.available=soon").is_err());
        assert_eq!(parse_go_duration("500ms"), Some(Duration::from_millis(500)));
        assert_eq!(parse_go_duration("1h"), Some(Duration::from_secs(3600)));
    }

    #[test]
    fn percentages_are_of_the_capacity() {
        let r = Reading {
            available: 9,
            capacity: 100,
        };
        let pct = |p| Threshold {
            signal: Signal::NodefsAvailable,
            value: Amount::Percent(p),
        };
        assert!(crossed(&pct(10.0), r));
        assert!(!crossed(&pct(5.0), r));
    }

    #[test]
    fn conditions_hold_for_the_transition_period() {
        let dir = tempfile::tempdir().unwrap();
        let mut t = Tracker::new(
            parse_thresholds("nodefs.available<1Ei").unwrap(),
            Duration::from_secs(60),
        );
        t.observe(dir.path(), dir.path());
        assert!(t.under("DiskPressure"));
        assert!(!t.under("MemoryPressure"));
        assert_eq!(t.signals("DiskPressure"), vec!["NodefsAvailable"]);
        // The signal clears, the condition stays for the period.
        t.thresholds.clear();
        t.observe(dir.path(), dir.path());
        assert!(t.under("DiskPressure"));
        t.transition_period = Duration::ZERO;
        assert!(!t.under("DiskPressure"));
    }
}
