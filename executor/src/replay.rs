//! Open-loop load generation: an instance's trace as real HTTP requests, on schedule.
//!
//! Requests are sent at their trace times whatever the server does (open loop: a slow server
//! never slows the sender), each on its own connection through a minimal HTTP/1.1 client over
//! tokio TCP. A hand-written client keeps the dependency set small and its timing visible: a
//! request costs one connect, one write and one read to end of stream.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use std::collections::BTreeMap;

use indexmap::IndexMap;
use plexserve_solver::sim::{csv_field, warmup_skip, LatencySummary};
use plexserve_solver::{Instance, Trace};
use serde::{Deserialize, Serialize};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::clock::{duration_s, instant_after};
use crate::error::{ExecutorError, Result};

pub const REPLAY_SCHEMA: &str = "plexserve/replay/v1";

/// Replay settings.
#[derive(Debug, Clone)]
pub struct ReplayOptions {
    /// Give up on one request after this long (it counts as an error).
    pub request_timeout_s: f64,
    /// Most requests in flight at once; beyond it a request is counted as a client overflow
    /// instead of being delayed (which would close the loop).
    pub max_inflight: usize,
    /// Requests within this many seconds of each end are left out of the summary, as in the
    /// simulator's report (`None`: the instance's `simulator.warmup_s`).
    pub warmup_s: Option<f64>,
    /// Announce the start of the workload (`POST /v1/workload/start` at the first request's trace
    /// time) before sending, so a multi-segment plan switches at its start times on the trace's
    /// clock rather than the server's.
    pub announce_start: bool,
}

impl Default for ReplayOptions {
    fn default() -> Self {
        ReplayOptions {
            request_timeout_s: 60.0,
            max_inflight: 8192,
            warmup_s: None,
            announce_start: true,
        }
    }
}

/// What happened to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct RequestRecord {
    pub request: usize,
    pub model: u32,
    /// Scheduled send time, seconds from the start of the replay.
    pub arrival_s: f64,
    /// HTTP status, 0 when there was no answer (connection error, timeout, overflow).
    pub status: u16,
    /// Answer time minus scheduled time.
    pub latency_s: f64,
    pub group: Option<u32>,
    /// 200 within the model's SLO.
    pub good: bool,
    /// The error `reason` of a non-200 answer, or the client-side failure.
    pub reason: String,
}

/// Summary of a replay (`replay --json`).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ReplayReport {
    pub schema: String,
    pub target: String,
    pub slo_attainment: f64,
    pub requests: u64,
    pub good: u64,
    /// 429 and 503 answers given at arrival.
    pub rejected: u64,
    /// Answered with a result after the SLO.
    pub late: u64,
    /// Admitted but failed, timed out, or never answered.
    pub errors: u64,
    pub latency_s: LatencySummary,
    pub per_model: IndexMap<String, ModelSummary>,
    /// Answers by HTTP status (0: none), over all requests.
    pub status_counts: BTreeMap<String, u64>,
    pub trimmed_each_end: u64,
    /// Seconds from the first scheduled send to the last answer.
    pub wall_s: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelSummary {
    pub requests: u64,
    pub slo_attainment: f64,
}

/// A parsed `http://host:port` target.
#[derive(Debug, Clone)]
pub struct Target {
    pub addr: SocketAddr,
    pub host: String,
}

impl Target {
    /// Accepts `http://IP:PORT` or `http://localhost:PORT` (with an optional trailing `/`).
    pub fn parse(url: &str) -> Result<Target> {
        let rest = url.strip_prefix("http://").ok_or_else(|| {
            ExecutorError::Replay(format!("target \"{url}\" must start with http://"))
        })?;
        let hostport = rest.trim_end_matches('/');
        if hostport.contains('/') {
            return Err(ExecutorError::Replay(format!(
                "target \"{url}\" must be http://HOST:PORT without a path"
            )));
        }
        let resolved = hostport.replacen("localhost", "127.0.0.1", 1);
        let addr: SocketAddr = resolved.parse().map_err(|_| {
            ExecutorError::Replay(format!(
                "target \"{url}\": expected http://IP:PORT (e.g. http://127.0.0.1:8080)"
            ))
        })?;
        Ok(Target {
            addr,
            host: hostport.to_string(),
        })
    }
}

/// One HTTP/1.1 exchange on a fresh connection: (status, body).
pub async fn http_request(
    target: &Target,
    method: &str,
    path: &str,
    body: &[u8],
) -> std::io::Result<(u16, Vec<u8>)> {
    let mut s = tokio::net::TcpStream::connect(target.addr).await?;
    s.set_nodelay(true)?;
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {}\r\nContent-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        target.host,
        body.len()
    );
    let mut req = head.into_bytes();
    req.extend_from_slice(body);
    s.write_all(&req).await?;
    let mut buf = Vec::with_capacity(1024);
    s.read_to_end(&mut buf).await?;
    parse_response(&buf).ok_or_else(|| {
        std::io::Error::new(std::io::ErrorKind::InvalidData, "malformed HTTP response")
    })
}

