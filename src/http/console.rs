//! `/console`: the web console, a single page of plain HTML, CSS and JavaScript committed as source
//! under `assets/console/` and compiled into the binary (no build step, nothing fetched from
//! elsewhere at run time). The page holds no power of its own: it signs in with an API key kept in
//! the tab's `sessionStorage` and calls the REST API with `Authorization: Bearer`, under the same
//! authorization as any client.
//!
//! Every response here carries headers that keep the page from being framed (clickjacking) or
//! running anything but its own script: `Content-Security-Policy` (`script-src 'self'`, no inline
//! script, `frame-ancestors 'none'`, images only from this origin and the image URLs' origin),
//! `X-Frame-Options: DENY`, `X-Content-Type-Options: nosniff`, `Referrer-Policy: no-referrer`.
//! There is no cookie, so there is no ambient credential for a cross-site request to ride (CSRF).

use axum::extract::State;
use axum::http::{HeaderMap, HeaderValue, header};
use axum::response::{IntoResponse, Response};
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::ApiContext;
use super::error::ApiError;
use super::extract::PathText;

const INDEX_HTML: &str = include_str!("../../assets/console/index.html");
const CONSOLE_JS: &str = include_str!("../../assets/console/console.js");
const CONSOLE_CSS: &str = include_str!("../../assets/console/console.css");
const ICON_SVG: &str = include_str!("../../assets/console/icon.svg");

pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(index)).routes(routes!(index_slash)).routes(routes!(asset))
}

/// The console's page.
#[utoipa::path(
    get,
    path = "/console",
    tag = "console",
    operation_id = "getConsole",
    responses((status = 200, description = "The console's page", content_type = "text/html", body = String))
)]
async fn index(State(state): State<ApiContext>) -> Response {
    page(&state, "text/html; charset=utf-8", INDEX_HTML)
}

/// The console's page, at `/console/`.
#[utoipa::path(
    get,
    path = "/console/",
    tag = "console",
    operation_id = "getConsoleSlash",
    responses((status = 200, description = "The console's page", content_type = "text/html", body = String))
)]
async fn index_slash(state: State<ApiContext>) -> Response {
    index(state).await
}

/// The console's script, style sheet and icon.
#[utoipa::path(
    get,
    path = "/console/assets/{name}",
    tag = "console",
    operation_id = "getConsoleAsset",
    params(("name" = String, Path, description = "`console.js`, `console.css` or `icon.svg`")),
    responses(
        (status = 200, description = "The file", content(
            (String = "text/javascript"), (String = "text/css"), (String = "image/svg+xml"))),
        (status = 404, description = "No such file (code `not-found`)", body = crate::wire::ErrorBody)
    )
)]
async fn asset(State(state): State<ApiContext>, PathText(name): PathText) -> Result<Response, ApiError> {
    let (content_type, body) = match name.as_str() {
        "console.js" => ("text/javascript; charset=utf-8", CONSOLE_JS),
        "console.css" => ("text/css; charset=utf-8", CONSOLE_CSS),
        "icon.svg" => ("image/svg+xml", ICON_SVG),
        _ => return Err(ApiError::RouteNotFound),
    };
    Ok(page(&state, content_type, body))
}

fn page(state: &ApiContext, content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    let headers = response.headers_mut();
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    // Small files compiled in: revalidating costs little and a new binary is seen at once.
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    protect(headers, &image_origin(state));
    response
}

/// The origin image URLs point to (`storage.public_base_url`, or this server's `public_url`),
/// which the policy lets the page load images from besides its own origin.
fn image_origin(state: &ApiContext) -> String {
    url::Url::parse(&state.images.url("x"))
        .ok()
        .map(|url| url.origin())
        .filter(url::Origin::is_tuple)
        .map(|origin| origin.ascii_serialization())
        .unwrap_or_default()
}

/// The console's protections against framing, injected script, content sniffing and leaking
/// its address.
pub fn protect(headers: &mut HeaderMap, image_origin: &str) {
    let policy = format!(
        "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data: {image_origin}; \
         connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
    );
    let policy = HeaderValue::from_str(policy.trim()).unwrap_or_else(|_| {
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; \
             base-uri 'none'; form-action 'none'; frame-ancestors 'none'",
        )
    });
    headers.insert(header::CONTENT_SECURITY_POLICY, policy);
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert("cross-origin-opener-policy", HeaderValue::from_static("same-origin"));
}
