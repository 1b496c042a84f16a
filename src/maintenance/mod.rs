//! Repository maintenance: integrity checks, retention, prune and repair.

pub mod append_only;
pub mod check;
pub mod forget;
pub mod prune;
pub mod repair;
pub mod retention;
pub mod uploads;
