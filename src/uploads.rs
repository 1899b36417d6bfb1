//! Presigned uploads of init images, as Leonardo hands them out: `POST /init-image` answers a URL
//! and form fields (a JSON string); the client POSTs `multipart/form-data` with every field and
//! a `file` part to the URL, with no authorization header.
//!
//! - **S3 storage** (with credentials): an S3 POST policy signed with AWS Signature Version 4, so
//!   the bytes go straight to the bucket; the bucket enforces the policy.
//! - **Local storage** (or S3 without static credentials): Easel's own upload target,
//!   `{public_url}/uploads/{id}`, with an equivalent policy signed by a key derived from the
//!   master key, which [`verify_local`] enforces: the object key, the content type, a size range
//!   and the expiry; the store enforces one upload per policy.

use std::collections::BTreeMap;

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;

use crate::clock::{Millis, parse_rfc3339, rfc3339_ms};
use crate::config::{Config, parse_s3_url};

/// The extensions an init image may declare, with their content types.
pub const EXTENSIONS: &[(&str, &str)] =
    &[("png", "image/png"), ("jpg", "image/jpeg"), ("jpeg", "image/jpeg"), ("webp", "image/webp")];

/// The content type of a declared extension, if it is one Easel takes.
pub fn content_type(extension: &str) -> Option<&'static str> {
    EXTENSIONS.iter().find(|(ext, _)| *ext == extension).map(|(_, ct)| *ct)
}

/// The largest width or height an uploaded picture may have.
pub const MAX_SIDE: u32 = 8192;

/// Decodes `bytes` as the declared format; its size, or why it is not usable.
pub fn check_picture(bytes: &[u8], extension: &str) -> Result<(u32, u32), String> {
    let format =
        image::ImageFormat::from_extension(extension).ok_or_else(|| format!("unknown extension {extension}"))?;
    let picture = image::load_from_memory_with_format(bytes, format).map_err(|e| e.to_string())?;
    let (width, height) = (picture.width(), picture.height());
    if width > MAX_SIDE || height > MAX_SIDE {
        return Err(format!("{width}x{height} is larger than {MAX_SIDE}x{MAX_SIDE}"));
    }
    Ok((width, height))
}

/// The local target's signature field (S3 policies use `x-amz-signature`).
pub const LOCAL_SIGNATURE_FIELD: &str = "x-easel-signature";

/// An upload policy: where to POST, and the form fields to send with the file.
#[derive(Clone, Debug, PartialEq)]
pub struct Presigned {
    pub url: String,
    pub fields: BTreeMap<String, String>,
}

impl Presigned {
    /// The fields as Leonardo sends them: one JSON-encoded string.
    pub fn fields_json(&self) -> String {
        serde_json::to_string(&self.fields).expect("string map serializes")
    }
}

/// What an upload must be.
#[derive(Clone, Debug)]
pub struct UploadRules<'a> {
    /// The object's key in image storage (without any bucket prefix).
    pub storage_key: &'a str,
    pub content_type: &'a str,
    pub max_bytes: u64,
    pub expires_at: Millis,
}

/// Where uploads go, decided once at start.
#[derive(Clone)]
pub enum Uploads {
    /// Easel receives them at `{base}/{id}`.
    Local { base: String, key: [u8; 32] },
    /// The bucket receives them.
    S3(S3Target),
}

#[derive(Clone)]
pub struct S3Target {
    /// The POST URL: `{endpoint}/{bucket}` (path style) or `https://{bucket}.s3.{region}.amazonaws.com`.
    url: String,
    bucket: String,
    /// The object key prefix of `storage.url` (`prod/`), or empty.
    prefix: String,
    region: String,
    access_key_id: String,
    secret_access_key: String,
    session_token: Option<String>,
}

impl Uploads {
    /// S3 when the storage is a bucket with static credentials (configured or `AWS_*`), else
    /// Easel's own target under `public_url`.
    pub fn from_config(config: &Config, public_url: &str, upload_key: [u8; 32]) -> Uploads {
        let local =
            || Uploads::Local { base: format!("{}/uploads", public_url.trim_end_matches('/')), key: upload_key };
        let Some((bucket, prefix)) = config.storage.url.as_deref().and_then(parse_s3_url) else {
            return local();
        };
        let storage = &config.storage;
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let access_key_id = storage.access_key_id.clone().or_else(|| env("AWS_ACCESS_KEY_ID"));
        let secret =
            storage.secret_access_key.as_ref().map(|s| s.expose().to_string()).or_else(|| env("AWS_SECRET_ACCESS_KEY"));
        let (Some(access_key_id), Some(secret_access_key)) = (access_key_id, secret) else {
            tracing::info!(
                "init image uploads go through this server: the bucket has no static credentials to sign POST policies with"
            );
            return local();
        };
        let region = storage.region.clone().or_else(|| env("AWS_REGION")).unwrap_or_else(|| "us-east-1".into());
        let url = match &storage.endpoint {
            Some(endpoint) => format!("{}/{bucket}", endpoint.trim_end_matches('/')),
            None => format!("https://{bucket}.s3.{region}.amazonaws.com"),
        };
        let prefix = prefix.map(|p| format!("{}/", p.trim_matches('/'))).unwrap_or_default();
        Uploads::S3(S3Target {
            url,
            bucket: bucket.to_string(),
            prefix,
            region,
            access_key_id,
            secret_access_key,
            session_token: env("AWS_SESSION_TOKEN"),
        })
    }

