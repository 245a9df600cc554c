//! The REST operations of each served resource, described once and rendered
//! as either swagger 2.0 or OpenAPI 3 path items.

use crate::catalogue::ResourceInfo;

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.";

/// One request parameter.
#[derive(Debug, Clone)]
pub(super) struct Param {
    pub name: &'static str,
    pub location: &'static str,
    pub description: String,
    pub ty: &'static str,
    pub required: bool,
}

/// What an operation answers with.
#[derive(Debug, Clone)]
pub(super) enum Reply {
    /// A definition, by name.
    Def(String),
    /// A plain string (logs, connect streams).
    Text,
}

/// One HTTP operation.
#[derive(Debug, Clone)]
pub(super) struct Op {
    pub method: &'static str,
    pub action: &'static str,
    pub id: String,
    pub description: String,
    pub params: Vec<Param>,
    /// Request body definition and content types.
    pub body: Option<(String, &'static [&'static str])>,
    pub body_required: bool,
    /// Success codes with their descriptions.
    pub codes: &'static [(u16, &'static str)],
    pub reply: Reply,
    pub produces: &'static [&'static str],
    pub gvk: Option<(String, String, String)>,
    pub deprecated: bool,
    pub tag: String,
}

/// One URL with its shared parameters and operations.
#[derive(Debug, Clone)]
pub(super) struct PathItem {
    pub path: String,
    pub params: Vec<Param>,
    pub ops: Vec<Op>,
}

pub(super) const PATCH_TYPES: &[&str] = &[
    "application/apply-patch+yaml",
    "application/json-patch+json",
    "application/merge-patch+json",
    "application/strategic-merge-patch+json",
];
const JSON: &[&str] = &["application/json", "application/yaml"];
const ANY: &[&str] = &["*/*"];
const WATCHABLE: &[&str] = &[
    "application/json",
    "application/yaml",
    "application/json;stream=watch",
];
const TEXT: &[&str] = &["text/plain", "application/json", "application/yaml"];
const CONNECT: &[&str] = &["*/*"];
const OK: &[(u16, &str)] = &[(200, "OK")];
const CREATED: &[(u16, &str)] = &[(200, "OK"), (201, "Created"), (202, "Accepted")];
const REPLACED: &[(u16, &str)] = &[(200, "OK"), (201, "Created")];
const DELETED: &[(u16, &str)] = &[(200, "OK"), (202, "Accepted")];

fn q(name: &'static str, ty: &'static str, description: &str) -> Param {
    Param {
        name,
        location: "query",
        description: description.to_string(),
        ty,
        required: false,
    }
}

fn path_param(name: &'static str, description: String) -> Param {
    Param {
        name,
        location: "path",
        description,
        ty: "string",
        required: true,
    }
}

fn pretty() -> Param {
    q(
        "pretty",
        "string",
        "If 'true', then the output is pretty printed. Defaults to 'false' unless the user-agent indicates a browser or command-line HTTP tool (curl and wget).",
    )
}

fn dry_run() -> Param {
    q(
        "dryRun",
        "string",
        "When present, indicates that modifications should not be persisted. An invalid or unrecognized dryRun directive will result in an error response and no further processing of the request. Valid values are: - All: all dry run stages will be processed",
    )
}

fn field_manager(patch: bool) -> Param {
    let mut d = String::from(
        "fieldManager is a name associated with the actor or entity that is making these changes. The value must be less than or 128 characters long, and only contain printable characters, as defined by https://golang.org/pkg/unicode/#IsPrint.",
    );
    if patch {
        d.push_str(" This field is required for apply requests (application/apply-patch) but optional for non-apply patch types (JsonPatch, MergePatch, StrategicMergePatch).");
    }
    q("fieldManager", "string", &d)
}

