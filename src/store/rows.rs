//! Rows to records, for every backend: the column lists the stores select and the mapping of a
//! row to a record, written once against [`Columns`] (typed column access that both SQLite and
//! PostgreSQL rows provide).

use std::str::FromStr;

use sqlx::Row;

use super::*;

/// Typed column access. Integers are 64-bit in both schemas; ids and times are text and integers.
pub(super) trait Columns {
    fn text(&self, column: &str) -> StoreResult<String>;
    fn opt_text(&self, column: &str) -> StoreResult<Option<String>>;
    fn int(&self, column: &str) -> StoreResult<i64>;
    fn opt_int(&self, column: &str) -> StoreResult<Option<i64>>;
    fn blob(&self, column: &str) -> StoreResult<Vec<u8>>;
    fn opt_blob(&self, column: &str) -> StoreResult<Option<Vec<u8>>>;
    fn boolean(&self, column: &str) -> StoreResult<bool>;
}

macro_rules! columns_for {
    ($row:ty) => {
        impl Columns for $row {
            fn text(&self, column: &str) -> StoreResult<String> {
                Ok(self.try_get(column)?)
            }
            fn opt_text(&self, column: &str) -> StoreResult<Option<String>> {
                Ok(self.try_get(column)?)
            }
            fn int(&self, column: &str) -> StoreResult<i64> {
                Ok(self.try_get(column)?)
            }
            fn opt_int(&self, column: &str) -> StoreResult<Option<i64>> {
                Ok(self.try_get(column)?)
            }
            fn blob(&self, column: &str) -> StoreResult<Vec<u8>> {
                Ok(self.try_get(column)?)
            }
            fn opt_blob(&self, column: &str) -> StoreResult<Option<Vec<u8>>> {
                Ok(self.try_get(column)?)
            }
            fn boolean(&self, column: &str) -> StoreResult<bool> {
                Ok(self.try_get(column)?)
            }
        }
    };
}

columns_for!(sqlx::sqlite::SqliteRow);
columns_for!(sqlx::postgres::PgRow);

fn job_status(row: &impl Columns) -> StoreResult<JobStatus> {
    let text = row.text("status")?;
    JobStatus::parse(&text).ok_or_else(|| StoreError::Corrupt(format!("unknown job status {text:?}")))
}

pub(super) fn parse<T: FromStr>(row: &impl Columns, column: &str) -> StoreResult<T> {
    let text = row.text(column)?;
    text.parse().map_err(|_| StoreError::Corrupt(format!("column {column} holds {text:?}")))
}

pub(super) fn user_from_row(row: &impl Columns) -> StoreResult<User> {
    Ok(User {
        id: parse(row, "id")?,
        username: row.text("username")?,
        api_concurrency_slots: row.int("api_concurrency_slots")? as u32,
        created_at: row.int("created_at")?,
    })
}

pub(super) const API_KEY_COLUMNS: &str = "k.id, k.user_id, k.name, k.created_at, k.last_used_at, k.webhook_url, \
     k.webhook_api_key_sealed, k.signing_secret_sealed, k.deleted_at, k.webhook_failing_since, k.webhook_disabled_at, \
     k.manage_keys, k.key_hint";

pub(super) fn api_key_from_row(row: &impl Columns) -> StoreResult<ApiKey> {
    Ok(ApiKey {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        name: row.text("name")?,
        created_at: row.int("created_at")?,
        last_used_at: row.opt_int("last_used_at")?,
        webhook_url: row.opt_text("webhook_url")?,
        webhook_api_key_sealed: row.opt_blob("webhook_api_key_sealed")?,
        signing_secret_sealed: row.blob("signing_secret_sealed")?,
        deleted_at: row.opt_int("deleted_at")?,
        webhook_failing_since: row.opt_int("webhook_failing_since")?,
        webhook_disabled_at: row.opt_int("webhook_disabled_at")?,
        manage_keys: row.boolean("manage_keys")?,
        key_hint: row.opt_text("key_hint")?,
    })
}

pub(super) const GENERATION_COLUMNS: &str =
    "id, user_id, api_key_id, status, params, failure_reason, created_at, updated_at";

pub(super) fn generation_from_row(row: &impl Columns) -> StoreResult<Generation> {
    let params = row.text("params")?;
    Ok(Generation {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        status: job_status(row)?,
        params: serde_json::from_str(&params).map_err(|e| StoreError::Corrupt(format!("generation params: {e}")))?,
        failure_reason: row.opt_text("failure_reason")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        images: Vec::new(),
    })
}

