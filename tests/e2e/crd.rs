//! End-to-end: extending the API with CustomResourceDefinitions, driven by
//! the real kubectl and the official Python client, with real CRDs from
//! the Gateway API, cert-manager and the Prometheus operator. One cluster
//! serves every check, as a user's cluster would.

mod common;

use std::path::PathBuf;

use common::{Cluster, json};

const CRONTAB_CRD: &str = r#"apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: crontabs.stable.example.com
spec:
  group: stable.example.com
  scope: Namespaced
  names:
    plural: crontabs
    singular: crontab
    kind: CronTab
    shortNames: [ct]
    categories: [all]
  versions:
  - name: v1beta1
    served: true
    storage: false
    deprecated: true
    deprecationWarning: "stable.example.com/v1beta1 CronTab is deprecated; use stable.example.com/v1"
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            x-kubernetes-preserve-unknown-fields: true
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            required: [cronSpec]
            x-kubernetes-validations:
            - rule: "self.replicas <= self.maxReplicas"
              message: "replicas should be smaller than or equal to maxReplicas."
            properties:
              cronSpec:
                type: string
                pattern: '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'
              image:
                type: string
              replicas:
                type: integer
                minimum: 1
                default: 1
              maxReplicas:
                type: integer
                default: 10
          status:
            type: object
            properties:
              replicas:
                type: integer
              labelSelector:
                type: string
    subresources:
      status: {}
      scale:
        specReplicasPath: .spec.replicas
        statusReplicasPath: .status.replicas
        labelSelectorPath: .status.labelSelector
    selectableFields:
    - jsonPath: .spec.image
    additionalPrinterColumns:
    - name: Spec
      type: string
      jsonPath: .spec.cronSpec
    - name: Replicas
      type: integer
      jsonPath: .spec.replicas
    - name: Age
      type: date
      jsonPath: .metadata.creationTimestamp
"#;

const CRONTAB: &str = r#"apiVersion: stable.example.com/v1
kind: CronTab
metadata:
  name: my-new-cron-object
spec:
  cronSpec: "* * * * */5"
  image: my-awesome-cron-image
"#;

fn data(dir: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../../tests/data/crds")
        .join(dir)
}

fn stderr_of(c: &Cluster, args: &[&str], stdin: &str) -> String {
    c.fails_stdin(args, stdin)
}

