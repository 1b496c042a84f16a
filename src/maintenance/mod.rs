//! Repository maintenance: integrity checks (forget and prune come later).

pub mod check;
pub mod prune;
pub mod retention;
