//! e2e for the operator against the real local control plane
//! (`e2e/cluster`): the chart installed with helm, two real
//! `berth-operator` binaries as host processes with the chart's
//! ServiceAccount token (so the chart's RBAC is what is tested) electing a
//! leader, kubectl as the user. One cluster serves the whole scenario,
//! because starting one takes about 15 s (and nextest runs each test
//! function in its own process, so test functions could not share one);
//! each step is a function that says what it proves.
//!
//! Needs `e2e/tools/install.sh kube etcd kwok helm` and `source
//! e2e/tools/env.sh`; a missing tool fails the test, never skips it.
#![allow(clippy::unwrap_used, clippy::expect_used)] // tests: a panic is the failure report

use std::io::{Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use berth_e2e::{is_live, poll_until, start_on_free_port, tool, workspace_bin};
use berth_registry::config::{Overrides, load};
use serde_json::Value;

const TIMEOUT: Duration = Duration::from_secs(90);
const OPERATOR_NS: &str = "berth-system";
const APP_NS: &str = "apps";

fn workspace() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..")
}

fn operator_bin() -> PathBuf {
    workspace_bin("berth-operator")
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

/// Leader election timings of the e2e operators: short, so a takeover
/// after a kill takes seconds (production defaults: 15s, 10s, 2s).
const LEASE_FLAGS: [&str; 6] = [
    "--lease-duration",
    "4s",
    "--renew-deadline",
    "3s",
    "--retry-period",
    "1s",
];

/// An operator process; killed on drop, its log printed when the test fails.
struct Operator {
    identity: &'static str,
    child: Child,
    log: PathBuf,
    metrics_port: u16,
}

impl Operator {
    /// Starts `berth-operator` as `identity`, with the chart's
    /// ServiceAccount token.
    fn start(cluster: &Cluster, identity: &'static str) -> Self {
        let sa_kubeconfig = cluster.dir.path().join("operator.kubeconfig");
        if !sa_kubeconfig.exists() {
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
        }
        let log = cluster.dir.path().join(format!("{identity}.log"));
        // /healthz answers once the metrics port is bound, before the
        // Lease is won; an operator that cannot bind it exits.
        let (child, metrics) = start_on_free_port(
            "berth-operator",
            |addr| {
                Command::new(operator_bin())
                    .env("KUBECONFIG", &sa_kubeconfig)
                    .env("RUST_LOG", "info,berth_operator=debug")
                    .args(["--metrics-addr", &addr.to_string()])
                    .args(["--lease-namespace", OPERATOR_NS, "--identity", identity])
                    .args(LEASE_FLAGS)
                    .stdout(Stdio::null())
                    .stderr(std::fs::File::create(&log).expect("log file"))
                    .spawn()
                    .expect("start berth-operator")
            },
            |addr| is_live(addr, "/healthz"),
        );
        let metrics_port = metrics.port();
        Self {
            identity,
            child,
            log,
            metrics_port,
        }
    }

    /// `/metrics`; empty while the endpoint is not up yet.
    fn metrics(&self) -> String {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.metrics_port)) else {
            return String::new();
        };
        stream
            .write_all(b"GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n")
            .expect("request");
        let mut response = String::new();
        stream.read_to_string(&mut response).expect("response");
        response
    }

    /// The value of the sample `series` (name and labels), 0 when absent.
    fn sample(&self, series: &str) -> u64 {
        self.metrics()
            .lines()
            .find_map(|line| line.strip_prefix(series)?.strip_prefix(' '))
            .map_or(0, |n| n.trim().parse().expect("an integer sample"))
    }

    fn leads(&self) -> bool {
        self.sample("berth_operator_leader") == 1
    }

    /// Reconciles of Registries this process ran (0 while it stood by).
    fn registry_reconciles(&self) -> u64 {
        self.sample("berth_operator_reconciles_total{controller=\"registry\"}")
    }

    /// SIGKILL: no chance to release the Lease, as in a crash.
    fn kill(&mut self) {
        self.child.kill().expect("kill");
        self.child.wait().expect("wait");
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        if std::thread::panicking() {
            let log = std::fs::read_to_string(&self.log).unwrap_or_default();
            let tail: Vec<_> = log.lines().rev().take(60).collect();
            eprintln!("--- operator {} log (last lines) ---", self.identity);
            for line in tail.iter().rev() {
                eprintln!("{line}");
            }
        }
    }
}

