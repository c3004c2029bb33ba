//! Real clients round-trip real images and artifacts through the real
//! binary on a local directory, with digests compared on the way back.

use berth_e2e::Registry;
use berth_e2e::clients::{crane_scenario, helm_scenario, oras_scenario, skopeo_scenario};

#[test]
fn crane_push_pull_list_copy_delete() {
    crane_scenario(&Registry::start().host(), "e2e");
}

#[test]
fn oras_push_attach_discover_pull() {
    oras_scenario(&Registry::start().host(), "e2e");
}

#[test]
fn skopeo_copies_a_multi_arch_layout_in_and_out() {
    skopeo_scenario(&Registry::start().host(), "e2e");
}

#[test]
fn helm_pushes_and_pulls_a_chart() {
    helm_scenario(&Registry::start().host(), "e2e");
}
