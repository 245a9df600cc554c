//! Custom resources: the kinds CustomResourceDefinitions add, served by the
//! same REST code as the built-in kinds. [`Registry`] is what the router,
//! discovery, OpenAPI and the write path consult for a custom kind;
//! [`controller`] keeps it in step with the stored definitions (names
//! accepted, Established, deletion of a definition's objects).

pub mod controller;
pub mod conversion;

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use api::catalogue::ResourceInfo;
use api::crd::strategy::CustomStrategy;
use api::crd::{Column, Definition, Version};

/// One served version of a custom resource.
#[derive(Debug)]
pub struct Served {
    /// Its catalogue entry.
    pub info: &'static ResourceInfo,
    /// Its rules (schema, CEL, defaults).
    pub strategy: Arc<CustomStrategy>,
}

impl PartialEq for Served {
    fn eq(&self, other: &Self) -> bool {
        std::ptr::eq(self, other)
    }
}

impl Served {
    /// The version's definition.
    pub fn version(&self) -> &Version {
        &self.strategy.version
    }

    /// Its printer columns.
    pub fn columns(&self) -> &[Column] {
        &self.strategy.version.columns
    }

    /// The warning requests at a deprecated version get.
    pub fn warning(&self) -> Option<String> {
        self.version().warning(self.info.group, self.info.kind)
    }
}

/// A rendered OpenAPI document and its content hash.
pub type OpenApiDoc = (serde_json::Value, String);

#[derive(Default)]
struct Snapshot {
    by_route: HashMap<(String, String, String), Arc<Served>>,
    /// Groups in definition-name order, each with its served versions
    /// (preferred first).
    groups: Vec<(String, Vec<String>)>,
    /// Served resources per group version, in plural order.
    by_group_version: HashMap<(String, String), Vec<Arc<Served>>>,
    /// OpenAPI documents per group version, built when first asked for.
    openapi: std::sync::Mutex<HashMap<(String, String), Arc<OpenApiDoc>>>,
}

/// The custom kinds this server serves now.
#[derive(Default)]
pub struct Registry {
    snap: RwLock<Arc<Snapshot>>,
}

impl Registry {
    fn snapshot(&self) -> Arc<Snapshot> {
        self.snap.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    /// Looks a custom resource up by group, version and plural.
    pub fn find(&self, group: &str, version: &str, plural: &str) -> Option<Arc<Served>> {
        self.snapshot()
            .by_route
            .get(&(group.to_string(), version.to_string(), plural.to_string()))
            .cloned()
    }

    /// Looks a custom kind up by apiVersion and kind.
    pub fn find_kind(&self, api_version: &str, kind: &str) -> Option<&'static ResourceInfo> {
        let (group, version) = api::catalogue::split_api_version(api_version);
        self.snapshot()
            .by_route
            .values()
            .find(|s| s.info.group == group && s.info.version == version && s.info.kind == kind)
            .map(|s| s.info)
    }

    /// The served entry behind a custom `info`.
    pub fn get(&self, info: &ResourceInfo) -> Option<Arc<Served>> {
        if !info.custom {
            return None;
        }
        self.find(info.group, info.version, info.plural)
    }

    /// Custom groups with their served versions, preferred first.
    pub fn groups(&self) -> Vec<(String, Vec<String>)> {
        self.snapshot().groups.clone()
    }

    /// The custom resources served in one group version.
    pub fn resources_in(&self, group: &str, version: &str) -> Vec<Arc<Served>> {
        self.snapshot()
            .by_group_version
            .get(&(group.to_string(), version.to_string()))
            .cloned()
            .unwrap_or_default()
    }

    /// The OpenAPI v3 document of a custom group version and its hash.
    pub fn openapi_v3(
        &self,
        group: &str,
        version: &str,
    ) -> Option<Arc<(serde_json::Value, String)>> {
        let snap = self.snapshot();
        let key = (group.to_string(), version.to_string());
        let served = snap.by_group_version.get(&key)?;
        let mut cache = snap.openapi.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(doc) = cache.get(&key) {
            return Some(doc.clone());
        }
        let resources: Vec<(&ResourceInfo, Option<&serde_json::Value>)> = served
            .iter()
            .map(|s| (s.info, s.strategy.schema()))
            .collect();
        let doc = api::openapi::custom_v3_document(&resources);
        let hash = api::openapi::hash_of(&doc);
        let entry = Arc::new((doc, hash));
        cache.insert(key, entry.clone());
        Some(entry)
    }

    /// The `/openapi/v3` index, custom group versions included.
    pub fn openapi_v3_root(&self) -> serde_json::Value {
        let keys: Vec<(String, String)> =
            self.snapshot().by_group_version.keys().cloned().collect();
        let custom: Vec<(String, String, String)> = keys
            .into_iter()
            .filter_map(|(g, v)| {
                let doc = self.openapi_v3(&g, &v)?;
                Some((g, v, doc.1.clone()))
            })
            .collect();
        api::openapi::v3_root_with(&custom)
    }

    /// Replaces what is served with the established `definitions` (each
    /// with the names it was accepted under).
    pub fn publish(&self, definitions: &[(Definition, api::crd::Names)]) {
        let mut snap = Snapshot::default();
        let mut sorted: Vec<&(Definition, api::crd::Names)> = definitions.iter().collect();
        sorted.sort_by(|a, b| a.0.name.cmp(&b.0.name));
        for (def, names) in sorted {
            let def = Arc::new(def.clone());
            let mut versions = Vec::new();
            for v in def.served() {
                let info = def.info(names, v);
                let served = Arc::new(Served {
                    info,
                    strategy: Arc::new(CustomStrategy {
                        definition: def.clone(),
                        version: v.clone(),
                    }),
                });
                snap.by_route.insert(
                    (def.group.clone(), v.name.clone(), names.plural.clone()),
                    served.clone(),
                );
                snap.by_group_version
                    .entry((def.group.clone(), v.name.clone()))
                    .or_default()
                    .push(served);
                versions.push(v.name.clone());
            }
            match snap.groups.iter_mut().find(|(g, _)| *g == def.group) {
                Some((_, vs)) => {
                    for v in versions {
                        if !vs.contains(&v) {
                            vs.push(v);
                        }
                    }
                    vs.sort_by(|a, b| api::crd::compare_versions(a, b));
                }
                None => snap.groups.push((def.group.clone(), versions)),
            }
        }
        for list in snap.by_group_version.values_mut() {
            list.sort_by(|a, b| a.info.plural.cmp(b.info.plural));
        }
        *self.snap.write().unwrap_or_else(|e| e.into_inner()) = Arc::new(snap);
    }
}
