//! Real-client scenarios, shared by the single-binary tests and the
//! multi-replica tests: each round-trips content through a registry at
//! `host` and compares digests on the way back. They panic on failure.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test scenarios: a panic is the report

use std::fs;
use std::path::Path;
use std::process::{Command, Stdio};

use serde_json::{Value, json};

use crate::{run, sha256, stdout, tool};

/// A tar archive holding one file, made by the system `tar`.
pub fn layer_tar(dir: &Path, name: &str, content: &str) -> Vec<u8> {
    let src = dir.join(format!("{name}-src"));
    fs::create_dir_all(&src).unwrap();
    fs::write(src.join(name), content).unwrap();
    let tar = dir.join(format!("{name}.tar"));
    run(Command::new("tar")
        .arg("-cf")
        .arg(&tar)
        .arg("-C")
        .arg(&src)
        .arg("."));
    fs::read(tar).unwrap()
}

/// crane: append (push), digest, manifest, validate, pull, copy, tag, ls,
/// catalog, delete. `repo_root` keeps scenarios of one run apart.
pub fn crane_scenario(host: &str, repo_root: &str) {
    let work = tempfile::tempdir().unwrap();
    let crane = || {
        let mut command = Command::new(tool("crane"));
        command.arg("--insecure");
        command
    };
    let image = format!("{host}/{repo_root}/crane");
    let tar = work.path().join("layer.tar");
    fs::write(&tar, layer_tar(work.path(), "hello", "hello from crane")).unwrap();

    let pushed = stdout(
        crane()
            .args(["append", "-f"])
            .arg(&tar)
            .args(["-t", &format!("{image}:v1")]),
    );
    let digest = pushed.rsplit('@').next().unwrap().to_string();
    assert!(digest.starts_with("sha256:"), "{pushed}");
    assert_eq!(
        stdout(crane().args(["digest", &format!("{image}:v1")])),
        digest
    );

    let manifest = stdout(crane().args(["manifest", &format!("{image}:v1")]));
    assert_eq!(
        sha256(manifest.as_bytes()),
        digest,
        "manifest bytes come back unchanged"
    );
    run(crane().args(["validate", "--remote", &format!("{image}:v1")]));

    let pulled = work.path().join("pulled");
    run(crane()
        .args(["pull", "--format", "oci", &format!("{image}:v1")])
        .arg(&pulled));
    let index: Value =
        serde_json::from_slice(&fs::read(pulled.join("index.json")).unwrap()).unwrap();
    assert_eq!(index["manifests"][0]["digest"], json!(digest));

    let copy = format!("{host}/{repo_root}/crane-copy:v2");
    run(crane().args(["copy", &format!("{image}:v1"), &copy]));
    assert_eq!(stdout(crane().args(["digest", &copy])), digest);
    run(crane().args(["tag", &format!("{image}:v1"), "v1.1"]));
    let tags = stdout(crane().args(["ls", &image]));
    assert_eq!(tags.lines().collect::<Vec<_>>(), ["v1", "v1.1"]);
    let catalog = stdout(crane().args(["catalog", host]));
    let ours: Vec<&str> = catalog
        .lines()
        .filter(|r| r.starts_with(&format!("{repo_root}/")))
        .collect();
    assert_eq!(
        ours,
        [
            format!("{repo_root}/crane"),
            format!("{repo_root}/crane-copy")
        ]
    );

    run(crane().args(["delete", &format!("{image}@{digest}")]));
    let gone = crane()
        .args(["manifest", &format!("{image}:v1")])
        .output()
        .unwrap();
    assert!(!gone.status.success(), "deleted manifest is still served");
    assert_eq!(
        stdout(crane().args(["digest", &copy])),
        digest,
        "other repository keeps its copy"
    );
}

