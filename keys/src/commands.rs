// SPDX-License-Identifier: MPL-2.0
//! The subcommands of `streamcrypt-keys`. Each returns the message to print on
//! failure; `main` prints it and exits 1.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use streamcrypt_core::grant::{self, Claims, Right, SigningKey, VerifyingKey, is_stream_pattern};
use streamcrypt_core::key_service::{MasterSecret, read_private_file};
use zeroize::Zeroizing;

use crate::service::Service;
use crate::{GrantArgs, ServeArgs, serve};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Rights as `--rights` takes them: decimal or 0x hex, 0 to 255.
pub fn parse_rights(text: &str) -> Result<u8, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u8::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.map_err(|_| {
        format!("`{text}` is not privilege bits: a number from 0 to 255, decimal or 0x hex")
    })
}

/// Creates `path` with `mode` and writes `contents`; refuses an existing file.
fn create_file(path: &Path, mode: u32, contents: &[u8]) -> Result<(), String> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => {
                format!("{} exists; not overwriting it", path.display())
            }
            _ => format!("{}: {e}", path.display()),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(|e| format!("{}: {e}", path.display()))
}

pub fn signing_key(out: &Path, public_out: Option<&Path>) -> Result<(), String> {
    // Check both before writing either, so that a refusal leaves nothing behind.
    for path in std::iter::once(out).chain(public_out) {
        if path.exists() {
            return Err(format!("{} exists; not overwriting it", path.display()));
        }
    }
    let key = SigningKey::generate().map_err(|e| e.to_string())?;
    let public = key.verifying_key().to_pem();
    create_file(out, 0o600, key.to_pem().as_bytes())?;
    match public_out {
        Some(path) => create_file(path, 0o644, public.as_bytes()),
        None => {
            print!("{public}");
            Ok(())
        }
    }
}

pub fn master_secret(out: &Path) -> Result<(), String> {
    let mut secret = Zeroizing::new([0u8; 32]);
    getrandom::fill(secret.as_mut())
        .map_err(|e| format!("the system random generator failed: {e}"))?;
    let mut text = Zeroizing::new(String::with_capacity(65));
    for byte in secret.iter() {
        text.push_str(&format!("{byte:02x}"));
    }
    text.push('\n');
    create_file(out, 0o600, text.as_bytes())
}

fn read_signing_key(path: &Path) -> Result<SigningKey, String> {
    let text = read_private_file(path, "signing key")?;
    SigningKey::from_pem(&text).map_err(|e| format!("signing key {}: {e}", path.display()))
}

fn read_issuer_keys(paths: &[PathBuf]) -> Result<Vec<VerifyingKey>, String> {
    paths
        .iter()
        .map(|path| {
            let text = std::fs::read_to_string(path)
                .map_err(|e| format!("issuer key {}: {e}", path.display()))?;
            VerifyingKey::from_pem(&text).map_err(|e| format!("issuer key {}: {e}", path.display()))
        })
        .collect()
}

pub fn grant(args: &GrantArgs) -> Result<(), String> {
    if !is_stream_pattern(&args.stream) {
        return Err(format!(
            "--stream {:?} is neither a stream name (1 to {} of A-Z a-z 0-9 . _ -, not . or ..) \
             nor such a prefix followed by *",
            args.stream,
            grant::MAX_STREAM_LEN
        ));
    }
    let now = unix_now();
    let exp = match (args.ttl, args.exp) {
        (Some(ttl), _) => now
            .checked_add(ttl)
            .ok_or_else(|| format!("--ttl {ttl} is too far in the future"))?,
        (None, Some(exp)) => exp,
        (None, None) => unreachable!("clap requires --ttl or --exp"),
    };
    if exp <= now {
        return Err(format!(
            "the grant would be expired already: exp {} is not after now ({})",
            grant::utc_time(exp),
            grant::utc_time(now)
        ));
    }
    let nbf = args.nbf.unwrap_or(0);
    if nbf >= exp {
        return Err(format!(
            "the grant would never be valid: nbf {} is not before exp {}",
            grant::utc_time(nbf),
            grant::utc_time(exp)
        ));
    }
    let key = read_signing_key(&args.signing_key)?;
    let claims = Claims {
        sub: args.sub.clone(),
        stream: args.stream.clone(),
        rights: args.rights,
        exp,
        nbf,
    };
    println!("{}", grant::sign(&key, &claims));
    Ok(())
}

pub fn verify(
    issuer_keys: &[PathBuf],
    stream: Option<&str>,
    need: Option<Right>,
    token: Option<&str>,
) -> Result<(), String> {
    let keys = read_issuer_keys(issuer_keys)?;
    let mut from_stdin = String::new();
    let token = match token {
        Some(token) if token != "-" => token,
        _ => {
            // One token more than the limit is enough to refuse it as too long.
            std::io::stdin()
                .take(grant::MAX_TOKEN_LEN as u64 + 2)
                .read_to_string(&mut from_stdin)
                .map_err(|e| format!("reading the grant from stdin: {e}"))?;
            from_stdin.trim()
        }
    };
    let claims = grant::verify(&keys, token, unix_now()).map_err(|e| e.to_string())?;
    let checks = stream
        .map(|stream| claims.check_stream(stream))
        .into_iter()
        .chain(need.map(|right| claims.check_right(right)));
    for check in checks {
        check.map_err(|denied| denied.to_string())?;
    }
    println!(
        "{}",
        serde_json::to_string_pretty(&claims).expect("claims serialise to JSON")
    );
    Ok(())
}

pub fn serve(args: &ServeArgs) -> Result<(), String> {
    let issuers = read_issuer_keys(&args.issuer_keys)?;
    let master_secret = MasterSecret::from_file(&args.master_secret_file)?;
    let tls = match (&args.tls_cert, &args.tls_key) {
        (Some(cert), Some(key)) => Some(serve::tls_config(cert, key)?),
        _ => None,
    };
    let service = Arc::new(Service {
        issuers,
        master_secret,
        key_period: args.key_period,
    });
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the runtime: {e}"))?;
    runtime.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen)
            .await
            .map_err(|e| format!("cannot listen on {}: {e}", args.listen))?;
        let address = listener
            .local_addr()
            .map_err(|e| format!("cannot read the bound address: {e}"))?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        println!("listening on {scheme}://{address}");
        std::io::stdout()
            .flush()
            .map_err(|e| format!("stdout: {e}"))?;
        serve::run(service, listener, tls, args.max_connections as usize).await;
        Ok(())
    })
}
