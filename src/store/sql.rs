//! Every store operation, written once for both databases. The SQL uses `$N` parameters, which
//! SQLite takes as well, and `CAST(... AS TEXT)` where PostgreSQL needs a type; each body is
//! compiled once per backend by the macros below, so the code is shared while each backend keeps
//! its own driver types. What differs between the backends is called on the dialect value the
//! macros bind (`notify`, `lock_user`, `row_lock`) or lives in `sqlite.rs` and `postgres.rs`.

use std::collections::HashSet;

use futures_util::future::BoxFuture;
use sqlx::QueryBuilder;

use super::group::Grouped;

use super::rows::*;
use super::*;

/// `read!(self, |db| body)`: `body` with `db` bound to the pool reads go to (SQLite's read-only
/// pool, PostgreSQL's pool); `Db` names the backend's `sqlx::Database` inside it.
macro_rules! read {
    ($store:expr, |$db:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite(backend) => {
                #[allow(unused)]
                type Db = sqlx::Sqlite;
                let $db = &backend.reader;
                $body
            }
            Backend::Postgres(backend) => {
                #[allow(unused)]
                type Db = sqlx::Postgres;
                let $db = &backend.pool;
                $body
            }
        }
    };
}

/// `write!(self, |db| body)`: one statement outside a transaction, on SQLite's writer or
/// PostgreSQL's pool; `Db` names the backend's `sqlx::Database` inside it.
macro_rules! write {
    ($store:expr, |$db:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite(backend) => {
                #[allow(unused)]
                type Db = sqlx::Sqlite;
                let $db = &backend.writer;
                $body
            }
            Backend::Postgres(backend) => {
                #[allow(unused)]
                type Db = sqlx::Postgres;
                let $db = &backend.pool;
                $body
            }
        }
    };
}

/// `transaction!(self, |tx, dialect| body)`: `body` in a write transaction (`BEGIN IMMEDIATE` on
/// SQLite), with the backend's dialect value; the body commits.
macro_rules! transaction {
    ($store:expr, |$tx:ident, $dialect:ident| $body:expr) => {
        match &$store.backend {
            Backend::Sqlite(backend) => {
                #[allow(unused)]
                type Db = sqlx::Sqlite;
                let $dialect = backend;
                let mut $tx = backend.writer.begin_with("BEGIN IMMEDIATE").await?;
                $body
            }
            Backend::Postgres(backend) => {
                #[allow(unused)]
                type Db = sqlx::Postgres;
                let $dialect = backend;
                let mut $tx = backend.pool.begin().await?;
                $body
            }
        }
    };
}

/// `insert_deliveries!(tx, dialect, deliveries)`: inserts `NewDelivery`s (`&[&NewDelivery]`) with
/// their payloads in the transaction `tx`, a multi-row statement per table; those not leased at
/// birth are announced to the other nodes.
macro_rules! insert_deliveries {
    ($tx:ident, $dialect:ident, $deliveries:expr) => {{
        let deliveries: &[&NewDelivery] = $deliveries;
        for chunk in deliveries.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO webhook_deliveries (id, generation_id, user_id, api_key_id, event_type, url, \
                 endpoint, status, next_attempt_at, lease_owner, created_at, updated_at) ",
            );
            insert.push_values(chunk, |mut row, delivery| {
                // A delivery leased at birth is due when its lease runs out.
                let (lease_owner, next_attempt_at) = match &delivery.lease {
                    Some((owner, until)) => (Some(owner.clone()), *until),
                    None => (None, delivery.created_at),
                };
                row.push_bind(delivery.id.to_string())
                    .push_bind(delivery.generation_id.to_string())
                    .push_bind(delivery.user_id.to_string())
                    .push_bind(delivery.api_key_id.to_string())
                    .push_bind(delivery.event_type.clone())
                    .push_bind(delivery.url.clone())
                    .push_bind(delivery.endpoint.clone())
                    .push("'pending'")
                    .push_bind(next_attempt_at)
                    .push_bind(lease_owner)
                    .push_bind(delivery.created_at)
                    .push_bind(delivery.created_at);
            });
            insert.build().execute(&mut *$tx).await?;
            let mut payloads = QueryBuilder::<Db>::new("INSERT INTO webhook_payloads (delivery_id, body) ");
            payloads.push_values(chunk, |mut row, delivery| {
                row.push_bind(delivery.id.to_string()).push_bind(delivery.payload.to_vec());
            });
            payloads.build().execute(&mut *$tx).await?;
        }
        if deliveries.iter().any(|delivery| delivery.lease.is_none()) {
            $dialect.notify(&mut $tx, DELIVERY_CHANNEL).await?;
        }
    }};
}

/// `lock_job_users!(tx, dialect, table, ids)`: locks the users who own the job rows `ids`
/// (`&[String]`) of `table`, in id order: the order admissions and deletes lock users in, before
/// any job row, since a job's status moves its user's pending count (by trigger). How many users
/// were locked (0: none of the rows exists). PostgreSQL only: call it where `locks_rows()`.
macro_rules! lock_job_users {
    ($tx:ident, $dialect:ident, $table:literal, $ids:expr) => {{
        let ids: &[String] = $ids;
        let sql = format!("SELECT DISTINCT user_id FROM {} WHERE id IN ({})", $table, placeholders(1, ids.len()));
        let rows = ids.iter().fold(sqlx::query(&sql), |query, id| query.bind(id)).fetch_all(&mut *$tx).await?;
        let mut users = rows.iter().map(|row| parse(row, "user_id")).collect::<StoreResult<Vec<UserId>>>()?;
        users.sort_unstable();
        for user in &users {
            $dialect.lock_user(&mut $tx, *user).await?;
        }
        users.len()
    }};
}

/// `admit_in!(tx, dialect, batch)`: the admission of each request of `batch` (`&[&Admit]`), in
/// order, in the transaction `tx`.
macro_rules! admit_in {
    ($tx:ident, $dialect:ident, $batch:expr) => {{
        let batch: &[&Admit] = $batch;
        // Users are locked in one order, so two nodes' batches cannot deadlock.
        let mut users: Vec<UserId> = batch.iter().map(|admit| admit.user).collect();
        users.sort_unstable();
        users.dedup();
        for user in &users {
            $dialect.lock_user(&mut $tx, *user).await?;
        }
        // Their pending counts, read once: the locks (SQLite: the one writer) keep them exact
        // until the commit, and each admission below counts in the next one's.
        let ids: Vec<String> = users.iter().map(ToString::to_string).collect();
        let sql = format!("SELECT id, pending_jobs FROM users WHERE id IN ({})", placeholders(1, ids.len()));
        let rows = ids.iter().fold(sqlx::query(&sql), |query, id| query.bind(id)).fetch_all(&mut *$tx).await?;
        let mut pending = std::collections::HashMap::with_capacity(rows.len());
        for row in &rows {
            pending.insert(parse::<UserId>(row, "id")?, row.int("pending_jobs")?);
        }
        let mut admissions = Vec::with_capacity(batch.len());
        let mut admitted: Vec<&Admit> = Vec::with_capacity(batch.len());
        for admit in batch {
            if let Some(image) = admit.source_image {
                let held = sqlx::query(&format!(
                    "SELECT 1 FROM images WHERE id = $1 AND user_id = $2{}",
                    $dialect.row_lock(" FOR KEY SHARE")
                ))
                .bind(image.to_string())
                .bind(admit.user.to_string())
                .fetch_optional(&mut *$tx)
                .await?;
                if held.is_none() {
                    admissions.push(Admission::SourceMissing);
                    continue;
                }
            }
            // A user without a row has no slot (the insert would break its foreign key).
            let count = pending.entry(admit.user).or_insert(i64::MAX);
            if *count >= i64::from(admit.slots) {
                admissions.push(Admission::SlotsFull { slots: admit.slots });
                continue;
            }
            *count += 1;
            admitted.push(*admit);
            admissions.push(Admission::Accepted);
        }
        // One multi-row INSERT per table for everything admitted.
        let mut inserts: Vec<&'static str> = admitted.iter().map(|admit| admit.insert).collect();
        inserts.sort_unstable();
        inserts.dedup();
        for insert in inserts {
            let rows: Vec<&&Admit> = admitted.iter().filter(|admit| admit.insert == insert).collect();
            for chunk in rows.chunks(ROWS_PER_STATEMENT) {
                let mut query = QueryBuilder::<Db>::new(insert);
                query.push_values(chunk, |mut row, admit| {
                    for value in &admit.values {
                        match value {
                            Value::Text(text) => row.push_bind(text.clone()),
                            Value::OptText(text) => row.push_bind(text.clone()),
                            Value::Int(int) => row.push_bind(*int),
                        };
                    }
                });
                query.build().execute(&mut *$tx).await?;
            }
        }
        if admitted.iter().any(|admit| admit.announce) {
            $dialect.notify(&mut $tx, RENDER_CHANNEL).await?;
        }
        for generation in admitted.iter().filter_map(|admit| admit.changes) {
            $dialect.changed_generation(&mut $tx, generation).await?;
        }
        admissions
    }};
}

