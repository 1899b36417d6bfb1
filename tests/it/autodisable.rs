//! Auto-disable of failing webhooks (`webhook.disable_after`, compressed to a second here): a
//! webhook whose every attempt fails for the period is disabled and its deliveries are held, across
//! restarts; re-enabling sends everything held, in creation order; a success resets the clock.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::child::*;
use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

/// Settings for these tests: a fast schedule long enough to outlast `disable_after`, one request
/// at a time to the receiver (so arrival order is sending order).
fn compressed(config: &mut easel::config::Config, ca: &TestCa, schedule: &[&str]) {
    fast_webhooks(config, ca, schedule);
    config.webhook.disable_after = Duration::from_secs(1);
    config.webhook.per_endpoint_in_flight = 1;
}

/// The generation id a callback is about.
fn generation_of(body: &Value) -> String {
    body["data"]["object"]["id"].as_str().expect("data.object.id").to_string()
}

async fn webhook_state(app: &TestApp, user: &TestUser) -> Value {
    let reply = app.get(user, "/webhook").await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body
}

#[tokio::test]
async fn a_webhook_failing_for_the_period_is_disabled_its_deliveries_held_and_resumed_in_order() {
    let ca = TestCa::new();
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    let receiver = TestReceiver::https(&ca, move |_| {
        if answer.load(Ordering::SeqCst) { Reply::status(500).body("down") } else { Reply::ok() }
    })
    .await;
    let schedule = ["0s"].into_iter().chain(std::iter::repeat_n("100ms", 60)).collect::<Vec<_>>();
    let app = spawn_app_with(|config| compressed(config, &ca, &schedule)).await;
    let hooked = app.new_webhook_user("disabled", &receiver.url, Some("abcd")).await;
    assert_eq!(webhook_state(&app, &hooked.user).await["state"], "active");

    let first = app.create_generation(&hooked.user, &small_generation("first")).await;
    let failing_state =
        eventually(Duration::from_secs(10), || async { Some(webhook_state(&app, &hooked.user).await) }).await;
    assert!(matches!(failing_state["state"].as_str(), Some("active" | "failing")), "{failing_state}");
    let disabled = eventually(Duration::from_secs(20), || async {
        let state = webhook_state(&app, &hooked.user).await;
        (state["state"] == "disabled").then_some(state)
    })
    .await;
    assert_eq!(disabled["url"], receiver.url.as_str());
    assert!(disabled["failingSince"].is_string() && disabled["disabledAt"].is_string(), "{disabled}");
    let since = chrono_ms(&disabled["failingSince"]);
    let at = chrono_ms(&disabled["disabledAt"]);
    assert!(at - since >= 1000, "disabled after failing for the whole period: {disabled}");
    let seen = receiver.received().len();
    // Retried all along (each retry 100 ms after the last attempt's end: ten or so on a quiet
    // machine, fewer on a loaded one).
    assert!(seen >= 3, "failing for a second at 100 ms intervals: {seen} attempts");

    // New deliveries are held (kept, not attempted), and so is the pending one.
    // One after the other: a delivery is created when its generation finishes.
    let second = app.create_generation(&hooked.user, &small_generation("second")).await;
    app.finished_generation(&hooked.user, &second).await;
    let third = app.create_generation(&hooked.user, &small_generation("third")).await;
    app.finished_generation(&hooked.user, &third).await;
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), seen, "a disabled webhook is not called");
    let listed = app.get(&hooked.user, "/deliveries?status=pending").await;
    let listed = listed.body["deliveries"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert!(listed.iter().all(|d| d["held"] == true && d["status"] == "pending"), "{listed:?}");

    // Durable: the state and the held deliveries survive a restart; the CLI shows the state.
    let (dir, config) = app.stop().await;
    let keys = easel_json(dir.path(), &["keys", "list", "--json"]);
    let key = keys.as_array().unwrap().iter().find(|k| k["id"] == hooked.key_id.to_string()).unwrap().clone();
    assert_eq!(key["webhook"]["state"], "disabled", "{key}");
    assert_eq!(key["webhook"]["disabledAt"], disabled["disabledAt"]);
    let (ok, text, _) = easel_cli(dir.path(), &["keys", "list"]);
    assert!(ok && text.contains("webhook disabled at"), "{text}");
    let app = start_in(dir, config).await;
    assert_eq!(webhook_state(&app, &hooked.user).await["state"], "disabled");
    tokio::time::sleep(Duration::from_millis(600)).await;
    assert_eq!(receiver.received().len(), seen, "still held after a restart");

    // Re-enabled (the receiver works again): everything held arrives, in creation order.
    failing.store(false, Ordering::SeqCst);
    let enabled = app.post(&hooked.user, "/webhook/enable", &json!({})).await;
    assert_eq!(enabled.status, StatusCode::OK, "{}", enabled.text);
    assert_eq!(enabled.body["state"], "active");
    assert!(enabled.body["failingSince"].is_null() && enabled.body["disabledAt"].is_null());
    let received = receiver.wait_for(seen + 3).await;
    let order: Vec<String> = received[seen..].iter().map(|r| generation_of(&r.json())).collect();
    assert_eq!(order, [first.clone(), second.clone(), third.clone()], "held callbacks arrive oldest first");
    for generation in [&first, &second, &third] {
        let delivery = app.settled_delivery(&hooked.user, generation).await;
        assert_eq!(delivery["status"], "succeeded");
        assert_eq!(delivery["held"], false);
    }
    assert_eq!(webhook_state(&app, &hooked.user).await["state"], "active");
}

