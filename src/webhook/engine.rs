//! The delivery engine: claims due deliveries from the store (or takes them straight from this
//! node's render workers), sends them under a global and a per-endpoint concurrency cap, and
//! records every attempt in batches.
//!
//! Three tasks and the sends:
//! - the *claimer* asks the store for due deliveries whenever it is woken (a retry coming due, a
//!   freed slot, an endpoint's queue running low, a poll tick), skipping endpoints whose queue is
//!   full;
//! - the *handoff* task takes deliveries committed on this node and starts them at once;
//! - each *send* makes one attempt, then takes the next delivery queued for its endpoint;
//! - the *recorder* writes attempts in batches (no fsync per delivery; on SQLite a batch shares its
//!   transaction with the admissions and finishes waiting with it).
//!
//! A delivery in memory is always leased in the store (its `next_attempt_at` is the lease's
//! expiry); if this node dies, the lease expires and the delivery is claimed again. Until its
//! attempt is recorded it is in `in_memory`, so this node never sends it twice.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::http::{HeaderMap, HeaderValue};
use tokio::sync::{Notify, Semaphore, mpsc};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use super::client::{AttemptError, ErrorClass, WebhookClient, callback_headers, printable_excerpt};
use super::schedule::{RetryPolicy, Verdict, verdict_for_event, verdict_for_status};
use super::signing::SigningKey;
use crate::clock::{Millis, now_ms, rfc3339_ms};
use crate::config::WebhookConfig;
use crate::config::redact_url;
use crate::ids::{ApiKeyId, DeliveryId};
use crate::secrets::{MasterKey, mask, seal_context};
use crate::store::{
    ApiKey, Attempt, AttemptRecord, DeliveryJob, DisabledWebhook, EndpointClaim, NextStep, Store, TEST_EVENT_TYPE,
};
/// Deliveries this node holds in memory, as a multiple of `max_in_flight`.
const HELD_PER_SLOT: usize = 4;
/// Deliveries queued for one endpoint, beyond those in flight, as a multiple of
/// `per_endpoint_in_flight`; an endpoint with this many queued is skipped by the claimer.
const QUEUED_PER_SLOT: usize = 4;
/// Attempts written per transaction at most.
const RECORD_BATCH: usize = 2000;
/// How long the recorder gathers attempts after the first before it writes them. Recording is off
/// the callback's path (the receiver has its request by then), and the database's one writer is
/// on it: at a thousand callbacks a second, writing each attempt as it comes took a writer
/// transaction per callback, and admissions and finishes queued behind them. 20 ms rather than 5:
/// in a drain, a quarter as many transactions left the writer more time for claims (delivery
/// bench, four interleaved pairs: healthy receivers beside hanging ones +4 to +21 %); the cost is
/// a delivery shown pending 15 ms longer, and at most that much more sent twice after a crash.
const RECORD_LINGER: Duration = Duration::from_millis(20);
/// How long past the shutdown deadline the recorder may take to write the last attempts.
const RECORD_RESERVE: Duration = Duration::from_secs(1);
/// Cached key secrets; the cache is cleared when it grows past this.
const SECRET_CACHE_LIMIT: usize = 10_000;

/// A receiver inside this Easel (the request inspector's bins): a delivery to one of its URLs is
/// handed to it in-process, with exactly the headers and body the network client would send,
/// instead of connecting anywhere. No connection is made, so the SSRF guard has nothing to check,
/// and it is not opened to this server's own address.
#[async_trait::async_trait]
pub trait LocalReceiver: Send + Sync + 'static {
    /// Whether `url` is one of this receiver's.
    fn owns(&self, url: &str) -> bool;
    /// Takes one callback and answers as the network client reports an answer (status judged by
    /// `AttemptResponse::judge`, a timeout past `webhook.timeout`).
    async fn receive(&self, url: &str, headers: HeaderMap, body: bytes::Bytes) -> super::client::AttemptResponse;
}

/// The secrets a key's callbacks need, opened once.
pub struct KeySecrets {
    /// `Bearer <webhook callback API key>`, when the key has one.
    pub authorization: Option<HeaderValue>,
    /// The webhook callback API key as callback bodies show it (masked).
    pub webhook_api_key_masked: Option<String>,
    pub signing: SigningKey,
}

