//! The operator's one error type. Each variant knows its metric label, and
//! whether the user (not a retry) has to fix it.

use thiserror::Error;

use crate::render::RenderError;

/// Everything a reconcile or the leader election can fail with.
#[derive(Debug, Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Render(#[from] RenderError),
    #[error("Secret {name:?} ({purpose}) does not exist in namespace {namespace:?}")]
    SecretMissing {
        name: String,
        namespace: String,
        /// What the Registry uses it for, naming the spec field.
        purpose: &'static str,
    },
    #[error("Secret {name:?} ({purpose}) has no key {key:?}")]
    SecretKeyMissing {
        name: String,
        key: String,
        purpose: &'static str,
    },
    #[error(
        "spec.monitoring.serviceMonitor.enabled is true, but this cluster has no \
         ServiceMonitor API (monitoring.coreos.com/v1): install the Prometheus Operator's \
         CRDs or disable it; everything else is applied"
    )]
    ServiceMonitorUnavailable,
    #[error("the operator lost its leader Lease")]
    LeaseLost,
    #[error("cannot serve the metrics endpoint: {0}")]
    Serve(#[from] std::io::Error),
}

impl Error {
    /// The `error` label of `berth_operator_reconcile_errors_total`.
    pub fn metric_label(&self) -> &'static str {
        match self {
            Self::Kube(_) => "kube",
            Self::Render(RenderError::InvalidConfig(_)) => "invalid_spec",
            Self::Render(RenderError::MissingMetadata) => "missing_metadata",
            Self::SecretMissing { .. } => "secret_missing",
            Self::SecretKeyMissing { .. } => "secret_key_missing",
            Self::ServiceMonitorUnavailable => "service_monitor_unavailable",
            Self::LeaseLost => "lease_lost",
            Self::Serve(_) => "serve",
        }
    }

    /// Errors in the user's spec or cluster: reported as a `Degraded`
    /// condition and a Warning Event, retried slowly.
    pub fn is_user_error(&self) -> bool {
        matches!(
            self,
            Self::SecretMissing { .. }
                | Self::SecretKeyMissing { .. }
                | Self::ServiceMonitorUnavailable
                | Self::Render(RenderError::InvalidConfig(_))
        )
    }

    /// The PascalCase reason for conditions and Events.
    pub fn reason(&self) -> &'static str {
        match self {
            Self::SecretMissing { .. } => "SecretMissing",
            Self::SecretKeyMissing { .. } => "SecretKeyMissing",
            Self::ServiceMonitorUnavailable => "ServiceMonitorUnavailable",
            Self::Render(RenderError::InvalidConfig(_)) => "InvalidSpec",
            _ => "ReconcileError",
        }
    }
}

/// The operator's result type.
pub type Result<T, E = Error> = std::result::Result<T, E>;

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn user_errors_have_their_own_labels_and_reasons() {
        let missing = Error::SecretMissing {
            name: "creds".into(),
            namespace: "apps".into(),
            purpose: "S3 credentials, spec.storage.s3.credentialsSecret",
        };
        assert_eq!(
            missing.to_string(),
            "Secret \"creds\" (S3 credentials, spec.storage.s3.credentialsSecret) \
             does not exist in namespace \"apps\""
        );
        assert!(missing.is_user_error());
        assert_eq!(
            (missing.metric_label(), missing.reason()),
            ("secret_missing", "SecretMissing")
        );
        let invalid = Error::Render(RenderError::InvalidConfig("x".into()));
        assert_eq!(
            (invalid.metric_label(), invalid.reason()),
            ("invalid_spec", "InvalidSpec")
        );
        assert!(!Error::LeaseLost.is_user_error());
    }
}
