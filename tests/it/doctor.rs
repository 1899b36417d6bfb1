//! Troubleshooting callbacks: test callbacks (`POST /webhook/test`), which go through the
//! delivery engine into the delivery log and are never retried.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::child::easel_cli_with;
use crate::helpers::*;
use crate::receiver::{Received, Reply, TestCa, TestReceiver};
use crate::webhooks::{SAMPLE, assert_same_shape, expected_signature, verify_signature};

/// A receiver that takes a callback only with `Bearer abcd` and a signature made with the secret
/// in `secret` (set once the key exists), as a careful receiver does.
async fn strict_receiver(ca: &TestCa, secret: Arc<Mutex<String>>) -> TestReceiver {
    TestReceiver::https_judging(ca, move |request: &Received| {
        let signed =
            request.header("webhook-signature") == Some(expected_signature(request, &secret.lock().unwrap()).as_str());
        if request.header("authorization") != Some("Bearer abcd") || !signed {
            return Reply::status(401).body("{\"error\": \"unauthenticated\"}");
        }
        Reply::ok().body("{\"received\": true}")
    })
    .await
}

/// A server, a user `name` whose key (webhook key `abcd`) calls back a strict receiver, and the
/// receiver's CA (its file must outlive the server).
async fn strict_receiver_of_a_key(name: &str) -> (TestReceiver, TestApp, WebhookUser, TestCa) {
    let ca = TestCa::new();
    let secret = Arc::new(Mutex::new(String::new()));
    let receiver = strict_receiver(&ca, secret.clone()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user(name, &receiver.url, Some("abcd")).await;
    *secret.lock().unwrap() = hooked.signing_secret.clone();
    (receiver, app, hooked, ca)
}

/// The test callback as a receiver got it: the guide's shape, signed, with the key's bearer, and
/// marked as a test by its header only.
fn assert_real_shape_marked_as_test(request: &Received, secret: &str) {
    assert_eq!(request.header("easel-test"), Some("true"));
    assert_eq!(request.header("authorization"), Some("Bearer abcd"));
    assert_eq!(request.header("content-type"), Some("application/json"));
    verify_signature(request, secret);
    let sample: Value = serde_json::from_str(SAMPLE).unwrap();
    let body = request.json();
    assert_same_shape(&sample, &body, "$");
    assert_eq!(body["type"], "image_generation.complete");
    assert_eq!(body["data"]["object"]["prompt"], "Easel test callback");
    assert_eq!(body["data"]["object"]["images"].as_array().unwrap().len(), 1);
}

#[tokio::test]
async fn a_test_callback_is_delivered_recorded_and_listed_with_its_attempt() {
    let (receiver, app, hooked, _ca) = strict_receiver_of_a_key("tester").await;

    let reply = app.post(&hooked.user, "/webhook/test", &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["delivered"], true, "{:#}", reply.body);
    let attempt = &reply.body["attempt"];
    assert_eq!((attempt["attempt"].as_u64(), attempt["statusCode"].as_u64()), (Some(1), Some(200)));
    assert!(attempt["durationMs"].is_u64() && attempt["errorClass"].is_null(), "{attempt}");
    let delivery = &reply.body["delivery"];
    assert_eq!(
        (delivery["status"].as_str(), delivery["eventType"].as_str()),
        (Some("succeeded"), Some("webhook.test"))
    );

    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_real_shape_marked_as_test(&received[0], &hooked.signing_secret);
    assert_eq!(received[0].header("webhook-id"), delivery["webhookId"].as_str());
    assert_eq!(received[0].json()["data"]["object"]["id"], delivery["generationId"]);

    let listed = app.get(&hooked.user, "/deliveries").await;
    assert_eq!(listed.status, StatusCode::OK);
    let deliveries = listed.body["deliveries"].as_array().unwrap();
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["id"], delivery["id"]);
    assert_eq!(deliveries[0]["attempts"][0]["statusCode"], 200);
    let id = delivery["id"].as_str().unwrap();
    assert_eq!(app.get(&hooked.user, &format!("/deliveries/{id}")).await.body["delivery"]["status"], "succeeded");
    let filtered = app.get(&hooked.user, "/deliveries?status=failed&limit=5").await;
    assert_eq!(filtered.body, json!({"deliveries": []}));
    assert_eq!(app.get(&hooked.user, "/deliveries?limit=0").await.status, StatusCode::BAD_REQUEST);
}

