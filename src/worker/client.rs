//! The worker's side of `shipsec.worker.v1`: `shipsec worker` runs components for a
//! coordinator.
//!
//! A [`Worker`] registers the components it hosts, long-polls for attempts within its
//! free slots and runs each in a task of its own, inside a span that joins the run's
//! trace through the attempt's `traceparent`. A heartbeat task renews the leases of what
//! it holds: an attempt the answer names to cancel has its cancellation token fired (the
//! engine gives it its grace, then withdraws it); one named stale is aborted and never
//! completed (`core.process` kills its process group when its future is dropped). A
//! worker that gets no heartbeat answered for a whole lease stops all its attempts
//! itself: the coordinator has given them to others by then.
//!
//! A completion is sent until it is answered `Ack` or `Stale`; the coordinator answers
//! `Ack` only once the engine has stored the attempt's end, so an acknowledged attempt is
//! never lost. A coordinator that no longer knows the worker (it restarted, or forgot a
//! silent worker) answers `FAILED_PRECONDITION`, and the worker registers again.
//!
//! Draining ([`Worker::run`]'s `drain` token, SIGTERM in `shipsec worker`): the worker
//! tells the coordinator, which stops leasing to it, finishes what it holds and returns.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::AbortHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Channel, Endpoint};
use tonic::{Code, Status};
use tracing::Instrument;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::components::{
    Component, ComponentError, ComponentResult, ExecutionContext, FailureInfo, INPUT_ERROR,
    Placement,
};
use crate::runtime::definition::JsonObject;
use crate::runtime::telemetry::context_of;
use crate::worker::PROTOCOL_VERSION;
use crate::worker::gateway::WORKER_ID;
use crate::worker::proto::{self, complete_request::Outcome, worker_client::WorkerClient};

/// How long a poll asks the coordinator to wait for work.
const POLL_WAIT: Duration = Duration::from_secs(20);
/// The longest pause between two tries of a call that failed for want of a coordinator.
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// How long a completion may take to be answered (the coordinator waits up to 30 s for
/// the engine to store the attempt's end).
const COMPLETE_TIMEOUT: Duration = Duration::from_secs(40);
/// Largest message either way, as the coordinator's.
const MAX_MESSAGE: usize = 64 << 20;

/// What a worker is: where its coordinator is, who it is, what it runs.
#[derive(Debug, Clone)]
pub struct WorkerOptions {
    /// The coordinator's URL (`http://HOST:PORT`).
    pub coordinator: String,
    /// The bearer token of this worker, when the coordinator wants one.
    pub token: Option<String>,
    /// The worker's id (unique among the coordinator's workers).
    pub worker_id: String,
    /// Attempts it runs at once.
    pub slots: u32,
    /// Queues it serves; none: the default queue.
    pub queues: Vec<String>,
    /// Labels it registers with.
    pub labels: HashMap<String, String>,
    /// Called with each attempt's id as it starts on this worker.
    pub on_start: Option<OnStart>,
    /// The CA certificate(s) (PEM) an `https://` coordinator's certificate must chain to.
    pub tls_ca: Option<Vec<u8>>,
}

impl WorkerOptions {
    /// Worker `worker_id` of the coordinator at `coordinator` with `slots`: no token, the
    /// default queue, no labels, no hook, no TLS.
    pub fn new(coordinator: impl Into<String>, worker_id: impl Into<String>, slots: u32) -> Self {
        WorkerOptions {
            coordinator: coordinator.into(),
            token: None,
            worker_id: worker_id.into(),
            slots,
            queues: Vec::new(),
            labels: HashMap::new(),
            on_start: None,
            tls_ca: None,
        }
    }
}

/// A hook called with an attempt's id as it starts (`shipsec worker --print-attempts`).
#[derive(Clone)]
pub struct OnStart(pub Arc<dyn Fn(&str) + Send + Sync>);

impl std::fmt::Debug for OnStart {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("OnStart(..)")
    }
}

/// Why a worker cannot start or go on.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    /// The coordinator's URL is not one.
    #[error("the coordinator address `{url}`: {reason}")]
    Address {
        /// The URL given.
        url: String,
        /// What is wrong with it.
        reason: String,
    },
    /// No hosted component matches the patterns.
    #[error("no component matches `{patterns}` (known: {known})")]
    NoComponents {
        /// The patterns given.
        patterns: String,
        /// The components this build has.
        known: String,
    },
    /// The worker's options are refused before any call.
    #[error("{0}")]
    Options(String),
    /// The coordinator refused the worker for good (a bad token, another protocol).
    #[error("the coordinator refused the worker: {} ({:?})", .0.message(), .0.code())]
    Refused(Status),
}

