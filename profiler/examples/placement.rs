//! Where the run-to-run difference of CPU profiles comes from: measures a spec's distinct
//! operators in one process, twice on the same prepared buffers and then again on freshly
//! prepared ones, and compares the operators' medians.
//!
//! ```text
//! MATMUL_NUM_THREADS=1 cargo run --release -p plexserve-profiler --example placement -- \
//!     [--sets N] [--pad-step BYTES] [--pin | --cores A,B] [--epochs N] [--dump] SPEC.json...
//! ```
//!
//! For each of `--sets` preparations (set `s` is prepared after holding a `s · pad-step` byte
//! allocation, so its buffers land elsewhere on the heap) the operators are measured in two
//! passes, a and b, with the profiler's measurement. "same buffers" compares pass a with pass b
//! of one set (only the machine's drift and noise differ); "new buffers" compares pass b of one
//! set with pass a of the next (as close in time, but every buffer re-allocated). Where the two
//! distributions match, placement is not what moves a median. `--cores A,B` runs pass a on CPU
//! A and pass b on CPU B (the same buffers), `--pin` both on the profiler's default CPU.
//! `--epochs N` measures with N placement epochs per pass (the profile's own re-preparation).
//! `--dump` prints every operator's median from the first pass, to compare processes.
//! `--alias` instead times the embedding's row copy (128 f32, as the profiler runs it) with its
//! output at chosen distances from its source, to show whether 4 KiB aliasing moves it.

use std::path::Path;

use plexserve_profiler::measure::{measure_ops, measure_prepared, MeasureOptions};
use plexserve_profiler::{distinct_ops, size_classes, CpuTimer, ModelSpec, Pinned, Timer};

fn rel(a: f64, b: f64) -> f64 {
    (a - b).abs() / a.min(b)
}

fn main() {
    let mut sets = 4;
    let mut pad_step = 4160usize;
    let mut cores: Option<(Option<usize>, Option<usize>)> = None;
    let mut epochs = 1;
    let mut dump = false;
    let mut specs = Vec::new();
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut number = |name: &str| -> usize {
            match args.next().map(|v| v.parse()) {
                Some(Ok(n)) => n,
                _ => usage(&format!("{name} needs a number")),
            }
        };
        match a.as_str() {
            "--sets" => sets = number("--sets").max(1),
            "--pad-step" => pad_step = number("--pad-step"),
            "--epochs" => epochs = number("--epochs").max(1),
            "--pin" => cores = Some((None, None)),
            "--cores" => {
                let v = args.next().unwrap_or_default();
                let parsed: Vec<usize> = v.split(',').filter_map(|c| c.parse().ok()).collect();
                match parsed[..] {
                    [x, y] => cores = Some((Some(x), Some(y))),
                    _ => usage("--cores needs A,B"),
                }
            }
            "--dump" => dump = true,
            "--alias" => {
                alias();
                return;
            }
            s if s.starts_with("--") => usage(&format!("unknown option {s}")),
            path => specs
                .push(ModelSpec::load(Path::new(path)).unwrap_or_else(|e| usage(&e.to_string()))),
        }
    }
    if specs.is_empty() {
        usage("no spec given");
    }
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(1)
        .build()
        .expect("one thread");
    pool.install(|| {
        let timer = CpuTimer::new(4 << 30);
        eprintln!("clock: {:?}", timer.clock);
        let opts = MeasureOptions {
            epochs,
            ..MeasureOptions::default()
        };
        for spec in &specs {
            let ops = distinct_ops(spec);
            // medians[set][pass][op]
            let mut medians: Vec<[Vec<[f64; 4]>; 2]> = Vec::new();
            for s in 0..sets {
                let mut pad = vec![0u8; s * pad_step];
                pad.iter_mut().for_each(|b| *b = 1);
                let pass = |prepared: &mut Vec<_>, cpu: Option<Option<usize>>| {
                    let _pin = cpu.map(|c| Pinned::current_thread(c).expect("pin"));
                    let m = if epochs > 1 {
                        measure_ops(&timer, &ops, &opts).expect("measure")
                    } else {
                        measure_prepared(timer.min_sample_s(), prepared, &opts).expect("measure")
                    };
                    m.iter()
                        .map(|m| {
                            let q = |p| m.samples.quantile_s(p);
                            [q(0.5), q(0.0), q(0.1), q(0.25)]
                        })
                        .collect::<Vec<[f64; 4]>>()
                };
                let mut prepared = ops
                    .iter()
                    .map(|op| timer.prepare(op))
                    .collect::<Result<Vec<_>, _>>()
                    .expect("prepare");
                let a = pass(&mut prepared, cores.map(|c| c.0));
                let b = pass(&mut prepared, cores.map(|c| c.1));
                drop(prepared);
                std::hint::black_box(&pad);
                medians.push([a, b]);
            }
            if dump {
                for (s, passes) in medians.iter().enumerate() {
                    for (p, m) in passes.iter().enumerate() {
                        for (i, (op, m)) in ops.iter().zip(m).enumerate() {
                            println!(
                                "op {} {i} {s} {p} {:.9e} {:.9e} {:.9e} {:.9e} {op:?}",
                                spec.name, m[0], m[1], m[2], m[3]
                            );
                        }
                    }
                }
            }
            let mut same = Vec::new();
            let mut fresh = Vec::new();
            for s in 0..sets {
                for i in 0..ops.len() {
                    let [a, b] = &medians[s];
                    same.push((a[i][0].min(b[i][0]), rel(a[i][0], b[i][0])));
                    if let Some([next, _]) = medians.get(s + 1) {
                        fresh.push((b[i][0].min(next[i][0]), rel(b[i][0], next[i][0])));
                    }
                }
            }
            for (label, d) in [("same buffers", same), ("new buffers", fresh)] {
                for c in size_classes(d) {
                    if !c.diffs.is_empty() {
                        let p90 = plexserve_profiler::Samples(c.diffs.clone()).quantile_s(0.9);
                        println!("{} {label:>12} {c} (p90 {:.2} %)", spec.name, p90 * 100.0);
                    }
                }
            }
        }
    });
}

