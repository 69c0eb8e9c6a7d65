//! The age encryption layer: `<id>.tar.zst.age` archives.
//!
//! An encrypted archive is the ordinary `.tar.zst` stream encrypted with
//! [age](https://age-encryption.org/v1) as it is written, so no plaintext ever reaches
//! the disk and `age -d -i key.txt ID.tar.zst.age | tar --zstd -xf -` restores it without
//! Coffer. Data flows:
//!
//! ```text
//! write:  tar -> zstd encoder -> [BackgroundWriter ->] EncryptWriter -> HashingWriter -> file
//! read:   file -> HashingReader -> decrypt_reader -> zstd decoder -> tar
//! ```
//!
//! [`BackgroundWriter`] optionally moves encryption, hashing and writing to a thread of
//! its own (see there for why and what it costs).
//!
//! The hashing layer sits *below* the age layer, so the sidecar's size and sha256 are the
//! ciphertext's: shallow verify and offsite copies need no key.
//!
//! **Keys.** [`Recipients`] are public keys (age X25519 `age1...`, `ssh-ed25519`,
//! `ssh-rsa`) from `[job.encryption] recipients`: cofferd needs no secret to back up.
//! [`Identities`] are the secret keys from the optional `identity-file` (age identity
//! lines and unencrypted OpenSSH ed25519/rsa private keys), needed for deep verify,
//! restore and [`rekey`]. [`require_identity`] turns a missing or non-matching identity
//! into the sentence the admin sees.
//!
//! **Fingerprints** name recipients in the sidecar and in messages without the key:
//! - SSH keys: `SHA256:<unpadded base64 of sha256(key blob)>`, exactly what
//!   `ssh-keygen -lf key.pub` prints, so an admin can match it against their keys.
//! - age X25519 keys: the recipient string `age1...` itself. It is already public, it is
//!   what `age-keygen -y key.txt` prints and what the config holds, so it needs no tool
//!   to match; a hash of it would only add a step. (age headers record no fingerprint
//!   for X25519 recipients, so this only appears where Coffer wrote it: the sidecar.)
//!
//! **Integrity.** age splits the payload into 64 KiB chunks, each sealed with
//! ChaCha20-Poly1305 under a nonce holding its index and a "last chunk" flag. Every
//! chunk is authenticated before any of its plaintext is returned, so a flipped byte
//! never yields forged plaintext, and a stream cut at a chunk boundary is caught because
//! the last chunk read was not flagged last. What age cannot do in one streaming pass is
//! detect that *before* the good chunks ahead of the damage were returned: a consumer
//! sees authentic plaintext up to the damaged chunk, then the error. So readers must
//! treat everything as provisional until [`DecryptReader::finish`] (read to the end)
//! succeeded: restore extracts into a staging directory and commits only afterwards.

use std::fs::{self, File, OpenOptions};
use std::io::{self, BufRead, BufReader, Chain, Cursor, Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD_NO_PAD;
use sha2::{Digest, Sha256};
use zeroize::Zeroizing;

use super::{HashingWriter, IO_BUFFER, hex};

/// The first line of every binary age v1 file (see [`is_age_file`]).
pub const AGE_MAGIC: &[u8] = b"age-encryption.org/v1\n";

/// age's plaintext chunk size (fixed by the format).
const CHUNK_SIZE: u64 = 64 << 10;

/// The largest age header accepted: about 1,500 SSH-RSA recipients. Anything larger is
/// damage or hostile input, and reading it must not exhaust memory.
const MAX_HEADER_BYTES: u64 = 1 << 20;

/// The largest identity file accepted (a few keys are a few KiB).
const MAX_IDENTITY_FILE_BYTES: u64 = 1 << 20;

/// Why parsing keys, encrypting or decrypting failed. Messages are sentences for the
/// admin; they never contain a secret key, and show at most a shortened public key.
#[derive(Debug, thiserror::Error)]
pub enum CryptError {
    #[error(
        "encryption.recipients is empty; list at least one age (age1...) or SSH (ssh-ed25519, ssh-rsa) public key"
    )]
    NoRecipients,
    /// `index` counts from 0, like the TOML array; the config layer prefixes the job.
    #[error("encryption.recipients[{index}]: '{shown}' is not a valid age or SSH public key{hint}")]
    InvalidRecipient {
        index: usize,
        /// A shortened form that never includes secret material (see `shorten`).
        shown: String,
        /// Empty, or a parenthesised reason and remedy, starting with a space.
        hint: &'static str,
    },
    #[error("cannot read the identity file {path}")]
    IdentityRead {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error(
        "the identity file {path} has mode {mode:04o}, so its secret keys are readable by group or others; run `chmod 600 {path}`"
    )]
    IdentityPermissions { path: PathBuf, mode: u32 },
    #[error("the identity file {path} is larger than 1 MiB, which no identity file is")]
    IdentityTooLarge { path: PathBuf },
    #[error(
        "the identity file {path} has something other than an age secret key (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH private key on line {line}"
    )]
    IdentityInvalid { path: PathBuf, line: usize },
    #[error("the identity file {path} holds {what} on line {line}, which cofferd cannot use: {remedy}")]
    IdentityUnsupported {
        path: PathBuf,
        line: usize,
        what: String,
        remedy: &'static str,
    },
    #[error("the identity file {path} holds no secret key")]
    IdentityEmpty { path: PathBuf },
    #[error(
        "this backup is encrypted and cofferd has no key to decrypt it; set identity-file in [job.encryption] to a file (mode 600) holding the secret key of one of its recipients: {recipients}"
    )]
    NoIdentity { recipients: String },
    #[error("none of the identities in {path} can decrypt this archive; it was encrypted to {recipients}")]
    NoMatchingIdentity { path: PathBuf, recipients: String },
    #[error("the archive is not an age-encrypted file: {why}")]
    NotAgeFile { why: &'static str },
    #[error("the archive uses a newer age format than this cofferd understands")]
    UnsupportedVersion,
    #[error("the archive's age header is damaged or was tampered with: {why}")]
    HeaderDamaged { why: &'static str },
    #[error(
        "the encrypted archive is damaged or was tampered with: chunk {chunk} (plaintext from byte {offset}) failed authentication"
    )]
    Corrupt { chunk: u64, offset: u64 },
    #[error(
        "the encrypted archive is truncated: it ends after {offset} bytes of plaintext, without age's final chunk"
    )]
    Truncated { offset: u64 },
    #[error("reading the encrypted archive failed")]
    Read(#[source] io::Error),
    #[error("writing the encrypted archive failed")]
    Write(#[source] io::Error),
    #[error("the encrypted archive cannot be completed because an earlier write to it failed")]
    Poisoned,
    #[error("the recipients cannot be used together")]
    Encrypt(#[source] age::EncryptError),
    #[error("the re-encrypted archive {path} did not read back as it was written")]
    RekeyVerify { path: PathBuf },
    #[error("re-encrypting was cancelled")]
    Cancelled,
}

impl CryptError {
    /// Wraps this error in an `io::Error` (for `Read`/`Write` impls), so that
    /// [`crypt_error`] can get it back.
    fn into_io(self) -> io::Error {
        let kind = match &self {
            CryptError::Truncated { .. } => io::ErrorKind::UnexpectedEof,
            CryptError::Poisoned => io::ErrorKind::BrokenPipe,
            _ => io::ErrorKind::InvalidData,
        };
        io::Error::new(kind, self)
    }

    /// Unwraps an error from a [`DecryptReader`] or [`EncryptWriter`]: the
    /// [`CryptError`] it carries, or [`CryptError::Read`] around a plain I/O error.
    pub fn from_read(error: io::Error) -> CryptError {
        if !error.get_ref().is_some_and(|e| e.is::<CryptError>()) {
            return CryptError::Read(error);
        }
        let kind = error.kind();
        match error.into_inner().map(|inner| inner.downcast::<CryptError>()) {
            Some(Ok(crypt)) => *crypt,
            // Not reached: the check above saw a CryptError inside.
            _ => CryptError::Read(io::Error::from(kind)),
        }
    }
}

/// The [`CryptError`] inside an `io::Error` returned by a [`DecryptReader`] or an
/// [`EncryptWriter`], if it is one (a zstd or tar layer above passes it through).
/// Layers that wrap the error (tar naming its entry) are looked through.
pub fn crypt_error(error: &io::Error) -> Option<&CryptError> {
    let mut next: Option<&(dyn std::error::Error + 'static)> = error.get_ref().map(|e| e as _);
    while let Some(e) = next {
        if let Some(crypt) = e.downcast_ref::<CryptError>() {
            return Some(crypt);
        }
        next = e
            .downcast_ref::<io::Error>()
            .and_then(|io| io.get_ref().map(|inner| inner as _))
            .or_else(|| e.source());
    }
    None
}

/// Whether `prefix` (the first bytes of a file, at least 22) starts an age v1 file, so
/// readers can tell `.tar.zst` contents (which start with zstd's magic `28 b5 2f fd`)
/// from `.tar.zst.age` contents.
pub fn is_age_file(prefix: &[u8]) -> bool {
    prefix.starts_with(AGE_MAGIC)
}

/// The ssh-keygen style fingerprint of an SSH public key blob.
fn ssh_fingerprint(blob: &[u8]) -> String {
    format!("SHA256:{}", STANDARD_NO_PAD.encode(Sha256::digest(blob)))
}

fn ssh_blob(recipient: &age::ssh::Recipient) -> &[u8] {
    match recipient {
        age::ssh::Recipient::SshRsa(blob, _) | age::ssh::Recipient::SshEd25519(blob, _) => blob,
    }
}

/// A bad config value as it may appear in a message: public-key-looking values keep
/// enough to be recognised, anything else (which may be a pasted secret or password)
/// only its first 4 characters.
fn shorten(value: &str) -> String {
    const PUBLIC: [&str; 4] = ["age1", "ssh-", "ecdsa-", "sk-"];
    let keep = if PUBLIC.iter().any(|p| value.starts_with(p)) {
        24
    } else {
        4
    };
    let mut shown: String = value.chars().take(keep).collect();
    if value.chars().count() > keep {
        shown.push('…');
    }
    shown.escape_debug().to_string()
}

#[derive(Clone)]
enum RecipientKey {
    X25519(age::x25519::Recipient),
    Ssh(age::ssh::Recipient),
}

impl RecipientKey {
    fn as_age(&self) -> &dyn age::Recipient {
        match self {
            RecipientKey::X25519(r) => r,
            RecipientKey::Ssh(r) => r,
        }
    }
}

/// The validated public keys an archive is encrypted to.
#[derive(Clone)]
pub struct Recipients {
    keys: Vec<(RecipientKey, String)>,
}

impl std::fmt::Debug for Recipients {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(self.keys.iter().map(|(_, fp)| fp))
            .finish()
    }
}

impl Recipients {
    /// Validates `[job.encryption] recipients`: each an age X25519 `age1...` key or an
    /// `ssh-ed25519`/`ssh-rsa` public key line (a trailing comment is allowed). The
    /// error names the first bad entry by index with a shortened, secret-free form of
    /// it. Duplicates (same fingerprint) are kept once.
    pub fn parse(values: &[String]) -> Result<Recipients, CryptError> {
        if values.is_empty() {
            return Err(CryptError::NoRecipients);
        }
        let mut keys: Vec<(RecipientKey, String)> = Vec::with_capacity(values.len());
        for (index, value) in values.iter().enumerate() {
            let (key, fingerprint) = parse_recipient(index, value.trim())?;
            if !keys.iter().any(|(_, fp)| *fp == fingerprint) {
                keys.push((key, fingerprint));
            }
        }
        Ok(Recipients { keys })
    }

    /// One fingerprint per recipient, in config order (see the module doc for the
    /// format): what the sidecar records.
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|(_, fp)| fp.clone()).collect()
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Recipient> {
        self.keys.iter().map(|(key, _)| key.as_age())
    }
}

fn parse_recipient(index: usize, value: &str) -> Result<(RecipientKey, String), CryptError> {
    let invalid = |hint| CryptError::InvalidRecipient {
        index,
        shown: shorten(value),
        hint,
    };
    let upper = value.to_ascii_uppercase();
    if upper.starts_with("AGE-SECRET-KEY-")
        || upper.starts_with("AGE-PLUGIN-")
        || value.contains("PRIVATE KEY")
    {
        return Err(invalid(
            " (it is a secret key: put its public key here, which `age-keygen -y FILE` or `ssh-keygen -y -f FILE` prints, and keep the secret key out of the config)",
        ));
    }
    if value.starts_with("age1") {
        return match value.parse::<age::x25519::Recipient>() {
            Ok(r) => {
                let fingerprint = r.to_string();
                Ok((RecipientKey::X25519(r), fingerprint))
            }
            Err(_) if value.contains(char::is_whitespace) => Err(invalid(
                " (an age recipient is one word, without spaces or a comment)",
            )),
            // Bech32 data never contains '1', so a later one means another type prefix
            // (age1yubikey1..., age1pq1...): a plugin or post-quantum recipient.
            Err(_) if value.rfind('1') != Some(3) => Err(invalid(
                " (only age X25519 recipients, as `age-keygen` makes them, are supported: not plugin or post-quantum ones)",
            )),
            Err(_) => Err(invalid(" (its checksum or length is wrong: copy it again)")),
        };
    }
    let mut tokens = value.split_ascii_whitespace();
    let (Some(kind), Some(blob)) = (tokens.next(), tokens.next()) else {
        return Err(invalid(""));
    };
    match kind {
        "ssh-ed25519" | "ssh-rsa" => {
            // Parse exactly "type blob"; whatever follows is the key's comment.
            match format!("{kind} {blob}").parse::<age::ssh::Recipient>() {
                Ok(r) => {
                    let fingerprint = ssh_fingerprint(ssh_blob(&r));
                    Ok((RecipientKey::Ssh(r), fingerprint))
                }
                Err(age::ssh::ParseRecipientKeyError::RsaModulusTooSmall) => {
                    Err(invalid(" (RSA keys shorter than 2048 bits are too weak)"))
                }
                Err(age::ssh::ParseRecipientKeyError::RsaModulusTooLarge) => {
                    Err(invalid(" (its RSA modulus is larger than age supports)"))
                }
                Err(_) => Err(invalid(" (its base64 key data is damaged: copy it again)")),
            }
        }
        "ssh-dss" => Err(invalid(
            " (age does not support DSA keys; use ssh-ed25519 or ssh-rsa)",
        )),
        k if k.starts_with("ecdsa-") || k.starts_with("sk-") || k.starts_with("ssh-") => {
            Err(invalid(" (age supports only ssh-ed25519 and ssh-rsa SSH keys)"))
        }
        _ => Err(invalid("")),
    }
}

struct IdentityKey {
    key: Box<dyn age::Identity + Send + Sync>,
    fingerprint: String,
}

/// The secret keys of `[job.encryption] identity-file`.
pub struct Identities {
    path: PathBuf,
    keys: Vec<IdentityKey>,
}

impl std::fmt::Debug for Identities {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Identities")
            .field("path", &self.path)
            .field("fingerprints", &self.fingerprints())
            .finish()
    }
}

