//! Errors of the S3 store, and the one place where client failures become sentences.
//!
//! Every failure the store can report is an [`S3Error`] variant whose message is one
//! sentence naming the store, and the bucket, key or file concerned. Failures of the
//! HTTP client (`object_store`, or our few signed requests in `raw`) are *classified*
//! here into those variants; their text is never passed on, because S3 error bodies can
//! echo the access key id, the string that was signed and request URLs. What survives is
//! a short, safe `detail` (an HTTP status, an S3 error code such as `SlowDown`, or an OS
//! error such as "connection refused").
//!
//! `object_store` keeps its HTTP error type crate-private, so for status errors the S3
//! error code is read from the error's text (`<Code>…</Code>`, which object_store
//! copies from the response body). S3 error codes are part of the S3 protocol, and the
//! tests against SeaweedFS pin the behaviour, so a change of object_store's wording
//! shows up as a failing test, not as a wrong sentence in production.

use std::error::Error as StdError;
use std::path::PathBuf;

use chrono::{DateTime, Utc};
use object_store::client::{HttpError, HttpErrorKind};

/// What went wrong, in categories the daemon maps to its own error kinds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum S3ErrorKind {
    /// Settings or a key are invalid; retrying cannot help.
    Invalid,
    /// The endpoint cannot be reached, timed out, or answered 5xx/429: retry later.
    Unavailable,
    /// Credentials were rejected or lack a permission.
    Auth,
    /// The bucket or the object does not exist.
    NotFound,
    /// The object is under Object Lock (or legal hold) and cannot be deleted yet.
    Locked,
    /// Data does not match its checksum (local or remote).
    DataLoss,
    /// The operation was cancelled by the caller.
    Cancelled,
    /// Local file I/O failed.
    LocalIo,
    /// Anything else the server refused.
    Rejected,
}

/// An error of the S3 store. Messages are one sentence and never contain secrets.
#[derive(Debug, thiserror::Error)]
pub enum S3Error {
    /// The store settings are not usable.
    #[error("the store '{store}' is misconfigured: {detail}")]
    Config { store: String, detail: String },

    /// No credentials could be found or read.
    #[error(transparent)]
    Credentials(#[from] super::config::CredentialsError),

    /// The endpoint did not answer at all (DNS, TCP, TLS).
    #[error("cannot reach the store '{store}' at {endpoint}: {detail}")]
    Unreachable {
        store: String,
        endpoint: String,
        detail: String,
    },

    /// The signature or the access key was rejected.
    #[error("the store '{store}' rejected the credentials (check {hint})")]
    BadCredentials { store: String, hint: String },

    /// The credentials are valid but lack a permission.
    #[error(
        "the store '{store}' denied the request to {action} (check the credentials in {hint} and their permissions)"
    )]
    AccessDenied {
        store: String,
        action: String,
        hint: String,
    },

    /// The bucket lives in another region than the configured one.
    #[error("bucket '{bucket}' is not in region '{region}' (check region of the store '{store}')")]
    WrongRegion {
        store: String,
        bucket: String,
        region: String,
    },

    /// The configured bucket does not exist.
    #[error("bucket '{bucket}' does not exist at {endpoint} (store '{store}')")]
    NoSuchBucket {
        store: String,
        bucket: String,
        endpoint: String,
    },

    /// The object does not exist.
    #[error("object '{key}' does not exist in the store '{store}'")]
    NotFound { store: String, key: String },

    /// The object is under retention or legal hold.
    #[error("object '{key}' in the store '{store}' is {}", locked_text(.until))]
    Locked {
        store: String,
        key: String,
        until: Option<DateTime<Utc>>,
    },

    /// Object Lock is configured but the bucket does not support it.
    #[error(
        "bucket '{bucket}' of the store '{store}' does not have S3 Object Lock enabled, \
         but object-lock-days is set (create the bucket with Object Lock, or set object-lock-days = 0)"
    )]
    LockNotEnabled { store: String, bucket: String },

    /// The server accepted an upload with lock headers but did not lock the object.
    #[error(
        "the store '{store}' did not apply Object Lock to '{key}' (is Object Lock enabled on bucket '{bucket}'?)"
    )]
    LockNotApplied {
        store: String,
        bucket: String,
        key: String,
    },

    /// What the store holds differs from what was sent.
    #[error(
        "the copy of '{key}' in the store '{store}' does not match the local archive \
         (sha256 {actual}, {size} bytes, expected {expected}){}",
        if *.removed { "; the bad copy was deleted" } else { "; the bad copy could not be deleted" }
    )]
    RemoteMismatch {
        store: String,
        key: String,
        expected: String,
        actual: String,
        size: u64,
        removed: bool,
    },

    /// The local file does not match the sha256 the caller recorded for it.
    #[error("{} does not match its recorded sha256 (it is {actual}, expected {expected}), so it was not copied", .path.display())]
    LocalMismatch {
        path: PathBuf,
        expected: String,
        actual: String,
    },

    /// The local file could not be read.
    #[error("cannot read {}", .path.display())]
    LocalRead {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },

    /// The caller's writer failed while downloading.
    #[error("cannot write the download of '{key}' from the store '{store}'")]
    LocalWrite {
        store: String,
        key: String,
        #[source]
        source: std::io::Error,
    },

    /// An object is bigger than the caller allows (e.g. a sidecar).
    #[error("object '{key}' in the store '{store}' is {size} bytes, more than the {limit} allowed")]
    TooLarge {
        store: String,
        key: String,
        size: u64,
        limit: u64,
    },

    /// The store answered in an unexpected way, or failed after all retries.
    #[error("the store '{store}' failed to {action}: {detail}")]
    Request {
        store: String,
        action: String,
        detail: String,
        /// True when a later retry may succeed (5xx, 429, timeouts, dropped connections).
        transient: bool,
    },

    /// The caller cancelled the operation.
    #[error("cancelled: {action} in the store '{store}'")]
    Cancelled { store: String, action: String },
}