/// Splits a complete HTTP/1.1 response into status and (de-chunked) body.
fn parse_response(buf: &[u8]) -> Option<(u16, Vec<u8>)> {
    let end = buf.windows(4).position(|w| w == b"\r\n\r\n")?;
    let head = std::str::from_utf8(&buf[..end]).ok()?;
    let mut lines = head.split("\r\n");
    let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
    let chunked = lines.any(|l| {
        let l = l.to_ascii_lowercase();
        l.starts_with("transfer-encoding:") && l.contains("chunked")
    });
    let raw = &buf[end + 4..];
    if !chunked {
        return Some((status, raw.to_vec()));
    }
    let mut body = Vec::new();
    let mut i = 0;
    loop {
        let nl = raw[i..].windows(2).position(|w| w == b"\r\n")? + i;
        let size_text = std::str::from_utf8(&raw[i..nl]).ok()?;
        let size = usize::from_str_radix(size_text.split(';').next()?.trim(), 16).ok()?;
        if size == 0 {
            return Some((status, body));
        }
        let start = nl + 2;
        body.extend_from_slice(raw.get(start..start + size)?);
        i = start + size + 2;
    }
}

#[derive(Deserialize)]
struct Answer {
    group: Option<u32>,
}

#[derive(Deserialize)]
struct ErrorAnswer {
    reason: Option<String>,
}

/// Sends `trace` to `target` open-loop and records every outcome (in trace order).
pub async fn replay_trace(
    inst: &Instance,
    trace: &Trace,
    target: &Target,
    opts: &ReplayOptions,
) -> Vec<RequestRecord> {
    let n = trace.len();
    let t0 = trace.arrival_s.first().copied().unwrap_or(0.0);
    if opts.announce_start && n > 0 {
        announce_start(target, t0.max(0.0)).await;
    }
    let start = Instant::now();
    let inflight = Arc::new(tokio::sync::Semaphore::new(opts.max_inflight.max(1)));
    let timeout = duration_s(opts.request_timeout_s.max(0.001));
    let target = Arc::new(target.clone());
    let mut tasks = Vec::with_capacity(n);
    for i in 0..n {
        let m = trace.model[i];
        let at = trace.arrival_s[i] - t0;
        let slo = inst.models[m as usize].slo_s;
        let path = format!("/v1/models/{}/infer", inst.models[m as usize].name);
        tokio::time::sleep_until(instant_after(start, at).into()).await;
        let Ok(permit) = inflight.clone().try_acquire_owned() else {
            tasks.push(tokio::spawn(async move {
                RequestRecord {
                    request: i,
                    model: m,
                    arrival_s: at,
                    status: 0,
                    latency_s: 0.0,
                    group: None,
                    good: false,
                    reason: "client_overflow".into(),
                }
            }));
            continue;
        };
        let target = target.clone();
        tasks.push(tokio::spawn(async move {
            let sent = instant_after(start, at);
            let res =
                tokio::time::timeout(timeout, http_request(&target, "POST", &path, b"{}")).await;
            let latency_s = sent.elapsed().as_secs_f64();
            drop(permit);
            let mut rec = RequestRecord {
                request: i,
                model: m,
                arrival_s: at,
                status: 0,
                latency_s,
                group: None,
                good: false,
                reason: String::new(),
            };
            match res {
                Ok(Ok((status, body))) => {
                    rec.status = status;
                    if status == 200 {
                        rec.group = serde_json::from_slice::<Answer>(&body)
                            .ok()
                            .and_then(|a| a.group);
                        rec.good = latency_s <= slo;
                        if !rec.good {
                            rec.reason = "late".into();
                        }
                    } else {
                        rec.reason = serde_json::from_slice::<ErrorAnswer>(&body)
                            .ok()
                            .and_then(|a| a.reason)
                            .unwrap_or_else(|| format!("http_{status}"));
                    }
                }
                Ok(Err(e)) => rec.reason = format!("io: {e}"),
                Err(_) => rec.reason = "client_timeout".into(),
            }
            rec
        }));
    }
    let mut out = Vec::with_capacity(n);
    for t in tasks {
        if let Ok(r) = t.await {
            out.push(r);
        }
    }
    out
}

