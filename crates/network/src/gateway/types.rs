//! The Gateway API kinds r8s acts on, as far as it reads them: only the
//! fields the controller uses are typed (everything optional, so an object
//! written by a newer CRD still decodes); status stays raw JSON because the
//! controller writes it whole.

use std::borrow::Cow;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use kube::core::{ClusterResourceScope, NamespaceResourceScope};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// The API group.
pub const GROUP: &str = "gateway.networking.k8s.io";

macro_rules! kind {
    ($name:ident, $spec:ty, $scope:ty, $plural:literal, $version:literal) => {
        #[doc = concat!("A ", stringify!($name), " (", $version, ").")]
        #[derive(Debug, Clone, Default, Serialize, Deserialize)]
        pub struct $name {
            /// Object metadata.
            #[serde(default)]
            pub metadata: ObjectMeta,
            /// The desired state.
            #[serde(default)]
            pub spec: $spec,
            /// The status as stored.
            #[serde(default, skip_serializing_if = "Option::is_none")]
            pub status: Option<Value>,
        }

        impl kube::Resource for $name {
            type DynamicType = ();
            type Scope = $scope;
            fn kind(_: &()) -> Cow<'_, str> {
                stringify!($name).into()
            }
            fn group(_: &()) -> Cow<'_, str> {
                GROUP.into()
            }
            fn version(_: &()) -> Cow<'_, str> {
                $version.into()
            }
            fn plural(_: &()) -> Cow<'_, str> {
                $plural.into()
            }
            fn meta(&self) -> &ObjectMeta {
                &self.metadata
            }
            fn meta_mut(&mut self) -> &mut ObjectMeta {
                &mut self.metadata
            }
        }
    };
}

kind!(
    GatewayClass,
    GatewayClassSpec,
    ClusterResourceScope,
    "gatewayclasses",
    "v1"
);
kind!(
    Gateway,
    GatewaySpec,
    NamespaceResourceScope,
    "gateways",
    "v1"
);
kind!(
    HTTPRoute,
    RouteSpec<HttpRule>,
    NamespaceResourceScope,
    "httproutes",
    "v1"
);
kind!(
    GRPCRoute,
    RouteSpec<GrpcRule>,
    NamespaceResourceScope,
    "grpcroutes",
    "v1"
);
kind!(
    ReferenceGrant,
    ReferenceGrantSpec,
    NamespaceResourceScope,
    "referencegrants",
    "v1beta1"
);

/// GatewayClass spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewayClassSpec {
    /// The controller that handles Gateways of this class.
    #[serde(default)]
    pub controller_name: String,
}

/// Gateway spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GatewaySpec {
    /// The class.
    #[serde(default)]
    pub gateway_class_name: String,
    /// Listeners.
    #[serde(default)]
    pub listeners: Vec<Listener>,
    /// Requested addresses (r8s assigns the node's own).
    #[serde(default)]
    pub addresses: Vec<Value>,
}

/// One Gateway listener.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Listener {
    /// Unique within the Gateway.
    #[serde(default)]
    pub name: String,
    /// Host name (may start with `*.`).
    pub hostname: Option<String>,
    /// Port.
    #[serde(default)]
    pub port: i32,
    /// HTTP, HTTPS, TLS, TCP, UDP.
    #[serde(default)]
    pub protocol: String,
    /// TLS settings (HTTPS).
    pub tls: Option<ListenerTls>,
    /// Which routes may attach.
    pub allowed_routes: Option<AllowedRoutes>,
}

/// A listener's TLS.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ListenerTls {
    /// Terminate (default) or Passthrough.
    pub mode: Option<String>,
    /// Certificates (Secrets).
    #[serde(default)]
    pub certificate_refs: Vec<ObjectRef>,
}

/// A reference to an object, optionally in another namespace.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ObjectRef {
    /// API group ("" for core).
    pub group: Option<String>,
    /// Kind.
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Namespace (the referrer's when unset).
    pub namespace: Option<String>,
    /// Port (backends).
    pub port: Option<i32>,
}

/// `allowedRoutes`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct AllowedRoutes {
    /// Namespaces routes may come from.
    pub namespaces: Option<RouteNamespaces>,
    /// Kinds of routes.
    pub kinds: Option<Vec<RouteGroupKind>>,
}

/// `allowedRoutes.namespaces`.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteNamespaces {
    /// Same (default), All or Selector.
    pub from: Option<String>,
    /// For Selector.
    pub selector: Option<LabelSelector>,
}

/// A group and kind of route.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct RouteGroupKind {
    /// Group (defaults to the Gateway API's).
    pub group: Option<String>,
    /// Kind.
    #[serde(default)]
    pub kind: String,
}

/// What HTTPRoute and GRPCRoute share.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct RouteSpec<R> {
    /// Gateways (and listeners) the route attaches to.
    #[serde(default)]
    pub parent_refs: Vec<ParentRef>,
    /// Host names.
    #[serde(default)]
    pub hostnames: Vec<String>,
    /// Rules.
    #[serde(default)]
    pub rules: Vec<R>,
}

