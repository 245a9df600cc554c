//! Images pulled from a registry: Debian's docker-registry (distribution
//! 2.8) with htpasswd basic auth, an image pushed into it with skopeo, and
//! pods that pull it through an imagePullSecret.

use super::*;

/// A docker-registry on a free loopback port; stopped on drop.
struct Registry {
    child: std::process::Child,
    addr: String,
    _dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn need(tool: &str, package: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        "{tool} is missing: install Debian's {package} (tools/test.sh does)"
    );
}

impl Registry {
    /// Starts a registry that wants `user`/`password`.
    fn start(user: &str, password: &str) -> Registry {
        need("docker-registry", "docker-registry");
        need("htpasswd", "apache2-utils");
        let dir = tempfile::tempdir().unwrap();
        let hash = Command::new("htpasswd")
            .args(["-Bbn", user, password])
            .output()
            .unwrap();
        assert!(hash.status.success(), "htpasswd failed");
        std::fs::write(dir.path().join("htpasswd"), &hash.stdout).unwrap();
        let addr = format!("127.0.0.1:{}", free_port());
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {data}\nhttp:\n  addr: {addr}\nauth:\n  htpasswd:\n    realm: r8s-test\n    path: {htpasswd}\n",
            data = dir.path().join("data").display(),
            htpasswd = dir.path().join("htpasswd").display(),
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::null())
            .spawn()
            .expect("start docker-registry");
        let reg = Registry {
            child,
            addr,
            _dir: dir,
        };
        reg.wait_listening("docker-registry");
        reg
    }

    /// Waits until `what` accepts connections.
    fn wait_listening(&self, what: &str) {
        let deadline = std::time::Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&self.addr).is_err() {
            assert!(
                std::time::Instant::now() < deadline,
                "{what} did not listen on {}",
                self.addr
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Copies an OCI archive into the registry as `name` with skopeo.
    fn push(&self, archive: &Path, name: &str, creds: &str) {
        need("skopeo", "skopeo");
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false", "--dest-creds", creds])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo copy failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

#[test]
fn pods_pull_images_from_a_registry_with_pull_secrets() {
    let reg = Registry::start("ann", "s3cret");
    // The node's registries.yaml: a mirror for a registry name that does
    // not resolve, spoken to in plain HTTP, with the node's credentials.
    let work = tempfile::tempdir().unwrap();
    let config = work.path().join("registries.yaml");
    std::fs::write(
        &config,
        format!(
            "mirrors:\n  registry.test:\n    endpoint: [\"http://{a}\"]\nconfigs:\n  \"{a}\":\n    auth: {{username: ann, password: s3cret}}\n",
            a = reg.addr
        ),
    )
    .unwrap();
    let mut host = Host::new();
    // The server runs a registry of its own beside the cluster.
    let builtin = format!("127.0.0.1:{}", free_port());
    start_node_with(
        &mut host,
        &[
            "--registries-config",
            config.to_str().unwrap(),
            "--registry",
            &builtin,
        ],
        |_| {},
    );
    let c = host.cluster();
    let tar = common::busybox_tar(work.path());
    reg.push(&tar, "tools/busybox:v1", "ann:s3cret");
    let image = format!("{}/tools/busybox:v1", reg.addr);

    // `r8s image pull` into a store of its own: a line per layer, then
    // the image.
    let out = Command::new(common::r8s_bin())
        .args(["image", "pull", "--creds", "ann:s3cret", "--data-dir"])
        .arg(work.path().join("cli"))
        .arg(&image)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.lines().filter(|l| l.contains(": done (")).count() >= 2,
        "a line per blob: {text}"
    );
    assert!(text.contains(&format!("pulled {image} sha256:")), "{text}");
    // Tag it for the server's registry and push it there; inspect shows
    // the same manifest digest.
    let cli = |args: &[&str]| {
        let out = Command::new(common::r8s_bin())
            .arg("image")
            .args(args)
            .arg("--data-dir")
            .arg(work.path().join("cli"))
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout).into_owned();
        assert!(
            out.status.success(),
            "r8s image {args:?}: {text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        text
    };
    let republished = format!("{builtin}/cli/busybox:v3");
    cli(&["tag", &image, &republished]);
    let pushed = cli(&["push", &republished]);
    let inspected: serde_json::Value = serde_json::from_str(&cli(&["inspect", &image])).unwrap();
    let digest = inspected["digest"].as_str().unwrap().to_string();
    assert_eq!(pushed.trim(), format!("pushed {republished} {digest}"));
    assert!(inspected["config"]["config"].is_object(), "{inspected}");

    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "regcred",
        &format!("--docker-server={}", reg.addr),
        "--docker-username=ann",
        "--docker-password=s3cret",
    ]);
    c.ok(&[
        "create",
        "secret",
        "docker-registry",
        "badcred",
        &format!("--docker-server={}", reg.addr),
        "--docker-username=ann",
        "--docker-password=wrong",
    ]);
    let pod_yaml = |name: &str, secret: &str, policy: &str| {
        format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
spec:
  terminationGracePeriodSeconds: 1
  imagePullSecrets: [{{name: {secret}}}]
  containers:
  - name: app
    image: {image}
    imagePullPolicy: {policy}
    command: ["sh", "-c", "echo pulled-and-running; sleep 3600"]
"#
        )
    };
    c.create(
        Some("default"),
        &pod_yaml("pulled", "regcred", "IfNotPresent"),
    );
    let p = c.wait_for("the pulled pod to run", Duration::from_secs(90), || {
        let p = pod(c, "pulled");
        (p["status"]["phase"] == "Running").then_some(p)
    });
    let cs = &p["status"]["containerStatuses"][0];
    assert!(
        cs["imageID"].as_str().unwrap_or("").contains("@sha256:"),
        "imageID names the pulled digest: {cs}"
    );
    c.wait_for("the pod's output", Duration::from_secs(30), || {
        c.kubectl(&["logs", "pulled"])
            .stdout
            .starts_with(b"pulled-and-running")
            .then_some(())
    });
    let events = pod_events(c, "pulled");
    assert!(
        events
            .iter()
            .any(|(r, m, _)| r == "Pulling" && *m == format!("Pulling image \"{image}\"")),
        "{events:?}"
    );
    let pulled = events
        .iter()
        .find(|(r, _, _)| r == "Pulled")
        .map(|(_, m, _)| m.clone())
        .unwrap_or_default();
    assert!(
        pulled.starts_with(&format!("Successfully pulled image \"{image}\" in "))
            && pulled.contains(" including waiting). Image size: ")
            && pulled.ends_with(" bytes."),
        "{pulled:?}"
    );

    // Wrong credentials, and a policy that pulls although the image is
    // present: ErrImagePull with the registry's answer, then a back-off.
    c.create(Some("default"), &pod_yaml("refused", "badcred", "Always"));
    let w = c.wait_for("ErrImagePull", Duration::from_secs(60), || {
        let p = pod(c, "refused");
        let w = p["status"]["containerStatuses"][0]["state"]["waiting"].clone();
        (w["reason"] == "ErrImagePull").then_some(w)
    });
    assert!(
        w["message"]
            .as_str()
            .unwrap_or("")
            .starts_with(&format!("Failed to pull image \"{image}\": ")),
        "{w}"
    );
    c.wait_for("ImagePullBackOff", Duration::from_secs(30), || {
        let p = pod(c, "refused");
        (p["status"]["containerStatuses"][0]["state"]["waiting"]["reason"] == "ImagePullBackOff")
            .then_some(())
    });
    c.wait_for("a BackOff event", Duration::from_secs(30), || {
        pod_events(c, "refused")
            .iter()
            .any(|(r, m, _)| r == "BackOff" && *m == format!("Back-off pulling image \"{image}\""))
            .then_some(())
    });
    assert_eq!(pod(c, "refused")["status"]["phase"], "Pending");

    // Through the node's mirror: no pull secret, a name only the mirror
    // serves.
    c.ok(&[
        "run",
        "mirrored",
        "--image=registry.test/tools/busybox:v1",
        "--restart=Never",
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_for("the mirrored pod to run", Duration::from_secs(90), || {
        (pod(c, "mirrored")["status"]["phase"] == "Running").then_some(())
    });

    // `r8s registry` on its own answers the distribution API.
    let own_addr = format!("127.0.0.1:{}", free_port());
    let own_dir = tempfile::tempdir().unwrap();
    // Stopped on drop, also when the test fails.
    let own = Registry {
        child: Command::new(common::r8s_bin())
            .args(["registry", "--addr", &own_addr, "--data-dir"])
            .arg(own_dir.path())
            .stdout(std::process::Stdio::null())
            .spawn()
            .unwrap(),
        addr: own_addr.clone(),
        _dir: own_dir,
    };
    own.wait_listening("r8s registry");
    let base = Command::new("curl")
        .args(["-s", "-o", "/dev/null", "-w", "%{http_code}"])
        .arg(format!("http://{}/v2/", own.addr))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&base.stdout), "200");
    drop(own);

    // The server's built-in registry, filled with skopeo; a Deployment
    // runs from it.
    need("skopeo", "skopeo");
    let copy = Command::new("skopeo")
        .args(["copy", "--dest-tls-verify=false"])
        .arg(format!("oci-archive:{}", tar.display()))
        .arg(format!("docker://{builtin}/apps/hello:v1"))
        .output()
        .unwrap();
    assert!(
        copy.status.success(),
        "skopeo into the server's registry: {}",
        String::from_utf8_lossy(&copy.stderr)
    );
    c.ok(&[
        "create",
        "deployment",
        "hello",
        &format!("--image={builtin}/apps/hello:v1"),
        "--",
        "sleep",
        "3600",
    ]);
    c.wait_for("hello to be available", Duration::from_secs(90), || {
        let d = c.get_json(&["deployment", "hello"]);
        (d["status"]["availableReplicas"] == 1).then_some(())
    });
    // An image as a read-only volume (1.33's `image` volume source).
    c.create(
        Some("default"),
        &format!(
            r#"
apiVersion: v1
kind: Pod
metadata:
  name: with-image-volume
spec:
  terminationGracePeriodSeconds: 0
  restartPolicy: Never
  volumes:
  - name: tools
    image: {{reference: "{builtin}/apps/hello:v1", pullPolicy: IfNotPresent}}
  containers:
  - name: app
    image: {image}
    command: ["sh", "-c", "test -x /tools/bin/busybox && echo has-busybox; touch /tools/x 2>/dev/null || echo read-only"]
    volumeMounts: [{{name: tools, mountPath: /tools}}]
"#
        ),
    );
    c.wait_for(
        "the image volume pod to finish",
        Duration::from_secs(60),
        || (pod(c, "with-image-volume")["status"]["phase"] == "Succeeded").then_some(()),
    );
    assert_eq!(
        c.ok(&["logs", "with-image-volume"]),
        "has-busybox\nread-only\n"
    );
    c.ok(&["delete", "deployment", "hello", "--wait=true"]);

    // The first-day flow: a Dockerfile on the registry's busybox, built
    // and pushed by r8s, deployed, then v2 rolled out.
    let site = work.path().join("site");
    std::fs::create_dir_all(&site).unwrap();
    std::fs::write(
        site.join("Dockerfile"),
        "ARG BASE\nFROM ${BASE}\nWORKDIR /www\nCOPY *.html ./\nEXPOSE 8080\nCMD [\"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n",
    )
    .unwrap();
    // Left out of the image by the context's .dockerignore.
    std::fs::write(site.join(".dockerignore"), "secret*.html\n").unwrap();
    std::fs::write(site.join("secret-notes.html"), "not for the image\n").unwrap();
    let build = |version: &str| {
        std::fs::write(site.join("index.html"), format!("hello {version}\n")).unwrap();
        let out = Command::new(common::r8s_bin())
            .args(["image", "build", "--push", "-t"])
            .arg(format!("{builtin}/apps/site:{version}"))
            .arg(format!("--build-arg=BASE={builtin}/apps/hello:v1"))
            .arg("--data-dir")
            .arg(work.path().join("builder"))
            .arg(&site)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "r8s image build: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let served = |what: &str| {
        c.wait_for(what, Duration::from_secs(90), || {
            let pods = c.pods("default", "app=site");
            let ready: Vec<String> = pods
                .iter()
                .filter(|p| {
                    p["metadata"]["deletionTimestamp"].is_null()
                        && p["status"]["phase"] == "Running"
                })
                .filter_map(|p| p["status"]["podIP"].as_str().map(str::to_string))
                .collect();
            let [ip] = ready.as_slice() else { return None };
            http_get(&format!("{ip}:8080"))
        })
    };
    build("v1");
    c.ok(&[
        "create",
        "deployment",
        "site",
        &format!("--image={builtin}/apps/site:v1"),
    ]);
    let page = served("site v1 to serve");
    assert!(page.contains("hello v1"), "{page}");
    build("v2");
    c.ok(&[
        "set",
        "image",
        "deployment/site",
        &format!("site={builtin}/apps/site:v2"),
    ]);
    c.ok(&["rollout", "status", "deployment/site", "--timeout=90s"]);
    c.wait_for("site v2 to serve", Duration::from_secs(90), || {
        served("a site pod").contains("hello v2").then_some(())
    });
    let listed = c.ok(&["exec", "deployment/site", "--", "ls", "/www"]);
    assert_eq!(listed, "index.html\n", ".dockerignore is honoured");
    c.ok(&["delete", "deployment", "site", "--wait=true"]);

    // A multi-stage build: files copied from a named stage into scratch,
    // built up to `--target`.
    std::fs::write(
        site.join("Dockerfile"),
        format!(
            "FROM {builtin}/apps/hello:v1 AS tools\nWORKDIR /site\nCOPY *.html ./\n\
             FROM scratch AS slim\nCOPY --from=tools /bin/busybox /bin/busybox\nCOPY --from=tools /site /www\n\
             CMD [\"/bin/busybox\", \"httpd\", \"-f\", \"-p\", \"8080\", \"-h\", \"/www\"]\n\
             FROM scratch AS never\nCOPY missing /\n"
        ),
    )
    .unwrap();
    let slim = format!("{builtin}/apps/slim:v1");
    let out = Command::new(common::r8s_bin())
        .args([
            "image",
            "build",
            "--push",
            "--target",
            "slim",
            "-t",
            &slim,
            "--data-dir",
        ])
        .arg(work.path().join("builder"))
        .arg(&site)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "multi-stage build: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&["run", "slim", &format!("--image={slim}"), "--restart=Never"]);
    let ip = c.wait_for("slim to run", Duration::from_secs(60), || {
        let p = pod(c, "slim");
        (p["status"]["phase"] == "Running")
            .then(|| p["status"]["podIP"].as_str().map(str::to_string))
            .flatten()
    });
    let page = c.wait_for("slim to serve", Duration::from_secs(30), || {
        http_get(&format!("{ip}:8080"))
    });
    assert!(page.contains("hello v2"), "{page}");
    c.ok(&["delete", "pod", "slim", "--wait=true"]);

    // A RUN step is refused with its line.
    std::fs::write(site.join("Dockerfile"), "FROM scratch\nRUN true\n").unwrap();
    let out = Command::new(common::r8s_bin())
        .args(["image", "build", "-t", "x:1", "--data-dir"])
        .arg(work.path().join("builder"))
        .arg(&site)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("Dockerfile:2: RUN"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    c.ok(&[
        "delete",
        "pod",
        "pulled",
        "refused",
        "mirrored",
        "--wait=true",
        "--timeout=60s",
    ]);
}
