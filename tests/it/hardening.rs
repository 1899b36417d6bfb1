//! What a hostile client, a misbehaving receiver or a failing disk does to Easel: each test here
//! reproduced a defect before it was fixed (issue 8), on both backends.

use std::time::{Duration, Instant};

use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

/// Runs SQL on the test server's own database, from a connection of the test's (as a second
/// process would): `sqlite` on SQLite, `postgres` on PostgreSQL.
async fn run_sql(app: &TestApp, sqlite: &str, postgres: &str) {
    match crate::BACKEND {
        Backend::Sqlite => {
            let options = sqlx::sqlite::SqliteConnectOptions::new()
                .filename(app.dir.path().join("easel.db"))
                .busy_timeout(Duration::from_secs(10));
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect_with(options).await.unwrap();
            sqlx::raw_sql(sqlite).execute(&pool).await.unwrap();
            pool.close().await;
        }
        Backend::Postgres => {
            let url = app.config.database_url.clone().expect("a PostgreSQL URL");
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&url).await.unwrap();
            sqlx::raw_sql(postgres).execute(&pool).await.unwrap();
            pool.close().await;
        }
    }
}

#[tokio::test]
async fn a_response_with_nul_bytes_is_logged_escaped_and_recording_goes_on() {
    let ca = TestCa::new();
    let nul = TestReceiver::https(&ca, |_| Reply::ok().body("ok\0ok\u{1b}[0m")).await;
    let healthy = TestReceiver::https(&ca, |_| Reply::ok().body("thanks")).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let odd = app.new_webhook_user("odd-receiver", &nul.url, None).await;
    let fine = app.new_webhook_user("fine-receiver", &healthy.url, None).await;

    let first = app.create_generation(&odd.user, &small_generation("nul")).await;
    let delivery = app.settled_delivery(&odd.user, &first).await;
    assert_eq!(delivery["status"], "succeeded");
    assert_eq!(delivery["attempts"][0]["responseExcerpt"], "ok\\x00ok\\x1b[0m");

    // Attempts after it are recorded as usual.
    for n in 0..3 {
        let id = app.create_generation(&fine.user, &small_generation(&format!("after {n}"))).await;
        let delivery = app.settled_delivery(&fine.user, &id).await;
        assert_eq!((delivery["status"].as_str(), delivery["attemptCount"].as_u64()), (Some("succeeded"), Some(1)));
        assert_eq!(delivery["attempts"][0]["responseExcerpt"], "thanks");
    }
    tokio::time::timeout(Duration::from_secs(20), app.stop()).await.expect("the server stops");
}

#[tokio::test]
async fn an_attempt_the_database_refuses_does_not_hold_up_the_others() {
    let ca = TestCa::new();
    let teapot = TestReceiver::https(&ca, |_| Reply::status(418).body("short and stout")).await;
    let healthy = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    // The database itself refuses to log an attempt that got a 418 (standing in for any record a
    // database may refuse).
    run_sql(
        &app,
        "CREATE TRIGGER refuse_teapots BEFORE INSERT ON webhook_attempts WHEN NEW.status_code = 418 \
         BEGIN SELECT RAISE(ABORT, 'no teapots here'); END;",
        "ALTER TABLE webhook_attempts ADD CONSTRAINT refuse_teapots CHECK (status_code IS DISTINCT FROM 418);",
    )
    .await;
    let refused = app.new_webhook_user("teapot", &teapot.url, None).await;
    let fine = app.new_webhook_user("healthy", &healthy.url, None).await;

    let mut refused_ids = Vec::new();
    let mut fine_ids = Vec::new();
    for n in 0..6 {
        refused_ids.push(app.create_generation(&refused.user, &small_generation(&format!("tea {n}"))).await);
        fine_ids.push(app.create_generation(&fine.user, &small_generation(&format!("fine {n}"))).await);
    }
    for id in &fine_ids {
        let delivery = app.settled_delivery(&fine.user, id).await;
        assert_eq!(delivery["status"], "succeeded", "{delivery}");
        assert_eq!(delivery["attempts"][0]["statusCode"], 200);
    }
    // The refused attempts are logged without what the receiver sent, and their deliveries move
    // on (here: the one-step schedule is exhausted).
    for id in &refused_ids {
        let delivery = app.settled_delivery(&refused.user, id).await;
        assert_eq!(delivery["status"], "failed", "{delivery}");
        let attempt = &delivery["attempts"][0];
        assert_eq!(attempt["statusCode"], Value::Null, "{attempt}");
        assert_eq!(attempt["errorClass"], "http_status");
        let detail = attempt["errorDetail"].as_str().unwrap();
        assert!(detail.contains("the database refused this attempt's full log entry"), "{detail}");
        assert!(detail.contains("418"), "{detail}");
    }
    assert_eq!(teapot.received().len(), 6, "each refused delivery was sent once, not again and again");
}

