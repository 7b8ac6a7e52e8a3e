//! The journal's records and files: encoding round trips (proptest), the committed golden
//! journal of format version 1 (it must keep decoding, and replay to the same run), and
//! damaged files — a torn tail (the file cut at every byte of its last batches) and
//! flipped bits — which open to a prefix of what was written or are refused, and never
//! yield a record that was not written.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use proptest::prelude::*;
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::JsonObject;
use shipsec_orchestrator::runtime::journal::record::{
    self, AcceptedRecord, ErrorRecord, Fact, FactKind, FinishedRecord, HandledRecord, RunHeader,
    StartRecord,
};
use shipsec_orchestrator::runtime::journal::replay;
use shipsec_orchestrator::runtime::journal::store::Op;
use shipsec_orchestrator::runtime::journal::{
    self as journal, Durability, FjallStore, Journal, JournalStore, MemoryStore,
};
use shipsec_orchestrator::runtime::semantics::plan::RunPlan;
use shipsec_orchestrator::{EngineConfig, Orchestrator, ShutdownMode, SubmitOptions};

// ---------------------------------------------------------------------------------------
// Round trips

fn text() -> impl Strategy<Value = String> {
    prop_oneof![
        Just(String::new()),
        "[a-z0-9 ]{0,12}",
        any::<String>(),
        Just("{\"k\":[1,2,{\"x\":null}],\"ü\":\"\\u0000\"}".to_owned()),
    ]
}

fn start() -> impl Strategy<Value = StartRecord> {
    (
        any::<u32>(),
        any::<u32>(),
        any::<bool>(),
        any::<u64>(),
        prop::collection::vec(any::<u32>(), 0..4),
    )
        .prop_map(
            |(node, attempt, withdraw, first_started, triggered_by)| StartRecord {
                node,
                attempt,
                withdraw,
                first_started,
                triggered_by,
            },
        )
}

fn error() -> impl Strategy<Value = ErrorRecord> {
    (text(), text(), any::<bool>()).prop_map(|(error_type, message, retryable)| ErrorRecord {
        error_type,
        message,
        retryable,
    })
}

fn finished() -> impl Strategy<Value = FinishedRecord> {
    (text(), any::<u64>()).prop_map(|(status, finished_at)| FinishedRecord {
        status,
        finished_at,
    })
}

fn kind() -> impl Strategy<Value = FactKind> {
    let handled = (text(), text(), text()).prop_map(|(at, name, message)| HandledRecord {
        at,
        name,
        message,
    });
    prop_oneof![
        Just(FactKind::Started),
        start().prop_map(FactKind::Queued),
        start().prop_map(FactKind::AttemptStarted),
        (any::<u32>(), any::<u32>(), any::<u64>(), error()).prop_map(
            |(node, attempt, delay_micros, error)| FactKind::Retrying {
                node,
                attempt,
                delay_micros,
                error,
            }
        ),
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            prop::option::of(prop::collection::vec(text(), 0..3))
        )
            .prop_map(
                |(node, attempts, output, active_ports)| FactKind::Completed {
                    node,
                    attempts,
                    output,
                    active_ports,
                }
            ),
        (any::<u32>(), any::<u32>(), error()).prop_map(|(node, attempts, error)| {
            FactKind::Failed {
                node,
                attempts,
                error,
            }
        }),
        any::<u32>().prop_map(|node| FactKind::Skipped { node }),
        (
            any::<u32>(),
            any::<u32>(),
            text(),
            prop::option::of(handled)
        )
            .prop_map(|(node, attempts, reason, handled)| FactKind::Cancelled {
                node,
                attempts,
                reason,
                handled,
            }),
        (any::<u32>(), any::<u32>(), text()).prop_map(|(node, generation, cause)| {
            FactKind::NodeDied {
                node,
                generation,
                cause,
            }
        }),
        any::<bool>().prop_map(|terminate| FactKind::StopRequested { terminate }),
        Just(FactKind::DeadlineHit),
        Just(FactKind::GraceOver),
        Just(FactKind::Resumed),
        finished().prop_map(FactKind::Finished),
    ]
}

