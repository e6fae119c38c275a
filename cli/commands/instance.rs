//! `plexserve instance`: an instance file from measured (or predicted) profile files, so the
//! pipeline profile → instance → solve → serve needs no hand-written JSON.

use std::path::Path;

use plexserve_solver::{parse_json, read_file, Instance, ProfileFile};
use serde_json::{json, Map, Value};

use crate::args::InstanceArgs;
use crate::Exit;

/// `value` must be finite and positive (`zero_ok`: or zero).
fn check(flag: &str, value: f64, zero_ok: bool) -> Result<(), Exit> {
    if value.is_finite() && (value > 0.0 || (zero_ok && value == 0.0)) {
        Ok(())
    } else {
        let what = if zero_ok { "non-negative" } else { "positive" };
        Err(Exit::input(format!(
            "--{flag}: expected a {what} number, found {value}"
        )))
    }
}

/// The instance's JSON: every profile of every file, `copies` models of each, in file order.
pub fn build(a: &InstanceArgs) -> Result<Value, Exit> {
    check("memory-budget-gib", a.memory_budget_gib, false)?;
    check("total-rate", a.total_rate, false)?;
    check("cv", a.cv, false)?;
    check("duration-s", a.duration_s, false)?;
    check("slo-scale", a.slo_scale, false)?;
    if let Some(alpha) = a.alpha {
        check("alpha", alpha, true)?;
    }
    let mut profiles = Map::new();
    let mut origin: Vec<(String, &Path)> = Vec::new();
    for path in &a.profiles {
        // Validated first, so a bad profile file gets the solver's precise error.
        ProfileFile::load(path)?;
        let file: Value = parse_json(path, &read_file(path)?)?;
        let Some(Value::Object(entries)) = file.get("profiles") else {
            return Err(Exit::input(format!(
                "{}: at profiles: expected an object of profiles",
                path.display()
            )));
        };
        for (name, profile) in entries {
            if let Some((_, first)) = origin.iter().find(|(n, _)| n == name) {
                return Err(Exit::input(format!(
                    "{}: at profiles.{name}: a profile of that name already came from {}",
                    path.display(),
                    first.display()
                )));
            }
            origin.push((name.clone(), path));
            profiles.insert(name.clone(), profile.clone());
        }
    }
    let models: Vec<Value> = origin
        .iter()
        .flat_map(|(profile, _)| {
            (0..a.copies).map(move |i| {
                let name = if a.copies == 1 {
                    profile.clone()
                } else {
                    format!("{profile}-{i}")
                };
                json!({ "name": name, "profile": profile, "slo_scale": a.slo_scale })
            })
        })
        .collect();
    let mut workload = json!({
        "kind": "gamma",
        "duration_s": a.duration_s,
        "seed": a.seed,
        "total_rate": a.total_rate,
        "cv": a.cv,
    });
    if let Some(alpha) = a.alpha {
        workload["rate_distribution"] = json!("power_law");
        workload["alpha"] = json!(alpha);
    }
    let name = a.name.clone().unwrap_or_else(|| {
        origin
            .iter()
            .map(|(n, _)| n.as_str())
            .collect::<Vec<_>>()
            .join("+")
    });
    Ok(json!({
        "schema": "plexserve/instance/v1",
        "name": name,
        "cluster": { "devices": a.devices, "memory_budget_gib": a.memory_budget_gib },
        "profiles": profiles,
        "models": models,
        "workload": workload,
    }))
}

pub fn run(a: &InstanceArgs) -> Result<(), Exit> {
    let value = build(a)?;
    let text = serde_json::to_string_pretty(&value).map_err(|e| Exit {
        code: 1,
        message: format!("cannot write the instance: {e}"),
    })? + "\n";
    // The same validation `solve` applies, so what is written always loads.
    let label = a.output.as_deref().unwrap_or(Path::new("<instance>"));
    Instance::from_json(label, &text)?;
    match &a.output {
        Some(path) => super::write_file(path, &text),
        None => {
            print!("{text}");
            Ok(())
        }
    }
}
