//! The request inspector over HTTP (see [`crate::inspector`]): the capture URLs
//! `/inspect/{bin}` and `/inspect/{bin}/{*rest}` (any method, no API key: the bin's random id is
//! its address), and the owner's REST routes under `/api/rest/v1/inspector/bins`: create, list,
//! read, change the response, delete, list the captured requests (newest first, `before` cursor)
//! and follow them live as server-sent events. Another user's bin answers as missing.

use std::collections::{HashMap, VecDeque};
use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use axum::Json;
use axum::body::Bytes;
use axum::extract::{FromRequest, Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde_json::Value;
use utoipa_axum::router::OpenApiRouter;
use utoipa_axum::routes;

use super::error::{ApiError, ApiResult};
use super::extract::{Caller, JsonBody, PathText, query_number};
use super::{ApiContext, PeerAddr};
use crate::clock::now_ms;
use crate::generation::FieldError;
use crate::ids::UserId;
use crate::inspector::{Arrival, BIN_PATH, Inspector, missing_bin_text, response_headers, validate_response};
use crate::store::{BinResponse, Store};
use crate::wire;

/// How often a follower looks at the store when nothing on this node woke it: captures made by
/// other nodes arrive within this.
const FOLLOW_POLL: Duration = Duration::from_millis(500);
/// Requests read per look while following.
const FOLLOW_BATCH: u32 = 100;

/// The owner's routes, under `/api/rest/v1`.
pub fn router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new()
        .routes(routes!(list_bins, create_bin))
        .routes(routes!(get_bin, delete_bin))
        .routes(routes!(set_response))
        .routes(routes!(list_requests))
        .routes(routes!(follow))
}

/// The capture URLs, at the root.
pub fn capture_router() -> OpenApiRouter<ApiContext> {
    OpenApiRouter::new().routes(routes!(capture_at_bin)).routes(routes!(capture_under_bin))
}

