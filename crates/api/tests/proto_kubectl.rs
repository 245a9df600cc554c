//! Bodies captured from the real kubectl (v1.33.1) creating objects against
//! a plain-HTTP stub server (`kubectl create ...`, `auth can-i`, `create
//! token`), each paired with what the same command prints with
//! `--dry-run=client -o json`: upstream's JSON for the same object. The decoder must turn the first into the second.
//! (`kubectl auth can-i` and `kubectl create token` have no dry-run; their
//! expected JSON follows Go's encoding of the same structs: non-omitempty
//! zeros such as `allowed: false` and `token: ""` stay, zero Times are null.)

use std::path::Path;

fn check(name: &str) {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/proto");
    let body = std::fs::read(dir.join(format!("{name}.pb"))).unwrap();
    let want: serde_json::Value =
        serde_json::from_slice(&std::fs::read(dir.join(format!("{name}.json"))).unwrap()).unwrap();
    let got = api::proto::decode(&body).unwrap();
    assert_eq!(
        got,
        want,
        "{name}:\n{}",
        serde_json::to_string_pretty(&got).unwrap()
    );
}

#[test]
fn kubectl_create_bodies_decode_to_kubectls_json() {
    for name in [
        "configmap",
        "secret",
        "deployment",
        "namespace",
        "job",
        "cronjob",
        "service",
        "pdb",
        "priorityclass",
        "ingress",
        "quota",
        "serviceaccount",
        "role",
        "rolebinding",
        "selfsubjectaccessreview",
        "tokenrequest",
    ] {
        check(name);
    }
}
