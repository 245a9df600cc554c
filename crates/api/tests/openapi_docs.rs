//! The OpenAPI documents carry what kubectl looks for.

use serde_json::Value;

#[test]
fn deployment_definition_has_group_version_kind() {
    let defs = api::schema::definitions();
    let d = &defs["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        d["x-kubernetes-group-version-kind"],
        serde_json::json!([{ "group": "apps", "kind": "Deployment", "version": "v1" }])
    );
}

#[test]
fn deployments_patch_has_field_validation() {
    let doc = api::openapi::v3_document("apps", "v1").unwrap();
    let patch = &doc["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"];
    assert_eq!(patch["x-kubernetes-action"], "patch");
    assert_eq!(
        patch["x-kubernetes-group-version-kind"]["kind"],
        "Deployment"
    );
    let params = patch["parameters"].as_array().unwrap();
    assert!(
        params
            .iter()
            .any(|p| p["name"] == "fieldValidation" && p["in"] == "query")
    );
    let content = patch["requestBody"]["content"].as_object().unwrap();
    for ct in [
        "application/json-patch+json",
        "application/merge-patch+json",
        "application/strategic-merge-patch+json",
        "application/apply-patch+yaml",
    ] {
        assert!(content.contains_key(ct), "{ct}");
    }
}

/// kubectl's query-param verifier takes the first PATCH operation whose GVK
/// matches, in map order: every one must carry the parameter.
#[test]
fn every_patch_operation_has_field_validation() {
    for (g, versions) in api::catalogue::groups() {
        for v in versions {
            let doc = api::openapi::v3_document(g, v).unwrap();
            for (path, item) in doc["paths"].as_object().unwrap() {
                if let Some(op) = item
                    .get("patch")
                    .filter(|op| op["x-kubernetes-action"] != "connect")
                {
                    assert!(op["x-kubernetes-group-version-kind"].is_object(), "{path}");
                    let ok = op["parameters"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["name"] == "fieldValidation");
                    assert!(ok, "{path}");
                }
            }
        }
    }
}

fn check_refs(v: &Value, prefix: &str, names: &serde_json::Map<String, Value>, at: &str) {
    match v {
        Value::Object(m) => {
            for (k, c) in m {
                // JSONSchemaProps has a property named `$ref`: an object.
                if k == "$ref" && c.is_string() {
                    let r = c.as_str().unwrap_or_default();
                    let name = r
                        .strip_prefix(prefix)
                        .unwrap_or_else(|| panic!("{at}: {r}"));
                    assert!(names.contains_key(name), "{at}: dangling {r}");
                } else {
                    check_refs(c, prefix, names, at);
                }
            }
        }
        Value::Array(a) => a.iter().for_each(|c| check_refs(c, prefix, names, at)),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    for (g, versions) in api::catalogue::groups() {
        for v in versions {
            let doc = api::openapi::v3_document(g, v).unwrap();
            let schemas = doc["components"]["schemas"].as_object().unwrap();
            check_refs(doc, "#/components/schemas/", schemas, &format!("{g}/{v}"));
        }
    }
    let v2 = api::openapi::v2_document();
    check_refs(
        v2,
        "#/definitions/",
        v2["definitions"].as_object().unwrap(),
        "v2",
    );
}

#[test]
fn root_lists_every_group_version_with_a_hash() {
    let root = api::openapi::v3_root();
    let apps = root["paths"]["apis/apps/v1"]["serverRelativeURL"]
        .as_str()
        .unwrap();
    assert!(apps.starts_with("/openapi/v3/apis/apps/v1?hash="), "{apps}");
    assert!(
        root["paths"]["api/v1"]["serverRelativeURL"]
            .as_str()
            .unwrap()
            .starts_with("/openapi/v3/api/v1?hash=")
    );
    assert!(api::openapi::v3_document("nope", "v1").is_none());
}

/// `kubectl explain deployment.spec.template.spec.containers` walks these.
#[test]
fn explain_path_has_descriptions() {
    let doc = api::openapi::v3_document("apps", "v1").unwrap();
    let s = &doc["components"]["schemas"];
    let deploy = &s["io.k8s.api.apps.v1.Deployment"];
    assert_eq!(
        deploy["properties"]["spec"]["allOf"][0]["$ref"],
        "#/components/schemas/io.k8s.api.apps.v1.DeploymentSpec"
    );
    assert!(deploy["properties"]["spec"]["description"].is_string());
    let containers = &s["io.k8s.api.core.v1.PodSpec"]["properties"]["containers"];
    assert_eq!(containers["x-kubernetes-patch-merge-key"], "name");
    assert!(
        containers["description"]
            .as_str()
            .unwrap()
            .contains("containers")
    );
    assert!(s["io.k8s.api.core.v1.Container"]["properties"]["image"]["description"].is_string());
    let ios = &s["io.k8s.apimachinery.pkg.util.intstr.IntOrString"];
    assert_eq!(ios["format"], "int-or-string");
    // The v2 document keeps swagger's spelling.
    let v2 = api::openapi::v2_document();
    assert_eq!(
        v2["definitions"]["io.k8s.apimachinery.pkg.util.intstr.IntOrString"]["type"],
        "string"
    );
    assert_eq!(
        v2["paths"]["/apis/apps/v1/namespaces/{namespace}/deployments/{name}"]["patch"]["x-kubernetes-action"],
        "patch"
    );
}
