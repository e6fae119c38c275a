//! End-to-end tests of the `plexserve` command line: one test binary, one module per topic.

#[path = "suite/common.rs"]
mod common;
#[path = "suite/compare.rs"]
mod compare;
#[path = "suite/llm.rs"]
mod llm;
#[path = "suite/malformed.rs"]
mod malformed;
#[path = "suite/pipeline.rs"]
mod pipeline;
#[path = "suite/solve.rs"]
mod solve;
