//! A smoke run of `vellum bench capture`: a gateway process started by the benchmark,
//! loaded for a second over loopback HTTP, every receipt verified, beside the naive
//! baseline and the CPU floor. It asserts only that the run completes and reports;
//! the figures themselves are measured with the commands in docs/performance.md.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failure is a failed test"
)]

mod common;

use common::gateway::{Running, free_port, quickstart};
use common::vellum;

/// Runs the benchmark briefly and returns its JSON report.
fn smoke(extra: &[&str]) -> serde_json::Value {
    let dir = tempfile::tempdir().unwrap();
    let mut args = vec![
        "bench",
        "capture",
        "--seconds",
        "1",
        "--concurrency",
        "8",
        "--max-rate",
        "3000",
        "--json",
    ];
    args.extend_from_slice(extra);
    let run = vellum(dir.path(), &args, b"");
    assert_eq!(run.code, 0, "{}", run.stderr);
    serde_json::from_str(run.stdout_text().trim()).unwrap()
}

fn assert_reports(report: &serde_json::Value, backend: &str) {
    assert!(
        report["backend"].as_str().unwrap().starts_with(backend),
        "{report}"
    );
    assert_eq!(report["failed"], 0, "{report}");
    for field in [
        "receipts_per_sec",
        "p50_ms",
        "p99_ms",
        "floor_per_sec",
        "peak_rss_mib",
    ] {
        let value = report[field].as_f64().unwrap_or(0.0);
        assert!(value > 0.0, "{field} is {value}: {report}");
    }
    assert!(report["paced"]["per_sec"].as_f64().unwrap() > 0.0, "{report}");
    assert_eq!(report["paced"]["failed"], 0, "{report}");
}

#[test]
fn the_capture_benchmark_runs_and_reports_on_sqlite() {
    let report = smoke(&["--attachment-mib", "4"]);
    assert_reports(&report, "sqlite+folder");
    let attachment = &report["attachment"];
    assert_eq!(attachment["status"], 200, "{report}");
    assert_eq!(attachment["receipt_verified"], true, "{report}");
    assert!(attachment["gateway_rss_growth_mib"].is_number(), "{report}");
    assert!(report["baseline_per_sec"].as_f64().unwrap() > 0.0, "{report}");
}

#[test]
fn the_capture_benchmark_runs_and_reports_on_postgres() {
    let Ok(url) = std::env::var("VELLUM_TEST_POSTGRES") else {
        panic!("VELLUM_TEST_POSTGRES is not set: run the tests through scripts/test");
    };
    let report = smoke(&["--backend", "postgres", "--postgres-url", &url, "--no-baseline"]);
    assert_reports(&report, "postgres+folder");
    assert!(report["baseline_per_sec"].is_null(), "{report}");
}

#[test]
fn the_capture_benchmark_loads_a_running_gateway_through_an_enrollment_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("vellum-data");
    let port = free_port();
    let gateway = Running::start(quickstart(&data, port), port, tmp.path(), "bench");
    let bundle = data.join("offline/demo-device.bundle.json");
    let pid = gateway.child.id().to_string();
    let report = smoke(&[
        "--bundle",
        bundle.to_str().unwrap(),
        "--gateway-pid",
        &pid,
        "--no-baseline",
    ]);
    assert_reports(&report, "remote http://127.0.0.1:");
    assert!(report["gateway_cores"].as_f64().unwrap() > 0.0, "{report}");
    // The bundle was spent: a second run is refused with the gateway's answer.
    let again = vellum(
        tmp.path(),
        &[
            "bench",
            "capture",
            "--bundle",
            bundle.to_str().unwrap(),
            "--seconds",
            "1",
        ],
        b"",
    );
    assert_ne!(again.code, 0);
    assert!(again.stderr.contains("enrollment"), "{}", again.stderr);
    gateway.stop();
}

/// A smoke run of `vellum bench search` on each database: a small generated archive,
/// a few searches of every shape over HTTP. It asserts that the run completes, reports
/// the fields the issue names, and that searches found rows.
#[test]
fn the_search_benchmark_runs_and_reports_on_both_databases() {
    for backend in ["sqlite", "postgres"] {
        let dir = tempfile::tempdir().unwrap();
        let args = [
            "bench",
            "search",
            "--backend",
            backend,
            "--records",
            "3000",
            "--custodians",
            "20",
            "--participants",
            "200",
            "--queries",
            "70",
            "--json",
        ];
        let run = vellum(dir.path(), &args, b"");
        assert_eq!(run.code, 0, "{backend}: {}", run.stderr);
        let report: serde_json::Value = serde_json::from_str(run.stdout_text().trim()).unwrap();
        assert_eq!(
            (report["backend"].as_str(), report["records"].as_u64()),
            (Some(backend), Some(3000))
        );
        for field in ["p50_ms", "p99_ms", "count_p99_ms", "mean_rows"] {
            assert!(report[field].as_f64().unwrap_or(0.0) > 0.0, "{field}: {report}");
        }
        assert_eq!(report["shapes"].as_object().unwrap().len(), 7, "{report}");
    }
}