#[tokio::test]
async fn a_failed_test_callback_is_recorded_once_and_never_retried() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::status(500).body("boom")).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "50ms", "50ms"])).await;
    let hooked = app.new_webhook_user("failing", &receiver.url, Some("abcd")).await;

    let reply = app.post(&hooked.user, "/webhook/test", &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert_eq!(reply.body["delivered"], false);
    let attempt = &reply.body["attempt"];
    assert_eq!(attempt["statusCode"], 500);
    assert_eq!(attempt["errorClass"], "http_status");
    assert_eq!(attempt["errorDetail"], "HTTP 500 Internal Server Error");
    assert_eq!(attempt["responseExcerpt"], "boom");
    assert_eq!(reply.body["delivery"]["status"], "failed");
    assert!(reply.body["delivery"]["nextAttemptAt"].is_null());

    // The schedule would have retried a generation's callback twice by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(receiver.received().len(), 1);
    let id = reply.body["delivery"]["id"].as_str().unwrap();
    let delivery = app.get(&hooked.user, &format!("/deliveries/{id}")).await.body;
    assert_eq!(delivery["delivery"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(delivery["delivery"]["attemptCount"], 1);

    // Nor does the operator's bulk redelivery after an outage send old tests again.
    let (ok, stdout, stderr) = easel_cli_with(
        app.dir.path(),
        &["deliveries", "retry", "--failed-since", "2000-01-01T00:00:00Z", "--json"],
        &[],
    );
    assert!(ok, "{stderr}");
    assert_eq!(serde_json::from_str::<Value>(&stdout).unwrap(), json!({"retried": 0}));
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(receiver.received().len(), 1);
}

#[tokio::test]
async fn keys_without_a_webhook_get_a_400_and_nobody_sees_another_users_tests() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("owner", &receiver.url, Some("abcd")).await;
    let other = app.new_user("other").await;

    {
        let path = "/webhook/test";
        let reply = app.post(&other, path, &json!({})).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert_eq!(reply.body["code"], "validation-failed");
        assert_eq!(reply.body["path"], "$");
        assert!(
            reply.body["error"].as_str().unwrap().starts_with("this API key has no webhook callback URL"),
            "{}",
            reply.text
        );
        let anonymous = app.send(app.client.post(app.api(path))).await;
        assert_eq!(anonymous.status, StatusCode::UNAUTHORIZED);
    }
    assert!(receiver.received().is_empty());

    let tested = app.post(&hooked.user, "/webhook/test", &json!({})).await;
    let id = tested.body["delivery"]["id"].as_str().unwrap().to_string();
    let generation = tested.body["delivery"]["generationId"].as_str().unwrap().to_string();
    assert_eq!(app.get(&other, "/deliveries").await.body, json!({"deliveries": []}));
    assert_eq!(app.get(&other, &format!("/deliveries/{id}")).await.body, json!({"delivery": null}));
    assert_eq!(app.post(&other, &format!("/deliveries/{id}/retry"), &json!({})).await.body, json!({"delivery": null}));
    assert_eq!(app.get(&other, &format!("/generations/{generation}/deliveries")).await.body, json!({"deliveries": []}));
    assert_eq!(app.get(&hooked.user, "/deliveries").await.body["deliveries"].as_array().unwrap().len(), 1);
    assert_eq!(receiver.received().len(), 1);
}
