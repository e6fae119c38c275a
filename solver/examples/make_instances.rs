//! Writes the generated files under `instances/`: synthetic Azure Functions traces in both public
//! formats and the paper-scale instances S1, S2, S3 × MAF1, MAF2 with their derived V100 profiles.
//!
//! ```text
//! cargo run -p plexserve-solver --example make_instances --release
//! ```
//!
//! Every output is a pure function of the constants below (ChaCha8 streams with fixed seeds, no
//! clock, no map iteration order), so a rerun rewrites every file byte-identically. How each
//! number is derived is documented in `instances/README.md`; keep the two in step.

use std::fmt::Write as _;
use std::path::Path;

use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;
use rand_distr::{Distribution, LogNormal, Poisson};

type Res<T> = Result<T, String>;

// ---------------------------------------------------------------------------------------------
// Trace magnitudes.

/// Assumed invocation rate of the real 2019 trace in the MAF1 slice (day file d01, 00:00–01:00),
/// in invocations/s. Not measured here (the real files are not shipped); chosen so that S1@MAF1 at
/// the paper's rate_scale 2e-3 carries the same total rate (≈ 26 req/s) as S1@MAF2 at 16.
const REAL_MAF1_RATE: f64 = 13_000.0;
/// Mean invocation rate of the real 2021 trace: ≈ 1.98 M invocations over 14 days.
const REAL_MAF2_RATE: f64 = 1_980_000.0 / (14.0 * 86_400.0);
/// Expected invocations per minute of the synthetic 2019 trace (all functions), before bursts.
const SYNTH_2019_PER_MIN: f64 = 7_800.0;
/// Expected invocations of the synthetic 2021 trace on day 13.
const SYNTH_2021_PER_DAY: f64 = 10_500.0;
/// Functions present on the first / only on the second 2019 day; functions of the 2021 trace.
const FUNCS_2019_DAY1: usize = 330;
const FUNCS_2019_NEW_DAY2: usize = 40;
const FUNCS_2021: usize = 190;
/// Function ids of the 2021 trace that are reused by a second app (the key collision of §3.3).
const COLLISIONS_2021: usize = 4;

// ---------------------------------------------------------------------------------------------
// Profiles.

/// Stage latencies of the public bert-1.3b test profile (alpaserve-semantics.md §5), pp = 1, 2, 4, 8:
/// the source of the pipeline-stage shares.
const TEST_STAGES: [&[f64]; 4] = [
    &[0.099],
    &[0.051, 0.052],
    &[0.028, 0.027, 0.027, 0.029],
    &[0.015, 0.014, 0.014, 0.014, 0.014, 0.014, 0.014, 0.016],
];
const PP: [u32; 4] = [1, 2, 4, 8];
const TP: [u32; 3] = [1, 2, 4];
const BATCHES: [u32; 5] = [1, 2, 4, 8, 16];
/// Effective ring all-reduce bus bandwidth over NVLink 2.0 inside a p3.16xlarge node (bytes/s).
const NVLINK_BUS_BW: f64 = 130e9;
/// Fixed cost of one all-reduce (kernel launch and synchronisation), seconds.
const ALLREDUCE_LATENCY_S: f64 = 20e-6;
/// V100 HBM2 bandwidth (bytes/s): the weight-read time that batching amortises.
const HBM_BW: f64 = 900e9;
const GIB: f64 = (1u64 << 30) as f64;
const BUDGET_GIB: f64 = 13.0;

struct ModelType {
    name: &'static str,
    /// Single-device batch-1 latency (alpaserve-semantics.md §4), seconds.
    latency_s: f64,
    /// fp16 weights, bytes (decimal GB).
    weight_bytes: f64,
    layers: u32,
    hidden: u32,
    seq: u32,
}

const TYPES: [ModelType; 6] = [
    ModelType {
        name: "bert-1.3b",
        latency_s: 0.151,
        weight_bytes: 2.6e9,
        layers: 24,
        hidden: 2048,
        seq: 2048,
    },
    ModelType {
        name: "bert-2.6b",
        latency_s: 0.238,
        weight_bytes: 5.2e9,
        layers: 32,
        hidden: 2560,
        seq: 2048,
    },
    ModelType {
        name: "bert-6.7b",
        latency_s: 0.395,
        weight_bytes: 13.4e9,
        layers: 32,
        hidden: 4096,
        seq: 2048,
    },
    ModelType {
        name: "moe-1.3b",
        latency_s: 0.150,
        weight_bytes: 2.6e9,
        layers: 16,
        hidden: 768,
        seq: 1024,
    },
    ModelType {
        name: "moe-2.4b",
        latency_s: 0.171,
        weight_bytes: 4.8e9,
        layers: 16,
        hidden: 1024,
        seq: 1024,
    },
    // Shape not public: hidden 1536 is the width whose parameter count (∝ hidden²) scales
    // MoE-2.4B's 4.8 GB to 10.6 GB within 10 %.
    ModelType {
        name: "moe-5.3b",
        latency_s: 0.234,
        weight_bytes: 10.6e9,
        layers: 16,
        hidden: 1536,
        seq: 1024,
    },
];