fn locked_text(until: &Option<DateTime<Utc>>) -> String {
    match until {
        Some(t) => format!(
            "locked until {} and cannot be deleted before then",
            t.format("%Y-%m-%d %H:%M:%S UTC")
        ),
        None => "under a legal hold and cannot be deleted".to_string(),
    }
}

impl S3Error {
    /// The category of this error (for the daemon's error kinds and retry decisions).
    pub fn kind(&self) -> S3ErrorKind {
        match self {
            S3Error::Config { .. } | S3Error::Credentials(_) | S3Error::WrongRegion { .. } => {
                S3ErrorKind::Invalid
            }
            S3Error::Unreachable { .. } => S3ErrorKind::Unavailable,
            S3Error::Request { transient: true, .. } => S3ErrorKind::Unavailable,
            S3Error::Request { transient: false, .. } => S3ErrorKind::Rejected,
            S3Error::BadCredentials { .. } | S3Error::AccessDenied { .. } => S3ErrorKind::Auth,
            S3Error::NoSuchBucket { .. } | S3Error::NotFound { .. } => S3ErrorKind::NotFound,
            S3Error::Locked { .. } => S3ErrorKind::Locked,
            S3Error::LockNotEnabled { .. } | S3Error::LockNotApplied { .. } => S3ErrorKind::Invalid,
            S3Error::RemoteMismatch { .. } | S3Error::LocalMismatch { .. } => S3ErrorKind::DataLoss,
            S3Error::TooLarge { .. } => S3ErrorKind::DataLoss,
            S3Error::LocalRead { .. } | S3Error::LocalWrite { .. } => S3ErrorKind::LocalIo,
            S3Error::Cancelled { .. } => S3ErrorKind::Cancelled,
        }
    }

    /// True when the same operation may succeed later without any change of settings
    /// (the copy queue retries these with its own, longer backoff).
    pub fn is_transient(&self) -> bool {
        self.kind() == S3ErrorKind::Unavailable
    }
}

