//! The one error type of the executor crate.

use std::path::PathBuf;

/// Everything that can go wrong while deploying a plan, serving it or replaying load against it.
#[derive(Debug, thiserror::Error)]
pub enum ExecutorError {
    /// The instance or plan cannot be served as given (names the reason).
    #[error("cannot serve this plan: {0}")]
    Unsupported(String),
    /// The runner is not compiled into this binary (e.g. `cuda` without the `cuda` feature).
    #[error("runner `{runner}` is not compiled in; rebuild with `--features {feature}`")]
    NotCompiled {
        runner: &'static str,
        feature: &'static str,
    },
    /// The runner is compiled in but the hardware or driver is absent.
    #[error("runner `{runner}`: no device: {reason}")]
    NoDevice {
        runner: &'static str,
        reason: String,
    },
    /// An unknown runner name.
    #[error("unknown runner \"{0}\"; expected one of cpu, emulate, cuda")]
    UnknownRunner(String),
    /// A stage failed while running a request.
    #[error("stage {stage} of group {group} failed: {reason}")]
    Stage {
        group: usize,
        stage: usize,
        reason: String,
    },
    /// The group that held an admitted request went down before answering.
    #[error("group {group} went down before the request finished")]
    GroupDown { group: usize },
    /// The executor is draining and takes no new work.
    #[error("the server is shutting down")]
    ShuttingDown,
    /// A socket or file operation failed.
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    /// A replay target or option is not valid.
    #[error("invalid replay option: {0}")]
    Replay(String),
    /// A file could not be written.
    #[error("{}: cannot write: {source}", path.display())]
    Write {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// The solver rejected the instance, plan or workload.
    #[error(transparent)]
    Solver(#[from] plexserve_solver::SolverError),
}

impl ExecutorError {
    pub(crate) fn io(context: impl Into<String>, source: std::io::Error) -> ExecutorError {
        ExecutorError::Io {
            context: context.into(),
            source,
        }
    }
}

pub type Result<T, E = ExecutorError> = std::result::Result<T, E>;
