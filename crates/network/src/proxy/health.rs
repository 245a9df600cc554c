//! `healthCheckNodePort`: for a LoadBalancer Service with
//! `externalTrafficPolicy: Local`, every node answers HTTP on that port
//! with how many of the Service's endpoints it runs — 200 when some, 503
//! when none — so that a load balancer sends traffic only to nodes that
//! can serve it without leaving the node (as kube-proxy's health server).

use std::collections::HashMap;
use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// What one health port reports: the Service (`namespace/name`) and its
/// endpoints on this node.
pub type Health = (String, usize);

struct Port {
    state: Arc<Mutex<Health>>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

/// The health servers of one node, one per port.
#[derive(Default)]
pub struct HealthServers {
    ports: HashMap<u16, Port>,
}

/// The HTTP response for a state, as kube-proxy words it.
pub fn response(h: &Health) -> String {
    let (ns, name) = h.0.split_once('/').unwrap_or(("", h.0.as_str()));
    let body = serde_json::json!({
        "service": {"namespace": ns, "name": name},
        "localEndpoints": h.1,
        "serviceProxyHealthy": true,
    })
    .to_string();
    let status = if h.1 > 0 {
        "200 OK"
    } else {
        "503 Service Unavailable"
    };
    format!(
        "HTTP/1.1 {status}\r\nContent-Type: application/json\r\nX-Content-Type-Options: nosniff\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
}

async fn serve(listener: tokio::net::TcpListener, state: Arc<Mutex<Health>>) {
    while let Ok((mut s, _)) = listener.accept().await {
        let state = state.clone();
        tokio::spawn(async move {
            let mut buf = [0u8; 1024];
            let _ = tokio::time::timeout(std::time::Duration::from_secs(2), s.read(&mut buf)).await;
            let h = state.lock().map(|g| g.clone()).unwrap_or_default();
            let _ = s.write_all(response(&h).as_bytes()).await;
        });
    }
}

impl HealthServers {
    /// Serves exactly `want` (port → state) on the node's addresses.
    pub async fn sync(&mut self, want: HashMap<u16, Health>, node_ips: &[Ipv4Addr]) {
        self.ports.retain(|port, p| {
            let keep = want.contains_key(port);
            if !keep {
                for t in &p.tasks {
                    t.abort();
                }
            }
            keep
        });
        for (port, h) in want {
            if let Some(p) = self.ports.get(&port) {
                if let Ok(mut g) = p.state.lock() {
                    *g = h;
                }
                continue;
            }
            let state = Arc::new(Mutex::new(h));
            let mut tasks = Vec::new();
            for ip in node_ips {
                match tokio::net::TcpListener::bind((*ip, port)).await {
                    Ok(l) => tasks.push(tokio::spawn(serve(l, state.clone()))),
                    Err(e) => {
                        tracing::warn!(%ip, port, error = %e, "health check node port not served")
                    }
                }
            }
            self.ports.insert(port, Port { state, tasks });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn healthy_with_local_endpoints_else_503() {
        let ok = response(&("shop/web".into(), 2));
        assert!(ok.starts_with("HTTP/1.1 200 OK\r\n"), "{ok}");
        assert!(
            ok.ends_with(r#"{"service":{"namespace":"shop","name":"web"},"localEndpoints":2,"serviceProxyHealthy":true}"#),
            "{ok}"
        );
        let none = response(&("shop/web".into(), 0));
        assert!(
            none.starts_with("HTTP/1.1 503 Service Unavailable\r\n"),
            "{none}"
        );
    }

    #[tokio::test]
    async fn serves_and_stops() {
        let mut hs = HealthServers::default();
        let port = {
            let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
            l.local_addr().unwrap().port()
        };
        let lo = [Ipv4Addr::LOCALHOST];
        hs.sync(HashMap::from([(port, ("shop/web".to_string(), 1))]), &lo)
            .await;
        let get = || async {
            let mut s = tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .ok()?;
            s.write_all(b"GET /healthz HTTP/1.1\r\n\r\n").await.ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).await.ok()?;
            Some(out)
        };
        assert!(get().await.unwrap().starts_with("HTTP/1.1 200"));
        hs.sync(HashMap::from([(port, ("shop/web".to_string(), 0))]), &lo)
            .await;
        assert!(get().await.unwrap().starts_with("HTTP/1.1 503"));
        hs.sync(HashMap::new(), &lo).await;
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        assert!(
            get().await.is_none(),
            "the port closes when the Service no longer needs it"
        );
    }
}
