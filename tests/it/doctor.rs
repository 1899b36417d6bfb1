//! Troubleshooting callbacks: the webhook doctor (`easel doctor URL`, `POST /webhook/doctor`) step
//! by step against real receivers (healthy, lax about authentication, with broken TLS, refusing
//! connections, behind addresses the SSRF guard refuses), and test callbacks (`POST
//! /webhook/test`), which go through the delivery engine into the delivery log and are never
//! retried.

use std::net::Ipv4Addr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use reqwest::StatusCode;
use serde_json::{Value, json};

use crate::child::easel_cli_with;
use crate::dns::TestDns;
use crate::helpers::*;
use crate::receiver::{Hierarchy, Received, Reply, ServerIdentity, TestCa, TestReceiver};
use crate::webhooks::{SAMPLE, assert_same_shape, expected_signature, verify_signature};

const STEPS: [&str; 8] = ["url", "dns", "egress", "tcp", "tls", "http", "bearer", "signature"];
/// A signing secret for the command line runs (the Standard Webhooks specification's example).
const SECRET: &str = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";

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

fn step<'a>(report: &'a Value, name: &str) -> &'a Value {
    report["steps"].as_array().unwrap().iter().find(|s| s["step"] == name).unwrap_or_else(|| panic!("no {name} step"))
}

fn verdicts(report: &Value) -> Vec<(String, String)> {
    report["steps"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| (s["step"].as_str().unwrap().to_string(), s["verdict"].as_str().unwrap().to_string()))
        .collect()
}

/// Settings for `easel doctor` in a child process: trust `ca`, allow loopback, and ask `dns`.
fn cli_env(ca: &TestCa, dns: Option<&TestDns>) -> Vec<(&'static str, String)> {
    let mut env = vec![
        ("EASEL_WEBHOOK__EXTRA_CA_CERTS", ca.pem_path.display().to_string()),
        ("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]".to_string()),
        ("EASEL_WEBHOOK__CONNECT_TIMEOUT", "5s".to_string()),
    ];
    if let Some(dns) = dns {
        env.push(("EASEL_WEBHOOK__DNS_SERVERS", format!("[\"{}\"]", dns.addr)));
    }
    env
}

