//! The journal's records: plain types of their own, encoded with bincode, each value
//! framed as `[format version: u8][xxh3-64 of the payload: u64 LE][payload]`.
//!
//! JSON travels as JSON text inside them (bincode cannot decode `serde_json::Value`), and
//! no type here uses internally tagged enums or skipped fields, which bincode encodes
//! and then fails to decode. A value written by a newer format version is refused with
//! [`RecordError::NewerFormat`]; a value whose checksum does not match is refused with
//! [`RecordError::Corrupt`]: a record is either read back whole or not at all.

use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use std::sync::Arc;

use crate::runtime::semantics::gate::InputRequest;
use crate::runtime::semantics::metadata::Metadata;

/// The format version this build writes, and the newest it reads. Version 2 added the
/// run's metadata to [`AcceptedRecord`]; a version 1 header reads with none
/// ([`decode_header`]); facts are the same in both.
pub const FORMAT_VERSION: u8 = 2;

/// Bytes before a record's payload: its version and checksum.
const FRAME: usize = 1 + 8;

/// Why a stored value cannot be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordError {
    /// Written by a newer build.
    #[error(
        "written by journal format version {found}; this build reads versions up to {FORMAT_VERSION}: upgrade shipsec to open it"
    )]
    NewerFormat {
        /// The version found.
        found: u8,
    },
    /// Truncated, or its checksum does not match.
    #[error("corrupt record: {0}")]
    Corrupt(String),
}

/// What a run was accepted with: enough to rebuild its plan.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct AcceptedRecord {
    /// Run id.
    pub run_id: String,
    /// The definition, as JSON text (shared with the workflow it was submitted from:
    /// written once per workflow, not once per run).
    pub definition: Arc<str>,
    /// xxh3-64 of `definition`.
    pub definition_hash: u64,
    /// The run's inputs, as JSON text.
    pub inputs: String,
    /// The submission's idempotency key.
    pub idempotency_key: Option<String>,
    /// W3C `traceparent` of the caller's trace.
    pub traceparent: Option<String>,
    /// When it was accepted, µs since the epoch.
    pub accepted_at: u64,
    /// Nodes in the definition.
    pub nodes: u32,
    /// The run's metadata, as JSON text (an object of strings).
    pub metadata: String,
}

/// A version 1 header (before run metadata), as it was written.
#[derive(Deserialize)]
struct RunHeaderV1 {
    accepted: AcceptedRecordV1,
    finished: Option<FinishedRecord>,
}

#[derive(Deserialize)]
struct AcceptedRecordV1 {
    run_id: String,
    definition: Arc<str>,
    definition_hash: u64,
    inputs: String,
    idempotency_key: Option<String>,
    traceparent: Option<String>,
    accepted_at: u64,
    nodes: u32,
}

/// Decodes a framed run header of any version this build reads.
///
/// # Errors
/// As [`decode`].
pub fn decode_header(bytes: &[u8]) -> Result<RunHeader, RecordError> {
    if bytes.first() != Some(&1) {
        return decode(bytes);
    }
    let old: RunHeaderV1 = decode(bytes)?;
    let a = old.accepted;
    Ok(RunHeader {
        accepted: AcceptedRecord {
            run_id: a.run_id,
            definition: a.definition,
            definition_hash: a.definition_hash,
            inputs: a.inputs,
            idempotency_key: a.idempotency_key,
            traceparent: a.traceparent,
            accepted_at: a.accepted_at,
            nodes: a.nodes,
            metadata: "{}".into(),
        },
        finished: old.finished,
        requests: String::new(),
        signals: String::new(),
    })
}

/// How a run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FinishedRecord {
    /// Its status (`COMPLETED`, `FAILED`, ...).
    pub status: String,
    /// When, µs since the epoch.
    pub finished_at: u64,
}

