//! The request inspector: capture bins at `{public_url}/inspect/{bin}` that record every request
//! (method, path and query, headers, body up to `inspector.body_cap`, size, source, time) and
//! answer with the response their owner configured (status, headers, body, delay). When a request
//! is a callback of one of the owner's keys whose webhook URL is the bin, the bin records what a
//! correct receiver must check: the bearer against the key's webhook key and the Standard Webhooks
//! signature against its signing secret ([`check_callback`]).
//!
//! Deliveries to this Easel's own bins are not sent over the network: the delivery engine hands
//! them to [`Inspector`] as a [`LocalReceiver`] with the exact headers and body the network client
//! would send (plus the `host` and `content-length` it would add), and the bin's response is judged
//! as a network answer would be. So a key may call back a bin on a plain-http `public_url` or a
//! loopback address without `webhook.allow_http` or the SSRF guard being opened for anything else.
//!
//! The store is the truth: a capture is one transaction (numbered in its bin, oldest requests
//! dropped past the caps); followers poll the store, and an in-process signal (`captured`) only
//! wakes this node's followers sooner.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use hyper::http::{HeaderMap, HeaderValue, StatusCode, header};

use crate::clock::{Millis, now_ms};
use crate::config::InspectorConfig;
use crate::generation::FieldError;
use crate::secrets::MasterKey;
use crate::store::{ApiKey, Bin, BinLimits, BinResponse, CapturedRequest, Store, StoreResult};
use crate::webhook::client::{AttemptError, AttemptResponse, ErrorClass};
use crate::webhook::engine::{KeySecrets, LocalReceiver};
use crate::wire::CallbackCheck;

/// The path under `public_url` where bins live.
pub const BIN_PATH: &str = "/inspect/";
/// The `source` of a callback this Easel handed to a bin in-process.
pub const IN_PROCESS: &str = "in-process";
/// How far a callback's `webhook-timestamp` may be from the time it arrived (the Standard
/// Webhooks libraries' tolerance).
pub const TIMESTAMP_TOLERANCE_SECONDS: i64 = 5 * 60;
/// Response headers a bin may not be configured with: they describe the connection and the
/// framing, which the server sets.
const RESERVED_HEADERS: &[&str] =
    &["content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"];

/// A request arriving at a bin.
pub struct Arrival<'a> {
    pub bin: uuid::Uuid,
    pub method: &'a str,
    /// The path after the bin's URL, with the query (`/` at least).
    pub path: String,
    pub headers: &'a HeaderMap,
    pub body: &'a [u8],
    pub source: String,
}

pub struct Inspector {
    store: Arc<dyn Store>,
    config: InspectorConfig,
    master_key: MasterKey,
    /// `{public_url}/inspect/`
    prefix: String,
    /// How long the network client waits for an answer (`webhook.timeout`): an in-process
    /// delivery to a slower bin times out the same way.
    webhook_timeout: Duration,
    /// Counts captures on this node, to wake its followers.
    captured: tokio::sync::watch::Sender<u64>,
    /// Cancelled when the server begins to stop: followers end their streams.
    stopping: tokio_util::sync::CancellationToken,
}

impl Inspector {
    pub fn new(
        store: Arc<dyn Store>,
        config: InspectorConfig,
        master_key: MasterKey,
        public_url: &str,
        webhook_timeout: Duration,
        stopping: tokio_util::sync::CancellationToken,
    ) -> Inspector {
        let prefix = format!("{}{BIN_PATH}", public_url.trim_end_matches('/'));
        let captured = tokio::sync::watch::channel(0).0;
        Inspector { store, config, master_key, prefix, webhook_timeout, captured, stopping }
    }

