//! CronJobs: upstream's defaults, a schedule, and a Job template that
//! satisfies the Job rules.

use serde_json::{Value, json};

use super::job::{default_job_spec, validate_restart_policy};
use crate::registry::Strategy;
use crate::registry::common::{FieldError, child, is_empty, required, set_default, spec_of};
use crate::registry::core::podspec::validate_pod_template;

/// The CronJob strategy.
pub struct CronJob;

/// The one [`CronJob`] strategy.
pub static CRON_JOB: CronJob = CronJob;

impl Strategy for CronJob {
    fn name(&self) -> &'static str {
        "cronjobs"
    }

    fn default(&self, obj: &mut Value) {
        let Some(spec) = spec_of(obj) else { return };
        set_default(spec, "concurrencyPolicy", json!("Allow"));
        set_default(spec, "suspend", json!(false));
        set_default(spec, "successfulJobsHistoryLimit", json!(3));
        set_default(spec, "failedJobsHistoryLimit", json!(1));
        if let Some(jt) = child(spec, "jobTemplate")
            && let Some(js) = child(jt, "spec")
        {
            default_job_spec(js);
        }
    }

    fn tracks_generation(&self) -> bool {
        true
    }

    fn validate(&self, obj: &Value) -> Vec<FieldError> {
        let mut errs = Vec::new();
        if is_empty(&obj["spec"]["schedule"]) {
            errs.push(required("spec.schedule"));
        }
        let t = &obj["spec"]["jobTemplate"]["spec"]["template"];
        validate_pod_template(t, "spec.jobTemplate.spec.template", &mut errs);
        validate_restart_policy(t, "spec.jobTemplate.spec.template", &mut errs);
        errs
    }
}
