//! Bad input: whatever text a backend sends, loading it never panics, never overflows the
//! stack and finishes quickly; a valid definition validates, an invalid one is an error.
//!
//! Two halves. Fixed cases pin the limits (`DefinitionLimits`) and the parsers' own guards:
//! 100,000 nested brackets, alias bombs, 1 MiB strings, 100,000-node graphs, odd numbers
//! and odd unicode. A proptest fuzzer then feeds thousands of mutated definitions to
//! `load_str` in both formats: the example files and random small valid definitions,
//! truncated, with bytes flipped, inserted and deleted, numbers replaced by huge, negative
//! and NaN-like values, deep nesting, 1 MB strings, odd unicode and duplicate keys.
//!
//! `PROPTEST_CASES` sets the total number of fuzz cases (default 2,000), shared among the
//! properties by fixed weights. Run with `cargo test --release --test bad_input`.

use std::sync::OnceLock;
use std::time::{Duration, Instant};

use proptest::prelude::*;
use proptest::sample::Index;
use proptest::test_runner::{Config as ProptestConfig, TestCaseError, TestRunner};
use serde_json::{Value, json};
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::WorkflowDefinition;
use shipsec_orchestrator::runtime::definition::limits::{DefinitionLimits, Limit, LimitError};
use shipsec_orchestrator::runtime::definition::load::{
    LoadError, Loaded, load_file_with, load_str, load_str_with,
};
use shipsec_orchestrator::runtime::definition::parse::{Format, ParseError};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn registry() -> &'static ComponentRegistry {
    static REGISTRY: OnceLock<ComponentRegistry> = OnceLock::new();
    REGISTRY.get_or_init(ComponentRegistry::with_builtins)
}

/// The longest one load of a fuzz case may take (release build; generous for a busy CI).
const CASE_BUDGET: Duration = Duration::from_secs(5);

/// Loads `text`, timing it.
fn load(text: &str, format: Format) -> (Result<Loaded, LoadError>, Duration) {
    let started = Instant::now();
    let result = load_str(text, format, registry());
    (result, started.elapsed())
}

fn load_ok(text: &str, format: Format) -> Loaded {
    load(text, format)
        .0
        .unwrap_or_else(|e| panic!("expected {format:?} to load, got: {e}"))
}

fn load_err(text: &str, format: Format) -> LoadError {
    match load(text, format).0 {
        Ok(_) => panic!("expected the {format:?} definition to be refused, but it loaded"),
        Err(e) => e,
    }
}

fn limit_err(text: &str, format: Format) -> LimitError {
    match load_err(text, format) {
        LoadError::Limit(e) => e,
        other => panic!("expected a limit error, got: {other}"),
    }
}

fn syntax_err(text: &str, format: Format) -> String {
    match load_err(text, format) {
        LoadError::Parse(ParseError::Syntax { message, .. }) => message,
        other => panic!("expected a syntax error, got: {other}"),
    }
}

const FORMATS: [Format; 2] = [Format::Json, Format::Yaml];

/// `value` as text in `format`.
fn text(value: &Value, format: Format) -> String {
    match format {
        Format::Json => serde_json::to_string(value).expect("JSON serializes"),
        Format::Yaml => serde_saphyr::to_string(value).expect("YAML serializes"),
    }
}

/// One echo action with these params.
fn with_params(params: Value) -> Value {
    json!({"version": 2, "title": "t", "actions": [
        {"ref": "a", "componentId": "core.echo", "params": params}
    ]})
}

/// Placeholder replaced in the text by a literal that cannot be built as a `Value`.
const SLOT: &str = "__SLOT__";

/// A definition whose `params.x` is the literal `value` (spliced into the text).
fn with_param_literal(format: Format, literal: &str) -> String {
    splice(&text(&with_params(json!({"x": SLOT})), format), literal)
}

/// Replaces the placeholder, quoted or not, by `literal`.
fn splice(text: &str, literal: &str) -> String {
    let quoted = format!("\"{SLOT}\"");
    if text.contains(&quoted) {
        text.replacen(&quoted, literal, 1)
    } else {
        text.replacen(SLOT, literal, 1)
    }
}

fn nested_brackets(depth: usize) -> String {
    format!("{}1{}", "[".repeat(depth), "]".repeat(depth))
}

/// `n` echo nodes: a chain `n0 -> n1 -> ...`, plus an edge from `n0` to every tenth node.
fn big_graph(n: usize) -> Value {
    let actions: Vec<Value> = (0..n)
        .map(|i| json!({"ref": format!("n{i}"), "componentId": "core.echo"}))
        .collect();
    let mut edges: Vec<Value> = (1..n)
        .map(|i| json!({"sourceRef": format!("n{}", i - 1), "targetRef": format!("n{i}")}))
        .collect();
    edges.extend(
        (2..n)
            .step_by(10)
            .map(|i| json!({"sourceRef": "n0", "targetRef": format!("n{i}"), "kind": "always"})),
    );
    json!({"version": 2, "title": "big", "actions": actions, "edges": edges})
}

// ---------------------------------------------------------------------------------------
// Limits and parser guards
// ---------------------------------------------------------------------------------------

