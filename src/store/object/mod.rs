//! [`Backend`] over the `object_store` crate (local disk now; S3, Azure and
//! GCS as pool members).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use futures::TryStreamExt;

use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

mod errors;
mod local;
pub(super) mod open;
mod upload;

pub use open::open_url;

use crate::store::bucket::Bucket;
use crate::store::{Backend, NotFound, ObjectInfo};
use errors::map_err;
use local::{MAX_KEPT_READ_BUFFER, READ_BUFFER};
use upload::{put_multipart, uses_multipart};

/// Runs a future to completion on the shared I/O runtime (from blocking code).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// The shared async runtime that drives object_store from blocking code.
fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("strata-io")
            .enable_all()
            .build()
            .expect("tokio runtime starts")
    })
}

/// A backend on one `object_store` store.
pub struct ObjectBackend {
    /// Built on first use: LocalFileSystem refuses a missing directory, but
    /// `init` must be able to name one and create it.
    store: OnceLock<Arc<dyn ObjectStore>>,
    location: String,
    local_root: Option<PathBuf>,
    /// The bucket or container of a cloud store, for `create`.
    bucket: Option<Bucket>,
    /// S3 Object Lock: every write goes through aws-sdk-s3 with retention
    /// (set by [`crate::store::open_store`]; docs/IMMUTABILITY.md).
    pub(super) locked: Option<crate::store::immutable::LockedWriter>,
    /// Requests sent and how many failed (a missing object is no failure).
    counts: RequestCounter,
    /// S3 storage class per kind of object (set by [`crate::store::open_store`]).
    pub(super) storage_classes: crate::store::storage_class::StorageClasses,
    /// Stale spool files were swept (once per process, at the first spool).
    spool_swept: std::sync::Once,
}

/// Requests sent to a store and how many of them failed, for metrics.
#[derive(Default)]
struct RequestCounter {
    requests: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
}

impl RequestCounter {
    /// Counts one request and passes its result through.
    fn count<T>(&self, r: Result<T>) -> Result<T> {
        use std::sync::atomic::Ordering::Relaxed;
        self.requests.fetch_add(1, Relaxed);
        if let Err(e) = &r
            && !crate::store::is_not_found(e)
        {
            self.errors.fetch_add(1, Relaxed);
        }
        r
    }
}

impl ObjectBackend {
    /// [`map_err`] for this store.
    fn map_err(&self, key: &str, e: object_store::Error) -> anyhow::Error {
        let scheme = self.location.split_once("://").map_or("file", |(s, _)| s);
        map_err(scheme, key, e)
    }

    fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        self.store_creating(false)
    }

    /// The store; with `create`, a missing local folder is made first (a
    /// write to a wiped local member recreates it).
    fn store_creating(&self, create: bool) -> Result<&Arc<dyn ObjectStore>> {
        if let Some(s) = self.store.get() {
            return Ok(s);
        }
        if create {
            self.create()?;
        }
        let root = self
            .local_root
            .as_ref()
            .expect("only local stores are built lazily");
        if !root.is_dir() {
            bail!(NotFound(root.display().to_string()));
        }
        let fs = LocalFileSystem::new_with_prefix(root)
            .with_context(|| format!("opening {}", root.display()))?
            .with_fsync(true);
        Ok(self.store.get_or_init(|| Arc::new(fs)))
    }

    /// Writes a whole object in one request; only objects larger than
    /// [`upload::MULTIPART_THRESHOLD`] go up as a multipart upload whose parts are
    /// sent concurrently (and aborted on failure).
    async fn put_async_uncounted(&self, key: &str, payload: PutPayload) -> Result<()> {
        if let Some(locked) = &self.locked {
            return locked
                .put(key, Bytes::from(payload))
                .await
                .with_context(|| format!("writing {key} to {}", self.location));
        }
        let path = ObjPath::from(key);
        let store = self.store_creating(true)?;
        let mut attributes = object_store::Attributes::new();
        if let Some(class) = crate::store::storage_class::class_for(&self.storage_classes, key) {
            attributes.insert(
                object_store::Attribute::StorageClass,
                class.to_string().into(),
            );
        }
        let result = if uses_multipart(payload.content_length(), self.local_root.is_some()) {
            put_multipart(store.as_ref(), &path, payload, attributes).await
        } else {
            let opts = object_store::PutOptions {
                attributes,
                ..Default::default()
            };
            store.put_opts(&path, payload, opts).await.map(|_| ())
        };
        result
            .map_err(|e| match e {
                // Writing cannot miss an object: the bucket itself is missing.
                object_store::Error::NotFound { .. } => anyhow!(
                    "the bucket or container does not exist: `strata init` creates it for a new repository, `strata pool repair` for a pool member that lost it"
                ),
                other => self.map_err(key, other),
            })
            .with_context(|| format!("writing {key} to {}", self.location))
    }

    /// Reads a whole object.
    async fn get_async_uncounted(&self, key: &str) -> Result<Bytes> {
        let path = ObjPath::from(key);
        let store = self.store()?;
        async {
            let r = store.get(&path).await?;
            r.bytes().await
        }
        .await
        .map_err(|e| self.map_err(key, e))
        .with_context(|| format!("reading {key} from {}", self.location))
    }

    /// Reads a byte range, refusing short reads.
    async fn get_range_async_uncounted(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        let path = ObjPath::from(key);
        let want = range.end - range.start;
        let bytes = self
            .store()?
            .get_range(&path, range)
            .await
            .map_err(|e| self.map_err(key, e))
            .with_context(|| format!("reading {key} from {}", self.location))?;
        if bytes.len() as u64 != want {
            bail!("short read of {key}: got {} of {want} bytes", bytes.len());
        }
        Ok(bytes)
    }

    /// Lists objects under a prefix.
    async fn list_async_uncounted(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = ObjPath::from(prefix.trim_end_matches('/'));
        let store = match self.store() {
            Ok(s) => s,
            Err(e) if crate::store::is_not_found(&e) => {
                return Err(anyhow!(super::LocationMissing(self.location.clone())));
            }
            Err(e) => return Err(e),
        };
        let metas: Vec<object_store::ObjectMeta> = match store.list(Some(&p)).try_collect().await {
            Ok(m) => m,
            Err(object_store::Error::NotFound { .. }) => Vec::new(),
            // A missing bucket is told apart from an empty one: a member that
            // lost it lacks everything, and nothing may be deleted on the
            // strength of its listing.
            Err(_) if self.bucket.is_some() && !self.bucket_exists().await.unwrap_or(true) => {
                return Err(anyhow!(super::LocationMissing(self.location.clone())));
            }
            Err(e) => {
                return Err(self.map_err(prefix, e))
                    .with_context(|| format!("listing {prefix} in {}", self.location));
            }
        };
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
                modified: Some(m.last_modified),
            })
            .collect())
    }

    /// Size of an object.
    async fn size_async_uncounted(&self, key: &str) -> Result<u64> {
        let path = ObjPath::from(key);
        self.store()?
            .head(&path)
            .await
            .map(|m| m.size)
            .map_err(|e| self.map_err(key, e))
            .with_context(|| format!("checking {key} in {}", self.location))
    }

    /// Deletes an object; a missing one is fine.
    async fn delete_async_uncounted(&self, key: &str) -> Result<()> {
        let path = ObjPath::from(key);
        match self.store()?.delete(&path).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.map_err(key, e))
                .with_context(|| format!("deleting {key} in {}", self.location)),
        }
    }
}

