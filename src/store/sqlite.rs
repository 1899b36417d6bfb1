//! The embedded SQLite store (the default): one database file in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so writers queue in-process instead of
//! sleeping in SQLite's busy handler; reads use their own pool and run beside the writer (WAL).
//! Write transactions start with `BEGIN IMMEDIATE`, so another process (the CLI) holding the write
//! lock is waited for up front rather than failing half-way. `synchronous = NORMAL`: a commit
//! survives a crash of the process (kill -9); the last commits before a power cut may be lost.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::rows::*;
use super::*;
use crate::clock::Millis;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
    /// Stops the background checkpointer when the store is dropped.
    _checkpointer: tokio_util::sync::DropGuard,
}

/// How often the background task copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../migrations/sqlite/0001_foundation.sql")),
    (2, "webhook deliveries", include_str!("../../migrations/sqlite/0002_webhook_deliveries.sql")),
    (3, "attempts and redeliveries", include_str!("../../migrations/sqlite/0003_attempts_and_redeliveries.sql")),
];

/// Rows per multi-row statement: well under SQLite's 32766 bound parameters.
const ROWS_PER_STATEMENT: usize = 500;

impl SqliteStore {
    pub async fn open(path: &Path) -> StoreResult<SqliteStore> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent).map_err(|e| {
                StoreError::Conflict(format!("cannot create the database directory {}: {e}", parent.display()))
            })?;
        }
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(true)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // Up to 32 MiB of page cache per connection (SQLite's default is 2 MiB); pages are
            // only cached as they are used.
            .pragma("cache_size", "-32768")
            // The WAL is checkpointed by a background task, off the writer's path; a writer only
            // checkpoints itself if that task falls 64 MiB behind.
            .pragma("wal_autocheckpoint", "8192");
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone())
            .await?;
        super::embedded_migrator(MIGRATIONS).await?.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone().read_only(true))
            .await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let checkpoints = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        tokio::spawn(checkpoint_wal(checkpoints, stop.clone()));
        Ok(SqliteStore { writer, reader, _checkpointer: stop.drop_guard() })
    }
}

/// Copies committed WAL frames into the database file (a PASSIVE checkpoint never blocks readers
/// or the writer), so commits do not pay for checkpoints.
async fn checkpoint_wal(pool: SqlitePool, stop: tokio_util::sync::CancellationToken) {
    loop {
        tokio::select! {
            _ = stop.cancelled() => break,
            _ = tokio::time::sleep(CHECKPOINT_INTERVAL) => {}
        }
        if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
            tracing::warn!(error.message = %e, "WAL checkpoint failed");
        }
    }
    pool.close().await;
}

async fn insert_delivery(tx: &mut sqlx::SqliteConnection, delivery: &NewDelivery) -> StoreResult<()> {
    // A delivery leased at birth is due when its lease runs out.
    let (lease_owner, next_attempt_at) = match &delivery.lease {
        Some((owner, until)) => (Some(owner.as_str()), *until),
        None => (None, delivery.created_at),
    };
    sqlx::query(
        "INSERT INTO webhook_deliveries (id, generation_id, user_id, api_key_id, event_type, url, endpoint, status, \
         next_attempt_at, lease_owner, created_at, updated_at) \
         VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, 'pending', ?10, ?9, ?8, ?8)",
    )
    .bind(delivery.id.to_string())
    .bind(delivery.generation_id.to_string())
    .bind(delivery.user_id.to_string())
    .bind(delivery.api_key_id.to_string())
    .bind(&delivery.event_type)
    .bind(&delivery.url)
    .bind(&delivery.endpoint)
    .bind(delivery.created_at)
    .bind(lease_owner)
    .bind(next_attempt_at)
    .execute(&mut *tx)
    .await?;
    sqlx::query("INSERT INTO webhook_payloads (delivery_id, body) VALUES (?1, ?2)")
        .bind(delivery.id.to_string())
        .bind(delivery.payload.as_ref())
        .execute(&mut *tx)
        .await?;
    Ok(())
}

