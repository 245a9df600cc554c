//! From the metrics' recommendation to the replicas the controller sets,
//! as upstream's `normalizeDesiredReplicas[WithBehaviors]`: stabilization
//! windows over recent recommendations, then the scale-up and scale-down
//! rate limits (the default 2x-or-4 rule, or the HPA's `behavior`
//! policies over its recent scale events), then min and max. Each step
//! yields the condition upstream sets.

use std::collections::HashMap;
use std::time::{Duration, Instant};

/// A condition to set: (type, status, reason, message).
pub type Cond = (&'static str, &'static str, &'static str, &'static str);

/// One scaling policy (`Pods` or `Percent` per `periodSeconds`).
#[derive(Debug, Clone, PartialEq)]
pub struct Policy {
    /// `Pods` or `Percent`.
    pub kind: String,
    /// How many pods or what percentage.
    pub value: i32,
    /// Over how long.
    pub period_secs: i64,
}

/// One direction's rules, defaults applied.
#[derive(Debug, Clone, PartialEq)]
pub struct Rules {
    /// Stabilization window in seconds.
    pub window_secs: i64,
    /// `Max`, `Min` or `Disabled`.
    pub select: String,
    /// The policies.
    pub policies: Vec<Policy>,
}

/// The HPA's `behavior`, both directions defaulted as upstream.
#[derive(Debug, Clone, PartialEq)]
pub struct Behavior {
    /// Scale-up rules.
    pub up: Rules,
    /// Scale-down rules.
    pub down: Rules,
}

#[derive(Debug, Clone, Copy)]
struct Recommendation {
    replicas: i32,
    at: Instant,
}

#[derive(Debug, Clone, Copy)]
struct ScaleEvent {
    change: i32,
    at: Instant,
}

/// What the controller remembers per HPA between syncs.
#[derive(Debug, Default)]
pub struct History {
    recommendations: HashMap<String, Vec<Recommendation>>,
    ups: HashMap<String, Vec<ScaleEvent>>,
    downs: HashMap<String, Vec<ScaleEvent>>,
}

/// What is asked of one normalization: the target's replicas now, the
/// metrics' recommendation, and the HPA's bounds.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Ask {
    /// The target's replicas now.
    pub current: i32,
    /// What the metrics recommend.
    pub recommended: i32,
    /// `minReplicas`.
    pub min: i32,
    /// `maxReplicas`.
    pub max: i32,
}

/// The replicas to set and the two conditions that explain them.
#[derive(Debug, Clone, PartialEq)]
pub struct Normalized {
    /// Replicas to set.
    pub replicas: i32,
    /// The AbleToScale condition.
    pub able: Cond,
    /// The ScalingLimited condition.
    pub limited: Cond,
}

const READY: Cond = (
    "AbleToScale",
    "True",
    "ReadyForNewScale",
    "recommended size matches current size",
);
const DOWN_STABILIZED: Cond = (
    "AbleToScale",
    "True",
    "ScaleDownStabilized",
    "recent recommendations were higher than current one, applying the highest recent recommendation",
);
const UP_STABILIZED: Cond = (
    "AbleToScale",
    "True",
    "ScaleUpStabilized",
    "recent recommendations were lower than current one, applying the lowest recent recommendation",
);
const WITHIN: (&str, &str) = (
    "DesiredWithinRange",
    "the desired count is within the acceptable range",
);
const TOO_MANY: (&str, &str) = (
    "TooManyReplicas",
    "the desired replica count is more than the maximum replica count",
);
const TOO_FEW: (&str, &str) = (
    "TooFewReplicas",
    "the desired replica count is less than the minimum replica count",
);
const UP_LIMIT: (&str, &str) = (
    "ScaleUpLimit",
    "the desired replica count is increasing faster than the maximum scale rate",
);
const DOWN_LIMIT: (&str, &str) = (
    "ScaleDownLimit",
    "the desired replica count is decreasing faster than the maximum scale rate",
);

fn limited(desired: i32, stabilized: i32, why: (&'static str, &'static str)) -> Cond {
    let status = if desired == stabilized {
        "False"
    } else {
        "True"
    };
    ("ScalingLimited", status, why.0, why.1)
}

impl History {
    /// Forgets an HPA that is gone.
    pub fn forget(&mut self, key: &str) {
        self.recommendations.remove(key);
        self.ups.remove(key);
        self.downs.remove(key);
    }