/// Polls `check` every half second until it returns `Some`, failing with
/// `what` after TIMEOUT.
fn wait_for<T>(what: &str, check: impl FnMut() -> Option<T>) -> T {
    poll_until(what, TIMEOUT, Duration::from_millis(500), check)
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

fn patch(cluster: &Cluster, kind: &str, name: &str, patch: &str) {
    cluster.ok(
        "kubectl",
        &[
            "patch",
            "-n",
            APP_NS,
            kind,
            name,
            "--type=merge",
            "-p",
            patch,
        ],
    );
}

fn apply_ok(cluster: &Cluster, yaml: &str) {
    let out = cluster.apply(yaml);
    assert!(
        out.status.success(),
        "kubectl apply: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// Waits until Registry `name` has condition `type_` with `status` and
/// `reason`; returns the Registry.
fn wait_condition(cluster: &Cluster, name: &str, type_: &str, status: &str, reason: &str) -> Value {
    wait_for(
        &format!("Registry {name}: {type_}={status} ({reason})"),
        || {
            let registry = cluster.get("registry", name)?;
            condition(&registry, type_)
                .is_some_and(|c| c["status"] == status && c["reason"] == reason)
                .then_some(registry)
        },
    )
}

/// Waits for an Event about `name` with `reason`; returns its note.
fn wait_event(cluster: &Cluster, name: &str, reason: &str) -> String {
    wait_for(&format!("a {reason} Event about {name}"), || {
        let events = cluster.ok(
            "kubectl",
            &[
                "get",
                "events.events.k8s.io",
                "-n",
                APP_NS,
                "--field-selector",
                &format!("regarding.name={name},reason={reason}"),
                "-o",
                "json",
            ],
        );
        let events: Value = serde_json::from_str(&events).expect("json");
        events["items"][0]["note"].as_str().map(String::from)
    })
}

fn lease_holder(cluster: &Cluster) -> (String, i64) {
    let lease = cluster.ok(
        "kubectl",
        &[
            "get",
            "lease",
            "-n",
            OPERATOR_NS,
            "berth-operator",
            "-o",
            "json",
        ],
    );
    let lease: Value = serde_json::from_str(&lease).expect("json");
    let spec = &lease["spec"];
    (
        spec["holderIdentity"].as_str().unwrap_or_default().into(),
        spec["leaseTransitions"].as_i64().unwrap_or_default(),
    )
}

/// A stand-in for the Prometheus Operator's ServiceMonitor CRD (the real
/// one is not reachable offline): same group, version, kind and scope,
/// which is all the operator relies on.
const SERVICE_MONITOR_CRD: &str = "\
apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata: {name: servicemonitors.monitoring.coreos.com}
spec:
  group: monitoring.coreos.com
  scope: Namespaced
  names: {kind: ServiceMonitor, listKind: ServiceMonitorList, plural: servicemonitors, singular: servicemonitor}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema: {type: object, x-kubernetes-preserve-unknown-fields: true}
";

/// TLS, htpasswd auth, GC with retention and an upload max age; its two
/// Secrets are created later in the test.
const SECURE_REGISTRY: &str = "\
apiVersion: berth.dev/v1alpha1
kind: Registry
metadata: {name: secure}
spec:
  tls: {secretName: secure-tls}
  auth: {realm: team, htpasswdSecret: {name: secure-users}}
  gc:
    enabled: true
    interval: 30m
    retention:
    - {repositories: 'team/*', keepTags: ['^v[0-9]+'], keepLast: 10, keepWithin: 720h, untaggedAfter: 1d}
  uploads: {maxAge: 12h}
";

/// Everything the operator does, against one control plane (starting one
/// takes about 15 s), with two operator processes of which one leads.
/// Steps overlap where the operator retries on its own (a user error is
/// retried every 30 s): problems are created early and checked late.
#[test]
fn operator_against_a_real_control_plane() {
    let cluster = Cluster::up();
    cluster.ok("kubectl", &["create", "namespace", APP_NS]);
    // The API server's Pod Security admission then refuses registry pods
    // that do not meet the "restricted" standard (the ReplicaSet could not
    // create them, and nothing would become Ready).
    cluster.ok(
        "kubectl",
        &[
            "label",
            "namespace",
            APP_NS,
            "pod-security.kubernetes.io/enforce=restricted",
        ],
    );
    install_chart(&cluster);
    let mut leader = Operator::start(&cluster, "operator-a");
    wait_for("operator-a to lead", || leader.leads().then_some(()));
    let standby = Operator::start(&cluster, "operator-b");

    example_gets_every_owned_object_and_becomes_ready(&cluster);
    missing_secrets_degrade_with_a_message(&cluster);
    // Fixed now; the operator's own retry picks it up while other steps run.
    create_secure_secrets(&cluster);
    a_spec_change_rolls_and_a_missing_service_monitor_api_degrades(&cluster);
    cluster.ok_with("kubectl", &["apply", "-f", "-"], Some(SERVICE_MONITOR_CRD));
    the_api_server_validates_specs(&cluster);
    autoscaling_scales_to_the_minimum(&cluster);
    sync_policies_are_folded_in(&cluster);
    tls_auth_and_gc_reach_the_pods(&cluster);
    the_service_monitor_appears_with_its_api(&cluster);

    only_the_leader_reconciled(&cluster, &leader, &standby);
    leader.kill();
    let mut standby = standby;
    the_standby_takes_over_and_reconciles(&cluster, &standby);
    let successor = a_leader_that_loses_its_lease_exits(&cluster, &mut standby);

    deleting_the_registry_removes_what_it_owned(&cluster);
    helm_upgrade_and_uninstall(&cluster);
    drop(successor);
}

/// helm install: CRDs, RBAC and the operator Deployment (a kwok pod; the
/// operators under test are host processes with its ServiceAccount).
fn install_chart(cluster: &Cluster) {
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
}

fn example_gets_every_owned_object_and_becomes_ready(cluster: &Cluster) {
    let example =
        std::fs::read_to_string(workspace().join("examples/registry.yaml")).expect("example");
    apply_ok(cluster, &example);
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
    let registry = wait_condition(cluster, "example", "Ready", "True", "Available");
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
}

/// Missing Secrets: nothing is applied, Degraded says which Secret, what
/// for and where, and a Warning Event says the same.
fn missing_secrets_degrade_with_a_message(cluster: &Cluster) {
    let s3 = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: s3}\nspec:\n  replicas: 2\n  storage:\n    s3: {bucket: b, credentialsSecret: {name: nope}}\n";
    apply_ok(cluster, s3);
    apply_ok(cluster, SECURE_REGISTRY);
    let registry = wait_condition(cluster, "secure", "Degraded", "True", "SecretMissing");
    let expected = "Secret \"secure-tls\" (TLS certificate, spec.tls.secretName) does not exist in namespace \"apps\"";
    assert_eq!(
        condition(&registry, "Degraded").expect("Degraded")["message"],
        expected
    );
    assert_eq!(
        condition(&registry, "Ready").expect("Ready")["status"],
        "False"
    );
    assert_eq!(wait_event(cluster, "secure", "SecretMissing"), expected);
    assert!(cluster.get("deployment", "secure").is_none());
    let s3 = wait_condition(cluster, "s3", "Degraded", "True", "SecretMissing");
    let message = condition(&s3, "Degraded").expect("Degraded")["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap_or_default()
            .contains("spec.storage.s3.credentialsSecret"),
        "{message}"
    );
}

/// A real certificate pair (the cluster's own component certificate) and
/// an htpasswd file with one bcrypt entry.
fn create_secure_secrets(cluster: &Cluster) {
    let pki = cluster.dir.path().join("pki");
    let cert = format!("--cert={}", pki.join("components.crt").display());
    let key = format!("--key={}", pki.join("components.key").display());
    cluster.ok(
        "kubectl",
        &[
            "create",
            "secret",
            "tls",
            "secure-tls",
            "-n",
            APP_NS,
            &cert,
            &key,
        ],
    );
    cluster.ok(
        "kubectl",
        &[
            "create",
            "secret",
            "generic",
            "secure-users",
            "-n",
            APP_NS,
            "--from-literal=htpasswd=ci:$2y$05$Tq5sFzM8aVuy3Ad5cMvS2e4S7WmX6H1xqz3oQd4b1l0yG8c1w6y2K",
        ],
    );
}

/// A spec change rolls the Deployment (the config checksum changes). The
/// same change enables the ServiceMonitor while its API is missing: the
/// registry stays Ready, Degraded says what to install.
fn a_spec_change_rolls_and_a_missing_service_monitor_api_degrades(cluster: &Cluster) {
    let before = checksum(&cluster.get("deployment", "example").expect("deployment"));
    patch(
        cluster,
        "registry",
        "example",
        r#"{"spec":{"log":{"level":"debug"},"monitoring":{"serviceMonitor":{"enabled":true}}}}"#,
    );
    wait_for("the Deployment to roll", || {
        let deployment = cluster.get("deployment", "example")?;
        (checksum(&deployment) != before).then_some(())
    });
    let registry = wait_condition(
        cluster,
        "example",
        "Degraded",
        "True",
        "ServiceMonitorUnavailable",
    );
    let message = condition(&registry, "Degraded").expect("Degraded")["message"].clone();
    assert!(
        message
            .as_str()
            .unwrap_or_default()
            .contains("install the Prometheus Operator's CRDs"),
        "{message}"
    );
    let registry = wait_for("Ready at generation 2", || {
        let r = cluster.get("registry", "example")?;
        (r["status"]["observedGeneration"] == 2 && condition_is(&r, "Ready", "True")).then_some(r)
    });
    assert_eq!(
        condition(&registry, "Degraded").expect("Degraded")["reason"],
        "ServiceMonitorUnavailable",
        "Ready and Degraded at once: the registry serves, its monitoring is missing"
    );
    wait_event(cluster, "example", "ServiceMonitorUnavailable");
}

/// The API server rejects invalid specs with a message a person
/// understands, and accepts every example (a server-side dry run).
fn the_api_server_validates_specs(cluster: &Cluster) {
    for example in ["examples/registry.yaml", "examples/registry-s3-tls.yaml"] {
        cluster.ok(
            "kubectl",
            &["apply", "-n", APP_NS, "--dry-run=server", "-f", example],
        );
    }
    let invalid = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: bad}\nspec: {replicas: 3}\n";
    let out = cluster.apply(invalid);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "an invalid Registry was accepted");
    assert!(
        stderr.contains("more than one replica needs shared storage"),
        "{stderr}"
    );
    let bad_duration = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: bad}\nspec: {gc: {interval: soon}}\n";
    let out = cluster.apply(bad_duration);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "gc.interval: soon was accepted");
    assert!(stderr.contains("spec.gc.interval"), "{stderr}");
}

