//! The layers run one way (`docs/architecture.md`), checked on the sources: nothing under
//! `src/runtime` reaches the actors, the mailboxes, the service, the workers or the chaos
//! hooks; nothing under `src/runtime/semantics` or `src/runtime/definition` uses tokio,
//! ractor, a clock or randomness; and nothing under `src/runtime/semantics` does I/O.
//!
//! The checker is tested on sources it must refuse, so a forbidden `use` added to the tree
//! fails this test.

use std::path::{Path, PathBuf};

/// A rule: the files under `dir` must not name any of `forbidden`.
struct Rule {
    dir: &'static str,
    why: &'static str,
    forbidden: &'static [&'static str],
}

/// The modules of the crate that the runtime must not import.
const OUTER_LAYERS: &[&str] = &["actors", "messages", "service", "worker", "chaos", "cli"];

/// What pure code never names: an async runtime, actors, a clock or randomness.
const IMPURE: &[&str] = &[
    "tokio",
    "ractor",
    "SystemTime::now",
    "Instant::now",
    "Utc::now",
    "rand",
    "getrandom",
    "uuid",
    "std::thread",
];

const RULES: &[Rule] = &[
    Rule {
        dir: "src/runtime/semantics",
        why: "the semantics are pure: no async runtime, actors, clock or randomness",
        forbidden: IMPURE,
    },
    Rule {
        dir: "src/runtime/definition",
        why: "definitions are data: no async runtime, actors, clock or randomness",
        forbidden: IMPURE,
    },
    Rule {
        dir: "src/runtime/semantics",
        why: "the semantics do no I/O",
        forbidden: &[
            "std::fs",
            "std::io",
            "std::net",
            "std::process",
            "std::env",
            "fjall",
            "hyper",
            "reqwest",
        ],
    },
];

/// The source without comments and string literals, so that words in prose or in
/// messages are not taken for paths.
fn code_of(source: &str) -> String {
    let mut out = String::with_capacity(source.len());
    let mut chars = source.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '/' if chars.peek() == Some(&'/') => {
                for c in chars.by_ref() {
                    if c == '\n' {
                        out.push('\n');
                        break;
                    }
                }
            }
            '/' if chars.peek() == Some(&'*') => {
                chars.next();
                let mut depth = 1;
                let mut last = ' ';
                for c in chars.by_ref() {
                    match (last, c) {
                        ('*', '/') => {
                            depth -= 1;
                            if depth == 0 {
                                break;
                            }
                            last = ' ';
                            continue;
                        }
                        ('/', '*') => {
                            depth += 1;
                            last = ' ';
                            continue;
                        }
                        _ => {}
                    }
                    last = c;
                }
                out.push(' ');
            }
            '"' => {
                let mut escaped = false;
                for c in chars.by_ref() {
                    if escaped {
                        escaped = false;
                    } else if c == '\\' {
                        escaped = true;
                    } else if c == '"' {
                        break;
                    }
                }
                out.push_str("\"\"");
            }
            '\'' => {
                // A char literal ('x', '\n') or a lifetime ('a): only a literal is skipped.
                let rest: String = chars.clone().take(3).collect();
                let mut it = rest.chars();
                match (it.next(), it.next()) {
                    (Some('\\'), _) => {
                        for c in chars.by_ref() {
                            if c == '\'' {
                                break;
                            }
                        }
                    }
                    (Some(_), Some('\'')) => {
                        chars.next();
                        chars.next();
                    }
                    _ => out.push('\''),
                }
            }
            _ => out.push(c),
        }
    }
    out
}

