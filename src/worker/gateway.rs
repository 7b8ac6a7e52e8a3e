//! The coordinator's side of `shipsec.worker.v1`: the gRPC service workers call, and the
//! engine's [`RemoteHost`].
//!
//! A remote attempt starts as any other (its node got its slots, a remote pool's among
//! them) and runs [`RemoteComponent`]: it puts the attempt in the [`LeaseBook`] and waits.
//! A worker polling for its pool gets it with a fence; its completion is checked against
//! the book (a stale fence is answered `Stale` and never counted), handed to the waiting
//! attempt, and acknowledged only once the engine has stored the attempt's end (the
//! journal, when there is one). A lease that expires fails the attempt with a retryable
//! `CrashError` naming the worker; its retry is a new attempt with a new fence. A
//! cancelled attempt is named in its worker's next heartbeat answer; an attempt the
//! engine abandons (its grace ran out, its run ended) leaves the book, and its worker
//! hears that it is stale.
//!
//! Every call is checked before it touches the book: the caller's token names the worker
//! it may speak for, the protocol version must be this one, ids, slots and JSON must be
//! well-formed, and calls must come in order (register first). Each refusal has its own
//! gRPC status.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use futures::FutureExt;
use futures::future::BoxFuture;
use tokio::sync::{Notify, oneshot, watch};
use tokio_util::sync::CancellationToken;
use tonic::{Request, Response, Status};

use crate::actors::slots::RemotePools;
use crate::net::bearer::{TokenSet, bearer, is_weak};
use crate::net::guard::{Guarded, GuardedListener, Slots, TrackLayer};
use crate::runtime::components::builtin::CANCELLED_ERROR;
use crate::runtime::components::process::check_policy;
use crate::runtime::components::registry::{ComponentMeta, RemoteHost};
use crate::runtime::components::{
    CRASH_ERROR, Component, ComponentError, ComponentOutput, ComponentResult, ExecutionContext,
    Placement,
};
use crate::runtime::definition::JsonObject;
use crate::runtime::definition::graph::Node;
use crate::runtime::guardrails::config::WorkerConfig;
use crate::runtime::guardrails::needs::remote_pool;
use crate::runtime::guardrails::service::{PROCESS_COMPONENT, ProcessPolicy};
use crate::runtime::semantics::time::Time;
use crate::runtime::telemetry::traceparent_of;
use crate::worker::PROTOCOL_VERSION;
use crate::worker::layers::PreAuthLayer;
use crate::worker::lease::{Cancelled, LeaseBook, Lost, UnknownWorker, Verdict, WorkerSpec};
use crate::worker::proto::{self, complete_request::Outcome, worker_server};

/// Longest a poll waits for work.
const MAX_POLL_WAIT: Duration = Duration::from_secs(30);
/// Longest a completion waits for the engine to store the attempt's end before it is
/// answered `UNAVAILABLE` (and sent again by the worker).
const STORE_WAIT: Duration = Duration::from_secs(30);
/// Longest worker id, component id or queue name.
const MAX_NAME: usize = 256;
/// Most slots one worker may declare.
const MAX_SLOTS: u32 = 10_000;

/// Which worker each bearer token speaks for. Empty: calls need no token (the server then
/// listens on loopback addresses only). Tokens are compared in constant time
/// (`crate::net::bearer`).
#[derive(Debug, Clone, Default)]
pub struct WorkerTokens(TokenSet<Arc<str>>);

/// Why a worker token file does not read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TokenFileError {
    /// A line is not two words.
    #[error("line {0}: expected `<workerId> <token>`")]
    Malformed(usize),
    /// A token is given twice.
    #[error("line {0}: this token is given twice")]
    Repeated(usize),
}

