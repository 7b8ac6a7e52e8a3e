//! The definition format, as a specification: what a backend may send, what is refused,
//! with which path and message, and what the validated graph looks like.
//!
//! Everything goes through the public API: `parse_definition` (shape), `validate`
//! (meaning), `load_str` (both), `mermaid::render` and the `shipsec` binary.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::Duration;

use serde_json::{Value, json};
use shipsec_orchestrator::runtime::components::registry::ComponentRegistry;
use shipsec_orchestrator::runtime::definition::WorkflowDefinition;
use shipsec_orchestrator::runtime::definition::graph::{
    EdgeIx, EdgeKind, FailurePolicy, Graph, Join, NodeIx, RetryPolicy,
};
use shipsec_orchestrator::runtime::definition::load::{LoadError, load_str};
use shipsec_orchestrator::runtime::definition::mermaid::render;
use shipsec_orchestrator::runtime::definition::parse::{Format, ParseError, parse_definition};
use shipsec_orchestrator::runtime::definition::validate::{DefinitionError, Problem, validate};

// ---------------------------------------------------------------------------------------
// Helpers
// ---------------------------------------------------------------------------------------

fn registry() -> ComponentRegistry {
    ComponentRegistry::with_builtins()
}

/// Parses a JSON value as definition text (the same path a backend's JSON takes).
fn definition(value: Value) -> WorkflowDefinition {
    parse_definition(&value.to_string(), Format::Json)
        .unwrap_or_else(|e| panic!("test definition does not parse: {e}"))
}

/// A version 2 workflow with these actions and edges.
fn workflow(actions: Value, edges: Value) -> Value {
    json!({ "version": 2, "title": "spec", "actions": actions, "edges": edges })
}

fn echo(node_ref: &str) -> Value {
    json!({ "ref": node_ref, "componentId": "core.echo" })
}

fn edge(source: &str, target: &str) -> Value {
    json!({ "sourceRef": source, "targetRef": target })
}

/// `a -> b`, both `core.echo`: the smallest workflow with an edge.
fn two_echoes() -> Value {
    workflow(json!([echo("a"), echo("b")]), json!([edge("a", "b")]))
}

fn graph_of_definition(def: &WorkflowDefinition) -> Graph {
    validate(def, &registry()).unwrap_or_else(|e| panic!("expected a valid definition, got {e}"))
}

fn graph(value: Value) -> Graph {
    graph_of_definition(&definition(value))
}

fn error_of_definition(def: &WorkflowDefinition) -> DefinitionError {
    match validate(def, &registry()) {
        Ok(_) => panic!("expected the definition to be refused, but it validated"),
        Err(e) => e,
    }
}

fn problems(value: Value) -> Vec<Problem> {
    error_of_definition(&definition(value)).problems
}

/// The one problem of a definition that must have exactly one.
fn sole_problem_of_definition(def: &WorkflowDefinition) -> Problem {
    let mut found = error_of_definition(def).problems;
    assert_eq!(
        found.len(),
        1,
        "expected exactly one problem, got {found:#?}"
    );
    found.remove(0)
}

fn sole_problem(value: Value) -> Problem {
    sole_problem_of_definition(&definition(value))
}

/// The one warning of a valid definition that must have exactly one (the edges decided).
fn sole_warning(value: Value) -> Problem {
    let mut found = graph(value).warnings;
    assert_eq!(
        found.len(),
        1,
        "expected exactly one warning, got {found:#?}"
    );
    found.remove(0)
}

fn paths(problems: &[Problem]) -> Vec<&str> {
    problems.iter().map(|p| p.path.as_str()).collect()
}

fn assert_message_contains(problem: &Problem, needle: &str) {
    assert!(
        problem.message.contains(needle),
        "message of {} should contain {needle:?}, was {:?}",
        problem.path,
        problem.message
    );
}

/// The path and message of a shape error.
fn shape_error(text: &str, format: Format) -> (String, String) {
    match parse_definition(text, format) {
        Err(ParseError::Shape { path, message }) => (path, message),
        other => panic!("expected a shape error, got {other:?}"),
    }
}

fn shape_error_json(value: Value) -> (String, String) {
    shape_error(&value.to_string(), Format::Json)
}

fn ix(graph: &Graph, node_ref: &str) -> NodeIx {
    graph
        .find(node_ref)
        .unwrap_or_else(|| panic!("no node `{node_ref}` in the graph"))
}

/// The refs of the sources of `node`'s incoming edges, in edge order.
fn parents(graph: &Graph, node_ref: &str) -> Vec<String> {
    let node = graph.node(ix(graph, node_ref));
    node.incoming
        .iter()
        .map(|&e| graph.node(graph.edge(e).source).node_ref.to_string())
        .collect()
}

fn edge_ids(graph: &Graph) -> Vec<String> {
    graph.edges.iter().map(|e| e.id.to_string()).collect()
}

/// Every node exactly once, and every edge's source before its target.
fn assert_topological(graph: &Graph) {
    let mut position = vec![None; graph.len()];
    for (i, n) in graph.topo_order.iter().enumerate() {
        assert!(
            position[n.ix()].is_none(),
            "node {n:?} appears twice in topo_order"
        );
        position[n.ix()] = Some(i);
    }
    assert!(
        position.iter().all(Option::is_some),
        "topo_order misses nodes: {:?}",
        graph.topo_order
    );
    for e in &graph.edges {
        assert!(
            position[e.source.ix()] < position[e.target.ix()],
            "edge {} goes backwards in topo_order",
            e.id
        );
    }
}

fn examples_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("examples")
}

fn example_files() -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(examples_dir())
        .expect("examples/ is readable")
        .map(|entry| entry.expect("examples/ entry").path())
        .filter(|p| {
            matches!(
                p.extension().and_then(|e| e.to_str()),
                Some("json" | "yaml" | "yml")
            )
        })
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no example definitions found");
    files
}

fn read_example(path: &Path) -> WorkflowDefinition {
    let text = std::fs::read_to_string(path).expect("example is readable");
    parse_definition(&text, Format::detect(Some(path), &text))
        .unwrap_or_else(|e| panic!("{} does not parse: {e}", path.display()))
}

// ---------------------------------------------------------------------------------------
// Validation rules: one problem each, with its exact path
// ---------------------------------------------------------------------------------------

#[test]
fn duplicate_ref_is_reported_at_the_second_use_naming_the_first() {
    let p = sole_problem(workflow(
        json!([echo("a"), echo("b"), echo("a")]),
        json!([edge("a", "b")]),
    ));
    assert_eq!(p.path, "actions[2].ref");
    assert_message_contains(&p, "duplicate ref `a`");
    assert_message_contains(&p, "actions[0]");
}

#[test]
fn empty_ref_is_reported() {
    let p = sole_problem(workflow(json!([echo("")]), json!([])));
    assert_eq!(p.path, "actions[0].ref");
    assert_message_contains(&p, "must not be empty");
}

#[test]
fn edge_naming_unknown_nodes_is_reported_at_source_and_target() {
    let found = problems(workflow(
        json!([echo("a"), echo("b")]),
        json!([edge("a", "b"), edge("ghost", "phantom")]),
    ));
    assert_eq!(paths(&found), ["edges[1].sourceRef", "edges[1].targetRef"]);
    assert_message_contains(&found[0], "unknown node `ghost`");
    assert_message_contains(&found[1], "unknown node `phantom`");
}

#[test]
fn edge_naming_one_unknown_node_is_reported_only_there() {
    let p = sole_problem(workflow(
        json!([echo("a"), echo("b")]),
        json!([edge("a", "b"), edge("b", "nowhere")]),
    ));
    assert_eq!(p.path, "edges[1].targetRef");
    assert_message_contains(&p, "unknown node `nowhere`");
}

#[test]
fn mapping_naming_an_unknown_node_is_reported_with_its_path() {
    let p = sole_problem(workflow(
        json!([
            echo("a"),
            { "ref": "b", "componentId": "core.echo",
              "inputMappings": { "url": { "sourceRef": "ghost", "sourceHandle": "url" } } }
        ]),
        json!([edge("a", "b")]),
    ));
    assert_eq!(p.path, "actions[1].inputMappings.url.sourceRef");
    assert_message_contains(&p, "unknown node `ghost`");
}

#[test]
fn mapping_from_a_node_that_is_not_a_parent_is_reported_with_its_path() {
    let p = sole_problem(workflow(
        json!([
            echo("a"),
            { "ref": "b", "componentId": "core.echo",
              "inputMappings": { "url": { "sourceRef": "c", "sourceHandle": "url" } } },
            echo("c")
        ]),
        json!([edge("a", "b"), edge("a", "c")]),
    ));
    assert_eq!(p.path, "actions[1].inputMappings.url.sourceRef");
    assert_message_contains(&p, "`c` is not a parent of `b`");
    assert_message_contains(&p, "no edge c -> b");
}

#[test]
fn mapping_from_a_child_is_not_from_a_parent() {
    let p = sole_problem(workflow(
        json!([
            { "ref": "a", "componentId": "core.echo",
              "inputMappings": { "x": { "sourceRef": "b", "sourceHandle": "__self__" } } },
            echo("b")
        ]),
        json!([edge("a", "b")]),
    ));
    assert_eq!(p.path, "actions[0].inputMappings.x.sourceRef");
    assert_message_contains(&p, "`b` is not a parent of `a`");
}

