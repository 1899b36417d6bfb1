//! Delivery security: the SSRF guard (at key creation and at every delivery, DNS rebinding
//! included), egress addresses, the HTTP CONNECT proxy, TLS diagnostics, secrets at rest, and the
//! HTTP server's limits.

use std::net::{IpAddr, Ipv4Addr};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use rcgen::{CertificateParams, DnType, KeyPair};
use reqwest::StatusCode;
use serde_json::{Value, json};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::child::{EaselProcess, easel_cli_with, easel_json_with};
use crate::dns::TestDns;
use crate::helpers::*;
use crate::receiver::{Hierarchy, Reply, ServerIdentity, TestCa, TestReceiver};

async fn create_key(app: &TestApp, url: &str) -> Result<easel::admin::CreatedKey, String> {
    let user = easel::admin::create_user(&*app.easel.store, &format!("u{}", fastrand::u32(..)), 10).await.unwrap();
    easel::admin::create_api_key(
        &*app.easel.store,
        &app.easel.master_key,
        user.id,
        "k",
        Some(url),
        None,
        &app.config.webhook,
    )
    .await
    .map_err(|e| e.to_string())
}

async fn settled_attempts(app: &TestApp, user: &TestUser, generation: &str) -> Value {
    eventually(Duration::from_secs(30), || async {
        let reply = app.get(user, &format!("/generations/{generation}/deliveries")).await;
        let delivery = reply.body["deliveries"][0].clone();
        (delivery["status"] == "succeeded" || delivery["status"] == "failed").then_some(delivery)
    })
    .await
}

#[tokio::test]
async fn keys_for_blocked_destinations_are_refused_in_every_spelling() {
    let dns = TestDns::start(|name, _| match name {
        "internal.example.test" => Some(Ipv4Addr::new(10, 0, 0, 7)),
        "metadata.example.test" => Some(Ipv4Addr::new(169, 254, 169, 254)),
        "public.example.test" => Some(Ipv4Addr::new(8, 8, 8, 8)),
        _ => None,
    })
    .await;
    let app = spawn_app_with(|config| config.webhook.dns_servers = vec![dns.addr]).await;
    let refused = [
        "https://127.0.0.1/hook",
        "https://127.1/hook",
        "https://2130706433/hook",
        "https://0x7f000001/hook",
        "https://0177.0.0.1/hook",
        "https://0x7f.1/hook",
        "https://10.1/hook",
        "https://192.168.0.10:8443/hook",
        "https://172.16.3.4/hook",
        "https://100.64.1.1/hook",
        "https://169.254.169.254/latest/meta-data",
        "https://0xa9fea9fe/",
        "https://224.0.0.1/",
        "https://255.255.255.255/",
        "https://0.0.0.0/",
        "https://198.18.0.5/",
        "https://192.0.2.1/",
        "https://[::1]/hook",
        "https://[::ffff:127.0.0.1]/hook",
        "https://[::ffff:a9fe:a9fe]/",
        "https://[64:ff9b::10.0.0.1]/",
        "https://[2002:a00:1::]/",
        "https://[fd00::1]/hook",
        "https://[fe80::1]/hook",
        "https://[ff02::1]/",
        "https://[2001:db8::1]/",
        "https://internal.example.test/hook",
        "https://metadata.example.test/hook",
    ];
    for url in refused {
        let error = create_key(&app, url).await.expect_err(url);
        assert!(error.contains("is refused") && error.contains("blocked"), "{url}: {error}");
    }
    // Special-use names are judged by their name alone: the DNS server (which knows nothing of
    // them here) is not asked.
    let special = [
        ("https://localhost./h", "localhost. resolves only to blocked addresses: 127.0.0.1 (loopback"),
        ("https://api.localhost:8443/hook", "api.localhost resolves only to blocked addresses: 127.0.0.1 (loopback"),
        ("https://printer.local/hook", "printer.local is a multicast DNS name (.local, RFC 6762)"),
        ("https://nas.home.arpa/hook", "nas.home.arpa is a home network name (.home.arpa, RFC 8375)"),
        ("https://hooks.invalid/hook", "hooks.invalid is under .invalid (RFC 6761): such names never resolve"),
    ];
    for (url, words) in special {
        let error = create_key(&app, url).await.expect_err(url);
        assert!(error.contains("is refused") && error.contains(words), "{url}: {error}");
    }
    for name in ["localhost", "api.localhost", "printer.local", "nas.home.arpa", "hooks.invalid"] {
        assert_eq!(dns.queries_for(name), 0, "{name} was looked up");
    }
    // A public address, literal or by name, is fine; so is a name that does not resolve yet.
    for url in ["https://8.8.8.8/hook", "https://public.example.test/hook", "https://not-yet.example.test/hook"] {
        create_key(&app, url).await.unwrap_or_else(|e| panic!("{url}: {e}"));
    }
    assert!(dns.queries_for("internal.example.test") >= 1);
}

