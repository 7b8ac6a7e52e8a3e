//! Withdrawal for races (docs/semantics.md §5).
//!
//! Each node counts the distinct dependents still interested in it. When a `first` node
//! fires it withdraws from its parents that have not ended; a node whose every dependent
//! has withdrawn is no longer needed and must be cancelled, after which it withdraws from
//! its own unfinished parents in turn ([`Interest::withdraw`] is called again for it).
//! Sinks are never withdrawn from. Pure: the caller says which nodes have ended.

use std::collections::HashSet;

use crate::runtime::definition::graph::{Graph, NodeIx};

/// Interest counts of one run.
#[derive(Debug, Clone)]
pub struct Interest {
    remaining: Vec<u32>,
    withdrawn: HashSet<(NodeIx, NodeIx)>,
}

impl Interest {
    /// Every node starts with one unit of interest per distinct dependent.
    pub fn new(graph: &Graph) -> Interest {
        let remaining = graph
            .nodes
            .iter()
            .map(|n| {
                let mut children: Vec<NodeIx> =
                    n.outgoing.iter().map(|e| graph.edge(*e).target).collect();
                children.sort_unstable();
                children.dedup();
                children.len() as u32
            })
            .collect();
        Interest {
            remaining,
            withdrawn: HashSet::new(),
        }
    }

    /// Dependents of `node` still interested in it.
    #[cfg(test)]
    pub fn remaining(&self, node: NodeIx) -> u32 {
        self.remaining[node.ix()]
    }

    /// `child` withdraws from each of its parents for which `ended` is false. Returns the
    /// parents no longer needed by anyone, in the order of `child`'s incoming edges.
    /// Withdrawing twice from the same parent changes nothing.
    pub fn withdraw(
        &mut self,
        graph: &Graph,
        child: NodeIx,
        ended: impl Fn(NodeIx) -> bool,
    ) -> Vec<NodeIx> {
        let mut unneeded = Vec::new();
        for e in &graph.node(child).incoming {
            let parent = graph.edge(*e).source;
            if ended(parent) || !self.withdrawn.insert((parent, child)) {
                continue;
            }
            let left = &mut self.remaining[parent.ix()];
            *left = left.saturating_sub(1);
            if *left == 0 {
                unneeded.push(parent);
            }
        }
        unneeded
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::components::registry::ComponentRegistry;
    use crate::runtime::definition::WorkflowDefinition;
    use crate::runtime::definition::validate::validate;

    /// Builds a graph of `core.echo` nodes from `a>b` edge strings.
    fn graph(nodes: &[&str], edges: &[&str]) -> Graph {
        let actions: Vec<_> = nodes
            .iter()
            .map(|r| serde_json::json!({"ref": r, "componentId": "core.echo"}))
            .collect();
        let edges: Vec<_> = edges
            .iter()
            .map(|e| {
                let (s, t) = e.split_once('>').unwrap();
                serde_json::json!({"sourceRef": s, "targetRef": t})
            })
            .collect();
        let def: WorkflowDefinition = serde_json::from_value(
            serde_json::json!({"title": "t", "actions": actions, "edges": edges}),
        )
        .unwrap();
        validate(&def, &ComponentRegistry::with_builtins()).unwrap()
    }

    #[test]
    fn a_parent_with_one_dependent_is_unneeded_once_it_withdraws() {
        let g = graph(&["a", "b", "w"], &["a>w", "b>w"]);
        let mut i = Interest::new(&g);
        let w = g.find("w").unwrap();
        let a = g.find("a").unwrap();
        let b = g.find("b").unwrap();
        // w fired on a (a ended): only b is withdrawn from.
        let unneeded = i.withdraw(&g, w, |n| n == a);
        assert_eq!(unneeded, vec![b]);
    }

    #[test]
    fn a_parent_another_node_still_needs_stays() {
        let g = graph(&["a", "b", "w", "c"], &["a>w", "b>w", "b>c"]);
        let mut i = Interest::new(&g);
        let (w, b) = (g.find("w").unwrap(), g.find("b").unwrap());
        assert!(i.withdraw(&g, w, |_| false).contains(&g.find("a").unwrap()));
        assert_eq!(i.remaining(b), 1);
    }

    #[test]
    fn withdrawal_cascades_through_unneeded_parents() {
        let g = graph(&["r", "p", "x", "w"], &["r>p", "p>w", "x>w"]);
        let mut i = Interest::new(&g);
        let (w, p, r) = (
            g.find("w").unwrap(),
            g.find("p").unwrap(),
            g.find("r").unwrap(),
        );
        let x = g.find("x").unwrap();
        assert_eq!(i.withdraw(&g, w, |n| n == x), vec![p]);
        // p, now cancelled, withdraws in turn.
        assert_eq!(i.withdraw(&g, p, |_| false), vec![r]);
    }

    #[test]
    fn two_edges_from_the_same_parent_count_as_one_dependent() {
        let g = graph(&["a", "w"], &["a>w", "a>w"]);
        let mut i = Interest::new(&g);
        let (a, w) = (g.find("a").unwrap(), g.find("w").unwrap());
        assert_eq!(i.remaining(a), 1);
        assert_eq!(i.withdraw(&g, w, |_| false), vec![a]);
        assert!(i.withdraw(&g, w, |_| false).is_empty());
    }
}
