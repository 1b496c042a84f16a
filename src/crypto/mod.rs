//! Cryptography: the master key and its sub-keys, authenticated encryption of
//! objects and blobs, keyed chunk ids, and password-sealed key files.

mod aead;
pub mod keyfile;
mod master;

pub use aead::{AeadError, OVERHEAD, open, open_append, seal, seal_into};
pub use master::MasterKey;
