//! managedFields and server-side apply, on top of field sets.
//!
//! Every write records which manager set which fields. An apply merges the
//! manager's configuration into the live object, fails with a conflict when
//! it would change a field another manager owns (unless forced), and removes
//! fields the manager applied before but no longer does, when nobody else
//! owns them.

use serde_json::{Value, json};

use crate::error::{ApiError, Cause};
use crate::fieldset::{self, FieldSet, Shape};

/// One managedFields entry.
#[derive(Debug, Clone)]
struct Entry {
    manager: String,
    operation: String,
    api_version: String,
    time: String,
    subresource: Option<String>,
    fields: FieldSet,
}

impl Entry {
    fn parse(v: &Value) -> Option<Entry> {
        Some(Entry {
            manager: v["manager"].as_str()?.to_string(),
            operation: v["operation"].as_str().unwrap_or("Update").to_string(),
            api_version: v["apiVersion"].as_str().unwrap_or("").to_string(),
            time: v["time"].as_str().unwrap_or("").to_string(),
            subresource: v["subresource"].as_str().map(str::to_string),
            fields: FieldSet::from_fields_v1(&v["fieldsV1"]),
        })
    }

    fn render(&self) -> Value {
        let mut v = json!({
            "manager": self.manager,
            "operation": self.operation,
            "apiVersion": self.api_version,
            "time": self.time,
            "fieldsType": "FieldsV1",
            "fieldsV1": self.fields.to_fields_v1(),
        });
        if let Some(s) = &self.subresource {
            v["subresource"] = json!(s);
        }
        v
    }

    fn is(&self, manager: &str, operation: &str, subresource: Option<&str>) -> bool {
        self.manager == manager
            && self.operation == operation
            && self.subresource.as_deref() == subresource
    }
}

fn entries_of(obj: Option<&Value>) -> Vec<Entry> {
    obj.and_then(|o| o["metadata"]["managedFields"].as_array())
        .map(|a| a.iter().filter_map(Entry::parse).collect())
        .unwrap_or_default()
}

fn store_entries(obj: &mut Value, entries: Vec<Entry>) {
    let list: Vec<Value> = entries
        .iter()
        .filter(|e| !e.fields.0.is_empty())
        .map(Entry::render)
        .collect();
    if list.is_empty() {
        if let Some(m) = obj["metadata"].as_object_mut() {
            m.remove("managedFields");
        }
    } else {
        obj["metadata"]["managedFields"] = Value::Array(list);
    }
}

fn without_meta_noise(v: &Value) -> Value {
    let mut v = v.clone();
    if let Some(m) = v["metadata"].as_object_mut() {
        m.remove("managedFields");
        m.remove("resourceVersion");
    }
    v
}

/// Records an ordinary (non-apply) write by `manager`: it now owns what it
/// changed, and other managers lose those fields.
pub fn record_update<S: Shape>(
    old: Option<&Value>,
    new: &mut Value,
    manager: &str,
    api_version: &str,
    subresource: Option<&str>,
    shape: &S,
) {
    let mut entries = entries_of(old);
    let new_clean = without_meta_noise(new);
    let changed = match old {
        Some(o) => fieldset::changed(&without_meta_noise(o), &new_clean, shape),
        None => FieldSet::of(&new_clean, shape),
    };
    let present = FieldSet::of(&new_clean, shape);
    if changed.0.is_empty() && old.is_some() {
        store_entries(new, entries);
        return;
    }
    for e in entries.iter_mut() {
        e.fields = FieldSet(e.fields.0.intersection(&present.0).cloned().collect()).minus(&changed);
    }
    let now = crate::objects::now_rfc3339();
    let mine = FieldSet(changed.0.intersection(&present.0).cloned().collect());
    match entries
        .iter_mut()
        .find(|e| e.is(manager, "Update", subresource))
    {
        Some(e) => {
            e.fields = e.fields.union(&mine);
            e.time = now;
            e.api_version = api_version.to_string();
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Update".into(),
            api_version: api_version.to_string(),
            time: now,
            subresource: subresource.map(str::to_string),
            fields: mine,
        }),
    }
    store_entries(new, entries);
}

