//! The OCI distribution-spec conformance suite (pinned in
//! `e2e/tools/versions.env`) at OCI_VERSION=1.1 with every optional API
//! switched on. Only the "sparse manifests" data set stays off: it pushes
//! indexes whose children were never pushed, which Berth refuses on purpose
//! (DESIGN invariant 3).

#![allow(clippy::unwrap_used, clippy::expect_used)] // test runner: a panic is the report

use std::process::Command;

/// Runs the suite against `host` (repositories below `repo_root`) and
/// asserts a full pass: exit 0, `results.yaml` written, no FAIL, Error or
/// Skip. Returns the number of passed checks.
pub fn run_conformance(host: &str, repo_root: &str) -> u32 {
    let bin = std::env::var("BERTH_CONFORMANCE_BIN").expect(
        "BERTH_CONFORMANCE_BIN is unset: source e2e/tools/env.sh after e2e/tools/install.sh",
    );
    let work = tempfile::tempdir().expect("temp dir");
    let results = work.path().join("results");
    let output = Command::new(&bin)
        .current_dir(work.path())
        .env("OCI_REGISTRY", host)
        .env("OCI_TLS", "disabled")
        .env("OCI_VERSION", "1.1")
        .env("OCI_RESULTS_DIR", &results)
        .env("OCI_REPO1", format!("{repo_root}/repo1"))
        .env("OCI_REPO2", format!("{repo_root}/repo2"))
        .env("OCI_API_BLOBS_UPLOAD_CANCEL", "true")
        .env("OCI_API_BLOBS_DIGEST_HEADER", "true")
        .env("OCI_API_MANIFESTS_DIGEST_HEADER", "true")
        .env("OCI_API_MANIFESTS_TAG_PARAM", "true")
        .output()
        .unwrap_or_else(|e| panic!("cannot run {bin}: {e}"));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = format!(
        "conformance exited {}\n{stdout}\n--- stderr\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    // The suite exits 0 on some set-up failures, so check its verdict too.
    assert!(output.status.success(), "{report}");
    assert!(
        results.join("results.yaml").is_file(),
        "no results.yaml\n{report}"
    );
    assert!(stdout.contains("OCI Conformance Result: Pass"), "{report}");
    for (label, want) in [("Skip", "0"), ("FAIL", "0"), ("Error", "0")] {
        let count = summary_count(&stdout, label);
        assert_eq!(count.as_deref(), Some(want), "{label} count\n{report}");
    }
    let passed: u32 = summary_count(&stdout, "Pass")
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    assert!(passed > 900, "only {passed} tests passed\n{report}");
    println!("OCI conformance: {passed} passed, 0 failed, 0 skipped");
    passed
}

/// The number on a summary line such as `  Skip......:     0`.
fn summary_count(stdout: &str, label: &str) -> Option<String> {
    let tail = stdout.split("OCI Conformance Result:").nth(1)?;
    tail.lines()
        .map(str::trim)
        .find(|line| line.starts_with(&format!("{label}.")))
        .and_then(|line| line.rsplit(':').next())
        .map(|n| n.trim().to_string())
}
