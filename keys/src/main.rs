// SPDX-License-Identifier: MPL-2.0
//! `streamcrypt-keys`: issuer keys, grants, and the key service (README.md,
//! "Key service").

mod commands;
mod privilege;
mod serve;
mod service;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Args, Parser, Subcommand};
use streamcrypt_core::grant::Right;

#[derive(Parser)]
#[command(
    name = "streamcrypt-keys",
    version,
    about = "streamcrypt's grants and key service"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Create an issuer key pair (Ed25519): the private key signs grants, the
    /// public key lets the service check them.
    SigningKey {
        /// Private key file to create (PEM PKCS#8, mode 0600).
        #[arg(long)]
        out: PathBuf,
        /// Public key file to create (PEM SPKI, mode 0644); without it the
        /// public key is printed.
        #[arg(long)]
        public_out: Option<PathBuf>,
    },
    /// Create a master secret file (32 random bytes in hex, mode 0600) for `serve`.
    MasterSecret {
        #[arg(long)]
        out: PathBuf,
    },
    /// Issue a grant: a JWT signed with EdDSA, printed on stdout.
    Grant(GrantArgs),
    /// Check a grant; print its claims (JSON) and exit 0, or the reason and exit 1.
    Verify {
        /// Public key of a trusted issuer (repeatable).
        #[arg(long = "issuer-key", required = true)]
        issuer_keys: Vec<PathBuf>,
        /// Also require the grant to cover this stream.
        #[arg(long)]
        stream: Option<String>,
        /// Also require this right: watch or publish.
        #[arg(long)]
        need: Option<Right>,
        /// The grant; `-` or nothing reads it from stdin.
        token: Option<String>,
    },
    /// Run the key service.
    Serve(ServeArgs),
    /// Build or open iLive's privilege string (privMapEncrypt), QQ TEA-encrypted.
    Privilege {
        #[command(subcommand)]
        command: PrivilegeCommand,
    },
}

#[derive(Subcommand)]
enum PrivilegeCommand {
    /// Build a privilege string from its fields; prints it.
    Encode(PrivilegeEncodeArgs),
    /// Open a privilege string; prints its fields (JSON).
    Decode {
        /// File whose first line is the app's 16-byte TEA key: 16 characters of
        /// text or 32 hex digits (mode 0600).
        #[arg(long)]
        key_file: PathBuf,
        #[arg(long, value_enum, default_value_t = commands::Encoding::Hex)]
        encoding: commands::Encoding,
        /// The string; `-` or nothing reads it from stdin.
        string: Option<String>,
    },
}

#[derive(Args)]
struct PrivilegeEncodeArgs {
    /// File whose first line is the app's 16-byte TEA key: 16 characters of
    /// text or 32 hex digits (mode 0600).
    #[arg(long)]
    key_file: PathBuf,
    /// The user's account (identifier).
    #[arg(long)]
    account: String,
    #[arg(long)]
    sdkappid: u32,
    /// The room (auth id, group number).
    #[arg(long)]
    auth_id: u32,
    /// Privilege bits, decimal or 0x hex: 0xff all, 0xab watch only.
    #[arg(long, value_parser = commands::parse_privilege_map)]
    privilege_map: u32,
    #[arg(long, default_value_t = 0)]
    account_type: u32,
    /// Seconds from now until it expires (Tencent suggests 300).
    #[arg(long, conflicts_with = "exp", required_unless_present = "exp")]
    ttl: Option<u32>,
    /// Expiry, UNIX seconds.
    #[arg(long)]
    exp: Option<u32>,
    #[arg(long, value_enum, default_value_t = commands::Encoding::Hex)]
    encoding: commands::Encoding,
}

#[derive(Args)]
struct GrantArgs {
    /// Issuer private key (PEM PKCS#8, from `signing-key` or `openssl genpkey -algorithm ed25519`).
    #[arg(long)]
    signing_key: PathBuf,
    /// The user.
    #[arg(long)]
    sub: String,
    /// A stream name, or a prefix followed by `*`.
    #[arg(long)]
    stream: String,
    /// TRTC privilege bits, decimal or 0x hex: 0xff publish+watch, 0xab watch only.
    #[arg(long, value_parser = commands::parse_rights)]
    rights: u8,
    /// Seconds from now until the grant expires.
    #[arg(long, conflicts_with = "exp", required_unless_present = "exp")]
    ttl: Option<u64>,
    /// Expiry, UNIX seconds.
    #[arg(long)]
    exp: Option<u64>,
    /// Not valid before, UNIX seconds.
    #[arg(long)]
    nbf: Option<u64>,
}

#[derive(Args)]
struct ServeArgs {
    /// Address to listen on, e.g. 127.0.0.1:8443 (port 0: any free port).
    #[arg(long)]
    listen: SocketAddr,
    /// Public key of a trusted issuer (repeatable).
    #[arg(long = "issuer-key", required = true)]
    issuer_keys: Vec<PathBuf>,
    /// File whose first line is the master secret in hex (32 to 64 bytes, mode 0600).
    #[arg(long)]
    master_secret_file: PathBuf,
    /// Seconds per key: KID = floor(unix time / key period).
    #[arg(long, default_value_t = 60, value_parser = clap::value_parser!(u64).range(1..))]
    key_period: u64,
    /// TLS certificate chain (PEM); serves HTTPS with --tls-key.
    #[arg(long, requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// TLS private key (PEM).
    #[arg(long, requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// Connections served at once; more wait in the listen queue.
    #[arg(long, default_value_t = 512, value_parser = clap::value_parser!(u64).range(1..=65536))]
    max_connections: u64,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::SigningKey { out, public_out } => {
            commands::signing_key(&out, public_out.as_deref())
        }
        Command::MasterSecret { out } => commands::master_secret(&out),
        Command::Grant(args) => commands::grant(&args),
        Command::Verify {
            issuer_keys,
            stream,
            need,
            token,
        } => commands::verify(&issuer_keys, stream.as_deref(), need, token.as_deref()),
        Command::Serve(args) => commands::serve(&args),
        Command::Privilege {
            command: PrivilegeCommand::Encode(args),
        } => commands::privilege_encode(&args),
        Command::Privilege {
            command:
                PrivilegeCommand::Decode {
                    key_file,
                    encoding,
                    string,
                },
        } => commands::privilege_decode(&key_file, encoding, string.as_deref()),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(message) => {
            eprintln!("streamcrypt-keys: {message}");
            ExitCode::FAILURE
        }
    }
}
