//! The object-store servers `scripts/servers start` runs on 127.0.0.1
//! (SeaweedFS over S3, Azurite, fake-gcs-server), found through the
//! STRATA_TEST_* variables, and unique names for buckets and prefixes on them.

/// The S3 test server `scripts/test` starts (SeaweedFS on 127.0.0.1), from
/// the STRATA_TEST_S3_* variables.
pub struct S3 {
    pub endpoint: String,
    pub bucket: String,
    pub key: String,
    pub secret: String,
}

/// The S3 test server, or `None` (with a note) outside CI when it is not
/// running; under CI its absence fails the test.
pub fn s3_server() -> Option<S3> {
    let get = |k: &str| std::env::var(k).ok();
    let Some(endpoint) = get("STRATA_TEST_S3_ENDPOINT") else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must run these tests against real servers: run them through ./scripts/test"
        );
        eprintln!("skipped: no S3 test server (run ./scripts/test, which starts SeaweedFS)");
        return None;
    };
    Some(S3 {
        endpoint,
        bucket: get("STRATA_TEST_S3_BUCKET").unwrap_or_else(|| "strata".into()),
        key: get("STRATA_TEST_S3_KEY").unwrap_or_default(),
        secret: get("STRATA_TEST_S3_SECRET").unwrap_or_default(),
    })
}

/// Every test server a pool test needs: S3, Azurite (reached through the
/// emulator defaults) and fake-gcs-server.
pub struct Servers {
    pub s3: S3,
    /// fake-gcs-server's address (through scripts/gcs-adapter).
    pub gcs: String,
}

/// All the test servers, or `None` (with a note) outside CI when one is not
/// running; under CI their absence fails the test.
pub fn pool_servers() -> Option<Servers> {
    let get = |k: &str| std::env::var(k).ok();
    if let (Some(_), Some(_), Some(gcs)) = (
        get("STRATA_TEST_S3_ENDPOINT"),
        get("STRATA_TEST_AZURITE"),
        get("STRATA_TEST_GCS"),
    ) {
        let s3 = s3_server()?;
        return Some(Servers { s3, gcs });
    }
    assert!(
        std::env::var_os("CI").is_none(),
        "CI must run these tests against real servers: run them through ./scripts/test"
    );
    eprintln!("skipped: no test servers (run ./scripts/test, which starts SeaweedFS and Azurite)");
    None
}

/// A name no other test run uses: `tag`, the process id and a random number.
pub fn unique(tag: &str) -> String {
    format!("{tag}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}
