//! Kubernetes strategic merge patch, following upstream's
//! `k8s.io/apimachinery/pkg/util/strategicpatch` (`StrategicMergeMapPatch`
//! as the API server calls it) rule for rule, with the per-field patch
//! strategy and merge key taken from [`crate::schema::patch_meta`]: lists
//! with the `merge` strategy merge by their merge key (or as a set of
//! scalars), other lists are replaced, objects merge key by key, `null`
//! deletes, and the `$patch`, `$retainKeys`, `$setElementOrder/<field>` and
//! `$deleteFromPrimitiveList/<field>` directives kubectl sends are honoured.
//! Where no schema is known the result is what a JSON merge patch gives.

use serde_json::{Map, Value};

use super::PatchError;

use crate::schema;

/// Applies a strategic merge patch to an object of OpenAPI definition
/// `definition` (e.g. `io.k8s.api.apps.v1.Deployment`).
pub fn strategic_merge_patch(
    target: &Value,
    patch: &Value,
    definition: &str,
) -> Result<Value, PatchError> {
    let Value::Object(p) = patch else {
        return Err(err("", "a strategic merge patch must be a JSON object"));
    };
    let original = match target {
        Value::Object(m) => m.clone(),
        _ => Map::new(),
    };
    // Unknown definitions simply have no patch metadata.
    let def = schema::definitions()
        .get_key_value(definition)
        .map(|(k, _)| k.as_str());
    let root = Node {
        lookup: &Served,
        def,
    };
    Ok(Value::Object(merge_map(original, p.clone(), root, "")?))
}

/// [`strategic_merge_patch`] with patch metadata from `root`'s lookup.
#[cfg(test)]
pub(super) fn merge_objects(
    target: Map<String, Value>,
    patch: Map<String, Value>,
    root: Node<'_>,
) -> Result<Map<String, Value>, PatchError> {
    merge_map(target, patch, root, "")
}

const DIRECTIVE: &str = "$patch";
const RETAIN_KEYS: &str = "$retainKeys";
const SET_ORDER: &str = "$setElementOrder/";
const DELETE_FROM: &str = "$deleteFromPrimitiveList/";

fn err(path: &str, message: impl Into<String>) -> PatchError {
    PatchError::Strategic {
        path: if path.is_empty() {
            ".".into()
        } else {
            path.to_string()
        },
        message: message.into(),
    }
}

/// Where patch metadata comes from: the served definitions in production,
/// upstream's fixture types in the ported upstream tests.
pub(super) trait Lookup {
    /// The patch strategy and merge key of `field` of definition `def`.
    fn meta(&self, def: &str, field: &str) -> Option<schema::PatchMeta>;
    /// The definition of the objects `field` of `def` holds: directly, as
    /// list items or as map values.
    fn child(&self, def: &str, field: &str) -> Option<&'static str>;
}

/// The served OpenAPI definitions.
struct Served;

impl Lookup for Served {
    fn meta(&self, def: &str, field: &str) -> Option<schema::PatchMeta> {
        schema::patch_meta(def, field)
    }

    fn child(&self, def: &str, field: &str) -> Option<&'static str> {
        let p = schema::property(def, field)?;
        schema::ref_name(p).or_else(|| schema::element(p).and_then(schema::ref_name))
    }
}

/// A position in the schema: the definition of the object being merged.
/// `def == None` means no schema is known (merge-patch behaviour).
#[derive(Clone, Copy)]
pub(super) struct Node<'l> {
    lookup: &'l dyn Lookup,
    def: Option<&'static str>,
}

impl<'l> Node<'l> {
    /// The root of an object of definition `def`.
    #[cfg(test)]
    pub(super) fn root(lookup: &'l dyn Lookup, def: &'static str) -> Self {
        Node {
            lookup,
            def: Some(def),
        }
    }