#[test]
fn a_hundred_thousand_nested_brackets_are_an_error_not_a_crash() {
    let deep = nested_brackets(100_000);
    let open = "[".repeat(100_000);
    for format in FORMATS {
        // As the whole document: refused at the first bracket (not a definition's shape),
        // or as a syntax error; either way at once.
        for text in [&deep, &open] {
            let started = Instant::now();
            let e = load_err(text, format);
            assert!(matches!(e, LoadError::Parse(_)), "{e}");
            assert!(started.elapsed() < CASE_BUDGET, "{format:?} took too long");
        }
        // As a params value, where any shape is allowed: the parsers' depth guard.
        let started = Instant::now();
        let message = syntax_err(&with_param_literal(format, &deep), format);
        assert!(!message.is_empty());
        assert!(started.elapsed() < CASE_BUDGET, "{format:?} took too long");
    }
    // Block-style YAML nesting goes through the same budget.
    let block = format!("title: t\nactions:\n{}1\n", "- ".repeat(100_000));
    syntax_err(&block, Format::Yaml);
    let mut mapping = String::from("title: t\nactions: []\nconfig:\n");
    for level in 1..=2_000 {
        mapping.push_str(&"  ".repeat(level));
        mapping.push_str("a:\n");
    }
    syntax_err(&mapping, Format::Yaml);
}

#[test]
fn params_nesting_is_limited_to_64_levels() {
    for format in FORMATS {
        // params is level 1, `x` adds the levels of its brackets.
        load_ok(&with_param_literal(format, &nested_brackets(63)), format);
        let e = limit_err(&with_param_literal(format, &nested_brackets(64)), format);
        assert_eq!(
            (e.what, e.limit, e.actual),
            (Limit::NestingDepth, 64, 65),
            "{format:?}"
        );
        assert!(e.path.starts_with("actions[0].params.x[0]"), "{}", e.path);
        let error = load_err(&with_param_literal(format, &nested_brackets(64)), format);
        assert!(
            error.to_string().contains("maxNestingDepth = 64"),
            "the error names the limit: {error}"
        );
        // Deeper than the parsers go (JSON 128 levels, YAML 80, the document counted from
        // its top): a syntax error.
        syntax_err(&with_param_literal(format, &nested_brackets(200)), format);
        // inputOverrides and runner options are held to the same limit.
        let mut def = with_params(json!({}));
        def["actions"][0]["inputOverrides"] = json!({"y": SLOT});
        let e = limit_err(&splice(&text(&def, format), &nested_brackets(70)), format);
        assert!(
            e.path.starts_with("actions[0].inputOverrides.y"),
            "{}",
            e.path
        );
        let mut def = with_params(json!({}));
        def["actions"][0]["runner"] = json!({"kind": "inline", "opts": SLOT});
        let e = limit_err(&splice(&text(&def, format), &nested_brackets(70)), format);
        assert!(e.path.starts_with("actions[0].runner.opts"), "{}", e.path);
    }
}

#[test]
fn strings_up_to_one_mebibyte_load_and_longer_ones_are_refused_with_their_path() {
    let mib = 1024 * 1024;
    for format in FORMATS {
        let def = with_params(json!({"blob": "x".repeat(mib)}));
        load_ok(&text(&def, format), format);
        let def = with_params(json!({"blob": "x".repeat(mib + 1)}));
        let e = limit_err(&text(&def, format), format);
        assert_eq!(
            (e.what, e.path.as_str(), e.limit, e.actual),
            (
                Limit::StringBytes,
                "actions[0].params.blob",
                mib as u64,
                mib as u64 + 1
            )
        );
        let mut def = with_params(json!({}));
        def["title"] = json!("é".repeat(mib / 2 + 1));
        assert_eq!(limit_err(&text(&def, format), format).path, "title");
        let mut def = with_params(json!({}));
        def["actions"][0]["ref"] = json!("r".repeat(mib + 1));
        assert_eq!(
            limit_err(&text(&def, format), format).path,
            "actions[0].ref"
        );
        let def = with_params(json!({"k".repeat(mib + 1): 1}));
        let e = limit_err(&text(&def, format), format);
        assert!(e.path.starts_with("actions[0].params.kkkk"), "{}", e.path);
        assert!(e.path.len() < 100, "a long key is cut short in the path");
    }
}

