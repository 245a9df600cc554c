//! Decoding through the k8s-openapi types: the authoritative check that an
//! object has the shape its kind requires, and the normalisation that drops
//! what the kind does not know (reporting it, for strict field validation).

use serde_json::Value;

use crate::catalogue::ResourceInfo;

/// Why an object could not be decoded as its kind.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[error("{message}")]
pub struct DecodeError {
    /// The field path where decoding failed (`.` when at the top).
    pub path: String,
    /// The message, naming the path.
    pub message: String,
}

fn roundtrip<T>(obj: &Value) -> Result<Value, DecodeError>
where
    T: serde::de::DeserializeOwned + serde::Serialize,
{
    let typed: T = serde_path_to_error::deserialize(obj).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner().to_string();
        DecodeError {
            message: if path == "." {
                inner
            } else {
                format!("{path}: {inner}")
            },
            path,
        }
    })?;
    serde_json::to_value(&typed).map_err(|e| DecodeError {
        path: ".".into(),
        message: e.to_string(),
    })
}

macro_rules! dispatch {
    ($def:expr, $obj:expr, { $($name:literal => $ty:ty,)* }) => {
        match $def {
            $($name => Some(roundtrip::<$ty>($obj)),)*
            _ => None,
        }
    };
}

/// Decodes `obj` as the typed kind of `info` and encodes it again. Returns
/// `None` for kinds without a typed model (served as free-form JSON).
pub fn normalize(info: &ResourceInfo, obj: &Value) -> Option<Result<Value, DecodeError>> {
    use k8s_openapi::api::*;
    dispatch!(info.definition, obj, {
        "io.k8s.api.core.v1.Binding" => core::v1::Binding,
        "io.k8s.api.core.v1.ConfigMap" => core::v1::ConfigMap,
        "io.k8s.api.core.v1.Endpoints" => core::v1::Endpoints,
        "io.k8s.api.core.v1.Event" => core::v1::Event,
        "io.k8s.api.core.v1.LimitRange" => core::v1::LimitRange,
        "io.k8s.api.core.v1.Namespace" => core::v1::Namespace,
        "io.k8s.api.core.v1.Node" => core::v1::Node,
        "io.k8s.api.core.v1.PersistentVolumeClaim" => core::v1::PersistentVolumeClaim,
        "io.k8s.api.core.v1.PersistentVolume" => core::v1::PersistentVolume,
        "io.k8s.api.core.v1.Pod" => core::v1::Pod,
        "io.k8s.api.core.v1.PodTemplate" => core::v1::PodTemplate,
        "io.k8s.api.core.v1.ReplicationController" => core::v1::ReplicationController,
        "io.k8s.api.core.v1.ResourceQuota" => core::v1::ResourceQuota,
        "io.k8s.api.core.v1.Secret" => core::v1::Secret,
        "io.k8s.api.core.v1.ServiceAccount" => core::v1::ServiceAccount,
        "io.k8s.api.core.v1.Service" => core::v1::Service,
        "io.k8s.api.apps.v1.ControllerRevision" => apps::v1::ControllerRevision,
        "io.k8s.api.apps.v1.DaemonSet" => apps::v1::DaemonSet,
        "io.k8s.api.apps.v1.Deployment" => apps::v1::Deployment,
        "io.k8s.api.apps.v1.ReplicaSet" => apps::v1::ReplicaSet,
        "io.k8s.api.apps.v1.StatefulSet" => apps::v1::StatefulSet,
        "io.k8s.api.autoscaling.v2.HorizontalPodAutoscaler" => autoscaling::v2::HorizontalPodAutoscaler,
        "io.k8s.api.autoscaling.v1.HorizontalPodAutoscaler" => autoscaling::v1::HorizontalPodAutoscaler,
        "io.k8s.api.batch.v1.CronJob" => batch::v1::CronJob,
        "io.k8s.api.batch.v1.Job" => batch::v1::Job,
        "io.k8s.api.networking.v1.IngressClass" => networking::v1::IngressClass,
        "io.k8s.api.networking.v1.Ingress" => networking::v1::Ingress,
        "io.k8s.api.networking.v1.IPAddress" => networking::v1::IPAddress,
        "io.k8s.api.networking.v1.NetworkPolicy" => networking::v1::NetworkPolicy,
        "io.k8s.api.networking.v1.ServiceCIDR" => networking::v1::ServiceCIDR,
        "io.k8s.api.policy.v1.PodDisruptionBudget" => policy::v1::PodDisruptionBudget,
        "io.k8s.api.rbac.v1.ClusterRoleBinding" => rbac::v1::ClusterRoleBinding,
        "io.k8s.api.rbac.v1.ClusterRole" => rbac::v1::ClusterRole,
        "io.k8s.api.rbac.v1.RoleBinding" => rbac::v1::RoleBinding,
        "io.k8s.api.rbac.v1.Role" => rbac::v1::Role,
        "io.k8s.api.storage.v1.CSIDriver" => storage::v1::CSIDriver,
        "io.k8s.api.storage.v1.CSINode" => storage::v1::CSINode,
        "io.k8s.api.storage.v1.CSIStorageCapacity" => storage::v1::CSIStorageCapacity,
        "io.k8s.api.storage.v1.StorageClass" => storage::v1::StorageClass,
        "io.k8s.api.storage.v1.VolumeAttachment" => storage::v1::VolumeAttachment,
        "io.k8s.api.coordination.v1.Lease" => coordination::v1::Lease,
        "io.k8s.api.discovery.v1.EndpointSlice" => discovery::v1::EndpointSlice,
        "io.k8s.api.events.v1.Event" => events::v1::Event,
        "io.k8s.api.scheduling.v1.PriorityClass" => scheduling::v1::PriorityClass,
        "io.k8s.kube-aggregator.pkg.apis.apiregistration.v1.APIService" => k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService,
        "io.k8s.api.admissionregistration.v1.MutatingWebhookConfiguration" => admissionregistration::v1::MutatingWebhookConfiguration,
        "io.k8s.api.admissionregistration.v1.ValidatingWebhookConfiguration" => admissionregistration::v1::ValidatingWebhookConfiguration,
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicy" => admissionregistration::v1::ValidatingAdmissionPolicy,
        "io.k8s.api.admissionregistration.v1.ValidatingAdmissionPolicyBinding" => admissionregistration::v1::ValidatingAdmissionPolicyBinding,
        "io.k8s.apiextensions-apiserver.pkg.apis.apiextensions.v1.CustomResourceDefinition" => k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition,
    })
}

