//! Events about objects, published in the background through kube-rs's
//! recorder (events.k8s.io/v1, with series for repeats). Publishing never
//! slows a reconcile: when the backlog is full, events are dropped, as
//! client-go's broadcaster drops them under load.

use k8s_openapi::api::core::v1::ObjectReference;
use kube::Resource;
use kube::runtime::events::{Event, EventType, Recorder as KubeRecorder, Reporter};
use tokio::sync::mpsc;

/// Backlog of events waiting to be published.
const BACKLOG: usize = 4096;

/// A cheap, cloneable handle that publishes events for one component.
#[derive(Clone)]
pub struct Recorder {
    tx: mpsc::Sender<(Event, ObjectReference)>,
}

impl Recorder {
    /// A recorder reporting as `component` (e.g. `deployment-controller`).
    pub fn new(client: kube::Client, component: &str) -> Self {
        let (tx, mut rx) = mpsc::channel::<(Event, ObjectReference)>(BACKLOG);
        let rec = KubeRecorder::new(
            client,
            Reporter {
                controller: component.to_string(),
                instance: None,
            },
        );
        tokio::spawn(async move {
            while let Some((ev, regarding)) = rx.recv().await {
                if let Err(e) = rec.publish(&ev, &regarding).await {
                    tracing::debug!(error = %e, reason = %ev.reason, "publishing event");
                }
            }
        });
        Recorder { tx }
    }

    /// Records a Normal event about `obj`.
    pub fn normal<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.send(obj, EventType::Normal, reason, note)
    }

    /// Records a Warning event about `obj`.
    pub fn warning<K: Resource<DynamicType = ()>>(&self, obj: &K, reason: &str, note: String) {
        self.send(obj, EventType::Warning, reason, note)
    }

    fn send<K: Resource<DynamicType = ()>>(
        &self,
        obj: &K,
        type_: EventType,
        reason: &str,
        note: String,
    ) {
        // kube-rs folds repeats into a series by (type, reason, action,
        // object); client-go's correlator folds only identical messages.
        // Keying the action on the message keeps "New size: 4" and "New
        // size: 1" apart, as upstream shows them.
        let mut action = format!("{reason}: {note}");
        if action.len() > 128 {
            let mut end = 128;
            while !action.is_char_boundary(end) {
                end -= 1;
            }
            action.truncate(end);
        }
        let ev = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action,
            secondary: None,
        };
        let _ = self.tx.try_send((ev, obj.object_ref(&())));
    }
}
