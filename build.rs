//! Link options for the `airlock` binary.

fn main() {
    println!("cargo:rerun-if-changed=build.rs");
    let target = std::env::var("TARGET").unwrap_or_default();
    // Every start of the binary (the bridge, the gateway, `demo-tools`) applies its
    // relative relocations first: 26.5k of them, a 640 KB table the loader reads page by
    // page. Packed (DT_RELR, GNU ld 2.38+ and glibc 2.36+) the table is a few KB. A GNU ld
    // that does not know a `-z` option warns and ignores it.
    if target.ends_with("-linux-gnu") {
        println!("cargo:rustc-link-arg-bins=-Wl,-z,pack-relative-relocs");
    }
}
