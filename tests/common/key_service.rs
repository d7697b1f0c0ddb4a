// SPDX-License-Identifier: MPL-2.0
//! A real `streamcrypt-keys serve` on loopback for the tests, with an issuer
//! key to mint grants and the service's log to read.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{SystemTime, UNIX_EPOCH};

/// The `streamcrypt-keys` binary of this workspace, built if it is missing
/// (`cargo test --workspace` builds it; `cargo test -p gst-plugin-streamcrypt`
/// may not have).
pub fn keys_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        // The test binary is target/<profile>/deps/<name>: the workspace's
        // binaries are in target/<profile>.
        let exe = std::env::current_exe().unwrap();
        let profile_dir = exe.parent().unwrap().parent().unwrap().to_path_buf();
        let binary = profile_dir.join("streamcrypt-keys");
        if !binary.exists() {
            let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
            let mut build = Command::new(cargo);
            build.current_dir(env!("CARGO_MANIFEST_DIR")).args([
                "build",
                "--locked",
                "-p",
                "streamcrypt-keys",
            ]);
            if profile_dir
                .file_name()
                .is_some_and(|name| name == "release")
            {
                build.arg("--release");
            }
            let status = build.status().expect("cargo");
            assert!(status.success(), "cargo build -p streamcrypt-keys failed");
        }
        assert!(binary.exists(), "no {}", binary.display());
        binary
    })
}

pub fn unix_now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Runs `streamcrypt-keys` with `args`; its stdout, trimmed.
pub fn keys(args: &[&str]) -> String {
    let output = Command::new(keys_binary()).args(args).output().unwrap();
    assert!(
        output.status.success(),
        "streamcrypt-keys {args:?}: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8(output.stdout).unwrap().trim().to_owned()
}

/// An issuer key pair in a folder of its own.
pub struct Issuer {
    pub dir: tempfile::TempDir,
}

impl Issuer {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let (private, public) = (dir.path().join("issuer.key"), dir.path().join("issuer.pub"));
        keys(&[
            "signing-key",
            "--out",
            private.to_str().unwrap(),
            "--public-out",
            public.to_str().unwrap(),
        ]);
        Self { dir }
    }

    pub fn public_key(&self) -> PathBuf {
        self.dir.path().join("issuer.pub")
    }

    /// A grant for `sub` on `stream` with `rights`, valid `ttl` seconds.
    pub fn grant(&self, sub: &str, stream: &str, rights: &str, ttl: u64) -> String {
        let key = self.dir.path().join("issuer.key");
        keys(&[
            "grant",
            "--signing-key",
            key.to_str().unwrap(),
            "--sub",
            sub,
            "--stream",
            stream,
            "--rights",
            rights,
            "--ttl",
            &ttl.to_string(),
        ])
    }
}

/// `streamcrypt-keys serve` on 127.0.0.1, port 0, stopped when dropped.
pub struct KeyService {
    child: Child,
    pub url: String,
    pub issuer: Issuer,
    log: PathBuf,
}

impl KeyService {
    /// A service with keys of `key_period` seconds.
    pub fn start(key_period: u64) -> Self {
        let issuer = Issuer::new();
        let secret = issuer.dir.path().join("master.secret");
        keys(&["master-secret", "--out", secret.to_str().unwrap()]);
        let log = issuer.dir.path().join("service.log");
        let mut child = Command::new(keys_binary())
            .args([
                "serve",
                "--listen",
                "127.0.0.1:0",
                "--issuer-key",
                issuer.public_key().to_str().unwrap(),
                "--master-secret-file",
                secret.to_str().unwrap(),
                "--key-period",
                &key_period.to_string(),
            ])
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("serve said {line:?}"))
            .to_owned();
        Self {
            child,
            url,
            issuer,
            log,
        }
    }

    pub fn grant(&self, sub: &str, stream: &str, rights: &str, ttl: u64) -> String {
        self.issuer.grant(sub, stream, rights, ttl)
    }

    /// What the service logged so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }
}

impl KeyService {
    /// Stops the service: nothing answers at its address any more.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for KeyService {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A free loopback port nothing listens on (bound, then released).
pub fn unused_url() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    format!("http://127.0.0.1:{port}")
}