pub(super) const IMAGE_COLUMNS: &str = "id, generation_id, user_id, idx, storage_key, width, height, created_at";

pub(super) fn image_from_row(row: &impl Columns) -> StoreResult<Image> {
    Ok(Image {
        id: parse(row, "id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        index: row.int("idx")? as u32,
        storage_key: row.text("storage_key")?,
        width: row.int("width")? as u32,
        height: row.int("height")? as u32,
        created_at: row.int("created_at")?,
        variations: Vec::new(),
    })
}

pub(super) const INIT_IMAGE_COLUMNS: &str =
    "id, user_id, kind, extension, storage_key, created_at, expires_at, uploaded_at, size";

pub(super) fn init_image_from_row(row: &impl Columns) -> StoreResult<InitImage> {
    let kind = row.text("kind")?;
    Ok(InitImage {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        kind: InitImageKind::parse(&kind).ok_or_else(|| StoreError::Corrupt(format!("init image kind {kind:?}")))?,
        extension: row.text("extension")?,
        storage_key: row.text("storage_key")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        uploaded_at: row.opt_int("uploaded_at")?,
        size: row.opt_int("size")?,
    })
}

pub(super) const VARIATION_COLUMNS: &str = "id, image_id, generation_id, user_id, api_key_id, transform_type, settings, \
     source_key, status, storage_key, failure_reason, created_at, updated_at, backend";

pub(super) fn variation_from_row(row: &impl Columns) -> StoreResult<Variation> {
    Ok(Variation {
        id: parse(row, "id")?,
        image_id: parse(row, "image_id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        transform: {
            let name = row.text("transform_type")?;
            let settings = row.opt_text("settings")?;
            Transform::from_stored(&name, settings.as_deref()).ok_or_else(|| {
                StoreError::Corrupt(format!("variation transform {name:?} with settings {settings:?}"))
            })?
        },
        source_key: row.opt_text("source_key")?,
        status: job_status(row)?,
        storage_key: row.opt_text("storage_key")?,
        failure_reason: row.opt_text("failure_reason")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        backend: row.opt_text("backend")?,
    })
}

/// A delivery of `webhook_deliveries` (the row in scope) is held: its key's webhook is disabled.
/// Test callbacks (`webhook.test`, [`TEST_EVENT_TYPE`]) are never held: they are how a user checks
/// that the receiver works again.
///
/// The first test does not depend on the row, so the database answers it once per statement
/// (from the partial index `api_keys_webhook_disabled`, empty unless a webhook is disabled), and
/// while it is false the row's own tests are skipped: a scan of due deliveries then reads only
/// the index it scans, not each delivery's row and key (the general scan of a drain took 4.7 ms a
/// statement reading them, 0.8 ms without).
macro_rules! held {
    () => {
        "(EXISTS (SELECT 1 FROM api_keys WHERE webhook_disabled_at IS NOT NULL) \
         AND webhook_deliveries.event_type <> 'webhook.test' AND EXISTS (SELECT 1 FROM api_keys hk \
         WHERE hk.id = webhook_deliveries.api_key_id AND hk.webhook_disabled_at IS NOT NULL))"
    };
}
pub(super) const HELD: &str = held!();

pub(super) const DELIVERY_COLUMNS: &str = concat!(
    "id, generation_id, user_id, api_key_id, event_type, url, status, attempt_count, next_attempt_at, \
     last_status_code, last_error, created_at, updated_at, finished_at, CAST(CASE WHEN status = 'pending' AND ",
    held!(),
    " THEN 1 ELSE 0 END AS BIGINT) AS held"
);

pub(super) fn delivery_from_row(row: &impl Columns) -> StoreResult<Delivery> {
    let status = row.text("status")?;
    let status = DeliveryStatus::parse(&status)
        .ok_or_else(|| StoreError::Corrupt(format!("unknown delivery status {status:?}")))?;
    Ok(Delivery {
        id: parse(row, "id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        event_type: row.text("event_type")?,
        url: row.text("url")?,
        status,
        attempt_count: row.int("attempt_count")? as u32,
        next_attempt_at: (status == DeliveryStatus::Pending).then(|| row.int("next_attempt_at")).transpose()?,
        last_status_code: row.opt_int("last_status_code")?.map(|c| c as u16),
        last_error: row.opt_text("last_error")?,
        created_at: row.int("created_at")?,
        updated_at: row.int("updated_at")?,
        finished_at: row.opt_int("finished_at")?,
        held: row.int("held")? != 0,
    })
}

pub(super) fn attempt_from_row(row: &impl Columns) -> StoreResult<Attempt> {
    Ok(Attempt {
        delivery_id: parse(row, "delivery_id")?,
        attempt: row.int("attempt")? as u32,
        started_at: row.int("started_at")?,
        duration_ms: row.int("duration_ms")? as u32,
        status_code: row.opt_int("status_code")?.map(|c| c as u16),
        error_class: row.opt_text("error_class")?,
        error_detail: row.opt_text("error_detail")?,
        response_excerpt: row.opt_text("response_excerpt")?,
    })
}

/// What recording an attempt writes into its delivery's row.
pub(super) struct DeliveryUpdate {
    pub status: &'static str,
    pub next_attempt_at: Millis,
    /// `None` keeps the row's schedule position.
    pub schedule_index: Option<i64>,
    pub finished_at: Option<Millis>,
    /// When the attempt ended.
    pub at: Millis,
    /// `class: detail` of a failed attempt.
    pub error: Option<String>,
}

impl DeliveryUpdate {
    pub fn of(record: &AttemptRecord) -> DeliveryUpdate {
        let a = &record.attempt;
        let at = a.started_at + i64::from(a.duration_ms);
        let (status, next_attempt_at, schedule_index, finished_at) = match &record.next {
            NextStep::Succeeded => ("succeeded", at, None, Some(at)),
            NextStep::Retry { at: next, schedule_index } => ("pending", *next, Some(i64::from(*schedule_index)), None),
            NextStep::Failed => ("failed", at, None, Some(at)),
        };
        let error = a.error_detail.as_ref().map(|detail| match &a.error_class {
            Some(class) => format!("{class}: {detail}"),
            None => detail.clone(),
        });
        DeliveryUpdate { status, next_attempt_at, schedule_index, finished_at, at, error }
    }
}

/// How recording an attempt updates its delivery, from a row source `v` of `DeliveryUpdate`s
/// (`id, owner, attempt, status, next_at, schedule_index, code, error, at, finished`).
pub(super) const RECORD_ATTEMPT_SET: &str = "SET status = v.status, attempt_count = attempt_count + 1, \
     schedule_index = COALESCE(v.schedule_index, webhook_deliveries.schedule_index), next_attempt_at = v.next_at, \
     lease_owner = NULL, last_status_code = v.code, last_error = v.error, updated_at = v.at, finished_at = v.finished";

/// Only the lease's holder moves a delivery on (an unleased one, claimed on SQLite where the
/// engine's memory is the lease, too); the attempt is logged either way (once).
/// An attempt recorded twice (a batch retried after a commit whose answer was lost) or out of
/// order moves nothing: the delivery must not have counted it yet.
pub(super) const RECORD_ATTEMPT_WHERE: &str = "WHERE webhook_deliveries.id = v.id \
     AND (webhook_deliveries.lease_owner IS NULL OR webhook_deliveries.lease_owner = v.owner) \
     AND webhook_deliveries.attempt_count < v.attempt";

/// A claimed delivery from a row with the delivery's columns and `body` (its payload).
pub(super) fn job_from_row(row: &impl Columns) -> StoreResult<DeliveryJob> {
    Ok(DeliveryJob {
        id: parse(row, "id")?,
        generation_id: parse(row, "generation_id")?,
        user_id: parse(row, "user_id")?,
        api_key_id: parse(row, "api_key_id")?,
        event_type: row.text("event_type")?,
        url: row.text("url")?,
        endpoint: row.text("endpoint")?,
        payload: Bytes::from(row.blob("body")?),
        attempt_count: row.int("attempt_count")? as u32,
        schedule_index: row.int("schedule_index")? as u32,
    })
}

/// The columns `job_from_row` reads, for a query over `webhook_deliveries d JOIN webhook_payloads p`.
pub(super) const JOB_COLUMNS: &str = "d.id, d.generation_id, d.user_id, d.api_key_id, d.event_type, d.url, \
     d.endpoint, d.attempt_count, d.schedule_index, p.body";

/// A claimed job: its work and the claim count the claim returned (`attempts`).
pub(super) fn render_job(work: RenderWork, row: &impl Columns) -> StoreResult<RenderJob> {
    Ok(RenderJob { work, attempt: row.int("attempts")?.clamp(0, i64::from(u32::MAX)) as u32 })
}

/// What asking to redeliver a delivery does, from its `status`, `leased`, `next_attempt_at` and
/// `redelivered_at`: nothing if it is already due (on SQLite a claim writes nothing, and a claimed
/// delivery is due) or leased (in flight), nothing if it was redelivered a moment ago, else queue it.
pub(super) fn redelivery_of(row: &impl Columns, now: Millis) -> StoreResult<Redelivery> {
    let pending = row.text("status")? == "pending";
    if pending && (row.boolean("leased")? || row.int("next_attempt_at")? <= now) {
        return Ok(Redelivery::AlreadyQueued);
    }
    if row.opt_int("redelivered_at")?.is_some_and(|at| at > now - REDELIVERY_INTERVAL_MS) {
        return Ok(Redelivery::TooSoon);
    }
    Ok(Redelivery::Queued)
}

pub(super) const BIN_COLUMNS: &str = "b.id, b.user_id, b.created_at, b.expires_at, b.response_status, \
     b.response_headers, b.response_body, b.response_delay_ms, \
     (SELECT COUNT(*) FROM inspector_requests r WHERE r.bin_id = b.id) AS request_count, \
     (SELECT CAST(COALESCE(SUM(r.stored_bytes), 0) AS BIGINT) FROM inspector_requests r WHERE r.bin_id = b.id) \
     AS stored_bytes";

fn headers_from(row: &impl Columns, column: &str) -> StoreResult<Vec<(String, String)>> {
    let text = row.text(column)?;
    serde_json::from_str(&text).map_err(|e| StoreError::Corrupt(format!("column {column}: {e}")))
}

pub(super) fn headers_text(headers: &[(String, String)]) -> String {
    serde_json::to_string(headers).expect("strings serialize")
}

pub(super) fn bin_response_from_row(row: &impl Columns) -> StoreResult<BinResponse> {
    let status = row.int("response_status")?;
    Ok(BinResponse {
        status: u16::try_from(status).map_err(|_| StoreError::Corrupt(format!("bin response status {status}")))?,
        headers: headers_from(row, "response_headers")?,
        body: row.blob("response_body")?,
        delay_ms: row.int("response_delay_ms")?.clamp(0, i64::from(u32::MAX)) as u32,
    })
}

pub(super) fn bin_from_row(row: &impl Columns) -> StoreResult<Bin> {
    Ok(Bin {
        id: parse(row, "id")?,
        user_id: parse(row, "user_id")?,
        created_at: row.int("created_at")?,
        expires_at: row.int("expires_at")?,
        response: bin_response_from_row(row)?,
        request_count: row.int("request_count")?.max(0) as u64,
        stored_bytes: row.int("stored_bytes")?.max(0) as u64,
    })
}

pub(super) const REQUEST_COLUMNS: &str =
    "bin_id, seq, received_at, method, path, headers, body, body_size, source, verification";

pub(super) fn request_from_row(row: &impl Columns) -> StoreResult<CapturedRequest> {
    Ok(CapturedRequest {
        bin_id: parse(row, "bin_id")?,
        seq: row.int("seq")?,
        received_at: row.int("received_at")?,
        method: row.text("method")?,
        path: row.text("path")?,
        headers: headers_from(row, "headers")?,
        body: row.blob("body")?,
        body_size: row.int("body_size")?,
        source: row.text("source")?,
        verification: row.opt_text("verification")?,
    })
}

/// The statement of a delivery scan's window: the first due deliveries (`$1`: now, `$2`: how
/// many), read from the due index alone.
pub(super) fn scan_window_sql() -> String {
    format!(
        "SELECT id, endpoint FROM webhook_deliveries WHERE status = 'pending' AND NOT {HELD} \
         AND next_attempt_at <= $1 ORDER BY next_attempt_at LIMIT $2"
    )
}

/// The statement that finds the endpoints with due deliveries behind a scan's window: endpoints of
/// pending deliveries, one seek in the due-by-endpoint index from each to the next, with a due
/// delivery (`$1`: now; `$2`: how many at most).
pub(super) fn endpoints_due_sql() -> String {
    format!(
        "WITH RECURSIVE endpoints (endpoint) AS ( \
         SELECT (SELECT endpoint FROM webhook_deliveries WHERE status = 'pending' ORDER BY endpoint LIMIT 1) \
         UNION ALL SELECT (SELECT endpoint FROM webhook_deliveries WHERE status = 'pending' \
         AND endpoint > endpoints.endpoint ORDER BY endpoint LIMIT 1) FROM endpoints WHERE endpoint IS NOT NULL) \
         SELECT endpoint FROM endpoints WHERE endpoint IS NOT NULL AND EXISTS (SELECT 1 FROM webhook_deliveries \
         WHERE status = 'pending' AND endpoint = endpoints.endpoint AND next_attempt_at <= $1 AND NOT {HELD}) \
         LIMIT $2"
    )
}
