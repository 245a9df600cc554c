//! Upstream's column definitions (`pkg/printers/internalversion`), kind by
//! kind. Descriptions that upstream takes from the API types' docs are read
//! from the served OpenAPI definitions, so they are the same texts.

use super::ColumnDefinition;

/// Where a column's description comes from.
#[derive(Clone, Copy)]
enum Desc {
    /// A literal text.
    Text(&'static str),
    /// The doc of a property of an OpenAPI definition.
    Doc(&'static str, &'static str),
}

/// A column: name, type, format, description, priority.
type Col = (&'static str, &'static str, &'static str, Desc, i64);

const META: &str = "io.k8s.apimachinery.pkg.apis.meta.v1.ObjectMeta";

/// Upstream's ObjectMeta `name` doc, used when the definitions lack it.
const NAME_DOC: &str = "Name must be unique within a namespace. Is required when creating resources, although some resources may allow a client to request the generation of an appropriate name automatically. Name is primarily intended for creation idempotence and configuration definition. Cannot be updated. More info: https://kubernetes.io/docs/concepts/overview/working-with-objects/names#names";
/// Upstream's ObjectMeta `creationTimestamp` doc, likewise.
const CREATED_DOC: &str = "CreationTimestamp is a timestamp representing the server time when this object was created. It is not guaranteed to be set in happens-before order across separate operations. Clients may not set this value. It is represented in RFC3339 form and is in UTC.\n\nPopulated by the system. Read-only. Null for lists. More info: https://git.k8s.io/community/contributors/devel/sig-architecture/api-conventions.md#metadata";

const NAME: Col = ("Name", "string", "name", Desc::Doc(META, "name"), 0);
const AGE: Col = ("Age", "string", "", Desc::Doc(META, "creationTimestamp"), 0);
const CONTAINERS: Col = (
    "Containers",
    "string",
    "",
    Desc::Text("Names of each container in the template."),
    1,
);
const IMAGES: Col = (
    "Images",
    "string",
    "",
    Desc::Text("Images referenced by each container in the template."),
    1,
);

const fn col(name: &'static str, ty: &'static str, desc: Desc) -> Col {
    (name, ty, "", desc, 0)
}

const fn wide(name: &'static str, ty: &'static str, desc: Desc) -> Col {
    (name, ty, "", desc, 1)
}

const fn text(s: &'static str) -> Desc {
    Desc::Text(s)
}

const fn doc(def: &'static str, prop: &'static str) -> Desc {
    Desc::Doc(def, prop)
}

fn describe(d: Desc) -> String {
    match d {
        Desc::Text(t) => t.to_string(),
        Desc::Doc(def, prop) => {
            let found = crate::schema::property(def, prop)
                .and_then(|p| p.get("description"))
                .and_then(|d| d.as_str());
            match (found, def, prop) {
                (Some(s), _, _) => s.to_string(),
                (None, META, "name") => NAME_DOC.to_string(),
                (None, META, "creationTimestamp") => CREATED_DOC.to_string(),
                (None, _, _) => String::new(),
            }
        }
    }
}

/// The column definitions for a resource; kinds without an upstream
/// printer get the server's default Name / Created At pair.
pub fn definitions(group: &str, plural: &str) -> Vec<ColumnDefinition> {
    let cols = raw(group, plural);
    let cols = if cols.is_empty() {
        vec![
            NAME,
            (
                "Created At",
                "date",
                "",
                Desc::Doc(META, "creationTimestamp"),
                0,
            ),
        ]
    } else {
        cols
    };
    cols.into_iter()
        .map(|(name, ty, format, desc, priority)| ColumnDefinition {
            name: name.to_string(),
            type_: ty.to_string(),
            format: format.to_string(),
            description: describe(desc),
            priority,
        })
        .collect()
}

fn raw(group: &str, plural: &str) -> Vec<Col> {
    const POD_STATUS: &str = "io.k8s.api.core.v1.PodStatus";
    const POD_SPEC: &str = "io.k8s.api.core.v1.PodSpec";
    const RS_SPEC: &str = "io.k8s.api.apps.v1.ReplicaSetSpec";
    const RS_STATUS: &str = "io.k8s.api.apps.v1.ReplicaSetStatus";
    const RC_SPEC: &str = "io.k8s.api.core.v1.ReplicationControllerSpec";
    const RC_STATUS: &str = "io.k8s.api.core.v1.ReplicationControllerStatus";
    const DS_STATUS: &str = "io.k8s.api.apps.v1.DaemonSetStatus";
    const CJ_SPEC: &str = "io.k8s.api.batch.v1.CronJobSpec";
    const CJ_STATUS: &str = "io.k8s.api.batch.v1.CronJobStatus";
    const JOB_SPEC: &str = "io.k8s.api.batch.v1.JobSpec";
    const SVC_SPEC: &str = "io.k8s.api.core.v1.ServiceSpec";
    const NODE_INFO: &str = "io.k8s.api.core.v1.NodeSystemInfo";
    const NODE_STATUS: &str = "io.k8s.api.core.v1.NodeStatus";
    const EVENT: &str = "io.k8s.api.core.v1.Event";
    const OBJ_REF: &str = "io.k8s.api.core.v1.ObjectReference";
    const PV_SPEC: &str = "io.k8s.api.core.v1.PersistentVolumeSpec";
    const PV_STATUS: &str = "io.k8s.api.core.v1.PersistentVolumeStatus";
    const PVC_SPEC: &str = "io.k8s.api.core.v1.PersistentVolumeClaimSpec";
    const PVC_STATUS: &str = "io.k8s.api.core.v1.PersistentVolumeClaimStatus";
    const DEP_STATUS: &str = "io.k8s.api.apps.v1.DeploymentStatus";
    const DEP_SPEC: &str = "io.k8s.api.apps.v1.DeploymentSpec";
    const HPA_SPEC: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerSpec";
    const HPA_STATUS: &str = "io.k8s.api.autoscaling.v2.HorizontalPodAutoscalerStatus";
    const SLICE: &str = "io.k8s.api.discovery.v1.EndpointSlice";
    const SC: &str = "io.k8s.api.storage.v1.StorageClass";
    const PC: &str = "io.k8s.api.scheduling.v1.PriorityClass";
    const CSI_DRIVER: &str = "io.k8s.api.storage.v1.CSIDriverSpec";
    const VA_SPEC: &str = "io.k8s.api.storage.v1.VolumeAttachmentSpec";
    match (group, plural) {
        ("", "pods") => vec![
            NAME,
            col(
                "Ready",
                "string",
                text("The aggregate readiness state of this pod for accepting traffic."),
            ),
            col(
                "Status",
                "string",
                text("The aggregate status of the containers in this pod."),
            ),
            col(
                "Restarts",
                "string",
                text(
                    "The number of times the containers in this pod have been restarted and when the last container in this pod has restarted.",
                ),
            ),
            AGE,
            wide("IP", "string", doc(POD_STATUS, "podIP")),
            wide("Node", "string", doc(POD_SPEC, "nodeName")),
            wide(
                "Nominated Node",
                "string",
                doc(POD_STATUS, "nominatedNodeName"),
            ),
            wide("Readiness Gates", "string", doc(POD_SPEC, "readinessGates")),
        ],
        ("", "podtemplates") => vec![
            NAME,
            col(
                "Containers",
                "string",
                text("Names of each container in the template."),
            ),
            col(
                "Images",
                "string",
                text("Images referenced by each container in the template."),
            ),
            col(
                "Pod Labels",
                "string",
                text("The labels for the pod template."),
            ),
        ],
        ("policy", "poddisruptionbudgets") => vec![
            NAME,
            col(
                "Min Available",
                "string",
                text("The minimum number of pods that must be available."),
            ),
            col(
                "Max Unavailable",
                "string",
                text("The maximum number of pods that may be unavailable."),
            ),
            col(
                "Allowed Disruptions",
                "integer",
                text("Calculated number of pods that may be disrupted at this time."),
            ),
            AGE,
        ],
        ("", "replicationcontrollers") => vec![
            NAME,
            col("Desired", "integer", doc(RC_SPEC, "replicas")),
            col("Current", "integer", doc(RC_STATUS, "replicas")),
            col("Ready", "integer", doc(RC_STATUS, "readyReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", doc(RC_SPEC, "selector")),
        ],
        ("apps", "replicasets") => vec![
            NAME,
            col("Desired", "integer", doc(RS_SPEC, "replicas")),
            col("Current", "integer", doc(RS_STATUS, "replicas")),
            col("Ready", "integer", doc(RS_STATUS, "readyReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", doc(RS_SPEC, "selector")),
        ],
        ("apps", "daemonsets") => vec![
            NAME,
            col(
                "Desired",
                "integer",
                doc(DS_STATUS, "desiredNumberScheduled"),
            ),
            col(
                "Current",
                "integer",
                doc(DS_STATUS, "currentNumberScheduled"),
            ),
            col("Ready", "integer", doc(DS_STATUS, "numberReady")),
            col(
                "Up-to-date",
                "integer",
                doc(DS_STATUS, "updatedNumberScheduled"),
            ),
            col("Available", "integer", doc(DS_STATUS, "numberAvailable")),
            col("Node Selector", "string", doc(POD_SPEC, "nodeSelector")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide(
                "Selector",
                "string",
                doc("io.k8s.api.apps.v1.DaemonSetSpec", "selector"),
            ),
        ],
        ("batch", "jobs") => vec![
            NAME,
            col("Status", "string", text("Status of the job.")),
            col(
                "Completions",
                "string",
                doc("io.k8s.api.batch.v1.JobStatus", "succeeded"),
            ),
            col(
                "Duration",
                "string",
                text("Time required to complete the job."),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", doc(JOB_SPEC, "selector")),
        ],
        ("batch", "cronjobs") => vec![
            NAME,
            col("Schedule", "string", doc(CJ_SPEC, "schedule")),
            col("Timezone", "string", doc(CJ_SPEC, "timeZone")),
            col("Suspend", "boolean", doc(CJ_SPEC, "suspend")),
            col("Active", "integer", doc(CJ_STATUS, "active")),
            col(
                "Last Schedule",
                "string",
                doc(CJ_STATUS, "lastScheduleTime"),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", doc(JOB_SPEC, "selector")),
        ],
        ("", "services") => vec![
            NAME,
            col("Type", "string", doc(SVC_SPEC, "type")),
            col("Cluster-IP", "string", doc(SVC_SPEC, "clusterIP")),
            col("External-IP", "string", doc(SVC_SPEC, "externalIPs")),
            col("Port(s)", "string", doc(SVC_SPEC, "ports")),
            AGE,
            wide("Selector", "string", doc(SVC_SPEC, "selector")),
        ],
        ("networking.k8s.io", "ingresses") => vec![
            NAME,
            col(
                "Class",
                "string",
                text(
                    "The name of the IngressClass resource that should be used for additional configuration",
                ),
            ),
            col(
                "Hosts",
                "string",
                text("Hosts that incoming requests are matched against before the ingress rule"),
            ),
            col(
                "Address",
                "string",
                text("Address is a list containing ingress points for the load-balancer"),
            ),
            col(
                "Ports",
                "string",
                text("Ports of TLS configurations that open"),
            ),
            AGE,
        ],
        ("networking.k8s.io", "ingressclasses") => vec![
            NAME,
            col(
                "Controller",
                "string",
                text("Controller that is responsible for handling this class"),
            ),
            col(
                "Parameters",
                "string",
                text("A reference to a resource with additional parameters"),
            ),
            AGE,
        ],
        ("apps", "statefulsets") => vec![
            NAME,
            col(
                "Ready",
                "string",
                text("Number of the pod with ready state"),
            ),
            AGE,
            CONTAINERS,
            IMAGES,
        ],
        ("", "endpoints") => vec![
            NAME,
            col(
                "Endpoints",
                "string",
                doc("io.k8s.api.core.v1.Endpoints", "subsets"),
            ),
            AGE,
        ],
        ("", "nodes") => vec![
            NAME,
            col("Status", "string", text("The status of the node")),
            col("Roles", "string", text("The roles of the node")),
            AGE,
            col("Version", "string", doc(NODE_INFO, "kubeletVersion")),
            wide("Internal-IP", "string", doc(NODE_STATUS, "addresses")),
            wide("External-IP", "string", doc(NODE_STATUS, "addresses")),
            wide("OS-Image", "string", doc(NODE_INFO, "osImage")),
            wide("Kernel-Version", "string", doc(NODE_INFO, "kernelVersion")),
            wide(
                "Container-Runtime",
                "string",
                doc(NODE_INFO, "containerRuntimeVersion"),
            ),
        ],
        ("", "events") | ("events.k8s.io", "events") => vec![
            col("Last Seen", "string", doc(EVENT, "lastTimestamp")),
            col("Type", "string", doc(EVENT, "type")),
            col("Reason", "string", doc(EVENT, "reason")),
            col("Object", "string", doc(EVENT, "involvedObject")),
            wide("Subobject", "string", doc(OBJ_REF, "fieldPath")),
            wide("Source", "string", doc(EVENT, "source")),
            col("Message", "string", doc(EVENT, "message")),
            wide("First Seen", "string", doc(EVENT, "firstTimestamp")),
            wide("Count", "string", doc(EVENT, "count")),
            ("Name", "string", "name", Desc::Doc(META, "name"), 1),
        ],
        ("", "namespaces") => vec![
            NAME,
            col("Status", "string", text("The status of the namespace")),
            AGE,
        ],
        ("", "secrets") => vec![
            NAME,
            col("Type", "string", doc("io.k8s.api.core.v1.Secret", "type")),
            col("Data", "string", doc("io.k8s.api.core.v1.Secret", "data")),
            AGE,
        ],
        ("", "serviceaccounts") => vec![
            NAME,
            col(
                "Secrets",
                "string",
                doc("io.k8s.api.core.v1.ServiceAccount", "secrets"),
            ),
            AGE,
        ],
        ("", "persistentvolumes") => vec![
            NAME,
            col("Capacity", "string", doc(PV_SPEC, "capacity")),
            col("Access Modes", "string", doc(PV_SPEC, "accessModes")),
            col(
                "Reclaim Policy",
                "string",
                doc(PV_SPEC, "persistentVolumeReclaimPolicy"),
            ),
            col("Status", "string", doc(PV_STATUS, "phase")),
            col("Claim", "string", doc(PV_SPEC, "claimRef")),
            col("StorageClass", "string", text("StorageClass of the pv")),
            col(
                "VolumeAttributesClass",
                "string",
                text("VolumeAttributesClass of the pv"),
            ),
            col("Reason", "string", doc(PV_STATUS, "reason")),
            AGE,
            wide("VolumeMode", "string", doc(PV_SPEC, "volumeMode")),
        ],
        ("", "persistentvolumeclaims") => vec![
            NAME,
            col("Status", "string", doc(PVC_STATUS, "phase")),
            col("Volume", "string", doc(PVC_SPEC, "volumeName")),
            col("Capacity", "string", doc(PVC_STATUS, "capacity")),
            col("Access Modes", "string", doc(PVC_STATUS, "accessModes")),
            col("StorageClass", "string", text("StorageClass of the pvc")),
            col(
                "VolumeAttributesClass",
                "string",
                text("VolumeAttributesClass of the pvc"),
            ),
            AGE,
            wide("VolumeMode", "string", doc(PVC_SPEC, "volumeMode")),
        ],
        ("apps", "deployments") => vec![
            NAME,
            col(
                "Ready",
                "string",
                text("Number of the pod with ready state"),
            ),
            col("Up-to-date", "string", doc(DEP_STATUS, "updatedReplicas")),
            col("Available", "string", doc(DEP_STATUS, "availableReplicas")),
            AGE,
            CONTAINERS,
            IMAGES,
            wide("Selector", "string", doc(DEP_SPEC, "selector")),
        ],
        ("autoscaling", "horizontalpodautoscalers") => vec![
            NAME,
            col("Reference", "string", doc(HPA_SPEC, "scaleTargetRef")),
            col("Targets", "string", doc(HPA_SPEC, "metrics")),
            col("MinPods", "string", doc(HPA_SPEC, "minReplicas")),
            col("MaxPods", "string", doc(HPA_SPEC, "maxReplicas")),
            col("Replicas", "string", doc(HPA_STATUS, "currentReplicas")),
            AGE,
        ],
        ("", "configmaps") => vec![
            NAME,
            col(
                "Data",
                "string",
                doc("io.k8s.api.core.v1.ConfigMap", "data"),
            ),
            AGE,
        ],
        ("networking.k8s.io", "networkpolicies") => vec![
            NAME,
            col(
                "Pod-Selector",
                "string",
                doc("io.k8s.api.networking.v1.NetworkPolicySpec", "podSelector"),
            ),
            AGE,
        ],
        ("rbac.authorization.k8s.io", "rolebindings") => vec![
            NAME,
            col(
                "Role",
                "string",
                doc("io.k8s.api.rbac.v1.RoleBinding", "roleRef"),
            ),
            AGE,
            wide("Users", "string", text("Users in the roleBinding")),
            wide("Groups", "string", text("Groups in the roleBinding")),
            wide(
                "ServiceAccounts",
                "string",
                text("ServiceAccounts in the roleBinding"),
            ),
        ],
        ("rbac.authorization.k8s.io", "clusterrolebindings") => vec![
            NAME,
            col(
                "Role",
                "string",
                doc("io.k8s.api.rbac.v1.ClusterRoleBinding", "roleRef"),
            ),
            AGE,
            wide("Users", "string", text("Users in the clusterRoleBinding")),
            wide("Groups", "string", text("Groups in the clusterRoleBinding")),
            wide(
                "ServiceAccounts",
                "string",
                text("ServiceAccounts in the clusterRoleBinding"),
            ),
        ],
        ("apiregistration.k8s.io", "apiservices") => vec![
            NAME,
            col(
                "Service",
                "string",
                Desc::Text("The reference to the service that hosts this API endpoint."),
            ),
            col(
                "Available",
                "string",
                Desc::Text("Whether this service is available."),
            ),
            AGE,
        ],
        ("certificates.k8s.io", "certificatesigningrequests") => vec![
            NAME,
            AGE,
            col(
                "SignerName",
                "string",
                doc(
                    "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                    "signerName",
                ),
            ),
            col(
                "Requestor",
                "string",
                doc(
                    "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                    "username",
                ),
            ),
            col(
                "RequestedDuration",
                "string",
                doc(
                    "io.k8s.api.certificates.v1.CertificateSigningRequestSpec",
                    "expirationSeconds",
                ),
            ),
            col(
                "Condition",
                "string",
                doc(
                    "io.k8s.api.certificates.v1.CertificateSigningRequestStatus",
                    "conditions",
                ),
            ),
        ],
        ("coordination.k8s.io", "leases") => vec![
            NAME,
            col(
                "Holder",
                "string",
                doc("io.k8s.api.coordination.v1.LeaseSpec", "holderIdentity"),
            ),
            AGE,
        ],
        ("storage.k8s.io", "storageclasses") => vec![
            NAME,
            col("Provisioner", "string", doc(SC, "provisioner")),
            col("ReclaimPolicy", "string", doc(SC, "reclaimPolicy")),
            col("VolumeBindingMode", "string", doc(SC, "volumeBindingMode")),
            col(
                "AllowVolumeExpansion",
                "string",
                doc(SC, "allowVolumeExpansion"),
            ),
            AGE,
        ],
        ("apps", "controllerrevisions") => vec![
            NAME,
            col("Controller", "string", text("Controller of the object")),
            col(
                "Revision",
                "string",
                doc("io.k8s.api.apps.v1.ControllerRevision", "revision"),
            ),
            AGE,
        ],
        ("", "resourcequotas") => vec![
            NAME,
            col(
                "Request",
                "string",
                text(
                    "Request represents a minimum amount of cpu/memory that a container may consume.",
                ),
            ),
            col(
                "Limit",
                "string",
                text(
                    "Limits control the maximum amount of cpu/memory that a container may use independent of contention on the node.",
                ),
            ),
            AGE,
        ],
        ("scheduling.k8s.io", "priorityclasses") => vec![
            NAME,
            col("Value", "integer", doc(PC, "value")),
            col("Global-Default", "boolean", doc(PC, "globalDefault")),
            AGE,
            col("PreemptionPolicy", "string", doc(PC, "preemptionPolicy")),
        ],
        ("storage.k8s.io", "volumeattachments") => vec![
            NAME,
            ("Attacher", "string", "name", doc(VA_SPEC, "attacher"), 0),
            col(
                "PV",
                "string",
                doc(
                    "io.k8s.api.storage.v1.VolumeAttachmentSource",
                    "persistentVolumeName",
                ),
            ),
            col("Node", "string", doc(VA_SPEC, "nodeName")),
            col(
                "Attached",
                "boolean",
                doc("io.k8s.api.storage.v1.VolumeAttachmentStatus", "attached"),
            ),
            AGE,
        ],
        ("discovery.k8s.io", "endpointslices") => vec![
            NAME,
            col("AddressType", "string", doc(SLICE, "addressType")),
            col("Ports", "string", doc(SLICE, "ports")),
            col("Endpoints", "string", doc(SLICE, "endpoints")),
            AGE,
        ],
        ("storage.k8s.io", "csinodes") => vec![
            NAME,
            col(
                "Drivers",
                "integer",
                text("Drivers indicates the number of CSI drivers registered on the node"),
            ),
            AGE,
        ],
        ("storage.k8s.io", "csidrivers") => vec![
            NAME,
            col(
                "AttachRequired",
                "boolean",
                doc(CSI_DRIVER, "attachRequired"),
            ),
            col(
                "PodInfoOnMount",
                "boolean",
                doc(CSI_DRIVER, "podInfoOnMount"),
            ),
            col(
                "StorageCapacity",
                "boolean",
                doc(CSI_DRIVER, "storageCapacity"),
            ),
            col("TokenRequests", "string", doc(CSI_DRIVER, "tokenRequests")),
            col(
                "RequiresRepublish",
                "boolean",
                doc(CSI_DRIVER, "requiresRepublish"),
            ),
            col("Modes", "string", doc(CSI_DRIVER, "volumeLifecycleModes")),
            AGE,
        ],
        ("storage.k8s.io", "csistoragecapacities") => vec![
            NAME,
            col(
                "StorageClassName",
                "string",
                doc(
                    "io.k8s.api.storage.v1.CSIStorageCapacity",
                    "storageClassName",
                ),
            ),
            col(
                "Capacity",
                "string",
                doc("io.k8s.api.storage.v1.CSIStorageCapacity", "capacity"),
            ),
        ],
        ("networking.k8s.io", "servicecidrs") => vec![
            NAME,
            col(
                "CIDRs",
                "string",
                doc("io.k8s.api.networking.v1.ServiceCIDRSpec", "cidrs"),
            ),
            AGE,
        ],
        ("networking.k8s.io", "ipaddresses") => vec![
            NAME,
            col(
                "ParentRef",
                "string",
                doc("io.k8s.api.networking.v1.IPAddressSpec", "parentRef"),
            ),
        ],
        _ => Vec::new(),
    }
}
