//! Run metadata: an object of strings a caller attaches to a run when it submits it
//! (ShipSec's `organizationId`, `workflowId`, `workflowVersionId`, ...). It is journaled
//! with the run, returned in its status, result and listing (filterable by one key), and
//! on every input request the run makes, so a backend can scope runs and requests to an
//! organization. The engine never reads it otherwise.

use std::collections::BTreeMap;
use std::sync::Arc;

use serde_json::Value;

use crate::runtime::definition::validate::Problem;

/// A run's metadata: keys to strings.
pub type Metadata = BTreeMap<String, String>;

/// Most keys a run's metadata may have.
pub const MAX_KEYS: usize = 64;
/// Longest key, in bytes.
pub const MAX_KEY_BYTES: usize = 128;
/// Longest value, in bytes.
pub const MAX_VALUE_BYTES: usize = 1024;

/// Reads metadata from `value` (a JSON object of strings, within the bounds above).
///
/// # Errors
/// Every problem, each with its path (`metadata.<key>`).
pub fn read(value: &Value) -> Result<Arc<Metadata>, Vec<Problem>> {
    let problem = |path: String, message: String| Problem { path, message };
    let Value::Object(object) = value else {
        return Err(vec![problem(
            "metadata".into(),
            format!("must be an object of strings, got {value}"),
        )]);
    };
    let mut problems = Vec::new();
    if object.len() > MAX_KEYS {
        problems.push(problem(
            "metadata".into(),
            format!("has {} keys; at most {MAX_KEYS} are taken", object.len()),
        ));
    }
    let mut metadata = Metadata::new();
    for (key, v) in object.iter().take(MAX_KEYS) {
        let path = format!("metadata.{key}");
        if key.is_empty() || key.len() > MAX_KEY_BYTES {
            problems.push(problem(
                path.clone(),
                format!("a key is 1 to {MAX_KEY_BYTES} bytes"),
            ));
        }
        match v {
            Value::String(s) if s.len() <= MAX_VALUE_BYTES => {
                metadata.insert(key.clone(), s.clone());
            }
            Value::String(s) => problems.push(problem(
                path,
                format!("{} bytes; a value is at most {MAX_VALUE_BYTES}", s.len()),
            )),
            other => problems.push(problem(path, format!("must be a string, got {other}"))),
        }
    }
    if problems.is_empty() {
        Ok(Arc::new(metadata))
    } else {
        Err(problems)
    }
}

/// Whether `metadata` has `key` set to `value` (no filter: `None`).
pub fn matches(metadata: &Metadata, filter: Option<&(String, String)>) -> bool {
    filter.is_none_or(|(key, value)| metadata.get(key) == Some(value))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn metadata_is_an_object_of_bounded_strings_and_every_problem_is_named() {
        let read_ok = read(&json!({"organizationId": "acme", "workflowId": "w-1"}));
        assert_eq!(
            read_ok
                .expect("taken")
                .get("organizationId")
                .map(String::as_str),
            Some("acme")
        );
        assert!(read(&json!(["a"])).is_err());
        let problems = read(&json!({"n": 1, "": "x", "long": "v".repeat(MAX_VALUE_BYTES + 1)}))
            .expect_err("refused");
        let mut paths: Vec<&str> = problems.iter().map(|p| p.path.as_str()).collect();
        paths.sort_unstable();
        assert_eq!(paths, ["metadata.", "metadata.long", "metadata.n"]);
        let many: serde_json::Map<String, Value> = (0..=MAX_KEYS)
            .map(|i| (format!("k{i}"), json!("v")))
            .collect();
        assert!(read(&Value::Object(many)).is_err());
    }

    #[test]
    fn a_filter_wants_one_key_set_to_one_value() {
        let metadata: Metadata = [("org".to_owned(), "acme".to_owned())].into();
        assert!(matches(&metadata, None));
        assert!(matches(&metadata, Some(&("org".into(), "acme".into()))));
        assert!(!matches(&metadata, Some(&("org".into(), "other".into()))));
        assert!(!matches(&metadata, Some(&("team".into(), "acme".into()))));
    }
}
