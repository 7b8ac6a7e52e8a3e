//! Attempt ids, `<run>/<node ref>/<attempt>`: made and taken apart here only.
//!
//! The id of attempt `n` of a node is the same wherever and however often the attempt
//! runs (a re-run after a restart included), so a component can use it as an idempotency
//! key with the systems it calls (`ExecutionContext::attempt_id`, `SHIPSEC_ATTEMPT_ID`).
//! On the wire and in the journal it is its text.

use std::fmt;

/// The id of one attempt of one node of one run.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AttemptId {
    /// `<run>/<node ref>/<attempt>`.
    text: String,
    /// Where `/<attempt>` starts in `text`.
    node_end: usize,
    attempt: u32,
}

impl AttemptId {
    /// Attempt `attempt` of node `node_ref` in run `run_id`.
    pub fn new(run_id: &str, node_ref: &str, attempt: u32) -> AttemptId {
        let text = format!("{run_id}/{node_ref}/{attempt}");
        AttemptId {
            node_end: run_id.len() + 1 + node_ref.len(),
            text,
            attempt,
        }
    }

    /// An id read back from its text; `None` for text that is not one (no `/`, or no
    /// attempt number after the last).
    pub fn parse(text: &str) -> Option<AttemptId> {
        let (node, attempt) = text.rsplit_once('/')?;
        if attempt.is_empty() || !attempt.bytes().all(|b| b.is_ascii_digit()) {
            return None;
        }
        Some(AttemptId {
            attempt: attempt.parse().ok()?,
            node_end: node.len(),
            text: text.to_owned(),
        })
    }

    /// The id's text.
    pub fn as_str(&self) -> &str {
        &self.text
    }

    /// The node's part, `<run>/<node ref>`: the same for every attempt of the node.
    pub fn node_key(&self) -> &str {
        &self.text[..self.node_end]
    }

    /// The attempt's number (1 for the first).
    pub fn attempt(&self) -> u32 {
        self.attempt
    }
}

impl fmt::Display for AttemptId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.text)
    }
}

impl From<AttemptId> for String {
    fn from(id: AttemptId) -> String {
        id.text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_id_reads_back_as_it_was_made() {
        let id = AttemptId::new("run-1", "scan.ports", 3);
        assert_eq!(id.as_str(), "run-1/scan.ports/3");
        assert_eq!(AttemptId::parse(id.as_str()), Some(id.clone()));
        assert_eq!(id.node_key(), "run-1/scan.ports");
        assert_eq!(id.attempt(), 3);
    }

    #[test]
    fn the_attempt_is_after_the_last_slash_and_must_be_a_number() {
        let id = AttemptId::parse("a/b/c/12").unwrap();
        assert_eq!((id.node_key(), id.attempt()), ("a/b/c", 12));
        for bad in [
            "",
            "run",
            "run/node/",
            "run/node/x",
            "run/node/+1",
            "run/node/-1",
        ] {
            assert_eq!(AttemptId::parse(bad), None, "{bad}");
        }
    }
}
