//! Opening a store from a URL and options: a local folder, S3, Azure or GCS.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};

use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey};
use object_store::azure::{AzureConfigKey, MicrosoftAzureBuilder};
use object_store::gcp::{GoogleCloudStorageBuilder, GoogleConfigKey};
use object_store::{ClientConfigKey, ClientOptions, RetryConfig};

use object_store::ObjectStore;
use object_store::prefix::PrefixStore;

use super::{ObjectBackend, RequestCounter};
use crate::store::bucket::{AzureSite, Bucket};

/// Opens a repository URL: a plain path, `file:///path`, `s3://bucket/prefix`,
/// `az://container/prefix` or `gs://bucket/prefix`.
///
/// Cloud credentials and endpoints come from each cloud's standard
/// environment variables (AWS_*, AZURE_*, GOOGLE_*), overridden by `options`
/// (object_store configuration keys such as `aws_endpoint`).
pub fn open_url(url: &str, options: &BTreeMap<String, String>) -> Result<ObjectBackend> {
    if url.is_empty() {
        bail!("no repository given: use --repo, STRATA_REPO or a config file");
    }
    let Some((scheme, rest)) = url.split_once("://") else {
        return local(PathBuf::from(url), options);
    };
    match scheme {
        "file" => local(PathBuf::from(rest), options),
        "s3" | "az" | "azure" | "gs" => cloud(scheme, rest, options),
        other => bail!(
            "repository URL scheme {other:?} is not supported: use a path, file://, s3://, az:// or gs://"
        ),
    }
}

fn local(path: PathBuf, options: &BTreeMap<String, String>) -> Result<ObjectBackend> {
    if let Some(k) = options.keys().next() {
        bail!("option {k:?} does not apply to a local repository");
    }
    let abs = if path.is_absolute() {
        path
    } else {
        std::env::current_dir()?.join(path)
    };
    Ok(ObjectBackend {
        store: OnceLock::new(),
        location: abs.display().to_string(),
        local_root: Some(abs),
        bucket: None,
        locked: None,
        counts: RequestCounter::default(),
        storage_classes: Default::default(),
        spool_swept: std::sync::Once::new(),
    })
}

