//! Decoding of Kubernetes protobuf request bodies. The bodies are built by a
//! tiny encoder below, field by field as Go's generated marshallers write
//! them (non-pointer scalars are always written, even when zero), with field
//! numbers taken from upstream's types.go struct tags.

use api::proto::{self, ProtoError};
use serde_json::json;

/// A protobuf message under construction.
#[derive(Default, Clone)]
struct Msg(Vec<u8>);

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

impl Msg {
    fn new() -> Self {
        Msg::default()
    }
    fn key(mut self, tag: u32, wire: u8) -> Self {
        varint(u64::from(tag) << 3 | u64::from(wire), &mut self.0);
        self
    }
    fn bytes(self, tag: u32, b: &[u8]) -> Self {
        let mut m = self.key(tag, 2);
        varint(b.len() as u64, &mut m.0);
        m.0.extend_from_slice(b);
        m
    }
    fn str(self, tag: u32, s: &str) -> Self {
        self.bytes(tag, s.as_bytes())
    }
    fn int(self, tag: u32, v: i64) -> Self {
        let mut m = self.key(tag, 0);
        varint(v as u64, &mut m.0);
        m
    }
    fn msg(self, tag: u32, m: Msg) -> Self {
        self.bytes(tag, &m.0)
    }
    fn map_str(self, tag: u32, k: &str, v: &str) -> Self {
        self.msg(tag, Msg::new().str(1, k).str(2, v))
    }
    fn map_bytes(self, tag: u32, k: &str, v: &[u8]) -> Self {
        self.msg(tag, Msg::new().str(1, k).bytes(2, v))
    }
    fn map_msg(self, tag: u32, k: &str, v: Msg) -> Self {
        self.msg(tag, Msg::new().str(1, k).msg(2, v))
    }
    fn packed(self, tag: u32, vs: &[i64]) -> Self {
        let mut body = Vec::new();
        for v in vs {
            varint(*v as u64, &mut body);
        }
        self.bytes(tag, &body)
    }
}

/// magic + runtime.Unknown{typeMeta{apiVersion, kind}, raw, contentEncoding, contentType}
fn body(api_version: &str, kind: &str, raw: Msg) -> Vec<u8> {
    let unknown = Msg::new()
        .msg(1, Msg::new().str(1, api_version).str(2, kind))
        .msg(2, raw)
        .str(3, "")
        .str(4, "");
    let mut out = b"k8s\0".to_vec();
    out.extend_from_slice(&unknown.0);
    out
}

/// ObjectMeta as a Go client writes it for a new object: every non-pointer
/// field present, creationTimestamp an empty Time.
fn object_meta(name: &str) -> Msg {
    Msg::new()
        .str(1, name)
        .str(2, "")
        .str(3, "")
        .str(4, "")
        .str(5, "")
        .str(6, "")
        .int(7, 0)
        .msg(8, Msg::new())
}

fn quantity(s: &str) -> Msg {
    Msg::new().str(1, s)
}

#[test]
fn config_map_with_data_and_labels() {
    let meta = object_meta("game")
        .map_str(11, "app", "web")
        .map_str(11, "tier", "front");
    let cm = Msg::new()
        .msg(1, meta)
        .map_str(2, "a", "1")
        .map_str(2, "b", "two words");
    let got = proto::decode(&body("v1", "ConfigMap", cm)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "game", "creationTimestamp": null, "labels": {"app": "web", "tier": "front"}},
            "data": {"a": "1", "b": "two words"}
        })
    );
    // apiVersion and kind come first, as in upstream's JSON.
    let keys: Vec<_> = got.as_object().unwrap().keys().cloned().collect();
    assert_eq!(keys[..2], ["apiVersion", "kind"]);
}

#[test]
fn secret_bytes_are_base64() {
    let secret = Msg::new()
        .msg(1, object_meta("creds"))
        .map_bytes(2, "password", b"s3cr3t")
        .map_bytes(2, "bin", &[0, 255, 1])
        .str(3, "Opaque");
    let got = proto::decode(&body("v1", "Secret", secret)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": "creds", "creationTimestamp": null},
            "data": {"password": "czNjcjN0", "bin": "AP8B"},
            "type": "Opaque"
        })
    );
}

