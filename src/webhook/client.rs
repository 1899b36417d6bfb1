//! The HTTP(S) client that makes delivery attempts: pooled keep-alive HTTP/1.1 connections
//! (hyper), TLS by rustls with the web PKI roots plus `extra_ca_certs`, redirects never followed,
//! response bodies read up to a cap, and every failure classified precisely for the attempt log.

use std::error::Error as StdError;
use std::future::Future;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::Uri;
use hyper::http::{HeaderMap, HeaderValue, Request, header};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::{Connected, Connection};
use hyper_util::rt::{TokioExecutor, TokioIo};
use rustls::RootCertStore;
use rustls::client::WebPkiServerVerifier;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, ServerName};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpSocket, TcpStream};
use tokio_rustls::TlsConnector;

pub use super::attempt::{AttemptError, ErrorClass};
use super::guard::Guard;
use super::schedule::parse_retry_after;
use super::signing::SigningKey;
use super::tls::{DiagnosingVerifier, explain};
use crate::clock::{Millis, now_ms};
use crate::config::{ProxyUrl, WebhookConfig};
use crate::ids::DeliveryId;
use crate::records::Attempt;
use crate::setting::InvalidSetting;

/// How much of a response body the attempt log keeps.
pub const EXCERPT_BYTES: usize = 1024;

/// What one attempt produced.
#[derive(Clone, Debug)]
pub struct AttemptResponse {
    pub started_at: Millis,
    pub duration: Duration,
    /// The response status, if a response arrived.
    pub status: Option<u16>,
    pub retry_after: Option<Duration>,
    pub excerpt: Option<String>,
    /// Set when the attempt failed (transport errors, non-2xx statuses, redirects).
    pub error: Option<AttemptError>,
}

impl AttemptResponse {
    /// An attempt starting now, with nothing known yet.
    pub fn starting() -> AttemptResponse {
        AttemptResponse {
            started_at: now_ms(),
            duration: Duration::ZERO,
            status: None,
            retry_after: None,
            excerpt: None,
            error: None,
        }
    }

    /// The attempt log's entry for this response, attempt number `attempt` of `delivery`.
    pub fn logged(self, delivery: DeliveryId, attempt: u32) -> Attempt {
        Attempt {
            delivery_id: delivery,
            attempt,
            started_at: self.started_at,
            duration_ms: self.duration.as_millis().min(u128::from(u32::MAX)) as u32,
            status_code: self.status,
            error_class: self.error.as_ref().map(|e| e.class.as_str().to_string()),
            error_detail: self.error.map(|e| e.detail),
            response_excerpt: self.excerpt,
        }
    }
}

/// Reads the PEM file of `[webhook] extra_ca_certs`.
pub fn load_extra_roots(path: &Path) -> Result<Vec<CertificateDer<'static>>, InvalidSetting> {
    let invalid = |reason: String| InvalidSetting::new("webhook.extra_ca_certs", reason);
    let bytes =
        std::fs::read(path).map_err(|e| invalid(format!("cannot read {}: {e}", path.display())).caused_by(e))?;
    let certificates: Vec<CertificateDer<'static>> =
        CertificateDer::pem_slice_iter(&bytes)
            .collect::<Result<_, _>>()
            .map_err(|e| invalid(format!("{} is not a PEM file of certificates: {e}", path.display())).caused_by(e))?;
    if certificates.is_empty() {
        return Err(invalid(format!("{} holds no PEM certificate", path.display())));
    }
    Ok(certificates)
}

/// The web PKI verifier for callbacks: the built-in roots plus the configured extra roots.
pub fn web_pki_verifier(config: &WebhookConfig) -> Result<Arc<WebPkiServerVerifier>, InvalidSetting> {
    let invalid = |reason: String| InvalidSetting::new("webhook.extra_ca_certs", reason);
    let mut roots = RootCertStore { roots: webpki_roots::TLS_SERVER_ROOTS.to_vec() };
    if let Some(path) = &config.extra_ca_certs {
        for certificate in load_extra_roots(path)? {
            roots
                .add(certificate)
                .map_err(|e| invalid(format!("{}: unusable root certificate: {e}", path.display())).caused_by(e))?;
        }
    }
    WebPkiServerVerifier::builder_with_provider(Arc::new(roots), Arc::new(rustls::crypto::ring::default_provider()))
        .build()
        .map_err(|e| invalid(format!("cannot build a verifier for these roots: {e}")).caused_by(e))
}