impl KeySecrets {
    /// Opens `key`'s sealed webhook key and signing secret; a `configuration` error when they do
    /// not open (another master key).
    pub fn open(master_key: &MasterKey, key: &ApiKey) -> Result<KeySecrets, AttemptError> {
        let unavailable = |why: &str| AttemptError::new(ErrorClass::Configuration, why);
        let signing = master_key
            .open(&key.signing_secret_sealed, &seal_context(key.id, "signing_secret"))
            .ok()
            .and_then(|secret| SigningKey::from_secret(&String::from_utf8_lossy(&secret)))
            .ok_or_else(|| unavailable("the signing secret does not open with this master key"))?;
        let webhook_api_key = match &key.webhook_api_key_sealed {
            None => None,
            Some(sealed) => Some(
                master_key
                    .open(sealed, &seal_context(key.id, "webhook_api_key"))
                    .map_err(|_| unavailable("the webhook API key does not open with this master key"))?,
            ),
        };
        KeySecrets::new(webhook_api_key.as_deref(), signing)
    }

    /// The secrets of a webhook key (`None`: callbacks carry no `authorization`) and a signing key.
    pub fn new(webhook_api_key: Option<&[u8]>, signing: SigningKey) -> Result<KeySecrets, AttemptError> {
        let authorization = match webhook_api_key {
            None => None,
            Some(secret) => {
                let mut value = HeaderValue::from_bytes(&[b"Bearer ".as_slice(), secret].concat()).map_err(|_| {
                    AttemptError::new(ErrorClass::Configuration, "the webhook API key is not a valid header value")
                })?;
                value.set_sensitive(true);
                Some(value)
            }
        };
        let webhook_api_key_masked = webhook_api_key.map(|secret| mask(&String::from_utf8_lossy(secret)));
        Ok(KeySecrets { authorization, webhook_api_key_masked, signing })
    }
}

#[derive(Default)]
struct EndpointState {
    in_flight: usize,
    queued: VecDeque<DeliveryJob>,
    /// The store likely holds more due deliveries for this endpoint: the claimer asks for them
    /// by endpoint whenever its queue runs low, instead of scanning everything that is due.
    backlogged: bool,
}

impl EndpointState {
    fn idle(&self) -> bool {
        self.in_flight == 0 && self.queued.is_empty() && !self.backlogged
    }
}

pub struct DeliveryEngine {
    store: Arc<dyn Store>,
    client: WebhookClient,
    policy: RetryPolicy,
    config: WebhookConfig,
    node_id: String,
    master_key: MasterKey,
    /// Each key's secrets, opened once: a burst of sends for a key not seen yet reads it once.
    secrets: Mutex<HashMap<ApiKeyId, Arc<tokio::sync::OnceCell<Arc<KeySecrets>>>>>,
    global: Semaphore,
    endpoints: Mutex<HashMap<String, EndpointState>>,
    /// Deliveries this node holds (queued, in flight, or attempted but not yet recorded), with
    /// their endpoints.
    in_memory: Mutex<HashMap<DeliveryId, Arc<str>>>,
    records: mpsc::UnboundedSender<AttemptRecord>,
    /// Wakes the claimer to feed endpoints whose queues run low.
    wake: Notify,
    /// Wakes the claimer to scan for everything due (new deliveries left to claim, retries coming
    /// due, redeliveries).
    scan: Arc<Notify>,
    /// The earliest time a retry made by this node comes due.
    next_wake: Mutex<Option<Millis>>,
    /// The claimer stopped claiming because this node holds all it may.
    starved: AtomicBool,
    sends: TaskTracker,
    cancel_sends: CancellationToken,
    metrics: Arc<crate::metrics::Metrics>,
    /// The in-process receiver for this Easel's own URLs (set once at start-up).
    local: std::sync::OnceLock<Arc<dyn LocalReceiver>>,
}

