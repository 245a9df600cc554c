//! `r8s bench runtime`: what one container costs the OCI runtime alone —
//! create, start, wait for the exit and delete of a busybox `/bin/true` —
//! for libcontainer (as the shim drives it) next to runc and crun, on the
//! same bundle in the same run.
//!
//! Runs before the async runtime is built (see `main`): libcontainer forks
//! with a raw clone3, so its callers must be single-threaded. Each runtime
//! is measured in its own child process (`--inner`), so that what one
//! leaves behind in the process (cwd, dumpable, oom score) cannot change
//! another's numbers, and so that crun can run in a mount namespace where
//! the hybrid host's cgroup2 mount is hidden (crun refuses hybrid hosts).

use std::io::BufRead;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};

use crate::bench::pct;

/// Options of `r8s bench runtime`.
#[derive(clap::Args, Debug)]
pub struct RuntimeBenchArgs {
    /// Containers measured per runtime (each round after two warm-ups).
    #[arg(long, default_value_t = 50)]
    iterations: usize,
    /// The busybox image tarball (default: built with
    /// tools/build-busybox-image.sh from Debian's busybox-static).
    #[arg(long)]
    image: Option<PathBuf>,
    /// Internal: run one runtime's iterations in this process and print
    /// each duration in microseconds.
    #[arg(long, hide = true, value_enum)]
    inner: Option<Inner>,
    #[arg(long, hide = true)]
    bundle: Option<PathBuf>,
    #[arg(long, hide = true)]
    state: Option<PathBuf>,
    #[arg(long, hide = true, default_value = "bench")]
    id_prefix: String,
}

/// A runtime measured inside a child process.
#[derive(clap::ValueEnum, Clone, Copy, Debug, PartialEq, Eq)]
pub enum Inner {
    /// youki's libcontainer, in-process.
    Libcontainer,
    /// `runc run`.
    Runc,
    /// `crun run`.
    Crun,
}

impl Inner {
    fn name(self) -> &'static str {
        match self {
            Inner::Libcontainer => "libcontainer",
            Inner::Runc => "runc",
            Inner::Crun => "crun",
        }
    }
}

const WARMUP: usize = 2;
/// Turns each runtime gets (see `run`).
const ROUNDS: usize = 5;

/// How one row of the table is measured.
enum Kind {
    /// A child looping over the runtime, timing inside.
    InProcess(Inner, PathBuf),
    /// crun's child, in a mount namespace without the cgroup2 mount.
    Unshared(PathBuf, PathBuf),
    /// One `r8s` child per container, timed from outside.
    ExecEach(PathBuf),
    /// Not measurable here (see the row's error).
    Failed,
}

struct Row {
    name: String,
    kind: Kind,
    lat: Vec<Duration>,
    error: Option<String>,
}

impl Row {
    fn new(name: &str, kind: Kind) -> Row {
        Row {
            name: name.into(),
            kind,
            lat: Vec::new(),
            error: None,
        }
    }

    fn failed(name: &str, why: &str) -> Row {
        Row {
            error: Some(why.into()),
            ..Row::new(name, Kind::Failed)
        }
    }
}

