//! object_store errors as the rest of the store reports them.

use anyhow::anyhow;

use crate::store::{AccessDenied, NotFound};

/// The messages of an error and its sources, outermost first.
pub(super) fn error_chain(e: &object_store::Error) -> Vec<String> {
    std::iter::successors(Some(e as &dyn std::error::Error), |e| e.source())
        .map(|e| e.to_string())
        .collect()
}

/// An object_store error as the rest of the store reports it: missing
/// object, access denied, no credentials, endpoint unreachable (naming it),
/// or as it is. `scheme` is the repository URL's (`s3`, `az`, `gs`, `file`).
pub(super) fn map_err(scheme: &str, key: &str, e: object_store::Error) -> anyhow::Error {
    use object_store::Error as E;
    match e {
        E::NotFound { .. } => anyhow!(NotFound(key.to_string())),
        E::PermissionDenied { .. } | E::Unauthenticated { .. } => anyhow!(AccessDenied),
        other => {
            let chain = error_chain(&other);
            let text = chain.join(": ");
            if crate::store::is_metadata_fallback(&text) {
                crate::store::no_credentials(scheme)
            } else if text.contains("tcp connect error")
                || text.contains("dns error")
                || text.contains("error sending request")
            {
                crate::store::unreachable(None, &text, chain.last().cloned().unwrap_or_default())
            } else {
                anyhow!(other)
            }
        }
    }
}
