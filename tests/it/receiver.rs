//! Webhook receivers for tests: real HTTPS servers on 127.0.0.1 with certificates from a test CA
//! (made with rcgen), that record every request and answer as the test says.

use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::http::{HeaderMap, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use rcgen::{BasicConstraints, CertificateParams, DnType, IsCa, Issuer, KeyPair};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio_rustls::TlsAcceptor;

/// A certificate authority for tests, written to a PEM file for `webhook.extra_ca_certs`.
pub struct TestCa {
    issuer: Issuer<'static, KeyPair>,
    pub pem_path: PathBuf,
    _dir: tempfile::TempDir,
}

/// A certificate chain and key for a test server.
pub struct ServerIdentity {
    pub chain: Vec<CertificateDer<'static>>,
    pub key: Vec<u8>,
}

impl TestCa {
    pub fn new() -> TestCa {
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Easel Test Root CA");
        let key = KeyPair::generate().unwrap();
        let certificate = params.self_signed(&key).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let pem_path = dir.path().join("test-ca.pem");
        std::fs::write(&pem_path, certificate.pem()).unwrap();
        TestCa { issuer: Issuer::new(params, key), pem_path, _dir: dir }
    }

    /// The CA's issuer, to sign other certificates with (intermediates, odd leaves).
    pub fn issuer(&self) -> &Issuer<'static, KeyPair> {
        &self.issuer
    }

    /// A leaf certificate for `names` (DNS names or IP addresses), signed by this CA.
    pub fn identity(&self, names: &[&str]) -> ServerIdentity {
        let params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.issuer).unwrap();
        ServerIdentity { chain: vec![certificate.der().clone()], key: key.serialize_der() }
    }
}

/// TLS for a test server with `identity`.
fn acceptor(identity: ServerIdentity) -> TlsAcceptor {
    let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(identity.key));
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let config = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(identity.chain, key)
        .unwrap();
    TlsAcceptor::from(Arc::new(config))
}

/// A CA hierarchy: root (trusted through extra_ca_certs) -> intermediate -> leaves.
pub struct Hierarchy {
    pub root: TestCa,
    intermediate: Issuer<'static, KeyPair>,
    pub intermediate_der: CertificateDer<'static>,
}

impl Hierarchy {
    pub fn new() -> Hierarchy {
        let root = TestCa::new();
        let mut params = CertificateParams::new(Vec::<String>::new()).unwrap();
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.distinguished_name.push(DnType::CommonName, "Easel Test Intermediate CA");
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, root.issuer()).unwrap();
        Hierarchy { root, intermediate_der: certificate.der().clone(), intermediate: Issuer::new(params, key) }
    }

    /// A leaf for `names` (the first is also its common name), signed by the intermediate.
    pub fn leaf(
        &self,
        names: &[&str],
        edit: impl FnOnce(&mut CertificateParams),
    ) -> (CertificateDer<'static>, Vec<u8>) {
        let mut params = CertificateParams::new(names.iter().map(|n| n.to_string()).collect::<Vec<_>>()).unwrap();
        params.distinguished_name.push(DnType::CommonName, names[0]);
        edit(&mut params);
        let key = KeyPair::generate().unwrap();
        let certificate = params.signed_by(&key, &self.intermediate).unwrap();
        (certificate.der().clone(), key.serialize_der())
    }
}

/// One request a receiver got.
#[derive(Clone, Debug)]
pub struct Received {
    pub path: String,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// Where the request came from (the callback's source address).
    pub peer: std::net::SocketAddr,
    pub at: Instant,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("the callback body is JSON")
    }
}

/// How a receiver answers one request.
#[derive(Clone, Debug)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(&'static str, String)>,
    pub body: String,
    /// Wait this long before answering (a hanging receiver waits longer than any timeout).
    pub delay: Duration,
}

impl Reply {
    pub fn ok() -> Reply {
        Reply::status(200)
    }

    pub fn status(status: u16) -> Reply {
        Reply { status, headers: Vec::new(), body: String::new(), delay: Duration::ZERO }
    }

    pub fn hang() -> Reply {
        Reply { delay: Duration::from_secs(3600), ..Reply::ok() }
    }

    pub fn header(mut self, name: &'static str, value: &str) -> Reply {
        self.headers.push((name, value.to_string()));
        self
    }

    pub fn body(mut self, body: &str) -> Reply {
        self.body = body.to_string();
        self
    }
}

/// How a receiver answers: from the request's number (0 for the first) and the request.
type Respond = Arc<dyn Fn(usize, &Received) -> Reply + Send + Sync>;

