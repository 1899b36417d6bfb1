//! TLS for callbacks: verification is always on (web PKI roots plus `extra_ca_certs`), and a
//! failed verification is explained in words a receiver's operator can act on: how many
//! certificates the server sent and which issuer could not be found (a missing intermediate), a
//! self-signed or untrusted root, expiry dates, the names a certificate does hold, a protocol or
//! cipher mismatch. A recording verifier also keeps the chain the server sent, for the doctor.

use std::fmt;
use std::sync::{Arc, Mutex};

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use crate::clock::{Millis, rfc3339_ms};

/// Wraps the web PKI verifier and replaces its terse errors with a diagnosis.
#[derive(Debug)]
pub struct DiagnosingVerifier {
    inner: Arc<WebPkiServerVerifier>,
    /// What the server presented in the last handshake, when recording: the doctor shows it
    /// whether or not it verifies.
    presented: Option<Mutex<Presented>>,
}

/// The certificates a server sent, exactly as sent (leaf first), and what was wrong with them.
#[derive(Clone, Debug, Default)]
pub struct Presented {
    pub chain: Vec<CertificateDer<'static>>,
    pub problem: Option<Problem>,
}

/// What is wrong with a certificate chain, for advice.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Problem {
    IncompleteChain,
    SelfSigned,
    UntrustedRoot,
    ForeignSignature,
    Expired,
    NotYetValid,
    NameMismatch,
}

impl Problem {
    /// What the receiver's operator should do about it.
    pub fn advice(self) -> &'static str {
        match self {
            Problem::IncompleteChain => {
                "configure the server to send its certificate followed by the intermediate certificates (the \
                 \"full chain\" file of your CA or ACME client), then check with `openssl s_client -showcerts \
                 -connect HOST:PORT -servername HOST`"
            }
            Problem::SelfSigned | Problem::UntrustedRoot => {
                "use a certificate from a public CA (Let's Encrypt is free); for a private CA, the Easel operator \
                 must add its root to webhook.extra_ca_certs"
            }
            Problem::ForeignSignature => {
                "reissue the server's certificate from the CA that is trusted, or trust the CA that signed it"
            }
            Problem::Expired => "renew the certificate and reload the server",
            Problem::NotYetValid => "check the server's clock and the certificate's dates; use one already valid",
            Problem::NameMismatch => {
                "use a certificate whose names include the webhook URL's host, or change the URL to a name the \
                 certificate holds"
            }
        }
    }
}

impl DiagnosingVerifier {
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> DiagnosingVerifier {
        DiagnosingVerifier { inner, presented: None }
    }

    /// A verifier that also keeps what each server presents (one diagnosis at a time: not for the
    /// delivery client, whose handshakes run concurrently).
    pub fn recording(inner: Arc<WebPkiServerVerifier>) -> DiagnosingVerifier {
        DiagnosingVerifier { inner, presented: Some(Mutex::new(Presented::default())) }
    }

    /// What the server presented in the last handshake (nothing when not recording, or before
    /// any handshake).
    pub fn presented(&self) -> Presented {
        self.presented.as_ref().map(|presented| presented.lock().expect("lock").clone()).unwrap_or_default()
    }
}

/// A certificate problem, explained.
#[derive(Debug)]
pub struct Diagnosis(pub String);

impl fmt::Display for Diagnosis {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Diagnosis {}

impl ServerCertVerifier for DiagnosingVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        server_name: &ServerName<'_>,
        ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, Error> {
        let verified = self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now);
        let diagnosis = verified.as_ref().err().and_then(|error| diagnose(error, end_entity, intermediates));
        if let Some(presented) = &self.presented {
            *presented.lock().expect("lock") = Presented {
                chain: std::iter::once(end_entity).chain(intermediates).map(|c| c.clone().into_owned()).collect(),
                problem: diagnosis.as_ref().map(|(problem, _)| *problem),
            };
        }
        verified.map_err(|error| match diagnosis {
            Some((_, words)) => {
                Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Diagnosis(words)))))
            }
            None => error,
        })
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls12_signature(message, cert, dss)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, Error> {
        self.inner.verify_tls13_signature(message, cert, dss)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.inner.supported_verify_schemes()
    }
}

/// What a certificate says: the doctor prints it, and the diagnoses quote it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct CertificateSummary {
    /// Distinguished names, as `CN=..., O=...`.
    pub subject: String,
    pub issuer: String,
    pub not_before: Millis,
    pub not_after: Millis,
    /// The DNS names and IP addresses it is for (subject alternative names).
    pub names: Vec<String>,
}

impl CertificateSummary {
    pub fn self_signed(&self) -> bool {
        self.subject == self.issuer
    }
}

