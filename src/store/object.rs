//! [`Backend`] over the `object_store` crate (local disk now; S3, Azure and
//! GCS as pool members).

use std::ops::Range;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};

use anyhow::{Context, Result, anyhow, bail};
use futures::TryStreamExt;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

use super::{Backend, NotFound, ObjectInfo};

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
}

/// Opens a repository URL: a plain path or `file:///path`.
pub fn open_url(url: &str) -> Result<ObjectBackend> {
    if url.is_empty() {
        bail!("no repository given: use --repo, STRATA_REPO or a config file");
    }
    let path = if let Some(rest) = url.strip_prefix("file://") {
        PathBuf::from(rest)
    } else if url.contains("://") {
        let scheme = url.split("://").next().unwrap_or_default();
        bail!("repository URL scheme {scheme:?} is not supported yet (use a local path)");
    } else {
        PathBuf::from(url)
    };
    let abs = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(ObjectBackend {
        store: OnceLock::new(),
        location: abs.display().to_string(),
        local_root: Some(abs),
    })
}

fn map_err(key: &str, e: object_store::Error) -> anyhow::Error {
    match e {
        object_store::Error::NotFound { .. } => anyhow!(NotFound(key.to_string())),
        other => anyhow!(other),
    }
}

impl ObjectBackend {
    fn block<F: std::future::Future>(&self, f: F) -> F::Output {
        runtime().block_on(f)
    }

    fn store(&self) -> Result<&Arc<dyn ObjectStore>> {
        if let Some(s) = self.store.get() {
            return Ok(s);
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
}

impl Backend for ObjectBackend {
    fn location(&self) -> String {
        self.location.clone()
    }

    fn put(&self, key: &str, bytes: Vec<u8>) -> Result<()> {
        let path = ObjPath::from(key);
        self.block(self.store()?.put(&path, PutPayload::from(bytes)))
            .map_err(|e| map_err(key, e))
            .with_context(|| format!("writing {key} to {}", self.location))?;
        Ok(())
    }

    fn get(&self, key: &str) -> Result<Vec<u8>> {
        let path = ObjPath::from(key);
        let store = self.store()?;
        self.block(async {
            let r = store.get(&path).await?;
            r.bytes().await
        })
        .map(|b| b.to_vec())
        .map_err(|e| map_err(key, e))
        .with_context(|| format!("reading {key} from {}", self.location))
    }

    fn get_range(&self, key: &str, range: Range<u64>) -> Result<Vec<u8>> {
        let path = ObjPath::from(key);
        let want = range.end - range.start;
        let bytes = self
            .block(self.store()?.get_range(&path, range.clone()))
            .map_err(|e| map_err(key, e))
            .with_context(|| format!("reading {key} from {}", self.location))?;
        if bytes.len() as u64 != want {
            bail!("short read of {key}: got {} of {want} bytes", bytes.len());
        }
        Ok(bytes.to_vec())
    }

    fn list(&self, prefix: &str) -> Result<Vec<ObjectInfo>> {
        let p = ObjPath::from(prefix.trim_end_matches('/'));
        let metas: Vec<object_store::ObjectMeta> = self
            .block(self.store()?.list(Some(&p)).try_collect())
            .or_else(|e| match e {
                object_store::Error::NotFound { .. } => Ok(Vec::new()),
                other => Err(other),
            })
            .with_context(|| format!("listing {prefix} in {}", self.location))?;
        Ok(metas
            .into_iter()
            .map(|m| ObjectInfo {
                key: m.location.to_string(),
                size: m.size,
            })
            .collect())
    }

    fn size(&self, key: &str) -> Result<u64> {
        let path = ObjPath::from(key);
        self.block(self.store()?.head(&path))
            .map(|m| m.size)
            .map_err(|e| map_err(key, e))
            .with_context(|| format!("checking {key} in {}", self.location))
    }

    fn delete(&self, key: &str) -> Result<()> {
        let path = ObjPath::from(key);
        match self.block(self.store()?.delete(&path)) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                Err(anyhow!(e)).with_context(|| format!("deleting {key} in {}", self.location))
            }
        }
    }

    fn exists(&self) -> Result<bool> {
        match &self.local_root {
            Some(root) => Ok(root.is_dir()),
            None => Ok(true),
        }
    }

    fn create(&self) -> Result<()> {
        if let Some(root) = &self.local_root {
            std::fs::create_dir_all(root)
                .with_context(|| format!("creating repository directory {}", root.display()))?;
        }
        Ok(())
    }
}
