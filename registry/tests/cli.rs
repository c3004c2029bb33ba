//! The `berth-registry` binary's start-up output: what it prints and what
//! its errors say, for the fields that hold secrets.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::process::{Command, Output};

/// Runs the binary with `args` and the given `BERTH_*` variables only.
fn berth(args: &[&str], vars: &[(&str, &str)]) -> Output {
    let mut command = Command::new(env!("CARGO_BIN_EXE_berth-registry"));
    command.args(args);
    for (name, _) in std::env::vars().filter(|(name, _)| name.starts_with("BERTH_")) {
        command.env_remove(name);
    }
    command.envs(vars.iter().copied());
    command.output().expect("berth-registry runs")
}

const S3: [(&str, &str); 3] = [
    ("BERTH_STORAGE__DRIVER", "s3"),
    ("BERTH_STORAGE__BUCKET", "images"),
    ("BERTH_STORAGE__ACCESS_KEY_ID", "berth"),
];

/// Regression: `--print-config` printed `secretAccessKey` in clear, and a
/// numeric secret from the environment stopped start-up with the secret in
/// the error.
#[test]
fn print_config_redacts_a_secret_from_the_environment() {
    let mut vars = S3.to_vec();
    vars.push(("BERTH_STORAGE__SECRET_ACCESS_KEY", "12345678"));
    let output = berth(&["--print-config"], &vars);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "{stdout}\n{stderr}");
    assert!(stdout.contains("secretAccessKey: <redacted>"), "{stdout}");
    assert!(!stdout.contains("12345678") && !stderr.contains("12345678"));
}

/// A secret of the wrong type in the file names the field, not the value.
#[test]
fn a_bad_secret_in_the_file_is_not_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("berth.yaml");
    std::fs::write(&path, "storage:\n  secretAccessKey: 12345678\n").unwrap();
    let output = berth(&["--print-config", "-c", path.to_str().unwrap()], &S3);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("storage.secretAccessKey"), "{stderr}");
    assert!(!stderr.contains("12345678"), "{stderr}");
}
