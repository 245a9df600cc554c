//! Pure decisions of the deployment controller (upstream's
//! `deployment/util`): surge/unavailable math, template hashing, revision
//! annotations, conditions and the scale amounts of a rollout.

use k8s_openapi::api::apps::v1::{Deployment, DeploymentCondition, DeploymentStatus, ReplicaSet};
use k8s_openapi::api::core::v1::PodTemplateSpec;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use k8s_openapi::jiff::Timestamp;

/// Label telling the pods of one template apart.
pub const HASH_LABEL: &str = "pod-template-hash";
/// Revision of a ReplicaSet (and of its deployment).
pub const REVISION: &str = "deployment.kubernetes.io/revision";
/// Earlier revisions a reused ReplicaSet had.
pub const REVISION_HISTORY: &str = "deployment.kubernetes.io/revision-history";
/// Deployment replicas when the ReplicaSet was last scaled.
pub const DESIRED_REPLICAS: &str = "deployment.kubernetes.io/desired-replicas";
/// Deployment replicas plus max surge when the ReplicaSet was last scaled.
pub const MAX_REPLICAS: &str = "deployment.kubernetes.io/max-replicas";
/// Longest revision-history annotation kept.
const MAX_HISTORY_CHARS: usize = 2000;
/// Deployment annotations never copied to ReplicaSets.
const NOT_COPIED: &[&str] = &[
    "kubectl.kubernetes.io/last-applied-configuration",
    REVISION,
    REVISION_HISTORY,
    DESIRED_REPLICAS,
    MAX_REPLICAS,
    "deprecated.deployment.rollback.to",
];

/// Condition reasons, as upstream.
pub mod reason {
    /// New RS created.
    pub const NEW_RS_CREATED: &str = "NewReplicaSetCreated";
    /// Found an existing new RS.
    pub const FOUND_NEW_RS: &str = "FoundNewReplicaSet";
    /// Progress was made.
    pub const RS_UPDATED: &str = "ReplicaSetUpdated";
    /// Rollout complete.
    pub const NEW_RS_AVAILABLE: &str = "NewReplicaSetAvailable";
    /// Progress deadline passed.
    pub const TIMED_OUT: &str = "ProgressDeadlineExceeded";
    /// Paused.
    pub const PAUSED: &str = "DeploymentPaused";
    /// Resumed.
    pub const RESUMED: &str = "DeploymentResumed";
    /// Enough pods available.
    pub const MIN_AVAILABLE: &str = "MinimumReplicasAvailable";
    /// Not enough pods available.
    pub const MIN_UNAVAILABLE: &str = "MinimumReplicasUnavailable";
    /// Creating the new RS failed.
    pub const RS_CREATE_ERROR: &str = "ReplicaSetCreateError";
}

/// Desired replicas of a deployment.
pub fn replicas(d: &Deployment) -> i32 {
    d.spec.as_ref().and_then(|s| s.replicas).unwrap_or(1)
}

/// Spec replicas of a ReplicaSet.
pub fn rs_replicas(rs: &ReplicaSet) -> i32 {
    rs.spec.as_ref().and_then(|s| s.replicas).unwrap_or(0)
}

/// Available replicas a ReplicaSet reports.
pub fn rs_available(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.available_replicas)
        .unwrap_or(0)
}

/// Replicas a ReplicaSet reports.
pub fn rs_actual(rs: &ReplicaSet) -> i32 {
    rs.status.as_ref().map(|s| s.replicas).unwrap_or(0)
}

/// Ready replicas a ReplicaSet reports.
pub fn rs_ready(rs: &ReplicaSet) -> i32 {
    rs.status
        .as_ref()
        .and_then(|s| s.ready_replicas)
        .unwrap_or(0)
}

/// Whether the deployment uses the RollingUpdate strategy.
pub fn is_rolling(d: &Deployment) -> bool {
    d.spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.type_.as_deref())
        .is_none_or(|t| t == "RollingUpdate")
}

