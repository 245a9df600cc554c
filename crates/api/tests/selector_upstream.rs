//! Upstream's label and field selector test cases
//! (apimachinery `pkg/labels/selector_test.go`, `pkg/fields/selector_test.go`).

use api::selector::{FieldSelector, LabelSelector, Operator, Requirement};
use serde_json::{Map, Value, json};

fn set(pairs: &[(&str, &str)]) -> Map<String, Value> {
    pairs
        .iter()
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect()
}

fn expect_match(sel: &str, labels: &[(&str, &str)], want: bool) {
    let s = LabelSelector::parse(sel).unwrap_or_else(|e| panic!("{sel:?}: {e}"));
    assert_eq!(s.matches(&set(labels)), want, "{sel:?} against {labels:?}");
}

#[test]
fn label_selector_parse_good_and_bad() {
    for good in [
        "x=a,y=b,z=c",
        "",
        "x!=a,y=b",
        "x=",
        "x= ",
        "x=,z= ",
        "x= ,z= ",
        "!x",
        "x>1",
        "x>1,z<5",
    ] {
        assert!(LabelSelector::parse(good).is_ok(), "{good:?} should parse");
    }
    for bad in ["x=a||y=b", "x==a==b", "!x=a", "x<a"] {
        assert!(LabelSelector::parse(bad).is_err(), "{bad:?} should fail");
    }
}

#[test]
fn label_selector_matches() {
    expect_match("", &[("x", "y")], true);
    expect_match("x=y", &[("x", "y")], true);
    expect_match("x=y,z=w", &[("x", "y"), ("z", "w")], true);
    expect_match("x!=y,z!=w", &[("x", "z"), ("z", "a")], true);
    expect_match("notin=in", &[("notin", "in")], true);
    expect_match("x", &[("x", "z")], true);
    expect_match("!x", &[("y", "z")], true);
    expect_match("x>1", &[("x", "2")], true);
    expect_match("x<1", &[("x", "0")], true);
    expect_match("x=z", &[], false);
    expect_match("x=y", &[("x", "z")], false);
    expect_match("x=y,z=w", &[("x", "w"), ("z", "w")], false);
    expect_match("x!=y,z!=w", &[("x", "z"), ("z", "w")], false);
    expect_match("x", &[("y", "z")], false);
    expect_match("!x", &[("x", "z")], false);
    expect_match("x>1", &[("x", "0")], false);
    expect_match("x<1", &[("x", "2")], false);
    expect_match("x>1", &[("x", "abc")], false);
    let ls = [("foo", "bar"), ("baz", "blah")];
    expect_match("foo=bar", &ls, true);
    expect_match("baz=blah", &ls, true);
    expect_match("foo=bar,baz=blah", &ls, true);
    expect_match("foo=blah", &ls, false);
    expect_match("baz=bar", &ls, false);
    expect_match("foo=bar,foobar=bar,baz=blah", &ls, false);
    expect_match("foo in (bar, x)", &ls, true);
    expect_match("foo notin (bar)", &ls, false);
    expect_match("missing notin (bar)", &ls, true);
    expect_match("missing!=bar", &ls, true);
}

