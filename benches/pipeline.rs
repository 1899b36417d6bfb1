//! Pipeline benchmark: `cargo bench --bench pipeline` (`-- post get e2e backlog` to pick
//! scenarios; `EASEL_BENCH_POSTGRES_URL=postgres://...` runs them on a fresh PostgreSQL database).
//!
//! The real `easel serve` (this repository's release binary) runs as a child process; this process
//! is the client, driving it over HTTP the way integrators do, with 64 keep-alive connections, and
//! the receiver of its callbacks (plain HTTP on loopback). Prints a Markdown table for
//! BENCHMARKS.md.
//!
//! - post: `POST /generations` as fast as 64 clients go, `serve --roles api` (nothing renders, so
//!   the user's PENDING jobs pile up as they would behind busy workers).
//! - get: `GET /generations/{id}` of 1,000 finished generations, 64 clients.
//! - e2e: every role on one node; generations (64x64, one image) offered at a steady rate, each
//!   timed from the moment it was due to be sent to the moment the receiver read its callback
//!   (so a client held up by a slow server counts against the server); then as fast as 64 clients
//!   go, for the sustained rate, and the server's peak resident memory.
//! - backlog: `POST /generations` with 50,000 jobs already pending for the user (100,000 slots)
//!   against the same with none: the time 30,000 admissions take after a warm-up of 10,000
//!   (medians of five fresh servers of each kind).
//!
//! `EASEL_BENCH_BINARY=/path/to/easel` runs another build of the server (an older commit's, to
//! compare) under the same load.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;
use tokio::net::{TcpListener, TcpStream};

const CLIENTS: usize = 64;
const BODY: &str = r#"{"prompt":"a lighthouse at dawn","width":64,"height":64,"num_images":1}"#;

#[path = "support/postgres.rs"]
mod postgres;
#[path = "support/procfs.rs"]
mod procfs;
#[path = "support/stats.rs"]
mod stats;
use stats::median;

/// One `easel serve` child process with its own data directory and database.
struct Server {
    child: Child,
    origin: String,
    key: String,
    _dir: tempfile::TempDir,
    /// A fresh PostgreSQL database under `EASEL_BENCH_POSTGRES_URL`, dropped after the child.
    _database: Option<postgres::BenchDatabase>,
}

impl Server {
    async fn start(roles: &str, slots: u64, webhook_url: Option<&str>) -> Server {
        let dir = tempfile::tempdir().unwrap();
        // A SQLite file in the data directory, or a fresh PostgreSQL database.
        let postgres = postgres::BenchDatabase::from_env().await;
        let database = match &postgres {
            Some(database) => database.url.clone(),
            None => format!("sqlite://{}/easel.db", dir.path().display()),
        };
        let env = |command: &mut Command| {
            command
                .env("EASEL_DATA_DIR", dir.path())
                .env("EASEL_DATABASE_URL", &database)
                .env("EASEL_LOG", "warn")
                .env("EASEL_WEBHOOK__ALLOW_HTTP", "true")
                .env("EASEL_WEBHOOK__ALLOW_PRIVATE_NETWORKS", "[\"127.0.0.0/8\"]");
        };
        let cli = |args: &[&str]| -> serde_json::Value {
            let mut command = Command::new(easel_binary());
            command.args(args);
            env(&mut command);
            let output = command.output().unwrap();
            assert!(output.status.success(), "easel {args:?}: {}", String::from_utf8_lossy(&output.stderr));
            serde_json::from_slice(&output.stdout).unwrap()
        };
        let user =
            cli(&["users", "create", "--username", "bench", "--concurrency-slots", &slots.to_string(), "--json"]);
        let user_id = user["id"].as_str().unwrap().to_string();
        let mut args = vec!["keys", "create", "--user", &user_id, "--name", "bench", "--json"];
        if let Some(url) = webhook_url {
            args.extend(["--webhook-url", url]);
        }
        let key = cli(&args)["key"].as_str().unwrap().to_string();

        let mut command = Command::new(easel_binary());
        env(&mut command);
        command
            .arg("serve")
            .env("EASEL_LISTEN", "127.0.0.1:0")
            .env("EASEL_LOG", "info")
            .env("EASEL_ROLES", roles)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut child = command.spawn().unwrap();
        // The log is read on its own thread (so the child never blocks on a full pipe) until the
        // listening line names the port.
        let stderr = child.stderr.take().unwrap();
        let (lines, listening) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            for line in std::io::BufRead::lines(std::io::BufReader::new(stderr)).map_while(Result::ok) {
                if let Some(rest) = line.split("easel is listening addr=").nth(1) {
                    let _ = lines.send(rest.split_whitespace().next().unwrap_or_default().to_string());
                }
            }
        });
        let addr = listening.recv_timeout(Duration::from_secs(60)).expect("easel serve starts");
        let origin = format!("http://{addr}");
        Server { child, origin, key, _dir: dir, _database: postgres }
    }

    fn addr(&self) -> String {
        self.origin.trim_start_matches("http://").to_string()
    }

    /// Bytes the server has caused to be written to storage so far (`write_bytes` of
    /// `/proc/<pid>/io`: the WAL, checkpoints, images; 0 on tmpfs, which has no block device).
    fn written_bytes(&self) -> u64 {
        procfs::field(self.child.id(), "io", "write_bytes")
    }

    /// Peak resident memory so far (VmHWM), in MiB.
    fn peak_rss_mib(&self) -> f64 {
        procfs::field(self.child.id(), "status", "VmHWM") as f64 / 1024.0
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// One keep-alive HTTP/1.1 connection to the server.
struct Connection {
    sender: SendRequest<Full<Bytes>>,
    host: String,
    auth: String,
}

impl Connection {
    async fn open(server: &Server) -> Connection {
        let stream = TcpStream::connect(server.addr()).await.unwrap();
        stream.set_nodelay(true).unwrap();
        let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.unwrap();
        tokio::spawn(connection);
        Connection { sender, host: server.addr(), auth: format!("Bearer {}", server.key) }
    }

    /// Sends one request; answers the status and body.
    async fn send(&mut self, method: &str, path: &str, body: &'static str) -> (u16, Bytes) {
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("/api/rest/v1{path}"))
            .header("host", &self.host)
            .header("authorization", &self.auth)
            .header("content-type", "application/json")
            .body(Full::new(Bytes::from_static(body.as_bytes())))
            .unwrap();
        self.sender.ready().await.unwrap();
        let response = self.sender.send_request(request).await.unwrap();
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, body)
    }

    async fn post_generation(&mut self) -> String {
        let (status, body) = self.send("POST", "/generations", BODY).await;
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let json: serde_json::Value = serde_json::from_slice(&body).unwrap();
        json["sdGenerationJob"]["generationId"].as_str().unwrap().to_string()
    }
}

