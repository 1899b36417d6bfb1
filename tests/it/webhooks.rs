//! Webhook callbacks over real HTTPS: the exact request, signatures, outcomes, retries,
//! exhaustion, redelivery, isolation between receivers.

use std::time::{Duration, Instant};

use base64::Engine;
use hmac::{Hmac, Mac};
use reqwest::StatusCode;
use serde_json::{Value, json};
use sha2::Sha256;

use crate::helpers::*;
use crate::receiver::{Received, Reply, TestCa, TestReceiver};

pub(crate) const SAMPLE: &str = include_str!("../fixtures/leonardo-webhook-sample.json");

/// Every key of `sample` is in `actual` with the same JSON type (a `null` in the sample allows
/// any type: those fields are nullable), recursively, and in the same order.
pub(crate) fn assert_same_shape(sample: &Value, actual: &Value, path: &str) {
    match (sample, actual) {
        (Value::Object(sample), Value::Object(actual)) => {
            let sample_keys: Vec<&String> = sample.keys().collect();
            let actual_keys: Vec<&String> = actual.keys().collect();
            assert_eq!(sample_keys, actual_keys, "keys of {path}");
            for (key, value) in sample {
                assert_same_shape(value, &actual[key], &format!("{path}.{key}"));
            }
        }
        (Value::Array(sample), Value::Array(actual)) => {
            if let Some(first) = sample.first() {
                for (index, item) in actual.iter().enumerate() {
                    assert_same_shape(first, item, &format!("{path}[{index}]"));
                }
            }
        }
        (Value::Null, _) => {}
        (Value::Number(s), Value::Number(a)) => {
            if !s.is_f64() {
                assert!(!a.is_f64(), "{path}: {a} must be an integer like {s}");
            }
        }
        (sample, actual) => {
            assert_eq!(std::mem::discriminant(sample), std::mem::discriminant(actual), "{path}: {actual} vs {sample}")
        }
    }
}

pub(crate) fn verify_signature(received: &Received, secret: &str) {
    assert_eq!(received.header("webhook-signature"), Some(expected_signature(received, secret).as_str()));
}

/// The `webhook-signature` a request signed with `secret` carries, computed here independently.
pub(crate) fn expected_signature(received: &Received, secret: &str) -> String {
    let id = received.header("webhook-id").unwrap_or_default();
    let timestamp = received.header("webhook-timestamp").unwrap_or_default();
    let key = base64::engine::general_purpose::STANDARD.decode(secret.strip_prefix("whsec_").unwrap()).unwrap();
    let mut mac = Hmac::<Sha256>::new_from_slice(&key).unwrap();
    mac.update(format!("{id}.{timestamp}.").as_bytes());
    mac.update(&received.body);
    format!("v1,{}", base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

#[tokio::test]
async fn a_completed_generation_calls_back_with_the_guides_request() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("hooked", &receiver.url, Some("abcd")).await;
    let body = json!({"prompt": "An oil painting of a cat", "width": 512, "height": 512, "num_images": 1,
                      "modelId": "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3", "presetStyle": "DYNAMIC", "alchemy": true});
    let generation_id = app.create_generation(&hooked.user, &body).await;

    let request = receiver.wait_for(1).await.remove(0);
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64;

    // Headers.
    assert_eq!(request.path, "/hook");
    assert_eq!(request.header("content-type"), Some("application/json"));
    assert_eq!(request.header("accept"), Some("application/json, text/plain, */*"));
    assert_eq!(request.header("user-agent"), Some(concat!("Easel/", env!("CARGO_PKG_VERSION"))));
    assert_eq!(request.header("authorization"), Some("Bearer abcd"));
    let timestamp: i64 = request.header("webhook-timestamp").unwrap().parse().unwrap();
    assert!((now - timestamp).abs() <= 5, "webhook-timestamp is in seconds, now");
    verify_signature(&request, &hooked.signing_secret);

    // Body: compact JSON, every key of the guide's sample in order with the same type.
    let payload = request.json();
    assert_eq!(request.body.as_ref(), serde_json::to_vec(&payload).unwrap().as_slice(), "compact JSON");
    let sample: Value = serde_json::from_str(SAMPLE).unwrap();
    assert_same_shape(&sample, &payload, "$");
    assert_eq!(payload["type"], "image_generation.complete");
    assert_eq!((payload["object"].as_str(), payload["api_version"].as_str()), (Some("generation"), Some("v1")));
    let event_ms = payload["timestamp"].as_i64().unwrap();
    assert!((now * 1000 - event_ms).abs() < 10_000, "timestamp is in milliseconds");

    let generation = &payload["data"]["object"];
    let rest = app.finished_generation(&hooked.user, &generation_id).await;
    assert_eq!(generation["id"], generation_id);
    assert_eq!(generation["status"], "COMPLETE");
    assert_eq!(generation["userId"], hooked.user.id.to_string());
    assert_eq!(generation["seed"], rest["seed"].as_u64().unwrap().to_string(), "seed is a string in webhooks");
    assert_eq!(generation["prompt"], "An oil painting of a cat");
    assert_eq!(generation["modelId"], "6bef9f1b-29cb-40c7-b9df-32b51c1f67d3");
    assert_eq!(generation["model"]["name"], "Leonardo Creative");
    assert_eq!(generation["apiKeyId"], hooked.key_id.to_string());
    let images = generation["images"].as_array().unwrap();
    assert_eq!(images.len(), 1);
    assert_eq!(images[0]["url"], rest["generated_images"][0]["url"]);
    assert_eq!(images[0]["id"], rest["generated_images"][0]["id"]);
    assert_eq!(images[0]["generationId"], generation_id);
    let (status, content_type, _) = app.download(images[0]["url"].as_str().unwrap()).await;
    assert_eq!((status, content_type.as_deref()), (StatusCode::OK, Some("image/jpeg")));

    // The key's record, secrets masked.
    let api_key = &generation["apiKey"];
    assert_eq!(api_key["id"], hooked.key_id.to_string());
    assert_eq!(api_key["type"], "PRODUCTION");
    assert_eq!(api_key["webhookCallbackUrl"], receiver.url);
    assert_ne!(api_key["key"], hooked.user.key.as_str());
    assert_ne!(api_key["webhookCallbackApiKey"], "abcd");
    let text = String::from_utf8_lossy(&request.body);
    assert!(!text.contains(&hooked.user.key) && !text.contains("\"abcd\""), "no secret in the body");

    // The delivery and its attempt, as the owner sees them.
    let delivery = app.settled_delivery(&hooked.user, &generation_id).await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["webhookId"], request.header("webhook-id").unwrap());
    assert_eq!(delivery["attempts"][0]["statusCode"], 200);
    assert_eq!(delivery["attempts"][0]["errorClass"], Value::Null);
}