/// `finish_in!(tx, dialect, batch)`: records each finished generation of `batch` (`&[&Finish]`)
/// in the transaction `tx`; whether each was finished (it was still PENDING and leased to its
/// owner), with its images and delivery.
macro_rules! finish_in {
    ($tx:ident, $dialect:ident, $batch:expr) => {{
        let batch: &[&Finish] = $batch;
        // Finishing a job updates its user's row (the pending count): users are locked first,
        // in the order admissions lock them, so the two cannot deadlock.
        if $dialect.locks_rows() {
            let ids: Vec<String> = batch.iter().map(|finish| finish.id.to_string()).collect();
            lock_job_users!($tx, $dialect, "generations", &ids);
        }
        // One statement per table for the whole batch: the generations that were still
        // PENDING and leased to their finisher, then their images and their deliveries.
        let mut owners: std::collections::HashMap<GenerationId, UserId> = std::collections::HashMap::new();
        for chunk in batch.chunks(ROWS_PER_STATEMENT) {
            let mut update = QueryBuilder::<Db>::new("WITH v (id, owner, status, reason, at) AS (");
            update.push_values(chunk, |mut row, finish| {
                let (status, reason) = match &finish.outcome {
                    JobOutcome::Complete(_) => ("COMPLETE", None),
                    JobOutcome::Failed { reason } => ("FAILED", Some(reason.clone())),
                };
                row.push_bind(finish.id.to_string())
                    .push_bind(finish.owner.clone())
                    .push_bind(status)
                    .push_bind(reason)
                    .push_bind(finish.at);
            });
            update.push(
                ") UPDATE generations SET status = v.status, failure_reason = v.reason, updated_at = v.at, \
                 lease_owner = NULL, lease_expires_at = 0 FROM v WHERE generations.id = v.id \
                 AND generations.lease_owner = v.owner AND generations.status = 'PENDING' \
                 RETURNING generations.id, generations.user_id",
            );
            for row in update.build().fetch_all(&mut *$tx).await? {
                owners.insert(parse(&row, "id")?, parse(&row, "user_id")?);
            }
        }
        // A generation finishes once, even if the batch names it twice.
        let finished: Vec<Option<UserId>> = batch.iter().map(|finish| owners.remove(&finish.id)).collect();
        let done = || batch.iter().zip(&finished).filter_map(|(finish, user)| user.map(|user| (*finish, user)));
        let images: Vec<(&Finish, UserId, &NewImage)> = done()
            .flat_map(|(finish, user)| match &finish.outcome {
                JobOutcome::Complete(images) => images.iter().map(|image| (finish, user, image)).collect(),
                JobOutcome::Failed { .. } => Vec::new(),
            })
            .collect();
        for chunk in images.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO images (id, generation_id, user_id, idx, storage_key, width, height, created_at) ",
            );
            insert.push_values(chunk, |mut row, (finish, user, image)| {
                row.push_bind(image.id.to_string())
                    .push_bind(finish.id.to_string())
                    .push_bind(user.to_string())
                    .push_bind(i64::from(image.index))
                    .push_bind(image.storage_key.clone())
                    .push_bind(i64::from(image.width))
                    .push_bind(i64::from(image.height))
                    .push_bind(finish.at);
            });
            insert.build().execute(&mut *$tx).await?;
        }
        let deliveries: Vec<&NewDelivery> = done().filter_map(|(finish, _)| finish.delivery.as_ref()).collect();
        if !deliveries.is_empty() {
            insert_deliveries!($tx, $dialect, &deliveries);
        }
        finished.iter().map(Option::is_some).collect::<Vec<bool>>()
    }};
}

/// `record_in!(store, tx, dialect, records)`: records webhook attempts (`&[&AttemptRecord]`) in the
/// transaction `tx`, in multi-row `INSERT`s and a `VALUES` table driving one `UPDATE` per chunk;
/// the webhooks they disabled.
macro_rules! record_in {
    ($store:expr, $tx:ident, $dialect:ident, $records:expr) => {{
        let records: &[&AttemptRecord] = $records;
        for chunk in records.chunks(ROWS_PER_STATEMENT) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO webhook_attempts (delivery_id, attempt, started_at, duration_ms, status_code, \
                 error_class, error_detail, response_excerpt) ",
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
            insert.build().execute(&mut *$tx).await?;

            let mut update = QueryBuilder::<Db>::new(
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
            update.build().execute(&mut *$tx).await?;
        }
        // Each key's failure clock, then the keys it disables: two statements per batch
        // whatever the number of keys. On PostgreSQL the keys are locked first, in id order,
        // so concurrent batches (other nodes) lock them in the same order.
        let clocks: Vec<(String, KeyClock)> = key_clocks(records).into_iter().collect();
        let mut disabled = Vec::new();
        for chunk in clocks.chunks(ROWS_PER_STATEMENT) {
            if $dialect.locks_rows() {
                let mut lock = QueryBuilder::<Db>::new("SELECT id FROM api_keys WHERE id IN (");
                let mut list = lock.separated(", ");
                for (key, _) in chunk {
                    list.push_bind(key);
                }
                lock.push(") ORDER BY id FOR UPDATE");
                lock.build().fetch_all(&mut *$tx).await?;
            }
            // A batch with a success sets the clock to its failures after the last success
            // (none: cleared); one with failures only starts a clock that is not running.
            let mut clock = QueryBuilder::<Db>::new("WITH v (key_id, reset, since) AS (");
            clock.push_values(chunk, |mut row, (key, clock)| {
                row.push_bind(key).push_bind(clock.reset).push_bind(clock.failing_since);
            });
            clock.push(
                ") UPDATE api_keys SET webhook_failing_since = v.since FROM v WHERE api_keys.id = v.key_id \
                 AND ((v.reset AND (api_keys.webhook_failing_since IS NOT NULL OR v.since IS NOT NULL)) \
                 OR (NOT v.reset AND api_keys.webhook_failing_since IS NULL))",
            );
            clock.build().execute(&mut *$tx).await?;
            let Some(after) = $store.disable_after else { continue };
            let failed: Vec<(&String, Millis)> =
                chunk.iter().filter_map(|(key, clock)| Some((key, clock.last_failure?))).collect();
            if failed.is_empty() {
                continue;
            }
            let mut disable = QueryBuilder::<Db>::new("WITH v (key_id, at, threshold) AS (");
            disable.push_values(&failed, |mut row, (key, last_failure)| {
                row.push_bind(*key).push_bind(*last_failure).push_bind(*last_failure - after);
            });
            disable.push(
                ") UPDATE api_keys SET webhook_disabled_at = v.at FROM v WHERE api_keys.id = v.key_id \
                 AND webhook_disabled_at IS NULL AND deleted_at IS NULL AND webhook_failing_since <= v.threshold \
                 RETURNING id, webhook_url, webhook_failing_since, webhook_disabled_at",
            );
            for row in disable.build().fetch_all(&mut *$tx).await? {
                let key = row.text("id")?;
                disabled.push(DisabledWebhook {
                    api_key_id: key.parse().map_err(|_| StoreError::Corrupt(format!("api key id {key:?}")))?,
                    url: row.opt_text("webhook_url")?,
                    failing_since: row.int("webhook_failing_since")?,
                    disabled_at: row.int("webhook_disabled_at")?,
                });
            }
        }
        disabled.sort_unstable_by_key(|webhook| webhook.api_key_id);
        disabled
    }};
}

/// `make_due!(tx, dialect, sql, id, now)`: runs `sql` (an update that makes deliveries due, with
/// `$1` the id and `$2` now) in `tx` and tells the nodes.
macro_rules! make_due {
    ($tx:ident, $dialect:ident, $sql:expr, $id:expr, $now:expr) => {{
        sqlx::query($sql).bind($id.to_string()).bind($now).execute(&mut *$tx).await?;
        $dialect.notify(&mut $tx, DELIVERY_CHANNEL).await?;
    }};
}

/// The table and id of a job's row.
fn job_row(job: RenderJobId) -> (&'static str, String) {
    match job {
        RenderJobId::Generation(id) => ("generations", id.to_string()),
        RenderJobId::Variation(id) => ("variations", id.to_string()),
    }
}

/// Claimed generation rows (with their `attempts`) as render jobs.
fn generation_jobs(rows: &[impl Columns]) -> StoreResult<Vec<RenderJob>> {
    rows.iter().map(|row| render_job(RenderWork::Generation(generation_from_row(row)?), row)).collect()
}

/// `(g.model_id = $first AND variations.transform_type = $first+1) OR ...`: `count` (model,
/// transform) pairs, for variations of images of generations `g`.
fn variation_pairs(first: usize, count: usize) -> String {
    (0..count)
        .map(|n| {
            let at = first + 2 * n;
            format!("(g.model_id = ${at} AND variations.transform_type = ${})", at + 1)
        })
        .collect::<Vec<_>>()
        .join(" OR ")
}

/// `variation_jobs!(tx, rows)`: claimed variation rows (with their `attempts`) as render jobs,
/// each with the image it belongs to.
macro_rules! variation_jobs {
    ($tx:ident, $rows:expr) => {{
        let mut jobs = Vec::new();
        for row in $rows {
            let variation = variation_from_row(&row)?;
            let source = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1"))
                .bind(variation.image_id.to_string())
                .fetch_one(&mut *$tx)
                .await?;
            let work = RenderWork::Variation { variation, source: image_from_row(&source)? };
            jobs.push(render_job(work, &row)?);
        }
        jobs
    }};
}

/// `$first, $first+1, ...`: `count` numbered placeholders, for an `IN (...)` list.
fn placeholders(first: usize, count: usize) -> String {
    (first..first + count).map(|n| format!("${n}")).collect::<Vec<_>>().join(", ")
}

/// A value to bind to a statement assembled at run time.
enum Value {
    Text(String),
    OptText(Option<String>),
    Int(i64),
}

/// One job insert waiting for admission (see [`SqlStore::admit`]).
pub(super) struct Admit {
    user: UserId,
    slots: u32,
    source_image: Option<ImageId>,
    insert: &'static str,
    values: Vec<Value>,
    /// Whether other nodes' workers are told (PostgreSQL): not for a job leased at birth.
    announce: bool,
    /// The finished generation the job changes (a variation is listed under its image).
    changes: Option<GenerationId>,
}

/// One finished generation waiting to be recorded (see [`Store::finish_generation`]).
pub(super) struct Finish {
    id: GenerationId,
    owner: String,
    at: Millis,
    outcome: JobOutcome<Vec<NewImage>>,
    delivery: Option<NewDelivery>,
}

/// A write waiting for the writer: it shares a transaction with whatever else waits (see
/// [`SqlStore::writes`]).
pub(super) struct Write {
    work: Work,
    answer: tokio::sync::oneshot::Sender<StoreResult<Written>>,
}

pub(super) enum Work {
    Admit(Admit),
    Finish(Box<Finish>),
    /// A batch of webhook attempts (see [`Store::record_attempts`]).
    Record(Vec<AttemptRecord>),
}

/// What a [`Write`] did, by its kind.
pub(super) enum Written {
    Admission(Admission),
    Finished(bool),
    /// The webhooks the attempts disabled.
    Recorded(Vec<DisabledWebhook>),
}

/// The queues of [`Write`]s (`SqlStore::writes`).
pub(super) enum Writes {
    /// SQLite: one for every kind. Its one writer runs one transaction at a time anyway, so
    /// admissions, finishes and attempts that wait together share one (fewer commits, and a page
    /// both touch is written to the WAL once).
    Shared(group::GroupCommit<Write>),
    /// PostgreSQL: one per kind (admissions, finishes, attempts). Each kind takes its row locks
    /// in an order of its own (users; the jobs' users; keys), and a transaction taking two kinds'
    /// in turn could deadlock with another node's.
    PerKind([group::GroupCommit<Write>; 3]),
}

impl Writes {
    pub(super) fn new(shared: bool) -> Writes {
        if shared { Writes::Shared(Default::default()) } else { Writes::PerKind(Default::default()) }
    }

