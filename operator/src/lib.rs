//! The Berth operator: `Registry` and `SyncPolicy` custom resources, the
//! pure rendering of the objects a Registry owns, and the reconcilers that
//! server-side apply them and report status.
//!
//! Layers: `crd` (types) ← `render` (pure functions, no API calls) ←
//! `reconcile` (API calls, status, events) ← `main`.

pub mod crd;
pub mod render;
