//! `ferry serve`: open the logs, build the API, listen until SIGINT or SIGTERM.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::Context;
use ferry_api::{ApiConfig, AppState, IdGenerator, Ingest, Sources, SystemClock};
use ferry_delivery::{DeadLetters, Worker};
use tokio::sync::watch;

use crate::backend::{self, LogIngest, Logs};
use crate::config::{Backend, Config, Sync};
use crate::destinations;

#[derive(Debug, clap::Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on; overrides `server.listen`.
    #[arg(long, env = "FERRY_LISTEN")]
    listen: Option<SocketAddr>,
    /// Sync policy of the log; overrides `log.sync`.
    #[arg(long, env = "FERRY_SYNC", value_enum)]
    sync: Option<Sync>,
    /// Worker threads of the runtime (default: one per core).
    #[arg(long, env = "FERRY_THREADS")]
    threads: Option<usize>,
    /// In cluster mode (`log.backend = "nats"`): run the tracking API (collector), the
    /// delivery workers (worker), or both (all, the default).
    #[arg(long, env = "FERRY_ROLE", value_enum, default_value = "all")]
    role: Role,
    /// The admin token; overrides `admin.token`.
    #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
    admin_token: Option<String>,
}

/// How long shutdown waits for delivery workers to finish the batch in hand.
const WORKER_GRACE: Duration = Duration::from_secs(30);

/// Server-generated message ids are UUID v7 strings: time-ordered, so they keep the
/// dedupe index and the warehouse's primary-key index local.
struct UuidV7;

impl IdGenerator for UuidV7 {
    fn message_id(&self) -> String {
        uuid::Uuid::now_v7().to_string()
    }
}

pub(crate) fn run(mut config: Config, args: ServeArgs) -> anyhow::Result<()> {
    if let Some(listen) = args.listen {
        config.server.listen = listen;
    }
    if let Some(sync) = args.sync {
        config.log.sync = sync;
    }
    if let Some(token) = args.admin_token {
        config.admin.token = Some(token);
    }
    if !config.server.listen.ip().is_loopback() && config.admin.token.is_none() && !config.admin.allow_open {
        anyhow::bail!(
            "refusing to listen on {} with the admin api open to anyone who reaches it: set admin.token (or FERRY_ADMIN_TOKEN), or admin.allow_open = true if something in front of ferry authenticates",
            config.server.listen
        );
    }
    if config.log.backend == Backend::Embedded && args.role != Role::All {
        anyhow::bail!(
            "--role {:?} needs log.backend = \"nats\": the embedded log is one process that collects and delivers",
            args.role
        );
    }
    let problems = config.problems();
    if !problems.is_empty() {
        anyhow::bail!("invalid configuration: {}; run `ferry check` to see every problem", problems.join("; "));
    }
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    runtime.enable_all();
    if let Some(threads) = args.threads {
        runtime.worker_threads(threads.max(1));
    }
    runtime.build().context("cannot start the async runtime")?.block_on(serve(config, args.role))
}

/// What a node runs in cluster mode; the embedded log is always `all`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Role {
    /// The tracking API: validate, enrich, publish (stateless).
    Collector,
    /// The delivery workers of every configured destination.
    Worker,
    /// Both.
    All,
}

impl Role {
    fn collects(self) -> bool {
        matches!(self, Role::Collector | Role::All)
    }

    fn delivers(self) -> bool {
        matches!(self, Role::Worker | Role::All)
    }
}

/// The running parts of one backend, for the HTTP API.
struct Running {
    ingest: Arc<dyn Ingest>,
    admin: Arc<dyn ferry_api::admin::Admin>,
    telemetry: Arc<dyn ferry_api::MetricsSource>,
    workers: Vec<tokio::task::JoinHandle<()>>,
}

/// One destination ready to run.
struct Delivery {
    built: destinations::Built,
    kind: &'static str,
}

