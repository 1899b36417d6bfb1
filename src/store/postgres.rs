//! PostgreSQL, for several `easel serve` nodes on one database. What differs from SQLite: the
//! pool, row locks, delivery claims with leases, and `LISTEN`/`NOTIFY`.
//!
//! Jobs and deliveries are claimed with `FOR UPDATE SKIP LOCKED` and leases, so each is worked on
//! by one node at a time and a dead node's work is taken over when its leases expire. Inserting
//! work another node may do sends `NOTIFY` (`easel_render`, `easel_deliveries`); every node
//! `LISTEN`s and wakes its workers at once instead of waiting for its poll.

use std::str::FromStr;
use std::time::Duration;

use sqlx::postgres::{PgConnectOptions, PgConnection, PgListener, PgPool, PgPoolOptions};
use tokio_util::sync::CancellationToken;

use super::rows::{HELD, JOB_COLUMNS, job_from_row};
use super::*;
use crate::config::DatabaseConfig;

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "schema", include_str!("../../migrations/postgres/0001_schema.sql")),
    (2, "attempts and redeliveries", include_str!("../../migrations/postgres/0002_attempts_and_redeliveries.sql")),
    (3, "backends", include_str!("../../migrations/postgres/0003_backends.sql")),
    (4, "transforms", include_str!("../../migrations/postgres/0004_transforms.sql")),
    (5, "init images", include_str!("../../migrations/postgres/0005_init_images.sql")),
    (6, "webhook disable", include_str!("../../migrations/postgres/0006_webhook_disable.sql")),
    (7, "inspector", include_str!("../../migrations/postgres/0007_inspector.sql")),
    (8, "key management", include_str!("../../migrations/postgres/0008_key_management.sql")),
    (9, "variation backends", include_str!("../../migrations/postgres/0009_variation_backends.sql")),
    (10, "pending jobs counter", include_str!("../../migrations/postgres/0010_pending_jobs_counter.sql")),
    (11, "drop unused pending index", include_str!("../../migrations/postgres/0011_drop_unused_pending_index.sql")),
    (12, "disabled webhooks index", include_str!("../../migrations/postgres/0012_disabled_webhooks_index.sql")),
];

pub(super) struct PgDb {
    pub(super) pool: PgPool,
}

/// How long a pooled connection may sit idle before it is pinged on its way out of the pool.
const IDLE_BEFORE_PING: std::time::Duration = std::time::Duration::from_secs(10);

impl PgDb {
    pub(super) async fn open(url: &str, settings: &DatabaseConfig) -> StoreResult<PgDb> {
        let options = PgConnectOptions::from_str(url)?.application_name("easel");
        // A connection is pinged only after it sat idle for a while (sqlx pings on every acquire
        // by default: a round trip to the server before each statement or transaction); one the
        // server dropped fails the ping and the pool opens another.
        let pool = PgPoolOptions::new()
            .test_before_acquire(false)
            .before_acquire(|conn, meta| {
                Box::pin(async move {
                    if meta.idle_for >= IDLE_BEFORE_PING {
                        sqlx::Connection::ping(conn).await?;
                    }
                    Ok(true)
                })
            })
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.connect_timeout)
            .connect_with(options)
            .await?;
        super::embedded_migrator(MIGRATIONS).await?.run(&pool).await?;
        Ok(PgDb { pool })
    }

    /// Tells every node (this one included) that there is new work on `channel`, at commit.
    pub(super) async fn notify(&self, tx: &mut PgConnection, channel: &str) -> StoreResult<()> {
        send_notification(tx, channel, "").await
    }

    /// Tells every node (this one included) that finished generation `id` changed, at commit, so
    /// their caches forget it.
    pub(super) async fn changed_generation(&self, tx: &mut PgConnection, id: GenerationId) -> StoreResult<()> {
        send_notification(tx, GENERATION_CHANNEL, &id.to_string()).await
    }

    /// Whether `lock_user` and `row_lock` lock anything: yes, rows, until the commit.
    pub(super) fn locks_rows(&self) -> bool {
        true
    }

    /// Locks the user's row until the commit: job inserts of one user are serialized, so the
    /// concurrency-slot check and the insert cannot interleave with another request's.
    pub(super) async fn lock_user(&self, tx: &mut PgConnection, user: UserId) -> StoreResult<()> {
        sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE").bind(user.to_string()).execute(tx).await?;
        Ok(())
    }

    /// Serializes claims for one inference backend until the commit (all nodes), so counting the
    /// jobs running on it and claiming more cannot interleave.
    pub(super) async fn lock_backend(&self, tx: &mut PgConnection, backend: &str) -> StoreResult<()> {
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('easel.backend.' || $1))").bind(backend).execute(tx).await?;
        Ok(())
    }

    /// A row-lock clause, as written.
    pub(super) fn row_lock(&self, clause: &'static str) -> &'static str {
        clause
    }

    /// Starts relaying other nodes' announcements to `wakeups`, and their changes to finished
    /// generations to `generations`, until `stop`.
    pub(super) fn watch(&self, wakeups: Wakeups, generations: Arc<GenerationCache>, stop: CancellationToken) {
        tokio::spawn(relay_notifications(self.pool.clone(), wakeups, generations, stop));
    }

    /// Leases the deliveries `ids` that are still due and not being claimed by another node (moving
    /// `next_attempt_at` to the lease's expiry), and returns them with their payloads, oldest due
    /// first: one statement.
    pub(super) async fn claim_ids(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        ids: &[String],
    ) -> StoreResult<Vec<DeliveryJob>> {
        if ids.is_empty() {
            return Ok(Vec::new());
        }
        let picked = format!(
            "SELECT id, next_attempt_at FROM webhook_deliveries WHERE id = ANY($3) AND status = 'pending' \
             AND next_attempt_at <= $4 AND NOT {HELD} FOR UPDATE SKIP LOCKED"
        );
        let rows = sqlx::query(&lease_picked_sql(&picked))
            .bind(owner)
            .bind(lease_until)
            .bind(ids)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }

    /// Leases up to `want` due deliveries of each endpoint in `wanted`, oldest due first, skipping
    /// rows other nodes are claiming, and returns them with their payloads: one statement for
    /// every endpoint (a round trip and a commit, not one per endpoint).
    pub(super) async fn claim_endpoint_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        wanted: &[EndpointClaim],
    ) -> StoreResult<Vec<DeliveryJob>> {
        let wanted: Vec<&EndpointClaim> = wanted.iter().filter(|claim| claim.want > 0).collect();
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let endpoints: Vec<&str> = wanted.iter().map(|claim| claim.endpoint.as_str()).collect();
        let wants: Vec<i64> = wanted.iter().map(|claim| i64::from(claim.want)).collect();
        let picked = format!(
            "SELECT c.id, c.next_attempt_at FROM UNNEST($3::text[], $4::bigint[]) AS w (endpoint, want) \
             CROSS JOIN LATERAL (SELECT id, next_attempt_at FROM webhook_deliveries WHERE status = 'pending' \
             AND endpoint = w.endpoint AND next_attempt_at <= $5 AND NOT {HELD} ORDER BY next_attempt_at \
             LIMIT w.want FOR UPDATE SKIP LOCKED) c"
        );
        let rows = sqlx::query(&lease_picked_sql(&picked))
            .bind(owner)
            .bind(lease_until)
            .bind(&endpoints)
            .bind(&wants)
            .bind(now)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(job_from_row).collect()
    }
}

