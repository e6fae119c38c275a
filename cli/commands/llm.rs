//! `plexserve llm …`: place, simulate and compare LLMs on a GPU cluster (llm-serving.md).

use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use clap::Subcommand;
use plexserve_solver::llm::{self, LlmInstance, LlmPlanFile, LlmSimReport};
use plexserve_solver::{PlaceOptions, Predicted, SolveInfo};

use rayon::prelude::*;

use super::{print_json, with_threads, write_csv, write_file};
use crate::args::SearchArgs;
use crate::Exit;

#[derive(Debug, Subcommand)]
pub enum LlmCommand {
    /// Place the LLMs of an LLM instance and write the plan.
    Solve {
        instance: PathBuf,
        /// Placer NAME[:key=value,...] (see `plexserve llm placers`).
        #[arg(long)]
        placer: Option<String>,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        #[arg(long)]
        json: bool,
        #[command(flatten)]
        search: SearchArgs,
    },
    /// Simulate an LLM plan on the instance's workload.
    Simulate {
        instance: PathBuf,
        #[arg(long)]
        plan: PathBuf,
        #[arg(long)]
        json: bool,
        /// One CSV row per request: `request,llm,arrival_s,prompt_tokens,output_tokens,status,
        /// engine,first_token_s,finish_s,ttft_s,tpot_s,latency_s,preemptions,good`.
        #[arg(long = "requests-out")]
        requests_out: Option<PathBuf>,
    },
    /// Compare placers, optionally over a sweep (`rate_scale=0.5,1,1.5`); writes TSV and SVG plots.
    Compare {
        instance: PathBuf,
        /// Comma-separated placers; `key=value` items after a `NAME:` continue its options
        /// (`tp-hybrid:tp=2,big=2,tp-static`).
        #[arg(long)]
        placers: String,
        #[arg(long)]
        sweep: Option<String>,
        /// Outer axis `alpha=V1,V2,...` (popularity skew): one TSV and plot set per value, named
        /// `<instance>-a<value>` (MuxServe's α × rate-scale grid).
        #[arg(long)]
        grid: Option<String>,
        #[arg(short = 'o', long = "output", default_value = ".")]
        output: PathBuf,
        /// Goodput at SLO levels (`0.99` or `0.99,0.9`): per placer, the largest rate scale whose
        /// SLO attainment is at least the level, bracketed on the sweep's points and bisected
        /// (DistServe's goodput); writes `<instance>.goodput<pct>.{tsv,svg}` per level.
        #[arg(long = "goodput-level")]
        goodput_level: Option<String>,
        /// Relative width of the final bracket of the goodput search.
        #[arg(long = "goodput-resolution", default_value_t = 0.01)]
        goodput_resolution: f64,
        /// One JSON document on stdout (`plexserve/llm-compare/v1`): every row with its full
        /// simulation report, the goodput searches and the files written.
        #[arg(long)]
        json: bool,
        /// Points (rate scale × placer) and goodput searches run in parallel; `--threads` sets
        /// how many at once (each holds its own trace copy and simulation). The TSVs do not
        /// depend on it, except the measured `solve_time_s`.
        #[command(flatten)]
        search: SearchArgs,
    },
    /// TP overhead of the instance's first LLM by degree (1, 2, 4, 8): the ring all-reduce
    /// cost per layer from the α-β link model, step times and per-GPU efficiency vs TP1 at
    /// equal batch, and KV-bound decode (each engine's KV full of 1 k-token contexts): tokens
    /// of KV per engine and per-GPU decode throughput vs TP1 (TSV).
    TpOverhead {
        instance: PathBuf,
        #[arg(short = 'o', long = "output")]
        output: Option<PathBuf>,
        /// The table as JSON on stdout (`plexserve/llm-tp-overhead/v1`; `-o` still gets the TSV).
        #[arg(long)]
        json: bool,
    },
    /// List the LLM placers.
    Placers {
        #[arg(long)]
        json: bool,
    },
}