/// S3's interleaving: model j has type S3_ORDER[j mod 6].
const S3_ORDER: [&str; 6] = [
    "bert-6.7b",
    "moe-5.3b",
    "bert-2.6b",
    "moe-2.4b",
    "bert-1.3b",
    "moe-1.3b",
];

fn main() {
    if let Err(e) = run() {
        eprintln!("make_instances: {e}");
        std::process::exit(1);
    }
}

fn run() -> Res<()> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../instances");
    let root = root
        .canonicalize()
        .map_err(|e| format!("{}: {e}", root.display()))?;

    let (d01, d02, maf1_rate) = synth_2019();
    write(&root.join("traces/maf1/d01.csv"), &d01)?;
    write(&root.join("traces/maf1/d02.csv"), &d02)?;
    let (inv, maf2_rate) = synth_2021();
    write(&root.join("traces/maf2/invocations.csv"), &inv)?;

    let k1 = REAL_MAF1_RATE / maf1_rate;
    let k2 = REAL_MAF2_RATE / maf2_rate;
    println!("synthetic MAF1 slice rate {maf1_rate:.3} inv/s → K_MAF1 = {k1:.4}");
    println!("synthetic MAF2 day-13 rate {maf2_rate:.5} inv/s → K_MAF2 = {k2:.4}");

    struct Setting {
        set: &'static str,
        devices: u32,
        types: Vec<&'static str>,
    }
    let settings = [
        Setting {
            set: "s1",
            devices: 16,
            types: vec!["bert-1.3b"; 48],
        },
        Setting {
            set: "s2",
            devices: 64,
            types: vec!["bert-6.7b"; 48],
        },
        Setting {
            set: "s3",
            devices: 48,
            types: (0..72).map(|j| S3_ORDER[j % 6]).collect(),
        },
    ];
    for s in &settings {
        // Paper fixed points (alpaserve-semantics.md §4): slo_scale 5 everywhere; MAF1 rate_scale
        // 2e-3 and cv_scale 4; MAF2 rate_scale 16 (32 for S3) and cv_scale 1.
        let maf2_paper = if s.set == "s3" { 32.0 } else { 16.0 };
        for (trace, paper_rate_scale, k, cv_scale) in
            [("maf1", 2e-3, k1, 4.0), ("maf2", maf2_paper, k2, 1.0)]
        {
            let rate_scale = round_sig(paper_rate_scale * k, 3);
            let workload = if trace == "maf1" {
                format!(
                    "{{\"kind\": \"azure_functions_2019\", \"files\": [\"../traces/maf1/d01.csv\", \"../traces/maf1/d02.csv\"], \
                     \"start\": \"0.0.0\", \"end\": \"0.1.0\", \"interval_s\": 60, \"rate_scale\": {}, \"cv_scale\": {}, \"seed\": 0}}",
                    num(rate_scale),
                    num(cv_scale)
                )
            } else {
                format!(
                    "{{\"kind\": \"azure_functions_2021\", \"file\": \"../traces/maf2/invocations.csv\", \
                     \"start\": \"13.0.0\", \"end\": \"13.23.60\", \"interval_s\": 5400, \"rate_scale\": {}, \"cv_scale\": {}, \"seed\": 0}}",
                    num(rate_scale),
                    num(cv_scale)
                )
            };
            let name = format!("{}-{trace}", s.set);
            let text = instance_json(&name, s.devices, &s.types, &workload)?;
            write(&root.join(format!("paper/{name}.json")), &text)?;
            println!(
                "{name}: {} devices, rate_scale {} (paper {paper_rate_scale})",
                s.devices,
                num(rate_scale)
            );
        }
    }
    Ok(())
}

