//! Downloads: one file streamed as it is read from the repository, or a
//! directory streamed as a tar archive. Only nodes of the snapshot's tree
//! are ever read; nothing on the host's file system is.

use std::ffi::OsStr;
use std::io::{self, Read, Write};
use std::os::unix::ffi::OsStrExt;
use std::path::Path;
use std::sync::Arc;

use axum::body::{Body, Bytes};
use tokio::sync::mpsc;

use crate::id::Id;
use crate::repo::Repository;
use crate::repo::blob::BlobType;
use crate::repo::index::Index;
use crate::repo::tree::{Node, NodeKind};

type Chunk = Result<Bytes, io::Error>;

/// A writer sending what it gets to an HTTP body.
struct ChannelWriter(mpsc::Sender<Chunk>);

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.0
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| io::Error::new(io::ErrorKind::BrokenPipe, "the client went away"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

/// A file's content, read blob by blob.
struct ContentReader {
    repo: Arc<Repository>,
    index: Arc<Index>,
    ids: Vec<Id>,
    next: usize,
    buf: Vec<u8>,
    pos: usize,
}

impl Read for ContentReader {
    fn read(&mut self, out: &mut [u8]) -> io::Result<usize> {
        while self.pos == self.buf.len() {
            let Some(id) = self.ids.get(self.next) else {
                return Ok(0);
            };
            self.next += 1;
            self.buf = self
                .repo
                .read_blob(&self.index, BlobType::Data, id)
                .map_err(|e| io::Error::other(crate::error::one_line(&e)))?;
            self.pos = 0;
        }
        let n = out.len().min(self.buf.len() - self.pos);
        out[..n].copy_from_slice(&self.buf[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}

/// Runs `produce` on a thread of its own, writing into the returned body.
/// An error midway ends the body with an error, so the client sees a broken
/// download rather than a short file.
fn stream(produce: impl FnOnce(&mut dyn Write) -> io::Result<()> + Send + 'static) -> Body {
    let (tx, rx) = mpsc::channel::<Chunk>(8);
    let err_tx = tx.clone();
    let spawned = std::thread::Builder::new()
        .name("strata-download".into())
        .spawn(move || {
            let mut w = io::BufWriter::with_capacity(256 * 1024, ChannelWriter(tx));
            let r = produce(&mut w).and_then(|_| w.flush());
            if let Err(e) = r
                && e.kind() != io::ErrorKind::BrokenPipe
            {
                tracing::warn!("download stopped: {e}");
                let _ = err_tx.blocking_send(Err(e));
            }
        });
    if let Err(e) = spawned {
        return Body::from_stream(futures::stream::once(async move { Err::<Bytes, _>(e) }));
    }
    Body::from_stream(futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|c| (c, rx))
    }))
}

/// The content of a regular file node.
pub fn file_body(repo: Arc<Repository>, index: Arc<Index>, node: &Node) -> Body {
    let mut reader = ContentReader {
        repo,
        index,
        ids: node.content.clone(),
        next: 0,
        buf: Vec::new(),
        pos: 0,
    };
    stream(move |w| io::copy(&mut reader, w).map(drop))
}

/// A tar archive of directory `tree`, its entries named below `name`.
pub fn tar_body(repo: Arc<Repository>, index: Arc<Index>, tree: Id, name: String) -> Body {
    stream(move |w| {
        let mut b = tar::Builder::new(w);
        b.mode(tar::HeaderMode::Complete);
        add_dir(&mut b, &repo, &index, &tree, Path::new(&name))?;
        b.finish()
    })
}

fn header_for(node: &Node, kind: tar::EntryType, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(node.mode & 0o7777);
    h.set_uid(node.uid.into());
    h.set_gid(node.gid.into());
    h.set_mtime(node.mtime.max(0) as u64);
    h.set_size(size);
    h
}

fn add_dir(
    b: &mut tar::Builder<&mut dyn Write>,
    repo: &Arc<Repository>,
    index: &Arc<Index>,
    tree: &Id,
    dir: &Path,
) -> io::Result<()> {
    let t = repo
        .load_tree(index, tree)
        .map_err(|e| io::Error::other(crate::error::one_line(&e)))?;
    for node in &t.nodes {
        let path = dir.join(OsStr::from_bytes(&node.name.0));
        match node.kind {
            NodeKind::Dir => {
                let mut h = header_for(node, tar::EntryType::Directory, 0);
                b.append_data(&mut h, &path, io::empty())?;
                if let Some(sub) = &node.subtree {
                    add_dir(b, repo, index, sub, &path)?;
                }
            }
            NodeKind::File => {
                let mut h = header_for(node, tar::EntryType::Regular, node.size);
                let reader = ContentReader {
                    repo: repo.clone(),
                    index: index.clone(),
                    ids: node.content.clone(),
                    next: 0,
                    buf: Vec::new(),
                    pos: 0,
                };
                b.append_data(&mut h, &path, reader)?;
            }
            NodeKind::Symlink => {
                let mut h = header_for(node, tar::EntryType::Symlink, 0);
                let target = node
                    .target
                    .as_ref()
                    .map(|t| t.0.clone())
                    .unwrap_or_default();
                b.append_link(&mut h, &path, OsStr::from_bytes(&target))?;
            }
            // Devices, pipes and sockets are left out of a download.
            _ => {}
        }
    }
    Ok(())
}

/// A `Content-Disposition` value naming `name` safely for any browser.
pub fn disposition(name: &str) -> String {
    let plain: String = name
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || "._-+".contains(c) {
                c
            } else {
                '_'
            }
        })
        .collect();
    let encoded: String = url::form_urlencoded::byte_serialize(name.as_bytes())
        .collect::<String>()
        .replace('+', "%20");
    format!("attachment; filename=\"{plain}\"; filename*=UTF-8''{encoded}")
}

#[cfg(test)]
mod tests {
    use super::disposition;

    #[test]
    fn disposition_cannot_break_the_header() {
        let d = disposition("a\"b;\r\nc é.txt");
        assert!(
            d.starts_with("attachment; filename=\"a_b___c__.txt\""),
            "{d}"
        );
        assert!(!d.contains('\r') && !d.contains('\n'));
        assert!(
            d.ends_with("filename*=UTF-8''a%22b%3B%0D%0Ac%20%C3%A9.txt"),
            "{d}"
        );
    }
}