/// What a worker did, for its last words.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct WorkerSummary {
    /// Completions acknowledged.
    pub acknowledged: u64,
    /// Completions answered stale (the attempt was no longer this worker's).
    pub stale: u64,
    /// Attempts stopped because their lease was gone or the coordinator was unreachable
    /// for a whole lease.
    pub stopped: u64,
}

/// A worker, ready to run.
pub struct Worker {
    options: WorkerOptions,
    components: BTreeMap<String, Arc<dyn Component>>,
}

impl std::fmt::Debug for Worker {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Worker")
            .field("options", &self.options)
            .field("components", &self.components.keys().collect::<Vec<_>>())
            .finish()
    }
}

/// Whether `id` matches one of the comma-separated `patterns` (`*` matches any run of
/// characters: `core.*`, `*`, `shipsec.*.scan`).
pub fn matches_patterns(patterns: &str, id: &str) -> bool {
    patterns
        .split(',')
        .map(str::trim)
        .filter(|p| !p.is_empty())
        .any(|p| glob(p.as_bytes(), id.as_bytes()))
}

fn glob(pattern: &[u8], text: &[u8]) -> bool {
    match pattern.split_first() {
        None => text.is_empty(),
        Some((b'*', rest)) => (0..=text.len()).any(|i| glob(rest, &text[i..])),
        Some((c, rest)) => text
            .split_first()
            .is_some_and(|(t, tail)| t == c && glob(rest, tail)),
    }
}

impl Worker {
    /// A worker hosting the components of `registry` whose ids match `patterns`.
    ///
    /// # Errors
    /// [`WorkerError::NoComponents`] when none matches; [`WorkerError::Options`] for no
    /// slots or an empty worker id.
    pub fn new(
        options: WorkerOptions,
        registry: &ComponentRegistry,
        patterns: &str,
    ) -> Result<Worker, WorkerError> {
        if options.slots == 0 {
            return Err(WorkerError::Options("--slots must be at least 1".into()));
        }
        if options.worker_id.is_empty() {
            return Err(WorkerError::Options(
                "the worker id must not be empty".into(),
            ));
        }
        let components: BTreeMap<String, Arc<dyn Component>> = registry
            .ids()
            .into_iter()
            .filter(|id| matches_patterns(patterns, id))
            .filter_map(|id| Some((id.to_owned(), registry.get(id)?.clone())))
            .collect();
        if components.is_empty() {
            return Err(WorkerError::NoComponents {
                patterns: patterns.to_owned(),
                known: registry.ids().join(", "),
            });
        }
        Ok(Worker {
            options,
            components,
        })
    }

    /// The ids of the components it hosts.
    pub fn component_ids(&self) -> impl Iterator<Item = &str> {
        self.components.keys().map(String::as_str)
    }

