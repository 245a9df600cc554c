//! The `field.Error` formatting selectors need, over the shared name
//! checks in [`crate::validation`] (upstream's `IsQualifiedName` and
//! `IsValidLabelValue`, messages word for word).

/// Upstream's `IsQualifiedName`: the problems with a label key, if any.
pub fn qualified_name_errors(value: &str) -> Vec<String> {
    crate::validation::is_qualified_name(value)
}

/// Upstream's `IsValidLabelValue`: the problems with a label value, if any.
pub fn label_value_errors(value: &str) -> Vec<String> {
    crate::validation::is_valid_label_value(value)
}

/// Upstream's `field.Invalid(path, value, detail).Error()` for a string
/// value; a nil path prints as `<nil>`, exactly as upstream's does.
pub fn invalid(path: &str, value: &str, detail: &str) -> String {
    format!("{path}: Invalid value: {value:?}: {detail}")
}

/// The same for a list value, which upstream prints with Go's `%#v`.
pub fn invalid_list(path: &str, values: &[String], detail: &str) -> String {
    let items: Vec<String> = values.iter().map(|v| format!("{v:?}")).collect();
    format!(
        "{path}: Invalid value: []string{{{}}}: {detail}",
        items.join(", ")
    )
}

/// Upstream's `utilerrors.NewAggregate(...).Error()`: one message alone,
/// several de-duplicated inside brackets.
pub fn aggregate(errs: Vec<String>) -> Option<String> {
    let mut seen: Vec<String> = Vec::new();
    for e in errs {
        if !seen.contains(&e) {
            seen.push(e);
        }
    }
    match seen.len() {
        0 => None,
        1 => seen.pop(),
        _ => Some(format!("[{}]", seen.join(", "))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn qualified_names() {
        for ok in ["a", "A1", "a.b-c_d", "example.com/a", "k8s.io/MyName"] {
            assert!(qualified_name_errors(ok).is_empty(), "{ok}");
        }
        for bad in [
            "",
            "-a",
            "a-",
            "/a",
            "a/",
            "A.com/a",
            "a/b/c",
            &"x".repeat(64),
        ] {
            assert!(!qualified_name_errors(bad).is_empty(), "{bad}");
        }
        assert_eq!(
            qualified_name_errors("-a"),
            vec![
                "name part must consist of alphanumeric characters, '-', '_' or '.', and must start and end with an alphanumeric character (e.g. 'MyName',  or 'my.name',  or '123-abc', regex used for validation is '([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]')"
            ]
        );
    }

    #[test]
    fn label_values() {
        assert!(label_value_errors("").is_empty());
        assert!(label_value_errors("a_b.c-1").is_empty());
        assert_eq!(label_value_errors("-a").len(), 1);
        assert_eq!(label_value_errors(&format!("-{}", "a".repeat(63))).len(), 2);
    }
}