/// An int-or-percent scaled against `total`, percentages rounded up or down.
pub fn scaled(v: Option<&IntOrString>, total: i32, round_up: bool) -> i32 {
    match v {
        Some(IntOrString::Int(i)) => *i,
        Some(IntOrString::String(s)) => {
            let p: i64 = s.trim_end_matches('%').parse().unwrap_or(25);
            let n = p * i64::from(total);
            (if round_up { (n + 99) / 100 } else { n / 100 }) as i32
        }
        None => scaled(Some(&IntOrString::String("25%".into())), total, round_up),
    }
}

/// (maxSurge, maxUnavailable) resolved: surge rounds up, unavailable down,
/// and both zero means one may be unavailable.
pub fn fenceposts(d: &Deployment) -> (i32, i32) {
    let ru = d
        .spec
        .as_ref()
        .and_then(|s| s.strategy.as_ref())
        .and_then(|s| s.rolling_update.as_ref());
    let desired = replicas(d);
    let surge = scaled(ru.and_then(|r| r.max_surge.as_ref()), desired, true);
    let unavailable = scaled(ru.and_then(|r| r.max_unavailable.as_ref()), desired, false);
    if surge == 0 && unavailable == 0 {
        (0, 1)
    } else {
        (surge, unavailable)
    }
}

/// Max surge (0 for Recreate).
pub fn max_surge(d: &Deployment) -> i32 {
    if is_rolling(d) { fenceposts(d).0 } else { 0 }
}

/// Max unavailable (0 for Recreate or no replicas), at most the replicas.
pub fn max_unavailable(d: &Deployment) -> i32 {
    if !is_rolling(d) || replicas(d) == 0 {
        return 0;
    }
    fenceposts(d).1.min(replicas(d))
}

/// upstream's SafeEncodeString alphabet: no vowels, no confusable digits.
const ALPHANUMS: &[u8] = b"bcdfghjklmnpqrstvwxz2456789";

/// The pod-template-hash: fnv32a over the template (and collision count),
/// the decimal rendered with upstream's SafeEncodeString.
pub fn template_hash(t: &PodTemplateSpec, collision: Option<i32>) -> String {
    let mut h: u32 = 0x811c_9dc5;
    let mut feed = |bytes: &[u8]| {
        for b in bytes {
            h ^= u32::from(*b);
            h = h.wrapping_mul(0x0100_0193);
        }
    };
    feed(&serde_json::to_vec(t).unwrap_or_default());
    if let Some(c) = collision {
        feed(&(c as u32).to_le_bytes());
    }
    h.to_string()
        .bytes()
        .map(|b| ALPHANUMS[usize::from(b) % ALPHANUMS.len()] as char)
        .collect()
}

/// Whether two templates are equal apart from the pod-template-hash label.
pub fn equal_ignore_hash(a: &PodTemplateSpec, b: &PodTemplateSpec) -> bool {
    let strip = |t: &PodTemplateSpec| {
        let mut t = t.clone();
        if let Some(l) = t.metadata.as_mut().and_then(|m| m.labels.as_mut()) {
            l.remove(HASH_LABEL);
        }
        serde_json::to_value(t).unwrap_or_default()
    };
    strip(a) == strip(b)
}

/// The revision annotation as a number (0 when absent or bad).
pub fn revision(rs: &ReplicaSet) -> i64 {
    rs.metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(REVISION))
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// Sets the annotations of the new ReplicaSet (upstream's
/// SetNewReplicaSetAnnotations); true when something changed.
pub fn set_new_rs_annotations(
    d: &Deployment,
    rs: &mut ReplicaSet,
    new_revision: i64,
    exists: bool,
) -> bool {
    let annotations = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in d.metadata.annotations.iter().flatten() {
        if NOT_COPIED.contains(&k.as_str()) || annotations.get(k) == Some(v) {
            continue;
        }
        annotations.insert(k.clone(), v.clone());
        changed = true;
    }
    let old = annotations.get(REVISION).cloned();
    let old_n: i64 = old.as_deref().and_then(|r| r.parse().ok()).unwrap_or(0);
    if old_n < new_revision {
        annotations.insert(REVISION.into(), new_revision.to_string());
        changed = true;
        // A reused ReplicaSet (rollback) keeps its earlier revisions.
        if let Some(old) = old {
            let hist = annotations
                .get(REVISION_HISTORY)
                .cloned()
                .unwrap_or_default();
            let mut revs: Vec<&str> = hist.split(',').filter(|s| !s.is_empty()).collect();
            revs.push(&old);
            while revs.join(",").len() > MAX_HISTORY_CHARS && revs.len() > 1 {
                revs.remove(0);
            }
            let joined = revs.join(",");
            annotations.insert(REVISION_HISTORY.into(), joined);
        }
    }
    if !exists {
        changed |= set_replicas_annotations(rs, replicas(d), replicas(d) + max_surge(d));
    }
    changed
}

