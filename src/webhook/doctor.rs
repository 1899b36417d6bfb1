//! The webhook doctor: one run answers "why do my callbacks not arrive?", step by step, each step
//! with a verdict and the advice to act on. It goes the way a delivery goes, with the delivery's
//! own parts (the URL rule of key creation, the SSRF guard and its resolver, the egress addresses,
//! the connector, the TLS verifier and its diagnoses, the client, the callback headers), but stops
//! at each step to say what it saw: every address and why the guard refuses one, each TCP
//! connection, the TLS chain as the server sent it, the receiver's answer to a signed test
//! callback, and whether it also takes a callback with a wrong bearer or a bad signature.
//!
//! `easel doctor URL` and `POST /webhook/doctor` both call [`run`]. Its requests are diagnostics,
//! sent while the caller waits and recorded nowhere; the test callback of `POST /webhook/test` is
//! a delivery instead, sent by the engine and kept in the delivery log.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use futures_util::future::join_all;
use hyper::http::HeaderValue;

use super::attempt::{AttemptError, ErrorClass};
use super::client::{AttemptResponse, Connector, WebhookClient, callback_headers, web_pki_verifier};
use super::engine::KeySecrets;
use super::signing::SigningKey;
use super::tls::{DiagnosingVerifier, describe};
use crate::admin::validate_webhook_url;
use crate::clock::{Millis, now_ms, rfc3339_ms};
use crate::config::WebhookConfig;
use crate::ids::DeliveryId;
use crate::secrets::new_signing_secret;
use crate::wire::{
    self, DoctorAddress, DoctorCertificate, DoctorConnection, DoctorReport, DoctorStep, DoctorTls, DoctorVerdict,
};

/// Every step, in order.
pub const STEPS: [&str; 8] = ["url", "dns", "egress", "tcp", "tls", "http", "bearer", "signature"];
/// A leaf certificate expiring sooner than this is warned about.
const EXPIRY_WARNING: Duration = Duration::from_secs(14 * 24 * 3600);
/// How much of a response the doctor shows.
const RESPONSE_EXCERPT_BYTES: usize = 200;

/// What to examine: a callback URL, the secrets its callbacks carry and a test callback's body.
pub struct Patient {
    pub url: String,
    pub secrets: KeySecrets,
    /// A test callback's body ([`super::payload::test_event`]).
    pub body: Bytes,
    /// False when the signing secret was made up for this run (`easel doctor` without
    /// `--signing-secret`): a receiver that checks signatures refuses the test callback then.
    pub own_signing_secret: bool,
}

/// Runs every step against `patient` with the delivery settings `config`.
pub async fn run(config: &WebhookConfig, patient: &Patient) -> DoctorReport {
    let started_at = now_ms();
    let started = Instant::now();
    let mut steps = Vec::with_capacity(STEPS.len());
    examine(config, patient, &mut steps).await;
    let missing: Vec<&'static str> =
        STEPS.iter().copied().filter(|name| !steps.iter().any(|step| step.step == *name)).collect();
    let failed = steps.iter().find(|step| step.verdict == DoctorVerdict::Fail).map(|step| step.step);
    for name in missing {
        let why = failed.map(|failed| format!("skipped: the {failed} step failed")).unwrap_or("skipped".into());
        steps.push(Step::new(name, DoctorVerdict::Skipped, why).into());
    }
    steps.sort_by_key(|step| STEPS.iter().position(|name| *name == step.step));
    let verdict = steps
        .iter()
        .map(|step| step.verdict)
        .filter(|verdict| *verdict != DoctorVerdict::Skipped)
        .max()
        .unwrap_or(DoctorVerdict::Ok);
    DoctorReport {
        url: patient.url.clone(),
        verdict,
        started_at: rfc3339_ms(started_at),
        duration_ms: started.elapsed().as_millis() as u64,
        steps,
    }
}