#[tokio::test]
async fn a_name_that_rebinds_to_a_blocked_address_is_blocked_at_delivery() {
    let ca = TestCa::new();
    // The same port on two loopback addresses: the callback may reach 127.0.0.1, never 127.0.0.2.
    let allowed = TestReceiver::https_with(ca.identity(&["hooks.rebind.test"]), "127.0.0.1:0", |_| Reply::ok()).await;
    let port = allowed.url.rsplit(':').next().unwrap().trim_end_matches("/hook").to_string();
    let forbidden =
        TestReceiver::https_with(ca.identity(&["hooks.rebind.test"]), &format!("127.0.0.2:{port}"), |_| Reply::ok())
            .await;
    // Checked at creation (127.0.0.1), then it answers 127.0.0.2, then 127.0.0.1 again.
    let dns = TestDns::start(|name, n| {
        (name == "hooks.rebind.test")
            .then(|| if n == 1 { Ipv4Addr::new(127, 0, 0, 2) } else { Ipv4Addr::new(127, 0, 0, 1) })
    })
    .await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s", "50ms"]);
        config.webhook.allow_private_networks = vec!["127.0.0.1/32".parse().unwrap()];
        config.webhook.dns_servers = vec![dns.addr];
    })
    .await;
    let hooked = app.new_webhook_user("rebound", &format!("https://hooks.rebind.test:{port}/hook"), None).await;
    let generation = app.create_generation(&hooked.user, &small_generation("rebinding")).await;
    let delivery = settled_attempts(&app, &hooked.user, &generation).await;

    assert_eq!(delivery["status"], "succeeded");
    let attempts = delivery["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 2);
    assert_eq!(attempts[0]["errorClass"], "blocked");
    let detail = attempts[0]["errorDetail"].as_str().unwrap();
    assert!(detail.contains("hooks.rebind.test resolves only to blocked addresses: 127.0.0.2 (loopback"), "{detail}");
    assert_eq!(attempts[1]["statusCode"], 200);
    assert!(forbidden.received().is_empty(), "a blocked address was reached");
    assert_eq!(allowed.received().len(), 1);
    // One lookup for the creation check and one per connection: the address connected to is
    // the address checked.
    assert_eq!(dns.queries_for("hooks.rebind.test"), 3);
}