fn write(path: &Path, text: &str) -> Res<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(|e| format!("{}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("{}: {e}", path.display()))?;
    println!("wrote {} ({} bytes)", rel(path), text.len());
    Ok(())
}

fn rel(p: &Path) -> String {
    let s = p.display().to_string();
    match s.find("instances/") {
        Some(i) => s[i..].to_string(),
        None => s,
    }
}

/// A number as JSON (serde_json's shortest round-trip form).
fn num(v: f64) -> String {
    serde_json::to_string(&v).unwrap_or_else(|_| "null".into())
}

fn round_sig(v: f64, digits: i32) -> f64 {
    if v <= 0.0 {
        return v;
    }
    let p = 10f64.powi(digits - 1 - v.log10().floor() as i32);
    (v * p).round() / p
}

/// `v` rounded to `decimals` decimals, as the f64 nearest to that decimal (so that JSON shows the
/// short decimal, not the float noise of `(v / step).round() * step`).
fn round_to(v: f64, decimals: usize) -> f64 {
    format!("{v:.decimals$}").parse().unwrap_or(v)
}

// ---------------------------------------------------------------------------------------------
// Profiles and instances.

/// Ring all-reduce time of `bytes` over `tp` devices.
fn allreduce_s(tp: u32, bytes: f64) -> f64 {
    if tp <= 1 {
        return 0.0;
    }
    let tp = f64::from(tp);
    2.0 * (tp - 1.0) / tp * bytes / NVLINK_BUS_BW + ALLREDUCE_LATENCY_S
}

/// β of latency(b) = latency(1) · (1 + β (b − 1)): everything but the weight read scales with b.
fn batch_beta(t: &ModelType) -> f64 {
    1.0 - t.weight_bytes / HBM_BW / t.latency_s
}

fn profile_json(t: &ModelType) -> String {
    let beta = batch_beta(t);
    let mut out = String::new();
    let _ = write!(
        out,
        "    \"{}\": {{\n      \"batch_sizes\": {},\n      \"source\": {{\"device\": \"V100-SXM2-16GB\", \"method\": \"derived by solver/examples/make_instances.rs from the published single-device latency and size; see instances/README.md\"}},\n      \"configs\": [\n",
        t.name,
        serde_json::to_string(&BATCHES).unwrap_or_default()
    );
    let mut rows = Vec::new();
    for (pi, &pp) in PP.iter().enumerate() {
        let shares: Vec<f64> = TEST_STAGES[pi]
            .iter()
            .map(|s| s / TEST_STAGES[0][0])
            .collect();
        for &tp in &TP {
            let lat: Vec<Vec<f64>> = BATCHES
                .iter()
                .map(|&b| {
                    let b = f64::from(b);
                    let bytes = b * f64::from(t.seq) * f64::from(t.hidden) * 2.0;
                    let comm = f64::from(t.layers / pp) * 2.0 * allreduce_s(tp, bytes);
                    shares
                        .iter()
                        .map(|share| {
                            let compute =
                                t.latency_s * share / f64::from(tp) * (1.0 + beta * (b - 1.0));
                            round_to(compute + comm, 6)
                        })
                        .collect()
                })
                .collect();
            let w = round_to(t.weight_bytes / f64::from(pp * tp) / GIB, 6);
            let weights = vec![w; pp as usize];
            rows.push(format!(
                "        {{\"pp\": {pp}, \"tp\": {tp}, \"stage_latency_s\": {}, \"stage_weight_gib\": {}}}",
                serde_json::to_string(&lat).unwrap_or_default(),
                serde_json::to_string(&weights).unwrap_or_default()
            ));
        }
    }
    out.push_str(&rows.join(",\n"));
    out.push_str("\n      ]\n    }");
    out
}

fn instance_json(name: &str, devices: u32, types: &[&str], workload: &str) -> Res<String> {
    let mut used: Vec<&ModelType> = Vec::new();
    for ty in types {
        let t = TYPES
            .iter()
            .find(|t| t.name == *ty)
            .ok_or(format!("unknown type {ty}"))?;
        if !used.iter().any(|u| u.name == t.name) {
            used.push(t);
        }
    }
    let mut out = String::new();
    let _ = writeln!(
        out,
        "{{\n  \"schema\": \"plexserve/instance/v1\",\n  \"name\": \"{name}\","
    );
    let _ = writeln!(
        out,
        "  \"cluster\": {{\"devices\": {devices}, \"memory_budget_gib\": {}, \"devices_per_node\": 8}},",
        num(BUDGET_GIB)
    );
    out.push_str("  \"profiles\": {\n");
    out.push_str(
        &used
            .iter()
            .map(|t| profile_json(t))
            .collect::<Vec<_>>()
            .join(",\n"),
    );
    out.push_str("\n  },\n  \"models\": [\n");
    let width = if types.len() > 10 { 2 } else { 1 };
    let models: Vec<String> = types
        .iter()
        .enumerate()
        .map(|(j, ty)| {
            format!("    {{\"name\": \"m{j:0width$}\", \"profile\": \"{ty}\", \"slo_scale\": 5}}")
        })
        .collect();
    out.push_str(&models.join(",\n"));
    let _ = write!(out, "\n  ],\n  \"workload\": {workload}\n}}\n");
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// Synthetic traces.

fn hex64(rng: &mut ChaCha8Rng) -> String {
    let mut s = String::with_capacity(64);
    for _ in 0..4 {
        let _ = write!(s, "{:016x}", rng.random::<u64>());
    }
    s
}

/// How a function's invocation rate varies over time.
#[derive(Clone)]
enum Pattern {
    /// `count` invocations every `period` minutes, at minutes ≡ `phase`.
    Timer { period: u64, phase: u64, count: u64 },
    /// Poisson counts around `base` per minute, modulated by a daily sine and by bursts: a
    /// two-state Markov chain (per minute) that multiplies the rate by `burst` while "on".
    Bursty {
        base: f64,
        amp: f64,
        phase: f64,
        burst: f64,
        p_on: f64,
        p_off: f64,
    },
}

impl Pattern {
    /// Long-run mean invocations per minute.
    fn mean(&self) -> f64 {
        match *self {
            Pattern::Timer { period, count, .. } => count as f64 / period as f64,
            Pattern::Bursty { base, .. } => base,
        }
    }

    fn scale(&mut self, f: f64) {
        if let Pattern::Bursty { base, .. } = self {
            *base *= f;
        }
    }
}

/// Per-minute invocation counts of one function over `minutes` minutes starting at absolute
/// minute `t0`, drawn from its own stream so that adding functions never changes others.
fn minute_counts(p: &Pattern, seed: u64, t0: u64, minutes: u64) -> Vec<u64> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    match *p {
        Pattern::Timer {
            period,
            phase,
            count,
        } => (t0..t0 + minutes)
            .map(|t| if (t + phase) % period == 0 { count } else { 0 })
            .collect(),
        Pattern::Bursty {
            base,
            amp,
            phase,
            burst,
            p_on,
            p_off,
        } => {
            // Normalise so that `base` stays the long-run mean: E[factor] = 1 + (burst − 1)·π_on.
            let pi_on = p_on / (p_on + p_off);
            let norm = 1.0 + (burst - 1.0) * pi_on;
            // Run the chain from minute 0 so that a function's state is continuous across days.
            let mut on = rng.random::<f64>() < pi_on;
            let mut out = Vec::with_capacity(minutes as usize);
            for t in 0..t0 + minutes {
                on = if on {
                    rng.random::<f64>() >= p_off
                } else {
                    rng.random::<f64>() < p_on
                };
                let day = (t as f64 / 1440.0) * std::f64::consts::TAU;
                let lambda =
                    base * (1.0 + amp * (day + phase).sin()) * if on { burst } else { 1.0 } / norm;
                let c = if lambda > 0.0 {
                    Poisson::new(lambda)
                        .map(|d| d.sample(&mut rng) as u64)
                        .unwrap_or(0)
                } else {
                    0
                };
                if t >= t0 {
                    out.push(c);
                }
            }
            out
        }
    }
}

struct Function {
    owner: String,
    app: String,
    func: String,
    trigger: &'static str,
    pattern: Pattern,
    seed: u64,
}

/// Trigger groups with their share of functions (Shahrad et al., ATC'20): http 55 %, queue 15 %,
/// event 2 %, timer 16 %, orchestration 7 %, storage/others 5 %.
fn draw_trigger(rng: &mut ChaCha8Rng) -> &'static str {
    let u = rng.random::<f64>();
    match u {
        u if u < 0.55 => "http",
        u if u < 0.70 => "queue",
        u if u < 0.72 => "event",
        u if u < 0.88 => "timer",
        u if u < 0.95 => "orchestration",
        u if u < 0.975 => "storage",
        _ => "others",
    }
}

