//! The restore plan by pack: which blobs of which pack go to which file
//! offsets, and how each pack is read (its needed blobs coalesced into as
//! few ranged reads as the read policy allows).

use std::collections::HashMap;
use std::ops::Range;

use crate::id::Id;
use crate::repo::index::Index;
use crate::repo::pack::PackEntry;

/// Where one blob's plaintext goes: a file (its number among the files
/// restored) and an offset in it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Target {
    pub file: u32,
    pub offset: u64,
}

/// What one pack contributes: its needed blobs, sorted by offset once the
/// plan is complete, and where each goes (a blob used many times is read
/// once).
pub(super) struct PackJob {
    pub pack: Id,
    pub blobs: Vec<PackEntry>,
    pub targets: Vec<Vec<Target>>,
}

/// How one file's content was planned.
pub(super) struct FilePlan {
    /// Blob placements to write before the file is complete.
    pub placements: u32,
    /// The first blob the index lacks: nothing after it has a known
    /// offset, so the file stops there and is damaged.
    pub missing: Option<Id>,
}

/// The plan by pack, built file by file.
#[derive(Default)]
pub(super) struct PackPlan {
    jobs: Vec<PackJob>,
    /// Per pack: its job.
    job_of: HashMap<Id, usize>,
    /// Per blob: its job and position there.
    slot: HashMap<Id, (usize, usize)>,
}

impl PackPlan {
    /// Plans the content of file `file` (blobs `content`, in order).
    pub fn add_file(&mut self, index: &Index, file: u32, content: &[Id]) -> FilePlan {
        let mut offset = 0u64;
        let mut placements = 0u32;
        for id in content {
            let target = Target { file, offset };
            if let Some(&(j, k)) = self.slot.get(id) {
                offset += self.jobs[j].blobs[k].raw_len as u64;
                self.jobs[j].targets[k].push(target);
                placements += 1;
                continue;
            }
            let Some((pack, entry)) = index.get(id) else {
                return FilePlan {
                    placements,
                    missing: Some(*id),
                };
            };
            offset += entry.raw_len as u64;
            placements += 1;
            let jobs = &mut self.jobs;
            let j = *self.job_of.entry(pack).or_insert_with(|| {
                jobs.push(PackJob {
                    pack,
                    blobs: Vec::new(),
                    targets: Vec::new(),
                });
                jobs.len() - 1
            });
            self.slot.insert(*id, (j, self.jobs[j].blobs.len()));
            self.jobs[j].blobs.push(entry);
            self.jobs[j].targets.push(vec![target]);
        }
        FilePlan {
            placements,
            missing: None,
        }
    }

    /// The jobs, each with its blobs sorted by offset, the packs with the
    /// most bytes to read first (the long reads start early).
    pub fn into_jobs(self) -> Vec<PackJob> {
        let mut jobs = self.jobs;
        for job in &mut jobs {
            let mut order: Vec<usize> = (0..job.blobs.len()).collect();
            order.sort_by_key(|&k| job.blobs[k].offset);
            job.blobs = order.iter().map(|&k| job.blobs[k]).collect();
            let mut targets = std::mem::take(&mut job.targets);
            job.targets = order
                .iter()
                .map(|&k| std::mem::take(&mut targets[k]))
                .collect();
        }
        jobs.sort_by_key(|j| {
            std::cmp::Reverse(j.blobs.iter().map(|e| e.stored_len as u64).sum::<u64>())
        });
        jobs
    }
}

/// How packs are read: local disk and object stores differ.
#[derive(Debug, Clone, Copy)]
pub(super) struct ReadPolicy {
    /// Largest gap between needed blobs that is read through rather than
    /// split into two reads.
    pub max_gap: u64,
    /// A read is not extended past this many bytes.
    pub max_span: u64,
    /// Plaintext bytes held before they are written out.
    pub flush_at: usize,
    /// Workers reading packs at once.
    pub workers: usize,
}

impl ReadPolicy {
    /// Local disk: reads cost no round trip, so spans stay small and the
    /// workers are the threads asked for.
    pub fn local(threads: usize) -> ReadPolicy {
        ReadPolicy {
            max_gap: 1 << 20,
            max_span: 4 << 20,
            flush_at: 4 << 20,
            workers: threads.max(1),
        }
    }