#[test]
fn custom_resources_end_to_end() {
    let mut c = Cluster::start();

    // --- A CRD of our own: served by the time `apply` returns.
    c.ok_stdin(&["apply", "-f", "-"], CRONTAB_CRD);
    c.ok_stdin(&["apply", "-f", "-"], CRONTAB);
    let crd = json(&c.ok(&["get", "crd", "crontabs.stable.example.com", "-o", "json"]));
    let conds = crd["status"]["conditions"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    for t in ["NamesAccepted", "Established"] {
        assert!(
            conds
                .iter()
                .any(|x| x["type"] == t && x["status"] == "True"),
            "{t} in {conds:?}"
        );
    }
    assert_eq!(
        crd["status"]["acceptedNames"]["shortNames"],
        serde_json::json!(["ct"])
    );

    // Printer columns, short names and categories, as kubectl shows them.
    let table = c.ok(&["get", "ct"]);
    let header: Vec<&str> = table
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "SPEC", "REPLICAS", "AGE"], "{table}");
    assert!(
        table.contains("my-new-cron-object   * * * * */5   1"),
        "{table}"
    );
    let all = c.ok(&["get", "all"]);
    assert!(
        all.contains("crontab.stable.example.com/my-new-cron-object"),
        "{all}"
    );
    let resources = c.ok(&["api-resources", "--api-group", "stable.example.com"]);
    assert!(
        resources.contains("crontabs") && resources.contains("ct"),
        "{resources}"
    );
    // The schema reaches kubectl explain through /openapi/v3.
    let explain = c.ok(&["explain", "crontab.spec"]);
    for f in ["cronSpec", "maxReplicas", "replicas"] {
        assert!(explain.contains(f), "{explain}");
    }
    // Defaults from the schema are stored.
    let obj = json(&c.ok(&["get", "ct", "my-new-cron-object", "-o", "json"]));
    assert_eq!(obj["spec"]["replicas"], 1);
    assert_eq!(obj["spec"]["maxReplicas"], 10);
    assert_eq!(obj["metadata"]["generation"], 1);

    // Every schema violation, with its field path, in one answer.
    let err = stderr_of(
        &c,
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: '* * * *', replicas: 0, image: 5}\n",
    );
    for want in [
        "The CronTab \"bad\" is invalid",
        r#"spec.cronSpec: Invalid value: "* * * *": spec.cronSpec in body should match '^(\d+|\*)(/\d+)?(\s+(\d+|\*)(/\d+)?){4}$'"#,
        r#"spec.replicas: Invalid value: 0: spec.replicas in body should be greater than or equal to 1"#,
        r#"spec.image: Invalid value: "integer": spec.image in body must be of type string: "integer""#,
    ] {
        assert!(err.contains(want), "missing {want:?} in:\n{err}");
    }
    let err = stderr_of(
        &c,
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {image: a}\n",
    );
    assert!(err.contains("spec.cronSpec: Required value"), "{err}");
    let err = stderr_of(
        &c,
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: bad}\nspec: {cronSpec: '* * * * *', replicas: 12, maxReplicas: 11}\n",
    );
    assert!(
        err.contains(r#"spec: Invalid value: "object": replicas should be smaller than or equal to maxReplicas."#),
        "{err}"
    );
    // Unknown fields: refused by kubectl's strict validation, pruned
    // otherwise.
    let err = stderr_of(
        &c,
        &["apply", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: extra}\nspec: {cronSpec: '* * * * *', colour: red}\n",
    );
    assert!(err.contains(r#"unknown field "spec.colour""#), "{err}");
    c.ok_stdin(
        &["apply", "--validate=false", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: extra}\nspec: {cronSpec: '* * * * *', image: a, colour: red}\n",
    );
    let pruned = json(&c.ok(&["get", "ct", "extra", "-o", "json"]));
    assert!(pruned["spec"].get("colour").is_none(), "{pruned}");

    // Scale and status subresources.
    c.ok(&["scale", "ct", "my-new-cron-object", "--replicas=3"]);
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--subresource=status",
        "--type=merge",
        "-p",
        r#"{"status":{"replicas":3,"labelSelector":"app=cron"}}"#,
    ]);
    let scale = json(&c.ok(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs/my-new-cron-object/scale",
    ]));
    assert_eq!(scale["spec"]["replicas"], 3);
    assert_eq!(scale["status"]["selector"], "app=cron");
    let obj = json(&c.ok(&["get", "ct", "my-new-cron-object", "-o", "json"]));
    assert_eq!(
        obj["metadata"]["generation"], 2,
        "scale moved the spec, status did not"
    );
    // Custom resources take merge and JSON patches, not strategic ones.
    let err = c.fails(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "-p",
        r#"{"spec":{"image":"b"}}"#,
    ]);
    assert!(
        err.contains("application/strategic-merge-patch+json is not supported"),
        "{err}"
    );
    c.ok(&[
        "patch",
        "ct",
        "my-new-cron-object",
        "--type=merge",
        "-p",
        r#"{"spec":{"image":"b"}}"#,
    ]);

    // Selectable fields.
    let sel = c.ok(&[
        "get",
        "ct",
        "--field-selector",
        "spec.image=b",
        "-o",
        "name",
    ]);
    assert_eq!(sel.trim(), "crontab.stable.example.com/my-new-cron-object");
    let err = c.fails(&["get", "ct", "--field-selector", "spec.cronSpec=x"]);
    assert!(
        err.contains("field label not supported: spec.cronSpec"),
        "{err}"
    );

    // Server-side apply records its fields.
    c.ok_stdin(
        &["apply", "--server-side", "-f", "-"],
        "apiVersion: stable.example.com/v1\nkind: CronTab\nmetadata: {name: ssa}\nspec: {cronSpec: '* * * * *', image: c}\n",
    );
    let ssa = json(&c.ok(&["get", "ct", "ssa", "-o", "json", "--show-managed-fields"]));
    assert_eq!(ssa["metadata"]["managedFields"][0]["operation"], "Apply");

    // The deprecated version is served, converted and warned about.
    let out = c.kubectl(&[
        "get",
        "crontabs.v1beta1.stable.example.com",
        "my-new-cron-object",
        "-o",
        "json",
    ]);
    assert!(out.status.success());
    let old = json(&String::from_utf8_lossy(&out.stdout));
    assert_eq!(old["apiVersion"], "stable.example.com/v1beta1");
    assert_eq!(old["spec"]["image"], "b");
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(
        warn.contains(
            "Warning: stable.example.com/v1beta1 CronTab is deprecated; use stable.example.com/v1"
        ),
        "{warn}"
    );

    // The official Python client.
    let py = format!(
        r#"
from kubernetes import client, config
config.load_kube_config(config_file="{}")
api = client.CustomObjectsApi()
api.create_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs",
    {{"apiVersion": "stable.example.com/v1", "kind": "CronTab", "metadata": {{"name": "from-python"}},
      "spec": {{"cronSpec": "0 * * * *"}}}})