#[tokio::test]
async fn shutdown_completes_within_its_grace_while_the_database_refuses_writes() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        config.shutdown_grace = Duration::from_secs(1);
    })
    .await;
    let hooked = app.new_webhook_user("unrecorded", &receiver.url, None).await;
    // The attempt log cannot be written any more.
    run_sql(
        &app,
        "ALTER TABLE webhook_attempts RENAME TO webhook_attempts_away;",
        "ALTER TABLE webhook_attempts RENAME TO webhook_attempts_away;",
    )
    .await;
    for n in 0..3 {
        app.create_generation(&hooked.user, &small_generation(&format!("unrecorded {n}"))).await;
    }
    receiver.wait_for(3).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let started = Instant::now();
    tokio::time::timeout(Duration::from_secs(15), app.stop())
        .await
        .expect("the server stops although the database refuses writes");
    let took = started.elapsed();
    // The grace, 1 s more for the recorder, at most 1 s to give leases back, and a loaded machine
    // (a hang would meet the 15 s timeout).
    assert!(took < Duration::from_secs(10), "shutdown took {took:?} with a grace of 1 s");
}

#[tokio::test]
async fn failing_image_storage_recovers_when_it_comes_back_and_is_reported_by_healthz() {
    let app = spawn_app_with(|config| {
        config.render.retry_backoff = Duration::from_millis(100);
        config.render.max_attempts = 1000;
    })
    .await;
    // A file where the images' directory tree must go: every write fails (as root too).
    let blocker = app.dir.path().join("images").join("users");
    std::fs::write(&blocker, b"not a directory").unwrap();

    let id = app.create_generation(&app.admin, &small_generation("outage")).await;
    let health = eventually(Duration::from_secs(20), || async {
        let reply = app.send(app.client.get(format!("{}/healthz", app.origin))).await;
        (reply.status == StatusCode::SERVICE_UNAVAILABLE).then_some(reply.body)
    })
    .await;
    assert_eq!(health["status"], "image storage failing");
    assert!(health["storage"]["error"].as_str().is_some_and(|e| !e.is_empty()), "{health}");
    let generation = app.get(&app.admin, &format!("/generations/{id}")).await.body;
    assert_eq!(generation["generations_by_pk"]["status"], "PENDING");

    std::fs::remove_file(&blocker).unwrap();
    let generation = app.finished_generation(&app.admin, &id).await;
    assert_eq!(generation["status"], "COMPLETE");
    let reply = app.send(app.client.get(format!("{}/healthz", app.origin))).await;
    assert_eq!((reply.status, reply.body["status"].as_str()), (StatusCode::OK, Some("ok")));
}

