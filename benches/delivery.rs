//! Webhook delivery benchmark: `cargo bench --bench delivery` (`-- drain latency isolation memory`
//! to pick scenarios). Easel's real delivery path (SQLite store, engine, HTTP client) against
//! receivers in a separate process on the same machine. Prints a Markdown table for BENCHMARKS.md.
//!
//! - drain: a backlog of due deliveries to fast receivers; deliveries/s until all are recorded.
//! - latency: generations finished at a steady rate through the render workers' path (outbox
//!   insert in the finishing transaction, then hand-off); time from the commit returning to the
//!   receiver reading the request.
//! - isolation: the drain again with as many receivers that never answer (until the timeout) as
//!   healthy ones; the healthy receivers' throughput against the drain without them.
//!   `EASEL_BENCH_ROUNDS=N` alternates the two N times and reports their medians.
//! - memory: 1,000,000 pending deliveries due tomorrow; resident memory of `easel serve`.
//!
//! `EASEL_BENCH_SQL_LOG=FILE` writes every statement the store runs (sqlx's `sqlx::query` events,
//! JSON lines with their times) to FILE, to count and time the statements per delivery.

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use bytes::Bytes;
use easel::clock::now_ms;
use easel::config::{Config, WebhookConfig};
use easel::ids::{ApiKeyId, DeliveryId, GenerationId, UserId};
use easel::secrets::MasterKey;
use easel::store::{DeliveryStatus, JobOutcome, Store, StoreResult};
use easel::webhook::engine::DeliveryEngine;
use easel::webhook::outbox::endpoint_of;
use http_body_util::{BodyExt, Full};
use sqlx::QueryBuilder;

/// Runs `$body` in a transaction on the database at `$url`, with `$db` naming its sqlx database
/// type (bench set-up writes rows straight into the schema, on either backend).
macro_rules! in_transaction {
    ($url:expr, |$tx:ident, $db:ident| $body:block) => {
        if $url.starts_with("postgres") {
            #[allow(dead_code)]
            type $db = sqlx::Postgres;
            let pool = sqlx::postgres::PgPoolOptions::new().max_connections(1).connect($url).await.unwrap();
            let mut $tx = pool.begin().await.unwrap();
            $body
            $tx.commit().await.unwrap();
            pool.close().await;
        } else {
            #[allow(dead_code)]
            type $db = sqlx::Sqlite;
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect($url).await.unwrap();
            let mut $tx = pool.begin().await.unwrap();
            $body
            $tx.commit().await.unwrap();
            pool.close().await;
        }
    };
}

/// `EASEL_BENCH_POSTGRES_URL` (a server's admin URL) runs the benchmark on PostgreSQL, each
/// scenario on a fresh database; otherwise SQLite.
#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/stats.rs"]
mod stats;
use stats::median;
use tokio_util::sync::CancellationToken;

const RECEIVER_ROLE: &str = "EASEL_BENCH_RECEIVER";

fn unix_micros() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_micros() as u64
}

// ---------------------------------------------------------------------------------------------
// The receiver process: `healthy` fast listeners, `hanging` listeners that never answer, and a
// control listener that reports what arrived.

