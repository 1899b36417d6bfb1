//! Image storage: where rendered files live (a local directory by default, through `object_store`)
//! and the names and URLs they get. A file's storage key is also its path under `/cdn/`, so the
//! URL of an image is `{public_url}/cdn/{storage_key}`.

use std::sync::Arc;

use bytes::Bytes;
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path;
use object_store::prefix::PrefixStore;
use object_store::{ObjectStore, PutPayload};
use sha2::{Digest, Sha256};

use crate::config::{Config, parse_s3_url};
use crate::ids::{GenerationId, ImageId, UserId, VariationId};
use crate::setting::InvalidSetting;

#[derive(Clone)]
pub struct ImageStore {
    store: Arc<dyn ObjectStore>,
    /// `{public_url}/cdn`, no trailing slash.
    cdn_base: String,
    /// Set while writes fail (from the first failed write to the next one that succeeds).
    failing: Arc<std::sync::Mutex<Option<StorageFailure>>>,
}

/// Image storage refusing writes, as `/healthz` reports it.
#[derive(Clone, Debug, PartialEq)]
pub struct StorageFailure {
    pub error: String,
    /// When writes started failing (milliseconds since the epoch).
    pub since: crate::clock::Millis,
}

impl ImageStore {
    /// The storage the configuration names: an S3-compatible bucket, or `<data_dir>/images`.
    /// Image URLs start with `storage.public_base_url` if set, else `{public_url}/cdn`.
    pub fn from_config(config: &Config, public_url: &str) -> Result<ImageStore, InvalidSetting> {
        let cdn_base = match &config.storage.public_base_url {
            Some(base) => base.trim_end_matches('/').to_string(),
            None => format!("{}/cdn", public_url.trim_end_matches('/')),
        };
        let store: Arc<dyn ObjectStore> = match &config.storage.url {
            None => {
                let dir = config.data_dir.join("images");
                let invalid = |e: &dyn std::fmt::Display| {
                    InvalidSetting::new("data_dir", format!("cannot use {} for image files: {e}", dir.display()))
                };
                std::fs::create_dir_all(&dir).map_err(|e| invalid(&e).caused_by(e))?;
                Arc::new(LocalFileSystem::new_with_prefix(&dir).map_err(|e| invalid(&e).caused_by(e))?)
            }
            Some(url) => {
                let (bucket, prefix) = parse_s3_url(url)
                    .ok_or_else(|| InvalidSetting::new("storage.url", format!("{url:?} is not s3://BUCKET")))?;
                let storage = &config.storage;
                let mut builder =
                    AmazonS3Builder::from_env().with_bucket_name(bucket).with_allow_http(storage.allow_http);
                if let Some(endpoint) = &storage.endpoint {
                    builder = builder.with_endpoint(endpoint);
                }
                if let Some(region) = &storage.region {
                    builder = builder.with_region(region);
                }
                if let Some(id) = &storage.access_key_id {
                    builder = builder.with_access_key_id(id);
                }
                if let Some(secret) = &storage.secret_access_key {
                    builder = builder.with_secret_access_key(secret.expose());
                }
                let bucket_store: Arc<dyn ObjectStore> = Arc::new(
                    builder
                        .build()
                        .map_err(|e| InvalidSetting::new("storage.url", format!("{url:?}: {e}")).caused_by(e))?,
                );
                match prefix {
                    Some(prefix) => Arc::new(PrefixStore::new(bucket_store, prefix)),
                    None => bucket_store,
                }
            }
        };
        Ok(ImageStore { store, cdn_base, failing: Default::default() })
    }

    pub fn url(&self, storage_key: &str) -> String {
        format!("{}/{storage_key}", self.cdn_base)
    }

    pub async fn put(&self, storage_key: &str, bytes: Bytes) -> object_store::Result<()> {
        let written = self.store.put(&Path::parse(storage_key)?, PutPayload::from(bytes)).await;
        let mut failing = self.failing.lock().expect("lock");
        match &written {
            Ok(_) => *failing = None,
            Err(e) => {
                let since = failing.as_ref().map_or_else(crate::clock::now_ms, |f| f.since);
                *failing = Some(StorageFailure { error: e.to_string(), since });
            }
        }
        written.map(|_| ())
    }

    /// Writes and removes a small file under `.readyz/` (named by `probe`): whether image files
    /// can be written right now.
    pub async fn probe(&self, probe: &str) -> object_store::Result<()> {
        let key = format!(".readyz/{probe}");
        self.put(&key, Bytes::from_static(b"ready")).await?;
        self.delete(&[key]).await
    }

    /// `Some` while writes fail: the last error and since when.
    pub fn failure(&self) -> Option<StorageFailure> {
        self.failing.lock().expect("lock").clone()
    }

