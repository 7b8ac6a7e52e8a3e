//! The run view in the browser: `/` (the runs, live), `/runs/{id}` (one run: its DAG,
//! timeline and node details, live from the SSE stream), and their assets under `/ui/`.
//!
//! The pages are built from `web/src` into `web/dist` (esbuild; dagre lays the graph
//! out) and embedded here, so the binary serves them offline with no JavaScript
//! toolchain. They hold no data, so they are served without a token; every request they
//! make carries the token kept in the page's settings. [`report`] writes the same view
//! as one self-contained file, its run embedded (`shipsec run --html`, `shipsec report`).

use axum::body::Bytes;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use serde::Serialize;

const INDEX: &str = include_str!("../../web/dist/index.html");
const APP_JS: &str = include_str!("../../web/dist/app.js");
const APP_CSS: &str = include_str!("../../web/dist/app.css");

const CONFIG_TAG: &str = r#"<script id="shipsec-config" type="application/json">{}</script>"#;
const CSS_TAG: &str = r#"<link rel="stylesheet" href="/ui/app.css">"#;
const JS_TAG: &str = r#"<script src="/ui/app.js"></script>"#;

/// What the pages are told of the server.
#[derive(Debug, Clone, Default, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct UiConfig {
    /// A trace's page: `{traceId}` is replaced by the run's trace id.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub jaeger_url: Option<String>,
}

/// JSON inside a `<script>` element: `</` cannot close it early.
fn script_json(value: &impl Serialize) -> String {
    serde_json::to_string(value)
        .unwrap_or_else(|_| "{}".to_owned())
        .replace("</", "<\\/")
}

/// The page of `/` and `/runs/{id}` (one page; it routes itself), told `config`.
pub(crate) fn page_html(config: &UiConfig) -> Bytes {
    let html = INDEX.replace(
        CONFIG_TAG,
        &format!(
            r#"<script id="shipsec-config" type="application/json">{}</script>"#,
            script_json(config)
        ),
    );
    Bytes::from(html)
}

/// The answer with the page (made once per server by [`page_html`]).
pub(crate) fn page(html: Bytes) -> Response {
    (
        [
            (header::CONTENT_TYPE, "text/html; charset=utf-8"),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        html,
    )
        .into_response()
}

/// `/ui/app.js`.
pub(crate) async fn app_js() -> Response {
    asset("text/javascript; charset=utf-8", APP_JS)
}

/// `/ui/app.css`.
pub(crate) async fn app_css() -> Response {
    asset("text/css; charset=utf-8", APP_CSS)
}

fn asset(kind: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, kind),
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}

/// What a report shows: the run's graph (when known), its result and its events.
#[derive(Debug, Serialize)]
pub struct ReportData<'a, G: Serialize, R: Serialize, E: Serialize> {
    /// The graph (`crate::service::graph::RunGraph`); without it the report draws no
    /// edges.
    pub graph: Option<&'a G>,
    /// The run result (`shipsec run --json`).
    pub result: &'a R,
    /// Its trace events.
    pub events: &'a [E],
}

/// The run view of one finished run as a single HTML file: styles, script and data
/// inline, no request made when it is opened.
pub fn report<G: Serialize, R: Serialize, E: Serialize>(
    data: &ReportData<'_, G, R, E>,
    config: &UiConfig,
) -> String {
    let inline_js = APP_JS.replace("</script", "<\\/script");
    INDEX
        .replace(CSS_TAG, &format!("<style>{APP_CSS}</style>"))
        .replace(
            CONFIG_TAG,
            &format!(
                r#"<script id="shipsec-config" type="application/json">{}</script>
<script id="shipsec-report" type="application/json">{}</script>"#,
                script_json(config),
                script_json(data)
            ),
        )
        .replace(JS_TAG, &format!("<script>{inline_js}</script>"))
}
