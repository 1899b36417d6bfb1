//! The store's conformance suite: the `Store` trait itself, the same tests on SQLite and on
//! PostgreSQL. Leases and their ownership, idempotent attempt records, slot admission under
//! concurrency, claims by endpoint, deletion cascades.

use std::collections::HashSet;
use std::sync::Arc;

use bytes::Bytes;
use easel::clock::{Millis, now_ms};
use easel::generation::GenerationParams;
use easel::ids::{ApiKeyId, DeliveryId, GenerationId, ImageId, UserId, VariationId};
use easel::models::Catalogue;
use easel::store::*;

use crate::helpers::*;

/// A store on a fresh database of the suite's backend, with one user and one key.
struct Fixture {
    store: Arc<dyn Store>,
    user: User,
    key: ApiKey,
    _dir: TestDir,
}

impl Fixture {
    async fn new() -> Fixture {
        let dir = test_dir().await;
        let config = test_config(&dir);
        let store = easel::store::open(&config).await.expect("the store opens");
        let user =
            User { id: UserId::random(), username: "conformance".into(), api_concurrency_slots: 100, created_at: 1 };
        store.create_user(&user).await.unwrap();
        let key = ApiKey {
            id: ApiKeyId::random(),
            user_id: user.id,
            name: "k".into(),
            created_at: 1,
            last_used_at: None,
            webhook_url: None,
            webhook_api_key_sealed: None,
            signing_secret_sealed: vec![1, 2, 3],
            deleted_at: None,
            webhook_failing_since: None,
            webhook_disabled_at: None,
            manage_keys: true,
            key_hint: Some("wxyz".into()),
        };
        store.create_api_key(&key, &format!("hash-{}", key.id)).await.unwrap();
        Fixture { store, user, key, _dir: dir }
    }

    fn generation(&self, created_at: Millis) -> Generation {
        let body = serde_json::json!({"prompt": "conformance", "width": 64, "height": 64, "num_images": 2});
        let params = GenerationParams::parse(&body, &Catalogue::new(&[]).unwrap(), |_| 42).unwrap();
        Generation::pending(self.user.id, self.key.id, params, created_at)
    }

    async fn pending_generation(&self) -> Generation {
        let generation = self.generation(now_ms());
        assert_eq!(self.store.create_generation(&generation, 100, None).await.unwrap(), Admission::Accepted);
        generation
    }

    /// A generation claimed by `owner` and finished with two images and a delivery to `endpoint`.
    async fn completed_with_delivery(&self, owner: &str, endpoint: &str) -> (Generation, DeliveryId) {
        self.completed_with_delivery_due(owner, endpoint, now_ms() - 1).await
    }

    /// A completed generation with a delivery to `endpoint` due since `due`.
    async fn completed_with_delivery_due(&self, owner: &str, endpoint: &str, due: Millis) -> (Generation, DeliveryId) {
        let generation = self.pending_generation().await;
        let now = now_ms();
        let jobs = self.store.claim_render_jobs(owner, now, now + 60_000, 100, &[], &[]).await.unwrap();
        assert!(jobs.iter().any(|j| j.work.id() == RenderJobId::Generation(generation.id)));
        let images = (0..2)
            .map(|index| NewImage {
                id: ImageId::random(),
                index,
                storage_key: format!("users/{}/{}/{index}.jpg", self.user.id, generation.id),
                width: 64,
                height: 64,
            })
            .collect();
        let delivery = NewDelivery {
            id: DeliveryId::random(),
            generation_id: generation.id,
            user_id: self.user.id,
            api_key_id: self.key.id,
            event_type: "image_generation.complete".into(),
            url: format!("{endpoint}/hook"),
            endpoint: endpoint.into(),
            payload: Bytes::from_static(b"{}"),
            created_at: due,
            lease: None,
        };
        let outcome = JobOutcome::Complete(images);
        assert!(self.store.finish_generation(generation.id, owner, now, &outcome, Some(&delivery)).await.unwrap());
        (generation, delivery.id)
    }
}

/// An attempt `attempt` of `delivery` by `owner`, started at `started_at` (two real sends never
/// share their start, the attempt log's key).
fn record(delivery: DeliveryId, attempt: u32, owner: &str, started_at: Millis, next: NextStep) -> AttemptRecord {
    AttemptRecord {
        attempt: Attempt {
            delivery_id: delivery,
            attempt,
            started_at,
            duration_ms: 3,
            status_code: Some(500),
            error_class: Some("http_status".into()),
            error_detail: Some("HTTP 500".into()),
            response_excerpt: Some("down".into()),
        },
        api_key_id: ApiKeyId::random(),
        lease_owner: owner.into(),
        next,
    }
}

#[tokio::test]
async fn a_job_is_finished_only_by_the_holder_of_its_lease() {
    let f = Fixture::new().await;
    let generation = f.pending_generation().await;
    let now = now_ms();
    let claimed = f.store.claim_render_jobs("node-a", now, now + 60_000, 10, &[], &[]).await.unwrap();
    assert_eq!(claimed.len(), 1);
    assert_eq!(claimed[0].attempt, 1);
    assert!(f.store.claim_render_jobs("node-b", now, now + 60_000, 10, &[], &[]).await.unwrap().is_empty(), "leased");
    let failed = JobOutcome::Failed { reason: "no".into() };
    assert!(!f.store.finish_generation(generation.id, "node-b", now, &failed, None).await.unwrap());

    // The lease expires: another node takes the job over, and the first can no longer finish it.
    let later = now + 60_001;
    let taken = f.store.claim_render_jobs("node-b", later, later + 60_000, 10, &[], &[]).await.unwrap();
    assert_eq!((taken.len(), taken[0].attempt), (1, 2));
    assert!(!f.store.finish_generation(generation.id, "node-a", later, &failed, None).await.unwrap());

    // Postponed: not claimable before its time, then claimed again as a further attempt.
    let id = RenderJobId::Generation(generation.id);
    assert!(!f.store.postpone_render_job(id, "node-a", later + 500, later).await.unwrap(), "not node-a's");
    assert!(f.store.postpone_render_job(id, "node-b", later + 500, later).await.unwrap());
    assert!(f.store.claim_render_jobs("node-c", later + 499, later + 60_000, 10, &[], &[]).await.unwrap().is_empty());
    let again = f.store.claim_render_jobs("node-c", later + 500, later + 60_000, 10, &[], &[]).await.unwrap();
    assert_eq!(again[0].attempt, 3);

    // Given back at a graceful stop: claimable at once, and the attempt is not counted.
    assert_eq!(f.store.release_leases(Some("node-c"), later + 501).await.unwrap(), 1);
    let back = f.store.claim_render_jobs("node-d", later + 502, later + 60_000, 10, &[], &[]).await.unwrap();
    assert_eq!(back[0].attempt, 3);
    assert!(f.store.finish_generation(generation.id, "node-d", later + 503, &failed, None).await.unwrap());
    let stored = f.store.get_generation(f.user.id, generation.id).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.failure_reason.as_deref()), (JobStatus::Failed, Some("no")));
    assert!(!f.store.finish_generation(generation.id, "node-d", later + 504, &failed, None).await.unwrap());
}

