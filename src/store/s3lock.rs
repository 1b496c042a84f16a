//! Object writes with S3 Object Lock retention, through aws-sdk-s3 (cargo
//! feature `object-lock`; see docs/IMMUTABILITY.md).
//!
//! The SDK client is built from the very settings `object_store` uses for the
//! same URL: `AmazonS3Builder::from_env()` (AWS_* variables) overridden by the
//! member's `aws_*` options gives the endpoint, region and addressing style,
//! and the credentials are asked of the `object_store` credential provider
//! itself, so static keys, session tokens, web identity, ECS and instance
//! credentials all work exactly as for every other request.
//!
//! Every object is one PutObject, also packs above the 16 MiB multipart
//! threshold `object_store` uses: a single PutObject takes up to 5 GiB (packs
//! are at most 1 GiB), carries the retention headers and one whole-object
//! checksum, and is retried as a whole by the SDK's standard retry strategy.
//! Multipart would need the headers on CreateMultipartUpload, a checksum per
//! part and an abort on every failure path, for no gain in safety.

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime};

use anyhow::{Context, Result, anyhow, bail};
use aws_credential_types::provider::error::CredentialsError;
use aws_credential_types::provider::future;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{
    Credentials, IdentityCache, ProvideCredentials, Region, retry::RetryConfig,
    timeout::TimeoutConfig,
};
use aws_sdk_s3::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_s3::primitives::{ByteStream, DateTime};
use aws_sdk_s3::types::{
    BucketLocationConstraint, ChecksumAlgorithm, CreateBucketConfiguration, ObjectLockEnabled,
    ObjectLockMode,
};
use bytes::Bytes;
use object_store::aws::{AmazonS3Builder, AmazonS3ConfigKey, AwsCredentialProvider};

use super::immutable::{LockMode, ObjectLockConfig};

/// The largest object one PutObject may carry.
const MAX_PUT: u64 = 5 * 1024 * 1024 * 1024;
/// Attempts per request (the first and six retries), as `object_store` does.
const MAX_ATTEMPTS: u32 = 7;

/// Writes the objects of one S3 store with Object Lock retention.
pub struct LockedWriter {
    client: Client,
    bucket: String,
    /// Key prefix inside the bucket, empty or ending in `/`.
    prefix: String,
    lock: ObjectLockConfig,
}

/// Hands the SDK the credentials `object_store` resolved for the same store
/// (it caches and refreshes them itself).
#[derive(Debug)]
struct SameCredentials(AwsCredentialProvider);

impl ProvideCredentials for SameCredentials {
    fn provide_credentials<'a>(&'a self) -> future::ProvideCredentials<'a>
    where
        Self: 'a,
    {
        future::ProvideCredentials::new(async move {
            let c = self
                .0
                .get_credential()
                .await
                .map_err(CredentialsError::provider_error)?;
            Ok(Credentials::new(
                &c.key_id,
                &c.secret_key,
                c.token.clone(),
                None,
                "object_store",
            ))
        })
    }
}

