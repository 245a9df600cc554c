//! Pulling from a real registry (Debian's docker-registry, distribution
//! 2.8) filled with skopeo: an image index resolves to this node's
//! platform, and a blob that does not match its digest is refused with
//! nothing stored.

use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use image::{ImageError, ImageStore};
use sha2::{Digest, Sha256};

fn need(tool: &str, package: &str) {
    assert!(
        Command::new("sh")
            .args(["-c", &format!("command -v {tool}")])
            .output()
            .is_ok_and(|o| o.status.success()),
        "{tool} is missing: install Debian's {package} (tools/test.sh does)"
    );
}

/// An anonymous docker-registry on a free loopback port.
struct Registry {
    child: Child,
    addr: String,
    dir: tempfile::TempDir,
}

impl Drop for Registry {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Registry {
    fn start() -> Registry {
        need("docker-registry", "docker-registry");
        let dir = tempfile::tempdir().unwrap();
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let addr = format!("127.0.0.1:{port}");
        let config = format!(
            "version: 0.1\nlog:\n  level: warn\nstorage:\n  filesystem:\n    rootdirectory: {}\nhttp:\n  addr: {addr}\n",
            dir.path().join("data").display()
        );
        std::fs::write(dir.path().join("config.yml"), config).unwrap();
        let child = Command::new("docker-registry")
            .arg("serve")
            .arg(dir.path().join("config.yml"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(&addr).is_err() {
            assert!(Instant::now() < deadline, "docker-registry did not listen");
            std::thread::sleep(Duration::from_millis(100));
        }
        Registry { child, addr, dir }
    }

    fn push(&self, archive: &Path, name: &str) {
        need("skopeo", "skopeo");
        let out = Command::new("skopeo")
            .args(["copy", "--dest-tls-verify=false"])
            .arg(format!("oci-archive:{}", archive.display()))
            .arg(format!("docker://{}/{name}", self.addr))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "skopeo: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// PUTs a manifest document as `repo:tag`.
    fn put_manifest(&self, repo: &str, tag: &str, media_type: &str, body: &[u8]) {
        let out = Command::new("curl")
            .args(["-sf", "-X", "PUT", "-H"])
            .arg(format!("Content-Type: {media_type}"))
            .arg("--data-binary")
            .arg("@-")
            .arg(format!("http://{}/v2/{repo}/manifests/{tag}", self.addr))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .and_then(|mut c| {
                use std::io::Write;
                c.stdin.take().unwrap().write_all(body)?;
                c.wait_with_output()
            })
            .unwrap();
        assert!(out.status.success(), "PUT manifest {repo}:{tag} failed");
    }

    fn get(&self, path: &str) -> Vec<u8> {
        let out = Command::new("curl")
            .args(["-sf", "-H"])
            .arg("Accept: application/vnd.oci.image.manifest.v1+json")
            .arg(format!("http://{}{path}", self.addr))
            .output()
            .unwrap();
        assert!(out.status.success(), "GET {path} failed");
        out.stdout
    }

    /// The file the registry keeps a blob in.
    fn blob_file(&self, digest: &str) -> PathBuf {
        let hex = digest.trim_start_matches("sha256:");
        self.dir
            .path()
            .join("data/docker/registry/v2/blobs/sha256")
            .join(&hex[..2])
            .join(hex)
            .join("data")
    }
}

fn busybox_tar(dir: &Path) -> PathBuf {
    let out = dir.join("busybox.tar");
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
    let res = Command::new("bash")
        .arg(&script)
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        res.status.success(),
        "tools/build-busybox-image.sh needs busybox-static: {}",
        String::from_utf8_lossy(&res.stderr)
    );
    out
}

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

fn rt() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

#[test]
fn an_index_resolves_to_this_platform_and_a_bad_blob_stores_nothing() {
    let reg = Registry::start();
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_tar(work.path());
    reg.push(&tar, "tools/busybox:v1");
    let manifest = reg.get("/v2/tools/busybox/manifests/v1");
    let digest = sha(&manifest);
    // A second manifest (same content, another annotation) to stand for
    // another platform, and an index naming both.
    let mut other: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    other["annotations"] = serde_json::json!({"org.example/variant": "other"});
    let other = serde_json::to_vec(&other).unwrap();
    let oci_manifest = "application/vnd.oci.image.manifest.v1+json";
    reg.put_manifest("tools/busybox", "other", oci_manifest, &other);
    let arch = image::host_arch();
    let foreign = if arch == "s390x" { "riscv64" } else { "s390x" };
    let index = serde_json::json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": [
            {"mediaType": oci_manifest, "digest": sha(&other), "size": other.len(),
             "platform": {"os": "linux", "architecture": foreign}},
            {"mediaType": oci_manifest, "digest": digest, "size": manifest.len(),
             "platform": {"os": "linux", "architecture": arch}},
        ],
    });
    reg.put_manifest(
        "tools/busybox",
        "multi",
        "application/vnd.oci.image.index.v1+json",
        &serde_json::to_vec(&index).unwrap(),
    );

    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let name = format!("{}/tools/busybox:multi", reg.addr);
    let pulled = rt().block_on(store.pull(&name, None)).unwrap();
    assert_eq!(pulled.digest, digest, "the index entry for linux/{arch}");
    let info = store.inspect(&name).unwrap();
    assert_eq!(info.digest, digest);
    assert!(!store.unpack(&name).unwrap().is_empty());

