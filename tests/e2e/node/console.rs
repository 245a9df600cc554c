//! The web console in a real browser: Debian's headless Chromium driven
//! through chromedriver (WebDriver), against a node with real containers.
//! Signs in with the printed one-time link, watches a Deployment's pods go
//! Ready live as it scales, reads a pod's logs as new lines arrive, runs a
//! command in the terminal, edits a ConfigMap (the change seen through
//! kubectl), signs in as a user bound to `view` (no edit buttons; a forced
//! edit fails with the API's 403), and with a kubeconfig; checks labels
//! and keyboard navigation. Screenshots of the main pages are saved under
//! the test target's tmp dir (the path is printed).

use std::time::Instant;

use fantoccini::{Client, ClientBuilder, Locator, key::Key};

use super::*;

/// The browser's own network namespace, joined to the host by a veth.
/// Chrome drops every connection when the host's interfaces change (its
/// network-change notifier: ERR_NETWORK_CHANGED), and the node adds an
/// interface for every pod it starts; in a namespace of its own the
/// browser sees none of that. Removed on drop.
struct BrowserNet {
    name: String,
    /// The host's end, as the browser reaches the API server.
    host_ip: String,
    /// The browser's end, where chromedriver listens.
    ns_ip: String,
}

impl BrowserNet {
    fn new() -> BrowserNet {
        let pid = std::process::id();
        let name = format!("r8scon{pid}");
        let third = pid % 250;
        let net = BrowserNet {
            host_ip: format!("10.203.{third}.1"),
            ns_ip: format!("10.203.{third}.2"),
            name,
        };
        let host_if = format!("r8sch{}", pid % 100_000);
        let ns_if = format!("r8scn{}", pid % 100_000);
        let sh = |args: &str| {
            let out = Command::new("sh").arg("-c").arg(args).output().expect("sh");
            assert!(
                out.status.success(),
                "{args}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
        };
        sh(&format!("ip netns add {}", net.name));
        sh(&format!(
            "ip link add {host_if} type veth peer name {ns_if} netns {n} && \
             ip addr add {h}/30 dev {host_if} && ip link set {host_if} up && \
             ip -n {n} addr add {b}/30 dev {ns_if} && ip -n {n} link set {ns_if} up && ip -n {n} link set lo up",
            n = net.name,
            h = net.host_ip,
            b = net.ns_ip
        ));
        net
    }
}

impl Drop for BrowserNet {
    fn drop(&mut self) {
        // Deleting the namespace deletes its end of the veth, and so both.
        let _ = Command::new("ip")
            .args(["netns", "del", &self.name])
            .status();
    }
}

/// chromedriver and its browser session; both end on drop.
struct Browser {
    driver: std::process::Child,
    client: Option<Client>,
    shots: std::path::PathBuf,
    _profile: tempfile::TempDir,
    net: BrowserNet,
}

impl Browser {
    async fn start() -> Browser {
        for bin in ["chromium", "chromedriver", "ip"] {
            assert!(
                Command::new("which")
                    .arg(bin)
                    .output()
                    .is_ok_and(|o| o.status.success()),
                "the console's browser tests need {bin} (Debian packages chromium, chromium-driver, iproute2)"
            );
        }
        let net = BrowserNet::new();
        let port = free_port();
        let driver = Command::new("ip")
            .args(["netns", "exec", &net.name, "chromedriver"])
            .arg(format!("--port={port}"))
            .arg(format!("--allowed-ips={}", net.host_ip))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start chromedriver");
        let profile = tempfile::tempdir().unwrap();
        let caps: serde_json::Map<String, serde_json::Value> = serde_json::from_value(serde_json::json!({
            "acceptInsecureCerts": true,
            "goog:chromeOptions": {
                "binary": "/usr/bin/chromium",
                "args": [
                    "--headless=new", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
                    "--ignore-certificate-errors", "--window-size=1280,1000",
                    format!("--user-data-dir={}", profile.path().display()),
                ],
            },
        }))
        .unwrap();
        let url = format!("http://{}:{port}", net.ns_ip);
        let deadline = Instant::now() + Duration::from_secs(30);
        let client = loop {
            match ClientBuilder::new(hyper_util::client::legacy::connect::HttpConnector::new())
                .capabilities(caps.clone())
                .connect(&url)
                .await
            {
                Ok(c) => break c,
                Err(e) => {
                    assert!(
                        Instant::now() < deadline,
                        "chromedriver did not start a session: {e}"
                    );
                    tokio::time::sleep(Duration::from_millis(250)).await;
                }
            }
        };
        let shots =
            std::path::PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots");
        std::fs::create_dir_all(&shots).unwrap();
        Browser {
            driver,
            client: Some(client),
            shots,
            _profile: profile,
            net,
        }
    }

