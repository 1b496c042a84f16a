//! Object storage: a blocking facade over `object_store` backends.
//!
//! The format layer (`repo`) only sees the [`Backend`] trait, so it never knows
//! which cloud it is on; the virtual storage pool implements the same trait.

mod bucket;
pub mod immutable;
pub mod memory;
mod object;
#[cfg(feature = "object-lock")]
mod s3lock;
mod spool;
pub mod storage_class;
pub mod tally;
pub mod throttle;

use std::ops::Range;

use anyhow::Result;

pub use bucket::PendingUpload;
pub use immutable::{ObjectLockConfig, open_store};
pub use object::{ObjectBackend, block_on, open_url};
pub use tally::{RequestClass, RequestTally, request_tally};

/// An object was not found (distinct from other failures so callers can tell
/// "repository missing" from "backend broken").
#[derive(Debug, thiserror::Error)]
#[error("object {0} not found")]
pub struct NotFound(pub String);

/// The storage refused a request for lack of permission (HTTP 401/403).
#[derive(Debug, thiserror::Error)]
#[error(
    "access denied: check the credentials (AWS_*, AZURE_STORAGE_*, GOOGLE_* or the config's options) and the bucket policy"
)]
pub struct AccessDenied;

/// An endpoint could not be reached (connection refused, DNS, timeout).
#[derive(Debug, thiserror::Error)]
#[error(
    "cannot reach the endpoint{} ({cause}): is the server up and the endpoint URL right?",
    endpoint.as_deref().map(|e| format!(" {e}")).unwrap_or_default()
)]
pub struct Unreachable {
    /// The endpoint tried (scheme, host and port), when known.
    pub endpoint: Option<String>,
    /// The lowest-level reason.
    pub cause: String,
}

/// No credentials were found for a cloud store: none configured, and no
/// instance metadata service answered.
#[derive(Debug, thiserror::Error)]
#[error("no {cloud} credentials found: {hint}")]
pub struct NoCredentials {
    /// "S3", "Azure" or "Google Cloud Storage".
    pub cloud: &'static str,
    /// Where credentials may come from.
    pub hint: &'static str,
}

/// The error for an endpoint that could not be reached; `context` is the
/// error text, where the URL tried is looked for when `endpoint` is not
/// given, and `cause` the lowest-level reason.
pub(crate) fn unreachable(
    endpoint: Option<String>,
    context: &str,
    cause: impl std::fmt::Display,
) -> anyhow::Error {
    anyhow::Error::new(Unreachable {
        endpoint: endpoint.or_else(|| origin_in(context)),
        cause: cause.to_string(),
    })
}

/// The first URL's origin (`scheme://host:port`) in `text`.
pub(crate) fn origin_in(text: &str) -> Option<String> {
    let start = ["http://", "https://"]
        .iter()
        .filter_map(|s| text.find(s))
        .min()?;
    let rest = &text[start..];
    let after_scheme = rest.find("://")? + 3;
    let end = rest[after_scheme..]
        .find(|c: char| c == '/' || c == '?' || c == ')' || c == ',' || c.is_whitespace())
        .map_or(rest.len(), |i| after_scheme + i);
    (end > after_scheme).then(|| rest[..end].to_string())
}

/// Whether an error's text shows that credentials were sought from an
/// instance metadata service (the last resort when none are configured),
/// and it did not answer.
pub(crate) fn is_metadata_fallback(text: &str) -> bool {
    ["169.254.169.254", "169.254.170.2", "fd00:ec2::254"]
        .iter()
        .any(|m| text.contains(m))
}

/// The one-line error for a cloud store without credentials.
pub(crate) fn no_credentials(scheme: &str) -> anyhow::Error {
    let (cloud, hint) = match scheme {
        "s3" => (
            "S3",
            "set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or the aws_access_key_id and aws_secret_access_key options), or a web identity (AWS_WEB_IDENTITY_TOKEN_FILE and AWS_ROLE_ARN)",
        ),
        "az" | "azure" => (
            "Azure",
            "set AZURE_STORAGE_ACCOUNT_KEY, a SAS token, a service principal (AZURE_CLIENT_ID, AZURE_CLIENT_SECRET, AZURE_TENANT_ID) or the matching azure_* options",
        ),
        _ => (
            "Google Cloud Storage",
            "set GOOGLE_APPLICATION_CREDENTIALS or GOOGLE_SERVICE_ACCOUNT to a key file, or the google_service_account_key option",
        ),
    };
    anyhow::Error::new(NoCredentials { cloud, hint })
}

/// Adds `o` to a union of listings keyed by name. Of several copies of one
/// object the newest time is kept: a lock refreshed on some members only is
/// still live, and a marker's age counts from its latest write (both the
/// safe side for prune).
pub fn merge_newest(union: &mut std::collections::BTreeMap<String, ObjectInfo>, o: ObjectInfo) {
    match union.entry(o.key.clone()) {
        std::collections::btree_map::Entry::Vacant(v) => {
            v.insert(o);
        }
        std::collections::btree_map::Entry::Occupied(mut e) => {
            if o.modified > e.get().modified {
                e.get_mut().modified = o.modified;
            }
        }
    }
}