fn run_receiver(healthy: usize, hanging: usize) {
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(1).enable_all().build().unwrap();
    runtime.block_on(async move {
        let count = Arc::new(AtomicU64::new(0));
        let arrivals: Arc<Mutex<Vec<(String, u64)>>> = Arc::new(Mutex::new(Vec::new()));
        let mut ports = Vec::new();
        for n in 0..healthy + hanging {
            let hang = n >= healthy;
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
            ports.push(listener.local_addr().unwrap().port());
            let (count, arrivals) = (count.clone(), arrivals.clone());
            tokio::spawn(async move {
                loop {
                    let Ok((tcp, _)) = listener.accept().await else { continue };
                    let _ = tcp.set_nodelay(true);
                    let (count, arrivals) = (count.clone(), arrivals.clone());
                    tokio::spawn(async move {
                        let service =
                            hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                                let (count, arrivals) = (count.clone(), arrivals.clone());
                                async move {
                                    let at = unix_micros();
                                    let id = request
                                        .headers()
                                        .get("webhook-id")
                                        .and_then(|v| v.to_str().ok())
                                        .unwrap_or("")
                                        .to_string();
                                    let _ = request.into_body().collect().await;
                                    if hang {
                                        std::future::pending::<()>().await;
                                    }
                                    count.fetch_add(1, Ordering::Relaxed);
                                    arrivals.lock().unwrap().push((id, at));
                                    Ok::<_, std::convert::Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                                }
                            });
                        let _ = hyper::server::conn::http1::Builder::new()
                            .serve_connection(hyper_util::rt::TokioIo::new(tcp), service)
                            .await;
                    });
                }
            });
        }
        // Control: one line per command on stdin; answers on stdout.
        println!("ports {}", ports.iter().map(|p| p.to_string()).collect::<Vec<_>>().join(","));
        let stdin = tokio::task::spawn_blocking(move || {
            let mut lines = Vec::new();
            for line in std::io::stdin().lock().lines() {
                let line = line.unwrap();
                lines.push(line.clone());
                let mut out = std::io::stdout().lock();
                match line.as_str() {
                    "count" => writeln!(out, "{}", count.load(Ordering::Relaxed)).unwrap(),
                    "arrivals" => {
                        let arrivals = arrivals.lock().unwrap();
                        writeln!(out, "{}", arrivals.len()).unwrap();
                        for (id, at) in arrivals.iter() {
                            writeln!(out, "{id} {at}").unwrap();
                        }
                    }
                    "reset" => {
                        count.store(0, Ordering::Relaxed);
                        arrivals.lock().unwrap().clear();
                        writeln!(out, "ok").unwrap();
                    }
                    _ => return,
                }
                out.flush().unwrap();
            }
        });
        let _ = stdin.await;
    });
}

struct Receivers {
    child: Child,
    stdin: std::process::ChildStdin,
    stdout: BufReader<std::process::ChildStdout>,
    ports: Vec<u16>,
}

