//! Test support: stores on the harness's real SeaweedFS server
//! ([`coffer_tests::servers::S3Server`], started by each test on its own thread), a
//! runtime for them, deterministic test files, and a flaky TCP proxy that answers some
//! connections with `503 SlowDown` to exercise retries.

use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use coffer_tests::servers::S3Server;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use super::S3Store;
use super::config::{Credentials, S3Config, Secret, Tuning};

/// A multi-threaded runtime for the client (2 workers, as cofferd has cores here).
pub fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap()
}

/// The settings of a store on `s3` with fast-failing retries (tests must not wait
/// minutes); the store is named `offsite`.
pub fn config(s3: &S3Server, bucket: &str, prefix: &str) -> S3Config {
    test_config(&s3.endpoint(), bucket, prefix, s3.access_key(), s3.secret_key())
}

/// A store on `s3` (see [`config`]).
pub fn store(s3: &S3Server, bucket: &str, prefix: &str) -> S3Store {
    S3Store::new(config(s3, bucket, prefix)).expect("valid test config")
}

pub fn test_config(endpoint: &str, bucket: &str, prefix: &str, access: &str, secret: &str) -> S3Config {
    let creds = Credentials {
        access_key_id: access.to_string(),
        secret_access_key: Secret::new(secret),
        session_token: None,
        source: "credentials-file /etc/coffer/test.credentials".to_string(),
    };
    let mut cfg = S3Config::new("offsite", endpoint, bucket, prefix, creds);
    cfg.tuning = Tuning {
        retry: super::RetrySettings {
            max_retries: 3,
            initial_backoff: Duration::from_millis(50),
            max_backoff: Duration::from_millis(400),
            retry_timeout: Duration::from_secs(5),
        },
        request_timeout: Duration::from_secs(60),
        connect_timeout: Duration::from_secs(2),
        ..Tuning::default()
    };
    cfg
}

/// Writes `size` bytes of a cheap deterministic pseudo-random stream (incompressible
/// enough that no layer can shortcut it) and returns its sha256 in hex.
pub fn write_test_file(path: &Path, size: u64, seed: u64) -> String {
    use sha2::Digest;
    use std::io::Write;
    let mut f = std::io::BufWriter::with_capacity(1 << 20, std::fs::File::create(path).unwrap());
    let mut h = sha2::Sha256::new();
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut buf = vec![0u8; 1 << 20];
    let mut left = size;
    while left > 0 {
        for chunk in buf.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let b = x.to_le_bytes();
            chunk.copy_from_slice(&b[..chunk.len()]);
        }
        let n = left.min(buf.len() as u64) as usize;
        f.write_all(&buf[..n]).unwrap();
        h.update(&buf[..n]);
        left -= n as u64;
    }
    f.flush().unwrap();
    super::client::hex(&h.finalize())
}

/// A TCP proxy in front of `upstream` that answers the first request of every
/// `every`-th connection with `503 SlowDown` and closes it; other connections are
/// piped through untouched. Counts the refusals.
pub struct FlakyProxy {
    pub addr: SocketAddr,
    pub refused: Arc<AtomicUsize>,
    task: tokio::task::JoinHandle<()>,
}

impl FlakyProxy {
    pub async fn start(upstream: u16, every: usize) -> FlakyProxy {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let refused = Arc::new(AtomicUsize::new(0));
        let counter = refused.clone();
        let task = tokio::spawn(async move {
            let mut n = 0usize;
            while let Ok((mut client, _)) = listener.accept().await {
                n += 1;
                let fail = n % every == 1 || every == 1;
                let counter = counter.clone();
                tokio::spawn(async move {
                    let mut head = Vec::new();
                    let mut buf = [0u8; 4096];
                    // Read the request head (and, when failing, its body) first.
                    let end = loop {
                        let Ok(k) = client.read(&mut buf).await else {
                            return;
                        };
                        if k == 0 {
                            return;
                        }
                        head.extend_from_slice(&buf[..k]);
                        if let Some(p) = head.windows(4).position(|w| w == b"\r\n\r\n") {
                            break p + 4;
                        }
                    };
                    if fail {
                        let text = String::from_utf8_lossy(&head[..end]).to_ascii_lowercase();
                        let len: usize = text
                            .lines()
                            .find_map(|l| {
                                l.strip_prefix("content-length:")
                                    .map(|v| v.trim().parse().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        let mut have = head.len() - end;
                        while have < len {
                            let Ok(k) = client.read(&mut buf).await else {
                                return;
                            };
                            if k == 0 {
                                return;
                            }
                            have += k;
                        }
                        counter.fetch_add(1, Ordering::SeqCst);
                        let body = "<?xml version=\"1.0\"?><Error><Code>SlowDown</Code><Message>slow down</Message></Error>";
                        let resp = format!(
                            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/xml\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                        let _ = client.write_all(resp.as_bytes()).await;
                        let _ = client.shutdown().await;
                        return;
                    }
                    let Ok(mut up) = tokio::net::TcpStream::connect(("127.0.0.1", upstream)).await else {
                        return;
                    };
                    if up.write_all(&head).await.is_err() {
                        return;
                    }
                    let _ = tokio::io::copy_bidirectional(&mut client, &mut up).await;
                });
            }
        });
        FlakyProxy { addr, refused, task }
    }
}

impl Drop for FlakyProxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}
