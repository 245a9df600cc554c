//! Image store behaviour as the node agent sees it: import, list, config, unpack, gc.

use std::collections::HashSet;
use std::io::Write;
use std::os::unix::fs::{FileTypeExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::sync::OnceLock;

use image::{ImageError, ImageStore};
use serde_json::json;
use sha2::{Digest, Sha256};

fn sha(b: &[u8]) -> String {
    format!("sha256:{}", hex::encode(Sha256::digest(b)))
}

/// The busybox OCI layout built by tools/build-busybox-image.sh, once per test run.
fn busybox_tar() -> PathBuf {
    static TAR: OnceLock<PathBuf> = OnceLock::new();
    TAR.get_or_init(|| {
        let dir = tempfile::tempdir().unwrap().keep();
        let out = dir.join("busybox.tar");
        let script =
            Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tools/build-busybox-image.sh");
        let res = std::process::Command::new("bash")
            .arg(&script)
            .arg(&out)
            .output();
        match res {
            Ok(o) if o.status.success() && out.is_file() => out,
            Ok(o) => panic!(
                "tools/build-busybox-image.sh failed ({}); it needs Debian's busybox-static \
                 package (apt-get install busybox-static):\n{}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            ),
            Err(e) => panic!("cannot run {}: {e}", script.display()),
        }
    })
    .clone()
}

/// A layer tar from (path, kind) entries.
enum E<'a> {
    Dir(&'a str, u32),
    File(&'a str, &'a [u8], u32, u64),
    Symlink(&'a str, &'a str),
    Hardlink(&'a str, &'a str),
    /// Raw name bytes, bypassing the tar crate's own `..` checks.
    RawFile(&'a [u8], &'a [u8]),
}

fn layer(entries: &[E]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for e in entries {
        let mut h = tar::Header::new_gnu();
        h.set_mtime(1_000_000);
        match e {
            E::Dir(p, mode) => {
                h.set_entry_type(tar::EntryType::Directory);
                h.set_mode(*mode);
                h.set_size(0);
                b.append_data(&mut h, p, &[][..]).unwrap();
            }
            E::File(p, data, mode, uid) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(*mode);
                h.set_uid(*uid);
                h.set_gid(*uid);
                h.set_size(data.len() as u64);
                b.append_data(&mut h, p, *data).unwrap();
            }
            E::Symlink(p, t) => {
                h.set_entry_type(tar::EntryType::Symlink);
                h.set_mode(0o777);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::Hardlink(p, t) => {
                h.set_entry_type(tar::EntryType::Link);
                h.set_mode(0o644);
                h.set_size(0);
                b.append_link(&mut h, p, t).unwrap();
            }
            E::RawFile(name, data) => {
                h.set_entry_type(tar::EntryType::Regular);
                h.set_mode(0o644);
                h.set_size(data.len() as u64);
                h.as_old_mut().name[..name.len()].copy_from_slice(name);
                h.set_cksum();
                b.append(&h, *data).unwrap();
            }
        }
    }
    b.into_inner().unwrap()
}

/// A `docker save` archive: one image with `tags` and uncompressed `layers`.
fn docker_save(tags: &[&str], layers: &[Vec<u8>], cmd: &[&str]) -> Vec<u8> {
    let diff_ids: Vec<String> = layers.iter().map(|l| sha(l)).collect();
    let config = serde_json::to_vec(&json!({
        "architecture": "amd64", "os": "linux",
        "config": {"Cmd": cmd, "Env": ["PATH=/bin"], "WorkingDir": "/a", "User": "1000"},
        "rootfs": {"type": "layers", "diff_ids": diff_ids},
    }))
    .unwrap();
    let config_name = format!("{}.json", &sha(&config)[7..]);
    let mut b = tar::Builder::new(Vec::new());
    let add = |b: &mut tar::Builder<Vec<u8>>, name: &str, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    add(&mut b, &config_name, &config);
    let mut layer_paths = Vec::new();
    for (i, l) in layers.iter().enumerate() {
        let p = format!("layer{i}/layer.tar");
        add(&mut b, &p, l);
        layer_paths.push(p);
    }
    let manifest = serde_json::to_vec(&json!([{
        "Config": config_name, "RepoTags": tags, "Layers": layer_paths,
    }]))
    .unwrap();
    add(&mut b, "manifest.json", &manifest);
    b.into_inner().unwrap()
}

fn write(dir: &Path, name: &str, data: &[u8]) -> PathBuf {
    let p = dir.join(name);
    std::fs::write(&p, data).unwrap();
    p
}

/// Two layers: the second whites out etc/gone and makes a/ opaque.
fn two_layer_image() -> Vec<u8> {
    let l1 = layer(&[
        E::Dir("a", 0o755),
        E::File("a/old", b"old", 0o644, 0),
        E::Dir("etc", 0o755),
        E::File("etc/gone", b"bye", 0o644, 0),
        E::File("etc/secret", b"s", 0o640, 1000),
        E::File("etc/tool", b"#!/bin/sh\n", 0o4755, 0),
        E::Hardlink("etc/tool-link", "etc/tool"),
        E::Symlink("etc/alias", "/etc/tool"),
        E::RawFile(b"/abs-file", b"x"),
    ]);
    let l2 = layer(&[
        E::Dir("a", 0o755),
        E::File("a/.wh..wh..opq", b"", 0o644, 0),
        E::File("a/new", b"new", 0o644, 0),
        E::Dir("etc", 0o755),
        E::File("etc/.wh.gone", b"", 0o644, 0),
    ]);
    docker_save(
        &["myapp:v1", "registry.local:5000/team/myapp:v1"],
        &[l1, l2],
        &["/bin/app", "--serve"],
    )
}

#[test]
fn busybox_image_imports_lists_and_unpacks() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let refs = store.import(&busybox_tar()).unwrap();
    assert_eq!(refs, vec!["docker.io/library/busybox:latest"]);

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    let info = &list[0];
    assert_eq!(info.references, vec!["docker.io/library/busybox:latest"]);
    assert_eq!(
        info.repo_digests,
        vec![format!("docker.io/library/busybox@{}", info.digest)]
    );
    assert!(
        info.size > 500_000,
        "size {} should include the busybox layer",
        info.size
    );

    // Every spelling of the name, the manifest digest and the image ID resolve alike.
    for name in [
        "busybox",
        "busybox:latest",
        "docker.io/library/busybox:latest",
        &info.digest,
        &info.id,
        &info.id[7..],
    ] {
        assert_eq!(
            store.resolve(name).unwrap().digest,
            info.digest,
            "resolve {name}"
        );
    }
    assert!(matches!(
        store.resolve("busybox:1.0"),
        Err(ImageError::NotFound(_))
    ));

    let cfg = store.config("busybox").unwrap();
    let c = cfg.config().as_ref().unwrap();
    assert_eq!(c.cmd().as_deref(), Some(&["sh".to_string()][..]));
    assert!(
        c.env()
            .as_ref()
            .unwrap()
            .iter()
            .any(|e| e.starts_with("PATH=") && e.contains("/bin"))
    );
    assert_eq!(
        sha(&std::fs::read(store.root().join("blobs/sha256").join(&info.id[7..])).unwrap()),
        info.id
    );

    let dirs = store.unpack("busybox").unwrap();
    assert_eq!(dirs.len(), 1);
    let root = &dirs[0];
    let bb = std::fs::metadata(root.join("bin/busybox")).unwrap();
    assert!(bb.is_file() && bb.permissions().mode() & 0o111 != 0);
    for applet in [
        "sh", "ls", "ps", "httpd", "cat", "echo", "sleep", "true", "false", "wget",
    ] {
        assert_eq!(
            std::fs::read_link(root.join("bin").join(applet)).unwrap(),
            Path::new("busybox"),
            "{applet}"
        );
    }
    assert_eq!(
        std::fs::metadata(root.join("tmp"))
            .unwrap()
            .permissions()
            .mode()
            & 0o7777,
        0o1777
    );
    assert!(
        std::fs::read_to_string(root.join("etc/passwd"))
            .unwrap()
            .contains("nobody:x:65534")
    );
    assert!(root.join("www/index.html").is_file());
    // The unpacked busybox actually runs.
    let out = std::process::Command::new(root.join("bin/busybox"))
        .args(["echo", "hi"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hi\n");

    // A second unpack reuses the layer and a reopened store sees the same images.
    assert_eq!(store.unpack("busybox").unwrap(), dirs);
    let again = ImageStore::open(&tmp.path().join("images")).unwrap();
    assert_eq!(again.list().unwrap(), list);
}

#[test]
fn gzip_and_zstd_archives_import() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = std::fs::read(busybox_tar()).unwrap();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    gz.write_all(&plain).unwrap();
    let gz = write(tmp.path(), "bb.tar.gz", &gz.finish().unwrap());
    let zst = write(
        tmp.path(),
        "bb.tar.zst",
        &zstd::encode_all(&plain[..], 3).unwrap(),
    );
    let docker_zst = write(
        tmp.path(),
        "app.tar.zst",
        &zstd::encode_all(&two_layer_image()[..], 3).unwrap(),
    );

    let reference = ImageStore::open(&tmp.path().join("plain")).unwrap();
    reference.import(&busybox_tar()).unwrap();
    let want = reference.resolve("busybox").unwrap().digest;
    for (i, archive) in [gz, zst].iter().enumerate() {
        let store = ImageStore::open(&tmp.path().join(format!("s{i}"))).unwrap();
        assert_eq!(
            store.import(archive).unwrap(),
            vec!["docker.io/library/busybox:latest"]
        );
        assert_eq!(
            store.resolve("busybox").unwrap().digest,
            want,
            "{}",
            archive.display()
        );
        assert!(
            store.unpack("busybox").unwrap()[0]
                .join("bin/busybox")
                .is_file()
        );
    }
    let store = ImageStore::open(&tmp.path().join("docker")).unwrap();
    let refs = store.import(&docker_zst).unwrap();
    assert_eq!(
        refs,
        vec![
            "docker.io/library/myapp:v1",
            "registry.local:5000/team/myapp:v1"
        ]
    );
}

#[test]
fn docker_save_layers_unpack_with_overlay_whiteouts() {
    // SAFETY: geteuid has no preconditions.
    let uid = unsafe { libc::geteuid() };
    assert_eq!(
        uid, 0,
        "whiteout devices and trusted xattrs need root (as on CI)"
    );
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let archive = write(tmp.path(), "app.tar", &two_layer_image());
    store.import(&archive).unwrap();

    let list = store.list().unwrap();
    assert_eq!(list.len(), 1);
    assert_eq!(
        list[0].references,
        vec![
            "docker.io/library/myapp:v1",
            "registry.local:5000/team/myapp:v1"
        ]
    );
    let cfg = store.config("myapp:v1").unwrap();
    let c = cfg.config().as_ref().unwrap();
    assert_eq!(c.cmd().clone().unwrap(), vec!["/bin/app", "--serve"]);
    assert_eq!(c.working_dir().as_deref(), Some("/a"));
    assert_eq!(c.user().as_deref(), Some("1000"));

    let dirs = store.unpack("registry.local:5000/team/myapp:v1").unwrap();
    assert_eq!(dirs.len(), 2);
    let (l1, l2) = (&dirs[0], &dirs[1]);

    // Layer 1: modes, owners, links as archived; absolute names stay inside.
    let secret = std::fs::metadata(l1.join("etc/secret")).unwrap();
    assert_eq!(
        (secret.uid(), secret.gid(), secret.mode() & 0o7777),
        (1000, 1000, 0o640)
    );
    assert_eq!(
        std::fs::metadata(l1.join("etc/tool")).unwrap().mode() & 0o7777,
        0o4755
    );
    assert_eq!(
        std::fs::metadata(l1.join("etc/tool")).unwrap().ino(),
        std::fs::metadata(l1.join("etc/tool-link")).unwrap().ino()
    );
    assert_eq!(
        std::fs::read_link(l1.join("etc/alias")).unwrap(),
        Path::new("/etc/tool")
    );
    assert_eq!(std::fs::read(l1.join("abs-file")).unwrap(), b"x");
    assert_eq!(
        std::fs::metadata(l1.join("etc/gone")).unwrap().mtime(),
        1_000_000
    );

    // Layer 2: overlayfs whiteout device and opaque directory.
    let wh = std::fs::symlink_metadata(l2.join("etc/gone")).unwrap();
    assert!(
        wh.file_type().is_char_device(),
        "etc/gone should be a whiteout device"
    );
    assert_eq!(wh.rdev(), 0);
    assert!(!l2.join("etc/.wh.gone").exists());
    assert_eq!(
        xattr::get(l2.join("a"), "trusted.overlay.opaque").unwrap(),
        Some(b"y".to_vec())
    );
    assert!(!l2.join("a/.wh..wh..opq").exists());
    assert_eq!(std::fs::read(l2.join("a/new")).unwrap(), b"new");
    assert_eq!(
        xattr::get(l1.join("a"), "trusted.overlay.opaque").unwrap(),
        None
    );
}

/// Every path under `dir`, for "nothing was written outside" checks.
fn walk(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        out.push(e.path());
        if e.file_type().unwrap().is_dir() {
            walk(&e.path(), out);
        }
    }
}

#[test]
fn escaping_layer_entries_are_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let outside = tmp.path().join("outside");
    std::fs::create_dir(&outside).unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();

    let dotdot = layer(&[
        E::Dir("bin", 0o755),
        E::RawFile(b"bin/../../../../evil", b"pwned"),
    ]);
    let via_symlink = layer(&[
        E::Symlink("link", outside.to_str().unwrap()),
        E::File("link/pwned", b"pwned", 0o644, 0),
    ]);
    let hardlink_out = layer(&[E::Hardlink("passwd", "../../../../../etc/passwd")]);
    for (name, l) in [
        ("dotdot", dotdot),
        ("symlink", via_symlink),
        ("hardlink", hardlink_out),
    ] {
        let archive = write(
            tmp.path(),
            &format!("{name}.tar"),
            &docker_save(&[&format!("{name}:x")], &[l], &["sh"]),
        );
        store.import(&archive).unwrap();
        let err = store.unpack(&format!("{name}:x")).unwrap_err();
        assert!(matches!(err, ImageError::UnsafePath(_)), "{name}: {err}");
    }
    let mut all = Vec::new();
    walk(tmp.path(), &mut all);
    assert!(
        !all.iter()
            .any(|p| p.ends_with("evil") || p.ends_with("pwned")),
        "{all:?}"
    );
    let layers: Vec<_> = std::fs::read_dir(store.root().join("layers"))
        .unwrap()
        .collect();
    assert!(
        layers.is_empty(),
        "failed unpacks must leave no layer dirs: {layers:?}"
    );

    // An image archive whose own members climb out is refused at import.
    let bad = layer(&[E::RawFile(b"../evil.json", b"{}")]);
    let archive = write(tmp.path(), "bad.tar", &bad);
    assert!(matches!(
        store.import(&archive),
        Err(ImageError::UnsafePath(_))
    ));
    assert!(!tmp.path().join("evil.json").exists());
}