    fn queue(&self, work: &Work) -> &group::GroupCommit<Write> {
        match self {
            Writes::Shared(queue) => queue,
            Writes::PerKind(queues) => match work {
                Work::Admit(_) => &queues[0],
                Work::Finish(_) => &queues[1],
                Work::Record(_) => &queues[2],
            },
        }
    }
}

impl Grouped for Write {
    type Output = Written;

    fn answer(self, result: StoreResult<Written>) {
        let _ = self.answer.send(result);
    }

    fn together<'a>(store: &'a SqlStore, batch: &'a [Write]) -> BoxFuture<'a, StoreResult<Vec<Written>>> {
        Box::pin(store.write_together(batch))
    }
}

/// The admission of a generation (see [`Store::create_generation`]).
fn generation_admit(generation: &Generation, slots: u32, lease: Option<(&str, Millis)>) -> Admit {
    let insert = "INSERT INTO generations (id, user_id, api_key_id, status, params, created_at, updated_at, \
         model_id, lease_owner, lease_expires_at, attempts) ";
    let values = vec![
        Value::Text(generation.id.to_string()),
        Value::Text(generation.user_id.to_string()),
        Value::Text(generation.api_key_id.to_string()),
        Value::Text("PENDING".into()),
        Value::Text(serde_json::to_string(&generation.params).expect("params serialize")),
        Value::Int(generation.created_at),
        Value::Int(generation.created_at),
        Value::Text(generation.params.model_id.to_string()),
        Value::OptText(lease.map(|(owner, _)| owner.to_string())),
        Value::Int(lease.map_or(0, |(_, until)| until)),
        Value::Int(i64::from(lease.is_some())),
    ];
    Admit {
        user: generation.user_id,
        slots,
        source_image: None,
        insert,
        values,
        announce: lease.is_none(),
        changes: None,
    }
}

/// The answer a write of the wrong kind got (a bug, never a client's doing).
fn mismatched() -> StoreError {
    StoreError::Corrupt("a grouped write was answered for another kind".into())
}

impl SqlStore {
    /// Inserts a PENDING job (`insert`: `INSERT INTO table (columns) `, followed by `values`) unless
    /// the user's slots are all taken, or `source_image` is given and is not the user's (deleted
    /// a moment ago, say). The check and the insert are atomic: the user's row is locked
    /// (PostgreSQL) or the database's one writer held (SQLite), and the image is held until the
    /// commit, so a delete of its generation waits for the insert (and then removes the job with
    /// the image) or has already happened and is seen here. Concurrent inserts share a
    /// transaction (`group::GroupCommit`); the answer comes after the commit. Render workers are
    /// told of the job if `announce` (one leased at birth needs no claim).
    async fn admit(&self, admit: Admit) -> StoreResult<Admission> {
        match self.write(Work::Admit(admit)).await? {
            Written::Admission(admission) => Ok(admission),
            _ => Err(mismatched()),
        }
    }

    /// Queues `work` for the writer and waits for what it did (after the commit).
    async fn write(&self, work: Work) -> StoreResult<Written> {
        let queue = self.writes.queue(&work);
        queue.submit(&self.me, |answer| Write { work, answer }).await
    }

    /// Every write of `batch`, in one transaction: admissions first, then finishes, then attempts.
    async fn write_together(&self, batch: &[Write]) -> StoreResult<Vec<Written>> {
        let admits: Vec<&Admit> =
            batch.iter().filter_map(|w| if let Work::Admit(a) = &w.work { Some(a) } else { None }).collect();
        let finishes: Vec<&Finish> =
            batch.iter().filter_map(|w| if let Work::Finish(f) = &w.work { Some(&**f) } else { None }).collect();
        let records: Vec<&AttemptRecord> =
            batch.iter().filter_map(|w| if let Work::Record(r) = &w.work { Some(r) } else { None }).flatten().collect();
        let (admissions, finished, disabled) = transaction!(self, |tx, dialect| {
            let admissions = if admits.is_empty() { Vec::new() } else { admit_in!(tx, dialect, &admits) };
            let finished = if finishes.is_empty() { Vec::new() } else { finish_in!(tx, dialect, &finishes) };
            let disabled = if records.is_empty() { Vec::new() } else { record_in!(self, tx, dialect, &records) };
            tx.commit().await?;
            (admissions, finished, disabled)
        });
        for webhook in &disabled {
            self.keys.forget(webhook.api_key_id);
        }
        let (mut admissions, mut finished) = (admissions.into_iter(), finished.into_iter());
        let mut disabled: Vec<Option<DisabledWebhook>> = disabled.into_iter().map(Some).collect();
        let mut written = Vec::with_capacity(batch.len());
        for write in batch {
            written.push(match &write.work {
                Work::Admit(_) => Written::Admission(admissions.next().ok_or_else(mismatched)?),
                Work::Finish(_) => Written::Finished(finished.next().ok_or_else(mismatched)?),
                // Each disabled webhook goes to the first batch with an attempt of its key.
                Work::Record(records) => Written::Recorded(
                    disabled
                        .iter_mut()
                        .filter(|d| d.as_ref().is_some_and(|d| records.iter().any(|r| r.api_key_id == d.api_key_id)))
                        .filter_map(Option::take)
                        .collect(),
                ),
            });
        }
        Ok(written)
    }

    /// A live key and its user, by the key's hash, from the database.
    async fn read_api_key_by_hash(&self, key_hash: &str) -> StoreResult<Option<(User, ApiKey)>> {
        read!(self, |db| {
            let row = sqlx::query(&format!(
                "SELECT {API_KEY_COLUMNS}, u.username, u.api_concurrency_slots, u.created_at AS user_created_at \
                 FROM api_keys k JOIN users u ON u.id = k.user_id WHERE k.key_hash = $1 AND k.deleted_at IS NULL"
            ))
            .bind(key_hash)
            .fetch_optional(db)
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
        })
    }

