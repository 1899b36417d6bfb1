//! The request inspector: bins created over REST and the CLI, requests of any method and path
//! recorded (body cap, size, source) and answered as configured (status, headers, body, delay),
//! owners only, caps and expiry, the live stream (SSE and `inspect requests --follow`), and
//! callbacks of a key whose webhook URL is a bin: delivered in-process, checked (bearer,
//! signature), and scheduled by the bin's answer like a network receiver's.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::child::{EASEL, database_env, easel_cli, easel_json};
use crate::helpers::*;

/// Creates a bin for `user` answering `response`; returns its JSON.
async fn create_bin(app: &TestApp, user: &TestUser, response: Value) -> Value {
    let reply = app.post(user, "/inspector/bins", &response).await;
    assert_eq!(reply.status, StatusCode::CREATED, "{}", reply.text);
    reply.body
}

/// The bin's requests, newest first.
async fn requests_of(app: &TestApp, user: &TestUser, bin: &str) -> Vec<Value> {
    let reply = app.get(user, &format!("/inspector/bins/{bin}/requests?limit=100")).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    reply.body["requests"].as_array().unwrap().clone()
}

fn header<'a>(request: &'a Value, name: &str) -> Option<&'a str> {
    request["headers"].as_array()?.iter().find(|pair| pair[0] == name).and_then(|pair| pair[1].as_str())
}

/// A key of `user`'s whose webhook URL is `url` (a bin of this server), with `hook-secret` as its
/// webhook callback API key, created as `easel keys create` does.
async fn key_calling_back(app: &TestApp, user: &TestUser, url: &str) -> WebhookUser {
    let own_bins = format!("{}/inspect/", app.easel.public_url);
    let spec = easel::admin::KeySpec {
        user: user.id,
        name: "bin key",
        webhook_url: Some(url),
        webhook_api_key: Some("hook-secret"),
        manage_keys: false,
        own_bins: Some(&own_bins),
    };
    let key = easel::admin::create_key(&*app.easel.store, &app.easel.master_key, &spec, &app.config.webhook)
        .await
        .expect("a key calling back a bin of this server is accepted");
    WebhookUser {
        user: TestUser { id: user.id, key: key.key.clone() },
        key_id: key.record.id,
        signing_secret: key.signing_secret.clone(),
    }
}

