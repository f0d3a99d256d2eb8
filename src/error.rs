//! The crate's one error type. Every message says what went wrong with the actual values, and,
//! where the user can do something about it, what to do — in the library's terms: a front end
//! maps [`Error::Setting`] to its own options (the CLI to its flags).

use std::path::PathBuf;

/// Everything that can go wrong in wgpu-cnn.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// No adapter matched (or none exists at all).
    #[error("no GPU adapter found{wanted}.\n{hint}")]
    NoAdapter { wanted: String, hint: String },

    /// The adapter refused to give us a device with the limits we asked for.
    #[error("could not open a device on adapter '{adapter}': {source}")]
    RequestDevice {
        adapter: String,
        #[source]
        source: wgpu::RequestDeviceError,
    },

    /// A validation or out-of-memory error reported by wgpu while building or running GPU work.
    #[error("GPU error while {context}: {message}")]
    Gpu { context: String, message: String },

    /// Mapping a buffer for readback failed, or polling the device did.
    #[error("reading back from the GPU failed: {0}")]
    Readback(String),

    /// The work does not fit the device's limits.
    #[error(
        "{what} needs {needed} bytes in one buffer, but the device allows {allowed} bytes per storage binding{hint}"
    )]
    TooLarge { what: String, needed: u64, allowed: u64, hint: String },

    /// A file could not be read or written.
    #[error("{}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// A file exists but is not a usable image.
    #[error("{}: {message}", path.display())]
    Image { path: PathBuf, message: String },

    /// A user-supplied value (kernel string, file, shape) is not acceptable.
    #[error("{0}")]
    InvalidInput(String),

    /// A training setting is out of range. `setting` is its [`crate::train::TrainConfig`] field
    /// (`learning_rate`, `batch_size`, ...), which a front end may name by its own option.
    #[error("{setting} {message}")]
    Setting { setting: &'static str, message: String },

    /// A checkpoint's run cannot continue as asked.
    #[error("{0}")]
    Resume(ResumeError),

    /// The training loss stopped being a number: the weights are no longer usable.
    #[error(
        "training diverged in epoch {epoch}, step {step}: the loss is {loss}; the weights of the epochs \
         before are still good. Likely cause: {cause}"
    )]
    Diverged { epoch: usize, step: usize, loss: f64, cause: DivergenceCause },
}

/// What most likely made a run diverge, judged from the step where it did.
#[derive(Debug, Clone, Copy, PartialEq, thiserror::Error)]
pub enum DivergenceCause {
    /// The L1 penalty overflowed on the initial weights.
    #[error("the L1 weight ({l1:e}): its penalty overflowed on the initial weights; try a smaller L1 weight")]
    L1Weight { l1: f32 },
    /// The loss was not a number in the run's first step, before any update.
    #[error("the data or the initial weights: the very first step, before any update, gave no number")]
    Data,
    /// An update moved the weights too far.
    #[error("the learning rate ({learning_rate:e}): the updates grew the weights until the loss overflowed; try a lower learning rate")]
    LearningRate { learning_rate: f64 },
}

/// Why a run cannot continue from its checkpoint.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ResumeError {
    /// The run trained on other data than is given now.
    #[error("the run was trained on \"{trained_on}\", but this one would use \"{given}\"; resume with the same data")]
    OtherData { trained_on: String, given: String },
    /// It is trained as far as asked already.
    #[error("already trained for {epochs_done} epochs; ask for more epochs to continue")]
    Done { epochs_done: usize },
    /// The checkpoint holds no optimiser state.
    #[error("the checkpoint has no optimiser state to resume from")]
    NoOptimizer,
}

/// Result with the crate's error.
pub type Result<T, E = Error> = std::result::Result<T, E>;

impl Error {
    /// Shorthand for [`Error::InvalidInput`] built from anything printable.
    pub fn invalid(message: impl Into<String>) -> Self {
        Error::InvalidInput(message.into())
    }

    /// Wraps an I/O error with the path it happened on.
    pub fn io(path: impl Into<PathBuf>, source: std::io::Error) -> Self {
        Error::Io { path: path.into(), source }
    }
}