#[tokio::test]
async fn image_storage_that_stays_broken_fails_the_job_with_its_callback_and_frees_the_slot() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        config.render.retry_backoff = Duration::from_millis(50);
        config.render.max_attempts = 3;
    })
    .await;
    let hooked = app.new_webhook_user("broken-disk", &receiver.url, None).await;
    std::fs::write(app.dir.path().join("images").join("users"), b"not a directory").unwrap();

    let id = app.create_generation(&hooked.user, &small_generation("never stored")).await;
    let generation = app.finished_generation(&hooked.user, &id).await;
    assert_eq!(generation["status"], "FAILED");
    let callback = receiver.wait_for(1).await.remove(0).json();
    assert_eq!(callback["type"], "image_generation.failed");
    assert_eq!(callback["data"]["object"]["id"], id);

    // The reason is on record, and the job no longer holds a concurrency slot.
    let user = app.new_user_with_slots("one-slot", 1).await;
    let blocked = app.create_generation(&user, &small_generation("blocked")).await;
    let failed = app.finished_generation(&user, &blocked).await;
    assert_eq!(failed["status"], "FAILED");
    let again = app.post(&user, "/generations", &small_generation("again")).await;
    assert_eq!(again.status, StatusCode::OK, "{}", again.text);
    let store = &app.easel.store;
    let generation_id: easel::ids::GenerationId = id.parse().unwrap();
    let record = store.get_generation(hooked.user.id, generation_id).await.unwrap().unwrap();
    let reason = record.failure_reason.unwrap();
    assert!(reason.contains("image storage failed on each of 3 attempts"), "{reason}");
}

#[tokio::test]
async fn upscales_racing_a_delete_of_their_generation_get_400_never_500() {
    let app = spawn_app().await;
    let user = app.new_user_with_slots("racer", 1000).await;
    let mut server_errors = 0;
    let mut answers = std::collections::BTreeMap::new();
    for round in 0..12 {
        let id = app.create_generation(&user, &small_generation(&format!("race {round}"))).await;
        let generation = app.finished_generation(&user, &id).await;
        let image = generation["generated_images"][0]["id"].as_str().unwrap().to_string();
        let body = json!({"id": image});
        let upscale = || app.post(&user, "/variations/upscale", &body);
        let generation_path = format!("/generations/{id}");
        let (before, deleted, after) = tokio::join!(
            futures_util::future::join_all((0..3).map(|_| upscale())),
            app.delete(&user, &generation_path),
            futures_util::future::join_all((0..3).map(|_| upscale())),
        );
        assert_eq!(deleted.status, StatusCode::OK);
        for reply in before.iter().chain(after.iter()) {
            *answers.entry(reply.status.as_u16()).or_insert(0) += 1;
            if reply.status.is_server_error() {
                server_errors += 1;
            } else if reply.status != StatusCode::OK {
                assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{}", reply.text);
                assert_eq!(reply.body["code"], "validation-failed");
                assert!(reply.body["error"].as_str().unwrap().contains("there is no image"), "{}", reply.text);
            }
        }
    }
    assert_eq!(server_errors, 0, "answers by status: {answers:?}");
}

#[tokio::test]
async fn many_request_headers_within_the_byte_limit_are_accepted() {
    let app = spawn_app().await;
    let with_headers = |count: usize| {
        let mut request = app.client.get(app.api("/me")).bearer_auth(&app.admin.key);
        for n in 0..count {
            request = request.header(format!("x-h{n}"), "v");
        }
        request
    };
    let reply = app.send(with_headers(200)).await;
    assert_eq!(reply.status, StatusCode::OK, "200 headers, far below api.max_header_bytes: {}", reply.text);
    let reply = app.send(with_headers(300)).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE, "over api.max_headers (256)");
}

#[tokio::test]
async fn paths_that_do_not_decode_are_answered_in_the_error_shape() {
    let app = spawn_app().await;
    for path in ["/api/rest/v1/generations/%ff%fe", "/api/rest/v1/generations/user/%ff", "/cdn/%ff.jpg"] {
        let reply = app.send(app.client.get(format!("{}{path}", app.origin)).bearer_auth(&app.admin.key)).await;
        assert_eq!(reply.status, StatusCode::BAD_REQUEST, "{path}: {}", reply.text);
        assert_eq!(reply.headers["content-type"], "application/json", "{path}");
        assert_eq!(reply.body["code"], "validation-failed", "{path}: {}", reply.text);
        assert_eq!(reply.body["path"], "$", "{path}");
        assert!(reply.body["error"].as_str().unwrap().contains("URL path"), "{path}: {}", reply.text);
    }
}