/// A run's header: one per run, rewritten when it ends.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct RunHeader {
    /// How it was accepted.
    pub accepted: AcceptedRecord,
    /// How it ended, once it has.
    pub finished: Option<FinishedRecord>,
    /// Once it has ended, its gates' input requests as they ended (JSON text of a list of
    /// `InputRequest`; empty when it had none), so that they are known after a restart
    /// without replaying the run.
    pub requests: String,
    /// Once it has ended, the ids of the signals it took (JSON text of a list of strings;
    /// empty when none), so that a repeat is known as one after a restart.
    pub signals: String,
}

/// A failure, as an attempt's end or a retry records it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ErrorRecord {
    /// Error type.
    pub error_type: String,
    /// Message.
    pub message: String,
    /// Whether it may be retried.
    pub retryable: bool,
}

/// The failure a handler node handles.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct HandledRecord {
    /// Ref of the node that failed.
    pub at: String,
    /// Its error type.
    pub name: String,
    /// Its message.
    pub message: String,
}

/// An attempt queued or started: what its start report says that the cores cannot
/// recompute (the inputs and the handled failure are recomputed from the parents).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StartRecord {
    /// The node.
    pub node: u32,
    /// The attempt.
    pub attempt: u32,
    /// Whether it withdraws from its other parents (a `first` join that just fired).
    pub withdraw: bool,
    /// When its first attempt began, µs since the epoch.
    pub first_started: u64,
    /// The edges that decided its join, in the order they arrived.
    pub triggered_by: Vec<u32>,
}

/// One fact of a run, in the order its supervisor applied them.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum FactKind {
    /// The run began.
    Started,
    /// An attempt waits for slots.
    Queued(StartRecord),
    /// An attempt started; its attempt id is `<run>/<node ref>/<attempt>`.
    AttemptStarted(StartRecord),
    /// An attempt failed; the next follows after `delay_micros` (the backoff timer).
    Retrying {
        /// The node.
        node: u32,
        /// The failed attempt.
        attempt: u32,
        /// Backoff, µs.
        delay_micros: u64,
        /// Its failure.
        error: ErrorRecord,
    },
    /// The node completed: its output and the ports it activated.
    Completed {
        /// The node.
        node: u32,
        /// Attempts made.
        attempts: u32,
        /// Its output, as JSON text.
        output: String,
        /// Ports activated (`None`: every port).
        active_ports: Option<Vec<String>>,
    },
    /// The node failed.
    Failed {
        /// The node.
        node: u32,
        /// Attempts made.
        attempts: u32,
        /// The failure.
        error: ErrorRecord,
    },
    /// The node was skipped (its end is recomputed from its parents').
    Skipped {
        /// The node.
        node: u32,
    },
    /// The node was cancelled.
    Cancelled {
        /// The node.
        node: u32,
        /// Attempts made.
        attempts: u32,
        /// Why.
        reason: String,
        /// The failure it was to handle.
        handled: Option<HandledRecord>,
    },
    /// A node actor died without reporting its end.
    NodeDied {
        /// The node.
        node: u32,
        /// Which of its actors.
        generation: u32,
        /// Why.
        cause: String,
    },
    /// Cancel (`false`) or terminate (`true`) was requested.
    StopRequested {
        /// Terminate rather than cancel.
        terminate: bool,
    },
    /// The run deadline was hit.
    DeadlineHit,
    /// The grace period of a stop ran out.
    GraceOver,
    /// The engine restarted and resumed the run.
    Resumed,
    /// The run ended.
    Finished(FinishedRecord),
    /// A remote worker took an attempt. (New variants go last: a record names its
    /// variant by position, and older journals must still read.)
    Placed {
        /// The node.
        node: u32,
        /// The attempt.
        attempt: u32,
        /// The worker's id.
        worker: String,
    },
    /// An attempt asked a person for input: the node waits on request `request_id`.
    InputRequested {
        /// The node.
        node: u32,
        /// The attempt.
        attempt: u32,
        /// The request's id.
        request_id: String,
        /// What it asks (the checked marker), as JSON text.
        input: String,
        /// When it expires, µs since the epoch (`None`: never).
        deadline_micros: Option<u64>,
    },
    /// The deadline of a gate's input request came.
    InputDeadline {
        /// The gate.
        node: u32,
        /// Its attempt.
        attempt: u32,
    },
    /// A person answered an input request (applied, a duplicate or refused: the replay
    /// decides again, the same way).
    InputResolved {
        /// The request.
        request_id: String,
        /// The answer, as JSON text.
        resolution: String,
    },
    /// A signal came to the run's inbox (delivered, kept, unhandled, a duplicate or
    /// refused: the replay decides again, the same way).
    SignalReceived {
        /// Its id (the sender's, or `sig-<n>`).
        signal_id: String,
        /// Its name.
        name: String,
        /// Its payload, as JSON text.
        payload: String,
    },
}

