//! `plexserve doctor`: what this build has compiled in and what hardware it finds, kept apart
//! because a CUDA build on a machine without a GPU is normal.

use plexserve_kernels::cuda;
use plexserve_profiler::HostInfo;

use super::print_json;
use crate::Exit;

pub fn run(json: bool) -> Result<(), Exit> {
    let host = HostInfo::detect();
    let milp = cfg!(feature = "milp");
    let gpus = cuda::devices();
    let memory_gib = host.memory_bytes.map(|b| b as f64 / (1u64 << 30) as f64);
    if json {
        let (list, status) = match &gpus {
            Ok(list) => (list.clone(), "ok".to_string()),
            Err(e) => (Vec::new(), e.to_string()),
        };
        let doc = serde_json::json!({
            "schema": "plexserve/doctor/v1",
            "version": env!("CARGO_PKG_VERSION"),
            "features": { "milp": milp, "cuda": cuda::COMPILED },
            "host": {
                "cpu_model": host.cpu_model,
                "cpu_threads": host.cpu_threads,
                "memory_gib": memory_gib,
                "os": host.os,
            },
            "gpu_status": status,
            "gpus": list.iter().map(|g| serde_json::json!({
                "ordinal": g.ordinal,
                "name": g.name,
                "memory_gib": g.memory_bytes as f64 / (1u64 << 30) as f64,
                "compute_capability": format!("{}.{}", g.compute_capability.0, g.compute_capability.1),
                "driver_version": g.driver_version,
            })).collect::<Vec<_>>(),
        });
        return print_json(&doc);
    }
    let yes = |b: bool| if b { "compiled in" } else { "not compiled" };
    println!("plexserve {}", env!("CARGO_PKG_VERSION"));
    println!("{:<10}{}", "milp", yes(milp));
    println!("{:<10}{}", "cuda", yes(cuda::COMPILED));
    println!(
        "{:<10}{} ({} threads)",
        "cpu", host.cpu_model, host.cpu_threads
    );
    match memory_gib {
        Some(m) => println!("{:<10}{m:.1} GiB", "memory"),
        None => println!("{:<10}unknown", "memory"),
    }
    println!("{:<10}{}", "os", host.os);
    match gpus {
        Ok(list) => {
            for g in list {
                println!(
                    "{:<10}{} {} ({:.1} GiB, compute {}.{}, driver {})",
                    "gpu",
                    g.ordinal,
                    g.name,
                    g.memory_bytes as f64 / (1u64 << 30) as f64,
                    g.compute_capability.0,
                    g.compute_capability.1,
                    g.driver_version
                );
            }
        }
        Err(e) => println!("{:<10}none: {e}", "gpu"),
    }
    Ok(())
}