/// Paths present in `input` but absent from its normalised form: the
/// fields the kind does not know. Nulls are not reported (they mean
/// "unset" and serialise as absent).
pub fn unknown_fields(input: &Value, normalized: &Value) -> Vec<String> {
    let mut out = Vec::new();
    walk(input, normalized, String::new(), &mut out);
    out
}

fn walk(input: &Value, norm: &Value, path: String, out: &mut Vec<String>) {
    match (input, norm) {
        (Value::Object(a), Value::Object(b)) => {
            for (k, v) in a {
                let p = if path.is_empty() {
                    k.clone()
                } else {
                    format!("{path}.{k}")
                };
                match b.get(k) {
                    Some(nv) => walk(v, nv, p, out),
                    None if v.is_null() => {}
                    None => out.push(p),
                }
            }
        }
        (Value::Array(a), Value::Array(b)) => {
            for (i, (v, nv)) in a.iter().zip(b.iter()).enumerate() {
                walk(v, nv, format!("{path}[{i}]"), out);
            }
        }
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::catalogue;
    use serde_json::json;

    #[test]
    fn deployment_roundtrips_and_reports_unknown_fields() {
        let info = catalogue::find("apps", "v1", "deployments").unwrap();
        let input = json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"app": "web"}},
            "spec": {"replicas": 2, "bogus": 1, "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [{"name": "c", "image": "busybox", "imagePullPolicy": null, "colour": "red"}]}}}
        });
        let out = normalize(info, &input).unwrap().unwrap();
        assert_eq!(out["spec"]["replicas"], 2);
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["image"],
            "busybox"
        );
        assert_eq!(
            unknown_fields(&input, &out),
            vec!["spec.bogus", "spec.template.spec.containers[0].colour"]
        );
    }

    #[test]
    fn wrong_types_name_the_field() {
        let info = catalogue::find("apps", "v1", "deployments").unwrap();
        let input = json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "x"}, "spec": {"replicas": "two"}});
        let err = normalize(info, &input).unwrap().unwrap_err();
        assert_eq!(err.path, "spec.replicas");
        assert!(
            err.message.starts_with("spec.replicas: invalid type"),
            "{}",
            err.message
        );
    }
}
