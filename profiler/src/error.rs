//! The one error type of the profiler crate.

use std::path::PathBuf;

/// Everything that can go wrong while reading a model spec, choosing a device or profiling.
#[derive(Debug, thiserror::Error)]
pub enum ProfilerError {
    /// A file could not be read.
    #[error("{}: cannot read: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// A model spec is not valid JSON for its schema, or a field holds a value it may not hold.
    #[error("{}: at {json_path}: {message}", file.display())]
    Spec {
        file: PathBuf,
        /// JSON path of the offending field, e.g. `heads`; `$` for the whole document.
        json_path: String,
        message: String,
    },
    /// The `--device` argument names no device this build knows.
    #[error("unknown device \"{given}\": {message}")]
    Device { given: String, message: String },
    /// A profiling option is out of range.
    #[error("invalid option: {0}")]
    Option(String),
    /// The model does not fit what the chosen device can run (e.g. too large for host memory).
    #[error("{0}")]
    TooLarge(String),
    /// An operator or the device backend failed (or is absent: see [`ProfilerError::is_input_error`]).
    #[error(transparent)]
    Kernel(#[from] plexserve_kernels::KernelError),
    /// The profile built does not pass the solver's checks (a bug, reported rather than written).
    #[error(transparent)]
    Solver(#[from] plexserve_solver::SolverError),
}

impl ProfilerError {
    pub(crate) fn spec(
        file: &std::path::Path,
        json_path: impl Into<String>,
        message: impl Into<String>,
    ) -> Self {
        ProfilerError::Spec {
            file: file.to_path_buf(),
            json_path: json_path.into(),
            message: message.into(),
        }
    }

    /// True when the user's input is at fault (exit code 2): a bad spec, an unknown or absent
    /// device, an option out of range, a model too large for the device chosen.
    pub fn is_input_error(&self) -> bool {
        match self {
            ProfilerError::Spec { .. }
            | ProfilerError::Device { .. }
            | ProfilerError::Option(_)
            | ProfilerError::TooLarge(_) => true,
            ProfilerError::Kernel(k) => k.is_unavailable(),
            // A spec that cannot be read is the user's input too, as in the solver.
            ProfilerError::Io { .. } => true,
            ProfilerError::Solver(_) => false,
        }
    }
}

pub type Result<T, E = ProfilerError> = std::result::Result<T, E>;
