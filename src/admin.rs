//! Users and API keys: creation rules shared by the CLI, the first-start bootstrap, the REST
//! `/keys` routes (the console) and the tests. Webhook details are validated here and are
//! immutable once the key exists: to change them, create a new key and delete the old one; to
//! replace a key's secret, rotate it ([`rotate_api_key`]: a new key with the same webhook details).

use crate::clock::now_ms;
use crate::config::WebhookConfig;
use crate::generation::FieldError;
use crate::ids::{ApiKeyId, UserId};
use crate::secrets::{self, MasterKey, seal_context};
use crate::store::{ApiKey, Store, StoreError, User};
use crate::webhook::client::ErrorClass;
use crate::webhook::guard::Guard;

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// A value breaks a rule; the error names the field (as the REST API spells it).
    #[error("{0}")]
    Invalid(FieldError),
    #[error(transparent)]
    Store(#[from] StoreError),
    /// A key's sealed secrets do not open with this master key.
    #[error("cannot open the key's sealed secrets: {0}")]
    Sealed(String),
    /// The webhook settings this check needs cannot work (a DNS server, say).
    #[error(transparent)]
    Setting(#[from] crate::setting::InvalidSetting),
}

/// A key just created: the only moment its secrets are known in plain text.
pub struct CreatedKey {
    pub record: ApiKey,
    pub key: String,
    pub signing_secret: String,
}

impl std::fmt::Debug for CreatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CreatedKey").field("record", &self.record).finish_non_exhaustive()
    }
}

fn invalid(field: &str, message: impl Into<String>) -> AdminError {
    AdminError::Invalid(FieldError::new(field, message))
}

pub async fn create_user(store: &dyn Store, username: &str, slots: u32) -> Result<User, AdminError> {
    let username = username.trim();
    let valid = (1..=64).contains(&username.len())
        && username.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '-' | '.'));
    if !valid {
        return Err(invalid(
            "username",
            format!("username {username:?} must be 1 to 64 characters of letters, digits, '_', '-' and '.'"),
        ));
    }
    if slots == 0 {
        return Err(invalid("concurrencySlots", "concurrency slots must be at least 1"));
    }
    let user =
        User { id: UserId::random(), username: username.into(), api_concurrency_slots: slots, created_at: now_ms() };
    store.create_user(&user).await?;
    Ok(user)
}

/// What a new API key is made with.
#[derive(Clone, Copy, Debug)]
pub struct KeySpec<'a> {
    pub user: UserId,
    pub name: &'a str,
    pub webhook_url: Option<&'a str>,
    pub webhook_api_key: Option<&'a str>,
    /// May manage its user's keys (`/keys`, the console's keys page).
    pub manage_keys: bool,
    /// The prefix of this Easel's inspector bins (`{public_url}/inspect/`), when it has them: a
    /// webhook URL under it is delivered in-process (no connection is made), so it is accepted on a
    /// plain-http or private `public_url`; the https rule and the SSRF guard still apply to every
    /// other URL.
    pub own_bins: Option<&'a str>,
}

/// Creates a production API key, optionally with a webhook callback URL and API key (without the
/// permission to manage keys; see [`create_key`]).
pub async fn create_api_key(
    store: &dyn Store,
    master_key: &MasterKey,
    user: UserId,
    name: &str,
    webhook_url: Option<&str>,
    webhook_api_key: Option<&str>,
    policy: &WebhookConfig,
) -> Result<CreatedKey, AdminError> {
    let spec = KeySpec { user, name, webhook_url, webhook_api_key, manage_keys: false, own_bins: None };
    create_key(store, master_key, &spec, policy).await
}

/// A webhook callback URL checked for a key (normalized): the URL rules and the SSRF guard, except
/// that a bin of this Easel (under `own_bins`) is delivered in-process (no connection is made), so
/// it is accepted on a plain-http or private `public_url`.
async fn checked_webhook_url(url: &str, policy: &WebhookConfig, own_bins: Option<&str>) -> Result<String, AdminError> {
    let parsed = url::Url::parse(url).map(|u| u.to_string()).unwrap_or_default();
    if own_bins.is_some_and(|prefix| is_own_bin(&parsed, prefix)) {
        return validate_webhook_url(url, &WebhookConfig { allow_http: true, ..policy.clone() });
    }
    let url = validate_webhook_url(url, policy)?;
    check_destination(&url, policy).await?;
    Ok(url)
}