    /// Connects to the coordinator and registers (trying again while it cannot be
    /// reached).
    ///
    /// # Errors
    /// The coordinator's address is not a URL, or the coordinator refused the worker for
    /// good.
    pub async fn register(self) -> Result<Registered, WorkerError> {
        let endpoint = Endpoint::from_shared(self.options.coordinator.clone())
            .map_err(|e| WorkerError::Address {
                url: self.options.coordinator.clone(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(2))
            .tcp_nodelay(true)
            .http2_keep_alive_interval(Duration::from_secs(1))
            .keep_alive_timeout(Duration::from_secs(2))
            .keep_alive_while_idle(true);
        let endpoint = match (
            &self.options.tls_ca,
            self.options.coordinator.starts_with("https://"),
        ) {
            (Some(ca), true) => {
                let tls = tonic::transport::ClientTlsConfig::new()
                    .ca_certificate(tonic::transport::Certificate::from_pem(ca));
                endpoint.tls_config(tls).map_err(|e| WorkerError::Address {
                    url: self.options.coordinator.clone(),
                    reason: format!("TLS: {e}"),
                })?
            }
            (None, true) => {
                return Err(WorkerError::Options(
                    "an https:// coordinator needs the CA that signed its certificate (--tls-ca)"
                        .into(),
                ));
            }
            (Some(_), false) => {
                return Err(WorkerError::Options(
                    "--tls-ca is for an https:// coordinator".into(),
                ));
            }
            (None, false) => endpoint,
        };
        let auth = Auth(
            self.options
                .token
                .as_ref()
                .map(|t| format!("Bearer {t}").parse())
                .transpose()
                .map_err(|_| WorkerError::Options("the token is not valid header text".into()))?,
        );
        let client = WorkerClient::with_interceptor(endpoint.connect_lazy(), auth)
            .max_decoding_message_size(MAX_MESSAGE)
            .max_encoding_message_size(MAX_MESSAGE);
        let shared = Arc::new(Shared {
            client,
            slots: Arc::new(Semaphore::new(self.options.slots as usize)),
            options: self.options,
            components: self.components,
            held: Mutex::new(HashMap::new()),
            timing: Mutex::new(Timing::default()),
            summary: Mutex::new(WorkerSummary::default()),
            registered: AtomicU64::new(0),
            registering: tokio::sync::Mutex::new(()),
            killed: CancellationToken::new(),
        });
        shared.register(0).await?;
        Ok(Registered(shared))
    }
}

/// A registered worker, ready to serve.
pub struct Registered(Arc<Shared>);

impl std::fmt::Debug for Registered {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registered")
            .field("worker_id", &self.0.options.worker_id)
            .finish_non_exhaustive()
    }
}

impl Registered {
    /// A switch that ends this worker at once, as a crash of its process would: no drain,
    /// no completion, no further call; its attempts are aborted where they stand and the
    /// coordinator learns of the loss only when their leases run out. For hosts that
    /// embed workers and must drop one (the chaos harness's worker kill).
    pub fn kill_switch(&self) -> CancellationToken {
        self.0.killed.clone()
    }

    /// Serves the coordinator until `drain` fires, then finishes what it holds; or until
    /// its [`Registered::kill_switch`] fires, then ends at once.
    ///
    /// # Errors
    /// The coordinator refused the worker for good (it re-registers with a coordinator
    /// that forgot it, and tries again without end while none can be reached).
    pub async fn serve(self, drain: CancellationToken) -> Result<WorkerSummary, WorkerError> {
        let shared = self.0;
        let beats = CancellationToken::new();
        let heartbeat = tokio::spawn(shared.clone().heartbeat_until(beats.clone()));
        // The coordinator hears of the drain at once: a poll in flight is answered, and
        // nothing more is leased here.
        let told = tokio::spawn({
            let (shared, drain) = (shared.clone(), drain.clone());
            async move {
                drain.cancelled().await;
                shared.drain().await;
            }
        });
        let polled = tokio::select! {
            polled = shared.clone().poll_until(drain.clone()) => polled,
            () = shared.killed.cancelled() => {
                shared.kill();
                told.abort();
                heartbeat.abort();
                return Ok(*lock(&shared.summary));
            }
        };
        if polled.is_ok() {
            let _ = told.await;
        } else {
            told.abort();
        }
        // Whatever it holds ends here: every slot back.
        let _all = shared.slots.acquire_many(shared.options.slots).await;
        beats.cancel();
        let beat = heartbeat.await;
        polled?;
        if let Ok(Err(e)) = beat {
            return Err(e);
        }
        Ok(*lock(&shared.summary))
    }
}

/// Adds the bearer token to every call.
#[derive(Debug, Clone)]
struct Auth(Option<tonic::metadata::MetadataValue<tonic::metadata::Ascii>>);

impl tonic::service::Interceptor for Auth {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, Status> {
        if let Some(token) = &self.0 {
            request
                .metadata_mut()
                .insert("authorization", token.clone());
        }
        Ok(request)
    }
}

type Client = WorkerClient<InterceptedService<Channel, Auth>>;

/// The coordinator's heartbeat interval and lease, as it answered the registration.
#[derive(Debug, Clone, Copy)]
struct Timing {
    heartbeat: Duration,
    lease: Duration,
}

impl Default for Timing {
    fn default() -> Timing {
        Timing {
            heartbeat: Duration::from_secs(2),
            lease: Duration::from_secs(10),
        }
    }
}

struct Shared {
    client: Client,
    options: WorkerOptions,
    components: BTreeMap<String, Arc<dyn Component>>,
    /// One permit per slot; a running attempt holds one.
    slots: Arc<Semaphore>,
    held: Mutex<HashMap<String, Held>>,
    timing: Mutex<Timing>,
    summary: Mutex<WorkerSummary>,
    /// How many registrations succeeded: a call that found the worker unknown registers
    /// again only if nobody did since it was sent.
    registered: AtomicU64,
    /// Held while registering: one registration at a time.
    registering: tokio::sync::Mutex<()>,
    /// Fired to end the worker at once, as a crash would ([`Registered::kill_switch`]).
    killed: CancellationToken,
}

/// An attempt this worker runs.
struct Held {
    fence: u64,
    cancel: CancellationToken,
    task: AbortHandle,
    /// Its component has returned; its completion is on the way. The coordinator's book
    /// no longer leases it (a heartbeat would hear it is stale), and nothing stops it.
    completing: bool,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    // Each update is whole before the lock is let go.
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Whether a failed call is worth sending again: the coordinator is away, not refusing.
fn transient(status: &Status) -> bool {
    matches!(
        status.code(),
        Code::Unavailable
            | Code::Unknown
            | Code::DeadlineExceeded
            | Code::Cancelled
            | Code::Aborted
            | Code::Internal
            | Code::ResourceExhausted
    )
}

/// Doubling pauses between tries, from 50 ms up to [`MAX_BACKOFF`].
struct Backoff(Duration);

impl Backoff {
    fn new() -> Backoff {
        Backoff(Duration::from_millis(50))
    }