#[test]
fn remove_then_gc_deletes_only_unreferenced_content() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    store.import(&busybox_tar()).unwrap();
    store
        .import(&write(tmp.path(), "app.tar", &two_layer_image()))
        .unwrap();
    let bb = store.inspect("busybox").unwrap();
    let app = store.inspect("myapp:v1").unwrap();
    let bb_layers = store.unpack("busybox").unwrap();
    let app_layers = store.unpack("myapp:v1").unwrap();
    let blob = |d: &str| store.root().join("blobs/sha256").join(&d[7..]);

    // Nothing is garbage while both are tagged.
    assert_eq!(
        store.gc(&HashSet::new()).unwrap(),
        image::GcStats::default()
    );

    // Removing one of two tags keeps the image; removing by digest drops both.
    assert_eq!(
        store.remove("myapp:v1").unwrap(),
        vec!["docker.io/library/myapp:v1"]
    );
    assert_eq!(
        store.inspect(&app.digest).unwrap().references,
        vec!["registry.local:5000/team/myapp:v1"]
    );
    assert_eq!(
        store.remove(&app.digest).unwrap(),
        vec!["registry.local:5000/team/myapp:v1"]
    );
    assert!(matches!(
        store.remove("myapp:v1"),
        Err(ImageError::NotFound(_))
    ));
    store.remove("busybox").unwrap();
    assert!(store.list().unwrap().is_empty());

    // An image still used by a container (by image ID here) survives gc.
    let stats = store.gc(&HashSet::from([app.id.clone()])).unwrap();
    assert!(blob(&app.digest).is_file() && app_layers.iter().all(|d| d.is_dir()));
    assert!(!blob(&bb.digest).exists() && !blob(&bb.id).exists());
    assert!(!bb_layers[0].exists());
    assert_eq!(stats.layers_removed.len(), 1);
    assert_eq!(
        stats.blobs_removed.len(),
        3,
        "busybox manifest, config and layer: {stats:?}"
    );

    let stats = store.gc(&HashSet::new()).unwrap();
    assert_eq!(
        stats.blobs_removed.len(),
        4,
        "app manifest, config and two layers: {stats:?}"
    );
    assert!(app_layers.iter().all(|d| !d.exists()));
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
    assert_eq!(
        std::fs::read_dir(store.root().join("layers"))
            .unwrap()
            .count(),
        0
    );
}