    /// A URL of the API server as the browser reaches it.
    fn as_seen_by_browser(&self, url: &str) -> String {
        url.replacen("127.0.0.1", &self.net.host_ip, 1)
    }

    fn c(&self) -> &Client {
        self.client.as_ref().unwrap()
    }

    async fn shot(&self, name: &str) {
        let png = self.c().screenshot().await.expect("screenshot");
        let path = self.shots.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        eprintln!("console screenshot: {}", path.display());
    }

    /// Polls `js` (a function body returning a value) until it returns
    /// something truthy; returns it.
    async fn until(&self, what: &str, timeout: Duration, js: &str) -> serde_json::Value {
        let deadline = Instant::now() + timeout;
        loop {
            let v = self
                .c()
                .execute(js, vec![])
                .await
                .unwrap_or(serde_json::Value::Null);
            let truthy = match &v {
                serde_json::Value::Null => false,
                serde_json::Value::Bool(b) => *b,
                serde_json::Value::String(s) => !s.is_empty(),
                _ => true,
            };
            if truthy {
                return v;
            }
            if Instant::now() > deadline {
                let body = self.text("body").await;
                let errors = self
                    .c()
                    .execute("return window.__errors", vec![])
                    .await
                    .ok();
                let url = self
                    .c()
                    .current_url()
                    .await
                    .map(|u| u.to_string())
                    .unwrap_or_default();
                panic!(
                    "timed out after {timeout:?} waiting for {what} at {url}; script errors: {errors:?}; the page says:\n{body}"
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    async fn text(&self, css: &str) -> String {
        match self.c().find(Locator::Css(css)).await {
            Ok(e) => e.text().await.unwrap_or_default(),
            Err(_) => String::new(),
        }
    }

    async fn click(&self, css: &str) {
        self.c()
            .find(Locator::Css(css))
            .await
            .unwrap_or_else(|e| panic!("{css}: {e}"))
            .click()
            .await
            .unwrap();
    }

    async fn go(&self, base: &str, hash: &str) {
        self.c().goto(&format!("{base}/ui/{hash}")).await.unwrap();
    }

    /// The alert region's text, once it has some.
    async fn alert(&self) -> String {
        self.until(
            "an alert",
            Duration::from_secs(15),
            "return document.getElementById('alert').innerText",
        )
        .await
        .as_str()
        .unwrap_or("")
        .to_string()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if let Some(c) = self.client.take() {
            // Best effort: the driver dies next anyway.
            let _ = std::thread::spawn(move || {
                tokio::runtime::Runtime::new().unwrap().block_on(async {
                    let _ = c.close().await;
                })
            })
            .join();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

const APP: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      terminationGracePeriodSeconds: 1
      containers:
      - name: app
        image: busybox:latest
        imagePullPolicy: Never
        command: ["sh", "-c", "i=0; while true; do echo tick-$i; i=$((i+1)); sleep 1; done"]
        readinessProbe:
          exec: {command: ["true"]}
          periodSeconds: 1
"#;

#[test]
fn the_web_console_in_a_browser() {
    let host = Host::started();
    let c = host.cluster();
    c.create(Some("default"), APP);
    c.create_cm(Some("default"), "settings", &[("greeting", "hello")]);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let b = Browser::start().await;
        let base = b.as_seen_by_browser(&c.url);
        let link = b.as_seen_by_browser(&c.console_link);

        // Sign in with the one-time link the server printed.
        assert!(link.starts_with(&format!("{base}/ui/#signin=")), "{link}");
        b.c().goto(&link).await.unwrap();
        b.until("the overview", Duration::from_secs(20),
            "return document.querySelector('h1') && document.querySelector('h1').innerText.startsWith('Cluster overview') && document.getElementById('who').innerText").await;
        let who = b.text("#who").await;
        assert!(who.contains("Signed in as"), "{who}");
        b.until("the node in the overview", Duration::from_secs(20),
            "return document.querySelector('#nodes-table') && document.querySelector('#nodes-table').innerText.includes('e2e-node')").await;
        b.until("web 1/1 in the workloads", Duration::from_secs(60),
            "const r = document.querySelector('#workloads-table tr[data-name=web] .ready-count'); return r && r.innerText === '1/1'").await;
        b.shot("overview").await;

        // Every form control has a label (WebDriver sees what a screen
        // reader would).
        let unlabelled = b.c().execute(
            "return [...document.querySelectorAll('input,select,textarea')].filter(e => !e.labels.length && !e.getAttribute('aria-label')).map(e => e.id || e.outerHTML)",
            vec![]).await.unwrap();
        assert_eq!(unlabelled, serde_json::json!([]), "controls without labels");

        // Keyboard: from the skip link at the top of the page, Tab walks
        // the sections; Enter on "Pods" opens the pod list.
        b.c().execute("document.getElementById('skip').focus()", vec![]).await.unwrap();
        let first = b.c().execute("return document.activeElement.innerText", vec![]).await.unwrap();
        assert_eq!(first, "Skip to content");
        let mut reached = false;
        for _ in 0..12 {
            b.c().active_element().await.unwrap().send_keys(&Key::Tab.to_string()).await.unwrap();
            let t = b.c().execute("return document.activeElement.innerText", vec![]).await.unwrap();
            if t == "Pods" {
                reached = true;
                break;
            }
        }
        assert!(reached, "the Pods link is reachable by Tab");
        b.c().active_element().await.unwrap().send_keys(&Key::Enter.to_string()).await.unwrap();
        b.until("the pod list", Duration::from_secs(15),
            "return location.hash === '#/r/core/pods' && document.querySelector('#resource-table')").await;

        // Scale from the Deployment's page; its pods go Ready live in the
        // pod list, filtered by label, without a reload.
        b.go(&base, "#/r/apps/deployments/default/web").await;
        b.until("the scale control", Duration::from_secs(15), "return document.getElementById('replicas')").await;
        b.c().execute("const n = document.getElementById('replicas'); n.value = '3';", vec![]).await.unwrap();
        b.click("#scale").await;
        b.until("the scale to be accepted", Duration::from_secs(10), "return document.getElementById('alert').innerText.includes('Scaled web to 3')").await;
        b.go(&base, "#/r/core/pods?sel=app%3Dweb").await;
        b.c().execute("window.__sameDocument = true", vec![]).await.unwrap();
        b.until("three web pods Ready in the live list", Duration::from_secs(90),
            "const rows = [...document.querySelectorAll('#resource-table tbody tr')]; return rows.length === 3 && rows.every(r => r.innerText.includes('1/1') && r.innerText.includes('Running'))").await;
        let same = b.c().execute("return window.__sameDocument === true", vec![]).await.unwrap();
        assert_eq!(same, serde_json::json!(true), "the list updated without reloading the page");
        b.shot("pods").await;
        let pods = c.pods("default", "app=web");
        assert_eq!(pods.len(), 3, "kubectl sees the scale too");

        // A pod's logs: new lines arrive while the page is open.
        let pod = pods[0]["metadata"]["name"].as_str().unwrap().to_string();
        b.go(&base, &format!("#/pod/default/{pod}")).await;
        let first = b.until("log lines", Duration::from_secs(30),
            "const m = [...document.getElementById('logs').innerText.matchAll(/tick-(\\d+)/g)]; return m.length ? parseInt(m[m.length-1][1]) + 1 : null").await;
        let first = first.as_i64().unwrap();
        let later = b.until("a newer log line", Duration::from_secs(20), &format!(
            "const m = [...document.getElementById('logs').innerText.matchAll(/tick-(\\d+)/g)]; const n = m.length ? parseInt(m[m.length-1][1]) : -1; return n > {first} ? n : null")).await;
        assert!(later.as_i64().unwrap() > first);
        // Search narrows the lines to those that match.
        b.c().execute(&format!("const s = document.getElementById('log-search'); s.value = 'tick-{first}'; s.dispatchEvent(new Event('input'));"), vec![]).await.unwrap();
        let shown = b.text("#logs").await;
        assert!(shown.lines().all(|l| l.contains(&format!("tick-{first}"))) && !shown.is_empty(), "search shows only matches: {shown}");
        b.shot("pod").await;

        // The terminal: exec with a TTY over the WebSocket protocol.
        b.click("#term-connect").await;
        b.until("the terminal to connect", Duration::from_secs(20), "return document.querySelector('#terminal') && document.body.innerText.includes('Connected to app')").await;
        let term = b.c().find(Locator::Css("#terminal")).await.unwrap();
        term.send_keys("echo console-$((6*7))").await.unwrap();
        term.send_keys(&Key::Enter.to_string()).await.unwrap();
        b.until("the command's output", Duration::from_secs(15),
            "return document.getElementById('terminal').innerText.split('\\n').some(l => l.trim() === 'console-42')").await;
        b.shot("terminal").await;

        // Edit a ConfigMap: review the diff, save, and kubectl sees it.
        b.go(&base, "#/edit/core/configmaps/default/settings").await;
        b.until("the editor", Duration::from_secs(15), "const t = document.getElementById('yaml-editor'); return t && t.value.includes('greeting: hello')").await;
        b.c().execute("const t = document.getElementById('yaml-editor'); t.value = t.value.replace('greeting: hello', 'greeting: bonjour');", vec![]).await.unwrap();
        b.click("#review").await;
        b.until("the diff", Duration::from_secs(15),
            "const d = document.querySelector('pre.diff'); return d && d.innerText.includes('+   greeting: bonjour') && d.innerText.includes('-   greeting: hello')").await;
        b.shot("edit").await;
        b.click("#save").await;
        b.until("the save", Duration::from_secs(15), "return document.getElementById('alert').innerText.includes('Saved ConfigMap settings')").await;
        let got = c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.greeting}"]);
        assert_eq!(got.trim(), "bonjour");

        // The link was for one use only.
        b.c().goto(&link).await.unwrap();
        let a = b.alert().await;
        assert!(a.contains("used already"), "{a}");

        // A user bound to `view`: signs in with a token, sees no edit
        // buttons, and a forced edit gets the API's 403.
        c.ok(&["create", "serviceaccount", "viewer"]);
        c.ok(&["create", "rolebinding", "viewer-view", "--clusterrole=view", "--serviceaccount=default:viewer"]);
        let token = c.ok(&["create", "token", "viewer"]).trim().to_string();
        b.go(&base, "#/signin").await;
        b.until("the sign-in form", Duration::from_secs(10), "return document.getElementById('token')").await;
        b.c().find(Locator::Css("#token")).await.unwrap().send_keys(&token).await.unwrap();
        b.click("#signin-submit").await;
        b.until("the viewer signed in", Duration::from_secs(15),
            "return document.getElementById('who').innerText.includes('system:serviceaccount:default:viewer')").await;
        b.go(&base, "#/r/core/configmaps/default/settings").await;
        b.until("the read-only notice", Duration::from_secs(15), "return document.body.innerText.includes('Read only')").await;
        for button in ["#edit", "#delete"] {
            assert!(b.c().find(Locator::Css(button)).await.is_err(), "a viewer sees no {button} button");
        }
        b.shot("viewer").await;
        b.go(&base, "#/edit/core/configmaps/default/settings").await;
        b.until("the editor", Duration::from_secs(15), "return document.getElementById('yaml-editor') && document.getElementById('yaml-editor').value.includes('bonjour')").await;
        b.click("#save").await;
        let a = b.alert().await;
        assert!(a.contains("403") && a.contains("forbidden") && a.contains("system:serviceaccount:default:viewer"), "{a}");
        assert_eq!(c.ok(&["get", "cm", "settings", "-o", "jsonpath={.data.greeting}"]).trim(), "bonjour");

        // Sign out, then in with the admin kubeconfig's credentials.
        b.click("#signout").await;
        b.until("the sign-in form", Duration::from_secs(10), "return document.getElementById('kubeconfig')").await;
        let kc = std::fs::read_to_string(&c.kubeconfig).unwrap();
        b.c().execute("document.getElementById('kubeconfig').value = arguments[0];", vec![serde_json::json!(kc)]).await.unwrap();
        b.click("#signin-submit").await;
        b.until("the admin signed in", Duration::from_secs(15), "return document.getElementById('who').innerText.includes('Signed in as') && !document.getElementById('who').innerText.includes('viewer')").await;
        // A kubeconfig whose certificate the cluster did not sign is refused.
        b.click("#signout").await;
        b.until("the sign-in form", Duration::from_secs(10), "return document.getElementById('kubeconfig')").await;
        let other = tempfile::tempdir().unwrap();
        let foreign = apiserver::tls::Pki::load_or_create(other.path(), &["127.0.0.1".to_string()]).unwrap();
        let foreign_kc = kc
            .lines()
            .map(|l| {
                use base64::Engine as _;
                let b64 = |s: &str| base64::engine::general_purpose::STANDARD.encode(s);
                if l.trim_start().starts_with("client-certificate-data:") {
                    format!("    client-certificate-data: {}", b64(&foreign.admin_cert_pem))
                } else if l.trim_start().starts_with("client-key-data:") {
                    format!("    client-key-data: {}", b64(&foreign.admin_key_pem))
                } else {
                    l.to_string()
                }
            })
            .collect::<Vec<_>>()
            .join("\n");
        b.c().execute("document.getElementById('kubeconfig').value = arguments[0];", vec![serde_json::json!(foreign_kc)]).await.unwrap();
        b.click("#signin-submit").await;
        let a = b.alert().await;
        assert!(a.contains("not accepted") && a.contains("cluster CA"), "{a}");
    });
}
