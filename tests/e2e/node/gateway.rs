//! The Gateway API with real containers, as a user follows the Gateway
//! API's own guides: the standard-channel CRDs and the GatewayClass `r8s`
//! are there at start; a Gateway with an HTTP listener (sharing the
//! ingress port) and an HTTPS listener of its own; an HTTPRoute that
//! splits 90/10 between two Deployments, sends a header to the canary,
//! redirects, rewrites and sets a request header; status conditions as
//! kubectl shows them; a route in another namespace reaches a Service only
//! once a ReferenceGrant allows it.

use std::process::Command;
use std::time::Duration;

use super::ingress::{certs, curl, web};
use super::{Host, free_port, start_node_with};

#[test]
fn gateway_api_splits_matches_filters_and_needs_grants_across_namespaces() {
    let mut host = Host::new();
    let (http, https, gw_https) = (free_port(), free_port(), free_port());
    start_node_with(
        &mut host,
        &[
            "--ingress-http-port",
            &http.to_string(),
            "--ingress-https-port",
            &https.to_string(),
            "--ingress-bind-address",
            "127.0.0.1",
        ],
        |_| {},
    );
    let c = host.cluster();

    // The standard channel is installed, the class accepted.
    let crd = c.get_json(&["crd", "httproutes.gateway.networking.k8s.io"]);
    assert_eq!(
        crd["metadata"]["annotations"]["gateway.networking.k8s.io/bundle-version"],
        "v1.6.1"
    );
    c.wait_for("GatewayClass r8s Accepted", Duration::from_secs(30), || {
        let out = c.kubectl(&[
            "get",
            "gatewayclass",
            "r8s",
            "-o",
            "jsonpath={.status.conditions[?(@.type==\"Accepted\")].status}",
        ]);
        (String::from_utf8_lossy(&out.stdout).trim() == "True").then_some(())
    });

    let dir = tempfile::tempdir().unwrap();
    certs(dir.path(), &["app.example"]);
    let p = |f: &str| dir.path().join(f).display().to_string();
    c.ok(&[
        "create",
        "secret",
        "tls",
        "app-tls",
        &format!("--cert={}", p("app.example.crt")),
        &format!("--key={}", p("app.example.key")),
    ]);
    web(c, "stable", "page-stable");
    web(c, "canary", "page-canary");
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {{name: gw}}
spec:
  gatewayClassName: r8s
  listeners:
  - name: http
    port: {http}
    protocol: HTTP
    allowedRoutes: {{namespaces: {{from: All}}}}
  - name: https
    port: {gw_https}
    protocol: HTTPS
    hostname: "*.example"
    tls: {{certificateRefs: [{{name: app-tls}}]}}
    allowedRoutes: {{namespaces: {{from: All}}}}
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {{name: split}}
spec:
  parentRefs: [{{name: gw}}]
  hostnames: [app.example]
  rules:
  - backendRefs:
    - {{name: stable, port: 80, weight: 90}}
    - {{name: canary, port: 80, weight: 10}}
  - matches: [{{headers: [{{name: x-env, value: canary}}]}}]
    backendRefs: [{{name: canary, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /old}}}}]
    filters:
    - type: RequestRedirect
      requestRedirect: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /new}}, statusCode: 301}}
  - matches: [{{path: {{type: PathPrefix, value: /api}}}}]
    filters:
    - type: URLRewrite
      urlRewrite: {{path: {{type: ReplacePrefixMatch, replacePrefixMatch: /}}}}
    backendRefs: [{{name: stable, port: 80}}]
  - matches: [{{path: {{type: PathPrefix, value: /cgi-bin}}}}]
    filters:
    - type: RequestHeaderModifier
      requestHeaderModifier: {{set: [{{name: X-Gateway, value: r8s}}]}}
    backendRefs: [{{name: stable, port: 80}}]
