//! `r8s registry`: an OCI distribution (v2) registry, enough for `docker`,
//! `skopeo`, `crane` and r8s's own pulls to push and pull through it:
//! monolithic and chunked blob uploads, cross-repository mounts, blob and
//! manifest GET/HEAD/DELETE, tag listing and the catalog.
//!
//! Storage is content-addressed on disk:
//!
//! ```text
//! <dir>/blobs/sha256/<hex>                  every blob and manifest, once
//! <dir>/repos/<name>/_manifests/<hex>       media type of a manifest of <name>
//! <dir>/repos/<name>/_tags/<tag>            the manifest digest a tag names
//! <dir>/repos/<name>/_blobs/<hex>           a blob linked into <name>
//! <dir>/uploads/<uuid>                      uploads in progress
//! ```
//!
//! Blobs are verified against their digest before they are linked; a
//! repository only serves what was pushed or mounted into it.

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode, header};
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use serde_json::json;
use sha2::{Digest, Sha256};

type Body = Full<Bytes>;

/// A registry's on-disk state.
#[derive(Debug, Clone)]
pub struct Registry {
    dir: PathBuf,
}

/// A distribution-spec error: its code, message and HTTP status.
struct Failure(StatusCode, &'static str, String);

impl Failure {
    fn response(&self) -> Response<Body> {
        let body = json!({"errors": [{"code": self.1, "message": self.2}]});
        reply(self.0)
            .header(header::CONTENT_TYPE, "application/json")
            .body(Full::new(Bytes::from(body.to_string())))
            .unwrap_or_default()
    }
}

fn io_failure(e: std::io::Error) -> Failure {
    Failure(StatusCode::INTERNAL_SERVER_ERROR, "UNKNOWN", e.to_string())
}

fn reply(code: StatusCode) -> http::response::Builder {
    Response::builder()
        .status(code)
        .header("Docker-Distribution-API-Version", "registry/2.0")
}

fn empty(code: StatusCode) -> Response<Body> {
    reply(code).body(Full::default()).unwrap_or_default()
}

/// A repository name as the spec allows it: lowercase path components.
fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.chars()
                    .all(|ch| ch.is_ascii_lowercase() || ch.is_ascii_digit() || "._-".contains(ch))
                && c.chars()
                    .next()
                    .is_some_and(|ch| ch.is_ascii_alphanumeric())
        })
}

/// `sha256:<64 hex>` as a file name, or None.
fn hex_of(digest: &str) -> Option<&str> {
    let hex = digest.strip_prefix("sha256:")?;
    (hex.len() == 64
        && hex
            .chars()
            .all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()))
    .then_some(hex)
}

/// What a request path asks for.
enum Route<'a> {
    Base,
    Catalog,
    Tags(&'a str),
    Manifest(&'a str, &'a str),
    Blob(&'a str, &'a str),
    Uploads(&'a str),
    Upload(&'a str, &'a str),
}

fn route(path: &str) -> Option<Route<'_>> {
    let rest = path.strip_prefix("/v2")?;
    if rest.is_empty() || rest == "/" {
        return Some(Route::Base);
    }
    let rest = rest.strip_prefix('/')?;
    if rest == "_catalog" {
        return Some(Route::Catalog);
    }
    if let Some(name) = rest.strip_suffix("/tags/list") {
        return Some(Route::Tags(name));
    }
    if let Some(name) = rest
        .strip_suffix("/blobs/uploads/")
        .or_else(|| rest.strip_suffix("/blobs/uploads"))
    {
        return Some(Route::Uploads(name));
    }
    if let Some((name, id)) = rest.rsplit_once("/blobs/uploads/") {
        return Some(Route::Upload(name, id));
    }
    if let Some((name, r)) = rest.rsplit_once("/manifests/") {
        return Some(Route::Manifest(name, r));
    }
    if let Some((name, d)) = rest.rsplit_once("/blobs/") {
        return Some(Route::Blob(name, d));
    }
    None
}

fn query_param(query: Option<&str>, key: &str) -> Option<String> {
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == key)
        .map(|(_, v)| v.into_owned())
        .filter(|v| !v.is_empty())
}

impl Registry {
    /// Opens (creating) a registry under `dir`.
    pub fn open(dir: &Path) -> std::io::Result<Registry> {
        for d in ["blobs/sha256", "repos", "uploads"] {
            std::fs::create_dir_all(dir.join(d))?;
        }
        Ok(Registry {
            dir: dir.to_path_buf(),
        })
    }