/// The fixed facts an error sentence needs about its store.
#[derive(Debug, Clone)]
pub(crate) struct ErrorContext {
    pub store: String,
    pub bucket: String,
    /// The endpoint as the admin wrote it (never with user info).
    pub endpoint: String,
    /// Where the credentials came from, e.g. "credentials-file /etc/coffer/offsite.credentials".
    pub hint: String,
    /// The configured signing region.
    pub region: String,
}

/// S3 error codes that mean "these credentials are wrong", as opposed to "not allowed".
const BAD_CREDENTIAL_CODES: &[&str] = &[
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "InvalidToken",
    "ExpiredToken",
    "TokenRefreshRequired",
    "InvalidSecurity",
    "InvalidClientTokenId",
];

/// The facts of a failed HTTP exchange, however it was obtained.
#[derive(Debug, Default)]
pub(crate) struct Failure {
    /// HTTP status, when a response arrived.
    pub status: Option<u16>,
    /// S3 error code from the body (`NoSuchBucket`, `SlowDown`, ...).
    pub code: Option<String>,
    /// Transport failure kind, when no response arrived.
    pub transport: Option<HttpErrorKind>,
    /// A safe description of a transport failure ("connection refused").
    pub transport_detail: Option<String>,
}

impl ErrorContext {
    /// Turns the facts of a failed request into a sentence. `key` is the object the
    /// request was about (for NotFound), `action` reads "upload 'k'", "list 'p'".
    pub fn classify_failure(&self, f: Failure, action: &str, key: Option<&str>) -> S3Error {
        if let Some(kind) = f.transport {
            let detail = f
                .transport_detail
                .unwrap_or_else(|| transport_text(kind).to_string());
            if kind == HttpErrorKind::Connect {
                return S3Error::Unreachable {
                    store: self.store.clone(),
                    endpoint: self.endpoint.clone(),
                    detail,
                };
            }
            let transient = matches!(
                kind,
                HttpErrorKind::Timeout | HttpErrorKind::Interrupted | HttpErrorKind::Request
            );
            return S3Error::Request {
                store: self.store.clone(),
                action: action.to_string(),
                detail,
                transient,
            };
        }
        let code = f.code.as_deref();
        if code == Some("NoSuchBucket") {
            return S3Error::NoSuchBucket {
                store: self.store.clone(),
                bucket: self.bucket.clone(),
                endpoint: self.endpoint.clone(),
            };
        }
        if matches!(
            code,
            Some("AuthorizationHeaderMalformed" | "PermanentRedirect" | "IllegalLocationConstraintException")
        ) || f.status == Some(301)
        {
            return S3Error::WrongRegion {
                store: self.store.clone(),
                bucket: self.bucket.clone(),
                region: self.region.clone(),
            };
        }
        if code == Some("RequestTimeTooSkewed") {
            return S3Error::Request {
                store: self.store.clone(),
                action: action.to_string(),
                detail: "this machine's clock differs from the store's by more than 15 minutes".into(),
                transient: false,
            };
        }
        if code.is_some_and(|c| BAD_CREDENTIAL_CODES.contains(&c)) || f.status == Some(401) {
            return S3Error::BadCredentials {
                store: self.store.clone(),
                hint: self.hint.clone(),
            };
        }
        if f.status == Some(403) {
            return S3Error::AccessDenied {
                store: self.store.clone(),
                action: action.to_string(),
                hint: self.hint.clone(),
            };
        }
        if f.status == Some(404)
            && (code.is_none() || code == Some("NoSuchKey"))
            && let Some(key) = key
        {
            return S3Error::NotFound {
                store: self.store.clone(),
                key: key.to_string(),
            };
        }
        let status = f.status.unwrap_or(0);
        let transient = status >= 500 || status == 429 || status == 408 || code == Some("SlowDown");
        let detail = match (f.status, code) {
            (Some(s), Some(c)) => format!("HTTP {s} {c}"),
            (Some(s), None) => format!("HTTP {s}"),
            (None, Some(c)) => c.to_string(),
            (None, None) => "an unexpected answer".to_string(),
        };
        S3Error::Request {
            store: self.store.clone(),
            action: action.to_string(),
            detail,
            transient,
        }
    }

