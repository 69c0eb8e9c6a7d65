//! The few S3 calls `object_store` does not offer, sent as ordinary signed requests.
//!
//! object_store has no call for reading Object Lock headers, listing multipart uploads,
//! deleting one object version, or reading a bucket's Object Lock configuration. We do
//! not sign these by hand: the request is signed by object_store's own public SigV4
//! signer ([`AwsAuthorizer`]) and sent through object_store's own HTTP client
//! ([`HttpClient`], same TLS, proxy and timeout settings as every other request), with
//! the credentials in headers, never in the URL. All of these calls are idempotent
//! (HEAD, GET, DELETE), so they are retried with the same policy as object_store's
//! requests ([`RetrySettings`]): transport failures, 5xx and 429, exponential backoff.

use std::time::{Duration, Instant};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use http::{HeaderMap, Method};
use object_store::ClientOptions;
use object_store::aws::{AwsAuthorizer, AwsCredential};
use object_store::client::{HttpClient, HttpConnector, HttpErrorKind, HttpRequestBody, ReqwestConnector};
use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, utf8_percent_encode};

use super::ObjectInfo;
use super::config::{LockMode, RetrySettings};
use super::error::{Failure, transport_detail};

/// Characters S3 wants left alone in a path segment (RFC 3986 unreserved).
const SEGMENT: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// A response with its body read (all our raw calls have tiny bodies).
#[derive(Debug)]
pub(crate) struct RawResponse {
    pub status: u16,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl RawResponse {
    pub fn is_success(&self) -> bool {
        (200..300).contains(&self.status)
    }

    /// The facts of a non-2xx answer, for [`super::error::ErrorContext::from_failure`].
    pub fn failure(&self) -> Failure {
        Failure {
            status: Some(self.status),
            code: super::error::s3_code(&String::from_utf8_lossy(&self.body)),
            ..Default::default()
        }
    }
}

/// Signs and sends requests to one bucket.
#[derive(Debug)]
pub(crate) struct Raw {
    http: HttpClient,
    credential: AwsCredential,
    region: String,
    /// `http://host:port/bucket` or `https://bucket.host`, no trailing slash.
    bucket_endpoint: String,
    retry: RetrySettings,
}

impl Raw {
    pub fn new(
        options: &ClientOptions,
        credential: AwsCredential,
        region: &str,
        bucket_endpoint: &str,
        retry: RetrySettings,
    ) -> object_store::Result<Raw> {
        Ok(Raw {
            http: ReqwestConnector::default().connect(options)?,
            credential,
            region: region.to_string(),
            bucket_endpoint: bucket_endpoint.trim_end_matches('/').to_string(),
            retry,
        })
    }

    /// The URL of `key` (empty: the bucket itself) with `query`.
    fn url(&self, key: &str, query: &[(&str, &str)]) -> String {
        let path: Vec<String> = key
            .split('/')
            .map(|s| utf8_percent_encode(s, SEGMENT).to_string())
            .collect();
        let mut url = format!("{}/{}", self.bucket_endpoint, path.join("/"));
        for (i, (k, v)) in query.iter().enumerate() {
            url.push(if i == 0 { '?' } else { '&' });
            url.push_str(&utf8_percent_encode(k, SEGMENT).to_string());
            url.push('=');
            url.push_str(&utf8_percent_encode(v, SEGMENT).to_string());
        }
        url
    }

    /// Sends a signed, body-less request; retries transport failures, 5xx and 429.
    /// Any HTTP answer that is not retried is returned, whatever its status.
    pub async fn send(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
    ) -> Result<RawResponse, Failure> {
        self.send_with(method, key, query, &HeaderMap::new()).await
    }

