//! Converting custom objects between versions: `None` (only apiVersion
//! changes) or a conversion webhook (`ConversionReview`, as upstream's
//! webhook converter: one request per batch, the converted objects'
//! metadata kept but for labels and annotations).

use std::time::Duration;

use serde_json::{Value, json};
use store::SharedStore;

use super::Served;
use crate::error::ApiError;

/// Converts every object of `objs` not at `desired` (an apiVersion).
pub async fn convert(
    store: &SharedStore,
    served: &Served,
    objs: &mut [Value],
    desired: &str,
) -> Result<(), ApiError> {
    let pending: Vec<usize> = (0..objs.len())
        .filter(|i| objs[*i]["apiVersion"].as_str() != Some(desired))
        .collect();
    if pending.is_empty() {
        return Ok(());
    }
    let def = &served.strategy.definition;
    let Some(webhook) = def.webhook.as_ref() else {
        for i in pending {
            objs[i]["apiVersion"] = json!(desired);
        }
        return Ok(());
    };
    let info = served.info;
    let failed = |why: String| {
        ApiError::internal(format!(
            "conversion webhook for {}, Kind={} failed: {why}",
            desired, info.kind
        ))
    };
    let uid = uuid::Uuid::new_v4().to_string();
    let review = json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "ConversionReview",
        "request": {
            "uid": uid,
            "desiredAPIVersion": desired,
            "objects": pending.iter().map(|i| objs[*i].clone()).collect::<Vec<_>>(),
        },
    });
    let answer = crate::backend::post(
        store,
        &webhook["clientConfig"],
        &review,
        Duration::from_secs(30),
    )
    .await
    .map_err(|e| failed(e.0))?;
    let resp = &answer["response"];
    if resp["uid"].as_str() != Some(uid.as_str()) {
        return Err(failed(format!(
            "expected response uid {uid:?}, got {}",
            resp["uid"]
        )));
    }
    if resp["result"]["status"].as_str() != Some("Success") {
        return Err(failed(
            resp["result"]["message"]
                .as_str()
                .unwrap_or("the webhook reported a failure")
                .to_string(),
        ));
    }
    let converted = resp["convertedObjects"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    if converted.len() != pending.len() {
        return Err(failed(format!(
            "expected {} converted objects, got {}",
            pending.len(),
            converted.len()
        )));
    }
    for (i, mut c) in pending.into_iter().zip(converted) {
        if c["apiVersion"].as_str() != Some(desired) {
            return Err(failed(format!(
                "invalid apiVersion {} in a converted object, expected {desired}",
                c["apiVersion"]
            )));
        }
        // The webhook may change labels and annotations only.
        let mut meta = objs[i]["metadata"].clone();
        for k in ["labels", "annotations"] {
            match c["metadata"].get(k) {
                Some(v) => meta[k] = v.clone(),
                None => {
                    if let Some(m) = meta.as_object_mut() {
                        m.remove(k);
                    }
                }
            }
        }
        c["metadata"] = meta;
        objs[i] = c;
    }
    Ok(())
}
