//! `r8s image …`: the node's image store from the command line (import,
//! pull, build, push, tag, inspect, list, remove).

use std::path::{Path, PathBuf};

use anyhow::Context;

/// `r8s image …`.
#[derive(clap::Subcommand)]
pub enum ImageCommand {
    /// Import OCI-layout or docker-save tarballs (also gzip or zstd).
    Import {
        /// Tarballs to import.
        #[arg(required = true)]
        files: Vec<PathBuf>,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Pull images from their registries (plain HTTP only for a
    /// registry on a loopback address).
    Pull {
        /// Image references, e.g. `127.0.0.1:5000/app:v1`.
        #[arg(required = true)]
        images: Vec<String>,
        /// Registry credentials, `USER:PASSWORD`.
        #[arg(long)]
        creds: Option<String>,
        /// Registry mirrors, credentials and TLS (k3s's `registries.yaml`).
        #[arg(long, default_value = "/etc/r8s/registries.yaml")]
        registries_config: PathBuf,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Push a stored image to a registry (as TARGET when given).
    Push {
        /// The image in the store.
        image: String,
        /// Where to push it, e.g. `127.0.0.1:5000/app:v1`.
        target: Option<String>,
        /// Registry credentials, `USER:PASSWORD`.
        #[arg(long)]
        creds: Option<String>,
        /// Registry credentials and TLS (k3s's `registries.yaml`).
        #[arg(long, default_value = "/etc/r8s/registries.yaml")]
        registries_config: PathBuf,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Build an image from a Dockerfile (FROM, ARG, ENV, COPY, ADD,
    /// WORKDIR, USER, EXPOSE, LABEL, CMD, ENTRYPOINT; no RUN yet).
    Build {
        /// The build context.
        context: PathBuf,
        /// The name of the result.
        #[arg(short = 't', long = "tag")]
        tag: String,
        /// The Dockerfile (default `CONTEXT/Dockerfile`).
        #[arg(short = 'f', long = "file")]
        file: Option<PathBuf>,
        /// `K=V` for the Dockerfile's ARGs.
        #[arg(long = "build-arg")]
        build_args: Vec<String>,
        /// Push the result to its registry.
        #[arg(long)]
        push: bool,
        /// Build up to this stage (`FROM … AS NAME`).
        #[arg(long)]
        target: Option<String>,
        /// Registry mirrors, credentials and TLS (k3s's `registries.yaml`).
        #[arg(long, default_value = "/etc/r8s/registries.yaml")]
        registries_config: PathBuf,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Give a stored image another name.
    Tag {
        /// The image in the store.
        image: String,
        /// Its new name.
        target: String,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Show a stored image: names, digests, size and its configuration.
    Inspect {
        /// The image in the store.
        image: String,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// List images.
    Ls {
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
    /// Remove images by reference or digest.
    Rm {
        #[arg(required = true)]
        images: Vec<String>,
        #[arg(long, default_value = "/var/lib/r8s", env = "R8S_DATA_DIR")]
        data_dir: PathBuf,
    },
}

pub(crate) fn store(data_dir: &Path) -> anyhow::Result<image::ImageStore> {
    let dir = data_dir.join("agent/images");
    image::ImageStore::open(&dir)
        .with_context(|| format!("opening the image store {}", dir.display()))
}

/// `--creds USER:PASSWORD`.
fn parse_creds(creds: Option<&str>) -> anyhow::Result<Option<image::Credentials>> {
    creds
        .map(|c| {
            let (username, password) =
                c.split_once(':').context("--creds must be USER:PASSWORD")?;
            Ok(image::Credentials {
                username: username.into(),
                password: password.into(),
            })
        })
        .transpose()
}

/// Per-layer progress for `r8s image pull`: bars redrawn in place on a
/// terminal, a line per finished layer otherwise.
fn pull_progress() -> image::pull::Progress {
    use std::io::{IsTerminal, Write};
    struct State {
        order: Vec<String>,
        seen: std::collections::HashMap<String, (u64, u64)>,
        drawn: usize,
        last: Option<std::time::Instant>,
    }
    let tty = std::io::stdout().is_terminal();
    let state = std::sync::Mutex::new(State {
        order: Vec::new(),
        seen: Default::default(),
        drawn: 0,
        last: None,
    });
    std::sync::Arc::new(move |digest: &str, done: u64, size: u64| {
        let mut st = state.lock().unwrap_or_else(|e| e.into_inner());
        let short: String = digest
            .trim_start_matches("sha256:")
            .chars()
            .take(12)
            .collect();
        let before = st.seen.insert(short.clone(), (done, size));
        if before.is_none() {
            st.order.push(short.clone());
        }
        let finished = done >= size;
        let mut out = std::io::stdout().lock();
        if !tty {
            if finished && before.is_none_or(|(d, s)| d < s) {
                let _ = writeln!(out, "{short}: done ({size} bytes)");
            }
            return;
        }
        let now = std::time::Instant::now();
        if !finished
            && st
                .last
                .is_some_and(|t| now.duration_since(t).as_millis() < 100)
        {
            return;
        }
        st.last = Some(now);
        if st.drawn > 0 {
            let _ = write!(out, "\x1b[{}A", st.drawn);
        }
        for layer in &st.order {
            let (d, s) = st.seen[layer];
            let width = 30usize;
            let filled = (d.min(s) * width as u64)
                .checked_div(s)
                .map_or(width, |f| f as usize);
            let _ = writeln!(
                out,
                "\x1b[2K{layer}: [{}{}] {:.1}/{:.1} MB",
                "=".repeat(filled),
                " ".repeat(width - filled),
                d as f64 / 1e6,
                s as f64 / 1e6
            );
        }
        st.drawn = st.order.len();
        let _ = out.flush();
    })
}

/// `r8s image …`.
pub fn image(cmd: ImageCommand) -> anyhow::Result<()> {
    match cmd {
        ImageCommand::Import { files, data_dir } => {
            let s = store(&data_dir)?;
            for f in files {
                let refs = s
                    .import(&f)
                    .with_context(|| format!("importing {}", f.display()))?;
                for r in refs {
                    println!("imported {r}");
                }
            }
        }
        ImageCommand::Pull {
            images,
            creds,
            registries_config,
            data_dir,
        } => {
            let config = image::RegistriesConfig::load(&registries_config)?;
            let s = store(&data_dir)?;
            let creds = parse_creds(creds.as_deref())?;
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            for i in images {
                let p = rt
                    .block_on(s.pull_with(&i, creds.as_ref(), &config, Some(pull_progress())))
                    .with_context(|| format!("pulling {i}"))?;
                println!("pulled {} {} ({} bytes)", p.reference, p.digest, p.size);
            }
        }
        ImageCommand::Push {
            image,
            target,
            creds,
            registries_config,
            data_dir,
        } => {
            let s = store(&data_dir)?;
            let config = image::RegistriesConfig::load(&registries_config)?;
            let creds = parse_creds(creds.as_deref())?;
            let target = target.unwrap_or_else(|| image.clone());
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let digest = rt
                .block_on(s.push(&image, &target, creds.as_ref(), &config))
                .with_context(|| format!("pushing {image} to {target}"))?;
            println!("pushed {target} {digest}");
        }
        ImageCommand::Build {
            context,
            tag,
            file,
            build_args,
            push,
            target,
            registries_config,
            data_dir,
        } => {
            let s = store(&data_dir)?;
            let config = image::RegistriesConfig::load(&registries_config)?;
            let mut args = std::collections::BTreeMap::new();
            for kv in build_args {
                let (k, v) = kv.split_once('=').context("--build-arg takes K=V")?;
                args.insert(k.to_string(), v.to_string());
            }
            let opts = image::build::BuildOptions {
                context,
                dockerfile: file,
                tag: tag.clone(),
                build_args: args,
                target,
            };
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            let digest = rt.block_on(s.build(&opts, &config))?;
            println!("built {tag} {digest}");
            if push {
                rt.block_on(s.push(&tag, &tag, None, &config))
                    .with_context(|| format!("pushing {tag}"))?;
                println!("pushed {tag} {digest}");
            }
        }
        ImageCommand::Tag {
            image,
            target,
            data_dir,
        } => {
            let s = store(&data_dir)?;
            let digest = s.inspect(&image)?.digest;
            println!("tagged {}", s.tag(&target, &digest)?);
        }
        ImageCommand::Inspect { image, data_dir } => {
            let s = store(&data_dir)?;
            let info = s.inspect(&image)?;
            let config = s.config(&image)?;
            let out = serde_json::json!({
                "references": info.references,
                "repoDigests": info.repo_digests,
                "digest": info.digest,
                "id": info.id,
                "size": info.size,
                "config": config,
            });
            println!("{}", serde_json::to_string_pretty(&out)?);
        }
        ImageCommand::Ls { data_dir } => {
            let s = store(&data_dir)?;
            println!("{:<50} {:<20} {:>10}", "IMAGE", "IMAGE ID", "SIZE");
            for i in s.list()? {
                let id = i.id.trim_start_matches("sha256:");
                let size = format!("{:.1}MB", i.size as f64 / 1e6);
                let names = if i.references.is_empty() {
                    vec!["<none>".to_string()]
                } else {
                    i.references.clone()
                };
                for n in names {
                    println!("{:<50} {:<20} {:>10}", n, &id[..id.len().min(13)], size);
                }
            }
        }
        ImageCommand::Rm { images, data_dir } => {
            let s = store(&data_dir)?;
            for i in images {
                for r in s.remove(&i).with_context(|| format!("removing {i}"))? {
                    println!("untagged {r}");
                }
            }
        }
    }
    Ok(())
}