pub fn run(cmd: LlmCommand) -> Result<(), Exit> {
    match cmd {
        LlmCommand::Solve {
            instance,
            placer,
            output,
            json,
            search,
        } => solve(
            &instance,
            placer.as_deref(),
            output.as_deref(),
            json,
            &search,
        ),
        LlmCommand::Simulate {
            instance,
            plan,
            json,
            requests_out,
        } => simulate(&instance, &plan, json, requests_out.as_deref()),
        LlmCommand::Compare {
            instance,
            placers,
            sweep,
            grid,
            output,
            goodput_level,
            goodput_resolution,
            json,
            search,
        } => {
            let job = Comparison {
                placers: split_placers(&placers),
                levels: match goodput_level {
                    None => vec![],
                    Some(l) => parse_levels(&l, goodput_resolution)?,
                },
                opts: search.place_options(Default::default())?,
                out: output,
            };
            let grid = match grid {
                None => vec![None],
                Some(g) => {
                    let (axis, values) = parse_axis(&g, &["alpha"], "--grid")?;
                    values
                        .into_iter()
                        .map(|v| Some((axis.clone(), v)))
                        .collect()
                }
            };
            let runs = with_threads(search.threads, || {
                grid.iter()
                    .map(|g| {
                        let g = g.as_ref().map(|(a, v)| (a.as_str(), *v));
                        job.run(&instance, sweep.as_deref(), g)
                    })
                    .collect::<Result<Vec<_>, Exit>>()
            })??;
            if json {
                print_json(&serde_json::json!({
                    "schema": "plexserve/llm-compare/v1",
                    "runs": runs,
                }))?;
            }
            Ok(())
        }
        LlmCommand::TpOverhead {
            instance,
            output,
            json,
        } => tp_overhead(&instance, output.as_deref(), json),
        LlmCommand::Placers { json } => {
            let reg = llm::llm_registry();
            if json {
                let v: Vec<serde_json::Value> = reg
                    .iter()
                    .map(|p| serde_json::json!({"name": p.name(), "description": p.description()}))
                    .collect();
                print_json(&v)?;
            } else {
                for p in &reg {
                    println!("{:14}  {}", p.name(), p.description());
                }
            }
            Ok(())
        }
    }
}

/// Splits a placer list on commas, keeping `key=value` items with the placer they follow.
fn split_placers(s: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    for tok in s.split(',').map(str::trim).filter(|t| !t.is_empty()) {
        match out.last_mut() {
            Some(prev) if tok.contains('=') && !tok.contains(':') && prev.contains(':') => {
                prev.push(',');
                prev.push_str(tok);
            }
            _ => out.push(tok.to_string()),
        }
    }
    out
}

fn load(path: &Path) -> Result<(LlmInstance, llm::LlmTrace), Exit> {
    let inst = LlmInstance::load(path)?;
    let trace = inst.workload.generate(inst.base_dir(), inst.llms.len())?;
    Ok((inst, trace))
}

fn solve(
    path: &Path,
    placer: Option<&str>,
    out: Option<&Path>,
    json: bool,
    search: &SearchArgs,
) -> Result<(), Exit> {
    let base = search.place_options(Default::default())?;
    let (inst, trace) = load(path)?;
    let spec = placer.unwrap_or(llm::DEFAULT_LLM_PLACER);
    let (p, opts) = llm::llm_placer(spec, &base)?;
    let solved = with_threads(search.threads, || p.place(&inst, &trace, &opts))??;
    let rep = llm::simulate(&inst, &trace, &solved.deployment);
    let mut plan = solved.deployment.to_plan(&inst, spec);
    plan.predicted = Some(Predicted {
        slo_attainment: rep.slo_attainment,
        requests: rep.requests,
        good: rep.good,
    });
    plan.solve = Some(SolveInfo {
        status: solved.status,
        time_s: solved.time_s,
        evaluations: solved.evaluations,
        objective: solved.objective,
        bound: None,
        gap: None,
        time_limited: None,
    });
    let text = plan.to_json();
    if let Some(o) = out {
        write_file(o, &text)?;
    }
    if json || out.is_none() {
        print!("{text}");
    } else {
        eprintln!(
            "{spec}: {} mesh{}, predicted attainment {:.4}, goodput {:.2} req/s, throughput {:.2} req/s ({:.2} s)",
            plan.units.len(),
            if plan.units.len() == 1 { "" } else { "es" },
            rep.slo_attainment,
            rep.goodput_rps,
            rep.throughput_rps,
            solved.time_s
        );
    }
    Ok(())
}

