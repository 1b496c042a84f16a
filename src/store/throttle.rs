//! Bandwidth limits (`--limit-upload`, `--limit-download`): a [`Backend`]
//! that makes requests wait so the bytes sent (or received) stay at a rate.
//! Wrapping the whole repository backend, a pool included, makes the limit
//! apply to the total across its members.

use std::ops::Range;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};

use super::{Backend, ObjectInfo, Replicated, StoreListing};

/// Bytes a throttle lets through at once before it starts to make requests
/// wait: one second's worth, so small objects are not delayed one by one.
const BURST: Duration = Duration::from_secs(1);

/// A rate in bytes per second, parsed from `2MiB`, `500KiB`, `1.5MB/s`,
/// `10000` (bytes); `0` or `off` means no limit.
pub fn parse_rate(text: &str) -> Result<Option<u64>> {
    let t = text.trim();
    let t = t.strip_suffix("/s").unwrap_or(t).trim();
    if t.is_empty() || t.eq_ignore_ascii_case("off") || t == "0" {
        return Ok(None);
    }
    let rate = crate::report::parse_size(t).map_err(|_| {
        anyhow::anyhow!("{text:?} is not a rate: give e.g. 2MiB (per second), 500KiB or off")
    })?;
    if rate == 0 {
        bail!("{text:?} is not a usable rate (at least 1 byte per second)");
    }
    Ok(Some(rate))
}

/// A rate limit shared by every request in one direction (GCRA: each
/// request moves a virtual finishing time forward by its size over the
/// rate, and waits while that time is more than [`BURST`] ahead of now).
#[derive(Debug)]
pub struct Throttle {
    rate: u64,
    finish: Mutex<Option<Instant>>,
}

impl Throttle {
    /// A limit of `rate` bytes per second.
    pub fn new(rate: u64) -> Throttle {
        Throttle {
            rate: rate.max(1),
            finish: Mutex::new(None),
        }
    }

    /// How long a request of `bytes` must wait at `now`; books it.
    pub fn book(&self, bytes: u64, now: Instant) -> Duration {
        let cost = Duration::from_secs_f64(bytes as f64 / self.rate as f64);
        let mut finish = self.finish.lock().expect("throttle");
        let start = finish.map_or(now, |f| f.max(now));
        let end = start + cost;
        *finish = Some(end);
        end.saturating_duration_since(now).saturating_sub(BURST)
    }

    fn wait(&self, bytes: u64) {
        let d = self.book(bytes, Instant::now());
        if !d.is_zero() {
            std::thread::sleep(d);
        }
    }
}

/// A backend whose uploads and downloads are held to rates.
pub struct Throttled {
    inner: std::sync::Arc<dyn Backend>,
    up: Option<Throttle>,
    down: Option<Throttle>,
}

impl Throttled {
    /// `inner` with the given limits (bytes per second; `None`: unlimited).
    pub fn new(
        inner: std::sync::Arc<dyn Backend>,
        upload: Option<u64>,
        download: Option<u64>,
    ) -> Throttled {
        Throttled {
            inner,
            up: upload.map(Throttle::new),
            down: download.map(Throttle::new),
        }
    }

    fn sent(&self, bytes: usize) {
        if let Some(t) = &self.up {
            t.wait(bytes as u64);
        }
    }

    fn received(&self, bytes: usize) {
        if let Some(t) = &self.down {
            t.wait(bytes as u64);
        }
    }
}

impl Backend for Throttled {
    fn location(&self) -> String {
        self.inner.location()
    }
    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        self.sent(bytes.len());
        self.inner.put(key, bytes)
    }
    fn put_parts(&self, key: &str, parts: &[bytes::Bytes]) -> Result<()> {
        self.sent(parts.iter().map(|p| p.len()).sum());
        self.inner.put_parts(key, parts)
    }
    // With an upload limit, packs go through `put` (a local repository may
    // be a network mount), not written in place.
    fn spool(&self) -> Result<Option<Box<dyn super::Spool>>> {
        match self.up {
            Some(_) => Ok(None),
            None => self.inner.spool(),
        }
    }
    fn can_spool(&self) -> bool {
        self.up.is_none() && self.inner.can_spool()
    }
    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let b = self.inner.get(key)?;
        self.received(b.len());
        Ok(b)
    }
    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        self.received((range.end - range.start) as usize);
        self.inner.get_range(key, range)
    }
    fn read(&self, key: &str, accept: &mut dyn FnMut(&[u8]) -> Result<()>) -> Result<()> {
        self.inner.read(key, &mut |b| {
            self.received(b.len());
            accept(b)
        })
    }
    fn read_range(
        &self,
        key: &str,
        range: Range<u64>,
        accept: &mut dyn FnMut(&[u8]) -> Result<()>,
    ) -> Result<()> {
        self.received((range.end - range.start) as usize);
        self.inner.read_range(key, range, accept)
    }
    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        self.inner.list(prefix)
    }
    fn list_each(&self, prefix: &str) -> Result<Vec<StoreListing>> {
        self.inner.list_each(prefix)
    }
    fn size(&self, key: &str) -> Result<u64> {
        self.inner.size(key)
    }
    fn delete(&self, key: &str) -> Result<()> {
        self.inner.delete(key)
    }
    fn exists(&self) -> Result<bool> {
        self.inner.exists()
    }
    fn create(&self) -> Result<()> {
        self.inner.create()
    }
    fn delete_refused(&self, key: &str) -> Result<Vec<String>> {
        self.inner.delete_refused(key)
    }
    fn incomplete_uploads(&self) -> Result<Vec<super::PendingUpload>> {
        self.inner.incomplete_uploads()
    }
    fn abort_upload(&self, upload: &super::PendingUpload) -> Result<()> {
        self.inner.abort_upload(upload)
    }
    fn default_uploads(&self) -> usize {
        self.inner.default_uploads()
    }
    fn request_counts(&self) -> Vec<super::RequestCounts> {
        self.inner.request_counts()
    }
    fn replicated(&self) -> Option<&dyn Replicated> {
        self.inner.replicated()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_with_units() {
        assert_eq!(parse_rate("2MiB").unwrap(), Some(2 << 20));
        assert_eq!(parse_rate("2MiB/s").unwrap(), Some(2 << 20));
        assert_eq!(parse_rate("500 KiB").unwrap(), Some(500 << 10));
        assert_eq!(parse_rate("1.5MB").unwrap(), Some(1_500_000));
        assert_eq!(parse_rate("10000").unwrap(), Some(10_000));
        assert_eq!(parse_rate("off").unwrap(), None);
        assert_eq!(parse_rate("0").unwrap(), None);
        assert!(parse_rate("fast").is_err());
        assert!(parse_rate("2XB").is_err());
        assert!(parse_rate("0.1").is_err());
    }

    #[test]
    fn throttle_holds_the_rate_after_one_burst() {
        let t = Throttle::new(1_000_000);
        let now = Instant::now();
        // One second's worth goes at once.
        assert_eq!(t.book(1_000_000, now), Duration::ZERO);
        // The next 4 MB wait until 5 s of sending are booked, less the burst.
        let wait = t.book(4_000_000, now);
        assert_eq!(wait, Duration::from_secs(4));
        // Ten seconds later the debt is paid: no wait.
        assert_eq!(
            t.book(500_000, now + Duration::from_secs(10)),
            Duration::ZERO
        );
        // 100 MB at 1 MB/s take 100 s in all, whatever the request sizes.
        let t = Throttle::new(1_000_000);
        let total: Duration = (0..100).map(|_| t.book(1_000_000, now)).max().unwrap();
        assert_eq!(total, Duration::from_secs(99));
    }
}