#[test]
fn config_map_binary_data() {
    let cm = Msg::new()
        .msg(1, object_meta("b"))
        .map_bytes(3, "blob", b"\x01\x02");
    let got = proto::decode(&body("v1", "ConfigMap", cm)).unwrap();
    assert_eq!(got["binaryData"], json!({"blob": "AQI="}));
}

#[test]
fn deployment_with_containers_ports_resources_and_intstr() {
    let labels = Msg::new().map_str(1, "app", "web");
    let container = Msg::new()
        .str(1, "nginx")
        .str(2, "nginx:1.27")
        .msg(
            6,
            Msg::new()
                .str(1, "")
                .int(2, 0)
                .int(3, 80)
                .str(4, "TCP")
                .str(5, ""),
        )
        .msg(
            8,
            Msg::new()
                .map_msg(1, "cpu", quantity("500m"))
                .map_msg(1, "memory", quantity("128Mi"))
                .map_msg(2, "cpu", quantity("250m")),
        )
        .str(5, "")
        .str(13, "")
        .str(14, "");
    let pod_spec = Msg::new()
        .msg(2, container)
        .str(3, "")
        .str(6, "")
        .str(8, "")
        .str(9, "")
        .str(10, "");
    let template = Msg::new()
        .msg(1, object_meta("").map_str(11, "app", "web"))
        .msg(2, pod_spec);
    let strategy = Msg::new().str(1, "RollingUpdate").msg(
        2,
        Msg::new()
            .msg(1, Msg::new().int(1, 0).int(2, 0).str(3, ""))
            .msg(2, Msg::new().int(1, 1).int(2, 0).str(3, "25%")),
    );
    let spec = Msg::new()
        .int(1, 3)
        .msg(2, labels)
        .msg(3, template)
        .msg(4, strategy)
        .int(5, 0)
        .int(7, 0);
    let deployment = Msg::new()
        .msg(1, object_meta("web"))
        .msg(2, spec)
        .msg(3, Msg::new());
    let got = proto::decode(&body("apps/v1", "Deployment", deployment)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": "web", "creationTimestamp": null},
            "spec": {
                "replicas": 3,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"creationTimestamp": null, "labels": {"app": "web"}},
                    "spec": {
                        "containers": [{
                            "name": "nginx",
                            "image": "nginx:1.27",
                            "ports": [{"containerPort": 80, "protocol": "TCP"}],
                            "resources": {
                                "limits": {"cpu": "500m", "memory": "128Mi"},
                                "requests": {"cpu": "250m"}
                            }
                        }]
                    }
                },
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"}}
            },
            "status": {}
        })
    );
}

#[test]
fn namespace() {
    let ns = Msg::new()
        .msg(1, object_meta("team-a"))
        .msg(2, Msg::new())
        .msg(3, Msg::new().str(1, ""));
    let got = proto::decode(&body("v1", "Namespace", ns)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Namespace",
            "metadata": {"name": "team-a", "creationTimestamp": null},
            "spec": {},
            "status": {}
        })
    );
}

#[test]
fn pod_with_timestamps_and_inline_volume_source() {
    // 2024-01-02T03:04:05Z
    let meta = object_meta("p")
        .str(3, "default")
        .msg(8, Msg::new().int(1, 1_704_164_645).int(2, 0))
        .msg(9, Msg::new().int(1, 1_704_164_645).int(2, 999_999_999))
        .int(10, 30);
    let volume = Msg::new()
        .str(1, "scratch")
        .msg(2, Msg::new().msg(2, Msg::new().str(1, "Memory")));
    let security = Msg::new()
        .int(4, 1000)
        .int(4, 2000)
        .packed(4, &[3000, 4000])
        .int(2, 0);
    let spec = Msg::new()
        .msg(1, volume)
        .msg(
            2,
            Msg::new()
                .str(1, "c")
                .str(2, "busybox")
                .str(3, "sleep")
                .str(3, "3600"),
        )
        .int(4, 0)
        .msg(14, security)
        .int(21, 0);
    let pod = Msg::new().msg(1, meta).msg(2, spec);
    let got = proto::decode(&body("v1", "Pod", pod)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "p",
                "namespace": "default",
                "creationTimestamp": "2024-01-02T03:04:05Z",
                "deletionTimestamp": "2024-01-02T03:04:05Z",
                "deletionGracePeriodSeconds": 30
            },
            "spec": {
                "volumes": [{"name": "scratch", "emptyDir": {"medium": "Memory"}}],
                "containers": [{"name": "c", "image": "busybox", "command": ["sleep", "3600"]}],
                // Pointer fields keep explicit zeros / false.
                "terminationGracePeriodSeconds": 0,
                "securityContext": {"runAsUser": 0, "supplementalGroups": [1000, 2000, 3000, 4000]},
                "automountServiceAccountToken": false
            }
        })
    );
}

