// SPDX-License-Identifier: MPL-2.0
//! The subcommands of `streamcrypt-keys`. Each returns the message to print on
//! failure; `main` prints it and exits 1.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use base64::Engine;
use streamcrypt_core::grant::{self, Claims, Right, SigningKey, VerifyingKey, is_stream_pattern};
use streamcrypt_core::key_service::{MasterSecret, read_private_file};
use zeroize::Zeroizing;

use crate::privilege::Privilege;
use crate::service::{Service, hex_lower};
use crate::{GrantArgs, PrivilegeEncodeArgs, ServeArgs, serve};

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs())
}

/// Privilege bits as the options take them: decimal or 0x hex, 0 to `max`.
fn parse_bits(text: &str, max: u32) -> Result<u32, String> {
    let parsed = match text.strip_prefix("0x").or_else(|| text.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => text.parse(),
    };
    parsed.ok().filter(|bits| *bits <= max).ok_or_else(|| {
        format!("`{text}` is not privilege bits: a number from 0 to {max}, decimal or 0x hex")
    })
}

/// `--rights`: a grant's bits, 0 to 255.
pub fn parse_rights(text: &str) -> Result<u8, String> {
    parse_bits(text, u8::MAX.into()).map(|bits| bits as u8)
}

/// `--privilege-map`: iLive's 32-bit field.
pub fn parse_privilege_map(text: &str) -> Result<u32, String> {
    parse_bits(text, u32::MAX)
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
    let mut text = hex_lower(secret.as_ref());
    text.push(b'\n');
    create_file(out, 0o600, &text)
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
    // One byte more than the limit is enough to refuse a token as too long.
    let token = argument_or_stdin(token, grant::MAX_TOKEN_LEN + 2, "the grant")?;
    let claims = grant::verify(&keys, &token, unix_now()).map_err(|e| e.to_string())?;
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

/// `argument`, or (for `-` or none) at most `limit` bytes of stdin, trimmed.
fn argument_or_stdin(argument: Option<&str>, limit: usize, what: &str) -> Result<String, String> {
    match argument {
        Some(text) if text != "-" => Ok(text.to_owned()),
        _ => {
            let mut text = String::new();
            std::io::stdin()
                .take(limit as u64)
                .read_to_string(&mut text)
                .map_err(|e| format!("reading {what} from stdin: {e}"))?;
            Ok(text.trim().to_owned())
        }
    }
}

/// How a privilege string is written as text.
#[derive(Clone, Copy, clap::ValueEnum)]
pub enum Encoding {
    Hex,
    Base64,
}

fn read_tea_key(path: &Path) -> Result<Zeroizing<[u8; 16]>, String> {
    let text = read_private_file(path, "TEA key file")?;
    let line = text.lines().next().unwrap_or("");
    let key = streamcrypt_core::keys::KeyText::new(line)
        .parse(&[16], Some(16), "qq-tea")
        .map_err(|e| format!("TEA key file {}: {e}", path.display()))?;
    let mut bytes = Zeroizing::new([0u8; 16]);
    bytes.copy_from_slice(key.as_bytes());
    Ok(bytes)
}

pub fn privilege_encode(args: &PrivilegeEncodeArgs) -> Result<(), String> {
    let key = read_tea_key(&args.key_file)?;
    let exp = match (args.ttl, args.exp) {
        (Some(ttl), _) => u32::try_from(unix_now())
            .ok()
            .and_then(|now| now.checked_add(ttl))
            .ok_or_else(|| "the expiry does not fit the 32-bit field (after 2106)".to_owned())?,
        (None, Some(exp)) => exp,
        (None, None) => unreachable!("clap requires --ttl or --exp"),
    };
    let privilege = Privilege {
        account: args.account.clone(),
        sdkappid: args.sdkappid,
        auth_id: args.auth_id,
        exp,
        privilege_map: args.privilege_map,
        account_type: args.account_type,
    };
    let mut random = [0u8; streamcrypt_core::compat::qq_tea::RANDOM_LEN];
    getrandom::fill(&mut random).map_err(|e| format!("the system random generator failed: {e}"))?;
    let string = privilege.encrypt(&key, &random)?;
    match args.encoding {
        Encoding::Hex => println!(
            "{}",
            std::str::from_utf8(&hex_lower(&string)).expect("hex is ASCII")
        ),
        Encoding::Base64 => println!("{}", base64_standard().encode(&string)),
    }
    Ok(())
}

pub fn privilege_decode(
    key_file: &Path,
    encoding: Encoding,
    string: Option<&str>,
) -> Result<(), String> {
    let key = read_tea_key(key_file)?;
    let text = argument_or_stdin(string, 1 << 20, "the privilege string")?;
    let bytes = match encoding {
        Encoding::Hex => streamcrypt_core::keys::SecretKey::from_hex(&text)
            .map(|bytes| bytes.as_bytes().to_vec())
            .map_err(|e| {
                // KeyError speaks of "the key"; here it is the string.
                format!(
                    "the privilege string {}",
                    e.to_string().trim_start_matches("the key ")
                )
            })?,
        Encoding::Base64 => base64_standard()
            .decode(text.as_bytes())
            .map_err(|e| format!("the privilege string is not base64: {e}"))?,
    };
    let privilege = Privilege::decrypt(&bytes, &key).map_err(|e| e.to_string())?;
    println!(
        "{}",
        serde_json::to_string_pretty(&privilege).expect("fields serialise to JSON")
    );
    Ok(())
}

fn base64_standard() -> base64::engine::GeneralPurpose {
    base64::engine::general_purpose::STANDARD
}
