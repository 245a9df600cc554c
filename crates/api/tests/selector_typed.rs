//! Selectors from a controller's point of view: typed label maps,
//! metav1.LabelSelector objects, and field values per kind.

use std::collections::BTreeMap;

use api::selector::{FieldSelector, LabelSelector, field_value};
use serde_json::json;

fn labels(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

#[test]
fn label_selectors_match_typed_maps() {
    let l = labels(&[("app", "web"), ("tier", "front"), ("rank", "7")]);
    for (sel, want) in [
        ("app=web", true),
        ("app==web,tier", true),
        ("app!=web", false),
        ("app in (db, web)", true),
        ("app notin (web)", false),
        ("!tier", false),
        ("!missing", true),
        ("missing notin (x)", true),
        ("rank>5", true),
        ("rank<5", false),
        ("  app = web  ,  tier  ", true),
        ("", true),
    ] {
        assert_eq!(
            LabelSelector::parse(sel).unwrap().matches(&l),
            want,
            "{sel}"
        );
    }
    let json_labels = json!({"app": "web"});
    let map = json_labels.as_object().unwrap();
    assert!(LabelSelector::parse("app=web").unwrap().matches(map));
}

#[test]
fn label_selector_objects() {
    let sel = LabelSelector::from_label_selector(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "edge"]},
            {"key": "canary", "operator": "DoesNotExist"},
            {"key": "zone", "operator": "Exists"},
            {"key": "env", "operator": "NotIn", "values": ["dev"]}
        ]
    }))
    .unwrap();
    assert!(sel.matches(&labels(&[("app", "web"), ("tier", "edge"), ("zone", "a")])));
    assert!(!sel.matches(&labels(&[
        ("app", "web"),
        ("tier", "edge"),
        ("zone", "a"),
        ("canary", "1")
    ])));
    assert!(!sel.matches(&labels(&[("app", "web"), ("tier", "back"), ("zone", "a")])));
    assert!(!sel.matches(&labels(&[
        ("app", "web"),
        ("tier", "edge"),
        ("zone", "a"),
        ("env", "dev")
    ])));
    assert!(
        LabelSelector::from_label_selector(
            &json!({"matchExpressions": [{"key": "a", "operator": "Foo"}]})
        )
        .is_err()
    );
}

#[test]
fn bad_selectors_name_the_bad_part() {
    let err = LabelSelector::parse("app=-web").unwrap_err().to_string();
    assert!(err.contains("\"-web\""), "{err}");
    let err = LabelSelector::parse("-app=web").unwrap_err().to_string();
    assert!(err.contains("\"-app\""), "{err}");
    assert!(LabelSelector::parse("app in (a").is_err());
    assert!(FieldSelector::parse("spec.nodeName").is_err());
}

#[test]
fn field_values_per_kind() {
    let pod = json!({"metadata": {"name": "p", "namespace": "d"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "serviceAccountName": "default", "schedulerName": "default-scheduler"},
        "status": {"phase": "Running", "podIPs": [{"ip": "10.42.0.5"}], "podIP": "10.42.0.5"}});
    let v = |f: &str| field_value("", "pods", &pod, f).unwrap().unwrap();
    assert_eq!(v("metadata.name"), "p");
    assert_eq!(v("metadata.namespace"), "d");
    assert_eq!(v("spec.nodeName"), "n1");
    assert_eq!(v("spec.host"), "n1");
    assert_eq!(v("spec.hostNetwork"), "false");
    assert_eq!(v("status.phase"), "Running");
    assert_eq!(v("status.podIP"), "10.42.0.5");
    assert_eq!(v("status.nominatedNodeName"), "");
    let err = field_value("", "pods", &pod, "foo").unwrap_err();
    assert_eq!(err.to_string(), "field label not supported: foo");

    let node = json!({"metadata": {"name": "n"}, "spec": {"unschedulable": true}});
    assert_eq!(
        field_value("", "nodes", &node, "spec.unschedulable")
            .unwrap()
            .unwrap(),
        "true"
    );
    assert!(field_value("", "nodes", &node, "metadata.namespace").is_err());
    let job = json!({"metadata": {"name": "j"}, "status": {"succeeded": 2}});
    assert_eq!(
        field_value("batch", "jobs", &job, "status.successful")
            .unwrap()
            .unwrap(),
        "2"
    );
    let rs = json!({"metadata": {"name": "r"}, "status": {}});
    assert_eq!(
        field_value("apps", "replicasets", &rs, "status.replicas")
            .unwrap()
            .unwrap(),
        "0"
    );
    let svc =
        json!({"metadata": {"name": "s"}, "spec": {"type": "ClusterIP", "clusterIP": "10.43.0.1"}});
    assert_eq!(
        field_value("", "services", &svc, "spec.type")
            .unwrap()
            .unwrap(),
        "ClusterIP"
    );
    let secret = json!({"metadata": {"name": "s"}, "type": "Opaque"});
    assert_eq!(
        field_value("", "secrets", &secret, "type")
            .unwrap()
            .unwrap(),
        "Opaque"
    );
    let ns = json!({"metadata": {"name": "x"}, "status": {"phase": "Terminating"}});
    assert_eq!(
        field_value("", "namespaces", &ns, "status.phase")
            .unwrap()
            .unwrap(),
        "Terminating"
    );
    let ev = json!({"metadata": {"name": "e", "namespace": "d"}, "involvedObject": {"kind": "Pod", "name": "p", "uid": "u1"},
        "reason": "Started", "type": "Normal", "source": {"component": "kubelet"}});
    for (f, want) in [
        ("involvedObject.kind", "Pod"),
        ("involvedObject.uid", "u1"),
        ("reason", "Started"),
        ("source", "kubelet"),
        ("type", "Normal"),
    ] {
        assert_eq!(
            field_value("", "events", &ev, f).unwrap().unwrap(),
            want,
            "{f}"
        );
    }
    assert!(field_value("", "configmaps", &ev, "type").is_err());

    let sel = FieldSelector::parse("spec.nodeName=n1,status.phase!=Pending").unwrap();
    sel.check_supported("", "pods").unwrap();
    assert!(sel.matches("", "pods", &pod));
    assert!(
        FieldSelector::parse("metadata.namespace=x")
            .unwrap()
            .check_supported("", "nodes")
            .is_err()
    );
}