/// kubectl looks for this parameter on a kind's PATCH operation to decide
/// whether the server validates fields itself.
fn field_validation() -> Param {
    q(
        "fieldValidation",
        "string",
        "fieldValidation instructs the server on how to handle objects in the request (POST/PUT/PATCH) containing unknown or duplicate fields. Valid values are: - Ignore: This will ignore any unknown fields that are silently dropped from the object, and will ignore all but the last duplicate field that the decoder encounters. This is the default behavior prior to v1.23. - Warn: This will send a warning via the standard warning response header for each unknown field that is dropped from the object, and for each duplicate field that is encountered. The request will still succeed if there are no other errors, and will only persist the last of any duplicate fields. This is the default in v1.23+ - Strict: This will fail the request with a BadRequest error if any unknown fields would be dropped from the object, or if any duplicate fields are present. The error returned from the server will contain all unknown and duplicate fields encountered.",
    )
}

fn force() -> Param {
    q(
        "force",
        "boolean",
        "Force is going to \"force\" Apply requests. It means user will re-acquire conflicting fields owned by other people. Force flag must be unset for non-apply patch requests.",
    )
}

fn list_params(watch_param: bool) -> Vec<Param> {
    let mut v = vec![
        q(
            "allowWatchBookmarks",
            "boolean",
            "allowWatchBookmarks requests watch events with type \"BOOKMARK\". Servers that do not implement bookmarks may ignore this flag and bookmarks are sent at the server's discretion. Clients should not assume bookmarks are returned at any specific interval, nor may they assume the server will send any BOOKMARK event during a session. If this is not a watch, this field is ignored.",
        ),
        q(
            "continue",
            "string",
            "The continue option should be set when retrieving more results from the server. Since this value is server defined, clients may only use the continue value from a previous query result with identical query parameters (except for the value of continue) and the server may reject a continue value it does not recognize.",
        ),
        q(
            "fieldSelector",
            "string",
            "A selector to restrict the list of returned objects by their fields. Defaults to everything.",
        ),
        q(
            "labelSelector",
            "string",
            "A selector to restrict the list of returned objects by their labels. Defaults to everything.",
        ),
        q(
            "limit",
            "integer",
            "limit is a maximum number of responses to return for a list call. If more items exist, the server will set the `continue` field on the list metadata to a value that can be used with the same initial query to retrieve the next set of results.",
        ),
        q(
            "resourceVersion",
            "string",
            "resourceVersion sets a constraint on what resource versions a request may be served from. See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        q(
            "resourceVersionMatch",
            "string",
            "resourceVersionMatch determines how resourceVersion is applied to list calls. It is highly recommended that resourceVersionMatch be set for list calls where resourceVersion is set See https://kubernetes.io/docs/reference/using-api/api-concepts/#resource-versions for details.\n\nDefaults to unset",
        ),
        q(
            "sendInitialEvents",
            "boolean",
            "`sendInitialEvents=true` may be set together with `watch=true`. In that case, the watch stream will begin with synthetic events to produce the current state of objects in the collection. Once all such events have been sent, a synthetic \"Bookmark\" event  will be sent.",
        ),
        q(
            "timeoutSeconds",
            "integer",
            "Timeout for the list/watch call. This limits the duration of the call, regardless of any activity or inactivity.",
        ),
    ];
    if watch_param {
        v.push(q("watch", "boolean", "Watch for changes to the described resources and return them as a stream of add, update, and remove notifications. Specify resourceVersion."));
    }
    v
}

fn delete_params() -> Vec<Param> {
    vec![
        dry_run(),
        q(
            "gracePeriodSeconds",
            "integer",
            "The duration in seconds before the object should be deleted. Value must be non-negative integer. The value zero indicates delete immediately. If this value is nil, the default grace period for the specified type will be used. Defaults to a per object value if not specified. zero means delete immediately.",
        ),
        q(
            "orphanDependents",
            "boolean",
            "Deprecated: please use the PropagationPolicy, this field will be deprecated in 1.7. Should the dependent objects be orphaned. If true/false, the \"orphan\" finalizer will be added to/removed from the object's finalizers list. Either this field or PropagationPolicy may be set, but not both.",
        ),
        q(
            "propagationPolicy",
            "string",
            "Whether and how garbage collection will be performed. Either this field or OrphanDependents may be set, but not both. The default policy is decided by the existing finalizer set in the metadata.finalizers and the resource-specific default policy. Acceptable values are: 'Orphan' - orphan the dependents; 'Background' - allow the garbage collector to delete the dependents in the background; 'Foreground' - a cascading policy that deletes all dependents in the foreground.",
        ),
    ]
}

