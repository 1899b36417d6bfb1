//! `easel serve`: builds every part from the configuration and runs them until shutdown. Tests
//! call [`start`] exactly as the binary does, with port 0 and a temporary data directory.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Notify;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::admin;
use crate::config::{Config, DatabaseUrl, Role};
use crate::http::{self, AppState, Running, RunningGuard};
use crate::images::ImageStore;
use crate::models::Catalogue;
use crate::render::builtin::BuiltinRenderer;
use crate::render::dispatch::Backends;
use crate::render::handoff::Handoff;
use crate::render::worker::RenderWorkers;
use crate::secrets::MasterKey;
use crate::store::{self, Store};
use crate::webhook::engine::DeliveryEngine;
use crate::webhook::outbox::Outbox;

/// How long a stopping node waits for the database to take back its leases.
const RELEASE_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(1);

/// Start-up failed; the message is one line for the operator.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct StartError(pub String);

/// The first user and key, created on a fresh database and printed once.
pub struct Bootstrap {
    pub user: store::User,
    pub key: admin::CreatedKey,
}

/// A running server.
pub struct Easel {
    pub addr: SocketAddr,
    pub public_url: String,
    pub store: Arc<dyn Store>,
    pub master_key: MasterKey,
    pub bootstrap: Option<Bootstrap>,
    shutdown: CancellationToken,
    task: JoinHandle<()>,
}

impl Easel {
    /// Stops taking requests and jobs; in-flight work gets `shutdown_grace` to finish.
    pub fn shutdown(&self) {
        self.shutdown.cancel();
    }

    /// Waits until every part has stopped.
    pub async fn stopped(self) {
        if let Err(e) = self.task.await {
            tracing::error!(error.message = %e, "server task ended abnormally");
        }
    }
}

