//! The Berth operator: `Registry` and `SyncPolicy` custom resources, the
//! pure rendering of the objects a Registry owns, and the reconcilers that
//! server-side apply them and report status.
//!
//! Layers: `crd` (types) ← `render` (pure functions, no API calls) ←
//! `reconcile` (API calls, status, Events) ← `leader`, `http` ← `main`.

pub mod crd;
pub mod error;
pub mod http;
pub mod leader;
pub mod metrics;
pub mod reconcile;
pub mod render;
