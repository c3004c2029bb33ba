//! The registry pods' identity: a ServiceAccount, and a Role with its
//! RoleBinding that allow exactly what the GC Lease needs.

use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{PolicyRule, Role, RoleBinding, RoleRef, Subject};
use kube::ResourceExt;

use super::{RenderError, owned_meta};
use crate::crd::Registry;

/// The ServiceAccount named like the Registry; its token stays mounted
/// because the GC Lease client needs it.
pub fn service_account(registry: &Registry) -> Result<ServiceAccount, RenderError> {
    Ok(ServiceAccount {
        metadata: owned_meta(registry, registry.name_any())?,
        ..ServiceAccount::default()
    })
}

/// Leases in the Registry's namespace: the GC holder acquires and renews one.
pub fn role(registry: &Registry) -> Result<Role, RenderError> {
    Ok(Role {
        metadata: owned_meta(registry, role_name(registry))?,
        rules: Some(vec![PolicyRule {
            api_groups: Some(vec!["coordination.k8s.io".into()]),
            resources: Some(vec!["leases".into()]),
            verbs: ["get", "list", "watch", "create", "update", "patch"]
                .map(String::from)
                .to_vec(),
            ..PolicyRule::default()
        }]),
    })
}

/// Binds [`role`] to [`service_account`].
pub fn role_binding(registry: &Registry) -> Result<RoleBinding, RenderError> {
    Ok(RoleBinding {
        metadata: owned_meta(registry, role_name(registry))?,
        role_ref: RoleRef {
            api_group: Some("rbac.authorization.k8s.io".into()),
            kind: "Role".into(),
            name: role_name(registry),
        },
        subjects: Some(vec![Subject {
            kind: "ServiceAccount".into(),
            name: registry.name_any(),
            namespace: registry.namespace(),
            api_group: None,
        }]),
    })
}

fn role_name(registry: &Registry) -> String {
    format!("{}-leases", registry.name_any())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::registry;

    #[test]
    fn binding_grants_leases_to_the_service_account() {
        let r = registry();
        let role = role(&r).unwrap();
        let rule = &role.rules.unwrap()[0];
        assert_eq!(rule.resources.as_deref(), Some(&["leases".to_string()][..]));
        let binding = role_binding(&r).unwrap();
        assert_eq!(binding.role_ref.name, role.metadata.name.unwrap());
        let subject = &binding.subjects.unwrap()[0];
        assert_eq!(
            (subject.name.as_str(), subject.namespace.as_deref()),
            ("demo", Some("ns"))
        );
    }
}