/// Opens the store, creates the first user on a fresh database, binds the listener and starts
/// the roles this node runs: the HTTP API, the render workers, the delivery engine.
pub async fn start(config: Config) -> Result<Easel, StartError> {
    std::fs::create_dir_all(&config.data_dir)
        .map_err(|e| StartError(format!("cannot create the data directory {}: {e}", config.data_dir.display())))?;
    let instance_lock = lock_single_node_database(&config)?;
    let store = store::open(&config).await.map_err(|e| {
        StartError(format!("cannot open the database {}: {e}", crate::config::redact_url(&config.database_url())))
    })?;
    let master_key = MasterKey::load(config.master_key.as_ref().map(|key| key.expose()), &config.data_dir)
        .map_err(|e| StartError(format!("cannot load the master key: {e}")))?;
    let bootstrap = bootstrap(&*store, &master_key, &config).await?;
    if instance_lock.is_some() {
        let released =
            store.release_leases(None, crate::clock::now_ms()).await.map_err(|e| StartError(e.to_string()))?;
        if released > 0 {
            tracing::info!(leases = released, "resuming render jobs and webhook deliveries left by the previous run");
        }
    }

    let listener = TcpListener::bind(config.listen)
        .await
        .map_err(|e| StartError(format!("cannot listen on {} (`listen`): {e}", config.listen)))?;
    let addr = listener.local_addr().map_err(|e| StartError(e.to_string()))?;
    let public_url = config.public_url_or(addr);
    let images = ImageStore::from_config(&config, &public_url)
        .map_err(|e| StartError(format!("cannot use the image storage: {e}")))?;
    let mut catalogue = Catalogue::new(&config.models)
        .and_then(|catalogue| catalogue.with_elements(&config.elements))
        .map_err(|e| StartError(e.to_string()))?;
    for backend in &config.backends {
        catalogue.require_size_multiple(&backend.name, backend.size_multiple);
    }
    let catalogue = Arc::new(catalogue);
    let backends = Arc::new(
        Backends::new(&config.backends, &catalogue)
            .map_err(|e| StartError(format!("cannot set up the inference backends: {e}")))?,
    );

    let shutdown = CancellationToken::new();
    let grace = config.shutdown_grace;
    // The end of the shutdown grace period, shared by every part: requests, renders and sends
    // in flight get until then.
    let deadline = CancellationToken::new();
    tokio::spawn({
        let (shutdown, deadline) = (shutdown.clone(), deadline.clone());
        async move {
            shutdown.cancelled().await;
            tokio::time::sleep(grace).await;
            deadline.cancel();
        }
    });
    let node_id = format!("node-{}", uuid::Uuid::new_v4().simple());
    let metrics = Arc::new(crate::metrics::Metrics::new());
    let mut wakeups = store::Wakeups::default();
    let mut running = Running::default();

    // The request inspector's bins; the engine hands callbacks to them in-process.
    let inspector = config.inspector.enabled.then(|| {
        Arc::new(crate::inspector::Inspector::new(
            store.clone(),
            config.inspector.clone(),
            master_key.clone(),
            &public_url,
            config.webhook.timeout,
            shutdown.clone(),
        ))
    });

    // The delivery engine first: render workers on this node hand it their callbacks.
    let engine_shutdown = CancellationToken::new();
    let (deliver, delivery_queue) = if config.runs(Role::Deliver) {
        let (engine, queue, inbox) = DeliveryEngine::new(
            store.clone(),
            config.webhook.clone(),
            master_key.clone(),
            node_id.clone(),
            metrics.clone(),
        )
        .map_err(|e| StartError(format!("cannot set up webhook delivery: {e}")))?;
        wakeups.deliveries = Some(queue.wakeup());
        let (guard, flag) = RunningGuard::new();
        running.deliver = Some(flag);
        if let Some(inspector) = &inspector {
            engine.set_local_receiver(inspector.clone());
        }
        let run = engine.run(inbox, engine_shutdown.clone(), deadline.clone());
        (
            Some(tokio::spawn(async move {
                let _running = guard;
                run.await
            })),
            Some(queue),
        )
    } else {
        (None, None)
    };
    let mut render_handoff = None;
    let render = if config.runs(Role::Render) {
        let wakeup = Arc::new(Notify::new());
        wakeups.render = Some(wakeup.clone());
        backends.monitor(store.clone(), node_id.clone(), wakeup.clone(), shutdown.clone());
        let (handoff, handed) =
            Handoff::new(config.render.max_jobs_in_flight, node_id.clone(), config.render.lease, backends.clone());
        render_handoff = Some(handoff.clone());
        let workers = Arc::new(RenderWorkers {
            store: store.clone(),
            renderer: Arc::new(BuiltinRenderer::new(config.render.workers)),
            images: images.clone(),
            catalogue: catalogue.clone(),
            config: config.render.clone(),
            node_id: node_id.clone(),
            wakeup,
            handoff,
            outbox: Outbox {
                master_key: master_key.clone(),
                images: images.clone(),
                catalogue: catalogue.clone(),
                queue: delivery_queue.clone(),
            },
            backends: backends.clone(),
            metrics: metrics.clone(),
            avoid: Default::default(),
        });
        let (guard, flag) = RunningGuard::new();
        running.render = Some(flag);
        let run = workers.run(handed, shutdown.clone(), grace);
        Some(tokio::spawn(async move {
            let _running = guard;
            run.await
        }))
    } else {
        None
    };
    store.watch(wakeups.clone(), shutdown.clone());
    let prompts = crate::prompts::PromptTools::new(&config.prompt_tools).map_err(|e| StartError(e.to_string()))?;
    let state = Arc::new(AppState {
        store: store.clone(),
        prompts: Arc::new(prompts),
        uploads: crate::uploads::Uploads::from_config(
            &config,
            &public_url,
            master_key.derive(b"easel init-image uploads"),
        ),
        catalogue,
        images,
        api: config.api.clone(),
        render_wakeup: wakeups.render,
        render_handoff,
        delivery_wakeup: wakeups.deliveries,
        egress_ips: config.webhook.egress_ips.clone(),
        backends: config.backends.clone(),
        metrics,
        metrics_config: config.metrics.clone(),
        delivery_queue: delivery_queue.clone(),
        master_key: master_key.clone(),
        webhook: config.webhook.clone(),
        inspector: inspector.clone(),
        running,
        node_id: node_id.clone(),
    });
    let app = http::router(state, config.runs(Role::Api));
    let http = tokio::spawn(serve_http(listener, app, config.api.clone(), shutdown.clone(), grace));

    let task_store = store.clone();
    let task = tokio::spawn(async move {
        let _ = http.await;
        if let Some(render) = render {
            let _ = render.await;
        }
        // The engine stops after the render workers, so the callbacks of jobs that finish during
        // the shutdown still go out.
        engine_shutdown.cancel();
        if let Some(deliver) = deliver {
            let _ = deliver.await;
        }
        // Work cut short is given back at once rather than when its leases expire (if the database
        // answers in time: the leases expire anyway).
        let release = task_store.release_leases(Some(&node_id), crate::clock::now_ms());
        match tokio::time::timeout(RELEASE_TIMEOUT, release).await {
            Ok(Ok(0)) => {}
            Ok(Ok(released)) => tracing::info!(leases = released, "gave back unfinished work"),
            Ok(Err(e)) => {
                tracing::warn!(error.message = %e, "cannot give back unfinished work; its leases will expire")
            }
            Err(_) => tracing::warn!("the database did not take back unfinished work in time; its leases will expire"),
        }
        drop(instance_lock);
        tracing::info!("stopped");
    });
    let egress: Vec<String> = config.webhook.egress_ips.iter().map(|ip| ip.to_string()).collect();
    tracing::info!(
        egress_ips =
            if egress.is_empty() { "any (webhook.egress_ips is not set)".to_string() } else { egress.join(", ") },
        proxy = config.webhook.proxy_url.is_some(),
        "webhook callbacks leave from these addresses (published at /egress-ips)"
    );
    let roles: Vec<String> = config.roles.iter().map(|r| format!("{r:?}").to_lowercase()).collect();
    tracing::info!(%addr, %public_url, database = store.backend(), roles = roles.join(","), "easel is listening");
    Ok(Easel { addr, public_url, store, master_key, bootstrap, shutdown, task })
}