    fn blob_path(&self, hex: &str) -> PathBuf {
        self.dir.join("blobs/sha256").join(hex)
    }

    fn repo(&self, name: &str) -> PathBuf {
        self.dir.join("repos").join(name)
    }

    fn linked(&self, name: &str, hex: &str) -> bool {
        self.repo(name).join("_blobs").join(hex).exists()
            || self.repo(name).join("_manifests").join(hex).exists()
    }

    fn link(&self, name: &str, kind: &str, hex: &str, content: &str) -> std::io::Result<()> {
        let dir = self.repo(name).join(kind);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(hex), content)
    }

    /// Moves a verified temp file into the blob store.
    fn commit(&self, tmp: &Path, expected: &str) -> Result<(), Failure> {
        let hex = hex_of(expected).ok_or_else(|| {
            Failure(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!("invalid digest {expected}"),
            )
        })?;
        let mut f = std::fs::File::open(tmp).map_err(io_failure)?;
        let mut h = Sha256::new();
        std::io::copy(&mut f, &mut h).map_err(io_failure)?;
        let actual = hex::encode(h.finalize());
        if actual != hex {
            let _ = std::fs::remove_file(tmp);
            return Err(Failure(
                StatusCode::BAD_REQUEST,
                "DIGEST_INVALID",
                format!(
                    "provided digest {expected} does not match uploaded content (sha256:{actual})"
                ),
            ));
        }
        std::fs::rename(tmp, self.blob_path(hex)).map_err(io_failure)
    }

    /// Serves one request.
    pub async fn handle(&self, req: Request<Incoming>) -> Response<Body> {
        match self.serve(req).await {
            Ok(r) => r,
            Err(f) => f.response(),
        }
    }

    async fn serve(&self, req: Request<Incoming>) -> Result<Response<Body>, Failure> {
        let path = req.uri().path().to_string();
        let query = req.uri().query().map(str::to_string);
        let method = req.method().clone();
        let unknown = || {
            Failure(
                StatusCode::NOT_FOUND,
                "NOT_FOUND",
                format!("no route for {path}"),
            )
        };
        let r = route(&path).ok_or_else(unknown)?;
        let name_check = |n: &str| {
            if valid_name(n) {
                Ok(())
            } else {
                Err(Failure(
                    StatusCode::BAD_REQUEST,
                    "NAME_INVALID",
                    format!("invalid repository name {n:?}"),
                ))
            }
        };
        match (r, &method) {
            (Route::Base, &Method::GET | &Method::HEAD) => Ok(reply(StatusCode::OK)
                .header(header::CONTENT_TYPE, "application/json")
                .body(Full::new(Bytes::from_static(b"{}")))
                .unwrap_or_default()),
            (Route::Catalog, &Method::GET) => {
                let mut repos = Vec::new();
                collect_repos(&self.dir.join("repos"), "", &mut repos);
                repos.sort();
                Ok(json_reply(json!({"repositories": repos})))
            }
            (Route::Tags(name), &Method::GET) => {
                name_check(name)?;
                let dir = self.repo(name).join("_tags");
                let mut tags: Vec<String> = std::fs::read_dir(&dir)
                    .map_err(|_| {
                        Failure(
                            StatusCode::NOT_FOUND,
                            "NAME_UNKNOWN",
                            format!("repository {name} not known"),
                        )
                    })?
                    .flatten()
                    .map(|e| e.file_name().to_string_lossy().into_owned())
                    .collect();
                tags.sort();
                Ok(json_reply(json!({"name": name, "tags": tags})))
            }
            (Route::Blob(name, digest), m @ (&Method::GET | &Method::HEAD)) => {
                name_check(name)?;
                let hex = hex_of(digest)
                    .filter(|h| self.linked(name, h))
                    .ok_or_else(|| {
                        Failure(
                            StatusCode::NOT_FOUND,
                            "BLOB_UNKNOWN",
                            format!("blob {digest} unknown to {name}"),
                        )
                    })?;
                let bytes = if m == Method::GET {
                    tokio::fs::read(self.blob_path(hex))
                        .await
                        .map_err(io_failure)?
                } else {
                    Vec::new()
                };
                let len = std::fs::metadata(self.blob_path(hex))
                    .map_err(io_failure)?
                    .len();
                Ok(reply(StatusCode::OK)
                    .header(header::CONTENT_TYPE, "application/octet-stream")
                    .header(header::CONTENT_LENGTH, len)
                    .header("Docker-Content-Digest", digest)
                    .body(Full::new(Bytes::from(bytes)))
                    .unwrap_or_default())
            }
            (Route::Blob(name, digest), &Method::DELETE) => {
                name_check(name)?;
                let hex = hex_of(digest)
                    .filter(|h| self.linked(name, h))
                    .ok_or_else(|| {
                        Failure(
                            StatusCode::NOT_FOUND,
                            "BLOB_UNKNOWN",
                            format!("blob {digest} unknown to {name}"),
                        )
                    })?;
                let _ = std::fs::remove_file(self.repo(name).join("_blobs").join(hex));
                Ok(empty(StatusCode::ACCEPTED))
            }
            (Route::Uploads(name), &Method::POST) => {
                name_check(name)?;
                if let (Some(mount), Some(from)) = (
                    query_param(query.as_deref(), "mount"),
                    query_param(query.as_deref(), "from"),
                ) && let Some(hex) = hex_of(&mount)
                    && valid_name(&from)
                    && self.linked(&from, hex)
                {
                    self.link(name, "_blobs", hex, "").map_err(io_failure)?;
                    return Ok(created_blob(name, &mount));
                }
                let id = uuid::Uuid::new_v4().to_string();
                let tmp = self.dir.join("uploads").join(&id);
                let size = write_body(req.into_body(), &tmp, false).await?;
                if let Some(digest) = query_param(query.as_deref(), "digest") {
                    self.commit(&tmp, &digest)?;
                    let hex = hex_of(&digest).unwrap_or_default().to_string();
                    self.link(name, "_blobs", &hex, "").map_err(io_failure)?;
                    return Ok(created_blob(name, &digest));
                }
                Ok(upload_reply(StatusCode::ACCEPTED, name, &id, size))
            }
            (Route::Upload(name, id), m) => {
                name_check(name)?;
                if uuid::Uuid::parse_str(id).is_err() {
                    return Err(Failure(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        format!("upload {id} unknown"),
                    ));
                }
                let tmp = self.dir.join("uploads").join(id);
                if !tmp.exists() {
                    return Err(Failure(
                        StatusCode::NOT_FOUND,
                        "BLOB_UPLOAD_UNKNOWN",
                        format!("upload {id} unknown"),
                    ));
                }
                match *m {
                    Method::GET => {
                        let size = std::fs::metadata(&tmp).map_err(io_failure)?.len();
                        Ok(upload_reply(StatusCode::NO_CONTENT, name, id, size))
                    }
                    Method::PATCH => {
                        let size = write_body(req.into_body(), &tmp, true).await?;
                        Ok(upload_reply(StatusCode::ACCEPTED, name, id, size))
                    }
                    Method::PUT => {
                        let digest = query_param(query.as_deref(), "digest").ok_or_else(|| {
                            Failure(
                                StatusCode::BAD_REQUEST,
                                "DIGEST_INVALID",
                                "a digest is required".into(),
                            )
                        })?;
                        write_body(req.into_body(), &tmp, true).await?;
                        self.commit(&tmp, &digest)?;
                        let hex = hex_of(&digest).unwrap_or_default().to_string();
                        self.link(name, "_blobs", &hex, "").map_err(io_failure)?;
                        Ok(created_blob(name, &digest))
                    }
                    Method::DELETE => {
                        let _ = std::fs::remove_file(&tmp);
                        Ok(empty(StatusCode::NO_CONTENT))
                    }
                    _ => Err(unsupported()),
                }
            }
            (Route::Manifest(name, reference), m @ (&Method::GET | &Method::HEAD)) => {
                name_check(name)?;
                let hex = self.resolve(name, reference).ok_or_else(|| {
                    Failure(
                        StatusCode::NOT_FOUND,
                        "MANIFEST_UNKNOWN",
                        format!("manifest {reference} unknown to {name}"),
                    )
                })?;
                let media = std::fs::read_to_string(self.repo(name).join("_manifests").join(&hex))
                    .map_err(io_failure)?;
                let bytes = std::fs::read(self.blob_path(&hex)).map_err(io_failure)?;
                let len = bytes.len();
                let body = if m == Method::GET { bytes } else { Vec::new() };
                Ok(reply(StatusCode::OK)
                    .header(header::CONTENT_TYPE, media)
                    .header(header::CONTENT_LENGTH, len)
                    .header("Docker-Content-Digest", format!("sha256:{hex}"))
                    .body(Full::new(Bytes::from(body)))
                    .unwrap_or_default())
            }
            (Route::Manifest(name, reference), &Method::PUT) => {
                name_check(name)?;
                let media = req
                    .headers()
                    .get(header::CONTENT_TYPE)
                    .and_then(|v| v.to_str().ok())
                    .map(str::to_string);
                let id = uuid::Uuid::new_v4().to_string();
                let tmp = self.dir.join("uploads").join(&id);
                write_body(req.into_body(), &tmp, false).await?;
                let bytes = std::fs::read(&tmp).map_err(io_failure)?;
                let doc: serde_json::Value = serde_json::from_slice(&bytes).map_err(|e| {
                    let _ = std::fs::remove_file(&tmp);
                    Failure(StatusCode::BAD_REQUEST, "MANIFEST_INVALID", e.to_string())
                })?;
                let media = media
                    .or_else(|| doc["mediaType"].as_str().map(str::to_string))
                    .unwrap_or_else(|| "application/vnd.oci.image.manifest.v1+json".into());
                // Everything the manifest names must be in the repository.
                let children = doc["manifests"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .chain(std::iter::once(&doc["config"]).filter(|c| c.is_object()))
                    .chain(doc["layers"].as_array().into_iter().flatten());
                for d in children {
                    let digest = d["digest"].as_str().unwrap_or("");
                    if !hex_of(digest).is_some_and(|h| self.linked(name, h)) {
                        let _ = std::fs::remove_file(&tmp);
                        let code = if doc["manifests"].is_array() {
                            "MANIFEST_UNKNOWN"
                        } else {
                            "BLOB_UNKNOWN"
                        };
                        return Err(Failure(
                            StatusCode::BAD_REQUEST,
                            code,
                            format!("{digest} is not in {name}"),
                        ));
                    }
                }
                let hex = hex::encode(Sha256::digest(&bytes));
                let digest = format!("sha256:{hex}");
                if reference.starts_with("sha256:") && reference != digest {
                    let _ = std::fs::remove_file(&tmp);
                    return Err(Failure(
                        StatusCode::BAD_REQUEST,
                        "DIGEST_INVALID",
                        format!("manifest digest is {digest}, not {reference}"),
                    ));
                }
                self.commit(&tmp, &digest)?;
                self.link(name, "_manifests", &hex, &media)
                    .map_err(io_failure)?;
                if !reference.starts_with("sha256:") {
                    let dir = self.repo(name).join("_tags");
                    std::fs::create_dir_all(&dir).map_err(io_failure)?;
                    let mut f = tempfile::NamedTempFile::new_in(&dir).map_err(io_failure)?;
                    f.write_all(digest.as_bytes()).map_err(io_failure)?;
                    f.persist(dir.join(reference))
                        .map_err(|e| io_failure(e.error))?;
                }
                Ok(reply(StatusCode::CREATED)
                    .header(header::LOCATION, format!("/v2/{name}/manifests/{digest}"))
                    .header("Docker-Content-Digest", digest)
                    .body(Full::default())
                    .unwrap_or_default())
            }
            (Route::Manifest(name, reference), &Method::DELETE) => {
                name_check(name)?;
                let hex = hex_of(reference)
                    .filter(|h| self.repo(name).join("_manifests").join(h).exists())
                    .ok_or_else(|| {
                        Failure(
                            StatusCode::NOT_FOUND,
                            "MANIFEST_UNKNOWN",
                            format!("manifest {reference} unknown to {name}"),
                        )
                    })?
                    .to_string();
                let _ = std::fs::remove_file(self.repo(name).join("_manifests").join(&hex));
                // Tags that named it go with it, as distribution does.
                if let Ok(rd) = std::fs::read_dir(self.repo(name).join("_tags")) {
                    for e in rd.flatten() {
                        if std::fs::read_to_string(e.path()).is_ok_and(|d| d == *reference) {
                            let _ = std::fs::remove_file(e.path());
                        }
                    }
                }
                Ok(empty(StatusCode::ACCEPTED))
            }
            _ => Err(unsupported()),
        }
    }

    /// The manifest a tag or digest names in `name`.
    fn resolve(&self, name: &str, reference: &str) -> Option<String> {
        let hex = match hex_of(reference) {
            Some(h) => h.to_string(),
            None => {
                if reference.contains('/') || reference.contains("..") {
                    return None;
                }
                let d =
                    std::fs::read_to_string(self.repo(name).join("_tags").join(reference)).ok()?;
                hex_of(d.trim())?.to_string()
            }
        };
        self.repo(name)
            .join("_manifests")
            .join(&hex)
            .exists()
            .then_some(hex)
    }
}

