//! Audit logging, as kube-apiserver's `--audit-policy-file` and
//! `--audit-log-path`: an `audit.k8s.io/v1` Policy picks each request's
//! level (None, Metadata, Request, RequestResponse) by user, group, verb,
//! resource, namespace or path, and events are written as JSON lines to a
//! file rotated by size (`--audit-log-maxsize`, `--audit-log-maxbackup`).

use std::collections::BTreeSet;
use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::{Value, json};

use crate::auth::User;
use crate::authz::Attributes;

/// How much of a request is recorded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    /// Nothing.
    None,
    /// User, verb, resource, response code, timestamps.
    Metadata,
    /// Metadata and the request object.
    Request,
    /// Request and the response object.
    RequestResponse,
}

impl Level {
    fn parse(s: &str) -> Option<Level> {
        match s {
            "None" => Some(Level::None),
            "Metadata" => Some(Level::Metadata),
            "Request" => Some(Level::Request),
            "RequestResponse" => Some(Level::RequestResponse),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Level::None => "None",
            Level::Metadata => "Metadata",
            Level::Request => "Request",
            Level::RequestResponse => "RequestResponse",
        }
    }
}

/// Options of the audit log.
#[derive(Debug, Clone)]
pub struct Options {
    /// The Policy file.
    pub policy_file: PathBuf,
    /// Where events go (`-` for standard output).
    pub log_path: PathBuf,
    /// Rotate when the file passes this many megabytes (0: never).
    pub max_size_mb: u64,
    /// Rotated files kept (0: all).
    pub max_backups: usize,
}

/// Why the audit configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum AuditError {
    /// A file could not be read or opened.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        #[source]
        source: std::io::Error,
    },
    /// The policy is not valid.
    #[error("{path}: {message}")]
    Policy {
        /// The file.
        path: String,
        /// What is wrong, naming the field.
        message: String,
    },
}

struct GroupResources {
    group: String,
    resources: Vec<String>,
    names: Vec<String>,
}

