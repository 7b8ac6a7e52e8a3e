//! Edge resolution (docs/semantics.md §1): when a source ends, each outgoing edge becomes
//! satisfied or dead. A pure function of the edge and the source's ending.

use crate::runtime::definition::graph::{Edge, EdgeKind};
use crate::runtime::semantics::outcome::Terminal;

/// What an edge resolved to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Resolution {
    /// The edge counts towards running its target.
    Satisfied,
    /// The edge can never be satisfied.
    Dead,
}

/// The port a `success` edge leaves from when it names none.
pub const DEFAULT_PORT: &str = "default";

/// Resolves `edge` for a source that ended as `terminal`, with the ports it activated
/// (`None`: the source did not route, every port is active).
pub fn resolve(edge: &Edge, terminal: Terminal, active_ports: Option<&[String]>) -> Resolution {
    use Resolution::{Dead, Satisfied};
    match (terminal, edge.kind) {
        (Terminal::Completed, EdgeKind::Success) => {
            let port = edge.source_handle.as_deref().unwrap_or(DEFAULT_PORT);
            match active_ports {
                Some(ports) if !ports.iter().any(|p| p == port) => Dead,
                _ => Satisfied,
            }
        }
        (Terminal::Completed, EdgeKind::Error) => Dead,
        (Terminal::Completed, EdgeKind::Always) => Satisfied,
        (Terminal::Failed, EdgeKind::Success) => Dead,
        (Terminal::Failed, EdgeKind::Error | EdgeKind::Always) => Satisfied,
        (Terminal::Skipped, EdgeKind::Always) => Satisfied,
        (Terminal::Skipped, EdgeKind::Success | EdgeKind::Error) => Dead,
        (Terminal::Cancelled, _) => Dead,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::runtime::definition::graph::NodeIx;
    use Resolution::{Dead, Satisfied};

    fn edge(kind: EdgeKind, handle: Option<&str>) -> Edge {
        Edge {
            id: "a->b".into(),
            source: NodeIx(0),
            target: NodeIx(1),
            source_handle: handle.map(str::to_owned),
            target_handle: None,
            kind,
        }
    }

    #[test]
    fn the_resolution_table_holds_row_by_row() {
        let rows = [
            (Terminal::Completed, [Satisfied, Dead, Satisfied]),
            (Terminal::Failed, [Dead, Satisfied, Satisfied]),
            (Terminal::Skipped, [Dead, Dead, Satisfied]),
            (Terminal::Cancelled, [Dead, Dead, Dead]),
        ];
        for (terminal, expected) in rows {
            for (kind, want) in [EdgeKind::Success, EdgeKind::Error, EdgeKind::Always]
                .into_iter()
                .zip(expected)
            {
                assert_eq!(
                    resolve(&edge(kind, None), terminal, None),
                    want,
                    "{terminal:?} {kind:?}"
                );
            }
        }
    }

    #[test]
    fn success_edge_on_inactive_port_is_dead() {
        let ports = vec!["yes".to_owned()];
        assert_eq!(
            resolve(
                &edge(EdgeKind::Success, Some("yes")),
                Terminal::Completed,
                Some(&ports)
            ),
            Satisfied
        );
        assert_eq!(
            resolve(
                &edge(EdgeKind::Success, Some("no")),
                Terminal::Completed,
                Some(&ports)
            ),
            Dead
        );
    }

    #[test]
    fn success_edge_without_handle_follows_the_default_port() {
        let only_default = vec![DEFAULT_PORT.to_owned()];
        let other = vec!["x".to_owned()];
        assert_eq!(
            resolve(
                &edge(EdgeKind::Success, None),
                Terminal::Completed,
                Some(&only_default)
            ),
            Satisfied
        );
        assert_eq!(
            resolve(
                &edge(EdgeKind::Success, None),
                Terminal::Completed,
                Some(&other)
            ),
            Dead
        );
    }

    #[test]
    fn always_edge_ignores_active_ports() {
        let none: Vec<String> = Vec::new();
        assert_eq!(
            resolve(
                &edge(EdgeKind::Always, Some("x")),
                Terminal::Completed,
                Some(&none)
            ),
            Satisfied
        );
    }
}
