//! The per-node join state machine (docs/semantics.md §2).
//!
//! A [`JoinState`] counts satisfied and dead incoming edges as they resolve and answers,
//! once, whether the node runs or is skipped. Edges are fenced by index: a second
//! resolution of the same edge, or any resolution after the decision, is ignored and
//! reported as such (it is still traced). No I/O, no clocks.

use crate::runtime::definition::graph::{EdgeIx, Join};
use crate::runtime::semantics::edge::Resolution;

/// What the node should do after an edge resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum JoinDecision {
    /// Not decided yet.
    Wait,
    /// Run now. `triggered_by` holds the edges that made the decision for
    /// `any`/`first`/`quorum` (empty for `all`).
    Run {
        /// Edges that decided, in arrival order.
        triggered_by: Vec<EdgeIx>,
    },
    /// Never run: `dead_edge` is the edge whose death decided it.
    Skip {
        /// The deciding dead edge.
        dead_edge: EdgeIx,
    },
    /// The edge was already resolved, or the decision was already made: nothing changes.
    Ignored,
}

/// Join progress of one node.
#[derive(Debug, Clone)]
pub struct JoinState {
    join: Join,
    /// Incoming edges, sorted, for fencing by binary search.
    incoming: Vec<EdgeIx>,
    seen: Vec<bool>,
    satisfied: u32,
    dead: u32,
    decided: bool,
    triggered_by: Vec<EdgeIx>,
}

impl JoinState {
    /// A join over the node's incoming edges.
    pub fn new(join: Join, incoming: &[EdgeIx]) -> JoinState {
        let mut incoming = incoming.to_vec();
        incoming.sort_unstable();
        JoinState {
            join,
            seen: vec![false; incoming.len()],
            incoming,
            satisfied: 0,
            dead: 0,
            decided: false,
            triggered_by: Vec::new(),
        }
    }

    /// For a node with no incoming edges: it runs at once.
    #[cfg(test)]
    pub fn initial(&mut self) -> JoinDecision {
        if self.incoming.is_empty() && !self.decided {
            self.decided = true;
            JoinDecision::Run {
                triggered_by: Vec::new(),
            }
        } else {
            JoinDecision::Wait
        }
    }

    /// Whether the decision has been made.
    pub fn is_decided(&self) -> bool {
        self.decided
    }

    /// Records the resolution of `edge` and answers what to do.
    pub fn on_edge(&mut self, edge: EdgeIx, resolution: Resolution) -> JoinDecision {
        let Ok(pos) = self.incoming.binary_search(&edge) else {
            return JoinDecision::Ignored;
        };
        if std::mem::replace(&mut self.seen[pos], true) || self.decided {
            return JoinDecision::Ignored;
        }
        match resolution {
            Resolution::Satisfied => {
                self.satisfied += 1;
                if !matches!(self.join, Join::All) {
                    self.triggered_by.push(edge);
                }
            }
            Resolution::Dead => self.dead += 1,
        }
        let decision = self.decide(edge);
        if !matches!(decision, JoinDecision::Wait) {
            self.decided = true;
        }
        decision
    }

