//! The source tree the images are built from: where the workspace is, and
//! the provenance (version, commit, time) their labels record.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, ensure};

use crate::oci::Provenance;

/// The workspace this tool belongs to: it builds the binaries of its own
/// source tree, wherever it is run from.
pub fn workspace() -> PathBuf {
    let crate_dir = Path::new(env!("CARGO_MANIFEST_DIR"));
    crate_dir.parent().unwrap_or(crate_dir).to_path_buf()
}

/// The provenance of a build of `workspace` at its current commit:
/// `created` is `SOURCE_DATE_EPOCH` when set (the reproducible-builds
/// convention), otherwise the commit's time.
pub fn provenance(workspace: &Path, source: &str) -> Result<Provenance> {
    let revision = git(workspace, &["rev-parse", "HEAD"])?;
    let created = match std::env::var("SOURCE_DATE_EPOCH") {
        Ok(epoch) => epoch
            .trim()
            .parse()
            .with_context(|| format!("SOURCE_DATE_EPOCH={epoch:?} is not a number of seconds"))?,
        Err(_) => git(workspace, &["log", "-1", "--format=%ct", "HEAD"])?
            .parse()
            .context("git printed no commit time")?,
    };
    Ok(Provenance {
        version: env!("CARGO_PKG_VERSION").to_string(),
        revision,
        created,
        source: source.to_string(),
    })
}

fn git(workspace: &Path, args: &[&str]) -> Result<String> {
    let mut git = Command::new("git");
    git.arg("-C").arg(workspace).args(args);
    let output = git
        .output()
        .with_context(|| format!("cannot run {git:?} (the image labels need the commit)"))?;
    ensure!(
        output.status.success(),
        "{git:?} failed: {}",
        String::from_utf8_lossy(&output.stderr).trim()
    );
    Ok(String::from_utf8_lossy(&output.stdout).trim().to_string())
}
