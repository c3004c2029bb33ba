//! Berth's registry: an OCI Distribution Spec v1.1 server over pluggable
//! object storage.
//!
//! Layers, each depending only on those below it:
//! - [`api`]: HTTP routes (axum), thin; OCI error rendering.
//! - [`service`]: the content model and its invariants.
//! - [`storage`]: the object-store trait and its drivers.
//! - [`oci`]: pure types (digests, names, manifests).
//!
//! [`config`], [`mapped`], [`metrics`] and [`telemetry`] are shared leaves; [`auth`]
//! checks credentials for the API; [`server`] (with [`tls`]) wires
//! everything for `main.rs` and for tests.

pub mod api;
pub mod auth;
pub mod config;
pub mod connections;
pub mod ids;
pub mod mapped;
pub mod metrics;
pub mod oci;
pub mod server;
pub mod service;
pub mod storage;
pub mod telemetry;
pub mod tls;
