//! Backups: walk sources, chunk and save file contents, build trees, and
//! commit a snapshot once everything it references is durable.

mod archiver;
pub mod saver;

pub use archiver::{BackupOptions, BackupReport, Source, run_backup};