/// What a closed-loop run measured: requests answered with the expected status, and latencies.
struct Run {
    done: u64,
    seconds: f64,
    latencies_us: Vec<u64>,
}

impl Run {
    fn rate(&self) -> f64 {
        self.done as f64 / self.seconds
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        percentile(&self.latencies_us, p) as f64 / 1000.0
    }
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    sorted[((sorted.len() as f64 - 1.0) * p).round() as usize]
}

/// `CLIENTS` connections each sending `request` back to back for `seconds` (after a one-second
/// warm-up that is not counted).
async fn closed_loop<F, Fut>(server: &Server, seconds: f64, request: F) -> Run
where
    F: Fn(Connection, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = (Connection, bool)> + Send,
{
    let counting = Arc::new(AtomicBool::new(false));
    let stop = Arc::new(AtomicBool::new(false));
    let mut tasks = Vec::new();
    for client in 0..CLIENTS {
        let mut connection = Connection::open(server).await;
        let (counting, stop, request) = (counting.clone(), stop.clone(), request.clone());
        tasks.push(tokio::spawn(async move {
            let (mut done, mut latencies, mut n) = (0u64, Vec::new(), 0usize);
            while !stop.load(Ordering::Relaxed) {
                let started = Instant::now();
                let (back, ok) = request(connection, client + n * CLIENTS).await;
                connection = back;
                n += 1;
                if counting.load(Ordering::Relaxed) && ok {
                    done += 1;
                    latencies.push(started.elapsed().as_micros() as u64);
                }
            }
            (done, latencies)
        }));
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    counting.store(true, Ordering::Relaxed);
    let started = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    counting.store(false, Ordering::Relaxed);
    let elapsed = started.elapsed().as_secs_f64();
    stop.store(true, Ordering::Relaxed);
    let (mut done, mut latencies_us) = (0, Vec::new());
    for task in tasks {
        let (d, l) = task.await.unwrap();
        done += d;
        latencies_us.extend(l);
    }
    latencies_us.sort_unstable();
    Run { done, seconds: elapsed, latencies_us }
}

async fn post_run(server: &Server, seconds: f64) -> Run {
    closed_loop(server, seconds, |mut connection, _| async move {
        let (status, _) = connection.send("POST", "/generations", BODY).await;
        (connection, status == 200)
    })
    .await
}

/// Posts `count` generations as fast as `CLIENTS` connections go; answers their ids.
async fn post_many(server: &Server, count: usize) -> Vec<String> {
    let next = Arc::new(AtomicU64::new(0));
    let ids = Arc::new(Mutex::new(Vec::with_capacity(count)));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut connection = Connection::open(server).await;
        let (next, ids) = (next.clone(), ids.clone());
        tasks.push(tokio::spawn(async move {
            while next.fetch_add(1, Ordering::Relaxed) < count as u64 {
                let id = connection.post_generation().await;
                ids.lock().unwrap().push(id);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    Arc::try_unwrap(ids).unwrap().into_inner().unwrap()
}

// ---------------------------------------------------------------------------------------------
// The receiver: answers 204 at once, and notes when each generation's callback was read.

#[derive(Clone, Default)]
struct Receiver {
    arrived: Arc<Mutex<HashMap<String, Instant>>>,
    count: Arc<AtomicU64>,
}

impl Receiver {
    async fn start(&self) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let receiver = self.clone();
        tokio::spawn(async move {
            loop {
                let (stream, _) = listener.accept().await.unwrap();
                let receiver = receiver.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |request: hyper::Request<hyper::body::Incoming>| {
                        let receiver = receiver.clone();
                        async move {
                            let body = request.into_body().collect().await?.to_bytes();
                            let read = Instant::now();
                            let json: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
                            if let Some(id) = json["data"]["object"]["id"].as_str() {
                                receiver.arrived.lock().unwrap().insert(id.to_string(), read);
                                receiver.count.fetch_add(1, Ordering::Relaxed);
                            }
                            Ok::<_, hyper::Error>(
                                hyper::Response::builder().status(204).body(Full::new(Bytes::new())).unwrap(),
                            )
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await;
                });
            }
        });
        url
    }
}

/// Generations offered at `rate`/s for `seconds` across `CLIENTS` connections; each is timed from
/// the moment it was due to the moment its callback was read. Answers the sorted latencies (µs)
/// and how many callbacks never came within 30 s.
async fn open_loop(server: &Server, receiver: &Receiver, rate: u64, seconds: u64) -> (Vec<u64>, usize) {
    let total = rate * seconds;
    // A multi-consumer queue of send times: the pacer below is its one producer.
    let (tickets, queue) = tokio::sync::mpsc::unbounded_channel::<Instant>();
    let queue = Arc::new(tokio::sync::Mutex::new(queue));
    let sent = Arc::new(Mutex::new(Vec::with_capacity(total as usize)));
    let mut tasks = Vec::new();
    for _ in 0..CLIENTS {
        let mut connection = Connection::open(server).await;
        let (queue, sent) = (queue.clone(), sent.clone());
        tasks.push(tokio::spawn(async move {
            loop {
                let Some(due) = queue.lock().await.recv().await else { break };
                let id = connection.post_generation().await;
                sent.lock().unwrap().push((id, due));
            }
        }));
    }
    let start = Instant::now();
    for n in 0..total {
        let due = start + Duration::from_micros(n * 1_000_000 / rate);
        tokio::time::sleep_until(due.into()).await;
        let _ = tickets.send(due);
    }
    drop(tickets);
    for task in tasks {
        task.await.unwrap();
    }
    let sent = Arc::try_unwrap(sent).unwrap().into_inner().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let all_arrived = {
            let arrived = receiver.arrived.lock().unwrap();
            sent.iter().all(|(id, _)| arrived.contains_key(id))
        };
        if all_arrived || Instant::now() > deadline {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let arrived = receiver.arrived.lock().unwrap();
    let mut latencies: Vec<u64> = sent
        .iter()
        .filter_map(|(id, due)| arrived.get(id).map(|read| read.saturating_duration_since(*due).as_micros() as u64))
        .collect();
    let missing = sent.len() - latencies.len();
    latencies.sort_unstable();
    (latencies, missing)
}

// ---------------------------------------------------------------------------------------------

/// The `easel` binary under test: this build's, or `EASEL_BENCH_BINARY` (another build, to
/// compare).
fn easel_binary() -> PathBuf {
    std::env::var_os("EASEL_BENCH_BINARY").map(PathBuf::from).unwrap_or_else(|| env!("CARGO_BIN_EXE_easel").into())
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).filter(|a| !a.starts_with("--")).collect();
    let wanted = |name: &str| args.is_empty() || args.iter().any(|a| a == name);
    let database = if std::env::var("EASEL_BENCH_POSTGRES_URL").is_ok() { "PostgreSQL" } else { "SQLite" };
    println!("pipeline benchmark on {database}, {} ({CLIENTS} clients)", easel_binary().display());
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build().unwrap();
    runtime.block_on(async {
        let mut table = Vec::new();
        if wanted("post") {
            let server = Server::start("[\"api\"]", 100_000_000, None).await;
            let run = post_run(&server, 10.0).await;
            println!("  post: {} accepted in {:.1} s", run.done, run.seconds);
            table.push(format!(
                "| `POST /generations` accepted/s, {CLIENTS} clients, API only | {:.0}/s (p50 {:.1} ms, p99 {:.1} ms) | >= {} |",
                run.rate(),
                run.percentile_ms(0.5),
                run.percentile_ms(0.99),
                if database == "SQLite" { "15,000" } else { "5,000" }
            ));
        }
        if wanted("get") {
            let server = Server::start("[\"api\", \"render\"]", 100_000, None).await;
            let ids = Arc::new(post_many(&server, 1_000).await);
            let run = closed_loop(&server, 10.0, move |mut connection, n| {
                let ids = ids.clone();
                async move {
                    let path = format!("/generations/{}", ids[n % ids.len()]);
                    let path: &'static str = Box::leak(path.into_boxed_str());
                    let (status, _) = connection.send("GET", path, "").await;
                    (connection, status == 200)
                }
            })
            .await;
            table.push(format!(
                "| `GET /generations/{{id}}` answered/s, {CLIENTS} clients | {:.0}/s (p50 {:.1} ms, p99 {:.1} ms) | >= 20,000 |",
                run.rate(),
                run.percentile_ms(0.5),
                run.percentile_ms(0.99)
            ));
        }
        if wanted("e2e") {
            let receiver = Receiver::default();
            let url = receiver.start().await;
            let server = Server::start("[\"api\", \"render\", \"deliver\"]", 100_000_000, Some(&url)).await;
            for rate in [200, 1_000] {
                let written = server.written_bytes();
                let (latencies, missing) = open_loop(&server, &receiver, rate, 10).await;
                // Includes what a checkpoint still owed for the run before; each run waits for its
                // callbacks, so little is carried over.
                let per_generation = (server.written_bytes() - written) as f64 / (rate * 10) as f64 / 1024.0;
                let ms = |us: u64| us as f64 / 1000.0;
                println!("  e2e at {rate}/s: {} callbacks, {missing} missing", latencies.len());
                table.push(format!(
                    "| end to end at {rate} generations/s, POST due → callback read | p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms{}; {per_generation:.0} KiB written to storage per generation | p99 <= 10 ms at 1,000/s |",
                    ms(percentile(&latencies, 0.5)),
                    ms(percentile(&latencies, 0.99)),
                    ms(latencies.last().copied().unwrap_or(0)),
                    if missing > 0 { format!(", {missing} callbacks missing after 30 s") } else { String::new() }
                ));
            }
            // Saturation: as fast as the clients go; the rate that reaches the receiver.
            let before = receiver.count.load(Ordering::Relaxed);
            let started = Instant::now();
            let run = post_run(&server, 10.0).await;
            let accepted = run.done;
            // Callbacks that arrive within the window plus 2 s count; a growing backlog shows as
            // callbacks/s below the accepted rate.
            tokio::time::sleep(Duration::from_secs(2)).await;
            let received = receiver.count.load(Ordering::Relaxed) - before;
            let window = started.elapsed().as_secs_f64();
            table.push(format!(
                "| end to end, generations/s sustained (64x64, callbacks received) | {:.0} callbacks/s ({:.0} POSTs/s accepted) | >= 3,000 |",
                received as f64 / window,
                accepted as f64 / run.seconds
            ));
            table.push(format!(
                "| server peak RSS during the end-to-end runs | {:.0} MiB | <= 60 MB |",
                server.peak_rss_mib()
            ));
        }
        if wanted("backlog") {
            // Five fresh servers of each kind, alternating: one measurement takes under a second
            // on a fast machine, and varies by a tenth from one to the next.
            let (mut bases, mut loadeds) = (Vec::new(), Vec::new());
            for _ in 0..5 {
                let empty = Server::start("[\"api\"]", 100_000, None).await;
                bases.push(admission_rate(&empty).await);
                drop(empty);
                let loaded = Server::start("[\"api\"]", 100_000, None).await;
                post_many(&loaded, 50_000).await;
                loadeds.push(admission_rate(&loaded).await);
            }
            let (base, with_backlog) = (median(&mut bases), median(&mut loadeds));
            table.push(format!(
                "| admission with 50,000 jobs already pending (100,000 slots) | {with_backlog:.0}/s against {base:.0}/s with none ({:+.0} %; medians of five servers each) | within 10 % |",
                (with_backlog / base - 1.0) * 100.0
            ));
        }
        println!("\n| figure | measured | target |\n|---|---|---|");
        for row in table {
            println!("{row}");
        }
    });
}

/// Like `post_run`, for at most `limit` requests in all (so a run stays within the user's slots).
/// Admissions a second, 64 clients: the time 30,000 take after 10,000 more as a warm-up. Counted,
/// not timed, so the user's pending jobs stay within the slots however fast the machine: 50,000
/// pending before, 90,000 after.
async fn admission_rate(server: &Server) -> f64 {
    post_many(server, 10_000).await;
    let started = Instant::now();
    post_many(server, 30_000).await;
    30_000.0 / started.elapsed().as_secs_f64()
}