/// A handle to this node's delivery engine, for the fast path.
#[derive(Clone)]
pub struct DeliveryQueue {
    pub(super) handoff: mpsc::Sender<DeliveryJob>,
    pub(super) engine: std::sync::Weak<DeliveryEngine>,
    pub(super) wake: Arc<Notify>,
    pub(super) node_id: String,
    pub(super) lease: Duration,
}

impl DeliveryQueue {
    /// Deliveries the engine holds in memory now (`None` once it has stopped).
    pub fn held(&self) -> Option<usize> {
        self.engine.upgrade().map(|engine| engine.in_memory.lock().expect("lock").len())
    }

    /// What wakes the engine to claim from the store (after a redelivery, say).
    pub fn wakeup(&self) -> Arc<Notify> {
        self.wake.clone()
    }
}

/// The receiving ends of the engine's channels, consumed by `run`.
pub struct EngineInbox {
    handoff: mpsc::Receiver<DeliveryJob>,
    records: mpsc::UnboundedReceiver<AttemptRecord>,
}

impl DeliveryEngine {
    pub fn new(
        store: Arc<dyn Store>,
        config: WebhookConfig,
        master_key: MasterKey,
        node_id: String,
        metrics: Arc<crate::metrics::Metrics>,
    ) -> Result<(Arc<DeliveryEngine>, DeliveryQueue, EngineInbox), crate::setting::InvalidSetting> {
        let client = WebhookClient::new(&config)?;
        let (handoff_tx, handoff) = mpsc::channel(config.max_in_flight);
        let (records_tx, records) = mpsc::unbounded_channel();
        let scan = Arc::new(Notify::new());
        let policy = RetryPolicy {
            schedule: config.retry_schedule.clone(),
            jitter: config.retry_jitter,
            max_retry_after: config.max_retry_after,
        };
        let engine = Arc::new(DeliveryEngine {
            store,
            client,
            policy,
            global: Semaphore::new(config.max_in_flight),
            config,
            node_id,
            master_key,
            secrets: Mutex::new(HashMap::new()),
            endpoints: Mutex::new(HashMap::new()),
            in_memory: Mutex::new(HashMap::new()),
            records: records_tx,
            wake: Notify::new(),
            scan,
            next_wake: Mutex::new(None),
            starved: AtomicBool::new(false),
            sends: TaskTracker::new(),
            cancel_sends: CancellationToken::new(),
            metrics,
            local: std::sync::OnceLock::new(),
        });
        let queue = DeliveryQueue {
            handoff: handoff_tx,
            engine: Arc::downgrade(&engine),
            wake: engine.scan.clone(),
            node_id: engine.node_id.clone(),
            lease: engine.config.lease,
        };
        Ok((engine, queue, EngineInbox { handoff, records }))
    }

    /// Hands deliveries to `receiver`'s URLs to it in-process (see [`LocalReceiver`]).
    pub fn set_local_receiver(&self, receiver: Arc<dyn LocalReceiver>) {
        let _ = self.local.set(receiver);
    }

    /// Runs until `shutdown`, then lets sends in flight finish until `deadline` (the end of the
    /// node's shutdown grace) and records them. Attempts the database will not take by then (it
    /// is down, say) are given up: their deliveries stay leased and are sent again later.
    pub async fn run(self: Arc<Self>, inbox: EngineInbox, shutdown: CancellationToken, deadline: CancellationToken) {
        let recorder_done = CancellationToken::new();
        let abandon = CancellationToken::new();
        let mut recorder = tokio::spawn(self.clone().record(inbox.records, recorder_done.clone(), abandon.clone()));
        let handoff = tokio::spawn(self.clone().take_handoffs(inbox.handoff, shutdown.clone()));
        self.clone().claim(shutdown).await;
        let _ = handoff.await;
        self.sends.close();
        tokio::select! {
            _ = self.sends.wait() => {}
            _ = deadline.cancelled() => {
                tracing::warn!("webhook attempts cut short by shutdown; they are retried after the restart");
                self.cancel_sends.cancel();
                self.sends.wait().await;
            }
        }
        recorder_done.cancel();
        // The recorder may take a moment past the deadline for what the last sends returned.
        let reserve = async {
            deadline.cancelled().await;
            tokio::time::sleep(RECORD_RESERVE).await;
        };
        tokio::select! {
            _ = &mut recorder => return,
            _ = reserve => {}
        }
        abandon.cancel();
        let _ = recorder.await;
    }

