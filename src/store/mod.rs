//! The store: every durable fact Easel keeps (users, API keys, generations, images, variations)
//! behind one trait, so the rest of the server never sees SQL. `open` picks the implementation from
//! the database URL's scheme.
//!
//! Jobs are rows claimed with leases (`lease_owner`, `lease_expires_at`): a worker that dies leaves
//! a lease that expires, and the job is claimed again. A job is finished only by the holder of its
//! lease, so a worker whose lease was taken over cannot finish it twice.

mod postgres;
mod rows;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;

use crate::clock::Millis;
use crate::config::{Config, DatabaseUrl};
use crate::generation::GenerationParams;
use bytes::Bytes;

use crate::ids::{ApiKeyId, DeliveryId, GenerationId, ImageId, UserId, VariationId};

pub use postgres::PgStore;
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

impl StoreError {
    /// The database refused this data (a constraint, a value it cannot hold), as opposed to being
    /// unreachable or failing as a whole: writing the same data again would fail again, while
    /// other data would not.
    pub fn is_rejected_data(&self) -> bool {
        let StoreError::Database(error) = self else { return false };
        let error = match error {
            sqlx::Error::Encode(_) => return true,
            sqlx::Error::Database(error) => error,
            _ => return false,
        };
        if matches!(
            error.kind(),
            sqlx::error::ErrorKind::UniqueViolation
                | sqlx::error::ErrorKind::ForeignKeyViolation
                | sqlx::error::ErrorKind::NotNullViolation
                | sqlx::error::ErrorKind::CheckViolation
        ) {
            return true;
        }
        let code = error.code().unwrap_or_default();
        if error.try_downcast_ref::<sqlx::postgres::PgDatabaseError>().is_some() {
            // SQLSTATE classes 22 (data exception: a NUL in text, bad encoding, out of range) and
            // 23 (integrity constraint violation).
            return code.starts_with("22") || code.starts_with("23");
        }
        // SQLite's primary result codes (the low byte of the extended code): SQLITE_TOOBIG,
        // SQLITE_CONSTRAINT (constraints and RAISE in triggers), SQLITE_MISMATCH.
        matches!(code.parse::<i32>().map(|c| c & 0xff), Ok(18..=20))
    }
}

/// Opens the database the configuration names and brings its schema up to date.
pub async fn open(config: &Config) -> StoreResult<Arc<dyn Store>> {
    match DatabaseUrl::parse(&config.database_url()).map_err(StoreError::Conflict)? {
        DatabaseUrl::Sqlite(path) => Ok(Arc::new(SqliteStore::open(&path).await?)),
        DatabaseUrl::Postgres(url) => Ok(Arc::new(PgStore::open(&url, &config.database).await?)),
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

/// A claimed job for the render workers.
#[derive(Clone, Debug)]
pub struct RenderJob {
    pub work: RenderWork,
    /// How many times the job has been claimed, this claim included (1 the first time).
    pub attempt: u32,
}

#[derive(Clone, Debug)]
pub enum RenderWork {
    Generation(Generation),
    Upscale { variation: Variation, source: Image },
}

impl RenderWork {
    pub fn id(&self) -> RenderJobId {
        match self {
            RenderWork::Generation(generation) => RenderJobId::Generation(generation.id),
            RenderWork::Upscale { variation, .. } => RenderJobId::Variation(variation.id),
        }
    }
}

/// Which job: a generation or a variation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RenderJobId {
    Generation(GenerationId),
    Variation(VariationId),
}

impl RenderJobId {
    /// The table and id of the job's row.
    fn row(self) -> (&'static str, String) {
        match self {
            RenderJobId::Generation(id) => ("generations", id.to_string()),
            RenderJobId::Variation(id) => ("variations", id.to_string()),
        }
    }
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
    /// What the job works on (the image to upscale) is not the user's, or was deleted meanwhile.
    SourceMissing,
    /// The user already has `slots` jobs pending.
    SlotsFull {
        slots: u32,
    },
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DeliveryStatus {
    Pending,
    Succeeded,
    Failed,
}

impl DeliveryStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeliveryStatus::Pending => "pending",
            DeliveryStatus::Succeeded => "succeeded",
            DeliveryStatus::Failed => "failed",
        }
    }

    pub fn parse(text: &str) -> Option<DeliveryStatus> {
        match text {
            "pending" => Some(DeliveryStatus::Pending),
            "succeeded" => Some(DeliveryStatus::Succeeded),
            "failed" => Some(DeliveryStatus::Failed),
            _ => None,
        }
    }
}

