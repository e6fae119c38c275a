//! plexserve-profiler: per-layer latency profiles of transformer models, measured on a device
//! (CPU always, CUDA with the `cuda` feature) or predicted for a named GPU, written as the
//! `plexserve/profile/v1` files the solver reads.
//!
//! A model spec (`instances/specs/*.json`) gives the shape of a BERT-, GPT-, MoE- or LLaMA-style
//! model, the batch sizes and the tensor-parallel degrees. Each layer is broken into the
//! operators one device of a tensor-parallel group runs ([`layer_ops`]); every distinct operator
//! is timed once (warm-up until the timings settle, then the median of samples taken
//! round-robin across operators: [`measure`]), collectives come from a [`LinkModel`], and
//! identical layers repeat the same numbers. [`repeatability`] profiles twice and compares.
//!
//! ```
//! use plexserve_profiler::{profile, Device, ModelSpec, ProfileOptions};
//! let spec = ModelSpec::load("../instances/specs/tiny-gpt.json".as_ref()).unwrap();
//! let device = Device::parse("analytic:a100-80gb").unwrap();
//! let run = profile(&spec, &device, &ProfileOptions::default()).unwrap();
//! let file = run.to_file();
//! assert_eq!(file.profiles[&spec.name].layers.len(), spec.layers + 2);
//! ```
//!
//! The analytic model and its calibration are described in the [`analytic`] module.

pub mod analytic;
mod error;
mod host;
mod link;
pub mod measure;
mod ops;
mod profile;
mod repeatability;
mod spec;
mod timer;

pub use analytic::{gpu_model, GpuModel, GPUS};
pub use error::{ProfilerError, Result};
pub use host::{format_utc, utc_now, HostInfo};
pub use link::LinkModel;
pub use measure::SpeedCorrection;
pub use ops::{activation_elements, layer_ops, layer_parameters, layer_sequence, LayerKind, Op};
pub use profile::{
    distinct_ops, parse_probe_us, probe_us_text, profile, profile_variants, Device, OpCost,
    ProfileOptions, ProfileRun,
};
pub use repeatability::{
    compare_runs, repeatability, repeatability_variants, size_classes, RepeatabilityReport,
    SizeClass, VariedLayer, VariedOp, SIZE_CLASSES,
};
pub use spec::{Family, ModelSpec, Phase, SpecFile, SPEC_SCHEMA};
pub use timer::{
    matmul_threads, CpuClock, CpuTimer, CudaTimer, Pinned, PreparedOp, Samples, Timer,
};