impl Identities {
    /// Loads the identity file at `path`. It must not be readable or writable by group
    /// or others (`mode & 0o077 == 0`). It may hold, in any mix: age identity lines
    /// (`AGE-SECRET-KEY-1...`, as `age-keygen` writes them; `#` comments and blank lines
    /// ignored) and unencrypted OpenSSH private keys (ed25519 or rsa, OpenSSH or PEM
    /// format). Errors name the path and the line, never the content.
    pub fn load(path: &Path) -> Result<Identities, CryptError> {
        let read_error = |source| CryptError::IdentityRead {
            path: path.to_owned(),
            source,
        };
        let file = File::open(path).map_err(read_error)?;
        // The open file's metadata, so a swap between check and read cannot slip by.
        let metadata = file.metadata().map_err(read_error)?;
        let mode = metadata.permissions().mode() & 0o7777;
        if mode & 0o077 != 0 {
            return Err(CryptError::IdentityPermissions {
                path: path.to_owned(),
                mode,
            });
        }
        if metadata.len() > MAX_IDENTITY_FILE_BYTES {
            return Err(CryptError::IdentityTooLarge {
                path: path.to_owned(),
            });
        }
        // Sized up front so the secret text is never reallocated (and left behind
        // unwiped); wiped on drop.
        let mut text = Zeroizing::new(String::with_capacity(metadata.len() as usize + 1));
        let mut limited = file.take(MAX_IDENTITY_FILE_BYTES + 1);
        limited.read_to_string(&mut text).map_err(|e| match e.kind() {
            io::ErrorKind::InvalidData => CryptError::IdentityInvalid {
                path: path.to_owned(),
                line: 1,
            },
            _ => read_error(e),
        })?;
        if text.len() as u64 > MAX_IDENTITY_FILE_BYTES {
            return Err(CryptError::IdentityTooLarge {
                path: path.to_owned(),
            });
        }
        let keys = parse_identities(path, &text)?;
        Ok(Identities {
            path: path.to_owned(),
            keys,
        })
    }

    /// The identity file this was loaded from.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The fingerprints of the public keys matching these secret keys (the same form as
    /// [`Recipients::fingerprints`]).
    pub fn fingerprints(&self) -> Vec<String> {
        self.keys.iter().map(|k| k.fingerprint.clone()).collect()
    }

    /// Whether one of these identities matches one of `fingerprints` (a sidecar's).
    pub fn can_decrypt_for(&self, fingerprints: &[String]) -> bool {
        self.keys.iter().any(|k| fingerprints.contains(&k.fingerprint))
    }

    fn iter(&self) -> impl Iterator<Item = &dyn age::Identity> {
        self.keys.iter().map(|k| k.key.as_ref() as &dyn age::Identity)
    }
}

fn parse_identities(path: &Path, text: &str) -> Result<Vec<IdentityKey>, CryptError> {
    let invalid = |line| CryptError::IdentityInvalid {
        path: path.to_owned(),
        line,
    };
    let unsupported = |line, what: String, remedy| CryptError::IdentityUnsupported {
        path: path.to_owned(),
        line,
        what,
        remedy,
    };
    const PASSPHRASE_REMEDY: &str = "it is protected by a passphrase, which cofferd cannot type; give cofferd an unencrypted copy (`ssh-keygen -p -N '' -f COPY`) or an age key from `age-keygen`";
    let mut keys = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((i, line)) = lines.next() {
        let number = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        if line.starts_with("AGE-SECRET-KEY-") {
            let identity: age::x25519::Identity = line.parse().map_err(|_| invalid(number))?;
            let fingerprint = identity.to_public().to_string();
            keys.push(IdentityKey {
                key: Box::new(identity),
                fingerprint,
            });
        } else if line.starts_with("AGE-PLUGIN-") {
            return Err(unsupported(
                number,
                "an age plugin identity".to_owned(),
                "age plugins are not supported; use an age key from `age-keygen`",
            ));
        } else if line.starts_with("-----BEGIN ") {
            // A PEM block: collect it up to its END line and let age parse it.
            let mut block = Zeroizing::new(String::with_capacity(4096));
            block.push_str(line);
            block.push('\n');
            let mut ended = false;
            for (_, inner) in lines.by_ref() {
                let inner = inner.trim();
                block.push_str(inner);
                block.push('\n');
                if inner.starts_with("-----END ") {
                    ended = true;
                    break;
                }
            }
            if !ended {
                return Err(invalid(number));
            }
            let identity =
                age::ssh::Identity::from_buffer(block.as_bytes(), None).map_err(|_| invalid(number))?;
            match identity {
                age::ssh::Identity::Unencrypted(_) => {
                    let fingerprint = match age::ssh::Recipient::try_from(identity.clone()) {
                        Ok(r) => ssh_fingerprint(ssh_blob(&r)),
                        Err(_) => return Err(invalid(number)),
                    };
                    keys.push(IdentityKey {
                        key: Box::new(identity),
                        fingerprint,
                    });
                }
                age::ssh::Identity::Encrypted(_)
                | age::ssh::Identity::Unsupported(
                    age::ssh::UnsupportedKey::EncryptedPem | age::ssh::UnsupportedKey::EncryptedSsh(_),
                ) => {
                    return Err(unsupported(
                        number,
                        "a passphrase-protected SSH key".to_owned(),
                        PASSPHRASE_REMEDY,
                    ));
                }
                age::ssh::Identity::Unsupported(
                    age::ssh::UnsupportedKey::Hardware(kind) | age::ssh::UnsupportedKey::Type(kind),
                ) => {
                    return Err(unsupported(
                        number,
                        format!("an SSH key of type {}", kind.escape_debug()),
                        "age supports only ssh-ed25519 and ssh-rsa keys",
                    ));
                }
            }
        } else {
            return Err(invalid(number));
        }
    }
    if keys.is_empty() {
        return Err(CryptError::IdentityEmpty {
            path: path.to_owned(),
        });
    }
    Ok(keys)
}

/// What deep verify, restore and rekey call before decrypting a backup whose sidecar
/// lists `fingerprints`: the job's identities if one of them matches, else the sentence
/// telling the admin what to do. Without an identity file: [`CryptError::NoIdentity`].
/// With one that matches none of the (non-empty) fingerprints:
/// [`CryptError::NoMatchingIdentity`] naming the file and the fingerprints.
pub fn require_identity<'a>(
    identities: Option<&'a Identities>,
    fingerprints: &[String],
) -> Result<&'a Identities, CryptError> {
    let listed = if fingerprints.is_empty() {
        "(unknown: the sidecar lists none)".to_owned()
    } else {
        fingerprints.join(", ")
    };
    match identities {
        None => Err(CryptError::NoIdentity { recipients: listed }),
        Some(ids) if fingerprints.is_empty() || ids.can_decrypt_for(fingerprints) => Ok(ids),
        Some(ids) => Err(CryptError::NoMatchingIdentity {
            path: ids.path.clone(),
            recipients: listed,
        }),
    }
}

