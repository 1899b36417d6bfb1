//! The web console: its pages and their protections over HTTP, and the whole flow in a real
//! browser (Debian's Chromium, headless, driven by Playwright from a venv pinned in
//! `tests/console/requirements.txt`; `tests/console/console_check.py`). Screenshots of every page
//! are written to `target/tmp/console-screenshots/` for a reviewer.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use reqwest::StatusCode;
use serde_json::Value;

use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};
use crate::sdk::python_or_skip;

#[tokio::test]
async fn the_console_is_served_with_its_protections() {
    let app = spawn_app().await;
    for path in ["/console", "/console/"] {
        let reply = app.send(app.client.get(format!("{}{path}", app.origin))).await;
        assert_eq!(reply.status, StatusCode::OK, "{path}");
        assert_eq!(reply.headers["content-type"], "text/html; charset=utf-8");
        assert!(reply.text.contains("<title>Easel console</title>"));
        let policy = reply.headers["content-security-policy"].to_str().unwrap();
        for directive in ["default-src 'none'", "script-src 'self'", "frame-ancestors 'none'", "connect-src 'self'"] {
            assert!(policy.contains(directive), "{policy} lacks {directive}");
        }
        assert!(!policy.contains("unsafe-inline") && !policy.contains("unsafe-eval"), "{policy}");
        assert!(policy.contains(&format!("img-src 'self' data: {}", app.origin)), "{policy}");
        assert_eq!(reply.headers["x-frame-options"], "DENY");
        assert_eq!(reply.headers["x-content-type-options"], "nosniff");
        assert_eq!(reply.headers["referrer-policy"], "no-referrer");
        assert!(reply.headers.get("set-cookie").is_none(), "the console sets no cookie");
        // No inline script for the policy to have to allow, and nothing from another origin.
        assert!(!reply.text.contains("<script>"), "{}", reply.text);
        assert!(!reply.text.contains("src=\"http") && !reply.text.contains("href=\"http"), "{}", reply.text);
    }
    for (asset, content_type, marker) in [
        ("console.js", "text/javascript; charset=utf-8", "sessionStorage"),
        ("console.css", "text/css; charset=utf-8", ":root"),
        ("icon.svg", "image/svg+xml", "<svg"),
    ] {
        let reply = app.send(app.client.get(format!("{}/console/assets/{asset}", app.origin))).await;
        assert_eq!(reply.status, StatusCode::OK, "{asset}");
        assert_eq!(reply.headers["content-type"], content_type);
        assert_eq!(reply.headers["x-frame-options"], "DENY");
        assert!(reply.text.contains(marker), "{asset}");
    }
    // The script builds the page from text nodes: no HTML from the server is ever parsed.
    let script = app.send(app.client.get(format!("{}/console/assets/console.js", app.origin))).await.text;
    for sink in ["innerHTML", "outerHTML", "insertAdjacentHTML", "document.write", "eval("] {
        assert!(!script.contains(sink), "console.js uses {sink}");
    }
    let reply = app.send(app.client.get(format!("{}/console/assets/../Cargo.toml", app.origin))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    let reply = app.send(app.client.get(format!("{}/console/assets/secrets.txt", app.origin))).await;
    assert_eq!(reply.status, StatusCode::NOT_FOUND);
    assert_eq!(reply.body["code"], "not-found");
}

/// Images served from elsewhere (`storage.public_base_url`) are allowed by the page's policy.
#[tokio::test]
async fn the_policy_allows_images_from_the_configured_image_origin() {
    let app = spawn_app_with(|config| {
        config.storage.public_base_url = Some("https://images.example.com/easel".into());
    })
    .await;
    let reply = app.send(app.client.get(format!("{}/console", app.origin))).await;
    let policy = reply.headers["content-security-policy"].to_str().unwrap();
    assert!(policy.contains("img-src 'self' data: https://images.example.com;"), "{policy}");
}

/// The Chromium to drive: `CHROMIUM`, or Debian's package.
fn chromium() -> Option<PathBuf> {
    let path = std::env::var_os("CHROMIUM").map(PathBuf::from).unwrap_or_else(|| "/usr/bin/chromium".into());
    path.exists().then_some(path)
}

fn screenshot_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("console-screenshots")
}