impl WorkerTokens {
    /// Reads `<workerId> <token>` lines (blank lines and `#` comments ignored).
    ///
    /// # Errors
    /// The line number of a line that is not two words, or a token given twice.
    pub fn parse(text: &str) -> Result<WorkerTokens, TokenFileError> {
        let mut pairs: Vec<(String, Arc<str>)> = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim();
            if line.is_empty() || line.starts_with('#') {
                continue;
            }
            let mut words = line.split_whitespace();
            let (Some(worker), Some(token), None) = (words.next(), words.next(), words.next())
            else {
                return Err(TokenFileError::Malformed(n + 1));
            };
            if pairs.iter().any(|(t, _)| t == token) {
                return Err(TokenFileError::Repeated(n + 1));
            }
            pairs.push((token.to_owned(), Arc::from(worker)));
        }
        Ok(WorkerTokens(TokenSet::new(pairs)))
    }

    /// Whether calls need a token.
    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    /// The worker `token` speaks for, if it is one of the tokens.
    pub fn owner(&self, token: &[u8]) -> Option<&Arc<str>> {
        self.0.find(token)
    }

    /// A worker whose token is too short for a port other hosts reach
    /// ([`crate::net::bearer::MIN_TOKEN_BYTES`]).
    pub fn weak_owner(&self) -> Option<&str> {
        self.0
            .tokens()
            .find(|(token, _)| is_weak(token))
            .map(|(_, owner)| &**owner)
    }
}

/// The coordinator of remote workers. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Gateway(Arc<Inner>);

#[derive(Debug)]
struct Inner {
    state: Mutex<State>,
    /// Woken when attempts are submitted or leases end: long polls look again.
    work: Notify,
    config: WorkerConfig,
    tokens: WorkerTokens,
    /// Where the engine learns the pools' worker slots (set once it has started).
    pools: OnceLock<RemotePools>,
    /// What a remote `core.process` may run: checked here, before an attempt leaves.
    process: OnceLock<Arc<ProcessPolicy>>,
}

#[derive(Debug)]
struct State {
    book: LeaseBook,
    pending: HashMap<Arc<str>, Pending>,
    /// Accepted completions whose attempt's end the engine has not stored yet.
    storing: HashMap<Arc<str>, watch::Sender<bool>>,
    /// The capacities last told to the engine.
    told: BTreeMap<Arc<str>, u32>,
}

/// A remote attempt waiting for its outcome.
#[derive(Debug)]
struct Pending {
    attempt: proto::Attempt,
    outcome: Option<oneshot::Sender<ComponentResult>>,
    /// The attempt's span: the worker's id and its logs go there.
    span: tracing::Span,
    /// Where the run hears which worker took the attempt.
    placement: Placement,
}

impl Gateway {
    /// A coordinator with these heartbeat and lease settings and tokens.
    pub fn new(config: WorkerConfig, tokens: WorkerTokens) -> Gateway {
        // Fences start at the wall clock's microseconds: above every fence an earlier
        // coordinator (this one before a restart) gave out, at one lease per microsecond.
        let first_fence = Time::from_system_time(std::time::SystemTime::now()).as_micros();
        let state = State {
            book: LeaseBook::new(config.lease, first_fence),
            pending: HashMap::new(),
            storing: HashMap::new(),
            told: BTreeMap::new(),
        };
        Gateway(Arc::new(Inner {
            state: Mutex::new(state),
            work: Notify::new(),
            config,
            tokens,
            pools: OnceLock::new(),
            process: OnceLock::new(),
        }))
    }

    /// Remote `core.process` attempts run only commands within `policy`: each is checked
    /// as it starts, before it is offered to a worker (a command can arrive through an
    /// input, which the check at submission cannot see), and a refused one fails with a
    /// `PermissionError` without leaving the coordinator. Set once, before serving.
    pub fn restrict_process(&self, policy: ProcessPolicy) {
        let _ = self.0.process.set(Arc::new(policy));
    }

    /// Connects the coordinator to the engine it serves: from now on the engine knows
    /// the worker slots of each pool.
    pub fn attach(&self, pools: RemotePools) {
        let _ = self.0.pools.set(pools);
        self.tell_capacities(&mut self.lock());
    }

    /// Serves the workers on `listener` through `server` (plain, or with TLS) until `stop`
    /// fires, ending expired leases meanwhile. At most `slots` connections are held at
    /// once, each within `workers.connections`' timeouts, and every call's token is
    /// checked before its message is decoded (`worker::layers`).
    ///
    /// # Errors
    /// The transport failed.
    pub async fn serve(
        &self,
        server: tonic::transport::Server,
        listener: tokio::net::TcpListener,
        slots: Slots,
        stop: CancellationToken,
    ) -> Result<(), tonic::transport::Error> {
        let served = stop.child_token();
        let expiry = tokio::spawn({
            let (gateway, served) = (self.clone(), served.clone());
            async move { gateway.expire_until(served).await }
        });
        let limits = &self.0.config.connections;
        let listener =
            GuardedListener::new(listener, slots, limits.into(), self.0.tokens.is_empty());
        let outcome = server
            .layer(TrackLayer)
            .layer(PreAuthLayer(self.0.tokens.clone()))
            .add_service(self.service())
            .serve_with_incoming_shutdown(Gateway::incoming(listener), stop.cancelled_owned())
            .await;
        served.cancel();
        let _ = expiry.await;
        outcome
    }