/// Times a 128-float row copy (ndarray `assign`, as the embedding operator does) from a source
/// row to an output at `distance` bytes after it, for distances that are and are not 4 KiB
/// multiples; prints the median of 201 samples of 4096 copies per distance, in rounds.
fn alias() {
    use ndarray::{ArrayView1, ArrayViewMut1};
    const ROW: usize = 128;
    let distances = [
        4096usize,
        8192,
        4096 + 16,
        4096 + 64,
        4096 + 512,
        4096 + 2048,
    ];
    // One buffer holds both rows, so the distance is exact; 64-byte aligned start.
    let mut buf = vec![1.0f32; (16384 + 4096) / 4];
    let base = buf.as_ptr().align_offset(64);
    let thread_cpu = || {
        let mut ts = libc::timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        // SAFETY: a valid, writable timespec.
        unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
        ts.tv_sec as f64 + ts.tv_nsec as f64 * 1e-9
    };
    let mut samples = vec![Vec::new(); distances.len()];
    for _round in 0..201 {
        for (d, &distance) in distances.iter().enumerate() {
            let (head, tail) = buf.split_at_mut(base + distance / 4);
            let src = ArrayView1::from(&head[base..base + ROW]);
            let mut dst = ArrayViewMut1::from(&mut tail[..ROW]);
            dst.assign(&src);
            let start = thread_cpu();
            for _ in 0..4096 {
                dst.assign(&src);
                std::hint::black_box(&mut dst);
            }
            samples[d].push((thread_cpu() - start) / 4096.0);
        }
    }
    for (d, s) in distances.iter().zip(samples) {
        let s = plexserve_profiler::Samples(s);
        println!(
            "row copy, output {d:>5} B after its source ({}): median {:.2} ns, IQR/median {:.1} %",
            if d % 4096 == 0 {
                "4 KiB multiple"
            } else {
                "not aliased"
            },
            s.median_s() * 1e9,
            s.iqr_ratio() * 100.0
        );
    }
}

fn usage(message: &str) -> ! {
    eprintln!("error: {message}\nusage: placement [--sets N] [--pad-step BYTES] [--pin | --cores A,B] [--epochs N] [--dump] SPEC.json... | --alias");
    std::process::exit(2)
}
