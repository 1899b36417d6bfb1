//! The embedded SQLite store (the default): one database file in WAL mode.
//!
//! Writes go through a pool of exactly one connection, so writers queue in-process instead of
//! sleeping in SQLite's busy handler; reads use their own pool and run beside the writer (WAL).
//! Write transactions start with `BEGIN IMMEDIATE`, so another process (the CLI) holding the write
//! lock is waited for up front rather than failing half-way. `synchronous = NORMAL`: a commit
//! survives a crash of the process (kill -9); the last commits before a power cut may be lost.

use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use async_trait::async_trait;
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow, SqliteSynchronous,
};
use sqlx::{QueryBuilder, Row, Sqlite};

use super::*;
use crate::clock::Millis;

pub struct SqliteStore {
    writer: SqlitePool,
    reader: SqlitePool,
}

const MIGRATIONS: &[(i64, &str, &str)] =
    &[(1, "foundation", include_str!("../../migrations/sqlite/0001_foundation.sql"))];

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
            .pragma("temp_store", "memory");
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
            .connect_with(options.read_only(true))
            .await?;
        Ok(SqliteStore { writer, reader })
    }
}

fn parse<T: FromStr>(row: &SqliteRow, column: &str) -> StoreResult<T> {
    let text: String = row.try_get(column)?;
    text.parse().map_err(|_| StoreError::Corrupt(format!("column {column} holds {text:?}")))
}

fn user_from_row(row: &SqliteRow) -> StoreResult<User> {
    Ok(User {
        id: parse(row, "id")?,
        username: row.try_get("username")?,
        api_concurrency_slots: row.try_get::<i64, _>("api_concurrency_slots")? as u32,
        created_at: row.try_get("created_at")?,
    })
}

const API_KEY_COLUMNS: &str = "k.id, k.user_id, k.name, k.created_at, k.last_used_at, k.webhook_url, \
     k.webhook_api_key_sealed, k.signing_secret_sealed, k.deleted_at";

fn api_key_from_row(row: &SqliteRow) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        name: row.try_get("name")?,
        created_at: row.try_get("created_at")?,
        last_used_at: row.try_get("last_used_at")?,
        webhook_url: row.try_get("webhook_url")?,
        webhook_api_key_sealed: row.try_get("webhook_api_key_sealed")?,
        signing_secret_sealed: row.try_get("signing_secret_sealed")?,
        deleted_at: row.try_get("deleted_at")?,
    })
}

const GENERATION_COLUMNS: &str = "id, user_id, api_key_id, status, params, failure_reason, created_at, updated_at";

fn generation_from_row(row: &SqliteRow) -> StoreResult<Generation> {
    let params: String = row.try_get("params")?;
    Ok(Generation {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        status: JobStatus::parse(&row.try_get::<String, _>("status")?)?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(format!("generation params: {e}")))?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
        images: Vec::new(),
    })
}

const IMAGE_COLUMNS: &str = "id, generation_id, user_id, idx, storage_key, width, height, created_at";

fn image_from_row(row: &SqliteRow) -> StoreResult<Image> {
    Ok(Image {
        id: parse(row, "id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        index: row.try_get::<i64, _>("idx")? as u32,
        storage_key: row.try_get("storage_key")?,
        width: row.try_get::<i64, _>("width")? as u32,
        height: row.try_get::<i64, _>("height")? as u32,
        created_at: row.try_get("created_at")?,
        variations: Vec::new(),
    })
}

const VARIATION_COLUMNS: &str = "id, image_id, generation_id, user_id, api_key_id, transform_type, status, \
     storage_key, failure_reason, created_at, updated_at";

fn variation_from_row(row: &SqliteRow) -> StoreResult<Variation> {
    Ok(Variation {
        id: parse(row, "id")?,
        image_id: parse(row, "image_id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        transform_type: row.try_get("transform_type")?,
        status: JobStatus::parse(&row.try_get::<String, _>("status")?)?,
        storage_key: row.try_get("storage_key")?,
        failure_reason: row.try_get("failure_reason")?,
        created_at: row.try_get("created_at")?,
        updated_at: row.try_get("updated_at")?,
    })
}

impl SqliteStore {
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
             created_at, updated_at) SELECT ?1, ?3, ?4, ?2, ?5, ?6, 'PENDING', ?7, ?7 WHERE {} < ?8",
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
        Ok(if result.rows_affected() == 1 { Admission::Accepted } else { Admission::SlotsFull { slots } })
    }

    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>> {
        let row = sqlx::query(&format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE id = ?1 AND user_id = ?2"))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&self.reader)
            .await?;
        row.as_ref().map(variation_from_row).transpose()
    }

    async fn release_render_leases(&self) -> StoreResult<u64> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        let mut released = 0;
        for table in ["generations", "variations"] {
            released += sqlx::query(&format!(
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = 0 WHERE status = 'PENDING' AND lease_owner IS NOT NULL"
            ))
            .execute(&mut *tx)
            .await?
            .rows_affected();
        }
        tx.commit().await?;
        Ok(released)
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
            "UPDATE generations SET lease_owner = ?1, lease_expires_at = ?2 WHERE id IN \
             (SELECT id FROM generations WHERE status = 'PENDING' AND lease_expires_at <= ?3 ORDER BY created_at LIMIT ?4) \
             RETURNING {GENERATION_COLUMNS}"
        ))
        .bind(owner)
        .bind(lease_until)
        .bind(now)
        .bind(i64::from(limit))
        .fetch_all(&mut *tx)
        .await?;
        let mut jobs: Vec<RenderJob> =
            rows.iter().map(|row| generation_from_row(row).map(RenderJob::Generation)).collect::<StoreResult<_>>()?;
        let remaining = limit.saturating_sub(jobs.len() as u32);
        if remaining > 0 {
            let rows = sqlx::query(&format!(
                "UPDATE variations SET lease_owner = ?1, lease_expires_at = ?2 WHERE id IN \
                 (SELECT id FROM variations WHERE status = 'PENDING' AND lease_expires_at <= ?3 ORDER BY created_at LIMIT ?4) \
                 RETURNING {VARIATION_COLUMNS}"
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
                jobs.push(RenderJob::Upscale { variation, source: image_from_row(&source)? });
            }
        }
        tx.commit().await?;
        Ok(jobs)
    }

    async fn finish_generation(
        &self,
        id: GenerationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<Vec<NewImage>>,
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
}