/// Sets desired-replicas and max-replicas; true when something changed.
pub fn set_replicas_annotations(rs: &mut ReplicaSet, desired: i32, max: i32) -> bool {
    let a = rs.metadata.annotations.get_or_insert_with(Default::default);
    let mut changed = false;
    for (k, v) in [(DESIRED_REPLICAS, desired), (MAX_REPLICAS, max)] {
        let v = v.to_string();
        if a.get(k) != Some(&v) {
            a.insert(k.into(), v);
            changed = true;
        }
    }
    changed
}

fn annotation_i32(rs: &ReplicaSet, k: &str) -> Option<i32> {
    rs.metadata.annotations.as_ref()?.get(k)?.parse().ok()
}

/// The desired-replicas annotation.
pub fn desired_annotation(rs: &ReplicaSet) -> Option<i32> {
    annotation_i32(rs, DESIRED_REPLICAS)
}

/// Replicas the new ReplicaSet should have now (upstream's NewRSNewReplicas).
pub fn new_rs_new_replicas(d: &Deployment, all: &[ReplicaSet], new_rs: &ReplicaSet) -> i32 {
    if !is_rolling(d) {
        return replicas(d);
    }
    let current: i32 = all.iter().map(rs_replicas).sum();
    let max_total = replicas(d) + max_surge(d);
    if current >= max_total {
        return rs_replicas(new_rs);
    }
    let up = (max_total - current).min(replicas(d) - rs_replicas(new_rs));
    rs_replicas(new_rs) + up
}

/// How many old pods may go now: all pods minus the minimum available minus
/// the new RS's unavailable pods (upstream's maxScaledDown).
pub fn max_scaled_down(d: &Deployment, all: &[ReplicaSet], new_rs: Option<&ReplicaSet>) -> i32 {
    let total: i32 = all.iter().map(rs_replicas).sum();
    let min_available = replicas(d) - max_unavailable(d);
    let new_unavailable = new_rs
        .map(|r| rs_replicas(r) - rs_available(r))
        .unwrap_or(0);
    total - min_available - new_unavailable
}

/// The change to `rs` when the deployment grows or shrinks by `to_add`
/// mid-rollout, in proportion to its size (upstream's GetProportion).
pub fn proportion(rs: &ReplicaSet, d: &Deployment, to_add: i32, added: i32) -> i32 {
    if rs_replicas(rs) == 0 || to_add == 0 || to_add == added {
        return 0;
    }
    let fraction = if replicas(d) == 0 {
        -rs_replicas(rs)
    } else {
        let target = replicas(d) + max_surge(d);
        let annotated = annotation_i32(rs, MAX_REPLICAS)
            .unwrap_or_else(|| d.status.as_ref().and_then(|s| s.replicas).unwrap_or(0));
        if annotated == 0 {
            0
        } else {
            let size = f64::from(rs_replicas(rs)) * f64::from(target) / f64::from(annotated);
            size.round() as i32 - rs_replicas(rs)
        }
    };
    let allowed = to_add - added;
    if to_add > 0 {
        fraction.min(allowed)
    } else {
        fraction.max(allowed)
    }
}

/// Seconds-precision now, as the API stores times.
pub fn now() -> Time {
    Time(Timestamp::from_second(Timestamp::now().as_second()).unwrap_or(Timestamp::UNIX_EPOCH))
}

/// A new condition stamped now.
pub fn condition(type_: &str, status: &str, reason: &str, message: String) -> DeploymentCondition {
    DeploymentCondition {
        type_: type_.into(),
        status: status.into(),
        reason: Some(reason.into()),
        message: Some(message),
        last_update_time: Some(now()),
        last_transition_time: Some(now()),
    }
}

