//! Fuzz target `definition`: arbitrary bytes, as JSON and as YAML, through the same
//! `load_str` a backend's definition goes through (size limit, parse, limits, validate).
//! It must never panic, overflow the stack or hang; errors are fine.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use shipsec_orchestrator::ComponentRegistry;
use shipsec_orchestrator::definition::{Format, load_str};

fn registry() -> &'static ComponentRegistry {
    static REGISTRY: OnceLock<ComponentRegistry> = OnceLock::new();
    REGISTRY.get_or_init(ComponentRegistry::with_builtins)
}

fuzz_target!(|data: &[u8]| {
    // Invalid UTF-8 cannot reach `load_str` (a `&str`); replacing it keeps the rest useful.
    let text = String::from_utf8_lossy(data);
    for format in [Format::Json, Format::Yaml] {
        if let Ok(loaded) = load_str(&text, format, registry()) {
            assert_eq!(loaded.graph.len(), loaded.definition.actions.len());
        }
    }
});