fn simulate(
    path: &Path,
    plan_path: &Path,
    json: bool,
    requests_out: Option<&Path>,
) -> Result<(), Exit> {
    let (inst, trace) = load(path)?;
    let dep = LlmPlanFile::load(plan_path)?.resolve(plan_path, &inst)?;
    let res = llm::LlmSim::new(&inst, &trace, &dep).run(&llm::RunOptions::default());
    let r = LlmSimReport::new(&inst, &trace, &res);
    if let Some(out) = requests_out {
        write_csv(out, |w| llm::write_llm_requests_csv(&inst, &trace, &res, w))?;
    }
    if json {
        print!("{}", r.to_json());
        return Ok(());
    }
    println!(
        "requests    {} ({} finished, {} dropped, {} good)",
        r.requests, r.finished, r.dropped, r.good
    );
    println!("attainment  {:.4}", r.slo_attainment);
    println!(
        "throughput  {:.3} req/s   goodput {:.3} req/s   {:.1} output tokens/s",
        r.throughput_rps, r.goodput_rps, r.output_tokens_per_s
    );
    for (name, p) in [
        ("ttft", &r.ttft_s),
        ("tpot", &r.tpot_s),
        ("latency", &r.latency_s),
    ] {
        println!(
            "{name:<10}  mean {:.4} s  p50 {:.4}  p90 {:.4}  p99 {:.4}",
            p.mean, p.p50, p.p90, p.p99
        );
    }
    println!(
        "preemptions {}   iterations {}   KV peak {:.3}   merges {}   splits {}",
        r.preemptions, r.iterations, r.kv_peak_fraction, r.merges, r.splits
    );
    println!(
        "{:<16} {:>8} {:>8} {:>10} {:>10}",
        "llm", "requests", "good", "attainment", "ttft p99"
    );
    for (n, m) in &r.per_llm {
        println!(
            "{n:<16} {:>8} {:>8} {:>10.4} {:>10.3}",
            m.requests, m.good, m.slo_attainment, m.ttft_p99_s
        );
    }
    Ok(())
}

