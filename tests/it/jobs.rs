//! Generation jobs: concurrency slots, recovery of jobs left PENDING by a stop or a crash.

use std::time::Duration;

use reqwest::StatusCode;
use serde_json::json;

use crate::helpers::*;

#[tokio::test]
async fn pending_jobs_beyond_the_users_slots_get_429_with_retry_after() {
    let app = spawn_app_with(|config| config.render.simulated_duration = Duration::from_secs(3600)).await;
    let user = app.new_user_with_slots("busy", 2).await;
    let first = app.create_generation(&user, &small_generation("one")).await;
    app.create_generation(&user, &small_generation("two")).await;

    let reply = app.post(&user, "/generations", &small_generation("three")).await;
    assert_eq!(reply.status, StatusCode::TOO_MANY_REQUESTS, "{}", reply.text);
    assert_eq!(reply.headers["retry-after"], app.config.api.retry_after_seconds.to_string().as_str());
    assert_eq!(reply.body["code"], "concurrency-limit");
    assert!(reply.body["error"].as_str().unwrap().contains("2 of your concurrency slots"), "{}", reply.text);
    // Upscales share the same slots.
    let other = app.new_user_with_slots("other", 2).await;
    assert_eq!(app.post(&other, "/generations", &small_generation("unaffected")).await.status, StatusCode::OK);

    // Freeing a slot admits the next job.
    app.delete(&user, &format!("/generations/{first}")).await;
    assert_eq!(app.post(&user, "/generations", &small_generation("three")).await.status, StatusCode::OK);
}

#[tokio::test]
async fn concurrent_creates_never_exceed_the_slots() {
    let app = spawn_app_with(|config| config.render.simulated_duration = Duration::from_secs(3600)).await;
    let user = app.new_user_with_slots("racer", 3).await;
    let bodies: Vec<_> = (0..12).map(|n| small_generation(&format!("race {n}"))).collect();
    let replies = futures_util::future::join_all(bodies.iter().map(|body| app.post(&user, "/generations", body))).await;
    let accepted = replies.iter().filter(|r| r.status == StatusCode::OK).count();
    let refused = replies.iter().filter(|r| r.status == StatusCode::TOO_MANY_REQUESTS).count();
    assert_eq!((accepted, refused), (3, 9));
}

#[tokio::test]
async fn jobs_left_pending_by_a_stop_are_finished_after_the_restart() {
    let app = spawn_app_with(|config| {
        config.render.simulated_duration = Duration::from_secs(3600);
        config.shutdown_grace = Duration::from_millis(200);
    })
    .await;
    let user = app.admin.clone();
    let ids = [
        app.create_generation(&user, &small_generation("before the stop 1")).await,
        app.create_generation(&user, &small_generation("before the stop 2")).await,
    ];
    let reply = app.get(&user, &format!("/generations/{}", ids[0])).await;
    assert_eq!(reply.body["generations_by_pk"]["status"], "PENDING");
    assert_eq!(reply.body["generations_by_pk"]["generated_images"], json!([]));

    let (dir, mut config) = app.stop().await;
    config.render.simulated_duration = Duration::ZERO;
    let app = start_in(dir, config).await;
    for id in &ids {
        let generation = app.finished_generation(&user, id).await;
        assert_eq!(generation["status"], "COMPLETE");
        assert_eq!(generation["generated_images"].as_array().unwrap().len(), 1);
    }
}

#[tokio::test]
async fn graceful_shutdown_lets_a_running_job_finish() {
    let app = spawn_app_with(|config| {
        config.render.simulated_duration = Duration::from_millis(600);
        config.shutdown_grace = Duration::from_secs(10);
    })
    .await;
    let user = app.admin.clone();
    let id = app.create_generation(&user, &small_generation("in flight")).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let (dir, config) = app.stop().await;
    // The job finished during the shutdown, before the process would have exited.
    let store = easel::store::open(&config).await.unwrap();
    let generation = store.get_generation(user.id, id.parse().unwrap()).await.unwrap().unwrap();
    assert_eq!(generation.status, easel::store::JobStatus::Complete);
    drop(dir);
}