/// The report for a URL of one of this Easel's own inspector bins: its callbacks are handed to
/// the bin in-process (see `webhook::engine::LocalReceiver`), so there is no address, connection
/// or certificate to examine; the bin itself shows each callback with its bearer and signature
/// checks.
pub fn in_process(url: &str) -> DoctorReport {
    let mut steps = vec![DoctorStep::from(Step::new(
        "url",
        DoctorVerdict::Ok,
        "a request inspector bin of this Easel: callbacks are handed to it in-process, with the headers and body \
         a network receiver gets; no DNS, connection or TLS is involved (nor the https rule or the SSRF guard)",
    ))];
    for name in &STEPS[1..] {
        steps.push(
            Step::new(
                name,
                DoctorVerdict::Skipped,
                "skipped: delivered in-process; the bin records each callback with its bearer and signature checks",
            )
            .advice("read them with GET /inspector/bins/{id}/requests or easel inspect requests BIN_ID")
            .into(),
        );
    }
    DoctorReport {
        url: url.to_string(),
        verdict: DoctorVerdict::Ok,
        started_at: rfc3339_ms(now_ms()),
        duration_ms: 0,
        steps,
    }
}

/// A step under construction.
struct Step(DoctorStep);

impl Step {
    fn new(step: &'static str, verdict: DoctorVerdict, detail: impl Into<String>) -> Step {
        Step(DoctorStep {
            step,
            verdict,
            detail: detail.into(),
            advice: None,
            duration_ms: None,
            addresses: None,
            egress_ips: None,
            connections: None,
            tls: None,
            response: None,
        })
    }

    fn advice(mut self, advice: impl Into<String>) -> Step {
        self.0.advice = Some(advice.into());
        self
    }

    fn took(mut self, since: Instant) -> Step {
        self.0.duration_ms = Some(since.elapsed().as_millis() as u64);
        self
    }
}

impl From<Step> for DoctorStep {
    fn from(step: Step) -> DoctorStep {
        step.0
    }
}

/// The steps, in order, until one fails (the rest are then skipped by [`run`]).
async fn examine(config: &WebhookConfig, patient: &Patient, steps: &mut Vec<DoctorStep>) {
    let mut record = |step: Step| {
        let failed = step.0.verdict == DoctorVerdict::Fail;
        steps.push(step.into());
        failed
    };

    // The URL, by the rule key creation applies.
    let (target, step) = check_url(config, &patient.url);
    record(step);
    let Some(target) = target else { return };

    // The tools of a delivery, this run's own: its verifier keeps what the server presents. A
    // setting they cannot work with fails the step it belongs to.
    let tools = web_pki_verifier(config).and_then(|inner| {
        let verifier = Arc::new(DiagnosingVerifier::recording(inner));
        Ok((Connector::new(config, verifier.clone())?, verifier))
    });
    let (connector, verifier) = match tools {
        Ok(tools) => tools,
        Err(e) => {
            let step = match e.setting.as_str() {
                "webhook.egress_ips" => "egress",
                "webhook.extra_ca_certs" | "webhook" => "tls",
                _ => "dns",
            };
            record(Step::new(step, DoctorVerdict::Fail, e.to_string()).advice(CONFIGURATION_ADVICE));
            return;
        }
    };

    let (allowed, step) = resolve(&connector, &target).await;
    if record(step) {
        return;
    }
    if record(egress(config, &connector, &allowed)) {
        return;
    }
    let (tcp, step) = connect(&connector, &allowed).await;
    if record(step) {
        return;
    }
    let Some(tcp) = tcp else { return };
    if target.https {
        if record(handshake(&connector, &verifier, &target.host, tcp).await) {
            return;
        }
    } else {
        drop(tcp);
        let plain = "an http:// URL: callbacks travel unencrypted (webhook.allow_http is on)";
        record(Step::new("tls", DoctorVerdict::Warn, plain).advice(
            "use an https:// URL: Leonardo's guide requires HTTPS, and anyone on the path can read and change \
             plain HTTP",
        ));
    }

    let client = WebhookClient::with_connector(config, connector);
    let send = |authorization: Option<&HeaderValue>, signing: &SigningKey| {
        let webhook_id = DeliveryId::random();
        let headers =
            callback_headers(&webhook_id.to_string(), now_ms() / 1000, authorization, signing, &patient.body, true);
        let client = client.clone();
        let (url, body) = (target.url.clone(), patient.body.clone());
        async move { (webhook_id, client.post(&url, headers, body).await) }
    };

    let secrets = &patient.secrets;
    let (webhook_id, response) = send(secrets.authorization.as_ref(), &secrets.signing).await;
    if record(http_step(response, webhook_id, patient)) {
        return;
    }

    let step = match &secrets.authorization {
        None => Step::new(
            "bearer",
            DoctorVerdict::Warn,
            "no webhook callback API key: callbacks carry no authorization header, so the receiver can only tell them \
             from forgeries by their signature",
        )
        .advice(
            "give the API key a webhook key (create a new key with --webhook-key) and have the receiver refuse \
             callbacks without `authorization: Bearer <it>`",
        ),
        Some(_) => {
            let mut wrong = HeaderValue::from_str(&format!("Bearer easel-doctor-wrong-{}", DeliveryId::random()))
                .expect("a valid header value");
            wrong.set_sensitive(true);
            let (webhook_id, response) = send(Some(&wrong), &secrets.signing).await;
            probe_step(
                "bearer",
                response,
                webhook_id,
                "a callback with a wrong bearer token",
                "it accepts unauthenticated callbacks",
                "refuse (with 401) every callback whose authorization header is not exactly \
                 `Bearer <your webhook key>`",
            )
        }
    };
    record(step);

    let forger = SigningKey::from_secret(&new_signing_secret()).expect("a fresh secret decodes");
    let (webhook_id, response) = send(secrets.authorization.as_ref(), &forger).await;
    record(probe_step(
        "signature",
        response,
        webhook_id,
        "a callback signed with another secret",
        "it does not verify webhook-signature",
        "verify webhook-id, webhook-timestamp and webhook-signature with the key's signing secret (any Standard \
         Webhooks library does) and refuse what does not verify",
    ));
}