#[test]
fn cycle_is_reported_on_edges_and_spelled_out() {
    let p = sole_problem(workflow(
        json!([echo("a"), echo("b"), echo("c")]),
        json!([edge("a", "b"), edge("b", "c"), edge("c", "b")]),
    ));
    assert_eq!(p.path, "edges");
    assert_eq!(p.message, "cycle: b -> c -> b");
}

#[test]
fn nodes_downstream_of_a_cycle_are_not_part_of_the_spelled_out_cycle() {
    // `d` is listed first and waits on the cycle, but is not on it.
    let p = sole_problem(workflow(
        json!([echo("d"), echo("a"), echo("b"), echo("c")]),
        json!([
            edge("a", "b"),
            edge("b", "c"),
            edge("c", "a"),
            edge("c", "d")
        ]),
    ));
    assert_eq!(p.path, "edges");
    assert_eq!(p.message, "cycle: a -> b -> c -> a");
}

#[test]
fn two_separate_cycles_are_both_reported() {
    let found = problems(workflow(
        json!([echo("a"), echo("b"), echo("x"), echo("y")]),
        json!([
            edge("a", "b"),
            edge("b", "a"),
            edge("x", "y"),
            edge("y", "x")
        ]),
    ));
    let messages: Vec<&str> = found.iter().map(|p| p.message.as_str()).collect();
    assert_eq!(paths(&found), ["edges", "edges"]);
    assert_eq!(messages, ["cycle: a -> b -> a", "cycle: x -> y -> x"]);
}

#[test]
fn self_loop_is_a_cycle_of_one_node() {
    let p = sole_problem(workflow(
        json!([echo("a"), echo("b")]),
        json!([edge("a", "b"), edge("b", "b")]),
    ));
    assert_eq!(p.path, "edges");
    assert_eq!(p.message, "cycle: b -> b");
}

#[test]
fn unknown_component_is_reported_with_the_known_ids() {
    let p = sole_problem(workflow(
        json!([{ "ref": "a", "componentId": "core.nope" }]),
        json!([]),
    ));
    assert_eq!(p.path, "actions[0].componentId");
    assert_message_contains(&p, "unknown component `core.nope`");
    assert_message_contains(&p, "core.echo");
    assert_message_contains(&p, "core.sleep");
}

/// The built-in components with a required input, that input, and a value for it.
fn required_inputs() -> Vec<(&'static str, &'static str, Value)> {
    vec![
        ("core.sleep", "ms", json!(10)),
        ("core.process", "command", json!(["true"])),
        ("core.flaky", "failures", json!(1)),
    ]
}

#[test]
fn required_component_input_with_no_value_or_mapping_is_reported_on_the_action() {
    for (component, input, _) in required_inputs() {
        let p = sole_problem(workflow(
            json!([echo("start"), { "ref": "n", "componentId": component }]),
            json!([edge("start", "n")]),
        ));
        assert_eq!(p.path, "actions[1]", "{component}");
        assert_message_contains(&p, &format!("`{component}` requires input `{input}`"));
    }
}

#[test]
fn required_component_input_is_satisfied_by_params() {
    for (component, input, value) in required_inputs() {
        graph(workflow(
            json!([{ "ref": "n", "componentId": component, "params": { input: value } }]),
            json!([]),
        ));
    }
}

#[test]
fn required_component_input_is_satisfied_by_input_overrides() {
    for (component, input, value) in required_inputs() {
        graph(workflow(
            json!([{ "ref": "n", "componentId": component, "inputOverrides": { input: value } }]),
            json!([]),
        ));
    }
}

#[test]
fn required_component_input_is_satisfied_by_an_input_mapping() {
    for (component, input, _) in required_inputs() {
        graph(workflow(
            json!([
                echo("start"),
                { "ref": "n", "componentId": component,
                  "inputMappings": { input: { "sourceRef": "start", "sourceHandle": input } } }
            ]),
            json!([edge("start", "n")]),
        ));
    }
}

#[test]
fn a_param_of_another_name_does_not_satisfy_a_required_input() {
    let p = sole_problem(workflow(
        json!([{ "ref": "n", "componentId": "core.sleep", "params": { "msec": 10 } }]),
        json!([]),
    ));
    assert_eq!(p.path, "actions[0]");
    assert_message_contains(&p, "requires input `ms`");
}

/// Three roots `a`, `b`, `c` joined by `x`, whose metadata is `x_meta`.
fn three_way_join(x_meta: Value) -> Value {
    let mut meta = json!({ "ref": "x" });
    meta.as_object_mut()
        .unwrap()
        .extend(x_meta.as_object().unwrap().clone());
    json!({
        "version": 2,
        "title": "join",
        "nodes": { "x": meta },
        "edges": [edge("a", "x"), edge("b", "x"), edge("c", "x")],
        "actions": [echo("a"), echo("b"), echo("c"), echo("x")]
    })
}

#[test]
fn quorum_join_without_a_quorum_is_reported() {
    let p = sole_problem(three_way_join(json!({ "joinStrategy": "quorum" })));
    assert_eq!(p.path, "nodes.x.quorum");
    assert_message_contains(&p, "joinStrategy `quorum` needs `quorum: n`");
}

#[test]
fn quorum_of_zero_is_out_of_range() {
    let p = sole_problem(three_way_join(
        json!({ "joinStrategy": "quorum", "quorum": 0 }),
    ));
    assert_eq!(p.path, "nodes.x.quorum");
    assert_message_contains(&p, "from 1 to the 3 incoming edge(s), got 0");
}

#[test]
fn quorum_greater_than_the_incoming_edges_is_out_of_range() {
    let p = sole_problem(three_way_join(
        json!({ "joinStrategy": "quorum", "quorum": 4 }),
    ));
    assert_eq!(p.path, "nodes.x.quorum");
    assert_message_contains(&p, "from 1 to the 3 incoming edge(s), got 4");
}

#[test]
fn huge_quorum_from_json_is_out_of_range() {
    let p = sole_problem(three_way_join(
        json!({ "joinStrategy": "quorum", "quorum": 1e300 }),
    ));
    assert_eq!(p.path, "nodes.x.quorum");
    assert_message_contains(&p, "from 1 to the 3 incoming edge(s)");
}

#[test]
fn fractional_quorum_is_refused() {
    let p = sole_problem(three_way_join(
        json!({ "joinStrategy": "quorum", "quorum": 1.5 }),
    ));
    assert_eq!(p.path, "nodes.x.quorum");
    assert_message_contains(&p, "whole number");
    assert_message_contains(&p, "got 1.5");
}

#[test]
fn non_finite_quorum_is_refused() {
    for bad in [f64::NAN, f64::INFINITY] {
        let mut def = definition(three_way_join(json!({ "joinStrategy": "quorum" })));
        def.nodes.get_mut("x").unwrap().quorum = Some(bad);
        let p = sole_problem_of_definition(&def);
        assert_eq!(p.path, "nodes.x.quorum");
        assert_message_contains(&p, &format!("got {bad}"));
    }
}

#[test]
fn quorum_set_without_join_strategy_quorum_is_reported() {
    for (meta, strategy) in [
        (json!({ "quorum": 2 }), "all"),
        (json!({ "joinStrategy": "any", "quorum": 2 }), "any"),
        (json!({ "joinStrategy": "first", "quorum": 2 }), "first"),
    ] {
        let p = sole_problem(three_way_join(meta));
        assert_eq!(p.path, "nodes.x.quorum");
        assert_message_contains(&p, &format!("joinStrategy is `{strategy}`"));
    }
}

#[test]
fn quorum_from_one_to_the_incoming_edges_is_accepted() {
    for n in 1..=3 {
        let g = graph(three_way_join(
            json!({ "joinStrategy": "quorum", "quorum": n }),
        ));
        assert_eq!(g.node(ix(&g, "x")).join, Join::Quorum(n));
    }
}

// ---------------------------------------------------------------------------------------
// Numbers
// ---------------------------------------------------------------------------------------

/// One `core.echo` node `a` with an (empty) metadata entry and retry policy, to mutate.
fn numbers_base() -> WorkflowDefinition {
    definition(json!({
        "version": 2,
        "title": "numbers",
        "nodes": { "a": { "ref": "a" } },
        "edges": [],
        "actions": [{ "ref": "a", "componentId": "core.echo", "retryPolicy": {} }]
    }))
}

type Setter = fn(&mut WorkflowDefinition, f64);

fn set_timeout(d: &mut WorkflowDefinition, v: f64) {
    d.nodes.get_mut("a").unwrap().timeout_seconds = Some(v);
}
fn set_queue_timeout(d: &mut WorkflowDefinition, v: f64) {
    d.nodes.get_mut("a").unwrap().queue_timeout_seconds = Some(v);
}
fn set_total_timeout(d: &mut WorkflowDefinition, v: f64) {
    d.nodes.get_mut("a").unwrap().total_timeout_seconds = Some(v);
}
fn set_max_concurrency(d: &mut WorkflowDefinition, v: f64) {
    d.nodes.get_mut("a").unwrap().max_concurrency = Some(v);
}
fn set_max_attempts(d: &mut WorkflowDefinition, v: f64) {
    d.actions[0].retry_policy.as_mut().unwrap().max_attempts = Some(v);
}
fn set_initial_interval(d: &mut WorkflowDefinition, v: f64) {
    d.actions[0]
        .retry_policy
        .as_mut()
        .unwrap()
        .initial_interval_seconds = Some(v);
}
fn set_maximum_interval(d: &mut WorkflowDefinition, v: f64) {
    d.actions[0]
        .retry_policy
        .as_mut()
        .unwrap()
        .maximum_interval_seconds = Some(v);
}
fn set_backoff(d: &mut WorkflowDefinition, v: f64) {
    d.actions[0]
        .retry_policy
        .as_mut()
        .unwrap()
        .backoff_coefficient = Some(v);
}
fn set_jitter(d: &mut WorkflowDefinition, v: f64) {
    d.actions[0].retry_policy.as_mut().unwrap().jitter = Some(v);
}
fn set_max_parallelism(d: &mut WorkflowDefinition, v: f64) {
    d.config.max_parallelism = Some(v);
}
fn set_run_timeout(d: &mut WorkflowDefinition, v: f64) {
    d.config.timeout_seconds = Some(v);
}