fn cloud(scheme: &str, rest: &str, options: &BTreeMap<String, String>) -> Result<ObjectBackend> {
    let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
    let prefix = prefix.trim_matches('/');
    if bucket.is_empty() || bucket.contains('@') {
        bail!(
            "repository URL {scheme}://{rest} needs a bucket or container name (credentials never go in the URL)"
        );
    }
    let location = format!("{scheme}://{bucket}/{prefix}");
    let client = ClientOptions::new()
        .with_timeout(Duration::from_secs(120))
        .with_connect_timeout(Duration::from_secs(10));
    // Retries with exponential backoff on 5xx, throttling and timeouts; the
    // budget is bounded so a dead pool member is given up on in about a minute.
    let retry = RetryConfig {
        max_retries: 6,
        retry_timeout: Duration::from_secs(60),
        ..RetryConfig::default()
    };
    let bad_key = |k: &str| anyhow!("unknown option {k:?} for {location}");
    let bucket_of;
    let store: Arc<dyn ObjectStore> = match scheme {
        "s3" => {
            // Client options first: they replace every client setting,
            // including an `aws_allow_http` given in `options`.
            let base = AmazonS3Builder::from_env()
                .with_client_options(client.clone())
                .with_retry(retry.clone());
            let (b, region) = s3_builder(base, bucket, options, &location)?;
            let allow_http = b
                .get_config_value(&AmazonS3ConfigKey::Client(ClientConfigKey::AllowHttp))
                .is_some_and(|v| v == "true");
            let s3 = Arc::new(
                b.build()
                    .with_context(|| format!("configuring {location}"))?,
            );
            let client = client.clone().with_allow_http(allow_http);
            bucket_of = Bucket::s3(bucket, s3.clone(), region, &client)?;
            s3
        }
        "az" | "azure" => {
            let mut b = MicrosoftAzureBuilder::from_env()
                .with_client_options(client.clone())
                .with_retry(retry.clone())
                .with_container_name(bucket);
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|_| bad_key(k))?, v);
            }
            let flag = |k: AzureConfigKey| {
                b.get_config_value(&k).is_some_and(|v| {
                    matches!(v.to_ascii_lowercase().as_str(), "true" | "1" | "yes")
                })
            };
            let site = AzureSite {
                account: b.get_config_value(&AzureConfigKey::AccountName),
                endpoint: b.get_config_value(&AzureConfigKey::Endpoint),
                use_emulator: flag(AzureConfigKey::UseEmulator),
                use_fabric: flag(AzureConfigKey::UseFabricEndpoint),
            };
            let client = client.clone().with_allow_http(
                site.use_emulator || flag(AzureConfigKey::Client(ClientConfigKey::AllowHttp)),
            );
            let az = Arc::new(
                b.build()
                    .with_context(|| format!("configuring {location}"))?,
            );
            bucket_of = Bucket::azure(bucket, az.clone(), site, &client)?;
            az
        }
        _ => {
            let mut b = GoogleCloudStorageBuilder::from_env()
                .with_client_options(client.clone())
                .with_retry(retry.clone())
                .with_bucket_name(bucket);
            for (k, v) in options {
                b = b.with_config(k.parse().map_err(|_| bad_key(k))?, v);
            }
            let key_json = b
                .get_config_value(&GoogleConfigKey::ServiceAccountKey)
                .or_else(|| {
                    b.get_config_value(&GoogleConfigKey::ServiceAccount)
                        .and_then(|path| std::fs::read_to_string(path).ok())
                });
            let client = client.clone().with_allow_http(
                b.get_config_value(&GoogleConfigKey::Client(ClientConfigKey::AllowHttp))
                    .is_some_and(|v| v == "true"),
            );
            let gcs = Arc::new(
                b.build()
                    .with_context(|| format!("configuring {location}"))?,
            );
            bucket_of = Bucket::gcs(bucket, gcs.clone(), key_json.as_deref(), &client)?;
            gcs
        }
    };
    let store: Arc<dyn ObjectStore> = if prefix.is_empty() {
        store
    } else {
        Arc::new(PrefixStore::new(store, prefix))
    };
    let cell = OnceLock::new();
    let _ = cell.set(store);
    Ok(ObjectBackend {
        store: cell,
        location,
        local_root: None,
        bucket: Some(bucket_of),
        locked: None,
        counts: RequestCounter::default(),
        storage_classes: Default::default(),
        spool_swept: std::sync::Once::new(),
    })
}

/// `base` (from the AWS_* environment) set up for `bucket` with `options`,
/// and its region (us-east-1 unless set). A plain-HTTP endpoint given
/// explicitly (local servers) is allowed.
pub(in crate::store) fn s3_builder(
    base: AmazonS3Builder,
    bucket: &str,
    options: &BTreeMap<String, String>,
    location: &str,
) -> Result<(AmazonS3Builder, String)> {
    let mut b = base.with_bucket_name(bucket);
    for (k, v) in options {
        let key: AmazonS3ConfigKey = k
            .parse()
            .map_err(|_| anyhow!("unknown option {k:?} for {location}"))?;
        b = b.with_config(key, v);
    }
    let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
    if let Some(e) = &endpoint {
        // object_store panics while signing when the endpoint is not an
        // absolute URL.
        let host = e
            .strip_prefix("http://")
            .or_else(|| e.strip_prefix("https://"))
            .unwrap_or_default();
        if host.is_empty() || host.starts_with('/') {
            bail!(
                "S3 endpoint {e:?} for {location} is not a URL: give it as http://HOST:PORT or https://HOST (aws_endpoint option, STRATA_REPO_OPTION_AWS_ENDPOINT or AWS_ENDPOINT)"
            );
        }
    }
    if endpoint.is_some_and(|e| e.starts_with("http://")) {
        b = b.with_allow_http(true);
    }
    let region = b
        .get_config_value(&AmazonS3ConfigKey::Region)
        .unwrap_or_else(|| "us-east-1".into());
    Ok((b.with_region(&region), region))
}
