//! YAML ⇄ JSON for the browser's editor. Both directions are pure
//! functions of the request body.

use bytes::Bytes;
use http::{Response, StatusCode};
use serde::Deserialize as _;
use serde_json::Value;

use crate::error;

/// YAML (one or more documents) to a JSON array of the documents; empty
/// documents are skipped, as kubectl does.
pub(crate) fn to_json(body: &Bytes) -> Response<Bytes> {
    let text = match std::str::from_utf8(body) {
        Ok(t) => t,
        Err(_) => return error(StatusCode::BAD_REQUEST, "the YAML is not UTF-8"),
    };
    let mut docs = Vec::new();
    for (i, doc) in serde_yaml_ng::Deserializer::from_str(text).enumerate() {
        match Value::deserialize(doc) {
            Ok(Value::Null) => {}
            Ok(v) => docs.push(v),
            Err(e) => {
                return error(StatusCode::BAD_REQUEST, &format!("document {}: {e}", i + 1));
            }
        }
    }
    crate::json(StatusCode::OK, &Value::Array(docs))
}

/// A JSON value to YAML text.
pub(crate) fn to_yaml(body: &Bytes) -> Response<Bytes> {
    let v: Value = match serde_json::from_slice(body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("not JSON: {e}")),
    };
    match serde_yaml_ng::to_string(&v) {
        Ok(y) => Response::builder()
            .status(StatusCode::OK)
            .header(http::header::CONTENT_TYPE, "application/yaml")
            .body(Bytes::from(y))
            .unwrap_or_default(),
        Err(e) => error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn several_documents_become_an_array() {
        let r = to_json(&Bytes::from_static(
            b"---\nkind: ConfigMap\ndata: {a: '1'}\n---\n---\nkind: Secret\n",
        ));
        assert_eq!(r.status(), 200);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert_eq!(v[0]["data"]["a"], "1");
        assert_eq!(v[1]["kind"], "Secret");
        assert_eq!(v.as_array().unwrap().len(), 2);
    }

    #[test]
    fn bad_yaml_names_the_document() {
        let r = to_json(&Bytes::from_static(b"a: 1\n---\nb: [\n"));
        assert_eq!(r.status(), 400);
        let v: Value = serde_json::from_slice(r.body()).unwrap();
        assert!(
            v["message"].as_str().unwrap().starts_with("document 2"),
            "{v}"
        );
    }

    #[test]
    fn json_round_trips_through_yaml() {
        let r = to_yaml(&Bytes::from_static(br#"{"b":{"c":[1,"x"]},"a":"01"}"#));
        let y = std::str::from_utf8(r.body()).unwrap();
        assert!(y.starts_with("b:"), "key order is kept: {y}");
        let back = to_json(&Bytes::from(y.to_string()));
        let v: Value = serde_json::from_slice(back.body()).unwrap();
        assert_eq!(
            v[0]["a"], "01",
            "a string that looks like a number stays a string"
        );
    }
}
