//! The engine's book of input requests across runs: what `GET /v1/inputs` lists, and where
//! an answer addressed by request id alone goes.
//!
//! A run's core owns its requests and decides every answer while the run is live; it tells
//! the engine how each request is now whenever one is made or leaves `pending`
//! ([`RequestBook::update`]). Once the run has ended, the book answers for it: the same
//! answer again is a duplicate, anything else is refused as the run core would have
//! refused it ([`RequestBook::route`]). A run that ends with requests still pending (its
//! supervisor died) has them cancelled here ([`RequestBook::cancel_run`]), so no request
//! outlives its run. Pure: no clock, no I/O.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use crate::runtime::semantics::gate::{
    InputRequest, RequestStatus, Resolution, ResolveError, Resolved,
};
use crate::runtime::semantics::metadata::{self, Metadata};

/// Which requests a listing wants.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct InputQuery {
    /// Only requests in this status.
    pub status: Option<RequestStatus>,
    /// Only requests of this run.
    pub run_id: Option<String>,
    /// Only requests of runs whose metadata has this key set to this value.
    pub metadata: Option<(String, String)>,
    /// Most requests in the page (at least 1).
    pub limit: usize,
    /// Requests older than this position (a page's [`InputPage::next`]).
    pub before: Option<u64>,
}

/// One request as the book holds it: the run it belongs to and its state now.
#[derive(Debug, Clone, PartialEq)]
pub struct Filed {
    /// Its run.
    pub run_id: Arc<str>,
    /// Its run's metadata.
    pub metadata: Arc<Metadata>,
    /// The request as its run last told.
    pub request: Arc<InputRequest>,
}

/// A page of requests, newest first.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct InputPage {
    /// The requests.
    pub requests: Vec<Filed>,
    /// Where the next page starts, when there is one.
    pub next: Option<u64>,
}

/// Where an answer to a request goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    /// No run known to the engine made this request.
    Unknown,
    /// Its run is live: the run's core decides.
    Live(Arc<str>),
    /// Its run has ended: this is the answer.
    Decided(Result<Resolved, ResolveError>),
}

/// The requests of the runs the engine knows, by id and in the order they were made.
#[derive(Debug, Default)]
pub struct RequestBook {
    by_id: HashMap<Arc<str>, (u64, Filed)>,
    /// Request ids by order made (the listing's order).
    order: BTreeMap<u64, Arc<str>>,
    /// Each run's request ids.
    by_run: HashMap<Arc<str>, Vec<Arc<str>>>,
    next: u64,
}

impl RequestBook {
    /// An empty book.
    pub fn new() -> RequestBook {
        RequestBook::default()
    }

    /// Run `run_id` told how one of its requests is now (made, or no longer pending).
    pub fn update(&mut self, run_id: &str, metadata: &Arc<Metadata>, request: Arc<InputRequest>) {
        let id: Arc<str> = Arc::from(request.request_id.as_str());
        if let Some((_, filed)) = self.by_id.get_mut(&id) {
            filed.request = request;
            return;
        }
        let run_id: Arc<str> = Arc::from(run_id);
        self.next += 1;
        self.order.insert(self.next, id.clone());
        self.by_run
            .entry(run_id.clone())
            .or_default()
            .push(id.clone());
        let metadata = metadata.clone();
        let filed = Filed {
            run_id,
            metadata,
            request,
        };
        self.by_id.insert(id, (self.next, filed));
    }

    /// The request `request_id`, when its run is known.
    pub fn get(&self, request_id: &str) -> Option<&Filed> {
        self.by_id.get(request_id).map(|(_, filed)| filed)
    }

    /// Whether run `run_id` has a request still pending.
    pub fn waits(&self, run_id: &str) -> bool {
        self.of_run(run_id)
            .any(|f| f.request.status == RequestStatus::Pending)
    }