/// Each bad value, set through `set`, is the definition's one problem, at `path`, and the
/// message names the value.
fn assert_refused(set: Setter, path: &str, bad: &[f64]) {
    for &v in bad {
        let mut def = numbers_base();
        set(&mut def, v);
        let p = sole_problem_of_definition(&def);
        assert_eq!(p.path, path, "value {v}");
        if v.abs() < 1e9 || !v.is_finite() {
            assert_message_contains(&p, &format!("got {v}"));
        }
    }
}

fn assert_accepted(set: Setter, good: &[f64]) -> Vec<Graph> {
    good.iter()
        .map(|&v| {
            let mut def = numbers_base();
            set(&mut def, v);
            graph_of_definition(&def)
        })
        .collect()
}

const NON_FINITE: [f64; 3] = [f64::NAN, f64::INFINITY, f64::NEG_INFINITY];

#[test]
fn node_timeouts_must_be_finite_and_not_negative() {
    for (set, path) in [
        (set_timeout as Setter, "nodes.a.timeoutSeconds"),
        (set_queue_timeout, "nodes.a.queueTimeoutSeconds"),
        (set_total_timeout, "nodes.a.totalTimeoutSeconds"),
    ] {
        assert_refused(set, path, &[-1.0, -0.001]);
        assert_refused(set, path, &NON_FINITE);
        assert_refused(set, path, &[1e300]);
    }
}

#[test]
fn node_timeouts_may_be_fractional_and_zero_means_none() {
    let g = assert_accepted(set_timeout, &[0.0, 0.25, 30.0]);
    let a = |g: &Graph| g.node(NodeIx(0)).attempt_timeout;
    assert_eq!(a(&g[0]), None);
    assert_eq!(a(&g[1]), Some(Duration::from_millis(250)));
    assert_eq!(a(&g[2]), Some(Duration::from_secs(30)));
    let g = assert_accepted(set_queue_timeout, &[1.5]);
    assert_eq!(
        g[0].node(NodeIx(0)).queue_timeout,
        Some(Duration::from_millis(1500))
    );
    let g = assert_accepted(set_total_timeout, &[2.0]);
    assert_eq!(
        g[0].node(NodeIx(0)).total_timeout,
        Some(Duration::from_secs(2))
    );
}

#[test]
fn too_large_timeout_from_json_is_refused() {
    let p = sole_problem(json!({
        "title": "t",
        "nodes": { "a": { "ref": "a", "timeoutSeconds": 1e300 } },
        "actions": [echo("a")]
    }));
    assert_eq!(p.path, "nodes.a.timeoutSeconds");
    assert_message_contains(&p, "too large");
}

#[test]
fn max_concurrency_must_be_a_whole_number_of_at_least_one() {
    assert_refused(
        set_max_concurrency,
        "nodes.a.maxConcurrency",
        &[0.0, -1.0, 1.5, 5e9],
    );
    assert_refused(set_max_concurrency, "nodes.a.maxConcurrency", &NON_FINITE);
    let g = assert_accepted(set_max_concurrency, &[1.0, 8.0]);
    assert_eq!(g[1].node(NodeIx(0)).max_concurrency, Some(8));
}

#[test]
fn retry_max_attempts_must_be_a_whole_number_of_at_least_one_or_0_for_unlimited() {
    let path = "actions[0].retryPolicy.maxAttempts";
    assert_refused(set_max_attempts, path, &[-1.0, 2.5, 0.5]);
    assert_refused(set_max_attempts, path, &NON_FINITE);
    let g = assert_accepted(set_max_attempts, &[3.0, 0.0]);
    assert_eq!(g[0].node(NodeIx(0)).retry.max_attempts, 3);
    assert_eq!(
        g[1].node(NodeIx(0)).retry.max_attempts,
        u32::MAX,
        "ShipSec's 0 is unlimited"
    );
}

#[test]
fn error_type_policies_are_kept_per_type_and_cannot_retry_input_errors() {
    let mut value = two_echoes();
    value["actions"][0]["retryPolicy"] = json!({
        "maxAttempts": 3,
        "errorTypePolicies": {
            "RateLimitError": { "retryable": true, "retryDelayMs": 2500 },
            "NotFoundError": { "retryable": false }
        }
    });
    let g = graph(value.clone());
    let types = &g.node(NodeIx(0)).retry.error_types;
    assert_eq!(types["RateLimitError"].retryable, Some(true));
    assert_eq!(
        types["RateLimitError"].delay,
        Some(Duration::from_millis(2500))
    );
    assert_eq!(types["NotFoundError"].retryable, Some(false));
    assert_eq!(types["NotFoundError"].delay, None);

    value["actions"][0]["retryPolicy"]["errorTypePolicies"] = json!({
        "InputError": { "retryable": true },
        "X": { "retryDelayMs": -1 }
    });
    let found = problems(value);
    assert_eq!(
        paths(&found),
        [
            "actions[0].retryPolicy.errorTypePolicies.InputError.retryable",
            "actions[0].retryPolicy.errorTypePolicies.X.retryDelayMs"
        ]
    );
    assert_message_contains(&found[0], "`InputError` is never retried");
}

#[test]
fn retry_intervals_must_be_finite_and_not_negative() {
    for (set, path) in [
        (
            set_initial_interval as Setter,
            "actions[0].retryPolicy.initialIntervalSeconds",
        ),
        (
            set_maximum_interval,
            "actions[0].retryPolicy.maximumIntervalSeconds",
        ),
    ] {
        assert_refused(set, path, &[-0.5]);
        assert_refused(set, path, &NON_FINITE);
    }
    let g = assert_accepted(set_initial_interval, &[0.1]);
    assert_eq!(
        g[0].node(NodeIx(0)).retry.initial_interval,
        Duration::from_millis(100)
    );
}

#[test]
fn retry_backoff_coefficient_must_be_from_1_to_1000() {
    let path = "actions[0].retryPolicy.backoffCoefficient";
    assert_refused(set_backoff, path, &[0.5, 0.0, -2.0, 1000.5]);
    assert_refused(set_backoff, path, &NON_FINITE);
    let g = assert_accepted(set_backoff, &[1.0, 1.5, 1000.0]);
    assert_eq!(g[1].node(NodeIx(0)).retry.backoff_coefficient, 1.5);
}

#[test]
fn retry_jitter_must_be_a_fraction_from_0_to_1() {
    let path = "actions[0].retryPolicy.jitter";
    assert_refused(set_jitter, path, &[1.5, -0.1]);
    assert_refused(set_jitter, path, &NON_FINITE);
    let g = assert_accepted(set_jitter, &[0.0, 0.25, 1.0]);
    assert_eq!(g[1].node(NodeIx(0)).retry.jitter, 0.25);
}

#[test]
fn config_max_parallelism_must_be_a_whole_number_of_at_least_one() {
    let path = "config.maxParallelism";
    assert_refused(set_max_parallelism, path, &[0.0, -3.0, 1.5]);
    assert_refused(set_max_parallelism, path, &NON_FINITE);
    let g = assert_accepted(set_max_parallelism, &[4.0]);
    assert_eq!(g[0].settings.max_parallelism, Some(4));
}

#[test]
fn config_timeout_must_be_finite_and_not_negative_and_zero_means_none() {
    let path = "config.timeoutSeconds";
    assert_refused(set_run_timeout, path, &[-1.0, 1e300]);
    assert_refused(set_run_timeout, path, &NON_FINITE);
    let g = assert_accepted(set_run_timeout, &[0.0, 60.0]);
    assert_eq!(g[0].settings.timeout, None);
    assert_eq!(g[1].settings.timeout, Some(Duration::from_secs(60)));
}

// ---------------------------------------------------------------------------------------
// Derived fields that disagree with the edges: warnings, the edges decide
// ---------------------------------------------------------------------------------------

#[test]
fn dependency_count_that_disagrees_with_the_edges_is_a_warning() {
    let mut value = two_echoes();
    value["dependencyCounts"] = json!({ "a": 0, "b": 2 });
    let p = sole_warning(value);
    assert_eq!(p.path, "dependencyCounts.b");
    assert_message_contains(
        &p,
        "says 2 but `b` has 1 distinct parent(s); the edges decide",
    );
}

#[test]
fn dependency_count_of_zero_for_a_node_with_a_parent_is_a_warning() {
    let mut value = two_echoes();
    value["dependencyCounts"] = json!({ "b": 0 });
    let p = sole_warning(value);
    assert_eq!(p.path, "dependencyCounts.b");
    assert_message_contains(&p, "says 0");
}

#[test]
fn dependency_count_for_an_unknown_node_is_a_warning() {
    let mut value = two_echoes();
    value["dependencyCounts"] = json!({ "a": 0, "b": 1, "ghost": 0 });
    let p = sole_warning(value);
    assert_eq!(p.path, "dependencyCounts.ghost");
    assert_message_contains(&p, "unknown node `ghost`");
}

