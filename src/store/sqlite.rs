//! SQLite, the embedded default: one database file in WAL mode, one node. What differs from
//! PostgreSQL: the pools, the checkpointer, delivery claims (which write nothing) and the batched
//! attempt writes.
//!
//! Writes go through a pool of exactly one connection, so writers queue in-process instead of
//! sleeping in SQLite's busy handler; reads use their own pool and run beside the writer (WAL).
//! Write transactions start with `BEGIN IMMEDIATE`, so another process (the CLI) holding the write
//! lock is waited for up front rather than failing half-way; with one writer, a transaction's
//! reads and writes can never interleave with another's (what PostgreSQL gets from row locks).
//! `synchronous = NORMAL`: a commit survives a crash of the process (kill -9); the last commits
//! before a power cut may be lost.

use std::collections::HashSet;
use std::path::Path;
use std::time::Duration;

use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteRow,
    SqliteSynchronous,
};
use sqlx::{QueryBuilder, Sqlite};

use super::rows::*;
use super::*;

pub(super) struct SqliteDb {
    pub(super) writer: SqlitePool,
    pub(super) reader: SqlitePool,
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

impl SqliteDb {
    pub(super) async fn open(path: &Path) -> StoreResult<SqliteDb> {
        if let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) {
            std::fs::create_dir_all(parent)
                .map_err(|source| StoreError::Directory { path: parent.to_path_buf(), source })?;
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
        Ok(SqliteDb { writer, reader, _checkpointer: stop.drop_guard() })
    }

    /// Nothing to announce: there are no other nodes.
    pub(super) async fn notify(&self, _tx: &mut SqliteConnection, _channel: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing to lock: the transaction holds the database's one write lock (`BEGIN IMMEDIATE`).
    pub(super) async fn lock_user(&self, _tx: &mut SqliteConnection, _user: UserId) -> StoreResult<()> {
        Ok(())
    }

    /// Row-lock clauses (`FOR UPDATE`, `FOR KEY SHARE`, `SKIP LOCKED`) do not exist in SQLite;
    /// the write lock covers them.
    pub(super) fn row_lock(&self, _clause: &'static str) -> &'static str {
        ""
    }

    /// Claimed deliveries with their payloads, read on a reader (payloads never change).
    async fn load_jobs(&self, ids: &[DeliveryId]) -> StoreResult<Vec<DeliveryJob>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(super::ROWS_PER_STATEMENT) {
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

    /// SQLite is single-node (`serve` holds the database's lock file), so a claim writes nothing:
    /// the engine's set of deliveries in hand (`held`) is the lease, and start-up releases what a
    /// crashed process held. The due ids are read on the writer connection (so no attempt recorded
    /// a moment ago is read as still pending); the rest, payloads included, on a reader.
    pub(super) async fn claim_deliveries(
        &self,
        now: Millis,
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

    pub(super) async fn claim_endpoint_deliveries(
        &self,
        now: Millis,
        wanted: &[EndpointClaim],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut ids = Vec::new();
        for claim in wanted {
            let rows = sqlx::query(
                "SELECT id FROM webhook_deliveries WHERE status = 'pending' AND endpoint = $1 AND next_attempt_at <= $2 \
                 ORDER BY next_attempt_at LIMIT $3",
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

    /// Attempts as multi-row `INSERT`s and a `VALUES` common table expression driving one
    /// `UPDATE`, in chunks well under SQLite's bound-parameter limit.
    pub(super) async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<()> {
        let mut tx = self.writer.begin_with("BEGIN IMMEDIATE").await?;
        for chunk in records.chunks(super::ROWS_PER_STATEMENT) {
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
            insert.push(" ON CONFLICT DO NOTHING");
            insert.build().execute(&mut *tx).await?;

            let mut update = QueryBuilder::<Sqlite>::new(
                "WITH v (id, owner, attempt, status, next_at, schedule_index, code, error, at, finished) AS (",
            );
            update.push_values(chunk, |mut row, record| {
                let update = DeliveryUpdate::of(record);
                row.push_bind(record.attempt.delivery_id.to_string())
                    .push_bind(record.lease_owner.clone())
                    .push_bind(i64::from(record.attempt.attempt))
                    .push_bind(update.status)
                    .push_bind(update.next_attempt_at)
                    .push_bind(update.schedule_index)
                    .push_bind(record.attempt.status_code.map(i64::from))
                    .push_bind(update.error)
                    .push_bind(update.at)
                    .push_bind(update.finished_at);
            });
            update.push(format!(") UPDATE webhook_deliveries {RECORD_ATTEMPT_SET} FROM v {RECORD_ATTEMPT_WHERE}"));
            update.build().execute(&mut *tx).await?;
        }
        tx.commit().await?;
        Ok(())
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
