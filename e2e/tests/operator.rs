//! e2e for the operator against the real local control plane
//! (`e2e/cluster`): the chart installed with helm, the real
//! `berth-operator` binary as a host process with the chart's
//! ServiceAccount token (so the chart's RBAC is what is tested), kubectl
//! as the user. One cluster serves the whole scenario, because starting
//! one takes about 15 s; each step says what it proves.
//!
//! Needs `e2e/tools/install.sh kube etcd kwok helm` and `source
//! e2e/tools/env.sh`; a missing tool fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::{Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const OPERATOR_NS: &str = "berth-system";
const APP_NS: &str = "apps";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn tool(name: &str) -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
        .unwrap_or_else(|| {
            panic!(
                "{name} is not on PATH: run `e2e/tools/install.sh kube etcd kwok helm` \
                 and `source e2e/tools/env.sh`"
            )
        })
}

/// `target/<profile>/berth-operator`, next to this test's profile dir.
fn operator_bin() -> PathBuf {
    if let Ok(path) = std::env::var("BERTH_OPERATOR_BIN") {
        return PathBuf::from(path);
    }
    let exe = std::env::current_exe().expect("current exe");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("target/<profile>");
    let bin = profile_dir.join("berth-operator");
    assert!(
        bin.is_file(),
        "{} is missing: build it with `cargo build -p berth-operator` or set BERTH_OPERATOR_BIN",
        bin.display()
    );
    bin
}

/// A running control plane; `down.sh` on drop.
struct Cluster {
    dir: tempfile::TempDir,
}

impl Cluster {
    fn up() -> Self {
        for name in ["kube-apiserver", "etcd", "kwok", "kubectl", "helm"] {
            tool(name);
        }
        let dir = tempfile::tempdir().expect("tempdir");
        let status = Command::new(workspace().join("e2e/cluster/up.sh"))
            .arg(dir.path())
            .status()
            .expect("run up.sh");
        assert!(status.success(), "e2e/cluster/up.sh failed");
        Self { dir }
    }

    fn kubeconfig(&self) -> PathBuf {
        self.dir.path().join("kubeconfig")
    }

    fn run(&self, program: &str, args: &[&str], stdin: Option<&str>) -> Output {
        let mut child = Command::new(tool(program))
            .args(args)
            .env("KUBECONFIG", self.kubeconfig())
            .current_dir(workspace())
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn");
        let mut input = child.stdin.take().expect("stdin");
        input
            .write_all(stdin.unwrap_or("").as_bytes())
            .expect("write stdin");
        drop(input);
        child.wait_with_output().expect("wait")
    }

    /// Runs kubectl/helm and fails the test when it fails.
    fn ok(&self, program: &str, args: &[&str]) -> String {
        self.ok_with(program, args, None)
    }

    fn ok_with(&self, program: &str, args: &[&str], stdin: Option<&str>) -> String {
        let out = self.run(program, args, stdin);
        assert!(
            out.status.success(),
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn apply(&self, yaml: &str) -> Output {
        self.run("kubectl", &["apply", "-n", APP_NS, "-f", "-"], Some(yaml))
    }

    /// `kubectl get` as JSON; `None` when not found.
    fn get(&self, kind: &str, name: &str) -> Option<Value> {
        let out = self.run(
            "kubectl",
            &["get", "-n", APP_NS, kind, name, "-o", "json"],
            None,
        );
        if !out.status.success() {
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert!(
                stderr.contains("NotFound"),
                "kubectl get {kind} {name}: {stderr}"
            );
            return None;
        }
        Some(serde_json::from_slice(&out.stdout).expect("json"))
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        let _ = Command::new(workspace().join("e2e/cluster/down.sh"))
            .arg(self.dir.path())
            .status();
    }
}

/// The operator process; killed on drop, its log printed when the test fails.
struct Operator {
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Operator {
    fn start(cluster: &Cluster) -> Self {
        let sa_kubeconfig = cluster.dir.path().join("operator.kubeconfig");
        let status = Command::new(workspace().join("e2e/cluster/sa-kubeconfig.sh"))
            .args([
                cluster.dir.path(),
                Path::new(OPERATOR_NS),
                Path::new("berth"),
                &sa_kubeconfig,
            ])
            .status()
            .expect("sa-kubeconfig.sh");
        assert!(status.success(), "sa-kubeconfig.sh failed");
        let metrics_port = free_port();
        let log = cluster.dir.path().join("operator.log");
        let child = Command::new(operator_bin())
            .env("KUBECONFIG", &sa_kubeconfig)
            .env("RUST_LOG", "info,berth_operator=debug")
            .args(["--metrics-addr", &format!("127.0.0.1:{metrics_port}")])
            .args([
                "--lease-namespace",
                OPERATOR_NS,
                "--identity",
                "e2e-operator",
            ])
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).expect("log file"))
            .spawn()
            .expect("start berth-operator");
        Self {
            child,
            log,
            metrics_port,
        }
    }

    fn metrics(&self) -> String {
        let mut stream =
            TcpStream::connect(("127.0.0.1", self.metrics_port)).expect("connect metrics");
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(60).collect();
            eprintln!("--- operator log (last lines) ---");
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// Polls `check` until it returns `Some`, failing with `what` after TIMEOUT.
fn wait_for<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let start = Instant::now();
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(start.elapsed() < TIMEOUT, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(500));
    }
}

fn condition<'a>(object: &'a Value, type_: &str) -> Option<&'a Value> {
    object["status"]["conditions"]
        .as_array()?
        .iter()
        .find(|c| c["type"] == type_)
}