/// The HPA owns the replica count: with no metrics server it still raises
/// the Deployment to minReplicas (the operator leaves `replicas` out of its
/// apply, so it does not fight the HPA). Replicated, so it gets a PDB.
fn autoscaling_scales_to_the_minimum(cluster: &Cluster) {
    let scaled = "apiVersion: berth.dev/v1alpha1\nkind: Registry\nmetadata: {name: scaled}\nspec:\n  storage: {s3: {bucket: b}}\n  autoscaling: {minReplicas: 2, maxReplicas: 4}\n";
    apply_ok(cluster, scaled);
    let hpa = wait_for("hpa/scaled", || cluster.get("hpa", "scaled"));
    assert_eq!(hpa["spec"]["scaleTargetRef"]["name"], "scaled");
    assert_eq!(hpa["spec"]["minReplicas"], 2);
    assert!(cluster.get("poddisruptionbudget", "scaled").is_some());
    wait_for("the HPA to scale the Deployment to 2", || {
        let deployment = cluster.get("deployment", "scaled")?;
        (deployment["spec"]["replicas"] == 2).then_some(())
    });
    wait_for("Registry scaled Ready with 2 replicas", || {
        let r = cluster.get("registry", "scaled")?;
        (r["status"]["readyReplicas"] == 2 && condition_is(&r, "Ready", "True")).then_some(())
    });
}

