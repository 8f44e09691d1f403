//! A copy of `wf-runner` built inside the test package, so tests can run it by path.

fn main() -> std::process::ExitCode {
    wf_runner::main_impl()
}
