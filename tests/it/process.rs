//! The `easel` binary as a user runs it: `serve` as a child process (start-up, first key, SIGTERM,
//! kill -9 and restart), the operator CLI, and configuration errors.

use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use reqwest::StatusCode;

use crate::child::*;
use crate::helpers::*;
use crate::receiver::{Reply, TestCa, TestReceiver};

#[tokio::test]
async fn serve_creates_a_first_key_answers_and_stops_cleanly_on_sigterm() {
    let dir = test_dir().await;
    let mut easel = EaselProcess::start(dir.path(), &[]);
    let key = easel.bootstrap_key();
    assert!(easel.stdout.iter().any(|l| l.contains("curl")), "a ready-to-paste curl example: {:?}", easel.stdout);
    let client = reqwest::Client::new();
    assert_eq!(get(&client, format!("{}/healthz", easel.origin), "").await.0, StatusCode::OK);
    let (status, me) = get(&client, format!("{}/api/rest/v1/me", easel.origin), &key).await;
    assert_eq!(status, StatusCode::OK);
    assert_eq!(me["user_details"][0]["user"]["username"], "admin");

    let status = easel.terminate();
    assert!(status.success(), "exit status after SIGTERM: {status}");
    let log = easel.rest_of_log();
    assert!(log.iter().any(|l| l.contains("stopped")), "{log:#?}");
    // A second start on the same data directory does not make another first user.
    let mut again = EaselProcess::start(dir.path(), &[]);
    assert_eq!(again.printed_key(Duration::from_secs(1)), None);
}

#[tokio::test]
async fn a_second_server_on_the_same_database_is_refused() {
    if not_applicable(
        Backend::Sqlite,
        "the lock file keeps SQLite single-node; PostgreSQL takes several (multinode.rs)",
    ) {
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let _first = EaselProcess::start(dir.path(), &[]);
    let output = Command::new(EASEL)
        .arg("serve")
        .env("EASEL_LISTEN", "127.0.0.1:0")
        .env("EASEL_DATA_DIR", dir.path())
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("another `easel serve` is already using"), "{stderr}");
}

#[tokio::test]
async fn jobs_survive_kill_9_and_finish_after_restart() {
    let dir = test_dir().await;
    // Short leases: on PostgreSQL a killed node's jobs are taken over when they expire.
    let lease = ("EASEL_RENDER__LEASE", "2s");
    let mut easel = EaselProcess::start(dir.path(), &[("EASEL_RENDER__SIMULATED_DURATION", "1h"), lease]);
    let key = easel.bootstrap_key();
    let client = reqwest::Client::new();
    let mut ids = Vec::new();
    for n in 0..3 {
        ids.push(post_generation(&client, &easel.origin, &key, &format!("crash {n}")).await);
    }
    easel.kill_9();

    let easel = EaselProcess::start(dir.path(), &[lease]);
    for id in &ids {
        let generation = completed_generation(&client, &easel.origin, &key, id).await;
        let url = generation["generated_images"][0]["url"].as_str().unwrap();
        assert!(url.starts_with(&easel.origin), "image URLs follow the new address: {url}");
        assert_eq!(client.get(url).send().await.unwrap().status(), StatusCode::OK);
    }
}