/// A route's parent.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct ParentRef {
    /// Group (default gateway.networking.k8s.io).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub group: Option<String>,
    /// Kind (default Gateway).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// Namespace (the route's when unset).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Listener name.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub section_name: Option<String>,
    /// Listener port.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub port: Option<i32>,
}

/// One HTTPRoute rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpRule {
    /// Matches (any of them).
    #[serde(default)]
    pub matches: Vec<HttpMatch>,
    /// Filters.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Backends, weighted.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
    /// Timeouts.
    pub timeouts: Option<Timeouts>,
}

/// An HTTP match: all of its parts.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HttpMatch {
    /// Path.
    pub path: Option<StringMatch>,
    /// Headers.
    #[serde(default)]
    pub headers: Vec<NamedMatch>,
    /// Query parameters.
    #[serde(default)]
    pub query_params: Vec<NamedMatch>,
    /// Method.
    pub method: Option<String>,
}

/// A typed string match (path).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct StringMatch {
    /// Exact, PathPrefix, RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Value.
    pub value: Option<String>,
}

/// A header or query-parameter match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct NamedMatch {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A route filter.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Filter {
    /// The filter's type.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// RequestHeaderModifier.
    pub request_header_modifier: Option<HeaderModifier>,
    /// ResponseHeaderModifier.
    pub response_header_modifier: Option<HeaderModifier>,
    /// RequestRedirect.
    pub request_redirect: Option<Redirect>,
    /// URLRewrite.
    pub url_rewrite: Option<Rewrite>,
    /// RequestMirror.
    pub request_mirror: Option<Mirror>,
}

/// A header modifier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct HeaderModifier {
    /// Replace (or add).
    #[serde(default)]
    pub set: Vec<Header>,
    /// Append.
    #[serde(default)]
    pub add: Vec<Header>,
    /// Remove.
    #[serde(default)]
    pub remove: Vec<String>,
}

/// A header name and value.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
pub struct Header {
    /// Name.
    #[serde(default)]
    pub name: String,
    /// Value.
    #[serde(default)]
    pub value: String,
}

/// A redirect.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Redirect {
    /// http or https.
    pub scheme: Option<String>,
    /// Host name.
    pub hostname: Option<String>,
    /// Path modifier.
    pub path: Option<PathModifier>,
    /// Port.
    pub port: Option<i32>,
    /// 301 or 302 (default).
    pub status_code: Option<i32>,
}

/// A rewrite.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Rewrite {
    /// Host name.
    pub hostname: Option<String>,
    /// Path modifier.
    pub path: Option<PathModifier>,
}

/// A path modifier.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct PathModifier {
    /// ReplaceFullPath or ReplacePrefixMatch.
    #[serde(rename = "type", default)]
    pub kind: String,
    /// For ReplaceFullPath.
    pub replace_full_path: Option<String>,
    /// For ReplacePrefixMatch.
    pub replace_prefix_match: Option<String>,
}

/// A mirror.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Mirror {
    /// Where copies go.
    #[serde(default)]
    pub backend_ref: ObjectRef,
}

/// A weighted backend.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct BackendRef {
    /// The object (a Service).
    #[serde(flatten)]
    pub target: ObjectRef,
    /// Weight (default 1).
    pub weight: Option<i32>,
    /// Per-backend filters.
    #[serde(default)]
    pub filters: Vec<Filter>,
}

/// Rule timeouts (durations as `10s`, `500ms`).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Timeouts {
    /// Whole request.
    pub request: Option<String>,
    /// Each try to a backend.
    pub backend_request: Option<String>,
}

/// One GRPCRoute rule.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcRule {
    /// Matches (any of them).
    #[serde(default)]
    pub matches: Vec<GrpcMatch>,
    /// Filters.
    #[serde(default)]
    pub filters: Vec<Filter>,
    /// Backends, weighted.
    #[serde(default)]
    pub backend_refs: Vec<BackendRef>,
}

/// A gRPC match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMatch {
    /// Service and method.
    pub method: Option<GrpcMethod>,
    /// Headers.
    #[serde(default)]
    pub headers: Vec<NamedMatch>,
}

/// A gRPC method match.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrpcMethod {
    /// Exact (default) or RegularExpression.
    #[serde(rename = "type")]
    pub kind: Option<String>,
    /// Service (`pkg.Service`).
    pub service: Option<String>,
    /// Method.
    pub method: Option<String>,
}

/// ReferenceGrant spec.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct ReferenceGrantSpec {
    /// Who may refer.
    #[serde(default)]
    pub from: Vec<GrantFrom>,
    /// To what.
    #[serde(default)]
    pub to: Vec<GrantTo>,
}

/// `from` of a ReferenceGrant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantFrom {
    /// Group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// Namespace.
    #[serde(default)]
    pub namespace: String,
}

/// `to` of a ReferenceGrant.
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct GrantTo {
    /// Group.
    #[serde(default)]
    pub group: String,
    /// Kind.
    #[serde(default)]
    pub kind: String,
    /// One name, or all when unset.
    pub name: Option<String>,
}