#[tokio::test]
async fn without_a_webhook_api_key_no_authorization_header_is_sent() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("no-bearer", &receiver.url, None).await;
    app.create_generation(&hooked.user, &small_generation("no bearer")).await;
    let request = receiver.wait_for(1).await.remove(0);
    assert_eq!(request.header("authorization"), None);
    assert_eq!(request.json()["data"]["object"]["apiKey"]["webhookCallbackApiKey"], Value::Null);
    verify_signature(&request, &hooked.signing_secret);
}

#[tokio::test]
async fn keys_without_a_webhook_make_no_deliveries() {
    let app = spawn_app().await;
    let id = app.create_generation(&app.admin, &small_generation("quiet")).await;
    app.finished_generation(&app.admin, &id).await;
    assert_eq!(app.deliveries_of(&app.admin, &id).await, Vec::<Value>::new());
}

#[tokio::test]
async fn a_failed_generation_sends_image_generation_failed() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        // Long enough that the source is deleted before the derived generation reads it.
        config.render.simulated_duration = Duration::from_secs(3);
    })
    .await;
    let hooked = app.new_webhook_user("unlucky", &receiver.url, Some("abcd")).await;
    // An image-to-image generation whose source disappears before it renders fails.
    let source = app.create_generation(&hooked.user, &small_generation("source")).await;
    let source = app.finished_generation(&hooked.user, &source).await;
    receiver.wait_for(1).await;
    let body = json!({"prompt": "derived", "width": 64, "height": 64, "num_images": 1,
                      "init_generation_image_id": source["generated_images"][0]["id"], "init_strength": 0.5});
    let derived = app.create_generation(&hooked.user, &body).await;
    app.delete(&hooked.user, &format!("/generations/{}", source["id"].as_str().unwrap())).await;

    let generation = app.finished_generation(&hooked.user, &derived).await;
    assert_eq!(generation["status"], "FAILED");
    let request = receiver.wait_for(2).await.remove(1);
    let payload = request.json();
    assert_eq!(payload["type"], "image_generation.failed");
    assert_eq!(payload["data"]["object"]["status"], "FAILED");
    assert_eq!(payload["data"]["object"]["images"], json!([]));
    assert_eq!(payload["data"]["object"]["id"], derived);
    let sample: Value = serde_json::from_str(SAMPLE).unwrap();
    assert_same_shape(&sample, &payload, "$");
}

