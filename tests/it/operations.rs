//! What operators run Easel with: readiness that names what fails, JSON log lines.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::child::*;
use crate::helpers::*;

async fn readyz(app: &TestApp) -> (StatusCode, Value) {
    let reply = app.send(app.client.get(format!("{}/readyz", app.origin))).await;
    (reply.status, reply.body)
}

#[tokio::test]
async fn readiness_names_the_part_that_fails() {
    let app = spawn_app_with(|config| config.database.connect_timeout = Duration::from_secs(1)).await;
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::OK, "{body}");
    assert_eq!(
        body,
        serde_json::json!({"status": "ready", "checks": {"database": "ok", "storage": "ok", "render": "ok", "deliver": "ok"}})
    );

    // Image storage that cannot be written: a file where its directory was.
    let images = app.dir.path().join("images");
    let moved = app.dir.path().join("images-away");
    std::fs::rename(&images, &moved).unwrap();
    std::fs::write(&images, b"not a directory").unwrap();
    let (status, body) = readyz(&app).await;
    assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
    assert_eq!(body["status"], "not ready");
    assert!(body["checks"]["storage"].as_str().unwrap().starts_with("not writable"), "{body}");
    assert_eq!(body["checks"]["database"], "ok");
    std::fs::remove_file(&images).unwrap();
    std::fs::rename(&moved, &images).unwrap();
    assert_eq!(readyz(&app).await.0, StatusCode::OK);

    // The database down (PostgreSQL: no connections allowed, the existing ones ended).
    if crate::BACKEND == Backend::Postgres {
        let database = app.dir.database.as_ref().unwrap();
        let name = database.name.clone();
        let admin =
            sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await.unwrap();
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
        database.cut_connections("TRUE").await;
        let (status, body) = readyz(&app).await;
        assert_eq!(status, StatusCode::SERVICE_UNAVAILABLE, "{body}");
        assert!(body["checks"]["database"].as_str().unwrap().starts_with("unreachable"), "{body}");
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS true")).execute(&admin).await.unwrap();
        let ready =
            eventually(Duration::from_secs(20), || async { (readyz(&app).await.0 == StatusCode::OK).then_some(()) });
        ready.await;
    }
}

#[tokio::test]
async fn json_logs_are_one_object_per_line_with_fields() {
    let dir = test_dir().await;
    let mut command = Command::new(EASEL);
    command
        .arg("serve")
        .env("EASEL_LISTEN", "127.0.0.1:0")
        .env("EASEL_DATA_DIR", dir.path())
        .env("EASEL_LOG_FORMAT", "json")
        .envs(database_env(dir.path()))
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    let mut child = command.spawn().expect("easel starts");
    let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
    let mut seen = Vec::new();
    let listening = loop {
        let line = lines.next().expect("easel logged that it listens").unwrap();
        let event: Value = serde_json::from_str(&line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(event["timestamp"].is_string() && event["level"].is_string(), "{event}");
        if event["fields"]["message"] == "easel is listening" {
            break event;
        }
        seen.push(event);
    };
    let _ = child.kill();
    let _ = child.wait();
    assert_eq!(listening["level"], "INFO");
    assert!(listening["fields"]["addr"].as_str().is_some_and(|a| a.starts_with("127.0.0.1:")), "{listening}");
    assert!(listening["target"].as_str().is_some_and(|t| t.starts_with("easel")), "{listening}");
    assert_eq!(
        listening["fields"]["database"],
        if crate::BACKEND == Backend::Postgres { "postgres" } else { "sqlite" }
    );
}

#[tokio::test(flavor = "multi_thread")]
async fn metrics_count_real_traffic_with_bounded_labels() {
    let ca = crate::receiver::TestCa::new();
    let receiver = crate::receiver::TestReceiver::https(&ca, |_| crate::receiver::Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("metrics", &receiver.url, None).await;
    let before = scrape(&app).await;
    let post = r#"easel_http_requests_total{route="/api/rest/v1/generations",method="POST",status="200"}"#;
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(app.create_generation(&hooked.user, &small_generation(&format!("metric {n}"))).await);
    }
    for id in &ids {
        assert_eq!(app.finished_generation(&hooked.user, id).await["status"], "COMPLETE");
    }
    receiver.wait_for(3).await;
    // An unknown id: counted under the route's pattern, never the raw path.
    let missing = app.get(&hooked.user, "/generations/00000000-0000-4000-8000-000000000000").await;
    assert_eq!(missing.status, StatusCode::OK);
    // An attempt is counted when it ends, and its delivery leaves `pending` when the recorder's
    // batch commits a moment later: wait for both.
    let after = eventually(Duration::from_secs(10), || async {
        let text = scrape(&app).await;
        let delivered = r#"easel_webhook_attempts_total{outcome="delivered",error_class="none"}"#;
        let recorded = sample(&text, "easel_webhook_deliveries_pending") == 0.0;
        (sample(&text, delivered) - sample(&before, delivered) == 3.0 && recorded).then_some(text)
    })
    .await;
    let delta = |series: &str| sample(&after, series) - sample(&before, series);
    assert_eq!(delta("easel_generations_created_total"), 3.0, "{after}");
    assert_eq!(delta(r#"easel_generations_finished_total{status="COMPLETE"}"#), 3.0);
    assert_eq!(delta(post), 3.0);
    assert_eq!(delta(r#"easel_render_duration_seconds_count{backend="builtin"}"#), 3.0);
    assert_eq!(delta("easel_webhook_attempt_duration_seconds_count"), 3.0);
    assert!(after.contains(r#"route="/api/rest/v1/generations/{id}",method="GET",status="200""#), "{after}");
    assert!(!after.contains("00000000-0000-4000-8000-000000000000") && !after.contains(&receiver.url));
    assert_eq!(sample(&after, "easel_render_queue_depth"), 0.0);
    assert_eq!(sample(&after, "easel_webhook_deliveries_pending"), 0.0);
    assert!(sample(&after, r#"easel_database_connections{state="idle"}"#) >= 1.0, "{after}");
    assert!(after.ends_with("# EOF\n"));
}

#[tokio::test]
async fn metrics_can_require_a_bearer_token() {
    let app = spawn_app_with(|config| {
        config.metrics.token = Some(serde_json::from_value(serde_json::json!("scrape-secret")).unwrap());
    })
    .await;
    let url = format!("{}/metrics", app.origin);
    assert_eq!(app.send(app.client.get(&url)).await.status, StatusCode::UNAUTHORIZED);
    assert_eq!(app.send(app.client.get(&url).bearer_auth("wrong")).await.status, StatusCode::UNAUTHORIZED);
    let reply = app.send(app.client.get(&url).bearer_auth("scrape-secret")).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert!(reply.text.contains("easel_generations_created_total 0"), "{}", reply.text);
    let disabled = spawn_app_with(|config| config.metrics.enabled = false).await;
    let reply = disabled.send(disabled.client.get(format!("{}/metrics", disabled.origin))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
}