/// Encrypts everything written to it to a set of [`Recipients`], streaming in age's
/// 64 KiB chunks (memory use is bounded: one plaintext and one ciphertext chunk).
///
/// **The output is valid only after [`EncryptWriter::finish`]**, which writes age's
/// final chunk and is the only way to get the inner writer back. Forgetting it is made
/// impossible by ownership rather than by a `Drop` hook: the archive writer stacks
/// `zstd -> EncryptWriter -> HashingWriter -> file`, and the commit step (sidecar size
/// and sha256, fsync, rename) needs the `HashingWriter` that only `finish` returns. A
/// writer dropped without `finish` (an error or cancellation path, where the caller
/// deletes the file) leaves a stream without its final chunk, which every age reader,
/// ours included, rejects as truncated. There is deliberately no `Drop` impl: `Drop`
/// cannot report an error, and writing the final chunk there would turn an abandoned
/// archive into a valid-looking one.
///
/// After any write error the writer is poisoned (age's chunk counter has moved on, so
/// continuing would write an undecryptable stream): further writes and `finish` fail
/// with [`CryptError::Poisoned`].
#[must_use = "the encrypted output is incomplete until finish() is called"]
pub struct EncryptWriter<W: Write> {
    /// `None` once poisoned.
    stream: Option<age::stream::StreamWriter<W>>,
}

impl<W: Write> std::fmt::Debug for EncryptWriter<W> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EncryptWriter")
            .field("poisoned", &self.stream.is_none())
            .finish()
    }
}

impl<W: Write> EncryptWriter<W> {
    /// Writes the age header for `recipients` to `output` and returns the writer for the
    /// payload.
    pub fn new(output: W, recipients: &Recipients) -> Result<Self, CryptError> {
        let encryptor = age::Encryptor::with_recipients(recipients.iter()).map_err(CryptError::Encrypt)?;
        let stream = encryptor.wrap_output(output).map_err(CryptError::Write)?;
        Ok(EncryptWriter { stream: Some(stream) })
    }

    /// Encrypts the buffered rest and writes age's final chunk; returns the inner
    /// writer, which the caller then flushes/fsyncs. The error is the inner writer's, or
    /// a [`CryptError::Poisoned`] wrapped in an `io::Error`.
    pub fn finish(self) -> io::Result<W> {
        match self.stream {
            Some(stream) => stream.finish(),
            None => Err(CryptError::Poisoned.into_io()),
        }
    }
}

impl<W: Write> Write for EncryptWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CryptError::Poisoned.into_io());
        };
        // StreamWriter retries Interrupted itself (write_all), so any error is real.
        stream.write(buf).inspect_err(|_| self.stream = None)
    }

    /// Flushes the inner writer. A partial chunk stays buffered: age can only seal it
    /// once it is known whether more data follows.
    fn flush(&mut self) -> io::Result<()> {
        let Some(stream) = self.stream.as_mut() else {
            return Err(CryptError::Poisoned.into_io());
        };
        stream.flush().inspect_err(|_| self.stream = None)
    }
}

/// Buffer size handed to a [`BackgroundWriter`]'s thread.
const BACKGROUND_BLOCK: usize = 256 << 10;

/// Buffers in flight per [`BackgroundWriter`]: bounds its memory to about 1.5 MiB.
const BACKGROUND_DEPTH: usize = 4;

/// Runs a writer (an [`EncryptWriter`] over the hashing file writer) on its own thread,
/// so that encrypting, hashing and the write syscalls overlap with tar and zstd on the
/// calling thread instead of adding to them.
///
/// Why: ChaCha20-Poly1305 costs about 1 CPU-second per GiB here. Behind zstd that is
/// only the *compressed* bytes, a few percent, but for incompressible media (uploads,
/// package tarballs) zstd is cheap and encryption would add ~50% to the calling thread.
/// On its own thread it uses a core that zstd leaves idle on such data.
///
/// Writes are copied into 256 KiB blocks and sent over a bounded channel (at most
/// `BACKGROUND_DEPTH` blocks queued, then the caller waits: back-pressure, bounded
/// memory). [`BackgroundWriter::finish`] hands over the last block, waits for the
/// thread and returns the inner writer, so `finish` chains stay as they are:
/// `background.finish()?.finish()?` gives back the hashing writer. The first error of
/// the inner writer is returned (unchanged, e.g. ENOSPC) by the next `write` or by
/// `finish`; after it the writer is poisoned. Dropping it without `finish` stops the
/// thread after the queued blocks and drops the inner writer unfinished (for an
/// `EncryptWriter`: an invalid, truncated file, as intended).
#[must_use = "the output is incomplete until finish() is called"]
pub struct BackgroundWriter<W: Write + Send + 'static> {
    block: Vec<u8>,
    to_worker: Option<std::sync::mpsc::SyncSender<Vec<u8>>>,
    /// Emptied blocks coming back, so steady state allocates nothing.
    spare: std::sync::mpsc::Receiver<Vec<u8>>,
    worker: Option<std::thread::JoinHandle<io::Result<W>>>,
}

impl<W: Write + Send + 'static> BackgroundWriter<W> {
    /// Starts the thread (named `coffer-write`) that owns `inner`.
    pub fn new(inner: W) -> io::Result<Self> {
        let (to_worker, blocks) = std::sync::mpsc::sync_channel::<Vec<u8>>(BACKGROUND_DEPTH);
        let (give_back, spare) = std::sync::mpsc::sync_channel::<Vec<u8>>(BACKGROUND_DEPTH + 2);
        let worker = std::thread::Builder::new()
            .name("coffer-write".to_owned())
            .spawn(move || {
                let mut inner = inner;
                for mut block in blocks {
                    inner.write_all(&block)?;
                    block.clear();
                    let _ = give_back.try_send(block);
                }
                Ok(inner)
            })?;
        Ok(BackgroundWriter {
            block: Vec::new(),
            to_worker: Some(to_worker),
            spare,
            worker: Some(worker),
        })
    }

    fn send_block(&mut self) -> io::Result<()> {
        if self.block.is_empty() {
            return Ok(());
        }
        let block = std::mem::take(&mut self.block);
        let Some(to_worker) = self.to_worker.as_ref() else {
            return Err(CryptError::Poisoned.into_io());
        };
        if to_worker.send(block).is_err() {
            // The thread only stops early when its writer failed: report that error.
            return Err(self.stop());
        }
        Ok(())
    }

    /// Stops the thread and returns why it stopped (poisoning this writer).
    fn stop(&mut self) -> io::Error {
        self.to_worker = None;
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(Err(e))) => e,
            Some(Err(_)) => io::Error::other("the archive writer thread panicked"),
            Some(Ok(Ok(_))) | None => CryptError::Poisoned.into_io(),
        }
    }

    /// Writes the last block, waits for the thread and returns the inner writer (not
    /// finished or flushed itself: that is the caller's next step).
    pub fn finish(mut self) -> io::Result<W> {
        self.send_block()?;
        self.to_worker = None;
        match self.worker.take().map(std::thread::JoinHandle::join) {
            Some(Ok(result)) => result,
            Some(Err(_)) => Err(io::Error::other("the archive writer thread panicked")),
            None => Err(CryptError::Poisoned.into_io()),
        }
    }
}

impl<W: Write + Send + 'static> Write for BackgroundWriter<W> {
    fn write(&mut self, data: &[u8]) -> io::Result<usize> {
        if self.to_worker.is_none() {
            return Err(CryptError::Poisoned.into_io());
        }
        if self.block.capacity() == 0 {
            self.block = self
                .spare
                .try_recv()
                .unwrap_or_else(|_| Vec::with_capacity(BACKGROUND_BLOCK));
        }
        let n = data.len().min(BACKGROUND_BLOCK - self.block.len());
        self.block.extend_from_slice(&data[..n]);
        if self.block.len() == BACKGROUND_BLOCK {
            self.send_block()?;
        }
        Ok(n)
    }

    /// Hands the partial block to the thread; does not wait for it to be written
    /// (`finish` does).
    fn flush(&mut self) -> io::Result<()> {
        self.send_block()
    }
}

impl<W: Write + Send + 'static> Drop for BackgroundWriter<W> {
    fn drop(&mut self) {
        // Join, so the inner writer (the archive file) is closed before the caller
        // goes on to delete it.
        self.to_worker = None;
        if let Some(worker) = self.worker.take() {
            let _ = worker.join();
        }
    }
}

/// Marks errors of the caller's reader, so they are passed through as they are instead
/// of being mistaken for age's own `InvalidData`/`UnexpectedEof` errors.
struct Source<R>(R);

#[derive(Debug)]
struct SourceError(io::Error);

impl std::fmt::Display for SourceError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        self.0.fmt(f)
    }
}

impl std::error::Error for SourceError {}

impl<R: Read> Read for Source<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        self.0.read(buf).map_err(|e| match e.kind() {
            io::ErrorKind::Interrupted => e,
            kind => io::Error::new(kind, SourceError(e)),
        })
    }
}

/// The caller's original error if `error` came from [`Source`].
fn source_error(error: io::Error) -> Result<io::Error, io::Error> {
    if !error.get_ref().is_some_and(|e| e.is::<SourceError>()) {
        return Err(error);
    }
    let kind = error.kind();
    match error.into_inner().map(|inner| inner.downcast::<SourceError>()) {
        Some(Ok(source)) => Ok(source.0),
        _ => Ok(io::Error::from(kind)),
    }
}

type Input<R> = Chain<Cursor<Vec<u8>>, BufReader<Source<R>>>;

#[derive(Clone, Copy)]
enum Failure {
    Corrupt { chunk: u64, offset: u64 },
    Truncated { offset: u64 },
}

impl Failure {
    fn error(self) -> io::Error {
        match self {
            Failure::Corrupt { chunk, offset } => CryptError::Corrupt { chunk, offset },
            Failure::Truncated { offset } => CryptError::Truncated { offset },
        }
        .into_io()
    }
}

/// The plaintext of an age file, authenticated chunk by chunk (see the module doc for
/// what that guarantees). Errors are `io::Error`s carrying a [`CryptError`] sentence
/// ([`crypt_error`], [`CryptError::from_read`]); errors of the underlying reader are
/// passed through unchanged. Once the stream failed authentication, every later read
/// fails the same way.
pub struct DecryptReader<R: Read> {
    stream: age::stream::StreamReader<Input<R>>,
    /// Plaintext bytes returned so far.
    position: u64,
    failed: Option<Failure>,
}

impl<R: Read> std::fmt::Debug for DecryptReader<R> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DecryptReader")
            .field("position", &self.position)
            .field("failed", &self.failed.is_some())
            .finish()
    }
}

impl<R: Read> DecryptReader<R> {
    /// Plaintext bytes returned so far.
    pub fn position(&self) -> u64 {
        self.position
    }

    /// Reads (and discards) whatever plaintext is left, so that age's final-chunk check
    /// has run; returns the total plaintext size. Consumers that stop early (a zstd
    /// decoder at the end of its frame, a tar reader at its end marker) must call this
    /// before trusting what they read: a file cut at a chunk boundary is only detected
    /// at the end.
    pub fn finish(mut self) -> Result<u64, CryptError> {
        io::copy(&mut self, &mut io::sink()).map_err(CryptError::from_read)?;
        Ok(self.position)
    }
}