    /// Without `behavior`: the highest recommendation of the last
    /// `downscale_window`, then at most max(2x, 4) up, then min/max.
    pub fn normalize(
        &mut self,
        key: &str,
        ask: Ask,
        downscale_window: Duration,
        now: Instant,
    ) -> Normalized {
        let Ask {
            current,
            recommended,
            min,
            max,
        } = ask;
        let recs = self.recommendations.entry(key.to_string()).or_default();
        let mut stabilized = recommended;
        let mut old = None;
        for (i, r) in recs.iter().enumerate() {
            if now.duration_since(r.at) > downscale_window {
                old = Some(i);
            } else if r.replicas > stabilized {
                stabilized = r.replicas;
            }
        }
        let rec = Recommendation {
            replicas: recommended,
            at: now,
        };
        match old {
            Some(i) => recs[i] = rec,
            None => recs.push(rec),
        }
        let able = if stabilized != recommended {
            DOWN_STABILIZED
        } else {
            READY
        };
        let up_limit = (2 * current).max(4);
        let (max_allowed, over) = if max > up_limit {
            (up_limit, UP_LIMIT)
        } else {
            (max, TOO_MANY)
        };
        let (replicas, why) = if stabilized < min {
            (min, TOO_FEW)
        } else if stabilized > max_allowed {
            (max_allowed, over)
        } else {
            (stabilized, WITHIN)
        };
        Normalized {
            replicas,
            able,
            limited: limited(replicas, stabilized, why),
        }
    }

    /// With `behavior`: stabilization in both directions, then the
    /// policies' rate limits over recent scale events, then min/max.
    pub fn normalize_with_behavior(
        &mut self,
        key: &str,
        ask: Ask,
        b: &Behavior,
        now: Instant,
    ) -> Normalized {
        let Ask {
            current,
            recommended,
            min,
            max,
        } = ask;
        let recs = self.recommendations.entry(key.to_string()).or_default();
        let (mut up_rec, mut down_rec) = (recommended, recommended);
        let up_cut = Duration::from_secs(b.up.window_secs.max(0) as u64);
        let down_cut = Duration::from_secs(b.down.window_secs.max(0) as u64);
        let mut old = None;
        for (i, r) in recs.iter().enumerate() {
            let age = now.duration_since(r.at);
            if age < up_cut {
                up_rec = up_rec.min(r.replicas);
            }
            if age < down_cut {
                down_rec = down_rec.max(r.replicas);
            }
            if age >= up_cut && age >= down_cut {
                old = Some(i);
            }
        }
        let stabilized = current.max(up_rec).min(down_rec);
        let rec = Recommendation {
            replicas: recommended,
            at: now,
        };
        match old {
            Some(i) => recs[i] = rec,
            None => recs.push(rec),
        }
        let able = if stabilized != recommended {
            if recommended >= current {
                UP_STABILIZED
            } else {
                DOWN_STABILIZED
            }
        } else {
            READY
        };
        let ups = self.ups.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let downs = self.downs.get(key).map(Vec::as_slice).unwrap_or(&[]);
        let (replicas, why) = if stabilized > current {
            let limit = rate_limit(current, ups, downs, &b.up, now, true).max(current);
            let (max_allowed, why) = if max > limit {
                (limit, UP_LIMIT)
            } else {
                (max, TOO_MANY)
            };
            if stabilized > max_allowed {
                (max_allowed, why)
            } else {
                (stabilized, WITHIN)
            }
        } else if stabilized < current {
            let limit = rate_limit(current, ups, downs, &b.down, now, false).min(current);
            let (min_allowed, why) = if min < limit {
                (limit, DOWN_LIMIT)
            } else {
                (min, TOO_FEW)
            };
            if stabilized < min_allowed {
                (min_allowed, why)
            } else {
                (stabilized, WITHIN)
            }
        } else {
            (stabilized, WITHIN)
        };
        Normalized {
            replicas,
            able,
            limited: limited(replicas, stabilized, why),
        }
    }

    /// Records a scale from `from` to `to` (with `behavior`, the rate
    /// limits count it), dropping events older than the longest period.
    pub fn record_scale(&mut self, key: &str, from: i32, to: i32, b: &Behavior, now: Instant) {
        let (list, rules) = if to > from {
            (self.ups.entry(key.to_string()).or_default(), &b.up)
        } else {
            (self.downs.entry(key.to_string()).or_default(), &b.down)
        };
        let longest = rules
            .policies
            .iter()
            .map(|p| p.period_secs)
            .max()
            .unwrap_or(0);
        list.retain(|e| now.duration_since(e.at) < Duration::from_secs(longest.max(0) as u64));
        list.push(ScaleEvent {
            change: (to - from).abs(),
            at: now,
        });
    }
}

fn changed_in(period_secs: i64, events: &[ScaleEvent], now: Instant) -> i32 {
    let period = Duration::from_secs(period_secs.max(0) as u64);
    events
        .iter()
        .filter(|e| now.duration_since(e.at) < period)
        .map(|e| e.change)
        .sum()
}