    /// Completes when the server begins to stop.
    pub fn stopping(&self) -> tokio_util::sync::WaitForCancellationFuture<'_> {
        self.stopping.cancelled()
    }

    /// `{public_url}/inspect/`: a webhook URL starting with it is delivered in-process.
    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    pub fn config(&self) -> &InspectorConfig {
        &self.config
    }

    /// Where a bin takes requests.
    pub fn bin_url(&self, id: uuid::Uuid) -> String {
        format!("{}{id}", self.prefix)
    }

    /// Changes whenever this node captures a request (followers wait on it, and poll anyway).
    pub fn captures(&self) -> tokio::sync::watch::Receiver<u64> {
        self.captured.subscribe()
    }

    /// Creates a bin for `user` answering `response` (checked with [`validate_response`]);
    /// `None` when the user already has `inspector.max_bins_per_user` bins.
    pub async fn create_bin(&self, user: crate::ids::UserId, response: BinResponse) -> StoreResult<Option<Bin>> {
        let now = now_ms();
        let bin = Bin {
            id: uuid::Uuid::new_v4(),
            user_id: user,
            created_at: now,
            expires_at: now + self.config.bin_ttl.as_millis().min(i64::MAX as u128 / 2) as Millis,
            response,
            request_count: 0,
            stored_bytes: 0,
        };
        Ok(self.store.create_bin(&bin, self.config.max_bins_per_user, now).await?.then_some(bin))
    }

    /// Records a request in its bin; the bin's response, or `None` when the bin is missing or
    /// expired (nothing is recorded then).
    pub async fn capture(&self, arrival: Arrival<'_>) -> StoreResult<Option<BinResponse>> {
        let now = now_ms();
        let Some(bin) = self.store.get_bin(arrival.bin, None, now).await? else { return Ok(None) };
        let keys: Vec<ApiKey> = self
            .store
            .list_api_keys(Some(bin.user_id))
            .await?
            .into_iter()
            .filter(|key| key.webhook_url.as_deref().is_some_and(|url| calls_back(url, bin.id)))
            .collect();
        let mut headers = header_pairs(arrival.headers);
        let verification = if keys.is_empty() {
            None
        } else {
            let mut checks = Vec::with_capacity(keys.len());
            for key in &keys {
                let secrets = KeySecrets::open(&self.master_key, key).ok();
                let check = check_callback(key, secrets.as_ref(), arrival.headers, arrival.body, now / 1000);
                // Secrets are shown once: a bearer that is one of these keys' webhook keys is kept
                // masked, as callback bodies show it (`bearerMatched` says it was right).
                if check.bearer_matched == Some(true)
                    && let Some(masked) = secrets.as_ref().and_then(|s| s.webhook_api_key_masked.as_deref())
                {
                    for (_, value) in headers.iter_mut().filter(|(name, _)| name == "authorization") {
                        *value = format!("Bearer {masked}");
                    }
                }
                checks.push(check);
            }
            Some(serde_json::to_string(&checks).expect("checks serialize"))
        };
        let cap = self.config.body_cap.min(arrival.body.len());
        let request = CapturedRequest {
            bin_id: bin.id,
            seq: 0,
            received_at: now,
            method: arrival.method.to_string(),
            path: arrival.path,
            headers,
            body: arrival.body[..cap].to_vec(),
            body_size: arrival.body.len() as i64,
            source: arrival.source,
            verification,
        };
        let limits = BinLimits {
            max_requests: u64::from(self.config.max_requests_per_bin),
            max_bytes: self.config.max_bytes_per_bin,
        };
        let captured = self.store.capture_request(&request, limits).await?;
        if captured.is_some() {
            self.captured.send_modify(|count| *count += 1);
        }
        Ok(captured.map(|(_, response)| response))
    }

    /// The delay a bin's response waits, within `inspector.max_delay`.
    pub fn delay_of(&self, response: &BinResponse) -> Duration {
        Duration::from_millis(u64::from(response.delay_ms)).min(self.config.max_delay)
    }

    /// The bin id and the path after it, for a URL under this Easel's bins.
    fn split_url<'u>(&self, url: &'u str) -> Option<(&'u str, String)> {
        let rest = url.strip_prefix(&self.prefix)?;
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (id, tail) = rest.split_at(end);
        let path = if tail.starts_with('/') { tail.to_string() } else { format!("/{tail}") };
        Some((id, path))
    }
}

#[async_trait::async_trait]
impl LocalReceiver for Inspector {
    fn owns(&self, url: &str) -> bool {
        crate::admin::is_own_bin(url, &self.prefix)
    }