"#
        ),
    );
    c.ok(&[
        "wait",
        "--for=condition=Programmed",
        "gateway/gw",
        "--timeout=60s",
    ]);
    for d in ["stable", "canary"] {
        c.ok(&["rollout", "status", "deployment", d, "--timeout=90s"]);
    }
    // kubectl shows what a user checks.
    let node_ip = c.ok(&[
        "get",
        "node",
        "e2e-node",
        "-o",
        "jsonpath={.status.addresses[?(@.type==\"InternalIP\")].address}",
    ]);
    let table = c.ok(&["get", "gateway", "gw"]);
    assert!(
        table.contains(node_ip.trim()) && table.contains("True"),
        "the node's address and Programmed: {table}"
    );
    let accepted = c.ok(&[
        "get",
        "httproute",
        "split",
        "-o",
        "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}/{.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].status}/{.status.parents[0].controllerName}",
    ]);
    assert_eq!(accepted.trim(), "True/True/r8s.io/gateway-controller");
    let attached = c.ok(&[
        "get",
        "gateway",
        "gw",
        "-o",
        "jsonpath={.status.listeners[0].attachedRoutes}",
    ]);
    assert_eq!(attached.trim(), "1");

    let get = |host: &str, path: &str, extra: &[&str]| {
        let url = format!("http://127.0.0.1:{http}{path}");
        let h = format!("Host: {host}");
        let mut args = vec!["-H", h.as_str()];
        args.extend_from_slice(extra);
        args.push(url.as_str());
        curl(&args)
    };
    c.wait_for(
        "both backends serve through the Gateway",
        Duration::from_secs(60),
        || {
            (get("app.example", "/", &["-H", "x-env: canary"]).1 == "page-canary"
                && get("app.example", "/api/two", &[]).1 == "page-stable")
                .then_some(())
        },
    );

    // 90/10 over 1,000 requests on kept-alive connections.
    let counts = crate::common::python(&format!(
        r#"
import http.client, json
conn = http.client.HTTPConnection("127.0.0.1", {http}, timeout=5)
counts = {{}}
for i in range(1000):
    conn.request("GET", "/", headers={{"Host": "app.example"}})
    r = conn.getresponse()
    k = "%d %s" % (r.status, r.read().decode().strip())
    counts[k] = counts.get(k, 0) + 1
print(json.dumps(counts))
"#
    ));
    let counts: serde_json::Value = serde_json::from_str(&counts).unwrap();
    let (stable, canary) = (
        counts["200 page-stable"].as_u64().unwrap_or(0),
        counts["200 page-canary"].as_u64().unwrap_or(0),
    );
    assert_eq!(stable + canary, 1000, "every request answered: {counts}");
    assert!(
        (70..=130).contains(&canary),
        "canary share {canary}/1000 is not 10% within 3 points: {counts}"
    );

    // A redirect keeps the rest of the path and the listener's port.
    let out = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code} %{redirect_url}",
            "-H",
            "Host: app.example",
            &format!("http://127.0.0.1:{http}/old/page?q=1"),
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        format!("301 http://app.example:{http}/new/page?q=1")
    );
    // A rewrite: /api/two is /two at the backend.
    assert_eq!(
        get("app.example", "/api/two", &[]),
        ("200".into(), "page-stable".into())
    );
    // A request header set on the way.
    let (code, env) = get("app.example", "/cgi-bin/env", &[]);
    assert_eq!(code, "200", "{env}");
    assert!(env.contains("HTTP_X_GATEWAY=r8s"), "{env}");
    // Another host is not this route's.
    assert_eq!(get("other.example", "/", &[]).0, "404");

    // HTTPS on the Gateway's own port, with the listener's certificate.
    let (code, body) = curl(&[
        "--resolve",
        &format!("app.example:{gw_https}:127.0.0.1"),
        "--cacert",
        &p("ca.crt"),
        "-H",
        "x-env: canary",
        &format!("https://app.example:{gw_https}/"),
    ]);
    assert_eq!((code.as_str(), body.as_str()), ("200", "page-canary"));

    // A route in another namespace needs a ReferenceGrant for a Service
    // in this one.
    c.ok(&["create", "namespace", "shop"]);
    c.create(
        Some("shop"),
        r#"
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata: {name: shop}
spec:
  parentRefs: [{name: gw, namespace: default}]
  hostnames: [shop.example]
  rules:
  - backendRefs: [{name: stable, namespace: default, port: 80}]
"#,
    );
    let resolved = || {
        c.ok(&[
            "-n",
            "shop",
            "get",
            "httproute",
            "shop",
            "-o",
            "jsonpath={.status.parents[0].conditions[?(@.type==\"ResolvedRefs\")].reason}",
        ])
        .trim()
        .to_string()
    };
    c.wait_for(
        "the shop route refused its backend",
        Duration::from_secs(30),
        || (resolved() == "RefNotPermitted").then_some(()),
    );
    assert_eq!(
        get("shop.example", "/", &[]).0,
        "500",
        "a rule whose only backend is not permitted answers 500"
    );
    c.create(
        Some("default"),
        r#"
apiVersion: gateway.networking.k8s.io/v1beta1
kind: ReferenceGrant
metadata: {name: shop-to-stable}
spec:
  from: [{group: gateway.networking.k8s.io, kind: HTTPRoute, namespace: shop}]
  to: [{group: "", kind: Service, name: stable}]
"#,
    );
    c.wait_for("the grant to take effect", Duration::from_secs(30), || {
        (resolved() == "ResolvedRefs" && get("shop.example", "/", &[]).1 == "page-stable")
            .then_some(())
    });
    let attached = c.ok(&[
        "get",
        "gateway",
        "gw",
        "-o",
        "jsonpath={.status.listeners[0].attachedRoutes}",
    ]);
    assert_eq!(attached.trim(), "2");

    // gRPC: a GRPCRoute by service and method, over h2c both ways, the
    // server's trailers carried back.
    let node_ip = format!("{}1", host.net);
    let grpc_port = grpc_echo_server(&node_ip);
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Service
metadata: {{name: echo}}
spec:
  ports: [{{name: grpc, port: 50051, targetPort: {grpc_port}, appProtocol: kubernetes.io/h2c}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: echo-manual
  labels: {{kubernetes.io/service-name: echo, endpointslice.kubernetes.io/managed-by: e2e}}
addressType: IPv4
ports: [{{name: grpc, port: {grpc_port}, protocol: TCP}}]
endpoints: [{{addresses: ["{node_ip}"], conditions: {{ready: true}}}}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: GRPCRoute
metadata: {{name: echo}}
spec:
  parentRefs: [{{name: gw, sectionName: http}}]
  hostnames: [grpc.example]
  rules:
  - matches: [{{method: {{service: echo.Echo, method: Say}}}}]
    filters:
    - type: ResponseHeaderModifier
      responseHeaderModifier: {{add: [{{name: x-route, value: echo}}]}}
    backendRefs: [{{name: echo, port: 50051}}]
"#
        ),
    );
    let call = |method: &str| {
        grpc_call(
            http,
            "grpc.example",
            &format!("/echo.Echo/{method}"),
            b"hello",
        )
    };
    let (status, route, body, grpc_status) =
        c.wait_for("the GRPCRoute to serve", Duration::from_secs(30), || {
            let r = call("Say");
            (r.0 == 200).then_some(r)
        });
    assert_eq!(route, "echo", "the response header filter ran");
    assert_eq!(body, b"echo:/echo.Echo/Say:hello".to_vec());
    assert_eq!(grpc_status, "0", "the backend's trailers came through");
    assert_eq!(status, 200);
    assert_eq!(call("Other").0, 404, "another method is not this route's");
    let accepted = c.ok(&[
        "get",
        "grpcroute",
        "echo",
        "-o",
        "jsonpath={.status.parents[0].conditions[?(@.type==\"Accepted\")].status}",
    ]);
    assert_eq!(accepted.trim(), "True");
}