/// Server-side apply of `applied` by `manager` onto `live` (None: create).
/// Returns the object to store, with managedFields updated.
pub fn apply<S: Shape>(
    live: Option<&Value>,
    applied: &Value,
    manager: &str,
    force: bool,
    subresource: Option<&str>,
    shape: &S,
) -> Result<Value, ApiError> {
    let api_version = applied["apiVersion"].as_str().unwrap_or("").to_string();
    let applied_clean = without_meta_noise(applied);
    let new_set = FieldSet::of(&applied_clean, shape);
    let mut entries = entries_of(live);
    let old_set = entries
        .iter()
        .find(|e| e.is(manager, "Apply", subresource))
        .map(|e| e.fields.clone())
        .unwrap_or_default();
    let mut merged = match live {
        None => applied_clean.clone(),
        Some(live) => {
            let live_clean = without_meta_noise(live);
            // Conflicts: another manager owns a field this apply would change.
            let mut conflicts: Vec<(String, String, String)> = Vec::new();
            for e in entries
                .iter()
                .filter(|e| !e.is(manager, "Apply", subresource))
            {
                for p in new_set.0.intersection(&e.fields.0) {
                    let before = fieldset::get(&live_clean, p, shape);
                    let after = fieldset::get(&applied_clean, p, shape);
                    let is_container = before.is_some_and(|v| v.is_object());
                    if before != after && !is_container {
                        conflicts.push((
                            e.manager.clone(),
                            e.api_version.clone(),
                            fieldset::render(p),
                        ));
                    }
                }
            }
            if !conflicts.is_empty() && !force {
                return Err(conflict_error(&conflicts));
            }
            if force {
                for e in entries
                    .iter_mut()
                    .filter(|e| !e.is(manager, "Apply", subresource))
                {
                    let lost: Vec<_> = e
                        .fields
                        .0
                        .iter()
                        .filter(|p| {
                            new_set.0.contains(*p)
                                && fieldset::get(&live_clean, p, shape)
                                    != fieldset::get(&applied_clean, p, shape)
                        })
                        .cloned()
                        .collect();
                    for p in lost {
                        e.fields.0.remove(&p);
                    }
                }
            }
            let mut merged = fieldset::merge(&live_clean, &applied_clean, shape);
            // Fields this manager stopped applying go away unless someone
            // else owns them too.
            for p in old_set.minus(&new_set).0.iter().rev() {
                let owned_elsewhere = entries
                    .iter()
                    .filter(|e| !e.is(manager, "Apply", subresource))
                    .any(|e| e.fields.covers(p));
                if !owned_elsewhere {
                    fieldset::remove(&mut merged, p, shape);
                }
            }
            merged
        }
    };
    let now = crate::objects::now_rfc3339();
    match entries
        .iter_mut()
        .find(|e| e.is(manager, "Apply", subresource))
    {
        Some(e) => {
            if e.fields != new_set {
                e.time = now;
            }
            e.fields = new_set;
            e.api_version = api_version;
        }
        None => entries.push(Entry {
            manager: manager.to_string(),
            operation: "Apply".into(),
            api_version,
            time: now,
            subresource: subresource.map(str::to_string),
            fields: new_set,
        }),
    }
    if let Some(live) = live {
        // Keep identity metadata from the live object.
        for k in ["resourceVersion", "uid", "creationTimestamp"] {
            if let Some(v) = live["metadata"].get(k) {
                merged["metadata"][k] = v.clone();
            }
        }
    }
    store_entries(&mut merged, entries);
    Ok(merged)
}

fn conflict_error(conflicts: &[(String, String, String)]) -> ApiError {
    let n = conflicts.len();
    let message = if n == 1 {
        let (m, av, p) = &conflicts[0];
        format!("Apply failed with 1 conflict: conflict with \"{m}\" using {av}: {p}")
    } else {
        let lines: Vec<String> = conflicts
            .iter()
            .map(|(m, av, p)| format!("conflict with \"{m}\" using {av}: {p}"))
            .collect();
        format!("Apply failed with {n} conflicts: {}", lines.join("\n"))
    };
    let causes: Vec<Cause> = conflicts
        .iter()
        .map(|(m, av, p)| Cause {
            reason: "FieldManagerConflict".into(),
            message: format!("conflict with \"{m}\" using {av}"),
            field: p.clone(),
        })
        .collect();
    ApiError {
        code: 409,
        reason: "Conflict",
        message,
        details: Some(Box::new(json!({
            "causes": causes.iter().map(|c| json!({"type": c.reason, "message": c.message, "field": c.field})).collect::<Vec<_>>(),
        }))),
        causes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fieldset::ListKind;

    struct Flat;
    impl Shape for Flat {
        fn field(&self, _: &str) -> Flat {
            Flat
        }
        fn item(&self) -> Flat {
            Flat
        }
        fn list_kind(&self) -> ListKind {
            ListKind::Atomic
        }
        fn atomic_map(&self) -> bool {
            false
        }
    }

    #[test]
    fn apply_creates_updates_and_removes_own_fields() {
        let a1 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1", "b": "2"}});
        let o1 = apply(None, &a1, "me", false, None, &Flat).unwrap();
        assert_eq!(o1["metadata"]["managedFields"][0]["manager"], "me");
        assert_eq!(o1["metadata"]["managedFields"][0]["operation"], "Apply");
        let a2 = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "9"}});
        let o2 = apply(Some(&o1), &a2, "me", false, None, &Flat).unwrap();
        assert_eq!(o2["data"], json!({"a": "9"}));
    }

    #[test]
    fn apply_conflicts_with_other_manager_unless_forced() {
        let live = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        let mut stored = live.clone();
        record_update(None, &mut stored, "editor", "v1", None, &Flat);
        let applied = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "2"}});
        let err = apply(Some(&stored), &applied, "me", false, None, &Flat).unwrap_err();
        assert_eq!(err.code, 409);
        assert!(
            err.message.contains("conflict with \"editor\""),
            "{}",
            err.message
        );
        assert!(err.message.contains(".data.a"), "{}", err.message);
        let forced = apply(Some(&stored), &applied, "me", true, None, &Flat).unwrap();
        assert_eq!(forced["data"]["a"], "2");
        let managers: Vec<&str> = forced["metadata"]["managedFields"]
            .as_array()
            .unwrap()
            .iter()
            .filter_map(|e| e["manager"].as_str())
            .collect();
        assert_eq!(managers, vec!["me"]);
        // Same value: shared ownership, no conflict.
        let same = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}, "data": {"a": "1"}});
        assert!(apply(Some(&stored), &same, "me", false, None, &Flat).is_ok());
    }

    #[test]
    fn update_moves_ownership() {
        let mut o1 = json!({"metadata": {"name": "c"}, "data": {"a": "1", "b": "1"}});
        record_update(None, &mut o1, "one", "v1", None, &Flat);
        let mut o2 = o1.clone();
        o2["data"]["a"] = json!("2");
        record_update(Some(&o1), &mut o2, "two", "v1", None, &Flat);
        let mf = o2["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(mf.len(), 2, "{mf:?}");
        assert_eq!(mf[1]["manager"], "two");
        assert_eq!(
            mf[0]["fieldsV1"],
            json!({"f:data": {"f:b": {}}}),
            "one keeps only what two did not take"
        );
        assert_eq!(mf[1]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
    }
}
