//! Lease leader election against a real API server: one leader at a time,
//! and a standby takes over when the leader stops renewing.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use controller_runtime::leader::{Election, run};
use k8s_openapi::api::coordination::v1::Lease;
use kube::Api;

fn fast(identity: &str) -> Election {
    Election {
        lease_duration: Duration::from_secs(2),
        renew_deadline: Duration::from_millis(1500),
        retry_period: Duration::from_millis(200),
        ..Election::new("test-leader", identity)
    }
}

struct DecOnDrop(Arc<AtomicUsize>);

impl Drop for DecOnDrop {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Work that counts itself while it runs (until aborted).
fn work(running: Arc<AtomicUsize>) -> impl Fn() -> futures::future::BoxFuture<'static, ()> {
    move || {
        let running = running.clone();
        Box::pin(async move {
            running.fetch_add(1, Ordering::SeqCst);
            let _guard = DecOnDrop(running);
            std::future::pending::<()>().await;
        })
    }
}

async fn holder(leases: &Api<Lease>) -> String {
    leases
        .get("test-leader")
        .await
        .ok()
        .and_then(|l| l.spec?.holder_identity)
        .unwrap_or_default()
}

#[tokio::test]
async fn one_leader_at_a_time_and_a_standby_takes_over() {
    let server = apiserver::testing::TestServer::start().await;
    let client = server.client().await;
    let running = Arc::new(AtomicUsize::new(0));
    let a = tokio::spawn(run(client.clone(), fast("a"), work(running.clone())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let b = tokio::spawn(run(client.clone(), fast("b"), work(running.clone())));
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(
        running.load(Ordering::SeqCst),
        1,
        "exactly one leader works"
    );
    let leases: Api<Lease> = Api::namespaced(client.clone(), "kube-system");
    assert_eq!(holder(&leases).await, "a");

    // The leader dies without releasing: b takes over after the lease expires.
    a.abort();
    let _ = a.await;
    for _ in 0..50 {
        if running.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        running.load(Ordering::SeqCst),
        0,
        "a's work stopped with it"
    );
    let mut h = String::new();
    for _ in 0..50 {
        tokio::time::sleep(Duration::from_millis(200)).await;
        h = holder(&leases).await;
        if h == "b" {
            break;
        }
    }
    assert_eq!(h, "b", "standby took the lease");
    let l = leases.get("test-leader").await.unwrap();
    assert_eq!(l.spec.unwrap().lease_transitions, Some(1));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(running.load(Ordering::SeqCst), 1, "the new leader works");
    b.abort();
}
