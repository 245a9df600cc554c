//! Field sets: which fields of an object a manager owns, in upstream's
//! `FieldsV1` encoding (`f:name`, `k:{"key":"value"}`, `v:"value"`, `.`).
//! The basis of managedFields and server-side apply.

use std::collections::BTreeSet;

use serde_json::{Map, Value, json};

/// How the items of a list are identified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum ListKind {
    /// Replaced as a whole.
    Atomic,
    /// A set of scalars.
    Set,
    /// A map keyed by these item fields.
    Map(Vec<String>),
}

/// The structural facts about a position in an object that field sets and
/// apply need. Implemented over the OpenAPI schema.
pub trait Shape: Sized {
    /// The shape of field `name` of an object here.
    fn field(&self, name: &str) -> Self;
    /// The shape of list items or map values here.
    fn item(&self) -> Self;
    /// How a list here is merged.
    fn list_kind(&self) -> ListKind;
    /// Whether a map here is replaced as a whole.
    fn atomic_map(&self) -> bool;
}

/// One step of a field path.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub enum Step {
    /// A map field.
    Field(String),
    /// A list item identified by its key fields (JSON object, keys sorted).
    Key(String),
    /// A set item identified by its value (JSON).
    Value(String),
}

impl Step {
    fn encode(&self) -> String {
        match self {
            Step::Field(f) => format!("f:{f}"),
            Step::Key(k) => format!("k:{k}"),
            Step::Value(v) => format!("v:{v}"),
        }
    }

    fn decode(s: &str) -> Option<Step> {
        let (p, rest) = s.split_at_checked(2)?;
        match p {
            "f:" => Some(Step::Field(rest.to_string())),
            "k:" => Some(Step::Key(rest.to_string())),
            "v:" => Some(Step::Value(rest.to_string())),
            _ => None,
        }
    }
}

/// A field path.
pub type Path = Vec<Step>;

/// A set of owned paths. A path to a list item or map marks the node itself
/// (FieldsV1's `.`); leaves are scalars and atomic values.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FieldSet(pub BTreeSet<Path>);

/// Fields the server owns and no manager records.
fn ignored_top(path: &[Step]) -> bool {
    match path {
        [Step::Field(f)] => matches!(f.as_str(), "apiVersion" | "kind"),
        [Step::Field(m), Step::Field(f), ..] if m == "metadata" => matches!(
            f.as_str(),
            "name"
                | "namespace"
                | "uid"
                | "resourceVersion"
                | "generation"
                | "creationTimestamp"
                | "managedFields"
                | "selfLink"
                | "deletionTimestamp"
                | "deletionGracePeriodSeconds"
                | "generateName"
        ),
        _ => false,
    }
}

/// The key identifying a list-map item, as FieldsV1 spells it.
fn item_key(item: &Value, keys: &[String]) -> Option<String> {
    let mut m = Map::new();
    for k in keys {
        match item.get(k) {
            Some(v) => {
                m.insert(k.clone(), v.clone());
            }
            // Upstream's schema defaults `protocol` so that a port applied
            // without it keys the same as the defaulted live port.
            None if k == "protocol" => {
                m.insert(k.clone(), Value::String("TCP".into()));
            }
            None => {}
        }
    }
    if m.is_empty() {
        return None;
    }
    let mut sorted: Vec<_> = m.into_iter().collect();
    sorted.sort_by(|a, b| a.0.cmp(&b.0));
    Some(Value::Object(sorted.into_iter().collect()).to_string())
}

impl FieldSet {
    /// The fields present in `obj`.
    pub fn of<S: Shape>(obj: &Value, shape: &S) -> FieldSet {
        let mut set = BTreeSet::new();
        walk(obj, shape, &mut Vec::new(), &mut set);
        set.retain(|p| !p.is_empty() && !ignored_top(p));
        FieldSet(set)
    }

    /// Union.
    pub fn union(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.union(&other.0).cloned().collect())
    }

    /// Difference.
    pub fn minus(&self, other: &FieldSet) -> FieldSet {
        FieldSet(self.0.difference(&other.0).cloned().collect())
    }

    /// Whether `p` or an ancestor of `p` is owned.
    pub fn covers(&self, p: &Path) -> bool {
        (1..=p.len()).any(|n| self.0.contains(&p[..n]))
    }

    /// The FieldsV1 JSON.
    pub fn to_fields_v1(&self) -> Value {
        let mut root = Map::new();
        for path in &self.0 {
            let mut node = &mut root;
            for (i, step) in path.iter().enumerate() {
                let entry = node.entry(step.encode()).or_insert_with(|| json!({}));
                let Some(m) = entry.as_object_mut() else {
                    break;
                };
                if i + 1 == path.len() && matches!(step, Step::Key(_)) {
                    m.insert(".".into(), json!({}));
                }
                node = m;
            }
        }
        Value::Object(root)
    }

    /// Parses FieldsV1 JSON (leaves and `.` markers become paths).
    pub fn from_fields_v1(v: &Value) -> FieldSet {
        let mut set = BTreeSet::new();
        fn rec(v: &Value, path: &mut Path, set: &mut BTreeSet<Path>) {
            let Some(m) = v.as_object() else { return };
            if (m.is_empty() || m.contains_key(".")) && !path.is_empty() {
                set.insert(path.clone());
            }
            for (k, child) in m {
                if k == "." {
                    continue;
                }
                if let Some(step) = Step::decode(k) {
                    path.push(step);
                    rec(child, path, set);
                    path.pop();
                }
            }
        }
        rec(v, &mut Vec::new(), &mut set);
        FieldSet(set)
    }
}

