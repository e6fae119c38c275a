//! Overload, worker failure, malformed requests and graceful shutdown, over loopback HTTP.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::{metric_sum, Server};
use plexserve_executor::{
    http_request, replay_trace, EmulateRunner, ExecutorOptions, HttpOptions, ReplayOptions, Target,
};
use plexserve_solver::Trace;

fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// Evenly spaced arrivals alternating over `models` models: `rate` per second for `secs`.
fn steady(rate: f64, secs: f64, models: u32) -> Trace {
    let n = (rate * secs) as usize;
    Trace {
        arrival_s: (0..n).map(|i| i as f64 / rate).collect(),
        model: (0..n).map(|i| i as u32 % models).collect(),
    }
}

/// Ten times the plan's capacity for a few seconds (the committed doc has the 30 s run): the
/// server stays up, memory stays bounded, every admitted request is answered, and every
/// rejection is counted in /metrics.
#[test]
fn overload_ten_times_capacity() {
    let (inst, schedule) = common::tiny();
    // Two pp-2 groups whose stages take 0.051 × 1.018 s: about 38.5 requests/s in all.
    let capacity = 2.0 / (0.051 * 1.018);
    let secs: f64 = std::env::var("PLEXSERVE_OVERLOAD_S")
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(4.0_f64)
        .min(60.0);
    let trace = steady(10.0 * capacity, secs, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::emulated(&inst, &schedule).await;
        let rss0 = rss_kib();
        let target = Target::parse(&server.url).unwrap();
        let records = replay_trace(&inst, &trace, &target, &ReplayOptions::default()).await;
        let rss1 = rss_kib();
        assert_eq!(records.len(), trace.len());
        let ok = records.iter().filter(|r| r.status == 200).count();
        let rejected = records
            .iter()
            .filter(|r| r.status == 429 || r.status == 503)
            .count();
        let other: Vec<_> = records
            .iter()
            .filter(|r| r.status != 200 && r.status != 429 && r.status != 503)
            .take(5)
            .collect();
        assert!(
            other.is_empty(),
            "requests without a proper answer: {other:?}"
        );
        assert_eq!(ok + rejected, trace.len());
        assert!(
            rejected as f64 > 0.8 * trace.len() as f64,
            "overload must reject most"
        );
        let (_, text) = http_request(&target, "GET", "/metrics", b"").await.unwrap();
        let text = String::from_utf8(text).unwrap();
        assert_eq!(
            metric_sum(&text, "plexserve_rejected_total", "") as usize,
            rejected
        );
        assert_eq!(
            metric_sum(&text, "plexserve_completed_total", "") as usize,
            ok
        );
        assert_eq!(
            metric_sum(&text, "plexserve_admitted_total", "") as usize,
            ok
        );
        assert_eq!(metric_sum(&text, "plexserve_failed_total", ""), 0.0);
        let (status, _) = http_request(&target, "GET", "/healthz", b"").await.unwrap();
        assert_eq!(status, 200);
        assert_eq!(server.exec.inflight(), 0);
        eprintln!(
            "overload: {} requests in {secs} s, {ok} served, {rejected} rejected, RSS {} → {} KiB",
            trace.len(),
            rss0,
            rss1
        );
        assert!(rss1 < rss0 + 200 * 1024, "memory grew by more than 200 MiB");
        server.stop().await;
    });
}

/// A device fails mid-run: its group is marked down, its queued requests get an explicit 503,
/// later requests go to the other replica, and nothing hangs.
#[test]
fn worker_killed_mid_run() {
    let (inst, schedule) = common::tiny();
    let trace = steady(30.0, 5.0, 2);
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::emulated(&inst, &schedule).await;
        let target = Target::parse(&server.url).unwrap();
        let exec = server.exec.clone();
        let killer = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_secs(2)).await;
            exec.kill_device(1); // stage 1 of group 0
        });
        let records = tokio::time::timeout(
            Duration::from_secs(60),
            replay_trace(&inst, &trace, &target, &ReplayOptions::default()),
        )
        .await
        .expect("replay finishes: nothing hangs");
        killer.await.unwrap();
        assert!(
            records.iter().all(|r| r.status != 0),
            "every request gets an answer"
        );
        // After the failure (plus the in-flight window) group 0 serves nothing.
        let late_g0 = records
            .iter()
            .filter(|r| r.arrival_s > 2.5 && r.group == Some(0))
            .count();
        assert_eq!(late_g0, 0, "requests still served by the dead group");
        let after_ok = records
            .iter()
            .filter(|r| r.arrival_s > 2.5 && r.status == 200 && r.group == Some(1))
            .count();
        assert!(after_ok > 0, "the surviving replica keeps serving");
        for r in records.iter().filter(|r| r.status == 503) {
            assert!(
                ["failed", "group_down"].contains(&r.reason.as_str()),
                "503 without a reason: {r:?}"
            );
        }
        let (_, text) = http_request(&target, "GET", "/metrics", b"").await.unwrap();
        let text = String::from_utf8(text).unwrap();
        assert!(text.contains("plexserve_group_up{group=\"0\"} 0"));
        assert!(text.contains("plexserve_group_up{group=\"1\"} 1"));
        server.stop().await;
    });
}

