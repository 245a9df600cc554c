//! The data dir runs out of space, or its file system turns read-only
//! under a running server: writes fail with a clear 5xx Status, reads keep
//! working, nothing stored is damaged, and the server recovers (when space
//! returns; after a restart once the file system is repaired).
//!
//! These mount a tmpfs and an ext4 loop device, so they need root and the
//! loop driver; they fail with a message saying so when either is missing.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use common::{Cluster, json};

fn run(cmd: &str, args: &[&str]) -> String {
    let out = Command::new(cmd)
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("running {cmd} (is it installed?): {e}"));
    assert!(
        out.status.success(),
        "{cmd} {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// Unmounts (lazily, so a leftover open file cannot wedge the test) and
/// detaches the loop device on drop, also when the test fails.
struct Mount {
    at: PathBuf,
    loopdev: Option<String>,
}

impl Drop for Mount {
    fn drop(&mut self) {
        let _ = Command::new("umount").arg("-l").arg(&self.at).status();
        if let Some(dev) = &self.loopdev {
            let _ = Command::new("losetup").args(["-d", dev]).status();
        }
    }
}

/// kubectl with its discovery cache off the data dir's file system (the
/// harness points HOME at the data dir, which these tests fill or break).
fn kubectl(c: &Cluster, args: &[&str], stdin: Option<&str>) -> std::process::Output {
    static CACHE: std::sync::OnceLock<tempfile::TempDir> = std::sync::OnceLock::new();
    let cache = CACHE.get_or_init(|| tempfile::tempdir().unwrap());
    c.kubectl_env(
        args,
        &[("KUBECACHEDIR", cache.path().to_str().unwrap())],
        stdin,
    )
}

fn ok(c: &Cluster, args: &[&str]) -> String {
    let out = kubectl(c, args, None);
    assert!(
        out.status.success(),
        "kubectl {args:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// Creates ConfigMap `name` with `bytes` of data through kubectl; returns
/// kubectl's stderr on failure.
fn try_create(c: &Cluster, name: &str, bytes: usize) -> Result<(), String> {
    let manifest = serde_json::json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": {"name": name, "namespace": "default"},
        "data": {"v": "x".repeat(bytes)},
    })
    .to_string();
    let out = kubectl(c, &["create", "-f", "-"], Some(&manifest));
    if out.status.success() {
        Ok(())
    } else {
        Err(String::from_utf8_lossy(&out.stderr).into_owned())
    }
}

/// The names of the test's ConfigMaps the server lists now.
fn listed(c: &Cluster) -> Vec<String> {
    let v = json(&ok(
        c,
        &["get", "configmaps", "-n", "default", "-o", "json"],
    ));
    let mut names: Vec<String> = v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|o| o["metadata"]["name"].as_str())
        .filter(|n| n.starts_with("d-"))
        .map(str::to_string)
        .collect();
    names.sort();
    names
}

/// Asserts a failed write is a server-side (5xx) error that says why.
fn assert_clear_5xx(stderr: &str, why: &[&str]) {
    assert!(
        stderr.contains("Error from server (ServiceUnavailable)")
            || stderr.contains("Error from server (InternalError)"),
        "a failed write should be a 5xx Status, kubectl said: {stderr}"
    );
    assert!(
        why.iter().any(|w| stderr.contains(w)),
        "the error should say why ({why:?}): {stderr}"
    );
}

/// Writes until one fails (the file system is out of space or read-only);
/// returns the names acknowledged before that and the failure.
fn write_until_failure(c: &Cluster, from: usize) -> (Vec<String>, String) {
    let mut acked = Vec::new();
    for i in from..from + 200 {
        let name = format!("d-{i:04}");
        match try_create(c, &name, 8 << 10) {
            Ok(()) => acked.push(name),
            Err(e) => return (acked, e),
        }
    }
    panic!("200 writes of 8 KiB succeeded on a full or read-only file system");
}

fn fill(dir: &Path) -> PathBuf {
    use std::io::Write;
    let path = dir.join("filler");
    let mut f = std::fs::File::create(&path).unwrap();
    let chunk = vec![0u8; 1 << 16];
    loop {
        match f.write_all(&chunk).and_then(|()| f.sync_data()) {
            Ok(()) => {}
            Err(e) if e.raw_os_error() == Some(28) => break, // ENOSPC
            Err(e) => panic!("filling {}: {e}", path.display()),
        }
    }
    // Fill the last partial blocks too.
    while f.write_all(&[0u8; 512]).is_ok() {}
    path
}