#[tokio::test(flavor = "multi_thread")]
async fn the_console_works_in_a_real_browser() {
    let test = "the_console_works_in_a_real_browser";
    // The page speaks only REST, whose routes run on both databases in their own tests; one
    // browser run (the slowest test of the suite) is enough, on SQLite.
    if not_applicable(Backend::Sqlite, "the browser drives REST only; one run is enough") {
        return;
    }
    let Some(browser) = chromium() else {
        let why = "no Chromium at /usr/bin/chromium (apt-get install chromium) or CHROMIUM";
        if std::env::var("CI").as_deref() == Ok("true") {
            panic!("{test}: {why} under CI");
        }
        announce_skip(&format!("{test}: {why}"));
        return;
    };
    let Some(python) = tokio::task::spawn_blocking(move || python_or_skip("console", test)).await.unwrap() else {
        return;
    };

    // The console user's receiver fails the first callback, so there is a failed attempt to
    // redeliver.
    let ca = TestCa::new();
    let calls = Arc::new(AtomicUsize::new(0));
    let counted = calls.clone();
    let receiver = TestReceiver::https(&ca, move |_| {
        if counted.fetch_add(1, Ordering::SeqCst) == 0 {
            Reply::status(500).body("receiver warming up")
        } else {
            Reply::ok()
        }
    })
    .await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        // Long enough to see a generation rendering before its images appear.
        config.render.simulated_duration = Duration::from_millis(1500);
    })
    .await;

    // Another user, with a generation, a key with a webhook and a delivery: none may show.
    let other_receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let other = app.new_webhook_user("mallory", &other_receiver.url, Some("mallory-hook-key")).await;
    let other_key = easel::admin::create_api_key(
        &*app.easel.store,
        &app.easel.master_key,
        other.user.id,
        "mallory's hidden key",
        None,
        None,
        &app.config.webhook,
    )
    .await
    .unwrap();
    let other_generation = app.create_generation(&other.user, &small_generation("mallory's secret painting")).await;
    app.settled_delivery(&other.user, &other_generation).await;
    let other_bin = app.post(&other.user, "/inspector/bins", &serde_json::json!({})).await;
    assert_eq!(other_bin.status, StatusCode::CREATED, "{}", other_bin.text);
    let other_bin_url = other_bin.body["url"].as_str().unwrap().to_string();

    let shots = screenshot_dir();
    let _ = std::fs::remove_dir_all(&shots);
    let mut command = Command::new(python);
    command
        .arg(Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/console/console_check.py"))
        .env("EASEL_URL", &app.origin)
        .env("ADMIN_KEY", &app.admin.key)
        .env("RECEIVER_URL", &receiver.url)
        .env("WEBHOOK_KEY", "console-hook-key")
        .env("OTHER_PROMPT", "mallory's secret painting")
        .env("OTHER_KEY_NAME", "mallory's hidden key")
        .env("OTHER_BIN_URL", &other_bin_url)
        .env("CHROMIUM", &browser)
        .env("SCREENSHOT_DIR", &shots);
    let output = tokio::time::timeout(Duration::from_secs(300), tokio::task::spawn_blocking(move || command.output()))
        .await
        .expect("the browser check finishes within 5 minutes")
        .unwrap()
        .expect("python runs");
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "the console check failed:\n{stdout}\n{stderr}");
    assert!(stdout.contains("console check passed"), "{stdout}");
    let result: Value = stdout
        .lines()
        .find_map(|line| line.strip_prefix("RESULT "))
        .map(|json| serde_json::from_str(json).unwrap())
        .expect("the check reports what it read");

    // What the page showed is what the server holds.
    let created = TestUser { id: app.admin.id, key: result["created_key"].as_str().unwrap().into() };
    let rotated = TestUser { id: app.admin.id, key: result["rotated_key"].as_str().unwrap().into() };
    let signing_secret = result["signing_secret"].as_str().unwrap();
    assert_eq!(app.get(&created, "/me").await.status, StatusCode::UNAUTHORIZED, "the rotated-out key is deleted");
    let keys = app.get(&rotated, "/keys").await;
    assert_eq!(keys.status, StatusCode::OK, "{}", keys.text);
    let current = keys.body["currentKeyId"].clone();
    let key = keys.body["apiKeys"].as_array().unwrap().iter().find(|k| k["id"] == current).unwrap().clone();
    assert_eq!(key["webhookCallbackUrl"], receiver.url.as_str(), "rotation kept the webhook URL");
    assert_eq!(key["manageKeys"], true);
    assert!(!keys.text.contains("mallory"));

    // The generations' callbacks: the first failed then was redelivered with the same
    // webhook-id; the one after the rotation carries the same webhook key and signing secret.
    let first = result["generation_id"].as_str().unwrap();
    let deliveries = app.deliveries_of(&rotated, first).await;
    assert_eq!(deliveries.len(), 1);
    assert_eq!(deliveries[0]["status"], "succeeded");
    assert_eq!(deliveries[0]["attemptCount"], 2);
    let after = result["rotated_generation_id"].as_str().unwrap().to_string();
    let delivered = eventually(Duration::from_secs(30), || async {
        receiver.received().into_iter().find(|request| request.json()["data"]["object"]["id"] == after.as_str())
    })
    .await;
    assert_eq!(delivered.header("authorization"), Some("Bearer console-hook-key"));
    crate::webhooks::verify_signature(&delivered, signing_secret);

    // The inspector: the key the page made calls back the bin it made, and what the page showed
    // as checked is what the server recorded.
    let bin_id = result["bin_id"].as_str().unwrap();
    let bin_generation = result["bin_generation_id"].as_str().unwrap();
    let bin_key = TestUser { id: app.admin.id, key: result["bin_key"].as_str().unwrap().into() };
    let delivery = app.settled_delivery(&bin_key, bin_generation).await;
    assert_eq!(delivery["status"], "succeeded", "{delivery:#}");
    assert_eq!(delivery["url"], format!("{}/inspect/{bin_id}", app.easel.public_url).as_str());
    let requests = app.get(&rotated, &format!("/inspector/bins/{bin_id}/requests?limit=100")).await;
    assert_eq!(requests.status, StatusCode::OK, "{}", requests.text);
    let requests = requests.body["requests"].as_array().unwrap().clone();
    assert_eq!(requests.len(), 6, "{requests:#?}");
    let callback = requests
        .iter()
        .find(|r| r["body"].as_str().unwrap_or("").contains(bin_generation))
        .expect("the generation's callback is in the bin");
    assert_eq!(callback["callbackChecks"][0]["bearerMatched"], true, "{callback:#}");
    assert_eq!(callback["callbackChecks"][0]["signatureVerified"], true, "{callback:#}");
    // Another user's bin is untouched and still theirs alone.
    let other_bin_id = other_bin.body["id"].as_str().unwrap();
    assert_eq!(app.get(&rotated, &format!("/inspector/bins/{other_bin_id}")).await.status, StatusCode::NOT_FOUND);
    assert_eq!(app.get(&other.user, &format!("/inspector/bins/{other_bin_id}")).await.status, StatusCode::OK);

    // The other user's objects are untouched.
    assert_eq!(app.get(&TestUser { id: other.user.id, key: other_key.key }, "/me").await.status, StatusCode::OK);
    let reply = app.get(&other.user, &format!("/generations/{other_generation}")).await;
    assert_eq!(reply.body["generations_by_pk"]["id"], other_generation.as_str());

    for name in [
        "02-generations-empty",
        "04-generations",
        "06-keys-created",
        "08-delivery-redelivered",
        "13-phone-keys",
        "16-inspector-bin-empty",
        "17-inspector-callback",
        "18-inspector-bins",
        "13-phone-inspector-bin",
    ] {
        let path = shots.join(format!("{name}.png"));
        let bytes = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        assert!(bytes.starts_with(b"\x89PNG") && bytes.len() > 10_000, "{} is a real screenshot", path.display());
    }
}