fn tp_overhead(path: &Path, out: Option<&Path>, json: bool) -> Result<(), Exit> {
    let inst = LlmInstance::load(path)?;
    let llm::CostModelSpec::Roofline(k) = &inst.cost_model else {
        return Err(Exit::input(format!(
            "{}: cost_model: the TP overhead table needs the roofline model",
            path.display()
        )));
    };
    let spec = &inst.llms[0].spec;
    let msg = |tokens: f64| tokens * spec.hidden as f64 * 2.0;
    let (dec_b, dec_ctx, pre_t) = (32.0, 32.0 * 1024.0, 2048.0);
    let c1 = inst.step_cost(0, 1);
    let (d1, p1) = (
        c1.decode_s(dec_b, dec_ctx, 1.0),
        c1.prefill_s(pre_t, pre_t * pre_t, 1.0),
    );
    // KV-bound decode: as many 1 k-token contexts as the engine's KV holds (the regime where
    // TP-N's larger KV per GPU can outweigh its lower per-GPU efficiency at equal batch).
    let kv_tokens = |tp: u32| {
        inst.kv_pool_bytes_per_gpu(tp, &[0]).max(0.0) * tp as f64 / spec.kv_bytes_per_token()
    };
    let kv_bound_tok_s_per_gpu = |tp: u32| {
        let batch = (kv_tokens(tp) / 1024.0).floor();
        if batch < 1.0 {
            return 0.0;
        }
        batch / (tp as f64 * inst.step_cost(0, tp).decode_s(batch, batch * 1024.0, 1.0))
    };
    let kv1 = kv_bound_tok_s_per_gpu(1);
    let mut tsv = String::from(
        "tp\tallreduce_decode_b32_us\tallreduce_prefill_2048_us\tcomm_per_layer_decode_us\tcomm_per_layer_prefill_us\tdecode_step_b32_ctx1k_ms\tprefill_2048_ms\tdecode_per_gpu_eff\tprefill_per_gpu_eff\tkv_tokens_per_engine\tkv_bound_decode_per_gpu_vs_tp1\n",
    );
    for tp in [1u32, 2, 4, 8] {
        if tp > inst.devices_per_node {
            break;
        }
        let c = inst.step_cost(0, tp);
        let (d, p) = (
            c.decode_s(dec_b, dec_ctx, 1.0),
            c.prefill_s(pre_t, pre_t * pre_t, 1.0),
        );
        let ar_d = k.allreduce_s(&inst.gpu, tp, msg(dec_b));
        let ar_p = k.allreduce_s(&inst.gpu, tp, msg(pre_t));
        let _ = writeln!(
            tsv,
            "{tp}\t{:.1}\t{:.1}\t{:.1}\t{:.1}\t{:.2}\t{:.1}\t{:.3}\t{:.3}\t{:.0}\t{}",
            ar_d * 1e6,
            ar_p * 1e6,
            2.0 * ar_d * 1e6,
            2.0 * ar_p * 1e6,
            d * 1e3,
            p * 1e3,
            d1 / (tp as f64 * d),
            p1 / (tp as f64 * p),
            kv_tokens(tp),
            if kv1 > 0.0 {
                format!("{:.3}", kv_bound_tok_s_per_gpu(tp) / kv1)
            } else {
                "inf".into()
            }
        );
    }
    if let Some(o) = out {
        write_file(o, &tsv)?;
    }
    if json {
        // The table's own rows, as numbers ("inf", a TP1 that holds no context, as null).
        let mut lines = tsv.lines().map(|l| l.split('\t'));
        let header: Vec<&str> = lines.next().into_iter().flatten().collect();
        let rows: Vec<serde_json::Map<String, serde_json::Value>> = lines
            .map(|cells| {
                let number = |c: &str| match c.parse::<u64>() {
                    Ok(n) => serde_json::json!(n),
                    Err(_) => serde_json::json!(c.parse::<f64>().ok().filter(|x| x.is_finite())),
                };
                header
                    .iter()
                    .zip(cells)
                    .map(|(h, c)| (h.to_string(), number(c)))
                    .collect()
            })
            .collect();
        print_json(&serde_json::json!({
            "schema": "plexserve/llm-tp-overhead/v1",
            "instance": inst.name,
            "llm": inst.llms[0].name,
            "rows": rows,
        }))?;
    } else if out.is_none() {
        print!("{tsv}");
    }
    Ok(())
}

struct Row {
    value: f64,
    placer: String,
    rep: LlmSimReport,
    units: usize,
    solve_s: f64,
}

/// Parses `AXIS=V1,V2,...` for one of `axes`; values must be positive numbers.
fn parse_axis(s: &str, axes: &[&str], flag: &str) -> Result<(String, Vec<f64>), Exit> {
    let (a, v) = s
        .split_once('=')
        .ok_or_else(|| Exit::input(format!("{flag}: expected AXIS=V1,V2,...")))?;
    if !axes.contains(&a) {
        return Err(Exit::input(format!(
            "{flag}: LLM instances support the axis {}, not \"{a}\"",
            axes.join(", ")
        )));
    }
    let vals: Result<Vec<f64>, _> = v.split(',').map(|x| x.trim().parse::<f64>()).collect();
    let vals = vals.map_err(|_| Exit::input(format!("{flag}: values must be numbers")))?;
    if vals.is_empty() || vals.iter().any(|x| !(x.is_finite() && *x > 0.0)) {
        return Err(Exit::input(format!("{flag}: values must be positive")));
    }
    Ok((a.to_string(), vals))
}

/// A number for a file name: its shortest exact form, plain or with an exponent (`0.7`, `1e-300`;
/// plain Display would write 1e-300 with 300 digits, too long for a file name).
fn compact(x: f64) -> String {
    let (plain, sci) = (format!("{x}"), format!("{x:e}"));
    if sci.len() < plain.len() {
        sci
    } else {
        plain
    }
}