/// Functions per app: 1 (54 %), 2 (16 %), 3 (10 %), 4–5 (8 %), 6–10 (7 %), 11–20 (5 %).
fn draw_app_size(rng: &mut ChaCha8Rng) -> usize {
    let u = rng.random::<f64>();
    match u {
        u if u < 0.54 => 1,
        u if u < 0.70 => 2,
        u if u < 0.80 => 3,
        u if u < 0.88 => rng.random_range(4..=5),
        u if u < 0.95 => rng.random_range(6..=10),
        _ => rng.random_range(11..=20),
    }
}

/// Draws `n` functions grouped into apps and owners, with heavy-tailed (log-normal, σ = 1.5) mean
/// rates; queue and event functions are busier, timers periodic, orchestrations the burstiest.
fn draw_functions(
    rng: &mut ChaCha8Rng,
    n: usize,
    seed_base: u64,
    timer_periods: &[u64],
) -> Vec<Function> {
    let size = LogNormal::new(0.0, 1.5).expect("valid log-normal");
    let mut out = Vec::with_capacity(n);
    let mut owner = hex64(rng);
    while out.len() < n {
        if rng.random::<f64>() < 0.7 {
            owner = hex64(rng);
        }
        let app = hex64(rng);
        for _ in 0..draw_app_size(rng) {
            if out.len() == n {
                break;
            }
            let trigger = draw_trigger(rng);
            let weight: f64 = size.sample(rng);
            let weight = weight
                * match trigger {
                    "queue" | "event" => 2.0,
                    _ => 1.0,
                };
            let pattern = if trigger == "timer" {
                let period = timer_periods[rng.random_range(0..timer_periods.len())];
                Pattern::Timer {
                    period,
                    phase: rng.random_range(0..period),
                    count: 1,
                }
            } else {
                let (lo, hi) = if trigger == "orchestration" {
                    (10.0f64, 60.0f64)
                } else {
                    (2.0, 20.0)
                };
                Pattern::Bursty {
                    base: weight,
                    amp: rng.random_range(0.2..0.8),
                    phase: rng.random_range(0.0..std::f64::consts::TAU),
                    // Log-uniform burst multiplier; bursts last 1/p_off ≈ 2–10 minutes and come
                    // every 1/p_on ≈ 20–240 minutes.
                    burst: (lo.ln() + rng.random::<f64>() * (hi.ln() - lo.ln())).exp(),
                    p_on: 1.0 / rng.random_range(20.0..240.0),
                    p_off: 1.0 / rng.random_range(2.0..10.0),
                }
            };
            let seed = seed_base + out.len() as u64;
            out.push(Function {
                owner: owner.clone(),
                app: app.clone(),
                func: hex64(rng),
                trigger,
                pattern,
                seed,
            });
        }
    }
    out
}