fn unsupported() -> Failure {
    Failure(
        StatusCode::METHOD_NOT_ALLOWED,
        "UNSUPPORTED",
        "the operation is unsupported".into(),
    )
}

fn json_reply(v: serde_json::Value) -> Response<Body> {
    reply(StatusCode::OK)
        .header(header::CONTENT_TYPE, "application/json")
        .body(Full::new(Bytes::from(v.to_string())))
        .unwrap_or_default()
}

fn created_blob(name: &str, digest: &str) -> Response<Body> {
    reply(StatusCode::CREATED)
        .header(header::LOCATION, format!("/v2/{name}/blobs/{digest}"))
        .header("Docker-Content-Digest", digest)
        .body(Full::default())
        .unwrap_or_default()
}

fn upload_reply(code: StatusCode, name: &str, id: &str, size: u64) -> Response<Body> {
    reply(code)
        .header(header::LOCATION, format!("/v2/{name}/blobs/uploads/{id}"))
        .header(header::RANGE, format!("0-{}", size.saturating_sub(1)))
        .header("Docker-Upload-UUID", id)
        .body(Full::default())
        .unwrap_or_default()
}

/// Streams a request body into `path` (appending), returning its size.
async fn write_body(body: Incoming, path: &Path, append: bool) -> Result<u64, Failure> {
    use tokio::io::AsyncWriteExt;
    let mut f = tokio::fs::OpenOptions::new()
        .create(true)
        .append(append)
        .write(true)
        .truncate(!append)
        .open(path)
        .await
        .map_err(io_failure)?;
    let mut body = body;
    while let Some(frame) = body.frame().await {
        let frame = frame.map_err(|e| {
            Failure(
                StatusCode::BAD_REQUEST,
                "BLOB_UPLOAD_INVALID",
                e.to_string(),
            )
        })?;
        if let Some(data) = frame.data_ref() {
            f.write_all(data).await.map_err(io_failure)?;
        }
    }
    f.flush().await.map_err(io_failure)?;
    Ok(f.metadata().await.map_err(io_failure)?.len())
}

