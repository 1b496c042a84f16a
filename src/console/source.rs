//! The repository behind the console: opened once, with cached figures
//! (repository statistics, the storage members' listings) that cost many
//! requests to compute.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Result;

use crate::id::Id;
use crate::repo::Repository;
use crate::session::Ctx;

/// How long a storage listing is reused.
const STORAGE_TTL: Duration = Duration::from_secs(60);

/// One store of the repository (a pool member, or the single store).
#[derive(Debug, Clone)]
pub struct StoreRow {
    /// Member name (`repository` for a single store).
    pub name: String,
    /// Listing it worked.
    pub reachable: bool,
    /// Objects it holds.
    pub objects: u64,
    /// Bytes it holds.
    pub bytes: u64,
    /// Objects other members hold and it lacks (0: whole).
    pub missing: u64,
    /// Why it is unreachable.
    pub error: Option<String>,
}

/// Whole-repository figures.
#[derive(Debug, Clone, Default)]
pub struct RepoFigures {
    /// Snapshots.
    pub snapshots: u64,
    /// Bytes of all packs.
    pub size: u64,
    /// Restore size of all snapshots over stored bytes.
    pub dedup_ratio: f64,
    /// Plaintext over stored bytes of the unique data.
    pub compression_ratio: f64,
}

/// Access to the repository for the console.
pub struct Source {
    ctx: Arc<Ctx>,
    repo: Mutex<Option<Arc<Repository>>>,
    storage: Mutex<Option<(Instant, Vec<StoreRow>)>>,
    figures: Mutex<Option<(Vec<Id>, RepoFigures)>>,
}

impl Source {
    /// The repository `ctx` describes (opened on first use).
    pub fn new(ctx: Arc<Ctx>) -> Source {
        Source {
            ctx,
            repo: Mutex::new(None),
            storage: Mutex::new(None),
            figures: Mutex::new(None),
        }
    }

    /// The opened repository.
    pub fn repo(&self) -> Result<Arc<Repository>> {
        let mut r = self.repo.lock().expect("repo");
        if let Some(repo) = &*r {
            return Ok(repo.clone());
        }
        let repo = self.ctx.open()?;
        *r = Some(repo.clone());
        Ok(repo)
    }

    /// Figures over all snapshots, recomputed when the snapshots change.
    pub fn figures(&self) -> Result<RepoFigures> {
        let repo = self.repo()?;
        let snaps = repo.snapshots(crate::repo::OnDamage::Skip)?.objects;
        let ids: Vec<Id> = snaps.iter().map(|(id, _)| *id).collect();
        if let Some((seen, f)) = &*self.figures.lock().expect("figures")
            && *seen == ids
        {
            return Ok(f.clone());
        }
        // New snapshots: the storage listing is out of date too.
        *self.storage.lock().expect("storage") = None;
        let index = repo.load_index()?;
        let roots: Vec<Id> = snaps.iter().map(|(_, s)| s.tree).collect();
        let s = crate::inspect::stats(&repo, &index, &roots)?;
        let f = RepoFigures {
            snapshots: s.snapshots,
            size: s.repository_size,
            dedup_ratio: s.dedup_ratio,
            compression_ratio: s.compression_ratio,
        };
        *self.figures.lock().expect("figures") = Some((ids, f.clone()));
        Ok(f)
    }

    /// Each store's listing (cached for a minute, or until the snapshots
    /// change).
    pub fn storage(&self) -> Vec<StoreRow> {
        if let Some((at, rows)) = &*self.storage.lock().expect("storage")
            && at.elapsed() < STORAGE_TTL
        {
            return rows.clone();
        }
        let rows = self.list_storage();
        *self.storage.lock().expect("storage") = Some((Instant::now(), rows.clone()));
        rows
    }

    fn list_storage(&self) -> Vec<StoreRow> {
        let failed = |name: &str, e: &anyhow::Error| StoreRow {
            name: name.into(),
            reachable: false,
            objects: 0,
            bytes: 0,
            missing: 0,
            error: Some(crate::error::one_line(e)),
        };
        if self.ctx.pool.is_some() {
            return match self.ctx.pool() {
                Ok(pool) => crate::pool::status::status(&pool)
                    .into_iter()
                    .map(|m| StoreRow {
                        name: m.name,
                        reachable: m.reachable,
                        objects: m.objects.values().sum(),
                        bytes: m.bytes,
                        missing: m.missing.len() as u64,
                        error: m.error,
                    })
                    .collect(),
                Err(e) => vec![failed("pool", &e)],
            };
        }
        let listed = self.ctx.backend().and_then(|b| b.list(""));
        match listed {
            Ok(objects) => vec![StoreRow {
                name: "repository".into(),
                reachable: true,
                objects: objects.len() as u64,
                bytes: objects.iter().map(|o| o.size).sum(),
                missing: 0,
                error: None,
            }],
            Err(e) => vec![failed("repository", &e)],
        }
    }
}