    fn of_run<'a>(&'a self, run_id: &str) -> impl Iterator<Item = &'a Filed> + 'a {
        self.by_run
            .get(run_id)
            .into_iter()
            .flatten()
            .filter_map(|id| self.get(id))
    }

    /// Where an answer to `request_id` goes; `live` says whether a run is live.
    pub fn route(
        &self,
        request_id: &str,
        resolution: &Resolution,
        live: impl Fn(&str) -> bool,
    ) -> Route {
        let Some(filed) = self.get(request_id) else {
            return Route::Unknown;
        };
        if live(&filed.run_id) {
            return Route::Live(filed.run_id.clone());
        }
        // The run has ended: its requests are settled, so answering again changes nothing.
        Route::Decided(filed.request.verdict_after_end(resolution))
    }

    /// Run `run_id` ended without settling its requests (its supervisor died): those
    /// still pending are cancelled.
    pub fn cancel_run(&mut self, run_id: &str) {
        let Some(ids) = self.by_run.get(run_id) else {
            return;
        };
        for id in ids {
            if let Some((_, filed)) = self.by_id.get_mut(id)
                && filed.request.status == RequestStatus::Pending
            {
                let mut request = (*filed.request).clone();
                request.cancel();
                filed.request = Arc::new(request);
            }
        }
    }

    /// Forgets the requests of `run_id` (the engine let go of the run).
    pub fn forget_run(&mut self, run_id: &str) {
        for id in self.by_run.remove(run_id).unwrap_or_default() {
            if let Some((order, _)) = self.by_id.remove(&id) {
                self.order.remove(&order);
            }
        }
    }

    /// A page of the requests, newest first.
    pub fn list(&self, query: &InputQuery) -> InputPage {
        let limit = query.limit.max(1);
        let upper = query.before.unwrap_or(u64::MAX);
        let mut requests = Vec::new();
        let (mut next, mut last) = (None, 0);
        for (&order, id) in self.order.range(..upper).rev() {
            let Some((_, filed)) = self.by_id.get(id) else {
                continue;
            };
            let wanted = query.status.is_none_or(|s| filed.request.status == s)
                && query
                    .run_id
                    .as_deref()
                    .is_none_or(|run| *filed.run_id == *run)
                && metadata::matches(&filed.metadata, query.metadata.as_ref());
            if !wanted {
                continue;
            }
            if requests.len() == limit {
                next = Some(last);
                break;
            }
            requests.push(filed.clone());
            last = order;
        }
        InputPage { requests, next }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::semantics::gate::{InputType, PendingInput};
    use crate::runtime::semantics::time::Time;

    fn request(id: &str, status: RequestStatus) -> Arc<InputRequest> {
        let input = PendingInput {
            input_type: InputType::Approval,
            title: "Ship it?".into(),
            description: None,
            timeout_at: None,
            timeout: None,
            context_data: None,
            input_schema: None,
        };
        let mut r = InputRequest::new(id.into(), "gate".into(), 1, input, Time::ZERO, None);
        match status {
            RequestStatus::Pending => {}
            RequestStatus::Resolved => {
                r.resolve(approve(true), Time::ZERO).unwrap();
            }
            RequestStatus::Expired => assert!(r.expire()),
            RequestStatus::Cancelled => assert!(r.cancel()),
        }
        Arc::new(r)
    }

    fn approve(approved: bool) -> Resolution {
        Resolution {
            approved: Some(approved),
            ..Resolution::default()
        }
    }

    #[test]
    fn a_live_runs_requests_go_to_the_run() {
        let mut book = RequestBook::new();
        book.update("r1", &Arc::default(), request("q1", RequestStatus::Pending));
        assert!(book.waits("r1"));
        assert_eq!(
            book.route("q1", &approve(true), |_| true),
            Route::Live("r1".into())
        );
        assert_eq!(book.route("q9", &approve(true), |_| true), Route::Unknown);
        book.update(
            "r1",
            &Arc::default(),
            request("q1", RequestStatus::Resolved),
        );
        assert!(!book.waits("r1"));
    }

    #[test]
    fn an_ended_runs_requests_answer_for_themselves() {
        let mut book = RequestBook::new();
        book.update(
            "r1",
            &Arc::default(),
            request("q1", RequestStatus::Resolved),
        );
        book.update("r1", &Arc::default(), request("q2", RequestStatus::Expired));
        let ended = |_: &str| false;
        assert_eq!(
            book.route("q1", &approve(true), ended),
            Route::Decided(Ok(Resolved::Duplicate))
        );
        assert_eq!(
            book.route("q1", &approve(false), ended),
            Route::Decided(Err(ResolveError::AlreadyResolved("q1".into())))
        );
        assert_eq!(
            book.route("q2", &approve(true), ended),
            Route::Decided(Err(ResolveError::NotPending {
                request_id: "q2".into(),
                status: RequestStatus::Expired
            }))
        );
    }

    #[test]
    fn a_run_that_ends_unsettled_leaves_no_request_pending() {
        let mut book = RequestBook::new();
        book.update("r1", &Arc::default(), request("q1", RequestStatus::Pending));
        book.update("r2", &Arc::default(), request("q2", RequestStatus::Pending));
        book.cancel_run("r1");
        assert_eq!(
            book.get("q1").map(|f| f.request.status),
            Some(RequestStatus::Cancelled)
        );
        assert!(book.waits("r2"));
        book.forget_run("r1");
        assert!(book.get("q1").is_none());
        let all = book.list(&InputQuery {
            limit: 10,
            ..InputQuery::default()
        });
        assert_eq!(all.requests.len(), 1);
    }

    #[test]
    fn listings_page_newest_first_and_filter() {
        let mut book = RequestBook::new();
        for i in 0..5 {
            let status = if i % 2 == 0 {
                RequestStatus::Pending
            } else {
                RequestStatus::Resolved
            };
            let run = if i < 3 { "a" } else { "b" };
            book.update(run, &Arc::default(), request(&format!("q{i}"), status));
        }
        let ids = |page: &InputPage| {
            page.requests
                .iter()
                .map(|f| f.request.request_id.clone())
                .collect::<Vec<_>>()
        };
        let first = book.list(&InputQuery {
            limit: 2,
            ..InputQuery::default()
        });
        assert_eq!(ids(&first), ["q4", "q3"]);
        let second = book.list(&InputQuery {
            limit: 2,
            before: first.next,
            ..InputQuery::default()
        });
        assert_eq!(ids(&second), ["q2", "q1"]);
        let third = book.list(&InputQuery {
            limit: 2,
            before: second.next,
            ..InputQuery::default()
        });
        assert_eq!((ids(&third), third.next), (vec!["q0".to_owned()], None));
        let pending_of_a = book.list(&InputQuery {
            status: Some(RequestStatus::Pending),
            run_id: Some("a".into()),
            limit: 10,
            ..InputQuery::default()
        });
        assert_eq!(ids(&pending_of_a), ["q2", "q0"]);
    }
}