/// `--goodput-level L1,L2,...`: fractions in (0, 1]; `resolution` in (0, 1).
fn parse_levels(s: &str, resolution: f64) -> Result<Vec<llm::GoodputSearch>, Exit> {
    if !(resolution > 0.0 && resolution < 1.0) {
        return Err(Exit::input(
            "--goodput-resolution: expected a fraction in (0, 1)",
        ));
    }
    s.split(',')
        .map(|x| match x.trim().parse::<f64>() {
            Ok(level) if level > 0.0 && level <= 1.0 => Ok(llm::GoodputSearch {
                level,
                resolution,
                ..Default::default()
            }),
            _ => Err(Exit::input(format!(
                "--goodput-level: expected fractions in (0, 1], found \"{}\"",
                x.trim()
            ))),
        })
        .collect()
}

/// One `llm compare` job: the placers, the goodput levels, the placers' base options and the
/// output folder; `run` does it for one popularity skew of the grid (or the instance's own).
struct Comparison {
    placers: Vec<String>,
    levels: Vec<llm::GoodputSearch>,
    opts: PlaceOptions,
    out: PathBuf,
}

impl Comparison {
    /// Places and simulates one placer on the instance at rate scale `scale` (the instance
    /// itself when `trace` is given: the sweep shares one trace per scale among its placers).
    fn point(
        &self,
        base: &LlmInstance,
        spec: &str,
        scale: f64,
        trace: Option<&llm::LlmTrace>,
    ) -> Result<(LlmSimReport, usize, f64), Exit> {
        let mut inst = base.clone();
        inst.workload.scale_rate(scale);
        let own;
        let trace = match trace {
            Some(t) => t,
            None => {
                own = inst.workload.generate(inst.base_dir(), inst.llms.len())?;
                &own
            }
        };
        let (p, opts) = llm::llm_placer(spec, &self.opts)?;
        let s = p.place(&inst, trace, &opts)?;
        let rep = llm::simulate(&inst, trace, &s.deployment);
        Ok((rep, s.deployment.units.len(), s.time_s))
    }