const CONFIGURATION_ADVICE: &str = "fix Easel's [webhook] settings (this is the Easel operator's to do)";

/// A URL the checks may go to.
struct Target {
    /// As key creation normalizes it.
    url: String,
    host: String,
    port: u16,
    https: bool,
}

/// The URL's parts, or `None` (and a failed step) when key creation would refuse it.
fn check_url(config: &WebhookConfig, url: &str) -> (Option<Target>, Step) {
    let url = match validate_webhook_url(url, config) {
        Ok(url) => url,
        Err(e) => {
            let step = Step::new("url", DoctorVerdict::Fail, e.to_string()).advice(
                "use an absolute https:// URL with a host, without user:password@ or a #fragment (the rule for a \
                 key's webhook URL)",
            );
            return (None, step);
        }
    };
    let parsed = url::Url::parse(&url).expect("validated");
    let host = parsed.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string();
    let https = parsed.scheme() == "https";
    let port = parsed.port_or_known_default().unwrap_or(if https { 443 } else { 80 });
    let detail = format!("{}: host {host}, port {port}, path {}", parsed.scheme(), parsed.path());
    (Some(Target { url, host, port, https }), Step::new("url", DoctorVerdict::Ok, detail))
}

/// Every address of the host, and which ones the SSRF guard refuses and why.
async fn resolve(connector: &Connector, target: &Target) -> (Vec<SocketAddr>, Step) {
    let started = Instant::now();
    let guard = connector.guard();
    let resolved = tokio::time::timeout(connector.connect_timeout(), guard.resolver.resolve(&target.host, target.port))
        .await
        .unwrap_or_else(|_| {
            Err(AttemptError::new(
                ErrorClass::Dns,
                format!(
                    "could not resolve {} within {}",
                    target.host,
                    humantime::format_duration(connector.connect_timeout())
                ),
            ))
        });
    let addresses = match resolved {
        Ok(addresses) => addresses,
        Err(error) => {
            let advice = if error.class == ErrorClass::Blocked {
                "use a public host name: callbacks never go to special-use names"
            } else {
                "check the host name and its DNS records (A and AAAA): Easel must resolve it from where it runs"
            };
            return (Vec::new(), Step::new("dns", DoctorVerdict::Fail, error.detail).advice(advice).took(started));
        }
    };
    let listed: Vec<DoctorAddress> = addresses
        .iter()
        .map(|a| DoctorAddress {
            address: a.ip(),
            allowed: guard.policy.refusal(a.ip()).is_none(),
            refusal: guard.policy.refusal(a.ip()),
        })
        .collect();
    let total = addresses.len();
    let (allowed, mut step) = match guard.policy.allowed(&target.host, addresses) {
        Err(error) => (
            Vec::new(),
            Step::new("dns", DoctorVerdict::Fail, error.detail).advice(
                "callbacks only go to public addresses: point the host at one (for development, the Easel operator \
                 can exempt a network with webhook.allow_private_networks)",
            ),
        ),
        Ok(allowed) if allowed.len() < total => {
            let refused: Vec<String> = listed
                .iter()
                .filter(|a| !a.allowed)
                .map(|a| format!("{} ({})", a.address, a.refusal.unwrap_or("blocked")))
                .collect();
            let detail = format!(
                "{} resolves to {total} addresses; callbacks go only to {} and never to {}",
                target.host,
                list(&allowed),
                refused.join(", ")
            );
            let step = Step::new("dns", DoctorVerdict::Warn, detail)
                .advice("remove the private or reserved addresses from the host's DNS records");
            (allowed, step)
        }
        Ok(allowed) => {
            let detail = format!("{} resolves to {}: all allowed", target.host, list(&allowed));
            (allowed, Step::new("dns", DoctorVerdict::Ok, detail))
        }
    };
    step.0.addresses = Some(listed);
    (allowed, step.took(started))
}

