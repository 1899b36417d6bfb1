//! Memory stays bounded by configuration whatever receivers do: the `easel` binary in a child
//! process, its resident memory read from `/proc`.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

use crate::child::*;

/// Resident memory of a process, in MiB.
fn rss_mib(pid: u32) -> f64 {
    crate::procfs::field(pid, "status", "VmRSS") as f64 / 1024.0
}

/// Posts `count` small generations from `clients` concurrent clients; returns the last id of each.
async fn flood(origin: &str, key: &str, clients: usize, count: usize, tag: &str) -> Vec<String> {
    let tasks = (0..clients).map(|client| {
        let (origin, key, tag) = (origin.to_string(), key.to_string(), tag.to_string());
        tokio::spawn(async move {
            let http = reqwest::Client::new();
            let mut last = String::new();
            for n in 0..count / clients {
                last = post_generation(&http, &origin, &key, &format!("{tag} {client} {n}")).await;
            }
            last
        })
    });
    futures_util::future::join_all(tasks).await.into_iter().map(|r| r.unwrap()).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn memory_stays_bounded_while_callbacks_pile_up_behind_a_receiver_that_never_answers() {
    // A receiver that accepts connections and never answers (nor closes them).
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let held = Arc::new(Mutex::new(Vec::new()));
    let accepting = tokio::spawn({
        let held = held.clone();
        async move {
            while let Ok((socket, _)) = listener.accept().await {
                held.lock().unwrap().push(socket);
            }
        }
    });

    let dir = crate::helpers::test_dir().await;
    let env = [
        ("EASEL_WEBHOOK__ALLOW_HTTP", "true"),
        ("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]"),
        ("EASEL_WEBHOOK__TIMEOUT", "1h"),
        ("EASEL_WEBHOOK__LEASE", "3h"),
        ("EASEL_WEBHOOK__MAX_IN_FLIGHT", "64"),
    ];
    let easel = EaselProcess::start(dir.path(), &env);
    let user = easel_json_with(
        dir.path(),
        &["users", "create", "--username", "flood", "--concurrency-slots", "100000", "--json"],
        &env,
    );
    let user_id = user["id"].as_str().unwrap();
    let key: Value = easel_json_with(
        dir.path(),
        &["keys", "create", "--user", user_id, "--name", "hanging", "--webhook-url", &url, "--json"],
        &env,
    );
    let key = key["key"].as_str().unwrap().to_string();
    let http = reqwest::Client::new();

    // Warm up (allocator, caches, the receiver's connections), then measure from there.
    for id in flood(&easel.origin, &key, 8, 2_000, "warm").await {
        completed_generation(&http, &easel.origin, &key, &id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let pid = easel.child.id();
    let before = rss_mib(pid);

    // PostgreSQL admits generations more slowly; the bound is the engine's, either way.
    let count = match crate::BACKEND {
        crate::helpers::Backend::Sqlite => 20_000,
        crate::helpers::Backend::Postgres => 8_000,
    };
    for id in flood(&easel.origin, &key, 8, count, "flood").await {
        completed_generation(&http, &easel.origin, &key, &id).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_mib(pid);
    let connections = held.lock().unwrap().len();
    accepting.abort();

    // Every callback is owed and waits in the database; memory holds a bounded few. Unbounded,
    // the held deliveries alone took about 5.7 KB each: 110 MB for 20,000.
    let pending =
        easel_json_with(dir.path(), &["deliveries", "list", "--status", "pending", "--limit", "1", "--json"], &env);
    assert!(pending.as_array().is_some_and(|list| !list.is_empty()), "{pending}");
    assert!(connections <= 32, "at most per_endpoint_in_flight connections ({connections})");
    let grown = after - before;
    eprintln!("RSS {before:.1} MiB -> {after:.1} MiB after {count} callbacks queued behind a hanging receiver");
    assert!(
        grown < 40.0,
        "RSS grew by {grown:.1} MiB ({before:.1} -> {after:.1}) while {count} callbacks waited for a hanging receiver"
    );
}