/// Finishes that arrive together share a transaction and a statement per table: each still
/// counts only for its lease's holder, and only once.
#[tokio::test]
async fn finishes_committed_together_each_count_for_the_lease_holder_once() {
    let f = Fixture::new().await;
    let mut generations = Vec::new();
    for _ in 0..5 {
        generations.push(f.pending_generation().await);
    }
    let now = now_ms();
    assert_eq!(f.store.claim_render_jobs("node-a", now, now + 60_000, 10, &[], &[]).await.unwrap().len(), 5);
    let complete = |generation: &Generation| {
        JobOutcome::Complete(vec![NewImage {
            id: easel::images::image_id(generation.id, 0),
            index: 0,
            storage_key: format!("users/x/{}.jpg", generation.id),
            width: 64,
            height: 64,
        }])
    };
    let delivery = |generation: &Generation| NewDelivery {
        id: DeliveryId::random(),
        generation_id: generation.id,
        user_id: f.user.id,
        api_key_id: f.key.id,
        event_type: "image_generation.complete".into(),
        url: "https://hooks.example:443/hook".into(),
        endpoint: "https://hooks.example:443".into(),
        payload: Bytes::from(format!("{{\"id\":\"{}\"}}", generation.id)),
        created_at: now,
        lease: None,
    };
    let failed = JobOutcome::Failed { reason: "broken".into() };
    // 0 and 1 complete with a callback (0 twice), 2 by a node without the lease, 3 fails, 4 completes.
    let finishes = [
        (0, "node-a", complete(&generations[0]), Some(delivery(&generations[0]))),
        (1, "node-a", complete(&generations[1]), Some(delivery(&generations[1]))),
        (0, "node-a", complete(&generations[0]), Some(delivery(&generations[0]))),
        (2, "node-b", complete(&generations[2]), None),
        (3, "node-a", failed.clone(), Some(delivery(&generations[3]))),
        (4, "node-a", complete(&generations[4]), None),
    ];
    let answers = futures_util::future::join_all(finishes.iter().map(|(n, owner, outcome, delivery)| {
        f.store.finish_generation(generations[*n].id, owner, now + 1, outcome, delivery.as_ref())
    }))
    .await;
    let answers: Vec<bool> = answers.into_iter().map(Result::unwrap).collect();
    assert_eq!(answers.iter().filter(|a| **a).count(), 4, "{answers:?}");
    assert!(answers[0] != answers[2], "generation 0 is finished once: {answers:?}");
    assert_eq!((answers[1], answers[3], answers[4], answers[5]), (true, false, true, true));

    let stored = |n: usize| {
        let (store, user, id) = (f.store.clone(), f.user.id, generations[n].id);
        async move { store.get_generation(user, id).await.unwrap().unwrap() }
    };
    for n in [0, 1, 4] {
        let generation = stored(n).await;
        assert_eq!((generation.status, generation.images.len()), (JobStatus::Complete, 1));
        assert_eq!(generation.images[0].storage_key, format!("users/x/{}.jpg", generations[n].id));
    }
    assert_eq!(stored(2).await.status, JobStatus::Pending, "node-b holds no lease");
    let failed = stored(3).await;
    assert_eq!(
        (failed.status, failed.failure_reason.as_deref(), failed.images.len()),
        (JobStatus::Failed, Some("broken"), 0)
    );
    // The callbacks of the finished ones, one each, with their payloads.
    let claimed =
        f.store.claim_deliveries("node-a", now + 2, now + 60_000, 100, &[], &[], &HashSet::new()).await.unwrap();
    let mut owed: Vec<GenerationId> = claimed.iter().map(|job| job.generation_id).collect();
    owed.sort();
    let mut expected = vec![generations[0].id, generations[1].id, generations[3].id];
    expected.sort();
    assert_eq!(owed, expected);
    for job in &claimed {
        assert_eq!(job.payload, Bytes::from(format!("{{\"id\":\"{}\"}}", job.generation_id)));
    }
}

#[tokio::test]
async fn an_attempt_recorded_twice_is_logged_and_counted_once() {
    let f = Fixture::new().await;
    let (_, delivery) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let now = now_ms();
    let jobs = f.store.claim_deliveries("node-a", now, now + 60_000, 10, &[], &[], &HashSet::new()).await.unwrap();
    assert_eq!(jobs.iter().map(|j| j.id).collect::<Vec<_>>(), vec![delivery]);
    let retry = NextStep::Retry { at: now + 5_000, schedule_index: 1 };
    let first = record(delivery, 1, "node-a", now, retry.clone());
    f.store.record_attempts(std::slice::from_ref(&first)).await.unwrap();
    // The same batch again, as after a commit whose answer was lost.
    f.store.record_attempts(&[first]).await.unwrap();
    let (stored, attempts) = f.store.get_delivery(delivery, Some(f.user.id)).await.unwrap().unwrap();
    assert_eq!(attempts.len(), 1);
    assert_eq!(stored.attempt_count, 1);
    assert_eq!((stored.status, stored.next_attempt_at), (DeliveryStatus::Pending, Some(now + 5_000)));
    assert_eq!(stored.last_error.as_deref(), Some("http_status: HTTP 500"));

    // A stale attempt from a node whose lease was taken over is logged (it was sent) but moves
    // nothing.
    let later = now + 5_000;
    let jobs = f.store.claim_deliveries("node-b", later, later + 60_000, 10, &[], &[], &HashSet::new()).await.unwrap();
    assert_eq!(jobs[0].attempt_count, 1);
    f.store.record_attempts(&[record(delivery, 2, "node-b", later, NextStep::Succeeded)]).await.unwrap();
    let stale = record(delivery, 2, "node-a", later + 1, NextStep::Failed);
    f.store.record_attempts(&[stale]).await.unwrap();
    let (stored, attempts) = f.store.get_delivery(delivery, None).await.unwrap().unwrap();
    assert_eq!((stored.status, stored.attempt_count, attempts.len()), (DeliveryStatus::Succeeded, 2, 3));
    assert_eq!(f.store.count_deliveries(DeliveryStatus::Succeeded).await.unwrap(), 1);
}

