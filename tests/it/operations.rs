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
        let name = app.dir.database.as_ref().unwrap().name.clone();
        let admin =
            sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await.unwrap();
        sqlx::query(&format!("ALTER DATABASE {name} ALLOW_CONNECTIONS false")).execute(&admin).await.unwrap();
        sqlx::query("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1")
            .bind(&name)
            .execute(&admin)
            .await
            .unwrap();
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
