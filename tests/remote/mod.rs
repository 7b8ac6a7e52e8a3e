//! An engine whose remote attempts go to in-process workers over real gRPC: the
//! coordinator (the gateway, served by tonic on 127.0.0.1) and `worker::client` workers
//! hosting the built-ins. Shared by `tests/remote_property.rs`, `tests/chaos.rs` (whose
//! workers are a chaos fleet) and `benches/remote.rs`.

// Each includer uses part of it.
#![allow(dead_code)]

use std::sync::Arc;

use shipsec_orchestrator::actors::faults::{Faults, NoFaults};
use shipsec_orchestrator::net::guard::Slots;
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::worker::client::{Worker, WorkerOptions};
use shipsec_orchestrator::worker::gateway::{Gateway, WorkerTokens};
use shipsec_orchestrator::{EngineConfig, Handle, Orchestrator};
use tokio_util::sync::CancellationToken;

/// Starts the engine with `config` (its `workers` timing, its components configured
/// remote) and its coordinator, served on 127.0.0.1 until `stop` fires; the
/// coordinator's address.
pub async fn start_coordinator(
    config: EngineConfig,
    stop: &CancellationToken,
) -> (Handle, std::net::SocketAddr) {
    start_coordinator_with(config, stop, Arc::new(NoFaults)).await
}

/// As [`start_coordinator`], its engine's actors calling `faults`.
#[allow(dead_code)] // not every test binary that includes this module strikes faults
pub async fn start_coordinator_with(
    config: EngineConfig,
    stop: &CancellationToken,
    faults: Arc<dyn Faults>,
) -> (Handle, std::net::SocketAddr) {
    let gateway = Gateway::new(config.workers.clone(), WorkerTokens::default());
    let mut registry = ComponentRegistry::with_builtins();
    registry.set_remote(Arc::new(gateway.clone()), config.remote_components());
    let handle = Orchestrator::start_with_faults(config, registry, faults)
        .await
        .expect("the orchestrator starts");
    gateway.attach(handle.remote_pools());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
        .await
        .expect("bind");
    let addr = listener.local_addr().expect("address");
    tokio::spawn({
        let stop = stop.clone();
        async move {
            let server = tonic::transport::Server::builder();
            gateway
                .serve(server, listener, Slots::new(1_024), stop)
                .await
        }
    });
    (handle, addr)
}

/// [`start_coordinator`], and `workers` workers of `slots` slots hosting the built-ins
/// matching `components`, all registered; they serve until `stop` fires.
pub async fn start(
    config: EngineConfig,
    workers: usize,
    slots: u32,
    components: &str,
    stop: &CancellationToken,
) -> Handle {
    let (handle, addr) = start_coordinator(config, stop).await;
    let builtins = ComponentRegistry::with_builtins();
    for i in 0..workers {
        let options = WorkerOptions::new(format!("http://{addr}"), format!("worker-{i}"), slots);
        let worker = Worker::new(options, &builtins, components).expect("a worker");
        let registered = worker.register().await.expect("registered");
        tokio::spawn(registered.serve(stop.clone()));
    }
    handle
}