/// `rbac.authorization.k8s.io` -> `RbacAuthorization`, core -> `Core`, as
/// upstream's operation ids spell groups.
fn group_camel(group: &str) -> String {
    if group.is_empty() {
        return "Core".into();
    }
    group
        .trim_end_matches(".k8s.io")
        .split(['.', '-'])
        .map(capitalize)
        .collect()
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    match c.next() {
        Some(f) => f.to_uppercase().chain(c).collect(),
        None => String::new(),
    }
}

/// The tag upstream groups a group version's operations under, e.g. `apps_v1`.
pub(super) fn tag(group: &str, version: &str) -> String {
    let g = group_camel(group);
    let mut c = g.chars();
    let lower: String = match c.next() {
        Some(f) => f.to_lowercase().chain(c).collect(),
        None => String::new(),
    };
    format!("{lower}_{version}")
}

/// The URL prefix of a group version: `/api/v1` or `/apis/<group>/<version>`.
pub(super) fn prefix(group: &str, version: &str) -> String {
    if group.is_empty() {
        format!("/api/{version}")
    } else {
        format!("/apis/{group}/{version}")
    }
}

struct Ctx<'a> {
    r: &'a ResourceInfo,
    gv: String,
    tag: String,
    kind_gvk: (String, String, String),
}

impl Ctx<'_> {
    fn id(&self, verb: &str, namespaced: bool, suffix: &str) -> String {
        let ns = if namespaced { "Namespaced" } else { "" };
        format!(
            "{verb}{}{}{ns}{}{suffix}",
            self.gv,
            capitalize(self.r.version),
            self.r.kind
        )
    }

    #[allow(clippy::too_many_arguments)]
    fn op(
        &self,
        method: &'static str,
        action: &'static str,
        id: String,
        description: String,
        params: Vec<Param>,
        body: Option<(String, &'static [&'static str])>,
        codes: &'static [(u16, &'static str)],
        reply: Reply,
        produces: &'static [&'static str],
        gvk: Option<(String, String, String)>,
    ) -> Op {
        let body_required = body.is_some() && method != "delete";
        Op {
            method,
            action,
            id,
            description,
            params,
            body,
            body_required,
            codes,
            reply,
            produces,
            gvk,
            deprecated: false,
            tag: self.tag.clone(),
        }
    }
}

fn gvk(g: &str, v: &str, k: &str) -> (String, String, String) {
    (g.to_string(), v.to_string(), k.to_string())
}