    /// Object stores: a request costs a round trip (10–50 ms), so a pack is
    /// read with one request (its whole needed span, gaps of up to 4 MiB
    /// read through: at cloud bandwidth that costs less than a round
    /// trip), and enough packs are in flight to hide the latency.
    pub fn remote(threads: usize) -> ReadPolicy {
        ReadPolicy {
            max_gap: 4 << 20,
            max_span: 1 << 30,
            flush_at: 4 << 20,
            workers: threads.max(12),
        }
    }
}

/// Splits a pack's needed blobs (sorted by offset) into runs read with one
/// request each: a run ends at a gap wider than `max_gap` or when it would
/// grow past `max_span` bytes.
pub(super) fn spans(blobs: &[PackEntry], max_gap: u64, max_span: u64) -> Vec<Range<usize>> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < blobs.len() {
        let start = blobs[i].offset as u64;
        let mut end = start + blobs[i].stored_len as u64;
        let mut j = i + 1;
        while j < blobs.len() {
            let next = &blobs[j];
            let next_end = next.offset as u64 + next.stored_len as u64;
            if next.offset as u64 > end + max_gap || next_end.max(end) - start > max_span {
                break;
            }
            end = end.max(next_end);
            j += 1;
        }
        out.push(i..j);
        i = j;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::repo::blob::{BlobType, Compression};

    fn entry(n: u8, offset: u32, len: u32) -> PackEntry {
        PackEntry {
            kind: BlobType::Data,
            compression: Compression::None,
            id: Id([n; 32]),
            offset,
            stored_len: len,
            raw_len: len - 40,
        }
    }

    #[test]
    fn spans_merge_near_blobs_and_split_far_or_long_ones() {
        let blobs = [
            entry(1, 0, 100),
            entry(2, 150, 100),  // gap 50: merged
            entry(3, 1000, 100), // gap 750: split at 500
            entry(4, 1100, 100),
        ];
        assert_eq!(spans(&blobs, 500, 10_000), vec![0..2, 2..4]);
        assert_eq!(spans(&blobs, 10_000, 10_000), vec![0..4]);
        // Length bound: no span longer than 300 bytes.
        assert_eq!(spans(&blobs, 10_000, 300), vec![0..2, 2..4]);
        assert_eq!(spans(&blobs, 10_000, 100), vec![0..1, 1..2, 2..3, 3..4]);
        assert!(spans(&[], 1, 1).is_empty());
    }

    #[test]
    fn a_blob_used_twice_is_read_once_and_files_stop_at_missing_blobs() {
        let pack_a = Id([0xa; 32]);
        let pack_b = Id([0xb; 32]);
        let mut index = Index::default();
        index.add_pack(pack_a, &[entry(1, 0, 140), entry(2, 140, 240)]);
        index.add_pack(pack_b, &[entry(3, 0, 1040)]);
        let mut plan = PackPlan::default();
        let f0 = plan.add_file(&index, 0, &[Id([2; 32]), Id([1; 32]), Id([3; 32])]);
        assert_eq!((f0.placements, f0.missing), (3, None));
        let f1 = plan.add_file(&index, 1, &[Id([1; 32]), Id([9; 32]), Id([2; 32])]);
        assert_eq!((f1.placements, f1.missing), (1, Some(Id([9; 32]))));
        let jobs = plan.into_jobs();
        // Pack b has more bytes to read: first.
        assert_eq!(jobs[0].pack, pack_b);
        assert_eq!(
            jobs[0].targets,
            vec![vec![Target {
                file: 0,
                offset: 300
            }]]
        );
        let a = &jobs[1];
        assert_eq!(a.pack, pack_a);
        // Sorted by offset in the pack; blob 1 goes to two files.
        assert_eq!(a.blobs[0].id, Id([1; 32]));
        assert_eq!(
            a.targets[0],
            vec![
                Target {
                    file: 0,
                    offset: 200
                },
                Target { file: 1, offset: 0 }
            ]
        );
        assert_eq!(a.targets[1], vec![Target { file: 0, offset: 0 }]);
    }
}
