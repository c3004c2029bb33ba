//! Link flags of the `berth-registry` binary.

fn main() {
    // Relative relocations packed (DT_RELR, glibc 2.36 and later): the
    // loader reads a few KB of them at start instead of about 700 KB of
    // RELA entries, pages of the binary that otherwise stay resident.
    println!("cargo::rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
}
