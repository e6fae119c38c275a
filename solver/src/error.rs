//! The one error type of the solver crate.
//!
//! Every variant carries enough context for a user to fix the input without reading code: the file,
//! the JSON path of the offending field and what was expected there.

use std::path::PathBuf;

/// Everything that can go wrong in the solver crate.
#[derive(Debug, thiserror::Error)]
pub enum SolverError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON for its schema, or a field holds a value it may not hold.
    #[error("{}: at {json_path}: {message}", file.display())]
    Invalid {
        file: PathBuf,
        /// JSON path of the offending field, e.g. `models[1].profile`; `$` for the whole document.
        json_path: String,
        message: String,
    },
    /// The input is well formed but no plan can exist (e.g. a model fits no device group).
    #[error("infeasible: {0}")]
    Infeasible(String),
    /// A placer or simulator option is not valid.
    #[error("invalid option: {0}")]
    Option(String),
}

impl SolverError {
    /// Shorthand for [`SolverError::Invalid`].
    pub fn invalid(
        file: impl Into<PathBuf>,
        json_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        SolverError::Invalid {
            file: file.into(),
            json_path: json_path.into(),
            message: message.into(),
        }
    }

    /// True when the error is the user's input (exit code 2), false for infeasibility (exit 3).
    pub fn is_input_error(&self) -> bool {
        !matches!(self, SolverError::Infeasible(_))
    }
}

pub type Result<T, E = SolverError> = std::result::Result<T, E>;

/// Parses JSON text into `T`, reporting the JSON path of the first error.
pub fn parse_json<T: serde::de::DeserializeOwned>(file: &std::path::Path, text: &str) -> Result<T> {
    if text.trim().is_empty() {
        return Err(SolverError::invalid(
            file,
            "$",
            "the file is empty; expected a JSON document",
        ));
    }
    let mut de = serde_json::Deserializer::from_str(text);
    let value = serde_path_to_error::deserialize(&mut de).map_err(|e| {
        let path = e.path().to_string();
        let path = if path == "." { "$".to_string() } else { path };
        SolverError::invalid(file, path, e.into_inner().to_string())
    })?;
    de.end()
        .map_err(|e| SolverError::invalid(file, "$", format!("trailing characters: {e}")))?;
    Ok(value)
}

/// Reads a whole file, mapping the I/O error to one that names the file.
pub fn read_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SolverError::Io {
        path: path.to_path_buf(),
        source,
    })
}