    /// Whether Easel itself receives the files (and so knows when one arrived).
    pub fn is_local(&self) -> bool {
        matches!(self, Uploads::Local { .. })
    }

    /// The policy for one upload, identified by `id`, signed at `now`.
    pub fn presign(&self, id: &str, rules: &UploadRules<'_>, now: Millis) -> Presigned {
        match self {
            Uploads::Local { base, key } => {
                let policy = policy_document(
                    rules.expires_at,
                    &[
                        json!({"key": rules.storage_key}),
                        json!({"Content-Type": rules.content_type}),
                        json!(["content-length-range", 1, rules.max_bytes]),
                    ],
                );
                let signature = hex(&hmac(key, policy.as_bytes()));
                let fields = [
                    ("key", rules.storage_key.to_string()),
                    ("Content-Type", rules.content_type.to_string()),
                    ("policy", policy),
                    (LOCAL_SIGNATURE_FIELD, signature),
                ];
                Presigned { url: format!("{base}/{id}"), fields: own(fields) }
            }
            Uploads::S3(target) => target.presign(rules, now),
        }
    }
}

impl S3Target {
    fn presign(&self, rules: &UploadRules<'_>, now: Millis) -> Presigned {
        let stamp = rfc3339_ms(now); // 2026-11-29T13:44:18.123Z
        let date = format!("{}{}{}", &stamp[0..4], &stamp[5..7], &stamp[8..10]);
        let amz_date = format!("{date}T{}{}{}Z", &stamp[11..13], &stamp[14..16], &stamp[17..19]);
        let credential = format!("{}/{date}/{}/s3/aws4_request", self.access_key_id, self.region);
        let key = format!("{}{}", self.prefix, rules.storage_key);
        let mut conditions = vec![
            json!({"bucket": self.bucket}),
            json!({"key": key}),
            json!({"Content-Type": rules.content_type}),
            json!(["content-length-range", 1, rules.max_bytes]),
            json!({"x-amz-algorithm": "AWS4-HMAC-SHA256"}),
            json!({"x-amz-credential": credential}),
            json!({"x-amz-date": amz_date}),
        ];
        if let Some(token) = &self.session_token {
            conditions.push(json!({"x-amz-security-token": token}));
        }
        let policy = policy_document(rules.expires_at, &conditions);
        // The SigV4 signing key: the secret narrowed to the date, region and service.
        let mut signing = hmac(format!("AWS4{}", self.secret_access_key).as_bytes(), date.as_bytes());
        for part in [self.region.as_str(), "s3", "aws4_request"] {
            signing = hmac(&signing, part.as_bytes());
        }
        let signature = hex(&hmac(&signing, policy.as_bytes()));
        let mut fields = own([
            ("key", key),
            ("Content-Type", rules.content_type.to_string()),
            ("x-amz-algorithm", "AWS4-HMAC-SHA256".to_string()),
            ("x-amz-credential", credential),
            ("x-amz-date", amz_date),
            ("policy", policy),
            ("x-amz-signature", signature),
        ]);
        if let Some(token) = &self.session_token {
            fields.insert("x-amz-security-token".into(), token.clone());
        }
        Presigned { url: self.url.clone(), fields }
    }
}

/// Why an upload to the local target is refused, in words for the uploader.
#[derive(Debug, PartialEq, thiserror::Error)]
pub enum Refusal {
    #[error("the upload policy is not signed by this server (fields changed or missing)")]
    BadSignature,
    #[error("the upload policy expired at {0}; ask for a new one")]
    Expired(String),
    #[error("the field `{field}` must be {expected:?}, as the policy says")]
    FieldMismatch { field: String, expected: String },
    #[error("the file is {size} bytes; the policy allows {min} to {max}")]
    Size { size: u64, min: u64, max: u64 },
}