fn collect_repos(dir: &Path, prefix: &str, out: &mut Vec<String>) {
    let Ok(rd) = std::fs::read_dir(dir) else {
        return;
    };
    for e in rd.flatten() {
        let n = e.file_name().to_string_lossy().into_owned();
        if n.starts_with('_') {
            continue;
        }
        let full = if prefix.is_empty() {
            n.clone()
        } else {
            format!("{prefix}/{n}")
        };
        if e.path().join("_manifests").is_dir() {
            out.push(full.clone());
        }
        collect_repos(&e.path(), &full, out);
    }
}

/// Serves the registry on `addr` until the task is dropped; returns the
/// bound address (port 0 picks one) and the serving task.
pub async fn serve(
    registry: Registry,
    addr: SocketAddr,
) -> std::io::Result<(SocketAddr, tokio::task::JoinHandle<()>)> {
    let listener = tokio::net::TcpListener::bind(addr).await?;
    let bound = listener.local_addr()?;
    let registry = Arc::new(registry);
    let task = tokio::spawn(async move {
        loop {
            let Ok((stream, _)) = listener.accept().await else {
                continue;
            };
            let registry = registry.clone();
            tokio::spawn(async move {
                let svc = hyper::service::service_fn(move |req| {
                    let registry = registry.clone();
                    async move { Ok::<_, Infallible>(registry.handle(req).await) }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(
                    hyper_util::rt::TokioExecutor::new(),
                )
                .serve_connection(hyper_util::rt::TokioIo::new(stream), svc)
                .await;
            });
        }
    });
    Ok((bound, task))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_route_with_slashes_in_names() {
        assert!(matches!(route("/v2/"), Some(Route::Base)));
        assert!(matches!(route("/v2/_catalog"), Some(Route::Catalog)));
        assert!(matches!(
            route("/v2/a/b/tags/list"),
            Some(Route::Tags("a/b"))
        ));
        assert!(matches!(
            route("/v2/a/b/manifests/v1"),
            Some(Route::Manifest("a/b", "v1"))
        ));
        assert!(matches!(
            route("/v2/a/blobs/sha256:00"),
            Some(Route::Blob("a", "sha256:00"))
        ));
        assert!(matches!(
            route("/v2/a/b/blobs/uploads/"),
            Some(Route::Uploads("a/b"))
        ));
        assert!(matches!(
            route("/v2/a/blobs/uploads/x-y"),
            Some(Route::Upload("a", "x-y"))
        ));
        assert!(valid_name("tools/busybox") && !valid_name("Tools") && !valid_name("a//b"));
        assert!(hex_of("sha256:abc").is_none());
    }
}