impl ObjectBackend {
    /// A cloud repository's key prefix in its bucket, with a trailing `/`
    /// (empty at the bucket root); `None` for a local one.
    fn key_prefix(&self) -> Option<String> {
        self.bucket.as_ref()?;
        let (_, rest) = self.location.split_once("://")?;
        let prefix = rest.split_once('/').map_or("", |(_, p)| p);
        Some(if prefix.is_empty() {
            String::new()
        } else {
            format!("{prefix}/")
        })
    }

    /// True when the bucket or container exists (one bucket-level request).
    async fn bucket_exists(&self) -> Result<bool> {
        let bucket = self
            .bucket
            .as_ref()
            .expect("cloud stores know their bucket");
        bucket
            .exists()
            .await
            .with_context(|| format!("checking {}", self.location))
    }

    /// Deletes the location itself: the (emptied) bucket or container, or
    /// the local folder with everything in it. For tests that simulate
    /// losing a whole pool member.
    pub fn remove_location(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            return match std::fs::remove_dir_all(root) {
                Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(e.into()),
                _ => Ok(()),
            };
        }
        let bucket = self
            .bucket
            .as_ref()
            .expect("cloud stores know their bucket");
        block_on(bucket.remove())
    }

    /// Writes a whole object; large ones go up as a multipart upload whose
    /// parts are sent concurrently (and aborted on failure).
    pub async fn put_async(&self, key: &str, payload: impl Into<PutPayload>) -> Result<()> {
        super::tally::tally(super::RequestClass::Put);
        self.counts
            .count(self.put_async_uncounted(key, payload.into()).await)
    }

    /// Reads a whole object.
    pub async fn get_async(&self, key: &str) -> Result<Bytes> {
        super::tally::tally(super::RequestClass::Get);
        self.counts.count(self.get_async_uncounted(key).await)
    }

    /// Reads a byte range, refusing short reads.
    pub async fn get_range_async(&self, key: &str, range: Range<u64>) -> Result<Bytes> {
        super::tally::tally(super::RequestClass::Get);
        self.counts
            .count(self.get_range_async_uncounted(key, range).await)
    }

    /// Lists objects under a prefix.
    pub async fn list_async(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        super::tally::tally(super::RequestClass::List);
        self.counts.count(self.list_async_uncounted(prefix).await)
    }

    /// Size of an object.
    pub async fn size_async(&self, key: &str) -> Result<u64> {
        super::tally::tally(super::RequestClass::Head);
        self.counts.count(self.size_async_uncounted(key).await)
    }

    /// Deletes an object; a missing one is fine.
    pub async fn delete_async(&self, key: &str) -> Result<()> {
        super::tally::tally(super::RequestClass::Delete);
        self.counts.count(self.delete_async_uncounted(key).await)
    }

    /// Requests sent so far and how many failed.
    pub fn request_counts(&self) -> (u64, u64) {
        use std::sync::atomic::Ordering::Relaxed;
        (
            self.counts.requests.load(Relaxed),
            self.counts.errors.load(Relaxed),
        )
    }
}