/// TLS settings for callbacks: certificates judged (and explained) by `verifier`.
pub fn tls_config(verifier: Arc<DiagnosingVerifier>) -> Result<rustls::ClientConfig, InvalidSetting> {
    let mut tls = rustls::ClientConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
        .with_safe_default_protocol_versions()
        .map_err(|e| InvalidSetting::new("webhook", format!("no usable TLS protocol version: {e}")).caused_by(e))?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(tls)
}

/// The `user-agent` of callbacks.
pub const USER_AGENT: &str = concat!("Easel/", env!("CARGO_PKG_VERSION"));
/// The header that marks a test callback (`easel-test: true`); its body has a real callback's
/// shape, so nothing else tells it apart.
pub const TEST_HEADER: &str = "easel-test";

/// The headers of one callback attempt: the guide's, the bearer when the key has a webhook key,
/// and the Standard Webhooks headers signing `body` at `timestamp` (seconds) under `webhook_id`.
pub fn callback_headers(
    webhook_id: &str,
    timestamp: i64,
    authorization: Option<&HeaderValue>,
    signing: &SigningKey,
    body: &[u8],
    test: bool,
) -> HeaderMap {
    let mut headers = HeaderMap::with_capacity(8);
    headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    headers.insert(header::ACCEPT, HeaderValue::from_static("application/json, text/plain, */*"));
    headers.insert(header::USER_AGENT, HeaderValue::from_static(USER_AGENT));
    if let Some(authorization) = authorization {
        headers.insert(header::AUTHORIZATION, authorization.clone());
    }
    let signature = signing.sign(webhook_id, timestamp, body);
    headers.insert("webhook-id", HeaderValue::from_str(webhook_id).expect("an id is a valid header value"));
    headers.insert("webhook-timestamp", HeaderValue::from(timestamp));
    headers.insert("webhook-signature", HeaderValue::from_str(&signature).expect("base64 is a valid header value"));
    if test {
        headers.insert(TEST_HEADER, HeaderValue::from_static("true"));
    }
    headers
}

/// Sends delivery attempts.
#[derive(Clone)]
pub struct WebhookClient {
    http: Client<Connector, Full<Bytes>>,
    timeout: Duration,
    max_response_bytes: usize,
}

impl WebhookClient {
    /// Fails if the configuration cannot work here (an egress address not assigned to this
    /// machine, say).
    pub fn new(config: &WebhookConfig) -> Result<WebhookClient, InvalidSetting> {
        let verifier = DiagnosingVerifier::new(web_pki_verifier(config)?);
        Ok(WebhookClient::with_connector(config, Connector::new(config, Arc::new(verifier))?))
    }

    /// A client whose connections `connector` opens (the doctor's, which records what it sees).
    pub fn with_connector(config: &WebhookConfig, connector: Connector) -> WebhookClient {
        let http = Client::builder(TokioExecutor::new())
            .pool_max_idle_per_host(config.per_endpoint_in_flight)
            .pool_idle_timeout(Duration::from_secs(60))
            .build(connector);
        WebhookClient { http, timeout: config.timeout, max_response_bytes: config.max_response_bytes }
    }

    /// POSTs `body` to `url` with `headers`; never follows redirects.
    pub async fn post(&self, url: &str, headers: HeaderMap, body: Bytes) -> AttemptResponse {
        let started = Instant::now();
        let mut response = AttemptResponse::starting();
        let uri: Uri = match url.parse() {
            Ok(uri) => uri,
            Err(e) => {
                response.error = Some(AttemptError::new(ErrorClass::InvalidUrl, format!("{url:?}: {e}")));
                return response;
            }
        };
        let mut request = Request::post(uri).body(Full::new(body)).expect("a valid URI and headers");
        *request.headers_mut() = headers;
        let deadline = tokio::time::Instant::now() + self.timeout;
        let head = match tokio::time::timeout_at(deadline, self.http.request(request)).await {
            Err(_) => Err(AttemptError::new(
                ErrorClass::Timeout,
                format!("no response within {}", humantime::format_duration(self.timeout)),
            )),
            Ok(Err(e)) => Err(classify(&e)),
            Ok(Ok(head)) => Ok(head),
        };
        let head = match head {
            Ok(head) => head,
            Err(error) => {
                response.error = Some(error);
                response.duration = started.elapsed();
                return response;
            }
        };
        let (parts, body) = head.into_parts();
        // The status decides the outcome; the body is only read (up to the cap, within the
        // deadline) for the log and to keep the connection reusable.
        let body = read_capped(body, self.max_response_bytes, deadline).await;
        response.duration = started.elapsed();
        response.judge(parts.status, &parts.headers, &body);
        response
    }
}