/// A gRPC server speaking h2c on `ip`: every unary call is answered with
/// one message `echo:<path>:<request message>` and `grpc-status: 0` in
/// the trailers. Returns its port.
fn grpc_echo_server(ip: &str) -> u16 {
    use http_body_util::BodyExt;
    let listener = std::net::TcpListener::bind((ip, 0)).unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    std::thread::spawn(move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async move {
            let listener = tokio::net::TcpListener::from_std(listener).unwrap();
            loop {
                let Ok((tcp, _)) = listener.accept().await else {
                    continue;
                };
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(
                        |req: hyper::Request<hyper::body::Incoming>| async move {
                            let path = req.uri().path().to_string();
                            let grpc = req
                                .headers()
                                .get("content-type")
                                .and_then(|v| v.to_str().ok())
                                == Some("application/grpc");
                            let body = req
                                .into_body()
                                .collect()
                                .await
                                .map(|b| b.to_bytes())
                                .unwrap_or_default();
                            let msg = body.get(5..).unwrap_or_default();
                            let mut out = format!("echo:{path}:").into_bytes();
                            out.extend_from_slice(msg);
                            let mut framed = vec![0u8];
                            framed.extend_from_slice(&(out.len() as u32).to_be_bytes());
                            framed.extend_from_slice(&out);
                            let mut trailers = hyper::HeaderMap::new();
                            trailers.insert(
                                "grpc-status",
                                if grpc { "0" } else { "3" }.parse().unwrap(),
                            );
                            let frames = vec![
                                Ok::<_, std::convert::Infallible>(hyper::body::Frame::data(
                                    bytes::Bytes::from(framed),
                                )),
                                Ok(hyper::body::Frame::trailers(trailers)),
                            ];
                            let body =
                                http_body_util::StreamBody::new(futures::stream::iter(frames));
                            let resp = hyper::Response::builder()
                                .header("content-type", "application/grpc")
                                .body(body)
                                .unwrap();
                            Ok::<_, std::convert::Infallible>(resp)
                        },
                    );
                    let _ = hyper::server::conn::http2::Builder::new(
                        hyper_util::rt::TokioExecutor::new(),
                    )
                    .serve_connection(hyper_util::rt::TokioIo::new(tcp), svc)
                    .await;
                });
            }
        });
    });
    port
}

