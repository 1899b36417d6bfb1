//! TLS for callbacks: verification is always on (web PKI roots plus `extra_ca_certs`), and a
//! failed verification is explained in words a receiver's operator can act on: how many
//! certificates the server sent and which issuer could not be found (a missing intermediate), a
//! self-signed or untrusted root, expiry dates, the names a certificate does hold, a protocol or
//! cipher mismatch.

use std::fmt;
use std::sync::Arc;

use rustls::client::WebPkiServerVerifier;
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{AlertDescription, CertificateError, DigitallySignedStruct, Error, OtherError, SignatureScheme};

use crate::clock::rfc3339_ms;

/// Wraps the web PKI verifier and replaces its terse errors with a diagnosis.
#[derive(Debug)]
pub struct DiagnosingVerifier {
    inner: Arc<WebPkiServerVerifier>,
}

impl DiagnosingVerifier {
    pub fn new(inner: Arc<WebPkiServerVerifier>) -> DiagnosingVerifier {
        DiagnosingVerifier { inner }
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
        self.inner.verify_server_cert(end_entity, intermediates, server_name, ocsp_response, now).map_err(|error| {
            match diagnose(&error, end_entity, intermediates) {
                Some(words) => {
                    Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(Diagnosis(words)))))
                }
                None => error,
            }
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

/// Subject and issuer of a certificate, as distinguished names.
fn names(certificate: &CertificateDer<'_>) -> Option<(String, String)> {
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    Some((parsed.subject().to_string(), parsed.issuer().to_string()))
}

/// The DNS names and IP addresses a certificate is for.
fn subject_alt_names(certificate: &CertificateDer<'_>) -> Option<Vec<String>> {
    use x509_parser::extensions::GeneralName;
    let (_, parsed) = x509_parser::parse_x509_certificate(certificate.as_ref()).ok()?;
    let extension = parsed.subject_alternative_name().ok()??;
    let names = extension
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
        .collect();
    Some(names)
}

fn time(t: &UnixTime) -> String {
    rfc3339_ms(t.as_secs() as i64 * 1000)
}

fn plural(n: usize) -> &'static str {
    if n == 1 { "" } else { "s" }
}

fn diagnose(error: &Error, end_entity: &CertificateDer<'_>, intermediates: &[CertificateDer<'_>]) -> Option<String> {
    let Error::InvalidCertificate(problem) = error else { return None };
    let sent = 1 + intermediates.len();
    Some(match problem {
        CertificateError::UnknownIssuer => {
            let last = intermediates.last().unwrap_or(end_entity);
            let (subject, issuer) = names(last)?;
            if subject == issuer && sent == 1 {
                format!("the certificate is self-signed (\"{subject}\") and no trusted authority issued it")
            } else if subject == issuer {
                format!(
                    "the server sent {sent} certificate{}, ending in the self-signed root \"{subject}\", which is not a trusted root",
                    plural(sent)
                )
            } else if sent == 1 {
                format!(
                    "incomplete certificate chain: the server sent only its own certificate (\"{subject}\"); the \
                     certificate of its issuer \"{issuer}\" is missing and no trusted root is that issuer: configure \
                     the server to send its intermediate certificates"
                )
            } else {
                format!(
                    "the server sent {sent} certificates; the issuer of the last one, \"{issuer}\", is neither among \
                     them nor a trusted root: the chain is incomplete or its root is not trusted"
                )
            }
        }
        CertificateError::BadSignature => {
            let last = intermediates.last().unwrap_or(end_entity);
            let (_, issuer) = names(last)?;
            format!(
                "the certificate names \"{issuer}\" as its issuer, and a trusted authority has that name, but that \
                 authority's key did not sign it: the authority was regenerated with a new key, or another CA took \
                 its name. Reissue the server's certificate from the authority that is trusted (or trust the one that \
                 signed it)"
            )
        }
        CertificateError::ExpiredContext { time: now, not_after } => {
            format!("the certificate expired at {} (it is now {})", time(not_after), time(now))
        }
        CertificateError::NotValidYetContext { time: now, not_before } => {
            format!("the certificate is not valid before {} (it is now {})", time(not_before), time(now))
        }
        CertificateError::NotValidForNameContext { expected, presented } => {
            let names = subject_alt_names(end_entity).unwrap_or_else(|| presented.clone());
            let held = if names.is_empty() { "no names".to_string() } else { names.join(", ") };
            format!("the certificate is for {held}, not {}", expected.to_str())
        }
        CertificateError::Expired => "the certificate has expired".to_string(),
        CertificateError::NotValidYet => "the certificate is not valid yet".to_string(),
        CertificateError::NotValidForName => "the certificate is not valid for this host name".to_string(),
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