impl AttemptResponse {
    /// Records a receiver's answer and judges it: the status decides (redirects are not
    /// followed), `Retry-After` is read, the body is kept as an excerpt. The one judgement of an
    /// answer, for the network client and in-process receivers (the inspector's bins) alike.
    pub fn judge(&mut self, status: hyper::StatusCode, headers: &HeaderMap, body: &[u8]) {
        self.status = Some(status.as_u16());
        let header_text = |name: header::HeaderName| headers.get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
        let location = header_text(header::LOCATION);
        self.retry_after = header_text(header::RETRY_AFTER).and_then(|v| parse_retry_after(&v, SystemTime::now()));
        if !body.is_empty() {
            self.excerpt = Some(printable_excerpt(&body[..body.len().min(EXCERPT_BYTES)]));
        }
        if status.is_redirection() {
            let to = location.map(|l| format!(" to {l}")).unwrap_or_default();
            self.error = Some(AttemptError::new(
                ErrorClass::Redirect,
                format!("HTTP {status}: a redirect{to}; redirects are not followed, update the webhook URL instead"),
            ));
        } else if !status.is_success() {
            self.error = Some(AttemptError::new(ErrorClass::HttpStatus, format!("HTTP {status}")));
        }
    }
}

/// A receiver's bytes as text any database stores and any terminal shows: invalid UTF-8 becomes
/// U+FFFD, and control characters other than tab and line breaks (NUL above all, which a
/// PostgreSQL `TEXT` column refuses) are written as `\xNN` escapes.
pub fn printable_excerpt(bytes: &[u8]) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut printable = String::with_capacity(text.len());
    for c in text.chars() {
        if c.is_control() && !matches!(c, '\t' | '\n' | '\r') {
            printable.push_str(&format!("\\x{:02x}", u32::from(c)));
        } else {
            printable.push(c);
        }
    }
    printable
}

async fn read_capped(mut body: hyper::body::Incoming, cap: usize, deadline: tokio::time::Instant) -> Vec<u8> {
    let mut bytes = Vec::new();
    while bytes.len() < cap {
        match tokio::time::timeout_at(deadline, body.frame()).await {
            Ok(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let room = cap - bytes.len();
                    bytes.extend_from_slice(&data[..data.len().min(room)]);
                }
            }
            _ => break,
        }
    }
    bytes
}