/// oras: push an artifact, attach a referrer, discover it, pull the files.
pub fn oras_scenario(host: &str, repo_root: &str) {
    let work = tempfile::tempdir().unwrap();
    let oras = |dir: &Path| {
        let mut command = Command::new(tool("oras"));
        command.current_dir(dir);
        command
    };
    let artifact = format!("{host}/{repo_root}/oras:v1");
    fs::write(work.path().join("hello.txt"), "hello from oras").unwrap();
    fs::write(work.path().join("sig.txt"), "a signature").unwrap();

    run(oras(work.path())
        .args([
            "push",
            "--plain-http",
            "--artifact-type",
            "application/vnd.berth.test",
        ])
        .args([&artifact, "hello.txt:text/plain"]));
    run(oras(work.path())
        .args([
            "attach",
            "--plain-http",
            "--artifact-type",
            "application/vnd.berth.sig",
        ])
        .args([&artifact, "sig.txt:text/plain"]));

    let discovered =
        stdout(oras(work.path()).args(["discover", "--plain-http", "--format", "json", &artifact]));
    let tree: Value = serde_json::from_str(&discovered).unwrap();
    let referrers = tree["referrers"].as_array().cloned().unwrap_or_default();
    assert_eq!(referrers.len(), 1, "{discovered}");
    assert_eq!(
        referrers[0]["artifactType"],
        json!("application/vnd.berth.sig"),
        "{discovered}"
    );

    let out = work.path().join("out");
    fs::create_dir_all(&out).unwrap();
    run(oras(&out).args(["pull", "--plain-http", &artifact]));
    assert_eq!(
        fs::read_to_string(out.join("hello.txt")).unwrap(),
        "hello from oras"
    );
}

/// Gzip-compresses `data` with the system `gzip` (`-n`: no name or time,
/// so the bytes are reproducible).
pub fn gzip(dir: &Path, data: &[u8]) -> Vec<u8> {
    let path = dir.join("layer.gz.in");
    fs::write(&path, data).unwrap();
    run(Command::new("gzip").args(["-n", "-k", "-f"]).arg(&path));
    fs::read(dir.join("layer.gz.in.gz")).unwrap()
}

/// Writes an OCI image layout holding a two-platform index tagged `v1`;
/// returns the index digest.
pub fn multi_arch_layout(dir: &Path) -> String {
    let blobs = dir.join("layout/blobs/sha256");
    fs::create_dir_all(&blobs).unwrap();
    let put = |data: &[u8]| -> (String, usize) {
        let digest = sha256(data);
        fs::write(blobs.join(digest.trim_start_matches("sha256:")), data).unwrap();
        (digest, data.len())
    };
    let mut manifests = Vec::new();
    for arch in ["amd64", "arm64"] {
        let tar = layer_tar(dir, arch, &format!("built for {arch}"));
        let diff_id = sha256(&tar);
        let (layer, layer_size) = put(&gzip(dir, &tar));
        let config = json!({
            "architecture": arch, "os": "linux",
            "rootfs": { "type": "layers", "diff_ids": [diff_id] },
        });
        let (config, config_size) = put(config.to_string().as_bytes());
        let manifest = json!({
            "schemaVersion": 2,
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "config": { "mediaType": "application/vnd.oci.image.config.v1+json", "digest": config, "size": config_size },
            "layers": [{ "mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": layer, "size": layer_size }],
        });
        let (digest, size) = put(manifest.to_string().as_bytes());
        manifests.push(json!({
            "mediaType": "application/vnd.oci.image.manifest.v1+json",
            "digest": digest, "size": size,
            "platform": { "architecture": arch, "os": "linux" },
        }));
    }
    let index = json!({
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.index.v1+json",
        "manifests": manifests,
    });
    let (index_digest, index_size) = put(index.to_string().as_bytes());
    let top = json!({
        "schemaVersion": 2,
        "manifests": [{
            "mediaType": "application/vnd.oci.image.index.v1+json",
            "digest": index_digest, "size": index_size,
            "annotations": { "org.opencontainers.image.ref.name": "v1" },
        }],
    });
    fs::write(dir.join("layout/index.json"), top.to_string()).unwrap();
    fs::write(
        dir.join("layout/oci-layout"),
        r#"{"imageLayoutVersion":"1.0.0"}"#,
    )
    .unwrap();
    index_digest
}

