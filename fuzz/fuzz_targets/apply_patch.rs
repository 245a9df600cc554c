//! Patch application must never panic, whatever the document and patch.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First half: target document; second half: patch.
    let mid = data.len() / 2;
    let (a, b) = data.split_at(mid);
    let Ok(target) = serde_json::from_slice::<serde_json::Value>(a) else { return };
    let _ = api::patch::json_patch(&target, b);
    if let Ok(patch) = serde_json::from_slice::<serde_json::Value>(b) {
        let _ = api::patch::merge_patch(&target, &patch);
        for def in ["io.k8s.api.apps.v1.Deployment", "io.k8s.api.core.v1.Pod", "io.k8s.api.core.v1.Service"] {
            let _ = api::patch::strategic_merge_patch(&target, &patch, def);
        }
    }
});
