//! `iris-smol`: the Iris node command, on smol. Same flags as `iris`.

fn main() -> std::process::ExitCode {
    iris_driver::cli::main::<iris_smol::Smol>()
}