fn list(addresses: &[SocketAddr]) -> String {
    addresses.iter().map(|a| a.ip().to_string()).collect::<Vec<_>>().join(", ")
}

/// The addresses callbacks leave from, for the receiver's allowlist.
fn egress(config: &WebhookConfig, connector: &Connector, allowed: &[SocketAddr]) -> Step {
    let egress = connector.egress().addresses().to_vec();
    let mut step = if let Some(proxy) = &config.proxy_url {
        let url = proxy.url();
        let at = format!("{}:{}", url.host_str().unwrap_or_default(), url.port_or_known_default().unwrap_or(80));
        Step::new(
            "egress",
            DoctorVerdict::Ok,
            format!("callbacks go through the proxy {at} (webhook.proxy_url): the receiver sees the proxy's address"),
        )
    } else if egress.is_empty() {
        Step::new(
            "egress",
            DoctorVerdict::Ok,
            "webhook.egress_ips is not set: callbacks leave from whatever address this machine routes from (the tcp \
             step shows it)",
        )
    } else {
        match connector.egress().reachable(allowed) {
            Err(error) => Step::new("egress", DoctorVerdict::Fail, error.detail).advice(
                "add an egress address of the receiver's IP family to webhook.egress_ips, or give the host an address \
                 of the family Easel leaves from",
            ),
            Ok(_) => {
                let from: Vec<String> = egress.iter().map(|ip| ip.to_string()).collect();
                Step::new(
                    "egress",
                    DoctorVerdict::Ok,
                    format!("callbacks leave from {} (webhook.egress_ips)", from.join(", ")),
                )
                .advice("allow these addresses in the receiver's firewall (they are published at GET /egress-ips)")
            }
        }
    };
    step.0.egress_ips = Some(egress);
    step
}