    /// The node of the objects property `k` holds.
    fn child(&self, k: &str) -> Node<'l> {
        Node {
            lookup: self.lookup,
            def: self.def.and_then(|d| self.lookup.child(d, k)),
        }
    }

    /// Whether property `k`'s lists merge, whether its objects are replaced,
    /// and its merge key.
    fn meta(&self, k: &str) -> (bool, bool, Option<&'static str>) {
        match self.def.and_then(|d| self.lookup.meta(d, k)) {
            Some(m) => (m.merges(), m.replaces(), m.merge_key),
            None => (false, false, None),
        }
    }
}

/// Merges `patch` into `original` (upstream's `mergeMap`).
fn merge_map(
    mut original: Map<String, Value>,
    mut patch: Map<String, Value>,
    node: Node<'_>,
    path: &str,
) -> Result<Map<String, Value>, PatchError> {
    if let Some(d) = patch.remove(DIRECTIVE) {
        match d.as_str() {
            Some("replace") => return Ok(clean_map(patch)),
            // Upstream leaves an empty object behind, not a missing field.
            Some("delete") => return Ok(Map::new()),
            // Upstream rejects `merge` here; merging is what it would mean.
            Some("merge") => {}
            _ => return Err(err(path, format!("unknown patch type: {d}"))),
        }
    }
    apply_retain_keys(&mut original, &mut patch, path)?;
    apply_element_orders(&mut original, &mut patch, node, path)?;

    for (key, pv) in patch {
        let (k, is_delete_list) = match key.strip_prefix(DELETE_FROM) {
            Some("") => return Err(err(path, format!("invalid directive {key}"))),
            Some(field) => (field.to_string(), true),
            None => (key, false),
        };
        let sub = format!("{path}.{k}");
        if pv.is_null() {
            original.remove(&k);
            continue;
        }
        let Some(ov) = original.remove(&k) else {
            // A deletion list for a missing list deletes nothing.
            if !is_delete_list && let Some(v) = clean(pv) {
                original.insert(k, v);
            }
            continue;
        };
        let (merges, replaces, merge_key) = node.meta(&k);
        let merged = match (ov, pv) {
            (Value::Object(om), Value::Object(pm)) if !is_delete_list => {
                if replaces {
                    Some(Value::Object(clean_map(pm)))
                } else {
                    Some(Value::Object(merge_map(om, pm, node.child(&k), &sub)?))
                }
            }
            (Value::Array(oa), Value::Array(pa)) => {
                if merges || is_delete_list {
                    let item = node.child(&k);
                    let (list, _) = merge_list(oa, pa, item, merge_key, is_delete_list, &sub)?;
                    Some(Value::Array(list))
                } else {
                    Some(Value::Array(clean_list(pa)))
                }
            }
            // Different types, or scalars: the patch wins.
            (ov, pv) => {
                if is_delete_list {
                    Some(ov)
                } else {
                    clean(pv)
                }
            }
        };
        if let Some(v) = merged {
            original.insert(k, v);
        }
    }
    Ok(original)
}

/// `$retainKeys`: drop the original's keys the list does not name, after
/// checking the patch itself only sets named keys.
fn apply_retain_keys(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    path: &str,
) -> Result<(), PatchError> {
    let Some(retain) = patch.remove(RETAIN_KEYS) else {
        return Ok(());
    };
    let Value::Array(list) = retain else {
        return Err(err(path, "$retainKeys must be a list of field names"));
    };
    let keep: Vec<&str> = list.iter().filter_map(Value::as_str).collect();
    for (k, v) in patch.iter() {
        if v.is_null() || k.starts_with(SET_ORDER) || k.starts_with(DELETE_FROM) {
            continue;
        }
        if !keep.contains(&k.as_str()) {
            return Err(err(
                path,
                format!("field {k} is set by the patch but missing from $retainKeys"),
            ));
        }
    }
    original.retain(|k, _| keep.contains(&k.as_str()));
    Ok(())
}

