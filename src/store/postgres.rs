//! The PostgreSQL store, for several `easel serve` nodes on one database.
//!
//! Jobs and deliveries are claimed with `FOR UPDATE SKIP LOCKED` and leases, so each is worked on
//! by one node at a time and a dead node's work is taken over when its leases expire. Inserting
//! work another node may do sends `NOTIFY` (`easel_render`, `easel_deliveries`); every node
//! `LISTEN`s and wakes its workers at once instead of waiting for its poll.

use std::collections::HashSet;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use sqlx::{Postgres, Transaction};
use tokio_util::sync::CancellationToken;

use super::rows::*;
use super::*;
use crate::clock::Millis;
use crate::config::DatabaseConfig;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "schema", include_str!("../../migrations/postgres/0001_schema.sql")),
    (2, "attempts and redeliveries", include_str!("../../migrations/postgres/0002_attempts_and_redeliveries.sql")),
];

const RENDER_CHANNEL: &str = "easel_render";
const DELIVERY_CHANNEL: &str = "easel_deliveries";

pub struct PgStore {
    pool: PgPool,
}

impl PgStore {
    pub async fn open(url: &str, settings: &DatabaseConfig) -> StoreResult<PgStore> {
        let options = PgConnectOptions::from_str(url)?.application_name("easel");
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options)
            .await?;
        super::embedded_migrator(MIGRATIONS).await?.run(&pool).await?;
        Ok(PgStore { pool })
    }

    async fn attach_images(&self, generations: &mut [Generation]) -> StoreResult<()> {
        if generations.is_empty() {
            return Ok(());
        }
        let ids: Vec<String> = generations.iter().map(|g| g.id.to_string()).collect();
        let rows = sqlx::query(&format!(
            "SELECT {IMAGE_COLUMNS} FROM images WHERE generation_id = ANY($1) ORDER BY generation_id, idx"
        ))
        .bind(&ids)
        .fetch_all(&self.pool)
        .await?;
        let mut images: Vec<Image> = rows.iter().map(image_from_row).collect::<StoreResult<_>>()?;
        if !images.is_empty() {
            let image_ids: Vec<String> = images.iter().map(|i| i.id.to_string()).collect();
            let rows = sqlx::query(&format!(
                "SELECT {VARIATION_COLUMNS} FROM variations WHERE image_id = ANY($1) ORDER BY created_at, id"
            ))
            .bind(&image_ids)
            .fetch_all(&self.pool)
            .await?;
            for row in rows {
                let variation = variation_from_row(&row)?;
                if let Some(image) = images.iter_mut().find(|i| i.id == variation.image_id) {
                    image.variations.push(variation);
                }
            }
        }
        for image in images {
            if let Some(generation) = generations.iter_mut().find(|g| g.id == image.generation_id) {
                generation.images.push(image);
            }
        }
        Ok(())
    }

    /// Locks the user's row: job inserts of one user are serialized, so the concurrency-slot
    /// check and the insert cannot interleave with another request's.
    async fn free_slot(tx: &mut Transaction<'_, Postgres>, user: UserId, slots: u32) -> StoreResult<bool> {
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user.to_string()).execute(&mut **tx).await?;
        let pending: i64 = sqlx::query_scalar(
            "SELECT (SELECT COUNT(*) FROM generations WHERE user_id = $1 AND status = 'PENDING') \
             + (SELECT COUNT(*) FROM variations WHERE user_id = $1 AND status = 'PENDING')",
        )
        .bind(user.to_string())
        .fetch_one(&mut **tx)
        .await?;
        Ok(pending < i64::from(slots))
    }

    async fn notify(tx: &mut Transaction<'_, Postgres>, channel: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_notify($1, '')").bind(channel).execute(&mut **tx).await?;
        Ok(())
    }

    async fn load_jobs(&self, ids: &[String]) -> StoreResult<Vec<DeliveryJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let rows = sqlx::query(&format!(
            "SELECT {JOB_COLUMNS} FROM webhook_deliveries d JOIN webhook_payloads p ON p.delivery_id = d.id \
             WHERE d.id = ANY($1) ORDER BY d.next_attempt_at"
        ))
        .bind(ids)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(job_from_row).collect()
    }
}