/// A TCP connection to each allowed address, at once; the first one that connected (in the order
/// of the addresses, as a delivery tries them) is kept for TLS.
async fn connect(connector: &Connector, allowed: &[SocketAddr]) -> (Option<tokio::net::TcpStream>, Step) {
    let started = Instant::now();
    let attempts = allowed.iter().map(|address| async move {
        let began = Instant::now();
        let result = tokio::time::timeout(connector.connect_timeout(), connector.open(std::slice::from_ref(address)))
            .await
            .unwrap_or_else(|_| {
                Err(AttemptError::new(
                    ErrorClass::ConnectTimeout,
                    format!(
                        "connecting to {address} timed out after {}",
                        humantime::format_duration(connector.connect_timeout())
                    ),
                ))
            });
        (*address, began.elapsed(), result)
    });
    let mut kept = None;
    let mut connections = Vec::new();
    let mut problems = Vec::new();
    for (address, took, result) in join_all(attempts).await {
        let duration_ms = took.as_millis() as u64;
        match result {
            Ok(tcp) => {
                let from = tcp.local_addr().ok().map(|a| a.to_string());
                connections.push(DoctorConnection {
                    address: address.to_string(),
                    outcome: "connected",
                    duration_ms,
                    from,
                    error_class: None,
                    error_detail: None,
                });
                if kept.is_none() {
                    kept = Some(tcp);
                }
            }
            Err(error) => {
                let outcome = match error.class {
                    ErrorClass::ConnectRefused => "refused",
                    ErrorClass::ConnectTimeout => "timeout",
                    _ => "failed",
                };
                problems.push((outcome, error.detail.clone()));
                connections.push(DoctorConnection {
                    address: address.to_string(),
                    outcome,
                    duration_ms,
                    from: None,
                    error_class: Some(error.class.as_str()),
                    error_detail: Some(error.detail),
                });
            }
        }
    }
    let connected: Vec<String> = connections
        .iter()
        .filter(|c| c.outcome == "connected")
        .map(|c| {
            let from = c.from.as_deref().map(|from| format!(" from {from}")).unwrap_or_default();
            format!("{} in {} ms{from}", c.address, c.duration_ms)
        })
        .collect();
    let failures: Vec<String> = problems.iter().map(|(outcome, detail)| format!("{outcome}: {detail}")).collect();
    let advice = problems.iter().find_map(|(outcome, _)| match *outcome {
        "refused" => Some(
            "nothing listens on that port at that address: start the receiver, check the port in the URL, and check \
             that no firewall rejects connections",
        ),
        "timeout" => Some(
            "the address does not answer: a firewall probably drops Easel's packets; allow the egress addresses in it",
        ),
        _ => None,
    });
    let mut step = if connected.is_empty() {
        Step::new("tcp", DoctorVerdict::Fail, failures.join("; "))
            .advice(advice.unwrap_or("check the receiver's network: Easel could not connect to it"))
    } else if failures.is_empty() {
        Step::new("tcp", DoctorVerdict::Ok, format!("connected to {}", connected.join(", ")))
    } else {
        let detail = format!("connected to {}; but {}", connected.join(", "), failures.join("; "));
        Step::new("tcp", DoctorVerdict::Warn, detail).advice(format!(
            "callbacks use the addresses that answer, after waiting for the others: {}",
            advice.unwrap_or("make every address of the host reachable, or remove the others from DNS")
        ))
    };
    step.0.connections = Some(connections);
    (kept, step.took(started))
}