#[tokio::test]
async fn a_destination_blocked_when_the_key_was_made_is_blocked_at_delivery() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    // The key is made while loopback is allowed; the server that delivers does not allow it.
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("moved", &receiver.url, None).await;
    let (dir, mut config) = app.stop().await;
    config.webhook.allow_private_networks.clear();
    let app = start_in(dir, config).await;
    let generation = app.create_generation(&hooked.user, &small_generation("blocked later")).await;
    let delivery = settled_attempts(&app, &hooked.user, &generation).await;
    assert_eq!(delivery["status"], "failed");
    assert_eq!(delivery["attempts"][0]["errorClass"], "blocked");
    assert!(delivery["attempts"][0]["errorDetail"].as_str().unwrap().contains("127.0.0.1 is a blocked address"));
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn callbacks_leave_only_from_the_egress_addresses() {
    let ca = TestCa::new();
    // Closing each connection makes every callback a new connection, from the next address.
    let receiver = TestReceiver::https(&ca, |_| Reply::ok().header("connection", "close")).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        config.webhook.egress_ips = vec!["127.0.0.2".parse().unwrap(), "127.0.0.3".parse().unwrap()];
    })
    .await;
    let hooked = app.new_webhook_user("egress", &receiver.url, None).await;
    for n in 0..6 {
        app.create_generation(&hooked.user, &small_generation(&format!("egress {n}"))).await;
        receiver.wait_for(n + 1).await;
    }
    let sources: Vec<IpAddr> = receiver.received().iter().map(|r| r.peer.ip()).collect();
    for source in &sources {
        assert!(["127.0.0.2", "127.0.0.3"].contains(&source.to_string().as_str()), "a callback came from {source}");
    }
    assert!(sources.contains(&"127.0.0.2".parse().unwrap()) && sources.contains(&"127.0.0.3".parse().unwrap()));

    let reply = app.send(app.client.get(format!("{}/egress-ips", app.origin))).await;
    assert_eq!(reply.status, StatusCode::OK);
    assert_eq!(reply.body, json!({"egressIps": ["127.0.0.2", "127.0.0.3"]}));
}

#[tokio::test]
async fn an_egress_address_not_on_this_machine_stops_start_up() {
    let dir = test_dir().await;
    let mut config = test_config(&dir);
    config.webhook.egress_ips = vec!["192.0.2.44".parse().unwrap()];
    let error = easel::server::start(config).await.err().expect("start-up must fail");
    assert!(error.to_string().contains("webhook.egress_ips: 192.0.2.44 is not an address of this machine"), "{error}");
}