fn header() -> impl Strategy<Value = RunHeader> {
    let accepted = (
        (text(), text(), any::<u64>(), text()),
        (
            prop::option::of(text()),
            prop::option::of(text()),
            any::<u64>(),
            any::<u32>(),
        ),
    )
        .prop_map(
            |(
                (run_id, definition, definition_hash, inputs),
                (idempotency_key, traceparent, accepted_at, nodes),
            )| AcceptedRecord {
                run_id,
                definition,
                definition_hash,
                inputs,
                idempotency_key,
                traceparent,
                accepted_at,
                nodes,
            },
        );
    (accepted, prop::option::of(finished()))
        .prop_map(|(accepted, finished)| RunHeader { accepted, finished })
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2_000))]

    #[test]
    fn every_fact_round_trips(at in any::<u64>(), kind in kind()) {
        let fact = Fact { at, kind };
        let bytes = record::encode(&fact);
        prop_assert_eq!(record::decode::<Fact>(&bytes), Ok(fact));
    }

    #[test]
    fn every_header_round_trips(header in header()) {
        let bytes = record::encode(&header);
        prop_assert_eq!(record::decode::<RunHeader>(&bytes), Ok(header));
    }

    #[test]
    fn a_damaged_fact_is_refused(at in any::<u64>(), kind in kind(), bit in any::<prop::sample::Index>()) {
        let mut bytes = record::encode(&Fact { at, kind });
        let bit = bit.index(bytes.len() * 8);
        bytes[bit / 8] ^= 1 << (bit % 8);
        prop_assert!(record::decode::<Fact>(&bytes).is_err());
    }
}

// ---------------------------------------------------------------------------------------
// The golden journal of format version 1

/// The golden journal: a run's header, then its facts, each `[u32 LE length][record]`,
/// written by format version 1 (`SHIPSEC_BLESS=1` writes it again, which a change of
/// format must never need).
const GOLDEN: &str = "tests/golden/journal-v1.records";

fn golden_path() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join(GOLDEN)
}

fn frames(bytes: &[u8]) -> Vec<&[u8]> {
    let mut out = Vec::new();
    let mut rest = bytes;
    while !rest.is_empty() {
        let (len, tail) = rest.split_at(4);
        let len = u32::from_le_bytes(len.try_into().unwrap()) as usize;
        let (record, tail) = tail.split_at(len);
        out.push(record);
        rest = tail;
    }
    out
}

/// Runs `examples/retry.json` on a memory journal and writes its records as the golden.
fn bless() {
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let store = Arc::new(MemoryStore::new());
    runtime.block_on(async {
        let journal = Journal::new(store.clone(), Durability::Fsync);
        let handle = Orchestrator::start_with_journal(
            EngineConfig::default(),
            ComponentRegistry::with_builtins(),
            Some(journal),
        )
        .await
        .unwrap();
        let text = std::fs::read_to_string("examples/retry.json").unwrap();
        let workflow = common::workflow(&handle, serde_json::from_str(&text).unwrap());
        let options = SubmitOptions {
            run_id: Some("golden".into()),
            ..SubmitOptions::default()
        };
        let mut run = handle
            .submit_workflow(&workflow, JsonObject::new(), options)
            .await
            .unwrap();
        run.result().await.unwrap();
        handle.shutdown(ShutdownMode::Drain).await.unwrap();
    });
    let runs = store.runs().unwrap();
    let (run_id, header) = &runs[0];
    let mut out = Vec::new();
    let mut push = |record: &[u8]| {
        out.extend_from_slice(&(record.len() as u32).to_le_bytes());
        out.extend_from_slice(record);
    };
    push(header);
    for (_, fact) in store.facts(run_id).unwrap() {
        push(&fact);
    }
    std::fs::create_dir_all(golden_path().parent().unwrap()).unwrap();
    std::fs::write(golden_path(), out).unwrap();
}

