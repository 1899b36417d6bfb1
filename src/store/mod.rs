//! The store: every durable fact Easel keeps (users, API keys, generations and their images and
//! variations, webhook deliveries and their attempts) behind one trait, so the rest of the server
//! never sees SQL. One implementation, [`SqlStore`], serves SQLite (one node) and PostgreSQL
//! (several): each operation is written once (`sql.rs`, with `$N` parameters both databases
//! take), and compiled for each backend; only what really differs is written per backend, as
//! small dialect pieces (`sqlite.rs`, `postgres.rs`): pools, delivery claims and leases, row
//! locks, notifications. `open` picks the backend from the database URL's scheme.
//!
//! Jobs are rows claimed with leases (`lease_owner`, `lease_expires_at`): a worker that dies leaves
//! a lease that expires, and the job is claimed again. A job is finished only by the holder of its
//! lease, so a worker whose lease was taken over cannot finish it twice.

mod group;
mod postgres;
mod rows;
mod sql;
mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;

use crate::clock::Millis;
use crate::config::{Config, DatabaseUrl};
use crate::ids::{ApiKeyId, DeliveryId, GenerationId, ImageId, UserId, VariationId};
pub use crate::records::*;

pub type StoreResult<T> = Result<T, StoreError>;

/// Why a store operation failed. Each variant means one thing.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database failed or refused a statement (see [`StoreError::is_rejected_data`]).
    #[error("database error: {0}")]
    Database(#[from] sqlx::Error),
    #[error("database migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// A row holds what Easel never writes.
    #[error("unreadable row in the database: {0}")]
    Corrupt(String),
    #[error("the username {0:?} is taken")]
    UsernameTaken(String),
    #[error("there is no user with id {0}")]
    UnknownUser(UserId),
    /// The database URL names no backend Easel has.
    #[error(transparent)]
    UnsupportedUrl(#[from] crate::setting::InvalidSetting),
    #[error("cannot create the database directory {path}: {source}")]
    Directory { path: std::path::PathBuf, source: std::io::Error },
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
    Ok(open_sql(config).await?)
}

async fn open_sql(config: &Config) -> StoreResult<Arc<SqlStore>> {
    let backend = match DatabaseUrl::parse(&config.database_url())? {
        DatabaseUrl::Sqlite(path) => Backend::Sqlite(sqlite::SqliteDb::open(&path).await?),
        DatabaseUrl::Postgres(url) => Backend::Postgres(postgres::PgDb::open(&url, &config.database).await?),
    };
    let disable_after = config.webhook.disable_after.as_millis() as Millis;
    let sqlite = matches!(backend, Backend::Sqlite(_));
    Ok(Arc::new_cyclic(|me| SqlStore {
        backend,
        disable_after: (disable_after > 0).then_some(disable_after),
        writes: sql::Writes::new(sqlite),
        keys: AuthCache::new(config.api.auth_cache_ttl),
        generations: Arc::new(GenerationCache::new(sqlite)),
        me: me.clone(),
    }))
}

/// The store on one of the two databases.
pub struct SqlStore {
    backend: Backend,
    /// `webhook.disable_after` in milliseconds (`None`: webhooks are never disabled).
    disable_after: Option<Millis>,
    /// Job inserts, finished generations and webhook attempts waiting for the writer: those that
    /// arrive while the previous transaction commits share the next one.
    writes: sql::Writes,
    /// Keys this node authenticated lately (`api.auth_cache_ttl`).
    keys: AuthCache,
    /// Finished generations read lately (on PostgreSQL, while other nodes' changes are heard).
    generations: Arc<GenerationCache>,
    /// This store, for work that must outlive the caller that started it.
    me: std::sync::Weak<SqlStore>,
}

enum Backend {
    Sqlite(sqlite::SqliteDb),
    Postgres(postgres::PgDb),
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
    /// [`Store::get_api_key`] as this node read it within `api.auth_cache_ttl`, for building
    /// callbacks (a key's webhook URL and callback key never change). Disabling, enabling or
    /// deleting it through this store shows at once; elsewhere (another node, the CLI), within the
    /// TTL. `webhook_failing_since` and `last_used_at` may be that old too.
    async fn recent_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>>;
    /// Live keys, oldest first.
    async fn list_api_keys(&self, user: Option<UserId>) -> StoreResult<Vec<ApiKey>>;
    /// Returns false if there is no live key with this id.
    async fn delete_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<bool>;

    /// Records a PENDING generation unless the user's concurrency slots are all taken. With
    /// `lease` (owner, expiry) the job is claimed by that owner in the same transaction (its first
    /// attempt), as `claim_render_jobs` would: for a node that hands it to its own render workers.
    async fn create_generation(
        &self,
        generation: &Generation,
        slots: u32,
        lease: Option<(&str, Millis)>,
    ) -> StoreResult<Admission>;
    async fn get_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Generation>>;
    /// Newest first.
    async fn list_generations(&self, user: UserId, offset: u64, limit: u64) -> StoreResult<Vec<Generation>>;
    /// Deletes a generation with its images and variations; returns the storage keys of their
    /// files, or `None` if the user has no such generation.
    async fn delete_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>>;
    async fn get_image(&self, user: UserId, id: ImageId) -> StoreResult<Option<Image>>;
    /// Records an init image's upload policy.
    async fn create_init_image(&self, image: &InitImage) -> StoreResult<()>;
    /// The user's init image (another user's reads as missing).
    async fn get_init_image(&self, user: UserId, id: uuid::Uuid) -> StoreResult<Option<InitImage>>;
    /// Any user's init image: for the upload target, which the policy's signature authorizes.
    async fn find_init_image(&self, id: uuid::Uuid) -> StoreResult<Option<InitImage>>;
    /// Records the file's arrival if the policy is unused and not expired at `now`; false if it
    /// was used (one upload per policy), expired or deleted.
    async fn mark_init_image_uploaded(&self, id: uuid::Uuid, now: Millis, size: i64) -> StoreResult<bool>;
    /// Deletes the user's init image; its storage key, or `None` if there was none.
    async fn delete_init_image(&self, user: UserId, id: uuid::Uuid) -> StoreResult<Option<String>>;

    /// Records a PENDING variation unless the user's concurrency slots are all taken or the image
    /// is not theirs (deleted a moment ago, say): the check and the insert are atomic.
    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission>;
    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>>;

    /// Claims up to `limit` pending jobs for the built-in renderer (oldest first) whose leases are
    /// free or expired: generations of every model but `skip_models` (those that `[[backends]]`
    /// run), then variations except those of an image of model `m` with transform `t` for each
    /// `(m, t)` in `skip_variations` (those a backend of the model runs).
    async fn claim_render_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_models: &[uuid::Uuid],
        skip_variations: &[(uuid::Uuid, &str)],
    ) -> StoreResult<Vec<RenderJob>>;
    /// Claims pending generations of `claim.models` for `claim.backend`, then variations of their
    /// images with one of `claim.transforms`, so that at most `claim.max_concurrent` jobs (of both
    /// kinds) hold leases on it, all nodes counted; users take turns (each user's oldest job
    /// first), so one user's queue does not hold up another's.
    async fn claim_backend_jobs(&self, claim: &BackendClaim<'_>) -> StoreResult<Vec<RenderJob>>;
    /// Claims up to `limit` pending generations of `models` created before `created_before` (and
    /// not leased), whatever backend, then such variations of an image of model `m` with
    /// transform `t` for each `(m, t)` in `variations`: to fail them when no backend of theirs is
    /// available.
    #[allow(clippy::too_many_arguments)]
    async fn claim_stranded_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        models: &[uuid::Uuid],
        variations: &[(uuid::Uuid, &str)],
        created_before: Millis,
        limit: u32,
    ) -> StoreResult<Vec<RenderJob>>;
    /// Replaces the parameters of a generation `owner` holds (the seed a backend actually used).
    async fn update_generation_params(
        &self,
        id: GenerationId,
        owner: &str,
        params: &crate::generation::GenerationParams,
    ) -> StoreResult<bool>;
    /// Records what `health.node_id` sees of a backend now.
    async fn record_backend_health(&self, health: &BackendHealth) -> StoreResult<()>;
    /// Health by node, running jobs by backend and pending jobs by model.
    async fn backend_overview(&self, now: Millis) -> StoreResult<BackendOverview>;
    /// Queue sizes for the metrics.
    async fn queue_stats(&self, now: Millis) -> StoreResult<QueueStats>;
    /// Connections of the pool(s).
    fn pool_stats(&self) -> PoolStats;
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

    /// Inserts a delivery that no generation's transaction carries (a test callback), due at its
    /// `created_at` unless leased, with its payload; other nodes are told.
    async fn enqueue_delivery(&self, delivery: &NewDelivery) -> StoreResult<()>;
    /// Claims up to `limit` pending deliveries that are due, oldest due first, leased to `owner`
    /// until `lease_until`, skipping the endpoints in `skip_endpoints` (those this node cannot send
    /// to right now) and the deliveries this node already holds (`held`). The endpoints in `fed`
    /// are fed by `claim_endpoint_deliveries` and left out too. The scan reads a bounded window of
    /// the first due rows; due deliveries of other endpoints behind a long backlog of skipped or
    /// fed ones are found by endpoint and claimed that way (see `SqlStore::claim_deliveries`).
    #[allow(clippy::too_many_arguments)]
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_endpoints: &[String],
        fed: &[String],
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
    /// still logged. In the same transaction each key's failing clock moves: a success clears
    /// `webhook_failing_since`, a failure starts it if it is not running, and a webhook whose every
    /// attempt has failed for `webhook.disable_after` is disabled (returned, once).
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<Vec<DisabledWebhook>>;
    /// Re-enables a key's disabled webhook (and stops its failing clock): its held deliveries
    /// become due at once, in the order they were created, and the nodes are told. Returns false
    /// if there is no live key with this id (of `user`, when given).
    async fn enable_webhook(&self, id: ApiKeyId, user: Option<UserId>, now: Millis) -> StoreResult<bool>;
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
    /// Retries every delivery that failed at or after `since`, test callbacks aside (they are
    /// never retried); returns how many.
    async fn retry_failed_deliveries(&self, since: Millis, now: Millis) -> StoreResult<u64>;

    /// Creates an inspector bin unless its user already has `max_bins` unexpired bins (false
    /// then). Expired bins (everyone's) are purged in the same transaction.
    async fn create_bin(&self, bin: &Bin, max_bins: u32, now: Millis) -> StoreResult<bool>;
    /// Unexpired bins at `now`, oldest first; with `user`, only theirs.
    async fn list_bins(&self, user: Option<UserId>, now: Millis) -> StoreResult<Vec<Bin>>;
    /// An unexpired bin; with `user`, only if it is theirs (another user's reads as missing).
    async fn get_bin(&self, id: uuid::Uuid, user: Option<UserId>, now: Millis) -> StoreResult<Option<Bin>>;
    /// Replaces an unexpired bin's response; false if there is no such bin (of `user`).
    async fn set_bin_response(
        &self,
        id: uuid::Uuid,
        user: UserId,
        response: &BinResponse,
        now: Millis,
    ) -> StoreResult<bool>;
    /// Deletes a bin with its requests; false if there is no such bin (of `user`, when given).
    async fn delete_bin(&self, id: uuid::Uuid, user: Option<UserId>) -> StoreResult<bool>;
    /// Records a request in its bin if the bin exists and has not expired at `received_at`, then
    /// drops the bin's oldest requests past `limits` (never the one just recorded), all in one
    /// transaction that serializes the bin's captures. Returns the request's number and the
    /// bin's response, or `None` for a missing or expired bin.
    async fn capture_request(
        &self,
        request: &CapturedRequest,
        limits: BinLimits,
    ) -> StoreResult<Option<(i64, BinResponse)>>;
    /// A bin's requests numbered below `before` (all when `None`), newest first, at most
    /// `limit`; `None` when the bin is missing, expired or not `user`'s.
    async fn list_requests(
        &self,
        bin: uuid::Uuid,
        user: Option<UserId>,
        before: Option<i64>,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Option<Vec<CapturedRequest>>>;
    /// A bin's requests numbered above `after`, oldest first, at most `limit` (for following a
    /// bin live); `None` when the bin is missing, expired or not `user`'s.
    async fn requests_after(
        &self,
        bin: uuid::Uuid,
        user: Option<UserId>,
        after: i64,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Option<Vec<CapturedRequest>>>;
    /// Deletes bins expired at `now` with their requests; returns how many bins.
    async fn purge_expired_bins(&self, now: Millis) -> StoreResult<u64>;
}

/// What a store read found, remembered by key, for caches that must never keep what a write
/// through this store changed: each write forgets after its commit, and a read that began before
/// a forget is not remembered (it may have seen the row before the write). At most `cap` entries;
/// an arbitrary one leaves when full.
struct Memo<K, V> {
    entries: std::sync::Mutex<std::collections::HashMap<K, V>>,
    /// Counts forgets.
    forgotten: std::sync::atomic::AtomicU64,
    cap: usize,
}

impl<K: std::hash::Hash + Eq + Clone, V> Memo<K, V> {
    fn new(cap: usize) -> Memo<K, V> {
        Memo { entries: Default::default(), forgotten: Default::default(), cap }
    }

    fn entries(&self) -> std::sync::MutexGuard<'_, std::collections::HashMap<K, V>> {
        self.entries.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Where a read begins: the forgets so far.
    fn begin(&self) -> u64 {
        self.forgotten.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// Remembers what a read that began at `began` found, unless something was forgotten since.
    fn put(&self, began: u64, key: K, value: V) {
        let mut entries = self.entries();
        if self.forgotten.load(std::sync::atomic::Ordering::SeqCst) != began {
            return;
        }
        if entries.len() >= self.cap
            && let Some(any) = entries.keys().next().cloned()
        {
            entries.remove(&any);
        }
        entries.insert(key, value);
    }

    /// Forgets every entry `keep` refuses (called after the commit of the write that changed them).
    fn forget(&self, mut keep: impl FnMut(&K, &V) -> bool) {
        let mut entries = self.entries();
        self.forgotten.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        entries.retain(|k, v| keep(k, v));
    }
}

/// A [`Memo`] whose entries are answered for `ttl` from when their read began (never, at `ttl` 0).
struct Recent<K, V> {
    ttl: std::time::Duration,
    memo: Memo<K, (std::time::Instant, V)>,
}

impl<K: std::hash::Hash + Eq + Clone, V: Clone> Recent<K, V> {
    fn new(ttl: std::time::Duration, cap: usize) -> Recent<K, V> {
        Recent { ttl, memo: Memo::new(cap) }
    }

    /// What `read` finds for `key`, or what it found less than `ttl` ago; what it finds is
    /// remembered unless something was forgotten while it ran (it may have read a row before
    /// the write that made the forget).
    async fn read<Q, F, Fut>(&self, key: &Q, read: F) -> StoreResult<Option<V>>
    where
        K: std::borrow::Borrow<Q>,
        Q: std::hash::Hash + Eq + ToOwned<Owned = K> + ?Sized,
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = StoreResult<Option<V>>>,
    {
        if self.ttl.is_zero() {
            return read().await;
        }
        {
            let mut entries = self.memo.entries();
            match entries.get(key) {
                Some((read, value)) if read.elapsed() < self.ttl => return Ok(Some(value.clone())),
                Some(_) => {
                    entries.remove(key);
                }
                None => {}
            }
        }
        let (began, forgets) = (std::time::Instant::now(), self.memo.begin());
        let found = read().await?;
        if let Some(value) = &found {
            self.memo.put(forgets, key.to_owned(), (began, value.clone()));
        }
        Ok(found)
    }
}

/// API keys this node read lately, by key hash (authentication) and by id (callbacks), each kept
/// for `ttl` from when it was read (at most `AUTH_CACHE_CAP` of each). A key deleted, or its
/// webhook disabled or enabled, through this store leaves at once; one changed elsewhere (another
/// node, the CLI) is answered from here for `ttl` at most.
struct AuthCache {
    by_hash: Recent<String, (User, ApiKey)>,
    by_id: Recent<ApiKeyId, ApiKey>,
}

const AUTH_CACHE_CAP: usize = 10_000;

impl AuthCache {
    fn new(ttl: std::time::Duration) -> AuthCache {
        AuthCache { by_hash: Recent::new(ttl, AUTH_CACHE_CAP), by_id: Recent::new(ttl, AUTH_CACHE_CAP) }
    }

    /// Forgets the key with id `id`.
    fn forget(&self, id: ApiKeyId) {
        self.by_hash.memo.forget(|_, (_, (_, key))| key.id != id);
        self.by_id.memo.forget(|known, _| *known != id);
    }

    /// Notes that key `id` was used at `at`, so the copies here do not ask for it again.
    fn touched(&self, id: ApiKeyId, at: Millis) {
        for (_, (_, key)) in self.by_hash.memo.entries().values_mut().filter(|(_, (_, key))| key.id == id) {
            key.last_used_at = Some(at);
        }
        if let Some((_, key)) = self.by_id.memo.entries().get_mut(&id) {
            key.last_used_at = Some(at);
        }
    }
}

/// Finished generations this node read lately, with their images and variations, by id. Each
/// write that could change a remembered generation (deleting it, adding or finishing a variation
/// of one of its images) forgets it after its commit. Only generations that can no longer change
/// on their own are kept: COMPLETE or FAILED, with no variation still pending. At most
/// `GENERATION_CACHE_CAP`.
///
/// On SQLite this process makes every write. On PostgreSQL other nodes (and `easel` commands)
/// write too: each such write also sends `NOTIFY` on `GENERATION_CHANNEL` with the generation's id
/// in its transaction, and the cache is `live` (answers and remembers) only while this node listens
/// there, emptied whenever it starts or stops listening. A notification lost unnoticed (a listening
/// connection that died silently) is bounded by `GENERATION_CACHE_TTL`: no entry is answered
/// longer after its read began.
struct GenerationCache {
    entries: Memo<GenerationId, (std::time::Instant, Generation)>,
    live: std::sync::atomic::AtomicBool,
}

const GENERATION_CACHE_CAP: usize = 2_048;
const GENERATION_CACHE_TTL: std::time::Duration = std::time::Duration::from_secs(60);

impl GenerationCache {
    /// A cache that answers from the start (`live`: SQLite) or once this node listens.
    fn new(live: bool) -> GenerationCache {
        GenerationCache { entries: Memo::new(GENERATION_CACHE_CAP), live: live.into() }
    }

    fn live(&self) -> bool {
        self.live.load(std::sync::atomic::Ordering::SeqCst)
    }

    /// The user's generation `id`, if remembered.
    fn get(&self, user: UserId, id: GenerationId) -> Option<Generation> {
        if !self.live() {
            return None;
        }
        let entries = self.entries.entries();
        let (read, generation) = entries.get(&id)?;
        (generation.user_id == user && read.elapsed() < GENERATION_CACHE_TTL).then(|| generation.clone())
    }

    /// Where a read begins: when, and the forgets so far.
    fn begin(&self) -> (std::time::Instant, u64) {
        (std::time::Instant::now(), self.entries.begin())
    }

    /// Remembers what a read that began at `began` found, if it can no longer change on its own.
    fn put(&self, (at, forgets): (std::time::Instant, u64), generation: &Generation) {
        let settled = generation.status != JobStatus::Pending
            && generation.images.iter().flat_map(|i| &i.variations).all(|v| v.status != JobStatus::Pending);
        if settled && self.live() {
            self.entries.put(forgets, generation.id, (at, generation.clone()));
        }
    }

    /// Forgets generation `id` (called after the commit of a write that changed it).
    fn forget(&self, id: GenerationId) {
        self.entries.forget(|key, _| *key != id);
    }

    /// Starts or stops answering, forgetting everything either way: what was read before this
    /// node listened may have missed a change, and reads still running are not remembered.
    fn set_live(&self, live: bool) {
        self.live.store(live, std::sync::atomic::Ordering::SeqCst);
        self.entries.forget(|_, _| false);
    }
}

/// Rows per multi-row statement: well under SQLite's 32766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

/// The notification channels for new work (PostgreSQL's `NOTIFY`; nothing on SQLite).
const RENDER_CHANNEL: &str = "easel_render";
const DELIVERY_CHANNEL: &str = "easel_deliveries";
/// Carries the id of a finished generation a write changed, for the other nodes' caches.
const GENERATION_CHANNEL: &str = "easel_generations";

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