#[test]
fn concurrent_unpack_of_one_image_is_safe() {
    let tmp = tempfile::tempdir().unwrap();
    let root = tmp.path().join("images");
    ImageStore::open(&root)
        .unwrap()
        .import(&busybox_tar())
        .unwrap();
    let results: Vec<Vec<PathBuf>> = std::thread::scope(|s| {
        let handles: Vec<_> = (0..6)
            .map(|_| s.spawn(|| ImageStore::open(&root).unwrap().unpack("busybox").unwrap()))
            .collect();
        handles.into_iter().map(|h| h.join().unwrap()).collect()
    });
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert!(results[0][0].join("bin/busybox").is_file());
    let names: Vec<String> = std::fs::read_dir(root.join("layers"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    assert_eq!(
        names.len(),
        1,
        "one layer dir and no temp leftovers: {names:?}"
    );
}

#[test]
fn multi_arch_index_picks_the_host_platform() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let mut blobs: Vec<Vec<u8>> = Vec::new();
    let mut manifest_for = |arch: &str, content: &[u8]| {
        let l = layer(&[E::File("arch", content, 0o644, 0)]);
        let config = serde_json::to_vec(&json!({
            "architecture": arch, "os": "linux",
            "rootfs": {"type": "layers", "diff_ids": [sha(&l)]},
        }))
        .unwrap();
        let m = serde_json::to_vec(&json!({
            "schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha(&config), "size": config.len()},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": sha(&l), "size": l.len()}],
        }))
        .unwrap();
        let d = json!({"mediaType": "application/vnd.oci.image.manifest.v1+json", "digest": sha(&m), "size": m.len(),
                       "platform": {"architecture": arch, "os": "linux"}});
        blobs.extend([l, config, m]);
        d
    };
    let host = image::host_arch();
    let other = if host == "amd64" { "arm64" } else { "amd64" };
    let descs = vec![manifest_for(other, b"other"), manifest_for(host, b"host")];
    let nested = serde_json::to_vec(&json!({
        "schemaVersion": 2, "mediaType": "application/vnd.oci.image.index.v1+json", "manifests": descs,
    }))
    .unwrap();
    let index = serde_json::to_vec(&json!({
        "schemaVersion": 2, "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json", "digest": sha(&nested), "size": nested.len(),
            "annotations": {"org.opencontainers.image.ref.name": "example.com/multi:1"},
        }],
    }))
    .unwrap();
    blobs.push(nested);
    let mut b = tar::Builder::new(Vec::new());
    let mut add = |name: String, data: &[u8]| {
        let mut h = tar::Header::new_gnu();
        h.set_mode(0o644);
        h.set_size(data.len() as u64);
        b.append_data(&mut h, name, data).unwrap();
    };
    for blob in &blobs {
        add(format!("blobs/sha256/{}", &sha(blob)[7..]), blob);
    }
    add("oci-layout".into(), br#"{"imageLayoutVersion":"1.0.0"}"#);
    add("index.json".into(), &index);
    let archive = write(tmp.path(), "multi.tar", &b.into_inner().unwrap());
    assert_eq!(store.import(&archive).unwrap(), vec!["example.com/multi:1"]);
    let dirs = store.unpack("example.com/multi:1").unwrap();
    assert_eq!(std::fs::read(dirs[0].join("arch")).unwrap(), b"host");

    // A layout naming its manifest by bare tag needs a base name, like `ctr import --base-name`.
    let index = String::from_utf8(index)
        .unwrap()
        .replace("example.com/multi:1", "v2");
    add_index(&archive, &index);
    let other = ImageStore::open(&tmp.path().join("other")).unwrap();
    let unnamed = other.import(&archive).unwrap();
    assert!(unnamed[0].starts_with("sha256:"), "{unnamed:?}");
    assert!(other.list().unwrap().is_empty());
    assert_eq!(
        other
            .import_with_base_name(&archive, Some("example.com/multi"))
            .unwrap(),
        vec!["example.com/multi:v2"]
    );
}

