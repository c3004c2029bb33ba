//! The static binaries the images hold: built with cargo, glibc linked in
//! (`+crt-static`), into their own target directory, and checked to need
//! no dynamic loader, so they run in an otherwise empty root filesystem.
//!
//! Why static glibc rather than musl: it needs no extra rustup target or C
//! toolchain (aws-lc-sys compiles C), keeps glibc's allocator (musl's is far
//! slower under the registry's concurrent load), and since glibc 2.34 the
//! `files` and `dns` name services are inside libc, so host names resolve
//! from `/etc/hosts` and `/etc/resolv.conf` (which Kubernetes mounts)
//! without loading NSS modules.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, Result, bail, ensure};

use crate::images::Component;

/// The cargo profile of image binaries: the workspace's release profile.
const PROFILE: &str = "release";

/// Link glibc in, and take random bytes (upload ids, TLS) from the
/// `getrandom` system call. getrandom's default Linux backend looks the libc
/// function up with `dlsym`, which finds nothing in a static binary, and
/// falls back to reading `/dev/urandom`: absent from an empty root
/// filesystem (and from a chroot), where every upload would then fail.
const STATIC_FLAGS: &str =
    "-C target-feature=+crt-static --cfg getrandom_backend=\"linux_getrandom\"";

/// The Rust target of this machine's architecture with glibc.
pub fn target() -> String {
    format!("{}-unknown-linux-gnu", std::env::consts::ARCH)
}

/// The image architecture (a GOARCH name) of [`target`].
pub fn architecture() -> Result<&'static str> {
    match std::env::consts::ARCH {
        "x86_64" => Ok("amd64"),
        "aarch64" => Ok("arm64"),
        other => bail!("no image architecture known for {other}"),
    }
}

/// Builds the binaries of `components` statically in
/// `<workspace>/target/image`, apart from the test builds (different flags
/// would otherwise rebuild everything each time); returns the directory
/// holding them.
pub fn build(workspace: &Path, components: &[Component]) -> Result<PathBuf> {
    let target_dir = workspace.join("target").join("image");
    let rustflags = match std::env::var("RUSTFLAGS") {
        Ok(flags) if !flags.trim().is_empty() => format!("{flags} {STATIC_FLAGS}"),
        _ => STATIC_FLAGS.to_string(),
    };
    let mut cargo = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cargo
        .arg("build")
        .arg("--locked")
        .args(["--profile", PROFILE])
        .args(["--target", &target()])
        .arg("--target-dir")
        .arg(&target_dir)
        .arg("--manifest-path")
        .arg(workspace.join("Cargo.toml"))
        // With `--target`, these flags reach the binaries but not build
        // scripts or proc macros, which stay dynamic host programs.
        .env("RUSTFLAGS", rustflags)
        .env_remove("CARGO_ENCODED_RUSTFLAGS");
    for component in components {
        cargo.args(["-p", component.name(), "--bin", component.name()]);
    }
    let status = cargo
        .status()
        .with_context(|| format!("cannot run {cargo:?}"))?;
    ensure!(status.success(), "{cargo:?} failed with {status}");
    Ok(target_dir.join(target()).join(PROFILE))
}

/// Reads a component's binary from `dir` and checks that it is static.
pub fn read(dir: &Path, component: Component) -> Result<Vec<u8>> {
    let path = dir.join(component.name());
    let binary = std::fs::read(&path).with_context(|| format!("cannot read {}", path.display()))?;
    check_static(&binary).with_context(|| format!("{} cannot be packed", path.display()))?;
    Ok(binary)
}

/// ELF program header type of the dynamic loader's path.
const PT_INTERP: u32 = 3;

/// Fails unless `binary` is a 64-bit little-endian ELF executable with no
/// `PT_INTERP` program header, i.e. one the kernel starts without a
/// dynamic loader (static or static-pie).
pub fn check_static(binary: &[u8]) -> Result<()> {
    ensure!(
        binary.get(..6) == Some(b"\x7fELF\x02\x01"),
        "not a 64-bit little-endian ELF file"
    );
    let phoff = usize::try_from(read_u64(binary, 0x20)?)?;
    let phentsize = usize::from(read_u16(binary, 0x36)?);
    let phnum = usize::from(read_u16(binary, 0x38)?);
    for index in 0..phnum {
        let at = index
            .checked_mul(phentsize)
            .and_then(|offset| offset.checked_add(phoff))
            .context("bad ELF program header table")?;
        if read_u32(binary, at)? == PT_INTERP {
            bail!(
                "it is dynamically linked (it names an ELF interpreter); build it with -C target-feature=+crt-static"
            );
        }
    }
    Ok(())
}

fn field<const N: usize>(binary: &[u8], at: usize) -> Result<[u8; N]> {
    binary
        .get(at..at.saturating_add(N))
        .and_then(|bytes| bytes.try_into().ok())
        .context("truncated ELF header")
}

fn read_u16(binary: &[u8], at: usize) -> Result<u16> {
    field(binary, at).map(u16::from_le_bytes)
}

fn read_u32(binary: &[u8], at: usize) -> Result<u32> {
    field(binary, at).map(u32::from_le_bytes)
}

fn read_u64(binary: &[u8], at: usize) -> Result<u64> {
    field(binary, at).map(u64::from_le_bytes)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A minimal ELF64 header with the given program header types.
    fn elf(types: &[u32]) -> Vec<u8> {
        let mut elf = vec![0u8; 64];
        elf[..6].copy_from_slice(b"\x7fELF\x02\x01");
        elf[0x20..0x28].copy_from_slice(&64u64.to_le_bytes());
        elf[0x36..0x38].copy_from_slice(&56u16.to_le_bytes());
        elf[0x38..0x3a].copy_from_slice(&(types.len() as u16).to_le_bytes());
        for kind in types {
            let mut header = vec![0u8; 56];
            header[..4].copy_from_slice(&kind.to_le_bytes());
            elf.extend(header);
        }
        elf
    }

    #[test]
    fn a_binary_without_an_interpreter_is_static() {
        check_static(&elf(&[6, 1, 1, 2])).unwrap();
    }

    #[test]
    fn a_binary_with_an_interpreter_is_refused() {
        let err = check_static(&elf(&[6, PT_INTERP, 1])).unwrap_err();
        assert!(err.to_string().contains("dynamically linked"), "{err}");
    }

    #[test]
    fn other_files_are_refused_without_panicking() {
        assert!(check_static(b"#!/bin/sh\n").is_err());
        let mut truncated = elf(&[1, 1]);
        truncated.truncate(100);
        assert!(check_static(&truncated).is_err());
    }

    /// The test binary itself is dynamic (the workspace's normal builds).
    #[test]
    fn this_test_binary_is_dynamic() {
        let me = std::fs::read(std::env::current_exe().unwrap()).unwrap();
        assert!(check_static(&me).is_err());
    }
}