/// A fact and when it was applied.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Fact {
    /// µs since the epoch.
    pub at: u64,
    /// What.
    pub kind: FactKind,
}

/// Encodes `record` as a framed value.
pub fn encode<T: Serialize>(record: &T) -> Vec<u8> {
    let mut out = vec![0u8; FRAME];
    // The payload is written in place after the frame. Encoding into a Vec cannot fail:
    // these types have no map keys or unsized parts bincode could refuse.
    bincode::serde::encode_into_std_write(record, &mut out, bincode::config::standard())
        .expect("journal records always encode");
    let sum = xxhash_rust::xxh3::xxh3_64(&out[FRAME..]);
    out[0] = FORMAT_VERSION;
    out[1..FRAME].copy_from_slice(&sum.to_le_bytes());
    out
}

/// Decodes a framed value.
///
/// # Errors
/// [`RecordError::NewerFormat`] for a value of a newer format, [`RecordError::Corrupt`]
/// for one that is truncated, fails its checksum or does not decode.
pub fn decode<T: for<'de> Deserialize<'de>>(bytes: &[u8]) -> Result<T, RecordError> {
    if bytes.len() < FRAME {
        return Err(RecordError::Corrupt(format!(
            "{} bytes, shorter than a record's frame",
            bytes.len()
        )));
    }
    let version = bytes[0];
    if version > FORMAT_VERSION {
        return Err(RecordError::NewerFormat { found: version });
    }
    if version == 0 {
        return Err(RecordError::Corrupt("format version 0".into()));
    }
    let mut sum = [0u8; 8];
    sum.copy_from_slice(&bytes[1..FRAME]);
    let payload = &bytes[FRAME..];
    if u64::from_le_bytes(sum) != xxhash_rust::xxh3::xxh3_64(payload) {
        return Err(RecordError::Corrupt("checksum mismatch".into()));
    }
    let (value, read) = bincode::serde::decode_from_slice(payload, bincode::config::standard())
        .map_err(|e| RecordError::Corrupt(e.to_string()))?;
    if read != payload.len() {
        return Err(RecordError::Corrupt(format!(
            "{} trailing bytes",
            payload.len() - read
        )));
    }
    Ok(value)
}

/// The xxh3-64 of a definition's JSON text, as [`AcceptedRecord::definition_hash`].
pub fn definition_hash(definition: &str) -> u64 {
    xxhash_rust::xxh3::xxh3_64(definition.as_bytes())
}

impl RunHeader {
    /// Keeps an ended run's gates' requests and the ids of the signals it took (each
    /// list's JSON text; empty when it has none).
    pub fn keep_settled<'a>(
        &mut self,
        requests: impl Iterator<Item = &'a InputRequest>,
        signals: impl Iterator<Item = &'a Arc<str>>,
    ) {
        self.requests = list_text(requests.collect());
        self.signals = list_text(signals.map(|id| &**id).collect());
    }
}

/// `items` as JSON text; empty when there are none.
fn list_text<T: Serialize>(items: Vec<T>) -> String {
    if items.is_empty() {
        return String::new();
    }
    // Strings, numbers and JSON values only: a list always serialises.
    serde_json::to_string(&items).expect("journal lists serialise")
}