#[tokio::test]
async fn concurrent_admissions_never_exceed_the_slots() {
    let f = Fixture::new().await;
    let attempts = (0..40).map(|n| {
        let store = f.store.clone();
        let generation = f.generation(n);
        tokio::spawn(async move { store.create_generation(&generation, 3, None).await.unwrap() })
    });
    let results = futures_util::future::join_all(attempts).await;
    let accepted = results.iter().filter(|r| *r.as_ref().unwrap() == Admission::Accepted).count();
    assert_eq!(accepted, 3);
    assert!(
        results.iter().all(|r| matches!(r.as_ref().unwrap(), Admission::Accepted | Admission::SlotsFull { slots: 3 }))
    );
    assert_eq!(f.store.list_generations(f.user.id, 0, 100).await.unwrap().len(), 3);
}

#[tokio::test]
async fn a_slot_is_free_again_once_its_job_completes_fails_or_is_deleted() {
    let f = Fixture::new().await;
    let jobs: Vec<Generation> = (0..3).map(|n| f.generation(n)).collect();
    for job in &jobs {
        assert_eq!(f.store.create_generation(job, 3, None).await.unwrap(), Admission::Accepted);
    }
    let mut n = 10;
    let mut one_more = async || {
        n += 1;
        f.store.create_generation(&f.generation(n), 3, None).await.unwrap()
    };
    assert_eq!(one_more().await, Admission::SlotsFull { slots: 3 });

    let now = now_ms();
    assert_eq!(f.store.claim_render_jobs("node-a", now, now + 60_000, 10, &[], &[]).await.unwrap().len(), 3);
    let complete = JobOutcome::Complete(Vec::new());
    assert!(f.store.finish_generation(jobs[0].id, "node-a", now, &complete, None).await.unwrap());
    assert_eq!(one_more().await, Admission::Accepted, "a completed job's slot");
    assert_eq!(one_more().await, Admission::SlotsFull { slots: 3 });

    let failed = JobOutcome::Failed { reason: "no".into() };
    assert!(f.store.finish_generation(jobs[1].id, "node-a", now, &failed, None).await.unwrap());
    assert_eq!(one_more().await, Admission::Accepted, "a failed job's slot");
    assert_eq!(one_more().await, Admission::SlotsFull { slots: 3 });

    assert!(f.store.delete_generation(f.user.id, jobs[2].id).await.unwrap().is_some());
    assert_eq!(one_more().await, Admission::Accepted, "a deleted pending job's slot");
    assert_eq!(one_more().await, Admission::SlotsFull { slots: 3 });
    // Deleting a finished job frees nothing: it held no slot.
    assert!(f.store.delete_generation(f.user.id, jobs[0].id).await.unwrap().is_some());
    assert_eq!(one_more().await, Admission::SlotsFull { slots: 3 });
}

#[tokio::test]
async fn deliveries_are_claimed_by_endpoint_and_skipped_by_endpoint() {
    let f = Fixture::new().await;
    let mut by_endpoint: Vec<(String, DeliveryId)> = Vec::new();
    for endpoint in ["https://one.example:443", "https://two.example:443"] {
        for _ in 0..3 {
            let (_, id) = f.completed_with_delivery("node-a", endpoint).await;
            by_endpoint.push((endpoint.into(), id));
        }
    }
    let now = now_ms();
    let wanted = [EndpointClaim { endpoint: "https://one.example:443".into(), want: 2, held: 0 }];
    let claimed =
        f.store.claim_endpoint_deliveries("node-a", now, now + 60_000, &wanted, &HashSet::new()).await.unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(claimed.iter().all(|j| j.endpoint == "https://one.example:443"));
    let held: HashSet<DeliveryId> = claimed.iter().map(|j| j.id).collect();

    let skip = ["https://one.example:443".to_string()];
    let others = f.store.claim_deliveries("node-a", now, now + 60_000, 10, &skip, &[], &held).await.unwrap();
    assert_eq!(others.len(), 3);
    assert!(others.iter().all(|j| j.endpoint == "https://two.example:443"));
    let mut held = held;
    held.extend(others.iter().map(|j| j.id));
    let rest = f.store.claim_deliveries("node-a", now, now + 60_000, 10, &[], &[], &held).await.unwrap();
    let expected: Vec<DeliveryId> =
        by_endpoint.iter().filter(|(_, id)| !held.contains(id)).map(|(_, id)| *id).collect();
    assert_eq!(rest.iter().map(|j| j.id).collect::<Vec<_>>(), expected, "the one left");
    assert_eq!(rest[0].payload, Bytes::from_static(b"{}"));
}

/// An endpoint fed claim after claim, its deliveries still held (on SQLite, still due in the
/// store): each claim hands over the next ones, each delivery once, and one committed late with an
/// earlier due time than those already claimed is not stepped over for good.
#[tokio::test]
async fn claims_by_endpoint_hand_over_each_delivery_once_and_find_one_committed_late() {
    let f = Fixture::new().await;
    let one = "https://one.example:443";
    let mut due: Vec<DeliveryId> = Vec::new();
    for _ in 0..10 {
        due.push(f.completed_with_delivery("node-a", one).await.1);
    }
    let mut held: HashSet<DeliveryId> = HashSet::new();
    let mut claimed: Vec<DeliveryId> = Vec::new();
    let mut late = None;
    let mut rounds = 0;
    while claimed.len() < 11 {
        rounds += 1;
        assert!(rounds <= 10, "claimed only {} of 11 in {rounds} claims", claimed.len());
        let now = now_ms();
        let wanted = [EndpointClaim { endpoint: one.into(), want: 3, held: held.len() as u32 }];
        let jobs = f.store.claim_endpoint_deliveries("node-a", now, now + 60_000, &wanted, &held).await.unwrap();
        assert!(jobs.len() <= 3, "no more than wanted");
        for job in &jobs {
            assert_eq!(job.payload, Bytes::from_static(b"{}"));
            assert!(held.insert(job.id), "{} claimed twice", job.id);
            claimed.push(job.id);
        }
        if late.is_none() {
            // Committed after the first claim, due before every delivery claimed so far.
            late = Some(f.completed_with_delivery_due("node-a", one, now - 60_000).await.1);
            due.push(late.unwrap());
        }
    }
    let mut expected = due.clone();
    expected.sort();
    claimed.sort();
    assert_eq!(claimed, expected, "every delivery, once");
    let now = now_ms();
    let wanted = [EndpointClaim { endpoint: one.into(), want: 3, held: held.len() as u32 }];
    assert!(f.store.claim_endpoint_deliveries("node-a", now, now + 60_000, &wanted, &held).await.unwrap().is_empty());
}

