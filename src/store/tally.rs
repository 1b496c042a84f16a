//! A process-wide tally of the requests sent to object stores, by class,
//! over every store and pool member this process opened: what a command
//! cost, for `--json` summaries and `STRATA_REQUEST_STATS`.

use std::sync::atomic::{AtomicU64, Ordering::Relaxed};

use serde::Serialize;

/// The kind of a request, as a provider bills it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RequestClass {
    /// A whole or ranged object read.
    Get,
    /// An object write (a multipart upload counts once).
    Put,
    /// An object's or bucket's metadata.
    Head,
    /// A listing.
    List,
    /// A delete.
    Delete,
}

static TALLY: [AtomicU64; 5] = [const { AtomicU64::new(0) }; 5];

/// Counts one request of `class`.
pub fn tally(class: RequestClass) {
    TALLY[class as usize].fetch_add(1, Relaxed);
}

/// Requests this process sent so far, by class.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize)]
pub struct RequestTally {
    /// Object reads (whole or ranged; local reads count too).
    pub get: u64,
    /// Object writes.
    pub put: u64,
    /// Metadata requests (object size, bucket existence).
    pub head: u64,
    /// Listings.
    pub list: u64,
    /// Deletes.
    pub delete: u64,
}

impl RequestTally {
    /// Every request, whatever its class.
    pub fn total(&self) -> u64 {
        self.get + self.put + self.head + self.list + self.delete
    }
}

impl std::fmt::Display for RequestTally {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} requests: {} GET, {} PUT, {} HEAD, {} LIST, {} DELETE",
            self.total(),
            self.get,
            self.put,
            self.head,
            self.list,
            self.delete
        )
    }
}

/// The tally so far.
pub fn request_tally() -> RequestTally {
    let n = |c: RequestClass| TALLY[c as usize].load(Relaxed);
    RequestTally {
        get: n(RequestClass::Get),
        put: n(RequestClass::Put),
        head: n(RequestClass::Head),
        list: n(RequestClass::List),
        delete: n(RequestClass::Delete),
    }
}
