//! The web page, embedded in the binary (no build step): `index.html`, `app.css`, the entry
//! module `app.js` and the native ES modules of `chat-node/web/js/`, served at `/js/<path>`.
//!
//! ```text
//! /              index.html  ── <script type="module" src="/app.js">
//! /app.js        import './js/main.js'
//! /js/main.js    imports ./store.js, ./socket.js, ./views/... (each listed in MODULES)
//! /app.css       the style
//! ```
//! A module added to `web/js/` must be listed in [`MODULES`] (and preloaded by index.html);
//! the tests below fail until it is.

use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};

use crate::error::ApiError;

const INDEX: &str = include_str!("../../web/index.html");
const SCRIPT: &str = include_str!("../../web/app.js");
const STYLE: &str = include_str!("../../web/app.css");

/// Every module of the page: its path under `/js/` and its text.
const MODULES: &[(&str, &str)] = &[
    ("api.js", include_str!("../../web/js/api.js")),
    ("directory.js", include_str!("../../web/js/directory.js")),
    ("history.js", include_str!("../../web/js/history.js")),
    ("live.js", include_str!("../../web/js/live.js")),
    ("main.js", include_str!("../../web/js/main.js")),
    ("outbox.js", include_str!("../../web/js/outbox.js")),
    ("session.js", include_str!("../../web/js/session.js")),
    ("socket.js", include_str!("../../web/js/socket.js")),
    ("store.js", include_str!("../../web/js/store.js")),
    ("util.js", include_str!("../../web/js/util.js")),
    ("views/auth.js", include_str!("../../web/js/views/auth.js")),
    (
        "views/composer.js",
        include_str!("../../web/js/views/composer.js"),
    ),
    (
        "views/conversation.js",
        include_str!("../../web/js/views/conversation.js"),
    ),
    ("views/dom.js", include_str!("../../web/js/views/dom.js")),
    (
        "views/message.js",
        include_str!("../../web/js/views/message.js"),
    ),
    (
        "views/sidebar.js",
        include_str!("../../web/js/views/sidebar.js"),
    ),
];

const CSP: &str = "default-src 'self'; img-src 'self' data: blob: http: https:; \
                   connect-src 'self' ws: wss: http: https:; style-src 'self'; script-src 'self'; \
                   frame-ancestors 'none'";

pub(super) async fn index() -> impl IntoResponse {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CONTENT_SECURITY_POLICY, CSP),
            (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
        ],
        INDEX,
    )
}

/// `GET /js/{*path}`: a module of the page, or 404 `not_found`.
pub(super) async fn module(Path(path): Path<String>) -> Response {
    match module_text(&path) {
        Some(text) => (
            [
                (header::CONTENT_TYPE, "text/javascript; charset=utf-8"),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            text,
        )
            .into_response(),
        None => ApiError::not_found("no such route").into_response(),
    }
}

pub(super) async fn script() -> impl IntoResponse {
    (
        [(header::CONTENT_TYPE, "text/javascript; charset=utf-8")],
        SCRIPT,
    )
}

/// The text of module `path` (relative to `web/js/`), if the page has one.
fn module_text(path: &str) -> Option<&'static str> {
    MODULES
        .iter()
        .find(|(name, _)| *name == path)
        .map(|(_, text)| *text)
}

pub(super) async fn style() -> impl IntoResponse {
    ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], STYLE)
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;
    use std::path::{Path, PathBuf};

    use super::{INDEX, MODULES};

    fn js_files(dir: &Path, prefix: &str, out: &mut BTreeSet<String>) {
        for entry in std::fs::read_dir(dir).expect("web/js is readable") {
            let entry = entry.expect("a directory entry");
            let name = entry.file_name().to_string_lossy().into_owned();
            let path = entry.path();
            if path.is_dir() {
                js_files(&path, &format!("{prefix}{name}/"), out);
            } else if name.ends_with(".js") {
                out.insert(format!("{prefix}{name}"));
            }
        }
    }

    #[test]
    fn every_module_on_disk_is_served() {
        let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web/js");
        let mut on_disk = BTreeSet::new();
        js_files(&dir, "", &mut on_disk);
        let served: BTreeSet<String> = MODULES.iter().map(|(n, _)| (*n).to_owned()).collect();
        assert_eq!(
            on_disk, served,
            "web.rs MODULES must list every file of web/js"
        );
    }

    #[test]
    fn only_listed_modules_are_served() {
        assert!(super::module_text("main.js").is_some_and(|t| t.contains("import")));
        assert!(super::module_text("views/dom.js").is_some());
        for path in ["", "nope.js", "../app.js", "js/main.js", "main.js/"] {
            assert!(super::module_text(path).is_none(), "{path}");
        }
    }

    #[test]
    fn the_page_loads_and_preloads_every_module() {
        assert!(INDEX.contains(r#"<script type="module" src="/app.js"></script>"#));
        assert!(super::SCRIPT.contains("import './js/main.js';"));
        for (name, _) in MODULES {
            let link = format!(r#"<link rel="modulepreload" href="/js/{name}">"#);
            assert!(INDEX.contains(&link), "index.html lacks {link}");
        }
    }
}