/// Every path item of one resource (main resource, watch paths,
/// subresources).
pub(super) fn resource_paths(r: &ResourceInfo) -> Vec<PathItem> {
    let cx = Ctx {
        r,
        gv: group_camel(r.group),
        tag: tag(r.group, r.version),
        kind_gvk: gvk(r.group, r.version, r.kind),
    };
    let base = prefix(r.group, r.version);
    let ns_seg = if r.namespaced {
        "/namespaces/{namespace}"
    } else {
        ""
    };
    let collection = format!("{base}{ns_seg}/{}", r.plural);
    let item = format!("{collection}/{{name}}");
    let ns_param = || {
        path_param(
            "namespace",
            "object name and auth scope, such as for teams and projects".into(),
        )
    };
    let name_param = |what: &str| path_param("name", format!("name of the {what}"));
    let scope_params = |with_name: bool, what: &str| {
        let mut v = Vec::new();
        if with_name {
            v.push(name_param(what));
        }
        if r.namespaced {
            v.push(ns_param());
        }
        v.push(pretty());
        v
    };
    let list_def = format!("{}List", r.definition);
    let kind = r.kind;
    let ns = r.namespaced;
    let mut out = Vec::new();

    // Collection: list, create, deletecollection.
    let mut ops = Vec::new();
    if r.has_verb("list") {
        ops.push(cx.op(
            "get",
            "list",
            cx.id("list", ns, ""),
            format!("list or watch objects of kind {kind}"),
            list_params(true),
            None,
            OK,
            Reply::Def(list_def.clone()),
            WATCHABLE,
            Some(cx.kind_gvk.clone()),
        ));
    }
    if r.has_verb("create") {
        ops.push(cx.op(
            "post",
            "post",
            cx.id("create", ns, ""),
            format!("create a {kind}"),
            vec![dry_run(), field_manager(false), field_validation()],
            Some((r.definition.to_string(), ANY)),
            CREATED,
            Reply::Def(r.definition.to_string()),
            JSON,
            Some(cx.kind_gvk.clone()),
        ));
    }
    if r.has_verb("deletecollection") {
        let mut params = list_params(false);
        params.extend(delete_params());
        params.sort_by_key(|p| p.name);
        params.dedup_by_key(|p| p.name);
        ops.push(cx.op(
            "delete",
            "deletecollection",
            cx.id("deletecollection", ns, ""),
            format!("delete collection of {kind}"),
            params,
            Some((format!("{META}DeleteOptions"), ANY)),
            OK,
            Reply::Def(format!("{META}Status")),
            JSON,
            Some(cx.kind_gvk.clone()),
        ));
    }
    if !ops.is_empty() {
        out.push(PathItem {
            path: collection.clone(),
            params: scope_params(false, kind),
            ops,
        });
    }

    // One object: read, replace, patch, delete.
    let mut ops = Vec::new();
    if r.has_verb("get") {
        ops.push(cx.op(
            "get",
            "get",
            cx.id("read", ns, ""),
            format!("read the specified {kind}"),
            Vec::new(),
            None,
            OK,
            Reply::Def(r.definition.to_string()),
            JSON,
            Some(cx.kind_gvk.clone()),
        ));
    }
    if r.has_verb("update") {
        ops.push(replace_op(&cx, "", kind, r.definition));
    }
    if r.has_verb("patch") {
        ops.push(patch_op(&cx, "", kind, r.definition, cx.kind_gvk.clone()));
    }
    if r.has_verb("delete") {
        ops.push(cx.op(
            "delete",
            "delete",
            cx.id("delete", ns, ""),
            format!("delete a {kind}"),
            delete_params(),
            Some((format!("{META}DeleteOptions"), ANY)),
            DELETED,
            Reply::Def(format!("{META}Status")),
            JSON,
            Some(cx.kind_gvk.clone()),
        ));
    }
    if !ops.is_empty() {
        out.push(PathItem {
            path: item.clone(),
            params: scope_params(true, kind),
            ops,
        });
    }

    // Lists across namespaces.
    if ns && r.has_verb("list") {
        let op = cx.op(
            "get",
            "list",
            format!(
                "list{}{}{}ForAllNamespaces",
                cx.gv,
                capitalize(r.version),
                kind
            ),
            format!("list or watch objects of kind {kind}"),
            Vec::new(),
            None,
            OK,
            Reply::Def(list_def.clone()),
            WATCHABLE,
            Some(cx.kind_gvk.clone()),
        );
        let mut params = list_params(true);
        params.push(pretty());
        params.sort_by_key(|p| p.name);
        out.push(PathItem {
            path: format!("{base}/{}", r.plural),
            params,
            ops: vec![op],
        });
    }

    // Deprecated watch paths, still used by older clients.
    if r.has_verb("watch") {
        let watch_event = Reply::Def(format!("{META}WatchEvent"));
        let mut list_watch = |path: String, id: String, with_ns: bool| {
            let mut op = cx.op("get", "watchlist", id, format!("watch individual changes to a list of {kind}. deprecated: use the 'watch' parameter with a list operation instead."), Vec::new(), None, OK, watch_event.clone(), WATCHABLE, Some(cx.kind_gvk.clone()));
            op.deprecated = true;
            let mut params = list_params(true);
            if with_ns {
                params.push(ns_param());
            }
            params.push(pretty());
            params.sort_by_key(|p| p.name);
            out.push(PathItem {
                path,
                params,
                ops: vec![op],
            });
        };
        list_watch(
            format!("{base}/watch{ns_seg}/{}", r.plural),
            cx.id("watch", ns, "List"),
            ns,
        );
        if ns {
            list_watch(
                format!("{base}/watch/{}", r.plural),
                format!(
                    "watch{}{}{}ListForAllNamespaces",
                    cx.gv,
                    capitalize(r.version),
                    kind
                ),
                false,
            );
        }
        let mut op = cx.op("get", "watch", cx.id("watch", ns, ""), format!("watch changes to an object of kind {kind}. deprecated: use the 'watch' parameter with a list operation instead, filtered to a single item with the 'fieldSelector' parameter."), Vec::new(), None, OK, watch_event, WATCHABLE, Some(cx.kind_gvk.clone()));
        op.deprecated = true;
        let mut params = list_params(true);
        params.push(name_param(kind));
        if ns {
            params.push(ns_param());
        }
        params.push(pretty());
        params.sort_by_key(|p| p.name);
        out.push(PathItem {
            path: format!("{base}/watch{ns_seg}/{}/{{name}}", r.plural),
            params,
            ops: vec![op],
        });
    }

    for sub in r.subresources {
        out.extend(subresource_paths(
            &cx,
            sub,
            &item,
            &scope_params(true, kind),
        ));
    }
    out
}

