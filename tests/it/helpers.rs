//! Test harness: a real Easel on port 0 with its own temporary data directory, typed request
//! helpers, and polling for eventual results.

use std::future::Future;
use std::time::{Duration, Instant};

use easel::config::Config;
use easel::ids::UserId;
use easel::server::{self, Easel};
use reqwest::StatusCode;
use serde_json::Value;
use tempfile::TempDir;

pub struct TestApp {
    pub easel: Easel,
    pub dir: TestDir,
    pub config: Config,
    /// `http://127.0.0.1:PORT`
    pub origin: String,
    pub client: reqwest::Client,
    /// The user created at first start.
    pub admin: TestUser,
}

#[derive(Clone, Debug)]
pub struct TestUser {
    pub id: UserId,
    pub key: String,
}

/// A user whose API key has a webhook.
#[derive(Clone, Debug)]
pub struct WebhookUser {
    pub user: TestUser,
    pub key_id: easel::ids::ApiKeyId,
    pub signing_secret: String,
}

/// A response: status, headers and JSON body (`Value::Null` when the body is not JSON).
pub struct Reply {
    pub status: StatusCode,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub text: String,
}

/// Says that a test (or suite) was skipped, on the real stderr: the test harness captures
/// `eprintln!` of passing tests, and a skip must be seen.
pub fn announce_skip(message: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "\n!!! SKIPPED {message}\n");
}

/// Which database the suite runs on (`crate::BACKEND`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// `it_postgres` runs on PostgreSQL, every other build of the suite on SQLite.
    pub const fn of_target(name: &str) -> Backend {
        let (name, postgres) = (name.as_bytes(), b"it_postgres");
        if name.len() != postgres.len() {
            return Backend::Sqlite;
        }
        let mut i = 0;
        while i < name.len() {
            if name[i] != postgres[i] {
                return Backend::Sqlite;
            }
            i += 1;
        }
        Backend::Postgres
    }
}

/// True (after saying so on stderr) when a test does not apply to the suite's backend: it tests
/// what only the other backend has (SQLite's lock file, several PostgreSQL nodes).
pub fn not_applicable(only_on: Backend, why: &str) -> bool {
    if crate::BACKEND == only_on {
        return false;
    }
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "(not applicable on {:?}: {why})", crate::BACKEND);
    true
}

/// A test's data directory and, on PostgreSQL, its own database (dropped with it).
pub struct TestDir {
    pub temp: TempDir,
    pub database: Option<crate::helpers::TestDatabase>,
}

impl TestDir {
    pub fn path(&self) -> &std::path::Path {
        self.temp.path()
    }
}

/// Where `test_dir` notes the test's database URL for child processes.
pub const DATABASE_URL_FILE: &str = "test-database-url";

/// A fresh data directory (and, on PostgreSQL, a fresh database) for one test.
pub async fn test_dir() -> TestDir {
    let temp = tempfile::tempdir().expect("temporary directory");
    let database = match crate::BACKEND {
        Backend::Sqlite => None,
        Backend::Postgres => Some(TestDatabase::create().await),
    };
    if let Some(database) = &database {
        // For `easel` child processes on this data directory (`child::database_env`).
        std::fs::write(temp.path().join(DATABASE_URL_FILE), &database.url).expect("write the database URL");
    }
    TestDir { temp, database }
}

/// Settings for a test server on port 0 in `dir` (on its database).
pub fn test_config(dir: &TestDir) -> Config {
    Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        data_dir: dir.path().to_path_buf(),
        database_url: dir.database.as_ref().map(|db| db.url.clone()),
        log: "warn".into(),
        ..Config::default()
    }
}

/// The PostgreSQL server the PostgreSQL suite uses: `EASEL_TEST_POSTGRES_URL`, or the local
/// server with trust authentication.
pub fn postgres_admin_url() -> String {
    std::env::var("EASEL_TEST_POSTGRES_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/postgres".into())
}

/// A database made for one test, dropped when the test ends.
pub struct TestDatabase {
    pub name: String,
    pub url: String,
}

impl TestDatabase {
    /// Ends the connections to this database that `which` picks (a condition on
    /// `pg_stat_activity`, `TRUE` for all), as a restart of the server or a cut network would;
    /// returns how many.
    pub async fn cut_connections(&self, which: &str) -> usize {
        let admin =
            sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await.unwrap();
        let cut: Vec<bool> = sqlx::query_scalar(&format!(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = $1 AND pid <> pg_backend_pid() AND ({which})"
        ))
        .bind(&self.name)
        .fetch_all(&admin)
        .await
        .unwrap();
        admin.close().await;
        cut.into_iter().filter(|ended| *ended).count()
    }