/// Creates an API key as `spec` says, after checking its name and webhook details.
pub async fn create_key(
    store: &dyn Store,
    master_key: &MasterKey,
    spec: &KeySpec<'_>,
    policy: &WebhookConfig,
) -> Result<CreatedKey, AdminError> {
    let name = validate_key_name(spec.name)?;
    let webhook_url = match spec.webhook_url {
        Some(url) => Some(checked_webhook_url(url, policy, spec.own_bins).await?),
        None => None,
    };
    if spec.webhook_api_key.is_some() && webhook_url.is_none() {
        return Err(invalid(
            "webhookCallbackApiKey",
            "a webhook callback API key needs a webhook callback URL (webhookCallbackUrl, --webhook-url)",
        ));
    }
    if let Some(secret) = spec.webhook_api_key {
        validate_webhook_api_key(secret)?;
    }
    let id = ApiKeyId::random();
    let signing_secret = secrets::new_signing_secret();
    let sealed = Sealed {
        webhook_api_key: spec
            .webhook_api_key
            .map(|secret| master_key.seal(secret.as_bytes(), &seal_context(id, "webhook_api_key"))),
        signing_secret: master_key.seal(signing_secret.as_bytes(), &seal_context(id, "signing_secret")),
    };
    let (record, key) = insert_key(store, id, spec.user, name, webhook_url, sealed, spec.manage_keys).await?;
    Ok(CreatedKey { record, key, signing_secret })
}

/// A key made by [`rotate_api_key`]: its secret, and its signing secret if a new one was asked for
/// (otherwise the old key's is kept, and not shown again).
pub struct RotatedKey {
    pub record: ApiKey,
    pub key: String,
    pub signing_secret: Option<String>,
}

impl std::fmt::Debug for RotatedKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RotatedKey").field("record", &self.record).finish_non_exhaustive()
    }
}

/// Makes the replacement of `old`: a new key of the same user with the same webhook callback URL
/// and webhook callback API key (opened and sealed again for the new key, so the user need not
/// know them), the same permission to manage keys, and the same signing secret unless
/// `new_signing_secret`. The old key keeps working until it is deleted: the caller switches to the
/// new one first, as the webhook guide asks. The URL is checked again against today's policy.
pub async fn rotate_api_key(
    store: &dyn Store,
    master_key: &MasterKey,
    old: &ApiKey,
    name: Option<&str>,
    new_signing_secret: bool,
    policy: &WebhookConfig,
    own_bins: Option<&str>,
) -> Result<RotatedKey, AdminError> {
    let name = validate_key_name(name.unwrap_or(&old.name))?;
    let webhook_url = match old.webhook_url.as_deref() {
        Some(url) => Some(checked_webhook_url(url, policy, own_bins).await?),
        None => None,
    };
    let id = ApiKeyId::random();
    let open = |sealed: &[u8], purpose: &str| {
        master_key.open(sealed, &seal_context(old.id, purpose)).map_err(|e| AdminError::Sealed(e.to_string()))
    };
    let webhook_api_key = old
        .webhook_api_key_sealed
        .as_deref()
        .map(|sealed| open(sealed, "webhook_api_key"))
        .transpose()?
        .map(|secret| master_key.seal(&secret, &seal_context(id, "webhook_api_key")));
    let (signing_secret, plain) = if new_signing_secret {
        let secret = secrets::new_signing_secret();
        (secret.as_bytes().to_vec(), Some(secret))
    } else {
        (open(&old.signing_secret_sealed, "signing_secret")?, None)
    };
    let sealed = Sealed {
        webhook_api_key,
        signing_secret: master_key.seal(&signing_secret, &seal_context(id, "signing_secret")),
    };
    let (record, key) = insert_key(store, id, old.user_id, name, webhook_url, sealed, old.manage_keys).await?;
    Ok(RotatedKey { record, key, signing_secret: plain })
}

/// A key's secrets, sealed for its id.
struct Sealed {
    webhook_api_key: Option<Vec<u8>>,
    signing_secret: Vec<u8>,
}

/// Generates the key itself and records the key; returns the record and the key.
async fn insert_key(
    store: &dyn Store,
    id: ApiKeyId,
    user: UserId,
    name: &str,
    webhook_url: Option<String>,
    sealed: Sealed,
    manage_keys: bool,
) -> Result<(ApiKey, String), AdminError> {
    let key = secrets::new_api_key();
    let record = ApiKey {
        id,
        user_id: user,
        name: name.into(),
        created_at: now_ms(),
        last_used_at: None,
        webhook_url,
        webhook_api_key_sealed: sealed.webhook_api_key,
        signing_secret_sealed: sealed.signing_secret,
        deleted_at: None,
        webhook_failing_since: None,
        webhook_disabled_at: None,
        manage_keys,
        key_hint: Some(secrets::key_hint(&key)),
    };
    store.create_api_key(&record, &secrets::hash_api_key(&key)).await?;
    Ok((record, key))
}