/// Runs `r8s bench runtime` (or, with `--inner`, one runtime's loop).
pub fn run(args: RuntimeBenchArgs) -> anyhow::Result<()> {
    if let Some(inner) = args.inner {
        return run_inner(inner, &args);
    }
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        bail!("r8s bench runtime needs root (namespaces, cgroups, mounts)");
    }
    let host = Host::new()?;
    let tar = crate::bench_node::busybox_tarball(host.dir.path(), args.image.as_deref())?;
    let rootfs = host.dir.path().join("rootfs");
    unpack_rootfs(&tar, &host.dir.path().join("images"), &rootfs)?;
    let exe = std::env::current_exe().context("locating the r8s executable")?;
    let n = args.iterations;
    println!(
        "r8s bench runtime: create+start+wait+delete of busybox /bin/true, \
         {n} containers per runtime in {} alternating rounds (each after {WARMUP} warm-ups)",
        n.clamp(1, ROUNDS)
    );

    let bundle = |rt: &str| -> anyhow::Result<PathBuf> {
        let b = host.dir.path().join(format!("bundle-{rt}"));
        let cg = format!("/{}/{rt}", host.cgroup);
        kubelet::bench_support::write_bundle(&b, &rootfs, &["/bin/true"], &cg)
            .map_err(anyhow::Error::msg)?;
        Ok(b)
    };
    let inner_cmd = |rt: Inner, b: &Path, iterations: usize, prefix: &str| {
        let mut c = Command::new(&exe);
        c.args(["bench", "runtime", "--inner", rt.name(), "--bundle"])
            .arg(b)
            .arg("--state")
            .arg(host.dir.path().join(format!("state-{}", rt.name())))
            .args([
                "--iterations",
                &iterations.to_string(),
                "--id-prefix",
                prefix,
            ])
            .env("R8S_LOG", "warn");
        c
    };

    let mut rows = vec![
        // (a) libcontainer in one process, as the shim calls it.
        Row::new(
            "libcontainer (in-process)",
            Kind::InProcess(Inner::Libcontainer, bundle("lc")?),
        ),
        // (a') the same plus a process start per container, as the agent
        // pays for each shim (exec of r8s, libcontainer in it).
        Row::new(
            "libcontainer (exec r8s per container)",
            Kind::ExecEach(bundle("lcx")?),
        ),
    ];
    // (b) runc.
    rows.push(match which("runc") {
        Some(_) => Row::new("runc run", Kind::InProcess(Inner::Runc, bundle("runc")?)),
        None => Row::failed("runc", "not installed"),
    });
    // (c) crun, in a private mount namespace without the cgroup2 mount.
    rows.push(match (which("crun"), which("unshare")) {
        (Some(_), Some(unshare)) => Row::new(
            "crun run (cgroup2 mount hidden)",
            Kind::Unshared(unshare, bundle("crun")?),
        ),
        (None, _) => Row::failed("crun", "not installed"),
        (_, None) => Row::failed("crun", "unshare(1) not installed"),
    });

    // Rounds take turns between the runtimes, so that load from elsewhere
    // on the machine lands on all of them alike.
    let rounds = n.clamp(1, ROUNDS);
    for round in 0..rounds {
        let k = n / rounds + usize::from(round < n % rounds);
        for (ri, row) in rows.iter_mut().enumerate() {
            if row.error.is_some() {
                continue;
            }
            let prefix = format!("r{ri}x{round}");
            let r = match &row.kind {
                Kind::InProcess(rt, b) => collect(inner_cmd(*rt, b, k, &prefix)),
                Kind::Unshared(unshare, b) => {
                    let inner = inner_cmd(Inner::Crun, b, k, &prefix);
                    let mut c = Command::new(unshare);
                    c.args(["-m", "--propagation", "private", "sh", "-c"])
                        .arg(
                            "if mountpoint -q /sys/fs/cgroup/unified; then umount /sys/fs/cgroup/unified || exit 1; fi; exec \"$0\" \"$@\"",
                        )
                        .arg(inner.get_program())
                        .args(inner.get_args())
                        .env("R8S_LOG", "warn");
                    collect(c)
                }
                Kind::ExecEach(b) => {
                    let mut lat = Vec::new();
                    let mut res = Ok(());
                    let warm = WARMUP;
                    for i in 0..k + warm {
                        let t = Instant::now();
                        match collect(inner_cmd(
                            Inner::Libcontainer,
                            b,
                            1,
                            &format!("{prefix}-{i}"),
                        )) {
                            Ok(_) if i >= warm => lat.push(t.elapsed()),
                            Ok(_) => {}
                            Err(e) => {
                                res = Err(e);
                                break;
                            }
                        }
                    }
                    res.map(|()| lat)
                }
                Kind::Failed => Ok(Vec::new()),
            };
            match r {
                Ok(lat) => row.lat.extend(lat),
                Err(e) => row.error = Some(e),
            }
        }
    }

    println!();
    println!(
        "{:<40} {:>4} {:>9} {:>9} {:>9} {:>9}",
        "RUNTIME", "N", "MEDIAN", "P90", "MIN", "MAX"
    );
    for row in rows {
        let name = row.name;
        match (row.error, row.lat) {
            (Some(e), _) => println!("{name:<40} skipped: {e}"),
            (None, lat) if lat.is_empty() => println!("{name:<40} no measurements"),
            (None, mut lat) => {
                lat.sort();
                println!(
                    "{:<40} {:>4} {:>7.1}ms {:>7.1}ms {:>7.1}ms {:>7.1}ms",
                    name,
                    lat.len(),
                    pct(&lat, 0.5),
                    pct(&lat, 0.9),
                    pct(&lat, 0.0),
                    pct(&lat, 1.0),
                );
            }
        }
    }
    Ok(())
}

