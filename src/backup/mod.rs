//! Backups: walk sources, chunk and save file contents, build trees, and
//! commit a snapshot once everything it references is durable.

mod archiver;
mod buffers;
mod compression;
mod excludes;
pub mod saver;
mod sparse;

pub use archiver::{BackupOptions, BackupReport, Source, run_backup, snapshot_paths};
pub use compression::CompressionSetting;
pub use excludes::{CACHEDIR_SIGNATURE, Filters, is_cache_dir, read_exclude_file};