/// Relays NOTIFY messages to the workers' wake-ups, reconnecting after a lost connection.
async fn relay_notifications(pool: PgPool, wakeups: Wakeups, stop: CancellationToken) {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([RENDER_CHANNEL, DELIVERY_CHANNEL]).await?;
            // Work announced while this node was not listening is found by the workers' polls.
            loop {
                let notification = listener.recv().await?;
                let wakeup = match notification.channel() {
                    RENDER_CHANNEL => &wakeups.render,
                    _ => &wakeups.deliveries,
                };
                if let Some(wakeup) = wakeup {
                    wakeup.notify_one();
                }
            }
            #[allow(unreachable_code)]
            Ok::<(), sqlx::Error>(())
        };
        tokio::select! {
            _ = stop.cancelled() => return,
            result = listening => if let Err(e) = result {
                tracing::warn!(error.message = %e, "lost the database notification channel; reconnecting (work is still found by polling)");
            },
        }
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}

#[async_trait]
impl Store for PgStore {
    fn backend(&self) -> &'static str {
        "postgres"
    }

    fn watch(&self, wakeups: Wakeups, stop: CancellationToken) {
        tokio::spawn(relay_notifications(self.pool.clone(), wakeups, stop));
    }

    async fn release_leases(&self, owner: Option<&str>, now: Millis) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let mut released = 0;
        for table in ["generations", "variations"] {
            released += sqlx::query(&format!(
                // A job given back by a node that stops (not one that crashed) did not use up an attempt.
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = 0, \
                 attempts = CASE WHEN $1::TEXT IS NULL THEN attempts ELSE GREATEST(attempts - 1, 0) END \
                 WHERE status = 'PENDING' AND lease_owner IS NOT NULL AND ($1::TEXT IS NULL OR lease_owner = $1)"
            ))
            .bind(owner)
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        released += sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = $2 \
             WHERE status = 'pending' AND lease_owner IS NOT NULL AND ($1::TEXT IS NULL OR lease_owner = $1)",
        )
        .bind(owner)
        .bind(now)
        .execute(&mut *tx)
        .await?
        .rows_affected();
        if released > 0 {
            Self::notify(&mut tx, RENDER_CHANNEL).await?;
            Self::notify(&mut tx, DELIVERY_CHANNEL).await?;
        }
        tx.commit().await?;
        Ok(released)
    }

    async fn ping(&self) -> StoreResult<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await?;
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO users (id, username, api_concurrency_slots, created_at) VALUES ($1, $2, $3, $4) \
             ON CONFLICT (username) DO NOTHING",
        )
        .bind(user.id.to_string())
        .bind(&user.username)
        .bind(i64::from(user.api_concurrency_slots))
        .bind(user.created_at)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("the username {:?} is taken", user.username)));
        }
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        let row =
            sqlx::query("SELECT * FROM users WHERE id = $1").bind(id.to_string()).fetch_optional(&self.pool).await?;
        row.as_ref().map(user_from_row).transpose()
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, username").fetch_all(&self.pool).await?;
        rows.iter().map(user_from_row).collect()
    }

    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> StoreResult<()> {
        let result = sqlx::query(
            "INSERT INTO api_keys (id, user_id, name, key_hash, webhook_url, webhook_api_key_sealed, \
             signing_secret_sealed, created_at) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
             WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
        )
        .bind(key.id.to_string())
        .bind(key.user_id.to_string())
        .bind(&key.name)
        .bind(key_hash)
        .bind(&key.webhook_url)
        .bind(&key.webhook_api_key_sealed)
        .bind(&key.signing_secret_sealed)
        .bind(key.created_at)
        .execute(&self.pool)
        .await?;
        if result.rows_affected() == 0 {
            return Err(StoreError::Conflict(format!("there is no user with id {}", key.user_id)));
        }
        Ok(())
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<(User, ApiKey)>> {
        let row = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS}, u.username, u.api_concurrency_slots, u.created_at AS user_created_at \
             FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1 AND k.deleted_at IS NULL"
        ))
        .bind(key_hash)
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let key = api_key_from_row(&row)?;
        let user = User {
            id: key.user_id,
            username: row.text("username")?,
            api_concurrency_slots: row.int("api_concurrency_slots")? as u32,
            created_at: row.int("user_created_at")?,
        };
        Ok(Some((user, key)))
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<()> {
        sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.id = $1"))
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(api_key_from_row).transpose()
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> StoreResult<Vec<ApiKey>> {
        let rows = sqlx::query(&format!(
            "SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.deleted_at IS NULL \
             AND ($1::TEXT IS NULL OR k.user_id = $1) ORDER BY k.created_at, k.id"
        ))
        .bind(user.map(|u| u.to_string()))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(api_key_from_row).collect()
    }

    async fn delete_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<bool> {
        let result = sqlx::query("UPDATE api_keys SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
            .bind(id.to_string())
            .bind(at)
            .execute(&self.pool)
            .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn create_generation(&self, generation: &Generation, slots: u32) -> StoreResult<Admission> {
        let mut tx = self.pool.begin().await?;
        if !Self::free_slot(&mut tx, generation.user_id, slots).await? {
            return Ok(Admission::SlotsFull { slots });
        }
        sqlx::query(
            "INSERT INTO generations (id, user_id, api_key_id, status, params, created_at, updated_at) \
             VALUES ($1, $2, $3, 'PENDING', $4, $5, $5)",
        )
        .bind(generation.id.to_string())
        .bind(generation.user_id.to_string())
        .bind(generation.api_key_id.to_string())
        .bind(serde_json::to_string(&generation.params).expect("params serialize"))
        .bind(generation.created_at)
        .execute(&mut *tx)
        .await?;
        Self::notify(&mut tx, RENDER_CHANNEL).await?;
        tx.commit().await?;
        Ok(Admission::Accepted)
    }

    async fn get_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Generation>> {
        let row = sqlx::query(&format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE id = $1 AND user_id = $2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        let Some(row) = row else { return Ok(None) };
        let mut generations = vec![generation_from_row(&row)?];
        self.attach_images(&mut generations).await?;
        Ok(generations.pop())
    }

    async fn list_generations(&self, user: UserId, offset: u64, limit: u64) -> StoreResult<Vec<Generation>> {
        let rows = sqlx::query(&format!(
            "SELECT {GENERATION_COLUMNS} FROM generations WHERE user_id = $1 \
             ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
        ))
        .bind(user.to_string())
        .bind(limit.min(i64::MAX as u64) as i64)
        .bind(offset.min(i64::MAX as u64) as i64)
        .fetch_all(&self.pool)
        .await?;
        let mut generations: Vec<Generation> = rows.iter().map(generation_from_row).collect::<StoreResult<_>>()?;
        self.attach_images(&mut generations).await?;
        Ok(generations)
    }

    async fn delete_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>> {
        let mut tx = self.pool.begin().await?;
        let exists = sqlx::query("SELECT 1 FROM generations WHERE id = $1 AND user_id = $2 FOR UPDATE")
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if exists.is_none() {
            return Ok(None);
        }
        let keys: Vec<String> = sqlx::query_scalar(
            "SELECT storage_key FROM images WHERE generation_id = $1 \
             UNION ALL SELECT storage_key FROM variations WHERE generation_id = $1 AND storage_key IS NOT NULL",
        )
        .bind(id.to_string())
        .fetch_all(&mut *tx)
        .await?;
        sqlx::query("DELETE FROM generations WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
        tx.commit().await?;
        Ok(Some(keys))
    }

    async fn get_image(&self, user: UserId, id: ImageId) -> StoreResult<Option<Image>> {
        let row = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1 AND user_id = $2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(image_from_row).transpose()
    }

    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission> {
        let mut tx = self.pool.begin().await?;
        if !Self::free_slot(&mut tx, variation.user_id, slots).await? {
            return Ok(Admission::SlotsFull { slots });
        }
        // Holds the image until the commit: a delete of its generation waits for this insert (and
        // then removes the variation with the image), or has already happened and is seen here.
        let image = sqlx::query("SELECT 1 FROM images WHERE id = $1 AND user_id = $2 FOR KEY SHARE")
            .bind(variation.image_id.to_string())
            .bind(variation.user_id.to_string())
            .fetch_optional(&mut *tx)
            .await?;
        if image.is_none() {
            return Ok(Admission::SourceMissing);
        }
        sqlx::query(
            "INSERT INTO variations (id, image_id, generation_id, user_id, api_key_id, transform_type, status, \
             created_at, updated_at) VALUES ($1, $2, $3, $4, $5, $6, 'PENDING', $7, $7)",
        )
        .bind(variation.id.to_string())
        .bind(variation.image_id.to_string())
        .bind(variation.generation_id.to_string())
        .bind(variation.user_id.to_string())
        .bind(variation.api_key_id.to_string())
        .bind(&variation.transform_type)
        .bind(variation.created_at)
        .execute(&mut *tx)
        .await?;
        Self::notify(&mut tx, RENDER_CHANNEL).await?;
        tx.commit().await?;
        Ok(Admission::Accepted)
    }

    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>> {
        let row = sqlx::query(&format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE id = $1 AND user_id = $2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let rows = sqlx::query(&format!(
            "UPDATE generations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1 WHERE id IN \
             (SELECT id FROM generations WHERE status = 'PENDING' AND lease_expires_at <= $3 ORDER BY created_at \
             LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {GENERATION_COLUMNS}, attempts"
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
                "UPDATE variations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1 WHERE id IN \
                 (SELECT id FROM variations WHERE status = 'PENDING' AND lease_expires_at <= $3 ORDER BY created_at \
                 LIMIT $4 FOR UPDATE SKIP LOCKED) RETURNING {VARIATION_COLUMNS}, attempts"
            ))
            .bind(owner)
            .bind(lease_until)
            .bind(now)
            .bind(i64::from(remaining))
            .fetch_all(&mut *tx)
            .await?;
            for row in rows {
                let variation = variation_from_row(&row)?;
                let source = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1"))
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
            "UPDATE {table} SET lease_owner = NULL, lease_expires_at = $3, updated_at = $4 \
             WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'"
        ))
        .bind(id)
        .bind(owner)
        .bind(not_before)
        .bind(at)
        .execute(&self.pool)
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
        let mut tx = self.pool.begin().await?;
        let (status, reason) = match outcome {
            JobOutcome::Complete(_) => ("COMPLETE", None),
            JobOutcome::Failed { reason } => ("FAILED", Some(reason.as_str())),
        };
        let row = sqlx::query(
            "UPDATE generations SET status = $3, failure_reason = $4, updated_at = $5, lease_owner = NULL, \
             lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING' RETURNING user_id",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(status)
        .bind(reason)
        .bind(at)
        .fetch_optional(&mut *tx)
        .await?;
        let Some(row) = row else { return Ok(false) };
        let user_id = row.text("user_id")?;
        if let JobOutcome::Complete(images) = outcome {
            for image in images {
                sqlx::query(
                    "INSERT INTO images (id, generation_id, user_id, idx, storage_key, width, height, created_at) \
                     VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
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
            let (lease_owner, next_attempt_at) = match &delivery.lease {
                Some((owner, until)) => (Some(owner.as_str()), *until),
                None => (None, delivery.created_at),
            };
            sqlx::query(
                "INSERT INTO webhook_deliveries (id, generation_id, user_id, api_key_id, event_type, url, endpoint, \
                 status, next_attempt_at, lease_owner, created_at, updated_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, 'pending', $10, $9, $8, $8)",
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
            sqlx::query("INSERT INTO webhook_payloads (delivery_id, body) VALUES ($1, $2)")
                .bind(delivery.id.to_string())
                .bind(delivery.payload.as_ref())
                .execute(&mut *tx)
                .await?;
            if delivery.lease.is_none() {
                Self::notify(&mut tx, DELIVERY_CHANNEL).await?;
            }
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
            "UPDATE variations SET status = $3, storage_key = $4, failure_reason = $5, updated_at = $6, \
             lease_owner = NULL, lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'",
        )
        .bind(id.to_string())
        .bind(owner)
        .bind(status)
        .bind(key)
        .bind(reason)
        .bind(at)
        .execute(&self.pool)
        .await?;
        Ok(result.rows_affected() == 1)
    }

    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_endpoints: &[String],
        _held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let ids: Vec<String> = sqlx::query_scalar(
            "UPDATE webhook_deliveries SET lease_owner = $1, next_attempt_at = $2 WHERE id IN \
             (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND next_attempt_at <= $3 \
             AND NOT (endpoint = ANY($4)) ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING id",
        )
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(skip_endpoints)
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await?;
        self.load_jobs(&ids).await
    }

    async fn claim_endpoint_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        wanted: &[EndpointClaim],
        _held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut ids = Vec::new();
        for claim in wanted {
            let claimed: Vec<String> = sqlx::query_scalar(
                "UPDATE webhook_deliveries SET lease_owner = $1, next_attempt_at = $2 WHERE id IN \
                 (SELECT id FROM webhook_deliveries WHERE status = 'pending' AND endpoint = $3 \
                 AND next_attempt_at <= $4 ORDER BY next_attempt_at LIMIT $5 FOR UPDATE SKIP LOCKED) RETURNING id",
            )
            .bind(owner)
            .bind(lease_until)
            .bind(&claim.endpoint)
            .bind(now)
            .bind(i64::from(claim.want))
            .fetch_all(&self.pool)
            .await?;
            ids.extend(claimed);
        }
        self.load_jobs(&ids).await
    }

    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        if records.is_empty() {
            return Ok(());
        }
        let mut columns = RecordColumns::default();
        for record in records {
            columns.push(record);
        }
        let mut tx = self.pool.begin().await?;
        sqlx::query(
            "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, error_class, \
             error_detail, response_excerpt) \
             SELECT * FROM UNNEST($1::TEXT[], $2::BIGINT[], $3::BIGINT[], $4::BIGINT[], $5::BIGINT[], $6::TEXT[], \
             $7::TEXT[], $8::TEXT[]) ON CONFLICT DO NOTHING",
        )
        .bind(&columns.ids)
        .bind(&columns.attempts)
        .bind(&columns.started)
        .bind(&columns.durations)
        .bind(&columns.codes)
        .bind(&columns.classes)
        .bind(&columns.details)
        .bind(&columns.excerpts)
        .execute(&mut *tx)
        .await?;
        sqlx::query(
            "UPDATE webhook_deliveries d SET status = v.status, attempt_count = d.attempt_count + 1, \
             schedule_index = COALESCE(v.schedule_index, d.schedule_index), next_attempt_at = v.next_at, \
             lease_owner = NULL, last_status_code = v.code, last_error = v.error, updated_at = v.at, \
             finished_at = v.finished \
             FROM UNNEST($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::BIGINT[], $5::BIGINT[], $6::BIGINT[], $7::TEXT[], \
             $8::BIGINT[], $9::BIGINT[]) AS v (id, owner, status, next_at, schedule_index, code, error, at, finished) \
             WHERE d.id = v.id AND d.lease_owner = v.owner",
        )
        .bind(&columns.ids)
        .bind(&columns.owners)
        .bind(&columns.statuses)
        .bind(&columns.next_at)
        .bind(&columns.schedule_indexes)
        .bind(&columns.codes)
        .bind(&columns.errors)
        .bind(&columns.ended_at)
        .bind(&columns.finished)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    async fn count_deliveries(&self, status: DeliveryStatus) -> StoreResult<u64> {
        let count: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = $1")
            .bind(status.as_str())
            .fetch_one(&self.pool)
            .await?;
        Ok(count as u64)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Millis>> {
        Ok(sqlx::query_scalar("SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending'")
            .fetch_one(&self.pool)
            .await?)
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        let rows = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE ($1::TEXT IS NULL OR generation_id = $1) \
             AND ($2::TEXT IS NULL OR user_id = $2) AND ($3::TEXT IS NULL OR status = $3) \
             ORDER BY created_at DESC, id DESC LIMIT $4"
        ))
        .bind(filter.generation.map(|g| g.to_string()))
        .bind(filter.user.map(|u| u.to_string()))
        .bind(filter.status.map(|s| s.as_str()))
        .bind(i64::from(filter.limit))
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(delivery_from_row).collect()
    }

    async fn get_delivery(
        &self,
        id: DeliveryId,
        user: Option<UserId>,
    ) -> StoreResult<Option<(Delivery, Vec<Attempt>)>> {
        let row = sqlx::query(&format!(
            "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 AND ($2::TEXT IS NULL OR user_id = $2)"
        ))
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .fetch_optional(&self.pool)
        .await?;
        let Some(row) = row else { return Ok(None) };
        let delivery = delivery_from_row(&row)?;
        let attempts =
            sqlx::query("SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt, started_at")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await?
                .iter()
                .map(attempt_from_row)
                .collect::<StoreResult<_>>()?;
        Ok(Some((delivery, attempts)))
    }

    async fn delivery_payload(&self, id: DeliveryId) -> StoreResult<Option<Bytes>> {
        let body: Option<Vec<u8>> = sqlx::query_scalar("SELECT body FROM webhook_payloads WHERE delivery_id = $1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await?;
        Ok(body.map(Bytes::from))
    }

    async fn retry_delivery(&self, id: DeliveryId, user: Option<UserId>, now: Millis) -> StoreResult<Redelivery> {
        let mut tx = self.pool.begin().await?;
        // A delivery already due or leased (in flight on some node) is left alone.
        let result = sqlx::query(
            "UPDATE webhook_deliveries SET schedule_index = 0, updated_at = $3, finished_at = NULL, \
             next_attempt_at = $3, redelivered_at = $3, status = 'pending' WHERE id = $1 AND ($2::TEXT IS NULL OR user_id = $2) \
             AND NOT (status = 'pending' AND (lease_owner IS NOT NULL OR next_attempt_at <= $3)) \
             AND (redelivered_at IS NULL OR redelivered_at <= $3 - $4)",
        )
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .bind(now)
        .bind(REDELIVERY_INTERVAL_MS)
        .execute(&mut *tx)
        .await?;
        if result.rows_affected() == 1 {
            Self::notify(&mut tx, DELIVERY_CHANNEL).await?;
            tx.commit().await?;
            return Ok(Redelivery::Queued);
        }
        let row = sqlx::query(
            "SELECT status, lease_owner IS NOT NULL AS leased, next_attempt_at, redelivered_at FROM webhook_deliveries \
             WHERE id = $1 AND ($2::TEXT IS NULL OR user_id = $2)",
        )
        .bind(id.to_string())
        .bind(user.map(|u| u.to_string()))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        row.as_ref().map_or(Ok(Redelivery::Missing), |row| redelivery_refused(row, now))
    }

    async fn retry_failed_deliveries(&self, since: Millis, now: Millis) -> StoreResult<u64> {
        let mut tx = self.pool.begin().await?;
        let result = sqlx::query(
            "UPDATE webhook_deliveries SET status = 'pending', schedule_index = 0, next_attempt_at = $2, \
             updated_at = $2, finished_at = NULL, lease_owner = NULL WHERE status = 'failed' AND finished_at >= $1",
        )
        .bind(since)
        .bind(now)
        .execute(&mut *tx)
        .await?;
        Self::notify(&mut tx, DELIVERY_CHANNEL).await?;
        tx.commit().await?;
        Ok(result.rows_affected())
    }
}

/// Attempt records as columns, for `UNNEST`.
#[derive(Default)]
struct RecordColumns {
    ids: Vec<String>,
    owners: Vec<String>,
    attempts: Vec<i64>,
    started: Vec<i64>,
    durations: Vec<i64>,
    codes: Vec<Option<i64>>,
    classes: Vec<Option<String>>,
    details: Vec<Option<String>>,
    excerpts: Vec<Option<String>>,
    statuses: Vec<String>,
    next_at: Vec<i64>,
    schedule_indexes: Vec<Option<i64>>,
    errors: Vec<Option<String>>,
    ended_at: Vec<i64>,
    finished: Vec<Option<i64>>,
}

impl RecordColumns {
    fn push(&mut self, record: &AttemptRecord) {
        let a = &record.attempt;
        let update = DeliveryUpdate::of(record);
        self.ids.push(a.delivery_id.to_string());
        self.owners.push(record.lease_owner.clone());
        self.attempts.push(i64::from(a.attempt));
        self.started.push(a.started_at);
        self.durations.push(i64::from(a.duration_ms));
        self.codes.push(a.status_code.map(i64::from));
        self.classes.push(a.error_class.clone());
        self.details.push(a.error_detail.clone());
        self.excerpts.push(a.response_excerpt.clone());
        self.statuses.push(update.status.to_string());
        self.next_at.push(update.next_attempt_at);
        self.schedule_indexes.push(update.schedule_index);
        self.errors.push(update.error);
        self.ended_at.push(update.at);
        self.finished.push(update.finished_at);
    }
}
