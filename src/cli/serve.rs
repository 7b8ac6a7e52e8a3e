//! `shipsec serve`: the HTTP control API (`shipsec_orchestrator::service`) over an engine
//! that journals by default and resumes the runs it finds on start.
//!
//! Start: the listeners are bound first (`/healthz` answers, `/readyz` says 503), then
//! the journal is opened and its unfinished runs resumed, then the service is ready.
//! Stop (SIGTERM or SIGINT): no new connection, event streams end, requests in flight
//! finish; the engine starts no attempt more, gives those running the grace period,
//! stores what they did, and exits 0 with its unfinished runs left to resume.

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Args;
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::components::RestrictedProcess;
use shipsec_orchestrator::config::DescriptorBudget;
use shipsec_orchestrator::config::{Durability, LossPolicy};
use shipsec_orchestrator::net::bearer::{MIN_TOKEN_BYTES, is_weak};
use shipsec_orchestrator::net::descriptors::raise_open_file_limit;
use shipsec_orchestrator::net::guard::Slots;
use shipsec_orchestrator::service::links::InputLinks;
use shipsec_orchestrator::service::listen::{self, Bound, ListenAddr, host_part};
use shipsec_orchestrator::service::{Service, ServiceOptions};
use shipsec_orchestrator::worker::gateway::{Gateway, WorkerTokens};
use shipsec_orchestrator::{EngineConfig, Orchestrator, ShutdownMode};
use tokio::signal::unix::{SignalKind, signal};
use tokio_util::sync::CancellationToken;

/// The environment variable holding the API token(s), comma-separated.
const TOKEN_VAR: &str = "SHIPSEC_API_TOKEN";

/// Most nodes running at once when the configuration sets no `maxConcurrentNodes`.
const DEFAULT_NODE_CAP: u32 = 100_000;

/// Arguments of `shipsec serve`.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Where to listen: HOST:PORT or unix:/path/to.sock; may be repeated.
    #[arg(long = "listen", value_name = "ADDR", default_value = "127.0.0.1:7420")]
    listen: Vec<String>,
    /// The journal's directory (runs survive a crash and resume on the next start).
    #[arg(long, value_name = "DIR", default_value = "./shipsec-data")]
    data_dir: PathBuf,
    /// How hard the journal keeps what it is given: fsync, process or off (no journal).
    #[arg(long, value_name = "MODE", default_value = "fsync")]
    durability: Durability,
    /// Open a journal that lost acknowledged data (a damaged or missing write-ahead log)
    /// without what it lost; the loss is listed and recorded in its `losses` file.
    #[arg(long)]
    accept_journal_loss: bool,
    /// Engine configuration (YAML or JSON), with its `service:` section.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// A file of API tokens, one per line (blank lines and `#` comments ignored); also
    /// SHIPSEC_API_TOKEN. Without any, only loopback and Unix-socket listeners are allowed.
    #[arg(long, value_name = "FILE")]
    token_file: Option<PathBuf>,
    /// The run view links each run's trace here: a URL with `{traceId}` in it, such as
    /// http://localhost:16686/trace/{traceId} (Jaeger).
    #[arg(long, value_name = "URL")]
    jaeger_url: Option<String>,
    /// Serve remote workers (gRPC shipsec.worker.v1) on HOST:PORT: nodes with
    /// `runner: {kind: remote}`, and components the configuration makes remote, run there.
    #[arg(long, value_name = "ADDR")]
    worker_listen: Option<String>,
    /// Workers' tokens, `<workerId> <token>` per line: a token speaks for its worker only.
    /// Without it, --worker-listen must be a loopback address.
    #[arg(long, value_name = "FILE")]
    worker_token_file: Option<PathBuf>,
    /// Serve workers over TLS (rustls) with this certificate chain (PEM); needs
    /// --worker-tls-key. Workers connect with `https://` and trust its CA.
    #[arg(long, value_name = "FILE", requires = "worker_tls_key")]
    worker_tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --worker-tls-cert.
    #[arg(long, value_name = "FILE", requires = "worker_tls_cert")]
    worker_tls_key: Option<PathBuf>,
}