/// Turns a client error into the attempt log's words.
fn classify(error: &hyper_util::client::legacy::Error) -> AttemptError {
    let mut source: Option<&(dyn StdError + 'static)> = error.source();
    while let Some(cause) = source {
        if let Some(attempt) = cause.downcast_ref::<AttemptError>() {
            return attempt.clone();
        }
        if let Some(hyper_error) = cause.downcast_ref::<hyper::Error>() {
            let detail = if hyper_error.is_incomplete_message() {
                "the receiver closed the connection before sending a complete response".to_string()
            } else if hyper_error.is_parse() {
                format!("the response is not valid HTTP/1.1 ({hyper_error})")
            } else {
                format!("the connection failed during the request ({})", chain(hyper_error))
            };
            return AttemptError::new(ErrorClass::Connection, detail);
        }
        source = cause.source();
    }
    let class = if error.is_connect() { ErrorClass::Connect } else { ErrorClass::Connection };
    AttemptError::new(class, chain(error))
}

fn chain(error: &dyn StdError) -> String {
    let mut text = error.to_string();
    let mut source = error.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Opens connections for the pool: resolves the host to checked addresses (the SSRF guard),
/// connects from an egress address (directly or through the HTTP CONNECT proxy, asking it for the
/// checked address), and speaks TLS for `https` with the URL's host name as SNI. Its errors are
/// `AttemptError`s, already classified.
#[derive(Clone)]
pub struct Connector {
    tls: TlsConnector,
    connect_timeout: Duration,
    guard: Guard,
    egress: Arc<Egress>,
    proxy: Option<Arc<Proxy>>,
}

impl tower_service::Service<Uri> for Connector {
    type Response = TokioIo<Stream>;
    type Error = AttemptError;
    type Future = Pin<Box<dyn Future<Output = Result<Self::Response, AttemptError>> + Send>>;

    fn poll_ready(&mut self, _: &mut Context<'_>) -> Poll<Result<(), AttemptError>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, uri: Uri) -> Self::Future {
        let connector = self.clone();
        Box::pin(async move { connector.connect(uri).await.map(TokioIo::new) })
    }
}

impl Connector {
    /// Connections as `config` says, with certificates judged by `verifier`.
    pub fn new(config: &WebhookConfig, verifier: Arc<DiagnosingVerifier>) -> Result<Connector, InvalidSetting> {
        Ok(Connector {
            tls: TlsConnector::from(Arc::new(tls_config(verifier)?)),
            connect_timeout: config.connect_timeout,
            guard: Guard::from_config(config)?,
            egress: Arc::new(Egress::new(&config.egress_ips)?),
            proxy: config.proxy_url.as_ref().map(|proxy| Arc::new(Proxy::new(proxy))),
        })
    }

    /// The SSRF guard every connection's host goes through.
    pub fn guard(&self) -> &Guard {
        &self.guard
    }

    /// The addresses connections leave from.
    pub fn egress(&self) -> &Egress {
        &self.egress
    }

    /// Connecting (TCP and TLS) must finish within this.
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    async fn connect(&self, uri: Uri) -> Result<Stream, AttemptError> {
        let https = match uri.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => {
                return Err(AttemptError::new(ErrorClass::InvalidUrl, format!("unsupported scheme {other:?}")));
            }
        };
        let host = uri.host().ok_or_else(|| AttemptError::new(ErrorClass::InvalidUrl, "the URL has no host"))?;
        let host = host.trim_start_matches('[').trim_end_matches(']').to_string();
        let port = uri.port_u16().unwrap_or(if https { 443 } else { 80 });
        let deadline = tokio::time::Instant::now() + self.connect_timeout;
        let within = |what: String| {
            AttemptError::new(
                ErrorClass::ConnectTimeout,
                format!("{what} within {}", humantime::format_duration(self.connect_timeout)),
            )
        };
        let addresses = tokio::time::timeout_at(deadline, self.guard.resolve(&host, port))
            .await
            .map_err(|_| within(format!("could not resolve {host}")))??;
        let tcp = tokio::time::timeout_at(deadline, self.open(&addresses))
            .await
            .map_err(|_| within("could not connect".to_string()))??;
        let _ = tcp.set_nodelay(true);
        if !https {
            return Ok(Stream::Plain(tcp));
        }
        Ok(Stream::Tls(Box::new(self.handshake(&host, tcp, deadline).await?)))
    }

    /// The TLS handshake with `host` (its name is the SNI and what the certificate must hold) over
    /// `tcp`, finished by `deadline`.
    pub async fn handshake(
        &self,
        host: &str,
        tcp: TcpStream,
        deadline: tokio::time::Instant,
    ) -> Result<tokio_rustls::client::TlsStream<TcpStream>, AttemptError> {
        let server_name = ServerName::try_from(host.to_string()).map_err(|e| {
            AttemptError::new(ErrorClass::InvalidUrl, format!("{host:?} is not a valid TLS server name: {e}"))
        })?;
        tokio::time::timeout_at(deadline, self.tls.connect(server_name, tcp))
            .await
            .map_err(|_| {
                AttemptError::new(
                    ErrorClass::Tls,
                    format!(
                        "TLS handshake with {host} did not finish within {}",
                        humantime::format_duration(self.connect_timeout)
                    ),
                )
            })?
            .map_err(|e| tls_error(host, &e))
    }

    /// A TCP stream to one of `addresses` (all checked), from an egress address.
    pub async fn open(&self, addresses: &[SocketAddr]) -> Result<TcpStream, AttemptError> {
        match &self.proxy {
            None => {
                let reachable = self.egress.reachable(addresses)?;
                connect_any(&reachable, &self.egress).await
            }
            Some(proxy) => {
                let proxy_addresses: Vec<SocketAddr> = tokio::net::lookup_host((proxy.host.as_str(), proxy.port))
                    .await
                    .map_err(|e| {
                        AttemptError::new(ErrorClass::Proxy, format!("cannot resolve the proxy {}: {e}", proxy.host))
                    })?
                    .collect();
                let reachable = self.egress.reachable(&proxy_addresses)?;
                let mut last = None;
                for target in addresses {
                    let stream = connect_any(&reachable, &self.egress).await.map_err(|e| {
                        AttemptError::new(ErrorClass::Proxy, format!("cannot reach the proxy: {}", e.detail))
                    })?;
                    match proxy.tunnel(stream, *target).await {
                        Ok(stream) => return Ok(stream),
                        Err(e) => last = Some(e),
                    }
                }
                Err(last.expect("at least one address"))
            }
        }
    }
}

/// The local addresses callbacks leave from (`webhook.egress_ips`), taken in turn.
pub struct Egress {
    addresses: Vec<IpAddr>,
    next: AtomicUsize,
}

impl Egress {
    /// Checks that every address is assigned to this machine (it can be bound).
    pub fn new(addresses: &[IpAddr]) -> Result<Egress, InvalidSetting> {
        for address in addresses {
            std::net::TcpListener::bind(SocketAddr::new(*address, 0)).map_err(|e| {
                let reason = format!("{address} is not an address of this machine ({e})");
                InvalidSetting::new("webhook.egress_ips", reason).caused_by(e)
            })?;
        }
        Ok(Egress { addresses: addresses.to_vec(), next: AtomicUsize::new(0) })
    }

    /// The destinations an egress address of the same family can reach (all without egress
    /// addresses).
    pub fn reachable(&self, destinations: &[SocketAddr]) -> Result<Vec<SocketAddr>, AttemptError> {
        if self.addresses.is_empty() {
            return Ok(destinations.to_vec());
        }
        let reachable: Vec<SocketAddr> = destinations
            .iter()
            .copied()
            .filter(|d| self.addresses.iter().any(|a| a.is_ipv4() == d.is_ipv4()))
            .collect();
        if reachable.is_empty() {
            let list: Vec<String> = destinations.iter().map(|d| d.ip().to_string()).collect();
            return Err(AttemptError::new(
                ErrorClass::Connect,
                format!("no egress address of the same IP family as {}", list.join(", ")),
            ));
        }
        Ok(reachable)
    }

    /// The next egress address for `destination`'s family.
    fn local_for(&self, destination: &SocketAddr) -> Option<IpAddr> {
        let family: Vec<&IpAddr> = self.addresses.iter().filter(|a| a.is_ipv4() == destination.is_ipv4()).collect();
        if family.is_empty() {
            return None;
        }
        Some(*family[self.next.fetch_add(1, Ordering::Relaxed) % family.len()])
    }

    pub fn addresses(&self) -> &[IpAddr] {
        &self.addresses
    }
}

/// An HTTP proxy that tunnels callbacks with CONNECT (`webhook.proxy_url`).
pub struct Proxy {
    host: String,
    port: u16,
    /// `Proxy-Authorization` for a proxy URL with credentials.
    authorization: Option<String>,
}

impl Proxy {
    pub fn new(setting: &ProxyUrl) -> Proxy {
        let url = setting.url();
        let authorization = (!url.username().is_empty()).then(|| {
            use base64::Engine;
            let credentials = format!("{}:{}", url.username(), url.password().unwrap_or(""));
            format!("Basic {}", base64::engine::general_purpose::STANDARD.encode(credentials))
        });
        Proxy {
            host: url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']').to_string(),
            port: url.port_or_known_default().unwrap_or(80),
            authorization,
        }
    }

    /// Asks the proxy for a tunnel to `target`: the checked address, never the host name, so
    /// the proxy cannot resolve it to somewhere else.
    async fn tunnel(&self, mut stream: TcpStream, target: SocketAddr) -> Result<TcpStream, AttemptError> {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let failed = |what: String| AttemptError::new(ErrorClass::Proxy, what);
        let mut request = format!("CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n");
        if let Some(authorization) = &self.authorization {
            request.push_str(&format!("Proxy-Authorization: {authorization}\r\n"));
        }
        request.push_str("\r\n");
        stream
            .write_all(request.as_bytes())
            .await
            .map_err(|e| failed(format!("the proxy closed the connection: {e}")))?;
        let mut head = Vec::with_capacity(256);
        let mut byte = [0u8; 1];
        while !head.ends_with(b"\r\n\r\n") {
            if head.len() > 8192 {
                return Err(failed("the proxy's answer to CONNECT is too long".into()));
            }
            let read = stream.read(&mut byte).await.map_err(|e| failed(format!("reading the proxy's answer: {e}")))?;
            if read == 0 {
                return Err(failed(format!("the proxy closed the connection instead of answering CONNECT {target}")));
            }
            head.push(byte[0]);
        }
        let head = String::from_utf8_lossy(&head);
        let status_line = head.lines().next().unwrap_or("");
        let status = status_line.split_whitespace().nth(1).unwrap_or("");
        if !status.starts_with('2') {
            return Err(failed(format!("the proxy refused CONNECT {target}: {status_line}")));
        }
        Ok(stream)
    }
}