/// The first `limit` ids in `rows` that this node does not already hold.
fn unheld_ids(rows: &[SqliteRow], held: &HashSet<DeliveryId>, limit: usize) -> StoreResult<Vec<DeliveryId>> {
    let mut ids = Vec::with_capacity(limit.min(rows.len()));
    for row in rows {
        let id: DeliveryId = parse(row, "id")?;
        if !held.contains(&id) {
            ids.push(id);
            if ids.len() == limit {
                break;
            }
        }
    }
    Ok(ids)
}

impl SqliteStore {
    /// Claimed deliveries with their payloads, read on a reader (payloads never change).
    async fn load_jobs(&self, ids: &[DeliveryId]) -> StoreResult<Vec<DeliveryJob>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {JOB_COLUMNS} FROM webhook_deliveries d JOIN webhook_payloads p ON p.delivery_id = d.id \
                 WHERE d.id IN ("
            ));
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id.to_string());
            }
            query.push(") ORDER BY d.next_attempt_at");
            for row in query.build().fetch_all(&self.reader).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        Ok(jobs)
    }

    /// Fills in the images (with their variations) of `generations`.
    async fn attach_images(&self, generations: &mut [Generation]) -> StoreResult<()> {
        if generations.is_empty() {
            return Ok(());
        }
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {IMAGE_COLUMNS} FROM images WHERE generation_id IN ("));
        let mut list = query.separated(", ");
        for generation in generations.iter() {
            list.push_bind(generation.id.to_string());
        }
        query.push(") ORDER BY generation_id, idx");
        let mut images: Vec<Image> =
            query.build().fetch_all(&self.reader).await?.iter().map(image_from_row).collect::<StoreResult<_>>()?;
        self.attach_variations(&mut images).await?;
        for image in images {
            if let Some(generation) = generations.iter_mut().find(|g| g.id == image.generation_id) {
                generation.images.push(image);
            }
        }
        Ok(())
    }

    async fn attach_variations(&self, images: &mut [Image]) -> StoreResult<()> {
        if images.is_empty() {
            return Ok(());
        }
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE image_id IN ("));
        let mut list = query.separated(", ");
        for image in images.iter() {
            list.push_bind(image.id.to_string());
        }
        query.push(") ORDER BY created_at, id");
        for row in query.build().fetch_all(&self.reader).await? {
            let variation = variation_from_row(&row)?;
            if let Some(image) = images.iter_mut().find(|i| i.id == variation.image_id) {
                image.variations.push(variation);
            }
        }
        Ok(())
    }

    /// Pending generations plus pending variations of a user: what concurrency slots count.
    const PENDING_JOBS_OF_USER: &'static str = "(SELECT COUNT(*) FROM generations WHERE user_id = ?2 AND status = 'PENDING') \
         + (SELECT COUNT(*) FROM variations WHERE user_id = ?2 AND status = 'PENDING')";
}

#[async_trait]
impl Store for SqliteStore {
    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn release_leases(&self, owner: Option<&str>, now: Millis) -> StoreResult<u64> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut released = 0;
        for table in ["generations", "variations"] {
            released += sqlx::query(&format!(
                // A job given back by a node that stops (not one that crashed) did not use up an attempt.
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = 0, \
                 attempts = CASE WHEN ?1 IS NULL THEN attempts ELSE MAX(attempts - 1, 0) END \
                 WHERE status = 'PENDING' AND lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)"
            ))
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        released += sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = ?2 \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND (?1 IS NULL OR lease_owner = ?1)",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        tx.commit().await?;
        Ok(released)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO users (id, username, api_concurrency_slots, created_at) VALUES (?1, ?2, ?3, ?4) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(i64::from(user.api_concurrency_slots))
        .bind(user.created_at)
        .execute(&self.writer)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("the username {:?} is taken", user.username)));
        }
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row =
            sqlx::query("SELECT * FROM users WHERE id = ?1").bind(id.to_string()).fetch_optional(&self.reader).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, username").fetch_all(&self.reader).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, key_hash, webhook_url, webhook_api_key_sealed, \
             signing_secret_sealed, created_at) SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8 \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = ?2)",
        )
        .bind(key.id.to_string())
        .bind(key.user_id.to_string())
        .bind(&key.name)
        .bind(key_hash)
        .bind(&key.webhook_url)
        .bind(&key.webhook_api_key_sealed)
        .bind(&key.signing_secret_sealed)
        .bind(key.created_at)
        .execute(&self.writer)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("there is no user with id {}", key.user_id)));
        }
        Ok(())
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<(User, ApiKey)>> {
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS}, u.username, u.api_concurrency_slots, u.created_at AS user_created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = ?1 AND k.deleted_at IS NULL"
        ))
        .bind(key_hash)
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_from_row(&row)?;
        let user = User {
            id: key.user_id,
            username: row.try_get("username")?,
            api_concurrency_slots: row.try_get::<i64, _>("api_concurrency_slots")? as u32,
            created_at: row.try_get("user_created_at")?,
        };
        Ok(Some((user, key)))
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = ?2 WHERE id = ?1")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.writer)
            .await?;
        Ok(())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.id = ?1"))
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.deleted_at IS NULL AND (?1 IS NULL OR k.user_id = ?1) \
             ORDER BY k.created_at, k.id"
        ))
        .bind(user.map(|u| u.to_string()))
        .fetch_all(&self.reader)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn delete_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<bool> {
        let result = sqlx::query("UPDATE api_keys SET deleted_at = ?2 WHERE id = ?1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.writer)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_generation(&self, generation: &Generation, slots: u32) -> StoreResult<Admission> {
        let params = serde_json::to_string(&generation.params).expect("params serialize");
        let result = sqlx::query(&format!(
            "INSERT INTO generations (id, user_id, api_key_id, status, params, created_at, updated_at) \
             SELECT ?1, ?2, ?3, 'PENDING', ?4, ?5, ?5 WHERE {} < ?6",
            Self::PENDING_JOBS_OF_USER
        ))
        .bind(generation.id.to_string())
        .bind(generation.user_id.to_string())
        .bind(generation.api_key_id.to_string())
        .bind(params)
        .bind(generation.created_at)
        .bind(i64::from(slots))
        .execute(&self.writer)
        .await?;
        Ok(if result.rows_affected() == 1 { Admission::Accepted } else { Admission::SlotsFull { slots } })
    }

    async fn get_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Generation>> {
        let row = sqlx::query(&format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE id = ?1 AND user_id = ?2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut generations = vec![generation_from_row(&row)?];
        self.attach_images(&mut generations).await?;
        Ok(generations.pop())
    }

    async fn list_generations(&self, user: UserId, offset: u64, limit: u64) -> StoreResult<Vec<Generation>> {
        let rows = sqlx::query(&format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE user_id = ?1 \
             ORDER BY created_at DESC, id DESC LIMIT ?2 OFFSET ?3"
        ))
        .bind(user.to_string())
        .bind(limit.min(i64::MAX as u64) as i64)
        .bind(offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.reader)
        .await?;
        let mut generations: Vec<Generation> = rows.iter().map(generation_from_row).collect::<StoreResult<_>>()?;
        self.attach_images(&mut generations).await?;
        Ok(generations)
    }

    async fn delete_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let exists = sqlx::query("SELECT 1 FROM generations WHERE id = ?1 AND user_id = ?2")
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT storage_key FROM images WHERE generation_id = ?1 \
             UNION ALL SELECT storage_key FROM variations WHERE generation_id = ?1 AND storage_key IS NOT NULL",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        // Images and their variations go with the generation (ON DELETE CASCADE).
        sqlx::query("DELETE FROM generations WHERE id = ?1").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(keys))
    }

    async fn get_image(&self, user: UserId, id: ImageId) -> StoreResult<Option<Image>> {
        let row = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1 AND user_id = ?2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(image_from_row).transpose()
    }

    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission> {
        let result = sqlx::query(&format!(
            "INSERT INTO variations (id, image_id, generation_id, user_id, api_key_id, transform_type, status, \
             created_at, updated_at) SELECT ?1, ?3, ?4, ?2, ?5, ?6, 'PENDING', ?7, ?7 WHERE {} < ?8 \
             AND EXISTS (SELECT 1 FROM images WHERE id = ?3 AND user_id = ?2)",
            Self::PENDING_JOBS_OF_USER
        ))
        .bind(variation.id.to_string())
        .bind(variation.user_id.to_string())
        .bind(variation.image_id.to_string())
        .bind(variation.generation_id.to_string())
        .bind(variation.api_key_id.to_string())
        .bind(&variation.transform_type)
        .bind(variation.created_at)
        .bind(i64::from(slots))
        .execute(&self.writer)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(Admission::Accepted);
        }
        // One writer: nothing changed since the insert, so this tells which condition failed.
        let image_exists: bool =
            sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM images WHERE id = ?1 AND user_id = ?2)")
                .bind(variation.image_id.to_string())
                .bind(variation.user_id.to_string())
                .fetch_one(&self.writer)
                .await?;
        Ok(if image_exists { Admission::SlotsFull { slots } } else { Admission::SourceMissing })
    }

    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>> {
        let row = sqlx::query(&format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE id = ?1 AND user_id = ?2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(variation_from_row).transpose()
    }

    async fn claim_render_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
    ) -> StoreResult<Vec<RenderJob>> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let rows = sqlx::query(&format!(
            "UPDATE generations SET lease_owner = ?1, lease_expires_at = ?2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM generations WHERE status = 'PENDING' AND lease_expires_at <= ?3 ORDER BY created_at LIMIT ?4) \
             RETURNING {GENERATION_COLUMNS}, attempts"
        ))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs: Vec<RenderJob> = rows
            .iter()
            .map(|row| render_job(RenderWork::Generation(generation_from_row(row)?), row))
            .collect::<StoreResult<_>>()?;
        let remaining = limit.saturating_sub(jobs.len() as u32);
        if remaining > 0 {
            let rows = sqlx::query(&format!(
                "UPDATE variations SET lease_owner = ?1, lease_expires_at = ?2, attempts = attempts + 1 WHERE id IN \
                 (SELECT id FROM variations WHERE status = 'PENDING' AND lease_expires_at <= ?3 ORDER BY created_at LIMIT ?4) \
                 RETURNING {VARIATION_COLUMNS}, attempts"
            ))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(remaining))
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let variation = variation_from_row(&row)?;
                let source = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = ?1"))
                    .bind(variation.image_id.to_string())
                    .fetch_one(&mut *tx)
                    .await?;
                jobs.push(render_job(RenderWork::Upscale { variation, source: image_from_row(&source)? }, &row)?);
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }

    async fn postpone_render_job(
        &self,
        job: RenderJobId,
        owner: &str,
        not_before: Millis,
        at: Millis,
    ) -> StoreResult<bool> {
        let (table, id) = job.row();
        let result = sqlx::query(&format!(
            "UPDATE {table} SET lease_owner = NULL, lease_expires_at = ?3, updated_at = ?4 \
             WHERE id = ?1 AND lease_owner = ?2 AND status = 'PENDING'"
        ))
        .bind(id)
        .bind(owner)
        .bind(not_before)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn finish_generation(
        &self,
        id: GenerationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<Vec<NewImage>>,
        delivery: Option<&NewDelivery>,
    ) -> StoreResult<bool> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let (status, reason) = match outcome {
            JobOutcome::Complete(_) => ("COMPLETE", None),
            JobOutcome::Failed { reason } => ("FAILED", Some(reason.as_str())),
        };
        let row = sqlx::query(
            "UPDATE generations SET status = ?3, failure_reason = ?4, updated_at = ?5, lease_owner = NULL, \
             lease_expires_at = 0 WHERE id = ?1 AND lease_owner = ?2 AND status = 'PENDING' RETURNING user_id",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(status)
        .bind(reason)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let user_id: String = row.try_get("user_id")?;
        if let JobOutcome::Complete(images) = outcome {
            for image in images {
                sqlx::query(
                    "INSERT INTO images (id, generation_id, user_id, idx, storage_key, width, height, created_at) \
                     VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                )
                .bind(image.id.to_string())
                .bind(id.to_string())
                .bind(&user_id)
                .bind(i64::from(image.index))
                .bind(&image.storage_key)
                .bind(i64::from(image.width))
                .bind(i64::from(image.height))
                .bind(at)
                .execute(&mut *tx)
                .await?;
            }
        }
        if let Some(delivery) = delivery {
            insert_delivery(&mut tx, delivery).await?;
        }
        tx.commit().await?;
        Ok(true)
    }

    async fn finish_variation(
        &self,
        id: VariationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<String>,
    ) -> StoreResult<bool> {
        let (status, key, reason) = match outcome {
            JobOutcome::Complete(key) => ("COMPLETE", Some(key.as_str()), None),
            JobOutcome::Failed { reason } => ("FAILED", None, Some(reason.as_str())),
        };
        let result = sqlx::query(
            "UPDATE variations SET status = ?3, storage_key = ?4, failure_reason = ?5, updated_at = ?6, \
             lease_owner = NULL, lease_expires_at = 0 WHERE id = ?1 AND lease_owner = ?2 AND status = 'PENDING'",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(status)
        .bind(key)
        .bind(reason)
        .bind(at)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    /// SQLite is single-node (`serve` holds the database's lock file), so a claim writes nothing:
    /// the engine's set of deliveries in hand (`held`) is the lease, and start-up releases what a
    /// crashed process held. The due ids are read on the writer connection (so no attempt recorded
    /// a moment ago is read as still pending); the rest, payloads included, on a reader.
    async fn claim_deliveries(
        &self,
        _owner: &str,
        now: Millis,
        _lease_until: Millis,
        limit: u32,
        skip_endpoints: &[String],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut query = QueryBuilder::<Sqlite>::new(
            "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= ",
        );
        query.push_bind(now);
        if !skip_endpoints.is_empty() {
            query.push(" AND endpoint NOT IN (");
            let mut list = query.separated(", ");
            for endpoint in skip_endpoints {
                list.push_bind(endpoint);
            }
            query.push(")");
        }
        query.push(" ORDER BY next_attempt_at LIMIT ").push_bind(i64::from(limit) + held.len() as i64);
        let rows = query.build().fetch_all(&self.writer).await?;
        let ids = unheld_ids(&rows, held, limit as usize)?;
        self.load_jobs(&ids).await
    }

    async fn claim_endpoint_deliveries(
        &self,
        _owner: &str,
        now: Millis,
        _lease_until: Millis,
        wanted: &[EndpointClaim],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut ids = Vec::new();
        for claim in wanted {
            let rows = sqlx::query(
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND endpoint = ?1 AND next_attempt_at <= ?2 \
                 ORDER BY next_attempt_at LIMIT ?3",
            )
            .bind(&claim.endpoint)
            .bind(now)
            .bind(i64::from(claim.want + claim.held))
            .fetch_all(&self.writer)
            .await?;
            ids.extend(unheld_ids(&rows, held, claim.want as usize)?);
        }
        self.load_jobs(&ids).await
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Sqlite>::new(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_class, \
                 error_detail, response_excerpt) ",
            );
            insert.push_values(chunk, |mut row, record| {
                let a = &record.attempt;
                row.push_bind(a.delivery_id.to_string())
                    .push_bind(i64::from(a.attempt))
                    .push_bind(a.started_at)
                    .push_bind(i64::from(a.duration_ms))
                    .push_bind(a.status_code.map(i64::from))
                    .push_bind(a.error_class.clone())
                    .push_bind(a.error_detail.clone())
                    .push_bind(a.response_excerpt.clone());
            });
            insert.build().execute(&mut *tx).await?;

            let mut update = QueryBuilder::<Sqlite>::new(
                "WITH v (id, owner, status, next_at, schedule_index, code, error, at, finished) AS (",
            );
            update.push_values(chunk, |mut row, record| {
                let update = DeliveryUpdate::of(record);
                row.push_bind(record.attempt.delivery_id.to_string())
                    .push_bind(record.lease_owner.clone())
                    .push_bind(update.status)
                    .push_bind(update.next_attempt_at)
                    .push_bind(update.schedule_index)
                    .push_bind(record.attempt.status_code.map(i64::from))
                    .push_bind(update.error)
                    .push_bind(update.at)
                    .push_bind(update.finished_at);
            });
            update.push(
                ") UPDATE webhook_deliveries SET status = v.status, attempt_count = attempt_count + 1, \
                 schedule_index = COALESCE(v.schedule_index, webhook_deliveries.schedule_index), \
                 next_attempt_at = v.next_at, lease_owner = NULL, last_status_code = v.code, \
                 last_error = v.error, updated_at = v.at, finished_at = v.finished \
                 FROM v WHERE webhook_deliveries.id = v.id",
            );
            update.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn count_deliveries(&self, status: DeliveryStatus) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = ?1")
            .bind(status.as_str())
            .fetch_one(&self.reader)
            .await?;
        Ok(count as u64)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Millis>> {
        let due: Option<i64> =
            sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'")
                .fetch_one(&self.reader)
                .await?;
        Ok(due)
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let mut query =
            QueryBuilder::<Sqlite>::new(format!("SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE 1 = 1"));
        if let Some(generation) = filter.generation {
            query.push(" AND generation_id = ").push_bind(generation.to_string());
        }
        if let Some(user) = filter.user {
            query.push(" AND user_id = ").push_bind(user.to_string());
        }
        if let Some(status) = filter.status {
            query.push(" AND status = ").push_bind(status.as_str());
        }
        query.push(" ORDER BY created_at DESC, id DESC LIMIT ").push_bind(i64::from(filter.limit));
        query.build().fetch_all(&self.reader).await?.iter().map(delivery_from_row).collect()
    }

    async fn get_delivery(
        &self,
        id: DeliveryId,
        user: Option<UserId>,
    ) -> StoreResult<Option<(Delivery, Vec<Attempt>)>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)"
        ))
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .fetch_optional(&self.reader)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_from_row(&row)?;
        let attempts =
            sqlx::query("SELECT * FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY attempt, started_at")
                .bind(id.to_string())
                .fetch_all(&self.reader)
                .await?
                .iter()
                .map(attempt_from_row)
                .collect::<StoreResult<_>>()?;
        Ok(Some((delivery, attempts)))
    }

    async fn delivery_payload(&self, id: DeliveryId) -> StoreResult<Option<Bytes>> {
        let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM webhook_payloads WHERE delivery_id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.reader)
            .await?;
        Ok(body.map(Bytes::from))
    }

    async fn retry_delivery(&self, id: DeliveryId, user: Option<UserId>, now: Millis) -> StoreResult<Redelivery> {
        let result = sqlx::query(
            // A delivery already due (or claimed: on SQLite a claim writes nothing, and a claimed
            // delivery is due) or leased (in flight) is left alone.
            "UPDATE webhook_deliveries SET schedule_index = 0, updated_at = ?3, finished_at = NULL, \
             next_attempt_at = ?3, redelivered_at = ?3, status = 'pending' WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2) \
             AND NOT (status = 'pending' AND (lease_owner IS NOT NULL OR next_attempt_at <= ?3)) \
             AND (redelivered_at IS NULL OR redelivered_at <= ?3 - ?4)",
        )
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .bind(now)
        .bind(REDELIVERY_INTERVAL_MS)
        .execute(&self.writer)
        .await?;
        if result.rows_affected() == 1 {
            return Ok(Redelivery::Queued);
        }
        let row = sqlx::query(
            "SELECT status, lease_owner IS NOT NULL AS leased, next_attempt_at, redelivered_at FROM webhook_deliveries \
             WHERE id = ?1 AND (?2 IS NULL OR user_id = ?2)",
        )
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .fetch_optional(&self.writer)
        .await?;
        row.as_ref().map_or(Ok(Redelivery::Missing), |row| redelivery_refused(row, now))
    }

    async fn retry_failed_deliveries(&self, since: Millis, now: Millis) -> StoreResult<u64> {
        let result = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', schedule_index = 0, next_attempt_at = ?2, \
             updated_at = ?2, finished_at = NULL, lease_owner = NULL \
             WHERE status = 'failed' AND finished_at >= ?1",
        )
        .bind(since)
        .bind(now)
        .execute(&self.writer)
        .await?;
        Ok(result.rows_affected())
    }
}