/// The worker listener, bound, and what serves it.
struct Workers {
    gateway: Gateway,
    listener: tokio::net::TcpListener,
    /// Plain, or TLS with the certificate checked at start.
    server: tonic::transport::Server,
}

/// A usage problem: exit 2.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Usage(String);

/// Runs the server until SIGTERM or SIGINT.
pub(crate) fn serve(args: ServeArgs, registry: ComponentRegistry) -> ExitCode {
    let outcome = match crate::cli::run::with_telemetry(run(args, registry)) {
        Ok((outcome, _)) => outcome,
        Err(code) => return code,
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            complain!("shipsec serve: {e:#}");
            let usage = e.downcast_ref::<Usage>().is_some()
                || e.downcast_ref::<shipsec_orchestrator::ConfigError>()
                    .is_some();
            ExitCode::from(if usage { 2 } else { 1 })
        }
    }
}

fn tokens(args: &ServeArgs) -> Result<Vec<String>> {
    let mut tokens: Vec<String> = std::env::var(TOKEN_VAR)
        .unwrap_or_default()
        .split(',')
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned)
        .collect();
    if let Some(path) = &args.token_file {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the token file {}", path.display()))?;
        tokens.extend(
            text.lines()
                .map(str::trim)
                .filter(|l| !l.is_empty() && !l.starts_with('#'))
                .map(str::to_owned),
        );
        if tokens.is_empty() {
            return Err(Usage(format!("the token file {} holds no token", path.display())).into());
        }
    }
    Ok(tokens)
}

/// What opening the journal does with a loss, from `--accept-journal-loss`.
pub(crate) fn loss_policy(accept: bool) -> LossPolicy {
    if accept {
        LossPolicy::Accept
    } else {
        LossPolicy::Refuse
    }
}

/// The engine configuration, with the journal the flags ask for.
fn engine_config(args: &ServeArgs) -> Result<EngineConfig> {
    let mut config =
        crate::cli::run::read_config(args.config.as_ref()).map_err(|e| Usage(format!("{e:#}")))?;
    config.journal.durability = args.durability;
    config.journal.loss = loss_policy(args.accept_journal_loss);
    // Every attempt goes through the slot limiter, so that a graceful stop can hold new
    // attempts back and wait for those running (with no cap, attempts skip it).
    config.max_concurrent_nodes.get_or_insert(DEFAULT_NODE_CAP);
    config.journal.data_dir = (args.durability != Durability::Off).then(|| args.data_dir.clone());
    Ok(config)
}

/// The registry a server's clients get: `core.process` runs only what the configuration
/// allows (nothing, when it allows no process), checked again when each command runs, and
/// with a journal records its attempts in the journal's process ledger.
fn served_registry(
    mut registry: ComponentRegistry,
    config: &EngineConfig,
) -> Result<ComponentRegistry> {
    let policy = config
        .service
        .definitions
        .process
        .clone()
        .unwrap_or_default();
    let mut process = RestrictedProcess::new(policy);
    if let Some(dir) = &config.journal.data_dir {
        process = process.recording(crate::cli::run::process_ledger(dir)?);
    }
    registry.register(Arc::new(process));
    Ok(registry)
}