#[tokio::test]
async fn the_webhook_id_is_stable_across_retries_until_the_schedule_is_exhausted() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::status(500).body("database is down")).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "50ms", "100ms", "150ms"])).await;
    let hooked = app.new_webhook_user("retried", &receiver.url, Some("abcd")).await;
    let generation = app.create_generation(&hooked.user, &small_generation("retry me")).await;

    let requests = receiver.wait_for(4).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "failed", "an exhausted delivery is kept as failed");
    assert_eq!(delivery["attemptCount"], 4);
    assert_eq!(receiver.received().len(), 4, "no attempt beyond the schedule");
    let ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert!(ids.iter().all(|id| *id == ids[0]), "webhook-id is the idempotency key: {ids:?}");
    assert!(requests.iter().all(|r| r.body == requests[0].body), "the same body every time");
    for request in &requests {
        verify_signature(request, &hooked.signing_secret);
    }
    // The gaps follow the schedule.
    let gaps: Vec<Duration> = requests.windows(2).map(|w| w[1].at - w[0].at).collect();
    for (gap, expected) in gaps.iter().zip([50, 100, 150]) {
        assert!(*gap >= Duration::from_millis(expected - 5), "gap {gap:?} shorter than {expected} ms");
    }
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 4);
    for (n, attempt) in attempts.iter().enumerate() {
        assert_eq!(attempt["attempt"], n + 1);
        assert_eq!(attempt["statusCode"], 500);
        assert_eq!(attempt["errorClass"], "http_status");
        assert_eq!(attempt["responseExcerpt"], "database is down");
        assert!(attempt["durationMs"].is_u64() && attempt["startedAt"].is_string());
    }
}

#[tokio::test]
async fn a_receiver_that_recovers_gets_the_delivery() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |n| if n < 2 { Reply::status(503) } else { Reply::status(204) }).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "20ms", "20ms", "20ms"])).await;
    let hooked = app.new_webhook_user("flaky", &receiver.url, None).await;
    let generation = app.create_generation(&hooked.user, &small_generation("eventually")).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "succeeded", "any 2xx is success");
    assert_eq!(delivery["attemptCount"], 3);
    assert_eq!(delivery["lastStatusCode"], 204);
}

#[tokio::test]
async fn gone_stops_retrying_and_redirects_are_not_followed() {
    let ca = TestCa::new();
    let gone = TestReceiver::https(&ca, |_| Reply::status(410)).await;
    let target = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let target_url = target.url.clone();
    let redirecting = TestReceiver::https(&ca, move |_| Reply::status(307).header("location", &target_url)).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "20ms", "20ms"])).await;

    let gone_user = app.new_webhook_user("gone", &gone.url, None).await;
    let generation = app.create_generation(&gone_user.user, &small_generation("gone")).await;
    let delivery = app.settled_delivery(&gone_user.user, &generation).await;
    assert_eq!((delivery["status"].as_str(), delivery["attemptCount"].as_u64()), (Some("failed"), Some(1)));
    assert_eq!(delivery["attempts"][0]["statusCode"], 410);

    let redirected_user = app.new_webhook_user("redirected", &redirecting.url, None).await;
    let generation = app.create_generation(&redirected_user.user, &small_generation("moved")).await;
    let delivery = app.settled_delivery(&redirected_user.user, &generation).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attemptCount"], 3, "a redirect is a failure and is retried");
    let attempt = &delivery["attempts"][0];
    assert_eq!((attempt["statusCode"].as_u64(), attempt["errorClass"].as_str()), (Some(307), Some("redirect")));
    assert!(attempt["errorDetail"].as_str().unwrap().contains(&target.url), "{attempt}");
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(target.received().is_empty(), "the redirect was followed");
}

#[tokio::test]
async fn retry_after_of_429_is_honoured() {
    let ca = TestCa::new();
    let receiver =
        TestReceiver::https(&ca, |n| if n == 0 { Reply::status(429).header("retry-after", "1") } else { Reply::ok() })
            .await;
    // The schedule alone would wait an hour.
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "1h"])).await;
    let hooked = app.new_webhook_user("throttled", &receiver.url, None).await;
    app.create_generation(&hooked.user, &small_generation("later")).await;
    let requests = receiver.wait_for(2).await;
    let gap = requests[1].at - requests[0].at;
    assert!(gap >= Duration::from_millis(990) && gap < Duration::from_secs(5), "second attempt after {gap:?}");
}