#[tokio::test]
async fn users_and_keys_are_managed_from_the_cli() {
    let dir = test_dir().await;
    let user = easel_json(dir.path(), &["users", "create", "--username", "dana", "--json"]);
    let user_id = user["id"].as_str().unwrap();
    assert!(uuid::Uuid::parse_str(user_id).is_ok());

    let key = easel_json(
        dir.path(),
        &[
            "keys",
            "create",
            "--user",
            user_id,
            "--name",
            "hooked",
            "--webhook-url",
            "https://hooks.example.com/in",
            "--webhook-key",
            "abcd",
            "--json",
        ],
    );
    for field in ["id", "key", "userId", "signingSecret"] {
        assert!(key[field].is_string(), "keys create --json prints {field}: {key}");
    }
    assert_eq!(key["userId"], user_id);
    assert!(uuid::Uuid::parse_str(key["key"].as_str().unwrap()).is_ok(), "API keys are UUID-shaped");
    assert!(key["signingSecret"].as_str().unwrap().starts_with("whsec_"));
    assert_eq!(key["webhookCallbackUrl"], "https://hooks.example.com/in");
    assert_ne!(key["webhookCallbackApiKey"], "abcd");

    let listed = easel_json(dir.path(), &["keys", "list", "--user", user_id, "--json"]);
    let listed = listed.as_array().unwrap();
    assert_eq!(listed.len(), 1);
    let text = listed[0].to_string();
    assert!(
        !text.contains(key["key"].as_str().unwrap()) && !text.contains("abcd"),
        "listings never show secrets: {text}"
    );
    assert!(!text.contains(key["signingSecret"].as_str().unwrap()));

    let (ok, stdout, _) = easel_cli(dir.path(), &["keys", "list"]);
    assert!(ok && stdout.contains("hooked") && !stdout.contains("abcd"), "{stdout}");

    let deleted = easel_json(dir.path(), &["keys", "delete", key["id"].as_str().unwrap(), "--json"]);
    assert_eq!(deleted["deleted"], true);
    assert_eq!(easel_json(dir.path(), &["keys", "list", "--json"]).as_array().unwrap().len(), 0);
    let (ok, _, stderr) = easel_cli(dir.path(), &["keys", "delete", key["id"].as_str().unwrap()]);
    assert!(!ok && stderr.contains("no live API key"), "{stderr}");
}

#[tokio::test]
async fn invalid_webhook_details_are_refused_with_clear_errors() {
    let dir = test_dir().await;
    let user = easel_json(dir.path(), &["users", "create", "--username", "erin", "--json"]);
    let user_id = user["id"].as_str().unwrap();
    let cases: [(&[&str], &str); 5] = [
        (&["--webhook-url", "http://hooks.example.com/in"], "must use https://"),
        (&["--webhook-url", "hooks.example.com/in"], "not an absolute URL"),
        (&["--webhook-key", "abcd"], "needs a webhook callback URL"),
        (&["--webhook-url", "https://hooks.example.com/in", "--webhook-key", "has space"], "without spaces"),
        (&["--webhook-url", "https://u:p@hooks.example.com/"], "credentials"),
    ];
    for (extra, expected) in cases {
        let mut args = vec!["keys", "create", "--user", user_id, "--name", "bad"];
        args.extend_from_slice(extra);
        let (ok, _, stderr) = easel_cli(dir.path(), &args);
        assert!(!ok, "{extra:?} must be refused");
        assert!(stderr.contains(expected), "{extra:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one clear line: {stderr}");
    }
    let (ok, _, stderr) =
        easel_cli(dir.path(), &["keys", "create", "--user", &uuid::Uuid::new_v4().to_string(), "--name", "x"]);
    assert!(!ok && stderr.contains("no user"), "{stderr}");
    let (ok, _, stderr) = easel_cli(dir.path(), &["users", "create", "--username", "erin"]);
    assert!(!ok && stderr.contains("taken"), "{stderr}");
}

#[test]
fn bad_configuration_stops_start_up_with_one_line_naming_the_setting() {
    let dir = tempfile::tempdir().unwrap();
    let config_file = dir.path().join("easel.toml");
    std::fs::write(&config_file, "listen = \"127.0.0.1:0\"\n[render]\nworkerz = 3\n").unwrap();
    type Case<'a> = (Vec<(&'a str, String)>, Vec<String>, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("EASEL_LISTEN", "nonsense".into())], vec![], "`listen`"),
        (vec![("EASEL_RENDER__WORKERS", "many".into())], vec![], "render.workers"),
        (vec![("EASEL_RENDER__SIMULATED_DURATION", "soon".into())], vec![], "render.simulated_duration"),
        (vec![("EASEL_DATABASE_URL", "mysql://localhost/easel".into())], vec![], "`database_url`"),
        (vec![("EASEL_PUBLIC_URL", "not a url".into())], vec![], "`public_url`"),
        (vec![("EASEL_MASTER_KEY", "short".into())], vec![], "`master_key`"),
        (vec![], vec!["--config".into(), config_file.display().to_string()], "workerz"),
        (vec![], vec!["--config".into(), "/no/such/easel.toml".into()], "does not exist"),
    ];
    for (env, args, expected) in cases {
        let mut command = Command::new(EASEL);
        command.args(&args).arg("serve").env("EASEL_DATA_DIR", dir.path());
        for (name, value) in &env {
            command.env(name, value);
        }
        let output = command.output().unwrap();
        let stderr = String::from_utf8_lossy(&output.stderr);
        assert_eq!(output.status.code(), Some(2), "{env:?} {args:?}: {stderr}");
        assert!(stderr.contains(expected), "{env:?} {args:?}: {stderr}");
        assert_eq!(stderr.trim().lines().count(), 1, "one line: {stderr}");
    }
}