/// A webhook delivery to enqueue with a finished generation (the transactional outbox).
#[derive(Clone, Debug)]
pub struct NewDelivery {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    /// `scheme://host:port` of `url`: the unit of per-receiver concurrency.
    pub endpoint: String,
    pub payload: Bytes,
    pub created_at: Millis,
    /// Claimed by the inserting node at once (`owner`, `expires_at`), so it can send straight from
    /// memory without another round trip; `None` leaves it to whichever node claims it.
    pub lease: Option<(String, Millis)>,
}

/// A claimed delivery, with everything needed to send it.
#[derive(Clone, Debug)]
pub struct DeliveryJob {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    pub endpoint: String,
    pub payload: Bytes,
    /// Attempts made so far (all runs of the schedule).
    pub attempt_count: u32,
    /// Position in the retry schedule of the attempt about to be made.
    pub schedule_index: u32,
}

impl DeliveryJob {
    pub fn from_new(delivery: &NewDelivery) -> DeliveryJob {
        DeliveryJob {
            id: delivery.id,
            generation_id: delivery.generation_id,
            user_id: delivery.user_id,
            api_key_id: delivery.api_key_id,
            event_type: delivery.event_type.clone(),
            url: delivery.url.clone(),
            endpoint: delivery.endpoint.clone(),
            payload: delivery.payload.clone(),
            attempt_count: 0,
            schedule_index: 0,
        }
    }
}

/// A delivery as the operator and the owner see it.
#[derive(Clone, Debug, PartialEq)]
pub struct Delivery {
    pub id: DeliveryId,
    pub generation_id: GenerationId,
    pub user_id: UserId,
    pub api_key_id: ApiKeyId,
    pub event_type: String,
    pub url: String,
    pub status: DeliveryStatus,
    pub attempt_count: u32,
    /// When the next attempt is due (pending deliveries only).
    pub next_attempt_at: Option<Millis>,
    pub last_status_code: Option<u16>,
    pub last_error: Option<String>,
    pub created_at: Millis,
    pub updated_at: Millis,
    pub finished_at: Option<Millis>,
}

/// One attempt to deliver, as logged.
#[derive(Clone, Debug, PartialEq)]
pub struct Attempt {
    pub delivery_id: DeliveryId,
    /// 1 for the first attempt.
    pub attempt: u32,
    pub started_at: Millis,
    pub duration_ms: u32,
    pub status_code: Option<u16>,
    /// Why it failed, as a stable class (`connect_refused`, `tls`, `timeout`, `http_status`, ...).
    pub error_class: Option<String>,
    /// Why it failed, in words.
    pub error_detail: Option<String>,
    pub response_excerpt: Option<String>,
}

/// What happens to a delivery after an attempt.
#[derive(Clone, Debug, PartialEq)]
pub enum NextStep {
    Succeeded,
    /// Try again at `at`, as attempt `schedule_index` of the schedule.
    Retry {
        at: Millis,
        schedule_index: u32,
    },
    /// Give up: the schedule is exhausted or the receiver said 410 Gone.
    Failed,
}

/// The outcome of one attempt, to record.
#[derive(Clone, Debug)]
pub struct AttemptRecord {
    pub attempt: Attempt,
    pub lease_owner: String,
    pub next: NextStep,
}

/// Deliveries wanted for one endpoint.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointClaim {
    pub endpoint: String,
    /// How many to claim.
    pub want: u32,
    /// How many of its deliveries the claiming node already holds (they are still due in the
    /// store until their attempts are recorded).
    pub held: u32,
}

/// A delivery is redelivered at most once in this time (milliseconds).
pub const REDELIVERY_INTERVAL_MS: Millis = 1000;

/// The result of asking for a redelivery.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Redelivery {
    /// Pending again, due now.
    Queued,
    /// It was already due or in flight: nothing changed.
    AlreadyQueued,
    /// It was redelivered less than `REDELIVERY_INTERVAL_MS` ago: nothing changed.
    TooSoon,
    /// No such delivery (of this user).
    Missing,
}

/// Which deliveries to list.
#[derive(Clone, Debug, Default)]
pub struct DeliveryFilter {
    pub generation: Option<GenerationId>,
    pub user: Option<UserId>,
    pub status: Option<DeliveryStatus>,
    pub limit: u32,
}