/// (selector, canonical string, whether String() gives the input back, valid)
#[test]
fn set_selector_parser() {
    let cases: &[(&str, &str, bool, bool)] = &[
        ("", "", true, true),
        ("\rx", "x", false, true),
        (
            "this-is-a-dns.domain.com/key-with-dash",
            "this-is-a-dns.domain.com/key-with-dash",
            true,
            true,
        ),
        (
            "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            "this-is-another-dns.domain.com/key-with-dash in (so,what)",
            true,
            true,
        ),
        (
            "0.1.2.domain/99 notin (10.10.100.1, tick.tock.clock)",
            "0.1.2.domain/99 notin (10.10.100.1,tick.tock.clock)",
            false,
            true,
        ),
        ("foo  in\t (abc)", "foo in (abc)", false, true),
        ("x notin\n (abc)", "x notin (abc)", false, true),
        ("x  notin\t\t\t(abc,def)", "x notin (abc,def)", false, true),
        ("x in (abc,def)", "x in (abc,def)", true, true),
        ("x in (abc,)", "x in (,abc)", false, true),
        ("x in ()", "x in ()", true, true),
        (
            "x notin (abc,,def),bar,z in (),w",
            "bar,w,x notin (,abc,def),z in ()",
            false,
            true,
        ),
        ("x,y in (a)", "x,y in (a)", true, true),
        ("x=a", "x=a", true, true),
        ("x>1", "x>1", true, true),
        ("x<7", "x<7", true, true),
        ("x=a,y!=b", "x=a,y!=b", true, true),
        ("x=a,y!=b,z in (h,i,j)", "x=a,y!=b,z in (h,i,j)", true, true),
        ("x=a||y=b", "", false, false),
        ("x,,y", "", false, false),
        (",x,y", "", false, false),
        ("x nott in (y)", "", false, false),
        ("x notin ( )", "x notin ()", false, true),
        ("x notin (, a)", "x notin (,a)", false, true),
        ("a in (xyz),", "", false, false),
        ("a in (xyz)b notin ()", "", false, false),
        ("a ", "a", false, true),
        (
            "a in (x,y,notin, z,in)",
            "a in (in,notin,x,y,z)",
            false,
            true,
        ),
        ("a in (xyz abc)", "", false, false),
        ("a notin(", "", false, false),
        ("a (", "", false, false),
        ("(", "", false, false),
    ];
    for (input, canonical, round_trips, valid) in cases {
        match LabelSelector::parse(input) {
            Ok(s) => {
                assert!(valid, "{input:?} should not parse, got {s}");
                assert_eq!(s.to_string(), *canonical, "{input:?}");
                assert_eq!(s.to_string() == *input, *round_trips, "{input:?}");
            }
            Err(e) => assert!(!valid, "{input:?} should parse: {e}"),
        }
    }
}

#[test]
fn parse_requirement_values() {
    let s = LabelSelector::parse("a in (x,y,notin, z,in)").unwrap();
    let r = &s.requirements()[0];
    assert_eq!(r.key(), "a");
    assert_eq!(r.operator(), Operator::In);
    assert_eq!(r.values(), ["in", "notin", "x", "y", "z"]);
    let s = LabelSelector::parse("x notin (abc,,def),bar,z in (),w").unwrap();
    let keys: Vec<&str> = s.requirements().iter().map(Requirement::key).collect();
    assert_eq!(keys, ["bar", "w", "x", "z"]);
    assert_eq!(s.requirements()[2].values(), ["", "abc", "def"]);
}

#[test]
fn requirement_constructor() {
    let v = |xs: &[&str]| xs.iter().map(|s| s.to_string()).collect::<Vec<_>>();
    let cases: Vec<(String, Operator, Vec<String>, bool)> = vec![
        ("x1".into(), Operator::In, v(&[]), false),
        ("x2".into(), Operator::NotIn, v(&[]), false),
        ("x3".into(), Operator::In, v(&["foo"]), true),
        ("x4".into(), Operator::NotIn, v(&["foo"]), true),
        ("x5".into(), Operator::Equals, v(&["foo", "bar"]), false),
        ("x6".into(), Operator::Exists, v(&[]), true),
        ("x7".into(), Operator::DoesNotExist, v(&[]), true),
        ("x8".into(), Operator::Exists, v(&["foo"]), false),
        ("x9".into(), Operator::In, v(&["bar"]), true),
        ("x10".into(), Operator::In, v(&["bar"]), true),
        ("x11".into(), Operator::GreaterThan, v(&["1"]), true),
        ("x12".into(), Operator::LessThan, v(&["6"]), true),
        ("x13".into(), Operator::GreaterThan, v(&[]), false),
        ("x14".into(), Operator::GreaterThan, v(&["bar"]), false),
        ("x15".into(), Operator::LessThan, v(&["bar"]), false),
        ("a".repeat(254), Operator::Exists, v(&[]), false),
        (
            "x16".into(),
            Operator::Equals,
            v(&["a".repeat(254).as_str()]),
            false,
        ),
        ("x17".into(), Operator::Equals, v(&["a b"]), false),
        ("x18".into(), Operator::Equals, v(&["a-"]), false),
        ("-x".into(), Operator::Exists, v(&[]), false),
        ("example.com/x".into(), Operator::Exists, v(&[]), true),
    ];
    for (key, op, values, ok) in cases {
        assert_eq!(
            Requirement::new(&key, op, values.clone()).is_ok(),
            ok,
            "{key} {op:?} {values:?}"
        );
    }
}