#[test]
fn the_golden_journal_of_format_1_still_decodes_and_replays() {
    if std::env::var_os("SHIPSEC_BLESS").is_some() {
        bless();
    }
    let bytes = std::fs::read(golden_path()).expect("the golden journal is committed");
    let frames = frames(&bytes);
    assert!(
        frames.iter().all(|f| f[0] == 1),
        "every record is of format 1"
    );
    let header: RunHeader = record::decode(frames[0]).expect("the header decodes");
    let facts: Vec<Fact> = frames[1..]
        .iter()
        .map(|f| record::decode(f).expect("every fact decodes"))
        .collect();
    // Decoding is exact: encoding again gives the bytes that were written.
    assert_eq!(record::encode(&header), frames[0]);
    for (fact, frame) in facts.iter().zip(&frames[1..]) {
        assert_eq!(&record::encode(fact), frame);
    }
    insta::assert_debug_snapshot!("golden_journal_v1_records", (&header, &facts));
    // And the facts still replay, through this build's cores, to the run they recorded.
    let registry = Arc::new(ComponentRegistry::with_builtins());
    let graph = common::graph(serde_json::from_str(&header.accepted.definition).unwrap());
    let plan = Arc::new(RunPlan::for_replay(
        &header.accepted.run_id,
        graph,
        registry,
        Arc::new(serde_json::from_str(&header.accepted.inputs).unwrap()),
        usize::MAX,
        std::time::Duration::from_secs(5),
    ));
    let (result, events) = replay::finished_run(plan, &facts).expect("the facts replay");
    let statuses: BTreeMap<String, (String, u32)> = result
        .nodes
        .iter()
        .map(|(node, r)| (node.to_string(), (r.status.as_str().to_owned(), r.attempts)))
        .collect();
    insta::assert_debug_snapshot!(
        "golden_journal_v1_replayed",
        (result.status, statuses, events.len())
    );
}

// ---------------------------------------------------------------------------------------
// Damaged files

/// What was written: per run, each header version and the facts in order.
#[derive(Debug, Default)]
struct Written {
    headers: BTreeMap<String, Vec<Vec<u8>>>,
    facts: BTreeMap<String, Vec<Vec<u8>>>,
}

/// Writes `batches` batches of three runs' facts into a fresh journal in `dir`.
fn write_journal(dir: &Path, batches: u64) -> Written {
    let (store, _) = FjallStore::open(dir).unwrap();
    let mut written = Written::default();
    for b in 1..=batches {
        let mut ops = Vec::new();
        for r in 0..3 {
            let run = format!("run-{r}");
            if b == 1 || b % 7 == r {
                let value = record::encode(&RunHeader {
                    accepted: AcceptedRecord {
                        run_id: run.clone(),
                        definition: "{}".into(),
                        definition_hash: 0,
                        inputs: "{}".into(),
                        idempotency_key: None,
                        traceparent: None,
                        accepted_at: b,
                        nodes: 1,
                    },
                    finished: None,
                });
                written
                    .headers
                    .entry(run.clone())
                    .or_default()
                    .push(value.clone());
                ops.push(Op::PutRun {
                    run_id: run.as_str().into(),
                    value,
                });
            }
            let facts = written.facts.entry(run.clone()).or_default();
            let value = record::encode(&Fact {
                at: b * 10 + r,
                kind: FactKind::Skipped { node: b as u32 },
            });
            facts.push(value.clone());
            ops.push(Op::PutFact {
                run_id: run.as_str().into(),
                seq: facts.len() as u64,
                value,
            });
        }
        store.commit(&ops, Durability::Fsync).unwrap();
    }
    written
}

/// The journal file that holds the batches (fjall's active write-ahead log).
fn log_file(dir: &Path) -> PathBuf {
    let mut logs: Vec<PathBuf> = std::fs::read_dir(dir.join("fjall"))
        .unwrap()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "jnl"))
        .filter(|p| std::fs::metadata(p).is_ok_and(|m| m.len() > 0))
        .collect();
    logs.sort();
    logs.pop().expect("a non-empty write-ahead log")
}

fn copy_dir(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy_dir(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), &target).unwrap();
        }
    }
}

