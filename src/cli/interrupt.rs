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