#[test]
fn disk_full_fails_writes_cleanly_keeps_reads_and_recovers() {
    common::require_root("these tests mount file systems and need root (CI runs as root)");
    let dir = tempfile::tempdir().unwrap();
    let size = "size=48m";
    run(
        "mount",
        &[
            "-t",
            "tmpfs",
            "-o",
            size,
            "r8s-e2e-diskfull",
            dir.path().to_str().unwrap(),
        ],
    );
    let _mount = Mount {
        at: dir.path().to_path_buf(),
        loopdev: None,
    };
    let data = dir.path().to_path_buf();
    let mut c = Cluster::start_in(dir, &[]);
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("d-{i:04}");
        try_create(&c, &name, 8 << 10).unwrap();
        acked.push(name);
    }

    let filler = fill(&data);
    let (more, err) = write_until_failure(&c, 100);
    acked.extend(more);
    assert_clear_5xx(&err, &["disk is full", "No space left"]);
    // Reads keep working, and hold every acknowledged write.
    assert_eq!(listed(&c), acked, "reads on a full disk");
    let one = json(&ok(
        &c,
        &["get", "configmap", "d-0000", "-n", "default", "-o", "json"],
    ));
    assert_eq!(one["data"]["v"].as_str().map(str::len), Some(8 << 10));

    // Space returns: writes work again without a restart.
    std::fs::remove_file(&filler).unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        match try_create(&c, "d-0999", 8 << 10) {
            Ok(()) => break,
            Err(e) => assert!(
                Instant::now() < deadline,
                "writes did not recover after space returned: {e}"
            ),
        }
        std::thread::sleep(Duration::from_millis(250));
    }
    acked.push("d-0999".into());
    ok(
        &c,
        &[
            "patch",
            "configmap",
            "d-0000",
            "-n",
            "default",
            "-p",
            r#"{"data":{"v":"after"}}"#,
        ],
    );

    // Nothing was damaged: a restart reads back exactly what was acked.
    c.restart();
    assert_eq!(listed(&c), acked, "after a restart");
    let one = json(&ok(
        &c,
        &["get", "configmap", "d-0000", "-n", "default", "-o", "json"],
    ));
    assert_eq!(one["data"]["v"], "after");
    eprintln!("{} writes acked around a full disk survived", acked.len());
}

#[test]
fn read_only_data_dir_fails_writes_cleanly_keeps_reads_and_recovers_after_repair() {
    common::require_root("these tests mount file systems and need root (CI runs as root)");
    let work = tempfile::tempdir().unwrap();
    let img = work.path().join("fs.img");
    run("truncate", &["-s", "96M", img.to_str().unwrap()]);
    run("mkfs.ext4", &["-q", img.to_str().unwrap()]);
    let dev = run("losetup", &["-f", "--show", img.to_str().unwrap()]);
    let dir = tempfile::tempdir().unwrap();
    let mut guard = Mount {
        at: dir.path().to_path_buf(),
        loopdev: Some(dev.clone()),
    };
    // Fail-safe against a stale read-only flag on a reused loop device.
    run("blockdev", &["--setrw", &dev]);
    let mount = |at: &Path| {
        run(
            "mount",
            &["-o", "errors=remount-ro", &dev, at.to_str().unwrap()],
        )
    };
    mount(dir.path());
    let data = dir.path().to_path_buf();
    let mut c = Cluster::start_in(dir, &[]);
    let mut acked = Vec::new();
    for i in 0..20 {
        let name = format!("d-{i:04}");
        try_create(&c, &name, 8 << 10).unwrap();
        acked.push(name);
    }

    // What ext4 does on an I/O error with errors=remount-ro: the file
    // system turns read-only under the running server.
    let sysfs = format!(
        "/sys/fs/ext4/{}/trigger_fs_error",
        dev.trim_start_matches("/dev/")
    );
    std::fs::write(&sysfs, "1").unwrap_or_else(|e| panic!("writing {sysfs}: {e}"));
    let (more, err) = write_until_failure(&c, 100);
    acked.extend(more);
    assert_clear_5xx(&err, &["readonly", "read-only", "disk I/O error"]);
    assert_eq!(listed(&c), acked, "reads on a read-only file system");

    // The operator repairs the file system and restarts the server.
    c.kill();
    run("umount", &[data.to_str().unwrap()]);
    let fsck = Command::new("e2fsck")
        .args(["-fy", img.to_str().unwrap()])
        .output()
        .expect("e2fsck (e2fsprogs)");
    // 0: clean, 1: errors corrected.
    assert!(
        matches!(fsck.status.code(), Some(0 | 1)),
        "e2fsck: {}",
        String::from_utf8_lossy(&fsck.stdout)
    );
    run("losetup", &["-d", &dev]);
    let dev2 = run("losetup", &["-f", "--show", img.to_str().unwrap()]);
    guard.loopdev = Some(dev2.clone());
    run("mount", &[&dev2, data.to_str().unwrap()]);
    c.restart();
    assert_eq!(listed(&c), acked, "after repair and restart");
    try_create(&c, "d-0999", 100).expect("writes after the repair");
    eprintln!(
        "{} writes acked before the file system turned read-only survived",
        acked.len()
    );
}
