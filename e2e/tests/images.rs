//! The container images: `berth-image` builds both from static binaries
//! (no container engine) and pushes them into a running Berth; crane
//! inspects and validates them there; the registry image's root filesystem
//! is unpacked and its entrypoint runs from it, chrooted, as the image's
//! user, and serves a push.
//!
//! `e2e/test-all.sh` builds the static binaries before the tests, so the
//! `cargo build` that `berth-image` runs here finds nothing to do.

#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::collections::BTreeSet;
use std::net::SocketAddr;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};

use berth_e2e::{Registry, is_live, run, start_on_free_port, stdout, tool, workspace_bin};
use serde_json::Value;

/// What each image's root filesystem holds, and nothing else.
const COMMON_FILES: [&str; 4] = [
    "etc/group",
    "etc/passwd",
    "etc/ssl/certs/ca-certificates.crt",
    "tmp",
];

#[test]
fn images_are_pushed_into_berth_and_the_registry_runs_from_its_own_rootfs() {
    let berth = Registry::start();
    let prefix = format!("{}/berth", berth.host());
    let work = tempfile::tempdir().expect("temp dir");

    // Twice, the second time pushing: the same commit gives the same bytes.
    let first = build_images(&prefix, &work.path().join("first"), false);
    let pushed = build_images(&prefix, &work.path().join("pushed"), true);
    assert_eq!(first, pushed, "rebuilding gave different images");

    for (name, digest) in &pushed {
        let reference = format!("{prefix}/{name}:{}", env!("CARGO_PKG_VERSION"));
        inspect(&reference, name, digest);
    }

    let registry = format!("{prefix}/berth-registry:{}", env!("CARGO_PKG_VERSION"));
    let rootfs = unpack(&registry, work.path());
    assert_eq!(
        files(&rootfs),
        expected_files(&["usr/local/bin/berth-registry", "var/lib/berth"])
    );
    run_registry_from(&rootfs, &registry);

    let operator = format!("{prefix}/berth-operator:{}", env!("CARGO_PKG_VERSION"));
    let rootfs = unpack(&operator, &work.path().join("operator"));
    assert_eq!(
        files(&rootfs),
        expected_files(&["usr/local/bin/berth-operator"])
    );
    let version = stdout(
        Command::new(tool("chroot"))
            .arg("--userspec=65532:65532")
            .arg(&rootfs)
            .args(["/usr/local/bin/berth-operator", "--version"]),
    );
    assert_eq!(
        version,
        format!("berth-operator {}", env!("CARGO_PKG_VERSION"))
    );
}

/// Runs `berth-image` for both images; their names and manifest digests
/// as it reports them.
fn build_images(prefix: &str, out: &Path, push: bool) -> Vec<(String, String)> {
    let mut command = Command::new(workspace_bin("berth-image"));
    command.args(["--prefix", prefix, "--out"]).arg(out);
    if push {
        command.args(["--push", "--plain-http"]);
    }
    let report = stdout(&mut command);
    let images: Vec<(String, String)> = ["berth-operator", "berth-registry"]
        .iter()
        .map(|name| {
            let layout = out.join(name);
            let index: Value = json(&std::fs::read(layout.join("index.json")).expect("index"));
            let digest = index["manifests"][0]["digest"]
                .as_str()
                .expect("digest")
                .to_string();
            assert!(
                report.contains(&format!(
                    "{prefix}/{name}:{}@{digest}",
                    env!("CARGO_PKG_VERSION")
                )),
                "{report}"
            );
            (name.to_string(), digest)
        })
        .collect();
    if push {
        assert_eq!(report.matches("pushed ").count(), 2, "{report}");
    }
    images
}

/// crane sees the pushed image with the manifest digest `berth-image`
/// reported, a valid single-layer OCI image whose config says how to run
/// it and where it comes from.
fn inspect(reference: &str, name: &str, digest: &str) {
    let crane = tool("crane");
    let remote_digest = stdout(Command::new(&crane).args(["digest", "--insecure", reference]));
    assert_eq!(remote_digest, digest);
    run(Command::new(&crane).args(["validate", "--insecure", "--remote", reference]));

    let manifest =
        json(stdout(Command::new(&crane).args(["manifest", "--insecure", reference])).as_bytes());
    assert_eq!(
        manifest["mediaType"],
        "application/vnd.oci.image.manifest.v1+json"
    );
    assert_eq!(
        manifest["config"]["mediaType"],
        "application/vnd.oci.image.config.v1+json"
    );
    let layers = manifest["layers"].as_array().expect("layers");
    assert_eq!(layers.len(), 1);
    assert_eq!(
        layers[0]["mediaType"],
        "application/vnd.oci.image.layer.v1.tar+gzip"
    );

    let config =
        json(stdout(Command::new(&crane).args(["config", "--insecure", reference])).as_bytes());
    assert_eq!(config["os"], "linux");
    assert_eq!(config["architecture"], "amd64");
    let run_config = &config["config"];
    assert_eq!(run_config["User"], "65532:65532");
    assert_eq!(
        run_config["Entrypoint"],
        serde_json::json!([format!("/usr/local/bin/{name}")])
    );
    let port = if name == "berth-registry" {
        "5000/tcp"
    } else {
        "8080/tcp"
    };
    assert!(
        run_config["ExposedPorts"].get(port).is_some(),
        "{run_config}"
    );
    let labels = &run_config["Labels"];
    let label = |key: &str| labels[format!("org.opencontainers.image.{key}")].clone();
    assert_eq!(label("title"), name);
    assert_eq!(label("version"), env!("CARGO_PKG_VERSION"));
    assert_eq!(label("licenses"), "Apache-2.0");
    assert_eq!(label("source"), "https://github.com/berth-dev/berth");
    assert_eq!(label("revision"), git_head());
    assert_eq!(label("created"), config["created"]);
    assert!(label("description").as_str().is_some_and(|d| !d.is_empty()));
}

