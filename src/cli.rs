//! The `easel` command line: `serve`, `migrate`, the operator commands for users and API keys,
//! and `doctor` for webhook URLs.
//! Operator commands open the same database as the server (safe while it runs) and take `--json`
//! for scripts.

use std::path::PathBuf;
use std::process::ExitCode;
use std::str::FromStr;

use clap::{Args, Parser, Subcommand};
use serde::Serialize;
use tracing_subscriber::filter::Targets;
use tracing_subscriber::prelude::*;

use crate::admin;
use crate::clock::{parse_rfc3339, rfc3339_ms};
use crate::config::{Config, redact_url};
use crate::ids::{ApiKeyId, DeliveryId, UserId};
use crate::secrets::MasterKey;
use crate::server;
use crate::store::{self, DeliveryFilter, DeliveryStatus};
use crate::wire;

#[derive(Parser)]
#[command(name = "easel", version, about = "Self-hosted image generation API with webhook callbacks")]
pub struct Cli {
    /// TOML configuration file (settings may also come from EASEL_* environment variables).
    #[arg(long, global = true, value_name = "FILE")]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the server: HTTP API, render workers, webhook delivery.
    Serve {
        /// The roles of this node, comma-separated (default: all three; or `roles` in the config).
        #[arg(long, value_delimiter = ',', value_name = "ROLES")]
        roles: Option<Vec<crate::config::Role>>,
    },
    /// Create or update the database schema, then exit.
    Migrate,
    /// Manage users.
    #[command(subcommand)]
    Users(UsersCommand),
    /// Manage production API keys.
    #[command(subcommand)]
    Keys(KeysCommand),
    /// Inspect and redeliver webhook callbacks.
    #[command(subcommand)]
    Deliveries(DeliveriesCommand),
    /// The inference backends of `[[backends]]`.
    #[command(subcommand)]
    Backends(BackendsCommand),
    /// Request inspector bins: capture URLs that record requests and answer as configured.
    #[command(subcommand)]
    Inspect(InspectCommand),
    /// Examine a webhook URL step by step (URL, DNS and the SSRF guard, egress, TCP, TLS, a signed
    /// test callback, authentication): why do callbacks not arrive? Exits 1 when a step fails.
    Doctor {
        /// The callback URL, as an API key's webhook URL.
        #[arg(value_name = "URL")]
        url: String,
        /// The webhook callback API key, sent as `authorization: Bearer <KEY>` as callbacks send it.
        #[arg(long, value_name = "KEY")]
        webhook_key: Option<String>,
        /// The key's signing secret (`whsec_...`), so the receiver can verify the test callback;
        /// without it, a secret made up for this run signs it.
        #[arg(long, value_name = "SECRET")]
        signing_secret: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum InspectCommand {
    /// Create a bin for a user; prints its URL ({public_url}/inspect/{id}).
    Create {
        #[arg(long, value_name = "USER_ID")]
        user: String,
        /// The status the bin answers with (200 to 599).
        #[arg(long, default_value_t = 200)]
        status: u16,
        /// A response header, `Name: value` (repeatable).
        #[arg(long = "header", value_name = "NAME: VALUE")]
        headers: Vec<String>,
        /// The response body.
        #[arg(long, default_value = "")]
        body: String,
        /// How long the bin waits before answering (`1500ms`, `3s`; at most inspector.max_delay).
        #[arg(long, value_name = "DURATION")]
        delay: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// List unexpired bins (of one user, or everyone's).
    List {
        #[arg(long, value_name = "USER_ID")]
        user: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Show a bin's requests, newest first; with --follow, then print new ones as they arrive
    /// (oldest first) until Ctrl-C or the bin is gone.
    Requests {
        #[arg(value_name = "BIN_ID")]
        bin: String,
        #[arg(long, default_value_t = 20)]
        limit: u32,
        #[arg(long)]
        follow: bool,
        #[command(flatten)]
        output: Output,
    },
    /// Delete a bin and its requests.
    Delete {
        #[arg(value_name = "BIN_ID")]
        bin: String,
    },
}

#[derive(Subcommand)]
enum BackendsCommand {
    /// Each backend's health (as every node last saw it), jobs running on it and jobs waiting for
    /// its models, and its last error.
    List {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum DeliveriesCommand {
    /// List deliveries, newest first.
    List {
        /// Only the deliveries of this generation.
        #[arg(long, value_name = "GENERATION_ID")]
        generation: Option<String>,
        /// Only deliveries in this state: pending, succeeded or failed.
        #[arg(long)]
        status: Option<String>,
        #[arg(long, default_value_t = 100)]
        limit: u32,
        #[command(flatten)]
        output: Output,
    },
    /// Show a delivery with every attempt.
    Show {
        #[arg(value_name = "DELIVERY_ID")]
        id: String,
        #[command(flatten)]
        output: Output,
    },
    /// Send a delivery again from the start of the retry schedule (same webhook-id), or every
    /// delivery that failed since a time.
    Retry {
        #[arg(value_name = "DELIVERY_ID", required_unless_present = "failed_since", conflicts_with = "failed_since")]
        id: Option<String>,
        /// RFC 3339 time, such as 2026-11-28T00:00:00Z.
        #[arg(long, value_name = "TIME")]
        failed_since: Option<String>,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum UsersCommand {
    /// Create a user.
    Create {
        #[arg(long)]
        username: String,
        /// How many jobs the user may have pending at once (default: api.default_concurrency_slots).
        #[arg(long)]
        concurrency_slots: Option<u32>,
        #[command(flatten)]
        output: Output,
    },
    /// List users.
    List {
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create an API key; the key and its signing secret are printed once and never again.
    Create {
        /// The id of the user the key belongs to.
        #[arg(long = "user", value_name = "USER_ID")]
        user: String,
        #[arg(long)]
        name: String,
        /// HTTPS URL that receives a callback when a generation made with this key finishes.
        #[arg(long, value_name = "URL")]
        webhook_url: Option<String>,
        /// Sent as `authorization: Bearer <KEY>` with every callback.
        #[arg(long, value_name = "KEY")]
        webhook_key: Option<String>,
        /// Let the key list, create, rotate and delete its user's keys (REST `/keys` and the
        /// console's keys page). Keys it creates may get the permission too.
        #[arg(long)]
        manage_keys: bool,
        #[command(flatten)]
        output: Output,
    },
    /// List live API keys (secrets are never shown).
    List {
        #[arg(long = "user", value_name = "USER_ID")]
        user: Option<String>,
        #[command(flatten)]
        output: Output,
    },
    /// Re-enable a key's webhook disabled for failing (webhook.disable_after): its held
    /// deliveries are sent, oldest first.
    EnableWebhook {
        #[arg(value_name = "KEY_ID")]
        id: String,
        #[command(flatten)]
        output: Output,
    },
    /// Delete an API key: it stops authenticating at once.
    Delete {
        #[arg(value_name = "KEY_ID")]
        id: String,
        #[command(flatten)]
        output: Output,
    },
}

#[derive(Args)]
struct Output {
    /// Print JSON instead of text.
    #[arg(long)]
    json: bool,
}

/// A failed command: the message is printed as one line.
struct Failure(String);

impl<E: std::fmt::Display> From<E> for Failure {
    fn from(error: E) -> Self {
        Failure(error.to_string())
    }
}

pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let config = match Config::load(cli.config.as_deref()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("easel: {e}");
            return ExitCode::from(2);
        }
    };
    let mut config = config;
    if let Command::Serve { roles: Some(roles) } = &cli.command {
        config.roles = roles.clone();
    }
    let serving = matches!(cli.command, Command::Serve { .. });
    init_logging(if serving { &config.log } else { "warn" }, config.log_format);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .max_blocking_threads(BLOCKING_THREADS)
        .build()
        .expect("tokio runtime starts");
    match runtime.block_on(run(cli.command, config)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(Failure(message)) => {
            eprintln!("easel: {message}");
            ExitCode::FAILURE
        }
    }
}

/// Threads for blocking work (built-in renders, image conversions, local file storage): bursts
/// of image writes used to start dozens (tokio allows 512), each with its stack and heap arena,
/// about 1 MiB of resident memory apiece, for no more throughput on a few cores.
const BLOCKING_THREADS: usize = 8;

fn init_logging(filter: &str, format: crate::config::LogFormat) {
    let filter = Targets::from_str(filter).unwrap_or_else(|_| Targets::from_str("info").expect("valid filter"));
    let layer = tracing_subscriber::fmt::layer().with_writer(std::io::stderr);
    let layer = match format {
        crate::config::LogFormat::Text => {
            layer.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).with_target(false).boxed()
        }
        crate::config::LogFormat::Json => layer.json().with_current_span(false).boxed(),
    };
    tracing_subscriber::registry().with(layer).with(filter).init();
}

async fn run(command: Command, config: Config) -> Result<(), Failure> {
    match command {
        Command::Serve { .. } => serve(config).await,
        Command::Migrate => {
            let store = store::open(&config).await?;
            println!("database {} is up to date ({})", redact_url(&config.database_url()), store.backend());
            Ok(())
        }
        Command::Users(command) => users(command, &config).await,
        Command::Keys(command) => keys(command, &config).await,
        Command::Deliveries(command) => deliveries(command, &config).await,
        Command::Backends(BackendsCommand::List { output }) => backends_list(&config, output).await,
        Command::Inspect(command) => inspect(command, &config).await,
        Command::Doctor { url, webhook_key, signing_secret, output } => {
            doctor(&config, url, webhook_key, signing_secret, output).await
        }
    }
}

/// `easel doctor`: the doctor's run on a URL, with a made-up key (and, without
/// `--signing-secret`, a made-up signing secret).
async fn doctor(
    config: &Config,
    url: String,
    webhook_key: Option<String>,
    signing_secret: Option<String>,
    output: Output,
) -> Result<(), Failure> {
    use crate::webhook::doctor::{self, Patient};
    let own_signing_secret = signing_secret.is_some();
    let secret = signing_secret.unwrap_or_else(crate::secrets::new_signing_secret);
    let signing = crate::webhook::signing::SigningKey::from_secret(&secret)
        .ok_or_else(|| Failure("--signing-secret is not a signing secret (whsec_ followed by base64)".into()))?;
    let secrets = crate::webhook::engine::KeySecrets::new(webhook_key.as_deref().map(str::as_bytes), signing)
        .map_err(|e| Failure(format!("--webhook-key: {}", e.detail)))?;
    let now = crate::clock::now_ms();
    let key = store::ApiKey {
        id: ApiKeyId::random(),
        user_id: UserId::random(),
        name: "easel doctor".into(),
        created_at: now,
        last_used_at: None,
        webhook_url: Some(url.clone()),
        webhook_api_key_sealed: None,
        signing_secret_sealed: Vec::new(),
        deleted_at: None,
        webhook_failing_since: None,
        webhook_disabled_at: None,
        manage_keys: false,
        key_hint: None,
    };
    let catalogue = crate::models::Catalogue::new(&config.models)?;
    let images = crate::images::ImageStore::from_config(config, &config.public_url_or(config.listen))?;
    let masked = secrets.webhook_api_key_masked.as_deref();
    let (_, body) = crate::webhook::payload::test_event(&key, masked, &catalogue, &images, now)?;
    let own_bins = format!("{}{}", config.public_url_or(config.listen), crate::inspector::BIN_PATH);
    let own_bin = config.inspector.enabled
        && url::Url::parse(&url).is_ok_and(|parsed| admin::is_own_bin(parsed.as_str(), &own_bins));
    let report = if own_bin {
        doctor::in_process(&url)
    } else {
        doctor::run(&config.webhook, &Patient { url, secrets, body, own_signing_secret }).await
    };
    if output.json {
        print_json(&report);
    } else {
        print!("{}", doctor::render(&report));
    }
    if report.verdict == wire::DoctorVerdict::Fail {
        let failed: Vec<&str> =
            report.steps.iter().filter(|s| s.verdict == wire::DoctorVerdict::Fail).map(|s| s.step).collect();
        return Err(Failure(format!("the webhook doctor found a failing step: {}", failed.join(", "))));
    }
    Ok(())
}

async fn serve(config: Config) -> Result<(), Failure> {
    let easel = server::start(config).await?;
    if let Some(bootstrap) = &easel.bootstrap {
        print_bootstrap(bootstrap, &easel.public_url);
    }
    shutdown_signal().await;
    tracing::info!("shutting down: finishing in-flight work");
    easel.shutdown();
    easel.stopped().await;
    Ok(())
}

fn print_bootstrap(bootstrap: &server::Bootstrap, public_url: &str) {
    let key = &bootstrap.key.key;
    println!(
        "\nCreated the first user and API key. The key is shown only this once: keep it.\n\n  \
         user id: {}\n  api key: {key}\n\nTry it:\n\n  \
         curl -s {public_url}/api/rest/v1/generations -H 'authorization: Bearer {key}' \\\n    \
         -H 'content-type: application/json' \\\n    \
         -d '{{\"prompt\": \"An oil painting of a cat\", \"width\": 512, \"height\": 512, \"num_images\": 1}}'\n\n  \
         curl -s {public_url}/api/rest/v1/generations/GENERATION_ID -H 'authorization: Bearer {key}'\n\n\
         Or sign in to the web console with the key: {public_url}/console\n",
        bootstrap.user.id
    );
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(_) => std::future::pending().await,
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = ctrl_c => {}
        () = terminate => {}
    }
}

/// Prints one JSON document (compact, on one line) for `--json`.
fn print_json(document: &impl Serialize) {
    println!("{}", serde_json::to_string(document).expect("wire shapes serialize"));
}

fn parse_id<T: FromStr>(what: &str, text: &str) -> Result<T, Failure> {
    text.trim().parse().map_err(|_| Failure(format!("{what} {text:?} is not a UUID")))
}

async fn users(command: UsersCommand, config: &Config) -> Result<(), Failure> {
    let store = store::open(config).await?;
    match command {
        UsersCommand::Create { username, concurrency_slots, output } => {
            let slots = concurrency_slots.unwrap_or(config.api.default_concurrency_slots);
            let user = admin::create_user(&*store, &username, slots).await?;
            if output.json {
                print_json(&wire::User::new(&user));
            } else {
                println!(
                    "created user {} ({}), {} concurrency slots",
                    user.username, user.id, user.api_concurrency_slots
                );
            }
        }
        UsersCommand::List { output } => {
            let users = store.list_users().await?;
            if output.json {
                print_json(&users.iter().map(wire::User::new).collect::<Vec<_>>());
            } else {
                for u in users {
                    println!(
                        "{}  {}  slots={}  created {}",
                        u.id,
                        u.username,
                        u.api_concurrency_slots,
                        rfc3339_ms(u.created_at)
                    );
                }
            }
        }
    }
    Ok(())
}

async fn keys(command: KeysCommand, config: &Config) -> Result<(), Failure> {
    let store = store::open(config).await?;
    match command {
        KeysCommand::Create { user, name, webhook_url, webhook_key, manage_keys, output } => {
            let user: UserId = parse_id("user id", &user)?;
            if store.get_user(user).await?.is_none() {
                return Err(Failure(format!("there is no user with id {user}")));
            }
            let master_key = MasterKey::load(config.master_key.as_ref().map(|key| key.expose()), &config.data_dir)?;
            let own_bins = config
                .inspector
                .enabled
                .then(|| format!("{}{}", config.public_url_or(config.listen), crate::inspector::BIN_PATH));
            let spec = admin::KeySpec {
                user,
                name: &name,
                webhook_url: webhook_url.as_deref(),
                webhook_api_key: webhook_key.as_deref(),
                manage_keys,
                own_bins: own_bins.as_deref(),
            };
            let created = admin::create_key(&*store, &master_key, &spec, &config.webhook).await?;
            if output.json {
                print_json(&wire::CreatedApiKey {
                    record: wire::ApiKey::new(&created.record),
                    key: created.key.clone(),
                    signing_secret: created.signing_secret.clone(),
                });
            } else {
                println!("created API key {} ({}) for user {}", created.record.id, created.record.name, user);
                println!("  api key:        {}", created.key);
                println!("  signing secret: {}", created.signing_secret);
                if let Some(url) = &created.record.webhook_url {
                    println!("  webhook url:    {url}");
                }
                if created.record.manage_keys {
                    println!("  may manage the user's keys (REST /keys, the console)");
                }
                println!("The key and the signing secret are shown only this once.");
            }
        }
        KeysCommand::List { user, output } => {
            let user: Option<UserId> = user.map(|u| parse_id("user id", &u)).transpose()?;
            let keys = store.list_api_keys(user).await?;
            if output.json {
                print_json(&keys.iter().map(wire::ApiKey::new).collect::<Vec<_>>());
            } else {
                for key in keys {
                    println!(
                        "{}  {}{}  user={}  created {}  webhook={}{}{}",
                        key.id,
                        key.name,
                        if key.manage_keys { "  (manages keys)" } else { "" },
                        key.user_id,
                        rfc3339_ms(key.created_at),
                        key.webhook_url.as_deref().unwrap_or("-"),
                        if key.webhook_api_key_sealed.is_some() { " (with webhook key)" } else { "" },
                        webhook_state_text(&key),
                    );
                }
            }
        }
        KeysCommand::EnableWebhook { id, output } => {
            let id: ApiKeyId = parse_id("key id", &id)?;
            if !store.enable_webhook(id, None, crate::clock::now_ms()).await? {
                return Err(Failure(format!("there is no live API key with id {id}")));
            }
            let key = store.get_api_key(id).await?.ok_or_else(|| Failure(format!("API key {id} vanished")))?;
            if output.json {
                print_json(&wire::WebhookState::new(&key));
            } else {
                println!(
                    "webhook of API key {id} enabled: its held deliveries are sent in order (a running server \
                     picks them up within webhook.poll_interval)"
                );
            }
        }
        KeysCommand::Delete { id, output } => {
            let id: ApiKeyId = parse_id("key id", &id)?;
            if !store.delete_api_key(id, crate::clock::now_ms()).await? {
                return Err(Failure(format!("there is no live API key with id {id}")));
            }
            if output.json {
                print_json(&wire::DeletedApiKey { id, deleted: true });
            } else {
                println!("deleted API key {id}");
            }
        }
    }
    Ok(())
}

/// `  webhook: failing since ...` / `disabled at ...` for `keys list` (nothing while active).
fn webhook_state_text(key: &store::ApiKey) -> String {
    match (key.webhook_disabled_at, key.webhook_failing_since) {
        _ if key.webhook_url.is_none() => String::new(),
        (Some(at), _) => format!("  webhook disabled at {} (deliveries held)", rfc3339_ms(at)),
        (None, Some(since)) => format!("  webhook failing since {}", rfc3339_ms(since)),
        (None, None) => "  webhook active".into(),
    }
}

async fn backends_list(config: &Config, output: Output) -> Result<(), Failure> {
    let catalogue = crate::models::Catalogue::new(&config.models)?;
    let store = store::open(config).await?;
    let now = crate::clock::now_ms();
    let overview = store.backend_overview(now).await?;
    let statuses = wire::BackendStatus::all(&config.backends, &catalogue, &overview, now);
    if output.json {
        print_json(&statuses);
        return Ok(());
    }
    if statuses.is_empty() {
        println!("no [[backends]] are configured: every model uses the built-in renderer");
    }
    for status in statuses {
        println!(
            "{}  {:<7}  {:<9}  running {}/{}  queued {}  {}",
            status.name, status.kind, status.health, status.running, status.max_concurrent, status.queued, status.url
        );
        for model in &status.models {
            println!("    model {} ({}): {} queued", model.name, model.id, model.queued);
        }
        for node in &status.nodes {
            let health = if node.healthy { "healthy" } else { "unhealthy" };
            println!("    {} saw it {health} at {}", node.node_id, node.checked_at);
        }
        if let (Some(error), Some(at)) = (&status.last_error, &status.last_error_at) {
            println!("    last error at {at}: {error}");
        }
    }
    Ok(())
}

async fn deliveries(command: DeliveriesCommand, config: &Config) -> Result<(), Failure> {
    let store = store::open(config).await?;
    match command {
        DeliveriesCommand::List { generation, status, limit, output } => {
            let status = status
                .map(|s| {
                    DeliveryStatus::parse(&s)
                        .ok_or_else(|| Failure(format!("status {s:?} is not one of pending, succeeded, failed")))
                })
                .transpose()?;
            let generation = generation.map(|g| parse_id("generation id", &g)).transpose()?;
            let filter = DeliveryFilter { generation, user: None, status, limit };
            let list = store.list_deliveries(&filter).await?;
            if output.json {
                print_json(&list.iter().map(wire::Delivery::new).collect::<Vec<_>>());
            } else {
                for d in list {
                    println!(
                        "{}  {:<9}  attempts={}  generation={}  {}{}",
                        d.id,
                        d.status.as_str(),
                        d.attempt_count,
                        d.generation_id,
                        d.url,
                        d.last_error.as_deref().map(|e| format!("  last error: {e}")).unwrap_or_default()
                    );
                }
            }
        }
        DeliveriesCommand::Show { id, output } => {
            let id: DeliveryId = parse_id("delivery id", &id)?;
            let (delivery, attempts) =
                store.get_delivery(id, None).await?.ok_or_else(|| Failure(format!("there is no delivery {id}")))?;
            if output.json {
                print_json(&wire::Delivery::with_attempts(&delivery, &attempts));
            } else {
                println!("delivery {} ({}) of generation {}", delivery.id, delivery.event_type, delivery.generation_id);
                println!("  to:      {}", delivery.url);
                println!("  status:  {}", delivery.status.as_str());
                if let Some(next) = delivery.next_attempt_at {
                    println!("  next attempt: {}", rfc3339_ms(next));
                }
                for a in &attempts {
                    let outcome = match (&a.error_class, &a.error_detail) {
                        (Some(class), Some(detail)) => format!("{class}: {detail}"),
                        _ => format!("HTTP {}", a.status_code.unwrap_or(0)),
                    };
                    println!("  #{:<3} {}  {:>6} ms  {outcome}", a.attempt, rfc3339_ms(a.started_at), a.duration_ms);
                }
            }
        }
        DeliveriesCommand::Retry { id, failed_since, output } => {
            let now = crate::clock::now_ms();
            let count = match (id, failed_since) {
                (Some(id), _) => {
                    let id: DeliveryId = parse_id("delivery id", &id)?;
                    match store.retry_delivery(id, None, now).await? {
                        crate::store::Redelivery::Missing => return Err(Failure(format!("there is no delivery {id}"))),
                        crate::store::Redelivery::AlreadyQueued => {
                            // With --json, stdout holds the JSON document only.
                            if !output.json {
                                println!("delivery {id} is already due or in flight: it is not sent twice");
                            }
                            0
                        }
                        crate::store::Redelivery::TooSoon => {
                            return Err(Failure(format!(
                                "delivery {id} was redelivered less than a second ago; try again in a second"
                            )));
                        }
                        crate::store::Redelivery::Queued => 1,
                    }
                }
                (None, Some(since)) => {
                    let since = parse_rfc3339(&since).ok_or_else(|| {
                        Failure(format!("{since:?} is not an RFC 3339 time like 2026-11-28T00:00:00Z"))
                    })?;
                    store.retry_failed_deliveries(since, now).await?
                }
                (None, None) => unreachable!("clap requires one of them"),
            };
            if output.json {
                print_json(&wire::Retried { retried: count });
            } else {
                println!(
                    "{count} deliveries scheduled for redelivery now (a running server sends them within its poll interval)"
                );
            }
        }
    }
    Ok(())
}

/// How often `easel inspect requests --follow` looks for new requests.
const FOLLOW_POLL: std::time::Duration = std::time::Duration::from_millis(200);

async fn inspect(command: InspectCommand, config: &Config) -> Result<(), Failure> {
    use crate::inspector::Inspector;
    let store = store::open(config).await?;
    let master_key = MasterKey::load(config.master_key.as_ref().map(|key| key.expose()), &config.data_dir)?;
    let inspector = Inspector::new(
        store.clone(),
        config.inspector.clone(),
        master_key,
        &config.public_url_or(config.listen),
        config.webhook.timeout,
        tokio_util::sync::CancellationToken::new(),
    );
    let now = crate::clock::now_ms();
    match command {
        InspectCommand::Create { user, status, headers, body, delay, output } => {
            let user: UserId = parse_id("user id", &user)?;
            if store.get_user(user).await?.is_none() {
                return Err(Failure(format!("there is no user with id {user}")));
            }
            let headers = headers
                .iter()
                .map(|header| match header.split_once(':') {
                    Some((name, value)) => Ok((name.trim().to_string(), value.trim().to_string())),
                    None => Err(Failure(format!("--header {header:?} must be `Name: value`"))),
                })
                .collect::<Result<Vec<_>, _>>()?;
            let delay_ms = match delay {
                None => 0,
                Some(text) => crate::config::duration_text::parse(&text)
                    .map_err(|e| Failure(format!("--delay {text:?}: {e}")))?
                    .as_millis()
                    .min(u128::from(u32::MAX)) as u32,
            };
            let response = store::BinResponse { status, headers, body: body.into_bytes(), delay_ms };
            crate::inspector::validate_response(&response, inspector.config())
                .map_err(|e| Failure(format!("--{}: {}", e.field.replace("delayMs", "delay"), e.message)))?;
            let bin = inspector.create_bin(user, response).await?.ok_or_else(|| {
                Failure(format!(
                    "user {user} already has {} bins (inspector.max_bins_per_user): delete one first",
                    config.inspector.max_bins_per_user
                ))
            })?;
            let view = wire::BinView::new(&bin, inspector.bin_url(bin.id));
            if output.json {
                print_json(&view);
            } else {
                println!("created bin {} for user {user}, until {}", bin.id, view.expires_at);
                println!("  url: {}", view.url);
            }
        }
        InspectCommand::List { user, output } => {
            let user = user.map(|u| parse_id::<UserId>("user id", &u)).transpose()?;
            let bins = store.list_bins(user, now).await?;
            let views: Vec<wire::BinView> =
                bins.iter().map(|bin| wire::BinView::new(bin, inspector.bin_url(bin.id))).collect();
            if output.json {
                print_json(&wire::BinList { bins: views });
            } else if views.is_empty() {
                println!("no bins");
            } else {
                for bin in &views {
                    println!(
                        "{}  user {}  answers {}  {} requests ({} bytes)  until {}\n  {}",
                        bin.id,
                        bin.user_id,
                        bin.response.status,
                        bin.request_count,
                        bin.stored_bytes,
                        bin.expires_at,
                        bin.url
                    );
                }
            }
        }
        InspectCommand::Requests { bin, limit, follow, output } => {
            let bin: uuid::Uuid = parse_id("bin id", &bin)?;
            let gone = || Failure(format!("there is no bin {bin} (it never existed, expired or was deleted)"));
            let requests = store.list_requests(bin, None, None, limit.clamp(1, 1000), now).await?.ok_or_else(gone)?;
            let mut after = requests.first().map(|r| r.seq).unwrap_or(0);
            for request in &requests {
                print_request(request, output.json);
            }
            if !follow {
                return Ok(());
            }
            if !output.json {
                println!("following bin {bin} (Ctrl-C to stop)");
            }
            loop {
                let Some(new) = store.requests_after(bin, None, after, 100, crate::clock::now_ms()).await? else {
                    return Err(gone());
                };
                for request in &new {
                    print_request(request, output.json);
                    after = request.seq;
                }
                if new.is_empty() {
                    tokio::select! {
                        _ = tokio::time::sleep(FOLLOW_POLL) => {}
                        _ = tokio::signal::ctrl_c() => return Ok(()),
                    }
                }
            }
        }
        InspectCommand::Delete { bin } => {
            let bin: uuid::Uuid = parse_id("bin id", &bin)?;
            if !store.delete_bin(bin, None).await? {
                return Err(Failure(format!("there is no bin {bin}")));
            }
            println!("deleted bin {bin}");
        }
    }
    Ok(())
}

/// One captured request: a JSON line, or a block of text (headers, body excerpt, callback checks).
fn print_request(request: &store::CapturedRequest, json: bool) {
    let view = wire::CapturedRequestView::new(request);
    if json {
        print_json(&view);
        return;
    }
    let truncated = if view.body_truncated { ", stored truncated" } else { "" };
    println!(
        "#{} {} {} {} from {} ({} bytes{truncated})",
        view.seq, view.received_at, view.method, view.path, view.source, view.body_size
    );
    for (name, value) in &view.headers {
        println!("  {name}: {value}");
    }
    if !view.body.is_empty() {
        let body = crate::webhook::client::printable_excerpt(view.body.as_bytes());
        let excerpt: String = body.chars().take(2000).collect();
        println!("  body: {excerpt}");
    }
    for check in view.callback_checks.iter().flatten() {
        println!(
            "  key {} ({}): bearer {}; signature {}",
            check.api_key_id, check.api_key_name, check.bearer, check.signature
        );
    }
}