#[test]
fn error_messages_are_upstreams() {
    let err = |s: &str| LabelSelector::parse(s).unwrap_err().to_string();
    assert_eq!(
        err("a b"),
        "unable to parse requirement: found 'b', expected: in, notin, =, ==, !=, gt, lt"
    );
    assert_eq!(err("x,,y"), "found ',', expected: identifier after ','");
    assert_eq!(err("a=b c"), "found 'c', expected: ',' or 'end of string'");
    assert_eq!(
        err("(a)"),
        "found '(', expected: !, identifier, or 'end of string'"
    );
    assert_eq!(
        err("a in b"),
        "unable to parse requirement: found 'b' expected: '('"
    );
    assert_eq!(
        err("a in (b c)"),
        "unable to parse requirement: found 'c', expected: ',' or ')'"
    );
    assert_eq!(
        err("! =a"),
        "unable to parse requirement: found '=', expected: identifier"
    );
    assert_eq!(
        err("-a=b"),
        "unable to parse requirement: <nil>: Invalid value: \"-a\": name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
    );
    assert_eq!(
        err("a=-b"),
        "unable to parse requirement: values[0][a]: Invalid value: \"-b\": a valid label must be an empty string or consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyValue',  or 'my_value',  or '12345', regex used for validation is '(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])?')"
    );
    assert_eq!(
        err("x<a"),
        "unable to parse requirement: values[0]: Invalid value: \"a\": for 'Gt', 'Lt' operators, the value must be an integer"
    );
    assert!(err("Example.com/a").contains("prefix part a lowercase RFC 1123 subdomain"));
}

#[test]
fn to_string() {
    for (sel, want) in [
        (
            "x in (abc,def),y notin (jkl),z",
            "x in (abc,def),y notin (jkl),z",
        ),
        ("x notin (abc,def),y!=jkl,!z", "x notin (abc,def),y!=jkl,!z"),
        (
            "x notin (abc),y in (jkl,mno),z notin ()",
            "x notin (abc),y in (jkl,mno),z notin ()",
        ),
        ("x=abc,y==jkl,z!=a,z", "x=abc,y==jkl,z!=a,z"),
        ("x>2,y<8,z", "x>2,y<8,z"),
        ("z=1,a=2", "a=2,z=1"),
    ] {
        assert_eq!(LabelSelector::parse(sel).unwrap().to_string(), want);
    }
}

#[test]
fn from_metav1_label_selector() {
    let s = LabelSelector::from_label_selector(&json!({
        "matchLabels": {"app": "web"},
        "matchExpressions": [
            {"key": "tier", "operator": "In", "values": ["front", "back"]},
            {"key": "env", "operator": "NotIn", "values": ["dev"]},
            {"key": "track", "operator": "Exists"},
            {"key": "canary", "operator": "DoesNotExist"}
        ]
    }))
    .unwrap();
    assert_eq!(
        s.to_string(),
        "app=web,!canary,env notin (dev),tier in (back,front),track"
    );
    assert!(s.matches(&set(&[("app", "web"), ("tier", "front"), ("track", "1")])));
    assert!(!s.matches(&set(&[("app", "web"), ("tier", "front")])));
    assert!(!s.matches(&set(&[
        ("app", "web"),
        ("tier", "front"),
        ("track", "1"),
        ("canary", "")
    ])));
    assert!(!s.matches(&set(&[
        ("app", "web"),
        ("tier", "front"),
        ("track", "1"),
        ("env", "dev")
    ])));
    // Empty selects everything, null selects nothing.
    assert!(
        LabelSelector::from_label_selector(&json!({}))
            .unwrap()
            .matches(&set(&[]))
    );
    assert!(
        !LabelSelector::from_label_selector(&Value::Null)
            .unwrap()
            .matches(&set(&[]))
    );
    let err = LabelSelector::from_label_selector(
        &json!({"matchExpressions": [{"key": "a", "operator": "Gt"}]}),
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "\"Gt\" is not a valid label selector operator"
    );
    let err = LabelSelector::from_label_selector(
        &json!({"matchExpressions": [{"key": "a", "operator": "In"}]}),
    );
    assert_eq!(
        err.unwrap_err().to_string(),
        "values: Invalid value: []string{}: for 'in', 'notin' operators, values set can't be empty"
    );
    let m = LabelSelector::from_map(&set(&[("b", "2"), ("a", "1")]));
    assert_eq!(m.to_string(), "a=1,b=2");
    assert!(m.matches_object(&json!({"metadata": {"labels": {"a": "1", "b": "2", "c": "3"}}})));
    assert!(!m.matches_object(&json!({"metadata": {}})));
}

