//! Which resources exist, from discovery: the controllers that act on every
//! kind (namespace deletion, garbage collection) find them like kubectl does.

use kube::api::{Api, DynamicObject};
use kube::discovery::{ApiCapabilities, ApiResource, Discovery, Scope, verbs};

/// A listable, deletable resource.
#[derive(Clone)]
pub struct Res {
    /// Group/version/kind/plural.
    pub ar: ApiResource,
    /// Scope and verbs.
    pub caps: ApiCapabilities,
}

impl Res {
    /// Whether objects of this resource live in namespaces.
    pub fn namespaced(&self) -> bool {
        matches!(self.caps.scope, Scope::Namespaced)
    }

    /// An API handle for one namespace (or cluster-wide).
    pub fn api(&self, client: &kube::Client, ns: Option<&str>) -> Api<DynamicObject> {
        match ns {
            Some(ns) if self.namespaced() => Api::namespaced_with(client.clone(), ns, &self.ar),
            _ => Api::all_with(client.clone(), &self.ar),
        }
    }
}

/// All preferred-version resources that can be listed and deleted.
pub async fn discover(client: &kube::Client) -> Result<Vec<Res>, kube::Error> {
    let d = Discovery::new(client.clone()).run().await?;
    let mut out = Vec::new();
    for group in d.groups() {
        for (ar, caps) in group.recommended_resources() {
            if caps.supports_operation(verbs::LIST) && caps.supports_operation(verbs::DELETE) {
                out.push(Res { ar, caps });
            }
        }
    }
    // events.k8s.io shares storage with core events: one of them is enough.
    out.retain(|r| !(r.ar.group == "events.k8s.io" && r.ar.plural == "events"));
    Ok(out)
}