    async fn wait(&mut self) {
        tokio::time::sleep(self.0).await;
        self.0 = (self.0 * 2).min(MAX_BACKOFF);
    }
}

fn with_timeout<T>(message: T, timeout: Duration) -> tonic::Request<T> {
    let mut request = tonic::Request::new(message);
    request.set_timeout(timeout);
    request
}

impl Shared {
    fn timing(&self) -> Timing {
        *lock(&self.timing)
    }

    /// Registers, unless a registration newer than `seen` happened meanwhile. Tries
    /// again while the coordinator is away.
    async fn register(&self, seen: u64) -> Result<(), WorkerError> {
        let _one = self.registering.lock().await;
        let registered = self.registered.load(Ordering::Acquire);
        if registered > seen {
            return Ok(());
        }
        let request = proto::RegisterRequest {
            worker_id: self.options.worker_id.clone(),
            sdk: concat!("rust/", env!("CARGO_PKG_VERSION")).to_owned(),
            protocol_version: PROTOCOL_VERSION,
            components: self
                .components
                .iter()
                .map(|(id, c)| proto::ComponentSpec {
                    id: id.clone(),
                    summary: c.meta().summary.to_owned(),
                })
                .collect(),
            slots: self.options.slots,
            labels: self.options.labels.clone(),
            queues: self.options.queues.clone(),
        };
        let mut backoff = Backoff::new();
        loop {
            let call = with_timeout(request.clone(), Duration::from_secs(5));
            match self.client.clone().register(call).await {
                Ok(answer) => {
                    let answer = answer.into_inner();
                    let timing = Timing {
                        heartbeat: Duration::from_millis(u64::from(
                            answer.heartbeat_interval_ms.max(10),
                        )),
                        lease: Duration::from_millis(u64::from(answer.lease_ms.max(20))),
                    };
                    *lock(&self.timing) = timing;
                    self.registered.store(registered + 1, Ordering::Release);
                    tracing::info!(
                        target: "shipsec::worker",
                        worker_id = %self.options.worker_id,
                        coordinator = %self.options.coordinator,
                        "registered"
                    );
                    return Ok(());
                }
                Err(status) if transient(&status) => backoff.wait().await,
                Err(status) => return Err(WorkerError::Refused(status)),
            }
        }
    }