/// One unary gRPC call over h2c to the proxy on `port`: (HTTP status,
/// `x-route` header, the reply message, `grpc-status` trailer).
fn grpc_call(port: u16, authority: &str, path: &str, msg: &[u8]) -> (u16, String, Vec<u8>, String) {
    use http_body_util::BodyExt;
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async move {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .unwrap();
        let (mut send, conn) = hyper::client::conn::http2::handshake(
            hyper_util::rt::TokioExecutor::new(),
            hyper_util::rt::TokioIo::new(tcp),
        )
        .await
        .unwrap();
        tokio::spawn(conn);
        let mut framed = vec![0u8];
        framed.extend_from_slice(&(msg.len() as u32).to_be_bytes());
        framed.extend_from_slice(msg);
        let req = hyper::Request::post(format!("http://{authority}{path}"))
            .header("content-type", "application/grpc")
            .header("te", "trailers")
            .body(http_body_util::Full::new(bytes::Bytes::from(framed)))
            .unwrap();
        let resp = send.send_request(req).await.unwrap();
        let status = resp.status().as_u16();
        let route = resp
            .headers()
            .get("x-route")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let collected = resp.into_body().collect().await.unwrap();
        let grpc_status = collected
            .trailers()
            .and_then(|t| t.get("grpc-status"))
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_string();
        let bytes = collected.to_bytes();
        (
            status,
            route,
            bytes.get(5..).unwrap_or_default().to_vec(),
            grpc_status,
        )
    })
}