    /// [`Raw::send`] with extra (signed) headers.
    pub async fn send_with(
        &self,
        method: Method,
        key: &str,
        query: &[(&str, &str)],
        headers: &HeaderMap,
    ) -> Result<RawResponse, Failure> {
        let url = self.url(key, query);
        let start = Instant::now();
        let mut attempt = 0usize;
        loop {
            let mut req = http::Request::builder()
                .method(method.clone())
                .uri(url.as_str())
                .body(HttpRequestBody::empty())
                .map_err(|_| Failure {
                    code: Some("InvalidURL".into()),
                    ..Default::default()
                })?;
            req.headers_mut().extend(headers.clone());
            AwsAuthorizer::new(&self.credential, "s3", &self.region)
                .try_authorize(&mut req, None)
                .map_err(|_| Failure {
                    code: Some("SigningFailed".into()),
                    ..Default::default()
                })?;
            let may_retry = attempt < self.retry.max_retries && start.elapsed() < self.retry.retry_timeout;
            match self.http.execute(req).await {
                Ok(resp) => {
                    let status = resp.status().as_u16();
                    if (status >= 500 || status == 429) && may_retry {
                        tokio::time::sleep(self.backoff(attempt)).await;
                        attempt += 1;
                        continue;
                    }
                    let (parts, body) = resp.into_parts();
                    match body.bytes().await {
                        Ok(body) => {
                            return Ok(RawResponse {
                                status,
                                headers: parts.headers,
                                body,
                            });
                        }
                        Err(e) if may_retry => {
                            tracing::debug!(kind = ?e.kind(), "retrying after a failed response body");
                        }
                        Err(e) => {
                            return Err(Failure {
                                transport: Some(e.kind()),
                                transport_detail: Some(transport_detail(&e)),
                                ..Default::default()
                            });
                        }
                    }
                }
                Err(e) => {
                    let retryable = matches!(
                        e.kind(),
                        HttpErrorKind::Connect
                            | HttpErrorKind::Request
                            | HttpErrorKind::Timeout
                            | HttpErrorKind::Interrupted
                    );
                    if !(retryable && may_retry) {
                        return Err(Failure {
                            transport: Some(e.kind()),
                            transport_detail: Some(transport_detail(&e)),
                            ..Default::default()
                        });
                    }
                }
            }
            tokio::time::sleep(self.backoff(attempt)).await;
            attempt += 1;
        }
    }

    /// Exponential backoff with jitter in [50 %, 100 %] so that parallel clients spread out.
    fn backoff(&self, attempt: usize) -> Duration {
        let exp = self.retry.initial_backoff.saturating_mul(1u32 << attempt.min(16));
        let full = exp.min(self.retry.max_backoff);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        full.mul_f64(0.5 + f64::from(nanos % 1000) / 2000.0)
    }
}

/// Parses the headers of a HEAD (or GET) answer into an [`ObjectInfo`].
pub(crate) fn object_info(key: &str, headers: &HeaderMap) -> Result<ObjectInfo, String> {
    let get = |name: &str| headers.get(name).and_then(|v| v.to_str().ok()).map(str::trim);
    let size = get("content-length")
        .and_then(|v| v.parse::<u64>().ok())
        .ok_or("the answer has no Content-Length")?;
    let last_modified = get("last-modified")
        .and_then(|v| DateTime::parse_from_rfc2822(v).ok())
        .map(|d| d.with_timezone(&Utc))
        .ok_or("the answer has no valid Last-Modified")?;
    let retain_until = match get("x-amz-object-lock-retain-until-date") {
        Some(v) => Some(
            DateTime::parse_from_rfc3339(v)
                .map_err(|_| "the answer has an invalid x-amz-object-lock-retain-until-date")?
                .with_timezone(&Utc),
        ),
        None => None,
    };
    Ok(ObjectInfo {
        key: key.to_string(),
        size,
        etag: get("etag").map(str::to_string),
        last_modified,
        version: get("x-amz-version-id")
            .filter(|v| !v.is_empty())
            .map(str::to_string),
        retain_until,
        lock_mode: get("x-amz-object-lock-mode").and_then(LockMode::from_header),
        legal_hold: get("x-amz-object-lock-legal-hold") == Some("ON"),
    })
}

/// An unfinished multipart upload (its parts are stored and billed until aborted).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IncompleteUpload {
    /// The key being uploaded.
    pub key: String,
    /// The upload id.
    pub upload_id: String,
    /// When the upload was started.
    pub initiated: Option<DateTime<Utc>>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ListUploads {
    #[serde(default)]
    is_truncated: bool,
    #[serde(default)]
    next_key_marker: Option<String>,
    #[serde(default)]
    next_upload_id_marker: Option<String>,
    #[serde(default, rename = "Upload")]
    uploads: Vec<Upload>,
}

#[derive(Debug, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Upload {
    key: String,
    upload_id: String,
    #[serde(default)]
    initiated: Option<String>,
}

/// Key marker and upload-id marker of the next page of a ListMultipartUploads answer.
pub(crate) type UploadMarker = (String, String);

