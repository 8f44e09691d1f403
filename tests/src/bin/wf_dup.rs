//! A copy of `wf` built inside the test package, so tests can run it by path.

fn main() -> std::process::ExitCode {
    wf_cli::main_impl()
}