#[tokio::test]
async fn one_endpoint_claim_serves_several_endpoints_and_a_scan_leaves_fed_endpoints_out() {
    let f = Fixture::new().await;
    let (one, two, three) = ("https://one.example:443", "https://two.example:443", "https://three.example:443");
    for endpoint in [one, two, three] {
        for _ in 0..3 {
            f.completed_with_delivery("node-a", endpoint).await;
        }
    }
    let now = now_ms();
    let lease = now + 60_000;
    let first = [EndpointClaim { endpoint: one.into(), want: 1, held: 0 }];
    let mut held: HashSet<DeliveryId> = f
        .store
        .claim_endpoint_deliveries("node-a", now, lease, &first, &HashSet::new())
        .await
        .unwrap()
        .iter()
        .map(|j| j.id)
        .collect();
    let wanted = [
        EndpointClaim { endpoint: one.into(), want: 2, held: 1 },
        EndpointClaim { endpoint: two.into(), want: 2, held: 0 },
    ];
    let claimed = f.store.claim_endpoint_deliveries("node-a", now, lease, &wanted, &held).await.unwrap();
    let count = |jobs: &[DeliveryJob], endpoint: &str| jobs.iter().filter(|j| j.endpoint == endpoint).count();
    assert_eq!((count(&claimed, one), count(&claimed, two), claimed.len()), (2, 2, 4), "each endpoint its own want");
    assert!(claimed.iter().all(|j| !held.contains(&j.id)), "nothing held is claimed again");
    held.extend(claimed.iter().map(|j| j.id));

    // `one` has nothing left, `two` one delivery, `three` all three.
    let fed = [one.to_string(), two.to_string()];
    let scanned = f.store.claim_deliveries("node-a", now, lease, 10, &[], &fed, &held).await.unwrap();
    assert_eq!(count(&scanned, three), 3);
    assert!(scanned.iter().all(|j| !held.contains(&j.id)));
    assert_eq!(count(&scanned, two), 0, "the fed endpoint's delivery is left to its endpoint claims");
}

/// A scan whose window is full of rows of endpoints it leaves out (one that hangs, skipped; one
/// with a backlog, fed by endpoint) still finds an endpoint whose deliveries came due after theirs,
/// and claims them, not again once held.
#[tokio::test]
async fn a_scan_finds_deliveries_due_behind_the_backlogs_of_endpoints_it_leaves_out() {
    let f = Fixture::new().await;
    let (hanging, slow, other) =
        ("https://hanging.example:443", "https://slow.example:443", "https://other.example:443");
    let now = now_ms();
    for n in 0..6 {
        f.completed_with_delivery_due("node-a", hanging, now - 60_000 + n).await;
        f.completed_with_delivery_due("node-a", slow, now - 50_000 + n).await;
    }
    let mut behind = Vec::new();
    for n in 0..2 {
        behind.push(f.completed_with_delivery_due("node-a", other, now - 40_000 + n).await.1);
    }
    let now = now_ms();
    let lease = now + 60_000;
    let (skip, fed) = ([hanging.to_string()], [slow.to_string()]);
    let scanned = f.store.claim_deliveries("node-a", now, lease, 4, &skip, &fed, &HashSet::new()).await.unwrap();
    let ids: Vec<DeliveryId> = scanned.iter().filter(|j| j.endpoint == other).map(|j| j.id).collect();
    // A window of 4 rows, all of the hanging and the fed endpoint.
    assert_eq!(ids, behind, "the deliveries due behind the window, oldest first");
    assert_eq!(scanned.len(), 2, "nothing of the skipped and fed endpoints: {scanned:?}");
    let held: HashSet<DeliveryId> = scanned.iter().map(|j| j.id).collect();
    let again = f.store.claim_deliveries("node-a", now, lease, 4, &skip, &fed, &held).await.unwrap();
    assert!(again.is_empty(), "nothing else is due outside the skipped and fed endpoints: {again:?}");
}

/// Two nodes claiming at the same moment on a multi-node backend, one by a scan and one by
/// endpoint, round after round: each delivery goes to one node, and between them they take all.
/// (SQLite is single-node: `serve` holds the database's lock file, and its claims write nothing.)
#[tokio::test]
async fn two_nodes_claiming_at_once_take_each_delivery_once() {
    let f = Fixture::new().await;
    if f._dir.database.is_none() {
        return;
    }
    let endpoints = ["https://one.example:443", "https://two.example:443", "https://three.example:443"];
    let mut due = Vec::new();
    for n in 0..30 {
        due.push(f.completed_with_delivery("node-a", endpoints[n % 3]).await.1);
    }
    let (mut claimed_a, mut claimed_b) = (Vec::new(), Vec::new());
    for _ in 0..20 {
        let now = now_ms();
        let wanted: Vec<EndpointClaim> =
            endpoints.iter().map(|e| EndpointClaim { endpoint: e.to_string(), want: 2, held: 0 }).collect();
        let none = HashSet::new();
        let (a, b) = tokio::join!(
            f.store.claim_deliveries("node-a", now, now + 60_000, 4, &[], &[], &none),
            f.store.claim_endpoint_deliveries("node-b", now, now + 60_000, &wanted, &none),
        );
        claimed_a.extend(a.unwrap().iter().map(|j| j.id));
        claimed_b.extend(b.unwrap().iter().map(|j| j.id));
    }
    let mut all: Vec<DeliveryId> = claimed_a.iter().chain(&claimed_b).copied().collect();
    all.sort();
    let distinct: HashSet<DeliveryId> = all.iter().copied().collect();
    assert_eq!(distinct.len(), all.len(), "a delivery claimed twice: a {claimed_a:?}, b {claimed_b:?}");
    due.sort();
    assert_eq!(all, due, "every delivery, once");
    assert!(!claimed_a.is_empty() && !claimed_b.is_empty(), "both nodes claimed");
}

