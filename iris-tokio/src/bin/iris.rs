//! `iris`: the Iris node command, on tokio.

fn main() -> std::process::ExitCode {
    iris_driver::cli::main::<iris_tokio::Tokio>()
}
