//! Links the test crate's binaries (the copies of `wf` and `wf-runner` the tests run) the way
//! the real ones are linked: not position independent (see `cli/build.rs` for why).

fn main() {
    if std::env::var("CARGO_CFG_TARGET_OS").as_deref() == Ok("linux") {
        println!("cargo:rustc-link-arg-bins=-no-pie");
    }
}
