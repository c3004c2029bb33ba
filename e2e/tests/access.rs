//! TLS and htpasswd auth with a real client: crane verifies the registry's
//! certificate (no `--insecure`) and logs in from a Docker config file, as
//! a cluster's image pulls would.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::fs;
use std::path::Path;
use std::process::Command;

use base64::Engine as _;
use berth_e2e::clients::layer_tar;
use berth_e2e::{Registry, run, self_signed, sha256, stdout, tool};

/// A Docker config directory holding `user:password` for `host`.
fn docker_config(dir: &Path, host: &str, user: &str, password: &str) {
    fs::create_dir_all(dir).unwrap();
    let auth = base64::engine::general_purpose::STANDARD.encode(format!("{user}:{password}"));
    let config = serde_json::json!({ "auths": { host: { "auth": auth } } });
    fs::write(dir.join("config.json"), config.to_string()).unwrap();
}

#[test]
fn crane_pushes_and_pulls_over_tls_with_a_login() {
    let secrets = tempfile::tempdir().unwrap();
    let dir = secrets.path();
    self_signed(dir, "tls.crt", "tls.key");
    let hash = bcrypt::hash("wonderland", 4).unwrap();
    fs::write(dir.join("htpasswd"), format!("alice:{hash}\n")).unwrap();
    let path = |name: &str| dir.join(name).display().to_string();
    let registry = Registry::start_with_env(&[
        ("BERTH_TLS__CERT_FILE", &path("tls.crt")),
        ("BERTH_TLS__KEY_FILE", &path("tls.key")),
        ("BERTH_AUTH__HTPASSWD__PATH", &path("htpasswd")),
    ]);
    let host = registry.host();
    docker_config(&dir.join("alice"), &host, "alice", "wonderland");
    docker_config(&dir.join("mallory"), &host, "alice", "guess");
    // Go's TLS stack trusts exactly this CA file; no --insecure anywhere.
    let crane = |login: &str| {
        let mut command = Command::new(tool("crane"));
        command
            .env("SSL_CERT_FILE", dir.join("tls.crt"))
            .env("DOCKER_CONFIG", dir.join(login));
        command
    };

    let image = format!("{host}/team/app:v1");
    let tar = dir.join("layer.tar");
    fs::write(&tar, layer_tar(dir, "hello", "hello over TLS")).unwrap();
    let pushed = stdout(
        crane("alice")
            .args(["append", "-f"])
            .arg(&tar)
            .args(["-t", &image]),
    );
    let digest = pushed.rsplit('@').next().unwrap().to_string();
    assert_eq!(stdout(crane("alice").args(["digest", &image])), digest);
    let manifest = stdout(crane("alice").args(["manifest", &image]));
    assert_eq!(sha256(manifest.as_bytes()), digest);
    run(crane("alice").args(["validate", "--remote", &image]));
    assert_eq!(
        stdout(crane("alice").args(["ls", &format!("{host}/team/app")])),
        "v1"
    );

    // Wrong password, and no login at all: refused with the status that
    // makes clients ask for credentials.
    for login in ["mallory", "nobody"] {
        let out = crane(login).args(["digest", &image]).output().unwrap();
        assert!(!out.status.success(), "{login} must be refused");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(
            stderr.contains("UNAUTHORIZED") || stderr.contains("401"),
            "{login}: {stderr}"
        );
    }
    // Without the CA, crane refuses the certificate: TLS is real.
    let out = Command::new(tool("crane"))
        .env("DOCKER_CONFIG", dir.join("alice"))
        .env("SSL_CERT_FILE", "/dev/null")
        .args(["digest", &image])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("certificate"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
