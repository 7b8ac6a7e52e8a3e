//! The worker protocol, `shipsec.worker.v1` (`proto/shipsec/worker/v1/worker.proto`):
//! how workers on other hosts, in Rust or TypeScript, execute attempts for a coordinator.
//! A worker registers the components it hosts, long-polls for attempts within its free
//! slots, heartbeats what it holds, and completes each attempt with the fence it was
//! given; a completion with an old fence is `Stale`, never counted.
//!
//! [`proto`] is the generated code (messages, `worker_client`, `worker_server`), built
//! from the .proto file by `build.rs` with protox: no `protoc` is needed.

pub mod client;
pub mod gateway;
pub mod layers;
pub mod lease;

/// Messages and services generated from `worker.proto`.
#[allow(clippy::all, clippy::pedantic, missing_docs)]
pub mod proto {
    tonic::include_proto!("shipsec.worker.v1");
}

/// The protocol version this build speaks (`RegisterRequest.protocol_version`).
pub const PROTOCOL_VERSION: u32 = 1;

#[cfg(test)]
mod tests {
    use prost::Message;

    use super::proto::{self, complete_request::Outcome};

    #[test]
    fn a_completion_reads_back_as_it_was_written() {
        let sent = proto::CompleteRequest {
            attempt_id: "run-1/scan/2".into(),
            worker_id: "w1".into(),
            fence: 7,
            outcome: Some(Outcome::Failure(proto::Failure {
                r#type: "NetworkError".into(),
                message: "connection reset".into(),
                retryable: true,
                details_json: r#"{"host":"10.0.0.1"}"#.into(),
            })),
        };
        let read = proto::CompleteRequest::decode(sent.encode_to_vec().as_slice()).unwrap();
        assert_eq!(read, sent);
        // An old reader sees unknown fields as absent: an empty message is all defaults.
        let empty = proto::CompleteRequest::decode(&[][..]).unwrap();
        assert_eq!((empty.fence, empty.outcome), (0, None));
    }

    #[test]
    fn the_verdicts_keep_their_wire_numbers() {
        assert_eq!(proto::Verdict::Ack as i32, 1);
        assert_eq!(proto::Verdict::Stale as i32, 2);
        assert_eq!(proto::Verdict::try_from(2), Ok(proto::Verdict::Stale));
        assert_eq!(
            proto::Verdict::from_str_name("STALE"),
            Some(proto::Verdict::Stale)
        );
    }

    #[test]
    fn the_service_answers_at_its_grpc_paths() {
        use super::proto::worker_server::WorkerServer;
        assert_eq!(
            <WorkerServer<()> as tonic::server::NamedService>::NAME,
            "shipsec.worker.v1.Worker"
        );
    }
}