impl<R: Read> Read for DecryptReader<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if let Some(failure) = self.failed {
            return Err(failure.error());
        }
        match self.stream.read(buf) {
            Ok(n) => {
                self.position += n as u64;
                Ok(n)
            }
            Err(e) => match source_error(e) {
                // The caller's reader failed: not a verdict on the data, and a retry
                // resumes where it stopped.
                Ok(original) => Err(original),
                Err(age_error) => {
                    let offset = self.position;
                    let failure = if age_error.kind() == io::ErrorKind::UnexpectedEof {
                        Failure::Truncated { offset }
                    } else {
                        Failure::Corrupt {
                            chunk: offset.div_ceil(CHUNK_SIZE),
                            offset,
                        }
                    };
                    self.failed = Some(failure);
                    Err(failure.error())
                }
            },
        }
    }
}

/// Reads the age header (up to and including the `---` MAC line) from `input`.
fn read_header<R: BufRead>(input: &mut R) -> Result<Vec<u8>, CryptError> {
    let mut header = Vec::with_capacity(1024);
    let read_line = |input: &mut R, header: &mut Vec<u8>| -> Result<usize, CryptError> {
        let left = MAX_HEADER_BYTES.saturating_sub(header.len() as u64);
        if left == 0 {
            return Err(CryptError::HeaderDamaged {
                why: "it is longer than 1 MiB",
            });
        }
        input
            .take(left)
            .read_until(b'\n', header)
            .map_err(|e| match source_error(e) {
                Ok(original) | Err(original) => CryptError::Read(original),
            })
    };
    read_line(input, &mut header)?;
    if !header.starts_with(AGE_MAGIC) {
        return Err(if header.is_empty() {
            CryptError::NotAgeFile { why: "it is empty" }
        } else if header.starts_with(b"age-encryption.org/") {
            CryptError::UnsupportedVersion
        } else if header.starts_with(b"-----BEGIN AGE ENCRYPTED FILE-----") {
            CryptError::NotAgeFile {
                why: "it is ASCII-armored age, which Coffer does not use",
            }
        } else {
            CryptError::NotAgeFile {
                why: "it does not start with age-encryption.org/v1",
            }
        });
    }
    loop {
        let start = header.len();
        if read_line(input, &mut header)? == 0 {
            return Err(CryptError::HeaderDamaged {
                why: "the file ends inside the header",
            });
        }
        if header[start..].starts_with(b"---") {
            return Ok(header);
        }
    }
}

/// Describes the recipient stanzas of an age header for a message. age records no key
/// identity for X25519 recipients and only a 4-byte tag (the start of sha256 of the
/// key blob) for SSH ones, which gives the first 5 characters of the ssh-keygen
/// fingerprint.
fn describe_recipients(header: &[u8]) -> String {
    let text = String::from_utf8_lossy(header);
    let mut described = Vec::new();
    let mut x25519 = 0usize;
    for line in text.lines() {
        let Some(stanza) = line.strip_prefix("-> ") else {
            continue;
        };
        let mut args = stanza.split(' ');
        let kind = args.next().unwrap_or_default();
        match kind {
            "X25519" => x25519 += 1,
            "ssh-ed25519" | "ssh-rsa" => {
                let tag = args
                    .next()
                    .and_then(|t| STANDARD_NO_PAD.decode(t).ok())
                    .filter(|t| t.len() == 4);
                match tag {
                    Some(tag) => {
                        let prefix: String = STANDARD_NO_PAD.encode(&tag).chars().take(5).collect();
                        described.push(format!("the {kind} key SHA256:{prefix}…"));
                    }
                    None => described.push(format!("an {kind} key")),
                }
            }
            "scrypt" => described.push("a passphrase".to_owned()),
            // age adds random "grease" stanzas so parsers stay tolerant; not recipients.
            grease if grease.ends_with("-grease") => {}
            other => {
                let other: String = other.chars().take(32).collect();
                described.push(format!("a '{}' recipient", other.escape_debug()));
            }
        }
    }
    match x25519 {
        0 => {}
        1 => described.push("an age X25519 key (age does not record which)".to_owned()),
        n => described.push(format!("{n} age X25519 keys (age does not record which)")),
    }
    if described.is_empty() {
        "no recipient".to_owned()
    } else {
        described.join(", ")
    }
}

/// Starts decrypting the age file `input` with `identities`: reads and checks the
/// header now (errors: not an age file, damaged header, no matching identity — naming
/// the identity file and the recipients the header shows), and returns the streaming
/// plaintext reader. The caller usually checked [`require_identity`] against the
/// sidecar's fingerprints first, which gives the better message.
pub fn decrypt_reader<R: Read>(input: R, identities: &Identities) -> Result<DecryptReader<R>, CryptError> {
    let mut input = BufReader::with_capacity(IO_BUFFER, Source(input));
    let header = read_header(&mut input)?;
    let recipients = describe_recipients(&header);
    let decryptor = age::Decryptor::new_buffered(Cursor::new(header).chain(input)).map_err(header_error)?;
    let stream = decryptor.decrypt(identities.iter()).map_err(|e| match e {
        age::DecryptError::NoMatchingKeys => CryptError::NoMatchingIdentity {
            path: identities.path.clone(),
            recipients,
        },
        e => header_error(e),
    })?;
    Ok(DecryptReader {
        stream,
        position: 0,
        failed: None,
    })
}

fn header_error(error: age::DecryptError) -> CryptError {
    match error {
        age::DecryptError::Io(e) => match source_error(e) {
            Ok(original) => CryptError::Read(original),
            // The header was read already, so this is the nonce after it missing.
            Err(_) => CryptError::Truncated { offset: 0 },
        },
        age::DecryptError::UnknownFormat => CryptError::UnsupportedVersion,
        age::DecryptError::InvalidMac => CryptError::HeaderDamaged {
            why: "its MAC does not match",
        },
        age::DecryptError::InvalidHeader => CryptError::HeaderDamaged {
            why: "it does not parse",
        },
        age::DecryptError::DecryptionFailed => CryptError::HeaderDamaged {
            why: "the key stanza for the identity does not decrypt",
        },
        _ => CryptError::HeaderDamaged {
            why: "its recipient stanzas cannot be used",
        },
    }
}

/// The fingerprints of the keys in `identities` that can decrypt the age file `input`
/// (only its header is read): which of our keys it was encrypted to. age records no
/// X25519 recipient in its header, so this is what an upload without a sidecar can say
/// about its recipients. Errors as [`decrypt_reader`] (not an age file, damaged header).
pub fn matching_fingerprints<R: Read>(input: R, identities: &Identities) -> Result<Vec<String>, CryptError> {
    let mut input = BufReader::with_capacity(IO_BUFFER, Source(input));
    let header = read_header(&mut input)?;
    // age reads the payload nonce right after the header; any 16 bytes do here, as
    // nothing is decrypted beyond the file key.
    let mut probe = header;
    probe.extend_from_slice(&[0u8; 16]);
    let mut found = Vec::new();
    for key in &identities.keys {
        let decryptor = age::Decryptor::new_buffered(Cursor::new(probe.as_slice())).map_err(header_error)?;
        if decryptor
            .decrypt(std::iter::once(key.key.as_ref() as &dyn age::Identity))
            .is_ok()
        {
            found.push(key.fingerprint.clone());
        }
    }
    Ok(found)
}

/// Says whom the age file `input` was encrypted to, as far as its header tells (see
/// `describe_recipients`): for a message when no key is configured at all.
pub fn describe_header<R: Read>(input: R) -> Result<String, CryptError> {
    let mut input = BufReader::with_capacity(IO_BUFFER, Source(input));
    Ok(describe_recipients(&read_header(&mut input)?))
}

/// A key that exists only in this process's memory, for scratch copies that must not
/// reach the disk as plaintext (a database's pages copied to staging so the app's
/// writers wait for a copy rather than for the whole compression). The copy is written
/// age-encrypted to a fresh X25519 key generated here and never stored: a crash leaves
/// staging ciphertext nobody can read, which the start-up sweep removes.
pub struct ScratchKey {
    recipients: Recipients,
    identity: age::x25519::Identity,
}

impl Default for ScratchKey {
    fn default() -> Self {
        ScratchKey::new()
    }
}

impl ScratchKey {
    /// A fresh key.
    pub fn new() -> ScratchKey {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public();
        let fingerprint = recipient.to_string();
        ScratchKey {
            recipients: Recipients {
                keys: vec![(RecipientKey::X25519(recipient), fingerprint)],
            },
            identity,
        }
    }

    /// Creates `path` (which must not exist, mode 0600) and returns a writer that
    /// encrypts into it; [`EncryptWriter::finish`] it, then flush the `BufWriter`.
    pub fn create(&self, path: &Path) -> Result<EncryptWriter<io::BufWriter<File>>, CryptError> {
        let file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(path)
            .map_err(CryptError::Write)?;
        EncryptWriter::new(io::BufWriter::with_capacity(1 << 20, file), &self.recipients)
    }

    /// Opens a copy written by [`ScratchKey::create`] for reading its plaintext; call
    /// [`DecryptReader::finish`] after the last byte used.
    pub fn open(&self, path: &Path) -> Result<DecryptReader<File>, CryptError> {
        let file = File::open(path).map_err(CryptError::Read)?;
        let identities = Identities {
            path: path.to_owned(),
            keys: vec![IdentityKey {
                key: Box::new(self.identity.clone()),
                fingerprint: self.recipients.keys[0].1.clone(),
            }],
        };
        decrypt_reader(file, &identities)
    }
}

/// What [`rekey`] produced.
pub struct Rekeyed<W> {
    /// The output writer, after age's final chunk (not yet flushed/fsynced).
    pub output: W,
    /// Plaintext size and hex sha256 (unchanged by rekeying; a check for the caller).
    pub plaintext_bytes: u64,
    pub plaintext_sha256: String,
}

/// Re-encrypts the age file `input` (decrypted with `identities`) to `recipients` into
/// `output`, streaming. The whole input is authenticated, final chunk included, before
/// the new stream is finished, so a damaged archive never yields a valid-looking new
/// one. `progress(plaintext bytes done)`; `cancelled` is checked between buffers.
pub fn rekey<R: Read, W: Write>(
    input: R,
    output: W,
    identities: &Identities,
    recipients: &Recipients,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64),
) -> Result<Rekeyed<W>, CryptError> {
    let mut reader = decrypt_reader(input, identities)?;
    let mut writer = EncryptWriter::new(output, recipients)?;
    let mut hasher = Sha256::new();
    let mut buf = vec![0u8; IO_BUFFER];
    loop {
        if cancelled() {
            return Err(CryptError::Cancelled);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CryptError::from_read(e)),
        };
        hasher.update(&buf[..n]);
        writer.write_all(&buf[..n]).map_err(CryptError::Write)?;
        progress(reader.position());
    }
    let plaintext_bytes = reader.position();
    let output = writer.finish().map_err(CryptError::Write)?;
    Ok(Rekeyed {
        output,
        plaintext_bytes,
        plaintext_sha256: hex(&hasher.finalize()),
    })
}

/// How a re-encrypted file was checked before it may replace the original.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RekeyCheck {
    /// Read back and decrypted in full with the identity file (it holds a key of the
    /// new recipients): same plaintext size and sha256 as the original.
    Decrypted,
    /// The identity file holds none of the new recipients' keys, so the file was read
    /// back and its ciphertext sha256 compared with what was written (the disk holds
    /// exactly what the tested encryptor produced).
    Hashed,
}