#[test]
fn field_selector_parse() {
    for good in ["x=a,y=b,z=c", "", "x!=a,y=b", r"x=a||y\=b", r"x=a\=\=b"] {
        assert!(FieldSelector::parse(good).is_ok(), "{good:?}");
    }
    for bad in [
        "x=a||y=b",
        "x==a==b",
        "x=a,b",
        "x in (a)",
        "x in (a,b,c)",
        "x",
    ] {
        assert!(FieldSelector::parse(bad).is_err(), "{bad:?}");
    }
    assert_eq!(
        FieldSelector::parse("x").unwrap_err().to_string(),
        "invalid selector: 'x'; can't understand 'x'"
    );
    assert_eq!(
        FieldSelector::parse("x==a==b").unwrap_err().to_string(),
        "invalid field selector: unescaped character in value: 61"
    );
    assert_eq!(
        FieldSelector::parse(r"x=\a").unwrap_err().to_string(),
        r"invalid field selector: invalid escape sequence: \a"
    );
    let f = FieldSelector::parse(r"b!=2,a==x\,y").unwrap();
    assert_eq!(f.requirements[0].field, "a");
    assert_eq!(f.requirements[0].value, "x,y");
    assert!(!f.requirements[1].equals);
}

#[test]
fn field_selector_matches_escaped_values() {
    let obj = json!({"metadata": {"name": r"=value\,\", "namespace": "blah"}});
    let m = |s: &str| {
        FieldSelector::parse(s)
            .unwrap()
            .matches("", "configmaps", &obj)
    };
    assert!(m(""));
    assert!(m(r"metadata.name=\=value\\\,\\"));
    assert!(m(r"metadata.name=\=value\\\,\\,metadata.namespace=blah"));
    assert!(m("metadata.namespace!=x"));
    assert!(!m("metadata.namespace=x"));
    assert!(!m("metadata.namespace!=blah"));
}

#[test]
fn field_selectors_per_kind() {
    let pod = json!({
        "metadata": {"name": "p", "namespace": "d"},
        "spec": {"nodeName": "n1", "restartPolicy": "Always", "schedulerName": "default-scheduler", "serviceAccountName": "default"},
        "status": {"phase": "Running", "podIP": "10.42.0.5", "podIPs": [{"ip": "10.42.0.5"}]}
    });
    let m = |s: &str| {
        let f = FieldSelector::parse(s).unwrap();
        f.check_supported("", "pods").unwrap();
        f.matches("", "pods", &pod)
    };
    assert!(m("spec.nodeName=n1,status.phase!=Pending"));
    assert!(m("spec.hostNetwork=false"));
    assert!(m("status.podIP=10.42.0.5"));
    assert!(m(
        "spec.restartPolicy=Always,spec.schedulerName=default-scheduler,spec.serviceAccountName=default"
    ));
    assert!(m("status.nominatedNodeName="));
    assert!(!m("spec.nodeName="));
    assert!(m("metadata.namespace=d,metadata.name=p"));
    let err = FieldSelector::parse("spec.bogus=1")
        .unwrap()
        .check_supported("", "pods")
        .unwrap_err();
    assert_eq!(err.to_string(), "field label not supported: spec.bogus");
    assert!(
        FieldSelector::parse("spec.nodeName=x")
            .unwrap()
            .check_supported("", "configmaps")
            .is_err()
    );
    assert!(
        FieldSelector::parse("metadata.name=x")
            .unwrap()
            .check_supported("apps", "deployments")
            .is_ok()
    );

    let node = json!({"metadata": {"name": "n"}, "spec": {}});
    assert!(
        FieldSelector::parse("spec.unschedulable=false")
            .unwrap()
            .matches("", "nodes", &node)
    );
    assert!(
        FieldSelector::parse("metadata.namespace=")
            .unwrap()
            .matches("", "nodes", &node)
    );
    let secret = json!({"metadata": {"name": "s"}, "type": "kubernetes.io/tls"});
    assert!(
        FieldSelector::parse("type=kubernetes.io/tls")
            .unwrap()
            .matches("", "secrets", &secret)
    );
    let rs = json!({"metadata": {"name": "r"}, "status": {"replicas": 3}});
    assert!(
        FieldSelector::parse("status.replicas=3")
            .unwrap()
            .matches("apps", "replicasets", &rs)
    );
    assert!(FieldSelector::parse("status.replicas=0").unwrap().matches(
        "",
        "replicationcontrollers",
        &json!({})
    ));
    let job = json!({"status": {"succeeded": 1}});
    assert!(
        FieldSelector::parse("status.successful=1")
            .unwrap()
            .matches("batch", "jobs", &job)
    );
    let svc = json!({"spec": {"clusterIP": "None", "type": "ClusterIP"}});
    assert!(
        FieldSelector::parse("spec.clusterIP=None,spec.type=ClusterIP")
            .unwrap()
            .matches("", "services", &svc)
    );
    let ns = json!({"status": {"phase": "Terminating"}});
    assert!(
        FieldSelector::parse("status.phase=Terminating")
            .unwrap()
            .matches("", "namespaces", &ns)
    );
    let csr = json!({"spec": {"signerName": "kubernetes.io/kubelet-serving"}});
    assert!(
        FieldSelector::parse("spec.signerName=kubernetes.io/kubelet-serving")
            .unwrap()
            .matches("certificates.k8s.io", "certificatesigningrequests", &csr)
    );
}

#[test]
fn event_field_selectors() {
    let core = json!({
        "involvedObject": {"kind": "Pod", "name": "p", "namespace": "d", "uid": "u1", "apiVersion": "v1", "fieldPath": "spec.containers{c}"},
        "reason": "Started", "type": "Normal", "source": {"component": "kubelet"}, "reportingComponent": "kubelet"
    });
    let m = |g: &str, s: &str, obj: &Value| {
        let f = FieldSelector::parse(s).unwrap();
        f.check_supported(g, "events").unwrap();
        f.matches(g, "events", obj)
    };
    assert!(m(
        "",
        "involvedObject.kind=Pod,involvedObject.name=p,involvedObject.namespace=d",
        &core
    ));
    assert!(m(
        "",
        "involvedObject.uid=u1,involvedObject.apiVersion=v1",
        &core
    ));
    assert!(m("", "involvedObject.fieldPath=spec.containers{c}", &core));
    assert!(m(
        "",
        "reason=Started,type=Normal,source=kubelet,reportingComponent=kubelet",
        &core
    ));
    assert!(m("", "involvedObject.resourceVersion=", &core));
    // Source falls back to the reporting controller.
    let no_source = json!({"reportingComponent": "ctrl"});
    assert!(m("", "source=ctrl", &no_source));

    let new = json!({
        "regarding": {"kind": "Pod", "name": "p"}, "reason": "Started", "type": "Warning",
        "reportingController": "kubelet", "deprecatedSource": {"component": "kubelet"}
    });
    assert!(m(
        "events.k8s.io",
        "regarding.kind=Pod,regarding.name=p,reportingController=kubelet,type=Warning",
        &new
    ));
    // A core-shaped object served through events.k8s.io (shared storage).
    assert!(m(
        "events.k8s.io",
        "regarding.kind=Pod,reportingController=kubelet",
        &core
    ));
    assert!(m("", "involvedObject.kind=Pod,source=kubelet", &new));
    assert!(
        FieldSelector::parse("source=x")
            .unwrap()
            .check_supported("events.k8s.io", "events")
            .is_err()
    );
    assert!(
        FieldSelector::parse("regarding.kind=x")
            .unwrap()
            .check_supported("", "events")
            .is_err()
    );
}
