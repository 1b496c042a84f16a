//! strata: a deduplicating, end-to-end encrypted backup agent for cloud object
//! storage. See `docs/` for the architecture and the repository format.

pub mod agent;
pub mod backup;
pub mod chunker;
pub mod cli;
pub mod config;
pub mod console;
pub mod crypto;
pub mod entropy;
pub mod error;
pub mod fsmeta;
pub mod id;
pub mod inspect;
pub mod maintenance;
pub mod pool;
pub mod progress;
pub mod repo;
pub mod report;
pub mod restore;
pub mod session;
pub mod store;
pub mod sysinfo;