#[tokio::test]
async fn one_batch_of_attempts_keeps_each_keys_failure_clock_and_disables_only_the_failing_key() {
    let f = Fixture::new().await;
    let mut other = f.key.clone();
    other.id = ApiKeyId::random();
    f.store.create_api_key(&other, &format!("hash-{}", other.id)).await.unwrap();
    let mut deliveries = Vec::new();
    for _ in 0..4 {
        deliveries.push(f.completed_with_delivery("node-a", "https://hooks.example:443").await.1);
    }
    let attempt = |delivery: DeliveryId, number: u32, key: ApiKeyId, at: Millis, next: NextStep| {
        let mut record = record(delivery, number, "node-a", at, next);
        record.api_key_id = key;
        record
    };
    let retry = |at: Millis| NextStep::Retry { at, schedule_index: 1 };
    let day: Millis = 24 * 3600 * 1000;
    let t0 = now_ms() - 10 * day;
    // One batch: the fixture's key fails twice; the other key fails, then succeeds.
    let disabled = f
        .store
        .record_attempts(&[
            attempt(deliveries[0], 1, f.key.id, t0, retry(t0 + 1000)),
            attempt(deliveries[1], 1, other.id, t0 + 1, retry(t0 + 1000)),
            attempt(deliveries[2], 1, f.key.id, t0 + 2, retry(t0 + 1000)),
            attempt(deliveries[3], 1, other.id, t0 + 3, NextStep::Succeeded),
        ])
        .await
        .unwrap();
    assert!(disabled.is_empty());
    let clock = |key: ApiKeyId| {
        let store = f.store.clone();
        async move { store.get_api_key(key).await.unwrap().unwrap() }
    };
    assert_eq!(clock(f.key.id).await.webhook_failing_since, Some(t0), "failing since its first failure");
    assert_eq!(clock(other.id).await.webhook_failing_since, None, "a success stops the clock");

    // Six days on (past the default five), both fail again: only the key failing since t0 is
    // disabled; the other's clock starts now.
    let later = t0 + 6 * day;
    let disabled = f
        .store
        .record_attempts(&[
            attempt(deliveries[0], 2, f.key.id, later, retry(later + 1000)),
            attempt(deliveries[1], 2, other.id, later + 1, retry(later + 1000)),
        ])
        .await
        .unwrap();
    assert_eq!(disabled.len(), 1, "{disabled:?}");
    assert_eq!((disabled[0].api_key_id, disabled[0].failing_since, disabled[0].disabled_at), (f.key.id, t0, later));
    assert_eq!(clock(f.key.id).await.webhook_disabled_at, Some(later));
    let other_now = clock(other.id).await;
    assert_eq!((other_now.webhook_failing_since, other_now.webhook_disabled_at), (Some(later + 1), None));
}

/// Callbacks are built from keys read within `api.auth_cache_ttl` (1 s by default): a webhook
/// disabled, enabled or deleted through this store shows at once, one changed elsewhere (another
/// node, the CLI) within the TTL.
#[tokio::test]
async fn recent_keys_show_changes_made_here_at_once_and_elsewhere_within_the_ttl() {
    let f = Fixture::new().await;
    let ttl = std::time::Duration::from_secs(1);
    let elsewhere = easel::store::open(&test_config(&f._dir)).await.expect("a second store opens");
    let recent = |f: &Fixture| {
        let store = f.store.clone();
        let id = f.key.id;
        async move { store.recent_api_key(id).await.unwrap().unwrap() }
    };
    assert_eq!(recent(&f).await.webhook_disabled_at, None);

    // Disabled here, by the recorder: at once.
    let (_, delivery) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let day: Millis = 24 * 3600 * 1000;
    let t0 = now_ms() - 10 * day;
    for (number, at) in [(1, t0), (2, t0 + 6 * day)] {
        let mut attempt = record(delivery, number, "node-a", at, NextStep::Retry { at: at + 1000, schedule_index: 1 });
        attempt.api_key_id = f.key.id;
        f.store.record_attempts(&[attempt]).await.unwrap();
    }
    let read = std::time::Instant::now();
    assert_eq!(recent(&f).await.webhook_disabled_at, Some(t0 + 6 * day), "disabled through this store");

    // Enabled elsewhere: this store answers from memory until the TTL runs out.
    assert!(elsewhere.enable_webhook(f.key.id, None, now_ms()).await.unwrap());
    let stale = recent(&f).await;
    if read.elapsed() < ttl {
        assert!(stale.webhook_disabled_at.is_some(), "read again before the TTL ran out");
    }
    tokio::time::sleep(ttl + std::time::Duration::from_millis(100)).await;
    assert_eq!(recent(&f).await.webhook_disabled_at, None, "enabled elsewhere, seen after the TTL");

    // Deleted here: at once, with the key still readable for the callbacks it owes.
    assert!(f.store.delete_api_key(f.key.id, now_ms()).await.unwrap());
    assert!(recent(&f).await.deleted_at.is_some(), "deleted through this store");
}

/// On PostgreSQL a node answers finished generations from memory only while it listens for the
/// other nodes' changes: one deleted or given a variation elsewhere is forgotten as soon as the
/// notification arrives (far within the cache's 60 s bound), and losing the listening connection
/// empties the cache (notifications sent meanwhile would be missed).
#[tokio::test]
async fn finished_generations_changed_on_another_node_are_forgotten_here_at_once() {
    if not_applicable(Backend::Postgres, "on SQLite this process makes every write and forgets what it changed") {
        return;
    }
    let f = Fixture::new().await;
    let stop = tokio_util::sync::CancellationToken::new();
    f.store.watch(Wakeups::default(), stop.clone());
    let _stop = stop.drop_guard();
    let elsewhere = easel::store::open(&test_config(&f._dir)).await.expect("a second store opens");
    let raw = sqlx::PgPool::connect(&test_config(&f._dir).database_url()).await.unwrap();
    let behind_its_back = |id: GenerationId, reason: String| {
        let raw = raw.clone();
        async move {
            sqlx::query("UPDATE generations SET failure_reason = $2 WHERE id = $1")
                .bind(id.to_string())
                .bind(reason)
                .execute(&raw)
                .await
                .unwrap();
        }
    };
    let read = |id: GenerationId| {
        let (store, user) = (f.store.clone(), f.user.id);
        async move { store.get_generation(user, id).await.unwrap() }
    };
    // Remembered once the node listens: a change no notification tells of is not seen.
    let (generation, _) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let mut n = 0;
    eventually(std::time::Duration::from_secs(10), || {
        n += 1;
        let reason = format!("unseen {n}");
        async move {
            read(generation.id).await.unwrap();
            behind_its_back(generation.id, reason.clone()).await;
            (read(generation.id).await.unwrap().failure_reason != Some(reason)).then_some(())
        }
    })
    .await;

    // Deleted on another node: forgotten here when the notification arrives.
    assert!(elsewhere.delete_generation(f.user.id, generation.id).await.unwrap().is_some());
    eventually(std::time::Duration::from_secs(5), || async { read(generation.id).await.is_none().then_some(()) }).await;

    // A variation asked for on another node shows here at once, as pending.
    let (generation, _) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let image = read(generation.id).await.unwrap().images[0].clone();
    assert!(read(generation.id).await.unwrap().images[0].variations.is_empty());
    let variation = Variation::pending(&image, f.key.id, Transform::Upscale, None, now_ms());
    assert_eq!(elsewhere.create_variation(&variation, 100).await.unwrap(), Admission::Accepted);
    eventually(std::time::Duration::from_secs(5), || async {
        let variations = read(generation.id).await.unwrap().images[0].variations.clone();
        (variations.len() == 1 && variations[0].status == JobStatus::Pending).then_some(())
    })
    .await;
    // ...and finished there, as finished.
    let now = now_ms();
    elsewhere.claim_render_jobs("node-b", now, now + 60_000, 10, &[], &[]).await.unwrap();
    let outcome = JobOutcome::Complete("users/x/variation.jpg".to_string());
    assert!(elsewhere.finish_variation(variation.id, "node-b", now, &outcome).await.unwrap());
    eventually(std::time::Duration::from_secs(5), || async {
        (read(generation.id).await.unwrap().images[0].variations[0].status == JobStatus::Complete).then_some(())
    })
    .await;

    // The listening connection is cut: what this node remembered goes, since changes notified
    // until it listens again are missed.
    read(generation.id).await.unwrap();
    let database = f._dir.database.as_ref().unwrap();
    assert_eq!(database.cut_connections("query LIKE 'LISTEN%'").await, 1, "one listening connection");
    behind_its_back(generation.id, "changed while not listening".into()).await;
    eventually(std::time::Duration::from_secs(10), || async {
        let reason = read(generation.id).await.unwrap().failure_reason;
        (reason.as_deref() == Some("changed while not listening")).then_some(())
    })
    .await;
}