#[tokio::test]
async fn callbacks_owed_by_a_deleted_key_are_still_delivered_retried_and_redeliverable() {
    let ca = TestCa::new();
    // The first attempt fails; every later one succeeds.
    let receiver = TestReceiver::https(&ca, |n| if n == 0 { Reply::status(503) } else { Reply::ok() }).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s", "400ms"]);
        config.render.simulated_duration = Duration::from_millis(400);
    })
    .await;
    let hooked = app.new_webhook_user("rotating", &receiver.url, Some("old-webhook-key")).await;
    // The user's next key, made before the old one is deleted (the guide's rotation).
    let next = easel::admin::create_api_key(
        &*app.easel.store,
        &app.easel.master_key,
        hooked.user.id,
        "next",
        None,
        None,
        &app.config.webhook,
    )
    .await
    .unwrap();
    let next = TestUser { id: hooked.user.id, key: next.key };

    let id = app.create_generation(&hooked.user, &small_generation("in flight at rotation")).await;
    // Deleted while the generation renders: the callback was owed when it was asked for.
    assert!(app.easel.store.delete_api_key(hooked.key_id, easel::clock::now_ms()).await.unwrap());
    let first = receiver.wait_for(1).await.remove(0);
    assert_eq!(first.header("authorization"), Some("Bearer old-webhook-key"));
    // Retried on the schedule after the deletion too.
    let delivery = app.settled_delivery(&next, &id).await;
    assert_eq!((delivery["status"].as_str(), delivery["attemptCount"].as_u64()), (Some("succeeded"), Some(2)));
    assert_eq!(receiver.received()[1].header("webhook-id"), first.header("webhook-id"));

    // The deleted key no longer authenticates; the user's other key lists and redelivers.
    assert_eq!(app.get(&hooked.user, "/me").await.status, StatusCode::UNAUTHORIZED);
    let id = delivery["id"].as_str().unwrap();
    let reply = app.post(&next, &format!("/deliveries/{id}/retry"), &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let third = receiver.wait_for(3).await.remove(2);
    assert_eq!(third.header("authorization"), Some("Bearer old-webhook-key"));
}

#[tokio::test]
async fn a_burst_of_redeliveries_sends_a_delivery_once() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |n| if n == 0 { Reply::status(500) } else { Reply::ok() }).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("impatient", &receiver.url, None).await;
    let id = app.create_generation(&hooked.user, &small_generation("retry me")).await;
    let delivery = app.settled_delivery(&hooked.user, &id).await;
    assert_eq!(delivery["status"], "failed");
    let delivery_id = delivery["id"].as_str().unwrap().to_string();

    let path = format!("/deliveries/{delivery_id}/retry");
    let empty = json!({});
    let started = Instant::now();
    let replies = futures_util::future::join_all((0..300).map(|_| app.post(&hooked.user, &path, &empty))).await;
    // A delivery may be redelivered again a second after its last redelivery: a burst that took
    // longer than a second (a loaded machine) may rightly send it once more per second it took.
    let sends = 1 + started.elapsed().as_millis().div_ceil(1000) as usize;
    for reply in &replies {
        match reply.status {
            StatusCode::OK => assert_eq!(reply.body["delivery"]["id"], delivery_id.as_str()),
            StatusCode::TOO_MANY_REQUESTS => {
                assert_eq!(reply.body["code"], "rate-limited");
                assert_eq!(reply.headers["retry-after"], "1");
            }
            other => panic!("{other}: {}", reply.text),
        }
    }
    let delivery = app.settled_delivery(&hooked.user, &id).await;
    assert_eq!(delivery["status"], "succeeded");
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let received = receiver.received().len();
    assert!((2..=sends).contains(&received), "the original attempt and one redelivery: {received}");

    // A second after the last redelivery, asking again sends it again.
    let reply = app.post(&hooked.user, &path, &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    // The answer is the delivery as it is now: queued, or already sent when an engine's poll
    // claimed it between the retry's commit and the read (never the failure it was).
    let status = reply.body["delivery"]["status"].as_str().unwrap_or_default().to_string();
    assert!(["pending", "succeeded"].contains(&status.as_str()), "{}", reply.text);
    receiver.wait_for(3).await;
}