/// The location itself (local folder, bucket, container) is missing: a
/// store that lost everything, as opposed to an empty one.
#[derive(Debug, thiserror::Error)]
#[error("{0} does not exist")]
pub struct LocationMissing(pub String);

/// A read failed on some store for a reason other than the object's
/// content (an I/O error, a timeout): whatever other copies were rejected,
/// the object cannot be called damaged.
#[derive(Debug, thiserror::Error)]
#[error("not every copy could be read")]
pub struct Unsettled;

/// One store's listing of a prefix, from [`Backend::list_each`].
#[derive(Debug, Clone)]
pub struct StoreListing {
    /// Pool member name; empty for a single store.
    pub store: String,
    /// What it holds under the prefix, with that store's own clock times.
    pub objects: Vec<ObjectInfo>,
}

/// Checks an object's bytes before they are copied from one pool member to
/// another (the key decides how: decryption, or the hash that names it).
pub type Verifier = std::sync::Arc<dyn Fn(&str, &[u8]) -> Result<()> + Send + Sync>;

/// What a pool adds to a [`Backend`]: copies between members, and what it
/// noticed while reading. Only the pool implements it.
pub trait Replicated: Send + Sync {
    /// Copies to members whatever they missed this session; true when every
    /// member is whole again.
    fn heal_lagging(&self) -> bool;
    /// Bytes served per member (name, bytes), for reports.
    fn served(&self) -> Vec<(String, u64)>;
    /// Problems met and worked around (e.g. a corrupt copy on one member).
    fn take_notices(&self) -> Vec<String>;
    /// Overwrites copies that failed verification with the copy another
    /// member served (ciphertext only); one message per copy.
    fn heal_bad_copies(&self) -> Vec<String>;
    /// Copies that failed verification on some member while another member
    /// served a good one (each: "KEY on member NAME").
    fn take_bad_copies(&self) -> Vec<String>;
    /// Sets how objects are verified before they are copied between members.
    fn set_verifier(&self, verifier: Verifier);
    /// Keys under `prefix` that at least `write_quorum` members hold (a
    /// member that cannot list counts as holding nothing): what a write
    /// acknowledged by the pool would leave behind.
    fn durable_keys(&self, prefix: &str) -> std::collections::HashSet<String>;
}

/// One stored object as listed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectInfo {
    /// Key relative to the repository root, e.g. `data/ab/ab12…`.
    pub key: String,
    /// Size in bytes.
    pub size: u64,
    /// Last modification time as the storage server recorded it.
    pub modified: Option<chrono::DateTime<chrono::Utc>>,
}

/// Requests sent to one store (a pool member, or the single store), for
/// metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RequestCounts {
    /// Pool member name; empty for a single store.
    pub member: String,
    /// Requests sent.
    pub requests: u64,
    /// Requests that failed (a missing object does not count).
    pub errors: u64,
}

/// An object written piece by piece as it is produced, then made durable
/// under its key: a pack goes to disk as its blobs are sealed instead of
/// waiting in memory. Pieces may be written from several threads at once,
/// each at its own offset. Dropped without [`Spool::commit`], it leaves
/// nothing behind.
pub trait Spool: Send + Sync {
    /// Writes `bytes` at `offset`.
    fn write_at(&self, bytes: &[u8], offset: u64) -> Result<()>;
    /// Makes what was written durable as the object `key`. Call it once,
    /// after every write returned.
    fn commit(&self, key: &str) -> Result<()>;
}

/// A place that stores objects under string keys. Blocking; safe to share
/// between threads.
pub trait Backend: Send + Sync {
    /// Human-readable location, for messages (never includes secrets).
    fn location(&self) -> String;
    /// Writes a whole object durably (overwrites an existing one).
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()>;
    /// Writes an object given as consecutive pieces, without joining them
    /// first. Once it returns the backend holds no reference to them, so
    /// the caller can reclaim their buffers.
    fn put_parts(&self, key: &str, parts: &[bytes::Bytes]) -> Result<()> {
        self.put(key, parts.concat())
    }
    /// A spool for one new object, where the store can take an object in
    /// pieces cheaply (local disk); `None`: build it in memory and `put` it.
    fn spool(&self) -> Result<Option<Box<dyn Spool>>> {
        Ok(None)
    }
    /// Whether [`Backend::spool`] gives spools (decided once per backup).
    fn can_spool(&self) -> bool {
        false
    }
    /// Reads a whole object; a missing object is a [`NotFound`] error.
    fn get(&self, key: &str) -> Result<Vec<u8>>;
    /// Reads a byte range of an object.
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>>;
    /// Lists objects whose key starts with `prefix` (a folder such as `index/`).
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>>;
    /// Size of an object; a missing object is a [`NotFound`] error.
    fn size(&self, key: &str) -> Result<u64>;
    /// Deletes an object (missing objects are not an error).
    fn delete(&self, key: &str) -> Result<()>;
    /// True if the location exists (for a local path: the directory exists).
    fn exists(&self) -> Result<bool>;
    /// Creates the location (bucket, container, directory) where possible.
    fn create(&self) -> Result<()>;

