//! SQLite, the embedded default: one database file in WAL mode, one node. What differs from
//! PostgreSQL: the pools, the checkpointer and delivery claims (which write nothing, and by
//! endpoint read on from where the last claim stopped).
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
    /// Per endpoint, where the last claim by endpoint stopped reading.
    cursors: std::sync::Mutex<std::collections::HashMap<String, Cursor>>,
}

/// How often the background task copies the WAL into the database file.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(250);

const MIGRATIONS: &[(i64, &str, &str)] = &[
    (1, "foundation", include_str!("../../migrations/sqlite/0001_foundation.sql")),
    (2, "webhook deliveries", include_str!("../../migrations/sqlite/0002_webhook_deliveries.sql")),
    (3, "attempts and redeliveries", include_str!("../../migrations/sqlite/0003_attempts_and_redeliveries.sql")),
    (4, "backends", include_str!("../../migrations/sqlite/0004_backends.sql")),
    (5, "transforms", include_str!("../../migrations/sqlite/0005_transforms.sql")),
    (6, "init images", include_str!("../../migrations/sqlite/0006_init_images.sql")),
    (7, "webhook disable", include_str!("../../migrations/sqlite/0007_webhook_disable.sql")),
    (8, "inspector", include_str!("../../migrations/sqlite/0008_inspector.sql")),
    (9, "key management", include_str!("../../migrations/sqlite/0009_key_management.sql")),
    (10, "variation backends", include_str!("../../migrations/sqlite/0010_variation_backends.sql")),
    (11, "pending jobs counter", include_str!("../../migrations/sqlite/0011_pending_jobs_counter.sql")),
    (12, "drop unused pending index", include_str!("../../migrations/sqlite/0012_drop_unused_pending_index.sql")),
    (13, "disabled webhooks index", include_str!("../../migrations/sqlite/0013_disabled_webhooks_index.sql")),
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
            // A new database gets 2 KiB pages, not SQLite's 4 KiB. A commit writes every page it
            // changed to the WAL, whole, and a generation changes one entry in each of some thirty
            // b-tree pages (its row, its image, its delivery, their indexes): half-size pages
            // halve most of that. Measured on disk at 200 generations/s: 73-77 KiB written per
            // generation against 119-123 KiB; the price is a few per cent on a drain, whose 3 KB
            // payloads now take an overflow page each (BENCHMARKS.md, ninth pass). SQLite fixes
            // the size when a database is created: an existing one keeps its own.
            .page_size(2048)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Normal)
            .busy_timeout(Duration::from_secs(10))
            .foreign_keys(true)
            .pragma("temp_store", "memory")
            // SQLite's default page cache, 2 MiB per connection (the file's pages stay in the OS's
            // cache too); the writer gets more below. 32 MiB for each of the six connections made
            // up half of the server's resident memory under load, for no measurable speed.
            .pragma("cache_size", "-2048")
            // A background task copies the WAL into the database every 250 ms, off the writer's
            // path. The WAL starts over only after a checkpoint that catches up with every commit,
            // which under steady writes only the writer's own does, once the WAL holds this many
            // pages (16 MiB of 2 KiB pages): then the writer waits for the `fsync`s (BENCHMARKS.md,
            // sixth pass).
            .pragma("wal_autocheckpoint", "8192")
            // sqlx hands rows from the connection's thread one message each over a bounded
            // channel; at its default of 50 the thread stops on every query of more rows until
            // the task reading them is scheduled. Results are collected whole anyway.
            .row_buffer_size(1024);
        // No ping before each acquire (sqlx's default): a file does not drop connections, and the
        // ping was a round trip to the connection's thread on every statement.
        let writer = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone().pragma("cache_size", "-8192"))
            .await?;
        super::embedded_migrator(MIGRATIONS).await?.run(&writer).await?;
        let reader = SqlitePoolOptions::new()
            .test_before_acquire(false)
            .max_connections(4)
            .acquire_timeout(Duration::from_secs(60))
            .connect_with(options.clone().read_only(true))
            .await?;
        let stop = tokio_util::sync::CancellationToken::new();
        let checkpoints = SqlitePoolOptions::new().max_connections(1).connect_with(options).await?;
        tokio::spawn(checkpoint_wal(checkpoints, stop.clone()));
        Ok(SqliteDb { writer, reader, _checkpointer: stop.drop_guard(), cursors: Default::default() })
    }

    /// Nothing to announce: there are no other nodes.
    pub(super) async fn notify(&self, _tx: &mut SqliteConnection, _channel: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing to announce: this process makes every write, and forgets what it changed.
    pub(super) async fn changed_generation(&self, _tx: &mut SqliteConnection, _id: GenerationId) -> StoreResult<()> {
        Ok(())
    }

    /// Whether `lock_user` and `row_lock` lock anything: not here, where a transaction holds the
    /// database's one write lock.
    pub(super) fn locks_rows(&self) -> bool {
        false
    }

    /// Nothing to lock: the transaction holds the database's one write lock (`BEGIN IMMEDIATE`).
    pub(super) async fn lock_user(&self, _tx: &mut SqliteConnection, _user: UserId) -> StoreResult<()> {
        Ok(())
    }

    /// Nothing to lock: the transaction holds the database's one write lock.
    pub(super) async fn lock_backend(&self, _tx: &mut SqliteConnection, _backend: &str) -> StoreResult<()> {
        Ok(())
    }

    /// Row-lock clauses (`FOR UPDATE`, `FOR KEY SHARE`, `SKIP LOCKED`) do not exist in SQLite;
    /// the write lock covers them.
    pub(super) fn row_lock(&self, _clause: &'static str) -> &'static str {
        ""
    }

    /// Deliveries a scan claimed, with their payloads (a claim here writes nothing; PostgreSQL's
    /// claims return them from the statement that leases them). They are read on the writer's
    /// connection: its page cache stays warm (only it writes), while a reader's is emptied by
    /// every commit it did not make (beside hanging receivers, the healthy ones got 12 % more
    /// deliveries a second in the delivery bench: medians of five interleaved pairs).
    pub(super) async fn load_jobs(&self, ids: &[String]) -> StoreResult<Vec<DeliveryJob>> {
        let mut jobs = Vec::with_capacity(ids.len());
        for chunk in ids.chunks(ROWS_PER_STATEMENT) {
            let mut query = QueryBuilder::<Sqlite>::new(format!(
                "SELECT {JOB_COLUMNS} FROM webhook_deliveries d JOIN webhook_payloads p ON p.delivery_id = d.id \
                 WHERE d.id IN ("
            ));
            let mut list = query.separated(", ");
            for id in chunk {
                list.push_bind(id);
            }
            // Oldest due first (a claim writes nothing: `next_attempt_at` is when each came due).
            query.push(") ORDER BY d.next_attempt_at, d.created_at, d.id");
            for row in query.build().fetch_all(&self.writer).await? {
                jobs.push(job_from_row(&row)?);
            }
        }
        Ok(jobs)
    }

    /// Claims by endpoint, with each endpoint's deliveries read in due order from where the last
    /// claim for it stopped (its [`Cursor`]), and returned whole, payloads included, by the same
    /// statement. Without the cursor each claim would read again the deliveries this node already
    /// holds, which stay due here until their attempts are recorded: in a drain, more than the
    /// deliveries it hands over. What a cursor could step past (a delivery committed after a later
    /// one was claimed, a webhook enabled again from the CLI) is found when the endpoint's due
    /// deliveries run out or the cursor expires, whichever comes first.
    pub(super) async fn claim_endpoint_deliveries(
        &self,
        now: Millis,
        wanted: &[EndpointClaim],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let mut claims: Vec<Claim> = wanted
            .iter()
            .filter(|claim| claim.want > 0)
            .map(|claim| Claim { endpoint: &claim.endpoint, need: claim.want, held: claim.held })
            .collect();
        let mut jobs = Vec::new();
        // A claim comes short only when held deliveries filled the rows it read; it reads on from
        // there, a few times at most.
        for _ in 0..CLAIM_ROUNDS {
            if claims.is_empty() {
                break;
            }
            let mut next_round = Vec::new();
            for chunk in claims.chunks(CLAIMS_PER_STATEMENT) {
                let (rows, limits) = self.read_due(now, chunk).await?;
                let mut by_endpoint: std::collections::HashMap<String, Vec<(Position, DeliveryJob)>> =
                    Default::default();
                for row in &rows {
                    let job = job_from_row(row)?;
                    let position = Position { at: row.int("next_attempt_at")?, id: job.id };
                    by_endpoint.entry(job.endpoint.clone()).or_default().push((position, job));
                }
                let mut cursors = self.cursors.lock().expect("lock");
                for (claim, limit) in chunk.iter().zip(limits) {
                    let mut read = by_endpoint.remove(claim.endpoint).unwrap_or_default();
                    read.sort_unstable_by_key(|(position, _)| *position);
                    let exhausted = (read.len() as u32) < limit;
                    let (mut taken, mut last) = (0, None);
                    for (position, job) in read {
                        if taken == claim.need {
                            break;
                        }
                        if !held.contains(&job.id) {
                            jobs.push(job);
                            taken += 1;
                        }
                        last = Some(position);
                    }
                    match (exhausted, last) {
                        (false, Some(last)) => {
                            let started =
                                cursors.get(claim.endpoint).map_or_else(std::time::Instant::now, |c| c.started);
                            cursors.insert(claim.endpoint.to_string(), Cursor { after: last, started });
                        }
                        _ => {
                            cursors.remove(claim.endpoint);
                        }
                    }
                    if !exhausted && taken < claim.need {
                        next_round.push(Claim { need: claim.need - taken, ..*claim });
                    }
                }
            }
            claims = next_round;
        }
        Ok(jobs)
    }

    /// One statement for every endpoint in `claims` (a compound SELECT of one limited SELECT each,
    /// not a round trip to the writer's thread per endpoint): their due deliveries after their
    /// cursors, with the number of rows each was limited to.
    async fn read_due(&self, now: Millis, claims: &[Claim<'_>]) -> StoreResult<(Vec<SqliteRow>, Vec<u32>)> {
        let cursors: Vec<Option<Position>> = {
            let mut cursors = self.cursors.lock().expect("lock");
            cursors.retain(|_, cursor| cursor.started.elapsed() < CURSOR_LIFETIME);
            claims.iter().map(|claim| cursors.get(claim.endpoint).map(|c| c.after)).collect()
        };
        let (mut query, limits) = due_query(now, claims, &cursors);
        let rows = query.build().fetch_all(&self.writer).await?;
        Ok((rows, limits))
    }
}

/// Endpoints claimed for in one statement at most (SQLite allows 500 terms in a compound SELECT).
const CLAIMS_PER_STATEMENT: usize = 100;

/// Statements one claim by endpoint makes at most (see `claim_endpoint_deliveries`).
const CLAIM_ROUNDS: usize = 4;

/// How long an endpoint's cursor is followed before its due deliveries are read from the oldest
/// again, so a delivery a cursor stepped past waits this long at most while the endpoint stays
/// backlogged.
const CURSOR_LIFETIME: Duration = Duration::from_secs(1);

/// A place in an endpoint's due deliveries, in claim order. A UUID orders as its text does (the
/// database compares the text).
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Position {
    at: Millis,
    id: DeliveryId,
}

/// Where the last claim for an endpoint stopped reading, and when this run of claims began.
struct Cursor {
    after: Position,
    started: std::time::Instant,
}

/// What one endpoint still needs in a claim.
#[derive(Clone, Copy)]
struct Claim<'a> {
    endpoint: &'a str,
    need: u32,
    held: u32,
}

/// The statement of `read_due`: for each claim, its endpoint's due deliveries after its cursor
/// (if any), whole, and the number of rows each was limited to.
fn due_query<'a>(
    now: Millis,
    claims: &'a [Claim<'a>],
    cursors: &'a [Option<Position>],
) -> (QueryBuilder<'a, Sqlite>, Vec<u32>) {
    let mut limits = Vec::with_capacity(claims.len());
    let mut query = QueryBuilder::<Sqlite>::new(format!("SELECT {JOB_COLUMNS}, d.next_attempt_at FROM ("));
    for (n, (claim, cursor)) in claims.iter().zip(cursors).enumerate() {
        if n > 0 {
            query.push(" UNION ALL ");
        }
        query.push(format!(
            "SELECT * FROM (SELECT rowid AS claimed FROM webhook_deliveries WHERE status = 'pending' \
             AND NOT {HELD} AND endpoint = "
        ));
        query.push_bind(claim.endpoint).push(" AND next_attempt_at <= ").push_bind(now);
        // Without a cursor, what this node holds is read again: mostly the first rows.
        let limit = match cursor {
            Some(after) => {
                query.push(" AND (next_attempt_at, id) > (").push_bind(after.at);
                query.push(", ").push_bind(after.id.to_string()).push(")");
                claim.need
            }
            None => claim.need + claim.held,
        };
        query.push(" ORDER BY next_attempt_at, id LIMIT ").push_bind(i64::from(limit)).push(")");
        limits.push(limit);
    }
    query.push(") c JOIN webhook_deliveries d ON d.rowid = c.claimed JOIN webhook_payloads p ON p.delivery_id = d.id");
    (query, limits)
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

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    /// The steps of `explain` (an `EXPLAIN QUERY PLAN` with its parameters bound).
    async fn plan_of<'q>(
        db: &SqliteDb,
        explain: sqlx::query::Query<'q, Sqlite, sqlx::sqlite::SqliteArguments<'q>>,
    ) -> Vec<String> {
        explain.fetch_all(&db.reader).await.unwrap().iter().map(|row| row.get::<String, _>("detail")).collect()
    }

    /// A new database is made of 2 KiB pages; one created with SQLite's 4 KiB pages (by an
    /// earlier Easel) keeps them and opens as before.
    #[tokio::test]
    async fn a_new_database_has_2_kib_pages_and_an_existing_one_keeps_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let page_size = |db: &SqliteDb| {
            let pool = db.reader.clone();
            async move { sqlx::query_scalar::<_, i64>("PRAGMA page_size").fetch_one(&pool).await.unwrap() }
        };
        let new = SqliteDb::open(&dir.path().join("new.db")).await.unwrap();
        assert_eq!(page_size(&new).await, 2048);

        let old_path = dir.path().join("old.db");
        let old = sqlx::SqlitePool::connect_with(
            SqliteConnectOptions::new()
                .filename(&old_path)
                .create_if_missing(true)
                .journal_mode(SqliteJournalMode::Wal),
        )
        .await
        .unwrap();
        sqlx::query("CREATE TABLE earlier (x INTEGER)").execute(&old).await.unwrap();
        old.close().await;
        let old = SqliteDb::open(&old_path).await.unwrap();
        assert_eq!(page_size(&old).await, 4096);
        let tables: i64 = sqlx::query_scalar("SELECT count(*) FROM sqlite_schema WHERE name = 'webhook_deliveries'")
            .fetch_one(&old.reader)
            .await
            .unwrap();
        assert_eq!(tables, 1, "migrated");
    }

    /// Whether a due delivery is held (its webhook disabled) is first asked once per statement,
    /// from the index of disabled webhooks; only then of each delivery's key. With no webhook
    /// disabled, a scan of due deliveries reads no delivery's row.
    #[tokio::test]
    async fn the_held_test_asks_once_per_statement_whether_any_webhook_is_disabled() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("easel.db")).await.unwrap();
        let explain = format!(
            "EXPLAIN QUERY PLAN SELECT id FROM webhook_deliveries WHERE status = 'pending' AND NOT {HELD} \
             AND next_attempt_at <= 5 ORDER BY next_attempt_at LIMIT 10"
        );
        let plan = plan_of(&db, sqlx::query(&explain)).await;
        let once = plan.iter().position(|step| step == "SCALAR SUBQUERY 1").expect("an uncorrelated subquery");
        assert!(
            plan[once + 1].contains("COVERING INDEX api_keys_webhook_disabled"),
            "answered from the index of disabled webhooks: {plan:?}"
        );
        assert!(plan[0].contains("webhook_deliveries_due"), "the due index: {plan:?}");
    }

    /// A scan reads its window from the due index, and finds the endpoints behind it by seeks in the
    /// due-by-endpoint index: neither statement scans the table or sorts.
    #[tokio::test]
    async fn a_scan_reads_only_the_due_indexes() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("easel.db")).await.unwrap();
        for (sql, index) in
            [(scan_window_sql(), "webhook_deliveries_due"), (endpoints_due_sql(), "webhook_deliveries_due_by_endpoint")]
        {
            let explain = format!("EXPLAIN QUERY PLAN {sql}");
            let plan = plan_of(&db, sqlx::query(&explain).bind(5).bind(10)).await;
            let reads: Vec<&String> = plan.iter().filter(|step| step.contains("webhook_deliveries")).collect();
            assert!(!reads.is_empty(), "{plan:?}");
            for read in reads {
                assert!(read.split(' ').any(|word| word == index), "{read:?} in {plan:?}");
            }
            assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "a sort: {plan:?}");
        }
    }

    /// A claim by endpoint, with a cursor and without, walks the partial index of due deliveries by
    /// endpoint from its place, in its order: no scan of the table, no sort.
    #[tokio::test]
    async fn a_claim_by_endpoint_reads_the_due_index_from_its_cursor() {
        let dir = tempfile::tempdir().unwrap();
        let db = SqliteDb::open(&dir.path().join("easel.db")).await.unwrap();
        let claims = [
            Claim { endpoint: "https://one.example:443", need: 8, held: 3 },
            Claim { endpoint: "https://two.example:443", need: 8, held: 3 },
        ];
        let cursors = [Some(Position { at: 1, id: DeliveryId::random() }), None];
        let (query, limits) = due_query(5, &claims, &cursors);
        assert_eq!(limits, [8, 11], "with a cursor, what was wanted; without, what is held too");
        let explain = format!("EXPLAIN QUERY PLAN {}", query.sql());
        let query = sqlx::query(&explain)
            .bind("https://one.example:443")
            .bind(5)
            .bind(1)
            .bind("x")
            .bind(8)
            .bind("https://two.example:443")
            .bind(5)
            .bind(11);
        let plan = plan_of(&db, query).await;
        let searches: Vec<&String> = plan.iter().filter(|step| step.contains("due_by_endpoint")).collect();
        assert_eq!(searches.len(), 2, "{plan:?}");
        assert!(searches[0].contains("(next_attempt_at,id)>(?,?)"), "the cursor bounds the search: {plan:?}");
        assert!(!plan.iter().any(|step| step.starts_with("SCAN webhook_deliveries")), "a full scan: {plan:?}");
        assert!(!plan.iter().any(|step| step.contains("TEMP B-TREE")), "a sort: {plan:?}");
    }
}
