//! The `wf-runner` daemon.

fn main() -> std::process::ExitCode {
    wf_runner::main_impl()
}
