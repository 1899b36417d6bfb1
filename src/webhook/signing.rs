//! Standard Webhooks signatures: `webhook-signature: v1,<base64 HMAC-SHA256 of "id.timestamp.body">`
//! under the key's signing secret (`whsec_` + base64 of the key bytes).

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A signing secret, decoded once.
#[derive(Clone)]
pub struct SigningKey(Vec<u8>);

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

impl SigningKey {
    /// From `whsec_<base64>` (the prefix is optional, as in the Standard Webhooks libraries).
    pub fn from_secret(secret: &str) -> Option<SigningKey> {
        let encoded = secret.strip_prefix("whsec_").unwrap_or(secret);
        BASE64.decode(encoded).ok().filter(|key| !key.is_empty()).map(SigningKey)
    }

    /// The `webhook-signature` header value.
    pub fn sign(&self, message_id: &str, timestamp_seconds: i64, body: &[u8]) -> String {
        let mut mac = Hmac::<Sha256>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(message_id.as_bytes());
        mac.update(b".");
        mac.update(timestamp_seconds.to_string().as_bytes());
        mac.update(b".");
        mac.update(body);
        format!("v1,{}", BASE64.encode(mac.finalize().into_bytes()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn matches_the_standard_webhooks_reference_vector() {
        // The example in the Standard Webhooks specification.
        let key = SigningKey::from_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw").unwrap();
        let signature = key.sign("msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, br#"{"test": 2432232314}"#);
        assert_eq!(signature, "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=");
    }

    #[test]
    fn rejects_secrets_that_are_not_base64() {
        assert!(SigningKey::from_secret("whsec_!!!").is_none());
        assert!(SigningKey::from_secret("whsec_").is_none());
        assert!(format!("{:?}", SigningKey::from_secret("whsec_AAAA").unwrap()).contains("redacted"));
    }
}