#[tokio::test]
async fn a_bin_records_any_method_and_path_and_answers_as_configured() {
    let app = spawn_app_with(|config| config.inspector.body_cap = 1024).await;
    let bin = create_bin(
        &app,
        &app.admin,
        json!({"status": 202, "headers": {"X-Bin": "yes"}, "body": "recorded", "delayMs": 300}),
    )
    .await;
    let id = bin["id"].as_str().unwrap();
    let url = bin["url"].as_str().unwrap().to_string();
    assert_eq!(url, format!("{}/inspect/{id}", app.origin));
    assert_eq!(bin["response"]["status"], 202);

    let started = Instant::now();
    let big = "x".repeat(3000);
    let response = app
        .client
        .post(format!("{url}/deep/path?a=1&b=two"))
        .header("x-custom", "custom value")
        .body(big.clone())
        .send()
        .await
        .unwrap();
    assert!(started.elapsed() >= Duration::from_millis(300), "the configured delay: {:?}", started.elapsed());
    assert_eq!(response.status(), 202);
    assert_eq!(response.headers()["x-bin"], "yes");
    assert_eq!(response.text().await.unwrap(), "recorded");
    for method in ["GET", "PUT", "DELETE", "PATCH"] {
        let method = reqwest::Method::from_bytes(method.as_bytes()).unwrap();
        let response = app.client.request(method, &url).body("small").send().await.unwrap();
        assert_eq!(response.status(), 202);
    }

    let requests = requests_of(&app, &app.admin, id).await;
    let methods: Vec<&str> = requests.iter().map(|r| r["method"].as_str().unwrap()).collect();
    assert_eq!(methods, ["PATCH", "DELETE", "PUT", "GET", "POST"], "newest first");
    let seqs: Vec<i64> = requests.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [5, 4, 3, 2, 1]);
    let post = &requests[4];
    assert_eq!(post["path"], "/deep/path?a=1&b=two");
    assert_eq!(post["bodySize"], 3000);
    assert_eq!(post["body"].as_str().unwrap().len(), 1024, "the body is stored up to inspector.body_cap");
    assert_eq!(post["bodyTruncated"], true);
    assert_eq!(header(post, "x-custom"), Some("custom value"));
    assert_eq!(header(post, "content-length"), Some("3000"));
    assert!(post["source"].as_str().unwrap().starts_with("127.0.0.1:"), "{}", post["source"]);
    assert!(post["callbackChecks"].is_null(), "no key calls this bin back");
    let get = &requests[3];
    assert_eq!(
        (get["path"].as_str(), get["body"].as_str(), get["bodyTruncated"].as_bool()),
        (Some("/"), Some("small"), Some(false))
    );

    // Paging with the cursor.
    let page = app.get(&app.admin, &format!("/inspector/bins/{id}/requests?limit=2")).await;
    assert_eq!(page.body["requests"].as_array().unwrap().len(), 2);
    assert_eq!(page.body["nextBefore"], 4);
    let next = app.get(&app.admin, &format!("/inspector/bins/{id}/requests?limit=2&before=4")).await;
    let seqs: Vec<i64> = next.body["requests"].as_array().unwrap().iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert_eq!(seqs, [3, 2]);

    // The owner changes the answer: a 429 with Retry-After, at once.
    let reply = app
        .send(
            app.client
                .put(app.api(&format!("/inspector/bins/{id}/response")))
                .bearer_auth(&app.admin.key)
                .json(&json!({"status": 429, "headers": [["Retry-After", "7"]], "body": "slow down"})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let response = app.client.post(&url).send().await.unwrap();
    assert_eq!(response.status(), 429);
    assert_eq!(response.headers()["retry-after"], "7");
    let listed = app.get(&app.admin, "/inspector/bins").await;
    assert_eq!(listed.body["bins"][0]["requestCount"], 6);

    // Bad configurations are refused naming the field.
    for (body, field) in [
        (json!({"status": 99}), "status"),
        (json!({"headers": {"Content-Length": "3"}}), "headers"),
        (json!({"delayMs": 600_000}), "delayMs"),
        (json!({"colour": "red"}), "colour"),
    ] {
        let reply = app.post(&app.admin, "/inspector/bins", &body).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{body}: {}", reply.text);
        assert!(reply.body["error"].as_str().unwrap().contains(field), "{}", reply.text);
    }

    // Deleted: the URL answers 404 in the error shape.
    assert_eq!(app.delete(&app.admin, &format!("/inspector/bins/{id}")).await.status, StatusCode::NO_CONTENT);
    let reply = app.send(app.client.post(&url)).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["code"], "not-found", "{}", reply.text);
}

#[tokio::test]
async fn another_users_bin_answers_exactly_like_a_missing_one() {
    let app = spawn_app().await;
    let other = app.new_user("other").await;
    let bin = create_bin(&app, &app.admin, json!({})).await;
    let id = bin["id"].as_str().unwrap();
    let missing = uuid::Uuid::new_v4().to_string();
    for path in ["", "/requests", "/stream"] {
        let theirs = app.get(&other, &format!("/inspector/bins/{id}{path}")).await;
        let absent = app.get(&other, &format!("/inspector/bins/{missing}{path}")).await;
        assert_eq!(theirs.status, StatusCode::NOT_FOUND, "{path}: {}", theirs.text);
        assert_eq!((theirs.status, theirs.text.clone()), (absent.status, absent.text), "{path}");
    }
    let put = |bin: String| {
        app.client
            .put(app.api(&format!("/inspector/bins/{bin}/response")))
            .bearer_auth(&other.key)
            .json(&json!({"status": 500}))
    };
    let (theirs, absent) = (app.send(put(id.to_string())).await, app.send(put(missing.clone())).await);
    assert_eq!((theirs.status, theirs.text), (absent.status, absent.text));
    let theirs = app.delete(&other, &format!("/inspector/bins/{id}")).await;
    assert_eq!(theirs.status, StatusCode::NOT_FOUND);
    assert!(app.get(&other, "/inspector/bins").await.body["bins"].as_array().unwrap().is_empty());

    // Untouched for its owner.
    let mine = app.get(&app.admin, &format!("/inspector/bins/{id}")).await;
    assert_eq!((mine.status, mine.body["response"]["status"].as_u64()), (StatusCode::OK, Some(200)));
    assert_eq!(app.get(&app.admin, "/inspector/bins").await.body["bins"].as_array().unwrap().len(), 1);
    // The REST routes need a key; the capture URL does not.
    assert_eq!(app.send(app.client.get(app.api("/inspector/bins"))).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.client.get(bin["url"].as_str().unwrap()).send().await.unwrap().status(), 200);
}

