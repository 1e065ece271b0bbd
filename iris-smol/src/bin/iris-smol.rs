//! `iris-smol`: the Iris node command, on smol. Same flags as `iris`.

/// mimalloc gives memory back to the system once groups and clients are gone; glibc's
/// malloc keeps a heap fragmented by hundreds of thousands of small tree entries at its
/// peak size (measured in benches/README.md, "Groups").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    iris_driver::cli::main::<iris_smol::Smol>()
}