/// The TLS handshake: protocol, cipher, the chain as sent, the verdict in the diagnoses' words
/// (or, when no certificate came and the port answers a plain HTTP request, that it serves plain
/// HTTP), and a warning when the leaf expires soon.
async fn handshake(
    connector: &Connector,
    verifier: &DiagnosingVerifier,
    host: &str,
    tcp: tokio::net::TcpStream,
) -> Step {
    let started = Instant::now();
    let deadline = tokio::time::Instant::now() + connector.connect_timeout();
    let peer = tcp.peer_addr().ok();
    let result = connector.handshake(host, tcp, deadline).await;
    let presented = verifier.presented();
    let summaries: Vec<_> = presented.chain.iter().filter_map(describe).collect();
    let certificates: Vec<DoctorCertificate> = summaries
        .iter()
        .map(|c| DoctorCertificate {
            subject: c.subject.clone(),
            issuer: c.issuer.clone(),
            not_before: rfc3339_ms(c.not_before),
            not_after: rfc3339_ms(c.not_after),
            names: c.names.clone(),
        })
        .collect();
    let (tls, mut step) = match result {
        Err(error) => {
            let advice = match presented.problem {
                Some(problem) => problem.advice().to_string(),
                None => "check the receiver's TLS set-up: `openssl s_client -showcerts -connect HOST:PORT -servername \
                         HOST` shows what it sends"
                    .to_string(),
            };
            // No certificate came: a server speaking plain HTTP on the port is the usual cause; ask it.
            let plain = match peer {
                Some(peer) if presented.chain.is_empty() => plain_http_status(connector, host, peer).await,
                _ => None,
            };
            let step = match plain {
                Some(status) => Step::new(
                    "tls",
                    DoctorVerdict::Fail,
                    format!(
                        "TLS handshake with {host} failed: the server answered in plain HTTP, not TLS (to a plain \
                         request on this port it answers {status:?})"
                    ),
                )
                .advice(
                    "this port serves plain HTTP: serve HTTPS on it (a certificate in the receiver, or a TLS reverse \
                     proxy in front of it), or create a new key with the https:// URL of the port that serves TLS",
                ),
                None => Step::new("tls", DoctorVerdict::Fail, error.detail).advice(advice),
            };
            (DoctorTls { protocol: None, cipher: None, certificates }, step)
        }
        Ok(stream) => {
            let connection = stream.get_ref().1;
            let protocol = connection.protocol_version().map(|v| format!("{v:?}"));
            let cipher = connection.negotiated_cipher_suite().map(|c| format!("{:?}", c.suite()));
            let tls = DoctorTls { protocol: protocol.clone(), cipher: cipher.clone(), certificates };
            let session = format!("{}, {}", protocol.unwrap_or_default(), cipher.unwrap_or_default());
            let step = match summaries.first() {
                None => Step::new("tls", DoctorVerdict::Ok, format!("{session}; the certificate verifies")),
                Some(leaf) => {
                    let detail = format!(
                        "{session}; the certificate for {} verifies (issued by \"{}\", {} certificate{} sent), valid \
                         until {}",
                        leaf.names.join(", "),
                        leaf.issuer,
                        summaries.len(),
                        if summaries.len() == 1 { "" } else { "s" },
                        rfc3339_ms(leaf.not_after)
                    );
                    let left = leaf.not_after - now_ms();
                    if left < EXPIRY_WARNING.as_millis() as Millis {
                        let days = left as f64 / 86_400_000.0;
                        Step::new(
                            "tls",
                            DoctorVerdict::Warn,
                            format!("{detail}: the certificate expires in {days:.1} days"),
                        )
                        .advice("renew the certificate now (and check that renewals run by themselves)")
                    } else {
                        Step::new("tls", DoctorVerdict::Ok, detail)
                    }
                }
            };
            (tls, step)
        }
    };
    step.0.tls = Some(tls);
    step.took(started)
}

/// The status line a server at `peer` answers a plain HTTP `HEAD /` with (from the egress
/// addresses, within the connect timeout), or `None` when it does not answer in HTTP.
async fn plain_http_status(connector: &Connector, host: &str, peer: SocketAddr) -> Option<String> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let ask = async {
        let mut tcp = connector.open(&[peer]).await.ok()?;
        let request = format!("HEAD / HTTP/1.0\r\nHost: {host}\r\nUser-Agent: easel-doctor\r\n\r\n");
        tcp.write_all(request.as_bytes()).await.ok()?;
        let mut answer = vec![0; 256];
        let mut read = 0;
        while read < answer.len() && !answer[..read].contains(&b'\n') {
            match tcp.read(&mut answer[read..]).await.ok()? {
                0 => break,
                n => read += n,
            }
        }
        let line = String::from_utf8_lossy(&answer[..read]).lines().next()?.trim().to_string();
        line.starts_with("HTTP/").then_some(line)
    };
    tokio::time::timeout(connector.connect_timeout(), ask).await.ok().flatten()
}

/// The response as the attempt log shows it, with a shorter excerpt.
fn attempt_of(response: AttemptResponse, webhook_id: DeliveryId) -> wire::Attempt {
    let mut attempt = wire::Attempt::new(&response.logged(webhook_id, 1));
    if let Some(excerpt) = &mut attempt.response_excerpt
        && excerpt.len() > RESPONSE_EXCERPT_BYTES
    {
        let mut end = RESPONSE_EXCERPT_BYTES;
        while !excerpt.is_char_boundary(end) {
            end -= 1;
        }
        excerpt.truncate(end);
        excerpt.push('…');
    }
    attempt
}

