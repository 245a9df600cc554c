//! The browser assets, embedded at build time. They are plain ES modules
//! and CSS written without a build step, so a clean checkout builds the
//! console with `cargo` alone and the browser fetches nothing from
//! outside the server.

use bytes::Bytes;
use http::{Response, StatusCode, header};

/// Path (under `/ui`), content type, bytes.
const ASSETS: &[(&str, &str, &[u8])] = &[
    (
        "/",
        "text/html; charset=utf-8",
        include_bytes!("../assets/index.html"),
    ),
    (
        "/app.css",
        "text/css; charset=utf-8",
        include_bytes!("../assets/app.css"),
    ),
    ("/app.js", JS, include_bytes!("../assets/app.js")),
    ("/api.js", JS, include_bytes!("../assets/api.js")),
    ("/dom.js", JS, include_bytes!("../assets/dom.js")),
    ("/overview.js", JS, include_bytes!("../assets/overview.js")),
    (
        "/resources.js",
        JS,
        include_bytes!("../assets/resources.js"),
    ),
    ("/pod.js", JS, include_bytes!("../assets/pod.js")),
    ("/terminal.js", JS, include_bytes!("../assets/terminal.js")),
    ("/charts.js", JS, include_bytes!("../assets/charts.js")),
    (
        "/favicon.svg",
        "image/svg+xml",
        include_bytes!("../assets/favicon.svg"),
    ),
];

const JS: &str = "text/javascript; charset=utf-8";

/// The policy every console page runs under: nothing but this server, no
/// inline script, no framing by other sites.
const CSP: &str = "default-src 'self'; img-src 'self' data:; style-src 'self'; \
                   script-src 'self'; connect-src 'self'; frame-ancestors 'none'; base-uri 'none'";

/// The total size of the embedded assets, in bytes.
pub fn total_size() -> usize {
    ASSETS.iter().map(|(_, _, b)| b.len()).sum()
}

pub(crate) fn serve(path: &str) -> Response<Bytes> {
    // Deep links (`/ui/#/...` never reaches us, but `/ui/index.html`
    // might) get the page.
    let path = if path == "/index.html" { "/" } else { path };
    match ASSETS.iter().find(|(p, _, _)| *p == path) {
        Some((_, ct, bytes)) => Response::builder()
            .status(StatusCode::OK)
            .header(header::CONTENT_TYPE, *ct)
            // Assets change only with the binary; revalidating is cheap
            // and never shows a stale console after an upgrade.
            .header(header::CACHE_CONTROL, "no-cache")
            .header("Content-Security-Policy", CSP)
            .header("X-Content-Type-Options", "nosniff")
            .header("Referrer-Policy", "no-referrer")
            .body(Bytes::from_static(bytes))
            .unwrap_or_default(),
        None => crate::error(
            StatusCode::NOT_FOUND,
            &format!("{}{path} is not part of the console", crate::PREFIX),
        ),
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn every_asset_is_served_with_its_type_and_policy() {
        for (path, ct, _) in super::ASSETS {
            let r = super::serve(path);
            assert_eq!(r.status(), 200, "{path}");
            assert_eq!(r.headers()["content-type"], *ct);
            assert!(r.headers().contains_key("content-security-policy"));
        }
        assert_eq!(super::serve("/nope.js").status(), 404);
    }

    #[test]
    fn every_module_the_page_imports_is_embedded() {
        // A module imported by a file but missing from the table would be
        // a 404 in the browser and a blank console.
        for (_, _, bytes) in super::ASSETS {
            let text = std::str::from_utf8(bytes).unwrap_or("");
            for line in text.lines() {
                let Some(rest) = line.trim().strip_prefix("import ") else {
                    continue;
                };
                if let Some(from) = rest.split("from").nth(1) {
                    let name = from
                        .trim()
                        .trim_matches(|c| c == '\'' || c == '"' || c == ';');
                    let name = name.trim_start_matches('.');
                    assert!(
                        super::ASSETS.iter().any(|(p, _, _)| *p == name),
                        "{name} is imported but not embedded"
                    );
                }
            }
        }
    }
}