/// `crane export`s the image's filesystem and unpacks it, owners and modes
/// kept, into `<dir>/rootfs`.
fn unpack(reference: &str, dir: &Path) -> PathBuf {
    let rootfs = dir.join("rootfs");
    std::fs::create_dir_all(&rootfs).expect("rootfs dir");
    let tarball = dir.join("rootfs.tar");
    run(Command::new(tool("crane"))
        .args(["export", "--insecure", reference])
        .arg(&tarball));
    run(Command::new("tar")
        .args([
            "--extract",
            "--same-owner",
            "--same-permissions",
            "--numeric-owner",
        ])
        .arg("--file")
        .arg(&tarball)
        .arg("--directory")
        .arg(&rootfs));
    rootfs
}

/// Starts the registry from its image exactly as the config says (the
/// entrypoint and its default arguments, the listen address aside), in
/// `rootfs` as uid 65532; checks that it is ready and stores a pushed image
/// in the image's data directory.
fn run_registry_from(rootfs: &Path, reference: &str) {
    let config = json(
        stdout(Command::new(tool("crane")).args(["config", "--insecure", reference])).as_bytes(),
    );
    let entrypoint = config["config"]["Entrypoint"][0]
        .as_str()
        .expect("entrypoint");
    let args_for = |addr: SocketAddr| -> Vec<String> {
        let args: Vec<String> = strings(&config["config"]["Cmd"])
            .into_iter()
            .map(|arg| {
                if arg.starts_with("0.0.0.0:") {
                    addr.to_string()
                } else {
                    arg
                }
            })
            .collect();
        assert_eq!(
            args,
            ["--listen", &addr.to_string(), "--root", "/var/lib/berth"]
        );
        args
    };
    let (child, addr) = start_on_free_port(
        "the chrooted berth-registry",
        |addr| {
            Command::new(tool("chroot"))
                .arg("--userspec=65532:65532")
                .arg(rootfs)
                .arg(entrypoint)
                .args(args_for(addr))
                .env_clear()
                .envs(
                    strings(&config["config"]["Env"])
                        .iter()
                        .filter_map(|kv| kv.split_once('=')),
                )
                .stdin(Stdio::null())
                .spawn()
                .expect("chroot into the registry image")
        },
        |addr| is_live(addr, "/readyz"),
    );
    let _server = Killed(child);

    let copy = format!("{addr}/copied/berth-registry:1");
    run(Command::new(tool("crane")).args(["copy", "--insecure", reference, &copy]));
    run(Command::new(tool("crane")).args(["validate", "--insecure", "--remote", &copy]));
    let data = rootfs.join("var/lib/berth");
    let owner = std::fs::metadata(&data).expect("data dir").uid();
    assert_eq!(owner, 65532);
    assert!(
        std::fs::read_dir(&data).expect("data dir").next().is_some(),
        "the chrooted registry stored nothing in /var/lib/berth"
    );
}

/// Every path under `root`, relative, directories included.
fn files(root: &Path) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut pending = vec![root.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).expect("read dir") {
            let path = entry.expect("dir entry").path();
            let relative = path.strip_prefix(root).expect("under root");
            found.insert(relative.display().to_string());
            if path.is_dir() && !path.is_symlink() && !path.ends_with("var/lib/berth") {
                pending.push(path);
            }
        }
    }
    found
}

/// `COMMON_FILES` and `extra`, with their parent directories.
fn expected_files(extra: &[&str]) -> BTreeSet<String> {
    let mut expected = BTreeSet::new();
    for path in COMMON_FILES.iter().chain(extra) {
        let mut prefix = String::new();
        for part in path.split('/') {
            if !prefix.is_empty() {
                prefix.push('/');
            }
            prefix.push_str(part);
            expected.insert(prefix.clone());
        }
    }
    expected
}

fn json(bytes: &[u8]) -> Value {
    serde_json::from_slice(bytes)
        .unwrap_or_else(|e| panic!("not JSON ({e}): {}", String::from_utf8_lossy(bytes)))
}

fn strings(value: &Value) -> Vec<String> {
    value
        .as_array()
        .map(|items| {
            items
                .iter()
                .filter_map(|v| v.as_str().map(String::from))
                .collect()
        })
        .unwrap_or_default()
}

fn git_head() -> String {
    stdout(Command::new("git").args(["-C", env!("CARGO_MANIFEST_DIR"), "rev-parse", "HEAD"]))
}

/// A child process killed when the test ends, passing or failing.
struct Killed(Child);

impl Drop for Killed {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