    /// The connections `listener` accepts within its cap.
    fn incoming(
        listener: GuardedListener<tokio::net::TcpListener>,
    ) -> impl tokio_stream::Stream<Item = std::io::Result<Guarded<tokio::net::TcpStream>>> {
        futures::stream::unfold(listener, |mut listener| async move {
            let (io, _) = listener.accept_guarded().await;
            Some((Ok(io), listener))
        })
    }

    /// The gRPC service to serve.
    fn service(&self) -> worker_server::WorkerServer<Gateway> {
        worker_server::WorkerServer::new(self.clone())
            .max_decoding_message_size(64 << 20)
            .max_encoding_message_size(64 << 20)
    }

    /// Ends expired leases and forgotten workers until `stop` fires, every quarter of a
    /// heartbeat interval.
    async fn expire_until(&self, stop: CancellationToken) {
        let mut every = tokio::time::interval(self.0.config.heartbeat / 4);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                () = stop.cancelled() => return,
                _ = every.tick() => self.expire(),
            }
        }
    }

    fn expire(&self) {
        let mut state = self.lock();
        let lost = state.book.expire(now());
        if lost.is_empty() {
            return;
        }
        deliver_lost(&mut state, lost);
        self.tell_capacities(&mut state);
        drop(state);
        self.0.work.notify_waiters();
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // Every update of the state is whole before the lock is let go.
        self.0
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Tells the engine each pool's slots that changed.
    fn tell_capacities(&self, state: &mut State) {
        let Some(pools) = self.0.pools.get() else {
            return;
        };
        let now = state.book.capacities();
        for (pool, slots) in &now {
            if state.told.get(pool) != Some(slots) {
                pools.set(pool.clone(), *slots);
            }
        }
        for pool in state.told.keys().filter(|p| !now.contains_key(*p)) {
            pools.set(pool.clone(), 0);
        }
        state.told = now;
    }

    fn submit(
        &self,
        pool: Arc<str>,
        attempt: proto::Attempt,
        span: tracing::Span,
        placement: Placement,
    ) -> oneshot::Receiver<ComponentResult> {
        let (tx, rx) = oneshot::channel();
        let id: Arc<str> = attempt.attempt_id.as_str().into();
        let mut state = self.lock();
        state.book.submit(id.clone(), pool);
        let pending = Pending {
            attempt,
            outcome: Some(tx),
            span,
            placement,
        };
        state.pending.insert(id, pending);
        drop(state);
        self.0.work.notify_waiters();
        rx
    }

    /// The engine cancels an attempt: `true` when no worker had it (it is gone).
    fn cancel(&self, id: &str) -> bool {
        let mut state = self.lock();
        match state.book.cancel(id) {
            Cancelled::Waiting => {
                state.pending.remove(id);
                true
            }
            Cancelled::Leased(_) | Cancelled::Unknown => false,
        }
    }

    /// The engine no longer waits for an attempt.
    fn withdraw(&self, id: &str) {
        let mut state = self.lock();
        state.book.withdraw(id);
        state.pending.remove(id);
    }

    fn draining(&self, worker: &str) -> bool {
        self.lock().book.is_draining(worker)
    }

    /// Takes in a call: its worker id well-formed, and its token that worker's.
    fn admit<T: FromWorker>(&self, request: Request<T>) -> Result<T, Status> {
        let worker = request.get_ref().worker_id();
        name_ok("worker_id", worker)?;
        self.caller(&request, worker)?;
        Ok(request.into_inner())
    }

    /// The worker a call may speak for: the one its token names (`None`: no tokens).
    fn caller<T>(&self, request: &Request<T>, worker: &str) -> Result<(), Status> {
        if self.0.tokens.is_empty() {
            return Ok(());
        }
        let token = request
            .metadata()
            .get("authorization")
            .and_then(|v| bearer(v.as_bytes()))
            .ok_or_else(|| Status::unauthenticated("a bearer token is required"))?;
        let owner = self
            .0
            .tokens
            .owner(token)
            .ok_or_else(|| Status::unauthenticated("unknown token"))?;
        if &**owner != worker {
            return Err(Status::permission_denied(format!(
                "this token speaks for worker `{owner}`, not `{worker}`"
            )));
        }
        Ok(())
    }

    fn lease_ms(&self) -> u32 {
        u32::try_from(self.0.config.lease.as_millis()).unwrap_or(u32::MAX)
    }

    /// Hands out leases to `worker`: the attempts, with their fences, and the worker's
    /// id on their spans and told to their runs.
    fn lease_to(&self, worker: &str, free: u32) -> Result<Vec<proto::Attempt>, Status> {
        let mut state = self.lock();
        let leases = state.book.poll(worker, free, now()).map_err(out_of_order)?;
        if leases.is_empty() {
            return Ok(Vec::new());
        }
        let lease_ms = self.lease_ms();
        let worker_id: Arc<str> = worker.into();
        let mut attempts = Vec::with_capacity(leases.len());
        for lease in leases {
            let Some(pending) = state.pending.get(&lease.attempt) else {
                continue; // withdrawn under the same lock: cannot happen, but never sent
            };
            pending.span.record_worker(worker, lease.fence);
            pending.placement.placed(&worker_id);
            let mut attempt = pending.attempt.clone();
            attempt.fence = lease.fence;
            attempt.heartbeat_timeout_ms = lease_ms;
            attempts.push(attempt);
        }
        Ok(attempts)
    }

    /// Accepts (or not) a completion; an accepted one is handed to its attempt and
    /// answered once the engine has stored the attempt's end.
    async fn complete(&self, call: proto::CompleteRequest) -> Result<proto::Verdict, Status> {
        let outcome = outcome_of(call.outcome)?;
        let stored = {
            let mut state = self.lock();
            let verdict = state
                .book
                .complete(&call.attempt_id, call.fence, Some(&call.worker_id));
            match verdict {
                Verdict::Stale => return Ok(proto::Verdict::Stale),
                Verdict::Repeated => state
                    .storing
                    .get(&*call.attempt_id)
                    .map(watch::Sender::subscribe),
                Verdict::Accepted { worker } => {
                    let Some(mut pending) = state.pending.remove(&*call.attempt_id) else {
                        return Ok(proto::Verdict::Stale);
                    };
                    pending.span.completed_by(&worker, &outcome);
                    let (tx, rx) = watch::channel(false);
                    state.storing.insert(call.attempt_id.as_str().into(), tx);
                    if let Some(to) = pending.outcome.take() {
                        // The attempt's future is gone only when it was withdrawn, which
                        // takes it out of the book first.
                        let _ = to.send(outcome);
                    }
                    Some(rx)
                }
            }
        };
        if let Some(mut stored) = stored {
            let waited = tokio::time::timeout(STORE_WAIT, stored.wait_for(|s| *s)).await;
            if !matches!(waited, Ok(Ok(_))) {
                return Err(Status::unavailable(
                    "the engine has not stored the attempt's end yet: send the completion again",
                ));
            }
        }
        Ok(proto::Verdict::Ack)
    }
}