/// A request to a bin: recorded, then answered as the bin's owner configured.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/inspect/{bin}",
    tag = "inspector",
    operation_id = "captureRequest",
    params(("bin" = uuid::Uuid, Path, description = "The bin's id")),
    responses(
        (status = "default", description = "The bin's configured answer (status, headers, body), after its delay"),
        (status = 404, description = "No such bin, or it expired (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn capture_at_bin(state: State<ApiContext>, request: Request) -> ApiResult<Response> {
    capture(state, request).await
}

/// A request to a path under a bin: recorded with the path, then answered as configured.
#[utoipa::path(
    method(get, post, put, patch, delete, head, options),
    path = "/inspect/{bin}/{*rest}",
    tag = "inspector",
    operation_id = "captureRequestUnderPath",
    params(
        ("bin" = uuid::Uuid, Path, description = "The bin's id"),
        ("rest" = String, Path, description = "Any path after the bin, recorded with the request")
    ),
    responses(
        (status = "default", description = "The bin's configured answer (status, headers, body), after its delay"),
        (status = 404, description = "No such bin, or it expired (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn capture_under_bin(state: State<ApiContext>, request: Request) -> ApiResult<Response> {
    capture(state, request).await
}

fn inspector(state: &ApiContext) -> ApiResult<&Arc<Inspector>> {
    state.inspector.as_ref().ok_or(ApiError::RouteNotFound)
}

fn missing() -> ApiError {
    ApiError::NotFound(missing_bin_text())
}

/// A bin id from the path; anything that is not a UUID names no bin.
fn bin_id(text: &str) -> ApiResult<uuid::Uuid> {
    text.parse().map_err(|_| missing())
}

/// Records the request in its bin and answers with the bin's response after its delay.
async fn capture(State(state): State<ApiContext>, request: Request) -> ApiResult<Response> {
    let inspector = inspector(&state)?.clone();
    let source = request.extensions().get::<PeerAddr>().map(|peer| peer.0.to_string()).unwrap_or_default();
    let method = request.method().as_str().to_string();
    let uri = request.uri().clone();
    let headers = request.headers().clone();
    let rest = uri.path().strip_prefix(BIN_PATH).unwrap_or("");
    let (id, tail) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let bin = bin_id(&percent_decoded(id))?;
    let mut path = if tail.is_empty() { "/".to_string() } else { tail.to_string() };
    if let Some(query) = uri.query() {
        path.push('?');
        path.push_str(query);
    }
    let body = Bytes::from_request(request, &state).await.map_err(|rejection| {
        if rejection.status() == StatusCode::PAYLOAD_TOO_LARGE {
            ApiError::PayloadTooLarge(state.api.max_body_bytes)
        } else {
            ApiError::Malformed(format!("cannot read the request body: {rejection}"))
        }
    })?;
    let arrival = Arrival { bin, method: &method, path, headers: &headers, body: &body, source };
    let response = inspector.capture(arrival).await?.ok_or_else(missing)?;
    tokio::time::sleep(inspector.delay_of(&response)).await;
    let status = StatusCode::from_u16(response.status).unwrap_or(StatusCode::OK);
    Ok((status, response_headers(&response), response.body).into_response())
}

fn percent_decoded(text: &str) -> String {
    url::form_urlencoded::parse(format!("x={text}").as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// A bin's response from a JSON body: `status` (default 200), `headers` (an object of names to
/// values, or an array of `[name, value]` pairs), `body` (text, default empty), `delayMs`
/// (default 0). Checked against the inspector's limits.
pub fn parse_response(body: Option<&Value>, inspector: &Inspector) -> Result<BinResponse, FieldError> {
    let empty = serde_json::Map::new();
    let fields = match body {
        None | Some(Value::Null) => &empty,
        Some(Value::Object(fields)) => fields,
        Some(_) => return Err(FieldError::new("$", "the body must be a JSON object")),
    };
    for name in fields.keys() {
        if !["status", "headers", "body", "delayMs"].contains(&name.as_str()) {
            return Err(FieldError::new(
                name,
                format!("unknown field `{name}`: a bin's response has status, headers, body and delayMs"),
            ));
        }
    }
    let integer = |name: &str, default: u64, max: u64| -> Result<u64, FieldError> {
        match fields.get(name) {
            None | Some(Value::Null) => Ok(default),
            Some(value) => value.as_u64().filter(|n| *n <= max).ok_or_else(|| {
                FieldError::new(name, format!("`{name}` must be an integer from 0 to {max} (got {value})"))
            }),
        }
    };
    let status = integer("status", 200, 999)? as u16;
    let delay_ms = integer("delayMs", 0, u64::from(u32::MAX))? as u32;
    let text = |value: &Value, what: &str| -> Result<String, FieldError> {
        value
            .as_str()
            .map(str::to_string)
            .ok_or_else(|| FieldError::new("headers", format!("`headers`: {what} must be a string")))
    };
    let headers = match fields.get("headers") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Object(map)) => map
            .iter()
            .map(|(name, value)| Ok((name.clone(), text(value, "a header value")?)))
            .collect::<Result<_, _>>()?,
        Some(Value::Array(pairs)) => pairs
            .iter()
            .map(|pair| match pair.as_array().map(Vec::as_slice) {
                Some([name, value]) => Ok((text(name, "a header name")?, text(value, "a header value")?)),
                _ => Err(FieldError::new("headers", "each entry of `headers` must be a [name, value] pair")),
            })
            .collect::<Result<_, _>>()?,
        Some(_) => {
            return Err(FieldError::new("headers", "`headers` must be an object or an array of [name, value] pairs"));
        }
    };
    let body = match fields.get("body") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::String(text)) => text.as_bytes().to_vec(),
        Some(_) => return Err(FieldError::new("body", "`body` must be a string")),
    };
    let response = BinResponse { status, headers, body, delay_ms };
    validate_response(&response, inspector.config())?;
    Ok(response)
}

fn view(inspector: &Inspector, bin: &crate::store::Bin) -> wire::BinView {
    wire::BinView::new(bin, inspector.bin_url(bin.id))
}

/// Creates a bin for the caller's user, answering as the body says.
#[utoipa::path(
    post,
    path = "/inspector/bins",
    tag = "inspector",
    operation_id = "createBin",
    security(("bearer" = [])),
    request_body = crate::http::requests::BinResponseRequest,
    responses(
        (status = 201, description = "The bin, with its URL", body = wire::BinView),
        (status = 409, description = "The user has `inspector.max_bins_per_user` bins (code `limit-reached`)",
         body = wire::ErrorBody)
    )
)]
async fn create_bin(
    State(state): State<ApiContext>,
    caller: Caller,
    JsonBody(body): JsonBody,
) -> ApiResult<(StatusCode, Json<wire::BinView>)> {
    let inspector = inspector(&state)?;
    let response = parse_response(body.as_ref(), inspector)?;
    let bin = inspector.create_bin(caller.user.id, response).await?.ok_or_else(|| {
        ApiError::LimitReached(format!(
            "you already have {} inspector bins (inspector.max_bins_per_user): delete one first",
            inspector.config().max_bins_per_user
        ))
    })?;
    Ok((StatusCode::CREATED, Json(view(inspector, &bin))))
}

