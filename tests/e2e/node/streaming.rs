//! Streaming through the API server: port-forward, exec, attach, cp, run -it, debug.

use super::*;

/// A running `kubectl port-forward`; killed on drop.
struct PortForward {
    child: std::process::Child,
    port: u16,
    stderr: std::sync::Arc<std::sync::Mutex<String>>,
}

impl PortForward {
    /// Starts `kubectl port-forward pod/<pod> <free>:<remote>` and waits
    /// for it to listen.
    fn start(c: &Cluster, pod: &str, remote: u16, env: &[(&str, &str)]) -> PortForward {
        use std::io::BufRead;
        let port = free_port();
        let mut cmd = Command::new("kubectl");
        cmd.args([
            "port-forward",
            "-v=4",
            "--address",
            "127.0.0.1",
            &format!("pod/{pod}"),
            &format!("{port}:{remote}"),
        ])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped());
        for (k, v) in env {
            cmd.env(k, v);
        }
        let mut child = cmd.spawn().expect("kubectl must be installed and on PATH");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
        let err_pipe = child.stderr.take().unwrap();
        let sink = stderr.clone();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(err_pipe)
                .lines()
                .map_while(Result::ok)
            {
                let mut s = sink.lock().unwrap();
                s.push_str(&line);
                s.push('\n');
            }
        });
        let (tx, rx) = std::sync::mpsc::channel();
        let out_pipe = child.stdout.take().unwrap();
        std::thread::spawn(move || {
            for line in std::io::BufReader::new(out_pipe)
                .lines()
                .map_while(Result::ok)
            {
                let _ = tx.send(line);
            }
        });
        let deadline = std::time::Instant::now() + Duration::from_secs(30);
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            match rx.recv_timeout(left) {
                Ok(l) if l.starts_with("Forwarding from") => break,
                Ok(_) => {}
                Err(_) => {
                    let _ = child.kill();
                    panic!(
                        "kubectl port-forward did not start listening: {}",
                        stderr.lock().unwrap()
                    );
                }
            }
        }
        PortForward {
            child,
            port,
            stderr,
        }
    }

    fn addr(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    fn stderr(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    /// Waits up to `d` for kubectl to exit by itself.
    fn exits_within(&mut self, d: Duration) -> Option<std::process::ExitStatus> {
        let deadline = std::time::Instant::now() + d;
        while std::time::Instant::now() < deadline {
            if let Ok(Some(st)) = self.child.try_wait() {
                return Some(st);
            }
            std::thread::sleep(Duration::from_millis(100));
        }
        None
    }
}

impl Drop for PortForward {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn port_forward_reaches_a_pod_port() {
    let host = Host::started();
    let c = host.cluster();
    let page = "hello through port-forward";
    run_web(c, page);

    // kubectl 1.31+ tunnels SPDY in a WebSocket by default; with
    // KUBECTL_PORT_FORWARD_WEBSOCKETS=false it speaks plain SPDY/3.1.
    for (mode, env) in [
        ("spdy", &[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..]),
        ("websocket", &[][..]),
    ] {
        let pf = PortForward::start(c, "web", 8080, env);
        for i in 0..2 {
            let body = http_get(&pf.addr()).unwrap_or_default();
            assert!(
                body.starts_with("HTTP/1.") && body.contains(page),
                "request {i} over {mode}: {body:?}\n{}",
                pf.stderr()
            );
        }
        assert!(
            !pf.stderr().contains("fallback"),
            "{mode}: kubectl fell back to another protocol: {}",
            pf.stderr()
        );
    }

    // Several connections at once over one forward.
    let pf = PortForward::start(c, "web", 8080, &[]);
    let handles: Vec<_> = (0..4)
        .map(|_| {
            let a = pf.addr();
            std::thread::spawn(move || http_get(&a).unwrap_or_default())
        })
        .collect();
    for h in handles {
        assert!(h.join().unwrap().contains(page));
    }
    drop(pf);

    // A port nothing listens on: kubectl reports the kubelet's error and
    // gives up; the server keeps serving.
    for env in [&[("KUBECTL_PORT_FORWARD_WEBSOCKETS", "false")][..], &[][..]] {
        let mut pf = PortForward::start(c, "web", 9999, env);
        let body = http_get(&pf.addr()).unwrap_or_default();
        assert!(!body.contains(page), "{body}");
        let exited = pf.exits_within(Duration::from_secs(20));
        let err = pf.stderr();
        assert!(
            err.contains("error forwarding port 9999 to pod web_default"),
            "kubectl shows the error: {err}"
        );
        assert!(
            exited.is_some(),
            "kubectl gives up on a lost connection: {err}"
        );
    }
    assert_eq!(pod(c, "web")["status"]["phase"], "Running");
    let pf = PortForward::start(c, "web", 8080, &[]);
    assert!(http_get(&pf.addr()).unwrap_or_default().contains(page));
}

fn v4_port_forward(c: &Cluster, query: &str) -> serde_json::Value {
    let out = Command::new("python3")
        .arg("-c")
        .arg(V4_CLIENT)
        .arg(&c.kubeconfig)
        .arg(format!(
            "/api/v1/namespaces/default/pods/web/portforward?{query}"
        ))
        .arg("v4.channel.k8s.io")
        .output()
        .expect("python3 must be installed");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).expect("the client prints JSON")
}

#[test]
fn port_forward_over_v4_channel_websocket() {
    let host = Host::started();
    let c = host.cluster();
    let page = "hello over v4 channels";
    run_web(c, page);

    let r = v4_port_forward(c, "ports=8080");
    assert!(r["status"].as_str().unwrap().contains("101"), "{r}");
    assert_eq!(r["headers"]["sec-websocket-protocol"], "v4.channel.k8s.io");
    // Each channel first names its port (little-endian 8080 = 0x1f90).
    assert_eq!(
        r["messages"],
        serde_json::json!([[0, [0x90, 0x1f]], [1, [0x90, 0x1f]]])
    );
    let data = r["data"].as_str().unwrap_or_default();
    assert!(data.starts_with("HTTP/1.") && data.contains(page), "{r}");
    assert_eq!(r["error"], "");
    assert_eq!(
        r["close"], 1000,
        "a normal closure once the port is done: {r}"
    );

    let r = v4_port_forward(c, "ports=9999");
    assert!(
        r["error"]
            .as_str()
            .unwrap_or_default()
            .contains("error forwarding port 9999 to pod web_default"),
        "{r}"
    );
    let r = v4_port_forward(c, "");
    assert!(!r["status"].as_str().unwrap().contains("101"), "{r}");
    assert!(
        r["body"].as_str().unwrap_or_default().contains("port"),
        "a missing port is refused: {r}"
    );
}

#[test]
fn exec_with_a_terminal() {
    let host = Host::started();
    let c = host.cluster();
    run_web(c, "hello");
    // kubectl -t needs a terminal on its stdin: script(1) gives it one, of
    // a known size, which kubectl sends as the first resize.
    let run = |inner: &str, typed: &str| -> (Option<i32>, String) {
        let kubectl = format!("stty cols 100 rows 30; exec kubectl exec -i -t web -- {inner}");
        let mut child = Command::new("script")
            .args(["-q", "-e", "-c", &kubectl, "/dev/null"])
            .env("KUBECONFIG", &c.kubeconfig)
            .env("HOME", c.dir.path())
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("script(1) from util-linux must be installed");
        // Keep stdin open (EOF would end the session) until it is done.
        let mut stdin = child.stdin.take();
        if !typed.is_empty() {
            std::thread::sleep(Duration::from_secs(2));
            if let Some(si) = stdin.as_mut() {
                si.write_all(typed.as_bytes()).unwrap();
            }
        }
        let out = common::wait_with_timeout(child, Duration::from_secs(60));
        drop(stdin);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    // kubectl sends the size right after connecting, concurrently with
    // the command's start (as upstream): give it a moment to land.
    let (code, out) = run("sh -c 'tty; sleep 1; stty size; echo to-stderr >&2'", "");
    assert_eq!(code, Some(0), "{out}");
    assert!(
        out.contains("/dev/pts/"),
        "the command has a terminal: {out:?}"
    );
    assert!(out.contains("30 100"), "kubectl's terminal size: {out:?}");
    assert!(
        out.contains("to-stderr"),
        "stderr comes on the terminal: {out:?}"
    );
    // The terminal is the controlling one (job control works: a session
    // leader with a tty) and exit codes still come through.
    let (code, out) = run("sh -c 'ps -o pid,tty,comm; exit 7'", "");
    assert_eq!(code, Some(7), "{out}");
    assert!(
        out.contains("136,"),
        "ps sees a pty as sh's terminal: {out}"
    );
    // An interactive shell: what is typed runs.
    let (code, out) = run("sh", "echo typed-$((40+2))\rexit 3\r");
    assert_eq!(code, Some(3), "{out}");
    assert!(out.contains("typed-42"), "{out:?}");

    // A client that goes away hangs up the terminal: the command gets
    // SIGHUP instead of running on with nobody attached.
    let kubectl = "exec kubectl exec -i -t web -- sh -c 'echo $$ > /tmp/held; exec sleep 1000'";
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", kubectl, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    let held = |c: &Cluster| {
        let out = c.kubectl(&[
            "exec",
            "web",
            "--",
            "sh",
            "-c",
            "test -s /tmp/held && kill -0 $(cat /tmp/held) && echo alive",
        ]);
        String::from_utf8_lossy(&out.stdout).contains("alive")
    };
    c.wait_for("the held command to run", Duration::from_secs(30), || {
        held(c).then_some(())
    });
    let _ = child.kill();
    let _ = child.wait();
    c.wait_for(
        "the command to end with its client",
        Duration::from_secs(30),
        || (!held(c)).then_some(()),
    );
}

/// A pod's phase once it has finished, and its logs.
/// kubectl before 1.30 (and 1.30+ with `KUBECTL_REMOTE_COMMAND_WEBSOCKETS=false`,
/// and Go tools on client-go's SPDY executor) run exec, attach and cp over
/// SPDY/3.1 streams rather than WebSockets.
#[test]
fn exec_attach_and_cp_over_spdy_for_older_clients() {
    let host = Host::started();
    let c = host.cluster();
    run_web(c, "hello");
    let k129 = common::versioned_kubectl("1.29");
    let old = |args: &[&str], stdin: Option<&str>| c.kubectl_bin(&k129, args, &[], stdin);
    // The transport really is SPDY: kubectl 1.29 knows nothing else.
    let out = old(&["-v=8", "exec", "web", "--", "cat", "/etc/hostname"], None);
    let log = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{log}");
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "web");
    assert!(
        log.contains("Upgrade: SPDY/3.1") && log.contains("101 Switching Protocols"),
        "kubectl 1.29 upgraded to SPDY: {log}"
    );
    // stdin in, stdout and stderr apart, the exit code out.
    let out = old(
        &[
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "cat; echo oops >&2; exit 5",
        ],
        Some("through spdy stdin\n"),
    );
    assert_eq!(out.status.code(), Some(5), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "through spdy stdin\n");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("oops") && err.contains("command terminated with exit code 5"),
        "{err}"
    );
    // A command that reads and writes a lot at once: 8 MiB through `cat`,
    // in and back out over the same connection, on both transports. The
    // command starts reading late, so the client's input piles up first.
    let big: String = (0..8 * 1024 * 1024 / 64)
        .map(|i| format!("{i:063}\n"))
        .collect();
    let late_cat = ["exec", "-i", "web", "--", "sh", "-c", "sleep 2; cat"];
    for (what, out) in [
        ("SPDY", old(&late_cat, Some(&big))),
        ("WebSocket", c.kubectl_env(&late_cat, &[], Some(&big))),
    ] {
        assert!(out.status.success(), "{what}: {out:?}");
        assert!(
            out.stdout == big.as_bytes(),
            "{what}: 8 MiB through cat came back as {} bytes",
            out.stdout.len()
        );
    }
    // kubectl 1.33 told to use SPDY offers v5 first.
    let out = c.kubectl_env(
        &[
            "exec",
            "-i",
            "web",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; exit 4",
        ],
        &[("KUBECTL_REMOTE_COMMAND_WEBSOCKETS", "false")],
        Some("v5\n"),
    );
    assert_eq!(out.status.code(), Some(4), "{out:?}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "got-v5\n");
    // cp both ways is tar over exec.
    let local = c.dir.path().join("spdy-up.txt");
    std::fs::write(&local, "copied over spdy\n").unwrap();
    let (src, back) = (
        local.display().to_string(),
        c.dir.path().join("spdy-back.txt"),
    );
    let out = old(&["cp", &src, "web:/tmp/up.txt"], None);
    assert!(out.status.success(), "{out:?}");
    let out = old(
        &["cp", "web:/tmp/up.txt", &back.display().to_string()],
        None,
    );
    assert!(out.status.success(), "{out:?}");
    assert_eq!(
        std::fs::read_to_string(&back).unwrap(),
        "copied over spdy\n"
    );
    // A terminal: kubectl's size arrives on the resize stream.
    let cmd = format!(
        "stty cols 77 rows 22; exec {} exec -i -t web -- sh -c 'tty; sleep 1; stty size; exit 6'",
        k129.display()
    );
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", &cmd, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    // Keep the terminal's input open until the command is done.
    let stdin = child.stdin.take();
    let out = common::wait_with_timeout(child, Duration::from_secs(60));
    drop(stdin);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(6), "{text}");
    assert!(
        text.contains("/dev/pts/") && text.contains("22 77"),
        "a terminal of kubectl's size: {text:?}"
    );
    // attach: `kubectl run -i` feeds stdin and reads output until the end.
    let out = old(
        &[
            "run",
            "-i",
            "reader",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; cat; echo eof-seen",
        ],
        Some("hello\nmore\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("got-hello") && stdout.contains("more\neof-seen"),
        "kubectl 1.29 run -i: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// `kubectl debug node/<node>`: a pod in the host's network, PID and IPC
/// namespaces (hence the host's hostname) with the host's root at /host.
#[test]
fn kubectl_debug_node_runs_a_pod_in_the_hosts_namespaces() {
    let host = Host::started();
    let c = host.cluster();
    let marker = host.data.path().join("marker");
    std::fs::write(&marker, "seen-from-the-node-debugger\n").unwrap();
    let host_name = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    let host_name = host_name.trim();
    let script = format!(
        "cat /host{}; echo host-is-$(hostname); echo etc-hostname-$(cat /etc/hostname); ls /proc/1/ns >/dev/null && echo pid1-$(cat /proc/1/comm); exit 0\n",
        marker.display()
    );
    let out = c.kubectl_env(
        &[
            "debug",
            "node/e2e-node",
            "-i",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--profile=general",
        ],
        &[],
        Some(&script),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stdout.contains("seen-from-the-node-debugger"),
        "the host's root at /host: {stdout} / {stderr}"
    );
    assert!(
        stdout.contains(&format!("host-is-{host_name}")),
        "a hostNetwork pod has the node's hostname: {stdout} / {stderr}"
    );
    let host_init = std::fs::read_to_string("/proc/1/comm").unwrap();
    assert!(
        stdout.contains(&format!("pid1-{}", host_init.trim())),
        "the host's PID namespace: {stdout} / {stderr}"
    );
    assert!(
        stdout.contains(&format!("etc-hostname-{host_name}")),
        "/etc/hostname of a hostNetwork pod is the node's: {stdout} / {stderr}"
    );

    // A pod name longer than a hostname may be: cut to 63 characters
    // without a trailing dash, as upstream does.
    let long = format!("{}-{}", "l".repeat(62), "tail");
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {long}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#
        ),
    );
    c.wait_for("the long-named pod to run", Duration::from_secs(60), || {
        (pod(c, &long)["status"]["phase"] == "Running").then_some(())
    });
    let short = "l".repeat(62);
    assert_eq!(c.ok(&["exec", &long, "--", "hostname"]).trim(), short);
    assert_eq!(
        c.ok(&["exec", &long, "--", "cat", "/etc/hostname"]).trim(),
        short
    );
}