/// The coordinator of remote workers, its listener bound, when --worker-listen asks.
async fn workers(
    args: &ServeArgs,
    config: &EngineConfig,
    registry: &mut ComponentRegistry,
) -> Result<Option<Workers>> {
    let Some(addr) = &args.worker_listen else {
        if args.worker_token_file.is_some() || args.worker_tls_cert.is_some() {
            bail!(Usage(
                "--worker-token-file and --worker-tls-cert need --worker-listen".into()
            ));
        }
        return Ok(None);
    };
    let mut server = tonic::transport::Server::builder();
    if let (Some(cert), Some(key)) = (&args.worker_tls_cert, &args.worker_tls_key) {
        let read = |path: &PathBuf| {
            std::fs::read(path).with_context(|| format!("reading {}", path.display()))
        };
        let identity = tonic::transport::Identity::from_pem(read(cert)?, read(key)?);
        server = server
            .tls_config(
                tonic::transport::ServerTlsConfig::new()
                    .identity(identity)
                    .timeout(config.workers.connections.header_read_timeout),
            )
            .map_err(|e| Usage(format!("--worker-tls-cert and --worker-tls-key: {e}")))?;
    }
    let tokens = match &args.worker_token_file {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the worker token file {}", path.display()))?;
            WorkerTokens::parse(&text)
                .map_err(|e| Usage(format!("the worker token file {}: {e}", path.display())))?
        }
        None => WorkerTokens::default(),
    };
    let addr: std::net::SocketAddr = addr
        .parse()
        .map_err(|e| Usage(format!("--worker-listen {addr}: {e} (expected HOST:PORT)")))?;
    if !addr.ip().is_loopback()
        && let Some(worker) = tokens.weak_owner()
    {
        bail!(Usage(format!(
            "the token of worker `{worker}` is shorter than {MIN_TOKEN_BYTES} bytes: refused on a worker port other hosts reach (use a long random token)"
        )));
    }
    if tokens.is_empty() && !addr.ip().is_loopback() {
        bail!(Usage(format!(
            "refusing to serve workers on {addr} without tokens: set --worker-token-file, or listen on a loopback address"
        )));
    }
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .with_context(|| format!("binding the worker listener {addr}"))?;
    let gateway = Gateway::new(config.workers.clone(), tokens);
    // Remote commands keep to the policy local ones do (none allowed without one).
    let policy = config.service.definitions.process.clone();
    gateway.restrict_process(policy.unwrap_or_default());
    registry.set_remote(Arc::new(gateway.clone()), config.remote_components());
    Ok(Some(Workers {
        gateway,
        listener,
        server,
    }))
}

impl Workers {
    /// Says where it serves workers, and serves them until `stop` fires (after the engine
    /// has stopped: attempts it waits for during its grace still complete).
    fn spawn(
        self,
        slots: Slots,
        stop: CancellationToken,
    ) -> (Gateway, tokio::task::JoinHandle<()>) {
        let Workers {
            gateway,
            listener,
            server,
        } = self;
        let addr = listener
            .local_addr()
            .map_or_else(|e| e.to_string(), |a| a.to_string());
        say!("serving workers on {addr}");
        let serving = gateway.clone();
        let task = tokio::spawn(async move {
            if let Err(e) = serving.serve(server, listener, slots, stop).await {
                complain!("shipsec serve: the worker listener failed: {e}");
            }
        });
        (gateway, task)
    }
}