/// A condition of the status by type.
pub fn get_condition<'a>(s: &'a DeploymentStatus, type_: &str) -> Option<&'a DeploymentCondition> {
    s.conditions.iter().flatten().find(|c| c.type_ == type_)
}

/// Sets a condition unless one with the same status and reason is there;
/// keeps the transition time when the status did not change.
pub fn set_condition(s: &mut DeploymentStatus, mut c: DeploymentCondition) {
    if let Some(cur) = get_condition(s, &c.type_) {
        if cur.status == c.status && cur.reason == c.reason {
            return;
        }
        if cur.status == c.status {
            c.last_transition_time = cur.last_transition_time.clone();
        }
    }
    remove_condition(s, &c.type_);
    s.conditions.get_or_insert_with(Vec::new).push(c);
}

/// Removes a condition by type.
pub fn remove_condition(s: &mut DeploymentStatus, type_: &str) {
    if let Some(cs) = s.conditions.as_mut() {
        cs.retain(|c| c.type_ != type_);
    }
}

/// Whether the deployment sets a progress deadline.
pub fn progress_deadline(d: &Deployment) -> Option<i32> {
    d.spec
        .as_ref()
        .and_then(|s| s.progress_deadline_seconds)
        .filter(|s| *s != i32::MAX)
}

/// Whether the rollout described by `s` is complete.
pub fn complete(d: &Deployment, s: &DeploymentStatus) -> bool {
    let r = replicas(d);
    s.updated_replicas.unwrap_or(0) == r
        && s.replicas.unwrap_or(0) == r
        && s.available_replicas.unwrap_or(0) == r
        && s.observed_generation.unwrap_or(0) >= d.metadata.generation.unwrap_or(0)
}

/// Whether `new` shows progress over the deployment's recorded status.
pub fn progressing(d: &Deployment, new: &DeploymentStatus) -> bool {
    let old = d.status.clone().unwrap_or_default();
    let g = |v: Option<i32>| v.unwrap_or(0);
    let old_old = g(old.replicas) - g(old.updated_replicas);
    let new_old = g(new.replicas) - g(new.updated_replicas);
    g(new.updated_replicas) > g(old.updated_replicas)
        || new_old < old_old
        || g(new.ready_replicas) > g(old.ready_replicas)
        || g(new.available_replicas) > g(old.available_replicas)
}