/// Opens the damaged journal in `dir`: `Ok(true)` when it held less than `written` (and,
/// with `must_say`, said so), `Ok(false)` when it held all, `Err` when it refused to
/// open; a panic when it yields anything that was not written.
fn open_damaged(dir: &Path, written: &Written, must_say: bool) -> Result<bool, String> {
    let (store, opened) = FjallStore::open(dir).map_err(|e| e.to_string())?;
    // Every record must decode; what is compared is the bytes that were written.
    journal::load(&store).map_err(|e| e.to_string())?;
    let runs = store.runs().unwrap();
    let mut whole = runs.len() == written.headers.len();
    for (run_id, header) in &runs {
        let versions = &written.headers[&**run_id];
        let at = versions
            .iter()
            .position(|v| v == header)
            .unwrap_or_else(|| panic!("{run_id}: a header that was never written"));
        whole &= at + 1 == versions.len();
        let facts = store.facts(run_id).unwrap();
        let expected = &written.facts[&**run_id];
        assert!(
            facts.len() <= expected.len(),
            "{run_id}: facts that were never written"
        );
        for (i, (seq, value)) in facts.iter().enumerate() {
            assert_eq!(*seq, i as u64 + 1, "{run_id}: a gap in the facts");
            assert_eq!(
                value, &expected[i],
                "{run_id}: fact {seq} was never written"
            );
        }
        whole &= facts.len() == expected.len();
    }
    if !whole && must_say {
        assert!(
            opened.torn_after.is_some(),
            "a journal that lost acknowledged batches opened without saying so: {opened:?}"
        );
    }
    Ok(!whole)
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

/// Bytes at the end of the write-ahead log damaged one by one: more than its last batches.
const WINDOW: u64 = 1_200;

/// A journal of 40 batches, closed and opened once more (which trims its log file to
/// what it holds), with what was written.
fn prepared(dir: &Path) -> Written {
    let written = write_journal(dir, 40);
    drop(FjallStore::open(dir).unwrap());
    written
}

/// Damages a copy of `original` with `damage` (given its log file) for every byte of the
/// log's last [`WINDOW`] bytes, and opens it; returns (opened short, refused).
fn damage_each_byte(
    original: &Path,
    written: &Written,
    work: &Path,
    must_say: bool,
    damage: impl Fn(&Path, u64),
) -> (u32, u32) {
    let len = std::fs::metadata(log_file(original)).unwrap().len();
    assert!(len > WINDOW, "the log holds more than the damaged window");
    let (mut short, mut refused) = (0, 0);
    for at in len - WINDOW..len {
        let _ = std::fs::remove_dir_all(work);
        copy_dir(original, work);
        damage(&log_file(work), at);
        let opened = std::panic::catch_unwind(|| open_damaged(work, written, must_say));
        let Ok(opened) = opened else {
            panic!("damaged at byte {at} of {len}");
        };
        match opened {
            Ok(true) => short += 1,
            Ok(false) => {}
            Err(e) => {
                if refused == 0 {
                    eprintln!("first refusal, at byte {at} of {len}: {e}");
                }
                refused += 1;
            }
        }
    }
    (short, refused)
}

#[test]
fn a_torn_tail_opens_to_a_prefix_and_says_so() {
    let dir = scratch("torn");
    let original = dir.join("original");
    let written = prepared(&original);
    let (short, refused) =
        damage_each_byte(&original, &written, &dir.join("work"), true, |log, at| {
            let file = std::fs::OpenOptions::new().write(true).open(log).unwrap();
            file.set_len(at).unwrap();
        });
    eprintln!("torn at {WINDOW} places: {short} opened to a shorter prefix, {refused} refused");
    assert!(short > 0, "cutting the log lost batches somewhere");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_flipped_bit_is_refused_or_cut_off_never_read() {
    let dir = scratch("flipped");
    let original = dir.join("original");
    let written = prepared(&original);
    // A flip fjall does not notice can bring back an older value of a key (its log does
    // not checksum everything); what is read is still something that was written.
    let (short, refused) =
        damage_each_byte(&original, &written, &dir.join("work"), false, |log, at| {
            let mut bytes = std::fs::read(log).unwrap();
            bytes[at as usize] ^= 1 << (at % 8);
            std::fs::write(log, bytes).unwrap();
        });
    eprintln!("flipped at {WINDOW} places: {short} opened to a shorter prefix, {refused} refused");
    assert!(short + refused > 0, "some flipped bit was noticed");
    let _ = std::fs::remove_dir_all(&dir);
}