/// Serves HTTP/1.1 with limits: request headers (`api.max_header_bytes`), time to send them and
/// idle time between requests on a kept-alive connection (`api.idle_timeout`). On `shutdown` it
/// stops accepting, lets requests in flight finish for up to `grace`, then closes what is left.
async fn serve_http(
    listener: TcpListener,
    app: axum::Router,
    limits: crate::config::ApiConfig,
    shutdown: CancellationToken,
    grace: std::time::Duration,
) {
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(hyper_util::rt::TokioTimer::new())
        .header_read_timeout(limits.idle_timeout)
        .max_header_size(limits.max_header_bytes)
        .max_headers(limits.max_headers)
        .max_buf_size(limits.max_header_bytes.max(8192) + 8192);
    let graceful = hyper_util::server::graceful::GracefulShutdown::new();
    loop {
        let (tcp, peer) = tokio::select! {
            _ = shutdown.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    // Out of file descriptors and the like: wait rather than spin.
                    tracing::warn!(error.message = %e, "cannot accept a connection");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        let _ = tcp.set_nodelay(true);
        // Each request carries its peer's address (the inspector records it).
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut request: hyper::Request<hyper::body::Incoming>| {
            request.extensions_mut().insert(crate::http::PeerAddr(peer));
            let mut app = app.clone();
            async move { tower_service::Service::call(&mut app, request).await }
        });
        let connection = builder.serve_connection(hyper_util::rt::TokioIo::new(tcp), service);
        let connection = graceful.watch(connection);
        tokio::spawn(async move {
            let _ = connection.await;
        });
    }
    drop(listener);
    if tokio::time::timeout(grace, graceful.shutdown()).await.is_err() {
        tracing::warn!("requests still running after the shutdown grace period were cut off");
    }
}

/// SQLite is single-node: one `easel serve` per database file, enforced with a lock file beside it
/// (the CLI may still open the database while the server runs).
fn lock_single_node_database(config: &Config) -> Result<Option<File>, StartError> {
    let url = config.database_url();
    let DatabaseUrl::Sqlite(path) = DatabaseUrl::parse(&url).map_err(|e| StartError(e.to_string()))? else {
        return Ok(None);
    };
    let mut lock_path = path.into_os_string();
    lock_path.push(".lock");
    let lock_path = PathBuf::from(lock_path);
    if let Some(parent) = lock_path.parent().filter(|p| !p.as_os_str().is_empty()) {
        std::fs::create_dir_all(parent)
            .map_err(|e| StartError(format!("cannot create the database directory {}: {e}", parent.display())))?;
    }
    let file = File::options()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&lock_path)
        .map_err(|e| StartError(format!("cannot open the lock file {}: {e}", lock_path.display())))?;
    match file.try_lock() {
        Ok(()) => Ok(Some(file)),
        Err(std::fs::TryLockError::WouldBlock) => Err(StartError(format!(
            "another `easel serve` is already using the database {url} (lock file {})",
            lock_path.display()
        ))),
        Err(std::fs::TryLockError::Error(e)) => Err(StartError(format!("cannot lock {}: {e}", lock_path.display()))),
    }
}

async fn bootstrap(
    store: &dyn Store,
    master_key: &MasterKey,
    config: &Config,
) -> Result<Option<Bootstrap>, StartError> {
    let failed = |e: admin::AdminError| StartError(format!("cannot create the first user: {e}"));
    if !store.list_users().await.map_err(|e| StartError(e.to_string()))?.is_empty() {
        return Ok(None);
    }
    let user = match admin::create_user(store, "admin", config.api.default_concurrency_slots).await {
        Ok(user) => user,
        // Another node starting on the same fresh database made the first user a moment ago.
        Err(admin::AdminError::Store(store::StoreError::UsernameTaken(_))) => return Ok(None),
        Err(e) => return Err(failed(e)),
    };
    // The operator's first key may manage keys, so the console works from the first start.
    let spec = admin::KeySpec {
        user: user.id,
        name: "first key",
        webhook_url: None,
        webhook_api_key: None,
        manage_keys: true,
        own_bins: None,
    };
    let key = admin::create_key(store, master_key, &spec, &config.webhook).await.map_err(failed)?;
    Ok(Some(Bootstrap { user, key }))
}