/// A re-encrypted archive written and checked next to the original, not yet in place.
/// [`PendingRekey::commit`] renames it over the original; dropping it removes it.
pub struct PendingRekey {
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
    /// Ciphertext size and hex sha256 of the new file: the sidecar's new values.
    pub size: u64,
    pub sha256: String,
    /// The new recipients' fingerprints: the sidecar's new list.
    pub fingerprints: Vec<String>,
    pub check: RekeyCheck,
}

impl PendingRekey {
    /// Where the new file is until commit.
    pub fn temp_path(&self) -> &Path {
        &self.temp
    }

    /// Renames the new file over the original and fsyncs the directory.
    pub fn commit(mut self) -> Result<(), CryptError> {
        fs::rename(&self.temp, &self.target).map_err(CryptError::Write)?;
        self.committed = true;
        if let Some(dir) = self.target.parent() {
            File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(CryptError::Write)?;
        }
        Ok(())
    }
}

impl Drop for PendingRekey {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_file(&self.temp);
        }
    }
}

/// Re-encrypts the archive at `archive` to `recipients`, crash-safely: the new file is
/// written next to it at `temp` (same directory, so commit is a rename; a leftover from
/// a crash is replaced), fsynced, read back and checked ([`RekeyCheck`]), and returned
/// pending. The caller writes the new sidecar and then [`PendingRekey::commit`]s; the
/// original is untouched until then. `progress(plaintext bytes done, ciphertext bytes
/// total)`.
pub fn rekey_file(
    archive: &Path,
    temp: &Path,
    identities: &Identities,
    recipients: &Recipients,
    cancelled: &dyn Fn() -> bool,
    progress: &mut dyn FnMut(u64, u64),
) -> Result<PendingRekey, CryptError> {
    let source = File::open(archive).map_err(CryptError::Read)?;
    let metadata = source.metadata().map_err(CryptError::Read)?;
    let total = metadata.len();
    let temp = temp.to_owned();
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(CryptError::Write(e)),
    }
    let mode = metadata.permissions().mode() & 0o777;
    let file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(&temp)
        .map_err(CryptError::Write)?;
    // From here on the guard removes the temp file on every error path.
    let mut pending = PendingRekey {
        temp,
        target: archive.to_owned(),
        committed: false,
        size: 0,
        sha256: String::new(),
        fingerprints: recipients.fingerprints(),
        check: RekeyCheck::Hashed,
    };
    let rekeyed = rekey(
        source,
        HashingWriter::new(file),
        identities,
        recipients,
        cancelled,
        &mut |done| progress(done, total),
    )?;
    let (file, size, sha256) = rekeyed.output.finish();
    // Set after creation: the mode given to open() is cut by the umask.
    file.set_permissions(fs::Permissions::from_mode(mode))
        .and_then(|()| file.sync_all())
        .map_err(CryptError::Write)?;
    drop(file);

    // Reads back through the page cache: this catches a writer bug or a file changed
    // under us, not a disk that lies (the sidecar hash catches that on later verifies).
    let mut reread = HashingWriter::new(io::sink());
    let mut written = File::open(&pending.temp).map_err(CryptError::Read)?;
    drain(&mut written, &mut reread, cancelled)?;
    let (_, reread_size, reread_sha256) = reread.finish();
    if (reread_size, &reread_sha256) != (size, &sha256) {
        return Err(CryptError::RekeyVerify {
            path: pending.temp.clone(),
        });
    }
    if identities.can_decrypt_for(&pending.fingerprints) {
        let file = File::open(&pending.temp).map_err(CryptError::Read)?;
        let mut reader = decrypt_reader(file, identities)?;
        let mut plain = HashingWriter::new(io::sink());
        drain(&mut reader, &mut plain, cancelled)?;
        let (_, plain_size, plain_sha256) = plain.finish();
        if (plain_size, &plain_sha256) != (rekeyed.plaintext_bytes, &rekeyed.plaintext_sha256) {
            return Err(CryptError::RekeyVerify {
                path: pending.temp.clone(),
            });
        }
        pending.check = RekeyCheck::Decrypted;
    }
    pending.size = size;
    pending.sha256 = sha256;
    Ok(pending)
}