fn replace_op(cx: &Ctx<'_>, suffix: &str, what: &str, def: &str) -> Op {
    let description = if suffix.is_empty() {
        format!("replace the specified {what}")
    } else {
        format!("replace {} of the specified {what}", suffix.to_lowercase())
    };
    cx.op(
        "put",
        "put",
        cx.id("replace", cx.r.namespaced, suffix),
        description,
        vec![dry_run(), field_manager(false), field_validation()],
        Some((def.to_string(), ANY)),
        REPLACED,
        Reply::Def(def.to_string()),
        JSON,
        Some(cx.kind_gvk.clone()),
    )
}

fn patch_op(
    cx: &Ctx<'_>,
    suffix: &str,
    what: &str,
    def: &str,
    gvk: (String, String, String),
) -> Op {
    let description = if suffix.is_empty() {
        format!("partially update the specified {what}")
    } else {
        format!(
            "partially update {} of the specified {what}",
            suffix.to_lowercase()
        )
    };
    cx.op(
        "patch",
        "patch",
        cx.id("patch", cx.r.namespaced, suffix),
        description,
        vec![dry_run(), field_manager(true), field_validation(), force()],
        Some((format!("{META}Patch"), PATCH_TYPES)),
        REPLACED,
        Reply::Def(def.to_string()),
        JSON,
        Some(gvk),
    )
}

fn read_op(cx: &Ctx<'_>, suffix: &str, what: &str, def: &str, gvk: (String, String, String)) -> Op {
    cx.op(
        "get",
        "get",
        cx.id("read", cx.r.namespaced, suffix),
        format!("read {} of the specified {what}", suffix.to_lowercase()),
        Vec::new(),
        None,
        OK,
        Reply::Def(def.to_string()),
        JSON,
        Some(gvk),
    )
}

