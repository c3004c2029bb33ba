//! `berth-image`: builds the OCI images of `berth-registry` and
//! `berth-operator` without a container engine, and pushes them to any
//! registry.
//!
//! Each image is one layer: the static binary, a CA bundle, `passwd` and
//! `group` naming the non-root user 65532, and `/tmp` (plus the registry's
//! data directory). Its config sets the entrypoint, user, ports and the
//! `org.opencontainers.image.*` labels. The steps, one module each: build the
//! static binaries (`binaries`), pack the root filesystem (`layer`), write
//! the config, manifest and an OCI image layout (`oci`), push (`push`).

mod binaries;
mod images;
mod layer;
mod oci;
mod push;
mod source;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::{Context, Result};
use clap::Parser;

use crate::images::Component;
use crate::oci::Image;
use crate::push::{Credentials, Reference};

/// Builds the Berth container images (OCI, no Docker needed) and pushes
/// them to a registry.
///
/// Without --push it writes an OCI image layout per image under
/// target/image/oci/, which skopeo, crane or oras can also copy anywhere.
#[derive(Debug, Parser)]
#[command(version)]
struct Args {
    /// An image to build; repeat for several. Default: all of them.
    #[arg(long = "image", value_enum)]
    images: Vec<Component>,
    /// Images are named PREFIX/berth-registry:TAG and
    /// PREFIX/berth-operator:TAG. The default is what the operator and the
    /// Helm chart run.
    #[arg(long, env = "BERTH_IMAGE_PREFIX", default_value = Component::default_prefix())]
    prefix: String,
    /// The tag; the default is the version, which the operator and the
    /// chart run.
    #[arg(long, default_value = env!("CARGO_PKG_VERSION"))]
    tag: String,
    /// Push each image to its name.
    #[arg(long)]
    push: bool,
    /// Push over plain HTTP (a registry on loopback or a trusted network).
    #[arg(long)]
    plain_http: bool,
    /// User name for registries that want one (with BERTH_IMAGE_PASSWORD).
    #[arg(long, env = "BERTH_IMAGE_USERNAME")]
    username: Option<String>,
    /// Password or token; read from the environment only.
    #[arg(
        long,
        env = "BERTH_IMAGE_PASSWORD",
        hide_env_values = true,
        hide = true
    )]
    password: Option<String>,
    /// Pack the static binaries found in this directory instead of building
    /// them.
    #[arg(long)]
    binary_dir: Option<PathBuf>,
    /// Where the OCI image layouts go (one directory per image).
    #[arg(long)]
    out: Option<PathBuf>,
    /// The CA bundle the images carry (for S3 and other HTTPS endpoints).
    #[arg(long, default_value = images::CA_BUNDLE)]
    ca_certificates: PathBuf,
    /// The org.opencontainers.image.source label.
    #[arg(long, default_value = images::SOURCE)]
    source: String,
}

fn main() -> ExitCode {
    match run(Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("berth-image: {err:#}");
            ExitCode::FAILURE
        }
    }
}

fn run(args: Args) -> Result<()> {
    let workspace = source::workspace();
    let mut components = if args.images.is_empty() {
        Component::ALL.to_vec()
    } else {
        args.images.clone()
    };
    components.sort();
    components.dedup();
    let ca_bundle = std::fs::read(&args.ca_certificates).with_context(|| {
        format!(
            "cannot read the CA bundle {} (Debian: apt-get install ca-certificates; or pass --ca-certificates)",
            args.ca_certificates.display()
        )
    })?;
    let provenance = source::provenance(&workspace, &args.source)?;
    let architecture = binaries::architecture()?;
    let binary_dir = match &args.binary_dir {
        Some(dir) => dir.clone(),
        None => binaries::build(&workspace, &components)?,
    };
    let out = args
        .out
        .clone()
        .unwrap_or_else(|| workspace.join("target").join("image").join("oci"));
    let options = push::Options {
        plain_http: args.plain_http,
        credentials: credentials(&args),
    };
    for component in components {
        let reference = Reference::parse(&format!(
            "{}/{}:{}",
            args.prefix.trim_end_matches('/'),
            component.name(),
            args.tag
        ))?;
        let binary = binaries::read(&binary_dir, component)?;
        let layer = layer::pack(
            component.rootfs(binary, ca_bundle.clone()),
            provenance.created,
        )?;
        let image = Image::new(component, layer, &provenance, architecture)?;
        let layout = out.join(component.name());
        image.write_layout(&layout, &args.tag)?;
        println!(
            "{reference}@{} in {}",
            image.manifest.digest,
            layout.display()
        );
        if args.push {
            push::push(&image, &reference, &options)?;
            println!("pushed {reference}@{}", image.manifest.digest);
        }
    }
    Ok(())
}

fn credentials(args: &Args) -> Option<Credentials> {
    Some(Credentials {
        username: args.username.clone()?,
        password: args.password.clone().unwrap_or_default(),
    })
}
