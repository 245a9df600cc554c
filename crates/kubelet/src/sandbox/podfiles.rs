//! The pod's `/etc/hosts` and `/etc/resolv.conf`, as upstream's kubelet
//! writes them: the managed hosts file with the pod's own name (and FQDN
//! under a `subdomain`) and its `hostAliases`; resolv.conf from the pod's
//! `dnsPolicy` merged with its `dnsConfig`.
//!
//! `ClusterFirst` pods get the cluster DNS address, upstream's search path
//! (`<ns>.svc.<domain> svc.<domain> <domain>` before the node's) and
//! `ndots:5`; without a cluster DNS address (a node agent started without
//! the network) they fall back to the node's resolv.conf as upstream's
//! kubelet does without `--cluster-dns`, with a `MissingClusterDNS` event.

use k8s_openapi::api::core::v1::Pod;

/// The cluster's DNS domain.
pub const CLUSTER_DOMAIN: &str = "cluster.local";

/// Upstream's limits on a resolv.conf (glibc's, widened).
const MAX_NAMESERVERS: usize = 3;
const MAX_SEARCHES: usize = 32;

/// The pod's hostname: `spec.hostname`, else its name, cut to 63
/// characters without a trailing `-` or `.` (upstream's
/// `truncatePodHostnameIfNeeded`: a kernel hostname holds at most 64).
pub fn pod_hostname(pod: &Pod) -> String {
    let name = pod
        .spec
        .as_ref()
        .and_then(|s| s.hostname.clone())
        .filter(|h| !h.is_empty())
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default();
    if name.len() <= 63 {
        return name;
    }
    // The API allows only DNS labels here, but never cut inside a char.
    let mut end = 63;
    while !name.is_char_boundary(end) {
        end -= 1;
    }
    name[..end].trim_end_matches(['-', '.']).to_string()
}

/// The pod's hosts file; `node_hosts` is the node's (for `hostNetwork`).
pub fn hosts(pod: &Pod, ip: &str, host_network: bool, node_hosts: &str) -> String {
    let spec = pod.spec.as_ref();
    let mut out = if host_network {
        node_hosts.to_string()
    } else {
        let hostname = pod_hostname(pod);
        let mut s = String::from(
            "# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\nfe00::0\tip6-localnet\nfe00::0\tip6-mcastprefix\nfe00::1\tip6-allnodes\nfe00::2\tip6-allrouters\n",
        );
        match spec
            .and_then(|s| s.subdomain.as_deref())
            .filter(|d| !d.is_empty())
        {
            Some(sub) => {
                let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
                s.push_str(&format!(
                    "{ip}\t{hostname}.{sub}.{ns}.svc.{CLUSTER_DOMAIN}\t{hostname}\n"
                ));
            }
            None => s.push_str(&format!("{ip}\t{hostname}\n")),
        }
        s
    };
    let aliases = spec.and_then(|s| s.host_aliases.as_ref());
    if let Some(list) = aliases.filter(|l| !l.is_empty()) {
        if !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str("\n# Entries added by HostAliases.\n");
        for a in list {
            let names = a.hostnames.clone().unwrap_or_default();
            if names.is_empty() {
                continue;
            }
            out.push_str(&format!("{}\t{}\n", a.ip, names.join("\t")));
        }
    }
    out
}

/// What a resolv.conf says.
#[derive(Debug, Default, Clone, PartialEq)]
struct Resolv {
    nameservers: Vec<String>,
    searches: Vec<String>,
    options: Vec<String>,
}

fn parse(text: &str) -> Resolv {
    let mut r = Resolv::default();
    for line in text.lines() {
        let line = line.split(['#', ';']).next().unwrap_or("");
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => r.nameservers.extend(f.next().map(str::to_string)),
            Some("search" | "domain") => r.searches = f.map(str::to_string).collect(),
            Some("options") => r.options.extend(f.map(str::to_string)),
            _ => {}
        }
    }
    r
}

fn push_unique(list: &mut Vec<String>, v: &str) {
    if !list.iter().any(|x| x == v) {
        list.push(v.to_string());
    }
}

