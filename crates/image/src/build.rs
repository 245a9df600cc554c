//! `r8s image build`: an image from a Dockerfile, on top of a base image
//! from the store (pulled when missing) or `scratch`. This first version
//! covers the instructions that need no container: FROM, ARG, ENV, COPY
//! and ADD from the build context, WORKDIR, USER, EXPOSE, LABEL, CMD and
//! ENTRYPOINT. A RUN step is refused with its line number.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use sha2::{Digest, Sha256};

use crate::registries::RegistriesConfig;
use crate::{ImageError, ImageStore, blobs, host_arch};

/// What to build.
#[derive(Debug, Clone)]
pub struct BuildOptions {
    /// The build context directory.
    pub context: PathBuf,
    /// The Dockerfile (default `<context>/Dockerfile`).
    pub dockerfile: Option<PathBuf>,
    /// The name to tag the result with.
    pub tag: String,
    /// `--build-arg K=V`.
    pub build_args: BTreeMap<String, String>,
    /// `--target`: the stage to stop at (default the last).
    pub target: Option<String>,
}

/// A finished build stage: its name, config and layer descriptors.
type Stage = (Option<String>, Value, Vec<Value>);

/// One instruction and the line it starts on.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Instruction {
    line: usize,
    keyword: String,
    args: String,
}

fn failure(line: usize, what: impl std::fmt::Display) -> ImageError {
    ImageError::InvalidArchive(format!("Dockerfile:{line}: {what}"))
}

/// Splits a Dockerfile into instructions (comments dropped, `\`
/// continuations joined).
fn parse(text: &str) -> Vec<Instruction> {
    let mut out = Vec::new();
    let mut pending: Option<(usize, String)> = None;
    for (i, raw) in text.lines().enumerate() {
        let line = raw.trim();
        if pending.is_none() && (line.is_empty() || line.starts_with('#')) {
            continue;
        }
        let (start, mut acc) = pending.take().unwrap_or((i + 1, String::new()));
        if let Some(cont) = line.strip_suffix('\\') {
            acc.push_str(cont);
            acc.push(' ');
            pending = Some((start, acc));
            continue;
        }
        acc.push_str(line);
        let (kw, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction {
            line: start,
            keyword: kw.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    if let Some((start, acc)) = pending {
        let (kw, args) = acc.split_once(char::is_whitespace).unwrap_or((&acc, ""));
        out.push(Instruction {
            line: start,
            keyword: kw.to_ascii_uppercase(),
            args: args.trim().to_string(),
        });
    }
    out
}

/// `$VAR` and `${VAR}` from `vars`.
fn expand(s: &str, vars: &BTreeMap<String, String>) -> String {
    let mut out = String::new();
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        if c != '$' {
            out.push(c);
            continue;
        }
        let braced = chars.peek() == Some(&'{');
        if braced {
            chars.next();
        }
        let mut name = String::new();
        while let Some(&n) = chars.peek() {
            if n.is_ascii_alphanumeric() || n == '_' {
                name.push(n);
                chars.next();
            } else {
                break;
            }
        }
        if braced && chars.peek() == Some(&'}') {
            chars.next();
        }
        if name.is_empty() {
            out.push('$');
        } else {
            out.push_str(vars.get(&name).map(String::as_str).unwrap_or(""));
        }
    }
    out
}

/// CMD/ENTRYPOINT: the JSON (exec) form, or the shell form run by sh.
fn command_form(args: &str) -> Value {
    match serde_json::from_str::<Vec<String>>(args) {
        Ok(v) => json!(v),
        Err(_) => json!(["/bin/sh", "-c", args]),
    }
}

/// `K=V K2=V2` or the legacy `K V`.
fn pairs(args: &str) -> Vec<(String, String)> {
    if !args.contains('=') {
        return match args.split_once(char::is_whitespace) {
            Some((k, v)) => vec![(k.to_string(), v.trim().to_string())],
            None => vec![],
        };
    }
    args.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), v.trim_matches('"').to_string()))
        .collect()
}

/// A tar layer being assembled.
struct Layer {
    tar: tar::Builder<Vec<u8>>,
    dirs: std::collections::BTreeSet<String>,
    /// The build context and its `.dockerignore`, for COPY from it.
    ignore: Option<(PathBuf, Ignore)>,
}

/// `.dockerignore`: patterns over context-relative paths (`*`, `?`, `**`
/// for any number of directories, `!` to include again; the last match
/// decides), as docker reads it.
#[derive(Debug, Clone, Default)]
struct Ignore(Vec<(bool, Vec<String>)>);

