//! Uploads: one PUT up to the multipart threshold, a multipart upload in
//! parts above it.

use object_store::path::Path as ObjPath;
use object_store::{ObjectStore, PutPayload, WriteMultipart};

/// Objects larger than this go up as a multipart upload; smaller ones in a
/// single PUT (a multi-piece `PutPayload` is still one request). A multipart
/// upload costs at least three requests (create, parts, complete), so every
/// pack at the default 16 MiB and up to 64 MiB goes up in one request; the
/// bound keeps one request's body small enough to send within the client
/// timeout on a slow uplink.
pub(super) const MULTIPART_THRESHOLD: usize = 64 * 1024 * 1024;
/// Size of one part (S3 requires at least 5 MiB for all but the last): a
/// 1 GiB pack (the largest pack size) is 32 parts, 34 requests.
pub(super) const PART_SIZE: usize = 32 * 1024 * 1024;
/// Parts in flight per object.
pub(super) const PART_CONCURRENCY: usize = 4;

/// Whether an object of `len` bytes goes up as a multipart upload (never to
/// a local folder).
pub(super) fn uses_multipart(len: usize, local: bool) -> bool {
    !local && len > MULTIPART_THRESHOLD
}

pub(super) async fn put_multipart(
    store: &dyn ObjectStore,
    path: &ObjPath,
    payload: PutPayload,
    attributes: object_store::Attributes,
) -> object_store::Result<()> {
    let opts = object_store::PutMultipartOptions {
        attributes,
        ..Default::default()
    };
    let upload = store.put_multipart_opts(path, opts).await?;
    // WriteMultipart gathers the pieces into parts of PART_SIZE.
    let mut writer = WriteMultipart::new_with_chunk_size(upload, PART_SIZE);
    for bytes in payload.iter() {
        let mut offset = 0;
        while offset < bytes.len() {
            if let Err(e) = writer.wait_for_capacity(PART_CONCURRENCY).await {
                let _ = writer.abort().await;
                return Err(e);
            }
            let end = (offset + PART_SIZE).min(bytes.len());
            writer.put(bytes.slice(offset..end));
            offset = end;
        }
    }
    writer.finish().await.map(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn packs_go_up_in_one_request_and_large_objects_in_few() {
        // Packs at the default size, a little over it (the last blob), and
        // up to 64 MiB: one PUT each.
        for len in [1 << 20, 16 << 20, (16 << 20) + 300_000, 64 << 20] {
            assert!(!uses_multipart(len, false), "{len}");
        }
        assert!(uses_multipart((64 << 20) + 1, false));
        // Never for a local folder.
        assert!(!uses_multipart(1 << 30, true));
        // The largest pack (1 GiB): create, parts and complete stay within
        // the 70 write requests per GiB budget.
        let requests = (1usize << 30).div_ceil(PART_SIZE) + 2;
        assert!(requests <= 70, "{requests}");
    }
}