    /// Without a reachable PostgreSQL server the whole suite ends here, loudly, as skipped; under
    /// CI (`CI=true`) that is a failure instead.
    pub async fn create() -> TestDatabase {
        match TestDatabase::create_or_skip("the PostgreSQL suite").await {
            Some(database) => database,
            None => std::process::exit(0),
        }
    }

    /// For one test that needs PostgreSQL in a suite that does not: `None` after announcing the
    /// skip when no server is reachable (a failure under CI).
    pub async fn create_or_skip(test: &str) -> Option<TestDatabase> {
        match TestDatabase::try_create().await {
            Ok(database) => Some(database),
            Err(why) if std::env::var("CI").as_deref() == Ok("true") => panic!("{test}: {why} under CI"),
            Err(why) => {
                announce_skip(&format!("{test}: {why}. Start one, or set EASEL_TEST_POSTGRES_URL, to run it."));
                None
            }
        }
    }

    async fn try_create() -> Result<TestDatabase, String> {
        let admin = postgres_admin_url();
        let pool = sqlx::postgres::PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(std::time::Duration::from_secs(5))
            .connect(&admin)
            .await
            .map_err(|e| format!("no PostgreSQL at {admin} ({e})"))?;
        let name = format!("easel_test_{}", uuid::Uuid::new_v4().simple());
        sqlx::query(&format!("CREATE DATABASE {name}")).execute(&pool).await.expect("create the test database");
        pool.close().await;
        let mut url = url::Url::parse(&admin).expect("a URL");
        url.set_path(&name);
        Ok(TestDatabase { name, url: url.to_string() })
    }
}

impl Drop for TestDatabase {
    fn drop(&mut self) {
        let name = self.name.clone();
        // Drop runs outside any runtime: a small one of its own does the work.
        let _ = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
            runtime.block_on(async {
                if let Ok(pool) =
                    sqlx::postgres::PgPoolOptions::new().max_connections(1).connect(&postgres_admin_url()).await
                {
                    let _ = sqlx::query(&format!("DROP DATABASE IF EXISTS {name} WITH (FORCE)")).execute(&pool).await;
                }
            });
        })
        .join();
    }
}

/// Webhook settings for tests: trust the test CA, run the retry schedule in milliseconds.
pub fn fast_webhooks(config: &mut Config, ca: &crate::receiver::TestCa, schedule: &[&str]) {
    config.webhook.extra_ca_certs = Some(ca.pem_path.clone());
    // The receivers run on loopback, which the SSRF guard blocks unless told otherwise.
    config.webhook.allow_private_networks = vec!["127.0.0.0/8".parse().unwrap()];
    config.webhook.retry_schedule =
        schedule.iter().map(|d| easel::config::duration_text::parse(d).expect("a duration")).collect();
    config.webhook.retry_jitter = 0.0;
    config.webhook.poll_interval = std::time::Duration::from_millis(100);
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(|_| {}).await
}

pub async fn spawn_app_with(configure: impl FnOnce(&mut Config)) -> TestApp {
    let dir = test_dir().await;
    let mut config = test_config(&dir);
    configure(&mut config);
    start_in(dir, config).await
}

/// Starts Easel on an existing data directory (used to restart).
pub async fn start_in(dir: TestDir, config: Config) -> TestApp {
    config.validate().expect("test configuration is valid");
    let mut easel = server::start(config.clone()).await.expect("easel starts");
    let origin = format!("http://{}", easel.addr);
    let admin = match easel.bootstrap.take() {
        Some(bootstrap) => TestUser { id: bootstrap.user.id, key: bootstrap.key.key.clone() },
        None => TestUser { id: UserId::random(), key: String::new() },
    };
    TestApp { easel, dir, config, origin, client: reqwest::Client::new(), admin }
}

impl TestApp {
    pub fn api(&self, path: &str) -> String {
        format!("{}/api/rest/v1{path}", self.origin)
    }

    /// A new user with one API key (no webhook).
    pub async fn new_user(&self, username: &str) -> TestUser {
        self.new_user_with_slots(username, self.config.api.default_concurrency_slots).await
    }

    pub async fn new_user_with_slots(&self, username: &str, slots: u32) -> TestUser {
        let user = easel::admin::create_user(&*self.easel.store, username, slots).await.expect("user created");
        let key = easel::admin::create_api_key(
            &*self.easel.store,
            &self.easel.master_key,
            user.id,
            "test",
            None,
            None,
            &self.config.webhook,
        )
        .await
        .expect("key created");
        TestUser { id: user.id, key: key.key }
    }