/// A list [`RunHeader::keep_settled`] wrote; empty when there is none (or it does not
/// read: the engine wrote it, and a listing is not worth refusing the journal for).
pub fn list_of<T: DeserializeOwned>(text: &str) -> Vec<T> {
    serde_json::from_str(text).unwrap_or_default()
}

impl AcceptedRecord {
    /// The run's metadata (none if its text does not read).
    pub fn metadata(&self) -> Metadata {
        serde_json::from_str(&self.metadata).unwrap_or_default()
    }

    /// Its idempotency key, bound to its [`submission_fingerprint`].
    pub fn idempotency(&self) -> Option<(String, u64)> {
        let key = self.idempotency_key.clone()?;
        Some((key, submission_fingerprint(&self.definition, &self.inputs)))
    }
}

/// What an idempotency key is bound to: the submission's definition and inputs (both as
/// JSON text, the form the journal stores), so a reused key with another body is told
/// apart from a retry.
pub fn submission_fingerprint(definition: &str, inputs: &str) -> u64 {
    let mut hasher = xxhash_rust::xxh3::Xxh3::new();
    hasher.update(&(definition.len() as u64).to_le_bytes());
    hasher.update(definition.as_bytes());
    hasher.update(inputs.as_bytes());
    hasher.digest()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fact() -> Fact {
        Fact {
            at: 42,
            kind: FactKind::Completed {
                node: 3,
                attempts: 2,
                output: r#"{"v":1}"#.into(),
                active_ports: Some(vec!["a".into()]),
            },
        }
    }

    #[test]
    fn a_record_round_trips() {
        let bytes = encode(&fact());
        assert_eq!(bytes[0], FORMAT_VERSION);
        assert_eq!(decode::<Fact>(&bytes).unwrap(), fact());
    }

    #[test]
    fn every_flipped_bit_and_every_truncation_is_refused() {
        let bytes = encode(&fact());
        for i in 0..bytes.len() * 8 {
            let mut bad = bytes.clone();
            bad[i / 8] ^= 1 << (i % 8);
            assert!(decode::<Fact>(&bad).is_err(), "bit {i} flipped was read");
        }
        for len in 0..bytes.len() {
            assert!(
                decode::<Fact>(&bytes[..len]).is_err(),
                "{len} bytes were read"
            );
        }
    }

    #[test]
    fn a_newer_format_is_refused_by_name() {
        let mut bytes = encode(&fact());
        bytes[0] = FORMAT_VERSION + 1;
        let err = decode::<Fact>(&bytes).unwrap_err();
        assert_eq!(
            err,
            RecordError::NewerFormat {
                found: FORMAT_VERSION + 1
            }
        );
        assert!(err.to_string().contains("upgrade"), "{err}");
    }

    #[test]
    fn a_version_1_header_reads_with_no_metadata() {
        #[derive(Serialize)]
        struct V1 {
            accepted: (
                String,
                String,
                u64,
                String,
                Option<String>,
                Option<String>,
                u64,
                u32,
            ),
            finished: Option<FinishedRecord>,
        }
        let old = V1 {
            accepted: ("r".into(), "{}".into(), 7, "{}".into(), None, None, 42, 3),
            finished: None,
        };
        let mut bytes = encode(&old);
        bytes[0] = 1;
        let header = decode_header(&bytes).expect("a version 1 header reads");
        assert_eq!(header.accepted.run_id, "r");
        assert_eq!(header.accepted.nodes, 3);
        assert_eq!(header.accepted.metadata, "{}");
        let mut new = header.clone();
        new.accepted.metadata = r#"{"org":"acme"}"#.into();
        let written = encode(&new);
        assert_eq!(written[0], FORMAT_VERSION);
        assert_eq!(decode_header(&written).expect("reads"), new);
    }
}
