//! Jobs (upstream's `pkg/registry/batch/job/strategy.go`): upstream's
//! defaults, a selector generated from the Job's uid unless
//! `spec.manualSelector`, a pod template that never restarts containers
//! in place (Never or OnFailure), and an immutable selector and template
//! (the template may change while the Job is suspended and never started).

use serde_json::{Map, Value, json};

use crate::catalogue::ResourceInfo;
use crate::registry::common::{FieldError, immutable, not_supported, set_default, spec_of};
use crate::registry::core::podspec::{default_template_in, validate_pod_template};
use crate::registry::{Strategy, base_prepare_for_create};

/// The Job strategy.
pub struct Job;

/// The one [`Job`] strategy.
pub static JOB: Job = Job;

impl Strategy for Job {
    fn name(&self) -> &'static str {
        "jobs"
    }

    fn default(&self, obj: &mut Value) {
        if let Some(spec) = spec_of(obj) {
            default_job_spec(spec);
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn prepare_for_create(&self, info: &ResourceInfo, obj: &mut Value) {
        base_prepare_for_create(self, info, obj);
        generate_job_selector(obj);
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        validate_pod_template(&obj["spec"]["template"], "spec.template", &mut errs);
        validate_restart_policy(&obj["spec"]["template"], "spec.template", &mut errs);
        errs
    }

    fn validate_update(&self, new: &Value, old: &Value, sub: Option<&str>) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if sub.is_none() {
            job_update(new, old, &mut errs);
        }
        errs
    }
}

/// Upstream's SetDefaults_Job for a Job spec (also a CronJob's template).
pub(crate) fn default_job_spec(spec: &mut Map<String, Value>) {
    let has_completions = spec.get("completions").is_some_and(|v| !v.is_null());
    let has_parallelism = spec.get("parallelism").is_some_and(|v| !v.is_null());
    if !has_completions && !has_parallelism {
        spec.insert("completions".into(), json!(1));
    }
    set_default(spec, "parallelism", json!(1));
    set_default(spec, "backoffLimit", json!(6));
    set_default(spec, "completionMode", json!("NonIndexed"));
    set_default(spec, "suspend", json!(false));
    set_default(spec, "podReplacementPolicy", json!("TerminatingOrFailed"));
    default_template_in(spec);
}

/// A Job's pods restart Never or OnFailure (the Job counts failures).
pub(crate) fn validate_restart_policy(template: &Value, path: &str, errs: &mut Vec<FieldError>) {
    let rp = &template["spec"]["restartPolicy"];
    let ok = matches!(rp.as_str(), Some("Never" | "OnFailure"));
    if !ok {
        errs.push(not_supported(
            format!("{path}.spec.restartPolicy"),
            rp,
            &["OnFailure", "Never"],
        ));
    }
}

/// Upstream's Job strategy: unless `spec.manualSelector` is true, the pods
/// of a Job are selected by the Job's uid, and the template carries the
/// uid and job-name labels (new and legacy names).
fn generate_job_selector(obj: &mut Value) {
    if obj["spec"]["manualSelector"].as_bool() == Some(true) {
        return;
    }
    let uid = obj["metadata"]["uid"].clone();
    let name = obj["metadata"]["name"].clone();
    let labels = &mut obj["spec"]["template"]["metadata"]["labels"];
    if !labels.is_object() {
        *labels = json!({});
    }
    if let Some(l) = labels.as_object_mut() {
        for (k, v) in [
            ("controller-uid", &uid),
            ("batch.kubernetes.io/controller-uid", &uid),
            ("job-name", &name),
            ("batch.kubernetes.io/job-name", &name),
        ] {
            l.entry(k).or_insert_with(|| v.clone());
        }
    }
    let ml = &mut obj["spec"]["selector"]["matchLabels"];
    if !ml.is_object() {
        *ml = json!({});
    }
    if let Some(m) = ml.as_object_mut() {
        m.entry("batch.kubernetes.io/controller-uid")
            .or_insert_with(|| uid.clone());
    }
}

fn job_update(new: &Value, old: &Value, errs: &mut Vec<FieldError>) {
    // The selector may be set once (defaulting), never changed after.
    if !old["spec"]["selector"].is_null() && new["spec"]["selector"] != old["spec"]["selector"] {
        errs.push(immutable("spec.selector", &new["spec"]["selector"]));
    }
    // The template may change only while suspended and never started
    // (upstream's mutable scheduling directives, widened to the template).
    let suspended = old["spec"]["suspend"] == true && old["status"]["startTime"].is_null();
    let (mut nt, mut ot) = (
        new["spec"]["template"].clone(),
        old["spec"]["template"].clone(),
    );
    // Labels the controller adds when it defaults the selector.
    for t in [&mut nt, &mut ot] {
        if let Some(l) = t
            .get_mut("metadata")
            .and_then(|m| m.get_mut("labels"))
            .and_then(Value::as_object_mut)
        {
            for k in [
                "controller-uid",
                "batch.kubernetes.io/controller-uid",
                "job-name",
                "batch.kubernetes.io/job-name",
            ] {
                l.remove(k);
            }
        }
    }
    if !suspended && nt != ot {
        errs.push(immutable("spec.template", &Value::String("…".into())));
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;

    fn prepare_for_create(info: &ResourceInfo, obj: &mut Value) {
        JOB.prepare_for_create(info, obj);
    }

    #[test]
    fn jobs_get_a_uid_selector_unless_manual() {
        let info = catalogue::find("batch", "v1", "jobs").unwrap();
        let mut j = json!({"metadata": {"name": "pi", "uid": "u1"}, "spec": {"template": {"metadata": {"labels": {"app": "x"}}}}});
        prepare_for_create(info, &mut j);
        assert_eq!(
            j["spec"]["selector"],
            json!({"matchLabels": {"batch.kubernetes.io/controller-uid": "u1"}})
        );
        let l = &j["spec"]["template"]["metadata"]["labels"];
        assert_eq!(l["app"], "x");
        assert_eq!(l["batch.kubernetes.io/job-name"], "pi");
        assert_eq!(l["controller-uid"], "u1");
        let mut manual = json!({"metadata": {"name": "m", "uid": "u2"}, "spec": {"manualSelector": true, "selector": {"matchLabels": {"a": "b"}}}});
        prepare_for_create(info, &mut manual);
        assert_eq!(
            manual["spec"]["selector"],
            json!({"matchLabels": {"a": "b"}})
        );
    }

    #[test]
    fn job_needs_never_or_onfailure() {
        let j = json!({"spec": {"template": {"spec": {"restartPolicy": "Always", "containers": [{"name": "c", "image": "i"}]}}}});
        let errs = JOB.validate(&j);
        assert_eq!(errs[0].field, "spec.template.spec.restartPolicy");
    }
}
