//! The `strata` command line.

/// glibc arenas for the whole process. The default (eight per core) lets
/// each pipeline thread keep its own freed buffers, which raised peak memory
/// by half; two arenas cost no measurable speed (bench/compare.sh, notes).
#[cfg(target_env = "gnu")]
const MALLOC_ARENAS: libc::c_int = 2;

fn main() {
    // The environment still wins, for experiments.
    #[cfg(target_env = "gnu")]
    if std::env::var_os("MALLOC_ARENA_MAX").is_none() {
        // SAFETY: a plain allocator setting, made before any thread starts.
        unsafe { libc::mallopt(libc::M_ARENA_MAX, MALLOC_ARENAS) };
    }
    std::process::exit(strata::cli::main());
}
