//! What goes into each image: the two components, their names, and the
//! files, user and run configuration of their root filesystems.
//!
//! Names, the data directory and the port come from the operator, so the
//! images this command builds are the ones a `Registry` and the chart run by
//! default. Depends on nothing else in this crate but [`layer::Entry`].

use berth_operator::crd::registry::DEFAULT_IMAGE;
use berth_operator::render::CONTAINER_PORT;
use berth_operator::render::config::DATA_DIR;
use clap::ValueEnum;

use crate::layer::Entry;

/// Where the project's source lives (the `org.opencontainers.image.source`
/// label).
pub const SOURCE: &str = "https://github.com/berth-dev/berth";

/// The non-root uid and gid both images run as. It matches the pods'
/// `runAsUser` (operator/src/render/deployment.rs and the chart), and is
/// numeric in the config so Kubernetes can check `runAsNonRoot` without
/// reading `/etc/passwd`.
pub const UID: u64 = 65532;

/// Where the images' CA bundle lives; `SSL_CERT_FILE` points at it, so the
/// S3 client (rustls-native-certs) and kube find it without probing.
pub const CA_BUNDLE: &str = "/etc/ssl/certs/ca-certificates.crt";

/// The port of the operator's `/metrics`, `/healthz` and `/readyz` (its
/// `--metrics-addr` default and the chart's `metrics.port`).
const OPERATOR_METRICS_PORT: u16 = 8080;

/// One of the project's two images.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, ValueEnum)]
pub enum Component {
    /// `berth-registry`: the registry server.
    Registry,
    /// `berth-operator`: the Kubernetes operator.
    Operator,
}

impl Component {
    pub const ALL: [Component; 2] = [Component::Registry, Component::Operator];

    /// The binary, which is also the image's repository name under the
    /// prefix.
    pub fn name(self) -> &'static str {
        match self {
            Component::Registry => "berth-registry",
            Component::Operator => "berth-operator",
        }
    }

    /// The `org.opencontainers.image.description` label.
    pub fn description(self) -> &'static str {
        match self {
            Component::Registry => {
                "Berth: a stateless OCI Distribution v1.1 registry over a local directory or S3"
            }
            Component::Operator => {
                "Berth: the Kubernetes operator that runs Registry and SyncPolicy resources"
            }
        }
    }

    /// Where the binary sits in the image; the whole entrypoint.
    pub fn entrypoint(self) -> String {
        format!("/usr/local/bin/{}", self.name())
    }

    /// Default arguments, replaced by whatever a pod's `args` (or `docker
    /// run IMAGE ARGS`) says. The registry's make a bare `run` serve every
    /// interface from the image's own data directory; the operator's
    /// defaults are in its flags already. Arguments rather than `BERTH_*`
    /// variables, because variables would outrank the config file the
    /// operator mounts.
    pub fn cmd(self) -> Vec<String> {
        match self {
            Component::Registry => vec![
                "--listen".into(),
                format!("0.0.0.0:{CONTAINER_PORT}"),
                "--root".into(),
                DATA_DIR.into(),
            ],
            Component::Operator => Vec::new(),
        }
    }

    /// `ExposedPorts` keys.
    pub fn ports(self) -> Vec<String> {
        match self {
            Component::Registry => vec![format!("{CONTAINER_PORT}/tcp")],
            Component::Operator => vec![format!("{OPERATOR_METRICS_PORT}/tcp")],
        }
    }

    /// The image's root filesystem: the static binary, a CA bundle, a
    /// `passwd`/`group` naming the non-root user, `/tmp`, and for the
    /// registry its data directory owned by that user (a volume replaces it
    /// in Kubernetes; a plain run writes there).
    pub fn rootfs(self, binary: Vec<u8>, ca_bundle: Vec<u8>) -> Vec<Entry> {
        let mut entries = vec![
            Entry::file(&self.entrypoint(), 0o755, binary),
            Entry::file(CA_BUNDLE, 0o644, ca_bundle),
            Entry::file("/etc/passwd", 0o644, passwd().into_bytes()),
            Entry::file("/etc/group", 0o644, group().into_bytes()),
            Entry::dir("/tmp", 0o1777, 0),
        ];
        if self == Component::Registry {
            entries.push(Entry::dir(DATA_DIR, 0o755, UID));
        }
        entries
    }

    /// The repository prefix of the operator's default registry image:
    /// `ghcr.io/berth-dev` for `ghcr.io/berth-dev/berth-registry:<version>`.
    pub fn default_prefix() -> &'static str {
        DEFAULT_IMAGE
            .rsplit_once('/')
            .map_or(DEFAULT_IMAGE, |(prefix, _)| prefix)
    }
}

fn passwd() -> String {
    format!(
        "root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:{UID}:{UID}:nonroot:/nonexistent:/sbin/nologin\n"
    )
}

fn group() -> String {
    format!("root:x:0:\nnonroot:x:{UID}:\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The command's default names are what the operator and the chart run.
    #[test]
    fn default_names_are_the_operator_and_chart_defaults() {
        let prefix = Component::default_prefix();
        let version = env!("CARGO_PKG_VERSION");
        assert_eq!(
            format!("{prefix}/{}:{version}", Component::Registry.name()),
            DEFAULT_IMAGE
        );
        let values = include_str!("../../charts/berth/values.yaml");
        let operator = format!("repository: {prefix}/{}", Component::Operator.name());
        assert!(values.contains(&operator), "values.yaml lacks `{operator}`");
        let chart = include_str!("../../charts/berth/Chart.yaml");
        let app_version = format!("appVersion: \"{version}\"");
        assert!(
            chart.contains(&app_version),
            "Chart.yaml lacks `{app_version}`"
        );
    }

    #[test]
    fn the_registry_serves_its_data_directory_on_every_interface() {
        assert_eq!(
            Component::Registry.cmd(),
            ["--listen", "0.0.0.0:5000", "--root", "/var/lib/berth"]
        );
        assert_eq!(Component::Registry.ports(), ["5000/tcp"]);
    }
}