got = api.get_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs", "from-python")
names = sorted(i["metadata"]["name"] for i in api.list_namespaced_custom_object("stable.example.com", "v1", "default", "crontabs")["items"])
print(got["spec"]["replicas"], ",".join(names))
"#,
        c.kubeconfig.display()
    );
    assert_eq!(
        common::python(&py),
        "1 extra,from-python,my-new-cron-object,ssa"
    );

    // A rule that does not compile is refused with the CRD.
    let bad_rule = CRONTAB_CRD
        .replace("crontabs.stable.example.com", "badrules.stable.example.com")
        .replace("plural: crontabs", "plural: badrules")
        .replace("singular: crontab", "singular: badrule")
        .replace("kind: CronTab", "kind: BadRule")
        .replace("shortNames: [ct]", "shortNames: [br]")
        .replace("self.replicas <= self.maxReplicas", "self.replicas <=");
    let err = stderr_of(&c, &["apply", "-f", "-"], &bad_rule);
    assert!(
        err.contains("x-kubernetes-validations[0].rule: Invalid value")
            && err.contains("compilation failed"),
        "{err}"
    );
    // Names another definition holds are not accepted, and not served.
    let clash = CRONTAB_CRD
        .replace("crontabs.stable.example.com", "crontabz.stable.example.com")
        .replace("plural: crontabs", "plural: crontabz")
        .replace("singular: crontab", "singular: crontabz")
        .replace("shortNames: [ct]", "shortNames: [ctz]");
    c.ok_stdin(&["apply", "-f", "-"], &clash);
    let crd = json(&c.ok(&["get", "crd", "crontabz.stable.example.com", "-o", "json"]));
    let accepted = crd["status"]["conditions"]
        .as_array()
        .and_then(|a| a.iter().find(|x| x["type"] == "NamesAccepted").cloned())
        .unwrap_or_default();
    assert_eq!(accepted["status"], "False", "{crd}");
    assert_eq!(accepted["reason"], "KindConflict");
    assert_eq!(accepted["message"], "\"CronTab\" is already in use");
    let err = c.fails(&["get", "--raw", "/apis/stable.example.com/v1/crontabz"]);
    assert!(err.contains("NotFound"), "{err}");
    c.ok(&["delete", "crd", "crontabz.stable.example.com"]);

    // --- Real CRDs, applied unchanged, and their documented examples.
    for project in ["gateway-api", "cert-manager", "prometheus-operator"] {
        let dir = data(project);
        c.ok(&["apply", "--server-side", "-f", &dir.to_string_lossy()]);
    }
    c.ok(&["apply", "-f", &data("samples").to_string_lossy()]);
    let listed = c.ok(&[
        "get",
        "gatewayclasses,gateways,httproutes,issuers,certificates,servicemonitors,prometheusrules",
        "-o",
        "name",
    ]);
    for want in [
        "gatewayclass.gateway.networking.k8s.io/example-gateway-class",
        "gateway.gateway.networking.k8s.io/example-gateway",
        "httproute.gateway.networking.k8s.io/example-route",
        "issuer.cert-manager.io/selfsigned-issuer",
        "certificate.cert-manager.io/example-com",
        "servicemonitor.monitoring.coreos.com/example-app",
        "prometheusrule.monitoring.coreos.com/example-rules",
    ] {
        assert!(listed.contains(want), "{want} not in {listed}");
    }
    // The Gateway API's defaults and its CEL rules apply.
    let route = json(&c.ok(&["get", "httproute", "example-route", "-o", "json"]));
    assert_eq!(route["spec"]["parentRefs"][0]["kind"], "Gateway");
    assert_eq!(
        route["spec"]["rules"][1]["matches"][0]["path"]["value"],
        "/"
    );
    let err = stderr_of(
        &c,
        &["apply", "-f", "-"],
        "apiVersion: gateway.networking.k8s.io/v1\nkind: HTTPRoute\nmetadata: {name: bad}\nspec:\n  rules:\n  - matches:\n    - path: {type: Exact, value: login}\n",
    );
    assert!(
        err.contains(r#"spec.rules[0].matches[0].path: Invalid value: "object": value must be an absolute path and start with '/' when type one of ['Exact', 'PathPrefix']"#),
        "{err}"
    );
    let certs = c.ok(&["get", "certificates"]);
    let header: Vec<&str> = certs
        .lines()
        .next()
        .unwrap_or("")
        .split_whitespace()
        .collect();
    assert_eq!(header, ["NAME", "READY", "SECRET", "AGE"], "{certs}");

    // --- An aggregated API server (written in the test) behind an
    // APIService: reachable with `kubectl get --raw`, listed by
    // `kubectl api-resources`.
    let rt = tokio::runtime::Runtime::new().expect("tokio runtime");
    let (port, ca_bundle) = rt.block_on(apiserver::testing::sample_api_server());
    c.ok_stdin(
        &["apply", "-f", "-"],
        &format!(
            r#"apiVersion: v1
kind: Service
metadata: {{name: sample-api}}
spec:
  ports: [{{name: https, port: 443, targetPort: {port}}}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: sample-api-1
  labels: {{kubernetes.io/service-name: sample-api}}
addressType: IPv4
endpoints: [{{addresses: ["127.0.0.1"], conditions: {{ready: true}}}}]
ports: [{{name: https, port: {port}, protocol: TCP}}]
---
apiVersion: apiregistration.k8s.io/v1
kind: APIService
metadata: {{name: v1beta1.sample.r8s.test}}
spec:
  group: sample.r8s.test
  version: v1beta1
  groupPriorityMinimum: 1000
  versionPriority: 15
  caBundle: {ca_bundle}
  service: {{namespace: default, name: sample-api, port: 443}}
"#
        ),
    );
    c.ok(&[
        "wait",
        "--for=condition=Available",
        "--timeout=20s",
        "apiservice/v1beta1.sample.r8s.test",
    ]);
    let raw = json(&c.ok(&[
        "get",
        "--raw",
        "/apis/sample.r8s.test/v1beta1/namespaces/default/flunders",
    ]));
    assert_eq!(raw["items"][0]["spec"]["user"], "system:admin", "{raw}");
    let resources = c.ok(&["api-resources", "--api-group", "sample.r8s.test"]);
    assert!(
        resources.contains("flunders") && resources.contains("Flunder"),
        "{resources}"
    );
    let local = c.ok(&[
        "get",
        "apiservice",
        "v1.apps",
        "-o",
        "jsonpath={.status.conditions[0].reason}",
    ]);
    assert_eq!(local, "Local");
    let table = c.ok(&["get", "apiservices", "v1.apps", "v1beta1.sample.r8s.test"]);
    let rows: Vec<Vec<&str>> = table
        .lines()
        .map(|l| l.split_whitespace().collect())
        .collect();
    assert_eq!(rows[0], ["NAME", "SERVICE", "AVAILABLE", "AGE"], "{table}");
    assert_eq!(rows[1][..3], ["v1.apps", "Local", "True"], "{table}");
    // A CRD's group version is listed too, as upstream registers it.
    c.wait_for(
        "v1.stable.example.com listed as a local APIService",
        std::time::Duration::from_secs(20),
        || {
            let out = c.kubectl(&["get", "apiservice", "v1.stable.example.com", "--no-headers"]);
            let row = String::from_utf8_lossy(&out.stdout).into_owned();
            (row.contains("Local") && row.contains("True")).then_some(())
        },
    );
    assert_eq!(
        rows[2][..3],
        ["v1beta1.sample.r8s.test", "default/sample-api", "True"],
        "{table}"
    );

    // --- A ValidatingAdmissionPolicy with the Warn action: kubectl shows
    // its warning and the object is created.
    c.ok_stdin(
        &["apply", "-f", "-"],
        r#"apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicy
metadata: {name: small-configmaps}
spec:
  matchConstraints:
    resourceRules:
    - {apiGroups: [""], apiVersions: ["v1"], operations: ["CREATE"], resources: ["configmaps"]}
  validations:
  - expression: "!has(object.data) || size(object.data) <= 1"
    message: "configmaps should hold at most one key"
---
apiVersion: admissionregistration.k8s.io/v1
kind: ValidatingAdmissionPolicyBinding
metadata: {name: small-configmaps}
spec:
  policyName: small-configmaps
  validationActions: [Warn]
"#,
    );
    let out = c.kubectl(&[
        "create",
        "configmap",
        "two",
        "--from-literal=a=1",
        "--from-literal=b=2",
    ]);
    assert!(out.status.success());
    let warn = String::from_utf8_lossy(&out.stderr);
    assert!(
        warn.contains("Warning: Validation failed for ValidatingAdmissionPolicy 'small-configmaps' with binding 'small-configmaps': configmaps should hold at most one key"),
        "{warn}"
    );

    // --- A restart serves the same kinds from the stored definitions.
    c.restart();
    let names = c.ok(&["get", "ct", "-o", "name"]);
    assert!(
        names.contains("crontab.stable.example.com/my-new-cron-object"),
        "{names}"
    );

    // --- Deleting a definition deletes its objects, then itself.
    c.ok(&["delete", "crd", "crontabs.stable.example.com"]);
    let err = c.fails(&[
        "get",
        "--raw",
        "/apis/stable.example.com/v1/namespaces/default/crontabs",
    ]);
    assert!(err.contains("NotFound"), "{err}");
    c.ok_stdin(&["apply", "-f", "-"], CRONTAB_CRD);
    let left = c.ok(&["get", "ct", "-o", "name"]);
    assert!(
        left.trim().is_empty(),
        "objects outlived their definition: {left}"
    );
}
