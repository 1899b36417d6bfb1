//! How an attempt failed, in the attempt log's words: a stable class and a sentence. A leaf, so
//! the SSRF guard, the TLS diagnoses and the client all speak it.

use std::error::Error as StdError;
use std::fmt;

/// Why an attempt failed, as a stable class for the attempt log and for filtering.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ErrorClass {
    InvalidUrl,
    Dns,
    ConnectRefused,
    ConnectTimeout,
    Connect,
    Tls,
    Timeout,
    Connection,
    HttpStatus,
    Redirect,
    Blocked,
    Proxy,
    Configuration,
}

impl ErrorClass {
    pub fn as_str(self) -> &'static str {
        match self {
            ErrorClass::InvalidUrl => "invalid_url",
            ErrorClass::Dns => "dns",
            ErrorClass::ConnectRefused => "connect_refused",
            ErrorClass::ConnectTimeout => "connect_timeout",
            ErrorClass::Connect => "connect",
            ErrorClass::Tls => "tls",
            ErrorClass::Timeout => "timeout",
            ErrorClass::Connection => "connection",
            ErrorClass::HttpStatus => "http_status",
            ErrorClass::Redirect => "redirect",
            ErrorClass::Blocked => "blocked",
            ErrorClass::Proxy => "proxy",
            ErrorClass::Configuration => "configuration",
        }
    }
}

/// A failed attempt: its class and a sentence a receiver's operator can act on.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AttemptError {
    pub class: ErrorClass,
    pub detail: String,
}

impl AttemptError {
    pub fn new(class: ErrorClass, detail: impl Into<String>) -> AttemptError {
        AttemptError { class, detail: detail.into() }
    }
}

impl fmt::Display for AttemptError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: {}", self.class.as_str(), self.detail)
    }
}

impl StdError for AttemptError {}