/// Scales bursty functions so that all functions together expect `target` invocations per minute;
/// timers keep one invocation per tick (their share is small, as in the real trace).
fn normalise(fns: &mut [Function], target: f64) {
    let timers: f64 = fns
        .iter()
        .filter(|f| matches!(f.pattern, Pattern::Timer { .. }))
        .map(|f| f.pattern.mean())
        .sum();
    let bursty: f64 = fns
        .iter()
        .filter(|f| matches!(f.pattern, Pattern::Bursty { .. }))
        .map(|f| f.pattern.mean())
        .sum();
    let f = ((target - timers) / bursty).max(0.0);
    for func in fns.iter_mut() {
        if matches!(func.pattern, Pattern::Bursty { .. }) {
            func.pattern.scale(f);
        }
    }
}

/// Two 2019-format day files and the invocation rate of the MAF1 slice (d01, first hour).
fn synth_2019() -> (String, String, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(2019);
    let mut fns = draw_functions(
        &mut rng,
        FUNCS_2019_DAY1 + FUNCS_2019_NEW_DAY2,
        2_019_000,
        &[1, 5, 15, 30, 60],
    );
    normalise(
        &mut fns,
        SYNTH_2019_PER_MIN * (FUNCS_2019_DAY1 + FUNCS_2019_NEW_DAY2) as f64
            / FUNCS_2019_DAY1 as f64,
    );
    // The last FUNCS_2019_NEW_DAY2 functions first appear on day 2; about 8 % of the others are
    // absent on day 2 (deleted or idle functions leave the per-day files).
    let n1 = FUNCS_2019_DAY1;
    let absent_day2: Vec<bool> = (0..fns.len())
        .map(|i| i < n1 && rng.random::<f64>() < 0.08)
        .collect();
    let header = {
        let mut h = String::from("HashOwner,HashApp,HashFunction,Trigger");
        for c in 1..=1440 {
            let _ = write!(h, ",{c}");
        }
        h.push('\n');
        h
    };
    let mut slice_total = 0u64;
    let mut days = Vec::new();
    for day in 0..2u64 {
        // Rows ordered by (owner, app, function) hash, like the published files; the day-2 file
        // therefore interleaves new functions with old ones.
        let mut idx: Vec<usize> = (0..fns.len())
            .filter(|&i| if day == 0 { i < n1 } else { !absent_day2[i] })
            .collect();
        idx.sort_by(|&a, &b| {
            (&fns[a].owner, &fns[a].app, &fns[a].func).cmp(&(
                &fns[b].owner,
                &fns[b].app,
                &fns[b].func,
            ))
        });
        let mut text = header.clone();
        for i in idx {
            let f = &fns[i];
            let counts = minute_counts(&f.pattern, f.seed, day * 1440, 1440);
            if day == 0 {
                slice_total += counts[..60].iter().sum::<u64>();
            }
            let _ = write!(text, "{},{},{},{}", f.owner, f.app, f.func, f.trigger);
            for c in counts {
                let _ = write!(text, ",{c}");
            }
            text.push('\n');
        }
        days.push(text);
    }
    let d02 = days.pop().unwrap_or_default();
    let d01 = days.pop().unwrap_or_default();
    (d01, d02, slice_total as f64 / 3600.0)
}