#[tokio::test]
async fn deleting_a_generation_removes_its_images_and_variations_and_keeps_its_deliveries() {
    let f = Fixture::new().await;
    let (generation, delivery) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let stored = f.store.get_generation(f.user.id, generation.id).await.unwrap().unwrap();
    assert_eq!(stored.images.len(), 2);
    let image = stored.images[0].clone();
    let now = now_ms();
    let variation = Variation::pending(&image, f.key.id, Transform::Upscale, None, now);
    assert_eq!(f.store.create_variation(&variation, 100).await.unwrap(), Admission::Accepted);
    let claimed = f.store.claim_render_jobs("node-a", now, now + 60_000, 10, &[], &[]).await.unwrap();
    assert!(matches!(&claimed[0].work, RenderWork::Variation { source, .. } if source.id == image.id));
    let outcome = JobOutcome::Complete("users/x/variation.jpg".to_string());
    assert!(f.store.finish_variation(variation.id, "node-a", now, &outcome).await.unwrap());

    let stranger = UserId::random();
    assert_eq!(f.store.delete_generation(stranger, generation.id).await.unwrap(), None, "not theirs");
    let mut keys = f.store.delete_generation(f.user.id, generation.id).await.unwrap().unwrap();
    keys.sort();
    let mut expected: Vec<String> = stored.images.iter().map(|i| i.storage_key.clone()).collect();
    expected.push("users/x/variation.jpg".into());
    expected.sort();
    assert_eq!(keys, expected);
    assert_eq!(f.store.get_image(f.user.id, image.id).await.unwrap(), None);
    assert_eq!(f.store.get_variation(f.user.id, variation.id).await.unwrap(), None);
    assert_eq!(f.store.delete_generation(f.user.id, generation.id).await.unwrap(), None);
    // An upscale of the deleted image is refused, not failed on a foreign key.
    let late = Variation { id: VariationId::random(), ..variation };
    assert_eq!(f.store.create_variation(&late, 100).await.unwrap(), Admission::SourceMissing);
    // The callback it owed is still on record.
    assert!(f.store.get_delivery(delivery, Some(f.user.id)).await.unwrap().is_some());
}

/// A variation finishing while its generation is deleted: the delete holds the user's row and
/// waits for the variation's; finishing must not hold the variation's row and then wait for the
/// user's (the pending count's trigger), or PostgreSQL breaks the deadlock by failing one of them.
#[tokio::test]
async fn a_variation_finishing_while_its_generation_is_deleted_does_not_deadlock() {
    if not_applicable(Backend::Postgres, "SQLite runs one writer at a time, so nothing waits for a row") {
        return;
    }
    let f = Fixture::new().await;
    let (generation, _) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let image = f.store.get_generation(f.user.id, generation.id).await.unwrap().unwrap().images[0].clone();
    let now = now_ms();
    let variation = Variation::pending(&image, f.key.id, Transform::Upscale, None, now);
    assert_eq!(f.store.create_variation(&variation, 100).await.unwrap(), Admission::Accepted);
    assert_eq!(f.store.claim_render_jobs("node-a", now, now + 60_000, 10, &[], &[]).await.unwrap().len(), 1);

    // A delete, step by step on a connection of its own: it locks the user, then the generation.
    let url = &f._dir.database.as_ref().unwrap().url;
    let deleter = sqlx::postgres::PgPoolOptions::new().max_connections(2).connect(url).await.unwrap();
    let mut delete = deleter.begin().await.unwrap();
    sqlx::query("SELECT 1 FROM users WHERE id = $1 FOR UPDATE")
        .bind(f.user.id.to_string())
        .execute(&mut *delete)
        .await
        .unwrap();
    let outcome = JobOutcome::Complete("users/x/variation.jpg".to_string());
    let finishing = {
        let store = f.store.clone();
        tokio::spawn(async move { store.finish_variation(variation.id, "node-a", now_ms(), &outcome).await })
    };
    // Until the finish waits for a lock the delete holds.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let waiting: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'",
        )
        .fetch_one(&deleter)
        .await
        .unwrap();
        if waiting > 0 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "the finish never waited for the user's row");
        tokio::time::sleep(std::time::Duration::from_millis(10)).await;
    }
    let deleted = sqlx::query("DELETE FROM generations WHERE id = $1")
        .bind(generation.id.to_string())
        .execute(&mut *delete)
        .await
        .map(|done| done.rows_affected());
    assert_eq!(deleted.unwrap(), 1, "the delete is not a deadlock's victim");
    delete.commit().await.unwrap();
    let finished = finishing.await.unwrap();
    assert!(!finished.unwrap(), "the variation went with its generation: nothing left to finish");
    assert_eq!(f.store.get_variation(f.user.id, variation.id).await.unwrap(), None);
    deleter.close().await;
}

