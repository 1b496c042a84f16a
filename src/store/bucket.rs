//! Creating (and removing) the bucket or container a cloud repository URL
//! names. `object_store` only handles objects, so these few requests are
//! signed with its public authorizers and sent with its HTTP client: the same
//! credentials, endpoints and TLS settings as every other request.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use bytes::Bytes;
use http::{Method, StatusCode};
use object_store::ClientOptions;
use object_store::aws::AmazonS3;
use object_store::azure::{AzureAuthorizer, MicrosoftAzure};
use object_store::client::{HttpClient, HttpConnector, HttpRequest, ReqwestConnector};
use object_store::gcp::GoogleCloudStorage;
use object_store::path::Path as ObjPath;
use object_store::signer::Signer;

/// What is needed to create or delete one bucket or container.
pub(super) struct Bucket {
    /// Bucket or container name.
    pub name: String,
    kind: Kind,
    http: HttpClient,
}

enum Kind {
    S3 {
        store: Arc<AmazonS3>,
        region: String,
    },
    Azure {
        store: Arc<MicrosoftAzure>,
        account: String,
        container_url: String,
    },
    Gcs {
        store: Arc<GoogleCloudStorage>,
        base_url: String,
        project: Option<String>,
    },
}

/// The settings of an Azure store that decide its container URL.
pub(super) struct AzureSite {
    pub account: Option<String>,
    pub endpoint: Option<String>,
    pub use_emulator: bool,
    pub use_fabric: bool,
}

impl Bucket {
    /// An S3 bucket in `region`.
    pub fn s3(
        name: &str,
        store: Arc<AmazonS3>,
        region: String,
        options: &ClientOptions,
    ) -> Result<Bucket> {
        Self::new(name, Kind::S3 { store, region }, options)
    }

    /// An Azure Blob container; its URL follows the rules object_store uses.
    pub fn azure(
        name: &str,
        store: Arc<MicrosoftAzure>,
        site: AzureSite,
        options: &ClientOptions,
    ) -> Result<Bucket> {
        let (account, base) = if site.use_emulator {
            let account = site.account.unwrap_or_else(|| "devstoreaccount1".into());
            let base = std::env::var("AZURITE_BLOB_STORAGE_URL")
                .unwrap_or_else(|_| "http://127.0.0.1:10000".into());
            let base = format!("{}/{account}", base.trim_end_matches('/'));
            (account, base)
        } else {
            let account = site
                .account
                .ok_or_else(|| anyhow!("no Azure storage account: set AZURE_STORAGE_ACCOUNT_NAME or the azure_storage_account_name option"))?;
            let base = match site.endpoint {
                Some(e) => e,
                None if site.use_fabric => format!("https://{account}.blob.fabric.microsoft.com"),
                None => format!("https://{account}.blob.core.windows.net"),
            };
            (account, base)
        };
        let container_url = format!("{}/{name}", base.trim_end_matches('/'));
        let kind = Kind::Azure {
            store,
            account,
            container_url,
        };
        Self::new(name, kind, options)
    }

    /// A GCS bucket. `key_json` is the service account key (if any): it may
    /// name another API endpoint (`gcs_base_url`) and the project.
    pub fn gcs(
        name: &str,
        store: Arc<GoogleCloudStorage>,
        key_json: Option<&str>,
        options: &ClientOptions,
    ) -> Result<Bucket> {
        let key: serde_json::Value = key_json
            .and_then(|k| serde_json::from_str(k).ok())
            .unwrap_or_default();
        let base_url = key["gcs_base_url"]
            .as_str()
            .unwrap_or("https://storage.googleapis.com")
            .trim_end_matches('/')
            .to_string();
        let project = std::env::var("GOOGLE_CLOUD_PROJECT")
            .ok()
            .or_else(|| key["project_id"].as_str().map(str::to_string))
            .filter(|p| !p.is_empty());
        let kind = Kind::Gcs {
            store,
            base_url,
            project,
        };
        Self::new(name, kind, options)
    }

    fn new(name: &str, kind: Kind, options: &ClientOptions) -> Result<Bucket> {
        let http = ReqwestConnector::default()
            .connect(options)
            .context("building the HTTP client")?;
        Ok(Bucket {
            name: name.to_string(),
            kind,
            http,
        })
    }