#[test]
fn dependency_counts_count_distinct_parents_not_edges() {
    let mut value = workflow(
        json!([echo("a"), echo("b")]),
        json!([
            { "sourceRef": "a", "targetRef": "b", "sourceHandle": "x", "targetHandle": "x" },
            { "sourceRef": "a", "targetRef": "b", "sourceHandle": "y", "targetHandle": "y" }
        ]),
    );
    value["dependencyCounts"] = json!({ "a": 0, "b": 1 });
    assert!(graph(value).warnings.is_empty());
}

#[test]
fn depends_on_naming_a_node_without_an_edge_is_a_warning_at_that_entry() {
    let p = sole_warning(workflow(
        json!([
            echo("a"),
            echo("c"),
            { "ref": "b", "componentId": "core.echo", "dependsOn": ["a", "c"] }
        ]),
        json!([edge("a", "b")]),
    ));
    assert_eq!(p.path, "actions[2].dependsOn[1]");
    assert_message_contains(&p, "lists `c`, but no edge goes from `c` to `b`");
}

#[test]
fn depends_on_omitting_a_parent_with_an_edge_is_a_warning_on_the_list() {
    let p = sole_warning(workflow(
        json!([
            echo("a"),
            echo("c"),
            { "ref": "b", "componentId": "core.echo", "dependsOn": ["a"] }
        ]),
        json!([edge("a", "b"), edge("c", "b")]),
    ));
    assert_eq!(p.path, "actions[2].dependsOn");
    assert_message_contains(&p, "omits `c`, which has an edge to `b`");
}

#[test]
fn depends_on_naming_an_unknown_node_is_a_warning_at_that_entry() {
    let p = sole_warning(workflow(
        json!([
            echo("a"),
            { "ref": "b", "componentId": "core.echo", "dependsOn": ["a", "ghost"] }
        ]),
        json!([edge("a", "b")]),
    ));
    assert_eq!(p.path, "actions[1].dependsOn[1]");
    assert_message_contains(&p, "unknown node `ghost`");
}

#[test]
fn depends_on_must_include_parents_of_error_and_always_edges() {
    let value = workflow(
        json!([
            echo("a"),
            echo("b"),
            { "ref": "h", "componentId": "core.echo", "dependsOn": ["a", "b"] }
        ]),
        json!([
            { "sourceRef": "a", "targetRef": "h", "kind": "error" },
            { "sourceRef": "b", "targetRef": "h", "kind": "always" }
        ]),
    );
    graph(value);
}

#[test]
fn nodes_entry_whose_ref_differs_from_its_key_is_reported() {
    let mut value = two_echoes();
    value["nodes"] = json!({ "a": { "ref": "b" } });
    let p = sole_problem(value);
    assert_eq!(p.path, "nodes.a.ref");
    assert_message_contains(&p, "ref `b` does not match its key `a`");
}

#[test]
fn nodes_entry_for_an_unknown_action_is_reported() {
    let mut value = two_echoes();
    value["nodes"] = json!({ "ghost": { "ref": "ghost" } });
    let p = sole_problem(value);
    assert_eq!(p.path, "nodes.ghost");
    assert_message_contains(&p, "no action has ref `ghost`");
}

#[test]
fn unknown_entrypoint_is_reported() {
    let mut value = two_echoes();
    value["entrypoint"] = json!({ "ref": "ghost" });
    let p = sole_problem(value);
    assert_eq!(p.path, "entrypoint.ref");
    assert_message_contains(&p, "unknown node `ghost`");
}

#[test]
fn duplicate_edge_ids_are_reported_at_the_second_edge() {
    let p = sole_problem(workflow(
        json!([echo("a"), echo("b"), echo("c")]),
        json!([
            { "id": "e1", "sourceRef": "a", "targetRef": "b" },
            { "id": "e1", "sourceRef": "a", "targetRef": "c" }
        ]),
    ));
    assert_eq!(p.path, "edges[1].id");
    assert_message_contains(&p, "duplicate edge id `e1`");
    assert_message_contains(&p, "edges[0]");
}

#[test]
fn every_repeat_of_a_duplicate_edge_id_names_its_first_use() {
    let found = problems(workflow(
        json!([echo("a"), echo("b"), echo("c")]),
        json!([
            { "id": "e", "sourceRef": "a", "targetRef": "b" },
            { "id": "e", "sourceRef": "a", "targetRef": "c" },
            { "id": "e", "sourceRef": "b", "targetRef": "c" }
        ]),
    ));
    assert_eq!(paths(&found), ["edges[1].id", "edges[2].id"]);
    for p in &found {
        assert_message_contains(p, "first used at edges[0]");
    }
}

#[test]
fn derived_edge_id_does_not_collide_with_a_given_id() {
    // Ids may be omitted; omitting one must not make a definition invalid.
    for edges in [
        json!([{ "id": "a->b", "sourceRef": "a", "targetRef": "b" }, edge("a", "b")]),
        json!([edge("a", "b"), { "id": "a->b", "sourceRef": "a", "targetRef": "b" }]),
    ] {
        let g = graph(workflow(json!([echo("a"), echo("b")]), edges));
        let ids: BTreeSet<String> = edge_ids(&g).into_iter().collect();
        assert_eq!(ids.len(), 2, "edge ids are unique: {ids:?}");
    }
}

// ---------------------------------------------------------------------------------------
// Top level and runners
// ---------------------------------------------------------------------------------------

#[test]
fn version_3_is_refused() {
    let mut value = two_echoes();
    value["version"] = json!(3);
    let p = sole_problem(value);
    assert_eq!(p.path, "version");
    assert_message_contains(&p, "version must be 1 or 2, got 3");
}

#[test]
fn version_1_with_edges_takes_the_edges_as_given() {
    let mut value = two_echoes();
    value["version"] = json!(1);
    let g = graph(value);
    assert_eq!(g.edges.len(), 1);
    assert!(g.warnings.is_empty());
}

#[test]
fn version_defaults_to_2() {
    let def = definition(json!({ "title": "t", "actions": [echo("a")] }));
    assert_eq!(def.version, 2);
}

#[test]
fn empty_actions_are_refused() {
    let p = sole_problem(json!({ "version": 2, "title": "t", "actions": [] }));
    assert_eq!(p.path, "actions");
    assert_message_contains(&p, "at least one action");
}

#[test]
fn remote_runner_is_refused_as_not_offered_yet() {
    let p = sole_problem(workflow(
        json!([{ "ref": "a", "componentId": "core.echo",
                 "runner": { "kind": "remote", "queue": "gpu" } }]),
        json!([]),
    ));
    assert_eq!(p.path, "actions[0].runner.kind");
    assert_message_contains(&p, "`remote` runner");
}

#[test]
fn a_runner_that_is_the_components_own_is_accepted() {
    graph(workflow(
        json!([
            { "ref": "a", "componentId": "core.echo", "runner": { "kind": "inline" } },
            { "ref": "b", "componentId": "core.process", "params": { "command": ["true"] },
              "runner": { "kind": "process" } }
        ]),
        json!([edge("a", "b")]),
    ));
}

#[test]
fn a_runner_the_component_does_not_run_on_is_refused_not_ignored() {
    let found = problems(workflow(
        json!([
            { "ref": "a", "componentId": "core.echo", "runner": { "kind": "process" } },
            { "ref": "b", "componentId": "core.process", "params": { "command": ["true"] },
              "runner": { "kind": "inline" } }
        ]),
        json!([]),
    ));
    assert_eq!(
        paths(&found),
        ["actions[0].runner.kind", "actions[1].runner.kind"]
    );
    assert_message_contains(
        &found[0],
        "component `core.echo` runs `inline`, not `process`",
    );
    assert_message_contains(
        &found[1],
        "component `core.process` runs `process`, not `inline`",
    );
}

#[test]
fn runner_options_are_refused_not_ignored() {
    let p = sole_problem(workflow(
        json!([{ "ref": "a", "componentId": "core.echo",
                 "runner": { "kind": "inline", "image": "alpine:3", "cpu": 2 } }]),
        json!([]),
    ));
    assert_eq!(p.path, "actions[0].runner");
    assert_message_contains(&p, "runner options are not supported: `cpu`, `image`");
}

// ---------------------------------------------------------------------------------------
// Every problem at once
// ---------------------------------------------------------------------------------------

fn many_problems() -> Value {
    json!({
        "version": 2,
        "title": "many problems",
        "entrypoint": { "ref": "nowhere" },
        "nodes": {
            "join": { "ref": "join", "joinStrategy": "quorum", "quorum": 5, "timeoutSeconds": -1 },
            "ghost": { "ref": "ghost" }
        },
        "edges": [
            { "id": "e1", "sourceRef": "start", "targetRef": "scan" },
            { "id": "e2", "sourceRef": "scan", "targetRef": "missing" },
            { "id": "e3", "sourceRef": "scan", "targetRef": "join" },
            { "id": "e3", "sourceRef": "start", "targetRef": "join" },
            { "id": "e5", "sourceRef": "loop1", "targetRef": "loop2" },
            { "id": "e6", "sourceRef": "loop2", "targetRef": "loop1" }
        ],
        "dependencyCounts": { "scan": 3 },
        "actions": [
            { "ref": "start", "componentId": "core.workflow.entrypoint" },
            { "ref": "scan", "componentId": "core.sleep", "dependsOn": ["start", "join"] },
            { "ref": "scan", "componentId": "core.echo" },
            { "ref": "join", "componentId": "core.echo",
              "inputMappings": { "url": { "sourceRef": "loop1", "sourceHandle": "url" } },
              "retryPolicy": { "maxAttempts": 0.5, "jitter": 2 } },
            { "ref": "loop1", "componentId": "core.nope" },
            { "ref": "loop2", "componentId": "core.echo", "runner": { "kind": "remote" } }
        ],
        "config": { "maxParallelism": 0 }
    })
}