/// What wakes this node's workers when another node adds work.
#[derive(Clone, Default)]
pub struct Wakeups {
    pub render: Option<Arc<tokio::sync::Notify>>,
    pub deliveries: Option<Arc<tokio::sync::Notify>>,
}

#[async_trait]
pub trait Store: Send + Sync + 'static {
    /// `sqlite` or `postgres`.
    fn backend(&self) -> &'static str;
    /// Starts relaying other nodes' announcements of new work (render jobs, due deliveries) to
    /// `wakeups` until `stop`. Single-node backends have no other nodes: nothing to do.
    fn watch(&self, _wakeups: Wakeups, _stop: tokio_util::sync::CancellationToken) {}
    /// Gives up the leases `owner` holds on unfinished render jobs and deliveries (at shutdown), so
    /// they are taken up at once rather than when the leases expire. `None` releases every owner's:
    /// only for a single-node backend at start-up, when no other process can hold one.
    async fn release_leases(&self, owner: Option<&str>, now: Millis) -> StoreResult<u64>;
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

    /// Records a PENDING variation unless the user's concurrency slots are all taken or the image
    /// is not theirs (deleted a moment ago, say): the check and the insert are atomic.
    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission>;
    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>>;

    /// Claims up to `limit` pending jobs (oldest first) whose leases are free or expired.
    async fn claim_render_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<RenderJob>>;
    /// Gives a claimed job back, not to be claimed again before `not_before` (after a failure that
    /// may pass, such as image storage refusing writes). Returns false if `owner` no longer holds it.
    async fn postpone_render_job(
        &self,
        job: RenderJobId,
        owner: &str,
        not_before: Millis,
        at: Millis,
    ) -> StoreResult<bool>;
    /// Marks a generation COMPLETE (recording its images) or FAILED, if `owner` still holds its
    /// lease, and enqueues its webhook delivery in the same transaction. Returns false when the
    /// lease is not held (the job was deleted or taken over): nothing is written then.
    async fn finish_generation(
        &self,
        id: GenerationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<Vec<NewImage>>,
        delivery: Option<&NewDelivery>,
    ) -> StoreResult<bool>;
    /// Same for a variation; a complete one records the storage key of its image.
    async fn finish_variation(
        &self,
        id: VariationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<String>,
    ) -> StoreResult<bool>;

    /// Claims up to `limit` pending deliveries that are due, oldest due first, leased to `owner`
    /// until `lease_until`, skipping the endpoints in `skip_endpoints` (those this node cannot send
    /// to right now) and the deliveries this node already holds (`held`).
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_endpoints: &[String],
        held: &std::collections::HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>>;
    /// Claims due deliveries of the given endpoints (up to `want` each), oldest due first, skipping
    /// those in `held`.
    async fn claim_endpoint_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        wanted: &[EndpointClaim],
        held: &std::collections::HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>>;
    /// Records attempts and moves their deliveries on, in one transaction. On a multi-node
    /// backend, a delivery whose lease `lease_owner` no longer holds keeps its state; its attempt is
    /// still logged.
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()>;
    /// How many deliveries are in `status`.
    async fn count_deliveries(&self, status: DeliveryStatus) -> StoreResult<u64>;
    /// When the earliest pending delivery is due.
    async fn next_delivery_due(&self) -> StoreResult<Option<Millis>>;
    /// Deliveries, newest first.
    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>>;
    /// A delivery with its attempts (oldest first); with `user`, only if it is theirs.
    async fn get_delivery(&self, id: DeliveryId, user: Option<UserId>)
    -> StoreResult<Option<(Delivery, Vec<Attempt>)>>;
    /// The payload a delivery sends.
    async fn delivery_payload(&self, id: DeliveryId) -> StoreResult<Option<Bytes>>;
    /// Makes a delivery pending again, due now, at the start of the retry schedule (the same
    /// `webhook-id`, so receivers can deduplicate). With `user`, only if it is theirs. A delivery
    /// already due or in flight is left as it is, and so is one redelivered less than
    /// `REDELIVERY_INTERVAL_MS` ago: a burst of requests sends it once.
    async fn retry_delivery(&self, id: DeliveryId, user: Option<UserId>, now: Millis) -> StoreResult<Redelivery>;
    /// Retries every delivery that failed at or after `since`; returns how many.
    async fn retry_failed_deliveries(&self, since: Millis, now: Millis) -> StoreResult<u64>;
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
