//! `r8s bench crd`: create throughput of a custom resource with a 50-field
//! schema and 5 CEL rules against ConfigMap creates in the same run, as
//! the API-extension issue measures it (target: at least 80%).

use std::time::{Duration, Instant};

use anyhow::bail;
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DynamicObject, GroupVersionKind, PostParams};
use kube::discovery::ApiResource;
use serde_json::{Map, Value, json};

use crate::bench::{client, pct, spawn_server};

/// Options of `r8s bench crd`.
#[derive(clap::Args, Debug)]
pub struct CrdBenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Objects of each kind per round.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// Rounds (ConfigMaps then custom objects, alternating).
    #[arg(long, default_value_t = 2)]
    rounds: usize,
}

/// The 50-field schema: strings with patterns and lengths, bounded
/// integers, booleans, an enum; five CEL rules over them.
fn crd() -> Value {
    let mut props = Map::new();
    for i in 0..50 {
        let p = match i % 5 {
            0 => json!({"type": "string", "maxLength": 64, "pattern": "^[a-z0-9-]+$"}),
            1 => json!({"type": "integer", "minimum": 0, "maximum": 1000}),
            2 => json!({"type": "boolean"}),
            3 => json!({"type": "string", "enum": ["a", "b", "c"]}),
            _ => json!({"type": "string", "minLength": 1}),
        };
        props.insert(format!("f{i}"), p);
    }
    json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": "benchmarks.bench.r8s.io"},
        "spec": {
            "group": "bench.r8s.io",
            "scope": "Namespaced",
            "names": {"plural": "benchmarks", "kind": "Benchmark"},
            "versions": [{"name": "v1", "served": true, "storage": true,
                "schema": {"openAPIV3Schema": {"type": "object", "properties": {"spec": {
                    "type": "object",
                    "properties": props,
                    "x-kubernetes-validations": [
                        {"rule": "self.f1 <= 1000"},
                        {"rule": "self.f0.startsWith('v')"},
                        {"rule": "self.f3 in ['a', 'b', 'c']"},
                        {"rule": "self.f6 + self.f11 < 2000"},
                        {"rule": "size(self.f4) > 0"}
                    ]
                }}}}}]
        }
    })
}

fn cr(name: &str) -> DynamicObject {
    let mut spec = Map::new();
    for i in 0..50 {
        let v = match i % 5 {
            0 => json!(format!("value-{i}")),
            1 => json!(i * 10),
            2 => json!(i % 2 == 0),
            3 => json!("b"),
            _ => json!(format!("text {i}")),
        };
        spec.insert(format!("f{i}"), v);
    }
    serde_json::from_value(json!({
        "apiVersion": "bench.r8s.io/v1", "kind": "Benchmark",
        "metadata": {"name": name}, "spec": spec
    }))
    .unwrap_or_else(|_| DynamicObject::new(name, &resource()))
}

fn cm(name: &str) -> ConfigMap {
    let mut c = ConfigMap::default();
    c.metadata.name = Some(name.to_string());
    c.data = Some(
        (0..50)
            .map(|i| (format!("f{i}"), format!("value-{i}")))
            .collect(),
    );
    c
}

fn resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("bench.r8s.io", "v1", "Benchmark"),
        "benchmarks",
    )
}

/// Creates `n` objects with `clients` concurrent callers; returns
/// (objects/s, latencies).
pub(crate) async fn creates<F, Fut>(
    clients: usize,
    n: usize,
    make: F,
) -> anyhow::Result<(f64, Vec<Duration>)>
where
    F: Fn(usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<(), kube::Error>> + Send,
{
    let per = n.div_ceil(clients);
    let start = Instant::now();
    let mut tasks = Vec::new();
    for c in 0..clients {
        let make = make.clone();
        tasks.push(tokio::spawn(async move {
            let mut lat = Vec::with_capacity(per);
            for i in 0..per {
                let t = Instant::now();
                make(c, i).await?;
                lat.push(t.elapsed());
            }
            Ok::<_, kube::Error>(lat)
        }));
    }
    let mut lat = Vec::new();
    for t in tasks {
        lat.extend(t.await??);
    }
    let rate = lat.len() as f64 / start.elapsed().as_secs_f64();
    lat.sort();
    Ok((rate, lat))
}

/// Runs `r8s bench crd`.
pub async fn run(args: CrdBenchArgs) -> anyhow::Result<()> {
    let server = spawn_server(&["--disable=controllers".to_string()])?;
    let client = client(&server.kubeconfig).await?;
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    crds.create(&PostParams::default(), &serde_json::from_value(crd())?)
        .await?;
    let crs: Api<DynamicObject> = Api::namespaced_with(client.clone(), "default", &resource());
    let cms: Api<ConfigMap> = Api::namespaced(client.clone(), "default");
    let (mut cm_total, mut cr_total) = (0.0, 0.0);
    for round in 0..args.rounds {
        let api = cms.clone();
        let (cm_rate, cm_lat) = creates(args.clients, args.objects, move |c, i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cm(&format!("cm-{round}-{c}-{i}")))
                    .await
                    .map(|_| ())
            }
        })
        .await?;
        let api = crs.clone();
        let (cr_rate, cr_lat) = creates(args.clients, args.objects, move |c, i| {
            let api = api.clone();
            async move {
                api.create(&PostParams::default(), &cr(&format!("cr-{round}-{c}-{i}")))
                    .await
                    .map(|_| ())
            }
        })
        .await?;
        println!(
            "round {round}: ConfigMap {cm_rate:>7.0}/s (p50 {:.2} ms, p99 {:.2} ms)   custom {cr_rate:>7.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
            pct(&cm_lat, 0.5),
            pct(&cm_lat, 0.99),
            pct(&cr_lat, 0.5),
            pct(&cr_lat, 0.99),
        );
        cm_total += cm_rate;
        cr_total += cr_rate;
    }
    if cm_total <= 0.0 {
        bail!("no ConfigMap was created");
    }
    println!(
        "custom resource creates at {:.0}% of ConfigMap creates ({} clients, 50-field schema, 5 CEL rules)",
        100.0 * cr_total / cm_total,
        args.clients
    );
    Ok(())
}