/// Seconds left before the progress deadline (<= 0: timed out); None when
/// there is no deadline or nothing to time out.
pub fn deadline_left(d: &Deployment, s: &DeploymentStatus) -> Option<i64> {
    let deadline = progress_deadline(d)?;
    let c = get_condition(s, "Progressing")?;
    if c.reason.as_deref() == Some(reason::NEW_RS_AVAILABLE) {
        return None;
    }
    let from = c.last_update_time.as_ref()?.0.as_second();
    Some(from + i64::from(deadline) - Timestamp::now().as_second())
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::apps::v1::{
        DeploymentSpec, DeploymentStrategy, ReplicaSetSpec, RollingUpdateDeployment,
    };
    use kube::api::ObjectMeta;

    fn deploy(replicas: i32, surge: IntOrString, unavailable: IntOrString) -> Deployment {
        Deployment {
            spec: Some(DeploymentSpec {
                replicas: Some(replicas),
                strategy: Some(DeploymentStrategy {
                    type_: Some("RollingUpdate".into()),
                    rolling_update: Some(RollingUpdateDeployment {
                        max_surge: Some(surge),
                        max_unavailable: Some(unavailable),
                    }),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn rs(name: &str, replicas: i32, available: i32, max_ann: Option<i32>) -> ReplicaSet {
        ReplicaSet {
            metadata: ObjectMeta {
                name: Some(name.into()),
                annotations: max_ann.map(|m| [(MAX_REPLICAS.to_string(), m.to_string())].into()),
                ..Default::default()
            },
            spec: Some(ReplicaSetSpec {
                replicas: Some(replicas),
                ..Default::default()
            }),
            status: Some(k8s_openapi::api::apps::v1::ReplicaSetStatus {
                replicas,
                available_replicas: Some(available),
                ..Default::default()
            }),
        }
    }

    fn pct(s: &str) -> IntOrString {
        IntOrString::String(s.into())
    }

    #[test]
    fn surge_rounds_up_and_unavailable_rounds_down() {
        assert_eq!(fenceposts(&deploy(10, pct("25%"), pct("25%"))), (3, 2));
        assert_eq!(fenceposts(&deploy(3, pct("25%"), pct("25%"))), (1, 0));
        assert_eq!(fenceposts(&deploy(1, pct("0%"), pct("0%"))), (0, 1));
        assert_eq!(
            fenceposts(&deploy(5, IntOrString::Int(2), IntOrString::Int(0))),
            (2, 0)
        );
        assert_eq!(
            max_unavailable(&deploy(2, IntOrString::Int(0), IntOrString::Int(5))),
            2
        );
    }

    #[test]
    fn hash_is_stable_alphabet_safe_and_changes_with_collisions() {
        let t = PodTemplateSpec::default();
        let h = template_hash(&t, None);
        assert_eq!(h, template_hash(&t, None));
        assert!(h.bytes().all(|b| ALPHANUMS.contains(&b)), "{h}");
        assert_ne!(h, template_hash(&t, Some(1)));
        let mut t2 = t.clone();
        t2.metadata = Some(ObjectMeta {
            labels: Some([("app".to_string(), "x".to_string())].into()),
            ..Default::default()
        });
        assert_ne!(h, template_hash(&t2, None));
        let mut t3 = t2.clone();
        t3.metadata
            .as_mut()
            .unwrap()
            .labels
            .as_mut()
            .unwrap()
            .insert(HASH_LABEL.into(), h.clone());
        assert!(equal_ignore_hash(&t2, &t3));
        assert!(!equal_ignore_hash(&t, &t3));
    }

    #[test]
    fn rollout_step_amounts() {
        // 10 replicas, surge 3, unavailable 2: the new RS may grow to 3 first.
        let d = deploy(10, pct("25%"), pct("25%"));
        let old = rs("old", 10, 10, None);
        let new = rs("new", 0, 0, None);
        assert_eq!(
            new_rs_new_replicas(&d, &[old.clone(), new.clone()], &new),
            3
        );
        // With 13 pods, 3 of them new and unavailable: 13 - 8 - 3 = 2 old may go.
        let new3 = rs("new", 3, 0, None);
        assert_eq!(
            max_scaled_down(&d, &[old.clone(), new3.clone()], Some(&new3)),
            2
        );
        // Full at 13 total: no further scale up.
        assert_eq!(new_rs_new_replicas(&d, &[old, new3.clone()], &new3), 3);
    }

    #[test]
    fn proportional_scaling_splits_by_size() {
        // Scaled 10 -> 20 mid-rollout (surge 3 -> 5): 8 old + 5 new = 13 ->
        // allowed 25, 12 to add.
        let d = deploy(20, pct("25%"), pct("25%"));
        let old = rs("old", 8, 8, Some(13));
        let new = rs("new", 5, 0, Some(13));
        let a = proportion(&old, &d, 12, 0);
        let b = proportion(&new, &d, 12, a);
        assert_eq!((a, b), (7, 5));
        // Scaling down to 0 takes everything.
        let z = deploy(0, pct("25%"), pct("25%"));
        assert_eq!(proportion(&old, &z, -13, 0), -8);
    }

    #[test]
    fn reused_rs_keeps_revision_history_and_copies_change_cause() {
        let mut d = deploy(1, pct("25%"), pct("25%"));
        d.metadata.annotations = Some(
            [
                ("kubernetes.io/change-cause".to_string(), "v1".to_string()),
                (REVISION.to_string(), "9".to_string()),
            ]
            .into(),
        );
        let mut r = rs("r", 1, 1, None);
        assert!(set_new_rs_annotations(&d, &mut r, 1, false));
        let a = r.metadata.annotations.clone().unwrap();
        assert_eq!(a[REVISION], "1");
        assert_eq!(a["kubernetes.io/change-cause"], "v1");
        assert_eq!(a[DESIRED_REPLICAS], "1");
        assert!(set_new_rs_annotations(&d, &mut r, 3, true));
        assert_eq!(
            r.metadata.annotations.as_ref().unwrap()[REVISION_HISTORY],
            "1"
        );
        assert!(!set_new_rs_annotations(&d, &mut r, 3, true));
    }
}