#[tokio::test]
async fn a_config_file_and_environment_variables_configure_the_server() {
    let dir = test_dir().await;
    let config_file = dir.path().join("easel.toml");
    std::fs::write(
        &config_file,
        "public_url = \"https://images.example.com/\"\n[api]\ndefault_concurrency_slots = 4\n\n\
         [[models]]\nid = \"0f0f0f0f-1111-4222-8333-444444444444\"\nname = \"From File\"\n",
    )
    .unwrap();
    // The environment overrides the file.
    let mut easel = EaselProcess::start_with_args(
        dir.path(),
        &["--config", config_file.to_str().unwrap()],
        &[("EASEL_API__DEFAULT_CONCURRENCY_SLOTS", "6")],
    );
    let key = easel.bootstrap_key();
    let client = reqwest::Client::new();
    let (_, me) = get(&client, format!("{}/api/rest/v1/me", easel.origin), &key).await;
    assert_eq!(me["user_details"][0]["apiConcurrencySlots"], 6);
    let (_, models) = get(&client, format!("{}/api/rest/v1/platformModels", easel.origin), &key).await;
    assert!(models["custom_models"].as_array().unwrap().iter().any(|m| m["name"] == "From File"));

    let id = post_generation(&client, &easel.origin, &key, "configured").await;
    let generation = completed_generation(&client, &easel.origin, &key, &id).await;
    let url = generation["generated_images"][0]["url"].as_str().unwrap();
    assert!(url.starts_with("https://images.example.com/cdn/users/"), "{url}");
    // The same file is served under /cdn/ whatever the public base URL.
    let path = url.strip_prefix("https://images.example.com").unwrap();
    assert_eq!(client.get(format!("{}{path}", easel.origin)).send().await.unwrap().status(), StatusCode::OK);
}

#[tokio::test]
async fn deliveries_are_inspected_and_redelivered_from_the_cli() {
    let ca = TestCa::new();
    // Fails the first three requests, then accepts everything.
    let receiver =
        TestReceiver::https(&ca, |n| if n < 3 { Reply::status(502).body("bad gateway") } else { Reply::ok() }).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("cli", &receiver.url, None).await;
    let dir = app.dir.path().to_path_buf();
    let before = easel::clock::rfc3339_ms(easel::clock::now_ms() - 1000);

    let mut generations = Vec::new();
    for n in 0..3 {
        generations.push(app.create_generation(&hooked.user, &small_generation(&format!("cli {n}"))).await);
        receiver.wait_for(n + 1).await;
    }
    let failed = eventually(Duration::from_secs(30), || async {
        let list = easel_json(&dir, &["deliveries", "list", "--status", "failed", "--json"]);
        (list.as_array().unwrap().len() == 3).then_some(list)
    })
    .await;
    let first = failed.as_array().unwrap().iter().find(|d| d["generationId"] == generations[0].as_str()).unwrap();
    let id = first["id"].as_str().unwrap();

    let shown = easel_json(&dir, &["deliveries", "show", id, "--json"]);
    assert_eq!(shown["status"], "failed");
    assert_eq!(shown["attempts"][0]["statusCode"], 502);
    assert_eq!(shown["attempts"][0]["errorClass"], "http_status");
    assert_eq!(shown["attempts"][0]["responseExcerpt"], "bad gateway");
    let (ok, text, _) = easel_cli(&dir, &["deliveries", "show", id]);
    assert!(ok && text.contains("http_status: HTTP 502"), "{text}");
    let by_generation = easel_json(&dir, &["deliveries", "list", "--generation", &generations[0], "--json"]);
    assert_eq!(by_generation.as_array().unwrap().len(), 1);

    // One by id, then the rest by time.
    assert_eq!(easel_json(&dir, &["deliveries", "retry", id, "--json"])["retried"], 1);
    receiver.wait_for(4).await;
    let retried = easel_json(&dir, &["deliveries", "retry", "--failed-since", &before, "--json"]);
    assert_eq!(retried["retried"], 2);
    let requests = receiver.wait_for(6).await;
    eventually(Duration::from_secs(30), || async {
        let list = easel_json(&dir, &["deliveries", "list", "--status", "succeeded", "--json"]);
        (list.as_array().unwrap().len() == 3).then_some(())
    })
    .await;
    // Redeliveries reuse the webhook-id.
    let mut ids: Vec<&str> = requests.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    ids.sort();
    ids.dedup();
    assert_eq!(ids.len(), 3);

    let (ok, _, stderr) = easel_cli(&dir, &["deliveries", "retry", "--failed-since", "yesterday"]);
    assert!(!ok && stderr.contains("RFC 3339"), "{stderr}");
    let (ok, _, stderr) = easel_cli(&dir, &["deliveries", "list", "--status", "lost"]);
    assert!(!ok && stderr.contains("pending, succeeded, failed"), "{stderr}");
}