impl Backend for ObjectBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn default_uploads(&self) -> usize {
        if self.local_root.is_some() { 2 } else { 4 }
    }

    fn request_counts(&self) -> Vec<crate::store::RequestCounts> {
        let (requests, errors) = ObjectBackend::request_counts(self);
        vec![crate::store::RequestCounts {
            member: String::new(),
            requests,
            errors,
        }]
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        block_on(self.put_async(key, Bytes::from(bytes)))
    }

    fn put_parts(&self, key: &str, parts: &[Bytes]) -> Result<()> {
        block_on(self.put_async(key, parts.iter().cloned().collect::<PutPayload>()))
    }

    fn incomplete_uploads(&self) -> Result<Vec<crate::store::PendingUpload>> {
        let (Some(bucket), Some(prefix)) = (&self.bucket, self.key_prefix()) else {
            return Ok(Vec::new());
        };
        let listed = self
            .counts
            .count(block_on(bucket.multipart_uploads(&prefix)))
            .with_context(|| format!("listing incomplete uploads in {}", self.location))?;
        Ok(listed
            .unwrap_or_default()
            .into_iter()
            .filter_map(|mut u| {
                u.key = u.key.strip_prefix(&prefix)?.to_string();
                Some(u)
            })
            .collect())
    }

    fn abort_upload(&self, upload: &crate::store::PendingUpload) -> Result<()> {
        let (Some(bucket), Some(prefix)) = (&self.bucket, self.key_prefix()) else {
            bail!("{} has no multipart uploads", self.location);
        };
        let full = crate::store::PendingUpload {
            key: format!("{prefix}{}", upload.key),
            ..upload.clone()
        };
        self.counts
            .count(block_on(bucket.abort_upload(&full)))
            .with_context(|| format!("in {}", self.location))
    }

    fn can_spool(&self) -> bool {
        self.local_root.is_some() && self.locked.is_none()
    }

    fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        match &self.local_root {
            // One read buffer per thread, kept: restores read thousands of
            // spans, and fresh buffers cost a page fault per 4 KiB.
            Some(root) => READ_BUFFER.with(|buf| {
                super::tally::tally(super::RequestClass::Get);
                let mut buf = buf.borrow_mut();
                let bytes = self
                    .counts
                    .count(self.read_local_into(root, key, range, &mut buf));
                let result = bytes.and_then(|()| accept(&buf));
                if buf.capacity() > MAX_KEPT_READ_BUFFER {
                    *buf = Vec::new();
                }
                result
            }),
            None => accept(&block_on(self.get_range_async(key, range))?),
        }
    }

    fn spool(&self) -> Result<Option<Box<dyn crate::store::Spool>>> {
        let Some(root) = self.local_root.as_ref().filter(|_| self.locked.is_none()) else {
            return Ok(None);
        };
        self.spool_swept.call_once(|| {
            let n = super::spool::sweep_stale(root);
            if n > 0 {
                tracing::info!("removed {n} unfinished pack file(s) left by an interrupted backup");
            }
        });
        let spool = super::spool::LocalSpool::create(root)
            .with_context(|| format!("writing to {}", self.location))?;
        Ok(Some(Box::new(spool)))
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        if let Some(root) = &self.local_root {
            super::tally::tally(super::RequestClass::Get);
            return self.counts.count(self.read_local(root, key));
        }
        block_on(self.get_async(key)).map(|b| b.to_vec())
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        if let Some(root) = &self.local_root {
            let mut buf = Vec::new();
            super::tally::tally(super::RequestClass::Get);
            return self
                .counts
                .count(self.read_local_into(root, key, range, &mut buf))
                .map(|()| buf);
        }
        block_on(self.get_range_async(key, range)).map(|b| b.to_vec())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        block_on(self.list_async(prefix))
    }

    fn size(&self, key: &str) -> Result<u64> {
        block_on(self.size_async(key))
    }

    fn delete(&self, key: &str) -> Result<()> {
        block_on(self.delete_async(key))
    }

    fn exists(&self) -> Result<bool> {
        match &self.local_root {
            Some(root) => Ok(root.is_dir()),
            None => {
                super::tally::tally(super::RequestClass::Head);
                self.counts.count(block_on(self.bucket_exists()))
            }
        }
    }

    fn create(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating repository directory {}", root.display()))?;
            return Ok(());
        }
        if let Some(locked) = &self.locked {
            // Object Lock can only be enabled when a bucket is created.
            return self
                .counts
                .count(block_on(locked.ensure_bucket()))
                .with_context(|| format!("creating {}", self.location));
        }
        if self.exists()? {
            return Ok(());
        }
        let bucket = self
            .bucket
            .as_ref()
            .expect("cloud stores know their bucket");
        super::tally::tally(super::RequestClass::Put);
        self.counts
            .count(block_on(bucket.create()))
            .with_context(|| format!("creating {}", self.location))
    }
}
