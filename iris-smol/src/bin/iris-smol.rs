//! `iris-smol`: the Iris node command, on smol. Same flags as `iris`.

/// mimalloc gives memory back to the system once groups and clients are gone; glibc's
/// malloc keeps a heap fragmented by hundreds of thousands of small tree entries at its
/// peak size (measured in benches/README.md, "Groups").
#[cfg(feature = "mimalloc")]
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    // mimalloc returns what was freed when it collects; an idle node would not ask it to.
    #[cfg(feature = "mimalloc")]
    iris_driver::cli::return_freed_memory(|| {
        // SAFETY: mi_collect has no preconditions; it may be called from any thread.
        unsafe { libmimalloc_sys::mi_collect(false) }
    });
    iris_driver::cli::main::<iris_smol::Smol>()
}