#[test]
fn eviction_with_zero_grace_period_and_meta_delete_options() {
    let eviction = Msg::new()
        .msg(1, object_meta("p").str(3, "default"))
        .msg(2, Msg::new().int(1, 0).str(4, "Foreground"));
    let got = proto::decode(&body("policy/v1", "Eviction", eviction)).unwrap();
    assert_eq!(
        got,
        json!({
            "apiVersion": "policy/v1",
            "kind": "Eviction",
            "metadata": {"name": "p", "namespace": "default", "creationTimestamp": null},
            "deleteOptions": {"gracePeriodSeconds": 0, "propagationPolicy": "Foreground"}
        })
    );
    // DeleteOptions travels under whatever group version the client used.
    let opts = Msg::new().int(1, 5).str(5, "All");
    let got = proto::decode(&body("apps/v1", "DeleteOptions", opts)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "apps/v1", "kind": "DeleteOptions", "gracePeriodSeconds": 5, "dryRun": ["All"]})
    );
}

#[test]
fn binding_and_scale() {
    let binding = Msg::new().msg(1, object_meta("p")).msg(
        2,
        Msg::new()
            .str(1, "Node")
            .str(3, "node-1")
            .str(2, "")
            .str(4, "")
            .str(5, "")
            .str(6, "")
            .str(7, ""),
    );
    let got = proto::decode(&body("v1", "Binding", binding)).unwrap();
    assert_eq!(got["target"], json!({"kind": "Node", "name": "node-1"}));
    let scale = Msg::new()
        .msg(1, object_meta("web"))
        .msg(2, Msg::new().int(1, 0))
        .msg(3, Msg::new().int(1, 0).str(2, ""));
    let got = proto::decode(&body("autoscaling/v1", "Scale", scale)).unwrap();
    // Scale.spec.replicas is a plain int32 with omitempty; status.replicas has no omitempty.
    assert_eq!(got["spec"], json!({}));
    assert_eq!(got["status"], json!({"replicas": 0}));
}

#[test]
fn list_kinds_resolve_by_convention() {
    let list = Msg::new()
        .msg(1, Msg::new().str(2, "42"))
        .msg(2, Msg::new().msg(1, object_meta("a")));
    let got = proto::decode(&body("v1", "ConfigMapList", list)).unwrap();
    assert_eq!(got["metadata"], json!({"resourceVersion": "42"}));
    assert_eq!(
        got["items"],
        json!([{"metadata": {"name": "a", "creationTimestamp": null}}])
    );
}