fn walk<S: Shape>(v: &Value, shape: &S, path: &mut Path, set: &mut BTreeSet<Path>) {
    match v {
        Value::Object(m) if !shape.atomic_map() && !m.is_empty() => {
            for (k, child) in m {
                if child.is_null() {
                    continue;
                }
                path.push(Step::Field(k.clone()));
                walk(child, &shape.field(k), path, set);
                path.pop();
            }
        }
        Value::Array(items) => match shape.list_kind() {
            ListKind::Map(keys) => {
                let item_shape = shape.item();
                for item in items {
                    match item_key(item, &keys) {
                        Some(k) => {
                            path.push(Step::Key(k));
                            set.insert(path.clone());
                            walk(item, &item_shape, path, set);
                            path.pop();
                        }
                        None => {
                            set.insert(path.clone());
                        }
                    }
                }
            }
            ListKind::Set => {
                for item in items {
                    path.push(Step::Value(item.to_string()));
                    set.insert(path.clone());
                    path.pop();
                }
            }
            ListKind::Atomic => {
                set.insert(path.clone());
            }
        },
        _ => {
            set.insert(path.clone());
        }
    }
}

/// The value at `path`, if present.
pub fn get<'a, S: Shape>(obj: &'a Value, path: &[Step], shape: &S) -> Option<&'a Value> {
    let Some((first, rest)) = path.split_first() else {
        return Some(obj);
    };
    match first {
        Step::Field(f) => get(obj.get(f)?, rest, &shape.field(f)),
        Step::Key(k) => {
            let ListKind::Map(keys) = shape.list_kind() else {
                return None;
            };
            let item = obj
                .as_array()?
                .iter()
                .find(|i| item_key(i, &keys).as_deref() == Some(k))?;
            get(item, rest, &shape.item())
        }
        Step::Value(v) => obj.as_array()?.iter().find(|i| i.to_string() == *v),
    }
}

/// Removes the field or item at `path` from `obj`.
pub fn remove<S: Shape>(obj: &mut Value, path: &[Step], shape: &S) {
    let Some((first, rest)) = path.split_first() else {
        return;
    };
    match first {
        Step::Field(f) => {
            if rest.is_empty() {
                if let Some(m) = obj.as_object_mut() {
                    m.remove(f);
                }
            } else if let Some(child) = obj.get_mut(f) {
                remove(child, rest, &shape.field(f));
            }
        }
        Step::Key(k) => {
            let ListKind::Map(keys) = shape.list_kind() else {
                return;
            };
            let Some(items) = obj.as_array_mut() else {
                return;
            };
            if rest.is_empty() {
                items.retain(|i| item_key(i, &keys).as_deref() != Some(k));
            } else if let Some(item) = items
                .iter_mut()
                .find(|i| item_key(i, &keys).as_deref() == Some(k))
            {
                remove(item, rest, &shape.item());
            }
        }
        Step::Value(v) => {
            if let Some(items) = obj.as_array_mut() {
                items.retain(|i| i.to_string().as_str() != v.as_str());
            }
        }
    }
}

/// Merges `applied` into `live` as apply does: maps field by field, keyed
/// lists item by item, sets by union, everything else replaced.
pub fn merge<S: Shape>(live: &Value, applied: &Value, shape: &S) -> Value {
    match (live, applied) {
        (Value::Object(l), Value::Object(a)) if !shape.atomic_map() => {
            let mut out = l.clone();
            for (k, av) in a {
                if av.is_null() {
                    continue;
                }
                let merged = match l.get(k) {
                    Some(lv) => merge(lv, av, &shape.field(k)),
                    None => av.clone(),
                };
                out.insert(k.clone(), merged);
            }
            Value::Object(out)
        }
        (Value::Array(l), Value::Array(a)) => match shape.list_kind() {
            ListKind::Map(keys) => {
                let item_shape = shape.item();
                let mut out = l.clone();
                for ai in a {
                    let key = item_key(ai, &keys);
                    match out
                        .iter_mut()
                        .find(|li| key.is_some() && item_key(li, &keys) == key)
                    {
                        Some(li) => *li = merge(li, ai, &item_shape),
                        None => out.push(ai.clone()),
                    }
                }
                Value::Array(out)
            }
            ListKind::Set => {
                let mut out = l.clone();
                for ai in a {
                    if !out.contains(ai) {
                        out.push(ai.clone());
                    }
                }
                Value::Array(out)
            }
            ListKind::Atomic => applied.clone(),
        },
        _ => applied.clone(),
    }
}