#[tokio::test]
async fn bins_requests_and_bytes_are_capped_dropping_the_oldest() {
    let app = spawn_app_with(|config| {
        config.inspector.max_bins_per_user = 2;
        config.inspector.max_requests_per_bin = 3;
        config.inspector.body_cap = 1000;
        config.inspector.max_bytes_per_bin = 4000;
    })
    .await;
    let counted = create_bin(&app, &app.admin, json!({})).await;
    let sized = create_bin(&app, &app.admin, json!({})).await;
    let refused = app.post(&app.admin, "/inspector/bins", &json!({})).await;
    assert_eq!(refused.status, StatusCode::CONFLICT, "{}", refused.text);
    assert!(refused.text.contains("inspector.max_bins_per_user"), "{}", refused.text);
    // Another user has their own allowance.
    let other = app.new_user("other").await;
    create_bin(&app, &other, json!({})).await;

    for n in 1..=5 {
        let response =
            app.client.post(counted["url"].as_str().unwrap()).body(format!("request {n}")).send().await.unwrap();
        assert_eq!(response.status(), 200);
    }
    let kept: Vec<String> = requests_of(&app, &app.admin, counted["id"].as_str().unwrap())
        .await
        .iter()
        .map(|r| r["body"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(kept, ["request 5", "request 4", "request 3"]);

    for n in 0..8 {
        let body = format!("{n}{}", "b".repeat(999));
        app.client.post(sized["url"].as_str().unwrap()).body(body).send().await.unwrap();
    }
    let id = sized["id"].as_str().unwrap();
    let kept = requests_of(&app, &app.admin, id).await;
    let seqs: Vec<i64> = kept.iter().map(|r| r["seq"].as_i64().unwrap()).collect();
    assert!(seqs.len() >= 2 && seqs.len() < 4, "about 4000 bytes of 1000-byte bodies: {seqs:?}");
    assert_eq!(seqs[0], 8, "the newest is kept");
    assert!(seqs.windows(2).all(|w| w[0] == w[1] + 1), "the oldest were dropped: {seqs:?}");
    let bin = app.get(&app.admin, &format!("/inspector/bins/{id}")).await.body;
    assert!(bin["storedBytes"].as_u64().unwrap() <= 4000, "{bin}");
}

#[tokio::test]
async fn expired_bins_answer_as_missing_and_are_purged() {
    // Long enough for the first request to come before the bin expires, on a loaded machine too.
    let ttl = Duration::from_secs(3);
    let app = spawn_app_with(|config| config.inspector.bin_ttl = ttl).await;
    let bin = create_bin(&app, &app.admin, json!({"status": 201})).await;
    let created = std::time::Instant::now();
    let id: uuid::Uuid = bin["id"].as_str().unwrap().parse().unwrap();
    let url = bin["url"].as_str().unwrap();
    assert_eq!(app.client.post(url).body("early").send().await.unwrap().status(), 201);
    tokio::time::sleep((ttl + Duration::from_millis(200)).saturating_sub(created.elapsed())).await;

    let late = app.send(app.client.post(url).body("late")).await;
    assert_eq!((late.status, late.body["code"].as_str()), (StatusCode::NOT_FOUND, Some("not-found")));
    assert_eq!(app.get(&app.admin, &format!("/inspector/bins/{id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&app.admin, &format!("/inspector/bins/{id}/requests")).await.status, StatusCode::NOT_FOUND);
    assert!(app.get(&app.admin, "/inspector/bins").await.body["bins"].as_array().unwrap().is_empty());
    // Still in the database until purged (read as of long ago)...
    let store = &app.easel.store;
    assert!(store.get_bin(id, None, 0).await.unwrap().is_some());
    // ...which the next bin's creation does, with its requests.
    create_bin(&app, &app.admin, json!({})).await;
    assert!(store.get_bin(id, None, 0).await.unwrap().is_none(), "the expired bin is purged");
    assert_eq!(store.list_requests(id, None, None, 10, 0).await.unwrap(), None);
}

/// Reads server-sent events from `response` until one whose data contains `needle`; returns that
/// event's text.
async fn event_with(response: &mut reqwest::Response, needle: &str) -> String {
    let mut text = String::new();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        while let Some(end) = text.find("\n\n") {
            let event: String = text.drain(..end + 2).collect();
            if event.contains(needle) {
                return event;
            }
        }
        let chunk = tokio::time::timeout_at(deadline, response.chunk())
            .await
            .unwrap_or_else(|_| panic!("no event with {needle:?} within 10 s; got {text:?}"))
            .expect("the stream reads")
            .expect("the stream is still open");
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
}

#[tokio::test]
async fn the_event_stream_sends_requests_captured_after_subscribing() {
    let app = spawn_app().await;
    let bin = create_bin(&app, &app.admin, json!({})).await;
    let (id, url) = (bin["id"].as_str().unwrap(), bin["url"].as_str().unwrap());
    app.client.post(url).body("before subscribing").send().await.unwrap();

    let mut stream = app
        .client
        .get(app.api(&format!("/inspector/bins/{id}/stream")))
        .bearer_auth(&app.admin.key)
        .send()
        .await
        .unwrap();
    assert_eq!(stream.status(), 200);
    assert_eq!(stream.headers()["content-type"], "text/event-stream");
    // Give the subscription a moment, then capture.
    tokio::time::sleep(Duration::from_millis(100)).await;
    app.client.put(format!("{url}/live?n=1")).body("while following").send().await.unwrap();
    let event = event_with(&mut stream, "while following").await;
    assert!(event.contains("event: request"), "{event}");
    assert!(event.contains("id: 2"), "{event}");
    assert!(!event.contains("before subscribing"), "only requests captured after subscribing: {event}");
    let data: Value =
        serde_json::from_str(event.lines().find_map(|line| line.strip_prefix("data: ")).expect("a data line")).unwrap();
    assert_eq!((data["method"].as_str(), data["path"].as_str()), (Some("PUT"), Some("/live?n=1")));

    // Resuming from an event id replays what came after it.
    let mut resumed = app
        .client
        .get(app.api(&format!("/inspector/bins/{id}/stream")))
        .bearer_auth(&app.admin.key)
        .header("last-event-id", "0")
        .send()
        .await
        .unwrap();
    assert!(event_with(&mut resumed, "before subscribing").await.contains("id: 1"));

    // Deleting the bin ends the stream with `gone`.
    app.delete(&app.admin, &format!("/inspector/bins/{id}")).await;
    assert!(event_with(&mut stream, "expired or was deleted").await.contains("event: gone"));
}

#[tokio::test]
async fn a_callback_to_a_bin_of_this_server_arrives_in_process_bearer_matched_and_signature_verified() {
    // Default webhook settings: https only, loopback blocked by the SSRF guard.
    let app = spawn_app().await;
    let owner = app.new_user("owner").await;
    let bin = create_bin(&app, &owner, json!({})).await;
    let (id, url) = (bin["id"].as_str().unwrap(), bin["url"].as_str().unwrap());
    assert!(url.starts_with("http://127.0.0.1:"), "{url}");
    let hooked = key_calling_back(&app, &owner, &format!("{url}/callbacks")).await;

    // The https rule and the guard still hold for any other URL on this server.
    let own_bins = format!("{}/inspect/", app.easel.public_url);
    for other in [format!("{}/api/rest/v1/me", app.origin), format!("{}/inspect/not-a-bin", app.origin)] {
        let spec = easel::admin::KeySpec {
            user: owner.id,
            name: "not a bin",
            webhook_url: Some(&other),
            webhook_api_key: None,
            manage_keys: false,
            own_bins: Some(&own_bins),
        };
        let refused =
            easel::admin::create_key(&*app.easel.store, &app.easel.master_key, &spec, &app.config.webhook).await;
        assert!(refused.is_err(), "{other} must be refused");
    }

    let generation = app.create_generation(&hooked.user, &small_generation("a lighthouse")).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(delivery["attempts"][0]["statusCode"], 200);

    let requests = requests_of(&app, &owner, id).await;
    assert_eq!(requests.len(), 1, "{requests:#?}");
    let callback = &requests[0];
    assert_eq!((callback["method"].as_str(), callback["path"].as_str()), (Some("POST"), Some("/callbacks")));
    assert_eq!(callback["source"], "in-process");
    assert_eq!(header(callback, "authorization"), Some("Bearer ********"), "the matched bearer is kept masked");
    assert!(!callback.to_string().contains("hook-secret"), "secrets are shown once");
    assert_eq!(header(callback, "content-type"), Some("application/json"));
    assert_eq!(header(callback, "webhook-id"), delivery["webhookId"].as_str());
    let host = app.origin.strip_prefix("http://").unwrap();
    assert_eq!(header(callback, "host"), Some(host));
    let body: Value = serde_json::from_str(callback["body"].as_str().unwrap()).unwrap();
    assert_eq!(body["data"]["object"]["id"], generation.as_str());
    assert_eq!(header(callback, "content-length"), Some(callback["bodySize"].to_string().as_str()));
    let checks = callback["callbackChecks"].as_array().expect("the bin checks its owner's key");
    assert_eq!(checks.len(), 1);
    assert_eq!(checks[0]["apiKeyId"], hooked.key_id.to_string());
    assert_eq!(checks[0]["bearerMatched"], true, "{:#}", checks[0]);
    assert_eq!(checks[0]["signatureVerified"], true, "{:#}", checks[0]);

    // The doctor says there is nothing to connect to.
    let doctor = app.post(&hooked.user, "/webhook/doctor", &json!({})).await;
    assert_eq!(doctor.status, StatusCode::OK, "{}", doctor.text);
    assert_eq!(doctor.body["verdict"], "ok", "{:#}", doctor.body);
    assert!(doctor.body["steps"][0]["detail"].as_str().unwrap().contains("in-process"), "{:#}", doctor.body);
    assert_eq!(requests_of(&app, &owner, id).await.len(), 1, "the doctor records nothing");

    // The same for a test callback, which also says it is one.
    let test = app.post(&hooked.user, "/webhook/test", &json!({})).await;
    assert_eq!(test.status, StatusCode::OK, "{}", test.text);
    assert_eq!(test.body["delivered"], true, "{:#}", test.body);
    let requests = requests_of(&app, &owner, id).await;
    assert_eq!(requests.len(), 2);
    assert_eq!(header(&requests[0], "easel-test"), Some("true"));
    assert_eq!(requests[0]["callbackChecks"][0]["signatureVerified"], true);

    // A forged callback sent over the network is recorded, and shown to fail both checks.
    app.client
        .post(format!("{url}/callbacks"))
        .header("authorization", "Bearer guessed")
        .header("webhook-id", "msg_forged")
        .header("webhook-timestamp", (chrono_seconds()).to_string())
        .header("webhook-signature", "v1,bm90IGEgc2lnbmF0dXJl")
        .body("{}")
        .send()
        .await
        .unwrap();
    let forged = &requests_of(&app, &owner, id).await[0];
    assert_eq!(header(forged, "authorization"), Some("Bearer guessed"), "a bearer that is no secret is kept as sent");
    let check = &forged["callbackChecks"][0];
    assert_eq!((check["bearerMatched"].as_bool(), check["signatureVerified"].as_bool()), (Some(false), Some(false)));
    assert!(check["signature"].as_str().unwrap().contains("no v1 signature matches"), "{check}");
    assert!(forged["source"].as_str().unwrap().starts_with("127.0.0.1:"));
}

fn chrono_seconds() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn a_bin_answering_500_is_retried_410_ends_the_delivery_429_is_waited_out_and_slowness_times_out() {
    let app = spawn_app_with(|config| {
        config.webhook.retry_schedule =
            ["0s", "100ms", "100ms"].iter().map(|d| easel::config::duration_text::parse(d).unwrap()).collect();
        config.webhook.retry_jitter = 0.0;
        config.webhook.poll_interval = Duration::from_millis(100);
        config.webhook.timeout = Duration::from_secs(1);
        config.webhook.connect_timeout = Duration::from_secs(1);
    })
    .await;
    let owner = app.new_user("owner").await;
    let bin = create_bin(&app, &owner, json!({"status": 500, "body": "bin says no"})).await;
    let (id, url) = (bin["id"].as_str().unwrap(), bin["url"].as_str().unwrap());
    let hooked = key_calling_back(&app, &owner, url).await;

    let generation = app.create_generation(&hooked.user, &small_generation("a storm")).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "failed", "{delivery:#}");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 3, "the whole schedule: {delivery:#}");
    for attempt in attempts {
        assert_eq!(attempt["statusCode"], 500);
        assert_eq!(attempt["errorClass"], "http_status");
        assert_eq!(attempt["responseExcerpt"], "bin says no");
    }
    let requests = requests_of(&app, &owner, id).await;
    assert_eq!(requests.len(), 3, "each attempt reached the bin");
    let ids: Vec<&str> = requests.iter().map(|r| header(r, "webhook-id").unwrap()).collect();
    assert!(ids.iter().all(|i| Some(*i) == delivery["webhookId"].as_str()), "one delivery, sent again: {ids:?}");

    // 410 Gone: no retry.
    let reply = app
        .send(
            app.client
                .put(app.api(&format!("/inspector/bins/{id}/response")))
                .bearer_auth(&owner.key)
                .json(&json!({"status": 410})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let generation = app.create_generation(&hooked.user, &small_generation("a calm")).await;
    let delivery = app.settled_delivery(&hooked.user, &generation).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"].as_array().unwrap().len(), 1, "{delivery:#}");
    assert_eq!(delivery["attempts"][0]["statusCode"], 410);

    // 429 with Retry-After: the next attempt waits as long as the bin asked, not the schedule's 100 ms.
    let reply = app
        .send(
            app.client
                .put(app.api(&format!("/inspector/bins/{id}/response")))
                .bearer_auth(&owner.key)
                .json(&json!({"status": 429, "headers": {"Retry-After": "3"}})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let generation = app.create_generation(&hooked.user, &small_generation("a breeze")).await;
    let delivery = eventually(Duration::from_secs(30), || async {
        let deliveries = app.deliveries_of(&hooked.user, &generation).await;
        deliveries.first().filter(|d| d["attempts"].as_array().is_some_and(|a| !a.is_empty())).cloned()
    })
    .await;
    assert_eq!(delivery["status"], "pending", "{delivery:#}");
    assert_eq!(delivery["attempts"][0]["statusCode"], 429);
    let time = |value: &Value| easel::clock::parse_rfc3339(value.as_str().unwrap()).unwrap();
    // Counted from the attempt's end.
    let ended = time(&delivery["attempts"][0]["startedAt"]) + delivery["attempts"][0]["durationMs"].as_i64().unwrap();
    let wait = time(&delivery["nextAttemptAt"]) - ended;
    assert!((2900..3200).contains(&wait), "Retry-After: 3 honoured, waited {wait} ms: {delivery:#}");

    // Slower than webhook.timeout: a timeout, as over the network.
    let reply = app
        .send(
            app.client
                .put(app.api(&format!("/inspector/bins/{id}/response")))
                .bearer_auth(&owner.key)
                .json(&json!({"status": 200, "delayMs": 10000})),
        )
        .await;
    assert_eq!(reply.status, StatusCode::OK);
    let test = app.post(&hooked.user, "/webhook/test", &json!({})).await;
    assert_eq!(test.body["delivered"], false, "{:#}", test.body);
    assert_eq!(test.body["attempt"]["errorClass"], "timeout", "{:#}", test.body);
    let duration = test.body["attempt"]["durationMs"].as_u64().unwrap();
    assert!((1000..5000).contains(&duration), "cut at webhook.timeout (1 s), not the bin's 10 s: {duration} ms");
}

#[tokio::test]
async fn the_cli_creates_lists_follows_and_deletes_bins() {
    let app = spawn_app().await;
    let dir = app.dir.path();
    let user = app.admin.id.to_string();
    let created = easel_json(
        dir,
        &[
            "inspect",
            "create",
            "--user",
            &user,
            "--status",
            "503",
            "--header",
            "Retry-After: 2",
            "--delay",
            "10ms",
            "--json",
        ],
    );
    let id = created["id"].as_str().unwrap().to_string();
    assert_eq!(created["response"]["status"], 503);
    assert_eq!(created["response"]["delayMs"], 10);
    let listed = easel_json(dir, &["inspect", "list", "--user", &user, "--json"]);
    assert_eq!(listed["bins"][0]["id"], id.as_str());
    let (ok, _, stderr) = easel_cli(dir, &["inspect", "create", "--user", &user, "--status", "42"]);
    assert!(!ok && stderr.contains("--status"), "{stderr}");

    let mut command = Command::new(EASEL);
    command
        .args(["inspect", "requests", &id, "--follow"])
        .env("EASEL_DATA_DIR", dir)
        .envs(database_env(dir))
        .stdout(Stdio::piped())
        .stderr(Stdio::null());
    let mut child = command.spawn().expect("easel runs");
    let stdout = child.stdout.take().unwrap();
    let (lines_tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    let first = lines.recv_timeout(Duration::from_secs(30)).expect("the command starts following");
    assert!(first.starts_with("following bin"), "{first}");

    let bin_url = format!("{}/inspect/{id}", app.origin);
    let response =
        app.client.post(format!("{bin_url}/from-cli-test")).body("captured while following").send().await.unwrap();
    assert_eq!(response.status(), 503);
    assert_eq!(response.headers()["retry-after"], "2");
    let mut seen = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(15);
    while !seen.iter().any(|l: &String| l.contains("captured while following")) {
        let left = deadline.saturating_duration_since(Instant::now());
        match lines.recv_timeout(left) {
            Ok(line) => seen.push(line),
            Err(_) => panic!("--follow printed no captured request: {seen:#?}"),
        }
    }
    assert!(seen[0].starts_with("#1 ") && seen[0].contains("POST /from-cli-test"), "{seen:#?}");
    let _ = child.kill();
    let _ = child.wait();

    let (ok, stdout, stderr) = easel_cli(dir, &["inspect", "delete", &id]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains("deleted"));
    assert_eq!(app.client.get(&bin_url).send().await.unwrap().status(), 404);
    let (ok, _, stderr) = easel_cli(dir, &["inspect", "requests", &id]);
    assert!(!ok && stderr.contains("no bin"), "{stderr}");
}

#[tokio::test]
async fn a_bin_gets_the_same_headers_and_body_as_a_network_receiver() {
    use crate::receiver::{Reply as ReceiverReply, TestCa, TestReceiver};
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| ReceiverReply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let networked = app.new_webhook_user("networked", &receiver.url, Some("hook-secret")).await;
    let bin = create_bin(&app, &networked.user, json!({})).await;
    let in_process = key_calling_back(&app, &networked.user, bin["url"].as_str().unwrap()).await;

    for key in [&networked, &in_process] {
        let test = app.post(&key.user, "/webhook/test", &json!({})).await;
        assert_eq!(test.body["delivered"], true, "{:#}", test.body);
    }
    let network = &receiver.wait_for(1).await[0];
    let captured = &requests_of(&app, &networked.user, bin["id"].as_str().unwrap()).await[0];
    let mut network_names: Vec<String> = network.headers.keys().map(|name| name.to_string()).collect();
    let mut bin_names: Vec<String> =
        captured["headers"].as_array().unwrap().iter().map(|pair| pair[0].as_str().unwrap().to_string()).collect();
    network_names.sort();
    bin_names.sort();
    assert_eq!(bin_names, network_names, "the same headers as over the network");
    for name in ["content-type", "accept", "user-agent", "easel-test"] {
        assert_eq!(header(captured, name), network.header(name), "{name}");
    }
    assert_eq!(header(captured, "content-length"), Some(captured["bodySize"].to_string().as_str()));
    // Both bodies have the same shape (they differ only in ids and times).
    let (network_body, bin_body) =
        (network.json(), serde_json::from_str::<Value>(captured["body"].as_str().unwrap()).unwrap());
    crate::webhooks::assert_same_shape(&bin_body, &network_body, "$");
    crate::webhooks::verify_signature(network, &networked.signing_secret);
    assert_eq!(captured["callbackChecks"][0]["signatureVerified"], true);
}
