//! Links this crate's binary as a position-dependent executable: a position-independent one
//! has the dynamic loader apply some 60,000 relative relocations (panic locations, vtables,
//! string tables of the dependencies) at every start, copying 1.6 MB of pages, which is half
//! of what a short `wf` command costs (BENCHMARKS.md). Shared libraries are still placed at
//! random; only the executable's own address is fixed.

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