/// tinyproxy in the foreground on a free port, logging CONNECT requests; `None` (skipped, loudly)
/// where it is not installed, except under CI.
struct Tinyproxy {
    child: Child,
    port: u16,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Drop for Tinyproxy {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn tinyproxy(test: &str) -> Option<Tinyproxy> {
    if Command::new("tinyproxy").arg("-v").output().is_err() {
        assert!(
            std::env::var("CI").as_deref() != Ok("true"),
            "{test}: tinyproxy is not installed (.ci/run installs it)"
        );
        announce_skip(&format!("{test}: tinyproxy is not installed (apt-get install tinyproxy)"));
        return None;
    }
    let dir = tempfile::tempdir().unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let log = dir.path().join("tinyproxy.log");
    let config = dir.path().join("tinyproxy.conf");
    std::fs::write(
        &config,
        format!(
            "Port {port}\nListen 127.0.0.1\nTimeout 30\nAllow 127.0.0.1\nLogFile \"{}\"\nLogLevel Connect\nMaxClients 20\n",
            log.display()
        ),
    )
    .unwrap();
    let child = Command::new("tinyproxy")
        .arg("-d")
        .arg("-c")
        .arg(&config)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually(Duration::from_secs(10), || async {
        tokio::net::TcpStream::connect(("127.0.0.1", port)).await.ok().map(|_| ())
    })
    .await;
    Some(Tinyproxy { child, port, log, _dir: dir })
}

#[tokio::test]
async fn callbacks_go_through_the_proxy_to_the_checked_address() {
    let Some(proxy) = tinyproxy("callbacks_go_through_the_proxy_to_the_checked_address").await else { return };
    let ca = TestCa::new();
    let receiver = TestReceiver::https_with(ca.identity(&["hooks.proxied.test"]), "127.0.0.1:0", |_| Reply::ok()).await;
    let port = receiver.url.rsplit(':').next().unwrap().trim_end_matches("/hook").to_string();
    let dns = TestDns::start(|name, _| (name == "hooks.proxied.test").then_some(Ipv4Addr::LOCALHOST)).await;
    let app = spawn_app_with(|config| {
        fast_webhooks(config, &ca, &["0s"]);
        config.webhook.dns_servers = vec![dns.addr];
        config.webhook.proxy_url = Some(format!("http://127.0.0.1:{}", proxy.port).parse().unwrap());
    })
    .await;
    let hooked =
        app.new_webhook_user("proxied", &format!("https://hooks.proxied.test:{port}/hook"), Some("abcd")).await;
    app.create_generation(&hooked.user, &small_generation("through the proxy")).await;
    let request = receiver.wait_for(1).await.remove(0);
    // TLS was made with the right name (the certificate is only for it) and the Host header kept it.
    assert_eq!(request.header("host"), Some(format!("hooks.proxied.test:{port}").as_str()));
    assert_eq!(request.header("authorization"), Some("Bearer abcd"));
    // The proxy was asked for the checked address, not the name.
    let log = std::fs::read_to_string(&proxy.log).unwrap();
    assert!(log.contains(&format!("CONNECT 127.0.0.1:{port}")), "{log}");
    assert!(!log.contains("hooks.proxied.test"), "{log}");

    // A name resolving to a blocked address is not asked of the proxy at all.
    let blocked = create_key(&app, "https://10.9.8.7/hook").await;
    assert!(blocked.is_err());
}

#[tokio::test]
async fn tls_failures_are_explained() {
    let pki = Hierarchy::new();
    let names = ["localhost", "127.0.0.1"];
    let (leaf, key) = pki.leaf(&names, |_| {});
    let good = TestReceiver::https_with(
        ServerIdentity { chain: vec![leaf.clone(), pki.intermediate_der.clone()], key: key.clone() },
        "127.0.0.1:0",
        |_| Reply::ok(),
    )
    .await;
    let missing_intermediate =
        TestReceiver::https_with(ServerIdentity { chain: vec![leaf], key }, "127.0.0.1:0", |_| Reply::ok()).await;
    let self_signed = {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "Self Signed Receiver");
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let identity = ServerIdentity { chain: vec![certificate.der().clone()], key: key.serialize_der() };
        TestReceiver::https_with(identity, "127.0.0.1:0", |_| Reply::ok()).await
    };
    let expired = {
        let (leaf, key) = pki.leaf(&names, |params| {
            params.not_before = rcgen::date_time_ymd(2020, 1, 1);
            params.not_after = rcgen::date_time_ymd(2021, 1, 1);
        });
        let identity = ServerIdentity { chain: vec![leaf, pki.intermediate_der.clone()], key };
        TestReceiver::https_with(identity, "127.0.0.1:0", |_| Reply::ok()).await
    };
    let wrong_name = {
        let (leaf, key) = pki.leaf(&["other.example", "www.other.example"], |_| {});
        let identity = ServerIdentity { chain: vec![leaf, pki.intermediate_der.clone()], key };
        TestReceiver::https_with(identity, "127.0.0.1:0", |_| Reply::ok()).await
    };
    let plain_http = TestReceiver::http(|_| Reply::ok()).await;
    // A CA with the trusted root's name but another key (regenerated, or an impostor).
    let same_name_other_key = {
        let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params.distinguished_name.push(DnType::CommonName, "Easel Test Root CA");
        let ca_key = KeyPair::generate().unwrap();
        let impostor = rcgen::Issuer::new(ca_params, ca_key);
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, "localhost");
        let key = KeyPair::generate().unwrap();
        let leaf = params.signed_by(&key, &impostor).unwrap();
        let identity = ServerIdentity { chain: vec![leaf.der().clone()], key: key.serialize_der() };
        TestReceiver::https_with(identity, "127.0.0.1:0", |_| Reply::ok()).await
    };