fn validate_key_name(name: &str) -> Result<&str, AdminError> {
    let name = name.trim();
    if name.is_empty() || name.chars().count() > 100 {
        return Err(invalid("name", "the key name must be 1 to 100 characters"));
    }
    Ok(name)
}

/// A webhook callback URL: absolute, `https://` (or `http://` where `webhook.allow_http` is on),
/// with a host, and without credentials or a fragment (neither would reach the receiver as meant).
pub fn validate_webhook_url(url: &str, policy: &WebhookConfig) -> Result<String, AdminError> {
    let invalid = |why: &str| invalid("webhookCallbackUrl", format!("webhook callback URL {url:?} {why}"));
    if url.len() > 2048 {
        return Err(invalid("is longer than 2048 characters"));
    }
    let parsed = url::Url::parse(url).map_err(|e| invalid(&format!("is not an absolute URL ({e})")))?;
    match parsed.scheme() {
        "https" => {}
        "http" if policy.allow_http => {}
        _ => return Err(invalid("must use https://")),
    }
    if parsed.host_str().is_none_or(str::is_empty) {
        return Err(invalid("has no host"));
    }
    if !parsed.username().is_empty() || parsed.password().is_some() {
        return Err(invalid("must not contain credentials (use a webhook callback API key for authentication)"));
    }
    if parsed.fragment().is_some() {
        return Err(invalid("must not contain a #fragment"));
    }
    Ok(parsed.to_string())
}

/// Whether `url` (normalized) is a bin of this Easel: `prefix` (`{public_url}/inspect/`) followed
/// by a bin id.
pub fn is_own_bin(url: &str, prefix: &str) -> bool {
    let Some(rest) = url.strip_prefix(prefix) else { return false };
    let id = rest.split(['/', '?']).next().unwrap_or("");
    id.parse::<uuid::Uuid>().is_ok()
}

/// Refuses a callback URL whose host is a blocked address or resolves only to blocked addresses
/// (the SSRF guard). A host that does not resolve yet is accepted: every delivery checks again.
async fn check_destination(url: &str, policy: &WebhookConfig) -> Result<(), AdminError> {
    let parsed = url::Url::parse(url).map_err(|e| invalid("webhookCallbackUrl", e.to_string()))?;
    let host = parsed.host_str().unwrap_or("");
    let port = parsed.port_or_known_default().unwrap_or(443);
    let guard = Guard::from_config(policy)?;
    match guard.resolve(host, port).await {
        Err(refused) if refused.class == ErrorClass::Blocked => {
            Err(invalid("webhookCallbackUrl", format!("webhook callback URL {url:?} is refused: {}", refused.detail)))
        }
        _ => Ok(()),
    }
}

/// Sent as `authorization: Bearer <key>`, so it must be a valid header value without spaces.
fn validate_webhook_api_key(secret: &str) -> Result<(), AdminError> {
    if secret.is_empty() || secret.len() > 512 || !secret.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(invalid(
            "webhookCallbackApiKey",
            "the webhook callback API key must be 1 to 512 visible ASCII characters without spaces",
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn webhook_urls_must_be_https_and_absolute() {
        let policy = WebhookConfig::default();
        let validate = |url| validate_webhook_url(url, &policy);
        assert_eq!(validate("https://hooks.example.com/x?y=1").unwrap(), "https://hooks.example.com/x?y=1");
        let development = WebhookConfig { allow_http: true, ..WebhookConfig::default() };
        assert!(validate_webhook_url("http://localhost:9000/hook", &development).is_ok());
        for bad in [
            "http://hooks.example.com/x",
            "hooks.example.com/x",
            "/relative",
            "ftp://example.com",
            "https://user:pw@example.com/",
            "https://example.com/#frag",
            "",
        ] {
            assert!(validate(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn only_urls_of_this_easels_bins_are_own_bins() {
        let prefix = "http://127.0.0.1:8080/inspect/";
        let bin = uuid::Uuid::new_v4();
        assert!(is_own_bin(&format!("{prefix}{bin}"), prefix));
        assert!(is_own_bin(&format!("{prefix}{bin}/hooks?x=1"), prefix));
        assert!(!is_own_bin(&format!("http://127.0.0.1:8081/inspect/{bin}"), prefix));
        assert!(!is_own_bin(&format!("{prefix}not-a-bin"), prefix));
        assert!(!is_own_bin("http://127.0.0.1:8080/admin", prefix));
    }

    #[test]
    fn webhook_api_keys_must_fit_in_a_header() {
        assert!(validate_webhook_api_key("abcd").is_ok());
        assert!(validate_webhook_api_key("has space").is_err());
        assert!(validate_webhook_api_key("line\nbreak").is_err());
        assert!(validate_webhook_api_key("").is_err());
    }
}
