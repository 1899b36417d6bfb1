//! The one error for a setting whose value cannot work: it names the setting (as the operator
//! writes it, `webhook.proxy_url`), says why, and keeps the underlying error as its source. A
//! leaf, so configuration, the model catalogue and the components that do their own I/O at
//! start-up (TLS roots, egress addresses, DNS, image storage) all report alike.

use std::error::Error;

#[derive(Debug, thiserror::Error)]
#[error("{setting}: {reason}")]
pub struct InvalidSetting {
    pub setting: String,
    pub reason: String,
    #[source]
    pub source: Option<Box<dyn Error + Send + Sync>>,
}

impl InvalidSetting {
    pub fn new(setting: impl Into<String>, reason: impl Into<String>) -> InvalidSetting {
        InvalidSetting { setting: setting.into(), reason: reason.into(), source: None }
    }

    /// With the error that caused it (its text is part of `reason` where the operator needs it).
    pub fn caused_by(mut self, source: impl Error + Send + Sync + 'static) -> InvalidSetting {
        self.source = Some(Box::new(source));
        self
    }
}
