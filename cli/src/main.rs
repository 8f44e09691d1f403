//! The `wf` command line.

fn main() -> std::process::ExitCode {
    wf_cli::main_impl()
}