    /// Runs the sweep (and the goodput searches), writes the TSVs and plots, and returns the
    /// run as JSON (`runs[]` of `llm compare --json`).
    fn run(
        &self,
        path: &Path,
        sweep: Option<&str>,
        grid: Option<(&str, f64)>,
    ) -> Result<serde_json::Value, Exit> {
        let (placers, out) = (&self.placers, self.out.as_path());
        if placers.is_empty() {
            return Err(Exit::input("--placers needs at least one placer"));
        }
        // A misspelt placer is reported before any point runs.
        for spec in placers {
            llm::llm_placer(spec, &self.opts)?;
        }
        let (axis, values) = match sweep {
            None => ("rate_scale".to_string(), vec![1.0]),
            Some(s) => parse_axis(s, &["rate_scale"], "--sweep")?,
        };
        let mut base = LlmInstance::load(path)?;
        if let Some((_, alpha)) = grid {
            if !base.workload.set_alpha(alpha) {
                return Err(Exit::input(format!(
                    "--grid alpha: the workload of {} has no popularity skew",
                    path.display()
                )));
            }
            base.name = format!("{}-a{}", base.name, compact(alpha));
        }
        std::fs::create_dir_all(out).map_err(|e| Exit {
            code: 1,
            message: format!("{}: {e}", out.display()),
        })?;
        let traces = values
            .iter()
            .map(|&v| {
                let mut inst = base.clone();
                inst.workload.scale_rate(v);
                Ok(inst.workload.generate(inst.base_dir(), inst.llms.len())?)
            })
            .collect::<Result<Vec<_>, Exit>>()?;
        let points: Vec<(usize, &String)> = (0..values.len())
            .flat_map(|i| placers.iter().map(move |p| (i, p)))
            .collect();
        // Every point runs, in parallel; the rows (and the first error) come in sweep order.
        let rows = points
            .par_iter()
            .map(|&(i, spec)| {
                let v = values[i];
                let (rep, units, solve_s) = self.point(&base, spec, v, Some(&traces[i]))?;
                eprintln!(
                    "{axis}={v} {spec}: goodput {:.3} throughput {:.3} attainment {:.4}",
                    rep.goodput_rps, rep.throughput_rps, rep.slo_attainment
                );
                Ok(Row {
                    value: v,
                    placer: spec.clone(),
                    rep,
                    units,
                    solve_s,
                })
            })
            .collect::<Vec<Result<Row, Exit>>>()
            .into_iter()
            .collect::<Result<Vec<_>, Exit>>()?;
        let mut tsv = String::from(
            "instance\taxis\tvalue\tplacer\tunits\trequests\tfinished\tdropped\tgood\tslo_attainment\tthroughput_rps\tgoodput_rps\toutput_tokens_per_s\tttft_p50_s\tttft_p99_s\ttpot_p50_s\ttpot_p99_s\tlatency_p99_s\tpreemptions\tmerges\tsplits\tsolve_time_s\n",
        );
        for r in &rows {
            let p = &r.rep;
            let _ = writeln!(
                tsv,
                "{}\t{axis}\t{}\t{}\t{}\t{}\t{}\t{}\t{}\t{:.4}\t{:.4}\t{:.4}\t{:.1}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{}\t{}\t{}\t{:.3}",
                base.name, r.value, r.placer, r.units, p.requests, p.finished, p.dropped, p.good, p.slo_attainment, p.throughput_rps,
                p.goodput_rps, p.output_tokens_per_s, p.ttft_s.p50, p.ttft_s.p99, p.tpot_s.p50, p.tpot_s.p99, p.latency_s.p99, p.preemptions,
                p.merges, p.splits, r.solve_s
            );
        }
        let mut files = vec![out.join(format!("{}.tsv", base.name))];
        write_file(&files[0], &tsv)?;
        type Metric = fn(&LlmSimReport) -> f64;
        let metrics: [(&str, Metric); 3] = [
            ("goodput_rps", |r| r.goodput_rps),
            ("throughput_rps", |r| r.throughput_rps),
            ("slo_attainment", |r| r.slo_attainment),
        ];
        for (name, f) in metrics {
            let series: Vec<(String, Vec<(f64, f64)>)> = placers
                .iter()
                .map(|p| {
                    (
                        p.clone(),
                        rows.iter()
                            .filter(|r| &r.placer == p)
                            .map(|r| (r.value, f(&r.rep)))
                            .collect(),
                    )
                })
                .collect();
            let svg = line_plot_svg(&format!("{} — {name}", base.name), &axis, name, &series);
            files.push(out.join(format!("{}.{name}.svg", base.name)));
            write_file(&files[files.len() - 1], &svg)?;
        }
        eprintln!("wrote {}", files[0].display());
        let mut goodput = Vec::new();
        if axis == "rate_scale" {
            for level in &self.levels {
                goodput.extend(self.goodput_at_level(&base, &rows, level, &mut files)?);
            }
        } else if !self.levels.is_empty() {
            return Err(Exit::input("--goodput-level needs a rate_scale sweep"));
        }
        let rows: Vec<serde_json::Value> = rows
            .iter()
            .map(|r| {
                serde_json::json!({
                    "value": r.value,
                    "placer": r.placer,
                    "units": r.units,
                    "solve_time_s": r.solve_s,
                    "report": r.rep,
                })
            })
            .collect();
        Ok(serde_json::json!({
            "instance": base.name,
            "axis": axis,
            "rows": rows,
            "goodput": goodput,
            "files": files.iter().map(|f| f.display().to_string()).collect::<Vec<_>>(),
        }))
    }

