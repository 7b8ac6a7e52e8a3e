//! Reading a definition from JSON or YAML text into [`WorkflowDefinition`].
//!
//! Both formats go through one serde path so that an error names the same location
//! whichever format the backend used (`actions[0].bogus`). YAML is first read into a
//! JSON value (it is a superset of JSON's data model for our purposes), then typed; it
//! is read under the YAML 1.2 core schema, as JSON is its subset.
//! This module only parses; meaning is checked by [`crate::runtime::definition::validate`].

use std::path::Path;

use serde::de::DeserializeOwned;
use thiserror::Error;

use crate::runtime::definition::WorkflowDefinition;
use crate::runtime::definition::limits::YAML_MAX_DEPTH;

/// The text format of a definition file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    /// JSON text.
    Json,
    /// YAML text.
    Yaml,
}

impl Format {
    /// Picks the format from a file's extension, else from its first significant character.
    pub fn detect(path: Option<&Path>, text: &str) -> Format {
        let ext = path
            .and_then(|p| p.extension())
            .and_then(|e| e.to_str())
            .map(str::to_ascii_lowercase);
        match ext.as_deref() {
            Some("json") => Format::Json,
            Some("yaml" | "yml") => Format::Yaml,
            _ if text.trim_start().starts_with(['{', '[']) => Format::Json,
            _ => Format::Yaml,
        }
    }
}

/// A definition that could not be read, with the location of the problem.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
pub enum ParseError {
    /// The text is not well-formed JSON or YAML.
    #[error("{format} syntax error: {message}")]
    Syntax {
        /// `JSON` or `YAML`.
        format: &'static str,
        /// The parser's message, with line and column.
        message: String,
    },
    /// The text is well-formed but a field has the wrong shape or is unknown.
    #[error("{path}: {message}")]
    Shape {
        /// Where, e.g. `actions[0].bogus`.
        path: String,
        /// What is wrong there.
        message: String,
    },
}

/// Parses a definition from text in the given format.
///
/// # Errors
/// [`ParseError`] when the text is malformed or does not have the definition's shape.
pub fn parse_definition(text: &str, format: Format) -> Result<WorkflowDefinition, ParseError> {
    parse_typed(text, format)
}

/// Parses any serde type from JSON or YAML text, naming the path of a shape error.
///
/// # Errors
/// [`ParseError`] as for [`parse_definition`].
pub fn parse_typed<T: DeserializeOwned>(text: &str, format: Format) -> Result<T, ParseError> {
    match format {
        Format::Json => {
            let mut de = serde_json::Deserializer::from_str(text);
            let value = serde_path_to_error::deserialize(&mut de).map_err(json_error)?;
            de.end().map_err(|e| ParseError::Syntax {
                format: "JSON",
                message: e.to_string(),
            })?;
            Ok(value)
        }
        Format::Yaml => {
            let value: serde_json::Value =
                serde_saphyr::from_str_with_options(text, yaml_options(text.len())).map_err(
                    |e| ParseError::Syntax {
                        format: "YAML",
                        message: e.to_string(),
                    },
                )?;
            from_value(value)
        }
    }
}

/// The YAML parser's options for a text of `len` bytes: the YAML 1.2 core schema (YAML
/// 1.1's `yes`/`no`/`on`/`off`/`y`/`n` are strings, not booleans) and a budget.
///
/// Nesting is capped at [`YAML_MAX_DEPTH`], as `serde_json` caps JSON's, so that deeply
/// nested input is an error and never a stack overflow. The node and event budgets grow
/// with the text (a YAML node takes at least a byte of text), so a definition with
/// hundreds of thousands of nodes parses, while alias expansion stays under the parser's
/// own replay limits.
fn yaml_options(len: usize) -> serde_saphyr::Options {
    let mut budget = serde_saphyr::Budget::default();
    budget.max_depth = YAML_MAX_DEPTH;
    budget.max_nodes = budget.max_nodes.max(len);
    budget.max_events = budget.max_events.max(len.saturating_mul(2));
    budget.max_total_scalar_bytes = budget.max_total_scalar_bytes.max(len);
    let mut options = serde_saphyr::Options::default();
    options.budget = Some(budget);
    // YAML 1.2's core schema: only `true`/`false` (any case) are booleans, so a node, a
    // port or a value named `y`, `no` or `off` stays the string it is written as.
    options.strict_booleans = true;
    options
}