/// Fails lost attempts with a retryable `CrashError` naming their worker.
fn deliver_lost(state: &mut State, lost: Vec<Lost>) {
    for l in lost {
        if let Some(mut pending) = state.pending.remove(&l.attempt) {
            pending.span.lost(&l.reason);
            if let Some(to) = pending.outcome.take() {
                let _ = to.send(Err(ComponentError::lost_with_worker(l.reason)));
            }
        }
    }
}

impl RemoteHost for Gateway {
    fn component(&self, node: &Node, queue: &str) -> Arc<dyn Component> {
        Arc::new(RemoteComponent {
            gateway: self.clone(),
            pool: remote_pool(&node.component_id, queue),
            component_id: node.component_id.to_string(),
            stream_id: node.stream_id.clone().unwrap_or_default(),
            join: node.join.as_str(),
            attempt_timeout: node.attempt_timeout,
            process: (&*node.component_id == PROCESS_COMPONENT)
                .then(|| self.0.process.get().cloned())
                .flatten(),
        })
    }

    fn stored(&self, attempt_id: &str) {
        let waiting = self.lock().storing.remove(attempt_id);
        if let Some(tx) = waiting {
            tx.send_replace(true);
        }
    }
}

/// Metadata every remote component shares: what it declares is the workers' to know.
static REMOTE_META: std::sync::LazyLock<ComponentMeta> = std::sync::LazyLock::new(|| {
    ComponentMeta::new("remote", "runs on a remote worker")
        .runner(crate::runtime::definition::RunnerKindDef::Remote)
});