/// How far `rules` let the replicas move from `current` in one direction
/// (upstream's `calculateScaleUpLimitWithScalingRules` and
/// `calculateScaleDownLimitWithBehaviors`): each policy's bound counts
/// from the replicas at the start of its period; `Max` takes the policy
/// allowing the biggest change, `Min` the smallest, `Disabled` none.
fn rate_limit(
    current: i32,
    ups: &[ScaleEvent],
    downs: &[ScaleEvent],
    rules: &Rules,
    now: Instant,
    up: bool,
) -> i32 {
    let biggest_change = match rules.select.as_str() {
        "Disabled" => return current,
        "Min" => false,
        _ => true,
    };
    let bounds = rules.policies.iter().map(|p| {
        let start =
            current - changed_in(p.period_secs, ups, now) + changed_in(p.period_secs, downs, now);
        match (p.kind.as_str(), up) {
            ("Pods", true) => start + p.value,
            ("Pods", false) => start - p.value,
            // Up rounds up (else a small group could never grow), down
            // truncates, as upstream.
            (_, true) => (f64::from(start) * (1.0 + f64::from(p.value) / 100.0)).ceil() as i32,
            (_, false) => (f64::from(start) * (1.0 - f64::from(p.value) / 100.0)) as i32,
        }
    });
    if up == biggest_change {
        bounds.max().unwrap_or(i32::MIN)
    } else {
        bounds.min().unwrap_or(i32::MAX)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ask(current: i32, recommended: i32, min: i32, max: i32) -> Ask {
        Ask {
            current,
            recommended,
            min,
            max,
        }
    }

    fn behavior(down_window: i64) -> Behavior {
        Behavior {
            up: Rules {
                window_secs: 0,
                select: "Max".into(),
                policies: vec![
                    Policy {
                        kind: "Pods".into(),
                        value: 4,
                        period_secs: 15,
                    },
                    Policy {
                        kind: "Percent".into(),
                        value: 100,
                        period_secs: 15,
                    },
                ],
            },
            down: Rules {
                window_secs: down_window,
                select: "Max".into(),
                policies: vec![Policy {
                    kind: "Percent".into(),
                    value: 100,
                    period_secs: 15,
                }],
            },
        }
    }

    #[test]
    fn without_behavior_scale_down_waits_for_the_window_and_up_is_capped() {
        let mut h = History::default();
        let t0 = Instant::now();
        let w = Duration::from_secs(300);
        let n = h.normalize("k", ask(4, 8, 1, 10), w, t0);
        assert_eq!(n.replicas, 8);
        assert_eq!(n.limited.1, "False");
        // Load gone a minute later: the recommendation of 8 still holds.
        let n = h.normalize("k", ask(8, 2, 1, 10), w, t0 + Duration::from_secs(60));
        assert_eq!(n.replicas, 8);
        assert_eq!(n.able.2, "ScaleDownStabilized");
        // Past the window: down to 2.
        let n = h.normalize("k", ask(8, 2, 1, 10), w, t0 + Duration::from_secs(400));
        assert_eq!(n.replicas, 2);
        // From 1, at most 4 at once; and never above max.
        let mut h = History::default();
        let n = h.normalize("j", ask(1, 9, 1, 10), w, t0);
        assert_eq!(
            (n.replicas, n.limited.1, n.limited.2),
            (4, "True", "ScaleUpLimit")
        );
        let n = h.normalize("i", ask(8, 30, 1, 10), w, t0);
        assert_eq!((n.replicas, n.limited.2), (10, "TooManyReplicas"));
        let n = h.normalize("m", ask(3, 0, 2, 10), Duration::ZERO, t0);
        assert_eq!((n.replicas, n.limited.2), (2, "TooFewReplicas"));
    }

    #[test]
    fn behavior_policies_limit_the_rate_and_count_recent_scales() {
        let b = Behavior {
            up: Rules {
                window_secs: 0,
                select: "Max".into(),
                policies: vec![Policy {
                    kind: "Pods".into(),
                    value: 2,
                    period_secs: 60,
                }],
            },
            ..behavior(0)
        };
        let mut h = History::default();
        let t0 = Instant::now();
        let n = h.normalize_with_behavior("k", ask(2, 10, 1, 20), &b, t0);
        assert_eq!((n.replicas, n.limited.2), (4, "ScaleUpLimit"));
        h.record_scale("k", 2, 4, &b, t0);
        // Within the same minute the two pods already added count.
        let n = h.normalize_with_behavior("k", ask(4, 10, 1, 20), &b, t0 + Duration::from_secs(10));
        assert_eq!(n.replicas, 4);
        // A minute later two more.
        let n = h.normalize_with_behavior("k", ask(4, 10, 1, 20), &b, t0 + Duration::from_secs(70));
        assert_eq!(n.replicas, 6);
    }

    #[test]
    fn behavior_stabilizes_down_within_its_window_and_disabled_holds() {
        let b = behavior(30);
        let mut h = History::default();
        let t0 = Instant::now();
        assert_eq!(
            h.normalize_with_behavior("k", ask(2, 6, 1, 10), &b, t0)
                .replicas,
            6
        );
        let n = h.normalize_with_behavior("k", ask(6, 1, 1, 10), &b, t0 + Duration::from_secs(10));
        assert_eq!((n.replicas, n.able.2), (6, "ScaleDownStabilized"));
        let n = h.normalize_with_behavior("k", ask(6, 1, 1, 10), &b, t0 + Duration::from_secs(45));
        assert_eq!(n.replicas, 1);
        let mut off = behavior(0);
        off.down.select = "Disabled".into();
        let n = History::default().normalize_with_behavior("k", ask(6, 1, 1, 10), &off, t0);
        assert_eq!((n.replicas, n.limited.2), (6, "ScaleDownLimit"));
    }
}