/// skopeo: a multi-arch OCI layout copied in and out, byte for byte.
pub fn skopeo_scenario(host: &str, repo_root: &str) {
    let work = tempfile::tempdir().unwrap();
    let index_digest = multi_arch_layout(work.path());
    let skopeo = || {
        let mut command = Command::new(tool("skopeo"));
        command.arg("--insecure-policy");
        command
    };
    let remote = format!("docker://{host}/{repo_root}/skopeo:v1");
    let layout = format!("oci:{}:v1", work.path().join("layout").display());
    run(skopeo().args(["copy", "--all", "--dest-tls-verify=false", &layout, &remote]));

    let raw = run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &remote])).stdout;
    assert_eq!(
        sha256(&raw),
        index_digest,
        "the index is stored byte for byte"
    );
    let arm = stdout(skopeo().args([
        "inspect",
        "--override-arch",
        "arm64",
        "--tls-verify=false",
        &remote,
    ]));
    let arm: Value = serde_json::from_str(&arm).unwrap();
    assert_eq!(arm["Architecture"], json!("arm64"));

    let out = work.path().join("out");
    let back = format!("oci:{}:v1", out.display());
    run(skopeo().args(["copy", "--all", "--src-tls-verify=false", &remote, &back]));
    let top: Value = serde_json::from_slice(&fs::read(out.join("index.json")).unwrap()).unwrap();
    assert_eq!(top["manifests"][0]["digest"], json!(index_digest));
    let original = fs::read_dir(work.path().join("layout/blobs/sha256"))
        .unwrap()
        .count();
    let copied = fs::read_dir(out.join("blobs/sha256")).unwrap().count();
    assert_eq!(copied, original, "every blob came back");

    // An index keeps its children (DESIGN invariant 3): deleting one is
    // refused, with a message naming the index, until the index is gone.
    let index: Value = serde_json::from_slice(&raw).unwrap();
    let child = index["manifests"][0]["digest"]
        .as_str()
        .unwrap()
        .to_string();
    let at = |digest: &str| format!("docker://{host}/{repo_root}/skopeo@{digest}");
    let refused = skopeo()
        .args(["delete", "--tls-verify=false", &at(&child)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let said = String::from_utf8_lossy(&refused.stderr);
    assert!(
        !refused.status.success() && said.contains(&index_digest),
        "deleting a child of an index: {}\n{said}",
        refused.status
    );
    run(skopeo().args(["inspect", "--raw", "--tls-verify=false", &at(&child)]));
    run(skopeo().args(["delete", "--tls-verify=false", &at(&index_digest)]));
    run(skopeo().args(["delete", "--tls-verify=false", &at(&child)]));
    let gone = skopeo()
        .args(["inspect", "--raw", "--tls-verify=false", &at(&child)])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(!gone.status.success(), "the child was deleted");
}

/// helm: a chart pushed and pulled over `oci://`.
pub fn helm_scenario(host: &str, repo_root: &str) {
    let work = tempfile::tempdir().unwrap();
    let helm = || {
        let mut command = Command::new(tool("helm"));
        command
            .current_dir(work.path())
            .env("HELM_CONFIG_HOME", work.path().join("config"))
            .env("HELM_CACHE_HOME", work.path().join("cache"))
            .env("HELM_DATA_HOME", work.path().join("data"));
        command
    };
    run(helm().args(["create", "berth-demo"]));
    run(helm().args([
        "package",
        "berth-demo",
        "--version",
        "0.1.0",
        "-d",
        "packaged",
    ]));
    let chart = work.path().join("packaged/berth-demo-0.1.0.tgz");
    let repo = format!("oci://{host}/{repo_root}/charts");
    run(helm().arg("push").arg(&chart).args([&repo, "--plain-http"]));

    fs::create_dir_all(work.path().join("pulled")).unwrap();
    run(helm().args([
        "pull",
        &format!("{repo}/berth-demo"),
        "--version",
        "0.1.0",
        "--plain-http",
        "-d",
        "pulled",
    ]));
    let pulled = fs::read(work.path().join("pulled/berth-demo-0.1.0.tgz")).unwrap();
    assert_eq!(
        sha256(&pulled),
        sha256(&fs::read(&chart).unwrap()),
        "chart comes back byte for byte"
    );
    let shown = stdout(helm().args([
        "show",
        "chart",
        &format!("{repo}/berth-demo"),
        "--version",
        "0.1.0",
        "--plain-http",
    ]));
    assert!(shown.contains("name: berth-demo"), "{shown}");
}