/// A component run by a worker: submits the attempt to the coordinator and waits for
/// its outcome.
#[derive(Debug)]
struct RemoteComponent {
    gateway: Gateway,
    pool: Arc<str>,
    component_id: String,
    stream_id: String,
    join: &'static str,
    /// The node's per-attempt timeout: the attempt's deadline, counted from its start.
    attempt_timeout: Option<Duration>,
    /// The policy its command must keep to (`core.process` on a restricted coordinator).
    process: Option<Arc<ProcessPolicy>>,
}

impl RemoteComponent {
    fn attempt(&self, ctx: &ExecutionContext) -> proto::Attempt {
        let json = |v: &JsonObject| serde_json::to_string(v).unwrap_or_else(|_| "{}".into());
        proto::Attempt {
            attempt_id: ctx.attempt_id().into(),
            fence: 0,
            run_id: ctx.run_id.to_string(),
            node_ref: ctx.node_ref.to_string(),
            component_id: self.component_id.clone(),
            attempt: ctx.attempt,
            params_json: json(&ctx.params),
            inputs_json: json(&ctx.inputs),
            metadata: Some(proto::AttemptMetadata {
                stream_id: self.stream_id.clone(),
                join_strategy: self.join.to_owned(),
                triggered_by: ctx.triggered_by.iter().map(|r| r.to_string()).collect(),
                failure_json: ctx
                    .failure
                    .as_ref()
                    .and_then(|f| serde_json::to_string(&**f).ok())
                    .unwrap_or_default(),
            }),
            deadline_unix_ms: self.attempt_timeout.map_or(0, |timeout| {
                let deadline = std::time::SystemTime::now() + timeout;
                deadline
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
            }),
            heartbeat_timeout_ms: 0,
            traceparent: traceparent_of(&tracing::Span::current()).unwrap_or_default(),
        }
    }
}

impl Component for RemoteComponent {
    fn meta(&self) -> &ComponentMeta {
        &REMOTE_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        if let Some(refused) = self
            .process
            .as_ref()
            .and_then(|p| check_policy(p, &ctx).err())
        {
            return futures::future::ready(Err(refused)).boxed();
        }
        let attempt = self.attempt(&ctx);
        let id = attempt.attempt_id.clone();
        let gateway = self.gateway.clone();
        let span = tracing::Span::current();
        let mut outcome = gateway.submit(self.pool.clone(), attempt, span, ctx.placement.clone());
        async move {
            // However the attempt ends here (an outcome, or dropped by its node), it
            // leaves the book: a worker still running it hears that it is stale.
            let _withdraw = Withdraw(gateway.clone(), id.clone());
            tokio::select! {
                biased;
                got = &mut outcome => return got.unwrap_or_else(|_| Err(dropped())),
                () = ctx.cancel.cancelled() => {}
            }
            if gateway.cancel(&id) {
                return Err(ComponentError::fatal(
                    CANCELLED_ERROR,
                    "the attempt was cancelled before a worker took it",
                ));
            }
            // A worker has it: it hears of the cancellation in its next heartbeat, and
            // its answer (or the node's grace running out) ends the attempt.
            outcome.await.unwrap_or_else(|_| Err(dropped()))
        }
        .boxed()
    }
}

fn dropped() -> ComponentError {
    ComponentError::retryable(CRASH_ERROR, "the coordinator dropped the attempt")
}

struct Withdraw(Gateway, String);

impl Drop for Withdraw {
    fn drop(&mut self) {
        self.0.withdraw(&self.1);
    }
}

/// What the attempt's span records of its worker.
trait AttemptSpan {
    fn record_worker(&self, worker: &str, fence: u64);
    fn completed_by(&self, worker: &str, outcome: &ComponentResult);
    fn lost(&self, reason: &str);
}

impl AttemptSpan for tracing::Span {
    fn record_worker(&self, worker: &str, fence: u64) {
        use tracing_opentelemetry::OpenTelemetrySpanExt;
        self.set_attribute(WORKER_ID, worker.to_owned());
        self.in_scope(|| {
            tracing::info!(target: "shipsec::worker", worker_id = worker, fence, "leased");
        });
    }