    let app = spawn_app_with(|config| {
        fast_webhooks(config, &pki.root, &["0s"]);
        config.webhook.timeout = Duration::from_secs(5);
        config.webhook.connect_timeout = Duration::from_secs(5);
    })
    .await;
    let https = |receiver: &TestReceiver| receiver.url.replace("https://127.0.0.1", "https://localhost");
    let cases = [
        (https(&good), None),
        (
            https(&missing_intermediate),
            Some(
                "incomplete certificate chain: the server sent only its own certificate (\"CN=localhost\"); the certificate of its issuer \"CN=Easel Test Intermediate CA\" is missing",
            ),
        ),
        (https(&self_signed), Some("the certificate is self-signed (\"CN=Self Signed Receiver\")")),
        (https(&expired), Some("the certificate expired at 2021-01-01T00:00:00.000Z")),
        (https(&wrong_name), Some("the certificate is for other.example, www.other.example, not localhost")),
        (plain_http.url.replace("http://127.0.0.1", "https://localhost"), Some("the server did not answer with TLS")),
        (
            https(&same_name_other_key),
            Some(
                "the certificate names \"CN=Easel Test Root CA\" as its issuer, and a trusted authority has that name, but that authority's key did not sign it",
            ),
        ),
    ];
    for (n, (url, expected)) in cases.iter().enumerate() {
        let hooked = app.new_webhook_user(&format!("tls-{n}"), url, None).await;
        let generation = app.create_generation(&hooked.user, &small_generation("tls")).await;
        let delivery = settled_attempts(&app, &hooked.user, &generation).await;
        let attempt = &delivery["attempts"][0];
        match expected {
            None => assert_eq!(delivery["status"], "succeeded", "{url}: {attempt}"),
            Some(words) => {
                assert_eq!(attempt["errorClass"], "tls", "{url}: {attempt}");
                let detail = attempt["errorDetail"].as_str().unwrap();
                assert!(detail.starts_with("TLS handshake with localhost failed: "), "{detail}");
                assert!(detail.contains(words), "{url}:\n  {detail}\n  expected: {words}");
            }
        }
    }
    assert_eq!(good.received().len(), 1);
}

#[tokio::test]
async fn no_secret_is_stored_or_logged_in_plain_text() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let dir = test_dir().await;
    let database_url = test_config(&dir).database_url();
    let env = [
        ("EASEL_WEBHOOK__EXTRA_CA_CERTS", ca.pem_path.to_str().unwrap()),
        ("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]"),
        ("EASEL_LOG", "debug"),
        ("EASEL_DATABASE_URL", database_url.as_str()),
    ];
    let webhook_key = "whk-Secret-7b1e0c9d4f2a8b3c";
    let user = easel_json_with(dir.path(), &["users", "create", "--username", "secretive", "--json"], &env);
    let created = easel_json_with(
        dir.path(),
        &[
            "keys",
            "create",
            "--user",
            user["id"].as_str().unwrap(),
            "--name",
            "secret",
            "--webhook-url",
            &receiver.url,
            "--webhook-key",
            webhook_key,
            "--json",
        ],
        &env,
    );
    let api_key = created["key"].as_str().unwrap().to_string();
    let signing_secret = created["signingSecret"].as_str().unwrap().to_string();

    let mut easel = EaselProcess::start(dir.path(), &env);
    let client = reqwest::Client::new();
    let response = client
        .post(format!("{}/api/rest/v1/generations", easel.origin))
        .bearer_auth(&api_key)
        .json(&small_generation("keep it secret"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), StatusCode::OK);
    let request = receiver.wait_for(1).await.remove(0);
    assert_eq!(request.header("authorization"), Some(format!("Bearer {webhook_key}").as_str()), "the secret works");
    // A failing request and a failing callback also leave log lines behind.
    client.get(format!("{}/api/rest/v1/me", easel.origin)).bearer_auth(webhook_key).send().await.unwrap();
    // The whole log, to its last line.
    easel.terminate();
    let log = easel.rest_of_log().join("\n");
    drop(easel);
    let (_, listing, _) = easel_cli_with(dir.path(), &["keys", "list", "--json"], &env);
    let (_, text_listing, _) = easel_cli_with(dir.path(), &["keys", "list"], &env);

    let secrets =
        [("API key", api_key.as_str()), ("webhook API key", webhook_key), ("signing secret", &signing_secret)];
    let signing_secret_bytes = signing_secret.trim_start_matches("whsec_").to_string();
    for (place, bytes) in stored_bytes(&dir).await {
        for (what, secret) in secrets.iter().chain([("signing key", signing_secret_bytes.as_str())].iter()) {
            let hex: String = secret.bytes().map(|b| format!("{b:02x}")).collect();
            for form in [secret.to_string(), hex] {
                assert!(!bytes.windows(form.len()).any(|w| w == form.as_bytes()), "the {what} is in {place}");
            }
        }
    }
    for (what, secret) in secrets {
        assert!(!log.contains(secret), "the {what} is in the log");
        assert!(!listing.contains(secret) && !text_listing.contains(secret), "the {what} is in the key listing");
    }
    assert!(log.contains("webhook"), "the log was captured");
}

