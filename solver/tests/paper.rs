//! A reduced S1/S2/S3 sweep (first 20 minutes of the MAF1-style workloads, two device counts each):
//! at every point `plexserve` ≥ `alpaserve-sep` ≥ `sr` in the attainment `simulate` reports.

use plexserve_solver::{by_name, Instance, InstanceFile, PlaceOptions, Silent, Simulator};

fn reduced(set: &str, devices: u32) -> Instance {
    let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
        .join(format!("../instances/paper/{set}.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let mut file: InstanceFile = serde_json::from_str(&text).unwrap();
    file.workload["end"] = serde_json::json!("0.0.20");
    file.cluster.devices = devices;
    Instance::from_file(&path, file).unwrap()
}

fn attainment(inst: &Instance, trace: &plexserve_solver::Trace, placer: &str) -> f64 {
    let solved = by_name(placer)
        .unwrap()
        .place(inst, trace, &PlaceOptions::default(), &Silent)
        .unwrap();
    let mut sim = Simulator::new(inst, trace);
    if let Some(d) = solved.dispatch {
        sim.config.dispatch = d;
    }
    let (report, _) = sim.report(&solved.schedule);
    assert!(
        (report.slo_attainment - solved.score.attainment).abs() < 1e-12,
        "{placer}: the search scores what simulate reports"
    );
    report.slo_attainment
}

#[test]
fn plexserve_beats_alpaserve_sep_beats_sr_on_a_reduced_sweep() {
    for (set, devices) in [
        ("s1-maf1", 8),
        ("s1-maf1", 16),
        ("s2-maf1", 48),
        ("s2-maf1", 64),
        ("s3-maf1", 32),
        ("s3-maf1", 48),
    ] {
        let inst = reduced(set, devices);
        let trace = inst.workload.generate(inst.base_dir()).unwrap();
        let sr = attainment(&inst, &trace, "sr");
        let sep = attainment(&inst, &trace, "alpaserve-sep");
        let ours = attainment(&inst, &trace, "plexserve");
        eprintln!(
            "{set} @ {devices} devices: sr {sr:.4}  alpaserve-sep {sep:.4}  plexserve {ours:.4}"
        );
        assert!(sep >= sr, "{set}@{devices}: alpaserve-sep {sep} < sr {sr}");
        assert!(
            ours >= sep,
            "{set}@{devices}: plexserve {ours} < alpaserve-sep {sep}"
        );
    }
}