    /// Creates the bucket or container; one that already exists and is ours
    /// is fine.
    pub async fn create(&self) -> Result<()> {
        let (status, body) = self.send(Op::Create).await?;
        let code = error_code(&body);
        match (status, code.as_str()) {
            (s, _) if s.is_success() => Ok(()),
            (StatusCode::CONFLICT, "BucketAlreadyExists") => bail!(
                "the bucket name {} is taken by another account: choose another bucket",
                self.name
            ),
            // Owned by us already, or (Azure, GCS) simply there already.
            (StatusCode::CONFLICT, _) => Ok(()),
            (StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED, _) => bail!(
                "{} does not exist and these credentials may not create it: create it, or allow them to ({})",
                self.what(),
                self.permission()
            ),
            (s, _) => bail!("creating {} failed: {}", self.what(), describe(s, &body)),
        }
    }

    /// True when the bucket or container exists.
    pub async fn exists(&self) -> Result<bool> {
        let (status, body) = self.send(Op::Probe).await?;
        match status {
            s if s.is_success() => Ok(true),
            StatusCode::NOT_FOUND => Ok(false),
            StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => bail!(super::AccessDenied),
            StatusCode::BAD_REQUEST => bail!(
                "the server rejected {} (400 Bad Request): check the name against the provider's naming rules",
                self.what()
            ),
            s => bail!("checking {} failed: {}", self.what(), describe(s, &body)),
        }
    }

    /// Deletes the (empty) bucket or container.
    pub async fn remove(&self) -> Result<()> {
        let (status, body) = self.send(Op::Remove).await?;
        if status.is_success() || status == StatusCode::NOT_FOUND {
            return Ok(());
        }
        bail!(
            "deleting {} failed: {}",
            self.what(),
            describe(status, &body)
        )
    }

    fn what(&self) -> String {
        match self.kind {
            Kind::Azure { .. } => format!("container {}", self.name),
            _ => format!("bucket {}", self.name),
        }
    }

