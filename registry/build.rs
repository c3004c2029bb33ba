//! Link flags of the `berth-registry` binary.

use std::path::Path;

fn main() {
    println!("cargo::rerun-if-changed=build.rs");
    println!("cargo::rerun-if-changed=hot-functions.ld");
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): the
    // loader reads a few KB of them at start instead of about 700 KB of
    // RELA entries, pages of the binary that otherwise stay resident.
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    // The functions Berth runs, placed together (bench/src/hot.rs says why;
    // bench/hot-functions.sh regenerates the script). Its patterns come
    // from x86-64 Linux builds; release builds only, as benchmarked.
    // BERTH_HOT_LAYOUT=off leaves it out, for a linker that cannot take
    // the script (lld, rustc's default here, and GNU ld can; gold cannot).
    println!("cargo::rerun-if-env-changed=BERTH_HOT_LAYOUT");
    let target = std::env::var("TARGET").unwrap_or_default();
    let profile = std::env::var("PROFILE").unwrap_or_default();
    let wanted = std::env::var("BERTH_HOT_LAYOUT").map_or(true, |v| v != "off");
    if wanted && target == "x86_64-unknown-linux-gnu" && profile == "release" {
        let dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_default();
        let script = Path::new(&dir).join("hot-functions.ld");
        println!("cargo::rustc-link-arg-bins=-Wl,-T,{}", script.display());
    }
}
