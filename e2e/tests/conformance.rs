//! The OCI conformance suite against the real binary on its embedded
//! default (a local directory).

use berth_e2e::Registry;
use berth_e2e::conformance::run_conformance;

#[test]
fn oci_conformance_suite_passes_every_workflow() {
    let registry = Registry::start();
    run_conformance(&registry.host(), "conformance");
}
