//! Rendering a validated [`Graph`] as a Mermaid flowchart (`shipsec graph`).
//!
//! Nodes show their ref, component and join strategy; edges show their kind (success
//! solid, error dotted and labelled, always thick) and source handle. Output only: the
//! text is meant for people and documentation, never parsed back.

use std::fmt::Write;

use crate::runtime::definition::graph::{EdgeKind, Graph, Join};

/// The Mermaid `flowchart TD` text of a graph.
pub fn render(graph: &Graph) -> String {
    let mut out = String::from("flowchart TD\n");
    for (i, node) in graph.nodes.iter().enumerate() {
        let join = match node.join {
            Join::All => String::new(),
            Join::Quorum(n) => format!("<br/>join: quorum {n}"),
            other => format!("<br/>join: {}", other.as_str()),
        };
        let label = escape(node.label.as_deref().unwrap_or(&node.node_ref));
        let _ = writeln!(
            out,
            "  n{i}[\"{label}<br/><small>{}</small>{join}\"]",
            escape(&node.component_id)
        );
    }
    for edge in &graph.edges {
        let (s, t) = (edge.source.0, edge.target.0);
        let mut text = Vec::new();
        if edge.kind != EdgeKind::Success {
            text.push(edge.kind.as_str().to_owned());
        }
        if let Some(h) = &edge.source_handle {
            text.push(h.clone());
        }
        let arrow = match edge.kind {
            EdgeKind::Success => "-->",
            EdgeKind::Error => "-.->",
            EdgeKind::Always => "==>",
        };
        if text.is_empty() {
            let _ = writeln!(out, "  n{s} {arrow} n{t}");
        } else {
            let _ = writeln!(out, "  n{s} {arrow}|\"{}\"| n{t}", escape(&text.join(": ")));
        }
    }
    out
}

/// Mermaid labels are quoted; quotes and angle brackets become entities.
fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('"', "&quot;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}