/// `$setElementOrder/<field>`: merges the field's list (if patched) and
/// orders the result as the directive lists it, keeping items only the
/// server has where they were relative to the others.
fn apply_element_orders(
    original: &mut Map<String, Value>,
    patch: &mut Map<String, Value>,
    node: Node<'_>,
    path: &str,
) -> Result<(), PatchError> {
    let keys: Vec<String> = patch
        .keys()
        .filter(|k| k.starts_with(SET_ORDER))
        .cloned()
        .collect();
    for key in keys {
        let Some(order_value) = patch.remove(&key) else {
            continue;
        };
        let field = key[SET_ORDER.len()..].to_string();
        let sub = format!("{path}.{field}");
        if field.is_empty() {
            return Err(err(path, format!("invalid directive {key}")));
        }
        let Value::Array(order) = order_value else {
            return Err(err(&sub, format!("{key} must be a list")));
        };
        let (merges, _, merge_key) = node.meta(&field);
        let orig_list = match original.get(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a.clone()),
            Some(_) => {
                return Err(err(
                    &sub,
                    format!("{key} applies to a field that is not a list"),
                ));
            }
        };
        let patch_list = match patch.remove(&field) {
            None => None,
            Some(Value::Array(a)) => Some(a),
            // e.g. null: leave it to the main loop.
            Some(other) => {
                patch.insert(field.clone(), other);
                continue;
            }
        };
        if let Some(pl) = &patch_list {
            validate_order(pl, &order, merge_key, &sub)?;
        }
        // The server order is the live list as merging left it (see
        // `merge_list`).
        let (merged, server_order) = match (orig_list, patch_list) {
            (Some(o), None) => (o.clone(), o),
            (None, Some(p)) => (clean_list(p), Vec::new()),
            (Some(o), Some(p)) => {
                if merges {
                    merge_list(o, p, node.child(&field), merge_key, false, &sub)?
                } else {
                    (clean_list(p), o)
                }
            }
            (None, None) => continue,
        };
        let (in_order, server_only): (Vec<Value>, Vec<Value>) = merged
            .into_iter()
            .partition(|v| position(&order, v, merge_key).is_some());
        check_merge_keys(&in_order, merge_key, &sub)?;
        let sorted = normalize_order(in_order, server_only, &order, &server_order, merge_key);
        original.insert(field, Value::Array(sorted));
    }
    Ok(())
}

/// Upstream's check that the patch list's items appear in the order the
/// `$setElementOrder` list gives (ignoring deletions).
fn validate_order(
    patch: &[Value],
    order: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    let items: Vec<&Value> = patch
        .iter()
        .filter(|v| v.get(DIRECTIVE).is_none())
        .collect();
    let (mut i, mut j) = (0, 0);
    while i < items.len() && j < order.len() {
        if same(items[i], &order[j], merge_key) {
            i += 1;
        }
        j += 1;
    }
    if i < items.len() {
        return Err(err(
            path,
            "the order of the patch list does not match its $setElementOrder list",
        ));
    }
    Ok(())
}

fn check_merge_keys(
    items: &[Value],
    merge_key: Option<&str>,
    path: &str,
) -> Result<(), PatchError> {
    if let Some(k) = merge_key
        && let Some(bad) = items.iter().find(|v| v.get(k).is_none())
    {
        return Err(err(
            path,
            format!("item {bad} does not contain declared merge key {k}"),
        ));
    }
    Ok(())
}

/// Whether two list items are the same item: equal merge key values for
/// lists of objects, equal values for lists of scalars.
fn same(a: &Value, b: &Value, merge_key: Option<&str>) -> bool {
    match merge_key {
        Some(k) => a.get(k).is_some() && a.get(k) == b.get(k),
        None => a == b,
    }
}

fn position(list: &[Value], item: &Value, merge_key: Option<&str>) -> Option<usize> {
    list.iter().position(|o| same(item, o, merge_key))
}

/// What a list holds, for upstream's "all items have one type" rule.
#[derive(PartialEq, Eq, Clone, Copy)]
enum ItemKind {
    Object,
    Scalar(u8),
}