fn subresource_paths(cx: &Ctx<'_>, sub: &str, item: &str, item_params: &[Param]) -> Vec<PathItem> {
    let r = cx.r;
    let kind = r.kind;
    let path = format!("{item}/{sub}");
    let params = item_params.to_vec();
    let core = |k: &str| gvk("", "v1", k);
    let connect = |suffix: &'static str,
                   options: &str,
                   methods: &[&'static str],
                   extra: Vec<Param>|
     -> Vec<Op> {
        methods
            .iter()
            .map(|m| {
                let verb = format!("connect{}", capitalize(m));
                cx.op(
                    m,
                    "connect",
                    cx.id(&verb, r.namespaced, suffix),
                    format!(
                        "connect {} requests to {} of {kind}",
                        m.to_uppercase(),
                        suffix.to_lowercase()
                    ),
                    extra.clone(),
                    None,
                    OK,
                    Reply::Text,
                    CONNECT,
                    Some(core(options)),
                )
            })
            .collect()
    };
    let item_of = |ops: Vec<Op>| PathItem {
        path: path.clone(),
        params: params.clone(),
        ops,
    };
    match sub {
        "status" | "ephemeralcontainers" | "resize" => {
            let suffix = match sub {
                "status" => "Status",
                "ephemeralcontainers" => "Ephemeralcontainers",
                _ => "Resize",
            };
            vec![item_of(vec![
                read_op(cx, suffix, kind, r.definition, cx.kind_gvk.clone()),
                replace_op(cx, suffix, kind, r.definition),
                patch_op(cx, suffix, kind, r.definition, cx.kind_gvk.clone()),
            ])]
        }
        "scale" => {
            let def = "io.k8s.api.autoscaling.v1.Scale";
            let scale = gvk("autoscaling", "v1", "Scale");
            let mut put = replace_op(cx, "Scale", kind, def);
            put.gvk = Some(scale.clone());
            vec![item_of(vec![
                read_op(cx, "Scale", kind, def, scale.clone()),
                put,
                patch_op(cx, "Scale", kind, def, scale),
            ])]
        }
        "eviction" | "binding" | "token" => {
            let (def, g, suffix) = match sub {
                "eviction" => (
                    "io.k8s.api.policy.v1.Eviction",
                    gvk("policy", "v1", "Eviction"),
                    "Eviction",
                ),
                "binding" => ("io.k8s.api.core.v1.Binding", core("Binding"), "Binding"),
                _ => (
                    "io.k8s.api.authentication.v1.TokenRequest",
                    gvk("authentication.k8s.io", "v1", "TokenRequest"),
                    "Token",
                ),
            };
            let op = cx.op(
                "post",
                "post",
                cx.id("create", r.namespaced, suffix),
                format!("create {} of a {kind}", sub),
                vec![dry_run(), field_manager(false), field_validation()],
                Some((def.to_string(), ANY)),
                CREATED,
                Reply::Def(def.to_string()),
                JSON,
                Some(g),
            );
            vec![item_of(vec![op])]
        }
        "finalize" => {
            let mut op = replace_op(cx, "Finalize", kind, r.definition);
            op.description = format!("replace finalize of the specified {kind}");
            vec![item_of(vec![op])]
        }
        "log" => {
            let mut p = params.clone();
            for (name, ty, d) in [
                (
                    "container",
                    "string",
                    "The container for which to stream logs. Defaults to only container if there is one container in the pod.",
                ),
                (
                    "follow",
                    "boolean",
                    "Follow the log stream of the pod. Defaults to false.",
                ),
                (
                    "insecureSkipTLSVerifyBackend",
                    "boolean",
                    "insecureSkipTLSVerifyBackend indicates that the apiserver should not confirm the validity of the serving certificate of the backend it is connecting to.",
                ),
                (
                    "limitBytes",
                    "integer",
                    "If set, the number of bytes to read from the server before terminating the log output.",
                ),
                (
                    "previous",
                    "boolean",
                    "Return previous terminated container logs. Defaults to false.",
                ),
                (
                    "sinceSeconds",
                    "integer",
                    "A relative time in seconds before the current time from which to show logs.",
                ),
                (
                    "stream",
                    "string",
                    "Specify which container log stream to return to the client. Acceptable values are \"All\", \"Stdout\" and \"Stderr\". If not specified, \"All\" is used.",
                ),
                (
                    "tailLines",
                    "integer",
                    "If set, the number of lines from the end of the logs to show.",
                ),
                (
                    "timestamps",
                    "boolean",
                    "If true, add an RFC3339 or RFC3339Nano timestamp at the beginning of every line of log output. Defaults to false.",
                ),
            ] {
                p.push(q(name, ty, d));
            }
            let op = cx.op(
                "get",
                "get",
                cx.id("read", r.namespaced, "Log"),
                format!("read log of the specified {kind}"),
                Vec::new(),
                None,
                OK,
                Reply::Text,
                TEXT,
                Some(cx.kind_gvk.clone()),
            );
            vec![PathItem {
                path,
                params: p,
                ops: vec![op],
            }]
        }
        "exec" | "attach" => {
            let (suffix, options): (&'static str, &str) = if sub == "exec" {
                ("Exec", "PodExecOptions")
            } else {
                ("Attach", "PodAttachOptions")
            };
            let mut extra = vec![
                q(
                    "container",
                    "string",
                    "The container in which to execute the command. Defaults to only container if there is only one container in the pod.",
                ),
                q(
                    "stderr",
                    "boolean",
                    "Redirect the standard error stream of the pod for this call.",
                ),
                q(
                    "stdin",
                    "boolean",
                    "Redirect the standard input stream of the pod for this call. Defaults to false.",
                ),
                q(
                    "stdout",
                    "boolean",
                    "Redirect the standard output stream of the pod for this call.",
                ),
                q(
                    "tty",
                    "boolean",
                    "TTY if true indicates that a tty will be allocated for the exec call. Defaults to false.",
                ),
            ];
            if sub == "exec" {
                extra.insert(0, q("command", "string", "Command is the remote command to execute. argv array. Not executed within a shell."));
            }
            let mut p = params.clone();
            p.extend(extra);
            vec![PathItem {
                path,
                params: p,
                ops: connect(suffix, options, &["get", "post"], Vec::new()),
            }]
        }
        "portforward" => {
            let mut p = params.clone();
            p.push(q(
                "ports",
                "integer",
                "List of ports to forward Required when using WebSockets",
            ));
            vec![PathItem {
                path,
                params: p,
                ops: connect(
                    "Portforward",
                    "PodPortForwardOptions",
                    &["get", "post"],
                    Vec::new(),
                ),
            }]
        }
        "proxy" => {
            let options = match kind {
                "Node" => "NodeProxyOptions",
                "Service" => "ServiceProxyOptions",
                _ => "PodProxyOptions",
            };
            let methods: &[&'static str] =
                &["delete", "get", "head", "options", "patch", "post", "put"];
            let path_q = q(
                "path",
                "string",
                "Path is the URL path to use for the current proxy request.",
            );
            let mut p = params.clone();
            p.push(path_q.clone());
            let mut with_path = params.clone();
            with_path.insert(0, path_param("path", "path to the resource".into()));
            vec![
                PathItem {
                    path: path.clone(),
                    params: p,
                    ops: connect("Proxy", options, methods, Vec::new()),
                },
                PathItem {
                    path: format!("{path}/{{path}}"),
                    params: with_path,
                    ops: connect("ProxyWithPath", options, methods, vec![path_q]),
                },
            ]
        }
        _ => Vec::new(),
    }
}

/// `GET /apis/<g>/<v>/`: the group version's resource list.
pub(super) fn resources_path(group: &str, version: &str) -> PathItem {
    let op = Op {
        method: "get",
        action: "",
        id: format!(
            "get{}{}APIResources",
            group_camel(group),
            capitalize(version)
        ),
        description: "get available resources".into(),
        params: Vec::new(),
        body: None,
        body_required: false,
        codes: OK,
        reply: Reply::Def(format!("{META}APIResourceList")),
        produces: JSON,
        gvk: None,
        deprecated: false,
        tag: tag(group, version),
    };
    PathItem {
        path: format!("{}/", prefix(group, version)),
        params: Vec::new(),
        ops: vec![op],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstream_spellings() {
        assert_eq!(
            group_camel("rbac.authorization.k8s.io"),
            "RbacAuthorization"
        );
        assert_eq!(group_camel(""), "Core");
        assert_eq!(
            tag("rbac.authorization.k8s.io", "v1"),
            "rbacAuthorization_v1"
        );
        assert_eq!(tag("apps", "v1"), "apps_v1");
        let deploy = crate::catalogue::find("apps", "v1", "deployments").unwrap();
        let paths = resource_paths(deploy);
        let item = paths
            .iter()
            .find(|p| p.path == "/apis/apps/v1/namespaces/{namespace}/deployments/{name}")
            .unwrap();
        let patch = item.ops.iter().find(|o| o.method == "patch").unwrap();
        assert_eq!(patch.id, "patchAppsV1NamespacedDeployment");
        assert!(
            paths
                .iter()
                .any(|p| p.path.ends_with("/deployments/{name}/scale"))
        );
        assert!(paths.iter().any(|p| p.path == "/apis/apps/v1/deployments"));
    }
}