/// One page of a ListMultipartUploads answer: the uploads, and the markers of the next
/// page if there is one.
pub(crate) fn parse_uploads(body: &[u8]) -> Result<(Vec<IncompleteUpload>, Option<UploadMarker>), String> {
    let text = std::str::from_utf8(body).map_err(|_| "the upload list is not UTF-8")?;
    let page: ListUploads = quick_xml::de::from_str(text).map_err(|_| "the upload list is not valid XML")?;
    let uploads = page
        .uploads
        .into_iter()
        .map(|u| IncompleteUpload {
            key: u.key,
            upload_id: u.upload_id,
            initiated: u
                .initiated
                .and_then(|t| DateTime::parse_from_rfc3339(&t).ok())
                .map(|d| d.with_timezone(&Utc)),
        })
        .collect();
    let next = match (
        page.is_truncated,
        page.next_key_marker,
        page.next_upload_id_marker,
    ) {
        (true, Some(k), Some(u)) => Some((k, u)),
        (true, Some(k), None) => Some((k, String::new())),
        _ => None,
    };
    Ok((uploads, next))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_upload_lists() {
        let xml = r#"<?xml version="1.0" encoding="UTF-8"?>
<ListMultipartUploadsResult xmlns="http://s3.amazonaws.com/doc/2006-03-01/">
  <Bucket>b</Bucket><KeyMarker></KeyMarker><UploadIdMarker></UploadIdMarker>
  <NextKeyMarker>coffer/h/app/x.tar.zst</NextKeyMarker><NextUploadIdMarker>u2</NextUploadIdMarker>
  <MaxUploads>1000</MaxUploads><IsTruncated>true</IsTruncated>
  <Upload><Key>coffer/h/app/w.tar.zst</Key><UploadId>u1</UploadId><Initiated>2026-11-30T15:38:00.000Z</Initiated>
    <StorageClass>STANDARD</StorageClass></Upload>
  <Upload><Key>coffer/h/app/x.tar.zst</Key><UploadId>u2</UploadId></Upload>
</ListMultipartUploadsResult>"#;
        let (ups, next) = parse_uploads(xml.as_bytes()).unwrap();
        assert_eq!(ups.len(), 2);
        assert_eq!(ups[0].upload_id, "u1");
        assert!(ups[0].initiated.is_some());
        assert_eq!(next, Some(("coffer/h/app/x.tar.zst".into(), "u2".into())));
        let (ups, next) = parse_uploads(
            b"<ListMultipartUploadsResult><IsTruncated>false</IsTruncated></ListMultipartUploadsResult>",
        )
        .unwrap();
        assert!(ups.is_empty() && next.is_none());
    }

    #[test]
    fn parses_head_headers() {
        let mut h = HeaderMap::new();
        h.insert("content-length", "42".parse().unwrap());
        h.insert("last-modified", "Mon, 30 Nov 2026 15:38:00 GMT".parse().unwrap());
        h.insert("etag", "\"abc\"".parse().unwrap());
        h.insert("x-amz-object-lock-mode", "GOVERNANCE".parse().unwrap());
        h.insert(
            "x-amz-object-lock-retain-until-date",
            "2026-12-01T15:38:00Z".parse().unwrap(),
        );
        let i = object_info("k", &h).unwrap();
        assert_eq!(i.size, 42);
        assert_eq!(i.lock_mode, Some(LockMode::Governance));
        assert_eq!(i.retain_until.unwrap().to_rfc3339(), "2026-12-01T15:38:00+00:00");
        assert!(!i.legal_hold);
        h.remove("content-length");
        assert!(object_info("k", &h).is_err());
    }

    #[test]
    fn urls_are_encoded_per_segment() {
        let raw = Raw {
            http: HttpClient::new(NoService),
            credential: AwsCredential {
                key_id: "a".into(),
                secret_key: "b".into(),
                token: None,
            },
            region: "us-east-1".into(),
            bucket_endpoint: "http://127.0.0.1:1/b".into(),
            retry: RetrySettings::default(),
        };
        assert_eq!(
            raw.url("a b/c+d.json", &[]),
            "http://127.0.0.1:1/b/a%20b/c%2Bd.json"
        );
        assert_eq!(
            raw.url("", &[("uploads", ""), ("prefix", "coffer/h/")]),
            "http://127.0.0.1:1/b/?uploads=&prefix=coffer%2Fh%2F"
        );
    }

    #[derive(Debug)]
    struct NoService;

    #[async_trait::async_trait]
    impl object_store::client::HttpService for NoService {
        async fn call(
            &self,
            _req: object_store::client::HttpRequest,
        ) -> Result<object_store::client::HttpResponse, object_store::client::HttpError> {
            Err(object_store::client::HttpError::new(
                HttpErrorKind::Connect,
                std::io::Error::other("none"),
            ))
        }
    }
}
