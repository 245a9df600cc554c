//! Keeps [`Records`] up to date from watches of Services and EndpointSlices.
//!
//! The watcher re-lists by itself after errors (with backoff here); a
//! re-list arrives as Init, InitApply..., InitDone and replaces the whole
//! kind at once, so deletions missed while disconnected disappear too.

use std::fmt::Debug;
use std::sync::{Arc, RwLock};

use futures::StreamExt;
use k8s_openapi::api::core::v1::Service;
use k8s_openapi::api::discovery::v1::EndpointSlice;
use k8s_openapi::serde::de::DeserializeOwned;
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client, Resource};

use super::records::Records;

/// How one kind of object updates the records.
trait Apply: Resource + Clone + DeserializeOwned + Debug + Send + Sync + 'static {
    const KIND: &'static str;
    fn apply(records: &mut Records, obj: &Self);
    fn delete(records: &mut Records, obj: &Self);
    fn replace(records: &mut Records, all: &[Self]);
}

impl Apply for Service {
    const KIND: &'static str = "Service";
    fn apply(records: &mut Records, obj: &Self) {
        records.apply_service(obj);
    }
    fn delete(records: &mut Records, obj: &Self) {
        records.delete_service(obj);
    }
    fn replace(records: &mut Records, all: &[Self]) {
        records.replace_services(all);
    }
}

impl Apply for EndpointSlice {
    const KIND: &'static str = "EndpointSlice";
    fn apply(records: &mut Records, obj: &Self) {
        records.apply_slice(obj);
    }
    fn delete(records: &mut Records, obj: &Self) {
        records.delete_slice(obj);
    }
    fn replace(records: &mut Records, all: &[Self]) {
        records.replace_slices(all);
    }
}

/// Watches Services and EndpointSlices in all namespaces, forever.
pub(crate) async fn run(client: Client, records: Arc<RwLock<Records>>) {
    tokio::join!(
        watch::<Service>(Api::all(client.clone()), records.clone()),
        watch::<EndpointSlice>(Api::all(client), records),
    );
}

async fn watch<K>(api: Api<K>, records: Arc<RwLock<Records>>)
where
    K: Apply,
    K::DynamicType: Default,
{
    let stream = watcher(api, watcher::Config::default()).default_backoff();
    futures::pin_mut!(stream);
    // Objects of a re-list in progress, applied together at InitDone.
    let mut listing: Vec<K> = Vec::new();
    while let Some(event) = stream.next().await {
        let event = match event {
            Ok(event) => event,
            Err(error) => {
                tracing::warn!(kind = K::KIND, %error, "watch failed; re-listing after backoff");
                continue;
            }
        };
        let write = || records.write().unwrap_or_else(|e| e.into_inner());
        match event {
            watcher::Event::Apply(obj) => K::apply(&mut write(), &obj),
            watcher::Event::Delete(obj) => K::delete(&mut write(), &obj),
            watcher::Event::Init => listing.clear(),
            watcher::Event::InitApply(obj) => listing.push(obj),
            watcher::Event::InitDone => {
                let all = std::mem::take(&mut listing);
                tracing::info!(kind = K::KIND, count = all.len(), "DNS records listed");
                K::replace(&mut write(), &all);
            }
        }
    }
    tracing::error!(
        kind = K::KIND,
        "watch ended; DNS records no longer follow the cluster"
    );
}
