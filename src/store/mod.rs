//! The store: every durable fact Easel keeps (users, API keys, generations, images, variations)
//! behind one trait, so the rest of the server never sees SQL. `open` picks the implementation from
//! the database URL's scheme.
//!
//! Jobs are rows claimed with leases (`lease_owner`, `lease_expires_at`): a worker that dies leaves
//! a lease that expires, and the job is claimed again. A job is finished only by the holder of its
//! lease, so a worker whose lease was taken over cannot finish it twice.

mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::{Config, DatabaseUrl};
use crate::generation::GenerationParams;
use crate::ids::{ApiKeyId, GenerationId, ImageId, UserId, VariationId};

pub use sqlite::SqliteStore;

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("unreadable row in the database: {0}")]
    Corrupt(String),
    #[error("{0}")]
    Conflict(String),
}

/// Opens the database the configuration names and brings its schema up to date.
pub async fn open(config: &Config) -> StoreResult<Arc<dyn Store>> {
    match DatabaseUrl::parse(&config.database_url()).map_err(StoreError::Conflict)? {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(&path).await?)),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum JobStatus {
    Pending,
    Complete,
    Failed,
}

impl JobStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            JobStatus::Pending => "PENDING",
            JobStatus::Complete => "COMPLETE",
            JobStatus::Failed => "FAILED",
        }
    }

    pub fn parse(text: &str) -> StoreResult<JobStatus> {
        match text {
            "PENDING" => Ok(JobStatus::Pending),
            "COMPLETE" => Ok(JobStatus::Complete),
            "FAILED" => Ok(JobStatus::Failed),
            other => Err(StoreError::Corrupt(format!("unknown job status {other:?}"))),
        }
    }
}

#[derive(Clone, Debug, PartialEq)]
pub struct User {
    pub id: UserId,
    pub username: String,
    /// How many generations and variations may be pending at once (`apiConcurrencySlots`).
    pub api_concurrency_slots: u32,
    pub created_at: Millis,
}

/// A production API key's record. The key itself is not here: only its hash is stored.
#[derive(Clone, Debug, PartialEq)]
pub struct ApiKey {
    pub id: ApiKeyId,
    pub user_id: UserId,
    pub name: String,
    pub created_at: Millis,
    pub last_used_at: Option<Millis>,
    /// The HTTPS URL callbacks go to; immutable.
    pub webhook_url: Option<String>,
    /// The webhook callback API key, sealed under the master key; immutable.
    pub webhook_api_key_sealed: Option<Vec<u8>>,
    /// The Standard Webhooks signing secret, sealed under the master key.
    pub signing_secret_sealed: Vec<u8>,
    /// Deleted keys no longer authenticate, but stay on record for the generations they made.
    pub deleted_at: Option<Millis>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Generation {
    pub id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub status: JobStatus,
    pub params: GenerationParams,
    pub failure_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    /// In index order; empty until the generation is complete.
    pub images: Vec<Image>,
}

#[derive(Clone, Debug, PartialEq)]
pub struct Image {
    pub id: ImageId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub index: u32,
    /// Where the file is in image storage; also its path under `/cdn/`.
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
    pub created_at: Millis,
    pub variations: Vec<Variation>,
}

/// A variation job of one image (Easel implements `UPSCALE`).
#[derive(Clone, Debug, PartialEq)]
pub struct Variation {
    pub id: VariationId,
    pub image_id: ImageId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub transform_type: String,
    pub status: JobStatus,
    /// Set once complete.
    pub storage_key: Option<String>,
    pub failure_reason: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
}

/// A newly rendered image, recorded when its generation completes.
#[derive(Clone, Debug, PartialEq)]
pub struct NewImage {
    pub id: ImageId,
    pub index: u32,
    pub storage_key: String,
    pub width: u32,
    pub height: u32,
}

/// Work for the render workers.
#[derive(Clone, Debug)]
pub enum RenderJob {
    Generation(Generation),
    Upscale { variation: Variation, source: Image },
}

/// How a render job ended.
#[derive(Clone, Debug)]
pub enum JobOutcome<T> {
    Complete(T),
    Failed { reason: String },
}

/// The result of asking for a job slot.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Admission {
    Accepted,
    /// The user already has `slots` jobs pending.
    SlotsFull {
        slots: u32,
    },
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    async fn ping(&self) -> StoreResult<()>;

    /// Fails with `Conflict` if the username is taken.
    async fn create_user(&self, user: &User) -> StoreResult<()>;
    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>>;
    async fn list_users(&self) -> StoreResult<Vec<User>>;

    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> StoreResult<()>;
    /// The live (not deleted) key with this hash, and its user.
    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<(User, ApiKey)>>;
    async fn touch_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<()>;
    /// A key by id, deleted or not.
    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// Live keys, oldest first.
    async fn list_api_keys(&self, user: Option<UserId>) -> StoreResult<Vec<ApiKey>>;
    /// Returns false if there is no live key with this id.
    async fn delete_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<bool>;

    /// Records a PENDING generation unless the user's concurrency slots are all taken.
    async fn create_generation(&self, generation: &Generation, slots: u32) -> StoreResult<Admission>;
    async fn get_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Generation>>;
    /// Newest first.
    async fn list_generations(&self, user: UserId, offset: u64, limit: u64) -> StoreResult<Vec<Generation>>;
    /// Deletes a generation with its images and variations; returns the storage keys of their
    /// files, or `None` if the user has no such generation.
    async fn delete_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>>;
    async fn get_image(&self, user: UserId, id: ImageId) -> StoreResult<Option<Image>>;

    /// Records a PENDING variation unless the user's concurrency slots are all taken.
    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission>;
    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>>;

    /// Ends every render lease at once. Only for single-node backends, at start-up, when no other
    /// process can hold a lease.
    async fn release_render_leases(&self) -> StoreResult<u64>;
    /// Claims up to `limit` pending jobs (oldest first) whose leases are free or expired.
    async fn claim_render_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<RenderJob>>;
    /// Marks a generation COMPLETE (recording its images) or FAILED, if `owner` still holds its
    /// lease. Returns false when it does not (the job was deleted or taken over).
    async fn finish_generation(
        &self,
        id: GenerationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<Vec<NewImage>>,
    ) -> StoreResult<bool>;
    /// Same for a variation; a complete one records the storage key of its image.
    async fn finish_variation(
        &self,
        id: VariationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<String>,
    ) -> StoreResult<bool>;
}

/// Migrations compiled into the binary, so `easel` needs no files beside it.
#[derive(Debug)]
struct EmbeddedMigrations(&'static [(i64, &'static str, &'static str)]);

impl sqlx::migrate::MigrationSource<'static> for EmbeddedMigrations {
    fn resolve(
        self,
    ) -> futures_util::future::BoxFuture<'static, Result<Vec<sqlx::migrate::Migration>, sqlx::error::BoxDynError>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                sqlx::migrate::Migration::new(
                    version,
                    description.into(),
                    sqlx::migrate::MigrationType::Simple,
                    sql.into(),
                    false,
                )
            })
            .collect();
        Box::pin(async move { Ok(migrations) })
    }
}

async fn embedded_migrator(
    migrations: &'static [(i64, &'static str, &'static str)],
) -> StoreResult<sqlx::migrate::Migrator> {
    Ok(sqlx::migrate::Migrator::new(EmbeddedMigrations(migrations)).await?)
}