/// The caller's user's bins.
#[utoipa::path(
    get,
    path = "/inspector/bins",
    tag = "inspector",
    operation_id = "listBins",
    security(("bearer" = [])),
    responses((status = 200, description = "The bins", body = wire::BinList))
)]
async fn list_bins(State(state): State<ApiContext>, caller: Caller) -> ApiResult<Json<wire::BinList>> {
    let inspector = inspector(&state)?;
    let bins = state.store.list_bins(Some(caller.user.id), now_ms()).await?;
    Ok(Json(wire::BinList { bins: bins.iter().map(|bin| view(inspector, bin)).collect() }))
}

/// One of the caller's user's bins.
#[utoipa::path(
    get,
    path = "/inspector/bins/{id}",
    tag = "inspector",
    operation_id = "getBin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The bin's id")),
    responses(
        (status = 200, description = "The bin", body = wire::BinView),
        (status = 404, description = "No such bin of the user's (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn get_bin(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
) -> ApiResult<Json<wire::BinView>> {
    let inspector = inspector(&state)?;
    let bin = state.store.get_bin(bin_id(&id)?, Some(caller.user.id), now_ms()).await?.ok_or_else(missing)?;
    Ok(Json(view(inspector, &bin)))
}

/// Changes what a bin answers with.
#[utoipa::path(
    put,
    path = "/inspector/bins/{id}/response",
    tag = "inspector",
    operation_id = "setBinResponse",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The bin's id")),
    request_body = crate::http::requests::BinResponseRequest,
    responses(
        (status = 200, description = "The bin", body = wire::BinView),
        (status = 404, description = "No such bin of the user's (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn set_response(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
    JsonBody(body): JsonBody,
) -> ApiResult<Json<wire::BinView>> {
    let inspector = inspector(&state)?;
    let id = bin_id(&id)?;
    let response = parse_response(body.as_ref(), inspector)?;
    let now = now_ms();
    if !state.store.set_bin_response(id, caller.user.id, &response, now).await? {
        return Err(missing());
    }
    let bin = state.store.get_bin(id, Some(caller.user.id), now).await?.ok_or_else(missing)?;
    Ok(Json(view(inspector, &bin)))
}

/// Deletes a bin and what it recorded.
#[utoipa::path(
    delete,
    path = "/inspector/bins/{id}",
    tag = "inspector",
    operation_id = "deleteBin",
    security(("bearer" = [])),
    params(("id" = uuid::Uuid, Path, description = "The bin's id")),
    responses(
        (status = 204, description = "Deleted"),
        (status = 404, description = "No such bin of the user's (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn delete_bin(State(state): State<ApiContext>, caller: Caller, PathText(id): PathText) -> ApiResult<StatusCode> {
    inspector(&state)?;
    if state.store.delete_bin(bin_id(&id)?, Some(caller.user.id)).await? {
        Ok(StatusCode::NO_CONTENT)
    } else {
        Err(missing())
    }
}

/// The bin's requests, newest first: `?limit=` (1 to 100, default 20) and `?before=SEQ` for the
/// next page (`nextBefore` of the previous one).
#[utoipa::path(
    get,
    path = "/inspector/bins/{id}/requests",
    tag = "inspector",
    operation_id = "listBinRequests",
    security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "The bin's id"),
        ("limit" = Option<u32>, Query, minimum = 1, maximum = 100, description = "At most this many (default 20)"),
        ("before" = Option<i64>, Query, minimum = 1, description = "Only requests older than this `seq`")
    ),
    responses(
        (status = 200, description = "The requests, newest first", body = wire::CapturedRequestList),
        (status = 404, description = "No such bin of the user's (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn list_requests(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Json<wire::CapturedRequestList>> {
    inspector(&state)?;
    let limit = query_number(&query, "limit", 20, 1, 100)? as u32;
    let before = match query.get("before") {
        None => None,
        Some(_) => Some(query_number(&query, "before", 0, 1, i64::MAX as u64)? as i64),
    };
    let requests = state
        .store
        .list_requests(bin_id(&id)?, Some(caller.user.id), before, limit, now_ms())
        .await?
        .ok_or_else(missing)?;
    let next_before = (requests.len() == limit as usize).then(|| requests.last().map(|r| r.seq)).flatten();
    Ok(Json(wire::CapturedRequestList {
        requests: requests.iter().map(wire::CapturedRequestView::new).collect(),
        next_before,
    }))
}

/// Follows a bin live as server-sent events: one `request` event per captured request (its
/// `seq` as the event id, the JSON of `GET .../requests` entries as data), oldest first, from
/// `?after=SEQ` or `Last-Event-ID` (default: only requests captured from now on). The stream
/// ends with a `gone` event when the bin expires or is deleted, and when the server stops.
#[utoipa::path(
    get,
    path = "/inspector/bins/{id}/stream",
    tag = "inspector",
    operation_id = "followBin",
    security(("bearer" = [])),
    params(
        ("id" = uuid::Uuid, Path, description = "The bin's id"),
        ("after" = Option<i64>, Query, minimum = 0, description = "Send requests after this `seq` first"),
        ("Last-Event-ID" = Option<i64>, Header, description = "As `after`, when reconnecting")
    ),
    responses(
        (status = 200, description = "Server-sent events: `request` (data: a request as `listBinRequests` shows it), \
         `gone` when the bin expires or is deleted", content_type = "text/event-stream", body = String),
        (status = 404, description = "No such bin of the user's (code `not-found`)", body = wire::ErrorBody)
    )
)]
async fn follow(
    State(state): State<ApiContext>,
    caller: Caller,
    PathText(id): PathText,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> ApiResult<Response> {
    let inspector = inspector(&state)?.clone();
    let bin = bin_id(&id)?;
    let user = caller.user.id;
    let now = now_ms();
    let last_event = headers.get("last-event-id").and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse().ok());
    let after = match (query.get("after"), last_event) {
        (Some(_), _) => Some(query_number(&query, "after", 0, 0, i64::MAX as u64)? as i64),
        (None, Some(seq)) => Some(seq),
        (None, None) => None,
    };
    // Subscribed before the first look, so nothing captured on this node in between is missed.
    let captures = inspector.captures();
    let after = match after {
        Some(after) => {
            state.store.get_bin(bin, Some(user), now).await?.ok_or_else(missing)?;
            after
        }
        None => {
            let newest = state.store.list_requests(bin, Some(user), None, 1, now).await?.ok_or_else(missing)?;
            newest.first().map(|r| r.seq).unwrap_or(0)
        }
    };
    let follower = Follower {
        store: state.store.clone(),
        inspector,
        bin,
        user,
        after,
        captures,
        pending: VecDeque::new(),
        done: false,
    };
    let stream = futures_util::stream::unfold(follower, |mut follower| async move {
        let event = follower.next().await?;
        Some((Ok::<_, Infallible>(event), follower))
    });
    Ok(Sse::new(stream).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response())
}