/// Starts `easel serve` for the crash test: fast retries, the test CA trusted.
fn crash_test_server(dir: &Path, ca: &TestCa) -> EaselProcess {
    EaselProcess::start(
        dir,
        &[
            ("EASEL_WEBHOOK__EXTRA_CA_CERTS", ca.pem_path.to_str().unwrap()),
            ("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]"),
            ("EASEL_WEBHOOK__RETRY_SCHEDULE", "[\"0s\", \"50ms\", \"100ms\", \"200ms\", \"400ms\", \"1s\"]"),
            ("EASEL_WEBHOOK__POLL_INTERVAL", "100ms"),
            ("EASEL_RENDER__SIMULATED_DURATION", "30ms"),
            ("EASEL_LOG", "warn,easel=info"),
        ],
    )
}

// Two worker threads: the receiver must read (and timestamp) requests while the test thread
// blocks in kill -9, or a request sent just before a kill is stamped after it.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_callback_arrives_despite_kill_9_and_duplicates_only_straddle_a_kill() {
    if not_applicable(Backend::Sqlite, "on PostgreSQL, nodes killed mid-stream are tested in multinode.rs") {
        return;
    }
    let ca = TestCa::new();
    // A receiver that takes a moment, so that kills catch deliveries in flight.
    let receiver = TestReceiver::https(&ca, |_| Reply { delay: Duration::from_millis(20), ..Reply::ok() }).await;
    let dir = tempfile::tempdir().unwrap();
    let user =
        easel_json(dir.path(), &["users", "create", "--username", "crash", "--concurrency-slots", "1000", "--json"]);
    let key = easel_json_with(
        dir.path(),
        &[
            "keys",
            "create",
            "--user",
            user["id"].as_str().unwrap(),
            "--name",
            "crash",
            "--webhook-url",
            &receiver.url,
            "--json",
        ],
        &[("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]")],
    );
    let key = key["key"].as_str().unwrap().to_string();
    let client = reqwest::Client::new();

    let mut generations = Vec::new();
    let mut kills = Vec::new();
    let mut easel = crash_test_server(dir.path(), &ca);
    for round in 0..4 {
        for n in 0..15 {
            generations.push(post_generation(&client, &easel.origin, &key, &format!("round {round} #{n}")).await);
        }
        // Let some callbacks go out, then pull the plug mid-stream.
        tokio::time::sleep(Duration::from_millis(60 + 40 * round)).await;
        easel.kill_9();
        kills.push(Instant::now());
        easel = crash_test_server(dir.path(), &ca);
    }

    // Every generation's callback arrives at least once.
    let deadline = Instant::now() + Duration::from_secs(60);
    let received = loop {
        let received = receiver.received();
        let mut seen: Vec<String> =
            received.iter().map(|r| r.json()["data"]["object"]["id"].as_str().unwrap().to_string()).collect();
        seen.sort();
        seen.dedup();
        if generations.iter().all(|g| seen.binary_search(g).is_ok()) {
            break received;
        }
        assert!(Instant::now() < deadline, "{} of {} callbacks arrived", seen.len(), generations.len());
        tokio::time::sleep(Duration::from_millis(50)).await;
    };

    // A webhook-id seen twice was in flight at a kill: a kill lies between the two arrivals.
    let mut by_id: std::collections::HashMap<&str, Vec<Instant>> = std::collections::HashMap::new();
    for request in &received {
        by_id.entry(request.header("webhook-id").unwrap()).or_default().push(request.at);
    }
    let mut duplicates = 0;
    for (id, mut arrivals) in by_id {
        arrivals.sort();
        for pair in arrivals.windows(2) {
            duplicates += 1;
            assert!(
                kills.iter().any(|kill| pair[0] <= *kill && *kill <= pair[1]),
                "delivery {id} arrived twice without a kill in between"
            );
        }
    }
    eprintln!(
        "crash test: {} generations, {} kills, {} duplicate callbacks",
        generations.len(),
        kills.len(),
        duplicates
    );
}