#[tokio::test]
async fn a_success_before_the_period_resets_the_clock() {
    let ca = TestCa::new();
    // Three failures (0, 300, 600 ms), then a success; again for each callback. The failures
    // span more than `disable_after` (2 s here), but never without a success in between.
    let receiver =
        TestReceiver::https(&ca, |n| if n % 4 == 3 { Reply::ok() } else { Reply::status(500).body("down") }).await;
    let app = spawn_app_with(|config| {
        compressed(config, &ca, &["0s", "300ms", "300ms", "300ms", "300ms"]);
        config.webhook.disable_after = Duration::from_secs(2);
    })
    .await;
    let hooked = app.new_webhook_user("resets", &receiver.url, None).await;
    let mut callbacks = 0;
    loop {
        let generation = app.create_generation(&hooked.user, &small_generation("again")).await;
        let failing = eventually(Duration::from_secs(10), || async {
            let state = webhook_state(&app, &hooked.user).await;
            (state["state"] != "active").then_some(state)
        })
        .await;
        assert_eq!(failing["state"], "failing", "{failing}");
        assert!(failing["failingSince"].is_string() && failing["disabledAt"].is_null(), "{failing}");
        let delivery = app.settled_delivery(&hooked.user, &generation).await;
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        let state = webhook_state(&app, &hooked.user).await;
        assert_eq!(state["state"], "active", "a success stops the clock: {state}");
        assert!(state["failingSince"].is_null());
        callbacks += 1;
        let received = receiver.received();
        if received.last().unwrap().at - received[0].at > Duration::from_millis(2500) {
            break;
        }
        assert!(callbacks < 10, "ten callbacks should span more than 2.5 s");
    }
    assert_eq!(receiver.received().len(), callbacks * 4);
}

#[tokio::test]
async fn the_cli_re_enables_a_disabled_webhook() {
    let ca = TestCa::new();
    let failing = Arc::new(AtomicBool::new(true));
    let answer = failing.clone();
    let receiver =
        TestReceiver::https(&ca, move |_| if answer.load(Ordering::SeqCst) { Reply::status(500) } else { Reply::ok() })
            .await;
    let schedule = ["0s"].into_iter().chain(std::iter::repeat_n("100ms", 60)).collect::<Vec<_>>();
    let app = spawn_app_with(|config| compressed(config, &ca, &schedule)).await;
    let hooked = app.new_webhook_user("cli", &receiver.url, None).await;
    let generation = app.create_generation(&hooked.user, &small_generation("cli")).await;
    eventually(Duration::from_secs(20), || async {
        (webhook_state(&app, &hooked.user).await["state"] == "disabled").then_some(())
    })
    .await;
    let seen = receiver.received().len();
    failing.store(false, Ordering::SeqCst);
    let state = easel_json(app.dir.path(), &["keys", "enable-webhook", &hooked.key_id.to_string(), "--json"]);
    assert_eq!(state["state"], "active", "{state}");
    // The running server finds the resumed delivery within its poll interval.
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(receiver.received().len(), seen + 1);
    let (ok, _, stderr) = easel_cli(app.dir.path(), &["keys", "enable-webhook", &uuid::Uuid::new_v4().to_string()]);
    assert!(!ok && stderr.contains("no live API key"), "{stderr}");
}

/// Milliseconds of an RFC 3339 time.
fn chrono_ms(value: &Value) -> i64 {
    easel::clock::parse_rfc3339(value.as_str().expect("a time")).expect("RFC 3339")
}