    /// Goodput at one SLO level per placer (`<instance>.goodput<pct>.{tsv,svg}`), starting from
    /// the sweep's rows of that placer; the placers' searches run in parallel. Returns one JSON
    /// object per placer and adds the files written to `files`.
    fn goodput_at_level(
        &self,
        base: &LlmInstance,
        rows: &[Row],
        level: &llm::GoodputSearch,
        files: &mut Vec<PathBuf>,
    ) -> Result<Vec<serde_json::Value>, Exit> {
        let pct = level_pct(level.level);
        let found = self
            .placers
            .par_iter()
            .map(|spec| {
                let sweep: Vec<llm::RatePoint> = rows
                    .iter()
                    .filter(|r| &r.placer == spec)
                    .map(|r| rate_point(r.value, &r.rep))
                    .collect();
                let g = llm::max_rate_at_level(&sweep, level, |s| {
                    // The CLI's errors are already reported as text; the search only needs to stop.
                    self.point(base, spec, s, None)
                        .map(|(rep, _, _)| rate_point(s, &rep))
                        .map_err(|e| plexserve_solver::SolverError::Option(e.message))
                })?;
                let scale = g.scale.map_or("none".to_string(), |s| format!("{s:.4}"));
                eprintln!(
                    "goodput@{pct} {spec}: {} scale {scale} = {:.3} req/s, bracket [{:.4}, {:.4}], attainment {:.4} ({} runs)",
                    g.status.as_str(), g.rps, g.lo, g.hi, g.attainment, g.evaluations
                );
                Ok((g, scale))
            })
            .collect::<Vec<Result<_, Exit>>>();
        let mut tsv = String::from(
            "instance\tplacer\tlevel\tstatus\tmax_rate_scale\tgoodput_rps\tbracket_lo\tbracket_hi\tattainment\tresolution\tevaluations\n",
        );
        let mut bars = Vec::new();
        let mut docs = Vec::new();
        for (spec, found) in self.placers.iter().zip(found) {
            let (g, scale) = found?;
            docs.push(serde_json::json!({
                "level": level.level,
                "placer": spec,
                "status": g.status.as_str(),
                "max_rate_scale": g.scale,
                "goodput_rps": g.rps,
                "bracket": [g.lo, g.hi],
                "attainment": g.attainment,
                "resolution": level.resolution,
                "evaluations": g.evaluations,
            }));
            let _ = writeln!(
                tsv,
                "{}\t{spec}\t{}\t{}\t{scale}\t{:.4}\t{:.4}\t{:.4}\t{:.4}\t{}\t{}",
                base.name,
                level.level,
                g.status.as_str(),
                g.rps,
                g.lo,
                g.hi,
                g.attainment,
                level.resolution,
                g.evaluations
            );
            bars.push((spec.clone(), g.rps));
        }
        let stem = format!("{}.goodput{pct}", base.name);
        let out = self.out.as_path();
        write_file(&out.join(format!("{stem}.tsv")), &tsv)?;
        let svg = bar_plot_svg(
            &format!("{} — goodput at {pct} % SLO attainment", base.name),
            "max req/s with attainment ≥ level",
            &bars,
        );
        write_file(&out.join(format!("{stem}.svg")), &svg)?;
        eprintln!("wrote {}", out.join(format!("{stem}.tsv")).display());
        files.extend([
            out.join(format!("{stem}.tsv")),
            out.join(format!("{stem}.svg")),
        ]);
        Ok(docs)
    }
}

/// Offered load of a simulated point: requests per second of its arrival span.
fn rate_point(scale: f64, rep: &LlmSimReport) -> llm::RatePoint {
    llm::RatePoint {
        scale,
        attainment: rep.slo_attainment,
        offered_rps: rep.requests as f64 / rep.arrival_span_s,
    }
}

/// `0.99` → `99`, `0.995` → `99.5` (file names and labels).
fn level_pct(level: f64) -> String {
    let s = format!("{:.2}", level * 100.0);
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

/// A horizontal bar chart, one bar per labelled value (self-contained SVG like `line_plot_svg`).
fn bar_plot_svg(title: &str, xlabel: &str, bars: &[(String, f64)]) -> String {
    let (w, l, r, t, bh) = (760.0, 300.0, 90.0, 40.0, 24.0);
    let h = t + bh * bars.len() as f64 + 50.0;
    let xmax = bars.iter().fold(0.0f64, |m, b| m.max(b.1));
    let xmax = if xmax <= 0.0 { 1.0 } else { xmax * 1.08 };
    let px = |x: f64| l + x / xmax * (w - l - r);
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        w / 2.0,
        esc(title)
    );
    for (i, (name, v)) in bars.iter().enumerate() {
        let y = t + bh * i as f64;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{}</text>",
            l - 6.0,
            y + bh * 0.65,
            esc(name)
        );
        let _ = writeln!(
            s,
            "<rect x=\"{l}\" y=\"{}\" width=\"{:.1}\" height=\"{}\" fill=\"#1f77b4\"/>",
            y + 3.0,
            px(*v) - l,
            bh - 6.0
        );
        let _ = writeln!(
            s,
            "<text x=\"{:.1}\" y=\"{}\">{v:.3}</text>",
            px(*v) + 4.0,
            y + bh * 0.65
        );
    }
    let yb = t + bh * bars.len() as f64;
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{yb}\" x2=\"{}\" y2=\"{yb}\" stroke=\"black\"/>",
        w - r
    );
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (l + w - r) / 2.0,
        yb + 30.0,
        esc(xlabel)
    );
    s.push_str("</svg>\n");
    s
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
}