impl Receivers {
    fn start(healthy: usize, hanging: usize) -> Receivers {
        let mut child = Command::new(std::env::current_exe().unwrap())
            .env(RECEIVER_ROLE, format!("{healthy},{hanging}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let stdin = child.stdin.take().unwrap();
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let ports = line.trim().strip_prefix("ports ").unwrap().split(',').map(|p| p.parse().unwrap()).collect();
        Receivers { child, stdin, stdout, ports }
    }

    fn ask(&mut self, command: &str) -> String {
        writeln!(self.stdin, "{command}").unwrap();
        self.stdin.flush().unwrap();
        let mut line = String::new();
        self.stdout.read_line(&mut line).unwrap();
        line.trim().to_string()
    }

    fn count(&mut self) -> u64 {
        self.ask("count").parse().unwrap()
    }

    fn arrivals(&mut self) -> HashMap<String, u64> {
        let n: usize = self.ask("arrivals").parse().unwrap();
        let mut map = HashMap::with_capacity(n);
        for _ in 0..n {
            let mut line = String::new();
            self.stdout.read_line(&mut line).unwrap();
            let (id, at) = line.trim().split_once(' ').unwrap();
            map.insert(id.to_string(), at.parse().unwrap());
        }
        map
    }
}

impl Drop for Receivers {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// Set-up shared by the scenarios.

struct Bench {
    _dir: tempfile::TempDir,
    config: Config,
    store: Arc<dyn Store>,
    master_key: MasterKey,
    user: UserId,
    /// One key per receiver port: (key id, callback URL).
    keys: Vec<(ApiKeyId, String)>,
    payload: Bytes,
    /// The last field, so dropped after the store (fields drop in order).
    _database: Option<postgres::BenchDatabase>,
}

impl Bench {
    async fn new(ports: &[u16], webhook: WebhookConfig) -> Bench {
        let dir = tempfile::tempdir().unwrap();
        let database = postgres::BenchDatabase::from_env().await;
        let config = Config {
            data_dir: dir.path().to_path_buf(),
            database_url: database.as_ref().map(|d| d.url.clone()),
            webhook,
            ..Config::default()
        };
        let store = easel::store::open(&config).await.unwrap();
        let master_key = MasterKey::load(None, dir.path()).unwrap();
        let user = easel::admin::create_user(&*store, "bench", 1_000_000).await.unwrap();
        let mut keys = Vec::new();
        for port in ports {
            let url = format!("http://127.0.0.1:{port}/hook");
            let key = easel::admin::create_api_key(
                &*store,
                &master_key,
                user.id,
                "bench",
                Some(&url),
                Some("abcd"),
                &config.webhook,
            )
            .await
            .unwrap();
            keys.push((key.record.id, url));
        }
        let payload = sample_payload();
        Bench { _dir: dir, config, store, master_key, user: user.id, keys, payload, _database: database }
    }

    fn database_url(&self) -> String {
        self.config.database_url()
    }

    /// Inserts `count` pending deliveries, round-robin over the keys, due at `due`. On SQLite the
    /// WAL is then copied into the database file: the store's checkpointer would otherwise do it
    /// (hundreds of megabytes, twice as many beside hanging receivers) during the measured drain.
    async fn insert_backlog(&self, count: usize, due: i64) {
        self.insert_rows(count, due).await;
        let url = self.database_url();
        if !url.starts_with("postgres") {
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect(&url).await.unwrap();
            let (busy, _, _): (i64, i64, i64) =
                sqlx::query_as("PRAGMA wal_checkpoint(TRUNCATE)").fetch_one(&pool).await.unwrap();
            assert_eq!(busy, 0, "the backlog's checkpoint was blocked");
            pool.close().await;
        }
    }

    async fn insert_rows(&self, count: usize, due: i64) {
        let rows: Vec<(String, usize)> = (0..count).map(|n| (DeliveryId::random().to_string(), n)).collect();
        in_transaction!(&self.database_url(), |tx, Db| {
            for chunk in rows.chunks(400) {
                let mut deliveries = QueryBuilder::<Db>::new(
                    "INSERT INTO webhook_deliveries (id, generation_id, user_id, api_key_id, event_type, url, endpoint, status, \
                 next_attempt_at, created_at, updated_at) ",
                );
                deliveries.push_values(chunk, |mut row, (id, n)| {
                    let (key, url) = &self.keys[n % self.keys.len()];
                    row.push_bind(id.clone())
                        .push_bind(GenerationId::random().to_string())
                        .push_bind(self.user.to_string())
                        .push_bind(key.to_string())
                        .push_bind("image_generation.complete")
                        .push_bind(url.clone())
                        .push_bind(endpoint_of(url))
                        .push_bind("pending")
                        .push_bind(due + *n as i64 / 1000)
                        .push_bind(due)
                        .push_bind(due);
                });
                deliveries.build().execute(&mut *tx).await.unwrap();
                let mut payloads = QueryBuilder::<Db>::new("INSERT INTO webhook_payloads (delivery_id, body) ");
                payloads.push_values(chunk, |mut row, (id, _)| {
                    row.push_bind(id.clone()).push_bind(self.payload.to_vec());
                });
                payloads.build().execute(&mut *tx).await.unwrap();
            }
        });
    }

    async fn count_succeeded(&self) -> StoreResult<u64> {
        self.store.count_deliveries(DeliveryStatus::Succeeded).await
    }
}

/// A real callback body (about 3 KB, like the guide's sample).
fn sample_payload() -> Bytes {
    let sample = include_str!("../tests/fixtures/leonardo-webhook-sample.json");
    let value: serde_json::Value = serde_json::from_str(sample).unwrap();
    Bytes::from(serde_json::to_vec(&value).unwrap())
}

fn bench_webhook_config() -> WebhookConfig {
    WebhookConfig {
        allow_http: true,
        allow_private_networks: vec!["127.0.0.0/8".parse().unwrap()],
        max_in_flight: 1024,
        per_endpoint_in_flight: 32,
        batch_size: 1000,
        ..WebhookConfig::default()
    }
}

fn start_engine(
    bench: &Bench,
) -> (Arc<DeliveryEngine>, easel::webhook::engine::DeliveryQueue, CancellationToken, tokio::task::JoinHandle<()>) {
    let (engine, queue, inbox) = DeliveryEngine::new(
        bench.store.clone(),
        bench.config.webhook.clone(),
        bench.master_key.clone(),
        "bench-node".into(),
        Arc::new(easel::metrics::Metrics::new()),
    )
    .unwrap();
    let shutdown = CancellationToken::new();
    // Sends in flight get 1 s after the shutdown.
    let deadline = CancellationToken::new();
    tokio::spawn({
        let (shutdown, deadline) = (shutdown.clone(), deadline.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(Duration::from_secs(1)).await;
            deadline.cancel();
        }
    });
    let task = tokio::spawn(engine.clone().run(inbox, shutdown.clone(), deadline));
    (engine, queue, shutdown, task)
}

// ---------------------------------------------------------------------------------------------
// Scenarios.

/// Drains `count` deliveries to `healthy` fast receivers (plus `hanging` ones that never answer,
/// each given as many deliveries); returns healthy deliveries/s.
async fn drain(healthy: usize, hanging: usize, count: usize) -> f64 {
    let mut receivers = Receivers::start(healthy, hanging);
    let bench = Bench::new(&receivers.ports, bench_webhook_config()).await;
    let total = count * (healthy + hanging) / healthy;
    bench.insert_backlog(total, now_ms() - 1000).await;
    println!("  draining");
    let started = Instant::now();
    let (_engine, _queue, shutdown, task) = start_engine(&bench);
    let healthy_expected = count as u64;
    loop {
        tokio::time::sleep(Duration::from_millis(20)).await;
        if receivers.count() >= healthy_expected {
            break;
        }
        assert!(started.elapsed() < Duration::from_secs(120), "drain did not finish");
    }
    let sent = started.elapsed();
    // Until the store has recorded every healthy delivery as succeeded.
    while bench.count_succeeded().await.unwrap() < healthy_expected {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let recorded = started.elapsed();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let rate = count as f64 / recorded.as_secs_f64();
    println!(
        "  drain: {count} deliveries to {healthy} receivers ({hanging} hanging): all received after {:.2} s, all recorded after {:.2} s: {:.0}/s",
        sent.as_secs_f64(),
        recorded.as_secs_f64(),
        rate
    );
    rate
}

/// Finishes generations at `rate`/s for `seconds` through the render workers' path and measures
/// commit-to-receipt latency.
async fn latency(rate: u64, seconds: u64) -> Vec<u64> {
    let mut receivers = Receivers::start(8, 0);
    let bench = Bench::new(&receivers.ports, bench_webhook_config()).await;
    let count = (rate * seconds) as usize;
    // Generations already claimed by this node, as a render worker holds them.
    let generations = insert_claimed_generations(&bench, count).await;
    let (_engine, queue, shutdown, task) = start_engine(&bench);
    let outbox = easel::webhook::outbox::Outbox {
        master_key: bench.master_key.clone(),
        images: easel::images::ImageStore::from_config(&bench.config, "http://127.0.0.1:1").unwrap(),
        catalogue: Arc::new(easel::models::Catalogue::new(&[]).unwrap()),
        queue: Some(queue),
    };
    // Each generation finishes on its own task, as render jobs do.
    let outbox = Arc::new(outbox);
    let commits: Arc<Mutex<HashMap<String, u64>>> = Arc::new(Mutex::new(HashMap::with_capacity(count)));
    let interval = Duration::from_nanos(1_000_000_000 / rate);
    let mut ticker = tokio::time::interval(interval);
    ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let started = Instant::now();
    let mut finishing = tokio::task::JoinSet::new();
    for (n, generation) in generations.into_iter().enumerate() {
        ticker.tick().await;
        let key = bench.keys[n % bench.keys.len()].0;
        let (store, outbox, commits) = (bench.store.clone(), outbox.clone(), commits.clone());
        finishing.spawn(async move {
            let mut finished = generation.clone();
            finished.api_key_id = key;
            finished.status = easel::store::JobStatus::Complete;
            let at = now_ms();
            let prepared = outbox.prepare(&*store, &finished, at).await.unwrap().expect("the key has a webhook");
            let outcome = JobOutcome::Complete(Vec::new());
            let done = store
                .finish_generation(generation.id, "bench-node", at, &outcome, Some(&prepared.delivery))
                .await
                .unwrap();
            assert!(done);
            commits.lock().unwrap().insert(prepared.delivery.id.to_string(), unix_micros());
            prepared.dispatch();
        });
    }
    while finishing.join_next().await.is_some() {}
    let produced = started.elapsed();
    while receivers.count() < count as u64 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let arrivals = receivers.arrivals();
    shutdown.cancel();
    let _ = tokio::time::timeout(Duration::from_secs(5), task).await;
    let commits = commits.lock().unwrap();
    let mut latencies: Vec<u64> = commits.iter().map(|(id, commit)| arrivals[id].saturating_sub(*commit)).collect();
    latencies.sort_unstable();
    println!(
        "  latency: {count} generations finished in {:.2} s ({:.0}/s offered)",
        produced.as_secs_f64(),
        count as f64 / produced.as_secs_f64()
    );
    latencies
}

async fn insert_claimed_generations(bench: &Bench, count: usize) -> Vec<easel::store::Generation> {
    let catalogue = easel::models::Catalogue::new(&[]).unwrap();
    let body = serde_json::json!({"prompt": "An oil painting of a cat", "width": 512, "height": 512, "num_images": 1});
    let params = easel::generation::GenerationParams::parse(&body, &catalogue, |_| 905778432).unwrap();
    let now = now_ms();
    let generations: Vec<easel::store::Generation> = (0..count)
        .map(|_| easel::store::Generation {
            id: GenerationId::random(),
            user_id: bench.user,
            api_key_id: bench.keys[0].0,
            status: easel::store::JobStatus::Pending,
            params: params.clone(),
            failure_reason: None,
            created_at: now,
            updated_at: now,
            images: Vec::new(),
        })
        .collect();
    let params = serde_json::to_string(&params).unwrap();
    in_transaction!(&bench.database_url(), |tx, Db| {
        for chunk in generations.chunks(500) {
            let mut insert = QueryBuilder::<Db>::new(
                "INSERT INTO generations (id, user_id, api_key_id, status, params, created_at, updated_at, lease_owner, \
             lease_expires_at) ",
            );
            insert.push_values(chunk, |mut row, g| {
                row.push_bind(g.id.to_string())
                    .push_bind(g.user_id.to_string())
                    .push_bind(g.api_key_id.to_string())
                    .push_bind("PENDING")
                    .push_bind(params.clone())
                    .push_bind(now)
                    .push_bind(now)
                    .push_bind("bench-node")
                    .push_bind(now + 3_600_000);
            });
            insert.build().execute(&mut *tx).await.unwrap();
        }
    });
    generations
}

/// Resident memory of `easel serve` holding `count` pending deliveries due tomorrow.
async fn memory(count: usize) -> (u64, u64) {
    let bench = Bench::new(&[9], bench_webhook_config()).await;
    let started = Instant::now();
    bench.insert_backlog(count, now_ms() + 86_400_000).await;
    println!("  memory: {count} future deliveries inserted in {:.1} s", started.elapsed().as_secs_f64());
    let data_dir = bench.config.data_dir.clone();
    let database_url = bench.database_url();
    drop(bench.store);
    let mut child = Command::new(env!("CARGO_BIN_EXE_easel"))
        .arg("serve")
        .env("EASEL_DATA_DIR", &data_dir)
        .env("EASEL_DATABASE_URL", &database_url)
        .env("EASEL_LISTEN", "127.0.0.1:0")
        .env("EASEL_LOG", "warn")
        .env("EASEL_WEBHOOK__ALLOW_HTTP", "true")
        .env("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let kib = |field: &str| procfs::field(child.id(), "status", field);
    let (rss, peak) = (kib("VmRSS"), kib("VmHWM"));
    let _ = child.kill();
    let _ = child.wait();
    (rss, peak)
}

/// `" (median of 31000, 35000, ...)"` for several runs, nothing for one.
fn runs_of(rates: &[f64]) -> String {
    if rates.len() < 2 {
        return String::new();
    }
    let each: Vec<String> = rates.iter().map(|r| format!("{r:.0}")).collect();
    format!(" (median of {})", each.join(", "))
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

fn main() {
    if let Ok(role) = std::env::var(RECEIVER_ROLE) {
        let (healthy, hanging) = role.split_once(',').unwrap();
        run_receiver(healthy.parse().unwrap(), hanging.parse().unwrap());
        return;
    }
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    // `EASEL_BENCH_SQL_LOG=FILE`: every statement the engine's store runs, as JSON lines with
    // its time (sqlx's `sqlx::query` events), to count and time statements per delivery.
    if let Ok(path) = std::env::var("EASEL_BENCH_SQL_LOG") {
        use tracing_subscriber::layer::SubscriberExt;
        use tracing_subscriber::util::SubscriberInitExt;
        let file = std::fs::File::create(path).unwrap();
        tracing_subscriber::registry()
            .with(tracing_subscriber::fmt::layer().json().with_writer(std::sync::Mutex::new(file)))
            .with("sqlx::query=debug".parse::<tracing_subscriber::filter::Targets>().unwrap())
            .init();
    }
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut table = Vec::new();
        // `EASEL_BENCH_ROUNDS=N`: the drain and, if wanted, the isolation run alternate N times,
        // and their medians are reported; one run of each varies by a fifth from run to run on a
        // 2-core machine, so one pair says little about the healthy share.
        let rounds: usize = std::env::var("EASEL_BENCH_ROUNDS").ok().and_then(|n| n.parse().ok()).unwrap_or(1).max(1);
        let (mut drains, mut isolations) = (Vec::new(), Vec::new());
        if wanted("drain") || wanted("isolation") {
            for round in 1..=rounds {
                println!("drain: 200,000 due deliveries, 10 receivers (round {round} of {rounds})");
                drains.push(drain(10, 0, 200_000).await);
                if wanted("isolation") {
                    println!("isolation: 10 healthy and 10 hanging receivers (15 s timeout; round {round} of {rounds})");
                    isolations.push(drain(10, 10, 200_000).await);
                }
            }
            let rate = median(&mut drains);
            let runs = runs_of(&drains);
            table.push(format!(
                "| drain a backlog to fast receivers (10 endpoints) | {rate:.0} deliveries/s{runs} | >= 30,000/s |"
            ));
        }
        if wanted("latency") {
            println!("latency: 1,000 generations/s for 10 s, 8 receivers");
            let latencies = latency(1000, 10).await;
            let ms = |us: u64| us as f64 / 1000.0;
            table.push(format!(
                "| COMPLETE commit to receiver, 1,000/s | p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms | p99 <= 5 ms |",
                ms(percentile(&latencies, 0.5)),
                ms(percentile(&latencies, 0.99)),
                ms(*latencies.last().unwrap())
            ));
        }
        if wanted("isolation") {
            let rate = median(&mut isolations);
            let share = rate / median(&mut drains) * 100.0;
            let runs = runs_of(&isolations);
            table.push(format!(
                "| drain with 10 more endpoints hanging until timeout | healthy: {rate:.0} deliveries/s{runs} ({share:.0}% of the drain without them) | >= 90% |"
            ));
        }
        if wanted("memory") {
            println!("memory: 1,000,000 pending deliveries due tomorrow");
            let (rss, peak) = memory(1_000_000).await;
            table.push(format!(
                "| `easel serve` holding 1,000,000 pending future retries | RSS {:.0} MB (peak {:.0} MB) | < 150 MB |",
                rss as f64 / 1024.0,
                peak as f64 / 1024.0
            ));
        }
        println!("\n| scenario | measured | target |\n|---|---|---|");
        for row in table {
            println!("{row}");
        }
    });
}