    fn completed_by(&self, worker: &str, outcome: &ComponentResult) {
        let ok = outcome.is_ok();
        self.in_scope(|| {
            tracing::info!(target: "shipsec::worker", worker_id = worker, ok, "completed");
        });
    }

    fn lost(&self, reason: &str) {
        self.in_scope(|| tracing::warn!(target: "shipsec::worker", %reason, "lost"));
    }
}

/// The attempt span's attribute naming its worker.
pub const WORKER_ID: &str = "shipsec.worker.id";

fn now() -> Time {
    Time::from_system_time(std::time::SystemTime::now())
}

fn out_of_order(e: UnknownWorker) -> Status {
    Status::failed_precondition(e.to_string())
}

fn name_ok(field: &str, value: &str) -> Result<(), Status> {
    if value.is_empty() || value.len() > MAX_NAME {
        return Err(Status::invalid_argument(format!(
            "{field}: must be 1 to {MAX_NAME} bytes, got {}",
            value.len()
        )));
    }
    Ok(())
}

/// A completion's outcome as the engine's, its JSON checked.
fn outcome_of(outcome: Option<Outcome>) -> Result<ComponentResult, Status> {
    match outcome {
        None => Err(Status::invalid_argument(
            "outcome: a completion carries a success or a failure",
        )),
        Some(Outcome::Success(s)) => {
            let output: JsonObject = serde_json::from_str(&s.output_json).map_err(|e| {
                Status::invalid_argument(format!("success.output_json: not a JSON object: {e}"))
            })?;
            if !s.routes && !s.active_ports.is_empty() {
                return Err(Status::invalid_argument(
                    "success.active_ports: given without `routes`",
                ));
            }
            let ports = s.routes.then_some(s.active_ports);
            Ok(Ok(ComponentOutput {
                output,
                active_ports: ports,
            }))
        }
        Some(Outcome::Failure(f)) => {
            if f.r#type.is_empty() {
                return Err(Status::invalid_argument("failure.type: must not be empty"));
            }
            Ok(Err(ComponentError {
                error_type: f.r#type,
                message: f.message,
                retryable: f.retryable,
                lost: false,
            }))
        }
    }
}

#[tonic::async_trait]
impl worker_server::Worker for Gateway {
    async fn register(
        &self,
        request: Request<proto::RegisterRequest>,
    ) -> Result<Response<proto::RegisterResponse>, Status> {
        let call = self.admit(request)?;
        let spec = spec_of(&call)?;
        let mut state = self.lock();
        let lost = state
            .book
            .register(call.worker_id.as_str().into(), spec, now());
        deliver_lost(&mut state, lost);
        self.tell_capacities(&mut state);
        drop(state);
        tracing::info!(target: "shipsec::worker", worker_id = %call.worker_id, sdk = %call.sdk, slots = call.slots, "worker registered");
        Ok(Response::new(proto::RegisterResponse {
            protocol_version: PROTOCOL_VERSION,
            heartbeat_interval_ms: u32::try_from(self.0.config.heartbeat.as_millis())
                .unwrap_or(u32::MAX),
            lease_ms: self.lease_ms(),
        }))
    }

    async fn poll_attempts(
        &self,
        request: Request<proto::PollRequest>,
    ) -> Result<Response<proto::PollResponse>, Status> {
        let call = self.admit(request)?;
        let wait = Duration::from_millis(u64::from(call.wait_ms))
            .min(MAX_POLL_WAIT)
            .min(self.0.config.lease / 2);
        let deadline = tokio::time::Instant::now() + wait;
        loop {
            // Registered before looking, so that a submission in between wakes it.
            let woken = self.0.work.notified();
            let attempts = self.lease_to(&call.worker_id, call.free_slots)?;
            let answered =
                !attempts.is_empty() || call.free_slots == 0 || self.draining(&call.worker_id);
            if answered || tokio::time::timeout_at(deadline, woken).await.is_err() {
                return Ok(Response::new(proto::PollResponse { attempts }));
            }
        }
    }