fn condition_is(object: &Value, type_: &str, status: &str) -> bool {
    condition(object, type_).is_some_and(|c| c["status"] == status)
}

fn checksum(deployment: &Value) -> String {
    deployment["spec"]["template"]["metadata"]["annotations"]["berth.dev/config-checksum"]
        .as_str()
        .unwrap_or_default()
        .to_string()
}

#[test]
fn operator_lifecycle_against_a_real_control_plane() {
    let cluster = Cluster::up();
    cluster.ok("kubectl", &["create", "namespace", APP_NS]);

    // helm install: CRDs, RBAC and the operator Deployment (a kwok pod).
    cluster.ok(
        "helm",
        &[
            "install",
            "berth",
            "charts/berth",
            "-n",
            OPERATOR_NS,
            "--create-namespace",
            "--wait",
            "--timeout",
            "90s",
        ],
    );
    cluster.ok(
        "kubectl",
        &[
            "wait",
            "--for=condition=Established",
            "crd/registries.berth.dev",
            "--timeout=30s",
        ],
    );
    let operator = Operator::start(&cluster);

    // The example Registry gets every owned object and becomes Ready.
    let example =
        std::fs::read_to_string(workspace().join("examples/registry.yaml")).expect("example");
    let out = cluster.apply(&example);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for (kind, name) in [
        ("deployment", "example"),
        ("service", "example"),
        ("configmap", "example"),
        ("serviceaccount", "example"),
        ("role", "example-leases"),
        ("rolebinding", "example-leases"),
    ] {
        let object = wait_for(&format!("{kind}/{name}"), || cluster.get(kind, name));
        let owner = &object["metadata"]["ownerReferences"][0];
        assert_eq!(
            (owner["kind"].as_str(), owner["name"].as_str()),
            (Some("Registry"), Some("example"))
        );
    }
    assert!(
        cluster.get("poddisruptionbudget", "example").is_none(),
        "no PDB for one replica"
    );
    let registry = wait_for("Registry example Ready", || {
        cluster
            .get("registry", "example")
            .filter(|r| condition_is(r, "Ready", "True"))
    });
    assert_eq!(registry["status"]["readyReplicas"], 1);
    assert_eq!(
        registry["status"]["endpoint"],
        "http://example.apps.svc:5000"
    );
    assert_eq!(
        condition(&registry, "Degraded").expect("Degraded")["status"],
        "False"
    );
    let config = cluster.get("configmap", "example").expect("configmap");
    let config_yaml = config["data"]["config.yaml"].as_str().expect("config.yaml");
    assert!(
        config_yaml.contains("listen: 0.0.0.0:5000"),
        "{config_yaml}"
    );

    // A spec change rolls the Deployment: the config checksum changes.
    let before = checksum(&cluster.get("deployment", "example").expect("deployment"));
    cluster.ok(
        "kubectl",
        &[
            "patch",
            "-n",
            APP_NS,
            "registry",
            "example",
            "--type=merge",
            "-p",
            r#"{"spec":{"log":{"level":"debug"}}}"#,
        ],
    );
    wait_for("the Deployment to roll", || {
        let deployment = cluster.get("deployment", "example")?;
        (checksum(&deployment) != before).then_some(())
    });
    wait_for("Ready at generation 2", || {
        let r = cluster.get("registry", "example")?;
        (r["status"]["observedGeneration"] == 2 && condition_is(&r, "Ready", "True")).then_some(())
    });

    // The API server rejects an invalid spec with a message a person understands.
    let invalid = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: bad}\nspec: {replicas: 3}\n";
    let out = cluster.apply(invalid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid Registry was accepted");
    assert!(
        stderr.contains("more than one replica needs shared storage"),
        "{stderr}"
    );

    // A missing S3 Secret: Degraded with a reason, and a Warning Event.
    let missing_secret = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: s3}\nspec:\n  replicas: 2\n  storage:\n    s3: {bucket: b, credentialsSecret: {name: nope}}\n";
    assert!(cluster.apply(missing_secret).status.success());
    wait_for("Degraded=SecretMissing", || {
        let r = cluster.get("registry", "s3")?;
        condition(&r, "Degraded")
            .filter(|c| c["status"] == "True" && c["reason"] == "SecretMissing")
            .map(|_| ())
    });
    wait_for("a SecretMissing Event", || {
        let events = cluster.ok(
            "kubectl",
            &[
                "get",
                "events",
                "-n",
                APP_NS,
                "--field-selector",
                "involvedObject.name=s3",
                "-o",
                "json",
            ],
        );
        events.contains("SecretMissing").then_some(())
    });

    // SyncPolicies: folded into the rendered config; Accepted follows the Registry.
    let policy = "apiVersion: berth.dev/v1alpha1\nkind: SyncPolicy\nmetadata: {name: hub}\nspec:\n  registry: example\n  upstream: {url: 'https://registry-1.docker.io'}\n  pullThrough: true\n  repositories: ['library/*']\n";
    let orphan = "apiVersion: berth.dev/v1alpha1\nkind: SyncPolicy\nmetadata: {name: orphan}\nspec:\n  registry: nowhere\n  upstream: {url: 'https://quay.io'}\n  pollInterval: 10m\n";
    assert!(cluster.apply(policy).status.success());
    assert!(cluster.apply(orphan).status.success());
    wait_for("the policy in sync.yaml", || {
        let cm = cluster.get("configmap", "example")?;
        cm["data"]["sync.yaml"]
            .as_str()?
            .contains("https://registry-1.docker.io")
            .then_some(())
    });
    wait_for("hub Accepted=True", || {
        cluster
            .get("syncpolicy", "hub")
            .filter(|p| condition_is(p, "Accepted", "True"))
    });
    let orphan_status = wait_for("orphan Accepted=False", || {
        cluster
            .get("syncpolicy", "orphan")
            .filter(|p| condition_is(p, "Accepted", "False"))
    });
    assert_eq!(
        condition(&orphan_status, "Accepted").expect("Accepted")["reason"],
        "RegistryNotFound"
    );

    // The operator's metrics count reconciles.
    let metrics = operator.metrics();
    assert!(
        metrics.contains("berth_operator_reconciles_total{controller=\"registry\"}"),
        "{metrics}"
    );
    assert!(metrics.contains("berth_operator_leader 1"), "{metrics}");

    // Deleting the Registry removes what it owned (the garbage collector).
    cluster.ok(
        "kubectl",
        &["delete", "-n", APP_NS, "registry", "example", "--wait=true"],
    );
    for kind in ["deployment", "service", "configmap", "serviceaccount"] {
        wait_for(&format!("{kind}/example to go"), || {
            cluster.get(kind, "example").is_none().then_some(())
        });
    }

    // helm upgrade changes the operator Deployment; uninstall removes it and keeps the CRDs.
    cluster.ok(
        "helm",
        &[
            "upgrade",
            "berth",
            "charts/berth",
            "-n",
            OPERATOR_NS,
            "--set",
            "replicaCount=2",
        ],
    );
    let replicas = cluster.ok(
        "kubectl",
        &[
            "get",
            "-n",
            OPERATOR_NS,
            "deployment",
            "berth",
            "-o",
            "jsonpath={.spec.replicas}",
        ],
    );
    assert_eq!(replicas, "2");
    cluster.ok("helm", &["uninstall", "berth", "-n", OPERATOR_NS, "--wait"]);
    let gone = cluster.run(
        "kubectl",
        &["get", "-n", OPERATOR_NS, "deployment", "berth"],
        None,
    );
    assert!(
        !gone.status.success(),
        "the operator Deployment survived uninstall"
    );
    cluster.ok("kubectl", &["get", "crd", "registries.berth.dev"]);
    drop(operator);
}