/// The leaf paths whose values differ between `old` and `new` (including
/// added and removed ones): what an update changed.
pub fn changed<S: Shape>(old: &Value, new: &Value, shape: &S) -> FieldSet {
    let a = FieldSet::of(old, shape);
    let b = FieldSet::of(new, shape);
    let mut out = BTreeSet::new();
    for p in b.0.iter() {
        if get(old, p, shape) != get(new, p, shape) {
            out.insert(p.clone());
        }
    }
    for p in a.0.difference(&b.0) {
        out.insert(p.clone());
    }
    FieldSet(out)
}

/// Renders a path as upstream prints it in conflict messages, e.g.
/// `.spec.containers[name="web"].image`.
pub fn render(path: &[Step]) -> String {
    let mut s = String::new();
    for step in path {
        match step {
            Step::Field(f) => {
                s.push('.');
                s.push_str(f);
            }
            Step::Key(k) => {
                let parts: Vec<String> = serde_json::from_str::<Map<String, Value>>(k)
                    .map(|m| m.iter().map(|(k, v)| format!("{k}={v}")).collect())
                    .unwrap_or_default();
                s.push_str(&format!("[{}]", parts.join(",")));
            }
            Step::Value(v) => s.push_str(&format!("[={v}]")),
        }
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A toy shape: `containers` is keyed by name, `finalizers` a set.
    #[derive(Clone)]
    struct Toy(&'static str);
    impl Shape for Toy {
        fn field(&self, name: &str) -> Toy {
            match name {
                "containers" => Toy("containers"),
                "finalizers" => Toy("finalizers"),
                _ => Toy(""),
            }
        }
        fn item(&self) -> Toy {
            Toy("")
        }
        fn list_kind(&self) -> ListKind {
            match self.0 {
                "containers" => ListKind::Map(vec!["name".into()]),
                "finalizers" => ListKind::Set,
                _ => ListKind::Atomic,
            }
        }
        fn atomic_map(&self) -> bool {
            false
        }
    }

    #[test]
    fn fields_v1_roundtrip() {
        let obj = json!({"apiVersion": "v1", "metadata": {"name": "x", "labels": {"a": "1"}, "finalizers": ["f"]},
            "spec": {"containers": [{"name": "c", "image": "i", "args": ["a"]}]}});
        let set = FieldSet::of(&obj, &Toy(""));
        let v1 = set.to_fields_v1();
        assert_eq!(v1["f:metadata"]["f:labels"]["f:a"], json!({}));
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["."],
            json!({})
        );
        assert_eq!(
            v1["f:spec"]["f:containers"]["k:{\"name\":\"c\"}"]["f:args"],
            json!({})
        );
        assert!(v1.get("f:apiVersion").is_none());
        assert!(v1["f:metadata"].get("f:name").is_none());
        assert_eq!(FieldSet::from_fields_v1(&v1), set);
    }

    #[test]
    fn merge_and_remove_by_key() {
        let live = json!({"spec": {"containers": [{"name": "a", "image": "1"}, {"name": "b", "image": "2"}]}});
        let applied = json!({"spec": {"containers": [{"name": "b", "image": "3"}]}});
        let m = merge(&live, &applied, &Toy(""));
        assert_eq!(m["spec"]["containers"][1]["image"], "3");
        assert_eq!(m["spec"]["containers"][0]["image"], "1");
        let mut m2 = m.clone();
        let p = vec![
            Step::Field("spec".into()),
            Step::Field("containers".into()),
            Step::Key("{\"name\":\"a\"}".into()),
        ];
        remove(&mut m2, &p, &Toy(""));
        assert_eq!(m2["spec"]["containers"].as_array().map(Vec::len), Some(1));
        assert_eq!(render(&p), ".spec.containers[name=\"a\"]");
    }

    #[test]
    fn changed_fields() {
        let a = json!({"spec": {"replicas": 1, "x": 1}});
        let b = json!({"spec": {"replicas": 2, "y": 1}});
        let c = changed(&a, &b, &Toy(""));
        let rendered: Vec<String> = c.0.iter().map(|p| render(p)).collect();
        assert_eq!(rendered, vec![".spec.replicas", ".spec.x", ".spec.y"]);
    }
}