#[test]
fn several_problems_in_one_definition_are_all_reported_at_once() {
    let found = problems(many_problems());
    let got: BTreeSet<&str> = paths(&found).into_iter().collect();
    let expected: BTreeSet<&str> = [
        "actions[2].ref",
        "actions[4].componentId",
        "actions[5].runner.kind",
        "nodes.ghost",
        "entrypoint.ref",
        "edges[1].targetRef",
        "edges[3].id",
        "actions[1]",
        "nodes.join.timeoutSeconds",
        "actions[3].retryPolicy.maxAttempts",
        "actions[3].retryPolicy.jitter",
        "actions[3].inputMappings.url.sourceRef",
        "nodes.join.quorum",
        "edges",
        "config.maxParallelism",
    ]
    .into_iter()
    .collect();
    assert_eq!(got, expected, "all problems: {found:#?}");
    assert_eq!(found.len(), expected.len(), "each problem once: {found:#?}");
}

#[test]
fn the_full_error_text_lists_every_problem_with_its_path() {
    let err = error_of_definition(&definition(many_problems()));
    insta::assert_snapshot!("many_problems_error_text", err.to_string());
}

#[test]
fn load_str_reports_the_same_problems_as_validate() {
    let text = many_problems().to_string();
    let Err(LoadError::Invalid(err)) = load_str(&text, Format::Json, &registry()) else {
        panic!("expected LoadError::Invalid");
    };
    assert_eq!(err, error_of_definition(&definition(many_problems())));
}

// ---------------------------------------------------------------------------------------
// Parse errors
// ---------------------------------------------------------------------------------------

#[test]
fn unknown_field_anywhere_is_refused_with_its_own_path() {
    let with_action_field = |field: &str, value: Value| {
        let mut action = echo("a");
        action[field] = value;
        action
    };
    let cases: Vec<(Value, &str)> = vec![
        (
            json!({ "title": "t", "actions": [echo("a")], "bogus": 1 }),
            "bogus",
        ),
        (
            json!({ "title": "t", "actions": [with_action_field("bogus", json!(1))] }),
            "actions[0].bogus",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "nodes": { "a": { "ref": "a", "bogus": 1 } } }),
            "nodes.a.bogus",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "nodes": { "a": { "ref": "a", "toolConfig": { "bogus": 1 } } } }),
            "nodes.a.toolConfig.bogus",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "edges": [{ "sourceRef": "a", "targetRef": "a", "bogus": 1 }] }),
            "edges[0].bogus",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")], "entrypoint": { "ref": "a", "bogus": 1 } }),
            "entrypoint.bogus",
        ),
        (
            json!({ "title": "t",
                    "actions": [with_action_field("retryPolicy", json!({ "bogus": 1 }))] }),
            "actions[0].retryPolicy.bogus",
        ),
        (
            json!({ "title": "t", "actions": [with_action_field("retryPolicy",
                    json!({ "errorTypePolicies": { "Timeout": { "bogus": 1 } } }))] }),
            "actions[0].retryPolicy.errorTypePolicies.Timeout.bogus",
        ),
        (
            json!({ "title": "t", "actions": [with_action_field("inputMappings",
                    json!({ "url": { "sourceRef": "a", "sourceHandle": "x", "bogus": 1 } }))] }),
            "actions[0].inputMappings.url.bogus",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")], "config": { "bogus": 1 } }),
            "config.bogus",
        ),
    ];
    for (value, expected_path) in cases {
        let (path, message) = shape_error_json(value);
        assert_eq!(path, expected_path);
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }
}

#[test]
fn misspelled_field_is_refused_rather_than_dropped() {
    let (path, message) = shape_error_json(json!({
        "title": "t",
        "actions": [{ "ref": "a", "componentId": "core.echo", "retryPolicy": { "maxAttempt": 3 } }]
    }));
    assert_eq!(path, "actions[0].retryPolicy.maxAttempt");
    assert!(message.contains("unknown field `maxAttempt`"), "{message}");
    assert!(
        message.contains("maxAttempts"),
        "lists the expected fields: {message}"
    );
}

#[test]
fn runner_options_are_not_unknown_fields() {
    let def = definition(json!({
        "title": "t",
        "actions": [{ "ref": "a", "componentId": "core.echo",
                      "runner": { "kind": "process", "anything": { "goes": true } } }]
    }));
    let runner = def.actions[0].runner.as_ref().unwrap();
    assert_eq!(
        runner.options.get("anything"),
        Some(&json!({ "goes": true }))
    );
}

#[test]
fn wrong_type_is_refused_with_the_nested_path() {
    let cases: Vec<(Value, &str, &str)> = vec![
        (
            json!({ "title": "t", "actions": [{ "ref": "a", "componentId": "core.echo",
                    "inputMappings": { "url": { "sourceRef": 1, "sourceHandle": "x" } } }] }),
            "actions[0].inputMappings.url.sourceRef",
            "invalid type",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "nodes": { "a": { "ref": "a", "quorum": "two" } } }),
            "nodes.a.quorum",
            "invalid type",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "edges": [{ "sourceRef": "a", "targetRef": "a", "kind": "sometimes" }] }),
            "edges[0].kind",
            "unknown variant `sometimes`",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")],
                    "nodes": { "a": { "ref": "a", "joinStrategy": "most" } } }),
            "nodes.a.joinStrategy",
            "unknown variant `most`",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")], "dependencyCounts": { "a": -1 } }),
            "dependencyCounts.a",
            "invalid value",
        ),
        (
            json!({ "title": "t", "actions": [{ "ref": "a", "componentId": "core.echo",
                    "retryPolicy": { "nonRetryableErrorTypes": ["A", 7] } }] }),
            "actions[0].retryPolicy.nonRetryableErrorTypes[1]",
            "invalid type",
        ),
        (
            json!({ "title": "t", "actions": [echo("a")], "config": { "failurePolicy": "panic" } }),
            "config.failurePolicy",
            "unknown variant `panic`",
        ),
        (
            json!({ "title": "t", "actions": [{ "ref": "a", "componentId": "core.echo",
                    "runner": { "kind": "cloud" } }] }),
            "actions[0].runner.kind",
            "unknown variant `cloud`",
        ),
    ];
    for (value, expected_path, expected_message) in cases {
        let (path, message) = shape_error_json(value);
        assert_eq!(path, expected_path);
        assert!(message.contains(expected_message), "{path}: {message}");
    }
}

#[test]
fn missing_required_field_is_refused_with_the_path_of_its_object() {
    let (path, message) = shape_error_json(json!({ "actions": [echo("a")] }));
    assert_eq!(path, "(top level)");
    assert!(message.contains("missing field `title`"), "{message}");
    let (path, message) = shape_error_json(json!({ "title": "t", "actions": [{ "ref": "a" }] }));
    assert_eq!(path, "actions[0]");
    assert!(message.contains("missing field `componentId`"), "{message}");
}

#[test]
fn json_and_yaml_report_the_same_path_and_sentence() {
    let cases = [
        json!({ "title": "t", "actions": [echo("a")], "bogus": 1 }),
        json!({ "title": "t", "actions": [echo("a")],
                "nodes": { "a": { "ref": "a", "bogus": true } } }),
        json!({ "title": "t", "actions": [{ "ref": "a", "componentId": "core.echo",
                "retryPolicy": { "maxAttempts": "three" } }] }),
        json!({ "title": "t", "actions": [{ "ref": "a", "componentId": "core.echo",
                "inputMappings": { "url": { "sourceRef": 1, "sourceHandle": "x" } } }] }),
        json!({ "title": "t", "actions": [echo("a")],
                "edges": [{ "sourceRef": "a", "targetRef": "a", "kind": "sometimes" }] }),
        json!({ "title": "t", "actions": [echo("a")], "config": { "maxParallelism": [] } }),
    ];
    for value in cases {
        let json_text = serde_json::to_string_pretty(&value).unwrap();
        let yaml_text = serde_saphyr::to_string(&value).unwrap();
        assert!(
            !yaml_text.trim_start().starts_with('{'),
            "real YAML: {yaml_text}"
        );
        let (json_path, json_message) = shape_error(&json_text, Format::Json);
        let (yaml_path, yaml_message) = shape_error(&yaml_text, Format::Yaml);
        assert_eq!(json_path, yaml_path, "YAML:\n{yaml_text}");
        // JSON adds the line and column; the sentence itself is the same.
        assert!(
            json_message.starts_with(&yaml_message),
            "JSON: {json_message}\nYAML: {yaml_message}"
        );
    }
}

#[test]
fn hand_written_yaml_error_names_the_nested_path() {
    let text = "title: t\nactions:\n  - ref: a\n    componentId: core.echo\n    retryPolicy:\n      maxAttempts: 3\n      backoff: 2\n";
    let (path, message) = shape_error(text, Format::Yaml);
    assert_eq!(path, "actions[0].retryPolicy.backoff");
    assert!(message.contains("unknown field `backoff`"), "{message}");
}