    /// A new user whose key calls back `url` (with `webhook_key` as its bearer token, if given).
    pub async fn new_webhook_user(&self, username: &str, url: &str, webhook_key: Option<&str>) -> WebhookUser {
        let store = &*self.easel.store;
        let user = easel::admin::create_user(store, username, 100).await.expect("user created");
        let key = easel::admin::create_api_key(
            store,
            &self.easel.master_key,
            user.id,
            "webhook with key",
            Some(url),
            webhook_key,
            &self.config.webhook,
        )
        .await
        .expect("key created");
        WebhookUser {
            user: TestUser { id: user.id, key: key.key.clone() },
            key_id: key.record.id,
            signing_secret: key.signing_secret.clone(),
        }
    }

    pub async fn send(&self, request: reqwest::RequestBuilder) -> Reply {
        let response = request.send().await.expect("request reaches easel");
        let status = response.status();
        let headers = response.headers().clone();
        let text = response.text().await.expect("response body");
        let body = serde_json::from_str(&text).unwrap_or(Value::Null);
        Reply { status, headers, body, text }
    }

    pub async fn get(&self, user: &TestUser, path: &str) -> Reply {
        self.send(self.client.get(self.api(path)).bearer_auth(&user.key)).await
    }

    pub async fn delete(&self, user: &TestUser, path: &str) -> Reply {
        self.send(self.client.delete(self.api(path)).bearer_auth(&user.key)).await
    }

    pub async fn post(&self, user: &TestUser, path: &str, body: &Value) -> Reply {
        self.send(self.client.post(self.api(path)).bearer_auth(&user.key).json(body)).await
    }

    /// Creates a generation and returns its id.
    pub async fn create_generation(&self, user: &TestUser, body: &Value) -> String {
        let reply = self.post(user, "/generations", body).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["sdGenerationJob"]["generationId"].as_str().expect("generationId").to_string()
    }

    /// Polls `GET /generations/{id}` until it is no longer PENDING.
    pub async fn finished_generation(&self, user: &TestUser, id: &str) -> Value {
        eventually(Duration::from_secs(30), || async {
            let reply = self.get(user, &format!("/generations/{id}")).await;
            let generation = reply.body["generations_by_pk"].clone();
            (generation["status"] != "PENDING").then_some(generation)
        })
        .await
    }

    /// `GET /generations/{id}/deliveries`, as `user` sees them.
    pub async fn deliveries_of(&self, user: &TestUser, generation: &str) -> Vec<Value> {
        let reply = self.get(user, &format!("/generations/{generation}/deliveries")).await;
        assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
        reply.body["deliveries"].as_array().unwrap().clone()
    }

    /// Waits until the generation's first delivery is no longer pending, and returns it.
    pub async fn settled_delivery(&self, user: &TestUser, generation: &str) -> Value {
        eventually(Duration::from_secs(30), || async {
            let deliveries = self.deliveries_of(user, generation).await;
            deliveries.first().filter(|d| d["status"] != "pending").cloned()
        })
        .await
    }

    pub async fn download(&self, url: &str) -> (StatusCode, Option<String>, Vec<u8>) {
        let response = self.client.get(url).send().await.expect("download");
        let status = response.status();
        let content_type = response.headers().get("content-type").map(|v| v.to_str().unwrap_or_default().to_string());
        (status, content_type, response.bytes().await.expect("body").to_vec())
    }

    /// Stops the server (graceful shutdown) and returns its data directory and configuration.
    pub async fn stop(self) -> (TestDir, Config) {
        self.easel.shutdown();
        self.easel.stopped().await;
        (self.dir, self.config)
    }
}

/// Calls `check` until it returns `Some`, or panics after `timeout`.
pub async fn eventually<T, F, Fut>(timeout: Duration, mut check: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check().await {
            return value;
        }
        assert!(Instant::now() < deadline, "condition not met within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn small_generation(prompt: &str) -> Value {
    serde_json::json!({"prompt": prompt, "width": 64, "height": 64, "num_images": 1, "modelId": null,
                       "alchemy": true, "presetStyle": "DYNAMIC"})
}

/// The value of the sample `series` (a metric name with its labels, as printed) in `text`, or 0.
pub fn sample(text: &str, series: &str) -> f64 {
    text.lines()
        .find_map(|line| line.strip_prefix(series)?.strip_prefix(' ')?.split(' ').next()?.parse().ok())
        .unwrap_or(0.0)
}

/// `GET /metrics` of `app`, checked to be OpenMetrics text.
pub async fn scrape(app: &TestApp) -> String {
    let reply = app.send(app.client.get(format!("{}/metrics", app.origin))).await;
    assert_eq!(reply.status, StatusCode::OK, "{}", reply.text);
    assert!(reply.headers["content-type"].to_str().unwrap().starts_with("application/openmetrics-text"));
    reply.text
}