/// `easel doctor ARGS`: (exit status success, stdout, stderr). The process runs off the test's
/// runtime, which serves the receivers meanwhile.
async fn easel_doctor(env: &[(&'static str, String)], args: &[&str]) -> (bool, String, String) {
    let env = env.to_vec();
    let args: Vec<String> = ["doctor"].iter().chain(args).map(|a| a.to_string()).collect();
    tokio::task::spawn_blocking(move || {
        let dir = tempfile::tempdir().unwrap();
        let env: Vec<(&str, &str)> = env.iter().map(|(name, value)| (*name, value.as_str())).collect();
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        easel_cli_with(dir.path(), &args, &env)
    })
    .await
    .unwrap()
}

/// `easel doctor ARGS --json`: the exit status and the report.
async fn easel_doctor_json(env: &[(&'static str, String)], args: &[&str]) -> (bool, Value) {
    let args: Vec<&str> = args.iter().copied().chain(["--json"]).collect();
    let (ok, stdout, stderr) = easel_doctor(env, &args).await;
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| panic!("no JSON ({e}): {stdout}\n{stderr}"));
    (ok, report)
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
async fn a_healthy_receiver_passes_every_step_and_gets_a_signed_test_callback_of_the_real_shape() {
    let (receiver, app, hooked, _ca) = strict_receiver_of_a_key("healthy").await;

    let reply = app.post(&hooked.user, "/webhook/doctor", &json!({})).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    let report = reply.body;
    let expected: Vec<(String, String)> = STEPS.iter().map(|s| (s.to_string(), "ok".to_string())).collect();
    assert_eq!(verdicts(&report), expected, "{report:#}");
    assert_eq!(report["verdict"], "ok");
    assert_eq!(report["url"], receiver.url);
    eprintln!("doctor run against a local receiver: {} ms", report["durationMs"]);

    let dns = step(&report, "dns");
    assert_eq!(dns["addresses"], json!([{"address": "127.0.0.1", "allowed": true, "refusal": null}]));
    let tcp = &step(&report, "tcp")["connections"][0];
    assert_eq!(tcp["outcome"], "connected");
    assert!(tcp["from"].as_str().unwrap().starts_with("127.0.0.1:"), "{tcp}");
    let tls = &step(&report, "tls")["tls"];
    assert_eq!(tls["protocol"], "TLSv1_3");
    assert!(tls["cipher"].as_str().unwrap().starts_with("TLS13_"), "{tls}");
    assert_eq!(tls["certificates"][0]["issuer"], "CN=Easel Test Root CA");
    assert_eq!(tls["certificates"][0]["names"], json!(["localhost", "127.0.0.1"]));
    let http = &step(&report, "http")["response"];
    assert_eq!(
        (http["statusCode"].as_u64(), http["responseExcerpt"].as_str()),
        (Some(200), Some("{\"received\": true}"))
    );
    for probe in ["bearer", "signature"] {
        let probe = step(&report, probe);
        assert_eq!(probe["response"]["statusCode"], 401, "{probe}");
        assert!(probe["detail"].as_str().unwrap().contains("the receiver refused"), "{probe}");
    }

    // The test callback, then a wrong bearer, then a bad signature.
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert_real_shape_marked_as_test(&received[0], &hooked.signing_secret);
    let body = received[0].json();
    assert_eq!(body["data"]["object"]["userId"], hooked.user.id.to_string());
    assert_eq!(body["data"]["object"]["apiKey"]["id"], hooked.key_id.to_string());
    assert_eq!(body["data"]["object"]["apiKey"]["webhookCallbackUrl"], receiver.url);
    assert_ne!(body["data"]["object"]["apiKey"]["webhookCallbackApiKey"], "abcd", "secrets never travel in bodies");
    assert_ne!(received[1].header("authorization"), Some("Bearer abcd"));
    verify_signature(&received[1], &hooked.signing_secret);
    assert_eq!(received[2].header("authorization"), Some("Bearer abcd"));
    assert_ne!(
        received[2].header("webhook-signature"),
        Some(expected_signature(&received[2], &hooked.signing_secret).as_str())
    );
    let ids: Vec<&str> = received.iter().map(|r| r.header("webhook-id").unwrap()).collect();
    assert!(ids[0] != ids[1] && ids[1] != ids[2], "each probe has its own webhook-id: {ids:?}");

    // The doctor's requests are diagnostics: nothing enters the delivery log.
    let listed = app.get(&hooked.user, "/deliveries").await;
    assert_eq!(listed.body, json!({"deliveries": []}));
}

#[tokio::test]
async fn a_receiver_that_takes_a_wrong_bearer_and_a_bad_signature_is_warned_about() {
    let ca = TestCa::new();
    let receiver = TestReceiver::https(&ca, |_| Reply::ok()).await;
    let app = spawn_app_with(|config| fast_webhooks(config, &ca, &["0s"])).await;
    let hooked = app.new_webhook_user("lax", &receiver.url, Some("abcd")).await;

    let report = app.post(&hooked.user, "/webhook/doctor", &json!({})).await.body;
    assert_eq!(report["verdict"], "warn", "{report:#}");
    assert_eq!(step(&report, "http")["verdict"], "ok");
    let bearer = step(&report, "bearer");
    assert_eq!(bearer["verdict"], "warn");
    let detail = bearer["detail"].as_str().unwrap();
    assert!(
        detail
            .contains("accepted a callback with a wrong bearer token (HTTP 200): it accepts unauthenticated callbacks"),
        "{detail}"
    );
    assert!(bearer["advice"].as_str().unwrap().contains("Bearer <your webhook key>"), "{bearer}");
    let signature = step(&report, "signature");
    assert_eq!(signature["verdict"], "warn");
    assert!(signature["detail"].as_str().unwrap().contains("it does not verify webhook-signature"), "{signature}");
    assert_eq!(receiver.received().len(), 3);

    // A key without a webhook key: its callbacks carry no bearer at all, which is worth a warning too.
    let bare = app.new_webhook_user("bare", &receiver.url, None).await;
    let report = app.post(&bare.user, "/webhook/doctor", &json!({})).await.body;
    let bearer = step(&report, "bearer");
    assert_eq!(bearer["verdict"], "warn");
    assert!(bearer["detail"].as_str().unwrap().starts_with("no webhook callback API key"), "{bearer}");
    assert_eq!(receiver.received().len(), 5, "no wrong-bearer probe without a bearer");
}

#[tokio::test]
async fn broken_tls_fails_with_the_chain_as_sent_and_the_diagnosis() {
    let pki = Hierarchy::new();
    let (leaf, key) = pki.leaf(&["localhost", "127.0.0.1"], |_| {});
    let incomplete =
        TestReceiver::https_with(ServerIdentity { chain: vec![leaf], key }, "127.0.0.1:0", |_| Reply::ok()).await;
    let (leaf, key) = pki.leaf(&["other.example", "www.other.example"], |_| {});
    let chain = vec![leaf, pki.intermediate_der.clone()];
    let mismatched = TestReceiver::https_with(ServerIdentity { chain, key }, "127.0.0.1:0", |_| Reply::ok()).await;
    let env = cli_env(&pki.root, None);

    let (ok, report) = easel_doctor_json(&env, &[&incomplete.url, "--webhook-key", "abcd"]).await;
    assert!(!ok, "a failing step makes the exit status non-zero");
    let tls = step(&report, "tls");
    assert_eq!(tls["verdict"], "fail", "{report:#}");
    let detail = tls["detail"].as_str().unwrap();
    assert!(detail.starts_with("TLS handshake with 127.0.0.1 failed: incomplete certificate chain"), "{detail}");
    assert!(detail.contains("the certificate of its issuer \"CN=Easel Test Intermediate CA\" is missing"), "{detail}");
    assert!(tls["advice"].as_str().unwrap().contains("intermediate certificates"), "{tls}");
    let sent = tls["tls"]["certificates"].as_array().unwrap();
    assert_eq!(sent.len(), 1, "the chain exactly as the server sent it");
    assert_eq!(
        (sent[0]["subject"].as_str(), sent[0]["issuer"].as_str()),
        (Some("CN=localhost"), Some("CN=Easel Test Intermediate CA"))
    );
    assert!(sent[0]["notBefore"].as_str().is_some() && sent[0]["notAfter"].as_str().is_some());
    for later in ["http", "bearer", "signature"] {
        assert_eq!(step(&report, later)["verdict"], "skipped", "{later}");
    }
    assert!(incomplete.received().is_empty());
    let (ok, stdout, _) = easel_doctor(&env, &[&incomplete.url]).await;
    eprintln!("{stdout}");
    assert!(!ok);
    assert!(
        stdout.contains("\nfail    tls       TLS handshake with 127.0.0.1 failed: incomplete certificate chain"),
        "{stdout}"
    );
    assert!(stdout.contains("  #0 CN=localhost  issued by CN=Easel Test Intermediate CA  valid "), "{stdout}");

    let (ok, report) = easel_doctor_json(&env, &[&mismatched.url]).await;
    assert!(!ok);
    let tls = step(&report, "tls");
    let detail = tls["detail"].as_str().unwrap();
    assert!(detail.contains("the certificate is for other.example, www.other.example, not 127.0.0.1"), "{detail}");
    let sent = tls["tls"]["certificates"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(sent[0]["names"], json!(["other.example", "www.other.example"]));
    assert_eq!(sent[1]["subject"], "CN=Easel Test Intermediate CA");
    assert!(tls["advice"].as_str().unwrap().contains("names include the webhook URL's host"), "{tls}");
}

/// `easel doctor URL` against a receiver whose TLS is broken: the run fails at the tls step (every
/// step before it passes, every one after is skipped, the receiver gets nothing) and the step is
/// returned for its words.
async fn failing_tls_step(env: &[(&'static str, String)], url: &str) -> Value {
    let (ok, report) = easel_doctor_json(env, &[url, "--webhook-key", "abcd"]).await;
    assert!(!ok, "{report:#}");
    assert_eq!(report["verdict"], "fail", "{report:#}");
    let expected: Vec<(String, String)> = STEPS
        .iter()
        .enumerate()
        .map(|(n, s)| (s.to_string(), ["ok", "fail", "skipped"][usize::from(n >= 4) + usize::from(n > 4)].to_string()))
        .collect();
    assert_eq!(verdicts(&report), expected, "{report:#}");
    let tls = step(&report, "tls").clone();
    assert!(tls["detail"].as_str().unwrap().starts_with("TLS handshake with 127.0.0.1 failed: "), "{tls:#}");
    tls
}

/// A receiver that sends one certificate, for localhost and 127.0.0.1 with the common name
/// `common_name`, made by `sign` from its parameters and key (self-signed, or by some issuer).
async fn receiver_with_leaf(
    common_name: &str,
    sign: impl FnOnce(CertificateParams, &KeyPair) -> Result<rcgen::Certificate, rcgen::Error>,
) -> TestReceiver {
    let mut params = CertificateParams::new(vec!["localhost".to_string(), "127.0.0.1".to_string()]).unwrap();
    params.distinguished_name.push(DnType::CommonName, common_name);
    let key = KeyPair::generate().unwrap();
    let certificate = sign(params, &key).unwrap();
    let identity = ServerIdentity { chain: vec![certificate.der().clone()], key: key.serialize_der() };
    TestReceiver::https_with(identity, "127.0.0.1:0", |_| Reply::ok()).await
}

#[tokio::test]
async fn a_self_signed_certificate_fails_at_tls_saying_so() {
    let ca = TestCa::new();
    let receiver = receiver_with_leaf("Self Signed Receiver", |params, key| params.self_signed(key)).await;

    let tls = failing_tls_step(&cli_env(&ca, None), &receiver.url).await;
    let detail = tls["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "the certificate is self-signed (\"CN=Self Signed Receiver\") and no trusted authority issued it"
        ),
        "{detail}"
    );
    let advice = tls["advice"].as_str().unwrap();
    assert!(advice.contains("a public CA") && advice.contains("webhook.extra_ca_certs"), "{advice}");
    let sent = tls["tls"]["certificates"].as_array().unwrap();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0]["subject"], "CN=Self Signed Receiver");
    assert_eq!(sent[0]["issuer"], "CN=Self Signed Receiver");
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn an_expired_certificate_fails_at_tls_giving_the_dates() {
    let pki = Hierarchy::new();
    let (leaf, key) = pki.leaf(&["localhost", "127.0.0.1"], |params| {
        params.not_before = rcgen::date_time_ymd(2020, 1, 1);
        params.not_after = rcgen::date_time_ymd(2021, 1, 1);
    });
    let chain = vec![leaf, pki.intermediate_der.clone()];
    let receiver = TestReceiver::https_with(ServerIdentity { chain, key }, "127.0.0.1:0", |_| Reply::ok()).await;
    let env = cli_env(&pki.root, None);

    let tls = failing_tls_step(&env, &receiver.url).await;
    let detail = tls["detail"].as_str().unwrap();
    let today = &easel::clock::rfc3339_ms(easel::clock::now_ms())[..10];
    assert!(detail.contains("the certificate expired at 2021-01-01T00:00:00.000Z (it is now "), "{detail}");
    assert!(detail.contains(&format!("(it is now {today}T")), "{detail}");
    assert!(tls["advice"].as_str().unwrap().contains("renew the certificate"), "{tls:#}");
    let sent = tls["tls"]["certificates"].as_array().unwrap();
    assert_eq!(sent.len(), 2);
    assert_eq!(
        (sent[0]["notBefore"].as_str(), sent[0]["notAfter"].as_str()),
        (Some("2020-01-01T00:00:00.000Z"), Some("2021-01-01T00:00:00.000Z"))
    );

    let (ok, stdout, _) = easel_doctor(&env, &[&receiver.url]).await;
    assert!(!ok);
    let line = stdout.lines().find(|l| l.starts_with("fail    tls ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(line.contains("the certificate expired at 2021-01-01T00:00:00.000Z"), "{line}");
    assert!(line.contains("→ renew the certificate"), "{line}");
    assert!(stdout.contains("valid 2020-01-01T00:00:00.000Z to 2021-01-01T00:00:00.000Z"), "{stdout}");
}

#[tokio::test]
async fn a_chain_from_a_same_name_ca_with_another_key_fails_at_tls_saying_so() {
    let trusted = TestCa::new();
    // Another CA with the trusted root's name (regenerated with a new key, or an impostor).
    let mut ca_params = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    ca_params.distinguished_name.push(DnType::CommonName, "Easel Test Root CA");
    let impostor = Issuer::new(ca_params, KeyPair::generate().unwrap());
    let receiver = receiver_with_leaf("localhost", |params, key| params.signed_by(key, &impostor)).await;

    let tls = failing_tls_step(&cli_env(&trusted, None), &receiver.url).await;
    let detail = tls["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "the certificate names \"CN=Easel Test Root CA\" as its issuer, and a trusted authority has that name, \
             but that authority's key did not sign it"
        ),
        "{detail}"
    );
    assert!(detail.contains("regenerated with a new key, or another CA took its name"), "{detail}");
    assert!(tls["advice"].as_str().unwrap().contains("reissue the server's certificate"), "{tls:#}");
    let sent = tls["tls"]["certificates"].as_array().unwrap();
    assert_eq!(
        (sent[0]["subject"].as_str(), sent[0]["issuer"].as_str()),
        (Some("CN=localhost"), Some("CN=Easel Test Root CA"))
    );
    assert!(receiver.received().is_empty());
}

#[tokio::test]
async fn plain_http_on_the_https_port_fails_at_tls_saying_the_server_answered_in_plain_http() {
    let ca = TestCa::new();
    let receiver = TestReceiver::http(|_| Reply::ok()).await;
    let url = receiver.url.replace("http://", "https://");

    let tls = failing_tls_step(&cli_env(&ca, None), &url).await;
    let detail = tls["detail"].as_str().unwrap();
    assert!(
        detail.contains(
            "failed: the server answered in plain HTTP, not TLS (to a plain request on this port it answers \"HTTP/1.0 \
             200 OK\")"
        ),
        "{detail}"
    );
    let advice = tls["advice"].as_str().unwrap();
    assert!(advice.starts_with("this port serves plain HTTP: serve HTTPS on it"), "{advice}");
    assert_eq!(tls["tls"]["certificates"], json!([]), "no certificate was sent");
    // The doctor's question (HEAD /) reached it; no callback went out in plain text.
    let received = receiver.received();
    assert_eq!(received.len(), 1);
    assert_eq!((received[0].path.as_str(), received[0].body.is_empty()), ("/", true));
    assert_eq!(received[0].header("user-agent"), Some("easel-doctor"));

    // A server that speaks neither TLS nor HTTP is not called an HTTP server.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let port = listener.local_addr().unwrap().port();
    let silent = tokio::spawn(async move {
        loop {
            let (mut tcp, _) = listener.accept().await.unwrap();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                let _ = tcp.write_all(b"SSH-2.0-OpenSSH_9.6\r\n").await;
                tokio::time::sleep(Duration::from_secs(1)).await;
            });
        }
    });
    let tls = failing_tls_step(&cli_env(&ca, None), &format!("https://127.0.0.1:{port}/hook")).await;
    let detail = tls["detail"].as_str().unwrap();
    assert!(!detail.contains("plain HTTP, not TLS"), "{detail}");
    assert!(detail.contains("the server did not answer with TLS"), "{detail}");
    silent.abort();
}

#[tokio::test]
async fn a_certificate_that_expires_within_two_weeks_is_a_warning() {
    let pki = Hierarchy::new();
    let soon = easel::clock::rfc3339_ms(easel::clock::now_ms() + 5 * 86_400_000);
    let (year, month, day) = (soon[0..4].parse().unwrap(), soon[5..7].parse().unwrap(), soon[8..10].parse().unwrap());
    let (leaf, key) = pki.leaf(&["localhost", "127.0.0.1"], |params| {
        params.not_after = rcgen::date_time_ymd(year, month, day);
    });
    let chain = vec![leaf, pki.intermediate_der.clone()];
    let receiver = TestReceiver::https_with(ServerIdentity { chain, key }, "127.0.0.1:0", |_| Reply::ok()).await;
    let (ok, report) = easel_doctor_json(&cli_env(&pki.root, None), &[&receiver.url, "--webhook-key", "abcd"]).await;
    assert!(ok, "a warning is not a failure: {report:#}");
    let tls = step(&report, "tls");
    assert_eq!(tls["verdict"], "warn");
    assert!(tls["detail"].as_str().unwrap().contains("the certificate expires in "), "{tls}");
    assert!(tls["detail"].as_str().unwrap().contains(&format!("valid until {}", &soon[..10])), "{tls}");
    assert_eq!(step(&report, "http")["verdict"], "ok");
}

#[tokio::test]
async fn a_refused_port_fails_at_tcp_and_the_cli_says_so_with_a_non_zero_exit() {
    let ca = TestCa::new();
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = closed.local_addr().unwrap().port();
    drop(closed);
    let url = format!("https://127.0.0.1:{port}/hook");
    let env = cli_env(&ca, None);

    let (ok, stdout, stderr) = easel_doctor(&env, &[&url]).await;
    assert!(!ok);
    assert!(stderr.contains("the webhook doctor found a failing step: tcp"), "{stderr}");
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines[0], format!("easel doctor {url}"));
    let tcp = lines.iter().find(|l| l.starts_with("fail    tcp ")).unwrap_or_else(|| panic!("{stdout}"));
    assert!(tcp.contains(&format!("refused: connection refused by 127.0.0.1:{port}")), "{tcp}");
    assert!(tcp.contains("→ nothing listens on that port"), "{tcp}");
    for (name, verdict) in [("url", "ok"), ("dns", "ok"), ("egress", "ok"), ("tls", "skipped"), ("http", "skipped")] {
        assert!(
            lines.iter().any(|l| l.starts_with(&format!("{verdict:<7} {name:<9} "))),
            "{name} {verdict}:\n{stdout}"
        );
    }
    assert!(stdout.ends_with(" ms)\n") && stdout.contains("verdict: fail"), "{stdout}");

    let (ok, report) = easel_doctor_json(&env, &[&url]).await;
    assert!(!ok);
    let connection = &step(&report, "tcp")["connections"][0];
    assert_eq!(connection["outcome"], "refused");
    assert_eq!(connection["errorClass"], "connect_refused");
    assert_eq!(connection["address"], format!("127.0.0.1:{port}"));
}

#[tokio::test]
async fn addresses_the_ssrf_guard_refuses_fail_at_dns_naming_why() {
    let ca = TestCa::new();
    let dns = TestDns::start(|name, _| (name == "private.doctor.test").then_some(Ipv4Addr::new(10, 0, 0, 7))).await;
    let env = cli_env(&ca, Some(&dns));

    let (ok, report) = easel_doctor_json(&env, &["https://10.0.0.1/hook"]).await;
    assert!(!ok);
    let step_dns = step(&report, "dns");
    assert_eq!(step_dns["verdict"], "fail");
    assert_eq!(step_dns["detail"], "10.0.0.1 is a blocked address: 10.0.0.1 (private network (10.0.0.0/8))");
    assert_eq!(
        step_dns["addresses"],
        json!([{"address": "10.0.0.1", "allowed": false, "refusal": "private network (10.0.0.0/8)"}])
    );
    assert!(step_dns["advice"].as_str().unwrap().contains("public addresses"), "{step_dns}");
    assert_eq!(step(&report, "tcp")["verdict"], "skipped", "no connection to a refused address");

    let (ok, report) = easel_doctor_json(&env, &["https://private.doctor.test/hook"]).await;
    assert!(!ok);
    let detail = step(&report, "dns")["detail"].as_str().unwrap().to_string();
    assert!(
        detail.contains("private.doctor.test resolves only to blocked addresses: 10.0.0.7 (private network"),
        "{detail}"
    );

    let (ok, report) = easel_doctor_json(&env, &["https://printer.local/hook"]).await;
    assert!(!ok);
    assert!(step(&report, "dns")["detail"].as_str().unwrap().starts_with("printer.local is a multicast DNS name"));

    // The URL rule of key creation comes first.
    let (ok, report) = easel_doctor_json(&env, &["http://hooks.example.com/x"]).await;
    assert!(!ok);
    assert_eq!(step(&report, "url")["verdict"], "fail");
    assert!(step(&report, "url")["detail"].as_str().unwrap().contains("must use https://"), "{report:#}");
    assert_eq!(report["verdict"], "fail");
    assert_eq!(dns.queries_for("hooks.example.com"), 0);
    assert_eq!(step(&report, "dns")["detail"], "skipped: the url step failed");

    // A setting the doctor cannot work with fails the step it belongs to, saying whose it is to fix.
    let mut broken = env.clone();
    broken[0].1 = "/nonexistent/ca.pem".to_string();
    let (ok, report) = easel_doctor_json(&broken, &["https://127.0.0.1:1/hook"]).await;
    assert!(!ok);
    let tls = step(&report, "tls");
    assert!(
        tls["detail"].as_str().unwrap().starts_with("webhook.extra_ca_certs: cannot read /nonexistent/ca.pem"),
        "{tls}"
    );
    assert!(tls["advice"].as_str().unwrap().contains("Easel operator"), "{tls}");
    assert_eq!(step(&report, "dns")["detail"], "skipped: the tls step failed");
}

#[tokio::test]
async fn the_cli_examines_a_healthy_receiver_and_exits_zero() {
    let ca = TestCa::new();
    let receiver = strict_receiver(&ca, Arc::new(Mutex::new(SECRET.to_string()))).await;
    let env = cli_env(&ca, None);
    let started = std::time::Instant::now();
    let (ok, stdout, stderr) =
        easel_doctor(&env, &[&receiver.url, "--webhook-key", "abcd", "--signing-secret", SECRET]).await;
    eprintln!("easel doctor (the process, start to exit): {} ms\n{stdout}", started.elapsed().as_millis());
    assert!(ok, "{stdout}\n{stderr}");
    for name in STEPS {
        assert!(stdout.lines().any(|l| l.starts_with(&format!("ok      {name:<9} "))), "{name}:\n{stdout}");
    }
    assert!(stdout.contains("#0 CN=rcgen self signed cert  issued by CN=Easel Test Root CA"), "{stdout}");
    assert!(stdout.contains("verdict: ok"), "{stdout}");
    let received = receiver.received();
    assert_eq!(received.len(), 3);
    assert_real_shape_marked_as_test(&received[0], SECRET);

    // Without the key's signing secret the receiver refuses the test callback, and the advice says why.
    let (ok, report) = easel_doctor_json(&env, &[&receiver.url, "--webhook-key", "abcd"]).await;
    assert!(!ok);
    let http = step(&report, "http");
    assert_eq!(http["response"]["statusCode"], 401);
    assert!(http["advice"].as_str().unwrap().contains("--signing-secret"), "{http}");
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

    for path in ["/webhook/doctor", "/webhook/test"] {
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
