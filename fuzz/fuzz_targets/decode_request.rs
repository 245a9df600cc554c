//! Request decoding must never panic: bodies in JSON or YAML, decoded and
//! then normalised through the typed model of every kind.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let (ct, body) = match data.split_first() {
        Some((b, rest)) if b % 2 == 0 => ("application/json", rest),
        Some((_, rest)) => ("application/yaml", rest),
        None => return,
    };
    let Ok(obj) = apiserver::http::decode_body(body, ct) else { return };
    for info in api::catalogue::RESOURCES {
        if let Some(Ok(norm)) = api::strategy::typed::normalize(info, &obj) {
            let _ = api::strategy::typed::unknown_fields(&obj, &norm);
        }
        let mut o = obj.clone();
        api::strategy::defaults::apply(info.group, info.plural, &mut o);
        let _ = api::strategy::validate::validate(info, &o);
    }
});