async fn serve(config: Config, role: Role) -> anyhow::Result<()> {
    std::fs::create_dir_all(&config.data_dir)
        .with_context(|| format!("cannot create data directory {}", config.data_dir.display()))?;
    let sources = if config.sources.is_empty() {
        tracing::warn!("no sources configured: running open, any non-empty write key is accepted as its own source");
        Sources::Open
    } else {
        let keys = config.sources.iter().flat_map(|s| s.write_keys.iter().map(|k| (k.clone(), s.id.clone()))).collect();
        Sources::Configured(keys)
    };
    let tap = Arc::new(ferry_tap::Tap::new());
    let api_config = ApiConfig {
        sources,
        public_url: config.server.public_url.clone(),
        trusted_proxies: config.server.trusted_proxies.clone(),
        max_body_bytes: config.server.max_body_bytes,
        max_inflight_bytes: config.server.max_inflight_bytes,
        admin_token: config.admin.token.clone().filter(|t| !t.is_empty()),
        tap: tap.clone(),
        ..ApiConfig::default()
    };
    let dead_letter_path = config.data_dir.join("dead-letters.db");
    let dead_letters = Arc::new(
        DeadLetters::open(&dead_letter_path)
            .with_context(|| format!("cannot open the dead letters in {}", dead_letter_path.display()))?,
    );
    let mut deliveries = Vec::new();
    if role.delivers() {
        for destination in destinations::configured(&config) {
            deliveries
                .push(Delivery { built: destinations::build(&config, &destination)?, kind: destination.kind.name() });
        }
    }
    let names: Vec<String> = deliveries.iter().map(|d| d.built.worker.name.clone()).collect();
    let logs = backend::open(&config, &names, &tap).await?;
    // Every consumer is opened before ingestion begins, so that a destination starting at
    // the end gets every event stored from now on.
    let mut workers = Vec::new();
    let mut handles = Vec::new();
    for Delivery { built, kind } in deliveries {
        let name = built.worker.name.clone();
        if kind == "sqlite" && config.log.backend == Backend::Nats {
            tracing::warn!(destination = %name, "a sqlite warehouse in cluster mode is a file on each worker node: run one worker node, or deliver to postgres");
        }
        let worker =
            Worker::open(built.worker.clone(), logs.events.as_ref(), built.destination.clone(), dead_letters.clone())
                .await
                .with_context(|| format!("cannot open the log's consumer for destination {name}"))?
                .with_tap(tap.clone());
        handles.push(handle(built, kind, &worker));
        workers.push(worker);
    }
    let ingest: Arc<dyn Ingest> = if role.collects() {
        LogIngest::new(logs.clone())
    } else {
        LogIngest::refusing(
            logs.clone(),
            "this node runs with --role worker and takes no events; send them to a collector",
        )
    };
    let (stop_workers, workers_stopped) = watch::channel(false);
    let running = start(logs, ingest, handles, workers, &dead_letters, workers_stopped);

    let state = AppState::new(api_config, running.ingest, Arc::new(SystemClock), Arc::new(UuidV7));
    state.add_metrics(running.telemetry);
    state.set_admin(running.admin);
    let app = ferry_api::router(state);

    let listener = tokio::net::TcpListener::bind(config.server.listen).await.with_context(|| {
        format!(
            "cannot listen on {}; is another ferry running? pick another address with --listen",
            config.server.listen
        )
    })?;
    let local = listener.local_addr().context("listener has no address")?;
    // One machine-readable line on stdout, for scripts and tests that listen on port 0.
    println!("ferry listening on http://{local}");
    tracing::info!(address = %local, data_dir = %config.data_dir.display(), backend = ?config.log.backend, ?role, "ferry is listening");
    axum::serve(listener, app.into_make_service_with_connect_info::<SocketAddr>())
        .with_graceful_shutdown(shutdown_signal())
        .await
        .context("http server failed")?;
    // Workers finish the batch they are sending (a batch waiting for a retry is sent again
    // after the next start, or by another worker node); past the grace period they are
    // abandoned the same way.
    let _ = stop_workers.send(true);
    let grace = tokio::time::Instant::now() + WORKER_GRACE;
    for worker in running.workers {
        if tokio::time::timeout_at(grace, worker).await.is_err() {
            tracing::warn!("a delivery worker did not stop in time; its batch is delivered again");
        }
    }
    tracing::info!("ferry stopped");
    Ok(())
}

fn handle(built: destinations::Built, kind: &'static str, worker: &Worker) -> Arc<crate::admin::Handle> {
    Arc::new(crate::admin::Handle {
        name: built.worker.name.clone(),
        kind,
        target: built.target,
        status: worker.status(),
        consumer: worker.consumer(),
        destination: built.destination,
        batch_events: built.worker.batch_events,
        backoff: built.worker.backoff,
    })
}

/// Start the workers; the admin API and `/metrics` over them.
fn start(
    logs: Logs,
    ingest: Arc<dyn Ingest>,
    handles: Vec<Arc<crate::admin::Handle>>,
    workers: Vec<Worker>,
    dead_letters: &Arc<DeadLetters>,
    stopped: watch::Receiver<bool>,
) -> Running {
    for h in &handles {
        tracing::info!(destination = %h.name, target = %h.target, "delivering");
    }
    let workers = workers.into_iter().map(|w| tokio::spawn(w.run(stopped.clone()))).collect();
    let telemetry = Arc::new(crate::telemetry::Telemetry {
        render_log: logs.render.clone(),
        destinations: handles.clone(),
        dead_letters: dead_letters.clone(),
    });
    let admin = Arc::new(crate::admin::ProcessAdmin::new(logs, handles, dead_letters.clone()));
    Running { ingest, admin, telemetry, workers }
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut signal) => {
                signal.recv().await;
            }
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM");
                std::future::pending::<()>().await;
            }
        }
    };
    tokio::select! {
        () = ctrl_c => {},
        () = terminate => {},
    }
    tracing::info!("shutting down");
}