struct Follower {
    store: Arc<dyn Store>,
    inspector: Arc<Inspector>,
    bin: uuid::Uuid,
    user: UserId,
    after: i64,
    captures: tokio::sync::watch::Receiver<u64>,
    pending: VecDeque<Event>,
    done: bool,
}

impl Follower {
    async fn next(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.done {
                return None;
            }
            let requests =
                match self.store.requests_after(self.bin, Some(self.user), self.after, FOLLOW_BATCH, now_ms()).await {
                    Ok(requests) => requests,
                    Err(e) => {
                        tracing::warn!(error.message = %e, "inspector: cannot read a followed bin; retrying");
                        Some(Vec::new())
                    }
                };
            let Some(requests) = requests else {
                self.done = true;
                return Some(Event::default().event("gone").data("the bin expired or was deleted"));
            };
            if !requests.is_empty() {
                for request in &requests {
                    let view = wire::CapturedRequestView::new(request);
                    let data = serde_json::to_string(&view).expect("a request view serializes");
                    self.pending.push_back(Event::default().event("request").id(request.seq.to_string()).data(data));
                }
                self.after = requests.last().map(|r| r.seq).unwrap_or(self.after);
                continue;
            }
            tokio::select! {
                _ = self.captures.changed() => {}
                _ = tokio::time::sleep(FOLLOW_POLL) => {}
                _ = self.inspector.stopping() => {
                    self.done = true;
                    return Some(Event::default().event("gone").data("the server is stopping"));
                }
            }
        }
    }
}