/// Copies `reader` to `writer` in [`IO_BUFFER`] steps, checking `cancelled` between them.
fn drain(
    reader: &mut dyn Read,
    writer: &mut dyn Write,
    cancelled: &dyn Fn() -> bool,
) -> Result<u64, CryptError> {
    let mut buf = vec![0u8; IO_BUFFER];
    let mut total = 0u64;
    loop {
        if cancelled() {
            return Err(CryptError::Cancelled);
        }
        let n = match reader.read(&mut buf) {
            Ok(0) => return Ok(total),
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(CryptError::from_read(e)),
        };
        writer.write_all(&buf[..n]).map_err(CryptError::Write)?;
        total += n as u64;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use age::secrecy::ExposeSecret;
    use std::process::{Command, Stdio};

    /// Deterministic incompressible test data.
    fn data(len: usize, seed: u64) -> Vec<u8> {
        let mut x = seed | 1;
        (0..len)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                (x >> 24) as u8
            })
            .collect()
    }

    fn write_secret(path: &Path, text: &str) {
        fs::write(path, text).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(0o600)).unwrap();
    }

    /// A fresh age key pair: (identity file, recipient string).
    fn age_key(dir: &Path, name: &str) -> (PathBuf, String) {
        let identity = age::x25519::Identity::generate();
        let recipient = identity.to_public().to_string();
        let path = dir.join(name);
        let text = format!(
            "# created: by a test\n# public key: {recipient}\n{}\n",
            identity.to_string().expose_secret()
        );
        write_secret(&path, &text);
        (path, recipient)
    }

    fn recipients(values: &[&str]) -> Recipients {
        Recipients::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>()).unwrap()
    }

    fn encrypt(plain: &[u8], to: &Recipients) -> Vec<u8> {
        let mut writer = EncryptWriter::new(Vec::new(), to).unwrap();
        // Odd write sizes, so chunk boundaries fall inside writes.
        for piece in plain.chunks(10_007) {
            writer.write_all(piece).unwrap();
        }
        writer.finish().unwrap()
    }

    /// Reads until EOF or the first error: the plaintext released, and the error.
    fn decrypt_all(ciphertext: &[u8], ids: &Identities) -> (Vec<u8>, Result<(), CryptError>) {
        let mut reader = match decrypt_reader(ciphertext, ids) {
            Ok(r) => r,
            Err(e) => return (Vec::new(), Err(e)),
        };
        let mut out = Vec::new();
        let mut buf = vec![0u8; 7_001];
        loop {
            match reader.read(&mut buf) {
                Ok(0) => return (out, Ok(())),
                Ok(n) => out.extend_from_slice(&buf[..n]),
                Err(e) => {
                    // The error latches.
                    let again = reader.read(&mut buf).unwrap_err();
                    assert_eq!(again.to_string(), e.to_string());
                    return (out, Err(CryptError::from_read(e)));
                }
            }
        }
    }

    fn have(tool: &str) -> bool {
        let found = std::env::var_os("PATH")
            .is_some_and(|paths| std::env::split_paths(&paths).any(|dir| dir.join(tool).is_file()));
        if !found {
            eprintln!("SKIP: `{tool}` is not installed (apt-get install age openssh-client)");
        }
        found
    }

    fn run(cmd: &mut Command) -> Vec<u8> {
        let out = cmd.stderr(Stdio::piped()).output().unwrap();
        assert!(
            out.status.success(),
            "{cmd:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// `ssh-keygen` key pair: (private key path, public key line).
    fn ssh_key(dir: &Path, name: &str, args: &[&str]) -> (PathBuf, String) {
        let path = dir.join(name);
        run(Command::new("ssh-keygen")
            .args(["-q", "-N", "", "-C", "test@coffer", "-f"])
            .arg(&path)
            .args(args));
        let public = fs::read_to_string(path.with_extension("pub")).unwrap();
        (path, public.trim().to_owned())
    }

    #[test]
    fn round_trips_at_chunk_boundaries() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let to = recipients(&[&recipient]);
        let ids = Identities::load(&key).unwrap();
        let k = CHUNK_SIZE as usize;
        for len in [0, 1, k - 1, k, k + 1, 2 * k, 3 * k + 17, (1 << 20) + 123] {
            let plain = data(len, len as u64);
            let ciphertext = encrypt(&plain, &to);
            assert!(is_age_file(&ciphertext));
            let (out, result) = decrypt_all(&ciphertext, &ids);
            result.unwrap();
            assert!(out == plain, "round trip of {len} bytes");
            let reader = decrypt_reader(&ciphertext[..], &ids).unwrap();
            assert_eq!(reader.finish().unwrap(), len as u64);
        }
    }

    #[test]
    fn x25519_fingerprint_is_the_recipient() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let to = recipients(&[&recipient, &recipient]);
        assert_eq!(to.fingerprints(), vec![recipient.clone()], "duplicates kept once");
        let ids = Identities::load(&key).unwrap();
        assert_eq!(ids.fingerprints(), vec![recipient.clone()]);
        assert!(ids.can_decrypt_for(&[recipient]));
    }

    #[test]
    fn multiple_recipients_each_identity_decrypts() {
        let dir = tempfile::tempdir().unwrap();
        let (key_a, a) = age_key(dir.path(), "a.txt");
        let (key_b, b) = age_key(dir.path(), "b.txt");
        let mut keys = vec![(key_a, a.clone()), (key_b, b.clone())];
        if have("ssh-keygen") {
            keys.push(ssh_key(dir.path(), "id_ed25519", &["-t", "ed25519"]));
            keys.push(ssh_key(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]));
        }
        let values: Vec<String> = keys.iter().map(|(_, r)| r.clone()).collect();
        let to = Recipients::parse(&values).unwrap();
        let plain = data(200_000, 7);
        let ciphertext = encrypt(&plain, &to);
        for (path, _) in &keys {
            let ids = Identities::load(path).unwrap();
            assert!(ids.can_decrypt_for(&to.fingerprints()));
            let (out, result) = decrypt_all(&ciphertext, &ids);
            result.unwrap();
            assert!(out == plain, "decrypting with {}", path.display());
        }
    }

    #[test]
    fn ssh_fingerprints_match_ssh_keygen() {
        if !have("ssh-keygen") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        for (name, args) in [
            ("id_ed25519", &["-t", "ed25519"][..]),
            ("id_rsa", &["-t", "rsa", "-b", "3072"]),
        ] {
            let (private, public) = ssh_key(dir.path(), name, args);
            let listed = run(Command::new("ssh-keygen")
                .arg("-lf")
                .arg(private.with_extension("pub")));
            // "256 SHA256:xxxx test@coffer (ED25519)"
            let expected = String::from_utf8(listed)
                .unwrap()
                .split(' ')
                .nth(1)
                .unwrap()
                .to_owned();
            assert!(expected.starts_with("SHA256:"));
            assert_eq!(recipients(&[&public]).fingerprints(), vec![expected.clone()]);
            assert_eq!(Identities::load(&private).unwrap().fingerprints(), vec![expected]);
        }
    }

    #[test]
    fn age_cli_decrypts_what_we_write() {
        if !have("age") || !have("age-keygen") || !have("ssh-keygen") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        run(Command::new("age-keygen").arg("-o").arg(&key));
        let age_recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&key))).unwrap();
        let (ed, ed_pub) = ssh_key(dir.path(), "id_ed25519", &["-t", "ed25519"]);
        let (rsa, rsa_pub) = ssh_key(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]);
        let to = recipients(&[age_recipient.trim(), &ed_pub, &rsa_pub]);
        for len in [0, CHUNK_SIZE as usize, 300_001] {
            let plain = data(len, 3);
            let file = dir.path().join("backup.tar.zst.age");
            fs::write(&file, encrypt(&plain, &to)).unwrap();
            for identity in [&key, &ed, &rsa] {
                let out = run(Command::new("age").arg("-d").arg("-i").arg(identity).arg(&file));
                assert!(out == plain, "age -d -i {} of {len} bytes", identity.display());
            }
        }
    }

    #[test]
    fn we_decrypt_what_the_age_cli_writes() {
        if !have("age") || !have("age-keygen") || !have("ssh-keygen") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        run(Command::new("age-keygen").arg("-o").arg(&key));
        let age_recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&key))).unwrap();
        let (ed, _) = ssh_key(dir.path(), "id_ed25519", &["-t", "ed25519"]);
        let (rsa, _) = ssh_key(dir.path(), "id_rsa", &["-t", "rsa", "-b", "2048"]);
        let (_, other_pub) = ssh_key(dir.path(), "id_other", &["-t", "ed25519"]);
        let plain_path = dir.path().join("plain");
        let cipher_path = dir.path().join("plain.age");
        for len in [0, 1, CHUNK_SIZE as usize, 2 * CHUNK_SIZE as usize + 5] {
            let plain = data(len, 11);
            fs::write(&plain_path, &plain).unwrap();
            let _ = fs::remove_file(&cipher_path);
            run(Command::new("age")
                .arg("-r")
                .arg(age_recipient.trim())
                .arg("-R")
                .arg(ed.with_extension("pub"))
                .arg("-R")
                .arg(rsa.with_extension("pub"))
                .arg("-o")
                .arg(&cipher_path)
                .arg(&plain_path));
            let ciphertext = fs::read(&cipher_path).unwrap();
            assert!(is_age_file(&ciphertext));
            for identity in [&key, &ed, &rsa] {
                let (out, result) = decrypt_all(&ciphertext, &Identities::load(identity).unwrap());
                result.unwrap();
                assert!(
                    out == plain,
                    "decrypting with {} ({len} bytes)",
                    identity.display()
                );
            }
        }
        // The header names SSH recipients by tag: the message shows the start of the
        // ssh-keygen fingerprint of each.
        let other = dir.path().join("other.txt");
        age_key(dir.path(), "other.txt");
        let err = decrypt_reader(
            &fs::read(&cipher_path).unwrap()[..],
            &Identities::load(&other).unwrap(),
        )
        .err()
        .unwrap()
        .to_string();
        let ed_fp = &recipients(&[&fs::read_to_string(ed.with_extension("pub")).unwrap()]).fingerprints()[0];
        assert!(
            err.contains(&format!("the ssh-ed25519 key {}…", &ed_fp[..12])),
            "{err}"
        );
        assert!(err.contains("an age X25519 key"), "{err}");
        assert!(!err.contains(&recipients(&[&other_pub]).fingerprints()[0][..12]));
    }

    #[test]
    fn restores_by_hand_with_age_and_tar() {
        if !have("age") || !have("age-keygen") || !have("tar") || !have("zstd") {
            return;
        }
        let dir = tempfile::tempdir().unwrap();
        let key = dir.path().join("key.txt");
        run(Command::new("age-keygen").arg("-o").arg(&key));
        let recipient = String::from_utf8(run(Command::new("age-keygen").arg("-y").arg(&key))).unwrap();
        let src = dir.path().join("src");
        fs::create_dir_all(src.join("media/0")).unwrap();
        fs::write(src.join("media/0/a.bin"), data(150_000, 5)).unwrap();
        fs::write(src.join("manifest.json"), b"{}").unwrap();
        let tarball = run(Command::new("tar")
            .arg("--zstd")
            .arg("-cf")
            .arg("-")
            .arg("-C")
            .arg(&src)
            .arg("."));
        let archive = dir.path().join("20250101T000000Z.tar.zst.age");
        fs::write(&archive, encrypt(&tarball, &recipients(&[recipient.trim()]))).unwrap();
        let out = dir.path().join("out");
        fs::create_dir(&out).unwrap();
        let script = "age -d -i \"$1\" \"$2\" | tar --zstd -xf - -C \"$3\"";
        run(Command::new("sh")
            .args(["-ec", script, "sh"])
            .arg(&key)
            .arg(&archive)
            .arg(&out));
        assert_eq!(fs::read(out.join("media/0/a.bin")).unwrap(), data(150_000, 5));
    }

    #[test]
    fn every_flipped_byte_is_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let plain = data(300, 1);
        let ciphertext = encrypt(&plain, &recipients(&[&recipient]));
        for at in 0..ciphertext.len() {
            for flip in [0x01u8, 0x80] {
                let mut bad = ciphertext.clone();
                bad[at] ^= flip;
                let (out, result) = decrypt_all(&bad, &ids);
                assert!(result.is_err(), "flip {flip:#x} at byte {at} went unnoticed");
                assert!(
                    out.is_empty(),
                    "flip at byte {at} released plaintext of a bad chunk"
                );
            }
        }
    }

    #[test]
    fn a_bad_chunk_releases_no_plaintext_of_its_own() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let k = CHUNK_SIZE as usize;
        let plain = data(5 * k + 1000, 2);
        let ciphertext = encrypt(&plain, &recipients(&[&recipient]));
        let sealed = k + 16;
        // Payload start: everything after the 16-byte nonce following the header.
        let payload = ciphertext.len() - (5 * sealed + 1000 + 16);
        let header_end = payload - 16;
        let cases = [
            ("header stanza", 40, 0),
            ("header MAC", header_end - 10, 0),
            ("nonce", header_end + 3, 0),
            ("chunk 0", payload + 100, 0),
            ("chunk 2", payload + 2 * sealed + 5_000, 2),
            ("chunk 2 tag", payload + 3 * sealed - 1, 2),
            ("last chunk", ciphertext.len() - 500, 5),
            ("last byte", ciphertext.len() - 1, 5),
        ];
        for (what, at, chunk) in cases {
            let mut bad = ciphertext.clone();
            bad[at] ^= 0x20;
            let (out, result) = decrypt_all(&bad, &ids);
            let err = result.expect_err(what);
            assert_eq!(
                out.len(),
                chunk * k,
                "{what}: plaintext released before the error"
            );
            assert!(
                out == plain[..out.len()],
                "{what}: released plaintext is not authentic"
            );
            if what.starts_with("chunk") || what.starts_with("last") || what == "nonce" {
                assert!(
                    matches!(err, CryptError::Corrupt { chunk: c, .. } if c == chunk as u64),
                    "{what}: {err}"
                );
                assert!(err.to_string().contains("failed authentication"), "{err}");
            }
        }
    }

    #[test]
    fn truncation_and_trailing_data_are_detected() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let k = CHUNK_SIZE as usize;
        let sealed = k + 16;
        let plain = data(3 * k + 10, 4);
        let ciphertext = encrypt(&plain, &recipients(&[&recipient]));
        let payload = ciphertext.len() - (3 * sealed + 10 + 16);
        let cases = [
            (0, 0),
            (10, 0),
            (payload - 16 - 5, 0),         // inside the MAC line
            (payload - 3, 0),              // inside the nonce
            (payload, 0),                  // header and nonce, no chunk
            (payload + 1000, 0),           // inside chunk 0
            (payload + sealed, k),         // exactly after chunk 0
            (payload + 2 * sealed, 2 * k), // exactly after chunk 1
            (payload + 3 * sealed, 3 * k), // the final 10-byte chunk is missing
            (ciphertext.len() - 1, 3 * k),
        ];
        for (len, released) in cases {
            let (out, result) = decrypt_all(&ciphertext[..len], &ids);
            let err = result.expect_err(&format!("truncated to {len} bytes"));
            assert_eq!(out.len(), released, "truncated to {len} ({err})");
            assert!(out == plain[..released]);
            if len >= payload + sealed && len % sealed == payload % sealed {
                assert!(matches!(err, CryptError::Truncated { .. }), "{len}: {err}");
                assert!(err.to_string().contains("truncated"));
            }
        }
        let mut longer = ciphertext.clone();
        longer.extend_from_slice(b"appended");
        let (_, result) = decrypt_all(&longer, &ids);
        assert!(result.is_err(), "trailing data went unnoticed");
        // Data after a final chunk that is exactly 64 KiB.
        let exact = encrypt(&data(k, 5), &recipients(&[&recipient]));
        let mut longer = exact.clone();
        longer.extend_from_slice(&exact[exact.len() - 100..]);
        let (out, result) = decrypt_all(&longer, &ids);
        assert!(
            result.is_err(),
            "trailing data after a full final chunk went unnoticed"
        );
        assert_eq!(out.len(), k);
    }

    #[test]
    fn a_writer_dropped_without_finish_leaves_an_invalid_file() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let path = dir.path().join("x.age");
        for len in [0, 100, 3 * CHUNK_SIZE as usize] {
            {
                let mut writer =
                    EncryptWriter::new(File::create(&path).unwrap(), &recipients(&[&recipient])).unwrap();
                writer.write_all(&data(len, 9)).unwrap();
                drop(writer);
            }
            let (_, result) = decrypt_all(&fs::read(&path).unwrap(), &ids);
            assert!(
                matches!(result, Err(CryptError::Truncated { .. })),
                "{len} bytes: {result:?}"
            );
        }
    }

    /// Fails every write after `budget` bytes.
    #[derive(Debug)]
    struct Failing {
        budget: usize,
    }

    impl Write for Failing {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if buf.len() > self.budget {
                return Err(io::Error::from_raw_os_error(28)); // ENOSPC
            }
            self.budget -= buf.len();
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_failed_write_poisons_the_writer() {
        let dir = tempfile::tempdir().unwrap();
        let (_, recipient) = age_key(dir.path(), "key.txt");
        let mut writer = EncryptWriter::new(Failing { budget: 100_000 }, &recipients(&[&recipient])).unwrap();
        let plain = data(4 * CHUNK_SIZE as usize, 1);
        let err = writer.write_all(&plain).unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28), "the disk-full error passes through");
        let again = writer.write(b"x").unwrap_err();
        assert!(matches!(crypt_error(&again), Some(CryptError::Poisoned)));
        let finish = writer.finish().unwrap_err();
        assert!(matches!(crypt_error(&finish), Some(CryptError::Poisoned)));
        assert_eq!(
            finish.to_string(),
            "the encrypted archive cannot be completed because an earlier write to it failed"
        );
    }

    #[test]
    fn background_writer_round_trips_and_reports_errors() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let to = recipients(&[&recipient]);
        for len in [0, 1, BACKGROUND_BLOCK, 5 * BACKGROUND_BLOCK + 77] {
            let plain = data(len, 21);
            let mut writer = BackgroundWriter::new(EncryptWriter::new(Vec::new(), &to).unwrap()).unwrap();
            for piece in plain.chunks(100_003) {
                writer.write_all(piece).unwrap();
            }
            writer.flush().unwrap();
            let ciphertext = writer.finish().unwrap().finish().unwrap();
            let (out, result) = decrypt_all(&ciphertext, &ids);
            result.unwrap();
            assert!(out == plain, "{len} bytes through the background writer");
        }

        // The inner writer's error comes back unchanged, then the writer is poisoned.
        let inner = EncryptWriter::new(Failing { budget: 300_000 }, &to).unwrap();
        let mut writer = BackgroundWriter::new(inner).unwrap();
        let block = data(BACKGROUND_BLOCK, 1);
        let err = (0..64)
            .find_map(|_| writer.write_all(&block).err())
            .expect("the failure surfaces while writing");
        assert_eq!(err.raw_os_error(), Some(28));
        let again = writer.write(b"x").unwrap_err();
        assert!(matches!(crypt_error(&again), Some(CryptError::Poisoned)));
        assert!(writer.finish().is_err());

        // Failing only at the end still fails finish: the background writer's when it
        // holds the last block, the encrypting writer's when age holds the last chunk.
        let mut writer = BackgroundWriter::new(Failing { budget: 1_000 }).unwrap();
        writer.write_all(&data(10_000, 2)).unwrap();
        assert_eq!(writer.finish().unwrap_err().raw_os_error(), Some(28));
        let inner = EncryptWriter::new(Failing { budget: 1_000 }, &to).unwrap();
        let mut writer = BackgroundWriter::new(inner).unwrap();
        writer.write_all(&data(10_000, 2)).unwrap();
        let err = writer.finish().unwrap().finish().unwrap_err();
        assert_eq!(err.raw_os_error(), Some(28));

        // Dropped unfinished: the thread stops, the file is invalid.
        let path = dir.path().join("dropped.age");
        {
            let inner = EncryptWriter::new(File::create(&path).unwrap(), &to).unwrap();
            let mut writer = BackgroundWriter::new(inner).unwrap();
            writer.write_all(&data(3 * BACKGROUND_BLOCK, 3)).unwrap();
        }
        let (_, result) = decrypt_all(&fs::read(&path).unwrap(), &ids);
        assert!(matches!(result, Err(CryptError::Truncated { .. })), "{result:?}");
    }

    /// Returns `data`, then fails once with `kind`, then continues.
    struct Flaky {
        data: Cursor<Vec<u8>>,
        fail_at: u64,
        failed: bool,
    }

    impl Read for Flaky {
        fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
            if !self.failed && self.data.position() >= self.fail_at {
                self.failed = true;
                return Err(io::Error::new(io::ErrorKind::InvalidData, "disk says no"));
            }
            let room = (self.fail_at.saturating_sub(self.data.position()) as usize).max(1);
            let n = buf.len().min(if self.failed { buf.len() } else { room });
            self.data.read(&mut buf[..n])
        }
    }

    #[test]
    fn errors_of_the_source_pass_through_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let (key, recipient) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let plain = data(3 * CHUNK_SIZE as usize, 8);
        let ciphertext = encrypt(&plain, &recipients(&[&recipient]));
        let source = Flaky {
            fail_at: ciphertext.len() as u64 / 2,
            data: Cursor::new(ciphertext),
            failed: false,
        };
        let mut reader = decrypt_reader(source, &ids).unwrap();
        let mut out = Vec::new();
        let err = reader.read_to_end(&mut out).unwrap_err();
        assert_eq!(err.to_string(), "disk says no");
        assert!(
            crypt_error(&err).is_none(),
            "an I/O error is no verdict on the data"
        );
        assert!(matches!(CryptError::from_read(err), CryptError::Read(_)));
        reader.read_to_end(&mut out).unwrap();
        assert!(out == plain, "reading resumes after a source error");
    }

    #[test]
    fn wrong_or_missing_identity_says_what_to_do() {
        let dir = tempfile::tempdir().unwrap();
        let (_, a) = age_key(dir.path(), "a.txt");
        let (b_key, b) = age_key(dir.path(), "b.txt");
        let to = recipients(&[&a]);
        let ciphertext = encrypt(b"secret", &to);
        let ids = Identities::load(&b_key).unwrap();
        let err = decrypt_reader(&ciphertext[..], &ids).err().unwrap();
        assert_eq!(
            err.to_string(),
            format!(
                "none of the identities in {} can decrypt this archive; it was encrypted to an age X25519 key (age does not record which)",
                b_key.display()
            )
        );
        let sidecar = to.fingerprints();
        let err = require_identity(Some(&ids), &sidecar).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!(
                "none of the identities in {} can decrypt this archive; it was encrypted to {a}",
                b_key.display()
            )
        );
        let err = require_identity(None, &sidecar).unwrap_err().to_string();
        assert!(err.contains("set identity-file in [job.encryption]"), "{err}");
        assert!(err.contains(&a), "{err}");
        assert!(require_identity(Some(&ids), std::slice::from_ref(&b)).is_ok());
        assert!(require_identity(Some(&ids), &[a, b]).is_ok());
    }

    #[test]
    fn identity_file_must_be_private() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = age_key(dir.path(), "key.txt");
        for mode in [0o644, 0o640, 0o604, 0o660, 0o602] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            let err = Identities::load(&key).unwrap_err();
            assert_eq!(
                err.to_string(),
                format!(
                    "the identity file {0} has mode {mode:04o}, so its secret keys are readable by group or others; run `chmod 600 {0}`",
                    key.display()
                )
            );
        }
        for mode in [0o600, 0o400] {
            fs::set_permissions(&key, fs::Permissions::from_mode(mode)).unwrap();
            Identities::load(&key).unwrap();
        }
        let missing = dir.path().join("missing.txt");
        let err = Identities::load(&missing).unwrap_err();
        assert_eq!(
            err.to_string(),
            format!("cannot read the identity file {}", missing.display())
        );
    }

    #[test]
    fn identity_file_formats() {
        let dir = tempfile::tempdir().unwrap();
        let a = age::x25519::Identity::generate();
        let b = age::x25519::Identity::generate();
        let mixed = dir.path().join("mixed.txt");
        let mut text = format!(
            "# two keys\n\n{}\r\n  # indented comment\n{}\n",
            a.to_string().expose_secret(),
            b.to_string().expose_secret()
        );
        let mut expected = vec![a.to_public().to_string(), b.to_public().to_string()];
        if have("ssh-keygen") {
            let (ed, ed_pub) = ssh_key(dir.path(), "id_ed25519", &["-t", "ed25519"]);
            text.push_str(&fs::read_to_string(&ed).unwrap());
            expected.push(recipients(&[&ed_pub]).fingerprints().remove(0));
            // PEM (PKCS#1) RSA, as older tools write it.
            let (pem, pem_pub) = ssh_key(dir.path(), "id_pem", &["-t", "rsa", "-b", "2048", "-m", "PEM"]);
            assert!(
                fs::read_to_string(&pem)
                    .unwrap()
                    .starts_with("-----BEGIN RSA PRIVATE KEY-----")
            );
            assert_eq!(
                Identities::load(&pem).unwrap().fingerprints(),
                recipients(&[&pem_pub]).fingerprints()
            );

            let (locked, _) = ssh_key(dir.path(), "id_locked", &["-t", "ed25519"]);
            run(Command::new("ssh-keygen")
                .args(["-q", "-p", "-N", "hunter22", "-P", "", "-f"])
                .arg(&locked));
            let err = Identities::load(&locked).unwrap_err().to_string();
            assert!(err.contains("a passphrase-protected SSH key on line 1"), "{err}");
            assert!(err.contains("ssh-keygen -p -N ''"), "{err}");

            let (ecdsa, _) = ssh_key(dir.path(), "id_ecdsa", &["-t", "ecdsa"]);
            let err = Identities::load(&ecdsa).unwrap_err().to_string();
            assert!(err.contains("an SSH key of type ecdsa-sha2-nistp256"), "{err}");
        }
        write_secret(&mixed, &text);
        assert_eq!(Identities::load(&mixed).unwrap().fingerprints(), expected);

        let bad = dir.path().join("bad.txt");
        let secret = a.to_string().expose_secret().to_owned();
        write_secret(&bad, &format!("# ok\n{secret}\nmy password is swordfish\n"));
        let err = Identities::load(&bad).unwrap_err().to_string();
        assert_eq!(
            err,
            format!(
                "the identity file {} has something other than an age secret key (AGE-SECRET-KEY-1...) or an unencrypted OpenSSH private key on line 3",
                bad.display()
            )
        );
        assert!(!err.contains("swordfish"));
        // A damaged secret key: named by line, never shown.
        write_secret(&bad, &format!("{}x\n", &secret[..secret.len() - 1]));
        let err = Identities::load(&bad).unwrap_err().to_string();
        assert!(err.ends_with("on line 1"), "{err}");
        assert!(!err.contains(&secret[15..]));

        write_secret(&bad, "# only a comment\n");
        assert_eq!(
            Identities::load(&bad).unwrap_err().to_string(),
            format!("the identity file {} holds no secret key", bad.display())
        );
        write_secret(&bad, "AGE-PLUGIN-YUBIKEY-1QQQQQQ\n");
        assert!(
            Identities::load(&bad)
                .unwrap_err()
                .to_string()
                .contains("an age plugin identity")
        );
    }

    fn ssh_string(out: &mut Vec<u8>, bytes: &[u8]) {
        out.extend_from_slice(&(bytes.len() as u32).to_be_bytes());
        out.extend_from_slice(bytes);
    }

    #[test]
    fn bad_recipients_are_named_without_secrets() {
        let parse = |values: &[&str]| {
            Recipients::parse(&values.iter().map(|v| v.to_string()).collect::<Vec<_>>())
                .unwrap_err()
                .to_string()
        };
        let good = age::x25519::Identity::generate();
        let good_pub = good.to_public().to_string();
        let secret = good.to_string().expose_secret().to_owned();

        assert_eq!(
            parse(&[]),
            "encryption.recipients is empty; list at least one age (age1...) or SSH (ssh-ed25519, ssh-rsa) public key"
        );
        assert_eq!(
            parse(&[&good_pub, "not a key at all"]),
            "encryption.recipients[1]: 'not …' is not a valid age or SSH public key"
        );
        let err = parse(&[&good_pub, &good_pub, &secret]);
        assert!(
            err.starts_with(
                "encryption.recipients[2]: 'AGE-…' is not a valid age or SSH public key (it is a secret key"
            ),
            "{err}"
        );
        assert!(!err.contains(&secret[15..]), "the secret leaked: {err}");
        let err = parse(&[&secret.to_lowercase()]);
        assert!(err.contains("(it is a secret key"), "{err}");

        // A wrong checksum (last character changed).
        let mut damaged = good_pub.clone();
        let last = damaged.pop().unwrap();
        damaged.push(if last == 'q' { 'p' } else { 'q' });
        let err = parse(&[&damaged]);
        assert!(
            err.starts_with(&format!("encryption.recipients[0]: '{}…'", &good_pub[..24])),
            "{err}"
        );
        assert!(
            err.ends_with("(its checksum or length is wrong: copy it again)"),
            "{err}"
        );

        // ssh-dss: a structurally valid DSA public key.
        let mut blob = Vec::new();
        ssh_string(&mut blob, b"ssh-dss");
        for part in [&[0x7fu8; 129][..], &[0x11; 21], &[0x22; 128], &[0x33; 128]] {
            ssh_string(&mut blob, part);
        }
        let dss = format!(
            "ssh-dss {} old@host",
            base64::engine::general_purpose::STANDARD.encode(&blob)
        );
        assert_eq!(
            parse(&[&dss]),
            "encryption.recipients[0]: 'ssh-dss AAAAB3NzaC1kc3MA…' is not a valid age or SSH public key (age does not support DSA keys; use ssh-ed25519 or ssh-rsa)"
        );
        // An ed25519 key with its base64 cut short.
        let ed =
            "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIHsKLqeplhpW+uObz5dvMgjz1OxfM/XXUB+VHtZ6isGN alice@rust";
        assert_eq!(
            recipients(&[ed]).fingerprints().len(),
            1,
            "a trailing comment is fine"
        );
        let err = parse(&[&ed[..60]]);
        assert_eq!(
            err,
            "encryption.recipients[0]: 'ssh-ed25519 AAAAC3NzaC1l…' is not a valid age or SSH public key (its base64 key data is damaged: copy it again)"
        );
        let err = parse(&[
            "-----BEGIN OPENSSH PRIVATE KEY-----\nb3BlbnNzaC1rZXktdjEAAAAABG5vbmUAAAAEbm9uZQ\n-----END OPENSSH PRIVATE KEY-----",
        ]);
        assert!(
            err.starts_with(
                "encryption.recipients[0]: '----…' is not a valid age or SSH public key (it is a secret key"
            ),
            "{err}"
        );
        assert!(!err.contains("b3Bl"));
        if have("ssh-keygen") {
            let dir = tempfile::tempdir().unwrap();
            let (_, ecdsa) = ssh_key(dir.path(), "id_ecdsa", &["-t", "ecdsa"]);
            assert!(parse(&[&ecdsa]).ends_with("(age supports only ssh-ed25519 and ssh-rsa SSH keys)"));
            let (_, weak) = ssh_key(dir.path(), "id_weak", &["-t", "rsa", "-b", "1024"]);
            assert!(parse(&[&weak]).ends_with("(RSA keys shorter than 2048 bits are too weak)"));
        }
        assert_eq!(
            parse(&["\u{7}\n"]),
            "encryption.recipients[0]: '\\u{7}' is not a valid age or SSH public key",
            "control characters are shown escaped"
        );
    }

    #[test]
    fn tells_plain_zstd_from_age() {
        let dir = tempfile::tempdir().unwrap();
        let (key, _) = age_key(dir.path(), "key.txt");
        let ids = Identities::load(&key).unwrap();
        let zstd_magic = [0x28u8, 0xb5, 0x2f, 0xfd, 0, 0, 0, 0];
        assert!(!is_age_file(&zstd_magic));
        assert!(!is_age_file(b"age-encryption.org/"));
        assert!(is_age_file(b"age-encryption.org/v1\n-> X25519"));
        let err = decrypt_reader(&zstd_magic[..], &ids).err().unwrap();
        assert_eq!(
            err.to_string(),
            "the archive is not an age-encrypted file: it does not start with age-encryption.org/v1"
        );
        assert!(matches!(
            decrypt_reader(&b""[..], &ids),
            Err(CryptError::NotAgeFile { .. })
        ));
        assert!(matches!(
            decrypt_reader(&b"age-encryption.org/v2\n"[..], &ids),
            Err(CryptError::UnsupportedVersion)
        ));
        assert!(matches!(
            decrypt_reader(&b"-----BEGIN AGE ENCRYPTED FILE-----\n"[..], &ids),
            Err(CryptError::NotAgeFile { .. })
        ));
    }

    #[test]
    fn rekey_streams_to_new_recipients() {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old) = age_key(dir.path(), "old.txt");
        let (new_key, new) = age_key(dir.path(), "new.txt");
        let (other_key, other) = age_key(dir.path(), "other.txt");
        let plain = data(2 * CHUNK_SIZE as usize + 99, 6);
        let ciphertext = encrypt(&plain, &recipients(&[&old]));
        let old_ids = Identities::load(&old_key).unwrap();
        let mut seen = 0;
        let rekeyed = rekey(
            &ciphertext[..],
            Vec::new(),
            &old_ids,
            &recipients(&[&new, &other]),
            &|| false,
            &mut |done| seen = done,
        )
        .unwrap();
        assert_eq!(
            (seen, rekeyed.plaintext_bytes),
            (plain.len() as u64, plain.len() as u64)
        );
        assert_eq!(rekeyed.plaintext_sha256, hex(&Sha256::digest(&plain)));
        for key in [&new_key, &other_key] {
            let (out, result) = decrypt_all(&rekeyed.output, &Identities::load(key).unwrap());
            result.unwrap();
            assert!(out == plain);
        }
        let (_, result) = decrypt_all(&rekeyed.output, &old_ids);
        assert!(matches!(result, Err(CryptError::NoMatchingIdentity { .. })));

        // A damaged source never yields a finished new file.
        let mut bad = ciphertext.clone();
        let n = bad.len();
        bad[n - 10] ^= 1;
        let err = rekey(
            &bad[..],
            Vec::new(),
            &old_ids,
            &recipients(&[&new]),
            &|| false,
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, CryptError::Corrupt { chunk: 2, .. }), "{err}");
        let err = rekey(
            &ciphertext[..],
            Vec::new(),
            &old_ids,
            &recipients(&[&new]),
            &|| true,
            &mut |_| {},
        )
        .err()
        .unwrap();
        assert!(matches!(err, CryptError::Cancelled));
    }

    #[test]
    fn a_scratch_copy_is_ciphertext_that_only_its_key_reads() {
        let dir = tempfile::tempdir().unwrap();
        let plain = data(3 * CHUNK_SIZE as usize + 5, 21);
        let key = ScratchKey::new();
        let path = dir.path().join("copy");
        let mut w = key.create(&path).unwrap();
        w.write_all(&plain).unwrap();
        w.finish().unwrap().flush().unwrap();
        let on_disk = fs::read(&path).unwrap();
        assert!(is_age_file(&on_disk));
        assert!(!on_disk.windows(32).any(|w| w == &plain[70_000..70_032]));
        assert_eq!(fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        let mut r = key.open(&path).unwrap();
        let mut back = Vec::new();
        r.read_to_end(&mut back).unwrap();
        r.finish().unwrap();
        assert!(back == plain);
        // Another process's key (any other key) cannot read it.
        assert!(matches!(
            ScratchKey::new().open(&path).err().unwrap(),
            CryptError::NoMatchingIdentity { .. }
        ));
    }

    #[test]
    fn matching_fingerprints_names_the_keys_a_file_was_encrypted_to() {
        let dir = tempfile::tempdir().unwrap();
        let (a_key, a) = age_key(dir.path(), "a.txt");
        let (b_key, b) = age_key(dir.path(), "b.txt");
        let both = dir.path().join("both.txt");
        write_secret(
            &both,
            &(fs::read_to_string(&a_key).unwrap() + &fs::read_to_string(&b_key).unwrap()),
        );
        let ids = Identities::load(&both).unwrap();
        let only_b = encrypt(b"x", &recipients(&[&b]));
        assert_eq!(matching_fingerprints(&only_b[..], &ids).unwrap(), vec![b.clone()]);
        let to_both = encrypt(b"x", &recipients(&[&a, &b]));
        assert_eq!(matching_fingerprints(&to_both[..], &ids).unwrap(), vec![a, b]);
        let (_, c) = age_key(dir.path(), "c.txt");
        let other = encrypt(b"x", &recipients(&[&c]));
        assert!(matching_fingerprints(&other[..], &ids).unwrap().is_empty());
        assert_eq!(
            describe_header(&other[..]).unwrap(),
            "an age X25519 key (age does not record which)"
        );
    }

    #[test]
    fn rekey_file_is_checked_before_it_replaces_the_original() {
        let dir = tempfile::tempdir().unwrap();
        let (old_key, old) = age_key(dir.path(), "old.txt");
        let (new_key, new) = age_key(dir.path(), "new.txt");
        let plain = data(CHUNK_SIZE as usize * 3, 12);
        let archive = dir.path().join("20250101T000000Z.tar.zst.age");
        let original = encrypt(&plain, &recipients(&[&old]));
        fs::write(&archive, &original).unwrap();
        fs::set_permissions(&archive, fs::Permissions::from_mode(0o640)).unwrap();
        // Mixed identities: old and new keys in one file.
        let both = dir.path().join("both.txt");
        let text = fs::read_to_string(&old_key).unwrap() + &fs::read_to_string(&new_key).unwrap();
        write_secret(&both, &text);
        let old_ids = Identities::load(&old_key).unwrap();
        let both_ids = Identities::load(&both).unwrap();
        let to = recipients(&[&new]);
        let temp = dir.path().join("20250101T000000Z.tar.zst.age.rekey-tmp");

        // Cancelled: nothing left behind, original untouched.
        let err = rekey_file(&archive, &temp, &old_ids, &to, &|| true, &mut |_, _| {})
            .err()
            .unwrap();
        assert!(matches!(err, CryptError::Cancelled));
        let leftovers: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .filter(|e| {
                e.as_ref()
                    .unwrap()
                    .file_name()
                    .to_string_lossy()
                    .contains("rekey-tmp")
            })
            .collect();
        assert!(leftovers.is_empty());
        assert_eq!(fs::read(&archive).unwrap(), original);

        // Only the old key: the new file can only be checked by its hash.
        let pending = rekey_file(&archive, &temp, &old_ids, &to, &|| false, &mut |_, _| {}).unwrap();
        assert_eq!(pending.check, RekeyCheck::Hashed);
        assert_eq!(pending.temp_path(), temp);
        assert!(temp.exists());
        drop(pending);
        assert!(!temp.exists(), "dropping an uncommitted rekey removes its file");

        let mut last = (0, 0);
        let pending = rekey_file(&archive, &temp, &both_ids, &to, &|| false, &mut |d, t| {
            last = (d, t)
        })
        .unwrap();
        assert_eq!(last, (plain.len() as u64, original.len() as u64));
        assert_eq!(pending.check, RekeyCheck::Decrypted);
        assert_eq!(pending.fingerprints, vec![new.clone()]);
        assert_eq!(fs::read(&archive).unwrap(), original, "untouched until commit");
        let (size, sha256) = (pending.size, pending.sha256.clone());
        pending.commit().unwrap();
        let now = fs::read(&archive).unwrap();
        assert_eq!((now.len() as u64, hex(&Sha256::digest(&now))), (size, sha256));
        assert_eq!(
            fs::metadata(&archive).unwrap().permissions().mode() & 0o777,
            0o640
        );
        assert!(!temp.exists());
        let (out, result) = decrypt_all(&now, &Identities::load(&new_key).unwrap());
        result.unwrap();
        assert!(out == plain);
    }
}
