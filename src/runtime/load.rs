//! One call from text to a validated graph: parse, then validate.

use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use crate::runtime::definition::WorkflowDefinition;
use crate::runtime::graph::Graph;
use crate::runtime::parse::{Format, ParseError, parse_definition};
use crate::runtime::registry::ComponentRegistry;
use crate::runtime::validate::{DefinitionError, validate};

/// A definition that could not be loaded.
#[derive(Debug, Error)]
pub enum LoadError {
    /// The file could not be read.
    #[error("cannot read {path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The text is malformed or mis-shaped.
    #[error("invalid workflow definition: {0}")]
    Parse(#[from] ParseError),
    /// The definition does not validate.
    #[error("{0}")]
    Invalid(#[from] DefinitionError),
}

/// A definition together with its validated graph.
#[derive(Debug, Clone)]
pub struct Loaded {
    /// The definition as given.
    pub definition: WorkflowDefinition,
    /// Its validated graph.
    pub graph: Arc<Graph>,
}

/// Parses and validates definition text.
///
/// # Errors
/// [`LoadError::Parse`] or [`LoadError::Invalid`].
pub fn load_str(
    text: &str,
    format: Format,
    registry: &ComponentRegistry,
) -> Result<Loaded, LoadError> {
    let definition = parse_definition(text, format)?;
    let graph = Arc::new(validate(&definition, registry)?);
    Ok(Loaded { definition, graph })
}

/// Reads, parses and validates a definition file (format from its extension or content).
///
/// # Errors
/// Any [`LoadError`].
pub fn load_file(path: &Path, registry: &ComponentRegistry) -> Result<Loaded, LoadError> {
    let text = std::fs::read_to_string(path).map_err(|source| LoadError::Io {
        path: path.display().to_string(),
        source,
    })?;
    load_str(&text, Format::detect(Some(path), &text), registry)
}
