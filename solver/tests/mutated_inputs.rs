//! Mutated instance files never make the solver panic: each is either refused with an input
//! error (the file and JSON path named) or loads, generates its workload, places and simulates
//! with every request accounted for. The mutations are the ones a hand-edited file suffers: a
//! key deleted, an array element dropped or repeated, a value replaced by one of another type,
//! a sign flipped, a number off by a factor of ten.

use std::path::Path;

use plexserve_solver::llm::{self, llm_placer, LlmInstance};
use plexserve_solver::{by_name, Instance, PlaceOptions, Silent, Simulator, SolverError};
use proptest::prelude::*;
use proptest::test_runner::FileFailurePersistence;
use serde_json::{json, Value};

/// One edit: which node (an index into the pre-order list of nodes, modulo its length), what
/// to do, and which replacement value.
type Edit = (usize, u8, usize);

fn replacements() -> [Value; 14] {
    [
        json!(0),
        json!(-1),
        json!(1),
        json!(0.5),
        json!(1e300),
        json!(-1e300),
        json!(u64::MAX),
        json!(""),
        json!("x"),
        Value::Null,
        json!(true),
        json!([]),
        json!({}),
        json!([0]),
    ]
}

/// Paths (keys and indices) of every node below the root, in pre-order.
fn paths(v: &Value, prefix: &mut Vec<Value>, out: &mut Vec<Vec<Value>>) {
    let children: Vec<(Value, &Value)> = match v {
        Value::Object(m) => m.iter().map(|(k, c)| (json!(k), c)).collect(),
        Value::Array(a) => a.iter().enumerate().map(|(i, c)| (json!(i), c)).collect(),
        _ => return,
    };
    for (key, child) in children {
        prefix.push(key);
        out.push(prefix.clone());
        paths(child, prefix, out);
        prefix.pop();
    }
}

fn apply(doc: &mut Value, (node, op, value): Edit) {
    let mut all = Vec::new();
    paths(doc, &mut Vec::new(), &mut all);
    let Some(path) = all.get(node % all.len().max(1)) else {
        return;
    };
    let (last, parent_path) = path.split_last().expect("paths are below the root");
    let mut parent = &mut *doc;
    for k in parent_path {
        parent = match k {
            Value::String(s) => &mut parent[s.as_str()],
            _ => &mut parent[k.as_u64().unwrap() as usize],
        };
    }
    match (parent, last) {
        (Value::Object(m), Value::String(k)) => match op % 4 {
            0 => {
                m.shift_remove(k);
            }
            1 => m[k] = scaled(&m[k], value),
            _ => m[k] = replacements()[value % 14].clone(),
        },
        (Value::Array(a), i) => {
            let i = i.as_u64().unwrap() as usize;
            match op % 5 {
                0 => {
                    a.remove(i);
                }
                1 => a.insert(i, a[i].clone()),
                2 => a[i] = scaled(&a[i], value),
                _ => a[i] = replacements()[value % 14].clone(),
            }
        }
        _ => {}
    }
}

/// A number times 10, divided by 10, negated or plus one; anything else unchanged.
fn scaled(v: &Value, how: usize) -> Value {
    match v.as_f64() {
        Some(x) => {
            let y = [x * 10.0, x / 10.0, -x, x + 1.0][how % 4];
            if v.is_u64() && y >= 0.0 && y.fract() == 0.0 {
                json!(y as u64)
            } else {
                json!(y)
            }
        }
        None => v.clone(),
    }
}

fn mutated(rel: &str, edits: &[Edit]) -> (std::path::PathBuf, String) {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join(rel);
    let mut doc: Value = serde_json::from_str(&std::fs::read_to_string(&path).unwrap()).unwrap();
    for &e in edits {
        apply(&mut doc, e);
    }
    (path, doc.to_string())
}

/// Refusals must be the input's fault (or an honest "no placement fits"), never a panic.
fn acceptable(e: &SolverError) -> bool {
    e.is_input_error() || matches!(e, SolverError::Infeasible(_))
}

/// The value of `$r`; when it is an error, a check that the error is the input's fault (naming
/// the file `$file` when given) and the end of the case.
macro_rules! or_refused {
    ($r:expr $(, $file:expr)?) => {
        match $r {
            Ok(v) => v,
            Err(e) => {
                prop_assert!(acceptable(&e), "{e}");
                $(prop_assert!(e.to_string().contains($file), "{e}");)?
                return Ok(());
            }
        }
    };
}

fn edits() -> impl Strategy<Value = Vec<Edit>> {
    proptest::collection::vec((any::<usize>(), any::<u8>(), any::<usize>()), 1..4)
}

proptest! {
    #![proptest_config(ProptestConfig {
        cases: 4000,
        failure_persistence: Some(Box::new(FileFailurePersistence::Off)),
        ..ProptestConfig::default()
    })]

    #[test]
    fn a_mutated_instance_is_refused_or_simulated(edits in edits()) {
        let (path, text) = mutated("instances/tiny/two-test-models.json", &edits);
        let inst = or_refused!(Instance::from_json(&path, &text), "two-test-models.json");
        let trace = or_refused!(inst.workload.generate(inst.base_dir()));
        let solved = or_refused!(
            by_name("sr").and_then(|p| p.place(&inst, &trace, &PlaceOptions::default(), &Silent))
        );
        let (rep, _) = Simulator::new(&inst, &trace).report(&solved.schedule);
        // Every request is good, rejected or late, or trimmed as warm-up/cool-down.
        prop_assert_eq!(rep.requests + 2 * rep.trimmed_each_end, trace.len() as u64);
        prop_assert_eq!(rep.good + rep.rejected + rep.late, rep.requests);
    }

    #[test]
    fn a_mutated_llm_instance_is_refused_or_simulated(edits in edits(), placer in 0usize..4) {
        let (path, text) = mutated("instances/llm/tiny-two-7b.json", &edits);
        let inst = or_refused!(LlmInstance::from_json(&path, &text), "tiny-two-7b.json");
        let trace = or_refused!(inst.workload.generate(inst.base_dir(), inst.llms.len()));
        let name = ["spatial", "muxserve", "tp-static", "plexserve-llm:max_evals=6"][placer];
        let solved = or_refused!(
            llm_placer(name, &PlaceOptions::default()).and_then(|(p, o)| p.place(&inst, &trace, &o))
        );
        let rep = llm::simulate(&inst, &trace, &solved.deployment);
        prop_assert_eq!(rep.finished + rep.dropped, rep.requests);
        prop_assert_eq!(rep.stuck, 0);
        prop_assert!(rep.kv_peak_fraction <= 1.0 + 1e-12);
    }
}