impl LockedWriter {
    /// A writer for `s3://bucket/prefix` with the store's `options`.
    pub(super) fn new(
        url: &str,
        options: &BTreeMap<String, String>,
        lock: ObjectLockConfig,
    ) -> Result<LockedWriter> {
        let rest = url
            .strip_prefix("s3://")
            .ok_or_else(|| anyhow!("object_lock works only on S3 (s3://) storage, not on {url}"))?;
        let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
        let prefix = prefix.trim_matches('/');
        let (b, region) =
            super::object::open::s3_builder(AmazonS3Builder::from_env(), bucket, options, url)?;
        let endpoint = b.get_config_value(&AmazonS3ConfigKey::Endpoint);
        let virtual_hosted = b
            .get_config_value(&AmazonS3ConfigKey::VirtualHostedStyleRequest)
            .is_some_and(|v| v.eq_ignore_ascii_case("true"));
        let store = b
            .build()
            .with_context(|| format!("configuring {url} for object lock"))?;
        let mut config = aws_sdk_s3::Config::builder()
            .behavior_version_latest()
            .region(Region::new(region))
            .credentials_provider(SameCredentials(store.credentials().clone()))
            .identity_cache(IdentityCache::no_cache())
            .force_path_style(!virtual_hosted)
            .retry_config(RetryConfig::standard().with_max_attempts(MAX_ATTEMPTS))
            .timeout_config(
                TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(10))
                    .operation_attempt_timeout(Duration::from_secs(120))
                    .build(),
            );
        if let Some(e) = endpoint {
            config = config.endpoint_url(sdk_endpoint(&e, bucket, virtual_hosted));
        }
        Ok(LockedWriter {
            client: Client::from_conf(config.build()),
            bucket: bucket.to_string(),
            prefix: if prefix.is_empty() {
                String::new()
            } else {
                format!("{prefix}/")
            },
            lock,
        })
    }

    /// Writes one object with retention until now + `days`.
    pub async fn put(&self, key: &str, bytes: Bytes) -> Result<()> {
        let len = bytes.len() as u64;
        if len > MAX_PUT {
            bail!("object of {len} bytes is larger than one S3 PutObject takes (5 GiB)");
        }
        let until = SystemTime::now() + Duration::from_secs(u64::from(self.lock.days) * 86_400);
        let mode = match self.lock.mode {
            LockMode::Governance => ObjectLockMode::Governance,
            LockMode::Compliance => ObjectLockMode::Compliance,
        };
        self.client
            .put_object()
            .bucket(&self.bucket)
            .key(format!("{}{key}", self.prefix))
            .content_length(len as i64)
            // Object Lock PUTs must carry an integrity checksum.
            .checksum_algorithm(ChecksumAlgorithm::Crc32)
            .object_lock_mode(mode)
            .object_lock_retain_until_date(DateTime::from(until))
            .body(ByteStream::from(bytes))
            .send()
            .await
            .map_err(|e| match error_code(&e).as_deref() {
                // AWS says "Bucket is missing Object Lock Configuration";
                // other servers only "Invalid Request".
                Some("InvalidRequest") => anyhow!(
                    "{} (does bucket {} have S3 Object Lock enabled? Only a new bucket can get it: `strata init` with object_lock creates one)",
                    describe(&e),
                    self.bucket
                ),
                _ => anyhow!(describe(&e)),
            })?;
        Ok(())
    }

    /// Makes sure the bucket has Object Lock enabled, creating it with Object
    /// Lock when it does not exist; refuses a bucket without it.
    pub async fn ensure_bucket(&self) -> Result<()> {
        let refuse = || {
            anyhow!(
                "bucket {} exists but does not have S3 Object Lock enabled, so objects could not be locked: use a new bucket (strata init creates it with Object Lock) or enable Object Lock on this one",
                self.bucket
            )
        };
        match self
            .client
            .get_object_lock_configuration()
            .bucket(&self.bucket)
            .send()
            .await
        {
            Ok(out) => {
                let enabled = out
                    .object_lock_configuration()
                    .and_then(|c| c.object_lock_enabled())
                    == Some(&ObjectLockEnabled::Enabled);
                if enabled { Ok(()) } else { Err(refuse()) }
            }
            Err(e) => match error_code(&e).as_deref() {
                Some("ObjectLockConfigurationNotFoundError") => Err(refuse()),
                Some("NoSuchBucket") => self.create_bucket().await,
                _ => Err(anyhow!(
                    "checking S3 Object Lock on bucket {}: {}",
                    self.bucket,
                    describe(&e)
                )),
            },
        }
    }

    /// Creates the bucket with Object Lock enabled.
    async fn create_bucket(&self) -> Result<()> {
        let region = self.client.config().region().map(|r| r.to_string());
        let mut req = self
            .client
            .create_bucket()
            .bucket(&self.bucket)
            .object_lock_enabled_for_bucket(true);
        // us-east-1 is the one region that must not be named.
        if let Some(r) = region.filter(|r| r != "us-east-1") {
            req = req.create_bucket_configuration(
                CreateBucketConfiguration::builder()
                    .location_constraint(BucketLocationConstraint::from(r.as_str()))
                    .build(),
            );
        }
        match req.send().await {
            Ok(_) => Ok(()),
            // Someone else made it in between: check it as an existing one.
            Err(e) if error_code(&e).as_deref() == Some("BucketAlreadyOwnedByYou") => {
                Box::pin(self.ensure_bucket()).await
            }
            Err(e) => Err(anyhow!(
                "creating bucket {} with S3 Object Lock: {}",
                self.bucket,
                describe(&e)
            )),
        }
    }
}

/// The endpoint for the SDK. `object_store` wants the bucket in the host
/// name of a virtual-hosted endpoint; the SDK adds it itself.
fn sdk_endpoint(endpoint: &str, bucket: &str, virtual_hosted: bool) -> String {
    if !virtual_hosted {
        return endpoint.to_string();
    }
    match url::Url::parse(endpoint) {
        Ok(mut u) => {
            if let Some(host) = u
                .host_str()
                .and_then(|h| h.strip_prefix(&format!("{bucket}.")))
                .map(str::to_string)
            {
                let _ = u.set_host(Some(&host));
            }
            u.as_str().trim_end_matches('/').to_string()
        }
        Err(_) => endpoint.to_string(),
    }
}

/// The S3 error code of a failed request, if the server sent one.
fn error_code<E: ProvideErrorMetadata, R>(e: &SdkError<E, R>) -> Option<String> {
    match e {
        SdkError::ServiceError(s) => s.err().code().map(str::to_string),
        _ => None,
    }
}

/// One line saying what went wrong: the server's code and message, or the
/// transport failure.
fn describe<E: ProvideErrorMetadata + std::error::Error + 'static, R: std::fmt::Debug>(
    e: &SdkError<E, R>,
) -> String {
    match e {
        SdkError::ServiceError(s) => {
            let err = s.err();
            match (err.code(), err.message()) {
                (Some("AccessDenied"), _) => {
                    "access denied: check the credentials (AWS_* or the config's options) and the bucket policy".into()
                }
                (Some(code), Some(msg)) => format!("{code}: {msg}"),
                (Some(code), None) => code.to_string(),
                _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
            }
        }
        SdkError::DispatchFailure(_) | SdkError::TimeoutError(_) => {
            let text = aws_sdk_s3::error::DisplayErrorContext(e).to_string();
            super::unreachable(None, &text, &text).to_string()
        }
        _ => aws_sdk_s3::error::DisplayErrorContext(e).to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::sdk_endpoint;

    #[test]
    fn endpoint_addressing() {
        assert_eq!(
            sdk_endpoint("http://127.0.0.1:8333", "b", false),
            "http://127.0.0.1:8333"
        );
        assert_eq!(
            sdk_endpoint("https://b.s3.eu-west-1.amazonaws.com", "b", true),
            "https://s3.eu-west-1.amazonaws.com"
        );
        assert_eq!(
            sdk_endpoint("https://s3.example.com", "b", true),
            "https://s3.example.com"
        );
    }
}