/// A small self-contained SVG line plot (text is SVG `<text>`, so no font file is needed).
fn line_plot_svg(
    title: &str,
    xlabel: &str,
    ylabel: &str,
    series: &[(String, Vec<(f64, f64)>)],
) -> String {
    let (w, h, l, r, t, b) = (720.0, 440.0, 70.0, 200.0, 40.0, 50.0);
    let pts = series.iter().flat_map(|s| s.1.iter());
    let (mut x0, mut x1, mut y1) = (f64::INFINITY, f64::NEG_INFINITY, 0.0f64);
    for &(x, y) in pts {
        x0 = x0.min(x);
        x1 = x1.max(x);
        y1 = y1.max(y);
    }
    if !x0.is_finite() {
        (x0, x1) = (0.0, 1.0);
    }
    if x1 - x0 < 1e-12 {
        x0 -= 0.5;
        x1 += 0.5;
    }
    let y1 = if y1 <= 0.0 { 1.0 } else { y1 * 1.08 };
    let px = |x: f64| l + (x - x0) / (x1 - x0) * (w - l - r);
    let py = |y: f64| h - b - y / y1 * (h - t - b);
    // Twelve colours: the dynamic-TP comparisons plot ten configurations, and a repeated colour
    // would make two of them indistinguishable.
    let colors = [
        "#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2", "#17becf",
        "#bcbd22", "#7f7f7f", "#000000", "#aec7e8",
    ];
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n");
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"22\" text-anchor=\"middle\" font-size=\"14\">{}</text>",
        (l + w - r) / 2.0,
        esc(title)
    );
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{}\" x2=\"{}\" y2=\"{}\" stroke=\"black\"/>",
        h - b,
        w - r,
        h - b
    );
    let _ = writeln!(
        s,
        "<line x1=\"{l}\" y1=\"{t}\" x2=\"{l}\" y2=\"{}\" stroke=\"black\"/>",
        h - b
    );
    for k in 0..=5 {
        let yv = y1 * k as f64 / 5.0;
        let xv = x0 + (x1 - x0) * k as f64 / 5.0;
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{:.3}</text>",
            l - 6.0,
            py(yv) + 4.0,
            yv
        );
        let _ = writeln!(
            s,
            "<line x1=\"{l}\" y1=\"{0}\" x2=\"{1}\" y2=\"{0}\" stroke=\"#ddd\"/>",
            py(yv),
            w - r
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{:.3}</text>",
            px(xv),
            h - b + 16.0,
            xv
        );
    }
    let _ = writeln!(
        s,
        "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{}</text>",
        (l + w - r) / 2.0,
        h - 12.0,
        esc(xlabel)
    );
    let _ = writeln!(
        s,
        "<text x=\"16\" y=\"{}\" text-anchor=\"middle\" transform=\"rotate(-90 16 {})\">{}</text>",
        (t + h - b) / 2.0,
        (t + h - b) / 2.0,
        esc(ylabel)
    );
    for (i, (name, p)) in series.iter().enumerate() {
        let c = colors[i % colors.len()];
        let path: Vec<String> = p
            .iter()
            .map(|&(x, y)| format!("{:.1},{:.1}", px(x), py(y)))
            .collect();
        let _ = writeln!(
            s,
            "<polyline fill=\"none\" stroke=\"{c}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
        for &(x, y) in p {
            let _ = writeln!(
                s,
                "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"3\" fill=\"{c}\"/>",
                px(x),
                py(y)
            );
        }
        let ly = t + 18.0 * i as f64;
        let _ = writeln!(
            s,
            "<rect x=\"{}\" y=\"{}\" width=\"12\" height=\"12\" fill=\"{c}\"/>",
            w - r + 12.0,
            ly
        );
        let _ = writeln!(
            s,
            "<text x=\"{}\" y=\"{}\">{}</text>",
            w - r + 30.0,
            ly + 10.0,
            esc(name)
        );
    }
    s.push_str("</svg>\n");
    s
}