/// `POST /v1/workload/start`: the trace's first request is due now, at plan time `t0_s`.
async fn announce_start(target: &Target, t0_s: f64) {
    let body = format!(r#"{{"plan_time_s": {t0_s}}}"#);
    match http_request(target, "POST", "/v1/workload/start", body.as_bytes()).await {
        Ok((200, _)) => {}
        Ok((409, _)) => tracing::warn!(
            "the server's workload had already started: its plan segments switch on that \
             workload's clock, not this replay's"
        ),
        Ok((status, _)) => tracing::warn!(
            status,
            "the server takes no workload start; plan segments switch from its first arrival"
        ),
        Err(e) => tracing::warn!(error = %e, "could not announce the workload start"),
    }
}

fn percentile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((q * sorted.len() as f64).floor() as usize).min(sorted.len() - 1)]
}

/// Summarizes records the way the simulator reports (same warm-up trimming, same percentiles).
pub fn summarize(
    inst: &Instance,
    trace: &Trace,
    records: &[RequestRecord],
    target: &str,
    warmup_s: f64,
    wall_s: f64,
) -> ReplayReport {
    let skip = warmup_skip(&trace.arrival_s, warmup_s);
    let range = skip..records.len().saturating_sub(skip).max(skip);
    let mut req_m = vec![0u64; inst.models.len()];
    let mut good_m = vec![0u64; inst.models.len()];
    let (mut good, mut rejected, mut late, mut errors) = (0u64, 0u64, 0u64, 0u64);
    let mut lat = Vec::new();
    for r in &records[range.clone()] {
        req_m[r.model as usize] += 1;
        match r.status {
            200 => {
                lat.push(r.latency_s);
                if r.good {
                    good += 1;
                    good_m[r.model as usize] += 1;
                } else {
                    late += 1;
                }
            }
            429 => rejected += 1,
            503 if matches!(
                r.reason.as_str(),
                "group_down" | "no_replica" | "queue_full" | "shutting_down"
            ) =>
            {
                rejected += 1
            }
            _ => errors += 1,
        }
    }
    let mut status_counts = BTreeMap::new();
    for r in records {
        *status_counts.entry(r.status.to_string()).or_default() += 1;
    }
    lat.sort_by(f64::total_cmp);
    let requests = range.len() as u64;
    let mut per_model = IndexMap::new();
    for (m, model) in inst.models.iter().enumerate() {
        per_model.insert(
            model.name.clone(),
            ModelSummary {
                requests: req_m[m],
                slo_attainment: if req_m[m] == 0 {
                    0.0
                } else {
                    good_m[m] as f64 / req_m[m] as f64
                },
            },
        );
    }
    ReplayReport {
        schema: REPLAY_SCHEMA.into(),
        target: target.into(),
        slo_attainment: if requests == 0 {
            0.0
        } else {
            good as f64 / requests as f64
        },
        requests,
        good,
        rejected,
        late,
        errors,
        latency_s: LatencySummary {
            mean: if lat.is_empty() {
                0.0
            } else {
                lat.iter().sum::<f64>() / lat.len() as f64
            },
            p50: percentile(&lat, 0.50),
            p90: percentile(&lat, 0.90),
            p99: percentile(&lat, 0.99),
        },
        per_model,
        status_counts,
        trimmed_each_end: skip as u64,
        wall_s,
    }
}

/// Replays the instance's own workload against `target` and summarizes.
pub async fn replay(
    inst: &Instance,
    trace: &Trace,
    target_url: &str,
    opts: &ReplayOptions,
) -> Result<(ReplayReport, Vec<RequestRecord>)> {
    let target = Target::parse(target_url)?;
    let t = Instant::now();
    let records = replay_trace(inst, trace, &target, opts).await;
    let warmup = opts.warmup_s.unwrap_or(inst.simulator.warmup_s);
    let report = summarize(
        inst,
        trace,
        &records,
        target_url,
        warmup,
        t.elapsed().as_secs_f64(),
    );
    Ok((report, records))
}

/// Writes records as the simulator's `--requests-out` CSV
/// (`request,model,arrival_s,group,start_s,finish_s,good`) plus `status,reason`; start is the
/// scheduled send time, finish the answer time, both from the start of the replay.
pub fn write_records_csv(
    inst: &Instance,
    records: &[RequestRecord],
    w: &mut impl std::io::Write,
) -> std::io::Result<()> {
    writeln!(
        w,
        "request,model,arrival_s,group,start_s,finish_s,good,status,reason"
    )?;
    for r in records {
        let group = r.group.map(|g| g.to_string()).unwrap_or_default();
        let finish = if r.status == 200 {
            r.arrival_s + r.latency_s
        } else {
            r.arrival_s
        };
        writeln!(
            w,
            "{},{},{},{},{},{},{},{},{}",
            r.request,
            csv_field(&inst.models[r.model as usize].name),
            r.arrival_s,
            group,
            r.arrival_s,
            finish,
            u8::from(r.good),
            r.status,
            r.reason.replace(',', ";")
        )?;
    }
    Ok(())
}