/// The signed test callback, as a delivery sends it.
fn http_step(response: AttemptResponse, webhook_id: DeliveryId, patient: &Patient) -> Step {
    let error = response.error.clone();
    let status = response.status;
    let attempt = attempt_of(response, webhook_id);
    let answered = attempt.response_excerpt.as_deref().map(|e| format!(": {e:?}")).unwrap_or_default();
    let mut step = match error {
        None => Step::new(
            "http",
            DoctorVerdict::Ok,
            format!(
                "the signed test callback (webhook-id {webhook_id}) was taken: HTTP {} in {} ms{answered}",
                status.unwrap_or_default(),
                attempt.duration_ms
            ),
        ),
        Some(error) => {
            let advice = match (error.class, status) {
                (_, Some(401 | 403)) if !patient.own_signing_secret => {
                    "the receiver refused the test callback's credentials; this run signed it with a made-up secret: \
                     pass the key's signing secret (--signing-secret), or use POST /api/rest/v1/webhook/doctor with \
                     the key, which signs with it"
                }
                (_, Some(401 | 403)) => {
                    "the receiver refused the callback's credentials: it must accept `authorization: Bearer <webhook \
                     key>` and verify the signature with this key's signing secret"
                }
                (_, Some(404)) => "check the URL's path: the receiver has nothing there",
                (_, Some(405)) => "the receiver must take POST requests at this URL",
                (_, Some(413)) => "the receiver must take JSON bodies of a few KiB or more",
                (ErrorClass::Redirect, _) => {
                    "redirects are not followed: make the webhook URL the final address (create a new key with it)"
                }
                (_, Some(500..=599)) => "the receiver failed on the callback: look at its logs",
                (ErrorClass::Timeout, _) => {
                    "answer within webhook.timeout: acknowledge the callback first (2xx), then do the work"
                }
                (_, Some(_)) => "callbacks count as delivered only on a 2xx answer",
                _ => {
                    "the connection failed during the request: look at the receiver's logs and any proxy in front of it"
                }
            };
            Step::new("http", DoctorVerdict::Fail, format!("{}{answered}", error.detail)).advice(advice)
        }
    };
    step.0.duration_ms = Some(u64::from(attempt.duration_ms));
    step.0.response = Some(attempt);
    step
}

/// A callback the receiver should refuse: a warning if it takes it.
fn probe_step(
    name: &'static str,
    response: AttemptResponse,
    webhook_id: DeliveryId,
    what: &str,
    so: &str,
    advice: &str,
) -> Step {
    let status = response.status;
    let error = response.error.clone();
    let attempt = attempt_of(response, webhook_id);
    let mut step = match (status, error) {
        (Some(status), None) => {
            Step::new(name, DoctorVerdict::Warn, format!("the receiver accepted {what} (HTTP {status}): {so}"))
                .advice(advice)
        }
        (Some(status), Some(_)) => {
            Step::new(name, DoctorVerdict::Ok, format!("the receiver refused {what} (HTTP {status})"))
        }
        (None, Some(error)) => Step::new(
            name,
            DoctorVerdict::Warn,
            format!("cannot tell whether the receiver refuses {what}: {}", error.detail),
        ),
        (None, None) => unreachable!("an attempt without a status failed"),
    };
    step.0.duration_ms = Some(u64::from(attempt.duration_ms));
    step.0.response = Some(attempt);
    step
}

/// The report as the command line prints it: a line per step (verdict, step, what was found,
/// and the advice after an arrow), the chain under the TLS step, and the verdict.
pub fn render(report: &DoctorReport) -> String {
    let mut text = format!("easel doctor {}\n", report.url);
    for step in &report.steps {
        let advice = step.advice.as_deref().map(|a| format!("  → {a}")).unwrap_or_default();
        text.push_str(&format!("{:<7} {:<9} {}{advice}\n", step.verdict.as_str(), step.step, step.detail));
        if let Some(tls) = &step.tls {
            for (n, c) in tls.certificates.iter().enumerate() {
                text.push_str(&format!(
                    "{:17} #{n} {}  issued by {}  valid {} to {}  names: {}\n",
                    "",
                    c.subject,
                    c.issuer,
                    c.not_before,
                    c.not_after,
                    if c.names.is_empty() { "(none)".to_string() } else { c.names.join(", ") }
                ));
            }
        }
    }
    text.push_str(&format!("verdict: {} ({} ms)\n", report.verdict.as_str(), report.duration_ms));
    text
}
