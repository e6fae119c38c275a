//! plexserve-solver: the vocabulary of plexserve (instances, profiles, plans), request workloads,
//! the request-level simulator and the placers.
//!
//! ```no_run
//! use plexserve_solver::{Instance, Simulator, Schedule, PlanFile};
//! let inst = Instance::load("instances/tiny/two-test-models.json".as_ref()).unwrap();
//! let trace = inst.workload.generate(inst.base_dir()).unwrap();
//! let plan = PlanFile::load("instances/tiny/two-test-models.plan.json".as_ref()).unwrap();
//! let schedule = plan.resolve("plan".as_ref(), &inst).unwrap();
//! let (report, _) = Simulator::new(&inst, &trace).report(&schedule);
//! println!("attainment {:.4}", report.slo_attainment);
//! ```

pub mod compare;
mod error;
mod instance;
pub mod llm;
pub mod placer;
mod plan;
pub mod sim;
mod stage_dp;
pub mod time;
pub mod workload;

pub use error::{
    check_schema, document_kind, parse_document, parse_json, read_file, Result, SolverError,
};

/// Most worker threads a `--threads` option accepts, in every command: far more than any
/// machine's cores, and a pool of 2³² threads never starts (it spins trying).
pub const MAX_THREADS: usize = 4096;
pub use instance::{
    single_device_latency_s, validate_profile, Cluster, Dispatch, Instance, InstanceFile,
    LayerCost, Model, ModelEntry, ParallelConfig, Profile, ProfileSource, SimulatorConfig,
    INSTANCE_SCHEMA,
};
pub use placer::{
    by_name, parse_placer_spec, registry, Observer, PlaceOptions, Placer, Silent, Solved,
};
pub use plan::{
    model_weight_gib, Group, GroupFile, Placement, PlanFile, Predicted, Schedule, SegmentFile,
    SolveInfo, SolveStatus, PLAN_SCHEMA,
};
pub use sim::{Score, Scratch, SimOptions, SimReport, Simulator};
pub use stage_dp::{
    bottleneck_by_threshold, derive_configs, partition, uniform_config, PartitionOptions,
    ProfileFile, Stage, StageObjective, StagePlan, PROFILE_SCHEMA,
};
pub use workload::{Trace, WorkloadSpec};