/// Runs a child that prints one duration (µs) per line; its failure is a
/// row's error, not the benchmark's.
fn collect(mut cmd: Command) -> Result<Vec<Duration>, String> {
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|e| format!("starting {:?}: {e}", cmd.get_program()))?;
    // Drain stderr alongside stdout: libcontainer's processes log there,
    // and a full pipe would block them (and so the child) forever.
    let mut err = child.stderr.take().ok_or("no stderr")?;
    let err = std::thread::spawn(move || {
        let mut s = String::new();
        let _ = std::io::Read::read_to_string(&mut err, &mut s);
        s
    });
    let out = child.stdout.take().ok_or("no stdout")?;
    let lat: Vec<Duration> = std::io::BufReader::new(out)
        .lines()
        .map_while(Result::ok)
        .filter_map(|l| l.trim().parse::<u64>().ok())
        .map(Duration::from_micros)
        .collect();
    let status = child.wait().map_err(|e| e.to_string())?;
    let err = err.join().unwrap_or_default();
    if !status.success() {
        let last = err.lines().last().unwrap_or("").trim().to_string();
        return Err(format!("failed ({status}): {last}"));
    }
    Ok(lat)
}

/// `--inner`: the iterations of one runtime, each printed as it ends.
fn run_inner(rt: Inner, args: &RuntimeBenchArgs) -> anyhow::Result<()> {
    use std::io::Write;
    let bundle = args.bundle.as_deref().context("--inner needs --bundle")?;
    let state = args.state.as_deref().context("--inner needs --state")?;
    std::fs::create_dir_all(state)?;
    let warm = if args.iterations > 1 { WARMUP } else { 0 };
    let mut out = std::io::stdout();
    for i in 0..args.iterations + warm {
        let id = format!("{}-{i}", args.id_prefix);
        let t = Instant::now();
        let code = match rt {
            Inner::Libcontainer => kubelet::bench_support::libcontainer_run(state, &id, bundle)
                .map_err(|e| anyhow::anyhow!("libcontainer: {e}"))?,
            Inner::Runc | Inner::Crun => {
                let o = Command::new(rt.name())
                    .arg("--root")
                    .arg(state)
                    .args(["run", "--bundle"])
                    .arg(bundle)
                    .arg(&id)
                    .stdin(Stdio::null())
                    .stdout(Stdio::null())
                    .stderr(Stdio::piped())
                    .output()
                    .with_context(|| format!("running {}", rt.name()))?;
                if !o.status.success() {
                    bail!(
                        "{} run: {} {}",
                        rt.name(),
                        o.status,
                        String::from_utf8_lossy(&o.stderr).trim()
                    );
                }
                0
            }
        };
        let took = t.elapsed();
        if code != 0 {
            bail!("{}: /bin/true exited {code}", rt.name());
        }
        if i >= warm {
            writeln!(out, "{}", took.as_micros())?;
        }
    }
    Ok(())
}

/// The temp dir and the cgroup parent of this run, removed on drop (with
/// whatever a failed runtime left running in them).
struct Host {
    dir: tempfile::TempDir,
    cgroup: String,
    bridge: String,
}

impl Host {
    fn new() -> anyhow::Result<Host> {
        let pid = std::process::id();
        Ok(Host {
            dir: tempfile::Builder::new().prefix("r8s-bench-rt").tempdir()?,
            cgroup: format!("r8s-benchrt-{pid}"),
            // Never created: cleanup_host only needs a name no one uses.
            bridge: format!("r8sbrt{}", pid % 1_000_000),
        })
    }
}

impl Drop for Host {
    fn drop(&mut self) {
        kubelet::cleanup_host(&self.cgroup, &self.bridge, self.dir.path());
    }
}

/// Imports the tarball into a scratch image store and copies its layers,
/// bottom first, into `rootfs` (busybox has one layer and no whiteouts).
fn unpack_rootfs(tar: &Path, store_dir: &Path, rootfs: &Path) -> anyhow::Result<()> {
    let store = image::ImageStore::open(store_dir)?;
    let refs = store
        .import(tar)
        .with_context(|| format!("importing {}", tar.display()))?;
    let reference = refs.first().context("the tarball holds no image")?;
    std::fs::create_dir_all(rootfs)?;
    for layer in store.unpack(reference)? {
        let st = Command::new("cp")
            .arg("-a")
            .arg(format!("{}/.", layer.display()))
            .arg(rootfs)
            .status()
            .context("running cp")?;
        if !st.success() {
            bail!("copying layer {} failed", layer.display());
        }
    }
    Ok(())
}

/// The path of an executable found on PATH.
fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH").and_then(|paths| {
        std::env::split_paths(&paths)
            .map(|d| d.join(name))
            .find(|p| p.is_file())
    })
}
