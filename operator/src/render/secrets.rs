//! The Secrets a Registry's pods read: which, what for (naming the spec
//! field, for messages a person can act on), and which keys must be there.
//! The reconciler fetches each one before applying anything, so a missing
//! Secret or key becomes a `Degraded` condition and an Event instead of pods
//! stuck in `ContainerCreating` or `CreateContainerConfigError`.
//!
//! Their `resourceVersion`s are part of the config checksum
//! ([`super::config::checksum`]), so replacing a Secret's content (a renewed
//! certificate, rotated S3 keys, a new htpasswd file) rolls the pods. The
//! resourceVersion rather than a hash of the content: nothing derived from
//! secret bytes ends up in a pod annotation that anyone who can read pods
//! sees (a hash of a short password can be brute-forced). The cost is a
//! roll when only a Secret's labels or annotations change, which is rare
//! and harmless (rolling updates keep every replica serving). The operator
//! does not watch Secrets (that would take `list`/`watch` on every Secret in
//! the cluster): it looks at them on each reconcile, every 30 s while one is
//! missing and every 5 minutes otherwise, so a rotation rolls the pods
//! within 5 minutes, or at once when the Registry changes.

use std::collections::BTreeMap;

use crate::crd::Registry;

/// Where a Registry needs a Secret, and the keys it reads from it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SecretUse {
    /// Secret name, in the Registry's namespace.
    pub name: String,
    /// Keys the pods read; each must exist.
    pub keys: Vec<String>,
    /// What for, naming the spec field.
    pub purpose: &'static str,
}

/// `resourceVersion` of each referenced Secret, by name.
pub type SecretVersions = BTreeMap<String, String>;

/// Every Secret `registry` references, in a stable order. One Secret may be
/// named twice (say, for TLS and for auth); each use is checked on its own.
pub fn uses(registry: &Registry) -> Vec<SecretUse> {
    let spec = &registry.spec;
    let mut uses = Vec::new();
    if let Some(creds) = spec
        .storage
        .s3
        .as_ref()
        .and_then(|s3| s3.credentials_secret.as_ref())
    {
        uses.push(SecretUse {
            name: creds.name.clone(),
            keys: vec![
                creds.access_key_id_key.clone(),
                creds.secret_access_key_key.clone(),
            ],
            purpose: "S3 credentials, spec.storage.s3.credentialsSecret",
        });
    }
    if let Some(tls) = &spec.tls {
        uses.push(SecretUse {
            name: tls.secret_name.clone(),
            keys: vec!["tls.crt".into(), "tls.key".into()],
            purpose: "TLS certificate, spec.tls.secretName",
        });
    }
    if let Some(auth) = &spec.auth {
        uses.push(SecretUse {
            name: auth.htpasswd_secret.name.clone(),
            keys: vec![auth.htpasswd_secret.key.clone()],
            purpose: "htpasswd file, spec.auth.htpasswdSecret",
        });
    }
    uses
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{registry, s3_registry, secured};

    #[test]
    fn no_secrets_by_default() {
        assert!(uses(&registry()).is_empty());
    }

    #[test]
    fn s3_tls_and_htpasswd_secrets_with_their_keys() {
        let found = uses(&secured(s3_registry(2)));
        let summary: Vec<_> = found
            .iter()
            .map(|u| (u.name.as_str(), u.keys.join(",")))
            .collect();
        assert_eq!(
            summary,
            [
                ("s3-creds", "accessKeyId,secretAccessKey".to_string()),
                ("demo-tls", "tls.crt,tls.key".to_string()),
                ("demo-users", "htpasswd".to_string()),
            ]
        );
        assert!(found[1].purpose.contains("spec.tls.secretName"));
    }
}