#[test]
fn kubectl_run_attaches_to_stdin_and_a_terminal() {
    let host = Host::started();
    let c = host.cluster();
    // -i without a terminal: stdin reaches the container, its output comes
    // back, and stdinOnce closes stdin when kubectl is done.
    let out = c.kubectl_env(
        &[
            "run",
            "-i",
            "reader",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--restart=Never",
            "--",
            "sh",
            "-c",
            "read x; echo got-$x; cat; echo eof-seen",
        ],
        &[],
        Some("hello\nmore\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success() && stdout.contains("got-hello") && stdout.contains("more\neof-seen"),
        "kubectl run -i: {stdout} / {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let p = pod(c, "reader");
    assert_eq!(p["spec"]["containers"][0]["stdin"], true);
    assert_eq!(p["status"]["phase"], "Succeeded", "{p}");

    // -it --rm under a terminal (script(1)): an interactive shell, then the
    // pod is deleted.
    let cmd = "stty cols 90 rows 20; exec kubectl run -it --rm tty --image=busybox:latest --image-pull-policy=Never --restart=Never -- sh";
    let mut child = Command::new("script")
        .args(["-q", "-e", "-c", cmd, "/dev/null"])
        .env("KUBECONFIG", &c.kubeconfig)
        .env("HOME", c.dir.path())
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("script(1) from util-linux must be installed");
    let mut stdin = child.stdin.take().unwrap();
    // Wait for the pod to run and kubectl to attach before typing.
    c.wait_for("the tty pod to run", Duration::from_secs(60), || {
        let out = c.kubectl(&["get", "pod", "tty", "-o", "json"]);
        let p: serde_json::Value = serde_json::from_slice(&out.stdout).ok()?;
        (p["status"]["phase"] == "Running").then_some(())
    });
    std::thread::sleep(Duration::from_secs(2));
    stdin
        .write_all(b"echo hi-$((40+2)) $(tty); stty size; exit\n")
        .unwrap();
    let out = common::wait_with_timeout(child, Duration::from_secs(60));
    drop(stdin);
    let text =
        String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("hi-42 /dev/pts/0"),
        "an interactive shell on a terminal: {text}"
    );
    assert!(
        text.contains("20 90"),
        "the terminal has kubectl's size: {text}"
    );
    c.wait_for("--rm to delete the pod", Duration::from_secs(30), || {
        (!c.kubectl(&["get", "pod", "tty"]).status.success()).then_some(())
    });
}

#[test]
fn kubectl_debug_runs_an_ephemeral_container_in_the_pod() {
    let host = Host::started();
    let c = host.cluster();
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: target
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("target to run", Duration::from_secs(60), || {
        (pod(c, "target")["status"]["phase"] == "Running").then_some(())
    });
    // A debug container in the app's process namespace sees its processes.
    c.ok(&[
        "debug",
        "target",
        "--image=busybox:latest",
        "--image-pull-policy=Never",
        "--target=app",
        "--container=dbg",
        "--",
        "sh",
        "-c",
        "ps; sleep 3600",
    ]);
    let p = c.wait_for("dbg to run", Duration::from_secs(60), || {
        let p = pod(c, "target");
        let st = p["status"]["ephemeralContainerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "dbg")?
            .clone();
        st["state"]["running"].is_object().then_some(p)
    });
    assert_eq!(
        p["spec"]["ephemeralContainers"][0]["targetContainerName"],
        "app"
    );
    let ps = c.wait_for("dbg's ps output", Duration::from_secs(20), || {
        let out = c.ok(&["logs", "target", "-c", "dbg"]);
        out.contains("sleep 3600").then_some(out)
    });
    assert!(
        ps.lines()
            .any(|l| l.split_whitespace().next() == Some("1") && l.contains("sleep 3600")),
        "the app's process is PID 1 of the shared namespace: {ps}"
    );
    assert_eq!(
        c.ok(&["exec", "target", "-c", "dbg", "--", "echo", "inside"])
            .trim(),
        "inside"
    );
    // Interactive, as `kubectl debug -it` is used: kubectl attaches.
    let out = c.kubectl_env(
        &[
            "debug",
            "-i",
            "target",
            "--image=busybox:latest",
            "--image-pull-policy=Never",
            "--container=dbg2",
            "--",
            "sh",
        ],
        &[],
        Some("echo hello-from-debug; exit 0\n"),
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("hello-from-debug"),
        "stdout {stdout:?}, stderr {:?}",
        String::from_utf8_lossy(&out.stderr)
    );
    // The app container was never touched; the debug containers are not
    // restarted once they end.
    let p = c.wait_for("dbg2 to end", Duration::from_secs(30), || {
        let p = pod(c, "target");
        let st = p["status"]["ephemeralContainerStatuses"]
            .as_array()?
            .iter()
            .find(|s| s["name"] == "dbg2")?
            .clone();
        st["state"]["terminated"].is_object().then_some(p)
    });
    assert_eq!(
        p["status"]["containerStatuses"][0]["restartCount"], 0,
        "{p}"
    );
    assert_eq!(p["status"]["phase"], "Running");

    // A new image restarts the container (the one change a pod's
    // containers allow).
    c.ok(&["set", "image", "pod/target", "app=busybox"]);
    c.wait_for(
        "app restarted on its new image",
        Duration::from_secs(60),
        || {
            let p = pod(c, "target");
            let st = &p["status"]["containerStatuses"][0];
            (st["restartCount"] == 1
                && st["image"] == "busybox"
                && st["state"]["running"].is_object())
            .then_some(())
        },
    );

    // Whatever the restart policy: a Never pod restarts its container on a
    // new image rather than failing.
    c.create(
        Some("default"),
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: never
spec:
  restartPolicy: Never
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: busybox:latest
    imagePullPolicy: Never
    command: ["sleep", "3600"]
"#,
    );
    c.wait_for("never to run", Duration::from_secs(60), || {
        (pod(c, "never")["status"]["phase"] == "Running").then_some(())
    });
    c.ok(&["set", "image", "pod/never", "app=busybox"]);
    c.wait_for(
        "never restarted on its new image",
        Duration::from_secs(60),
        || {
            let p = pod(c, "never");
            let st = &p["status"]["containerStatuses"][0];
            (p["status"]["phase"] == "Running"
                && st["restartCount"] == 1
                && st["state"]["running"].is_object())
            .then_some(())
        },
    );

    // The pod's spec is otherwise immutable, as upstream's.
    let err = c.fails(&[
        "patch",
        "pod",
        "target",
        "-p",
        r#"{"spec":{"containers":[{"name":"app","command":["true"]}]}}"#,
    ]);
    assert!(
        err.contains("pod updates may not change fields other than"),
        "{err}"
    );
    // Ephemeral containers can be added, never removed or changed.
    let err = c.fails(&[
        "patch",
        "pod",
        "target",
        "--subresource=ephemeralcontainers",
        "--type=json",
        "-p",
        r#"[{"op":"remove","path":"/spec/ephemeralContainers/0"}]"#,
    ]);
    assert!(
        err.contains("existing ephemeral containers \"dbg\" may not be removed"),
        "{err}"
    );
    c.ok(&["delete", "pod", "target", "--wait=true", "--timeout=60s"]);
}
