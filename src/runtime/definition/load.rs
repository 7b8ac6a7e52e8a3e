//! One call from text to a validated graph: check the size, parse, check the limits, then
//! validate.

use std::io::Read;
use std::path::Path;
use std::sync::Arc;

use thiserror::Error;

use crate::runtime::components::registry::ComponentRegistry;
use crate::runtime::definition::WorkflowDefinition;
use crate::runtime::definition::graph::Graph;
use crate::runtime::definition::limits::{DefinitionLimits, Limit, LimitError};
use crate::runtime::definition::parse::{Format, ParseError, parse_definition};
use crate::runtime::definition::validate::{DefinitionError, validate};

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
    /// The definition is over one of its [`DefinitionLimits`]; nothing was validated.
    #[error("invalid workflow definition: {0}")]
    Limit(#[from] LimitError),
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

/// Parses and validates definition text under the default [`DefinitionLimits`].
///
/// # Errors
/// [`LoadError::Limit`], [`LoadError::Parse`] or [`LoadError::Invalid`].
pub fn load_str(
    text: &str,
    format: Format,
    registry: &ComponentRegistry,
) -> Result<Loaded, LoadError> {
    load_str_with(text, format, registry, &DefinitionLimits::default())
}

/// Checks the text's size, parses it, checks the definition against `limits`, then
/// validates it. A definition over a limit is refused before validation.
///
/// # Errors
/// [`LoadError::Limit`], [`LoadError::Parse`] or [`LoadError::Invalid`].
pub fn load_str_with(
    text: &str,
    format: Format,
    registry: &ComponentRegistry,
    limits: &DefinitionLimits,
) -> Result<Loaded, LoadError> {
    limits.check_text(text)?;
    let definition = parse_definition(text, format)?;
    let graph = checked(&definition, registry, limits)?;
    Ok(Loaded { definition, graph })
}

/// Checks a definition against `limits`, then validates it (a definition over a limit
/// is refused before validation): the definition's part of the engine's gate
/// (`runtime::guardrails::gate`).
///
/// # Errors
/// [`LoadError::Limit`] or [`LoadError::Invalid`].
pub fn checked(
    definition: &WorkflowDefinition,
    registry: &ComponentRegistry,
    limits: &DefinitionLimits,
) -> Result<Arc<Graph>, LoadError> {
    limits.check(definition)?;
    Ok(Arc::new(validate(definition, registry)?))
}

/// Reads, parses and validates a definition file (format from its extension or content)
/// under the default [`DefinitionLimits`].
///
/// # Errors
/// Any [`LoadError`].
pub fn load_file(path: &Path, registry: &ComponentRegistry) -> Result<Loaded, LoadError> {
    load_file_with(path, registry, &DefinitionLimits::default())
}

/// As [`load_file`], under `limits`. A file larger than
/// [`DefinitionLimits::max_definition_bytes`] is refused without being read whole.
///
/// # Errors
/// Any [`LoadError`].
pub fn load_file_with(
    path: &Path,
    registry: &ComponentRegistry,
    limits: &DefinitionLimits,
) -> Result<Loaded, LoadError> {
    let io = |source| LoadError::Io {
        path: path.display().to_string(),
        source,
    };
    let file = std::fs::File::open(path).map_err(io)?;
    // One byte past the limit is enough to know the file is over it.
    let cap = u64::try_from(limits.max_definition_bytes)
        .unwrap_or(u64::MAX)
        .saturating_add(1);
    let mut bytes = Vec::new();
    file.take(cap).read_to_end(&mut bytes).map_err(io)?;
    if bytes.len() > limits.max_definition_bytes {
        let actual = std::fs::metadata(path).map_or(bytes.len() as u64, |m| m.len());
        return Err(LoadError::Limit(LimitError {
            what: Limit::DefinitionBytes,
            path: path.display().to_string(),
            limit: limits.max_definition_bytes as u64,
            actual,
        }));
    }
    let text = String::from_utf8(bytes).map_err(|e| {
        io(std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("the file is not UTF-8 text: {}", e.utf8_error()),
        ))
    })?;
    load_str_with(&text, Format::detect(Some(path), &text), registry, limits)
}