#[test]
fn malformed_text_is_a_syntax_error_in_either_format() {
    assert!(matches!(
        parse_definition("{\"title\": \"t\", ", Format::Json),
        Err(ParseError::Syntax { format: "JSON", .. })
    ));
    assert!(matches!(
        parse_definition("title: [unclosed\n", Format::Yaml),
        Err(ParseError::Syntax { format: "YAML", .. })
    ));
    assert!(matches!(
        parse_definition("{\"title\":\"t\",\"actions\":[]} trailing", Format::Json),
        Err(ParseError::Syntax { format: "JSON", .. })
    ));
}

#[test]
fn yaml_non_finite_numbers_are_refused_not_dropped() {
    // serde_json::Value cannot hold NaN or infinity; a YAML `.inf` must not silently
    // become "no timeout".
    for bad in [".inf", "-.inf", ".nan"] {
        let text = format!(
            "title: t\nnodes:\n  a:\n    ref: a\n    timeoutSeconds: {bad}\nactions:\n  - ref: a\n    componentId: core.echo\n"
        );
        match parse_definition(&text, Format::Yaml) {
            Err(ParseError::Syntax { format, message }) => {
                assert_eq!(format, "YAML");
                assert!(message.contains(bad), "{message}");
                assert!(message.contains("line 5"), "{message}");
            }
            other => panic!("`{bad}` should be refused, got {other:?}"),
        }
    }
}

/// YAML 1.1's boolean words that YAML 1.2's core schema reads as strings.
const YAML_1_1_BOOLEANS: [&str; 16] = [
    "y", "Y", "yes", "Yes", "YES", "n", "N", "no", "No", "NO", "on", "On", "ON", "off", "Off",
    "OFF",
];

#[test]
fn yaml_1_1_boolean_words_stay_strings_as_refs_handles_and_param_values() {
    for word in YAML_1_1_BOOLEANS {
        let text = format!(
            "title: t\n\
             nodes:\n  {word}: {{ ref: {word}, label: {word} }}\n\
             edges:\n  - {{ sourceRef: {word}, targetRef: b, sourceHandle: {word} }}\n\
             actions:\n\
             \x20 - {{ ref: {word}, componentId: core.branch, params: {{ ports: [{word}], flag: {word} }} }}\n\
             \x20 - ref: b\n    componentId: core.echo\n    params: {{ answer: {word} }}\n\
             \x20   inputMappings: {{ {word}: {{ sourceRef: {word}, sourceHandle: {word} }} }}\n"
        );
        let g = match load_str(&text, Format::Yaml, &registry()) {
            Ok(loaded) => loaded.graph,
            Err(e) => panic!("`{word}`:\n{text}\n{e}"),
        };
        let source = g
            .find(word)
            .unwrap_or_else(|| panic!("a node named `{word}`"));
        assert_eq!(g.edges[0].source_handle.as_deref(), Some(word));
        assert_eq!(g.node(source).params["flag"], json!(word));
        assert_eq!(g.node(source).params["ports"], json!([word]));
        let b = g.node(g.find("b").expect("b"));
        assert_eq!(b.params["answer"], json!(word));
        assert_eq!(b.input_mappings[0].target, word);
        assert_eq!(b.input_mappings[0].source_handle, word);
    }
}

#[test]
fn yaml_1_2_booleans_are_still_booleans() {
    for (word, value) in [("true", true), ("True", true), ("FALSE", false)] {
        let text = format!(
            "title: t\nactions:\n  - {{ ref: a, componentId: core.echo, params: {{ on: {word} }} }}\n"
        );
        let g = load_str(&text, Format::Yaml, &registry())
            .expect("valid")
            .graph;
        let params = &g.node(g.find("a").expect("a")).params;
        assert_eq!(params["on"], json!(value), "`{word}`");
    }
}

// ---------------------------------------------------------------------------------------
// Round trip
// ---------------------------------------------------------------------------------------

fn assert_round_trips(def: &WorkflowDefinition) {
    let text = serde_json::to_string(def).expect("serialises");
    let back = parse_definition(&text, Format::Json)
        .unwrap_or_else(|e| panic!("serialised form does not parse: {e}\n{text}"));
    assert_eq!(
        &back, def,
        "JSON round trip changed the definition:\n{text}"
    );
}

#[test]
fn every_example_round_trips_through_json_unchanged() {
    for path in example_files() {
        assert_round_trips(&read_example(&path));
    }
}

#[test]
fn every_example_validates_and_its_json_and_yaml_forms_are_the_same_definition() {
    for path in example_files() {
        let def = read_example(&path);
        graph_of_definition(&def);
        if path.extension().and_then(|e| e.to_str()) == Some("yaml") {
            let json_twin = path.with_extension("json");
            assert_eq!(
                def,
                read_example(&json_twin),
                "{} and {} differ",
                path.display(),
                json_twin.display()
            );
        }
    }
}

/// A definition carrying every field ShipSec Studio's compiler emits.
fn shipsec_shaped() -> Value {
    json!({
        "version": 2,
        "title": "Subdomain recon",
        "description": "Compiled by ShipSec Studio",
        "entrypoint": { "ref": "trigger" },
        "nodes": {
            "trigger": {
                "ref": "trigger", "label": "Manual trigger", "joinStrategy": "all",
                "maxConcurrency": 1, "groupId": "g-entry", "streamId": "stream-0",
                "mode": "normal", "connectedToolNodeIds": []
            },
            "enum": {
                "ref": "enum", "label": "Subdomain enumeration", "joinStrategy": "all",
                "maxConcurrency": 4, "groupId": "scanners", "streamId": "stream-1",
                "mode": "normal"
            },
            "lookup": {
                "ref": "lookup", "label": "DNS lookup tool", "joinStrategy": "all",
                "groupId": "scanners", "streamId": "stream-1", "mode": "tool",
                "toolConfig": { "boundInputIds": ["domain"], "exposedInputIds": ["query"] }
            },
            "agent": {
                "ref": "agent", "label": "Triage agent", "joinStrategy": "any",
                "streamId": "stream-2", "mode": "normal",
                "connectedToolNodeIds": ["lookup"]
            },
            "alert": {
                "ref": "alert", "label": "Alert on failure", "joinStrategy": "all",
                "mode": "normal"
            }
        },
        "edges": [
            { "id": "reactflow__edge-trigger-enum", "sourceRef": "trigger", "targetRef": "enum",
              "sourceHandle": "domain", "targetHandle": "domain", "kind": "success" },
            { "id": "reactflow__edge-trigger-lookup", "sourceRef": "trigger", "targetRef": "lookup",
              "sourceHandle": "domain", "targetHandle": "domain", "kind": "success" },
            { "id": "reactflow__edge-enum-agent", "sourceRef": "enum", "targetRef": "agent",
              "sourceHandle": "subdomains", "targetHandle": "context", "kind": "success" },
            { "id": "reactflow__edge-lookup-agent", "sourceRef": "lookup", "targetRef": "agent",
              "sourceHandle": "records", "targetHandle": "tools", "kind": "success" },
            { "id": "reactflow__edge-enum-alert", "sourceRef": "enum", "targetRef": "alert",
              "kind": "error" }
        ],
        "dependencyCounts": { "trigger": 0, "enum": 1, "lookup": 1, "agent": 2, "alert": 1 },
        "actions": [
            {
                "ref": "trigger", "componentId": "core.workflow.entrypoint",
                "params": { "runtimeInputs": [
                    { "id": "domain", "label": "Domain", "type": "text", "required": true }
                ] },
                "inputOverrides": {},
                "dependsOn": [],
                "inputMappings": {}
            },
            {
                "ref": "enum", "componentId": "core.flaky",
                "params": { "failures": 1, "wordlist": "top-1000" },
                "inputOverrides": { "threads": 8 },
                "dependsOn": ["trigger"],
                "inputMappings": {
                    "domain": { "sourceRef": "trigger", "sourceHandle": "domain" }
                },
                "retryPolicy": {
                    "maxAttempts": 3,
                    "initialIntervalSeconds": 1,
                    "maximumIntervalSeconds": 30,
                    "backoffCoefficient": 2,
                    "nonRetryableErrorTypes": ["AuthenticationError", "ValidationError"],
                    "errorTypePolicies": {
                        "RateLimitError": { "retryable": true, "retryDelayMs": 5000 },
                        "NotFoundError": { "retryable": false }
                    }
                }
            },
            {
                "ref": "lookup", "componentId": "core.sleep",
                "params": {},
                "inputOverrides": { "ms": 5 },
                "dependsOn": ["trigger"],
                "inputMappings": {
                    "domain": { "sourceRef": "trigger", "sourceHandle": "domain" }
                }
            },
            {
                "ref": "agent", "componentId": "core.echo",
                "params": { "model": "gpt", "prompt": "triage" },
                "inputOverrides": {},
                "dependsOn": ["enum", "lookup"],
                "inputMappings": {
                    "context": { "sourceRef": "enum", "sourceHandle": "__self__" },
                    "tools": { "sourceRef": "lookup", "sourceHandle": "records" }
                }
            },
            {
                "ref": "alert", "componentId": "core.echo",
                "params": { "channel": "#sec" },
                "inputOverrides": {},
                "dependsOn": ["enum"],
                "inputMappings": {}
            }
        ],
        "config": { "environment": "default", "timeoutSeconds": 0 }
    })
}