    /// Where these credentials may not delete `key` (which need not exist:
    /// permission is checked before existence, so nothing is removed). Empty
    /// when deleting is allowed; a pool names each member that refuses.
    fn delete_refused(&self, key: &str) -> Result<Vec<String>> {
        match self.delete(key) {
            Ok(()) => Ok(Vec::new()),
            Err(e) if is_access_denied(&e) => Ok(vec![self.location()]),
            Err(e) => Err(e),
        }
    }

    /// This repository's incomplete multipart uploads, keys relative to
    /// the repository root; empty where the store keeps none (local disk,
    /// Azure, GCS) or cannot list them (pools, for now).
    fn incomplete_uploads(&self) -> Result<Vec<PendingUpload>> {
        Ok(Vec::new())
    }

    /// Aborts one of [`Backend::incomplete_uploads`].
    fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        anyhow::bail!(
            "{}: no multipart upload {} to abort",
            self.location(),
            upload.key
        )
    }

    /// Pack uploads worth running at once: a local disk gains nothing from
    /// more than two, while object stores hide their latency with more.
    fn default_uploads(&self) -> usize {
        4
    }

    /// Reads a whole object and hands it to `accept`, which verifies (and
    /// uses) it. A pool tries the next member when the object is missing,
    /// unreadable or rejected by `accept`.
    fn read(&self, key: &str, accept: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        let bytes = self.get(key)?;
        accept(&bytes)
    }

    /// [`Backend::read`] for a byte range.
    fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        let bytes = self.get_range(key, range)?;
        accept(&bytes)
    }

    /// Requests sent so far, per store (one entry per pool member).
    fn request_counts(&self) -> Vec<RequestCounts> {
        Vec::new()
    }

    /// Lists `prefix` on every store separately (one entry per pool
    /// member), failing unless every store answered: the complete view that
    /// anything deleting must act on. A missing location (a wiped member)
    /// is an error here, not an empty listing.
    fn list_each(&self, prefix: &str) -> Result<Vec<StoreListing>> {
        Ok(vec![StoreListing {
            store: String::new(),
            objects: self.list(prefix)?,
        }])
    }

    /// The replication side of a pool; `None` for a single store.
    fn replicated(&self) -> Option<&dyn Replicated> {
        None
    }
}

/// True when the error chain holds a [`LocationMissing`].
pub fn is_location_missing(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<LocationMissing>())
}

/// True when the error chain holds an [`Unsettled`].
pub fn is_unsettled(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<Unsettled>())
}

/// True when the error chain holds an [`Unreachable`].
pub fn is_unreachable(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<Unreachable>())
}

/// True when the error chain holds a [`NotFound`].
pub fn is_not_found(err: &anyhow::Error) -> bool {
    err.chain().any(|c| c.is::<NotFound>())
}

/// True when the storage refused a request for lack of permission: a 401/403
/// answer ([`AccessDenied`]) or an S3 multi-object delete whose entry failed
/// with code AccessDenied (object_store reports that one only as text).
pub fn is_access_denied(err: &anyhow::Error) -> bool {
    err.chain()
        .any(|c| c.is::<AccessDenied>() || c.to_string().contains("(code: AccessDenied)"))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unreachable_names_the_endpoint_tried() {
        let text = "Generic S3 error: Error performing HEAD http://127.0.0.1:1/strata/x/config in 0s - HTTP error: error sending request";
        assert_eq!(origin_in(text).as_deref(), Some("http://127.0.0.1:1"));
        assert_eq!(
            origin_in("error sending request for url (https://h.example:9000)").as_deref(),
            Some("https://h.example:9000")
        );
        assert_eq!(origin_in("no url here"), None);
        let e = unreachable(None, text, "Connection refused (os error 111)").to_string();
        assert_eq!(
            e,
            "cannot reach the endpoint http://127.0.0.1:1 (Connection refused (os error 111)): is the server up and the endpoint URL right?"
        );
        let e = unreachable(None, "", "dns error").to_string();
        assert!(
            e.starts_with("cannot reach the endpoint (dns error)"),
            "{e}"
        );
    }

    #[test]
    fn missing_credentials_are_one_line() {
        assert!(is_metadata_fallback(
            "Error performing token request: http://169.254.169.254/latest/api/token: resolve_deny"
        ));
        assert!(!is_metadata_fallback(
            "error sending request for http://127.0.0.1:1"
        ));
        for scheme in ["s3", "az", "gs"] {
            let e = no_credentials(scheme).to_string();
            assert!(
                e.starts_with("no ") && e.contains("credentials found"),
                "{e}"
            );
            assert!(!e.contains('\n') && !e.contains("169.254"), "{e}");
        }
    }
}
