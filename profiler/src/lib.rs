//! plexserve-profiler: per-layer latency profiles of transformer models, measured on a device
//! (CPU always, CUDA with the `cuda` feature) or predicted for a named GPU, written as the
//! `plexserve/profile/v1` files the solver reads.
//!
//! A model spec (`instances/specs/*.json`) gives the shape of a BERT-, GPT-, MoE- or LLaMA-style
//! model, the batch sizes and the tensor-parallel degrees. Each layer is broken into the
//! operators one device of a tensor-parallel group runs ([`layer_ops`]); every distinct operator
//! is timed once (warm-up runs, then the median of repeated runs), collectives come from a
//! [`LinkModel`], and identical layers repeat the same numbers.
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
mod ops;
mod profile;
mod spec;
mod timer;

pub use analytic::{gpu_model, GpuModel, GPUS};
pub use error::{ProfilerError, Result};
pub use host::{format_utc, utc_now, HostInfo};
pub use link::LinkModel;
pub use ops::{activation_elements, layer_ops, layer_parameters, layer_sequence, LayerKind, Op};
pub use profile::{profile, Device, OpCost, ProfileOptions, ProfileRun};
pub use spec::{Family, ModelSpec, Phase, SpecFile, SPEC_SCHEMA};
pub use timer::{CpuTimer, CudaTimer, Samples, Timer};