fn item_kind(items: &[Value], more: &[Value], path: &str) -> Result<Option<ItemKind>, PatchError> {
    let mut kind = None;
    for v in items.iter().chain(more) {
        let k = match v {
            Value::Object(_) => ItemKind::Object,
            Value::Array(_) => return Err(err(path, "lists of lists cannot be merged")),
            Value::String(_) => ItemKind::Scalar(0),
            Value::Number(_) => ItemKind::Scalar(1),
            Value::Bool(_) => ItemKind::Scalar(2),
            Value::Null => ItemKind::Scalar(3),
        };
        match kind {
            None => kind = Some(k),
            Some(prev) if prev != k => return Err(err(path, "list items are not all of one type")),
            Some(_) => {}
        }
    }
    Ok(kind)
}

/// Merges a list with the `merge` strategy (upstream's `mergeSlice`).
fn merge_list(
    original: Vec<Value>,
    patch: Vec<Value>,
    item: Node<'_>,
    merge_key: Option<&str>,
    is_delete_list: bool,
    path: &str,
) -> Result<(Vec<Value>, Vec<Value>), PatchError> {
    let Some(kind) = item_kind(&original, &patch, path)? else {
        return Ok((original.clone(), original));
    };
    if kind != ItemKind::Object {
        if is_delete_list {
            let kept = original.iter().filter(|v| !patch.contains(v)).cloned();
            return Ok((kept.collect(), original));
        }
        // A set of scalars: the union, new values first (as upstream orders).
        let mut merged: Vec<Value> = Vec::with_capacity(original.len() + patch.len());
        for v in original.iter().chain(&patch) {
            if !merged.contains(v) {
                merged.push(v.clone());
            }
        }
        let (in_patch, server_only): (Vec<Value>, Vec<Value>) =
            merged.into_iter().partition(|v| patch.contains(v));
        let sorted = normalize_order(in_patch, server_only, &patch, &original, None);
        return Ok((sorted, original));
    }
    let Some(key) = merge_key else {
        return Err(err(
            path,
            "cannot merge a list of objects without a merge key",
        ));
    };

    // Upstream edits the live list in place (Go slices share their backing
    // array), and its `$setElementOrder` handling later orders by that
    // edited array: deletions shift later items left leaving the last one
    // duplicated, new items overwrite the tail. `view` replays this so the
    // resulting order matches upstream's; `len` is the list's own length.
    let n = original.len();
    let mut view = original;
    let mut len = n;

    // Directives first: `$patch: delete` items remove their match, a
    // `$patch: replace` item makes the rest of the patch list the result.
    let mut items = Vec::with_capacity(patch.len());
    let mut replace = false;
    for p in patch {
        let Some(d) = p.get(DIRECTIVE) else {
            items.push(p);
            continue;
        };
        match d.as_str() {
            Some("delete") => {
                let Some(kv) = p.get(key) else {
                    return Err(err(
                        path,
                        format!("delete directive {p} does not contain merge key {key}"),
                    ));
                };
                while let Some(i) = view[..len].iter().position(|o| o.get(key) == Some(kv)) {
                    for j in i..len - 1 {
                        view[j] = view[j + 1].clone();
                    }
                    len -= 1;
                }
            }
            Some("replace") => replace = true,
            Some("merge") => {
                return Err(err(
                    path,
                    "merging lists cannot yet be specified in the patch",
                ));
            }
            _ => return Err(err(path, format!("unknown patch type: {d}"))),
        }
    }
    if replace {
        return Ok((clean_list(items), view));
    }

    let server_order = view[..len].to_vec();
    let mut merged = server_order.clone();
    for p in &items {
        let Value::Object(pm) = p else {
            return Err(err(path, "list items are not all of one type"));
        };
        let Some(kv) = pm.get(key) else {
            return Err(err(
                path,
                format!("item {p} does not contain declared merge key {key}"),
            ));
        };
        let sub = format!("{path}[{key}={kv}]");
        match merged.iter().position(|o| o.get(key) == Some(kv)) {
            Some(i) => {
                let om = match std::mem::take(&mut merged[i]) {
                    Value::Object(m) => m,
                    _ => Map::new(),
                };
                merged[i] = Value::Object(merge_map(om, pm.clone(), item, &sub)?);
            }
            None => {
                if len < n {
                    view[len] = p.clone();
                }
                len += 1;
                if let Some(v) = clean(p.clone()) {
                    merged.push(v);
                }
            }
        }
    }
    let (in_patch, server_only): (Vec<Value>, Vec<Value>) = merged
        .into_iter()
        .partition(|v| position(&items, v, merge_key).is_some());
    let sorted = normalize_order(in_patch, server_only, &items, &server_order, merge_key);
    Ok((sorted, view))
}

