//! Key pairs and decryption by the real tools, so encryption tests never check Coffer
//! against itself: `age-keygen` (X25519 identities), `ssh-keygen -t ed25519` (SSH
//! recipients, no passphrase), and `age -d -i` to decrypt what Coffer wrote, as a
//! user restoring by hand would.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::process::{command, find_program, run};
use super::skip::Skip;

const TIMEOUT: Duration = Duration::from_secs(120);

fn tool(name: &str, package: &str) -> Result<PathBuf, Skip> {
    find_program(name, &[]).ok_or_else(|| {
        Skip::new(format!(
            "{name} is not installed (package {package}); run test-deps.sh as root"
        ))
    })
}

/// `dir/<stem>.<ext>`, `dir/<stem>-2.<ext>`, ...: the first name not taken.
fn fresh_path(dir: &Path, stem: &str, ext: &str) -> PathBuf {
    let name = |n: u32| {
        let suffix = if n == 1 { String::new() } else { format!("-{n}") };
        let ext = if ext.is_empty() {
            String::new()
        } else {
            format!(".{ext}")
        };
        dir.join(format!("{stem}{suffix}{ext}"))
    };
    (1..)
        .map(name)
        .find(|p| !p.exists() && !p.with_extension("pub").exists())
        .unwrap_or_else(|| name(1))
}

/// Makes an age X25519 identity in `dir` with `age-keygen`; returns the identity
/// file (0600) and its recipient (`age1...`).
pub fn age_keygen(dir: &Path) -> Result<(PathBuf, String), Skip> {
    let keygen = tool("age-keygen", "age")?;
    let identity = fresh_path(dir, "age-identity", "txt");
    let mut cmd = command(&keygen);
    cmd.arg("-o").arg(&identity);
    let out = run(cmd, None, TIMEOUT).map_err(Skip::new)?;
    if !out.success() {
        return Err(Skip::new(format!("age-keygen failed: {}", out.failure())));
    }
    let mut cmd = command(&keygen);
    cmd.arg("-y").arg(&identity);
    let out = run(cmd, None, TIMEOUT).map_err(Skip::new)?;
    let recipient = out.stdout_text().trim().to_owned();
    if !out.success() || !recipient.starts_with("age1") {
        return Err(Skip::new(format!(
            "age-keygen -y gave no recipient: {}",
            out.failure()
        )));
    }
    Ok((identity, recipient))
}

/// Makes an SSH ed25519 key pair in `dir` with `ssh-keygen` (no passphrase); returns
/// the private key file (usable as an age identity) and the public key line
/// (`ssh-ed25519 AAAA... coffer-test`, usable as an age recipient).
pub fn ssh_ed25519_keygen(dir: &Path) -> Result<(PathBuf, String), Skip> {
    let keygen = tool("ssh-keygen", "openssh-client")?;
    let private = fresh_path(dir, "id_ed25519", "");
    let mut cmd = command(&keygen);
    cmd.args(["-q", "-t", "ed25519", "-N", "", "-C", "coffer-test", "-f"])
        .arg(&private);
    let out = run(cmd, None, TIMEOUT).map_err(Skip::new)?;
    if !out.success() {
        return Err(Skip::new(format!("ssh-keygen failed: {}", out.failure())));
    }
    let public = std::fs::read_to_string(private.with_extension("pub"))
        .map_err(|e| Skip::new(format!("ssh-keygen wrote no public key: {e}")))?;
    Ok((private, public.trim().to_owned()))
}

/// Decrypts `input` into `output` with `age -d -i identity`; the error is age's
/// stderr (or why age could not run).
pub fn age_decrypt(identity: &Path, input: &Path, output: &Path) -> Result<(), String> {
    let age = tool("age", "age").map_err(|s| s.0)?;
    let mut cmd = command(age);
    cmd.arg("-d")
        .arg("-i")
        .arg(identity)
        .arg("-o")
        .arg(output)
        .arg(input);
    let out = run(cmd, None, Duration::from_secs(3600))?;
    if out.success() {
        Ok(())
    } else {
        Err(out.stderr.trim().to_owned())
    }
}

/// Encrypts `input` into `output` with `age -r <recipient>...` (recipients are
/// public keys, fine on a command line), e.g. to make an archive by hand.
pub fn age_encrypt(recipients: &[&str], input: &Path, output: &Path) -> Result<(), String> {
    let age = tool("age", "age").map_err(|s| s.0)?;
    let mut cmd = command(age);
    for r in recipients {
        cmd.arg("-r").arg(r);
    }
    cmd.arg("-o").arg(output).arg(input);
    let out = run(cmd, None, Duration::from_secs(3600))?;
    if out.success() {
        Ok(())
    } else {
        Err(out.stderr.trim().to_owned())
    }
}