impl Ignore {
    fn load(context: &Path) -> Ignore {
        let text = std::fs::read_to_string(context.join(".dockerignore")).unwrap_or_default();
        Ignore(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(|l| {
                    let (include, pat) = match l.strip_prefix('!') {
                        Some(p) => (true, p.trim()),
                        None => (false, l),
                    };
                    let segs = pat
                        .trim_start_matches("./")
                        .trim_matches('/')
                        .split('/')
                        .filter(|s| !s.is_empty())
                        .map(str::to_string)
                        .collect();
                    (include, segs)
                })
                .collect(),
        )
    }

    /// Whether the context-relative `path` is left out of the build.
    fn excludes(&self, path: &str) -> bool {
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        let mut out = false;
        for (include, pat) in &self.0 {
            // A pattern matching a directory covers what is under it.
            let hit = (1..=parts.len()).any(|n| segments_match(pat, &parts[..n]));
            if hit {
                out = !include;
            }
        }
        out
    }
}

fn segments_match(pat: &[String], path: &[&str]) -> bool {
    match (pat.first(), path.first()) {
        (None, None) => true,
        (Some(p), _) if p == "**" => {
            segments_match(&pat[1..], path) || (!path.is_empty() && segments_match(pat, &path[1..]))
        }
        (Some(p), Some(n)) => glob_match(p, n) && segments_match(&pat[1..], &path[1..]),
        _ => false,
    }
}

impl Layer {
    fn new(ignore: Option<(PathBuf, Ignore)>) -> Layer {
        Layer {
            tar: tar::Builder::new(Vec::new()),
            dirs: Default::default(),
            ignore,
        }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64, owner: (u64, u64)) -> tar::Header {
        let mut h = tar::Header::new_gnu();
        h.set_entry_type(kind);
        h.set_mode(mode);
        h.set_size(size);
        h.set_uid(owner.0);
        h.set_gid(owner.1);
        // A fixed time keeps rebuilds of unchanged content identical.
        h.set_mtime(0);
        h
    }

    /// The parent directories of `path` (relative, no leading `/`).
    fn parents(&mut self, path: &str, owner: (u64, u64)) -> std::io::Result<()> {
        let mut acc = String::new();
        let parts: Vec<&str> = path.split('/').filter(|p| !p.is_empty()).collect();
        for p in parts.iter().take(parts.len().saturating_sub(1)) {
            acc = if acc.is_empty() {
                (*p).to_string()
            } else {
                format!("{acc}/{p}")
            };
            if self.dirs.insert(acc.clone()) {
                let mut h = Self::header(tar::EntryType::Directory, 0o755, 0, owner);
                self.tar
                    .append_data(&mut h, format!("{acc}/"), std::io::empty())?;
            }
        }
        Ok(())
    }

    /// Adds `src` (a file or a directory tree) at `dest`.
    fn add(
        &mut self,
        src: &Path,
        dest: &str,
        owner: (u64, u64),
        chmod: Option<u32>,
    ) -> std::io::Result<()> {
        use std::os::unix::fs::PermissionsExt;
        if let Some((context, ignore)) = &self.ignore
            && let Ok(rel) = src.strip_prefix(context)
            && ignore.excludes(&rel.to_string_lossy())
        {
            return Ok(());
        }
        let meta = std::fs::symlink_metadata(src)?;
        let dest = dest.trim_start_matches('/').to_string();
        self.parents(&dest, owner)?;
        if meta.is_dir() {
            if !dest.is_empty() && self.dirs.insert(dest.clone()) {
                let mode = chmod.unwrap_or(meta.permissions().mode() & 0o7777);
                let mut h = Self::header(tar::EntryType::Directory, mode, 0, owner);
                self.tar
                    .append_data(&mut h, format!("{dest}/"), std::io::empty())?;
            }
            let mut entries: Vec<_> = std::fs::read_dir(src)?.flatten().collect();
            entries.sort_by_key(|e| e.file_name());
            for e in entries {
                let name = e.file_name().to_string_lossy().into_owned();
                let child = if dest.is_empty() {
                    name
                } else {
                    format!("{dest}/{name}")
                };
                self.add(&e.path(), &child, owner, chmod)?;
            }
        } else if std::os::unix::fs::FileTypeExt::is_char_device(&meta.file_type()) {
            // An overlay whiteout in an unpacked layer: nothing to copy.
        } else if meta.file_type().is_symlink() {
            let target = std::fs::read_link(src)?;
            let mut h = Self::header(tar::EntryType::Symlink, 0o777, 0, owner);
            self.tar.append_link(&mut h, &dest, target)?;
        } else {
            let mode = chmod.unwrap_or(meta.permissions().mode() & 0o7777);
            let mut h = Self::header(tar::EntryType::Regular, mode, meta.len(), owner);
            self.tar
                .append_data(&mut h, &dest, std::fs::File::open(src)?)?;
        }
        Ok(())
    }
}