async fn run(args: ServeArgs, registry: ComponentRegistry) -> Result<()> {
    let config = engine_config(&args)?;
    let mut registry = served_registry(registry, &config)?;
    let workers = workers(&args, &config, &mut registry).await?;
    config.validate(&registry)?;
    let tokens = tokens(&args)?;
    let addrs = args
        .listen
        .iter()
        .map(|a| a.parse::<ListenAddr>().map_err(|e| Usage(e.to_string())))
        .collect::<Result<Vec<_>, _>>()?;
    if tokens.is_empty()
        && let Some(open) = addrs.iter().find(|a| !a.is_local())
    {
        bail!(Usage(format!(
            "refusing to listen on {open} without an API token: set {TOKEN_VAR} or --token-file, or listen on a loopback address or a Unix socket"
        )));
    }
    refuse_weak_tokens(&tokens, &addrs)?;
    let budget = descriptor_budget(&args, &config)?;
    let mut bound = Vec::new();
    for addr in &addrs {
        bound.push(Bound::bind(addr).await?);
    }
    let guard = listen::Guard {
        slots: Slots::new(budget.api),
        timeouts: (&config.service.connections).into(),
        open: tokens.is_empty(),
    };
    let mut options = ServiceOptions::new(config.service.clone());
    options.tokens = tokens;
    if config.service.public_input_links {
        let dir = config.journal.data_dir.as_deref();
        options.links = Some(InputLinks::open(dir).context("the public input links' key")?);
    }
    options.listen_hosts = args
        .listen
        .iter()
        .filter(|a| !a.starts_with("unix:"))
        .map(|a| {
            host_part(a)
                .trim_start_matches('[')
                .trim_end_matches(']')
                .to_owned()
        })
        .collect();
    if let Some(url) = args
        .jaeger_url
        .as_ref()
        .filter(|u| !u.contains("{traceId}"))
    {
        bail!(Usage(format!(
            "--jaeger-url {url}: the URL must hold {{traceId}}, where the run's trace id goes"
        )));
    }
    options.ui.jaeger_url = args.jaeger_url.clone();
    let service = Service::new(options);
    for b in &bound {
        say!("listening on {}", b.local_addr());
    }
    if service.is_open() {
        say!("no API token configured: listening on loopback addresses and Unix sockets only");
    }
    say!(
        "connections: at most {} on the API{} (open-file limit {})",
        budget.api,
        if workers.is_some() {
            format!(", {} on the worker port", budget.workers)
        } else {
            String::new()
        },
        budget.limit
    );
    let stop = service.stopping();
    let server = tokio::spawn(listen::serve(service.router(), bound, guard, stop.clone()));
    let workers_stop = CancellationToken::new();
    let gateway =
        workers.map(|workers| workers.spawn(Slots::new(budget.workers), workers_stop.clone()));
    let signals = tokio::spawn(stop_on_signal(stop.clone()));
    let grace = config.cancel_grace;
    let engine = tokio::select! {
        engine = Orchestrator::start_with(config, registry) => engine.context("starting the engine")?,
        () = stop.cancelled() => {
            let _ = server.await;
            return Ok(());
        }
    };
    if let Some((gateway, _)) = &gateway {
        gateway.attach(engine.remote_pools());
    }
    // Ready before it says so: whoever reads the line finds every endpoint answering.
    let _ = service.ready(engine.clone());
    say!(
        "ready: journal {}, {} runs resumed",
        if engine.journal().is_some() {
            args.data_dir.display().to_string()
        } else {
            "off".to_owned()
        },
        engine.resumed().len()
    );
    let served = server.await.context("the server task")?;
    signals.abort();
    // Requests are done: the runs still going stay in the journal for the next start.
    engine.shutdown(ShutdownMode::Suspend { grace }).await?;
    workers_stop.cancel();
    if let Some((_, task)) = gateway {
        let _ = task.await;
    }
    say!("stopped");
    served.context("serving")
}

/// Tokens under 16 bytes guard nothing on a port other hosts reach: refused there.
fn refuse_weak_tokens(tokens: &[String], addrs: &[ListenAddr]) -> Result<()> {
    if addrs.iter().any(|a| !a.is_local()) && tokens.iter().any(|t| is_weak(t.as_bytes())) {
        bail!(Usage(format!(
            "an API token is shorter than {MIN_TOKEN_BYTES} bytes: refused on a listener other hosts reach (use a long random token)"
        )));
    }
    Ok(())
}

/// Raises the open-file limit where allowed, and fits the connection caps under it.
fn descriptor_budget(args: &ServeArgs, config: &EngineConfig) -> Result<DescriptorBudget> {
    let limit = raise_open_file_limit().context("reading the open-file limit")?;
    let workers = args
        .worker_listen
        .as_ref()
        .map(|_| config.workers.connections.max_connections);
    DescriptorBudget::fit(limit, config.service.connections.max_connections, workers)
        .map_err(|e| Usage(format!("service.connections / workers.connections: {e}")).into())
}

/// Cancels `stop` on the first SIGTERM or SIGINT.
async fn stop_on_signal(stop: CancellationToken) {
    let (Ok(mut term), Ok(mut int)) = (
        signal(SignalKind::terminate()),
        signal(SignalKind::interrupt()),
    ) else {
        return;
    };
    tokio::select! {
        _ = term.recv() => {}
        _ = int.recv() => {}
    }
    say!("stopping: finishing the requests in flight");
    stop.cancel();
}