#[tokio::test]
async fn users_keys_and_their_conflicts() {
    let f = Fixture::new().await;
    let twin = User { id: UserId::random(), ..f.user.clone() };
    assert!(matches!(f.store.create_user(&twin).await, Err(StoreError::UsernameTaken(name)) if name == "conformance"));
    let orphan = ApiKey { id: ApiKeyId::random(), user_id: UserId::random(), ..f.key.clone() };
    assert!(matches!(f.store.create_api_key(&orphan, "other-hash").await, Err(StoreError::UnknownUser(_))));
    let (user, key) = f.store.authenticate(&format!("hash-{}", f.key.id)).await.unwrap().unwrap();
    assert_eq!((user.id, key.id), (f.user.id, f.key.id));
    assert_eq!((key.manage_keys, key.key_hint.as_deref()), (true, Some("wxyz")), "permission and hint kept");
    let plain = ApiKey { id: ApiKeyId::random(), manage_keys: false, key_hint: None, ..f.key.clone() };
    f.store.create_api_key(&plain, "plain-hash").await.unwrap();
    let listed = f.store.list_api_keys(Some(f.user.id)).await.unwrap();
    let plain_listed = listed.iter().find(|k| k.id == plain.id).unwrap();
    assert_eq!((plain_listed.manage_keys, plain_listed.key_hint.as_deref()), (false, None));
    assert!(f.store.delete_api_key(plain.id, now_ms()).await.unwrap());
    assert!(f.store.delete_api_key(f.key.id, now_ms()).await.unwrap());
    assert!(!f.store.delete_api_key(f.key.id, now_ms()).await.unwrap());
    assert_eq!(f.store.authenticate(&format!("hash-{}", f.key.id)).await.unwrap(), None);
    assert!(f.store.get_api_key(f.key.id).await.unwrap().unwrap().deleted_at.is_some(), "kept on record");
    assert!(f.store.list_api_keys(Some(f.user.id)).await.unwrap().is_empty());
}

#[tokio::test]
async fn backend_claims_respect_max_concurrent_across_owners_and_let_users_take_turns() {
    let f = Fixture::new().await;
    let other_user =
        User { id: UserId::random(), username: "second".into(), api_concurrency_slots: 100, created_at: 1 };
    f.store.create_user(&other_user).await.unwrap();
    let model = easel::models::DEFAULT_MODEL_ID.parse::<uuid::Uuid>().unwrap();
    let base = now_ms() - 10_000;
    // The first user queues three jobs, then the second user one.
    let mut first = Vec::new();
    for n in 0..3 {
        let generation = f.generation(base + n);
        assert_eq!(f.store.create_generation(&generation, 100, None).await.unwrap(), Admission::Accepted);
        first.push(generation.id);
    }
    let mut late = f.generation(base + 10);
    late.user_id = other_user.id;
    assert_eq!(f.store.create_generation(&late, 100, None).await.unwrap(), Admission::Accepted);

    let now = now_ms();
    let claim = |owner: &'static str, max_concurrent: u32, limit: u32, now: Millis| BackendClaim {
        owner,
        backend: "gpu-a",
        max_concurrent,
        models: std::slice::from_ref(&model),
        now,
        lease_until: now + 60_000,
        limit,
        skip: &[],
        transforms: &[],
    };
    let ids = |jobs: Vec<RenderJob>| -> Vec<RenderJobId> { jobs.iter().map(|job| job.work.id()).collect() };
    // Two slots: the first user's oldest job, then the second user's (users take turns).
    let taken = ids(f.store.claim_backend_jobs(&claim("node-a", 2, 10, now)).await.unwrap());
    assert_eq!(taken, vec![RenderJobId::Generation(first[0]), RenderJobId::Generation(late.id)]);
    // Both slots are held: no node gets more, whatever its own limit.
    assert!(f.store.claim_backend_jobs(&claim("node-b", 2, 10, now)).await.unwrap().is_empty());
    assert!(f.store.claim_backend_jobs(&claim("node-a", 2, 10, now)).await.unwrap().is_empty());
    // Jobs a node keeps off a backend (they just timed out there) are not claimed for it.
    let skipped = [first[1].to_string(), first[2].to_string()];
    let mut avoiding = claim("node-b", 1, 10, now);
    avoiding.backend = "gpu-b";
    avoiding.skip = &skipped;
    assert!(f.store.claim_backend_jobs(&avoiding).await.unwrap().is_empty(), "skipped jobs were claimed");
    // Another backend of the model has its own slots.
    let mut elsewhere = claim("node-b", 1, 10, now);
    elsewhere.backend = "gpu-b";
    assert_eq!(ids(f.store.claim_backend_jobs(&elsewhere).await.unwrap()), vec![RenderJobId::Generation(first[1])]);
    // A finished job frees its slot.
    let outcome = JobOutcome::Failed { reason: "test".into() };
    assert!(f.store.finish_generation(first[0], "node-a", now, &outcome, None).await.unwrap());
    assert_eq!(
        ids(f.store.claim_backend_jobs(&claim("node-b", 2, 10, now)).await.unwrap()),
        vec![RenderJobId::Generation(first[2])]
    );
    // The built-in renderer does not take jobs of models that backends run.
    assert!(f.store.claim_render_jobs("node-c", now, now + 60_000, 10, &[model], &[]).await.unwrap().is_empty());
    // Expired leases free their slots: the jobs go back to the queue.
    let later = now + 60_001;
    assert_eq!(f.store.claim_backend_jobs(&claim("node-c", 3, 10, later)).await.unwrap().len(), 3);
    let overview = f.store.backend_overview(later).await.unwrap();
    assert_eq!(overview.running.get("gpu-a"), Some(&3));
    assert_eq!(overview.pending_by_model.get(&model.to_string()), None, "every pending job is running");
}

#[tokio::test]
async fn concurrent_backend_claims_never_exceed_max_concurrent() {
    let f = Fixture::new().await;
    let model = easel::models::DEFAULT_MODEL_ID.parse::<uuid::Uuid>().unwrap();
    for _ in 0..20 {
        f.pending_generation().await;
    }
    let now = now_ms();
    let models = [model];
    let claims = (0..8).map(|n| {
        let store = f.store.clone();
        async move {
            let owner = format!("node-{n}");
            let claim = BackendClaim {
                owner: &owner,
                backend: "gpu-a",
                max_concurrent: 3,
                models: &models,
                now,
                lease_until: now + 60_000,
                limit: 3,
                skip: &[],
                transforms: &[],
            };
            store.claim_backend_jobs(&claim).await.unwrap().len()
        }
    });
    let total: usize = futures_util::future::join_all(claims).await.into_iter().sum();
    assert_eq!(total, 3, "eight nodes claiming at once share the backend's three slots");
}

