//! The Job controller's decisions, free of I/O so they can be unit-tested:
//! whether the Job failed or succeeded, and how many pods should run.

use std::collections::BTreeSet;
use std::time::Duration;

use k8s_openapi::api::batch::v1::JobSpec;

/// What the controller knows when deciding.
#[derive(Debug, Clone, Default)]
pub struct Counts {
    /// Succeeded pods counted (including ones just counted).
    pub succeeded: i32,
    /// Failed pods counted.
    pub failed: i32,
    /// Pods pending or running and not being deleted.
    pub active: i32,
    /// Indexes completed (Indexed mode).
    pub completed_indexes: i32,
    /// When the Job started (None while suspended).
    pub start: Option<jiff::Timestamp>,
    /// The time now.
    pub now: jiff::Timestamp,
    /// An already recorded FailureTarget (reason, message).
    pub failure_target: Option<(String, String)>,
    /// Whether SuccessCriteriaMet was already recorded.
    pub success_met: bool,
}

/// What should happen to a Job.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// The Job failed: stop its pods, then mark it Failed.
    Fail {
        /// Condition reason (BackoffLimitExceeded, DeadlineExceeded).
        reason: String,
        /// Condition message.
        message: String,
    },
    /// The Job met its success criteria: stop leftovers, mark Complete.
    Succeed,
    /// Keep running `want_active` pods; look again after `deadline_in`.
    Run {
        /// Pods that should be active.
        want_active: i32,
        /// Time left before activeDeadlineSeconds, if set.
        deadline_in: Option<Duration>,
    },
}

/// Decides a Job's fate from its spec and pod counts (upstream's order:
/// an earlier terminal decision sticks; backoff limit, then deadline, then
/// completions).
pub fn decide(spec: &JobSpec, c: &Counts) -> Outcome {
    if let Some((reason, message)) = &c.failure_target {
        return Outcome::Fail {
            reason: reason.clone(),
            message: message.clone(),
        };
    }
    if c.success_met {
        return Outcome::Succeed;
    }
    let backoff_limit = spec.backoff_limit.unwrap_or(6);
    if c.failed > backoff_limit {
        return Outcome::Fail {
            reason: "BackoffLimitExceeded".into(),
            message: "Job has reached the specified backoff limit".into(),
        };
    }
    let mut deadline_in = None;
    if let (Some(ads), Some(start)) = (spec.active_deadline_seconds, c.start) {
        let left = start.as_second() + ads - c.now.as_second();
        if left <= 0 {
            return Outcome::Fail {
                reason: "DeadlineExceeded".into(),
                message: "Job was active longer than specified deadline".into(),
            };
        }
        deadline_in = Some(Duration::from_secs(left as u64));
    }
    let indexed = spec.completion_mode.as_deref() == Some("Indexed");
    let parallelism = spec.parallelism.unwrap_or(1).max(0);
    let want_active = match spec.completions {
        Some(n) if indexed => {
            if c.completed_indexes >= n {
                return Outcome::Succeed;
            }
            parallelism.min(n - c.completed_indexes)
        }
        Some(n) => {
            if c.succeeded >= n {
                return Outcome::Succeed;
            }
            parallelism.min(n - c.succeeded)
        }
        None => {
            // Work-queue Jobs: done once any pod succeeded and none run.
            if c.succeeded > 0 {
                if c.active == 0 {
                    return Outcome::Succeed;
                }
                c.active.min(parallelism)
            } else {
                parallelism
            }
        }
    };
    Outcome::Run {
        want_active,
        deadline_in,
    }
}

/// Parses `status.completedIndexes` ("1,3-5").
pub fn parse_indexes(s: &str) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for part in s.split(',').map(str::trim).filter(|p| !p.is_empty()) {
        match part.split_once('-') {
            Some((a, b)) => {
                if let (Ok(a), Ok(b)) = (a.parse::<i32>(), b.parse::<i32>()) {
                    out.extend(a..=b);
                }
            }
            None => out.extend(part.parse::<i32>().ok()),
        }
    }
    out
}