/// Upstream's `normalizeElementOrder`: sorts the patched items by the patch
/// order and the server-only items by the server order, then interleaves
/// them, placing a server-only item before a patched one only when both are
/// on the server and it came first there (so new items lead).
fn normalize_order(
    mut patched: Vec<Value>,
    mut server_only: Vec<Value>,
    patch_order: &[Value],
    server_order: &[Value],
    merge_key: Option<&str>,
) -> Vec<Value> {
    let rank = |order: &[Value], v: &Value| position(order, v, merge_key).unwrap_or(usize::MAX);
    patched.sort_by_key(|v| rank(patch_order, v));
    server_only.sort_by_key(|v| rank(server_order, v));
    let mut out = Vec::with_capacity(patched.len() + server_only.len());
    let mut left = server_only.into_iter().peekable();
    let mut right = patched.into_iter().peekable();
    loop {
        let take_left = match (left.peek(), right.peek()) {
            (None, None) => break,
            (Some(_), None) => true,
            (None, Some(_)) => false,
            (Some(l), Some(r)) => match (
                position(server_order, l, merge_key),
                position(server_order, r, merge_key),
            ) {
                (Some(li), Some(ri)) => li < ri,
                _ => false,
            },
        };
        let next = if take_left { left.next() } else { right.next() };
        out.extend(next);
    }
    out
}

/// A patch value about to be stored as is: drops objects carrying a
/// `$patch` directive, other directive keys and nulls (upstream decodes the
/// result into Go structs, which drops them the same way). None: nothing
/// is left to store.
fn clean(v: Value) -> Option<Value> {
    match v {
        Value::Null => None,
        Value::Object(m) if m.contains_key(DIRECTIVE) => None,
        Value::Object(m) => Some(Value::Object(clean_map(m))),
        Value::Array(a) => Some(Value::Array(clean_list(a))),
        other => Some(other),
    }
}

fn clean_map(m: Map<String, Value>) -> Map<String, Value> {
    m.into_iter()
        .filter(|(k, _)| {
            k != RETAIN_KEYS && !k.starts_with(SET_ORDER) && !k.starts_with(DELETE_FROM)
        })
        .filter_map(|(k, v)| clean(v).map(|v| (k, v)))
        .collect()
}