    fn decide(&mut self, edge: EdgeIx) -> JoinDecision {
        let k = self.incoming.len() as u32;
        let (s, d) = (self.satisfied, self.dead);
        let (run, skip) = match self.join {
            Join::All => (s == k, d >= 1),
            Join::Any | Join::First => (s >= 1, d == k),
            Join::Quorum(n) => (s >= n, d > k.saturating_sub(n)),
        };
        if run {
            let mut triggered_by = std::mem::take(&mut self.triggered_by);
            if matches!(self.join, Join::Any | Join::First) {
                triggered_by.truncate(1);
            }
            JoinDecision::Run { triggered_by }
        } else if skip {
            JoinDecision::Skip { dead_edge: edge }
        } else {
            JoinDecision::Wait
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use Resolution::{Dead, Satisfied};

    fn edges(n: u32) -> Vec<EdgeIx> {
        (0..n).map(EdgeIx).collect()
    }

    fn run(ixs: &[u32]) -> JoinDecision {
        JoinDecision::Run {
            triggered_by: ixs.iter().copied().map(EdgeIx).collect(),
        }
    }

    #[test]
    fn node_without_parents_runs_at_once() {
        let mut j = JoinState::new(Join::All, &[]);
        assert_eq!(j.initial(), run(&[]));
        assert_eq!(j.initial(), JoinDecision::Wait);
    }

    #[test]
    fn all_runs_when_every_edge_is_satisfied() {
        let mut j = JoinState::new(Join::All, &edges(3));
        assert_eq!(j.initial(), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(2), Satisfied), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(0), Satisfied), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(1), Satisfied), run(&[]));
    }

    #[test]
    fn all_is_skipped_at_the_first_dead_edge() {
        let mut j = JoinState::new(Join::All, &edges(3));
        assert_eq!(j.on_edge(EdgeIx(0), Satisfied), JoinDecision::Wait);
        assert_eq!(
            j.on_edge(EdgeIx(1), Dead),
            JoinDecision::Skip {
                dead_edge: EdgeIx(1)
            }
        );
        assert_eq!(j.on_edge(EdgeIx(2), Satisfied), JoinDecision::Ignored);
    }

    #[test]
    fn any_runs_on_first_success_and_ignores_later_failure() {
        let mut j = JoinState::new(Join::Any, &edges(3));
        assert_eq!(j.on_edge(EdgeIx(1), Dead), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(2), Satisfied), run(&[2]));
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Ignored);
    }

    #[test]
    fn any_is_skipped_when_every_edge_is_dead() {
        let mut j = JoinState::new(Join::Any, &edges(2));
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Wait);
        assert_eq!(
            j.on_edge(EdgeIx(1), Dead),
            JoinDecision::Skip {
                dead_edge: EdgeIx(1)
            }
        );
    }

    #[test]
    fn first_behaves_like_any_for_the_decision() {
        let mut j = JoinState::new(Join::First, &edges(2));
        assert_eq!(j.on_edge(EdgeIx(1), Satisfied), run(&[1]));
        let mut j = JoinState::new(Join::First, &edges(2));
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Wait);
        assert_eq!(
            j.on_edge(EdgeIx(1), Dead),
            JoinDecision::Skip {
                dead_edge: EdgeIx(1)
            }
        );
    }

    #[test]
    fn quorum_runs_when_n_edges_are_satisfied() {
        let mut j = JoinState::new(Join::Quorum(2), &edges(4));
        assert_eq!(j.on_edge(EdgeIx(3), Satisfied), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(1), Satisfied), run(&[3, 1]));
    }

    #[test]
    fn quorum_is_skipped_when_it_becomes_impossible() {
        let mut j = JoinState::new(Join::Quorum(3), &edges(4));
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Wait);
        assert_eq!(
            j.on_edge(EdgeIx(1), Dead),
            JoinDecision::Skip {
                dead_edge: EdgeIx(1)
            }
        );
    }

    #[test]
    fn quorum_of_all_edges_is_skipped_at_the_first_dead_edge() {
        let mut j = JoinState::new(Join::Quorum(2), &edges(2));
        assert_eq!(
            j.on_edge(EdgeIx(0), Dead),
            JoinDecision::Skip {
                dead_edge: EdgeIx(0)
            }
        );
    }

    #[test]
    fn a_second_resolution_of_the_same_edge_is_ignored() {
        let mut j = JoinState::new(Join::All, &edges(2));
        assert_eq!(j.on_edge(EdgeIx(0), Satisfied), JoinDecision::Wait);
        assert_eq!(j.on_edge(EdgeIx(0), Satisfied), JoinDecision::Ignored);
        assert_eq!(j.on_edge(EdgeIx(0), Dead), JoinDecision::Ignored);
        assert_eq!(j.on_edge(EdgeIx(1), Satisfied), run(&[]));
    }

    #[test]
    fn an_edge_that_is_not_incoming_is_ignored() {
        let mut j = JoinState::new(Join::All, &[EdgeIx(4)]);
        assert_eq!(j.on_edge(EdgeIx(5), Satisfied), JoinDecision::Ignored);
        assert_eq!(j.on_edge(EdgeIx(4), Satisfied), run(&[]));
    }
}