fn sync_policies_are_folded_in(cluster: &Cluster) {
    let policy = "apiVersion: berth.dev/v1alpha1\nkind: SyncPolicy\nmetadata: {name: hub}\nspec:\n  registry: example\n  upstream: {url: 'https://registry-1.docker.io'}\n  pullThrough: true\n  repositories: ['library/*']\n";
    let orphan = "apiVersion: berth.dev/v1alpha1\nkind: SyncPolicy\nmetadata: {name: orphan}\nspec:\n  registry: nowhere\n  upstream: {url: 'https://quay.io'}\n  pollInterval: 10m\n";
    apply_ok(cluster, policy);
    apply_ok(cluster, orphan);
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
}

/// Once its Secrets exist (created earlier; picked up by the operator's
/// retry), `secure` is applied: Secrets mounted read-only, HTTPS probes and
/// endpoint, and tls, auth, gc and uploads in the rendered config.
fn tls_auth_and_gc_reach_the_pods(cluster: &Cluster) {
    let registry = wait_condition(cluster, "secure", "Ready", "True", "Available");
    assert_eq!(
        condition(&registry, "Degraded").expect("Degraded")["status"],
        "False"
    );
    assert_eq!(
        registry["status"]["endpoint"],
        "https://secure.apps.svc:5000"
    );
    wait_event(cluster, "secure", "Recovered");
    let deployment = cluster.get("deployment", "secure").expect("deployment");
    let pod = &deployment["spec"]["template"]["spec"];
    let volumes = pod["volumes"].as_array().expect("volumes");
    let secret_of = |name: &str| {
        volumes
            .iter()
            .find(|v| v["name"] == name)
            .map(|v| v["secret"]["secretName"].clone())
    };
    assert_eq!(secret_of("tls"), Some("secure-tls".into()));
    assert_eq!(secret_of("auth"), Some("secure-users".into()));
    let container = &pod["containers"][0];
    let mounts = container["volumeMounts"].as_array().expect("mounts");
    for (name, path) in [("tls", "/etc/berth/tls"), ("auth", "/etc/berth/auth")] {
        let mount = mounts.iter().find(|m| m["name"] == name).expect(name);
        assert_eq!(
            (&mount["mountPath"], &mount["readOnly"]),
            (&path.into(), &true.into())
        );
    }
    assert_eq!(container["readinessProbe"]["httpGet"]["scheme"], "HTTPS");
    // The registry's own loader reads what the pods would.
    let config = cluster.get("configmap", "secure").expect("configmap");
    let file = cluster.dir.path().join("secure-config.yaml");
    std::fs::write(
        &file,
        config["data"]["config.yaml"].as_str().expect("config.yaml"),
    )
    .expect("write config");
    let config = load(Some(&file), [], &Overrides::default()).expect("a valid registry config");
    let tls = config.tls.expect("tls");
    assert_eq!(tls.cert_file, Path::new("/etc/berth/tls/tls.crt"));
    let auth = config.auth.expect("auth");
    assert_eq!(auth.realm, "team");
    assert_eq!(
        auth.htpasswd.expect("htpasswd").path,
        Path::new("/etc/berth/auth/htpasswd")
    );
    assert!(config.gc.enabled);
    assert_eq!(config.gc.interval, Duration::from_secs(1800));
    assert_eq!(config.gc.retention[0].keep_last, Some(10));
    assert_eq!(config.uploads.max_age, Duration::from_secs(12 * 3600));
}