    fn permission(&self) -> &'static str {
        match self.kind {
            Kind::S3 { .. } => "s3:CreateBucket",
            Kind::Azure { .. } => "Microsoft.Storage/storageAccounts/blobServices/containers/write",
            Kind::Gcs { .. } => "storage.buckets.create",
        }
    }

    async fn send(&self, op: Op) -> Result<(StatusCode, Bytes)> {
        let request = self.request(op).await?;
        let endpoint = super::origin_in(&request.uri().to_string());
        let response = self.http.execute(request).await.map_err(|e| {
            let chain = chain(&e);
            super::unreachable(endpoint, "", chain.last().cloned().unwrap_or_default())
        })?;
        let status = response.status();
        let body = response.into_body().bytes().await.unwrap_or_default();
        Ok((status, body))
    }

    /// A failure to get credentials or sign with them; one line when there
    /// were none to find.
    fn credential_error(&self, what: &str, e: &object_store::Error) -> anyhow::Error {
        if super::is_metadata_fallback(&chain(e).join(": ")) {
            let scheme = match self.kind {
                Kind::S3 { .. } => "s3",
                Kind::Azure { .. } => "az",
                Kind::Gcs { .. } => "gs",
            };
            return super::no_credentials(scheme);
        }
        anyhow!("{what}: {e}")
    }

    async fn request(&self, op: Op) -> Result<HttpRequest> {
        let builder = http::Request::builder();
        let request = match &self.kind {
            Kind::S3 { store, region } => {
                let method = op.method(Method::PUT);
                // A presigned URL for the bucket root is a signed bucket request.
                let url = store
                    .signed_url(method.clone(), &ObjPath::from(""), Duration::from_secs(300))
                    .await
                    .map_err(|e| self.credential_error("signing the bucket request", &e))?;
                let body = match op {
                    Op::Create if region != "us-east-1" => format!(
                        "<CreateBucketConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\"><LocationConstraint>{region}</LocationConstraint></CreateBucketConfiguration>"
                    ),
                    _ => String::new(),
                };
                builder
                    .method(method)
                    .uri(url.as_str())
                    .body(Bytes::from(body).into())?
            }
            Kind::Azure {
                store,
                account,
                container_url,
            } => {
                let method = op.method(Method::PUT);
                let mut request = builder
                    .method(method)
                    .uri(format!("{container_url}?restype=container"))
                    .header(http::header::CONTENT_LENGTH, "0")
                    .body(Bytes::new().into())?;
                let credential = store
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(|e| self.credential_error("getting Azure credentials", &e))?;
                AzureAuthorizer::new(&credential, account)
                    .try_authorize(&mut request)
                    .map_err(|e| anyhow!("signing the container request: {e}"))?;
                request
            }
            Kind::Gcs {
                store,
                base_url,
                project,
            } => {
                let request = match op {
                    Op::Create => {
                        let Some(project) = project else {
                            bail!(
                                "bucket {} does not exist and no project is known to create it in: set GOOGLE_CLOUD_PROJECT, or create it (gcloud storage buckets create gs://{})",
                                self.name,
                                self.name
                            );
                        };
                        let body = serde_json::json!({ "name": self.name }).to_string();
                        builder
                            .method(Method::POST)
                            .uri(format!(
                                "{base_url}/storage/v1/b?project={}",
                                url_encode(project)
                            ))
                            .header(http::header::CONTENT_TYPE, "application/json")
                            .body(Bytes::from(body).into())?
                    }
                    // The JSON API answers GET (not HEAD) on a bucket.
                    Op::Probe | Op::Remove => builder
                        .method(match op {
                            Op::Probe => Method::GET,
                            _ => Method::DELETE,
                        })
                        .uri(format!(
                            "{base_url}/storage/v1/b/{}",
                            url_encode(&self.name)
                        ))
                        .body(Bytes::new().into())?,
                };
                let credential = store
                    .credentials()
                    .get_credential()
                    .await
                    .map_err(|e| self.credential_error("getting Google credentials", &e))?;
                let mut request = request;
                if !credential.bearer.is_empty() {
                    let value = format!("Bearer {}", credential.bearer).parse()?;
                    request
                        .headers_mut()
                        .insert(http::header::AUTHORIZATION, value);
                }
                request
            }
        };
        Ok(request)
    }
}

#[derive(Clone, Copy)]
enum Op {
    Probe,
    Create,
    Remove,
}

impl Op {
    /// The HTTP method; `create` differs between clouds.
    fn method(self, create: Method) -> Method {
        match self {
            Op::Probe => Method::HEAD,
            Op::Create => create,
            Op::Remove => Method::DELETE,
        }
    }
}

/// The messages of an error and its sources, outermost first.
fn chain(e: &dyn std::error::Error) -> Vec<String> {
    std::iter::successors(Some(e), |e| e.source())
        .map(|e| e.to_string())
        .collect()
}

/// The error code in an S3/Azure XML or GCS JSON error body, if any.
fn error_code(body: &[u8]) -> String {
    let text = String::from_utf8_lossy(body);
    if let Some(start) = text.find("<Code>") {
        let rest = &text[start + 6..];
        if let Some(end) = rest.find("</Code>") {
            return rest[..end].to_string();
        }
    }
    String::new()
}

/// "409 Conflict (BucketAlreadyExists)" for messages.
fn describe(status: StatusCode, body: &[u8]) -> String {
    match error_code(body) {
        c if c.is_empty() => status.to_string(),
        c => format!("{status} ({c})"),
    }
}

fn url_encode(s: &str) -> String {
    url::form_urlencoded::byte_serialize(s.as_bytes()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn error_codes_are_read_from_xml_bodies() {
        let body = b"<?xml version=\"1.0\"?><Error><Code>BucketAlreadyExists</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body), "BucketAlreadyExists");
        assert_eq!(
            describe(StatusCode::CONFLICT, body),
            "409 Conflict (BucketAlreadyExists)"
        );
        assert_eq!(error_code(b"{\"error\":{}}"), "");
        assert_eq!(error_code(b"<Code>unterminated"), "");
        assert_eq!(describe(StatusCode::BAD_GATEWAY, b""), "502 Bad Gateway");
    }
}