fn clean_list(a: Vec<Value>) -> Vec<Value> {
    a.into_iter().filter_map(clean).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::patch::{json_patch, merge_patch};
    use serde_json::json;

    const DEPLOY: &str = "io.k8s.api.apps.v1.Deployment";
    const SVC: &str = "io.k8s.api.core.v1.Service";

    fn deploy() -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web", "labels": {"a": "1", "b": "2"}, "finalizers": ["x"]},
            "spec": {"replicas": 1, "template": {"spec": {"containers": [
                {"name": "web", "image": "nginx:1", "ports": [{"containerPort": 80}],
                 "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "args": ["a", "b"]},
                {"name": "side", "image": "busybox"}
            ], "tolerations": [{"key": "k"}]}}}})
    }

    fn smp(target: &Value, patch: Value, def: &str) -> Value {
        strategic_merge_patch(target, &patch, def).unwrap()
    }

    #[test]
    fn changes_one_container_by_name_keeping_its_ports() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web", "image": "nginx:2"}]}}}}),
            DEPLOY,
        );
        let cs = &out["spec"]["template"]["spec"]["containers"];
        assert_eq!(cs[0]["image"], "nginx:2");
        assert_eq!(cs[0]["ports"], json!([{"containerPort": 80}]));
        assert_eq!(cs[0]["env"][1]["name"], "B");
        assert_eq!(cs[1], json!({"name": "side", "image": "busybox"}));
    }

    #[test]
    fn env_add_and_delete_as_kubectl_apply_sends_them() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "web",
                "$setElementOrder/env": [{"name": "B"}, {"name": "C"}],
                "env": [{"name": "C", "value": "3"}, {"$patch": "delete", "name": "A"}],
                "args": ["z"]}]}}}}),
            DEPLOY,
        );
        let c = &out["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(
            c["env"],
            json!([{"name": "B", "value": "2"}, {"name": "C", "value": "3"}])
        );
        // args has no patch strategy: replaced.
        assert_eq!(c["args"], json!(["z"]));
        assert!(c.get("$setElementOrder/env").is_none());
    }

    #[test]
    fn new_items_without_order_lead_like_upstream() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {"containers": [{"name": "new", "image": "x"}]}}}}),
            DEPLOY,
        );
        let names: Vec<&str> = out["spec"]["template"]["spec"]["containers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["name"].as_str().unwrap())
            .collect();
        assert_eq!(names, ["new", "web", "side"]);
    }

    #[test]
    fn remove_container_with_order_and_delete() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}],
            "containers": [{"$patch": "delete", "name": "web"}]}}}}),
            DEPLOY,
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"],
            json!([{"name": "side", "image": "busybox"}])
        );
    }

    #[test]
    fn set_element_order_alone_reorders() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "side"}, {"name": "web"}]}}}}),
            DEPLOY,
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][0]["name"],
            "side"
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["containers"][1]["name"],
            "web"
        );
    }

    #[test]
    fn order_mismatch_is_rejected_naming_the_path() {
        let e = strategic_merge_patch(
            &deploy(),
            &json!({"spec": {"template": {"spec": {
            "$setElementOrder/containers": [{"name": "web"}, {"name": "side"}],
            "containers": [{"name": "side", "image": "a"}, {"name": "web", "image": "b"}]}}}}),
            DEPLOY,
        )
        .unwrap_err();
        assert!(
            e.to_string().starts_with(".spec.template.spec.containers:"),
            "{e}"
        );
    }

    #[test]
    fn null_removes_labels_and_finalizers_merge_as_a_set() {
        let out = smp(
            &deploy(),
            json!({"metadata": {"labels": {"a": null, "c": "3"}, "finalizers": ["y"]}}),
            DEPLOY,
        );
        assert_eq!(out["metadata"]["labels"], json!({"b": "2", "c": "3"}));
        assert_eq!(out["metadata"]["finalizers"], json!(["y", "x"]));
        let out = smp(
            &deploy(),
            json!({"metadata": {"$deleteFromPrimitiveList/finalizers": ["x"], "finalizers": ["y"]}}),
            DEPLOY,
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["y"]));
        let out = smp(
            &deploy(),
            json!({"metadata": {
            "$setElementOrder/finalizers": ["x", "y"], "finalizers": ["y"]}}),
            DEPLOY,
        );
        assert_eq!(out["metadata"]["finalizers"], json!(["x", "y"]));
    }

    #[test]
    fn lists_without_strategy_are_replaced() {
        let out = smp(
            &deploy(),
            json!({"spec": {"template": {"spec": {"tolerations": [{"key": "z"}]}}}}),
            DEPLOY,
        );
        assert_eq!(
            out["spec"]["template"]["spec"]["tolerations"],
            json!([{"key": "z"}])
        );
    }

    #[test]
    fn service_ports_merge_by_port_and_selector_merges() {
        let svc = json!({"spec": {"ports": [{"port": 80, "targetPort": 8080}, {"port": 443}], "selector": {"a": "b", "c": "d"}}});
        let out = smp(
            &svc,
            json!({"spec": {"ports": [{"port": 80, "targetPort": 9090}], "selector": {"a": "x"}}}),
            SVC,
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 80, "targetPort": 9090}, {"port": 443}])
        );
        // Strategic merge patch ignores mapType: maps merge key by key.
        assert_eq!(out["spec"]["selector"], json!({"a": "x", "c": "d"}));
        let out = smp(
            &svc,
            json!({"spec": {"ports": [{"port": 443, "$patch": "delete"}, {"port": 8443}]}}),
            SVC,
        );
        assert_eq!(
            out["spec"]["ports"],
            json!([{"port": 8443}, {"port": 80, "targetPort": 8080}])
        );
    }

    #[test]
    fn replace_directives() {
        let svc = json!({"spec": {"ports": [{"port": 80}], "type": "ClusterIP"}});
        let out = smp(
            &svc,
            json!({"spec": {"$patch": "replace", "ports": [{"port": 1}]}}),
            SVC,
        );
        assert_eq!(out["spec"], json!({"ports": [{"port": 1}]}));
        let out = smp(
            &svc,
            json!({"spec": {"ports": [{"port": 2}, {"$patch": "replace"}]}}),
            SVC,
        );
        assert_eq!(out["spec"]["ports"], json!([{"port": 2}]));
        let out = smp(&svc, json!({"spec": {"$patch": "delete"}}), SVC);
        assert_eq!(out["spec"], json!({}));
    }

    #[test]
    fn retain_keys_clears_the_other_strategy() {
        let d = json!({"spec": {"strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1}}}});
        let out = smp(
            &d,
            json!({"spec": {"strategy": {"$retainKeys": ["type"], "type": "Recreate"}}}),
            DEPLOY,
        );
        assert_eq!(out["spec"]["strategy"], json!({"type": "Recreate"}));
        let bad = json!({"spec": {"strategy": {"$retainKeys": ["type"], "rollingUpdate": {}}}});
        assert!(strategic_merge_patch(&d, &bad, DEPLOY).is_err());
    }

    #[test]
    fn volumes_merge_by_name_and_new_items_lose_directives() {
        let pod = json!({"spec": {"volumes": [{"name": "a", "emptyDir": {}}]}});
        let out = smp(
            &pod,
            json!({"spec": {"volumes": [
            {"name": "a", "$retainKeys": ["name", "configMap"], "configMap": {"name": "cm"}},
            {"name": "b", "$retainKeys": ["name", "secret"], "secret": {"secretName": "s"}}]}}),
            "io.k8s.api.core.v1.Pod",
        );
        assert_eq!(
            out["spec"]["volumes"],
            json!([
            {"name": "a", "configMap": {"name": "cm"}},
            {"name": "b", "secret": {"secretName": "s"}}])
        );
    }

    #[test]
    fn missing_merge_key_is_an_error() {
        let e = strategic_merge_patch(
            &deploy(),
            &json!({"spec": {"template": {"spec": {"containers": [{"image": "x"}]}}}}),
            DEPLOY,
        )
        .unwrap_err();
        assert!(e.to_string().contains("merge key name"), "{e}");
        assert!(strategic_merge_patch(&deploy(), &json!([1]), DEPLOY).is_err());
    }

    #[test]
    fn unknown_fields_behave_like_merge_patch() {
        let t = json!({"x": {"a": 1, "b": [1, 2]}, "y": 1});
        let p = json!({"x": {"a": null, "b": [3], "c": {"d": null, "e": 1}}});
        assert_eq!(smp(&t, p.clone(), "no.such.Def"), merge_patch(&t, &p));
    }

    #[test]
    fn json_and_merge_patches() {
        let d = json!({"a": {"b": 1}});
        assert_eq!(
            merge_patch(&d, &json!({"a": {"c": 2}})),
            json!({"a": {"b": 1, "c": 2}})
        );
        assert_eq!(merge_patch(&d, &json!({"a": null})), json!({}));
        assert_eq!(
            json_patch(&d, br#"[{"op":"replace","path":"/a/b","value":5}]"#).unwrap(),
            json!({"a": {"b": 5}})
        );
        let e = json_patch(&d, br#"[{"op":"test","path":"/a/b","value":9}]"#).unwrap_err();
        assert!(e.to_string().contains("/a/b"), "{e}");
        assert!(json_patch(&d, b"{").is_err());
    }
}
