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
use object_store::aws::{AmazonS3, AwsAuthorizer};
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

    /// The incomplete multipart uploads under `prefix` (full keys); `None`
    /// where the store has no such listing (Azure and GCS: Azure drops
    /// uncommitted blocks after a week by itself). One LIST request per
    /// 1,000 uploads.
    pub async fn multipart_uploads(&self, prefix: &str) -> Result<Option<Vec<PendingUpload>>> {
        let Kind::S3 { store, region } = &self.kind else {
            return Ok(None);
        };
        // The bucket's URL, as object_store addresses it (path or virtual
        // host style, custom endpoint): a presigned URL of its root.
        let mut base = store
            .signed_url(Method::GET, &ObjPath::from(""), Duration::from_secs(60))
            .await
            .map_err(|e| self.credential_error("signing the bucket request", &e))?;
        base.set_query(None);
        let base = base.as_str().trim_end_matches('/').to_string();
        let credential = store
            .credentials()
            .get_credential()
            .await
            .map_err(|e| self.credential_error("getting S3 credentials", &e))?;
        let mut uploads = Vec::new();
        let mut marker: Option<(String, String)> = None;
        loop {
            let mut query = format!("uploads=&prefix={}", url_encode(prefix));
            if let Some((key, id)) = &marker {
                query.push_str(&format!(
                    "&key-marker={}&upload-id-marker={}",
                    url_encode(key),
                    url_encode(id)
                ));
            }
            let url = format!("{base}/?{query}");
            let mut request: HttpRequest = http::Request::builder()
                .method(Method::GET)
                .uri(url.as_str())
                .body(Bytes::new().into())?;
            AwsAuthorizer::new(&credential, "s3", region)
                .try_authorize(&mut request, None)
                .map_err(|e| anyhow!("signing the upload listing: {e}"))?;
            let endpoint = super::origin_in(&url);
            let response = self.http.execute(request).await.map_err(|e| {
                let chain = chain(&e);
                super::unreachable(endpoint, "", chain.last().cloned().unwrap_or_default())
            })?;
            let status = response.status();
            let body = response.into_body().bytes().await.unwrap_or_default();
            match status {
                s if s.is_success() => {}
                StatusCode::FORBIDDEN | StatusCode::UNAUTHORIZED => bail!(super::AccessDenied),
                s => bail!(
                    "listing the incomplete uploads in {} failed: {}",
                    self.what(),
                    describe(s, &body)
                ),
            }
            let page = parse_uploads(&String::from_utf8_lossy(&body));
            uploads.extend(page.uploads);
            match page.next {
                Some(next) if marker.as_ref() != Some(&next) => marker = Some(next),
                _ => break,
            }
        }
        Ok(Some(uploads))
    }

    /// Aborts an incomplete multipart upload (its parts are deleted).
    pub async fn abort_upload(&self, upload: &PendingUpload) -> Result<()> {
        let Kind::S3 { store, .. } = &self.kind else {
            bail!("only S3 has multipart uploads to abort");
        };
        use object_store::multipart::MultipartStore;
        match store
            .abort_multipart(&ObjPath::from(upload.key.as_str()), &upload.id)
            .await
        {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => {
                Err(anyhow!(e)).with_context(|| format!("aborting the upload of {}", upload.key))
            }
        }
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

/// An incomplete multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingUpload {
    /// The key it was writing, from the bucket root.
    pub key: String,
    /// The upload id.
    pub id: String,
    /// When it was started.
    pub initiated: Option<chrono::DateTime<chrono::Utc>>,
    /// The pool member it is on; empty for a single store.
    pub store: String,
}

/// One page of a ListMultipartUploads answer.
struct UploadPage {
    uploads: Vec<PendingUpload>,
    /// Key and upload id markers of the next page, when truncated.
    next: Option<(String, String)>,
}

/// The text of the first `<tag>` element in `xml`, unescaped.
fn element<'a>(xml: &'a str, tag: &str) -> Option<std::borrow::Cow<'a, str>> {
    let open = format!("<{tag}>");
    let start = xml.find(&open)? + open.len();
    let end = start + xml[start..].find(&format!("</{tag}>"))?;
    let raw = &xml[start..end];
    if !raw.contains('&') {
        return Some(raw.into());
    }
    Some(
        raw.replace("&lt;", "<")
            .replace("&gt;", ">")
            .replace("&quot;", "\"")
            .replace("&apos;", "'")
            .replace("&amp;", "&")
            .into(),
    )
}

/// Parses a ListMultipartUploads answer.
fn parse_uploads(xml: &str) -> UploadPage {
    let mut uploads = Vec::new();
    for block in xml.split("<Upload>").skip(1) {
        let block = block.split("</Upload>").next().unwrap_or_default();
        let (Some(key), Some(id)) = (element(block, "Key"), element(block, "UploadId")) else {
            continue;
        };
        let initiated = element(block, "Initiated")
            .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
            .map(|t| t.with_timezone(&chrono::Utc));
        uploads.push(PendingUpload {
            key: key.into_owned(),
            id: id.into_owned(),
            initiated,
            store: String::new(),
        });
    }
    // The listing's own header, before the first upload.
    let head = xml.split("<Upload>").next().unwrap_or_default();
    let truncated = element(head, "IsTruncated").is_some_and(|t| t == "true");
    let next = truncated
        .then(|| {
            Some((
                element(head, "NextKeyMarker")?.into_owned(),
                element(head, "NextUploadIdMarker")?.into_owned(),
            ))
        })
        .flatten();
    UploadPage { uploads, next }
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
    fn upload_listings_are_parsed_with_their_markers() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>p/data/ab/cd</NextKeyMarker><NextUploadIdMarker>id-2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>p/data/01/x&amp;y</Key><UploadId>id-1</UploadId>
    <Initiator><ID>i</ID></Initiator><Initiated>2026-12-01T10:00:00.000Z</Initiated></Upload>
  <Upload><Key>p/data/ab/cd</Key><UploadId>id-2</UploadId><Initiated>bad</Initiated></Upload>
</ListMultipartUploadsResult>"#;
        let page = parse_uploads(xml);
        assert_eq!(page.uploads.len(), 2);
        assert_eq!(page.uploads[0].key, "p/data/01/x&y");
        assert_eq!(page.uploads[0].id, "id-1");
        assert_eq!(
            page.uploads[0].initiated.map(|t| t.to_rfc3339()),
            Some("2026-12-01T10:00:00+00:00".into())
        );
        assert_eq!(page.uploads[1].initiated, None);
        assert_eq!(page.next, Some(("p/data/ab/cd".into(), "id-2".into())));
        let last = parse_uploads("<R><IsTruncated>false</IsTruncated></R>");
        assert!(last.uploads.is_empty() && last.next.is_none());
    }

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