/// The sources a COPY names in the context (with `*` and `?` globs in the
/// last component), refusing any that leave it.
fn sources(context: &Path, pattern: &str, line: usize) -> Result<Vec<PathBuf>, ImageError> {
    let rel = pattern.trim_start_matches("./").trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(failure(
            line,
            format!("{pattern}: outside the build context"),
        ));
    }
    let (dir, last) = match rel.rsplit_once('/') {
        Some((d, l)) => (context.join(d), l),
        None => (context.to_path_buf(), rel),
    };
    if rel.is_empty() || rel == "." {
        return Ok(vec![context.to_path_buf()]);
    }
    if !last.contains(['*', '?']) {
        let p = dir.join(last);
        return if p.exists() {
            Ok(vec![p])
        } else {
            Err(failure(
                line,
                format!("{pattern}: no such file or directory in the build context"),
            ))
        };
    }
    let mut out: Vec<PathBuf> = std::fs::read_dir(&dir)
        .map_err(|e| failure(line, format!("{pattern}: {e}")))?
        .flatten()
        .filter(|e| glob_match(last, &e.file_name().to_string_lossy()))
        .map(|e| e.path())
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(failure(
            line,
            format!("{pattern}: no source files were specified"),
        ));
    }
    Ok(out)
}

/// A finished stage by `AS` name or index.
fn find_stage<'a>(stages: &'a [Stage], name: &str) -> Option<&'a Stage> {
    let lower = name.to_ascii_lowercase();
    stages
        .iter()
        .find(|(n, _, _)| n.as_deref() == Some(lower.as_str()))
        .or_else(|| name.parse::<usize>().ok().and_then(|i| stages.get(i)))
}

/// Sources of `COPY --from`: `pattern` (absolute, `*`/`?` in its last
/// component) in a stage's unpacked layers, bottom first. A file comes
/// from the top-most layer that has it; a directory from every layer that
/// has it, in order, so later layers' entries win.
fn stage_sources(
    layers: &[PathBuf],
    pattern: &str,
    line: usize,
) -> Result<Vec<PathBuf>, ImageError> {
    let rel = pattern.trim_start_matches('/');
    if rel.split('/').any(|p| p == "..") {
        return Err(failure(line, format!("{pattern}: outside the stage")));
    }
    let (dir, last) = rel.rsplit_once('/').unwrap_or(("", rel));
    let names: Vec<String> = if last.contains(['*', '?']) {
        let mut set = std::collections::BTreeSet::new();
        for l in layers {
            for e in std::fs::read_dir(l.join(dir))
                .into_iter()
                .flatten()
                .flatten()
            {
                let n = e.file_name().to_string_lossy().into_owned();
                if glob_match(last, &n) {
                    set.insert(n);
                }
            }
        }
        set.into_iter().collect()
    } else {
        vec![last.to_string()]
    };
    let mut out = Vec::new();
    for n in names {
        let path = if dir.is_empty() {
            n
        } else {
            format!("{dir}/{n}")
        };
        let present: Vec<PathBuf> = layers
            .iter()
            .map(|l| l.join(&path))
            .filter(|p| std::fs::symlink_metadata(p).is_ok())
            .collect();
        match present.last() {
            Some(top) if top.is_dir() => out.extend(present.iter().filter(|p| p.is_dir()).cloned()),
            Some(top)
                if !std::os::unix::fs::FileTypeExt::is_char_device(
                    &std::fs::symlink_metadata(top)
                        .map_err(|e| failure(line, e))?
                        .file_type(),
                ) =>
            {
                out.push(top.clone())
            }
            _ => {}
        }
    }
    if out.is_empty() {
        return Err(failure(line, format!("{pattern}: not found in the stage")));
    }
    Ok(out)
}