/// Rewrites an OCI layout tarball with a different index.json.
fn add_index(archive: &Path, index: &str) {
    let old = std::fs::read(archive).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    for e in tar::Archive::new(&old[..]).entries().unwrap() {
        let mut e = e.unwrap();
        let mut h = e.header().clone();
        let name = e.path().unwrap().into_owned();
        if name == Path::new("index.json") {
            h.set_size(index.len() as u64);
            b.append_data(&mut h, name, index.as_bytes()).unwrap();
        } else {
            let mut data = Vec::new();
            std::io::Read::read_to_end(&mut e, &mut data).unwrap();
            b.append_data(&mut h, name, &data[..]).unwrap();
        }
    }
    std::fs::write(archive, b.into_inner().unwrap()).unwrap();
}

#[test]
fn corrupt_blob_is_rejected() {
    let tmp = tempfile::tempdir().unwrap();
    let store = ImageStore::open(&tmp.path().join("images")).unwrap();
    let mut b = tar::Builder::new(Vec::new());
    let mut h = tar::Header::new_gnu();
    h.set_mode(0o644);
    h.set_size(3);
    b.append_data(
        &mut h,
        format!("blobs/sha256/{}", "0".repeat(64)),
        &b"abc"[..],
    )
    .unwrap();
    let archive = write(tmp.path(), "corrupt.tar", &b.into_inner().unwrap());
    assert!(matches!(
        store.import(&archive),
        Err(ImageError::DigestMismatch { .. })
    ));
    assert_eq!(
        std::fs::read_dir(store.root().join("blobs/sha256"))
            .unwrap()
            .count(),
        0
    );
}