    /// Classifies an `object_store` error (see the module docs for how).
    pub fn classify(&self, err: &object_store::Error, action: &str, key: Option<&str>) -> S3Error {
        self.classify_failure(failure_of(err), action, key)
    }

    /// A server answer that could not be understood.
    pub fn bad_answer(&self, action: &str, detail: impl Into<String>) -> S3Error {
        S3Error::Request {
            store: self.store.clone(),
            action: action.to_string(),
            detail: detail.into(),
            transient: false,
        }
    }

    pub fn cancelled(&self, action: &str) -> S3Error {
        S3Error::Cancelled {
            store: self.store.clone(),
            action: action.to_string(),
        }
    }
}

/// Extracts status, S3 code and transport facts from an object_store error.
pub(crate) fn failure_of(err: &object_store::Error) -> Failure {
    let mut f = Failure::default();
    // A transport error is found by type, anywhere in the chain.
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(h) = e.downcast_ref::<HttpError>() {
            f.transport = Some(h.kind());
            f.transport_detail = Some(transport_detail(h));
            return f;
        }
        cur = e.source();
    }
    let text = err.to_string();
    f.code = s3_code(&text);
    f.status = match err {
        object_store::Error::NotFound { .. } => Some(404),
        object_store::Error::PermissionDenied { .. } => Some(403),
        object_store::Error::Unauthenticated { .. } => Some(401),
        object_store::Error::Precondition { .. } => Some(412),
        object_store::Error::AlreadyExists { .. } => Some(409),
        _ => status_in_text(&text),
    };
    f
}

/// The `<Code>` element of an S3 error body quoted in `text`.
pub(crate) fn s3_code(text: &str) -> Option<String> {
    let start = text.find("<Code>")? + "<Code>".len();
    let len = text[start..].find("</Code>")?;
    let code = &text[start..start + len];
    // Only a plain identifier is trusted to be an error code.
    (!code.is_empty() && code.len() < 64 && code.chars().all(|c| c.is_ascii_alphanumeric()))
        .then(|| code.to_string())
}

/// object_store's text for non-2xx answers reads "... status code: 503 Service ...".
fn status_in_text(text: &str) -> Option<u16> {
    let at = text.find("status code: ")? + "status code: ".len();
    text.get(at..at + 3)?.parse().ok()
}

fn transport_text(kind: HttpErrorKind) -> &'static str {
    match kind {
        HttpErrorKind::Connect => "cannot connect",
        HttpErrorKind::Request => "the connection failed while sending",
        HttpErrorKind::Timeout => "no answer in time",
        HttpErrorKind::Interrupted => "the connection was interrupted",
        HttpErrorKind::Decode => "the answer could not be decoded",
        _ => "the request failed",
    }
}

/// A safe description of a transport error: the OS error if there is one
/// ("connection refused"), else a fixed phrase. URLs and client text are dropped.
pub(crate) fn transport_detail(h: &HttpError) -> String {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(h);
    let mut io_text = None;
    let mut dns = false;
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<std::io::Error>() {
            io_text = Some(io_kind_text(io));
        }
        let t = e.to_string();
        if t.contains("dns error") || t.contains("failed to lookup address") {
            dns = true;
        }
        if t.contains("certificate") || t.contains("InvalidCertificate") {
            return "the TLS certificate was not accepted".to_string();
        }
        cur = e.source();
    }
    if dns {
        return "the host name does not resolve".to_string();
    }
    io_text.unwrap_or_else(|| transport_text(h.kind()).to_string())
}