#[test]
fn text_over_the_size_limit_is_refused_before_parsing() {
    let limit = 16 * 1024 * 1024;
    // Not even JSON: the size alone decides, and fast.
    let huge = " ".repeat(limit + 1);
    for format in FORMATS {
        let started = Instant::now();
        let e = limit_err(&huge, format);
        assert_eq!(
            (e.what, e.limit, e.actual),
            (Limit::DefinitionBytes, limit as u64, limit as u64 + 1)
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }
    let small = DefinitionLimits {
        max_definition_bytes: 100,
        ..DefinitionLimits::default()
    };
    let def = text(&with_params(json!({"pad": "p".repeat(100)})), Format::Json);
    let e = load_str_with(&def, Format::Json, registry(), &small).unwrap_err();
    let size = def.len();
    assert_eq!(
        e.to_string(),
        format!(
            "invalid workflow definition: (top level): definition size in bytes is {size}, \
             over the limit maxDefinitionBytes = 100"
        )
    );
    // A file over the limit is refused without being read whole.
    let path = std::env::temp_dir().join(format!("shipsec-bad-input-{}.json", std::process::id()));
    std::fs::write(&path, &def).unwrap();
    let e = load_file_with(&path, registry(), &small).unwrap_err();
    std::fs::remove_file(&path).unwrap();
    let LoadError::Limit(e) = e else {
        panic!("expected a limit error, got {e}")
    };
    assert_eq!(
        (e.what, e.limit, e.actual),
        (Limit::DefinitionBytes, 100, size as u64)
    );
}

#[test]
fn node_and_edge_counts_are_limited() {
    let small = DefinitionLimits {
        max_nodes: 100,
        max_edges: 150,
        ..DefinitionLimits::default()
    };
    for format in FORMATS {
        let load = |n| load_str_with(&text(&big_graph(n), format), format, registry(), &small);
        load(100).expect("100 nodes and 109 edges are within the limits");
        let LoadError::Limit(e) = load(101).unwrap_err() else {
            panic!("expected a limit error")
        };
        assert_eq!(
            (e.what, e.path.as_str(), e.limit, e.actual),
            (Limit::Nodes, "actions", 100, 101)
        );
    }
    let edges = DefinitionLimits {
        max_edges: 10,
        ..DefinitionLimits::default()
    };
    let e = load_str_with(
        &text(&big_graph(11), Format::Json),
        Format::Json,
        registry(),
        &edges,
    )
    .unwrap_err();
    assert_eq!(
        e.to_string(),
        "invalid workflow definition: edges: number of edges is 11, over the limit maxEdges = 10"
    );
    // The default: 200,000 nodes.
    let actions: Vec<Value> = (0..200_001)
        .map(|i| json!({"ref": format!("n{i}"), "componentId": "core.echo"}))
        .collect();
    let def = json!({"title": "too many", "actions": actions});
    let e = limit_err(&text(&def, Format::Json), Format::Json);
    assert_eq!(
        (e.what, e.limit, e.actual),
        (Limit::Nodes, 200_000, 200_001)
    );
}

#[test]
fn a_hundred_thousand_node_graph_loads_in_both_formats() {
    let def = big_graph(100_000);
    for format in FORMATS {
        let text = text(&def, format);
        let (result, took) = load(&text, format);
        let loaded = result.unwrap_or_else(|e| panic!("{format:?}: {e}"));
        assert_eq!(loaded.graph.len(), 100_000);
        assert_eq!(loaded.graph.edges.len(), 99_999 + 10_000);
        assert!(took < Duration::from_secs(20), "{format:?} took {took:?}");
        eprintln!(
            "100,000 nodes, {} bytes of {format:?}: {took:?}",
            text.len()
        );
    }
}

#[test]
fn alias_bombs_are_refused() {
    let mut bomb = String::from("title: t\nactions: []\nconfig:\n  environment: x\nbomb:\n");
    bomb.push_str("  a0: &a0 [x, x, x, x, x, x, x, x, x, x]\n");
    for i in 1..12 {
        let p = i - 1;
        bomb.push_str(&format!(
            "  a{i}: &a{i} [*a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}, *a{p}]\n"
        ));
    }
    let started = Instant::now();
    load_err(&bomb, Format::Yaml);
    assert!(started.elapsed() < CASE_BUDGET);
    // The same bomb inside params, where any shape is allowed.
    let params = bomb
        .replace("bomb:\n", "")
        .replace("title: t\nactions: []\nconfig:\n  environment: x\n", "");
    let text = format!(
        "title: t\nactions:\n- ref: a\n  componentId: core.echo\n  params:\n{}",
        params.replace("  a", "    a")
    );
    let started = Instant::now();
    load_err(&text, Format::Yaml);
    assert!(started.elapsed() < CASE_BUDGET);
}

#[test]
fn odd_numbers_are_errors_with_their_path() {
    let node_field = |field: &str, literal: &str, format: Format| {
        let def = json!({"version": 2, "title": "t",
            "nodes": {"a": {"ref": "a", field: SLOT}},
            "actions": [{"ref": "a", "componentId": "core.echo"}]});
        splice(&text(&def, format), literal)
    };
    let json_cases = [
        "1e400",
        "-1e400",
        "NaN",
        "Infinity",
        "-1",
        "18446744073709551616",
        "0x10",
        "1.5e9",
    ];
    for literal in json_cases {
        let e = load_err(
            &node_field("timeoutSeconds", literal, Format::Json),
            Format::Json,
        );
        let text = e.to_string();
        assert!(
            matches!(e, LoadError::Parse(_)) || text.contains("nodes.a.timeoutSeconds"),
            "{literal}: {text}"
        );
    }
    let yaml_cases = [
        ".nan", ".inf", "-.inf", "-1", "1e400", "2e9", "1.5e9", "'5'", "[1]",
    ];
    for literal in yaml_cases {
        let e = load_err(
            &node_field("timeoutSeconds", literal, Format::Yaml),
            Format::Yaml,
        );
        let text = e.to_string();
        assert!(
            matches!(e, LoadError::Parse(_)) || text.contains("nodes.a.timeoutSeconds"),
            "{literal}: {text}"
        );
    }
    for format in FORMATS {
        for (field, literal) in [("maxConcurrency", "0.5"), ("maxConcurrency", "4294967296")] {
            let e = load_err(&node_field(field, literal, format), format);
            assert!(e.to_string().contains(&format!("nodes.a.{field}")), "{e}");
        }
        let mut def = with_params(json!({}));
        def["version"] = json!(SLOT);
        for literal in ["18446744073709551616", "-1", "3", "2.5"] {
            load_err(&splice(&text(&def, format), literal), format);
        }
    }
}

#[test]
fn odd_unicode_is_data_and_bad_escapes_are_errors() {
    let odd = [
        "\u{202E}evil\u{202C}",
        "\u{200F}",
        "nul\u{0}byte",
        "😀",
        "👩‍👩‍👧",
        "\u{FEFF}bom",
        "e\u{301}",
        "\u{2028}\u{2029}",
        "\u{85}",
        "\u{FFFD}",
        "\u{10FFFF}",
    ];
    for format in FORMATS {
        for s in odd {
            // As refs (consistently), labels and params: data like any other.
            let def = json!({"version": 2, "title": s,
            "nodes": {s: {"ref": s, "label": s}},
            "edges": [{"sourceRef": s, "targetRef": "b"}],
            "actions": [
                {"ref": s, "componentId": "core.echo", "params": {s: s}},
                {"ref": "b", "componentId": "core.echo",
                 "inputMappings": {s: {"sourceRef": s, "sourceHandle": s}}}
            ]});
            let loaded = load_ok(&text(&def, format), format);
            assert_eq!(&*loaded.graph.nodes[0].node_ref, s);
        }
    }
    // Lone surrogates cannot be text: an error, never a panic.
    for escape in [r"\ud800", r"\udc00", r"\ud800\u0041", r"\uDFFF\uD800"] {
        let json = with_param_literal(Format::Json, &format!("\"{escape}\""));
        syntax_err(&json, Format::Json);
        let yaml = with_param_literal(Format::Yaml, &format!("\"{escape}\""));
        load_err(&yaml, Format::Yaml);
    }
    // A surrogate pair escape is one emoji.
    let json = with_param_literal(Format::Json, r#""\ud83d\ude00""#);
    let loaded = load_ok(&json, Format::Json);
    assert_eq!(loaded.definition.actions[0].params["x"], "😀");
}

#[test]
fn duplicate_keys_are_refused() {
    let json = r#"{"title":"a","title":"b","actions":[{"ref":"a","componentId":"core.echo"}]}"#;
    let e = load_err(json, Format::Json);
    assert!(e.to_string().contains("duplicate field `title`"), "{e}");
    let yaml = "title: a\ntitle: b\nactions:\n- ref: a\n  componentId: core.echo\n";
    load_err(yaml, Format::Yaml);
    let yaml = "title: a\nactions:\n- ref: a\n  componentId: core.echo\n  params: {k: 1, k: 2}\n";
    load_err(yaml, Format::Yaml);
    // Two nodes entries for one ref.
    let json = r#"{"title":"a","nodes":{"a":{"ref":"a"},"a":{"ref":"a","label":"x"}},
                   "actions":[{"ref":"a","componentId":"core.echo"}]}"#;
    let (result, _) = load(json, Format::Json);
    // serde_json keeps the last of two map entries; whatever it does, it must not panic.
    drop(result);
}

#[test]
fn the_examples_load() {
    for (name, text, format) in examples() {
        let loaded = load_ok(text, format);
        assert!(!loaded.graph.is_empty(), "{name}");
    }
}

// ---------------------------------------------------------------------------------------
// The fuzzer: mutated definitions
// ---------------------------------------------------------------------------------------

fn examples() -> [(&'static str, &'static str, Format); 10] {
    [
        (
            "race.json",
            include_str!("../examples/race.json"),
            Format::Json,
        ),
        (
            "race.yaml",
            include_str!("../examples/race.yaml"),
            Format::Yaml,
        ),
        (
            "recon.json",
            include_str!("../examples/recon.json"),
            Format::Json,
        ),
        (
            "recon.yaml",
            include_str!("../examples/recon.yaml"),
            Format::Yaml,
        ),
        (
            "retry.json",
            include_str!("../examples/retry.json"),
            Format::Json,
        ),
        (
            "retry.yaml",
            include_str!("../examples/retry.yaml"),
            Format::Yaml,
        ),
        (
            "v1-upgrade.json",
            include_str!("../examples/v1-upgrade.json"),
            Format::Json,
        ),
        (
            "v1-upgrade.yaml",
            include_str!("../examples/v1-upgrade.yaml"),
            Format::Yaml,
        ),
        (
            "shipsec-recon.json",
            include_str!("../examples/shipsec-recon.json"),
            Format::Json,
        ),
        (
            "shipsec-recon.yaml",
            include_str!("../examples/shipsec-recon.yaml"),
            Format::Yaml,
        ),
    ]
}

/// Numbers that break things: too big, negative, not numbers, in other spellings.
const NUMBERS: &[&str] = &[
    "1e400",
    "-1e400",
    "1e-400",
    "-1",
    "-0",
    "0",
    "0.5",
    "NaN",
    "nan",
    ".nan",
    "-.inf",
    ".inf",
    "Infinity",
    "18446744073709551616",
    "-9223372036854775809",
    "4294967296",
    "99999999999999999999999999999999999999999",
    "0x1F",
    "0o17",
    "1_000",
    "1e18",
    "+1",
    "01",
];

/// Text that breaks things: direction marks, NUL, surrogate escapes, emoji, BOMs, and the
/// characters that mean something to JSON or YAML.
const ODD: &[&str] = &[
    "\u{202E}",
    "\u{200F}",
    "\u{0}",
    "\\u0000",
    "\\ud800",
    "\\udc00",
    "\\ud83d\\ude00",
    "😀",
    "👩‍👩‍👧",
    "\u{FEFF}",
    "\u{FFFD}",
    "\u{85}",
    "\u{2028}",
    "\t",
    "\r",
    "\n",
    "\"",
    "'",
    "\\",
    ":",
    ": ",
    "- ",
    "? ",
    "{",
    "}",
    "[",
    "]",
    ",",
    "&a ",
    "*a",
    "!!binary ",
    "!!str ",
    "<<: ",
    "---\n",
    "...\n",
    "%YAML 1.2\n",
    "# ",
    "|\n",
    ">-\n",
    "~",
    "null",
    "true",
    "\"\":",
];

#[derive(Debug, Clone)]
enum Mutation {
    Truncate(Index),
    FlipBit(Index, u8),
    InsertByte(Index, u8),
    Delete(Index, u8),
    Insert(Index, &'static str),
    ReplaceNumber(Index, &'static str),
    DuplicateLine(Index),
    DuplicateKey,
    Nest(Index, u16),
    LongString(Index),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    prop_oneof![
        2 => any::<Index>().prop_map(Mutation::Truncate),
        3 => (any::<Index>(), 0u8..8).prop_map(|(i, b)| Mutation::FlipBit(i, b)),
        2 => (any::<Index>(), any::<u8>()).prop_map(|(i, b)| Mutation::InsertByte(i, b)),
        2 => (any::<Index>(), 1u8..16).prop_map(|(i, n)| Mutation::Delete(i, n)),
        3 => (any::<Index>(), prop::sample::select(ODD)).prop_map(|(i, s)| Mutation::Insert(i, s)),
        3 => (any::<Index>(), prop::sample::select(NUMBERS))
            .prop_map(|(i, s)| Mutation::ReplaceNumber(i, s)),
        1 => any::<Index>().prop_map(Mutation::DuplicateLine),
        1 => Just(Mutation::DuplicateKey),
        1 => (any::<Index>(), prop_oneof![1u16..70, 100u16..140, Just(5_000u16)])
            .prop_map(|(i, d)| Mutation::Nest(i, d)),
        1 => any::<Index>().prop_map(Mutation::LongString),
    ]
}

fn apply(text: &str, format: Format, mutation: &Mutation) -> String {
    let mut bytes = text.as_bytes().to_vec();
    let at = |i: &Index, len: usize| if len == 0 { 0 } else { i.index(len + 1) };
    match mutation {
        Mutation::Truncate(i) => bytes.truncate(at(i, bytes.len())),
        Mutation::FlipBit(i, bit) => {
            if !bytes.is_empty() {
                let p = i.index(bytes.len());
                bytes[p] ^= 1 << bit;
            }
        }
        Mutation::InsertByte(i, b) => bytes.insert(at(i, bytes.len()), *b),
        Mutation::Delete(i, n) => {
            let p = at(i, bytes.len());
            let end = (p + usize::from(*n)).min(bytes.len());
            bytes.drain(p..end);
        }
        Mutation::Insert(i, s) => {
            let p = at(i, bytes.len());
            bytes.splice(p..p, s.bytes());
        }
        Mutation::ReplaceNumber(i, s) => {
            let runs = digit_runs(&bytes);
            if !runs.is_empty() {
                let (start, end) = runs[i.index(runs.len())];
                bytes.splice(start..end, s.bytes());
            }
        }
        Mutation::DuplicateLine(i) => {
            let lines: Vec<&[u8]> = bytes.split_inclusive(|&b| b == b'\n').collect();
            if !lines.is_empty() {
                let k = i.index(lines.len());
                let mut out = Vec::with_capacity(bytes.len() * 2);
                for (j, line) in lines.iter().enumerate() {
                    out.extend_from_slice(line);
                    if j == k {
                        out.extend_from_slice(line);
                    }
                }
                bytes = out;
            }
        }
        Mutation::DuplicateKey => {
            return match format {
                Format::Json => text.replacen('{', "{\"title\":\"dup\",", 1),
                Format::Yaml => format!("title: dup\n{text}"),
            };
        }
        Mutation::Nest(i, depth) => {
            let p = at(i, bytes.len());
            let nest = nested_brackets(usize::from(*depth));
            bytes.splice(p..p, nest.bytes());
        }
        Mutation::LongString(i) => {
            // Grow the string (or the YAML scalar) that starts after a quote or a colon.
            let p = at(i, bytes.len());
            bytes.splice(p..p, std::iter::repeat_n(b'z', 1 << 20));
        }
    }
    String::from_utf8_lossy(&bytes).into_owned()
}

/// The `(start, end)` of every run of ASCII digits.
fn digit_runs(bytes: &[u8]) -> Vec<(usize, usize)> {
    let mut runs = Vec::new();
    let mut start = None;
    for (i, b) in bytes.iter().enumerate() {
        match (b.is_ascii_digit(), start) {
            (true, None) => start = Some(i),
            (false, Some(s)) => {
                runs.push((s, i));
                start = None;
            }
            _ => {}
        }
    }
    if let Some(s) = start {
        runs.push((s, bytes.len()));
    }
    runs
}

thread_local! {
    /// Mutated cases of this test thread: loaded, then refused as a syntax error, a shape
    /// error, over a limit, or invalid.
    static OUTCOMES: std::cell::Cell<[u32; 5]> = const { std::cell::Cell::new([0; 5]) };
}

/// What every load must satisfy, whatever the input: no panic (the caller would unwind),
/// quick, and a result that holds together.
fn check_any(text: &str, format: Format) -> Result<Option<Loaded>, TestCaseError> {
    let (result, took) = load(text, format);
    OUTCOMES.with(|o| {
        let mut counts = o.get();
        counts[match &result {
            Ok(_) => 0,
            Err(LoadError::Parse(ParseError::Syntax { .. })) => 1,
            Err(LoadError::Parse(ParseError::Shape { .. })) => 2,
            Err(LoadError::Limit(_)) => 3,
            Err(LoadError::Invalid(_) | LoadError::Io { .. }) => 4,
        }] += 1;
        o.set(counts);
    });
    prop_assert!(
        took < CASE_BUDGET,
        "{format:?} load of {} bytes took {took:?}",
        text.len()
    );
    match result {
        Ok(loaded) => {
            prop_assert_eq!(loaded.graph.len(), loaded.definition.actions.len());
            prop_assert_eq!(loaded.graph.topo_order.len(), loaded.graph.len());
            // What loaded, re-serialized, loads again to the same definition.
            let again = serde_json::to_string(&loaded.definition).expect("serializes");
            match load_str(&again, Format::Json, registry()) {
                Ok(back) => {
                    let (a, b) = (value_of(&back.definition), value_of(&loaded.definition));
                    prop_assert!(same(&a, &b), "reloaded {} != loaded {}", a, b);
                }
                Err(e) => prop_assert!(false, "a loaded definition does not reload: {}", e),
            }
            Ok(Some(loaded))
        }
        Err(e) => {
            let message = e.to_string();
            prop_assert!(!message.trim().is_empty(), "an error says something");
            if let LoadError::Limit(limit) = &e {
                prop_assert!(limit.actual > limit.limit, "{}", message);
            }
            Ok(None)
        }
    }
}

fn value_of(def: &WorkflowDefinition) -> Value {
    serde_json::to_value(def).expect("a definition serializes")
}

/// Equal, but for floats one ULP apart: without its `float_roundtrip` feature `serde_json`
/// parses some 17-digit decimals to the neighbouring float, so a definition that went
/// through text twice may differ there.
fn same(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) if x.is_f64() || y.is_f64() => {
            let (x, y) = (
                x.as_f64().unwrap_or(f64::NAN),
                y.as_f64().unwrap_or(f64::NAN),
            );
            x == y || (x - y).abs() <= f64::EPSILON * x.abs().max(y.abs())
        }
        (Value::Array(x), Value::Array(y)) => {
            x.len() == y.len() && x.iter().zip(y).all(|(x, y)| same(x, y))
        }
        (Value::Object(x), Value::Object(y)) => {
            x.len() == y.len() && x.iter().all(|(k, v)| y.get(k).is_some_and(|w| same(v, w)))
        }
        _ => a == b,
    }
}

// -- Random small valid definitions ------------------------------------------------------

/// A number of seconds with at most three decimals.
fn millis(range: std::ops::Range<u32>) -> impl Strategy<Value = f64> {
    range.prop_map(|n| f64::from(n) / 1000.0)
}

/// Leaf JSON values, odd strings included.
fn leaf() -> impl Strategy<Value = Value> {
    prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        // Short decimals: `serde_json` parses longer ones up to an ULP off (see `same`).
        any::<i32>().prop_map(|n| Value::from(f64::from(n) / 1000.0)),
        "\\PC{0,12}".prop_map(Value::from),
        prop::sample::select(ODD).prop_map(|s| Value::from(s.replace('\\', ""))),
    ]
}

