//! Repository maintenance: integrity checks (forget and prune come later).

pub mod append_only;
pub mod check;
pub mod prune;
pub mod retention;
