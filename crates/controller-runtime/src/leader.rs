//! Leader election through a coordination.k8s.io Lease, as client-go's
//! leaderelection: the holder renews the lease; when it stops renewing for
//! longer than the lease duration another candidate takes it over. Work runs
//! only while this process holds the lease.

use std::future::Future;
use std::time::Duration;

use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};

/// Timing of an election (upstream's defaults: 15 s lease, 10 s renew
/// deadline, 2 s retry period).
#[derive(Debug, Clone)]
pub struct Election {
    /// Namespace of the lease.
    pub namespace: String,
    /// Name of the lease (one per component).
    pub name: String,
    /// This candidate's identity (hostname plus a unique suffix).
    pub identity: String,
    /// How long a lease is valid without renewal.
    pub lease_duration: Duration,
    /// How long the leader keeps trying to renew before it gives up.
    pub renew_deadline: Duration,
    /// Pause between attempts.
    pub retry_period: Duration,
}

impl Election {
    /// An election with upstream's timings.
    pub fn new(name: &str, identity: &str) -> Self {
        Election {
            namespace: "kube-system".into(),
            name: name.into(),
            identity: identity.into(),
            lease_duration: Duration::from_secs(15),
            renew_deadline: Duration::from_secs(10),
            retry_period: Duration::from_secs(2),
        }
    }
}

fn now() -> MicroTime {
    MicroTime(Timestamp::now())
}

/// Whether a lease held by someone else has expired.
fn expired(spec: &LeaseSpec, default_duration: Duration) -> bool {
    let Some(renew) = spec.renew_time.as_ref() else {
        return true;
    };
    let secs = spec
        .lease_duration_seconds
        .map(|s| s.max(0) as u64)
        .unwrap_or(default_duration.as_secs());
    let age = Timestamp::now().duration_since(renew.0);
    age.as_secs_f64() > secs as f64
}

/// Tries once to take or renew the lease. Ok(true) when we hold it.
async fn try_acquire(api: &Api<Lease>, e: &Election) -> Result<bool, kube::Error> {
    let spec = |transitions: i32, acquired: Option<MicroTime>| LeaseSpec {
        holder_identity: Some(e.identity.clone()),
        lease_duration_seconds: Some(e.lease_duration.as_secs() as i32),
        acquire_time: Some(acquired.unwrap_or_else(now)),
        renew_time: Some(now()),
        lease_transitions: Some(transitions),
        ..Default::default()
    };
    let Some(mut lease) = api.get_opt(&e.name).await? else {
        let lease = Lease {
            metadata: ObjectMeta {
                name: Some(e.name.clone()),
                namespace: Some(e.namespace.clone()),
                ..Default::default()
            },
            spec: Some(spec(0, None)),
        };
        return match api.create(&PostParams::default(), &lease).await {
            Ok(_) => Ok(true),
            Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
            Err(err) => Err(err),
        };
    };
    let cur = lease.spec.clone().unwrap_or_default();
    let mine = cur.holder_identity.as_deref() == Some(e.identity.as_str());
    if !mine && cur.holder_identity.is_some() && !expired(&cur, e.lease_duration) {
        return Ok(false);
    }
    let transitions = cur.lease_transitions.unwrap_or(0) + i32::from(!mine);
    let acquired = if mine { cur.acquire_time.clone() } else { None };
    lease.spec = Some(spec(transitions, acquired));
    match api.replace(&e.name, &PostParams::default(), &lease).await {
        Ok(_) => Ok(true),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Runs `work` whenever this candidate leads, forever. Work is started
/// afresh each time leadership is (re)gained and aborted when it is lost.
pub async fn run<F, Fut>(client: kube::Client, e: Election, work: F)
where
    F: Fn() -> Fut + Send + 'static,
    Fut: Future<Output = ()> + Send + 'static,
{
    let api: Api<Lease> = Api::namespaced(client, &e.namespace);
    let status = crate::metrics::LEADER.with_label_values(&[e.name.as_str()]);
    loop {
        status.set(0);
        // Candidate: wait for the lease.
        loop {
            match try_acquire(&api, &e).await {
                Ok(true) => break,
                Ok(false) => {}
                Err(err) => tracing::debug!(lease = %e.name, error = %err, "acquiring lease"),
            }
            tokio::time::sleep(e.retry_period).await;
        }
        tracing::info!(lease = %e.name, identity = %e.identity, "became leader");
        status.set(1);
        // Stopped when leadership is lost, and when this future is dropped.
        let task = Term::start(&e.name, work());
        // Leader: renew until a renewal deadline passes without success.
        let mut last_ok = tokio::time::Instant::now();
        loop {
            tokio::time::sleep(e.retry_period).await;
            match try_acquire(&api, &e).await {
                Ok(true) => last_ok = tokio::time::Instant::now(),
                Ok(false) => break,
                Err(err) => {
                    tracing::debug!(lease = %e.name, error = %err, "renewing lease");
                    if last_ok.elapsed() > e.renew_deadline {
                        break;
                    }
                }
            }
        }
        tracing::warn!(lease = %e.name, identity = %e.identity, "lost leadership");
        drop(task);
    }
}

/// One term of leadership: the work runs on a runtime of its own, so that
/// everything it spawned (informers, queues, workers) stops with the term.
/// Upstream components exit the process when they lose their lease; r8s
/// cannot, as the same process serves the API.
struct Term {
    _stop: tokio::sync::oneshot::Sender<()>,
}

impl Term {
    fn start<Fut>(name: &str, work: Fut) -> Term
    where
        Fut: Future<Output = ()> + Send + 'static,
    {
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let name = name.to_string();
        let spawned = std::thread::Builder::new()
            .name(format!("{name}-leader"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_multi_thread()
                    .worker_threads(2)
                    .thread_name(name.clone())
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(err) => {
                        tracing::error!(lease = %name, error = %err, "cannot start a runtime for the leader's work");
                        return;
                    }
                };
                rt.block_on(async {
                    tokio::select! {
                        _ = work => {}
                        _ = rx => {}
                    }
                });
                // Drops every task the work spawned.
                rt.shutdown_background();
            });
        if let Err(err) = spawned {
            tracing::error!(error = %err, "cannot start the leader's thread");
        }
        Term { _stop: tx }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_expires_after_its_duration() {
        let old = Timestamp::now() - std::time::Duration::from_secs(20);
        let spec = LeaseSpec {
            holder_identity: Some("a".into()),
            renew_time: Some(MicroTime(old)),
            lease_duration_seconds: Some(15),
            ..Default::default()
        };
        assert!(expired(&spec, Duration::from_secs(15)));
        let fresh = LeaseSpec {
            renew_time: Some(now()),
            ..spec
        };
        assert!(!expired(&fresh, Duration::from_secs(15)));
    }
}
