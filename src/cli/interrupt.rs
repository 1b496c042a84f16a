//! Ctrl-C and SIGTERM during a command that holds locks: remove them, say
//! what was kept, and exit 130.

use crate::error::exit;

/// Installs the handler (once per process; later calls do nothing).
pub fn release_locks_on_interrupt() {
    let _ = ctrlc::set_handler(|| {
        crate::repo::lock::release_all_held();
        eprintln!(
            "strata: interrupted; its locks are removed, and the next backup re-uses the data already indexed"
        );
        std::process::exit(exit::INTERRUPTED);
    });
}

/// Installs a handler for a command that stops cleanly: the first Ctrl-C or
/// SIGTERM sets the returned flag (the command then tidies up, says what it
/// kept in one line and exits 130); a second one exits 130 at once.
pub fn stop_on_interrupt() -> std::sync::Arc<std::sync::atomic::AtomicBool> {
    use std::sync::atomic::Ordering;
    let flag = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let set = flag.clone();
    let _ = ctrlc::set_handler(move || {
        if set.swap(true, Ordering::SeqCst) {
            eprintln!("strata: interrupted again; stopping at once");
            std::process::exit(exit::INTERRUPTED);
        }
    });
    flag
}