/// Bad JSON, unknown fields, unknown models, oversized bodies and unknown paths get a 4xx with a
/// JSON reason.
#[test]
fn malformed_requests_get_4xx_with_reason() {
    let (inst, schedule) = common::tiny();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::start(
            &inst,
            &schedule,
            Arc::new(EmulateRunner),
            ExecutorOptions::default(),
            HttpOptions {
                max_body_bytes: 4096,
            },
        )
        .await;
        let t = Target::parse(&server.url).unwrap();
        let big = vec![b' '; 10_000];
        let cases: Vec<(&str, &str, &[u8], u16, &str)> = vec![
            ("POST", "/v1/models/m0/infer", b"{not json", 400, "bad_json"),
            (
                "POST",
                "/v1/models/m0/infer",
                b"{\"nope\": 1}",
                400,
                "bad_json",
            ),
            ("POST", "/v1/models/m0/infer", b"[1, 2]", 400, "bad_json"),
            ("POST", "/v1/models/zz/infer", b"{}", 404, "unknown_model"),
            ("POST", "/v1/models/m0/infer", &big, 413, "body_too_large"),
            ("GET", "/nowhere", b"", 404, "not_found"),
        ];
        for (method, path, body, want, reason) in cases {
            let (status, body) = http_request(&t, method, path, body).await.unwrap();
            assert_eq!(status, want, "{method} {path}");
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert_eq!(v["reason"], reason, "{method} {path}");
            assert!(v["error"].as_str().is_some_and(|e| !e.is_empty()));
        }
        // A good request still works afterwards, and the models are listed.
        let (status, body) = http_request(&t, "POST", "/v1/models/m1/infer", b"{}")
            .await
            .unwrap();
        assert_eq!(status, 200, "{}", String::from_utf8_lossy(&body));
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["model"], "m1");
        assert!(v["good"].as_bool().unwrap());
        let (status, body) = http_request(&t, "GET", "/v1/models", b"").await.unwrap();
        assert_eq!(status, 200);
        let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
        assert_eq!(v["models"].as_array().unwrap().len(), 2);
        assert_eq!(server.exec.metrics().bad_requests(), 5);
        server.stop().await;
    });
}

/// Extreme but valid times — an SLO of 1e300 s ("no SLO"), a workload started 1e300 s of plan
/// time ago — are served like any other: the answer comes, nothing panics (converting such
/// a time to a `Duration` once killed the request's handler).
#[test]
fn extreme_slo_and_plan_time_are_served() {
    let (mut inst, schedule) = common::tiny();
    inst.models[0].slo_s = 1e300;
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::emulated(&inst, &schedule).await;
        let t = Target::parse(&server.url).unwrap();
        let (status, _) = http_request(
            &t,
            "POST",
            "/v1/workload/start",
            b"{\"plan_time_s\": 1e300}",
        )
        .await
        .unwrap();
        assert_eq!(status, 200);
        for model in ["m0", "m1"] {
            let path = format!("/v1/models/{model}/infer");
            let (status, body) = http_request(&t, "POST", &path, b"{}").await.unwrap();
            assert_eq!(status, 200, "{model}: {}", String::from_utf8_lossy(&body));
            let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
            assert!(v["good"].as_bool().unwrap(), "{model}: {v}");
        }
        server.stop().await;
    });
}

/// Shutdown while requests are queued: every accepted request is still answered.
#[test]
fn graceful_shutdown_drains_accepted_requests() {
    let (inst, schedule) = common::tiny();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(async {
        let server = Server::emulated(&inst, &schedule).await;
        let t = Target::parse(&server.url).unwrap();
        let mut reqs = Vec::new();
        for i in 0..20 {
            let t = t.clone();
            let path = format!("/v1/models/m{}/infer", i % 2);
            reqs.push(tokio::spawn(async move {
                http_request(&t, "POST", &path, b"{}").await
            }));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
        let admitted =
            server.exec.metrics().model(0).admitted + server.exec.metrics().model(1).admitted;
        assert!(admitted > 0);
        let exec = server.exec.clone();
        server.stop().await;
        let mut ok = 0;
        for r in reqs {
            let (status, _) = r.await.unwrap().expect("answered before the server closed");
            if status == 200 {
                ok += 1;
            }
        }
        assert_eq!(ok as u64, admitted, "every admitted request was answered");
        assert_eq!(exec.inflight(), 0);
    });
}
