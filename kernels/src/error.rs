//! The one error type of the kernels crate.

/// Everything an operator or a backend can report. Shapes that do not fit are errors, never panics,
/// because shapes come from model spec files written by users.
#[derive(Debug, thiserror::Error)]
pub enum KernelError {
    /// Operands whose shapes do not fit the operator.
    #[error("{op}: {message}")]
    Shape { op: &'static str, message: String },
    /// The CUDA backend was not compiled in (build with `--features cuda`).
    #[error("the CUDA backend is not compiled in; rebuild with `--features cuda`")]
    NotCompiled,
    /// CUDA is compiled in but no usable device is present (no driver library, or no such ordinal).
    #[error("no CUDA device: {0}")]
    NoDevice(String),
    /// Operands of one operator hold different element types (the caller converts at upload).
    #[error("{op}: operands must share one element type; found {found}")]
    DtypeMismatch { op: &'static str, found: String },
    /// The operator does not support this element type on this backend.
    #[error("{op}: element type {dtype} is not supported on this backend")]
    Unsupported {
        op: &'static str,
        dtype: &'static str,
    },
    /// The CUDA driver, NVRTC or cuBLAS reported an error.
    #[error("CUDA error in {context}: {message}")]
    Cuda {
        context: &'static str,
        message: String,
    },
}

impl KernelError {
    pub(crate) fn shape(op: &'static str, message: impl Into<String>) -> Self {
        KernelError::Shape {
            op,
            message: message.into(),
        }
    }

    /// True when the caller asked for something absent (a device, a backend) rather than hitting a
    /// runtime failure: the command line reports these as usage errors.
    pub fn is_unavailable(&self) -> bool {
        matches!(self, KernelError::NotCompiled | KernelError::NoDevice(_))
    }
}

pub type Result<T, E = KernelError> = std::result::Result<T, E>;