    /// Polls for attempts and starts them, until `drain` fires.
    async fn poll_until(self: Arc<Self>, drain: CancellationToken) -> Result<(), WorkerError> {
        let mut backoff = Backoff::new();
        while !drain.is_cancelled() {
            let free = self.slots.available_permits();
            if free == 0 {
                // A slot frees when an attempt ends.
                tokio::select! {
                    permit = self.slots.acquire() => drop(permit),
                    () = drain.cancelled() => break,
                }
                continue;
            }
            let seen = self.registered.load(Ordering::Acquire);
            let call = with_timeout(
                proto::PollRequest {
                    worker_id: self.options.worker_id.clone(),
                    free_slots: u32::try_from(free).unwrap_or(u32::MAX),
                    wait_ms: u32::try_from(POLL_WAIT.as_millis()).unwrap_or(u32::MAX),
                },
                POLL_WAIT + Duration::from_secs(5),
            );
            // A poll in flight is not dropped at a drain: attempts it brings back are this
            // worker's. The coordinator answers it at once when told of the drain.
            match self.client.clone().poll_attempts(call).await {
                Ok(answer) => {
                    backoff = Backoff::new();
                    for attempt in answer.into_inner().attempts {
                        self.start(attempt);
                    }
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    self.register(seen).await?;
                }
                Err(status) if transient(&status) => backoff.wait().await,
                Err(status) => return Err(WorkerError::Refused(status)),
            }
        }
        Ok(())
    }

    /// Tells the coordinator to lease nothing more to this worker (tried for a lease).
    async fn drain(&self) {
        let give_up = Instant::now() + self.timing().lease;
        let mut backoff = Backoff::new();
        loop {
            let call = with_timeout(
                proto::DrainRequest {
                    worker_id: self.options.worker_id.clone(),
                },
                Duration::from_secs(5),
            );
            match self.client.clone().drain(call).await {
                Ok(answer) => {
                    tracing::info!(
                        target: "shipsec::worker",
                        held = answer.into_inner().held,
                        "draining: finishing the attempts held"
                    );
                    return;
                }
                Err(status) if transient(&status) && Instant::now() < give_up => {
                    backoff.wait().await;
                }
                Err(status) => {
                    tracing::warn!(target: "shipsec::worker", %status, "draining without the coordinator's word");
                    return;
                }
            }
        }
    }

    /// Starts an attempt in a task of its own, holding one slot.
    fn start(self: &Arc<Self>, attempt: proto::Attempt) {
        let Ok(permit) = self.slots.clone().try_acquire_owned() else {
            // The coordinator never sends more than the free slots asked for; one too many
            // is left to expire rather than run over the worker's slots.
            tracing::warn!(target: "shipsec::worker", attempt_id = %attempt.attempt_id, "an attempt beyond the free slots: not run");
            return;
        };
        if let Some(OnStart(hook)) = &self.options.on_start {
            hook(&attempt.attempt_id);
        }
        let cancel = CancellationToken::new();
        let (id, fence) = (attempt.attempt_id.clone(), attempt.fence);
        let mut held = lock(&self.held);
        if self.killed.is_cancelled() {
            return; // killed (by the hook, maybe): nothing starts after `kill` looked
        }
        let task = tokio::spawn(self.clone().run_attempt(attempt, cancel.clone(), permit));
        let held_now = Held {
            fence,
            cancel,
            task: task.abort_handle(),
            completing: false,
        };
        held.insert(id, held_now);
    }

    /// Runs an attempt and completes it.
    async fn run_attempt(
        self: Arc<Self>,
        attempt: proto::Attempt,
        cancel: CancellationToken,
        _slot: OwnedSemaphorePermit,
    ) {
        let _release = Release(self.clone(), attempt.attempt_id.clone(), attempt.fence);
        let span = tracing::info_span!(
            target: "shipsec::worker",
            "attempt",
            run_id = %attempt.run_id,
            node_ref = %attempt.node_ref,
            attempt = attempt.attempt,
            component_id = %attempt.component_id,
            attempt_id = %attempt.attempt_id,
            fence = attempt.fence,
        );
        {
            use tracing_opentelemetry::OpenTelemetrySpanExt;
            if let Some(parent) = context_of(&attempt.traceparent) {
                let _ = span.set_parent(parent);
            }
            span.set_attribute(WORKER_ID, self.options.worker_id.clone());
        }
        let result = match (
            self.components.get(&attempt.component_id),
            context(&attempt, cancel),
        ) {
            (None, _) => Err(ComponentError::fatal(
                INPUT_ERROR,
                format!(
                    "worker `{}` does not host `{}`",
                    self.options.worker_id, attempt.component_id
                ),
            )),
            (_, Err(e)) => Err(e),
            (Some(component), Ok(ctx)) => {
                let cancel = ctx.cancel.clone();
                let mut work = component.execute(ctx).instrument(span.clone());
                // Past its deadline the engine has given up on it: the component is told
                // to stop even when the coordinator cannot be reached to say so.
                tokio::select! {
                    done = &mut work => done,
                    () = until(attempt.deadline_unix_ms) => {
                        cancel.cancel();
                        work.await
                    }
                }
            }
        };
        if let Some(held) = lock(&self.held).get_mut(&attempt.attempt_id)
            && held.fence == attempt.fence
        {
            held.completing = true;
        }
        self.complete(&attempt, result).instrument(span).await;
    }

