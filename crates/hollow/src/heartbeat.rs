//! One ticker for every node's Lease renewals and status heartbeats.
//!
//! Renewals are spread evenly over the period: after `t` seconds,
//! `t / period * nodes` renewals are due in total, issued round-robin, so
//! 5000 nodes on a 10 s lease period make a steady 500 renewals a second
//! instead of a burst every 10 s.

use std::sync::Arc;
use std::time::Duration;

use tokio::time::{Instant, MissedTickBehavior};

use crate::HollowError;
use crate::node::{renew_lease, update_status};
use crate::shared::Shared;

/// How often the ticker wakes to issue what is due.
const TICK: Duration = Duration::from_millis(50);

/// What a round-robin schedule issues.
#[derive(Clone, Copy)]
enum Work {
    Lease,
    Status,
}

/// Round-robin schedule of one kind of work over all nodes.
struct Schedule {
    work: Work,
    period: Duration,
    issued: u64,
}

impl Schedule {
    /// Node indexes due since the last call, `elapsed` after the start.
    fn due(&mut self, elapsed: Duration, nodes: usize) -> std::ops::Range<u64> {
        let n = nodes as u64;
        let total = (elapsed.as_secs_f64() / self.period.as_secs_f64() * n as f64) as u64;
        // After a long stall, skip rather than burst more than one round.
        if total > self.issued + n {
            self.issued = total - n;
        }
        let from = self.issued;
        self.issued = self.issued.max(total);
        from..self.issued
    }
}

/// Runs the ticker forever.
pub(crate) async fn run(shared: Arc<Shared>) -> Result<(), HollowError> {
    let n = shared.nodes.len();
    let start = Instant::now();
    let mut schedules = [
        Schedule {
            work: Work::Lease,
            period: shared.opts.lease_interval,
            // Registration just renewed every lease.
            issued: 0,
        },
        Schedule {
            work: Work::Status,
            period: shared.opts.status_interval,
            issued: 0,
        },
    ];
    let mut tick = tokio::time::interval(TICK);
    tick.set_missed_tick_behavior(MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let elapsed = start.elapsed();
        for s in &mut schedules {
            for k in s.due(elapsed, n) {
                let i = (k % n as u64) as usize;
                if !shared.nodes[i].live() {
                    continue;
                }
                // Waiting here (not in the task) is the backpressure: a slow
                // server slows the ticker, not an unbounded task pile.
                let Ok(permit) = shared.heartbeat_permits.clone().acquire_owned().await else {
                    return Err(HollowError::Stopped("heartbeat permits closed".into()));
                };
                let sh = shared.clone();
                let work = s.work;
                tokio::spawn(async move {
                    let slot = &sh.nodes[i];
                    let res = match work {
                        Work::Lease => renew_lease(&sh, slot).await,
                        Work::Status => update_status(&sh, slot).await,
                    };
                    if let Err(e) = res {
                        tracing::warn!(node = %slot.name, error = %e, "heartbeat failed");
                    }
                    drop(permit);
                });
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn spreads_renewals_evenly_over_the_period() {
        let mut s = Schedule {
            work: Work::Lease,
            period: Duration::from_secs(10),
            issued: 0,
        };
        // 1000 nodes, 10 s: 100 per second, 5 per 50 ms tick.
        assert_eq!(s.due(Duration::from_millis(50), 1000), 0..5);
        assert_eq!(s.due(Duration::from_millis(100), 1000), 5..10);
        assert_eq!(s.due(Duration::from_secs(10), 1000), 10..1000);
        assert_eq!(s.due(Duration::from_millis(10_050), 1000), 1000..1005);
    }

    #[test]
    fn a_stall_issues_at_most_one_round() {
        let mut s = Schedule {
            work: Work::Status,
            period: Duration::from_secs(10),
            issued: 0,
        };
        let r = s.due(Duration::from_secs(60), 100);
        assert_eq!(r.end - r.start, 100);
    }
}