#[test]
fn shipsec_shaped_definition_round_trips_and_validates_unchanged() {
    let def = definition(shipsec_shaped());
    assert_round_trips(&def);
    let g = graph_of_definition(&def);
    assert_eq!(g.len(), 5);
    assert_eq!(g.edges.len(), 5);
    assert_eq!(g.entrypoint, Some(ix(&g, "trigger")));
    assert_eq!(
        g.settings.timeout, None,
        "timeoutSeconds 0 means no deadline"
    );
    assert_eq!(g.settings.environment.as_deref(), Some("default"));
    assert_eq!(g.node(ix(&g, "agent")).join, Join::Any);
    assert!(g.node(ix(&g, "enum")).handles_failure);
    assert_eq!(g.node(ix(&g, "enum")).retry.max_attempts, 3);
    assert_eq!(g.node(ix(&g, "enum")).max_concurrency, Some(4));
    assert_eq!(
        edge_ids(&g)[0],
        "reactflow__edge-trigger-enum",
        "given edge ids are kept"
    );
}

#[test]
fn shipsec_shaped_definition_keeps_the_fields_the_engine_does_not_interpret() {
    let def = definition(shipsec_shaped());
    let lookup = &def.nodes["lookup"];
    let tool = lookup.tool_config.as_ref().expect("toolConfig kept");
    assert_eq!(tool.bound_input_ids, ["domain"]);
    assert_eq!(tool.exposed_input_ids, ["query"]);
    assert_eq!(
        def.nodes["agent"].connected_tool_node_ids.as_deref(),
        Some(&["lookup".to_owned()][..])
    );
    let retry = def.actions[1].retry_policy.as_ref().unwrap();
    let policies = retry
        .error_type_policies
        .as_ref()
        .expect("errorTypePolicies kept");
    assert_eq!(policies["RateLimitError"].retryable, Some(true));
    assert_eq!(policies["RateLimitError"].retry_delay_ms, Some(5000.0));
    assert_eq!(def.dependency_counts.as_ref().unwrap()["trigger"], 0);
}

// ---------------------------------------------------------------------------------------
// Version 1 upgrade and edge ids
// ---------------------------------------------------------------------------------------

#[test]
fn version_1_edges_are_derived_from_depends_on_and_input_mappings() {
    let g = graph(json!({
        "version": 1,
        "title": "v1",
        "actions": [
            echo("a"),
            echo("m"),
            {
                "ref": "b", "componentId": "core.echo",
                "dependsOn": ["a"],
                "inputMappings": {
                    "fromA": { "sourceRef": "a", "sourceHandle": "x" },
                    "fromM": { "sourceRef": "m", "sourceHandle": "__self__" }
                }
            }
        ]
    }));
    // `a` is named by dependsOn and by a mapping: one edge. `m` only by a mapping: an edge.
    assert_eq!(edge_ids(&g), ["a->b", "m->b"]);
    assert_eq!(parents(&g, "b"), ["a", "m"]);
    assert!(g.edges.iter().all(|e| e.kind == EdgeKind::Success));
    assert_eq!(g.node(ix(&g, "b")).input_mappings.len(), 2);
}

#[test]
fn version_1_parent_named_twice_in_depends_on_gives_one_edge() {
    let g = graph(json!({
        "version": 1,
        "title": "v1",
        "actions": [echo("a"), { "ref": "b", "componentId": "core.echo", "dependsOn": ["a", "a"] }]
    }));
    assert_eq!(edge_ids(&g), ["a->b"]);
}

#[test]
fn version_1_upgrade_example_gets_its_edges() {
    let g = graph_of_definition(&read_example(&examples_dir().join("v1-upgrade.json")));
    assert_eq!(edge_ids(&g), ["start->lookup", "lookup->summarise"]);
    assert_eq!(g.entrypoint, Some(ix(&g, "start")));
}

#[test]
fn version_1_unknown_parents_are_reported_where_they_are_named() {
    let found = problems(json!({
        "version": 1,
        "title": "v1",
        "actions": [
            echo("a"),
            {
                "ref": "b", "componentId": "core.echo",
                "dependsOn": ["a", "ghost"],
                "inputMappings": { "url": { "sourceRef": "phantom", "sourceHandle": "url" } }
            }
        ]
    }));
    assert_eq!(
        paths(&found),
        [
            "actions[1].dependsOn[1]",
            "actions[1].inputMappings.url.sourceRef"
        ]
    );
    assert_message_contains(&found[0], "unknown node `ghost`");
    assert_message_contains(&found[1], "unknown node `phantom`");
}

#[test]
fn version_1_cycle_through_depends_on_is_reported() {
    let p = sole_problem(json!({
        "version": 1,
        "title": "v1",
        "actions": [
            { "ref": "a", "componentId": "core.echo", "dependsOn": ["b"] },
            { "ref": "b", "componentId": "core.echo", "dependsOn": ["a"] }
        ]
    }));
    assert_eq!(p.path, "edges");
    assert_eq!(p.message, "cycle: a -> b -> a");
}

#[test]
fn given_edge_ids_are_kept() {
    let g = graph(workflow(
        json!([echo("a"), echo("b")]),
        json!([{ "id": "my-edge", "sourceRef": "a", "targetRef": "b" }]),
    ));
    assert_eq!(edge_ids(&g), ["my-edge"]);
}

#[test]
fn missing_edge_ids_are_derived_and_numbered_on_repeated_pairs() {
    let g = graph(workflow(
        json!([echo("a"), echo("b"), echo("c")]),
        json!([
            edge("a", "b"),
            { "sourceRef": "a", "targetRef": "b", "sourceHandle": "other" },
            { "id": "kept", "sourceRef": "b", "targetRef": "c" },
            edge("b", "c")
        ]),
    ));
    assert_eq!(edge_ids(&g), ["a->b", "a->b#2", "kept", "b->c"]);
}

// ---------------------------------------------------------------------------------------
// Graph shape
// ---------------------------------------------------------------------------------------

fn recon() -> Graph {
    graph_of_definition(&read_example(&examples_dir().join("recon.json")))
}

#[test]
fn nodes_are_indexed_in_definition_order_and_found_by_ref() {
    let g = recon();
    let refs: Vec<&str> = g.nodes.iter().map(|n| &*n.node_ref).collect();
    assert_eq!(
        refs,
        [
            "start", "dns", "ports", "whois", "vulnscan", "notify", "report"
        ]
    );
    for (i, r) in refs.iter().enumerate() {
        assert_eq!(g.find(r), Some(NodeIx(i as u32)));
    }
    assert_eq!(g.find("nope"), None);
    assert_eq!(
        g.node_indices().collect::<Vec<_>>(),
        (0..7).map(NodeIx).collect::<Vec<_>>()
    );
}

#[test]
fn incoming_and_outgoing_edges_are_listed_in_edge_order() {
    let g = recon();
    let start = g.node(ix(&g, "start"));
    assert_eq!(start.outgoing, [EdgeIx(0), EdgeIx(1), EdgeIx(2), EdgeIx(3)]);
    assert!(start.incoming.is_empty());
    let report = g.node(ix(&g, "report"));
    assert_eq!(report.incoming, [EdgeIx(5), EdgeIx(6), EdgeIx(7)]);
    assert!(report.outgoing.is_empty());
    assert_eq!(parents(&g, "report"), ["dns", "ports", "whois"]);
    for (i, e) in g.edges.iter().enumerate() {
        assert!(g.node(e.source).outgoing.contains(&EdgeIx(i as u32)));
        assert!(g.node(e.target).incoming.contains(&EdgeIx(i as u32)));
    }
}

#[test]
fn a_node_handles_its_failure_exactly_when_it_has_an_outgoing_error_edge() {
    let g = recon();
    let handling: Vec<&str> = g
        .nodes
        .iter()
        .filter(|n| n.handles_failure)
        .map(|n| &*n.node_ref)
        .collect();
    assert_eq!(handling, ["vulnscan"]);
    assert_eq!(g.edge(EdgeIx(4)).kind, EdgeKind::Error);
}

#[test]
fn an_always_edge_does_not_handle_failure() {
    let g = graph(workflow(
        json!([echo("a"), echo("b")]),
        json!([{ "sourceRef": "a", "targetRef": "b", "kind": "always" }]),
    ));
    assert_eq!(g.edges[0].kind, EdgeKind::Always);
    assert!(!g.node(ix(&g, "a")).handles_failure);
}

#[test]
fn topo_order_is_a_topological_order() {
    assert_topological(&recon());
    // Actions listed targets first, so definition order is not an answer.
    let g = graph(workflow(
        json!([echo("e"), echo("d"), echo("c"), echo("b"), echo("a")]),
        json!([
            edge("a", "b"),
            edge("b", "c"),
            edge("a", "d"),
            edge("c", "e"),
            edge("d", "e")
        ]),
    ));
    assert_topological(&g);
    assert_eq!(g.topo_order.first(), Some(&ix(&g, "a")));
    assert_eq!(g.topo_order.last(), Some(&ix(&g, "e")));
}

#[test]
fn join_strategies_are_parsed() {
    let g = graph(json!({
        "version": 2,
        "title": "joins",
        "nodes": {
            "any": { "ref": "any", "joinStrategy": "any" },
            "first": { "ref": "first", "joinStrategy": "first" },
            "q": { "ref": "q", "joinStrategy": "quorum", "quorum": 2 },
            "all": { "ref": "all", "joinStrategy": "all" }
        },
        "edges": [
            edge("a", "any"), edge("b", "any"),
            edge("a", "first"), edge("b", "first"),
            edge("a", "q"), edge("b", "q"),
            edge("a", "all"), edge("b", "all"),
            edge("a", "default"), edge("b", "default")
        ],
        "actions": [
            echo("a"), echo("b"), echo("any"), echo("first"), echo("q"), echo("all"),
            echo("default")
        ]
    }));
    let join = |r: &str| g.node(ix(&g, r)).join;
    assert_eq!(join("any"), Join::Any);
    assert_eq!(join("first"), Join::First);
    assert_eq!(join("q"), Join::Quorum(2));
    assert_eq!(join("all"), Join::All);
    assert_eq!(join("default"), Join::All);
}

