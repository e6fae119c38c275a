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

/// The documents plexserve reads or writes, by schema, and what each is: an error for a file
/// given to the wrong command says what the file is and which commands read it.
const DOCUMENTS: &[(&str, &str)] = &[
    (
        crate::instance::INSTANCE_SCHEMA,
        "an instance (read by `solve`, `simulate`, `compare`, `serve`, `replay`)",
    ),
    (
        crate::plan::PLAN_SCHEMA,
        "a plan (read by `simulate --plan`, `serve --plan`)",
    ),
    (
        crate::llm::LLM_INSTANCE_SCHEMA,
        "an LLM instance (read by `llm solve`, `llm simulate`, `llm compare`, `llm tp-overhead`)",
    ),
    (
        crate::llm::LLM_PLAN_SCHEMA,
        "an LLM plan (read by `llm simulate --plan`)",
    ),
    (
        crate::stage_dp::PROFILE_SCHEMA,
        "a layer profile (read by `partition`, `instance --profile`)",
    ),
    (
        "plexserve/model-spec/v1",
        "a model spec (read by `profile --model`)",
    ),
    (
        crate::sim::SIM_SCHEMA,
        "a simulation report (written by `simulate --json`)",
    ),
    (
        crate::llm::LLM_SIM_SCHEMA,
        "an LLM simulation report (written by `llm simulate --json`)",
    ),
    (
        "plexserve/replay/v1",
        "a replay report (written by `replay --json`)",
    ),
];

/// What a document of `schema` is, when plexserve knows the schema.
pub fn document_kind(schema: &str) -> Option<&'static str> {
    DOCUMENTS
        .iter()
        .find(|(s, _)| *s == schema)
        .map(|(_, what)| *what)
}

/// `Ok` when `found` is the `expected` schema; otherwise an error at `schema` that names what the
/// file is when its schema is one plexserve knows.
pub fn check_schema(file: &std::path::Path, expected: &str, found: &str) -> Result<()> {
    if found == expected {
        return Ok(());
    }
    let what = document_kind(found).map_or(String::new(), |k| format!(": the file is {k}"));
    Err(SolverError::invalid(
        file,
        "schema",
        format!("expected \"{expected}\", found \"{found}\"{what}"),
    ))
}

/// Parses a document of `schema`, checking its schema before its other fields: a file of another
/// kind (an LLM instance given to `solve`) is named as such, not reported as an unknown field.
pub fn parse_document<T: serde::de::DeserializeOwned>(
    file: &std::path::Path,
    text: &str,
    schema: &str,
) -> Result<T> {
    #[derive(serde::Deserialize)]
    struct Head {
        schema: Option<serde_json::Value>,
    }
    if let Ok(Head {
        schema: Some(serde_json::Value::String(found)),
    }) = serde_json::from_str(text)
    {
        check_schema(file, schema, &found)?;
    }
    parse_json(file, text)
}

/// Reads a whole file, mapping the I/O error to one that names the file.
pub fn read_file(path: &std::path::Path) -> Result<String> {
    std::fs::read_to_string(path).map_err(|source| SolverError::Io {
        path: path.to_path_buf(),
        source,
    })
}
