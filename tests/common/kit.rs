//! The test components the suites share. `test.held` holds each attempt until the test
//! releases it (one attempt at a time, or all at once), so a run stays active exactly as
//! long as the test says, whatever the machine's speed; a cancelled attempt ends at once.

use std::sync::{Arc, LazyLock};

use futures::FutureExt;
use futures::future::BoxFuture;
use shipsec_orchestrator::runtime::components::builtin::CANCELLED_ERROR;
use shipsec_orchestrator::{
    Component, ComponentError, ComponentMeta, ComponentOutput, ComponentResult, ExecutionContext,
};
use tokio::sync::Semaphore;

static HELD_META: LazyLock<ComponentMeta> =
    LazyLock::new(|| ComponentMeta::new("test.held", "runs until released or cancelled"));

/// `test.held`: each attempt waits for a permit of its [`Release`], then echoes its
/// inputs; cancelled first, it fails with `CancelledError`.
#[derive(Debug)]
pub struct Held(Arc<Semaphore>);

/// Lets `test.held` attempts go.
#[derive(Debug, Clone)]
pub struct Release(Arc<Semaphore>);

impl Held {
    /// The component, to register, and what releases its attempts.
    pub fn new() -> (Arc<Held>, Release) {
        let permits = Arc::new(Semaphore::new(0));
        (Arc::new(Held(permits.clone())), Release(permits))
    }
}

impl Release {
    /// Lets `n` attempts go, waiting or still to come.
    pub fn let_go(&self, n: usize) {
        self.0.add_permits(n);
    }

    /// Lets every attempt go, now and from now on.
    pub fn open(&self) {
        self.0.add_permits(Semaphore::MAX_PERMITS / 2);
    }
}

impl Component for Held {
    fn meta(&self) -> &ComponentMeta {
        &HELD_META
    }

    fn execute(&self, ctx: ExecutionContext) -> BoxFuture<'static, ComponentResult> {
        let permits = self.0.clone();
        async move {
            tokio::select! {
                permit = permits.acquire() => {
                    permit.expect("the semaphore is never closed").forget();
                    Ok(ComponentOutput::new((*ctx.inputs).clone()))
                }
                () = ctx.cancel.cancelled() => {
                    Err(ComponentError::fatal(CANCELLED_ERROR, "held, then cancelled"))
                }
            }
        }
        .boxed()
    }
}
