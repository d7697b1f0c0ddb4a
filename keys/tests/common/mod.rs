// SPDX-License-Identifier: MPL-2.0
//! What the tests of `streamcrypt-keys` share: the binary, an issuer and a
//! master secret in a temporary folder, a running service, and curl.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use streamcrypt_core::grant::{self, Claims, SigningKey};

pub const BIN: &str = env!("CARGO_BIN_EXE_streamcrypt-keys");

pub fn now() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs()
}

/// Fails, naming the Debian package, when a tool the test needs is missing.
pub fn require(program: &str, version_arg: &str, package: &str) {
    let found = Command::new(program)
        .arg(version_arg)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        found,
        "`{program}` is needed by this test: `apt-get install {package}` (scripts/debian-packages)"
    );
}

/// Runs the binary with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(BIN).args(args).output().unwrap()
}

pub fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// An issuer key pair and a master secret, made by the binary in a temporary
/// folder.
pub struct Setup {
    pub dir: tempfile::TempDir,
}

impl Setup {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let setup = Setup { dir };
        let out = run(&[
            "signing-key",
            "--out",
            setup.path("issuer.key").to_str().unwrap(),
            "--public-out",
            setup.path("issuer.pub").to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let out = run(&[
            "master-secret",
            "--out",
            setup.path("master.secret").to_str().unwrap(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        setup
    }

    pub fn path(&self, name: &str) -> PathBuf {
        self.dir.path().join(name)
    }

    pub fn arg(&self, name: &str) -> String {
        self.path(name).to_str().unwrap().to_owned()
    }

    pub fn signing_key(&self) -> SigningKey {
        SigningKey::from_pem(&std::fs::read_to_string(self.path("issuer.key")).unwrap()).unwrap()
    }

    pub fn master_secret(&self) -> Vec<u8> {
        let text = std::fs::read_to_string(self.path("master.secret")).unwrap();
        let hex = text.trim();
        (0..hex.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(&hex[i..i + 2], 16).unwrap())
            .collect()
    }

    /// A grant minted through the `grant` subcommand.
    pub fn grant(&self, sub: &str, stream: &str, rights: &str, ttl: u64) -> String {
        let out = run(&[
            "grant",
            "--signing-key",
            &self.arg("issuer.key"),
            "--sub",
            sub,
            "--stream",
            stream,
            "--rights",
            rights,
            "--ttl",
            &ttl.to_string(),
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    }

    /// A grant with any claims (also expired or not yet valid), signed here.
    pub fn sign(&self, claims: &Claims) -> String {
        grant::sign(&self.signing_key(), claims)
    }

    /// Starts `serve` on 127.0.0.1 port 0 with this issuer, plus `extra` options.
    pub fn serve(&self, extra: &[&str]) -> Server {
        Server::start(
            &[
                &["serve", "--listen", "127.0.0.1:0"][..],
                &["--issuer-key", &self.arg("issuer.pub")],
                &["--master-secret-file", &self.arg("master.secret")],
                extra,
            ]
            .concat(),
            &self.path("serve.log"),
        )
    }
}

pub fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// A running key service, stopped when dropped.
pub struct Server {
    child: Child,
    /// `http://127.0.0.1:PORT` or `https://...`.
    pub url: String,
    pub log: PathBuf,
}

impl Server {
    pub fn start(args: &[&str], log: &Path) -> Server {
        let mut child = Command::new(BIN)
            .args(args)
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(log).unwrap())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        let url = line
            .trim()
            .strip_prefix("listening on ")
            .unwrap_or_else(|| {
                panic!(
                    "serve printed {line:?}; log: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                )
            })
            .to_owned();
        Server {
            child,
            url,
            log: log.to_owned(),
        }
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap()
    }

    /// Fails unless /health answers 200 (the service kept serving).
    pub fn assert_healthy(&self, extra: &[&str]) {
        let answer = curl(&[extra, &[&format!("{}/health", self.url)]].concat());
        assert_eq!(answer.status, 200, "{}", text(&answer.body));
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub struct Answer {
    pub status: u16,
    /// Header lines, names lowercased.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Answer {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n == name)
            .map(|(_, v)| v.as_str())
    }

    pub fn body_text(&self) -> String {
        text(&self.body)
    }
}

/// Runs curl with `args` (the URL among them) and reads its answer.
pub fn curl(args: &[&str]) -> Answer {
    let out = Command::new("curl")
        .args(["-s", "-S", "-i", "--path-as-is", "--max-time", "20"])
        .args(args)
        .output()
        .expect("`curl` is needed by this test: `apt-get install curl`");
    assert!(
        out.status.success(),
        "curl {args:?} failed: {}",
        text(&out.stderr)
    );
    parse_http(&out.stdout)
}

fn parse_http(raw: &[u8]) -> Answer {
    let split = raw
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .unwrap_or_else(|| panic!("no HTTP head in {:?}", text(raw)));
    let head = text(&raw[..split]);
    let mut lines = head.lines();
    let status = lines
        .next()
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap();
    let headers = lines
        .filter_map(|line| line.split_once(':'))
        .map(|(name, value)| (name.trim().to_ascii_lowercase(), value.trim().to_owned()))
        .collect();
    Answer {
        status,
        headers,
        body: raw[split + 4..].to_vec(),
    }
}

pub fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}