    async fn take_handoffs(self: Arc<Self>, mut handoff: mpsc::Receiver<DeliveryJob>, shutdown: CancellationToken) {
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => return,
                job = handoff.recv() => match job {
                    Some(job) => { self.accept(job); }
                    None => return,
                },
            }
        }
    }

    /// Takes a delivery into memory (unless it is already here) and starts or queues it.
    fn accept(self: &Arc<Self>, job: DeliveryJob) -> bool {
        {
            let mut in_memory = self.in_memory.lock().expect("lock");
            if in_memory.contains_key(&job.id) {
                return false;
            }
            in_memory.insert(job.id, Arc::from(job.endpoint.as_str()));
        }
        let mut endpoints = self.endpoints.lock().expect("lock");
        let state = endpoints.entry(job.endpoint.clone()).or_default();
        if state.in_flight < self.config.per_endpoint_in_flight {
            state.in_flight += 1;
            drop(endpoints);
            let engine = self.clone();
            self.sends.spawn(async move { engine.send(job).await });
        } else {
            state.queued.push_back(job);
        }
        true
    }

    /// Whether a delivery for `endpoint` finished on this node may come straight into memory: the
    /// same bounds as the claimer's (deliveries held, the endpoint's queue). If not, it waits in the
    /// store, and the endpoint is marked as having a backlog so it is fed from there as its queue
    /// drains.
    pub(super) fn has_room_for(&self, endpoint: &str) -> bool {
        if self.in_memory.lock().expect("lock").len() >= self.capacity() {
            self.starved.store(true, Ordering::SeqCst);
            self.set_backlogged(endpoint, true);
            return false;
        }
        let mut endpoints = self.endpoints.lock().expect("lock");
        let Some(state) = endpoints.get_mut(endpoint) else { return true };
        if state.in_flight < self.config.per_endpoint_in_flight || state.queued.len() < self.queue_limit() {
            return true;
        }
        state.backlogged = true;
        false
    }

    /// How many deliveries this node holds in memory at most.
    fn capacity(&self) -> usize {
        self.config.max_in_flight * HELD_PER_SLOT
    }

    /// How many queued deliveries make an endpoint skipped by the claimer.
    fn queue_limit(&self) -> usize {
        self.config.per_endpoint_in_flight * QUEUED_PER_SLOT
    }

    /// What a scan leaves out: endpoints with a full queue (claiming more for them would only
    /// hold memory, and for a receiver that hangs, hold it until the timeout), and the others
    /// with a backlog, which are fed by endpoint as their queues run low.
    fn scan_exclusions(&self) -> (Vec<String>, Vec<String>) {
        let limit = self.queue_limit();
        let endpoints = self.endpoints.lock().expect("lock");
        let (mut blocked, mut fed) = (Vec::new(), Vec::new());
        for (endpoint, state) in endpoints.iter() {
            if state.queued.len() >= limit {
                blocked.push(endpoint.clone());
            } else if state.backlogged {
                fed.push(endpoint.clone());
            }
        }
        (blocked, fed)
    }

    /// Makes attempts for one endpoint's deliveries, one after another, while any are queued.
    async fn send(self: Arc<Self>, mut job: DeliveryJob) {
        loop {
            let record = tokio::select! {
                record = self.attempt(&job) => record,
                _ = self.cancel_sends.cancelled() => return,
            };
            let _ = self.records.send(record);
            let mut endpoints = self.endpoints.lock().expect("lock");
            let state = endpoints.get_mut(&job.endpoint).expect("an endpoint with a send in flight is tracked");
            if state.backlogged && state.queued.len() <= self.queue_limit() / 2 {
                // Running low while the store holds more: the claimer refills this endpoint
                // (notifications coalesce: one claim round serves every hungry endpoint).
                self.wake.notify_one();
            }
            match state.queued.pop_front() {
                Some(next) => job = next,
                None => {
                    state.in_flight -= 1;
                    if state.idle() {
                        endpoints.remove(&job.endpoint);
                    }
                    return;
                }
            }
        }
    }

    /// One attempt: sign, send, judge.
    async fn attempt(&self, job: &DeliveryJob) -> AttemptRecord {
        let local = self.local.get().filter(|receiver| receiver.owns(&job.url));
        let (attempt, verdict) = match self.headers(job, local.is_some()).await {
            Ok(headers) => {
                let permit = self.global.acquire().await.expect("the semaphore is never closed");
                let response = match local {
                    Some(receiver) => receiver.receive(&job.url, headers, job.payload.clone()).await,
                    None => self.client.post(&job.url, headers, job.payload.clone()).await,
                };
                drop(permit);
                let verdict = match (&response.error, response.status) {
                    (None, _) => Verdict::Delivered,
                    (Some(_), Some(status)) => verdict_for_status(status, response.retry_after),
                    (Some(_), None) => Verdict::Retry { retry_after: None },
                };
                (response.logged(job.id, job.attempt_count + 1), verdict)
            }
            Err(error) => {
                let attempt = Attempt {
                    delivery_id: job.id,
                    attempt: job.attempt_count + 1,
                    started_at: now_ms(),
                    duration_ms: 0,
                    status_code: None,
                    error_class: Some(error.class.as_str().to_string()),
                    error_detail: Some(error.detail),
                    response_excerpt: None,
                };
                (attempt, Verdict::Retry { retry_after: None })
            }
        };
        self.metrics.attempt(attempt.error_class.as_deref(), f64::from(attempt.duration_ms) / 1000.0);
        let verdict = verdict_for_event(&job.event_type, verdict);
        let next = self.policy.next_step(verdict, job.schedule_index, now_ms(), fastrand::f64());
        if let Some(class) = &attempt.error_class {
            tracing::warn!(
                delivery.id = %job.id,
                generation.id = %job.generation_id,
                attempt = attempt.attempt,
                error.class = class,
                error.message = attempt.error_detail.as_deref().unwrap_or(""),
                next = ?next,
                "webhook attempt failed"
            );
        } else {
            tracing::debug!(delivery.id = %job.id, status = ?attempt.status_code, "webhook delivered");
        }
        AttemptRecord { attempt, api_key_id: job.api_key_id, lease_owner: self.node_id.clone(), next }
    }

    /// The callback's headers; `local`: for an in-process receiver, where `http://` (this Easel's
    /// own `public_url`) carries nothing over a network.
    async fn headers(&self, job: &DeliveryJob, local: bool) -> Result<HeaderMap, AttemptError> {
        if job.url.starts_with("http://") && !self.config.allow_http && !local {
            return Err(AttemptError::new(
                ErrorClass::Configuration,
                "http:// callback URLs are refused: webhook.allow_http is off",
            ));
        }
        let secrets = self.secrets_for(job.api_key_id).await?;
        let test = job.event_type == TEST_EVENT_TYPE;
        let authorization = secrets.authorization.as_ref();
        Ok(callback_headers(&job.id.to_string(), now_ms() / 1000, authorization, &secrets.signing, &job.payload, test))
    }

    /// The key's secrets, opened once and cached (webhook details are immutable).
    async fn secrets_for(&self, key: ApiKeyId) -> Result<Arc<KeySecrets>, AttemptError> {
        let cell = {
            let mut cache = self.secrets.lock().expect("lock");
            if cache.len() >= SECRET_CACHE_LIMIT && !cache.contains_key(&key) {
                cache.clear();
            }
            cache.entry(key).or_default().clone()
        };
        // Concurrent callers wait for the first one's read; a failed read is not kept (the next
        // caller tries again).
        let secrets = cell
            .get_or_try_init(|| async {
                let unavailable = |why: String| AttemptError::new(ErrorClass::Configuration, why);
                let record = self
                    .store
                    .get_api_key(key)
                    .await
                    .map_err(|e| unavailable(format!("cannot read the API key: {e}")))?
                    .ok_or_else(|| unavailable(format!("the API key {key} no longer exists")))?;
                KeySecrets::open(&self.master_key, &record).map(Arc::new)
            })
            .await?;
        Ok(secrets.clone())
    }

    /// Endpoints with more due work in the store and room in their queues, with how many
    /// deliveries each should get and how many this node already holds for it.
    fn hungry_endpoints(&self, room: usize) -> Vec<EndpointClaim> {
        let limit = self.queue_limit();
        let endpoints = self.endpoints.lock().expect("lock");
        let mut hungry: Vec<EndpointClaim> = endpoints
            .iter()
            .filter(|(_, state)| state.backlogged && state.queued.len() <= limit / 2)
            .map(|(endpoint, state)| EndpointClaim {
                endpoint: endpoint.clone(),
                want: (limit - state.queued.len()) as u32,
                held: 0,
            })
            .collect();
        drop(endpoints);
        let mut budget = room as u32;
        hungry.retain_mut(|claim| {
            claim.want = claim.want.min(budget);
            budget -= claim.want;
            claim.want > 0
        });
        if !hungry.is_empty() {
            let in_memory = self.in_memory.lock().expect("lock");
            for endpoint in in_memory.values() {
                if let Some(claim) = hungry.iter_mut().find(|c| *c.endpoint == **endpoint) {
                    claim.held += 1;
                }
            }
        }
        hungry
    }

    /// Marks whether the store may hold more due deliveries for `endpoint`.
    fn set_backlogged(&self, endpoint: &str, backlogged: bool) {
        let mut endpoints = self.endpoints.lock().expect("lock");
        if backlogged {
            endpoints.entry(endpoint.to_string()).or_default().backlogged = true;
        } else if let Some(state) = endpoints.get_mut(endpoint) {
            state.backlogged = false;
            if state.idle() {
                endpoints.remove(endpoint);
            }
        }
    }

    /// Claims due deliveries until `shutdown`. Endpoints known to have a backlog are fed by
    /// endpoint, as their queues run low; a scan of everything due (skipping endpoints with full
    /// queues) finds the rest, on request, once room comes back after the node held all it may,
    /// and at least every poll interval. A wake-up to feed endpoints does not scan: a scan reads a
    /// window of due rows (and behind a backlog it leaves out, a seek per endpoint), and the sends
    /// that run low wake the claimer several times a second in a drain.
    async fn claim(self: Arc<Self>, shutdown: CancellationToken) {
        let capacity = self.capacity();
        let mut scan_requested = true;
        let mut last_scan = tokio::time::Instant::now();
        while !shutdown.is_cancelled() {
            let held = self.in_memory.lock().expect("lock").len();
            let mut room = capacity.saturating_sub(held).min(self.config.batch_size as usize);
            self.starved.store(room == 0, Ordering::SeqCst);
            if room == 0 {
                // What came due meanwhile is found by a scan once the recorder frees room.
                scan_requested = true;
            }
            let mut scan_again = false;
            let now = now_ms();
            let lease_until = now + self.config.lease.as_millis() as Millis;
            let hungry = if room > 0 { self.hungry_endpoints(room) } else { Vec::new() };
            // What this node holds, copied once per round (up to 4 × max_in_flight ids) and kept
            // up to date with what the round claims.
            let mut held_ids: Option<HashSet<DeliveryId>> = None;
            if !hungry.is_empty() {
                let held = held_ids.insert(self.held_ids());
                match self.store.claim_endpoint_deliveries(&self.node_id, now, lease_until, &hungry, held).await {
                    Ok(jobs) => {
                        for claim in &hungry {
                            let got = jobs.iter().filter(|job| job.endpoint == claim.endpoint).count();
                            self.set_backlogged(&claim.endpoint, got as u32 == claim.want);
                        }
                        room -= jobs.len().min(room);
                        for job in jobs {
                            held.insert(job.id);
                            self.accept(job);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error.message = %e, "cannot claim webhook deliveries; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            let scan_due = scan_requested || last_scan.elapsed() >= self.config.poll_interval;
            if room > 0 && scan_due {
                scan_requested = false;
                last_scan = tokio::time::Instant::now();
                let (skip, fed) = self.scan_exclusions();
                let held = held_ids.get_or_insert_with(|| self.held_ids());
                let limit = room as u32;
                match self.store.claim_deliveries(&self.node_id, now, lease_until, limit, &skip, &fed, held).await {
                    Ok(jobs) => {
                        // A full batch means more may be due: scan again, and feed these
                        // endpoints by endpoint from now on.
                        scan_again = jobs.len() as u32 == limit;
                        if scan_again {
                            for job in &jobs {
                                self.set_backlogged(&job.endpoint, true);
                            }
                        }
                        for job in jobs {
                            self.accept(job);
                        }
                    }
                    Err(e) => {
                        tracing::error!(error.message = %e, "cannot claim webhook deliveries; retrying");
                        tokio::time::sleep(Duration::from_millis(500)).await;
                    }
                }
            }
            if scan_again {
                scan_requested = true;
                continue;
            }
            let deadline = self.next_deadline(room > 0).await;
            tokio::select! {
                _ = shutdown.cancelled() => {}
                _ = self.wake.notified() => {}
                _ = self.scan.notified() => scan_requested = true,
                _ = tokio::time::sleep_until(deadline) => scan_requested = true,
            }
        }
    }

    /// The ids of the deliveries this node holds.
    fn held_ids(&self) -> HashSet<DeliveryId> {
        self.in_memory.lock().expect("lock").keys().copied().collect()
    }

    /// When the claimer should look again without being woken: the next due delivery or retry,
    /// but at least every poll interval.
    async fn next_deadline(&self, could_claim: bool) -> tokio::time::Instant {
        let now = now_ms();
        let mut next = now + self.config.poll_interval.as_millis() as Millis;
        if could_claim {
            match self.store.next_delivery_due().await {
                // Due ones that were not claimed are leased or at a saturated endpoint: the poll
                // interval (or a wake-up) brings them.
                Ok(Some(due)) if due > now => next = next.min(due),
                Ok(_) => {}
                Err(e) => tracing::warn!(error.message = %e, "cannot read when the next delivery is due"),
            }
        }
        if let Some(wake) = self.next_wake.lock().expect("lock").take() {
            if wake > now {
                next = next.min(wake);
            } else {
                next = now;
            }
        }
        tokio::time::Instant::now() + Duration::from_millis((next - now).max(0) as u64)
    }

    /// Asks the claimer to look again at `at`.
    fn wake_at(&self, at: Millis) {
        let mut next = self.next_wake.lock().expect("lock");
        if next.is_none_or(|current| at < current) {
            *next = Some(at);
            self.scan.notify_one();
        }
    }

    /// Writes attempts in batches until `done`, then writes what is left (until `abandon`).
    async fn record(
        self: Arc<Self>,
        mut records: mpsc::UnboundedReceiver<AttemptRecord>,
        done: CancellationToken,
        abandon: CancellationToken,
    ) {
        loop {
            let first = tokio::select! {
                record = records.recv() => record,
                _ = done.cancelled() => records.try_recv().ok(),
            };
            let mut batch: Vec<AttemptRecord> = first.into_iter().collect();
            let linger = tokio::time::Instant::now() + RECORD_LINGER;
            while batch.len() < RECORD_BATCH {
                let more = if done.is_cancelled() {
                    records.try_recv().ok()
                } else {
                    tokio::time::timeout_at(linger, records.recv()).await.ok().flatten()
                };
                match more {
                    Some(record) => batch.push(record),
                    None => break,
                }
            }
            if batch.is_empty() {
                return;
            }
            if !self.write(&batch, &abandon).await {
                let left = batch.len() + std::iter::from_fn(|| records.try_recv().ok()).count();
                tracing::error!(
                    attempts = left,
                    "shutdown: webhook attempts left unrecorded (the database did not take them); \
                     their deliveries are sent again when their leases expire"
                );
                return;
            }
        }
    }

    /// Records a batch of attempts, whatever the database does: a batch it refuses for its data
    /// is split until the offending record is alone, which is then recorded in a repaired form
    /// (or, if even that is refused, logged and kept out of the way), so one record never blocks
    /// the others; an outage is retried with backoff. Returns false if `abandon` came first.
    async fn write(&self, batch: &[AttemptRecord], abandon: &CancellationToken) -> bool {
        let mut parts: Vec<&[AttemptRecord]> = vec![batch];
        let mut unrecordable: Vec<DeliveryId> = Vec::new();
        let mut backoff = Duration::from_millis(100);
        while let Some(part) = parts.pop() {
            let written = tokio::select! {
                written = self.store.record_attempts(part) => written,
                _ = abandon.cancelled() => return false,
            };
            let error = match written {
                Ok(disabled) => {
                    log_disabled(&disabled);
                    backoff = Duration::from_millis(100);
                    continue;
                }
                Err(error) => error,
            };
            if !error.is_rejected_data() {
                tracing::error!(error.message = %error, attempts = part.len(), "cannot record webhook attempts; retrying");
                parts.push(part);
                tokio::select! {
                    _ = tokio::time::sleep(backoff) => {}
                    _ = abandon.cancelled() => return false,
                }
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
            if part.len() > 1 {
                let (first, second) = part.split_at(part.len() / 2);
                parts.push(second);
                parts.push(first);
                continue;
            }
            let record = &part[0];
            let repaired = repaired_record(record, &error);
            let written = tokio::select! {
                written = self.store.record_attempts(std::slice::from_ref(&repaired)) => written,
                _ = abandon.cancelled() => return false,
            };
            match written {
                Ok(disabled) => {
                    log_disabled(&disabled);
                    tracing::warn!(
                    delivery.id = %record.attempt.delivery_id,
                    error.message = %error,
                        "the database refused a webhook attempt's log entry; recorded it without the receiver's status and response"
                    )
                }
                Err(again) if again.is_rejected_data() => {
                    tracing::error!(
                        delivery.id = %record.attempt.delivery_id,
                        error.message = %again,
                        "the database refuses this delivery's attempt even repaired; this node holds the delivery \
                         (it is not sent again) until it restarts"
                    );
                    unrecordable.push(record.attempt.delivery_id);
                }
                Err(_) => parts.push(part),
            }
        }
        {
            let mut in_memory = self.in_memory.lock().expect("lock");
            for record in batch {
                if !unrecordable.contains(&record.attempt.delivery_id) {
                    in_memory.remove(&record.attempt.delivery_id);
                }
            }
        }
        let earliest_retry = batch
            .iter()
            .filter_map(|record| match record.next {
                NextStep::Retry { at, .. } => Some(at),
                _ => None,
            })
            .min();
        if let Some(at) = earliest_retry {
            self.wake_at(at);
        }
        if self.starved.load(Ordering::SeqCst) {
            self.wake.notify_one();
        }
        true
    }
}

/// One warning per webhook the recorder just disabled.
fn log_disabled(disabled: &[DisabledWebhook]) {
    for webhook in disabled {
        tracing::warn!(
            api_key.id = %webhook.api_key_id,
            url = %webhook.url.as_deref().map(redact_url).unwrap_or_default(),
            failing_since = %rfc3339_ms(webhook.failing_since),
            "webhook disabled: every attempt has failed since {} (webhook.disable_after); its deliveries are held \
             until it is re-enabled (easel keys enable-webhook, POST /webhook/enable)",
            rfc3339_ms(webhook.failing_since)
        );
    }
}

/// An attempt the database refused, without what the receiver sent (its status code and
/// response): the delivery still moves on, and the log says why the entry is thin.
fn repaired_record(record: &AttemptRecord, refused: &crate::store::StoreError) -> AttemptRecord {
    let mut repaired = record.clone();
    let attempt = &mut repaired.attempt;
    let detail = attempt.error_detail.take().map(|d| format!("{}; ", printable_excerpt(d.as_bytes())));
    attempt.error_detail = Some(format!(
        "{}the database refused this attempt's full log entry ({}); the receiver's status code {} and response \
         were not kept",
        detail.unwrap_or_default(),
        printable_excerpt(refused.to_string().as_bytes()),
        attempt.status_code.map(|c| c.to_string()).unwrap_or_else(|| "(none)".into()),
    ));
    attempt.status_code = None;
    attempt.response_excerpt = None;
    repaired
}