    async fn receive(&self, url: &str, mut headers: HeaderMap, body: Bytes) -> AttemptResponse {
        let started = Instant::now();
        let mut response = AttemptResponse::starting();
        // What the network client adds to the callback's own headers.
        if let Ok(parsed) = url::Url::parse(url)
            && let Some(host) = parsed.host_str()
        {
            let host = match parsed.port() {
                Some(port) => format!("{host}:{port}"),
                None => host.to_string(),
            };
            if let Ok(value) = HeaderValue::from_str(&host) {
                headers.insert(header::HOST, value);
            }
        }
        headers.insert(header::CONTENT_LENGTH, HeaderValue::from(body.len()));
        let Some((id, path)) = self.split_url(url) else {
            response.error = Some(AttemptError::new(ErrorClass::InvalidUrl, format!("{url:?} is not a bin's URL")));
            return response;
        };
        let answer = match id.parse::<uuid::Uuid>() {
            Err(_) => Ok(None),
            Ok(bin) => {
                let arrival =
                    Arrival { bin, method: "POST", path, headers: &headers, body: &body, source: IN_PROCESS.into() };
                self.capture(arrival).await
            }
        };
        let (status, answer_headers, answer_body, delay) = match answer {
            Err(e) => {
                // What a network receiver gets from a server whose database fails.
                tracing::error!(error.message = %e, "inspector: cannot record an in-process callback");
                (StatusCode::INTERNAL_SERVER_ERROR, HeaderMap::new(), b"Internal Server Error".to_vec(), Duration::ZERO)
            }
            Ok(None) => (StatusCode::NOT_FOUND, HeaderMap::new(), missing_bin_text().into_bytes(), Duration::ZERO),
            Ok(Some(configured)) => {
                let delay = self.delay_of(&configured);
                let status = StatusCode::from_u16(configured.status).unwrap_or(StatusCode::OK);
                (status, response_headers(&configured), configured.body, delay)
            }
        };
        if delay >= self.webhook_timeout {
            tokio::time::sleep(self.webhook_timeout).await;
            response.duration = started.elapsed();
            response.error = Some(AttemptError::new(
                ErrorClass::Timeout,
                format!("no response within {}", humantime::format_duration(self.webhook_timeout)),
            ));
            return response;
        }
        tokio::time::sleep(delay).await;
        response.duration = started.elapsed();
        response.judge(status, &answer_headers, &answer_body);
        response
    }
}

/// What a missing bin's URL answers.
pub fn missing_bin_text() -> String {
    "there is no such inspector bin (it never existed, expired or was deleted)".to_string()
}

/// A bin's configured headers as a header map (validated when configured; anything invalid in
/// the database is skipped).
pub fn response_headers(response: &BinResponse) -> HeaderMap {
    let mut headers = HeaderMap::new();
    for (name, value) in &response.headers {
        if let (Ok(name), Ok(value)) = (header::HeaderName::from_bytes(name.as_bytes()), HeaderValue::from_str(value)) {
            headers.append(name, value);
        }
    }
    headers
}

/// Header names and values as recorded (values as lossy UTF-8).
fn header_pairs(headers: &HeaderMap) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| (name.as_str().to_string(), String::from_utf8_lossy(value.as_bytes()).into_owned()))
        .collect()
}

/// Whether a webhook URL calls back bin `bin` (whatever host names this Easel: the path is
/// `/inspect/{bin}`, possibly with more after it).
fn calls_back(url: &str, bin: uuid::Uuid) -> bool {
    let Ok(parsed) = url::Url::parse(url) else { return false };
    let Some(rest) = parsed.path().strip_prefix(BIN_PATH) else { return false };
    let id = rest.split('/').next().unwrap_or("");
    id.parse::<uuid::Uuid>().is_ok_and(|id| id == bin)
}

