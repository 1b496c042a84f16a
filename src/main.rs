//! The `strata` command line.

// mimalloc, told to give freed memory back at once, returns pack and chunk
// buffers to the system promptly; glibc's per-thread arenas kept them and
// peak memory nearly doubled.
#[global_allocator]
static ALLOC: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// `mi_option_arena_eager_commit` in the bundled mimalloc.h (pinned by Cargo.lock).
const MI_OPTION_ARENA_EAGER_COMMIT: libmimalloc_sys::mi_option_t = 4;
/// `mi_option_purge_delay` in the bundled mimalloc.h.
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

fn main() {
    for (option, name, value) in [
        (
            MI_OPTION_ARENA_EAGER_COMMIT,
            "MIMALLOC_ARENA_EAGER_COMMIT",
            0,
        ),
        (MI_OPTION_PURGE_DELAY, "MIMALLOC_PURGE_DELAY", 0),
    ] {
        // The environment still wins, for experiments.
        if std::env::var_os(name).is_none() {
            // SAFETY: a plain option setter, called before any thread starts.
            unsafe { libmimalloc_sys::mi_option_set(option, value) };
        }
    }
    std::process::exit(strata::cli::main());
}