/// Types a JSON value, naming the path of a shape error.
///
/// # Errors
/// [`ParseError::Shape`] when the value does not have `T`'s shape.
pub fn from_value<T: DeserializeOwned>(value: serde_json::Value) -> Result<T, ParseError> {
    serde_path_to_error::deserialize(value).map_err(|e| ParseError::Shape {
        path: display_path(e.path()),
        message: e.into_inner().to_string(),
    })
}

fn json_error(e: serde_path_to_error::Error<serde_json::Error>) -> ParseError {
    let path = display_path(e.path());
    let inner = e.into_inner();
    if inner.is_syntax() || inner.is_eof() {
        ParseError::Syntax {
            format: "JSON",
            message: inner.to_string(),
        }
    } else {
        ParseError::Shape {
            path,
            message: inner.to_string(),
        }
    }
}

pub(crate) fn display_path(path: &serde_path_to_error::Path) -> String {
    let text = path.to_string();
    if text == "." {
        "(top level)".to_owned()
    } else {
        text
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINIMAL: &str = r#"{"title":"t","actions":[{"ref":"a","componentId":"core.echo"}]}"#;

    #[test]
    fn minimal_json_parses_with_defaults() {
        let def = parse_definition(MINIMAL, Format::Json).unwrap();
        assert_eq!(def.version, 2);
        assert_eq!(def.actions.len(), 1);
        assert!(def.edges.is_none());
    }

    #[test]
    fn unknown_field_is_refused_with_its_path() {
        let text = r#"{"title":"t","actions":[{"ref":"a","componentId":"core.echo","bogus":1}]}"#;
        let err = parse_definition(text, Format::Json).unwrap_err();
        let ParseError::Shape { path, message } = err else {
            panic!("expected a shape error, got {err:?}")
        };
        assert_eq!(path, "actions[0].bogus");
        assert!(message.contains("unknown field `bogus`"), "{message}");
    }

    #[test]
    fn wrong_type_names_the_nested_path() {
        let text = r#"{"title":"t","actions":[{"ref":"a","componentId":"c","inputMappings":{"url":{"sourceRef":1,"sourceHandle":"x"}}}]}"#;
        let err = parse_definition(text, Format::Json).unwrap_err();
        assert!(
            matches!(&err, ParseError::Shape { path, .. } if path == "actions[0].inputMappings.url.sourceRef"),
            "{err:?}"
        );
    }

    #[test]
    fn yaml_errors_name_the_same_path_as_json() {
        let text = "title: t\nactions:\n  - ref: a\n    componentId: core.echo\n    bogus: 1\n";
        let err = parse_definition(text, Format::Yaml).unwrap_err();
        assert!(
            matches!(&err, ParseError::Shape { path, .. } if path == "actions[0].bogus"),
            "{err:?}"
        );
    }

    #[test]
    fn malformed_json_is_a_syntax_error() {
        let err = parse_definition("{\"title\": ", Format::Json).unwrap_err();
        assert!(
            matches!(err, ParseError::Syntax { format: "JSON", .. }),
            "{err:?}"
        );
    }

    #[test]
    fn format_is_detected_from_extension_then_content() {
        assert_eq!(Format::detect(Some(Path::new("w.yml")), "{}"), Format::Yaml);
        assert_eq!(
            Format::detect(Some(Path::new("w.JSON")), "a: 1"),
            Format::Json
        );
        assert_eq!(Format::detect(None, "  {\"a\":1}"), Format::Json);
        assert_eq!(Format::detect(None, "a: 1"), Format::Yaml);
    }
}
