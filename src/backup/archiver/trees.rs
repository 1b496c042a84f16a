//! The finalizer: assembles directory trees in post-order as their files
//! complete, and saves them through the saver.

use crossbeam_channel::Receiver;

use super::{BackupRun, DirJob, FileOutcome, Pending};
use crate::id::Id;
use crate::repo::blob::BlobType;
use crate::repo::tree::Tree;

pub(super) fn finalize_dirs(shared: &BackupRun, rx: Receiver<DirJob>) {
    for job in rx {
        let mut tree = Tree {
            nodes: Vec::with_capacity(job.nodes.len()),
        };
        let mut ok = true;
        for p in job.nodes {
            match p {
                Pending::Ready(n) => tree.nodes.push(n),
                Pending::File(rx) => {
                    if let Ok(FileOutcome::Saved(n)) = rx.recv() {
                        tree.nodes.push(n);
                    }
                }
                Pending::Dir(mut n, rx) => match rx.recv() {
                    Ok(Some(id)) => {
                        n.subtree = Some(id);
                        tree.nodes.push(n);
                    }
                    _ => ok = false,
                },
            }
        }
        let id = if ok { save_tree(shared, &tree) } else { None };
        let _ = job.reply.send(id);
    }
}

pub(super) fn save_tree(shared: &BackupRun, tree: &Tree) -> Option<Id> {
    match shared.saver.save_if_new(BlobType::Tree, &tree.encode()) {
        Ok((id, _)) => Some(id),
        Err(e) => {
            shared.fatal(e);
            None
        }
    }
}