/// Everything the store holds, as bytes to search: SQLite's files (database, WAL) in the data
/// directory, or a text dump of every PostgreSQL table (byte columns in hex).
async fn stored_bytes(dir: &TestDir) -> Vec<(String, Vec<u8>)> {
    match &dir.database {
        None => std::fs::read_dir(dir.path())
            .unwrap()
            .map(|entry| entry.unwrap().path())
            .filter(|path| path.is_file() && path.file_name().unwrap() != "master.key")
            .map(|path| (path.display().to_string(), std::fs::read(&path).unwrap()))
            .collect(),
        Some(database) => {
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&database.url).await.unwrap();
            let tables: Vec<String> =
                sqlx::query_scalar("SELECT tablename::TEXT FROM pg_tables WHERE schemaname = 'public'")
                    .fetch_all(&pool)
                    .await
                    .unwrap();
            let mut dump = Vec::new();
            for table in tables {
                let rows: Vec<String> =
                    sqlx::query_scalar(&format!("SELECT t::TEXT FROM {table} t")).fetch_all(&pool).await.unwrap();
                dump.push((format!("table {table}"), rows.join("\n").into_bytes()));
            }
            dump
        }
    }
}

#[test]
fn secret_settings_are_redacted_in_debug_output() {
    let master_key = serde_json::from_value(json!("c2VjcmV0LW1hc3Rlci1rZXktdGhhdC1pcy0zMi1ieXRlcw==")).unwrap();
    let config = easel::config::Config { master_key: Some(master_key), ..Default::default() };
    let debug = format!("{config:?}");
    assert!(!debug.contains("c2VjcmV0"), "{debug}");
    assert!(debug.contains("[redacted]"));
}

#[tokio::test]
async fn oversized_headers_and_idle_connections_are_cut_off() {
    let app = spawn_app_with(|config| config.api.idle_timeout = Duration::from_millis(500)).await;
    let huge = "x".repeat(app.config.api.max_header_bytes + 100);
    let reply = app.send(app.client.get(format!("{}/healthz", app.origin)).header("x-filler", huge)).await;
    assert_eq!(reply.status, StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE);

    // A connection that never sends a request is closed.
    let mut idle = tokio::net::TcpStream::connect(app.easel.addr).await.unwrap();
    let mut buffer = [0u8; 64];
    let read = tokio::time::timeout(Duration::from_secs(5), idle.read(&mut buffer)).await.expect("closed in time");
    assert!(matches!(read, Ok(0) | Err(_)), "{read:?}");

    // So is a kept-alive connection that goes quiet after a request.
    let mut kept = tokio::net::TcpStream::connect(app.easel.addr).await.unwrap();
    kept.write_all(b"GET /healthz HTTP/1.1\r\nHost: easel\r\n\r\n").await.unwrap();
    let mut response = Vec::new();
    let closed = tokio::time::timeout(Duration::from_secs(5), kept.read_to_end(&mut response)).await;
    assert!(closed.is_ok(), "the idle kept-alive connection was not closed");
    assert!(String::from_utf8_lossy(&response).starts_with("HTTP/1.1 200"));
}