/// The 2021-format invocation file (22:00 of day 12 to the end of day 13) and the invocation rate
/// of day 13.
fn synth_2021() -> (String, f64) {
    let mut rng = ChaCha8Rng::seed_from_u64(2021);
    let mut fns = draw_functions(&mut rng, FUNCS_2021, 2_021_000, &[30, 60, 120, 240, 360]);
    normalise(&mut fns, SYNTH_2021_PER_DAY / 1440.0);
    // Reuse the function id of a function of another app: ids are unique only within an app.
    // Pick busy non-timer functions so that both sides of every collision are active on day 13.
    let mut busy: Vec<usize> = (0..fns.len())
        .filter(|&i| matches!(fns[i].pattern, Pattern::Bursty { .. }))
        .collect();
    busy.sort_by(|&a, &b| {
        fns[b]
            .pattern
            .mean()
            .total_cmp(&fns[a].pattern.mean())
            .then(a.cmp(&b))
    });
    let mut made = 0;
    let mut k = 0;
    while made < COLLISIONS_2021 && k + 1 < busy.len() {
        let (a, b) = (busy[k], busy[k + 1]);
        if fns[a].app != fns[b].app {
            fns[b].func = fns[a].func.clone();
            made += 1;
        }
        k += 2;
    }
    let duration = LogNormal::new((0.3f64).ln(), 1.2).expect("valid log-normal");
    let t0 = 12 * 1440 + 22 * 60; // absolute minute 22:00 of day 12
    let minutes = 26 * 60;
    let mut rows: Vec<(f64, usize, f64)> = Vec::new();
    for (i, f) in fns.iter().enumerate() {
        let counts = minute_counts(&f.pattern, f.seed, t0, minutes);
        let mut jitter = ChaCha8Rng::seed_from_u64(f.seed ^ 0x5eed);
        for (m, &c) in counts.iter().enumerate() {
            for _ in 0..c {
                let start = ((t0 + m as u64) * 60) as f64
                    + if matches!(f.pattern, Pattern::Timer { .. }) {
                        0.0
                    } else {
                        jitter.random::<f64>() * 60.0
                    };
                let d = round_to(duration.sample(&mut jitter).min(300.0), 3);
                rows.push((round_to(start + d, 3), i, d));
            }
        }
    }
    rows.sort_by(|a, b| {
        a.0.total_cmp(&b.0)
            .then(a.1.cmp(&b.1))
            .then(a.2.total_cmp(&b.2))
    });
    let day13 = (13.0 * 86_400.0, 14.0 * 86_400.0);
    let mut n13 = 0u64;
    let mut text = String::from("app,func,end_timestamp,duration\n");
    for (end, i, d) in rows {
        let arrival = end - d;
        if arrival >= day13.0 && arrival < day13.1 {
            n13 += 1;
        }
        let _ = writeln!(text, "{},{},{:.3},{:.3}", fns[i].app, fns[i].func, end, d);
    }
    (text, n13 as f64 / 86_400.0)
}