/// A running receiver; stops when dropped.
pub struct TestReceiver {
    /// `https://127.0.0.1:PORT/hook` (or `http://` for plain receivers).
    pub url: String,
    requests: Arc<Mutex<Vec<Received>>>,
    arrived: Arc<Notify>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for TestReceiver {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl TestReceiver {
    /// An HTTPS receiver for `localhost` and `127.0.0.1` with a certificate from `ca`. `respond`
    /// gets the request's number (0 for the first).
    pub async fn https(ca: &TestCa, respond: impl Fn(usize) -> Reply + Send + Sync + 'static) -> TestReceiver {
        Self::https_with(ca.identity(&["localhost", "127.0.0.1"]), "127.0.0.1:0", respond).await
    }

    /// Like [`TestReceiver::https`], answering each request as `judge` says after reading it
    /// (a receiver that checks the bearer token and the signature, say).
    pub async fn https_judging(
        ca: &TestCa,
        judge: impl Fn(&Received) -> Reply + Send + Sync + 'static,
    ) -> TestReceiver {
        let identity = ca.identity(&["localhost", "127.0.0.1"]);
        Self::start("127.0.0.1:0", Some(acceptor(identity)), Arc::new(move |_, request: &Received| judge(request)))
            .await
    }

    /// An HTTPS receiver with the given certificate chain, listening on `bind`.
    pub async fn https_with(
        identity: ServerIdentity,
        bind: &str,
        respond: impl Fn(usize) -> Reply + Send + Sync + 'static,
    ) -> TestReceiver {
        Self::start(bind, Some(acceptor(identity)), Arc::new(move |number, _: &Received| respond(number))).await
    }

    /// A plain HTTP receiver (for `webhook.allow_http`).
    pub async fn http(respond: impl Fn(usize) -> Reply + Send + Sync + 'static) -> TestReceiver {
        Self::start("127.0.0.1:0", None, Arc::new(move |number, _: &Received| respond(number))).await
    }

    async fn start(bind: &str, tls: Option<TlsAcceptor>, respond: Respond) -> TestReceiver {
        let listener = TcpListener::bind(bind).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let scheme = if tls.is_some() { "https" } else { "http" };
        let url = format!("{scheme}://{addr}/hook");
        let requests = Arc::new(Mutex::new(Vec::new()));
        let arrived = Arc::new(Notify::new());
        let (state_requests, state_arrived) = (requests.clone(), arrived.clone());
        let task = tokio::spawn(async move {
            loop {
                let Ok((tcp, peer)) = listener.accept().await else { continue };
                let (tls, respond, requests, arrived) =
                    (tls.clone(), respond.clone(), state_requests.clone(), state_arrived.clone());
                tokio::spawn(async move {
                    let service = service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let (respond, requests, arrived) = (respond.clone(), requests.clone(), arrived.clone());
                        async move {
                            let path = request.uri().path().to_string();
                            let headers = request.headers().clone();
                            let body = request.into_body().collect().await.map(|b| b.to_bytes()).unwrap_or_default();
                            let received = Received { path, headers, body, peer, at: Instant::now() };
                            let number = {
                                let mut requests = requests.lock().unwrap();
                                requests.push(received.clone());
                                requests.len() - 1
                            };
                            arrived.notify_waiters();
                            let reply = respond(number, &received);
                            if !reply.delay.is_zero() {
                                tokio::time::sleep(reply.delay).await;
                            }
                            let mut response = Response::builder().status(StatusCode::from_u16(reply.status).unwrap());
                            for (name, value) in &reply.headers {
                                response = response.header(*name, value);
                            }
                            Ok::<_, std::convert::Infallible>(
                                response.body(Full::new(Bytes::from(reply.body))).unwrap(),
                            )
                        }
                    });
                    let builder = hyper::server::conn::http1::Builder::new();
                    match tls {
                        Some(tls) => {
                            if let Ok(stream) = tls.accept(tcp).await {
                                let _ = builder.serve_connection(TokioIo::new(stream), service).await;
                            }
                        }
                        None => {
                            let _ = builder.serve_connection(TokioIo::new(tcp), service).await;
                        }
                    }
                });
            }
        });
        TestReceiver { url, requests, arrived, task }
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().unwrap().clone()
    }

    /// Waits until at least `count` requests have arrived (30 s at most).
    pub async fn wait_for(&self, count: usize) -> Vec<Received> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let notified = self.arrived.notified();
            let received = self.received();
            if received.len() >= count {
                return received;
            }
            if tokio::time::timeout_at(deadline, notified).await.is_err() {
                panic!("the receiver got {} requests, not {count}, within 30 s", self.received().len());
            }
        }
    }
}