/// A generation admitted while this node has a free render slot goes straight to its workers,
/// leased at birth (no claim); the others are claimed as slots free up.
#[tokio::test]
async fn generations_go_straight_to_free_render_slots_and_the_rest_are_claimed() {
    let app = spawn_app_with(|config| {
        config.render.max_jobs_in_flight = 2;
        // Long enough for the burst's five requests and a scrape to land while two render.
        config.render.simulated_duration = Duration::from_secs(5);
        // No poll: its claim holds the free slots for a moment, and a POST in that moment would
        // take the claim path.
        config.render.poll_interval = Duration::from_secs(3600);
    })
    .await;
    let user = app.admin.clone();
    let handed = |text: &str| sample(text, "easel_generations_handed_over_total");
    // One first, so the workers have made their first claim (until then, jobs of an earlier run
    // may be waiting, and new ones queue behind them).
    let first = app.create_generation(&user, &small_generation("first")).await;
    assert_eq!(app.finished_generation(&user, &first).await["status"], "COMPLETE");
    let before = handed(&scrape(&app).await);

    let mut ids = Vec::new();
    for n in 0..5 {
        ids.push(app.create_generation(&user, &small_generation(&format!("burst {n}"))).await);
    }
    assert_eq!(handed(&scrape(&app).await) - before, 2.0, "two free slots: two handed over, three to claim");
    let leased = app.get(&user, &format!("/generations/{}", ids[0])).await;
    assert_eq!(leased.body["generations_by_pk"]["status"], "PENDING", "rendering for 5 s");
    for id in &ids {
        let generation = app.finished_generation(&user, id).await;
        assert_eq!(generation["status"], "COMPLETE");
        assert_eq!(generation["generated_images"].as_array().unwrap().len(), 1);
    }
    // The queue drained (the claim that follows the last job's end finds it empty), the next one
    // goes straight to a slot again.
    tokio::time::sleep(Duration::from_secs(2)).await;
    let last = app.create_generation(&user, &small_generation("after")).await;
    assert_eq!(handed(&scrape(&app).await) - before, 3.0);
    assert_eq!(app.finished_generation(&user, &last).await["status"], "COMPLETE");
}

/// A job no signal announces (here: leased by a node that died, its lease running out) is found
/// by the workers' poll even while new generations keep going straight to free slots and ending.
#[tokio::test]
async fn a_job_whose_lease_runs_out_is_claimed_while_new_ones_stream_in() {
    let app = spawn_app_with(|config| config.render.poll_interval = Duration::from_millis(300)).await;
    let user = app.admin.clone();
    let first = app.create_generation(&user, &small_generation("first")).await;
    assert_eq!(app.finished_generation(&user, &first).await["status"], "COMPLETE");

    let store = &app.easel.store;
    let key = store.list_api_keys(Some(user.id)).await.unwrap().remove(0);
    let body = small_generation("left by a node that died");
    let params =
        easel::generation::GenerationParams::parse(&body, &easel::models::Catalogue::new(&[]).unwrap(), |_| 7).unwrap();
    let now = easel::clock::now_ms();
    let orphan = easel::store::Generation::pending(user.id, key.id, params, now);
    let admitted = store.create_generation(&orphan, 1000, Some(("node-gone", now + 600))).await.unwrap();
    assert_eq!(admitted, easel::store::Admission::Accepted);

    // A new generation every 100 ms (each handed straight to a free slot) for up to 5 s; the
    // orphan is claimed at a poll after its lease ran out.
    let orphan_path = format!("/generations/{}", orphan.id);
    let started = std::time::Instant::now();
    let mut status = String::new();
    while started.elapsed() < Duration::from_secs(5) {
        app.create_generation(&user, &small_generation("streaming")).await;
        status = app.get(&user, &orphan_path).await.body["generations_by_pk"]["status"].as_str().unwrap().to_string();
        if status == "COMPLETE" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(status, "COMPLETE", "the orphan was never claimed while generations streamed in");
}
