//! The optional Prometheus Operator `ServiceMonitor` that scrapes the
//! registry's `/metrics` through its Service. Rendered as a
//! [`DynamicObject`]: the operator does not depend on the Prometheus
//! Operator's types, and the CRD may be missing from a cluster (the
//! reconciler then reports `Degraded` rather than failing everything).

use kube::ResourceExt;
use kube::api::{ApiResource, DynamicObject, GroupVersionKind};
use serde_json::{Value, json};

use super::{RenderError, owned_meta, scheme, selector_labels};
use crate::crd::Registry;

/// `monitoring.coreos.com/v1`, kind `ServiceMonitor`.
pub fn api_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("monitoring.coreos.com", "v1", "ServiceMonitor"),
        "servicemonitors",
    )
}

/// The ServiceMonitor named like the Registry, when enabled. It selects the
/// Registry's Service by its selector labels (the Service carries them) and
/// scrapes the named port; over TLS it verifies the certificate with the
/// TLS Secret's `ca.crt` (cert-manager writes one) against the Service's
/// DNS name.
pub fn service_monitor(registry: &Registry) -> Result<Option<DynamicObject>, RenderError> {
    let spec = &registry.spec.monitoring.service_monitor;
    if !spec.enabled {
        return Ok(None);
    }
    let mut metadata = owned_meta(registry, registry.name_any())?;
    if let Some(labels) = metadata.labels.as_mut() {
        labels.extend(spec.labels.clone());
    }
    let mut endpoint = json!({
        "port": scheme(registry),
        "path": "/metrics",
        "scheme": scheme(registry),
    });
    if let Some(interval) = &spec.interval {
        endpoint["interval"] = json!(interval);
    }
    if let Some(tls) = &registry.spec.tls {
        endpoint["tlsConfig"] = json!({
            "ca": { "secret": { "name": tls.secret_name, "key": "ca.crt" } },
            "serverName": format!(
                "{}.{}.svc",
                registry.name_any(),
                registry.namespace().unwrap_or_default()
            ),
        });
    }
    let mut object = DynamicObject::new(&registry.name_any(), &api_resource());
    object.metadata = metadata;
    object.data = json!({
        "spec": {
            "selector": { "matchLabels": selector_labels(registry) },
            "endpoints": [endpoint],
        }
    });
    Ok(Some(object))
}

/// The scrape endpoint of a rendered ServiceMonitor (for tests and logs).
pub fn endpoint(object: &DynamicObject) -> Option<&Value> {
    object.data.get("spec")?.get("endpoints")?.get(0)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{registry, secured};

    fn enabled(mut registry: Registry) -> Registry {
        registry.spec.monitoring.service_monitor.enabled = true;
        registry
    }

    #[test]
    fn only_when_enabled() {
        assert!(service_monitor(&registry()).unwrap().is_none());
    }

    #[test]
    fn scrapes_the_services_http_port_with_extra_labels() {
        let mut r = enabled(registry());
        r.spec.monitoring.service_monitor.interval = Some("15s".into());
        r.spec
            .monitoring
            .service_monitor
            .labels
            .insert("release".into(), "prometheus".into());
        let sm = service_monitor(&r).unwrap().unwrap();
        let types = sm.types.clone().unwrap();
        assert_eq!(
            (types.api_version.as_str(), types.kind.as_str()),
            ("monitoring.coreos.com/v1", "ServiceMonitor")
        );
        assert_eq!(sm.labels()["release"], "prometheus");
        assert_eq!(sm.labels()["app.kubernetes.io/instance"], "demo");
        assert_eq!(
            endpoint(&sm).unwrap(),
            &json!({"port": "http", "path": "/metrics", "scheme": "http", "interval": "15s"})
        );
        assert_eq!(
            sm.data["spec"]["selector"]["matchLabels"]["app.kubernetes.io/instance"],
            "demo"
        );
        assert_eq!(sm.owner_references()[0].kind, "Registry");
    }

    #[test]
    fn over_tls_it_verifies_with_the_secrets_ca() {
        let sm = service_monitor(&enabled(secured(registry())))
            .unwrap()
            .unwrap();
        let endpoint = endpoint(&sm).unwrap();
        assert_eq!(endpoint["scheme"], "https");
        assert_eq!(endpoint["port"], "https");
        assert_eq!(endpoint["tlsConfig"]["ca"]["secret"]["name"], "demo-tls");
        assert_eq!(endpoint["tlsConfig"]["serverName"], "demo.ns.svc");
    }
}