fn io_kind_text(e: &std::io::Error) -> String {
    use std::io::ErrorKind as K;
    match e.kind() {
        K::ConnectionRefused => "connection refused".into(),
        K::ConnectionReset => "connection reset".into(),
        K::ConnectionAborted => "connection aborted".into(),
        K::TimedOut => "connection timed out".into(),
        K::HostUnreachable => "host unreachable".into(),
        K::NetworkUnreachable => "network unreachable".into(),
        K::BrokenPipe => "connection closed by the server".into(),
        K::UnexpectedEof => "connection closed by the server".into(),
        K::AddrNotAvailable => "address not available".into(),
        _ => "the connection failed".into(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx() -> ErrorContext {
        ErrorContext {
            store: "offsite".into(),
            bucket: "backups".into(),
            endpoint: "http://127.0.0.1:8333".into(),
            hint: "credentials-file /etc/coffer/offsite.credentials".into(),
            region: "us-east-1".into(),
        }
    }

    #[test]
    fn codes_are_read_from_bodies_and_only_when_plain() {
        assert_eq!(
            s3_code("x <Error><Code>NoSuchBucket</Code>").as_deref(),
            Some("NoSuchBucket")
        );
        assert_eq!(s3_code("<Code>a b</Code>"), None);
        assert_eq!(s3_code("no code here"), None);
        assert_eq!(
            status_in_text("Server returned non-2xx status code: 503 Service"),
            Some(503)
        );
    }

    #[test]
    fn failures_map_to_sentences() {
        let c = ctx();
        let e = c.classify_failure(
            Failure {
                status: Some(404),
                code: Some("NoSuchBucket".into()),
                ..Default::default()
            },
            "list 'x'",
            None,
        );
        assert_eq!(
            e.to_string(),
            "bucket 'backups' does not exist at http://127.0.0.1:8333 (store 'offsite')"
        );

        let e = c.classify_failure(
            Failure {
                status: Some(403),
                code: Some("SignatureDoesNotMatch".into()),
                ..Default::default()
            },
            "list 'x'",
            None,
        );
        assert_eq!(
            e.to_string(),
            "the store 'offsite' rejected the credentials (check credentials-file /etc/coffer/offsite.credentials)"
        );
        assert_eq!(e.kind(), S3ErrorKind::Auth);

        let e = c.classify_failure(
            Failure {
                transport: Some(HttpErrorKind::Connect),
                transport_detail: Some("connection refused".into()),
                ..Default::default()
            },
            "list 'x'",
            None,
        );
        assert_eq!(
            e.to_string(),
            "cannot reach the store 'offsite' at http://127.0.0.1:8333: connection refused"
        );
        assert!(e.is_transient());

        let e = c.classify_failure(
            Failure {
                status: Some(503),
                code: Some("SlowDown".into()),
                ..Default::default()
            },
            "upload 'k'",
            Some("k"),
        );
        assert_eq!(
            e.to_string(),
            "the store 'offsite' failed to upload 'k': HTTP 503 SlowDown"
        );
        assert!(e.is_transient());

        let e = c.classify_failure(
            Failure {
                status: Some(400),
                code: Some("AuthorizationHeaderMalformed".into()),
                ..Default::default()
            },
            "list 'x'",
            None,
        );
        assert_eq!(
            e.to_string(),
            "bucket 'backups' is not in region 'us-east-1' (check region of the store 'offsite')"
        );
        let e = c.classify_failure(
            Failure {
                status: Some(403),
                code: Some("RequestTimeTooSkewed".into()),
                ..Default::default()
            },
            "list 'x'",
            None,
        );
        assert!(e.to_string().contains("clock"), "{e}");

        let e = c.classify_failure(
            Failure {
                status: Some(404),
                ..Default::default()
            },
            "read 'k'",
            Some("k"),
        );
        assert_eq!(e.kind(), S3ErrorKind::NotFound);

        let e = c.classify_failure(
            Failure {
                status: Some(400),
                code: Some("InvalidRequest".into()),
                ..Default::default()
            },
            "upload 'k'",
            Some("k"),
        );
        assert!(!e.is_transient());
    }

    #[test]
    fn locked_sentences() {
        let until = DateTime::parse_from_rfc3339("2030-01-02T03:04:05Z")
            .unwrap()
            .with_timezone(&Utc);
        let e = S3Error::Locked {
            store: "offsite".into(),
            key: "k".into(),
            until: Some(until),
        };
        assert_eq!(
            e.to_string(),
            "object 'k' in the store 'offsite' is locked until 2030-01-02 03:04:05 UTC and cannot be deleted before then"
        );
    }
}