struct Rule {
    level: Level,
    users: Vec<String>,
    groups: Vec<String>,
    verbs: Vec<String>,
    resources: Vec<GroupResources>,
    namespaces: Vec<String>,
    urls: Vec<String>,
    omit_stages: BTreeSet<String>,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array()
        .map(|a| {
            a.iter()
                .filter_map(|s| s.as_str().map(str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// An audit Policy.
pub struct Policy {
    rules: Vec<Rule>,
    omit_stages: BTreeSet<String>,
}

impl Policy {
    /// Parses a Policy document.
    pub fn parse(doc: &Value) -> Result<Policy, String> {
        if doc["kind"] != "Policy" {
            return Err("kind: must be Policy".into());
        }
        let mut rules = Vec::new();
        for (i, r) in doc["rules"].as_array().into_iter().flatten().enumerate() {
            let level = r["level"]
                .as_str()
                .and_then(Level::parse)
                .ok_or_else(|| {
                    format!("rules[{i}].level: Unsupported value: {}: supported values: \"None\", \"Metadata\", \"Request\", \"RequestResponse\"", r["level"])
                })?;
            let resources = r["resources"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|g| GroupResources {
                    group: g["group"].as_str().unwrap_or("").to_string(),
                    resources: strings(&g["resources"]),
                    names: strings(&g["resourceNames"]),
                })
                .collect::<Vec<_>>();
            let urls = strings(&r["nonResourceURLs"]);
            if !urls.is_empty() && (!resources.is_empty() || r["namespaces"].is_array()) {
                return Err(format!(
                    "rules[{i}].nonResourceURLs: Invalid value: rules cannot apply to both regular resources and non-resource URLs"
                ));
            }
            rules.push(Rule {
                level,
                users: strings(&r["users"]),
                groups: strings(&r["userGroups"]),
                verbs: strings(&r["verbs"]),
                resources,
                namespaces: strings(&r["namespaces"]),
                urls,
                omit_stages: strings(&r["omitStages"]).into_iter().collect(),
            });
        }
        Ok(Policy {
            rules,
            omit_stages: strings(&doc["omitStages"]).into_iter().collect(),
        })
    }

    /// The level of a request, and the stages to leave out.
    pub fn decide(&self, a: &Attributes<'_>) -> (Level, BTreeSet<String>) {
        for r in &self.rules {
            if r.matches(a) {
                let mut omit = self.omit_stages.clone();
                omit.extend(r.omit_stages.iter().cloned());
                return (r.level, omit);
            }
        }
        (Level::None, BTreeSet::new())
    }
}

impl Rule {
    fn matches(&self, a: &Attributes<'_>) -> bool {
        let user = a.user;
        if !self.users.is_empty() && !self.users.contains(&user.name) {
            return false;
        }
        if !self.groups.is_empty() && !user.groups.iter().any(|g| self.groups.contains(g)) {
            return false;
        }
        if !self.verbs.is_empty() && !self.verbs.contains(&a.verb) {
            return false;
        }
        if !self.urls.is_empty() {
            return !a.resource_request
                && self.urls.iter().any(|u| {
                    u == "*"
                        || *u == a.path
                        || u.strip_suffix('*').is_some_and(|p| a.path.starts_with(p))
                });
        }
        if self.resources.is_empty() && self.namespaces.is_empty() {
            return true;
        }
        if !a.resource_request {
            return false;
        }
        if !self.namespaces.is_empty() && !self.namespaces.contains(&a.namespace) {
            return false;
        }
        if self.resources.is_empty() {
            return true;
        }
        let combined = if a.subresource.is_empty() {
            a.resource.clone()
        } else {
            format!("{}/{}", a.resource, a.subresource)
        };
        self.resources.iter().any(|g| {
            g.group == a.api_group
                && (g.resources.is_empty()
                    || g.resources.iter().any(|r| {
                        *r == combined
                            || (r == "*")
                            || r.strip_prefix("*/").is_some_and(|s| s == a.subresource)
                            || r.strip_suffix("/*").is_some_and(|res| res == a.resource)
                    }))
                && (g.names.is_empty() || g.names.contains(&a.name))
        })
    }
}

/// Where events go, rotated by size.
struct Sink {
    path: PathBuf,
    file: Option<File>,
    written: u64,
    max_bytes: u64,
    max_backups: usize,
}

impl Sink {
    fn write(&mut self, line: &[u8]) -> std::io::Result<()> {
        if self.path.as_os_str() == "-" {
            let mut out = std::io::stdout().lock();
            out.write_all(line)?;
            return out.write_all(b"\n");
        }
        if self.max_bytes > 0 && self.written + line.len() as u64 + 1 > self.max_bytes {
            self.rotate()?;
        }
        if self.file.is_none() {
            let f = File::options().create(true).append(true).open(&self.path)?;
            self.written = f.metadata()?.len();
            self.file = Some(f);
        }
        let f = self.file.as_mut().expect("opened above");
        f.write_all(line)?;
        f.write_all(b"\n")?;
        self.written += line.len() as u64 + 1;
        Ok(())
    }

    /// `audit.log` becomes `audit-<time>.log`, as kube-apiserver's
    /// rotation names backups; the oldest beyond the limit go.
    fn rotate(&mut self) -> std::io::Result<()> {
        self.file = None;
        let stem = self
            .path
            .file_stem()
            .and_then(|s| s.to_str())
            .unwrap_or("audit")
            .to_string();
        let ext = self
            .path
            .extension()
            .and_then(|s| s.to_str())
            .map(|e| format!(".{e}"))
            .unwrap_or_default();
        let dir = self
            .path
            .parent()
            .map(Path::to_path_buf)
            .unwrap_or_default();
        let stamp = chrono::Utc::now().format("%Y-%m-%dT%H-%M-%S%.3f");
        if self.path.exists() {
            std::fs::rename(&self.path, dir.join(format!("{stem}-{stamp}{ext}")))?;
        }
        self.written = 0;
        if self.max_backups > 0 {
            let prefix = format!("{stem}-");
            let mut backups: Vec<PathBuf> = std::fs::read_dir(&dir)?
                .flatten()
                .map(|e| e.path())
                .filter(|p| {
                    p.file_name()
                        .and_then(|n| n.to_str())
                        .is_some_and(|n| n.starts_with(&prefix) && n.ends_with(&ext))
                })
                .collect();
            backups.sort();
            while backups.len() > self.max_backups {
                let _ = std::fs::remove_file(backups.remove(0));
            }
        }
        Ok(())
    }
}

/// The audit log of a server.
pub struct AuditLog {
    policy: Policy,
    sink: Mutex<Sink>,
}

impl AuditLog {
    /// Reads the policy and prepares the log file.
    pub fn open(o: &Options) -> Result<AuditLog, AuditError> {
        let path = o.policy_file.display().to_string();
        let text = std::fs::read_to_string(&o.policy_file).map_err(|source| AuditError::Io {
            path: path.clone(),
            source,
        })?;
        let doc: Value = serde_yaml_ng::from_str(&text).map_err(|e| AuditError::Policy {
            path: path.clone(),
            message: e.to_string(),
        })?;
        let policy = Policy::parse(&doc).map_err(|message| AuditError::Policy { path, message })?;
        if let Some(dir) = o.log_path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|source| AuditError::Io {
                path: dir.display().to_string(),
                source,
            })?;
        }
        Ok(AuditLog {
            policy,
            sink: Mutex::new(Sink {
                path: o.log_path.clone(),
                file: None,
                written: 0,
                max_bytes: o.max_size_mb.saturating_mul(1024 * 1024),
                max_backups: o.max_backups,
            }),
        })
    }

    /// Starts the event of a request: None when the policy says None.
    pub fn begin(&self, a: &Attributes<'_>, req: &RequestFacts) -> Option<Event> {
        let (level, omit) = self.policy.decide(a);
        if level == Level::None {
            return None;
        }
        let mut object_ref = Value::Null;
        if a.resource_request {
            let mut r = json!({"resource": a.resource});
            for (k, v) in [
                ("namespace", &a.namespace),
                ("name", &a.name),
                ("apiGroup", &a.api_group),
                ("subresource", &a.subresource),
            ] {
                if !v.is_empty() {
                    r[k] = json!(v);
                }
            }
            if let Some(v) = &req.api_version {
                r["apiVersion"] = json!(v);
            }
            object_ref = r;
        }
        let ev = Event {
            level,
            omit,
            body: json!({
                "kind": "Event",
                "apiVersion": "audit.k8s.io/v1",
                "level": level.name(),
                "auditID": uuid::Uuid::new_v4().to_string(),
                "requestURI": req.uri,
                "verb": a.verb,
                "user": user_json(req.authenticated),
                "sourceIPs": [req.source_ip],
                "userAgent": req.user_agent,
                "requestReceivedTimestamp": now(),
            }),
        };
        let mut ev = ev;
        if req.authenticated.name != a.user.name || req.authenticated.groups != a.user.groups {
            ev.body["impersonatedUser"] = user_json(a.user);
        }
        if !object_ref.is_null() {
            ev.body["objectRef"] = object_ref;
        }
        self.emit(&ev, "RequestReceived");
        Some(ev)
    }

    /// Writes the event at `stage` unless the policy omits it.
    pub fn emit(&self, ev: &Event, stage: &str) {
        if ev.omit.contains(stage) {
            return;
        }
        let mut body = ev.body.clone();
        body["stage"] = json!(stage);
        body["stageTimestamp"] = json!(now());
        let Ok(line) = serde_json::to_vec(&body) else {
            return;
        };
        let mut sink = self.sink.lock().unwrap_or_else(|e| e.into_inner());
        if let Err(e) = sink.write(&line) {
            tracing::warn!(error = %e, "writing the audit log");
        }
    }
}

/// What the audit event needs of the request beyond its attributes.
pub struct RequestFacts<'a> {
    /// The path and query.
    pub uri: String,
    /// The client's address.
    pub source_ip: String,
    /// The User-Agent header.
    pub user_agent: String,
    /// Who authenticated (before impersonation).
    pub authenticated: &'a User,
    /// The resource's group version, when known.
    pub api_version: Option<String>,
}

/// One request's event, filled in as it is served.
pub struct Event {
    level: Level,
    omit: BTreeSet<String>,
    body: Value,
}

impl Event {
    /// Whether the request object is recorded.
    pub fn wants_request(&self) -> bool {
        self.level >= Level::Request
    }

    /// Whether the response object is recorded.
    pub fn wants_response(&self) -> bool {
        self.level >= Level::RequestResponse
    }

    /// Records the decoded request body: its name completes the objectRef
    /// (creates name no object in their path); the object itself is kept
    /// at Request level and above.
    pub fn request_object(&mut self, obj: Value) {
        if self.body["objectRef"].is_object()
            && self.body["objectRef"]["name"].is_null()
            && let Some(n) = obj["metadata"]["name"].as_str()
        {
            self.body["objectRef"]["name"] = json!(n);
        }
        if self.wants_request() {
            self.body["requestObject"] = obj;
        }
    }

    /// Records the response: its status, the object's name when the
    /// request did not name it (creates), and the object at
    /// RequestResponse.
    pub fn response(&mut self, code: u16, body: Option<&Value>) {
        let mut status = json!({"metadata": {}, "code": code});
        if let Some(b) = body {
            if b["kind"] == "Status" {
                for k in ["status", "message", "reason"] {
                    if let Some(v) = b.get(k) {
                        status[k] = v.clone();
                    }
                }
            } else if self.body["objectRef"].is_object()
                && self.body["objectRef"]["name"].is_null()
                && let Some(n) = b["metadata"]["name"].as_str()
            {
                self.body["objectRef"]["name"] = json!(n);
            }
            if self.wants_response() {
                self.body["responseObject"] = b.clone();
            }
        }
        self.body["responseStatus"] = status;
    }

    /// Records the authorizer's decision.
    pub fn decision(&mut self, allowed: bool) {
        self.body["annotations"] = json!({
            "authorization.k8s.io/decision": if allowed { "allow" } else { "forbid" },
            "authorization.k8s.io/reason": "",
        });
    }
}

fn user_json(u: &User) -> Value {
    let mut v = json!({"username": u.name, "groups": u.groups});
    if !u.uid.is_empty() {
        v["uid"] = json!(u.uid);
    }
    if !u.extra.is_empty() {
        v["extra"] = json!(u.extra);
    }
    v
}

fn now() -> String {
    chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Micros, true)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy(yaml: &str) -> Policy {
        Policy::parse(&serde_yaml_ng::from_str(yaml).unwrap()).unwrap()
    }

    #[test]
    fn the_first_matching_rule_decides() {
        let p = policy(
            "apiVersion: audit.k8s.io/v1\nkind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: None\n  users: [system:kube-proxy]\n- level: RequestResponse\n  resources: [{group: \"\", resources: [pods/log]}]\n- level: Metadata\n  resources: [{group: \"\", resources: [secrets]}]\n  namespaces: [dev]\n- level: Request\n  nonResourceURLs: [/healthz*]\n- level: Metadata\n  verbs: [create, delete]\n",
        );
        let alice = User::new("alice", vec!["devs".into()]);
        let proxy = User::new("system:kube-proxy", vec![]);
        let res = |u, verb, ns, r, sub| Attributes::resource(u, verb, ns, "", r, sub, "x");
        assert_eq!(
            p.decide(&res(&proxy, "create", "dev", "secrets", "")).0,
            Level::None
        );
        assert_eq!(
            p.decide(&res(&alice, "get", "dev", "pods", "log")).0,
            Level::RequestResponse
        );
        assert_eq!(
            p.decide(&res(&alice, "get", "dev", "secrets", "")).0,
            Level::Metadata
        );
        assert_eq!(
            p.decide(&res(&alice, "get", "prod", "secrets", "")).0,
            Level::None
        );
        assert_eq!(
            p.decide(&res(&alice, "delete", "prod", "secrets", "")).0,
            Level::Metadata
        );
        let (level, omit) = p.decide(&Attributes::path(&alice, "get", "/healthz/ping"));
        assert_eq!(level, Level::Request);
        assert!(omit.contains("RequestReceived"));
    }

    #[test]
    fn events_rotate_by_size() {
        let dir = tempfile::tempdir().unwrap();
        let policy_file = dir.path().join("policy.yaml");
        std::fs::write(
            &policy_file,
            "kind: Policy\nomitStages: [RequestReceived]\nrules:\n- level: Metadata\n",
        )
        .unwrap();
        let log_path = dir.path().join("logs/audit.log");
        let log = AuditLog::open(&Options {
            policy_file,
            log_path: log_path.clone(),
            max_size_mb: 0,
            max_backups: 2,
        })
        .unwrap();
        log.sink.lock().unwrap().max_bytes = 2000;
        let alice = User::new("alice", vec![]);
        let a = Attributes::resource(&alice, "create", "dev", "", "pods", "", "");
        for _ in 0..40 {
            let facts = RequestFacts {
                uri: "/api/v1/namespaces/dev/pods".into(),
                source_ip: "127.0.0.1".into(),
                user_agent: "test".into(),
                authenticated: &alice,
                api_version: Some("v1".into()),
            };
            let mut ev = log.begin(&a, &facts).unwrap();
            ev.response(201, Some(&json!({"metadata": {"name": "p"}})));
            log.emit(&ev, "ResponseComplete");
        }
        let last = std::fs::read_to_string(&log_path).unwrap();
        let line: Value = serde_json::from_str(last.lines().last().unwrap()).unwrap();
        assert_eq!(line["verb"], "create");
        assert_eq!(line["objectRef"]["name"], "p");
        assert_eq!(line["responseStatus"]["code"], 201);
        assert_eq!(line["stage"], "ResponseComplete");
        let files = std::fs::read_dir(log_path.parent().unwrap())
            .unwrap()
            .count();
        assert_eq!(files, 3, "the log and two backups");
    }
}
