//! Random bytes for nonces, salts, keys, pack headers and ids.
//!
//! Always the operating system's generator, except in the consistency
//! simulation (tests/simulation.rs), which calls
//! [`predictable_for_simulation`] so that a seed replays exactly: object
//! names carry nonces and salts, and the order in which a run touches
//! objects follows their names. There every draw is a keyed hash of the
//! seed, what the caller says it is for (`context`), and how many times
//! that context was asked for before: the same in every run, whatever the
//! threads' timing. For the same reason, while it is on ([`in_simulation`]),
//! backups record ctime, inode and device as 0, directories' mtimes and link
//! counts as 0, and a duration of 0, and [`now`] is the simulation's clock
//! (it also sets files' mtimes from it). Nothing outside that test may call
//! it: predictable nonces give away what they protect.

use std::collections::HashMap;
use std::sync::Mutex;
use std::sync::atomic::{AtomicBool, Ordering};

use rand::RngCore;

static PREDICTABLE: AtomicBool = AtomicBool::new(false);
static SIMULATED_NOW: std::sync::atomic::AtomicI64 = std::sync::atomic::AtomicI64::new(0);
static STATE: Mutex<Option<Predictable>> = Mutex::new(None);

struct Predictable {
    key: [u8; 32],
    draws: HashMap<[u8; 32], u64>,
}

/// Fills `out` with random bytes. `context` says what they are for (and,
/// for nonces, what they seal); only the simulation looks at it.
pub fn fill(out: &mut [u8], context: &[&[u8]]) {
    if !PREDICTABLE.load(Ordering::Relaxed) {
        rand::rng().fill_bytes(out);
        return;
    }
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    let Some(p) = state.as_mut() else {
        rand::rng().fill_bytes(out);
        return;
    };
    let mut h = blake3::Hasher::new_keyed(&p.key);
    for part in context {
        h.update(&(part.len() as u64).to_le_bytes());
        h.update(part);
    }
    let ctx = *h.finalize().as_bytes();
    let n = p.draws.entry(ctx).or_default();
    *n += 1;
    let mut x = blake3::Hasher::new_keyed(&p.key);
    x.update(&ctx);
    x.update(&n.to_le_bytes());
    x.finalize_xof().fill(out);
}

/// The time to write into objects (key files, locks, deletion records,
/// markers): the clock, or in the simulation the time it last set with
/// [`set_simulated_now`].
pub fn now() -> chrono::DateTime<chrono::Utc> {
    if in_simulation() {
        let secs = SIMULATED_NOW.load(Ordering::SeqCst);
        return chrono::DateTime::from_timestamp(secs, 0).unwrap_or_default();
    }
    chrono::Utc::now()
}

/// Sets what [`now`] returns in the simulation (seconds since the epoch).
pub fn set_simulated_now(secs: i64) {
    SIMULATED_NOW.store(secs, Ordering::SeqCst);
}

/// True while [`predictable_for_simulation`] is on.
pub fn in_simulation() -> bool {
    PREDICTABLE.load(Ordering::Relaxed)
}

/// `N` random bytes (see [`fill`]).
pub fn bytes<const N: usize>(context: &[&[u8]]) -> [u8; N] {
    let mut out = [0u8; N];
    fill(&mut out, context);
    out
}

/// Makes every draw a function of `seed` (`Some`), or random again
/// (`None`). For tests/simulation.rs only: see the module documentation.
pub fn predictable_for_simulation(seed: Option<u64>) {
    let mut state = STATE.lock().unwrap_or_else(|e| e.into_inner());
    *state = seed.map(|s| Predictable {
        key: blake3::derive_key("strata simulation entropy", &s.to_le_bytes()),
        draws: HashMap::new(),
    });
    PREDICTABLE.store(seed.is_some(), Ordering::SeqCst);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn random_by_default_and_replayable_when_seeded() {
        let a: [u8; 32] = bytes(&[b"x"]);
        let b: [u8; 32] = bytes(&[b"x"]);
        assert_ne!(a, b, "two draws from the OS generator matched");

        predictable_for_simulation(Some(7));
        let first: Vec<[u8; 32]> = (0..3).map(|_| bytes(&[b"x"])).collect();
        let other: [u8; 32] = bytes(&[b"y"]);
        predictable_for_simulation(Some(7));
        let again: Vec<[u8; 32]> = (0..3).map(|_| bytes(&[b"x"])).collect();
        predictable_for_simulation(None);
        assert_eq!(first, again, "a seed did not replay");
        assert_ne!(first[0], first[1], "repeated draws of one context matched");
        assert_ne!(first[0], other, "contexts did not separate the draws");
        let after: [u8; 32] = bytes(&[b"x"]);
        assert!(!first.contains(&after), "still predictable after None");
    }
}
