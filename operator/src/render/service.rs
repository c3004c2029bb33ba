//! The Service in front of the registry replicas.

use k8s_openapi::api::core::v1::{Service, ServicePort, ServiceSpec};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;

use super::{RenderError, owned_meta, scheme, selector_labels};
use crate::crd::Registry;

/// The Service named like the Registry; any replica serves any request, so
/// no session affinity. Its port is named after the scheme (`http` or
/// `https`), as service meshes and the ServiceMonitor expect.
pub fn service(registry: &Registry) -> Result<Service, RenderError> {
    let spec = &registry.spec.service;
    Ok(Service {
        metadata: owned_meta(registry, registry.name_any())?,
        spec: Some(ServiceSpec {
            type_: Some(spec.type_.as_str().into()),
            selector: Some(selector_labels(registry)),
            ports: Some(vec![ServicePort {
                name: Some(scheme(registry).into()),
                port: spec.port,
                target_port: Some(IntOrString::String(scheme(registry).into())),
                protocol: Some("TCP".into()),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        status: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::fixtures::{registry, secured};

    #[test]
    fn selects_the_pods_on_the_named_port() {
        let mut r = registry();
        r.spec.service.port = 80;
        let spec = service(&r).unwrap().spec.unwrap();
        assert_eq!(spec.type_.as_deref(), Some("ClusterIP"));
        assert_eq!(spec.selector, Some(selector_labels(&r)));
        let port = &spec.ports.unwrap()[0];
        assert_eq!(
            (port.port, port.target_port.clone()),
            (80, Some(IntOrString::String("http".into())))
        );
    }

    #[test]
    fn the_port_is_named_https_with_tls() {
        let spec = service(&secured(registry())).unwrap().spec.unwrap();
        let port = &spec.ports.unwrap()[0];
        assert_eq!(port.name.as_deref(), Some("https"));
        assert_eq!(port.target_port, Some(IntOrString::String("https".into())));
    }
}