/// The crate paths a piece of code names, as `crate::<first segment>`, including those in
/// grouped imports (`use crate::{messages::x, runtime::y}`), plus every `super` chain that
/// climbs out of the runtime.
fn outer_paths(code: &str) -> Vec<String> {
    let compact: String = code.split_whitespace().collect();
    let mut found = Vec::new();
    let mut rest = compact.as_str();
    while let Some(at) = rest.find("crate::") {
        let after = &rest[at + "crate::".len()..];
        let segments: Vec<&str> = if let Some(group) = after.strip_prefix('{') {
            // Top-level items of the group: split at commas outside nested braces.
            let mut depth = 0;
            let mut items = Vec::new();
            let mut start = 0;
            for (i, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        items.push(&group[start..i]);
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        items.push(&group[start..i]);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            items
        } else {
            vec![after]
        };
        for segment in segments {
            let head: String = segment
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_')
                .collect();
            if OUTER_LAYERS.contains(&head.as_str()) {
                found.push(format!("crate::{head}"));
            }
        }
        rest = after;
    }
    if compact.contains("super::super::super") {
        found.push("super::super::super".to_string());
    }
    found
}

/// Whether `code` names `word` as a path or identifier (not as part of a longer name).
fn names(code: &str, word: &str) -> bool {
    let ident = |c: char| c.is_alphanumeric() || c == '_';
    code.match_indices(word).any(|(at, _)| {
        let head = &code[..at];
        let after = code[at + word.len()..].chars().next();
        // A crate name after `a::` is a module of `a` of that name (`self::rand`); a path
        // tail (`SystemTime::now`) counts wherever its path starts, as does `::tokio`.
        let inner = head
            .strip_suffix("::")
            .is_some_and(|h| !word.contains("::") && h.chars().next_back().is_some_and(ident));
        !head.chars().next_back().is_some_and(ident) && !inner && !after.is_some_and(ident)
    })
}

/// What is wrong with one file: `(line, what)` pairs.
fn violations(path: &str, source: &str) -> Vec<(usize, String)> {
    let code = code_of(source);
    let mut out = Vec::new();
    let in_runtime = path.starts_with("src/runtime/") || path == "src/runtime.rs";
    if in_runtime {
        // Paths may span lines (grouped imports): check the whole file, then find the line.
        for outer in outer_paths(&code) {
            let line = line_of(&code, &outer);
            out.push((
                line,
                format!("{outer}: the runtime must not import the layers above it"),
            ));
        }
    }
    for rule in RULES {
        if !path.starts_with(rule.dir) {
            continue;
        }
        for (n, line) in code.lines().enumerate() {
            for word in rule.forbidden {
                if names(line, word) {
                    out.push((n + 1, format!("`{word}`: {}", rule.why)));
                }
            }
        }
    }
    out
}

/// The first line of `code` that names the start of `path` (1 when it spans lines).
fn line_of(code: &str, path: &str) -> usize {
    let head = path.rsplit("::").next().unwrap_or(path);
    code.lines()
        .position(|l| l.contains(head) && (l.contains("crate") || l.contains("super")))
        .map_or(1, |i| i + 1)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read the source tree") {
        let path = entry.expect("a directory entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

#[test]
fn the_runtime_imports_no_layer_above_it_and_its_cores_stay_pure() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let mut files = Vec::new();
    rust_files(&root.join("src/runtime"), &mut files);
    files.push(root.join("src/runtime.rs"));
    assert!(files.len() > 40, "the runtime's sources are found");
    let mut problems = Vec::new();
    for file in &files {
        let rel = file
            .strip_prefix(root)
            .expect("under the crate")
            .to_string_lossy()
            .replace('\\', "/");
        let source = std::fs::read_to_string(file).expect("read a source file");
        for (line, what) in violations(&rel, &source) {
            problems.push(format!("{rel}:{line}: {what}"));
        }
    }
    assert!(
        problems.is_empty(),
        "layering broken:\n{}",
        problems.join("\n")
    );
}

#[test]
fn the_checker_refuses_a_forbidden_use() {
    let refused = [
        (
            "src/runtime/telemetry/spans.rs",
            "use crate::messages::node::NodeMsg;\n",
        ),
        (
            "src/runtime/journal/x.rs",
            "use crate::{\n    runtime::semantics::time::Time,\n    actors::handle::Handle,\n};\n",
        ),
        (
            "src/runtime/semantics/x.rs",
            "fn f() { let _ = crate::service::router(); }\n",
        ),
        (
            "src/runtime/semantics/run_core/x.rs",
            "use super::super::super::worker::Gateway;\n",
        ),
        ("src/runtime/semantics/x.rs", "use tokio::sync::mpsc;\n"),
        (
            "src/runtime/semantics/x.rs",
            "fn f() { let t = std::time::SystemTime::now(); }\n",
        ),
        (
            "src/runtime/definition/x.rs",
            "fn f() { let t = Instant::now(); }\n",
        ),
        ("src/runtime/definition/x.rs", "use rand::Rng;\n"),
        (
            "src/runtime/semantics/x.rs",
            "fn f() { std::fs::write(\"a\", \"b\").unwrap(); }\n",
        ),
        ("src/runtime/semantics/x.rs", "use std::io::Write;\n"),
    ];
    for (path, source) in refused {
        assert!(
            !violations(path, source).is_empty(),
            "{path} with {source:?} must be refused"
        );
    }
}

#[test]
fn the_checker_reads_code_not_prose() {
    let allowed = [
        (
            "src/runtime/semantics/x.rs",
            "//! The actors in `crate::actors` call this.\nfn f() {}\n",
        ),
        (
            "src/runtime/semantics/x.rs",
            "/* uses tokio elsewhere */ fn f() {}\n",
        ),
        (
            "src/runtime/semantics/x.rs",
            "fn f() -> &'static str { \"tokio::spawn\" }\n",
        ),
        (
            "src/runtime/semantics/x.rs",
            "fn operand() -> u32 { let random_ish = 4; random_ish }\n",
        ),
        (
            "src/runtime/semantics/x.rs",
            "use crate::runtime::semantics::time::Time;\n",
        ),
        (
            "src/runtime/journal/x.rs",
            "use tokio::sync::mpsc;\nuse std::fs::File;\n",
        ),
        ("src/actors/x.rs", "use crate::messages::node::NodeMsg;\n"),
        (
            "src/runtime/semantics/x.rs",
            "fn f<'a>(c: char) -> bool { c == '\"' }\n",
        ),
    ];
    for (path, source) in allowed {
        assert_eq!(
            violations(path, source),
            Vec::new(),
            "{path} with {source:?}"
        );
    }
}