#[test]
fn raw_extension_holds_json_or_a_nested_body() {
    let cm = Msg::new().msg(1, object_meta("inner"));
    let nested = body("v1", "ConfigMap", cm);
    let event = Msg::new()
        .str(1, "ADDED")
        .msg(2, Msg::new().bytes(1, &nested));
    let got = proto::decode(&body("v1", "WatchEvent", event)).unwrap();
    assert_eq!(got["object"]["metadata"]["name"], "inner");
    assert_eq!(got["object"]["kind"], "ConfigMap");

    let revision = Msg::new()
        .msg(1, object_meta("rev"))
        .msg(2, Msg::new().bytes(1, br#"{"spec":{"x":[1,2]}}"#))
        .int(3, 4);
    let got = proto::decode(&body("apps/v1", "ControllerRevision", revision)).unwrap();
    assert_eq!(got["data"], json!({"spec": {"x": [1, 2]}}));
    assert_eq!(got["revision"], 4);
}

#[test]
fn micro_time_and_duration() {
    let lease = Msg::new()
        .str(1, "holder")
        .int(2, 15)
        .msg(4, Msg::new().int(1, 1_704_164_645).int(2, 123_456_789));
    let got = proto::decode_message("k8s.io.api.coordination.v1.LeaseSpec", &lease.0).unwrap();
    assert_eq!(
        got,
        json!({"holderIdentity": "holder", "leaseDurationSeconds": 15, "renewTime": "2024-01-02T03:04:05.123456Z"})
    );
    let d = Msg::new().int(1, 3_723_000_000_000);
    let got = proto::decode_message("k8s.io.apimachinery.pkg.apis.meta.v1.Duration", &d.0).unwrap();
    assert_eq!(got, json!("1h2m3s"));
}

#[test]
fn unknown_fields_are_skipped() {
    let cm = Msg::new()
        .msg(1, object_meta("x"))
        .str(99, "from the future")
        .int(98, 7);
    let got = proto::decode(&body("v1", "ConfigMap", cm)).unwrap();
    assert_eq!(
        got,
        json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x", "creationTimestamp": null}})
    );
}

#[test]
fn errors_name_what_failed() {
    assert!(matches!(
        proto::decode(b"{\"kind\":\"ConfigMap\"}"),
        Err(ProtoError::Magic)
    ));
    assert!(matches!(
        proto::decode(b"k8s\0"),
        Err(ProtoError::MissingTypeMeta(_))
    ));
    let unknown = proto::decode(&body("example.com/v1", "Widget", Msg::new())).unwrap_err();
    assert!(unknown.to_string().contains("Widget"), "{unknown}");
    // data declared as a map of strings, sent as a varint.
    let wrong = proto::decode(&body("v1", "ConfigMap", Msg::new().int(2, 5))).unwrap_err();
    assert!(wrong.to_string().contains("ConfigMap.data"), "{wrong}");
    let bad_json = Msg::new().msg(2, Msg::new().bytes(1, b"{not json"));
    let err = proto::decode(&body("apps/v1", "ControllerRevision", bad_json)).unwrap_err();
    assert!(err.to_string().contains("RawExtension"), "{err}");
}

#[test]
fn every_truncation_is_an_error() {
    let meta = object_meta("game").map_str(11, "app", "web");
    let full = body(
        "v1",
        "ConfigMap",
        Msg::new().msg(1, meta).map_str(2, "a", "1"),
    );
    assert!(proto::decode(&full).is_ok());
    // magic, then typeMeta (tag, length, 15 bytes), then raw; the envelope
    // ends with two empty strings (2 bytes each).
    let after_type_meta = 4 + 2 + 15;
    let raw_end = full.len() - 4;
    for n in 0..raw_end {
        // Ending right after typeMeta is a well-formed body with no object fields.
        if n != after_type_meta {
            assert!(proto::decode(&full[..n]).is_err(), "cut at {n} decoded");
        }
    }
    assert!(proto::decode(&full[..full.len() - 1]).is_err());
}

#[test]
fn garbage_never_panics() {
    // A deterministic xorshift stream: random bodies behind a valid prefix,
    // and random mutations of a valid body.
    let mut state = 0x9e37_79b9_7f4a_7c15u64;
    let mut next = move || {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state
    };
    let meta = object_meta("game").map_str(11, "app", "web");
    let valid = body(
        "apps/v1",
        "Deployment",
        Msg::new().msg(1, meta).msg(2, Msg::new().int(1, 2)),
    );
    for _ in 0..20_000 {
        let mut input = valid.clone();
        for _ in 0..(next() % 4 + 1) {
            let i = (next() as usize) % input.len();
            input[i] = next() as u8;
        }
        let _ = proto::decode(&input);
        let mut random = b"k8s\0".to_vec();
        random.extend((0..next() % 64).map(|_| next() as u8));
        let _ = proto::decode(&random);
    }
    // Deep nesting through RawExtension is refused, not a stack overflow.
    let mut nested = body("v1", "ConfigMap", Msg::new());
    for _ in 0..200 {
        nested = body(
            "v1",
            "WatchEvent",
            Msg::new()
                .str(1, "ADDED")
                .msg(2, Msg::new().bytes(1, &nested)),
        );
    }
    assert!(matches!(
        proto::decode(&nested),
        Err(ProtoError::TooDeep(_))
    ));
}
