//! How hollow nodes are addressed (documented so that tests and users can
//! rely on it): names, pod ranges and InternalIPs by node index.

/// The name of hollow node `i`.
pub fn node_name(prefix: &str, i: usize) -> String {
    format!("{prefix}-{i}")
}

/// The podCIDR of hollow node `i`: `10.<64 + i/256>.<i%256>.0/24`.
pub fn pod_cidr(i: usize) -> String {
    let [a, b, c] = pod_net(i);
    format!("{a}.{b}.{c}.0/24")
}

/// First three octets of node `i`'s pod /24.
pub(crate) fn pod_net(i: usize) -> [u8; 3] {
    // `i < MAX_NODES` (checked in `run`), so `64 + i/256 <= 255`.
    [10, (64 + i / 256).min(255) as u8, (i % 256) as u8]
}

/// The fake InternalIP of hollow node `i`: `10.200.<(i+1)/256>.<(i+1)%256>`.
pub(crate) fn internal_ip(i: usize) -> String {
    let n = i + 1;
    format!("10.200.{}.{}", (n / 256) % 256, n % 256)
}

/// First three octets of a `a.b.c.d/len` CIDR (pods get `.2`–`.254`).
pub(crate) fn parse_net(cidr: &str) -> Option<[u8; 3]> {
    let ip: std::net::Ipv4Addr = cidr.split('/').next()?.parse().ok()?;
    let [a, b, c, _] = ip.octets();
    Some([a, b, c])
}