    /// `None` if there is no such file (or the key is not a valid path).
    pub async fn get(&self, storage_key: &str) -> object_store::Result<Option<Bytes>> {
        let Ok(path) = Path::parse(storage_key) else { return Ok(None) };
        match self.store.get(&path).await {
            Ok(result) => Ok(Some(result.bytes().await?)),
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Deletes files; missing ones are not an error.
    pub async fn delete(&self, storage_keys: &[String]) -> object_store::Result<()> {
        for key in storage_keys {
            match self.store.delete(&Path::parse(key)?).await {
                Ok(()) | Err(object_store::Error::NotFound { .. }) => {}
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

/// Image ids are derived from the generation and the image's index, so a job rendered again after
/// a crash writes the same files instead of leaving orphans. A time-ordered generation id (v7)
/// gives its images ids that start with the same time (v7 too, the rest from the digest), so they
/// sort together in the indexes; an older random id (v4) keeps the derivation it always had.
pub fn image_id(generation: GenerationId, index: u32) -> ImageId {
    let digest = Sha256::new().chain_update(generation.0.as_bytes()).chain_update(index.to_be_bytes()).finalize();
    let mut bytes: [u8; 16] = digest[..16].try_into().expect("32-byte digest");
    if generation.0.get_version_num() == 7 {
        bytes[..6].copy_from_slice(&generation.0.as_bytes()[..6]);
        return ImageId(
            uuid::Builder::from_bytes(bytes)
                .with_version(uuid::Version::SortRand)
                .with_variant(uuid::Variant::RFC4122)
                .into_uuid(),
        );
    }
    ImageId(uuid::Builder::from_random_bytes(bytes).into_uuid())
}

/// `users/{user}/generations/{generation}/{Model_Name}_{prompt_words}_{index}.jpg`, the shape of
/// Leonardo's CDN paths.
pub fn generation_image_key(
    user: UserId,
    generation: GenerationId,
    model_name: &str,
    prompt: &str,
    index: u32,
) -> String {
    format!("users/{user}/generations/{generation}/{}_{}_{index}.jpg", slug(model_name, 40), slug(prompt, 60))
}

pub fn variation_image_key(user: UserId, generation: GenerationId, variation: VariationId, extension: &str) -> String {
    format!("users/{user}/generations/{generation}/variations/{variation}.{extension}")
}

/// ASCII letters and digits of `text`, words joined by `_`, at most `max` characters.
fn slug(text: &str, max: usize) -> String {
    let mut slug = String::new();
    for word in text.split(|c: char| !c.is_ascii_alphanumeric()).filter(|w| !w.is_empty()) {
        let separator = usize::from(!slug.is_empty());
        if slug.len() + separator + word.len() > max {
            break;
        }
        if separator == 1 {
            slug.push('_');
        }
        slug.push_str(word);
    }
    if slug.is_empty() { "image".into() } else { slug }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_look_like_leonardo_cdn_paths() {
        let user: UserId = "ef8b8386-94f7-48d1-b10e-e87fd4dee6e6".parse().unwrap();
        let generation: GenerationId = "c77dc0a1-f568-4078-b30f-d266a6b66580".parse().unwrap();
        assert_eq!(
            generation_image_key(user, generation, "Leonardo Creative", "An oil painting of a cat", 0),
            "users/ef8b8386-94f7-48d1-b10e-e87fd4dee6e6/generations/c77dc0a1-f568-4078-b30f-d266a6b66580/\
             Leonardo_Creative_An_oil_painting_of_a_cat_0.jpg"
        );
        assert_eq!(slug("日本 ../../etc", 60), "etc");
        assert_eq!(slug("!!!", 60), "image");
        assert!(slug(&"word ".repeat(100), 60).len() <= 60);
    }

    #[test]
    fn s3_urls_name_a_bucket_and_an_optional_prefix() {
        assert_eq!(parse_s3_url("s3://images"), Some(("images".into(), None)));
        assert_eq!(parse_s3_url("s3://images/easel/prod/"), Some(("images".into(), Some("easel/prod".into()))));
        assert_eq!(parse_s3_url("s3:///x"), None);
        assert_eq!(parse_s3_url("gs://images"), None);
    }

    #[test]
    fn image_ids_are_stable_per_generation_and_index() {
        let generation = GenerationId::random();
        assert_eq!(image_id(generation, 0), image_id(generation, 0));
        assert_ne!(image_id(generation, 0), image_id(generation, 1));
        assert_ne!(image_id(generation, 0), image_id(GenerationId::random(), 0));
        // A new generation's images start with its time, and sort with it.
        let image = image_id(generation, 1).0;
        assert_eq!((image.get_version_num(), &image.as_bytes()[..6]), (7, &generation.0.as_bytes()[..6]));
        // A generation made before ids were time-ordered keeps the image ids it had.
        let old: GenerationId = "0f8fad5b-d9cb-469f-a165-70867728950e".parse().unwrap();
        assert_eq!(image_id(old, 1).to_string(), "ffb2ccf6-ff41-48d8-93d3-4c3c5c5a2c0c");
    }
}