/// The cluster DNS a `ClusterFirst` pod uses.
#[derive(Debug, Clone)]
pub struct ClusterDns {
    /// The cluster DNS Service's address.
    pub ip: std::net::Ipv4Addr,
    /// The cluster domain (`cluster.local`).
    pub domain: String,
}

/// The pod's resolv.conf, and whether `ClusterFirst` had to fall back to
/// the node's (no cluster DNS configured).
pub fn resolv_conf(pod: &Pod, node_resolv: &str, dns: Option<&ClusterDns>) -> (String, bool) {
    let spec = pod.spec.as_ref();
    let host_network = spec.and_then(|s| s.host_network) == Some(true);
    let policy = spec
        .and_then(|s| s.dns_policy.clone())
        .unwrap_or_else(|| "ClusterFirst".into());
    let cluster_first =
        policy == "ClusterFirst" && !host_network || policy == "ClusterFirstWithHostNet";
    let mut r = if policy == "None" {
        Resolv::default()
    } else {
        parse(node_resolv)
    };
    let mut fell_back = cluster_first;
    if let (true, Some(dns)) = (cluster_first, dns) {
        // Upstream's kubelet: the cluster server only, the cluster search
        // path before the node's, ndots:5.
        let ns = pod.metadata.namespace.as_deref().unwrap_or("default");
        let d = &dns.domain;
        let mut searches = vec![format!("{ns}.svc.{d}"), format!("svc.{d}"), d.clone()];
        for s in std::mem::take(&mut r.searches) {
            if !searches.contains(&s) {
                searches.push(s);
            }
        }
        r = Resolv {
            nameservers: vec![dns.ip.to_string()],
            searches,
            options: vec!["ndots:5".into()],
        };
        fell_back = false;
    }
    if let Some(cfg) = spec.and_then(|s| s.dns_config.as_ref()) {
        for n in cfg.nameservers.iter().flatten() {
            push_unique(&mut r.nameservers, n);
        }
        for s in cfg.searches.iter().flatten() {
            push_unique(&mut r.searches, s);
        }
        for o in cfg.options.iter().flatten() {
            let opt = match &o.value {
                Some(v) => format!("{}:{v}", o.name.as_deref().unwrap_or("")),
                None => o.name.clone().unwrap_or_default(),
            };
            // A pod's option replaces the node's of the same name.
            let name = opt.split(':').next().unwrap_or("").to_string();
            r.options
                .retain(|x| x.split(':').next().unwrap_or("") != name);
            r.options.push(opt);
        }
    }
    r.nameservers.truncate(MAX_NAMESERVERS);
    r.searches.truncate(MAX_SEARCHES);
    let mut out = String::new();
    for n in &r.nameservers {
        out.push_str(&format!("nameserver {n}\n"));
    }
    if !r.searches.is_empty() {
        out.push_str(&format!("search {}\n", r.searches.join(" ")));
    }
    if !r.options.is_empty() {
        out.push_str(&format!("options {}\n", r.options.join(" ")));
    }
    (out, fell_back)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_names_become_hostnames_of_at_most_63_characters() {
        let mut pod: Pod = serde_json::from_value(serde_json::json!({
            "metadata": {"name": format!("{}-{}", "a".repeat(62), "tail")},
        }))
        .unwrap();
        // Cut at 63 ("a"*62 + "-"), then the trailing dash goes.
        assert_eq!(pod_hostname(&pod), "a".repeat(62));
        pod.metadata.name = Some("short".into());
        assert_eq!(pod_hostname(&pod), "short");
        pod.spec = Some(
            serde_json::from_value(serde_json::json!({"containers": [], "hostname": "h"})).unwrap(),
        );
        assert_eq!(pod_hostname(&pod), "h");
    }
    use serde_json::json;

    fn pod(spec: serde_json::Value) -> Pod {
        serde_json::from_value(json!({
            "metadata": {"name": "web", "namespace": "shop"},
            "spec": spec
        }))
        .unwrap()
    }

    #[test]
    fn hosts_name_the_pod_its_fqdn_and_aliases() {
        let p = pod(json!({
            "containers": [],
            "hostname": "w-0",
            "subdomain": "web",
            "hostAliases": [{"ip": "10.1.2.3", "hostnames": ["foo.local", "bar.local"]}]
        }));
        let h = hosts(&p, "10.42.0.7", false, "");
        assert!(h.starts_with("# Kubernetes-managed hosts file.\n127.0.0.1\tlocalhost\n"));
        assert!(
            h.contains("10.42.0.7\tw-0.web.shop.svc.cluster.local\tw-0\n"),
            "{h}"
        );
        assert!(
            h.ends_with("\n# Entries added by HostAliases.\n10.1.2.3\tfoo.local\tbar.local\n"),
            "{h}"
        );
        let plain = hosts(&pod(json!({"containers": []})), "10.42.0.8", false, "");
        assert!(plain.ends_with("10.42.0.8\tweb\n"), "{plain}");
        let host = hosts(&pod(json!({"containers": []})), "", true, "1.1.1.1 node\n");
        assert_eq!(host, "1.1.1.1 node\n");
    }

    #[test]
    fn resolv_conf_follows_the_policy_and_the_dns_config() {
        let node = "# generated\nnameserver 192.168.1.1\nsearch lan\noptions ndots:1 edns0\n";
        let (def, fell_back) = resolv_conf(&pod(json!({"containers": []})), node, None);
        assert!(fell_back);
        assert_eq!(
            def,
            "nameserver 192.168.1.1\nsearch lan\noptions ndots:1 edns0\n"
        );
        let none = pod(json!({
            "containers": [],
            "dnsPolicy": "None",
            "dnsConfig": {
                "nameservers": ["1.2.3.4"],
                "searches": ["ns1.svc.cluster-domain.example", "my.dns.search.suffix"],
                "options": [{"name": "ndots", "value": "2"}, {"name": "edns0"}]
            }
        }));
        assert_eq!(
            resolv_conf(&none, node, None),
            (
                "nameserver 1.2.3.4\nsearch ns1.svc.cluster-domain.example my.dns.search.suffix\noptions ndots:2 edns0\n".to_string(),
                false
            )
        );
        let merged = pod(json!({
            "containers": [],
            "dnsPolicy": "Default",
            "dnsConfig": {"nameservers": ["9.9.9.9"], "options": [{"name": "ndots", "value": "5"}]}
        }));
        assert_eq!(
            resolv_conf(&merged, node, None).0,
            "nameserver 192.168.1.1\nnameserver 9.9.9.9\nsearch lan\noptions edns0 ndots:5\n"
        );
    }

    #[test]
    fn cluster_first_uses_cluster_dns_and_the_cluster_search_path() {
        let node = "nameserver 192.168.1.1\nsearch lan\noptions ndots:1 edns0\n";
        let dns = ClusterDns {
            ip: "10.43.0.10".parse().unwrap(),
            domain: "cluster.local".into(),
        };
        let (r, fell_back) = resolv_conf(&pod(json!({"containers": []})), node, Some(&dns));
        assert!(!fell_back);
        assert_eq!(
            r,
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local lan\noptions ndots:5\n"
        );
        // hostNetwork pods with ClusterFirst use the node's; with
        // ClusterFirstWithHostNet the cluster's.
        let host = pod(json!({"containers": [], "hostNetwork": true}));
        assert!(
            resolv_conf(&host, node, Some(&dns))
                .0
                .starts_with("nameserver 192.168.1.1")
        );
        let with = pod(
            json!({"containers": [], "hostNetwork": true, "dnsPolicy": "ClusterFirstWithHostNet",
            "dnsConfig": {"options": [{"name": "ndots", "value": "2"}]}}),
        );
        assert_eq!(
            resolv_conf(&with, node, Some(&dns)).0,
            "nameserver 10.43.0.10\nsearch shop.svc.cluster.local svc.cluster.local cluster.local lan\noptions ndots:2\n"
        );
    }
}