#[test]
fn defaults_apply_when_fields_are_absent() {
    let g = graph(two_echoes());
    let a = g.node(ix(&g, "a"));
    assert_eq!(a.retry, RetryPolicy::default());
    assert_eq!(a.retry.max_attempts, 1);
    assert_eq!(a.join, Join::All);
    assert_eq!(a.on_failure, None);
    assert_eq!(a.attempt_timeout, None);
    assert_eq!(a.max_concurrency, None);
    assert_eq!(g.entrypoint, None, "no entrypoint given or implied");
    assert_eq!(g.settings.failure_policy, FailurePolicy::SkipDependents);
    assert_eq!(g.settings.timeout, None);
    assert_eq!(g.settings.max_parallelism, None);
    assert_eq!(g.failure_policy(ix(&g, "a")), FailurePolicy::SkipDependents);
}

#[test]
fn retry_policy_fields_override_the_defaults() {
    let g = graph_of_definition(&read_example(&examples_dir().join("retry.json")));
    let retry = &g.node(ix(&g, "enrich")).retry;
    assert_eq!(retry.max_attempts, 4);
    assert_eq!(retry.initial_interval, Duration::from_millis(100));
    assert_eq!(retry.maximum_interval, Duration::from_secs(1));
    assert_eq!(retry.backoff_coefficient, 2.0);
    assert_eq!(retry.non_retryable_error_types, ["AuthError"]);
    assert_eq!(retry.jitter, 0.0);
}

#[test]
fn fail_fast_config_makes_unhandled_failures_fail_the_run() {
    let mut value = two_echoes();
    value["config"] = json!({ "failurePolicy": "failFast" });
    let g = graph(value.clone());
    assert_eq!(g.settings.failure_policy, FailurePolicy::FailRun);
    assert_eq!(g.failure_policy(ix(&g, "a")), FailurePolicy::FailRun);

    value["config"] = json!({ "failurePolicy": "continue" });
    assert_eq!(
        graph(value).settings.failure_policy,
        FailurePolicy::SkipDependents
    );
}

#[test]
fn node_on_failure_overrides_the_run_failure_policy() {
    let mut value = two_echoes();
    value["config"] = json!({ "failurePolicy": "failFast" });
    value["nodes"] = json!({ "a": { "ref": "a", "onFailure": "skipDependents" } });
    let g = graph(value.clone());
    assert_eq!(g.failure_policy(ix(&g, "a")), FailurePolicy::SkipDependents);
    assert_eq!(g.failure_policy(ix(&g, "b")), FailurePolicy::FailRun);

    value["config"] = json!({});
    value["nodes"] = json!({ "b": { "ref": "b", "onFailure": "failRun" } });
    let g = graph(value);
    assert_eq!(g.failure_policy(ix(&g, "a")), FailurePolicy::SkipDependents);
    assert_eq!(g.failure_policy(ix(&g, "b")), FailurePolicy::FailRun);
}

#[test]
fn entrypoint_is_the_given_ref_or_else_the_first_entrypoint_component() {
    let g = graph(workflow(
        json!([
            echo("x"),
            { "ref": "s1", "componentId": "core.workflow.entrypoint" },
            { "ref": "s2", "componentId": "core.workflow.entrypoint" }
        ]),
        json!([]),
    ));
    assert_eq!(g.entrypoint, Some(ix(&g, "s1")));

    let mut value = workflow(
        json!([echo("x"), { "ref": "s1", "componentId": "core.workflow.entrypoint" }]),
        json!([]),
    );
    value["entrypoint"] = json!({ "ref": "x" });
    let g = graph(value);
    assert_eq!(g.entrypoint, Some(ix(&g, "x")));
}

#[test]
fn input_mappings_are_resolved_to_parent_indices() {
    let g = recon();
    let report = g.node(ix(&g, "report"));
    let mut resolved: Vec<(&str, &str, &str)> = report
        .input_mappings
        .iter()
        .map(|m| {
            (
                m.target.as_str(),
                &*g.node(m.source).node_ref,
                m.source_handle.as_str(),
            )
        })
        .collect();
    resolved.sort();
    assert_eq!(
        resolved,
        [
            ("dns", "dns", "__self__"),
            ("ports", "ports", "open"),
            ("registrar", "whois", "registrar")
        ]
    );
}

// ---------------------------------------------------------------------------------------
// Scale
// ---------------------------------------------------------------------------------------

/// One entrypoint, `width` `core.echo` workers, one join of all of them.
fn fan_out_fan_in(width: usize) -> Value {
    let mut actions = vec![json!({ "ref": "start", "componentId": "core.workflow.entrypoint" })];
    let mut edges = Vec::with_capacity(2 * width);
    for i in 0..width {
        let w = format!("w{i}");
        actions.push(echo(&w));
        edges.push(edge("start", &w));
        edges.push(edge(&w, "join"));
    }
    actions.push(echo("join"));
    json!({
        "version": 2,
        "title": "fan-out fan-in",
        "entrypoint": { "ref": "start" },
        "edges": edges,
        "actions": actions
    })
}

#[test]
fn ten_thousand_node_fan_out_fan_in_validates() {
    let g = graph(fan_out_fan_in(9_998));
    assert_eq!(g.len(), 10_000);
    assert_eq!(g.edges.len(), 2 * 9_998);
    assert_eq!(g.node(ix(&g, "join")).incoming.len(), 9_998);
    assert_eq!(g.node(ix(&g, "start")).outgoing.len(), 9_998);
    assert_eq!(g.topo_order.first(), Some(&ix(&g, "start")));
    assert_eq!(g.topo_order.last(), Some(&ix(&g, "join")));
    assert_topological(&g);
}

// ---------------------------------------------------------------------------------------
// Mermaid
// ---------------------------------------------------------------------------------------

#[test]
fn recon_renders_as_a_mermaid_flowchart() {
    insta::assert_snapshot!("recon_mermaid", render(&recon()));
}

#[test]
fn mermaid_shows_joins_edge_kinds_and_handles_and_escapes_labels() {
    let g = graph(json!({
        "version": 2,
        "title": "mermaid",
        "nodes": {
            "q": { "ref": "q", "label": "Say \"hi\" <b>&</b>", "joinStrategy": "quorum", "quorum": 1 },
            "f": { "ref": "f", "joinStrategy": "first" }
        },
        "edges": [
            { "sourceRef": "a", "targetRef": "q", "sourceHandle": "out" },
            { "sourceRef": "a", "targetRef": "f", "kind": "error" },
            { "sourceRef": "q", "targetRef": "f", "kind": "always", "sourceHandle": "done" }
        ],
        "actions": [echo("a"), echo("q"), echo("f")]
    }));
    insta::assert_snapshot!("mermaid_joins_kinds_handles", render(&g));
}

// ---------------------------------------------------------------------------------------
// CLI
// ---------------------------------------------------------------------------------------

fn shipsec(args: &[&std::ffi::OsStr]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_shipsec"))
        .args(args)
        .output()
        .expect("the shipsec binary runs")
}

/// A file under the system temp dir, unique to this process and test; removed on drop.
struct TempFile(PathBuf);

impl TempFile {
    fn new(name: &str, contents: &str) -> TempFile {
        let dir = std::env::temp_dir().join(format!(
            "shipsec-definition-test-{}-{name}",
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let path = dir.join(format!("{name}.json"));
        std::fs::write(&path, contents).expect("temp file");
        TempFile(path)
    }
}

impl Drop for TempFile {
    fn drop(&mut self) {
        if let Some(dir) = self.0.parent() {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

#[test]
fn cli_validate_accepts_a_valid_example_with_exit_0() {
    let file = examples_dir().join("recon.json");
    let out = shipsec(&["validate".as_ref(), file.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("valid (7 nodes, 8 edges)"), "{stdout}");
}

#[test]
fn cli_validate_refuses_an_invalid_file_with_exit_2_and_every_path() {
    let file = TempFile::new("invalid", &many_problems().to_string());
    let out = shipsec(&["validate".as_ref(), file.0.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    for path in [
        "actions[2].ref",
        "edges[1].targetRef",
        "actions[3].inputMappings.url.sourceRef",
        "nodes.join.quorum",
        "config.maxParallelism",
    ] {
        assert!(
            stderr.contains(&format!("{path}: ")),
            "missing {path} in:\n{stderr}"
        );
    }
    assert!(out.stdout.is_empty(), "nothing on stdout");
}

#[test]
fn cli_validate_refuses_a_misshaped_file_with_exit_2_and_the_path() {
    let file = TempFile::new(
        "misshaped",
        r#"{"title":"t","actions":[{"ref":"a","componentId":"core.echo","bogus":1}]}"#,
    );
    let out = shipsec(&["validate".as_ref(), file.0.as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "stderr: {stderr}");
    assert!(stderr.contains("actions[0]"), "{stderr}");
    assert!(stderr.contains("unknown field `bogus`"), "{stderr}");
}

#[test]
fn cli_graph_prints_a_mermaid_flowchart() {
    let file = examples_dir().join("race.yaml");
    let out = shipsec(&["graph".as_ref(), file.as_os_str()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "stderr: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("flowchart TD\n"), "{stdout}");
    assert!(stdout.contains("join: first"), "{stdout}");
}