    // A registry serving a layer that does not hash to its digest: the
    // pull fails and the fresh store holds neither the image nor the blob.
    let doc: serde_json::Value = serde_json::from_slice(&manifest).unwrap();
    let layer = doc["layers"][0]["digest"].as_str().unwrap().to_string();
    let file = reg.blob_file(&layer);
    let mut bytes = std::fs::read(&file).unwrap();
    let last = bytes.len() - 1;
    bytes[last] ^= 0xff;
    std::fs::write(&file, &bytes).unwrap();
    let fresh = ImageStore::open(&work.path().join("fresh")).unwrap();
    let err = rt()
        .block_on(fresh.pull(&format!("{}/tools/busybox:v1", reg.addr), None))
        .unwrap_err();
    assert!(
        matches!(
            err,
            ImageError::Registry { .. } | ImageError::DigestMismatch { .. }
        ),
        "{err}"
    );
    assert!(
        fresh.list().unwrap().is_empty(),
        "no image after a bad pull"
    );
    let hex = layer.trim_start_matches("sha256:");
    assert!(
        !work.path().join("fresh/blobs/sha256").join(hex).exists(),
        "the bad layer was stored"
    );
    let leftovers = std::fs::read_dir(work.path().join("fresh/ingest"))
        .unwrap()
        .count();
    assert_eq!(leftovers, 0, "partial downloads are removed");
}

fn skopeo(args: &[&str]) -> String {
    need("skopeo", "skopeo");
    let out = Command::new("skopeo").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "skopeo {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn curl(url: &str) -> (u16, String) {
    let out = Command::new("curl")
        .args(["-s", "-o", "-", "-w", "\n%{http_code}", url])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap();
    (code.parse().unwrap(), body.to_string())
}

#[test]
fn r8s_registry_round_trips_images_with_skopeo() {
    let work = tempfile::tempdir().unwrap();
    let tar = busybox_tar(work.path());
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let reg = image::registry::Registry::open(&work.path().join("registry")).unwrap();
    let (addr, _task) = runtime
        .block_on(image::registry::serve(reg, "127.0.0.1:0".parse().unwrap()))
        .unwrap();
    let base = format!("{addr}");
    // In with skopeo (chunked or monolithic, as skopeo chooses), a second
    // repository by cross-repository mount, then out again.
    skopeo(&[
        "copy",
        "--dest-tls-verify=false",
        &format!("oci-archive:{}", tar.display()),
        &format!("docker://{base}/tools/busybox:v1"),
    ]);
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        "--dest-tls-verify=false",
        &format!("docker://{base}/tools/busybox:v1"),
        &format!("docker://{base}/other/busybox:copy"),
    ]);
    let out_dir = work.path().join("out");
    skopeo(&[
        "copy",
        "--src-tls-verify=false",
        &format!("docker://{base}/other/busybox:copy"),
        &format!("oci:{}:x", out_dir.display()),
    ]);
    let pushed: serde_json::Value = serde_json::from_str(&skopeo(&[
        "inspect",
        "--tls-verify=false",
        "--raw",
        &format!("docker://{base}/tools/busybox:v1"),
    ]))
    .unwrap();
    let index: serde_json::Value =
        serde_json::from_slice(&std::fs::read(out_dir.join("index.json")).unwrap()).unwrap();
    let copied = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let (_, raw) = curl(&format!("http://{base}/v2/tools/busybox/manifests/v1"));
    assert_eq!(
        sha(raw.as_bytes()),
        copied,
        "the same manifest came back out"
    );
    assert_eq!(pushed["layers"].as_array().unwrap().len(), 1);

    let (code, tags) = curl(&format!("http://{base}/v2/tools/busybox/tags/list"));
    assert_eq!(
        (code, tags.as_str()),
        (200, r#"{"name":"tools/busybox","tags":["v1"]}"#)
    );
    let (_, catalog) = curl(&format!("http://{base}/v2/_catalog"));
    assert_eq!(
        catalog,
        r#"{"repositories":["other/busybox","tools/busybox"]}"#
    );
    let (code, err) = curl(&format!("http://{base}/v2/tools/busybox/manifests/nope"));
    assert_eq!(code, 404);
    assert!(err.contains("MANIFEST_UNKNOWN"), "{err}");

    // r8s's own client pulls from it.
    let store = ImageStore::open(&work.path().join("store")).unwrap();
    let pulled = runtime
        .block_on(store.pull(&format!("{base}/other/busybox:copy"), None))
        .unwrap();
    assert_eq!(pulled.digest, copied);
    // And pushes back under another name: the same manifest digest.
    let pushed_digest = runtime
        .block_on(store.push(
            &format!("{base}/other/busybox:copy"),
            &format!("{base}/pushed/busybox:v2"),
            None,
            &image::RegistriesConfig::default(),
        ))
        .unwrap();
    assert_eq!(pushed_digest, copied);
    let (_, back) = curl(&format!("http://{base}/v2/pushed/busybox/manifests/v2"));
    assert_eq!(sha(back.as_bytes()), copied);

    // A manifest deleted by digest takes its tag along.
    let del = Command::new("curl")
        .args([
            "-s",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "-X",
            "DELETE",
        ])
        .arg(format!("http://{base}/v2/other/busybox/manifests/{copied}"))
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&del.stdout), "202");
    let (code, _) = curl(&format!("http://{base}/v2/other/busybox/manifests/copy"));
    assert_eq!(code, 404);
}