/// With the CRD installed, the operator's retry applies the ServiceMonitor
/// (the chart's RBAC allows it) and Degraded clears.
fn the_service_monitor_appears_with_its_api(cluster: &Cluster) {
    let monitor = wait_for("servicemonitor/example", || {
        cluster.get("servicemonitors.monitoring.coreos.com", "example")
    });
    assert_eq!(monitor["spec"]["endpoints"][0]["port"], "http");
    assert_eq!(
        monitor["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
        "example"
    );
    assert_eq!(monitor["metadata"]["ownerReferences"][0]["name"], "example");
    wait_condition(cluster, "example", "Degraded", "False", "AsExpected");
}

/// All this time the Lease named operator-a, and operator-b, though
/// running and watching the same resources, reconciled nothing.
fn only_the_leader_reconciled(cluster: &Cluster, leader: &Operator, standby: &Operator) {
    assert_eq!(lease_holder(cluster).0, "operator-a");
    assert!(leader.leads());
    assert!(leader.registry_reconciles() > 5, "{}", leader.metrics());
    let metrics = standby.metrics();
    assert!(metrics.contains("\nberth_operator_leader 0\n"), "{metrics}");
    assert_eq!(standby.registry_reconciles(), 0, "{metrics}");
}

/// operator-a was killed (no Lease release): operator-b takes over once
/// the Lease expires and reconciles a change.
fn the_standby_takes_over_and_reconciles(cluster: &Cluster, standby: &Operator) {
    let (_, transitions) = lease_holder(cluster);
    let before = checksum(&cluster.get("deployment", "example").expect("deployment"));
    patch(
        cluster,
        "registry",
        "example",
        r#"{"spec":{"log":{"level":"warn"}}}"#,
    );
    let started = Instant::now();
    wait_for("operator-b to lead", || standby.leads().then_some(()));
    eprintln!("operator-b took over after {:?}", started.elapsed());
    let (holder, after) = lease_holder(cluster);
    assert_eq!(holder, "operator-b");
    assert_eq!(after, transitions + 1, "one takeover");
    wait_for("operator-b to roll the Deployment", || {
        let deployment = cluster.get("deployment", "example")?;
        (checksum(&deployment) != before).then_some(())
    });
    wait_for("Ready at generation 3", || {
        let r = cluster.get("registry", "example")?;
        (r["status"]["observedGeneration"] == 3 && condition_is(&r, "Ready", "True")).then_some(())
    });
    assert!(standby.registry_reconciles() > 0);
}

/// Someone else writes the Lease (as after a partition, when a standby
/// took over): the leader sees it lost and exits, non-zero, rather than
/// idling on as a healthy-looking process nobody restarts; a new operator
/// leads once the intruder's Lease expires.
fn a_leader_that_loses_its_lease_exits(cluster: &Cluster, leader: &mut Operator) -> Operator {
    cluster.ok(
        "kubectl",
        &[
            "patch",
            "lease",
            "-n",
            OPERATOR_NS,
            "berth-operator",
            "--type",
            "merge",
            "-p",
            r#"{"spec":{"holderIdentity":"intruder"}}"#,
        ],
    );
    let status = wait_for("operator-b to exit", || {
        leader.child.try_wait().expect("try_wait")
    });
    assert!(!status.success(), "operator-b exited with {status}");
    let log = std::fs::read_to_string(&leader.log).unwrap_or_default();
    assert!(log.contains("lost its leader Lease"), "{log}");
    let successor = Operator::start(cluster, "operator-c");
    wait_for("operator-c to lead", || successor.leads().then_some(()));
    assert_eq!(lease_holder(cluster).0, "operator-c");
    successor
}

/// The garbage collector removes what the Registry owned, the
/// ServiceMonitor included.
fn deleting_the_registry_removes_what_it_owned(cluster: &Cluster) {
    cluster.ok(
        "kubectl",
        &["delete", "-n", APP_NS, "registry", "example", "--wait=true"],
    );
    for kind in [
        "deployment",
        "service",
        "configmap",
        "serviceaccount",
        "servicemonitors.monitoring.coreos.com",
    ] {
        wait_for(&format!("{kind}/example to go"), || {
            cluster.get(kind, "example").is_none().then_some(())
        });
    }
}

/// helm upgrade changes the operator Deployment; uninstall removes it and
/// keeps the CRDs.
fn helm_upgrade_and_uninstall(cluster: &Cluster) {
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
}