    /// Deletes the user's generation `id` with its images and variations; the storage keys of
    /// their files, or `None` when there was no such generation.
    async fn delete_generation_row(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>> {
        transaction!(self, |tx, dialect| {
            // Deleting pending jobs updates the user's row (the pending count, by trigger): the
            // user is locked first, in the order admissions lock (user, then images), or the two
            // deadlock on PostgreSQL.
            dialect.lock_user(&mut tx, user).await?;
            let exists = sqlx::query(&format!(
                "SELECT 1 FROM generations WHERE id = $1 AND user_id = $2{}",
                dialect.row_lock(" FOR UPDATE")
            ))
            .bind(id.to_string())
            .bind(user.to_string())
            .fetch_optional(&mut *tx)
            .await?;
            if exists.is_none() {
                return Ok(None);
            }
            let keys: Vec<String> =
                sqlx::query_scalar(GENERATION_FILES).bind(id.to_string()).fetch_all(&mut *tx).await?;
            // Images and their variations go with the generation (ON DELETE CASCADE).
            sqlx::query("DELETE FROM generations WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            dialect.changed_generation(&mut tx, id).await?;
            tx.commit().await?;
            Ok(Some(keys))
        })
    }

    /// Forgets generation `id` in the cache of finished generations, after a write that changed it
    /// committed.
    fn forget_generation(&self, id: GenerationId) {
        self.generations.forget(id);
    }

    /// Fills in the images (with their variations) of `generations`.
    async fn attach_images(&self, generations: &mut [Generation]) -> StoreResult<()> {
        if generations.is_empty() {
            return Ok(());
        }
        let mut images: Vec<Image> = read!(self, |db| {
            let mut query =
                QueryBuilder::<Db>::new(format!("SELECT {IMAGE_COLUMNS} FROM images WHERE generation_id IN ("));
            let mut list = query.separated(", ");
            for generation in generations.iter() {
                list.push_bind(generation.id.to_string());
            }
            query.push(") ORDER BY generation_id, idx");
            query.build().fetch_all(db).await?.iter().map(image_from_row).collect::<StoreResult<_>>()?
        });
        if !images.is_empty() {
            let variations: Vec<Variation> = read!(self, |db| {
                let mut query =
                    QueryBuilder::<Db>::new(format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE image_id IN ("));
                let mut list = query.separated(", ");
                for image in images.iter() {
                    list.push_bind(image.id.to_string());
                }
                query.push(") ORDER BY created_at, id");
                query.build().fetch_all(db).await?.iter().map(variation_from_row).collect::<StoreResult<_>>()?
            });
            for variation in variations {
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
}

/// The files of generation `$1`: its images' and its variations'. Variations are found through
/// their images (`variations_by_image`): there is no index on `variations.generation_id`, and a
/// lookup by it read every variation of every user.
const GENERATION_FILES: &str = "SELECT storage_key FROM images WHERE generation_id = $1 \
     UNION ALL SELECT v.storage_key FROM images i JOIN variations v ON v.image_id = i.id \
     WHERE i.generation_id = $1 AND v.storage_key IS NOT NULL";

#[async_trait]
impl Store for SqlStore {
    fn backend(&self) -> &'static str {
        match &self.backend {
            Backend::Sqlite(_) => "sqlite",
            Backend::Postgres(_) => "postgres",
        }
    }

    fn watch(&self, wakeups: Wakeups, stop: tokio_util::sync::CancellationToken) {
        // SQLite has no other nodes to hear from.
        if let Backend::Postgres(pg) = &self.backend {
            pg.watch(wakeups, self.generations.clone(), stop);
        }
    }

    async fn release_leases(&self, owner: Option<&str>, now: Millis) -> StoreResult<u64> {
        transaction!(self, |tx, dialect| {
            let mut released = 0;
            for table in ["generations", "variations"] {
                released += sqlx::query(&format!(
                    // A job given back by a node that stops (not one that crashed) did not use up
                    // an attempt.
                    "UPDATE {table} SET lease_owner = NULL, lease_expires_at = 0, attempts = CASE \
                     WHEN CAST($1 AS TEXT) IS NULL OR attempts = 0 THEN attempts ELSE attempts - 1 END \
                     WHERE status = 'PENDING' AND lease_owner IS NOT NULL \
                     AND (CAST($1 AS TEXT) IS NULL OR lease_owner = $1)"
                ))
                .bind(owner)
                .execute(&mut *tx)
                .await?
                .rows_affected();
            }
            released += sqlx::query(
                "UPDATE webhook_deliveries SET lease_owner = NULL, next_attempt_at = $2 WHERE status = 'pending' \
                 AND lease_owner IS NOT NULL AND (CAST($1 AS TEXT) IS NULL OR lease_owner = $1)",
            )
            .bind(owner)
            .bind(now)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if released > 0 {
                dialect.notify(&mut tx, RENDER_CHANNEL).await?;
                dialect.notify(&mut tx, DELIVERY_CHANNEL).await?;
            }
            tx.commit().await?;
            Ok(released)
        })
    }

    async fn ping(&self) -> StoreResult<()> {
        read!(self, |db| {
            sqlx::query("SELECT 1").execute(db).await?;
        });
        Ok(())
    }

    async fn create_user(&self, user: &User) -> StoreResult<()> {
        let result = write!(self, |db| {
            sqlx::query(
                "INSERT INTO users (id, username, api_concurrency_slots, created_at) VALUES ($1, $2, $3, $4) \
                 ON CONFLICT (username) DO NOTHING",
            )
            .bind(user.id.to_string())
            .bind(&user.username)
            .bind(i64::from(user.api_concurrency_slots))
            .bind(user.created_at)
            .execute(db)
            .await?
            .rows_affected()
        });
        if result == 0 {
            return Err(StoreError::UsernameTaken(user.username.clone()));
        }
        Ok(())
    }

    async fn get_user(&self, id: UserId) -> StoreResult<Option<User>> {
        read!(self, |db| {
            let row = sqlx::query("SELECT * FROM users WHERE id = $1").bind(id.to_string()).fetch_optional(db).await?;
            row.as_ref().map(user_from_row).transpose()
        })
    }

    async fn list_users(&self) -> StoreResult<Vec<User>> {
        read!(self, |db| {
            let rows = sqlx::query("SELECT * FROM users ORDER BY created_at, username").fetch_all(db).await?;
            rows.iter().map(user_from_row).collect()
        })
    }

    async fn create_api_key(&self, key: &ApiKey, key_hash: &str) -> StoreResult<()> {
        let result = write!(self, |db| {
            sqlx::query(
                "INSERT INTO api_keys (id, user_id, name, key_hash, webhook_url, webhook_api_key_sealed, \
                 signing_secret_sealed, created_at, manage_keys, key_hint) \
                 SELECT $1, $2, $3, $4, $5, $6, $7, $8, $9, $10 WHERE EXISTS (SELECT 1 FROM users WHERE id = $2)",
            )
            .bind(key.id.to_string())
            .bind(key.user_id.to_string())
            .bind(&key.name)
            .bind(key_hash)
            .bind(&key.webhook_url)
            .bind(&key.webhook_api_key_sealed)
            .bind(&key.signing_secret_sealed)
            .bind(key.created_at)
            .bind(key.manage_keys)
            .bind(&key.key_hint)
            .execute(db)
            .await?
            .rows_affected()
        });
        if result == 0 {
            return Err(StoreError::UnknownUser(key.user_id));
        }
        Ok(())
    }

    async fn authenticate(&self, key_hash: &str) -> StoreResult<Option<(User, ApiKey)>> {
        self.keys.by_hash.read(key_hash, || self.read_api_key_by_hash(key_hash)).await
    }

    async fn touch_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<()> {
        write!(self, |db| {
            sqlx::query("UPDATE api_keys SET last_used_at = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(at)
                .execute(db)
                .await?;
        });
        self.keys.touched(id, at);
        Ok(())
    }

    async fn get_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        read!(self, |db| {
            let row = sqlx::query(&format!("SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.id = $1"))
                .bind(id.to_string())
                .fetch_optional(db)
                .await?;
            row.as_ref().map(api_key_from_row).transpose()
        })
    }

    async fn recent_api_key(&self, id: ApiKeyId) -> StoreResult<Option<ApiKey>> {
        self.keys.by_id.read(&id, || self.get_api_key(id)).await
    }

    async fn list_api_keys(&self, user: Option<UserId>) -> StoreResult<Vec<ApiKey>> {
        read!(self, |db| {
            let rows = sqlx::query(&format!(
                "SELECT {API_KEY_COLUMNS} FROM api_keys k WHERE k.deleted_at IS NULL \
                 AND (CAST($1 AS TEXT) IS NULL OR k.user_id = $1) ORDER BY k.created_at, k.id"
            ))
            .bind(user.map(|u| u.to_string()))
            .fetch_all(db)
            .await?;
            rows.iter().map(api_key_from_row).collect()
        })
    }

    async fn delete_api_key(&self, id: ApiKeyId, at: Millis) -> StoreResult<bool> {
        let deleted = write!(self, |db| {
            sqlx::query("UPDATE api_keys SET deleted_at = $2 WHERE id = $1 AND deleted_at IS NULL")
                .bind(id.to_string())
                .bind(at)
                .execute(db)
                .await?
                .rows_affected()
        });
        self.keys.forget(id);
        Ok(deleted == 1)
    }

    async fn create_generation(
        &self,
        generation: &Generation,
        slots: u32,
        lease: Option<(&str, Millis)>,
    ) -> StoreResult<Admission> {
        self.admit(generation_admit(generation, slots, lease)).await
    }

    async fn get_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Generation>> {
        if let Some(generation) = self.generations.get(user, id) {
            return Ok(Some(generation));
        }
        let began = self.generations.begin();
        let generation = read!(self, |db| {
            let row =
                sqlx::query(&format!("SELECT {GENERATION_COLUMNS} FROM generations WHERE id = $1 AND user_id = $2"))
                    .bind(id.to_string())
                    .bind(user.to_string())
                    .fetch_optional(db)
                    .await?;
            row.as_ref().map(generation_from_row).transpose()?
        });
        let Some(generation) = generation else { return Ok(None) };
        let mut generations = vec![generation];
        self.attach_images(&mut generations).await?;
        if let Some(generation) = generations.first() {
            self.generations.put(began, generation);
        }
        Ok(generations.pop())
    }

    async fn list_generations(&self, user: UserId, offset: u64, limit: u64) -> StoreResult<Vec<Generation>> {
        let mut generations: Vec<Generation> = read!(self, |db| {
            sqlx::query(&format!(
                "SELECT {GENERATION_COLUMNS} FROM generations WHERE user_id = $1 \
                 ORDER BY created_at DESC, id DESC LIMIT $2 OFFSET $3"
            ))
            .bind(user.to_string())
            .bind(limit.min(i64::MAX as u64) as i64)
            .bind(offset.min(i64::MAX as u64) as i64)
            .fetch_all(db)
            .await?
            .iter()
            .map(generation_from_row)
            .collect::<StoreResult<_>>()?
        });
        self.attach_images(&mut generations).await?;
        Ok(generations)
    }

    async fn delete_generation(&self, user: UserId, id: GenerationId) -> StoreResult<Option<Vec<String>>> {
        let deleted = self.delete_generation_row(user, id).await;
        self.forget_generation(id);
        deleted
    }

    async fn get_image(&self, user: UserId, id: ImageId) -> StoreResult<Option<Image>> {
        read!(self, |db| {
            let row = sqlx::query(&format!("SELECT {IMAGE_COLUMNS} FROM images WHERE id = $1 AND user_id = $2"))
                .bind(id.to_string())
                .bind(user.to_string())
                .fetch_optional(db)
                .await?;
            row.as_ref().map(image_from_row).transpose()
        })
    }

    async fn create_init_image(&self, image: &InitImage) -> StoreResult<()> {
        write!(self, |db| {
            sqlx::query(
                "INSERT INTO init_images (id, user_id, kind, extension, storage_key, created_at, expires_at) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
            )
            .bind(image.id.to_string())
            .bind(image.user_id.to_string())
            .bind(image.kind.as_str())
            .bind(&image.extension)
            .bind(&image.storage_key)
            .bind(image.created_at)
            .bind(image.expires_at)
            .execute(db)
            .await?;
            Ok(())
        })
    }

    async fn get_init_image(&self, user: UserId, id: uuid::Uuid) -> StoreResult<Option<InitImage>> {
        Ok(self.find_init_image(id).await?.filter(|image| image.user_id == user))
    }

    async fn find_init_image(&self, id: uuid::Uuid) -> StoreResult<Option<InitImage>> {
        read!(self, |db| {
            let row = sqlx::query(&format!("SELECT {INIT_IMAGE_COLUMNS} FROM init_images WHERE id = $1"))
                .bind(id.to_string())
                .fetch_optional(db)
                .await?;
            row.as_ref().map(init_image_from_row).transpose()
        })
    }

    async fn mark_init_image_uploaded(&self, id: uuid::Uuid, now: Millis, size: i64) -> StoreResult<bool> {
        write!(self, |db| {
            let done = sqlx::query(
                "UPDATE init_images SET uploaded_at = $2, size = $3 \
                 WHERE id = $1 AND uploaded_at IS NULL AND expires_at > $2",
            )
            .bind(id.to_string())
            .bind(now)
            .bind(size)
            .execute(db)
            .await?;
            Ok(done.rows_affected() == 1)
        })
    }

    async fn delete_init_image(&self, user: UserId, id: uuid::Uuid) -> StoreResult<Option<String>> {
        write!(self, |db| {
            let row = sqlx::query("DELETE FROM init_images WHERE id = $1 AND user_id = $2 RETURNING storage_key")
                .bind(id.to_string())
                .bind(user.to_string())
                .fetch_optional(db)
                .await?;
            row.map(|row| row.text("storage_key")).transpose()
        })
    }

    async fn create_variation(&self, variation: &Variation, slots: u32) -> StoreResult<Admission> {
        let insert = "INSERT INTO variations (id, user_id, image_id, generation_id, api_key_id, transform_type, \
             settings, source_key, status, created_at, updated_at) ";
        let values = vec![
            Value::Text(variation.id.to_string()),
            Value::Text(variation.user_id.to_string()),
            Value::Text(variation.image_id.to_string()),
            Value::Text(variation.generation_id.to_string()),
            Value::Text(variation.api_key_id.to_string()),
            Value::Text(variation.transform.name().to_string()),
            Value::OptText(variation.transform.settings()),
            Value::OptText(variation.source_key.clone()),
            Value::Text("PENDING".into()),
            Value::Int(variation.created_at),
            Value::Int(variation.created_at),
        ];
        let admission = self
            .admit(Admit {
                user: variation.user_id,
                slots,
                source_image: Some(variation.image_id),
                insert,
                values,
                announce: true,
                changes: Some(variation.generation_id),
            })
            .await;
        // Its generation now lists a pending variation under the image.
        self.forget_generation(variation.generation_id);
        admission
    }

    async fn get_variation(&self, user: UserId, id: VariationId) -> StoreResult<Option<Variation>> {
        read!(self, |db| {
            let row =
                sqlx::query(&format!("SELECT {VARIATION_COLUMNS} FROM variations WHERE id = $1 AND user_id = $2"))
                    .bind(id.to_string())
                    .bind(user.to_string())
                    .fetch_optional(db)
                    .await?;
            row.as_ref().map(variation_from_row).transpose()
        })
    }

    async fn claim_render_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_models: &[uuid::Uuid],
        skip_variations: &[(uuid::Uuid, &str)],
    ) -> StoreResult<Vec<RenderJob>> {
        transaction!(self, |tx, dialect| {
            let claim = |table: &str, columns: &str, filter: &str| {
                format!(
                    "UPDATE {table} SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
                     backend = NULL WHERE id IN \
                     (SELECT id FROM {table} WHERE status = 'PENDING' AND lease_expires_at <= $3{filter} \
                     ORDER BY created_at LIMIT $4{}) RETURNING {columns}, attempts",
                    dialect.row_lock(" FOR UPDATE SKIP LOCKED")
                )
            };
            let filter = if skip_models.is_empty() {
                String::new()
            } else {
                format!(" AND model_id NOT IN ({})", placeholders(5, skip_models.len()))
            };
            let sql = claim("generations", GENERATION_COLUMNS, &filter);
            let mut query = sqlx::query(&sql).bind(owner).bind(lease_until).bind(now).bind(i64::from(limit));
            for model in skip_models {
                query = query.bind(model.to_string());
            }
            let mut jobs = generation_jobs(&query.fetch_all(&mut *tx).await?)?;
            let remaining = limit.saturating_sub(jobs.len() as u32);
            if remaining > 0 {
                let filter = if skip_variations.is_empty() {
                    String::new()
                } else {
                    format!(
                        " AND NOT EXISTS (SELECT 1 FROM generations g WHERE g.id = variations.generation_id AND ({}))",
                        variation_pairs(5, skip_variations.len())
                    )
                };
                let sql = claim("variations", VARIATION_COLUMNS, &filter);
                let mut query = sqlx::query(&sql).bind(owner).bind(lease_until).bind(now).bind(i64::from(remaining));
                for (model, transform) in skip_variations {
                    query = query.bind(model.to_string()).bind(*transform);
                }
                let rows = query.fetch_all(&mut *tx).await?;
                jobs.extend(variation_jobs!(tx, rows));
            }
            tx.commit().await?;
            Ok(jobs)
        })
    }

    async fn claim_backend_jobs(&self, claim: &BackendClaim<'_>) -> StoreResult<Vec<RenderJob>> {
        if claim.models.is_empty() || claim.limit == 0 {
            return Ok(Vec::new());
        }
        transaction!(self, |tx, dialect| {
            // Claims for one backend are serialized (all nodes), so the count and the claim
            // cannot interleave with another node's.
            dialect.lock_backend(&mut tx, claim.backend).await?;
            let running = sqlx::query(
                "SELECT (SELECT COUNT(*) FROM generations WHERE status = 'PENDING' AND backend = $1 \
                 AND lease_owner IS NOT NULL AND lease_expires_at > $2) + (SELECT COUNT(*) FROM variations \
                 WHERE status = 'PENDING' AND backend = $1 AND lease_owner IS NOT NULL AND lease_expires_at > $2) AS n",
            )
            .bind(claim.backend)
            .bind(claim.now)
            .fetch_one(&mut *tx)
            .await?
            .int("n")?;
            let free = (i64::from(claim.max_concurrent) - running).clamp(0, i64::from(claim.limit));
            if free == 0 {
                return Ok(Vec::new());
            }
            // Each user's oldest job first, then their second, ...: users take turns. The outer
            // conditions are checked again on a row another claim changed meanwhile (PostgreSQL),
            // so a row is never claimed twice.
            let sql = format!(
                "UPDATE generations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, backend = $3 \
                 WHERE id IN (SELECT id FROM (SELECT id, created_at, ROW_NUMBER() OVER \
                 (PARTITION BY user_id ORDER BY created_at) AS turn FROM generations \
                 WHERE status = 'PENDING' AND lease_expires_at <= $4 AND model_id IN ({}){}) ranked \
                 ORDER BY turn, created_at LIMIT $5) AND status = 'PENDING' AND lease_expires_at <= $4 \
                 RETURNING {GENERATION_COLUMNS}, attempts",
                placeholders(6, claim.models.len()),
                if claim.skip.is_empty() {
                    String::new()
                } else {
                    format!(" AND id NOT IN ({})", placeholders(6 + claim.models.len(), claim.skip.len()))
                }
            );
            let mut query = sqlx::query(&sql)
                .bind(claim.owner)
                .bind(claim.lease_until)
                .bind(claim.backend)
                .bind(claim.now)
                .bind(free);
            for model in claim.models {
                query = query.bind(model.to_string());
            }
            for id in claim.skip {
                query = query.bind(id);
            }
            let mut jobs = generation_jobs(&query.fetch_all(&mut *tx).await?)?;
            let free = free - jobs.len() as i64;
            if free > 0 && !claim.transforms.is_empty() {
                // Then variations of the models' images with a transform the backend does, the
                // same way.
                let sql = format!(
                    "UPDATE variations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
                     backend = $3 WHERE id IN (SELECT id FROM (SELECT variations.id, variations.created_at, \
                     ROW_NUMBER() OVER (PARTITION BY variations.user_id ORDER BY variations.created_at) AS turn \
                     FROM variations JOIN generations g ON g.id = variations.generation_id \
                     WHERE variations.status = 'PENDING' AND variations.lease_expires_at <= $4 \
                     AND g.model_id IN ({}) AND variations.transform_type IN ({})) ranked \
                     ORDER BY turn, created_at LIMIT $5) AND status = 'PENDING' AND lease_expires_at <= $4 \
                     RETURNING {VARIATION_COLUMNS}, attempts",
                    placeholders(6, claim.models.len()),
                    placeholders(6 + claim.models.len(), claim.transforms.len()),
                );
                let mut query = sqlx::query(&sql)
                    .bind(claim.owner)
                    .bind(claim.lease_until)
                    .bind(claim.backend)
                    .bind(claim.now)
                    .bind(free);
                for model in claim.models {
                    query = query.bind(model.to_string());
                }
                for transform in claim.transforms {
                    query = query.bind(*transform);
                }
                let rows = query.fetch_all(&mut *tx).await?;
                jobs.extend(variation_jobs!(tx, rows));
            }
            tx.commit().await?;
            Ok(jobs)
        })
    }

    async fn claim_stranded_jobs(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        models: &[uuid::Uuid],
        variations: &[(uuid::Uuid, &str)],
        created_before: Millis,
        limit: u32,
    ) -> StoreResult<Vec<RenderJob>> {
        if (models.is_empty() && variations.is_empty()) || limit == 0 {
            return Ok(Vec::new());
        }
        transaction!(self, |tx, dialect| {
            let sql = format!(
                "UPDATE generations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, backend = NULL \
                 WHERE id IN (SELECT id FROM generations WHERE status = 'PENDING' AND lease_expires_at <= $3 \
                 AND created_at < $4 AND model_id IN ({}) ORDER BY created_at LIMIT $5{}) \
                 RETURNING {GENERATION_COLUMNS}, attempts",
                placeholders(6, models.len()),
                dialect.row_lock(" FOR UPDATE SKIP LOCKED")
            );
            let mut jobs = if models.is_empty() {
                Vec::new()
            } else {
                let mut query = sqlx::query(&sql)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(created_before)
                    .bind(i64::from(limit));
                for model in models {
                    query = query.bind(model.to_string());
                }
                generation_jobs(&query.fetch_all(&mut *tx).await?)?
            };
            let remaining = limit.saturating_sub(jobs.len() as u32);
            if remaining > 0 && !variations.is_empty() {
                let sql = format!(
                    "UPDATE variations SET lease_owner = $1, lease_expires_at = $2, attempts = attempts + 1, \
                     backend = NULL WHERE id IN (SELECT id FROM variations WHERE status = 'PENDING' \
                     AND lease_expires_at <= $3 AND created_at < $4 AND EXISTS (SELECT 1 FROM generations g \
                     WHERE g.id = variations.generation_id AND ({})) ORDER BY created_at LIMIT $5{}) \
                     RETURNING {VARIATION_COLUMNS}, attempts",
                    variation_pairs(6, variations.len()),
                    dialect.row_lock(" FOR UPDATE SKIP LOCKED")
                );
                let mut query = sqlx::query(&sql)
                    .bind(owner)
                    .bind(lease_until)
                    .bind(now)
                    .bind(created_before)
                    .bind(i64::from(remaining));
                for (model, transform) in variations {
                    query = query.bind(model.to_string()).bind(*transform);
                }
                let rows = query.fetch_all(&mut *tx).await?;
                jobs.extend(variation_jobs!(tx, rows));
            }
            tx.commit().await?;
            Ok(jobs)
        })
    }

    async fn update_generation_params(
        &self,
        id: GenerationId,
        owner: &str,
        params: &crate::generation::GenerationParams,
    ) -> StoreResult<bool> {
        let text = serde_json::to_string(params).expect("params serialize");
        let updated = write!(self, |db| {
            sqlx::query("UPDATE generations SET params = $3 WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'")
                .bind(id.to_string())
                .bind(owner)
                .bind(&text)
                .execute(db)
                .await?
                .rows_affected()
        });
        Ok(updated == 1)
    }

    async fn record_backend_health(&self, health: &BackendHealth) -> StoreResult<()> {
        // Rows of nodes gone for a day (each start is a new node id) are removed.
        write!(self, |db| {
            sqlx::query("DELETE FROM backend_health WHERE name = $1 AND checked_at < $2")
                .bind(&health.name)
                .bind(health.checked_at - 86_400_000)
                .execute(db)
                .await?;
        });
        write!(self, |db| {
            sqlx::query(
                "INSERT INTO backend_health (name, node_id, healthy, last_error, last_error_at, checked_at) \
                 VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (name, node_id) DO UPDATE SET healthy = $3, \
                 last_error = COALESCE($4, backend_health.last_error), \
                 last_error_at = COALESCE($5, backend_health.last_error_at), checked_at = $6",
            )
            .bind(&health.name)
            .bind(&health.node_id)
            .bind(health.healthy)
            .bind(health.last_error.as_deref())
            .bind(health.last_error_at)
            .bind(health.checked_at)
            .execute(db)
            .await?;
        });
        Ok(())
    }

    async fn queue_stats(&self, now: Millis) -> StoreResult<QueueStats> {
        let stats = read!(self, |db| {
            let row = sqlx::query(&format!(
                "SELECT (SELECT COUNT(*) FROM generations WHERE status = 'PENDING' AND lease_expires_at <= $1) \
                 + (SELECT COUNT(*) FROM variations WHERE status = 'PENDING' AND lease_expires_at <= $1) AS queue, \
                 (SELECT COUNT(*) FROM webhook_deliveries WHERE status = 'pending') AS pending, \
                 (SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending' \
                 AND lease_owner IS NULL AND next_attempt_at <= $1 AND NOT {HELD}) AS oldest_due, \
                 (SELECT COUNT(*) FROM api_keys WHERE webhook_disabled_at IS NOT NULL AND deleted_at IS NULL) \
                 AS disabled_webhooks"
            ))
            .bind(now)
            .fetch_one(db)
            .await?;
            QueueStats {
                render_queue: row.int("queue")?.max(0) as u64,
                deliveries_pending: row.int("pending")?.max(0) as u64,
                oldest_due_at: row.opt_int("oldest_due")?,
                disabled_webhooks: row.int("disabled_webhooks")?.max(0) as u64,
            }
        });
        Ok(stats)
    }

    fn pool_stats(&self) -> PoolStats {
        let pools = match &self.backend {
            Backend::Sqlite(db) => {
                vec![(db.writer.size(), db.writer.num_idle()), (db.reader.size(), db.reader.num_idle())]
            }
            Backend::Postgres(db) => vec![(db.pool.size(), db.pool.num_idle())],
        };
        pools.into_iter().fold(PoolStats::default(), |total, (open, idle)| PoolStats {
            open: total.open + open,
            idle: total.idle + idle as u32,
        })
    }

    async fn backend_overview(&self, now: Millis) -> StoreResult<BackendOverview> {
        let overview = read!(self, |db| {
            let mut overview = BackendOverview::default();
            for row in sqlx::query(
                "SELECT name, node_id, healthy, last_error, last_error_at, checked_at FROM backend_health \
                 ORDER BY name, node_id",
            )
            .fetch_all(db)
            .await?
            {
                overview.health.push(BackendHealth {
                    name: row.text("name")?,
                    node_id: row.text("node_id")?,
                    healthy: row.boolean("healthy")?,
                    last_error: row.opt_text("last_error")?,
                    last_error_at: row.opt_int("last_error_at")?,
                    checked_at: row.int("checked_at")?,
                });
            }
            for row in sqlx::query(
                "SELECT backend, COUNT(*) AS n FROM (SELECT backend FROM generations WHERE status = 'PENDING' \
                 AND backend IS NOT NULL AND lease_owner IS NOT NULL AND lease_expires_at > $1 UNION ALL \
                 SELECT backend FROM variations WHERE status = 'PENDING' AND backend IS NOT NULL \
                 AND lease_owner IS NOT NULL AND lease_expires_at > $1) running GROUP BY backend",
            )
            .bind(now)
            .fetch_all(db)
            .await?
            {
                overview.running.insert(row.text("backend")?, row.int("n")? as u64);
            }
            for row in sqlx::query(
                "SELECT model_id, COUNT(*) AS n FROM generations WHERE status = 'PENDING' AND model_id IS NOT NULL \
                 AND (lease_owner IS NULL OR lease_expires_at <= $1) GROUP BY model_id",
            )
            .bind(now)
            .fetch_all(db)
            .await?
            {
                overview.pending_by_model.insert(row.text("model_id")?, row.int("n")? as u64);
            }
            overview
        });
        Ok(overview)
    }

    async fn postpone_render_job(
        &self,
        job: RenderJobId,
        owner: &str,
        not_before: Millis,
        at: Millis,
    ) -> StoreResult<bool> {
        let (table, id) = job_row(job);
        let postponed = write!(self, |db| {
            sqlx::query(&format!(
                "UPDATE {table} SET lease_owner = NULL, lease_expires_at = $3, updated_at = $4 \
                 WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING'"
            ))
            .bind(&id)
            .bind(owner)
            .bind(not_before)
            .bind(at)
            .execute(db)
            .await?
            .rows_affected()
        });
        Ok(postponed == 1)
    }

    async fn finish_generation(
        &self,
        id: GenerationId,
        owner: &str,
        at: Millis,
        outcome: &JobOutcome<Vec<NewImage>>,
        delivery: Option<&NewDelivery>,
    ) -> StoreResult<bool> {
        let (owner, outcome, delivery) = (owner.to_string(), outcome.clone(), delivery.cloned());
        match self.write(Work::Finish(Box::new(Finish { id, owner, at, outcome, delivery }))).await? {
            Written::Finished(finished) => Ok(finished),
            _ => Err(mismatched()),
        }
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
        let generation = transaction!(self, |tx, dialect| {
            // Finishing updates the user's row (the pending count, by trigger): the user is locked
            // first, in the order admissions and deletes lock (user, then the job's rows), or a
            // delete of the generation and this finish deadlock on PostgreSQL.
            if dialect.locks_rows() && lock_job_users!(tx, dialect, "variations", &[id.to_string()]) == 0 {
                return Ok(false);
            }
            let generation = sqlx::query(
                "UPDATE variations SET status = $3, storage_key = $4, failure_reason = $5, updated_at = $6, \
                 lease_owner = NULL, lease_expires_at = 0 WHERE id = $1 AND lease_owner = $2 AND status = 'PENDING' \
                 RETURNING generation_id",
            )
            .bind(id.to_string())
            .bind(owner)
            .bind(status)
            .bind(key)
            .bind(reason)
            .bind(at)
            .fetch_optional(&mut *tx)
            .await?
            .map(|row| parse::<GenerationId>(&row, "generation_id"))
            .transpose()?;
            if let Some(generation) = generation {
                dialect.changed_generation(&mut tx, generation).await?;
            }
            tx.commit().await?;
            generation
        });
        if let Some(generation) = generation {
            self.forget_generation(generation);
        }
        Ok(generation.is_some())
    }

    async fn enqueue_delivery(&self, delivery: &NewDelivery) -> StoreResult<()> {
        transaction!(self, |tx, dialect| {
            insert_deliveries!(tx, dialect, &[delivery]);
            tx.commit().await?;
            Ok(())
        })
    }

    /// The scan reads a window of the first due deliveries (ids and endpoints, from the due index)
    /// and takes those not held and not of a `skip`ped or `fed` endpoint. Rows of those endpoints
    /// can fill the window: a receiver that hangs or answers slowly with a long backlog. Then what
    /// is due behind them is found by endpoint instead: the endpoints with due deliveries that the
    /// window showed nothing of, one index seek each, claimed by endpoint with the room left.
    /// Reading on past the window would read every row of such a backlog on every scan (on SQLite
    /// 32 ms a scan with 200,000 rows of hanging receivers due, with the writer and so every
    /// admission waiting; on PostgreSQL 126 ms, with the claimer waiting: BENCHMARKS.md, eleventh
    /// and twelfth passes); stopping at the window would leave the others waiting until the
    /// backlog is gone.
    ///
    /// SQLite is single-node (`serve` holds the database's lock file), so its claim writes nothing:
    /// the engine's set of deliveries in hand (`held`) is the lease, and start-up releases what a
    /// crashed process held. The window is read on the writer's connection, so no attempt recorded
    /// a moment ago is read as still pending. PostgreSQL leases the picks in one statement that
    /// skips rows another node is claiming and those no longer due.
    async fn claim_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        limit: u32,
        skip_endpoints: &[String],
        fed: &[String],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        let want = limit as usize;
        // The scan's window: the first `limit` due rows, and on SQLite what this node holds too
        // (there a claim writes nothing, so held deliveries stay due, mostly among the first).
        let window = want + if matches!(self.backend, Backend::Sqlite(_)) { held.len() } else { 0 };
        let left_out: HashSet<&str> = skip_endpoints.iter().chain(fed).map(String::as_str).collect();
        let (ids, behind) = write!(self, |db| {
            let rows = sqlx::query(&scan_window_sql()).bind(now).bind(window as i64).fetch_all(db).await?;
            // The endpoints left out or shown by the window, taken from or not (borrowed from the
            // rows: the window has thousands, of a few endpoints).
            let mut seen = left_out.clone();
            let mut ids = Vec::with_capacity(want.min(rows.len()));
            for row in &rows {
                let endpoint: &str = sqlx::Row::try_get(row, "endpoint")?;
                if ids.len() < want && !left_out.contains(endpoint) {
                    let id: DeliveryId = parse(row, "id")?;
                    if !held.contains(&id) {
                        ids.push(id.to_string());
                    }
                }
                seen.insert(endpoint);
            }
            let mut behind = Vec::new();
            if rows.len() == window && ids.len() < want {
                let room = want - ids.len();
                let endpoints =
                    sqlx::query(&endpoints_due_sql()).bind(now).bind((room + seen.len()) as i64).fetch_all(db).await?;
                for row in &endpoints {
                    let endpoint = row.text("endpoint")?;
                    if behind.len() < room && !seen.contains(endpoint.as_str()) {
                        behind.push(endpoint);
                    }
                }
            }
            (ids, behind)
        });
        let mut jobs = match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.load_jobs(&ids).await?,
            Backend::Postgres(pg) => pg.claim_ids(owner, now, lease_until, &ids).await?,
        };
        if !behind.is_empty() {
            // The room left (endpoints are looked for behind the window only when its picks come
            // short), shared among the endpoints found there.
            let each = ((want - jobs.len()) / behind.len()).max(1) as u32;
            let wanted: Vec<EndpointClaim> =
                behind.into_iter().map(|endpoint| EndpointClaim { endpoint, want: each, held: 0 }).collect();
            jobs.extend(self.claim_endpoint_deliveries(owner, now, lease_until, &wanted, held).await?);
        }
        Ok(jobs)
    }

    async fn claim_endpoint_deliveries(
        &self,
        owner: &str,
        now: Millis,
        lease_until: Millis,
        wanted: &[EndpointClaim],
        held: &HashSet<DeliveryId>,
    ) -> StoreResult<Vec<DeliveryJob>> {
        match &self.backend {
            Backend::Sqlite(sqlite) => sqlite.claim_endpoint_deliveries(now, wanted, held).await,
            Backend::Postgres(pg) => pg.claim_endpoint_deliveries(owner, now, lease_until, wanted).await,
        }
    }

    /// Queued with the admissions and finishes waiting for the writer (see [`SqlStore::writes`]).
    async fn record_attempts(&self, records: &[AttemptRecord]) -> StoreResult<Vec<DisabledWebhook>> {
        if records.is_empty() {
            return Ok(Vec::new());
        }
        match self.write(Work::Record(records.to_vec())).await? {
            Written::Recorded(disabled) => Ok(disabled),
            _ => Err(mismatched()),
        }
    }

    async fn enable_webhook(&self, id: ApiKeyId, user: Option<UserId>, now: Millis) -> StoreResult<bool> {
        let enabled = transaction!(self, |tx, dialect| {
            let row = sqlx::query(&format!(
                "SELECT webhook_disabled_at FROM api_keys WHERE id = $1 AND deleted_at IS NULL \
                 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2){}",
                dialect.row_lock(" FOR UPDATE")
            ))
            .bind(id.to_string())
            .bind(user.map(|u| u.to_string()))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(false) };
            sqlx::query("UPDATE api_keys SET webhook_disabled_at = NULL, webhook_failing_since = NULL WHERE id = $1")
                .bind(id.to_string())
                .execute(&mut *tx)
                .await?;
            if row.opt_int("webhook_disabled_at")?.is_some() {
                // Everything held is due now, oldest first: the claims take due deliveries in
                // `next_attempt_at` order.
                make_due!(
                    tx,
                    dialect,
                    "UPDATE webhook_deliveries SET next_attempt_at = created_at, updated_at = $2 \
                     WHERE api_key_id = $1 AND status = 'pending' AND lease_owner IS NULL",
                    id,
                    now
                );
            }
            tx.commit().await?;
            StoreResult::Ok(true)
        })?;
        self.keys.forget(id);
        Ok(enabled)
    }

    async fn count_deliveries(&self, status: DeliveryStatus) -> StoreResult<u64> {
        let count: i64 = read!(self, |db| {
            sqlx::query_scalar("SELECT COUNT(*) FROM webhook_deliveries WHERE status = $1")
                .bind(status.as_str())
                .fetch_one(db)
                .await?
        });
        Ok(count as u64)
    }

    async fn next_delivery_due(&self) -> StoreResult<Option<Millis>> {
        Ok(read!(self, |db| {
            sqlx::query_scalar(&format!(
                "SELECT MIN(next_attempt_at) FROM webhook_deliveries WHERE status = 'pending' AND NOT {HELD}"
            ))
            .fetch_one(db)
            .await?
        }))
    }

    async fn list_deliveries(&self, filter: &DeliveryFilter) -> StoreResult<Vec<Delivery>> {
        read!(self, |db| {
            sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE (CAST($1 AS TEXT) IS NULL OR generation_id = $1) \
                 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2) AND (CAST($3 AS TEXT) IS NULL OR status = $3) \
                 ORDER BY created_at DESC, id DESC LIMIT $4"
            ))
            .bind(filter.generation.map(|g| g.to_string()))
            .bind(filter.user.map(|u| u.to_string()))
            .bind(filter.status.map(|s| s.as_str()))
            .bind(i64::from(filter.limit))
            .fetch_all(db)
            .await?
            .iter()
            .map(delivery_from_row)
            .collect()
        })
    }

    async fn get_delivery(
        &self,
        id: DeliveryId,
        user: Option<UserId>,
    ) -> StoreResult<Option<(Delivery, Vec<Attempt>)>> {
        read!(self, |db| {
            let row = sqlx::query(&format!(
                "SELECT {DELIVERY_COLUMNS} FROM webhook_deliveries WHERE id = $1 \
                 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)"
            ))
            .bind(id.to_string())
            .bind(user.map(|u| u.to_string()))
            .fetch_optional(db)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let delivery = delivery_from_row(&row)?;
            let attempts =
                sqlx::query("SELECT * FROM webhook_attempts WHERE delivery_id = $1 ORDER BY attempt, started_at")
                    .bind(id.to_string())
                    .fetch_all(db)
                    .await?
                    .iter()
                    .map(attempt_from_row)
                    .collect::<StoreResult<_>>()?;
            Ok(Some((delivery, attempts)))
        })
    }

    async fn delivery_payload(&self, id: DeliveryId) -> StoreResult<Option<Bytes>> {
        let body: Option<Vec<u8>> = read!(self, |db| {
            sqlx::query_scalar("SELECT body FROM webhook_payloads WHERE delivery_id = $1")
                .bind(id.to_string())
                .fetch_optional(db)
                .await?
        });
        Ok(body.map(Bytes::from))
    }

    async fn retry_delivery(&self, id: DeliveryId, user: Option<UserId>, now: Millis) -> StoreResult<Redelivery> {
        transaction!(self, |tx, dialect| {
            // The row is held until the commit, so concurrent requests decide one after another.
            let row = sqlx::query(&format!(
                "SELECT status, lease_owner IS NOT NULL AS leased, next_attempt_at, redelivered_at \
                 FROM webhook_deliveries WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2){}",
                dialect.row_lock(" FOR UPDATE")
            ))
            .bind(id.to_string())
            .bind(user.map(|u| u.to_string()))
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(Redelivery::Missing) };
            let answer = redelivery_of(&row, now)?;
            if answer == Redelivery::Queued {
                make_due!(
                    tx,
                    dialect,
                    "UPDATE webhook_deliveries SET schedule_index = 0, updated_at = $2, finished_at = NULL, \
                     next_attempt_at = $2, redelivered_at = $2, status = 'pending' WHERE id = $1",
                    id,
                    now
                );
            }
            tx.commit().await?;
            Ok(answer)
        })
    }

    async fn retry_failed_deliveries(&self, since: Millis, now: Millis) -> StoreResult<u64> {
        transaction!(self, |tx, dialect| {
            let retried = sqlx::query(
                "UPDATE webhook_deliveries SET status = 'pending', schedule_index = 0, next_attempt_at = $2, \
                 updated_at = $2, finished_at = NULL, lease_owner = NULL WHERE status = 'failed' AND finished_at >= $1 \
                 AND event_type <> $3",
            )
            .bind(since)
            .bind(now)
            .bind(TEST_EVENT_TYPE)
            .execute(&mut *tx)
            .await?
            .rows_affected();
            if retried > 0 {
                dialect.notify(&mut tx, DELIVERY_CHANNEL).await?;
            }
            tx.commit().await?;
            Ok(retried)
        })
    }

    async fn create_bin(&self, bin: &Bin, max_bins: u32, now: Millis) -> StoreResult<bool> {
        transaction!(self, |tx, dialect| {
            dialect.lock_user(&mut tx, bin.user_id).await?;
            sqlx::query("DELETE FROM inspector_bins WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
            let inserted = sqlx::query(
                "INSERT INTO inspector_bins (id, user_id, created_at, expires_at, response_status, response_headers, \
                 response_body, response_delay_ms) SELECT $1, $2, $3, $4, $5, $6, $7, $8 \
                 WHERE (SELECT COUNT(*) FROM inspector_bins WHERE user_id = $2) < $9",
            )
            .bind(bin.id.to_string())
            .bind(bin.user_id.to_string())
            .bind(bin.created_at)
            .bind(bin.expires_at)
            .bind(i64::from(bin.response.status))
            .bind(headers_text(&bin.response.headers))
            .bind(bin.response.body.as_slice())
            .bind(i64::from(bin.response.delay_ms))
            .bind(i64::from(max_bins))
            .execute(&mut *tx)
            .await?
            .rows_affected();
            tx.commit().await?;
            Ok(inserted == 1)
        })
    }

    async fn list_bins(&self, user: Option<UserId>, now: Millis) -> StoreResult<Vec<Bin>> {
        read!(self, |db| {
            let rows = sqlx::query(&format!(
                "SELECT {BIN_COLUMNS} FROM inspector_bins b WHERE b.expires_at > $1 \
                 AND (CAST($2 AS TEXT) IS NULL OR b.user_id = $2) ORDER BY b.created_at, b.id"
            ))
            .bind(now)
            .bind(user.map(|u| u.to_string()))
            .fetch_all(db)
            .await?;
            rows.iter().map(bin_from_row).collect()
        })
    }

    async fn get_bin(&self, id: uuid::Uuid, user: Option<UserId>, now: Millis) -> StoreResult<Option<Bin>> {
        read!(self, |db| {
            let row = sqlx::query(&format!(
                "SELECT {BIN_COLUMNS} FROM inspector_bins b WHERE b.id = $1 AND b.expires_at > $2 \
                 AND (CAST($3 AS TEXT) IS NULL OR b.user_id = $3)"
            ))
            .bind(id.to_string())
            .bind(now)
            .bind(user.map(|u| u.to_string()))
            .fetch_optional(db)
            .await?;
            row.as_ref().map(bin_from_row).transpose()
        })
    }

    async fn set_bin_response(
        &self,
        id: uuid::Uuid,
        user: UserId,
        response: &BinResponse,
        now: Millis,
    ) -> StoreResult<bool> {
        write!(self, |db| {
            let updated = sqlx::query(
                "UPDATE inspector_bins SET response_status = $4, response_headers = $5, response_body = $6, \
                 response_delay_ms = $7 WHERE id = $1 AND user_id = $2 AND expires_at > $3",
            )
            .bind(id.to_string())
            .bind(user.to_string())
            .bind(now)
            .bind(i64::from(response.status))
            .bind(headers_text(&response.headers))
            .bind(response.body.as_slice())
            .bind(i64::from(response.delay_ms))
            .execute(db)
            .await?;
            Ok(updated.rows_affected() == 1)
        })
    }

    async fn delete_bin(&self, id: uuid::Uuid, user: Option<UserId>) -> StoreResult<bool> {
        transaction!(self, |tx, dialect| {
            let _ = dialect;
            let owned = sqlx::query(
                "SELECT 1 FROM inspector_bins WHERE id = $1 AND (CAST($2 AS TEXT) IS NULL OR user_id = $2)",
            )
            .bind(id.to_string())
            .bind(user.map(|u| u.to_string()))
            .fetch_optional(&mut *tx)
            .await?
            .is_some();
            if owned {
                sqlx::query("DELETE FROM inspector_requests WHERE bin_id = $1")
                    .bind(id.to_string())
                    .execute(&mut *tx)
                    .await?;
                sqlx::query("DELETE FROM inspector_bins WHERE id = $1").bind(id.to_string()).execute(&mut *tx).await?;
            }
            tx.commit().await?;
            Ok(owned)
        })
    }

    async fn capture_request(
        &self,
        request: &CapturedRequest,
        limits: BinLimits,
    ) -> StoreResult<Option<(i64, BinResponse)>> {
        let bin = request.bin_id.to_string();
        let headers = headers_text(&request.headers);
        let stored = (request.body.len() + request.path.len() + headers.len() + request.method.len()) as i64;
        transaction!(self, |tx, dialect| {
            let _ = dialect;
            // The update takes the bin's row lock: one bin's captures are serialized, so their
            // numbers follow the order of their commits.
            let row = sqlx::query(
                "UPDATE inspector_bins SET next_seq = next_seq + 1 WHERE id = $1 AND expires_at > $2 \
                 RETURNING next_seq, response_status, response_headers, response_body, response_delay_ms",
            )
            .bind(&bin)
            .bind(request.received_at)
            .fetch_optional(&mut *tx)
            .await?;
            let Some(row) = row else { return Ok(None) };
            let seq = row.int("next_seq")?;
            let response = bin_response_from_row(&row)?;
            sqlx::query(
                "INSERT INTO inspector_requests (bin_id, seq, received_at, method, path, headers, body, body_size, \
                 source, verification, stored_bytes) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11)",
            )
            .bind(&bin)
            .bind(seq)
            .bind(request.received_at)
            .bind(&request.method)
            .bind(&request.path)
            .bind(&headers)
            .bind(request.body.as_slice())
            .bind(request.body_size)
            .bind(&request.source)
            .bind(request.verification.as_deref())
            .bind(stored)
            .execute(&mut *tx)
            .await?;
            let max_requests = i64::try_from(limits.max_requests).unwrap_or(i64::MAX);
            sqlx::query("DELETE FROM inspector_requests WHERE bin_id = $1 AND seq <= $2")
                .bind(&bin)
                .bind(seq.saturating_sub(max_requests))
                .execute(&mut *tx)
                .await?;
            sqlx::query(
                "DELETE FROM inspector_requests WHERE bin_id = $1 AND seq < $2 AND seq IN (SELECT seq FROM \
                 (SELECT seq, SUM(stored_bytes) OVER (ORDER BY seq DESC) AS kept FROM inspector_requests \
                 WHERE bin_id = $1) newest WHERE kept > $3)",
            )
            .bind(&bin)
            .bind(seq)
            .bind(i64::try_from(limits.max_bytes).unwrap_or(i64::MAX))
            .execute(&mut *tx)
            .await?;
            tx.commit().await?;
            Ok(Some((seq, response)))
        })
    }

    async fn list_requests(
        &self,
        bin: uuid::Uuid,
        user: Option<UserId>,
        before: Option<i64>,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Option<Vec<CapturedRequest>>> {
        if self.get_bin(bin, user, now).await?.is_none() {
            return Ok(None);
        }
        read!(self, |db| {
            let rows = sqlx::query(&format!(
                "SELECT {REQUEST_COLUMNS} FROM inspector_requests WHERE bin_id = $1 AND seq < $2 \
                 ORDER BY seq DESC LIMIT $3"
            ))
            .bind(bin.to_string())
            .bind(before.unwrap_or(i64::MAX))
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?;
            rows.iter().map(request_from_row).collect::<StoreResult<Vec<_>>>().map(Some)
        })
    }

    async fn requests_after(
        &self,
        bin: uuid::Uuid,
        user: Option<UserId>,
        after: i64,
        limit: u32,
        now: Millis,
    ) -> StoreResult<Option<Vec<CapturedRequest>>> {
        if self.get_bin(bin, user, now).await?.is_none() {
            return Ok(None);
        }
        read!(self, |db| {
            let rows = sqlx::query(&format!(
                "SELECT {REQUEST_COLUMNS} FROM inspector_requests WHERE bin_id = $1 AND seq > $2 \
                 ORDER BY seq LIMIT $3"
            ))
            .bind(bin.to_string())
            .bind(after)
            .bind(i64::from(limit))
            .fetch_all(db)
            .await?;
            rows.iter().map(request_from_row).collect::<StoreResult<Vec<_>>>().map(Some)
        })
    }

    async fn purge_expired_bins(&self, now: Millis) -> StoreResult<u64> {
        transaction!(self, |tx, dialect| {
            let _ = dialect;
            sqlx::query(
                "DELETE FROM inspector_requests WHERE bin_id IN (SELECT id FROM inspector_bins WHERE expires_at <= $1)",
            )
            .bind(now)
            .execute(&mut *tx)
            .await?;
            let purged =
                sqlx::query("DELETE FROM inspector_bins WHERE expires_at <= $1").bind(now).execute(&mut *tx).await?;
            tx.commit().await?;
            Ok(purged.rows_affected())
        })
    }
}

/// How one batch of attempts moves a key's failing clock.
#[derive(Default)]
struct KeyClock {
    /// An attempt succeeded: the clock restarts at `failing_since` (`None`: stopped).
    reset: bool,
    /// The first failure after the batch's last success (or in the batch, without one).
    failing_since: Option<Millis>,
    /// The batch's last failure.
    last_failure: Option<Millis>,
}

/// Each key's clock after `records`, in key id order.
fn key_clocks(records: &[&AttemptRecord]) -> std::collections::BTreeMap<String, KeyClock> {
    let mut attempts: Vec<(String, Millis, bool)> = records
        .iter()
        .map(|r| (r.api_key_id.to_string(), r.attempt.started_at, r.next == NextStep::Succeeded))
        .collect();
    attempts.sort_by(|a, b| (&a.0, a.1).cmp(&(&b.0, b.1)));
    let mut clocks = std::collections::BTreeMap::<String, KeyClock>::new();
    for (key, at, succeeded) in attempts {
        let clock = clocks.entry(key).or_default();
        if succeeded {
            clock.reset = true;
            clock.failing_since = None;
        } else {
            clock.failing_since.get_or_insert(at);
            clock.last_failure = Some(at);
        }
    }
    clocks
}

#[cfg(test)]
mod tests {
    use sqlx::Row;

    use super::*;

    /// `EXPLAIN QUERY PLAN`'s steps for `sql` on a fresh SQLite database with the schema.
    async fn sqlite_plan(sql: &str, binds: usize) -> Vec<String> {
        let dir = tempfile::tempdir().unwrap();
        let db = super::super::sqlite::SqliteDb::open(&dir.path().join("easel.db")).await.unwrap();
        let explain = format!("EXPLAIN QUERY PLAN {sql}");
        let mut query = sqlx::query(&explain);
        for _ in 0..binds {
            query = query.bind("x");
        }
        let rows = query.fetch_all(&db.reader).await.unwrap();
        rows.iter().map(|row| row.get::<String, _>("detail")).collect()
    }

    /// A store on a fresh SQLite database in `dir`, with a user and one of their keys.
    async fn sqlite_store(dir: &std::path::Path) -> (Arc<SqlStore>, ApiKey) {
        let config = crate::config::Config { data_dir: dir.to_path_buf(), ..Default::default() };
        let store = super::super::open_sql(&config).await.unwrap();
        let user = crate::admin::create_user(&*store, "u", 10).await.unwrap();
        let master_key = crate::secrets::MasterKey::load(None, dir).unwrap();
        let key = crate::admin::create_api_key(&*store, &master_key, user.id, "k", None, None, &config.webhook)
            .await
            .unwrap()
            .record;
        (store, key)
    }

    fn generation(key: &ApiKey) -> Generation {
        let body = serde_json::json!({"prompt": "p", "width": 64, "height": 64, "num_images": 1});
        let params =
            crate::generation::GenerationParams::parse(&body, &crate::models::Catalogue::new(&[]).unwrap(), |_| 42)
                .unwrap();
        Generation::pending(key.user_id, key.id, params, 1)
    }

    /// `work` as a write, and where its answer comes.
    fn write(work: Work) -> (Write, tokio::sync::oneshot::Receiver<StoreResult<Written>>) {
        let (answer, answered) = tokio::sync::oneshot::channel();
        (Write { work, answer }, answered)
    }

    fn finish(id: GenerationId, owner: &str) -> Work {
        Work::Finish(Box::new(Finish {
            id,
            owner: owner.into(),
            at: 2,
            outcome: JobOutcome::Failed { reason: "r".into() },
            delivery: None,
        }))
    }

    #[tokio::test]
    async fn writes_of_every_kind_waiting_together_share_one_transaction_admissions_first() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key) = sqlite_store(dir.path()).await;
        let generation = generation(&key);
        // The finish comes first in the queue, but the admission it finishes is written first.
        let (finished, finished_answer) = write(finish(generation.id, "node"));
        let (admitted, admitted_answer) = write(Work::Admit(generation_admit(&generation, 10, Some(("node", 9)))));
        let (recorded, recorded_answer) = write(Work::Record(Vec::new()));
        super::super::group::run(&store, vec![finished, admitted, recorded]).await;
        assert!(matches!(admitted_answer.await.unwrap(), Ok(Written::Admission(Admission::Accepted))));
        assert!(matches!(finished_answer.await.unwrap(), Ok(Written::Finished(true))));
        assert!(matches!(recorded_answer.await.unwrap(), Ok(Written::Recorded(disabled)) if disabled.is_empty()));
        let stored = store.get_generation(key.user_id, generation.id).await.unwrap().expect("the generation is stored");
        assert_eq!(stored.status, JobStatus::Failed);
    }

    #[tokio::test]
    async fn a_write_the_database_refuses_fails_alone_and_the_others_waiting_with_it_are_written() {
        let dir = tempfile::tempdir().unwrap();
        let (store, key) = sqlite_store(dir.path()).await;
        let generation = generation(&key);
        // An attempt of a delivery that does not exist breaks a foreign key.
        let attempt = AttemptRecord {
            attempt: Attempt {
                delivery_id: DeliveryId::random(),
                attempt: 1,
                started_at: 1,
                duration_ms: 1,
                status_code: Some(200),
                error_class: None,
                error_detail: None,
                response_excerpt: None,
            },
            api_key_id: ApiKeyId::random(),
            lease_owner: "node".into(),
            next: NextStep::Succeeded,
        };
        let (admitted, admitted_answer) = write(Work::Admit(generation_admit(&generation, 10, None)));
        let (recorded, recorded_answer) = write(Work::Record(vec![attempt]));
        let (finished, finished_answer) = write(finish(GenerationId::random(), "node"));
        super::super::group::run(&store, vec![admitted, recorded, finished]).await;
        assert!(matches!(recorded_answer.await.unwrap(), Err(e) if e.is_rejected_data()));
        assert!(matches!(admitted_answer.await.unwrap(), Ok(Written::Admission(Admission::Accepted))));
        assert!(matches!(finished_answer.await.unwrap(), Ok(Written::Finished(false))));
        let stored = store.get_generation(key.user_id, generation.id).await.unwrap().expect("the generation is stored");
        assert_eq!(stored.status, JobStatus::Pending);
    }

    #[tokio::test]
    async fn a_generations_files_are_found_without_reading_every_variation() {
        let plan = sqlite_plan(GENERATION_FILES, 1).await;
        assert!(plan.iter().all(|step| !step.starts_with("SCAN ")), "a full scan: {plan:?}");
        assert!(plan.iter().any(|step| step.contains("variations_by_image")), "{plan:?}");
    }
}