/// Formats indexes as `status.completedIndexes` does ("1,3-5").
pub fn format_indexes(set: &BTreeSet<i32>) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut it = set.iter().copied().peekable();
    while let Some(start) = it.next() {
        let mut end = start;
        while it.peek() == Some(&(end + 1)) {
            end += 1;
            it.next();
        }
        out.push(if start == end {
            start.to_string()
        } else {
            format!("{start}-{end}")
        });
    }
    out.join(",")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec(completions: Option<i32>, parallelism: i32, backoff: i32) -> JobSpec {
        JobSpec {
            completions,
            parallelism: Some(parallelism),
            backoff_limit: Some(backoff),
            ..Default::default()
        }
    }

    #[test]
    fn runs_at_most_parallelism_and_no_more_than_remaining() {
        let s = spec(Some(3), 2, 6);
        let mut c = Counts::default();
        assert_eq!(
            decide(&s, &c),
            Outcome::Run {
                want_active: 2,
                deadline_in: None
            }
        );
        c.succeeded = 2;
        assert_eq!(
            decide(&s, &c),
            Outcome::Run {
                want_active: 1,
                deadline_in: None
            }
        );
        c.succeeded = 3;
        assert_eq!(decide(&s, &c), Outcome::Succeed);
    }

    #[test]
    fn fails_only_past_the_backoff_limit() {
        let s = spec(Some(1), 1, 2);
        let mut c = Counts {
            failed: 2,
            ..Default::default()
        };
        assert!(matches!(decide(&s, &c), Outcome::Run { .. }));
        c.failed = 3;
        assert_eq!(
            decide(&s, &c),
            Outcome::Fail {
                reason: "BackoffLimitExceeded".into(),
                message: "Job has reached the specified backoff limit".into()
            }
        );
    }

    #[test]
    fn deadline_fails_and_otherwise_says_when_to_look_again() {
        let mut s = spec(Some(1), 1, 6);
        s.active_deadline_seconds = Some(30);
        let start = jiff::Timestamp::from_second(1_000).unwrap();
        let mut c = Counts {
            start: Some(start),
            now: jiff::Timestamp::from_second(1_010).unwrap(),
            ..Default::default()
        };
        assert_eq!(
            decide(&s, &c),
            Outcome::Run {
                want_active: 1,
                deadline_in: Some(Duration::from_secs(20))
            }
        );
        c.now = jiff::Timestamp::from_second(1_030).unwrap();
        assert!(
            matches!(decide(&s, &c), Outcome::Fail { reason, .. } if reason == "DeadlineExceeded")
        );
    }

    #[test]
    fn work_queue_jobs_finish_when_one_succeeded_and_none_run() {
        let s = spec(None, 3, 6);
        let mut c = Counts {
            succeeded: 1,
            active: 2,
            ..Default::default()
        };
        assert_eq!(
            decide(&s, &c),
            Outcome::Run {
                want_active: 2,
                deadline_in: None
            }
        );
        c.active = 0;
        assert_eq!(decide(&s, &c), Outcome::Succeed);
    }

    #[test]
    fn a_recorded_failure_target_sticks() {
        let s = spec(Some(1), 1, 6);
        let c = Counts {
            succeeded: 1,
            failure_target: Some(("DeadlineExceeded".into(), "m".into())),
            ..Default::default()
        };
        assert!(matches!(decide(&s, &c), Outcome::Fail { .. }));
    }

    #[test]
    fn indexes_round_trip() {
        let set = parse_indexes("0,2-4,7");
        assert_eq!(set.iter().copied().collect::<Vec<_>>(), vec![0, 2, 3, 4, 7]);
        assert_eq!(format_indexes(&set), "0,2-4,7");
        assert_eq!(format_indexes(&BTreeSet::new()), "");
    }
}