/// Tries the addresses in turn (each from an egress address); reports the last failure.
async fn connect_any(addresses: &[SocketAddr], egress: &Egress) -> Result<TcpStream, AttemptError> {
    let mut last = None;
    for address in addresses {
        let local = egress.local_for(address);
        let attempt = async {
            let socket = if address.is_ipv4() { TcpSocket::new_v4()? } else { TcpSocket::new_v6()? };
            if let Some(local) = local {
                socket.bind(SocketAddr::new(local, 0))?;
            }
            socket.connect(*address).await
        };
        match attempt.await {
            Ok(stream) => return Ok(stream),
            Err(e) => last = Some((address, e)),
        }
    }
    let (address, e) = last.expect("at least one address");
    Err(match e.kind() {
        io::ErrorKind::ConnectionRefused => {
            AttemptError::new(ErrorClass::ConnectRefused, format!("connection refused by {address}"))
        }
        io::ErrorKind::TimedOut => {
            AttemptError::new(ErrorClass::ConnectTimeout, format!("connecting to {address} timed out"))
        }
        _ => AttemptError::new(ErrorClass::Connect, format!("cannot connect to {address}: {e}")),
    })
}

fn tls_error(host: &str, error: &io::Error) -> AttemptError {
    let reason = match error.get_ref().and_then(|inner| inner.downcast_ref::<rustls::Error>()) {
        Some(rustls_error) => explain(rustls_error),
        None => error.to_string(),
    };
    AttemptError::new(ErrorClass::Tls, format!("TLS handshake with {host} failed: {reason}"))
}

