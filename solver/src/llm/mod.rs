//! LLM serving: cost model, iteration-level simulator with KV paging and colocation (MuxServe),
//! runtime tensor-parallel transformation (Amoeba), placers and workloads (llm-serving.md).
//!
//! ```no_run
//! use plexserve_solver::llm::{LlmInstance, LlmPlanFile, simulate};
//! let inst = LlmInstance::load("instances/llm/tiny-two-7b.json".as_ref()).unwrap();
//! let trace = inst.workload.generate(inst.base_dir(), inst.llms.len()).unwrap();
//! let plan = LlmPlanFile::load("instances/llm/tiny-two-7b.plan.json".as_ref()).unwrap();
//! let dep = plan.resolve("plan".as_ref(), &inst).unwrap();
//! let report = simulate(&inst, &trace, &dep);
//! println!("goodput {:.2} req/s", report.goodput_rps);
//! ```

mod cost;
mod goodput;
mod instance;
mod plan;
mod report;
mod sim;
mod spec;
mod workload;

pub use cost::{CostModelSpec, LinearCost, MemoryCost, RooflineConsts, StepCost};
pub use goodput::{max_rate_at_level, GoodputAtLevel, GoodputSearch, GoodputStatus, RatePoint};
pub use instance::{
    BatchPolicy, GpuRef, Llm, LlmEntry, LlmInstance, LlmInstanceFile, LlmSimConfig,
    LLM_INSTANCE_SCHEMA,
};
pub use plan::{
    Deployment, EngineFile, EngineSpec, LlmPlanFile, TransformFile, TransformKnobs,
    TransformPolicy, TransformSpec, UnitFile, UnitSpec, LLM_PLAN_SCHEMA,
};
pub use report::{
    judge, write_llm_requests_csv, LlmModelReport, LlmSimReport, Percentiles, LLM_SIM_SCHEMA,
};
pub use sim::{
    DropReason, EngineInfo, IterRecord, LlmSim, Outcomes, RunOptions, RunResult, SimStats,
    HEAD_BLOCK_BYTES,
};
pub use spec::{GpuSpec, LlmSpec};
pub use workload::{
    read_azure_csv, AzureLlm, ChatLmsys, Lengths, LlmTrace, LlmWorkload, LongContext, PowerLaw,
};

/// Simulates a deployment and summarises it.
pub fn simulate(inst: &LlmInstance, trace: &LlmTrace, dep: &Deployment) -> LlmSimReport {
    let sim = LlmSim::new(inst, trace, dep);
    let res = sim.run(&RunOptions::default());
    LlmSimReport::new(inst, trace, &res)
}

pub mod placer;
pub use placer::{llm_placer, llm_registry, LlmPlacer, LlmSolved, DEFAULT_LLM_PLACER};