#[tokio::test]
async fn concurrent_captures_in_one_bin_are_numbered_in_order_and_capped() {
    let fixture = Fixture::new().await;
    let store = fixture.store.clone();
    let now = now_ms();
    let response =
        BinResponse { status: 200, headers: vec![("x-a".into(), "1".into())], body: b"ok".to_vec(), delay_ms: 0 };
    let bin = Bin {
        id: uuid::Uuid::new_v4(),
        user_id: fixture.user.id,
        created_at: now,
        expires_at: now + 60_000,
        response: response.clone(),
        request_count: 0,
        stored_bytes: 0,
    };
    assert!(store.create_bin(&bin, 1, now).await.unwrap());
    let second = Bin { id: uuid::Uuid::new_v4(), ..bin.clone() };
    assert!(!store.create_bin(&second, 1, now).await.unwrap(), "one bin per user at most here");

    let limits = BinLimits { max_requests: 10, max_bytes: 1 << 20 };
    let captures = (0..30).map(|n| {
        let store = store.clone();
        let request = CapturedRequest {
            bin_id: bin.id,
            seq: 0,
            received_at: now_ms(),
            method: "POST".into(),
            path: format!("/{n}"),
            headers: vec![("content-type".into(), "text/plain".into())],
            body: format!("body {n}").into_bytes(),
            body_size: 6,
            source: "127.0.0.1:1".into(),
            verification: None,
        };
        tokio::spawn(async move { store.capture_request(&request, limits).await.unwrap().unwrap() })
    });
    let mut numbers = Vec::new();
    for capture in captures {
        let (seq, answered) = capture.await.unwrap();
        assert_eq!(answered, response);
        numbers.push(seq);
    }
    numbers.sort();
    assert_eq!(numbers, (1..=30).collect::<Vec<i64>>(), "each capture has its own number");
    let kept = store.list_requests(bin.id, Some(fixture.user.id), None, 100, now_ms()).await.unwrap().unwrap();
    let seqs: Vec<i64> = kept.iter().map(|r| r.seq).collect();
    assert_eq!(seqs, (21..=30).rev().collect::<Vec<i64>>(), "the newest ten, newest first");
    let after = store.requests_after(bin.id, None, 25, 100, now_ms()).await.unwrap().unwrap();
    assert_eq!(after.iter().map(|r| r.seq).collect::<Vec<_>>(), [26, 27, 28, 29, 30]);
    assert_eq!(store.get_bin(bin.id, None, now_ms()).await.unwrap().unwrap().request_count, 10);

    // Another user's view: missing.
    assert!(store.get_bin(bin.id, Some(UserId::random()), now_ms()).await.unwrap().is_none());
    assert!(store.list_requests(bin.id, Some(UserId::random()), None, 10, now_ms()).await.unwrap().is_none());
    // Expired at a later time: no capture, then purged with its requests.
    let later = bin.expires_at + 1;
    let late = CapturedRequest { received_at: later, ..kept[0].clone() };
    assert!(store.capture_request(&late, limits).await.unwrap().is_none());
    assert_eq!(store.purge_expired_bins(later).await.unwrap(), 1);
    assert!(store.get_bin(bin.id, None, 0).await.unwrap().is_none());
    assert!(!store.delete_bin(bin.id, None).await.unwrap());
}

#[tokio::test]
async fn variations_are_claimed_for_the_backends_that_do_their_transform() {
    let f = Fixture::new().await;
    let model = easel::models::DEFAULT_MODEL_ID.parse::<uuid::Uuid>().unwrap();
    let (generation, _) = f.completed_with_delivery("node-a", "https://hooks.example:443").await;
    let image = f.store.get_generation(f.user.id, generation.id).await.unwrap().unwrap().images[0].clone();
    let now = now_ms();
    let variation = |transform: Transform, created_at: Millis| Variation {
        id: VariationId::random(),
        image_id: image.id,
        generation_id: generation.id,
        user_id: f.user.id,
        api_key_id: f.key.id,
        transform,
        source_key: None,
        status: JobStatus::Pending,
        storage_key: None,
        failure_reason: None,
        created_at,
        updated_at: created_at,
        backend: None,
    };
    let (upscale, nobg) = (variation(Transform::Upscale, now - 20), variation(Transform::NoBackground, now - 10));
    for v in [&upscale, &nobg] {
        assert_eq!(f.store.create_variation(v, 100).await.unwrap(), Admission::Accepted);
    }
    // The built-in renderer leaves the variations backends do.
    let served = [(model, "UPSCALE"), (model, "NOBG")];
    assert!(f.store.claim_render_jobs("node-b", now, now + 60_000, 10, &[model], &served).await.unwrap().is_empty());

    // A backend that does upscales takes the upscale, and it holds the backend's one slot.
    let claim = |owner: &'static str, transforms: &'static [&'static str]| BackendClaim {
        owner,
        backend: "gpu-a",
        max_concurrent: 1,
        models: std::slice::from_ref(&model),
        now,
        lease_until: now + 60_000,
        limit: 10,
        skip: &[],
        transforms,
    };
    let taken = f.store.claim_backend_jobs(&claim("node-b", &["UPSCALE"])).await.unwrap();
    assert_eq!(taken.len(), 1);
    assert!(
        matches!(&taken[0].work, RenderWork::Variation { variation, source } if variation.id == upscale.id && source.id == image.id)
    );
    assert_eq!(taken[0].attempt, 1);
    let stored = f.store.get_variation(f.user.id, upscale.id).await.unwrap().unwrap();
    assert_eq!(stored.backend.as_deref(), Some("gpu-a"));
    assert_eq!(f.store.backend_overview(now).await.unwrap().running.get("gpu-a"), Some(&1));
    let pending = f.pending_generation().await;
    assert!(f.store.claim_backend_jobs(&claim("node-c", &["UPSCALE", "NOBG"])).await.unwrap().is_empty(), "slot held");

    // The built-in renderer takes what no backend of the model does.
    let built_in = f.store.claim_render_jobs("node-b", now, now + 60_000, 10, &[model], &served[..1]).await.unwrap();
    assert_eq!(built_in.iter().map(|j| j.work.id()).collect::<Vec<_>>(), vec![RenderJobId::Variation(nobg.id)]);
    assert_eq!(f.store.get_variation(f.user.id, nobg.id).await.unwrap().unwrap().backend, None);

    // Given back, the upscale is stranded once its model has had no backend for too long; the
    // generation of the same model is too, first.
    assert!(f.store.postpone_render_job(RenderJobId::Variation(upscale.id), "node-b", now, now).await.unwrap());
    let stranded =
        f.store.claim_stranded_jobs("node-d", now, now + 60_000, &[model], &served, now + 1_000, 10).await.unwrap();
    let ids: Vec<RenderJobId> = stranded.iter().map(|j| j.work.id()).collect();
    assert_eq!(ids, vec![RenderJobId::Generation(pending.id), RenderJobId::Variation(upscale.id)]);
    assert_eq!(stranded[1].attempt, 2);
}