/// Checks a form posted to the local target against its signed policy, at `now`.
pub fn verify_local(key: &[u8; 32], form: &BTreeMap<String, String>, size: u64, now: Millis) -> Result<(), Refusal> {
    let policy = form.get("policy").ok_or(Refusal::BadSignature)?;
    let signature = form.get(LOCAL_SIGNATURE_FIELD).ok_or(Refusal::BadSignature)?;
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(policy.as_bytes());
    let signature = unhex(signature).ok_or(Refusal::BadSignature)?;
    mac.verify_slice(&signature).map_err(|_| Refusal::BadSignature)?;
    let document: Value = BASE64
        .decode(policy)
        .ok()
        .and_then(|bytes| serde_json::from_slice(&bytes).ok())
        .ok_or(Refusal::BadSignature)?;
    let expiration = document["expiration"].as_str().unwrap_or_default();
    if parse_rfc3339(expiration).is_none_or(|at| at <= now) {
        return Err(Refusal::Expired(expiration.to_string()));
    }
    for condition in document["conditions"].as_array().into_iter().flatten() {
        match condition {
            Value::Object(exact) => {
                for (field, expected) in exact {
                    let expected = expected.as_str().unwrap_or_default();
                    if form.get(field).map(String::as_str) != Some(expected) {
                        return Err(Refusal::FieldMismatch { field: field.clone(), expected: expected.to_string() });
                    }
                }
            }
            Value::Array(rule) if rule.first().and_then(Value::as_str) == Some("content-length-range") => {
                let min = rule.get(1).and_then(Value::as_u64).unwrap_or(0);
                let max = rule.get(2).and_then(Value::as_u64).unwrap_or(u64::MAX);
                if !(min..=max).contains(&size) {
                    return Err(Refusal::Size { size, min, max });
                }
            }
            _ => {}
        }
    }
    Ok(())
}

/// A policy document, base64 as POST policies travel.
fn policy_document(expires_at: Millis, conditions: &[Value]) -> String {
    // Whole seconds, as S3 expects `2026-11-29T13:46:18.000Z`.
    let expiration = rfc3339_ms(expires_at - expires_at.rem_euclid(1000));
    BASE64.encode(json!({"expiration": expiration, "conditions": conditions}).to_string())
}

fn hmac(key: &[u8], data: &[u8]) -> Vec<u8> {
    let mut mac = Hmac::<Sha256>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(data);
    mac.finalize().into_bytes().to_vec()
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn unhex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len()).step_by(2).map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok()).collect()
}

fn own<const N: usize>(fields: [(&str, String); N]) -> BTreeMap<String, String> {
    fields.into_iter().map(|(name, value)| (name.to_string(), value)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rules(expires_at: Millis) -> UploadRules<'static> {
        UploadRules { storage_key: "uploads/u/a.png", content_type: "image/png", max_bytes: 100, expires_at }
    }

    #[test]
    fn local_policies_verify_only_as_signed_and_in_time() {
        let uploads = Uploads::Local { base: "http://easel/uploads".into(), key: [7; 32] };
        let presigned = uploads.presign("a", &rules(10_000), 0);
        assert_eq!(presigned.url, "http://easel/uploads/a");
        let form = presigned.fields.clone();
        assert_eq!(verify_local(&[7; 32], &form, 50, 5_000), Ok(()));
        assert_eq!(verify_local(&[8; 32], &form, 50, 5_000), Err(Refusal::BadSignature));
        assert!(matches!(verify_local(&[7; 32], &form, 50, 10_000), Err(Refusal::Expired(_))));
        assert_eq!(verify_local(&[7; 32], &form, 101, 5_000), Err(Refusal::Size { size: 101, min: 1, max: 100 }));
        assert_eq!(verify_local(&[7; 32], &form, 0, 5_000), Err(Refusal::Size { size: 0, min: 1, max: 100 }));
        let mut moved = form.clone();
        moved.insert("key".into(), "uploads/someone-else.png".into());
        assert!(matches!(verify_local(&[7; 32], &moved, 50, 5_000), Err(Refusal::FieldMismatch { .. })));
    }

    #[test]
    fn s3_policies_are_signed_with_sigv4() {
        let target = S3Target {
            url: "http://127.0.0.1:9000/bucket".into(),
            bucket: "bucket".into(),
            prefix: "prod/".into(),
            region: "us-east-1".into(),
            access_key_id: "AKIDEXAMPLE".into(),
            secret_access_key: "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY".into(),
            session_token: None,
        };
        let now = parse_rfc3339("2026-11-29T13:44:18Z").unwrap();
        let presigned = target.presign(&rules(now + 120_000), now);
        assert_eq!(presigned.fields["key"], "prod/uploads/u/a.png");
        assert_eq!(presigned.fields["x-amz-date"], "20261129T134418Z");
        assert_eq!(presigned.fields["x-amz-credential"], "AKIDEXAMPLE/20261129/us-east-1/s3/aws4_request");
        let policy: Value = serde_json::from_slice(&BASE64.decode(&presigned.fields["policy"]).unwrap()).unwrap();
        assert_eq!(policy["expiration"], "2026-11-29T13:46:18.000Z");
        // The signature is HMAC(signing key, policy), recomputed here step by step.
        let mut key = hmac(b"AWS4wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", b"20261129");
        for part in ["us-east-1", "s3", "aws4_request"] {
            key = hmac(&key, part.as_bytes());
        }
        assert_eq!(presigned.fields["x-amz-signature"], hex(&hmac(&key, presigned.fields["policy"].as_bytes())));
    }
}
