//! `r8s bench authz`: what authorization and admission cost. ConfigMap
//! creates and gets by an ordinary user (bound to `edit` in its
//! namespace) against a server with `--authorization-mode=AlwaysAllow`,
//! then against one with `Node,RBAC` holding 10,000 RoleBindings, then
//! the same with a ResourceQuota charged on every create, alternating
//! rounds so that the machine's drift hits every configuration alike.

use std::time::Instant;

use k8s_openapi::api::core::v1::{ConfigMap, Namespace, ResourceQuota};
use k8s_openapi::api::rbac::v1::{RoleBinding, RoleRef, Subject};
use kube::api::{Api, PostParams};

use crate::bench::{Server, client, pct, spawn_server};
use crate::bench_crd::creates;

/// Options of `r8s bench authz`.
#[derive(clap::Args, Debug)]
pub struct AuthzBenchArgs {
    /// Concurrent clients.
    #[arg(long, default_value_t = 16)]
    clients: usize,
    /// Objects created (and read back) per round and configuration.
    #[arg(long, default_value_t = 2000)]
    objects: usize,
    /// Rounds.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// RoleBindings in the RBAC cluster (to other users, over 100
    /// namespaces).
    #[arg(long, default_value_t = 10_000)]
    bindings: usize,
}

fn named<T: kube::Resource + Default>(name: &str) -> T {
    let mut o = T::default();
    o.meta_mut().name = Some(name.to_string());
    o
}

fn binding(name: &str, role: &str, user: &str) -> RoleBinding {
    RoleBinding {
        metadata: named::<ConfigMap>(name).metadata,
        role_ref: RoleRef {
            api_group: "rbac.authorization.k8s.io".into(),
            kind: "ClusterRole".into(),
            name: role.into(),
        },
        subjects: Some(vec![Subject {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "User".into(),
            name: user.into(),
            namespace: None,
        }]),
    }
}

/// A server, its admin client, and a client for user `bench`.
struct Setup {
    _server: Server,
    user: kube::Client,
    label: &'static str,
}

async fn setup(
    mode: &str,
    bindings: usize,
    quota: bool,
    label: &'static str,
) -> anyhow::Result<Setup> {
    let server = spawn_server(&[
        "--disable=controllers".to_string(),
        format!("--authorization-mode={mode}"),
    ])?;
    let admin = client(&server.kubeconfig).await?;
    let ns: Api<Namespace> = Api::all(admin.clone());
    ns.create(&PostParams::default(), &named("bench")).await?;
    let rb: Api<RoleBinding> = Api::namespaced(admin.clone(), "bench");
    rb.create(
        &PostParams::default(),
        &binding("bench-edit", "edit", "bench"),
    )
    .await?;
    if quota {
        let mut q: ResourceQuota = named("configmaps");
        q.spec = Some(k8s_openapi::api::core::v1::ResourceQuotaSpec {
            hard: Some(
                [(
                    "count/configmaps".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("1000000".into()),
                )]
                .into(),
            ),
            ..Default::default()
        });
        // The quota controller is off: give the quota its status as it would.
        q.status = Some(k8s_openapi::api::core::v1::ResourceQuotaStatus {
            hard: q.spec.as_ref().and_then(|s| s.hard.clone()),
            used: Some(
                [(
                    "count/configmaps".to_string(),
                    k8s_openapi::apimachinery::pkg::api::resource::Quantity("0".into()),
                )]
                .into(),
            ),
        });
        let qa: Api<ResourceQuota> = Api::namespaced(admin.clone(), "bench");
        let created = qa.create(&PostParams::default(), &q).await?;
        let mut with_status = created.clone();
        with_status.status = q.status.clone();
        qa.replace_status("configmaps", &PostParams::default(), &with_status)
            .await?;
    }
    if bindings > 0 {
        let start = Instant::now();
        let per_ns = bindings.div_ceil(100);
        let mut tasks = Vec::new();
        for n in 0..100 {
            let admin = admin.clone();
            tasks.push(tokio::spawn(async move {
                let name = format!("team-{n}");
                let ns: Api<Namespace> = Api::all(admin.clone());
                ns.create(&PostParams::default(), &named(&name)).await?;
                let rb: Api<RoleBinding> = Api::namespaced(admin, &name);
                for i in 0..per_ns {
                    let b = binding(&format!("b-{i}"), "view", &format!("user-{n}-{i}"));
                    rb.create(&PostParams::default(), &b).await?;
                }
                Ok::<_, kube::Error>(())
            }));
        }
        for t in tasks {
            t.await??;
        }
        println!(
            "{label}: {} RoleBindings created in {:.1}s",
            per_ns * 100,
            start.elapsed().as_secs_f64()
        );
    }
    let kc = apiserver::tls::user_kubeconfig(
        &server.dir.path().join("tls"),
        &server.url,
        "bench",
        &["bench-group"],
    )?;
    let path = server.dir.path().join("bench.kubeconfig");
    std::fs::write(&path, kc)?;
    let user = client(&path).await?;
    Ok(Setup {
        _server: server,
        user,
        label,
    })
}

/// Runs `r8s bench authz`.
pub async fn run(args: AuthzBenchArgs) -> anyhow::Result<()> {
    let setups = [
        setup("AlwaysAllow", 0, false, "AlwaysAllow").await?,
        setup("Node,RBAC", args.bindings, false, "RBAC").await?,
        setup("Node,RBAC", args.bindings, true, "RBAC+quota").await?,
    ];
    let mut totals = vec![(0.0, 0.0); setups.len()];
    for round in 0..args.rounds {
        // Each round starts with another configuration, so that none is
        // always measured first.
        let n = setups.len();
        for k in (0..n).map(|j| (j + round) % n) {
            let s = &setups[k];
            let api: Api<ConfigMap> = Api::namespaced(s.user.clone(), "bench");
            let a = api.clone();
            let (create_rate, create_lat) = creates(args.clients, args.objects, move |c, i| {
                let api = a.clone();
                async move {
                    api.create(
                        &PostParams::default(),
                        &named(&format!("cm-{round}-{c}-{i}")),
                    )
                    .await
                    .map(|_| ())
                }
            })
            .await?;
            let a = api.clone();
            let (get_rate, get_lat) = creates(args.clients, args.objects, move |c, i| {
                let api = a.clone();
                async move { api.get(&format!("cm-{round}-{c}-{i}")).await.map(|_| ()) }
            })
            .await?;
            println!(
                "round {round} {:<11} create {create_rate:>6.0}/s (p50 {:.2} ms, p99 {:.2} ms)  get {get_rate:>6.0}/s (p50 {:.2} ms, p99 {:.2} ms)",
                s.label,
                pct(&create_lat, 0.5),
                pct(&create_lat, 0.99),
                pct(&get_lat, 0.5),
                pct(&get_lat, 0.99),
            );
            totals[k].0 += create_rate;
            totals[k].1 += get_rate;
        }
    }
    let (base_c, base_g) = totals[0];
    for (s, (c, g)) in setups.iter().zip(&totals).skip(1) {
        println!(
            "{}: creates at {:.1}% and gets at {:.1}% of AlwaysAllow ({} RoleBindings, {} clients)",
            s.label,
            100.0 * c / base_c,
            100.0 * g / base_g,
            args.bindings,
            args.clients
        );
    }
    Ok(())
}