/// A connection to a receiver, plain or TLS.
pub enum Stream {
    Plain(TcpStream),
    Tls(Box<tokio_rustls::client::TlsStream<TcpStream>>),
}

impl Connection for Stream {
    fn connected(&self) -> Connected {
        Connected::new()
    }
}

impl AsyncRead for Stream {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_read(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_read(cx, buf),
        }
    }
}

impl AsyncWrite for Stream {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write(cx, buf),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write(cx, buf),
        }
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_flush(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_flush(cx),
        }
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_shutdown(cx),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_shutdown(cx),
        }
    }

    fn poll_write_vectored(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        match self.get_mut() {
            Stream::Plain(s) => Pin::new(s).poll_write_vectored(cx, bufs),
            Stream::Tls(s) => Pin::new(s.as_mut()).poll_write_vectored(cx, bufs),
        }
    }

    fn is_write_vectored(&self) -> bool {
        match self {
            Stream::Plain(s) => s.is_write_vectored(),
            Stream::Tls(s) => s.is_write_vectored(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::printable_excerpt;

    #[test]
    fn excerpts_escape_nul_and_control_characters_and_repair_invalid_utf8() {
        assert_eq!(printable_excerpt(b"ok\0ok"), "ok\\x00ok");
        assert_eq!(printable_excerpt(b"a\x1b[31mred\x7f"), "a\\x1b[31mred\\x7f");
        assert_eq!(printable_excerpt(b"line\r\n\tnext"), "line\r\n\tnext");
        assert_eq!(printable_excerpt(b"caf\xc3\xa9 \xff\xfe"), "caf\u{e9} \u{fffd}\u{fffd}");
        assert!(!printable_excerpt(b"\0\x01\x02").contains('\0'));
    }
}