    /// Sends a completion until it is answered.
    async fn complete(&self, attempt: &proto::Attempt, result: ComponentResult) {
        let outcome = match result {
            Ok(out) => Outcome::Success(proto::Success {
                output_json: serde_json::to_string(&out.output).unwrap_or_else(|_| "{}".into()),
                routes: out.active_ports.is_some(),
                active_ports: out.active_ports.unwrap_or_default(),
            }),
            Err(e) => Outcome::Failure(proto::Failure {
                r#type: e.error_type,
                message: e.message,
                retryable: e.retryable,
                details_json: String::new(),
            }),
        };
        let request = proto::CompleteRequest {
            attempt_id: attempt.attempt_id.clone(),
            fence: attempt.fence,
            outcome: Some(outcome),
            worker_id: self.options.worker_id.clone(),
        };
        let mut backoff = Backoff::new();
        loop {
            let call = with_timeout(request.clone(), COMPLETE_TIMEOUT);
            match self.client.clone().complete(call).await {
                Ok(answer) => {
                    let stale = answer.into_inner().verdict() == proto::Verdict::Stale;
                    let mut summary = lock(&self.summary);
                    if stale {
                        summary.stale += 1;
                        tracing::warn!(target: "shipsec::worker", attempt_id = %attempt.attempt_id, "completion stale: the attempt is no longer this worker's");
                    } else {
                        summary.acknowledged += 1;
                    }
                    return;
                }
                Err(status) if transient(&status) => backoff.wait().await,
                Err(status) => {
                    tracing::error!(target: "shipsec::worker", attempt_id = %attempt.attempt_id, %status, "completion refused");
                    return;
                }
            }
        }
    }

    /// Heartbeats what it holds until `stop` fires; stops attempts named stale, cancels
    /// those named to cancel, and stops everything after a whole lease unanswered.
    async fn heartbeat_until(self: Arc<Self>, stop: CancellationToken) -> Result<(), WorkerError> {
        let mut answered = Instant::now();
        loop {
            let timing = self.timing();
            tokio::select! {
                () = stop.cancelled() => return Ok(()),
                () = tokio::time::sleep(timing.heartbeat) => {}
            }
            let sent = Instant::now();
            let seen = self.registered.load(Ordering::Acquire);
            let attempts: Vec<proto::AttemptProgress> = lock(&self.held)
                .iter()
                .filter(|(_, h)| !h.completing)
                .map(|(id, h)| proto::AttemptProgress {
                    attempt_id: id.clone(),
                    fence: h.fence,
                    ..proto::AttemptProgress::default()
                })
                .collect();
            let call = with_timeout(
                proto::HeartbeatRequest {
                    worker_id: self.options.worker_id.clone(),
                    attempts,
                },
                timing.heartbeat.max(Duration::from_millis(500)),
            );
            match self.client.clone().heartbeat(call).await {
                Ok(answer) => {
                    answered = sent;
                    let answer = answer.into_inner();
                    self.cancel(&answer.cancel);
                    self.stop(&answer.stale, "its lease is gone");
                }
                Err(status) if status.code() == Code::FailedPrecondition => {
                    // Forgotten: nothing it holds is its own any more.
                    answered = sent;
                    self.stop_all("the coordinator no longer knows this worker");
                    self.register(seen).await?;
                }
                Err(status) if transient(&status) => {}
                Err(status) => return Err(WorkerError::Refused(status)),
            }
            if answered.elapsed() >= timing.lease {
                self.stop_all("no heartbeat answered for a whole lease");
            }
        }
    }

    fn cancel(&self, ids: &[String]) {
        let held = lock(&self.held);
        for id in ids {
            if let Some(h) = held.get(id) {
                tracing::info!(target: "shipsec::worker", attempt_id = %id, "cancelled by the coordinator");
                h.cancel.cancel();
            }
        }
    }