/// Reads a certificate (`None` if it does not parse as X.509).
pub fn describe(certificate: &CertificateDer<'_>) -> Option<CertificateSummary> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let names = match parsed.subject_alternative_name() {
        Ok(Some(extension)) => extension
            .value
            .general_names
            .iter()
            .filter_map(|name| match name {
                GeneralName::DNSName(dns) => Some(dns.to_string()),
                GeneralName::IPAddress(bytes) => match bytes.len() {
                    4 => Some(std::net::IpAddr::from(<[u8; 4]>::try_from(*bytes).ok()?).to_string()),
                    16 => Some(std::net::IpAddr::from(<[u8; 16]>::try_from(*bytes).ok()?).to_string()),
                    _ => None,
                },
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    let validity = parsed.validity();
    Some(CertificateSummary {
        subject: parsed.subject().to_string(),
        issuer: parsed.issuer().to_string(),
        not_before: validity.not_before.timestamp() * 1000,
        not_after: validity.not_after.timestamp() * 1000,
        names,
    })
}

fn time(t: &UnixTime) -> String {
    rfc3339_ms(t.as_secs() as i64 * 1000)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn diagnose(
    error: &Error,
    end_entity: &CertificateDer<'_>,
    intermediates: &[CertificateDer<'_>],
) -> Option<(Problem, String)> {
    let Error::InvalidCertificate(problem) = error else { return None };
    let sent = 1 + intermediates.len();
    Some(match problem {
        CertificateError::UnknownIssuer => {
            let last = describe(intermediates.last().unwrap_or(end_entity))?;
            let (subject, issuer) = (&last.subject, &last.issuer);
            if last.self_signed() && sent == 1 {
                let words =
                    format!("the certificate is self-signed (\"{subject}\") and no trusted authority issued it");
                (Problem::SelfSigned, words)
            } else if last.self_signed() {
                let words = format!(
                    "the server sent {sent} certificate{}, ending in the self-signed root \"{subject}\", which is not a trusted root",
                    plural(sent)
                );
                (Problem::UntrustedRoot, words)
            } else if sent == 1 {
                let words = format!(
                    "incomplete certificate chain: the server sent only its own certificate (\"{subject}\"); the \
                     certificate of its issuer \"{issuer}\" is missing and no trusted root is that issuer: configure \
                     the server to send its intermediate certificates"
                );
                (Problem::IncompleteChain, words)
            } else {
                let words = format!(
                    "the server sent {sent} certificates; the issuer of the last one, \"{issuer}\", is neither among \
                     them nor a trusted root: the chain is incomplete or its root is not trusted"
                );
                (Problem::IncompleteChain, words)
            }
        }
        CertificateError::BadSignature => {
            let issuer = describe(intermediates.last().unwrap_or(end_entity))?.issuer;
            let words = format!(
                "the certificate names \"{issuer}\" as its issuer, and a trusted authority has that name, but that \
                 authority's key did not sign it: the authority was regenerated with a new key, or another CA took \
                 its name. Reissue the server's certificate from the authority that is trusted (or trust the one that \
                 signed it)"
            );
            (Problem::ForeignSignature, words)
        }
        CertificateError::ExpiredContext { time: now, not_after } => {
            (Problem::Expired, format!("the certificate expired at {} (it is now {})", time(not_after), time(now)))
        }
        CertificateError::NotValidYetContext { time: now, not_before } => {
            let words = format!("the certificate is not valid before {} (it is now {})", time(not_before), time(now));
            (Problem::NotYetValid, words)
        }
        CertificateError::NotValidForNameContext { expected, presented } => {
            let names = describe(end_entity)
                .map(|leaf| leaf.names)
                .filter(|names| !names.is_empty())
                .unwrap_or_else(|| presented.clone());
            let held = if names.is_empty() { "no names".to_string() } else { names.join(", ") };
            (Problem::NameMismatch, format!("the certificate is for {held}, not {}", expected.to_str()))
        }
        CertificateError::Expired => (Problem::Expired, "the certificate has expired".to_string()),
        CertificateError::NotValidYet => (Problem::NotYetValid, "the certificate is not valid yet".to_string()),
        CertificateError::NotValidForName => {
            (Problem::NameMismatch, "the certificate is not valid for this host name".to_string())
        }
        _ => return None,
    })
}

/// A handshake failure in words (the diagnosis above for certificates; protocol problems here).
pub fn explain(error: &Error) -> String {
    match error {
        Error::InvalidCertificate(CertificateError::Other(other)) => other.to_string(),
        Error::AlertReceived(
            alert @ (AlertDescription::ProtocolVersion
            | AlertDescription::HandshakeFailure
            | AlertDescription::InsufficientSecurity),
        ) => format!(
            "no TLS version or cipher suite in common: the server answered {alert:?} (Easel speaks TLS 1.2 and 1.3 \
             with modern cipher suites only)"
        ),
        Error::PeerIncompatible(why) => {
            format!(
                "no TLS version or cipher suite in common ({why:?}; Easel speaks TLS 1.2 and 1.3 with modern cipher suites only)"
            )
        }
        Error::InvalidMessage(_) => {
            "the server did not answer with TLS (is it serving plain HTTP on this port?)".to_string()
        }
        other => other.to_string(),
    }
}