#[tokio::test]
async fn transport_failures_are_logged_with_precise_classes() {
    let ca = TestCa::new();
    let other_ca = TestCa::new();
    let untrusted = TestReceiver::https(&other_ca, |_| Reply::ok()).await;
    let hanging = TestReceiver::https(&ca, |_| Reply::hang()).await;
    let closed_port = {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        listener.local_addr().unwrap().port()
    };
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        config.webhook.timeout = Duration::from_millis(500);
        config.webhook.connect_timeout = Duration::from_millis(400);
    })
    .await;
    let cases = [
        (untrusted.url.clone(), "tls", "TLS handshake with 127.0.0.1 failed"),
        (hanging.url.clone(), "timeout", "no response within 500ms"),
        (format!("https://127.0.0.1:{closed_port}/hook"), "connect_refused", "connection refused by 127.0.0.1"),
        ("https://no-such-host.test/hook".to_string(), "dns", "cannot resolve no-such-host.test"),
    ];
    for (n, (url, class, detail)) in cases.iter().enumerate() {
        let hooked = app.new_webhook_user(&format!("failing-{n}"), url, None).await;
        let generation = app.create_generation(&hooked.user, &small_generation("unreachable")).await;
        let delivery = app.settled_delivery(&hooked.user, &generation).await;
        assert_eq!(delivery["status"], "failed", "{url}");
        let attempt = &delivery["attempts"][0];
        assert_eq!(attempt["errorClass"], *class, "{url}: {attempt}");
        assert!(attempt["errorDetail"].as_str().unwrap().contains(detail), "{url}: {attempt}");
        assert_eq!(attempt["statusCode"], Value::Null);
    }
}

#[tokio::test]
async fn a_hanging_receiver_does_not_slow_a_healthy_one() {
    let ca = TestCa::new();
    let hanging = TestReceiver::https(&ca, |_| Reply::hang()).await;
    let healthy = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s", "1h"]);
        config.webhook.timeout = Duration::from_secs(20);
        config.webhook.connect_timeout = Duration::from_secs(5);
        config.webhook.lease = Duration::from_secs(60);
        config.webhook.per_endpoint_in_flight = 2;
        config.webhook.max_in_flight = 8;
    })
    .await;
    let stuck = app.new_webhook_user("stuck", &hanging.url, None).await;
    let fine = app.new_webhook_user("fine", &healthy.url, None).await;
    for n in 0..10 {
        app.create_generation(&stuck.user, &small_generation(&format!("stuck {n}"))).await;
    }
    hanging.wait_for(2).await;
    let started = Instant::now();
    for n in 0..10 {
        app.create_generation(&fine.user, &small_generation(&format!("fine {n}"))).await;
    }
    healthy.wait_for(10).await;
    // Behind the hanging ones they would wait for the 20 s timeout.
    assert!(started.elapsed() < Duration::from_secs(15), "healthy deliveries took {:?}", started.elapsed());
    assert_eq!(hanging.received().len(), 2, "the hanging receiver is held to its per-endpoint cap");
}

#[tokio::test]
async fn deliveries_can_be_retried_by_their_owner_and_not_by_others() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |n| if n == 0 { Reply::status(500) } else { Reply::ok() }).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("owner", &receiver.url, None).await;
    let stranger = app.new_user("stranger").await;
    let generation = app.create_generation(&hooked.user, &small_generation("again")).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "failed");
    let id = delivery["id"].as_str().unwrap();

    // Another user sees nothing and cannot redeliver.
    assert_eq!(app.get(&stranger, &format!("/deliveries/{id}")).await.body, json!({"delivery": null}));
    let reply = app.post(&stranger, &format!("/deliveries/{id}/retry"), &json!({})).await;
    assert_eq!(reply.body, json!({"delivery": null}));
    assert_eq!(app.deliveries_of(&stranger, &generation).await, Vec::<Value>::new());
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);

    let reply = app.post(&hooked.user, &format!("/deliveries/{id}/retry"), &json!({})).await;
    // Queued again (an engine woken by the commit may even have sent it before the answer).
    let status = reply.body["delivery"]["status"].as_str();
    assert!(matches!(status, Some("pending" | "succeeded")), "{}", reply.text);
    let requests = receiver.wait_for(2).await;
    assert_eq!(requests[0].header("webhook-id"), requests[1].header("webhook-id"));
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attemptCount"], 2);
}

#[tokio::test]
async fn http_callback_urls_are_refused_unless_allowed() {
    let receiver = TestReceiver::http(|_| Reply::ok()).await;
    let app = spawn_app().await;
    let user = easel::admin::create_user(&*app.easel.store, "plain", 1).await.unwrap();
    let refused = easel::admin::create_api_key(
        &*app.easel.store,
        &app.easel.master_key,
        user.id,
        "plain",
        Some(&receiver.url),
        None,
        &app.config.webhook,
    )
    .await;
    assert!(refused.unwrap_err().to_string().contains("must use https://"));

    let app = spawn_app_with(|config| {
        config.webhook.allow_http = true;
        config.webhook.allow_private_networks = vec!["127.0.0.1/32".parse().unwrap()];
    })
    .await;
    let hooked = app.new_webhook_user("developer", &receiver.url, None).await;
    app.create_generation(&hooked.user, &small_generation("local development")).await;
    assert_eq!(receiver.wait_for(1).await[0].json()["type"], "image_generation.complete");
}