    /// Aborts every attempt it holds, completing or not: the worker was killed (after
    /// its switch fired, so that `start` sees it and starts nothing more).
    fn kill(&self) {
        for (_, h) in lock(&self.held).drain() {
            h.task.abort();
        }
    }

    /// Aborts every attempt it holds (but those completing) without completing them.
    fn stop_all(&self, why: &str) {
        let all: Vec<String> = lock(&self.held).keys().cloned().collect();
        self.stop(&all, why);
    }

    /// Aborts attempts without completing them.
    fn stop(&self, ids: &[String], why: &str) {
        let mut stopped = Vec::new();
        {
            let mut held = lock(&self.held);
            for id in ids {
                if held.get(id).is_some_and(|h| !h.completing)
                    && let Some(h) = held.remove(id)
                {
                    h.task.abort();
                    stopped.push(id);
                }
            }
        }
        if stopped.is_empty() {
            return;
        }
        lock(&self.summary).stopped += stopped.len() as u64;
        for id in stopped {
            tracing::warn!(target: "shipsec::worker", attempt_id = %id, reason = why, "attempt stopped");
        }
    }
}

/// Sleeps until `deadline_unix_ms` (milliseconds since the epoch); forever when it is 0.
async fn until(deadline_unix_ms: i64) {
    let Ok(ms) = u64::try_from(deadline_unix_ms) else {
        return std::future::pending().await;
    };
    if ms == 0 {
        return std::future::pending().await;
    }
    let at = std::time::UNIX_EPOCH + Duration::from_millis(ms);
    let left = at
        .duration_since(std::time::SystemTime::now())
        .unwrap_or_default();
    tokio::time::sleep(left).await;
}

/// Takes an attempt out of the held ones when its task ends, however it ends (unless a
/// newer lease of the same attempt replaced it).
struct Release(Arc<Shared>, String, u64);

impl Drop for Release {
    fn drop(&mut self) {
        let mut held = lock(&self.0.held);
        if held.get(&self.1).is_some_and(|h| h.fence == self.2) {
            held.remove(&self.1);
        }
    }
}

/// The execution context of a leased attempt, its JSON read.
fn context(
    attempt: &proto::Attempt,
    cancel: CancellationToken,
) -> Result<ExecutionContext, ComponentError> {
    let object = |field: &str, text: &str| -> Result<JsonObject, ComponentError> {
        if text.is_empty() {
            return Ok(JsonObject::new());
        }
        serde_json::from_str(text).map_err(|e| {
            ComponentError::fatal(
                INPUT_ERROR,
                format!("the attempt's {field} are not a JSON object: {e}"),
            )
        })
    };
    let metadata = attempt.metadata.clone().unwrap_or_default();
    let failure = if metadata.failure_json.is_empty() {
        None
    } else {
        let info: FailureInfo = serde_json::from_str(&metadata.failure_json).map_err(|e| {
            ComponentError::fatal(
                INPUT_ERROR,
                format!("the attempt's failure is not readable: {e}"),
            )
        })?;
        Some(Arc::new(info))
    };
    Ok(ExecutionContext {
        run_id: attempt.run_id.as_str().into(),
        node_ref: attempt.node_ref.as_str().into(),
        attempt: attempt.attempt,
        params: Arc::new(object("params", &attempt.params_json)?),
        inputs: Arc::new(object("inputs", &attempt.inputs_json)?),
        triggered_by: metadata
            .triggered_by
            .iter()
            .map(|r| Arc::from(r.as_str()))
            .collect(),
        failure,
        cancel,
        placement: Placement::default(),
        output_limit: crate::runtime::definition::limits::DefinitionLimits::default()
            .max_output_bytes,
    })
}

#[cfg(test)]
mod tests {
    use super::matches_patterns;

    #[test]
    fn component_patterns_match_with_stars() {
        assert!(matches_patterns("*", "core.echo"));
        assert!(matches_patterns("core.*", "core.process"));
        assert!(matches_patterns("a.b, core.e*o", "core.echo"));
        assert!(matches_patterns("shipsec.*.scan", "shipsec.nmap.scan"));
        assert!(!matches_patterns("core.*", "shipsec.echo"));
        assert!(!matches_patterns("core.echo", "core.echoes"));
        assert!(!matches_patterns("", "core.echo"));
    }
}