#[test]
fn serve_fails_fast_when_the_database_is_unreachable() {
    let dir = tempfile::tempdir().unwrap();
    let closed_port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let started = Instant::now();
    let output = Command::new(EASEL)
        .arg("serve")
        .env("EASEL_LISTEN", "127.0.0.1:0")
        .env("EASEL_DATA_DIR", dir.path())
        .env("EASEL_DATABASE_URL", format!("postgres://easel:hunter2@127.0.0.1:{closed_port}/easel"))
        .env("EASEL_DATABASE__CONNECT_TIMEOUT", "2s")
        .output()
        .unwrap();
    assert!(!output.status.success());
    assert!(started.elapsed() < Duration::from_secs(15), "took {:?}", started.elapsed());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("cannot open the database postgres://easel:***@127.0.0.1"), "{stderr}");
    assert!(!stderr.contains("hunter2"), "the password leaked: {stderr}");
}

#[tokio::test]
async fn migrate_prints_the_database_url_without_its_password() {
    let test = "migrate_prints_the_database_url_without_its_password";
    let Some(database) = TestDatabase::create_or_skip(test).await else { return };
    // The local server trusts its clients and ignores the password; a configured one keeps its own.
    let mut url = url::Url::parse(&database.url).unwrap();
    if url.password().is_none() {
        url.set_password(Some("secret")).unwrap();
    }
    let password = url.password().unwrap().to_string();
    let dir = tempfile::tempdir().unwrap();
    let (ok, stdout, stderr) = easel_cli_with(dir.path(), &["migrate"], &[("EASEL_DATABASE_URL", url.as_str())]);
    assert!(ok, "{stderr}");
    assert!(stdout.contains(":***@") && stdout.contains("is up to date (postgres)"), "{stdout}");
    assert!(!stdout.contains(&password) && !stderr.contains(&password), "the password leaked: {stdout} {stderr}");
}

#[tokio::test]
async fn retry_json_prints_only_json_when_the_delivery_is_already_due() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::status(500)).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s", "1h"])).await;
    let hooked = app.new_webhook_user("due", &receiver.url, None).await;
    let generation = app.create_generation(&hooked.user, &small_generation("due")).await;
    let delivery = eventually(Duration::from_secs(30), || async {
        let deliveries = app.deliveries_of(&hooked.user, &generation).await;
        deliveries.first().filter(|d| d["attemptCount"] == 1).cloned()
    })
    .await;
    let id = delivery["id"].as_str().unwrap().to_string();
    // With no server to send it, a redelivery stays due.
    let (dir, _) = app.stop().await;
    assert_eq!(easel_json(dir.path(), &["deliveries", "retry", &id, "--json"])["retried"], 1);
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(easel_json(dir.path(), &["deliveries", "retry", &id, "--json"])["retried"], 0);
    let (ok, text, _) = easel_cli(dir.path(), &["deliveries", "retry", &id]);
    assert!(ok && text.contains("already due or in flight"), "{text}");
}
