//! The benchmark binary runs inside the suite with 200 requests against its own three-server
//! cluster and reports 0 failed and 0 duplicates on its `RESULT` line (no timing assertions).

mod support;

use std::process::Command;

#[test]
fn bench_with_200_requests_reports_no_failure() {
    support::ensure_built();
    let bin = client::launch::sibling_binary("bench").expect("bench binary");
    let out = Command::new(bin).args(["--requests", "200"]).output().expect("bench runs");
    assert!(out.status.success(), "bench failed: {}", String::from_utf8_lossy(&out.stderr));
    let stdout = String::from_utf8_lossy(&out.stdout);
    let line = stdout.lines().last().expect("output");
    let json = line.strip_prefix("RESULT ").unwrap_or_else(|| panic!("last line is RESULT: {line}"));
    let v: serde_json::Value = serde_json::from_str(json).expect("RESULT is JSON");
    assert_eq!(v["requests"], 200);
    assert_eq!(v["ok"], 200, "{json}");
    assert_eq!(v["failed"], 0, "{json}");
    assert_eq!(v["duplicates"], 0, "{json}");
    for key in ["seconds", "throughput", "p50_ms", "p99_ms", "per_server"] {
        assert!(!v[key].is_null(), "{key} missing: {json}");
    }
}