fn glob_match(pattern: &str, name: &str) -> bool {
    fn go(p: &[char], n: &[char]) -> bool {
        match (p.first(), n.first()) {
            (None, None) => true,
            (Some('*'), _) => go(&p[1..], n) || (!n.is_empty() && go(p, &n[1..])),
            (Some('?'), Some(_)) => go(&p[1..], &n[1..]),
            (Some(a), Some(b)) if a == b => go(&p[1..], &n[1..]),
            _ => false,
        }
    }
    let p: Vec<char> = pattern.chars().collect();
    let n: Vec<char> = name.chars().collect();
    go(&p, &n)
}

impl ImageStore {
    /// Builds the Dockerfile and tags the result; returns the manifest
    /// digest. The base image is pulled (through `config`) when missing.
    pub async fn build(
        &self,
        opts: &BuildOptions,
        config: &RegistriesConfig,
    ) -> Result<String, ImageError> {
        let file = opts
            .dockerfile
            .clone()
            .unwrap_or_else(|| opts.context.join("Dockerfile"));
        let text = std::fs::read_to_string(&file)
            .map_err(ImageError::io(format!("reading {}", file.display())))?;
        let mut vars: BTreeMap<String, String> = BTreeMap::new();
        let mut cfg: Option<Value> = None;
        let mut layers: Vec<Value> = Vec::new();
        let mut workdir = String::from("/");
        let mut stages: Vec<Stage> = Vec::new();
        let mut stage_name: Option<String> = None;
        let mut reached_target = false;
        for ins in parse(&text) {
            let line = ins.line;
            if ins.keyword == "ARG" {
                let (k, v) = ins.args.split_once('=').unwrap_or((&ins.args, ""));
                let value = opts
                    .build_args
                    .get(k)
                    .cloned()
                    .unwrap_or_else(|| v.trim_matches('"').to_string());
                vars.insert(k.trim().to_string(), value);
                continue;
            }
            let args = expand(&ins.args, &vars);
            if ins.keyword == "FROM" {
                let words: Vec<&str> = args.split_whitespace().collect();
                let base = words.first().copied().unwrap_or("");
                if base.is_empty() {
                    return Err(failure(line, "FROM needs an image"));
                }
                let name = match words.as_slice() {
                    [_, as_, n] if as_.eq_ignore_ascii_case("as") => Some(n.to_ascii_lowercase()),
                    [_] => None,
                    _ => return Err(failure(line, "FROM takes an image and an optional AS name")),
                };
                if let Some(c) = cfg.take() {
                    let done = stage_name.take();
                    let is_target = opts.target.is_some() && done == opts.target;
                    stages.push((done, c, std::mem::take(&mut layers)));
                    if is_target {
                        reached_target = true;
                        break;
                    }
                }
                stage_name = name;
                let (c, l) = match find_stage(&stages, base) {
                    Some((_, c, l)) => (c.clone(), l.clone()),
                    None => self
                        .base(base, config)
                        .await
                        .map_err(|e| failure(line, e))?,
                };
                workdir = c["config"]["WorkingDir"]
                    .as_str()
                    .filter(|w| !w.is_empty())
                    .unwrap_or("/")
                    .to_string();
                cfg = Some(c);
                layers = l;
                continue;
            }
            let Some(c) = cfg.as_mut() else {
                return Err(failure(line, format!("{} before FROM", ins.keyword)));
            };
            let conf = &mut c["config"];
            match ins.keyword.as_str() {
                "ENV" => {
                    let mut env: Vec<String> = conf["Env"]
                        .as_array()
                        .into_iter()
                        .flatten()
                        .filter_map(|v| v.as_str().map(str::to_string))
                        .collect();
                    for (k, v) in pairs(&args) {
                        env.retain(|e| e.split_once('=').map(|(n, _)| n) != Some(k.as_str()));
                        env.push(format!("{k}={v}"));
                        vars.insert(k, v);
                    }
                    conf["Env"] = json!(env);
                }
                "LABEL" => {
                    for (k, v) in pairs(&args) {
                        conf["Labels"][k] = json!(v);
                    }
                }
                "WORKDIR" => {
                    workdir = if args.starts_with('/') {
                        args.clone()
                    } else {
                        format!("{}/{args}", workdir.trim_end_matches('/'))
                    };
                    conf["WorkingDir"] = json!(workdir);
                }
                "USER" => conf["User"] = json!(args),
                "EXPOSE" => {
                    for p in args.split_whitespace() {
                        let key = if p.contains('/') {
                            p.to_string()
                        } else {
                            format!("{p}/tcp")
                        };
                        conf["ExposedPorts"][key] = json!({});
                    }
                }
                "CMD" => conf["Cmd"] = command_form(&args),
                "ENTRYPOINT" => {
                    conf["Entrypoint"] = command_form(&args);
                    // As docker: a new entrypoint drops the base image's CMD.
                    if let Some(o) = conf.as_object_mut() {
                        o.remove("Cmd");
                    }
                }
                "COPY" | "ADD" => {
                    let mut words: Vec<&str> = args.split_whitespace().collect();
                    let mut owner = (0, 0);
                    let mut chmod = None;
                    let mut from: Option<String> = None;
                    while let Some(flag) = words.first().filter(|w| w.starts_with("--")) {
                        let (k, v) = flag.split_once('=').unwrap_or((flag, ""));
                        match k {
                            "--chown" => {
                                let (u, g) = v.split_once(':').unwrap_or((v, v));
                                owner = (
                                    u.parse()
                                        .map_err(|_| failure(line, "--chown takes numeric ids"))?,
                                    g.parse()
                                        .map_err(|_| failure(line, "--chown takes numeric ids"))?,
                                );
                            }
                            "--from" => from = Some(v.to_ascii_lowercase()),
                            "--chmod" => {
                                chmod =
                                    Some(u32::from_str_radix(v, 8).map_err(|_| {
                                        failure(line, "--chmod takes an octal mode")
                                    })?)
                            }
                            other => {
                                return Err(failure(
                                    line,
                                    format!("{other} is not supported by r8s image build yet"),
                                ));
                            }
                        }
                        words.remove(0);
                    }
                    if words.len() < 2 {
                        return Err(failure(
                            line,
                            format!("{} needs a source and a destination", ins.keyword),
                        ));
                    }
                    let dest_raw = words.pop().unwrap_or_default();
                    let dest = if dest_raw.starts_with('/') {
                        dest_raw.to_string()
                    } else {
                        format!("{}/{dest_raw}", workdir.trim_end_matches('/'))
                    };
                    let mut layer = Layer::new(
                        from.is_none()
                            .then(|| (opts.context.clone(), Ignore::load(&opts.context))),
                    );
                    let many = words.len() > 1;
                    // Another stage's (or image's) file system, layer by
                    // layer, bottom first.
                    let from_dirs = match &from {
                        None => None,
                        Some(f) => {
                            let (fc, fl) = match find_stage(&stages, f) {
                                Some((_, c, l)) => (c.clone(), l.clone()),
                                None => self.base(f, config).await.map_err(|e| failure(line, e))?,
                            };
                            Some(self.layer_dirs(&fc, &fl)?)
                        }
                    };
                    for pat in &words {
                        let found = match &from_dirs {
                            Some(dirs) => stage_sources(dirs, pat, line)?,
                            None => sources(&opts.context, pat, line)?,
                        };
                        for src in found {
                            let into_dir = dest.ends_with('/') || many || src.is_dir();
                            let target = if into_dir && !src.is_dir() {
                                format!(
                                    "{}/{}",
                                    dest.trim_end_matches('/'),
                                    src.file_name().unwrap_or_default().to_string_lossy()
                                )
                            } else {
                                dest.clone()
                            };
                            layer
                                .add(&src, &target, owner, chmod)
                                .map_err(|e| failure(line, e))?;
                        }
                    }
                    let desc = self.store_layer(layer)?;
                    if let Some(d) = c["rootfs"]["diff_ids"].as_array_mut() {
                        d.push(desc.1.clone());
                    }
                    layers.push(desc.0);
                    if let Some(h) = c["history"].as_array_mut() {
                        h.push(json!({"created_by": format!("{} {}", ins.keyword, ins.args)}));
                    }
                }
                "RUN" => return Err(failure(line, "RUN is not supported by r8s image build yet")),
                "MAINTAINER" | "STOPSIGNAL" | "HEALTHCHECK" | "SHELL" | "ONBUILD" | "VOLUME" => {
                    tracing::warn!(line, instruction = %ins.keyword, "ignored by r8s image build");
                }
                other => return Err(failure(line, format!("unknown instruction: {other}"))),
            }
        }
        if !reached_target && let Some(c) = cfg.take() {
            stages.push((stage_name.take(), c, std::mem::take(&mut layers)));
        }
        if let Some(t) = &opts.target
            && stages.last().is_none_or(|(n, _, _)| n.as_ref() != Some(t))
        {
            return Err(ImageError::InvalidArchive(format!(
                "target stage {t:?} could not be found"
            )));
        }
        let (_, mut cfg, layers) = stages
            .pop()
            .ok_or_else(|| failure(1, "no FROM instruction"))?;
        cfg["created"] = json!("1970-01-01T00:00:00Z");
        let cfg_bytes = serde_json::to_vec(&cfg)?;
        let cfg_digest = blobs::write_bytes(self, &cfg_bytes)?;
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cfg_digest, "size": cfg_bytes.len()},
            "layers": layers,
        });
        let digest = blobs::write_bytes(self, &serde_json::to_vec(&manifest)?)?;
        self.tag(&opts.tag, &digest)?;
        Ok(digest)
    }

    /// The base image's config and layer descriptors (pulled if missing).
    async fn base(
        &self,
        base: &str,
        config: &RegistriesConfig,
    ) -> Result<(Value, Vec<Value>), ImageError> {
        if base == "scratch" {
            let cfg = json!({"architecture": host_arch(), "os": "linux", "config": {},
                "rootfs": {"type": "layers", "diff_ids": []}, "history": []});
            return Ok((cfg, Vec::new()));
        }
        if self.inspect(base).is_err() {
            self.pull_with(base, None, config, None).await?;
        }
        let resolved = self.resolve(base)?;
        let manifest: Value = serde_json::from_slice(&blobs::read(self, &resolved.digest)?)?;
        let mut cfg: Value = serde_json::from_slice(&blobs::read(
            self,
            resolved.manifest.config().digest().as_ref(),
        )?)?;
        if !cfg["history"].is_array() {
            cfg["history"] = json!([]);
        }
        if !cfg["config"].is_object() {
            cfg["config"] = json!({});
        }
        Ok((
            cfg,
            manifest["layers"].as_array().cloned().unwrap_or_default(),
        ))
    }

    /// A stage's layers unpacked, bottom first.
    fn layer_dirs(&self, cfg: &Value, layers: &[Value]) -> Result<Vec<PathBuf>, ImageError> {
        let diff_ids: Vec<&str> = cfg["rootfs"]["diff_ids"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        if diff_ids.len() != layers.len() {
            return Err(ImageError::InvalidArchive(
                "a stage's config and layers disagree".into(),
            ));
        }
        layers
            .iter()
            .zip(diff_ids)
            .map(|(l, d)| crate::unpack::unpack_layer(self, l["digest"].as_str().unwrap_or(""), d))
            .collect()
    }

    /// Gzips and stores a layer: its descriptor and diff ID.
    fn store_layer(&self, layer: Layer) -> Result<(Value, Value), ImageError> {
        let tar = layer
            .tar
            .into_inner()
            .map_err(ImageError::io("finishing a layer"))?;
        let diff_id = format!("sha256:{}", hex::encode(Sha256::digest(&tar)));
        let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
        gz.write_all(&tar)
            .map_err(ImageError::io("compressing a layer"))?;
        let gz = gz.finish().map_err(ImageError::io("compressing a layer"))?;
        let digest = blobs::write_bytes(self, &gz)?;
        Ok((
            json!({"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": digest, "size": gz.len()}),
            json!(diff_id),
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn dockerfiles_parse_with_continuations_and_variables() {
        let ins = parse("# c\nFROM busybox AS base\n\nENV A=1 \\\n    B=2\nCMD [\"httpd\"]\n");
        let kws: Vec<(usize, &str)> = ins.iter().map(|i| (i.line, i.keyword.as_str())).collect();
        assert_eq!(kws, [(2, "FROM"), (4, "ENV"), (6, "CMD")]);
        assert_eq!(
            pairs(&ins[1].args),
            [("A".into(), "1".into()), ("B".into(), "2".into())]
        );
        let vars = BTreeMap::from([("V".to_string(), "x".to_string())]);
        assert_eq!(expand("a/$V/${V}b/$", &vars), "a/x/xb/$");
        assert_eq!(command_form("[\"a\", \"b\"]"), json!(["a", "b"]));
        assert_eq!(command_form("echo hi"), json!(["/bin/sh", "-c", "echo hi"]));
        assert!(glob_match("*.html", "index.html") && !glob_match("*.html", "a.css"));
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(
            dir.path().join(".dockerignore"),
            "# c\n*.log\n**/secret\nbuild\n!build/keep.txt\n",
        )
        .unwrap();
        let ig = Ignore::load(dir.path());
        assert!(ig.excludes("debug.log"));
        assert!(ig.excludes("a/b/secret") && ig.excludes("secret"));
        assert!(ig.excludes("build/out.o") && !ig.excludes("build/keep.txt"));
        assert!(!ig.excludes("index.html") && !ig.excludes("logs/x.txt"));
    }
}
