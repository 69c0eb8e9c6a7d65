//! Connecting to cofferd's Unix socket.
//!
//! The socket path comes from `--socket`, then `$COFFER_SOCKET`, then
//! [`DEFAULT_SOCKET`]. gRPC over a Unix socket still needs an HTTP/2 authority, so the
//! channel is built for a placeholder URI and its connector dials the socket instead.

use std::path::{Path, PathBuf};

use hyper_util::rt::TokioIo;
use tokio::net::UnixStream;
use tonic::transport::{Channel, Endpoint};

use crate::proto::coffer_client::CofferClient;

/// Where cofferd listens unless configured otherwise.
pub const DEFAULT_SOCKET: &str = "/run/coffer/cofferd.sock";

/// The environment variable that overrides [`DEFAULT_SOCKET`] for clients.
pub const SOCKET_ENV: &str = "COFFER_SOCKET";

/// Why the daemon could not be reached.
#[derive(Debug, thiserror::Error)]
#[error("cannot reach cofferd at {path}: {reason}")]
pub struct ConnectError {
    pub path: PathBuf,
    pub reason: String,
}

/// Opens a channel to the daemon's socket. Fails fast, with the socket path in the
/// message, when nothing listens there.
pub async fn connect_channel(path: &Path) -> Result<Channel, ConnectError> {
    let socket = path.to_path_buf();
    let err = |reason: String| ConnectError {
        path: path.to_path_buf(),
        reason,
    };
    // Probe first: tonic's own error for a missing socket is a generic "transport error".
    if let Err(e) = UnixStream::connect(path).await {
        return Err(err(e.to_string()));
    }
    Endpoint::try_from("http://cofferd.invalid")
        .map_err(|e| err(e.to_string()))?
        .connect_with_connector(tower::service_fn(move |_| {
            let socket = socket.clone();
            async move { UnixStream::connect(socket).await.map(TokioIo::new) }
        }))
        .await
        .map_err(|e| err(e.to_string()))
}

/// A `coffer.v1.Coffer` client on the daemon's socket.
pub async fn connect(path: &Path) -> Result<CofferClient<Channel>, ConnectError> {
    Ok(CofferClient::new(connect_channel(path).await?).max_decoding_message_size(64 << 20))
}
