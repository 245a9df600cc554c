//! The r8s web console, served by the API server under `/ui/`.
//!
//! The console is a page in the browser that talks to the cluster only
//! through the ordinary Kubernetes API, with the signed-in user's bearer
//! token, so authorization (RBAC) decides what it shows and may do. This
//! crate holds what the server side needs beyond that API:
//!
//! - the browser assets (HTML, CSS, JavaScript), written without a build
//!   step and embedded in the binary, so nothing is fetched from outside
//!   the machine;
//! - sign-in: a one-time link printed at start, a bearer token, or the
//!   credentials of a kubeconfig (a token, or a client certificate and key
//!   the cluster CA signed) are exchanged for a session token that the API
//!   server accepts as that user;
//! - YAML ⇄ JSON conversion for the editor, so the browser carries no YAML
//!   library (a pure function of the request body; it reads nothing from
//!   the cluster).

mod assets;
mod sessions;
mod signin;
mod yaml;

use bytes::Bytes;
use http::{Method, Response, StatusCode, header};

pub use sessions::{Identity, Sessions};

/// The path prefix the console is served under.
pub const PREFIX: &str = "/ui";

/// The largest body the console's own endpoints read (the API's limit).
pub const MAX_BODY: usize = 3 * 1024 * 1024;

/// Checks a client certificate and its key (both PEM) from a kubeconfig:
/// the cluster CA must have signed the certificate and the key must be
/// its key. Returns who the certificate names.
pub type CertVerifier<'a> = &'a (dyn Fn(&str, &str) -> Result<Identity, String> + Sync);

/// The console: its sessions and one-time sign-in link.
pub struct Console {
    sessions: Sessions,
}

impl Console {
    /// A console whose one-time link signs in as `admin`.
    pub fn new(admin: Identity) -> Console {
        Console {
            sessions: Sessions::new(admin),
        }
    }

    /// A fresh one-time sign-in link under `server_url` (each call
    /// replaces the previous link).
    pub fn sign_in_link(&self, server_url: &str) -> String {
        let code = self.sessions.new_link_code();
        format!("{server_url}{PREFIX}/#signin={code}")
    }

    /// The user a console session token stands for, if it is one and it
    /// is still valid.
    pub fn authenticate(&self, token: &str) -> Option<Identity> {
        self.sessions.lookup(token)
    }

    /// Whether `path` is the console's (served without authorization: the
    /// assets are public, and sign-in checks its own credentials).
    pub fn owns(path: &str) -> bool {
        path == PREFIX || path.starts_with("/ui/")
    }

    /// Serves one console request.
    pub fn handle(
        &self,
        method: &Method,
        path: &str,
        bearer: Option<&str>,
        body: Bytes,
        verify: CertVerifier<'_>,
    ) -> Response<Bytes> {
        let rest = path.strip_prefix(PREFIX).unwrap_or(path);
        match (method, rest) {
            (&Method::GET | &Method::HEAD, "") => redirect(&format!("{PREFIX}/")),
            (&Method::POST, "/signin") => signin::sign_in(&self.sessions, &body, verify),
            (&Method::POST, "/signout") => {
                if let Some(t) = bearer {
                    self.sessions.remove(t);
                }
                json(StatusCode::OK, &serde_json::json!({"signedOut": true}))
            }
            (&Method::POST, "/yaml2json") => yaml::to_json(&body),
            (&Method::POST, "/json2yaml") => yaml::to_yaml(&body),
            (&Method::GET | &Method::HEAD, p) => assets::serve(p),
            _ => error(StatusCode::METHOD_NOT_ALLOWED, "method not allowed"),
        }
    }
}

fn redirect(to: &str) -> Response<Bytes> {
    Response::builder()
        .status(StatusCode::MOVED_PERMANENTLY)
        .header(header::LOCATION, to)
        .body(Bytes::new())
        .unwrap_or_default()
}

pub(crate) fn json(code: StatusCode, v: &serde_json::Value) -> Response<Bytes> {
    Response::builder()
        .status(code)
        .header(header::CONTENT_TYPE, "application/json")
        .header(header::CACHE_CONTROL, "no-store")
        .body(Bytes::from(serde_json::to_vec(v).unwrap_or_default()))
        .unwrap_or_default()
}

/// An error as a `metav1.Status`, so the browser reads every failure the
/// same way, the API's and the console's own.
pub(crate) fn error(code: StatusCode, message: &str) -> Response<Bytes> {
    let reason = match code.as_u16() {
        400 => "BadRequest",
        401 => "Unauthorized",
        404 => "NotFound",
        405 => "MethodNotAllowed",
        413 => "RequestEntityTooLarge",
        _ => "InternalError",
    };
    json(
        code,
        &serde_json::json!({
            "kind": "Status", "apiVersion": "v1", "metadata": {},
            "status": "Failure", "message": message, "reason": reason,
            "code": code.as_u16(),
        }),
    )
}
/// The total size of the embedded browser assets, in bytes.
pub use assets::total_size as assets_size;