/// A claim's statement: leases the rows `picked` selects (`id`, `next_attempt_at`, locked) to `$1`
/// until `$2`, and returns them as jobs with their payloads, in the order they were due.
fn lease_picked_sql(picked: &str) -> String {
    format!(
        "WITH picked AS ({picked}), claimed AS (UPDATE webhook_deliveries d SET lease_owner = $1, \
         next_attempt_at = $2 FROM picked WHERE d.id = picked.id RETURNING d.*, picked.next_attempt_at AS due_at) \
         SELECT {JOB_COLUMNS} FROM claimed d JOIN webhook_payloads p ON p.delivery_id = d.id \
         ORDER BY d.due_at, d.created_at, d.id"
    )
}

/// `NOTIFY` on `channel` with `payload`, delivered when `tx` commits.
async fn send_notification(tx: &mut PgConnection, channel: &str, payload: &str) -> StoreResult<()> {
    sqlx::query("SELECT pg_notify($1, $2)").bind(channel).bind(payload).execute(tx).await?;
    Ok(())
}

/// Relays NOTIFY messages to the workers' wake-ups and the cache of finished generations,
/// reconnecting after a lost connection. The cache answers only while this node listens.
async fn relay_notifications(
    pool: PgPool,
    wakeups: Wakeups,
    generations: Arc<GenerationCache>,
    stop: CancellationToken,
) {
    loop {
        let listening = async {
            let mut listener = PgListener::connect_with(&pool).await?;
            listener.listen_all([RENDER_CHANNEL, DELIVERY_CHANNEL, GENERATION_CHANNEL]).await?;
            // Work announced while this node was not listening is found by the workers' polls;
            // changes it missed, by a cache that starts empty.
            generations.set_live(true);
            // `try_recv`, not `recv`: `recv` reconnects on its own, and what was notified
            // meanwhile would be missed unseen.
            while let Some(notification) = listener.try_recv().await? {
                let wakeup = match notification.channel() {
                    GENERATION_CHANNEL => {
                        match notification.payload().parse() {
                            Ok(id) => generations.forget(id),
                            // Not an id (no Easel sends that): forget everything, staying live.
                            Err(_) => generations.set_live(true),
                        }
                        continue;
                    }
                    RENDER_CHANNEL => &wakeups.render,
                    _ => &wakeups.deliveries,
                };
                if let Some(wakeup) = wakeup {
                    wakeup.notify_one();
                }
            }
            Err::<(), _>(sqlx::Error::Protocol("the listening connection was lost".into()))
        };
        let result = tokio::select! {
            _ = stop.cancelled() => None,
            result = listening => Some(result),
        };
        generations.set_live(false);
        let Some(Err(e)) = result else { return };
        tracing::warn!(error.message = %e, "lost the database notification channel; reconnecting (work is still found by polling)");
        tokio::select! {
            _ = stop.cancelled() => return,
            _ = tokio::time::sleep(Duration::from_secs(1)) => {}
        }
    }
}