fn json_value() -> impl Strategy<Value = Value> {
    leaf().prop_recursive(3, 16, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(key(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Keys that mean nothing special to YAML (`<<` would be a merge key).
fn key() -> impl Strategy<Value = String> {
    "[a-zA-Z_\u{e9}\u{1F600}][a-zA-Z0-9_ -]{0,8}"
}

#[derive(Debug, Clone)]
struct NodeGen {
    component: usize,
    extra: Vec<(String, Value)>,
    join: usize,
    quorum_seed: usize,
    on_failure: Option<bool>,
    timeout: Option<f64>,
    retry: Option<(u8, f64, f64)>,
    mapping: Option<(Index, String)>,
    metadata: bool,
}

fn node_gen() -> impl Strategy<Value = NodeGen> {
    (
        0usize..6,
        prop::collection::vec((key(), json_value()), 0..3),
        (0usize..4, any::<usize>()),
        prop::option::of(any::<bool>()),
        prop::option::of(millis(0..1_000_000)),
        prop::option::of((1u8..5, millis(0..2_000), millis(1_000..3_000))),
        prop::option::of((any::<Index>(), key())),
        any::<bool>(),
    )
        .prop_map(
            |(
                component,
                extra,
                (join, quorum_seed),
                on_failure,
                timeout,
                retry,
                mapping,
                metadata,
            )| {
                NodeGen {
                    component,
                    extra,
                    join,
                    quorum_seed,
                    on_failure,
                    timeout,
                    retry,
                    mapping,
                    metadata,
                }
            },
        )
}

#[derive(Debug, Clone)]
struct DefGen {
    nodes: Vec<NodeGen>,
    edges: Vec<(Index, Index, u8)>,
    refs: usize,
    counts: bool,
    depends: bool,
    config: (Option<bool>, Option<u8>),
}

fn def_gen() -> impl Strategy<Value = DefGen> {
    (
        prop::collection::vec(node_gen(), 1..8),
        prop::collection::vec((any::<Index>(), any::<Index>(), 0u8..3), 0..12),
        0usize..5,
        any::<bool>(),
        any::<bool>(),
        (prop::option::of(any::<bool>()), prop::option::of(1u8..20)),
    )
        .prop_map(|(nodes, edges, refs, counts, depends, config)| DefGen {
            nodes,
            edges,
            refs,
            counts,
            depends,
            config,
        })
}

/// A valid definition from its generator: edges only forward (no cycle), quorums within
/// the incoming edges, mappings only from parents, derived fields consistent.
fn build(g: &DefGen) -> Value {
    let n = g.nodes.len();
    let node_ref = |i: usize| match g.refs {
        0 => format!("n{i}"),
        1 => format!("nœud-{i}"),
        2 => format!("\u{202E}{i}😀"),
        3 => format!("a node {i}"),
        _ => format!("{i}"),
    };
    let mut edges = Vec::new();
    let mut parents: Vec<Vec<usize>> = vec![Vec::new(); n];
    for (a, b, kind) in &g.edges {
        let (a, b) = (a.index(n), b.index(n));
        if a == b {
            continue;
        }
        let (s, t) = (a.min(b), a.max(b));
        parents[t].push(s);
        let kind = ["success", "error", "always"][usize::from(*kind)];
        edges.push(json!({"sourceRef": node_ref(s), "targetRef": node_ref(t), "kind": kind}));
    }
    let mut actions = Vec::new();
    let mut nodes = serde_json::Map::new();
    for (i, node) in g.nodes.iter().enumerate() {
        let r = node_ref(i);
        let (component, required) = match node.component {
            0 => ("core.echo", json!({})),
            1 => ("core.sleep", json!({"ms": 0})),
            2 => ("core.fail", json!({"message": "no"})),
            3 => ("core.flaky", json!({"failures": 1})),
            4 => ("core.branch", json!({"ports": ["a", "b"]})),
            _ => ("core.process", json!({"command": ["true"]})),
        };
        let mut params = required.as_object().cloned().unwrap_or_default();
        for (k, v) in &node.extra {
            params.entry(k.clone()).or_insert_with(|| v.clone());
        }
        let mut action = json!({"ref": r, "componentId": component, "params": params});
        if let Some((attempts, initial, backoff)) = node.retry {
            action["retryPolicy"] = json!({"maxAttempts": attempts,
                "initialIntervalSeconds": initial, "backoffCoefficient": backoff});
        }
        let ps = &parents[i];
        if let (Some((which, input)), false) = (&node.mapping, ps.is_empty()) {
            let p = ps[which.index(ps.len())];
            action["inputMappings"] =
                json!({input.clone(): {"sourceRef": node_ref(p), "sourceHandle": "out"}});
        }
        if g.depends {
            let mut unique: Vec<String> = ps.iter().map(|&p| node_ref(p)).collect();
            unique.sort();
            unique.dedup();
            action["dependsOn"] = json!(unique);
        }
        actions.push(action);
        if node.metadata {
            let join = match (node.join, ps.len()) {
                (3, 0) => "all",
                (j, _) => ["all", "any", "first", "quorum"][j],
            };
            let mut meta = json!({"ref": r, "joinStrategy": join, "label": format!("node {i}")});
            if join == "quorum" {
                meta["quorum"] = json!(1 + node.quorum_seed % ps.len());
            }
            if let Some(skip) = node.on_failure {
                meta["onFailure"] = json!(if skip { "skipDependents" } else { "failRun" });
            }
            if let Some(t) = node.timeout {
                meta["timeoutSeconds"] = json!(t);
            }
            nodes.insert(r.clone(), meta);
        }
    }
    let mut def = json!({"version": 2, "title": "generated", "nodes": nodes,
        "edges": edges, "actions": actions});
    if g.counts {
        let counts: serde_json::Map<String, Value> = parents
            .iter()
            .enumerate()
            .map(|(i, ps)| (node_ref(i), json!(ps.len())))
            .collect();
        def["dependencyCounts"] = Value::Object(counts);
    }
    let (fail_fast, parallelism) = g.config;
    if let Some(f) = fail_fast {
        def["config"]["failurePolicy"] = json!(if f { "failFast" } else { "continue" });
    }
    if let Some(p) = parallelism {
        def["config"]["maxParallelism"] = json!(p);
    }
    def
}

// -- The properties ----------------------------------------------------------------------

/// The total number of fuzz cases: `PROPTEST_CASES`, else 2,000.
fn total_cases() -> u32 {
    std::env::var("PROPTEST_CASES")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000)
}

/// A runner for `weight` percent of the total cases.
fn runner(weight: u32) -> TestRunner {
    let cases = (total_cases().saturating_mul(weight) / 100).max(1);
    TestRunner::new(ProptestConfig {
        cases,
        // Shrinking a 1 MiB input is slow and rarely needed to read a failure.
        max_shrink_iters: 256,
        failure_persistence: None,
        ..ProptestConfig::default()
    })
}

fn run<S: Strategy>(
    weight: u32,
    strategy: S,
    test: impl Fn(S::Value) -> Result<(), TestCaseError>,
) {
    let started = Instant::now();
    let mut runner = runner(weight);
    let cases = runner.config().cases;
    if let Err(e) = runner.run(&strategy, test) {
        panic!("{e}");
    }
    let [loaded, syntax, shape, limit, invalid] = OUTCOMES.with(std::cell::Cell::take);
    eprintln!(
        "{cases} cases in {:?} (mutated: {loaded} loaded; refused: {syntax} syntax, \
         {shape} shape, {limit} limit, {invalid} invalid)",
        started.elapsed()
    );
}

fn format_of(json: bool) -> Format {
    if json { Format::Json } else { Format::Yaml }
}

/// Generated definitions are valid, and load the same from JSON and YAML.
#[test]
fn random_valid_definitions_validate_in_both_formats() {
    run(20, def_gen(), |g| {
        let def = build(&g);
        let mut loaded = Vec::new();
        for format in FORMATS {
            let text = text(&def, format);
            let (result, took) = load(&text, format);
            prop_assert!(took < CASE_BUDGET);
            match result {
                Ok(l) => loaded.push(l.definition),
                Err(e) => prop_assert!(
                    false,
                    "generated {:?} does not load: {}\n{}",
                    format,
                    e,
                    text
                ),
            }
        }
        prop_assert_eq!(&loaded[0], &loaded[1]);
        let expected: WorkflowDefinition = serde_json::from_value(def).expect("shape");
        prop_assert_eq!(&loaded[0], &expected);
        Ok(())
    });
}

/// The example files, mutated: never a panic, always quick, every result coherent.
#[test]
fn mutated_examples_never_panic() {
    let strategy = (
        0usize..examples().len(),
        any::<bool>(),
        prop::collection::vec(mutation(), 1..4),
    );
    run(35, strategy, |(which, as_json, mutations)| {
        let (_, source, source_format) = examples()[which];
        // Half the time, the example converted to the other format.
        let format = format_of(as_json);
        let mut text = if format == source_format {
            source.to_owned()
        } else {
            let value = serde_json::to_value(load_ok(source, source_format).definition);
            self::text(&value.expect("serializes"), format)
        };
        for m in &mutations {
            text = apply(&text, format, m);
        }
        check_any(&text, format)?;
        Ok(())
    });
}

/// Generated valid definitions, mutated as text.
#[test]
fn mutated_random_definitions_never_panic() {
    let strategy = (
        def_gen(),
        any::<bool>(),
        prop::collection::vec(mutation(), 1..4),
    );
    run(30, strategy, |(g, as_json, mutations)| {
        let format = format_of(as_json);
        let mut text = text(&build(&g), format);
        for m in &mutations {
            text = apply(&text, format, m);
        }
        check_any(&text, format)?;
        Ok(())
    });
}

/// Structured mutations whose outcome is known: deep params, long strings, odd refs.
#[derive(Debug, Clone)]
enum Known {
    /// `params.deep` nested this many brackets deep (params itself is one more level).
    Deep(usize),
    /// `params.blob` this many bytes long.
    Long(usize),
}

#[test]
fn known_bad_values_give_the_known_answer() {
    let known = prop_oneof![
        prop_oneof![1usize..=63, 64usize..=120, 130usize..3_000].prop_map(Known::Deep),
        prop_oneof![
            Just(1usize << 20),
            Just((1usize << 20) + 1),
            0usize..1_000,
            1_000_000usize..1_100_000
        ]
        .prop_map(Known::Long),
    ];
    run(
        15,
        (def_gen(), any::<bool>(), known),
        |(g, as_json, known)| {
            let format = format_of(as_json);
            let mut def = build(&g);
            let literal = match &known {
                Known::Deep(d) => nested_brackets(*d),
                Known::Long(n) => serde_json::to_string(&"L".repeat(*n)).expect("a string"),
            };
            def["actions"][0]["params"]["__known"] = json!(SLOT);
            let text = splice(&text(&def, format), &literal);
            let (result, took) = load(&text, format);
            prop_assert!(took < CASE_BUDGET);
            match (known, result) {
                (Known::Deep(d), Ok(_)) => prop_assert!(d < 64, "depth {} loaded", d),
                (Known::Deep(d), Err(LoadError::Limit(e))) => {
                    // params is 4 levels down: YAML's parser stops at 80, JSON's at 128.
                    let parser_max = if format == Format::Json { 123 } else { 76 };
                    prop_assert!((64..=parser_max).contains(&d), "depth {}: {}", d, e);
                    prop_assert_eq!(e.what, Limit::NestingDepth);
                    prop_assert_eq!(e.actual, 65);
                }
                (Known::Deep(d), Err(LoadError::Parse(ParseError::Syntax { .. }))) => {
                    let parser_min = if format == Format::Json { 123 } else { 75 };
                    prop_assert!(d >= parser_min, "depth {} is a syntax error", d);
                }
                (Known::Long(n), Ok(_)) => prop_assert!(n <= 1 << 20),
                (Known::Long(n), Err(LoadError::Limit(e))) => {
                    prop_assert!(n > 1 << 20);
                    prop_assert_eq!(e.what, Limit::StringBytes);
                    prop_assert_eq!(e.path, "actions[0].params.__known");
                    prop_assert_eq!(e.actual, n as u64);
                }
                (k, Err(e)) => prop_assert!(false, "{:?}: unexpected error {}", k, e),
            }
            Ok(())
        },
    );
}
