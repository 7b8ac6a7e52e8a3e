//! Ids the engine derives from what caused them, never drawn at random: a replay, a
//! resume or a second coordinator that meets the same cause gets the same id, so it never
//! starts the same thing twice. They are name-based UUIDs (RFC 9562, version 5), one
//! namespace per kind, so a backend that stores them in a `uuid` column can.

use uuid::Uuid;

/// The namespace of input requests' ids.
const INPUT_REQUESTS: Uuid = Uuid::from_u128(0x6f1c_2a8e_4d3b_5c7a_9e21_0b4f_8d6a_3c15);

/// The id of the input request of attempt `attempt` of node `node_ref` in run `run_id`:
/// the same across resumes, distinct per attempt.
pub fn input_request_id(run_id: &str, node_ref: &str, attempt: u32) -> String {
    // Lengths first, so no two (run, node) pairs make the same name.
    let name = format!(
        "{}:{run_id}{}:{node_ref}{attempt}",
        run_id.len(),
        node_ref.len()
    );
    Uuid::new_v5(&INPUT_REQUESTS, name.as_bytes()).to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_request_id_depends_on_its_run_node_and_attempt_only() {
        let id = input_request_id("run-1", "gate", 1);
        assert_eq!(id, input_request_id("run-1", "gate", 1));
        assert_eq!(Uuid::parse_str(&id).map(|u| u.get_version_num()), Ok(5));
        let others = [
            input_request_id("run-1", "gate", 2),
            input_request_id("run-2", "gate", 1),
            input_request_id("run-1", "gate2", 1),
            // The same characters split differently between run and node.
            input_request_id("run-1g", "ate", 1),
        ];
        for other in others {
            assert_ne!(id, other);
        }
    }
}