/// Checks a request as a correct receiver of `key`'s callbacks must: the bearer against the
/// key's webhook callback API key, and the Standard Webhooks signature (`webhook-id`,
/// `webhook-timestamp` within [`TIMESTAMP_TOLERANCE_SECONDS`] of `now_seconds`,
/// `webhook-signature` holding a `v1` signature of `id.timestamp.body`) with its signing secret.
/// `secrets` is `None` when the key's secrets do not open with this master key.
pub fn check_callback(
    key: &ApiKey,
    secrets: Option<&KeySecrets>,
    headers: &HeaderMap,
    body: &[u8],
    now_seconds: i64,
) -> CallbackCheck {
    let mut check = CallbackCheck {
        api_key_id: key.id,
        api_key_name: key.name.clone(),
        bearer_matched: None,
        bearer: String::new(),
        signature_verified: false,
        signature: String::new(),
    };
    let Some(secrets) = secrets else {
        check.bearer = "cannot check: the key's secrets do not open with this server's master key".into();
        check.signature = check.bearer.clone();
        return check;
    };
    let received = headers.get(header::AUTHORIZATION);
    (check.bearer_matched, check.bearer) = match (&secrets.authorization, received) {
        (None, None) => (None, "the key has no webhook callback API key, and none was sent".into()),
        (None, Some(_)) => {
            (None, "the key has no webhook callback API key, yet an authorization header was sent".into())
        }
        (Some(_), None) => (Some(false), "missing: no authorization header".into()),
        (Some(expected), Some(got)) if constant_time_eq(expected.as_bytes(), got.as_bytes()) => {
            (Some(true), "matched the key's webhook callback API key".into())
        }
        (Some(_), Some(_)) => (Some(false), "mismatched: not `Bearer <the key's webhook callback API key>`".into()),
    };
    let text = |name: &str| headers.get(name).and_then(|v| v.to_str().ok());
    let (id, timestamp, signatures) = (text("webhook-id"), text("webhook-timestamp"), text("webhook-signature"));
    let missing: Vec<&str> = [("webhook-id", id), ("webhook-timestamp", timestamp), ("webhook-signature", signatures)]
        .iter()
        .filter(|(_, value)| value.is_none())
        .map(|(name, _)| *name)
        .collect();
    let (Some(id), Some(timestamp), Some(signatures)) = (id, timestamp, signatures) else {
        check.signature = format!("missing headers: {}", missing.join(", "));
        return check;
    };
    let Ok(seconds) = timestamp.trim().parse::<i64>() else {
        check.signature = format!("webhook-timestamp {timestamp:?} is not a whole number of seconds");
        return check;
    };
    let skew = now_seconds - seconds;
    if skew.abs() > TIMESTAMP_TOLERANCE_SECONDS {
        check.signature = format!(
            "timestamp out of tolerance: {} s {} the time it arrived (a receiver accepts {TIMESTAMP_TOLERANCE_SECONDS} s)",
            skew.abs(),
            if skew > 0 { "before" } else { "after" }
        );
        return check;
    }
    let expected = secrets.signing.sign(id, seconds, body);
    if signatures.split(' ').any(|candidate| constant_time_eq(candidate.as_bytes(), expected.as_bytes())) {
        check.signature_verified = true;
        check.signature = "verified with the key's signing secret".into();
    } else {
        check.signature = "no v1 signature matches the key's signing secret (another secret, or the id, timestamp \
                           or body changed on the way)"
            .into();
    }
    check
}

fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Checks a response a bin is to answer with; the error names the field.
pub fn validate_response(response: &BinResponse, config: &InspectorConfig) -> Result<(), FieldError> {
    if !(200..=599).contains(&response.status) {
        return Err(FieldError::new("status", format!("`status` must be 200 to 599 (got {})", response.status)));
    }
    if response.headers.len() > 50 {
        return Err(FieldError::new("headers", "`headers`: at most 50 response headers"));
    }
    for (name, value) in &response.headers {
        if header::HeaderName::from_bytes(name.as_bytes()).is_err() {
            return Err(FieldError::new("headers", format!("`headers`: {name:?} is not a valid header name")));
        }
        if RESERVED_HEADERS.contains(&name.to_ascii_lowercase().as_str()) {
            return Err(FieldError::new(
                "headers",
                format!("`headers`: {name:?} cannot be configured: the server sets it for the connection"),
            ));
        }
        if HeaderValue::from_str(value).is_err() || value.len() > 4096 {
            return Err(FieldError::new(
                "headers",
                format!("`headers`: the value of {name:?} must be visible text of at most 4096 bytes"),
            ));
        }
    }
    if response.body.len() > config.body_cap {
        return Err(FieldError::new(
            "body",
            format!("`body` may be at most {} bytes (inspector.body_cap)", config.body_cap),
        ));
    }
    let max_delay = config.max_delay.as_millis();
    if u128::from(response.delay_ms) > max_delay {
        return Err(FieldError::new("delayMs", format!("`delayMs` may be at most {max_delay} (inspector.max_delay)")));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::webhook::signing::SigningKey;

    fn key(url: &str) -> ApiKey {
        ApiKey {
            id: crate::ids::ApiKeyId::random(),
            user_id: crate::ids::UserId::random(),
            name: "k".into(),
            created_at: 0,
            last_used_at: None,
            webhook_url: Some(url.into()),
            webhook_api_key_sealed: None,
            signing_secret_sealed: Vec::new(),
            deleted_at: None,
            webhook_failing_since: None,
            webhook_disabled_at: None,
            manage_keys: false,
            key_hint: None,
        }
    }

    #[test]
    fn a_webhook_url_calls_back_a_bin_by_its_path() {
        let bin = uuid::Uuid::new_v4();
        assert!(calls_back(&format!("https://easel.example.com/inspect/{bin}"), bin));
        assert!(calls_back(&format!("http://127.0.0.1:8080/inspect/{bin}/hooks?x=1"), bin));
        assert!(!calls_back(&format!("https://easel.example.com/inspect/{}", uuid::Uuid::new_v4()), bin));
        assert!(!calls_back(&format!("https://easel.example.com/other/{bin}"), bin));
    }

    #[test]
    fn the_callback_check_says_what_a_receiver_must_verify() {
        let signing = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let secrets = KeySecrets::new(Some(b"hook-key"), signing.clone()).unwrap();
        let key = key("https://x/inspect/1");
        let body = br#"{"a":1}"#;
        let now = 1_700_000_000;
        let mut headers = HeaderMap::new();
        headers.insert("authorization", HeaderValue::from_static("Bearer hook-key"));
        headers.insert("webhook-id", HeaderValue::from_static("msg_1"));
        headers.insert("webhook-timestamp", HeaderValue::from(now));
        headers.insert("webhook-signature", HeaderValue::from_str(&signing.sign("msg_1", now, body)).unwrap());
        let check = check_callback(&key, Some(&secrets), &headers, body, now + 3);
        assert_eq!((check.bearer_matched, check.signature_verified), (Some(true), true), "{check:?}");

        let check = check_callback(&key, Some(&secrets), &headers, b"altered", now);
        assert!(!check.signature_verified && check.signature.contains("no v1 signature matches"), "{check:?}");
        let check = check_callback(&key, Some(&secrets), &headers, body, now + 301);
        assert!(check.signature.contains("timestamp out of tolerance: 301 s"), "{check:?}");
        headers.insert("authorization", HeaderValue::from_static("Bearer other"));
        headers.remove("webhook-id");
        let check = check_callback(&key, Some(&secrets), &headers, body, now);
        assert_eq!(check.bearer_matched, Some(false));
        assert_eq!(check.signature, "missing headers: webhook-id");
    }

    #[test]
    fn responses_are_checked_field_by_field() {
        let config = InspectorConfig::default();
        let ok =
            BinResponse { status: 429, headers: vec![("Retry-After".into(), "3".into())], body: vec![], delay_ms: 0 };
        assert!(validate_response(&ok, &config).is_ok());
        let bad = |response: BinResponse, field: &str| {
            let error = validate_response(&response, &config).unwrap_err();
            assert!(error.to_string().contains(field), "{error}");
        };
        bad(BinResponse { status: 99, ..ok.clone() }, "status");
        bad(BinResponse { headers: vec![("bad name".into(), "x".into())], ..ok.clone() }, "header name");
        bad(BinResponse { headers: vec![("Content-Length".into(), "1".into())], ..ok.clone() }, "Content-Length");
        bad(BinResponse { delay_ms: 61_000, ..ok.clone() }, "delayMs");
    }
}