    async fn heartbeat(
        &self,
        request: Request<proto::HeartbeatRequest>,
    ) -> Result<Response<proto::HeartbeatResponse>, Status> {
        let call = self.admit(request)?;
        let held: Vec<(Arc<str>, u64)> = call
            .attempts
            .iter()
            .map(|a| (Arc::from(a.attempt_id.as_str()), a.fence))
            .collect();
        let mut state = self.lock();
        let beat = state
            .book
            .heartbeat(&call.worker_id, &held, now())
            .map_err(out_of_order)?;
        for a in &call.attempts {
            if let Some(pending) = state.pending.get(a.attempt_id.as_str()) {
                report_progress(&pending.span, &call.worker_id, a);
            }
        }
        drop(state);
        let strings = |v: Vec<Arc<str>>| v.iter().map(|s| s.to_string()).collect();
        Ok(Response::new(proto::HeartbeatResponse {
            cancel: strings(beat.cancel),
            stale: strings(beat.stale),
            lease_until_unix_ms: i64::try_from(beat.until.as_micros() / 1_000).unwrap_or(i64::MAX),
        }))
    }

    async fn complete(
        &self,
        request: Request<proto::CompleteRequest>,
    ) -> Result<Response<proto::CompleteResponse>, Status> {
        name_ok("attempt_id", &request.get_ref().attempt_id)?;
        let call = self.admit(request)?;
        let verdict = Gateway::complete(self, call).await?;
        Ok(Response::new(proto::CompleteResponse {
            verdict: verdict as i32,
        }))
    }

    async fn drain(
        &self,
        request: Request<proto::DrainRequest>,
    ) -> Result<Response<proto::DrainResponse>, Status> {
        let call = self.admit(request)?;
        let mut state = self.lock();
        let held = state
            .book
            .drain(&call.worker_id, now())
            .map_err(out_of_order)?;
        self.tell_capacities(&mut state);
        drop(state);
        // Its waiting poll answers now, empty.
        self.0.work.notify_waiters();
        tracing::info!(target: "shipsec::worker", worker_id = %call.worker_id, held, "worker draining");
        Ok(Response::new(proto::DrainResponse { held }))
    }
}

/// What a registration asks for, checked: the protocol version, slots, and the pools of
/// its components and queues.
fn spec_of(call: &proto::RegisterRequest) -> Result<WorkerSpec, Status> {
    if call.protocol_version != PROTOCOL_VERSION {
        return Err(Status::failed_precondition(format!(
            "protocol version {} is not spoken here (this coordinator speaks {PROTOCOL_VERSION})",
            call.protocol_version
        )));
    }
    if call.slots == 0 || call.slots > MAX_SLOTS {
        return Err(Status::invalid_argument(format!(
            "slots: must be 1 to {MAX_SLOTS}, got {}",
            call.slots
        )));
    }
    if call.components.is_empty() {
        return Err(Status::invalid_argument(
            "components: a worker hosts at least one",
        ));
    }
    let default = [crate::runtime::components::registry::DEFAULT_QUEUE.to_owned()];
    let queues = if call.queues.is_empty() {
        &default[..]
    } else {
        &call.queues
    };
    let mut pools = Vec::new();
    for c in &call.components {
        name_ok("components[].id", &c.id)?;
        for q in queues {
            name_ok("queues[]", q)?;
            pools.push(remote_pool(&c.id, q));
        }
    }
    Ok(WorkerSpec {
        pools,
        slots: call.slots,
    })
}

/// A call that names the worker it comes from.
trait FromWorker {
    fn worker_id(&self) -> &str;
}

macro_rules! from_worker {
    ($($request:ty),*) => {
        $(impl FromWorker for $request {
            fn worker_id(&self) -> &str {
                &self.worker_id
            }
        })*
    };
}

from_worker!(
    proto::RegisterRequest,
    proto::PollRequest,
    proto::HeartbeatRequest,
    proto::CompleteRequest,
    proto::DrainRequest
);

/// A heartbeat's progress and log lines, on the attempt's span.
fn report_progress(span: &tracing::Span, worker: &str, progress: &proto::AttemptProgress) {
    span.in_scope(|| {
        if !progress.progress.is_empty() {
            tracing::info!(target: "shipsec::worker", worker_id = worker, progress = %progress.progress, "progress");
        }
        for line in &progress.logs {
            match line.level.as_str() {
                "error" => tracing::error!(target: "shipsec::component", worker_id = worker, "{}", line.message),
                "warn" => tracing::warn!(target: "shipsec::component", worker_id = worker, "{}", line.message),
                _ => tracing::info!(target: "shipsec::component", worker_id = worker, "{}", line.message),
            }
        }
    });
}
