// SPDX-License-Identifier: MPL-2.0
//! The subcommands of `streamcrypt-keys`, and grants exchanged with an
//! independent JWT library (PyJWT with `cryptography`).

mod common;

use std::os::unix::fs::PermissionsExt;
use std::process::{Command, Stdio};

use common::{Setup, chmod, curl, hex, now, require, run, text};
use streamcrypt_core::key_service::{KeyFormat, derive_key, key_path};

/// Debian's PyJWT lives in the system Python.
const PYTHON: &str = "/usr/bin/python3";

fn require_pyjwt() {
    let ok = Command::new(PYTHON)
        .args(["-c", "import jwt, cryptography"])
        .status()
        .is_ok_and(|status| status.success());
    assert!(
        ok,
        "PyJWT with cryptography is needed by this test: \
         `apt-get install python3-jwt python3-cryptography` (scripts/debian-packages)"
    );
}

fn python(script: &str, args: &[&str]) -> String {
    let out = Command::new(PYTHON)
        .arg("-c")
        .arg(script)
        .args(args)
        .output()
        .unwrap();
    assert!(out.status.success(), "python: {}", text(&out.stderr));
    text(&out.stdout).trim().to_owned()
}

#[test]
fn signing_key_files() {
    let setup = Setup::new();
    let mode = |name: &str| {
        std::fs::metadata(setup.path(name))
            .unwrap()
            .permissions()
            .mode()
            & 0o777
    };
    assert_eq!(mode("issuer.key"), 0o600);
    assert_eq!(mode("issuer.pub"), 0o644);
    assert_eq!(mode("master.secret"), 0o600);
    let before = std::fs::read(setup.path("issuer.key")).unwrap();
    for args in [
        vec!["signing-key", "--out", &setup.arg("issuer.key")],
        vec![
            "signing-key",
            "--out",
            &setup.arg("new.key"),
            "--public-out",
            &setup.arg("issuer.pub"),
        ],
        vec!["master-secret", "--out", &setup.arg("master.secret")],
    ] {
        let out = run(&args);
        assert_eq!(out.status.code(), Some(1), "{args:?}");
        assert!(
            text(&out.stderr).contains("exists; not overwriting it"),
            "{}",
            text(&out.stderr)
        );
    }
    assert_eq!(std::fs::read(setup.path("issuer.key")).unwrap(), before);
    // A refusal leaves nothing half-made behind.
    assert!(!setup.path("new.key").exists());
    // Without --public-out the public key is printed.
    let out = run(&["signing-key", "--out", &setup.arg("other.key")]);
    assert!(out.status.success());
    assert!(text(&out.stdout).starts_with("-----BEGIN PUBLIC KEY-----\n"));
    assert!(!text(&out.stdout).contains("PRIVATE"));
}

#[test]
fn grant_and_verify() {
    let setup = Setup::new();
    let token = setup.grant("alice", "room1", "0xab", 600);
    let verify = |extra: &[&str]| {
        run(&[
            &["verify", "--issuer-key", &setup.arg("issuer.pub")][..],
            extra,
        ]
        .concat())
    };
    let out = verify(&[&token]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    let claims: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["stream"], "room1");
    assert_eq!(claims["rights"], 0xab);
    let exp = claims["exp"].as_u64().unwrap();
    assert!(exp >= now() + 590 && exp <= now() + 600, "{exp}");
    assert!(
        verify(&["--stream", "room1", "--need", "watch", &token])
            .status
            .success()
    );

    let refused = |extra: &[&str], reason: &str| {
        let out = verify(extra);
        assert_eq!(out.status.code(), Some(1), "{extra:?}");
        assert!(out.stdout.is_empty());
        assert!(
            text(&out.stderr).contains(reason),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    };
    refused(&["--need", "publish", &token], "no publish right");
    refused(
        &["--stream", "room2", &token],
        "the grant is for stream room1, not room2",
    );
    refused(&["x.y"], "malformed grant");
    let other = Setup::new();
    let foreign = other.grant("mallory", "room1", "0xff", 600);
    refused(&[&foreign], "bad grant signature");
    // Any of several issuers.
    let out = run(&[
        "verify",
        "--issuer-key",
        &setup.arg("issuer.pub"),
        "--issuer-key",
        &other.arg("issuer.pub"),
        &foreign,
    ]);
    assert!(out.status.success());
    // From stdin.
    let mut child = Command::new(common::BIN)
        .args(["verify", "--issuer-key", &setup.arg("issuer.pub"), "-"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .spawn()
        .unwrap();
    use std::io::Write;
    writeln!(child.stdin.take().unwrap(), "{token}").unwrap();
    assert!(child.wait_with_output().unwrap().status.success());

    // grant refuses what would be useless or unsafe.
    let grant = |extra: &[&str]| {
        run(&[
            &[
                "grant",
                "--signing-key",
                &setup.arg("issuer.key"),
                "--sub",
                "a",
            ][..],
            extra,
        ]
        .concat())
    };
    let cases: [(&[&str], &str); 5] = [
        (
            &["--stream", "../x", "--rights", "1", "--ttl", "60"],
            "neither a stream name",
        ),
        (
            &["--stream", "s", "--rights", "256", "--ttl", "60"],
            "not privilege bits",
        ),
        (
            &["--stream", "s", "--rights", "1", "--exp", "1000"],
            "expired already",
        ),
        (
            &[
                "--stream",
                "s",
                "--rights",
                "1",
                "--ttl",
                "60",
                "--nbf",
                "99999999999",
            ],
            "never be valid",
        ),
        (&["--stream", "s", "--rights", "1"], "--ttl"),
    ];
    for (extra, reason) in cases {
        let out = grant(extra);
        assert!(!out.status.success(), "{extra:?}");
        assert!(
            text(&out.stderr).contains(reason),
            "{extra:?}: {}",
            text(&out.stderr)
        );
    }
    // A signing key others may read is refused.
    chmod(&setup.path("issuer.key"), 0o640);
    let out = grant(&["--stream", "s", "--rights", "1", "--ttl", "60"]);
    assert!(
        text(&out.stderr).contains("chmod 600"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn pyjwt_grants_both_ways() {
    require_pyjwt();
    require("openssl", "version", "openssl");
    require("curl", "--version", "curl");
    let setup = Setup::new();

    // An issuer key made by OpenSSL (PKCS#8 v1), grants minted by PyJWT.
    let key = setup.arg("openssl.key");
    let public = setup.arg("openssl.pub");
    let out = Command::new("openssl")
        .args(["genpkey", "-algorithm", "ed25519", "-out", &key])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let out = Command::new("openssl")
        .args(["pkey", "-in", &key, "-pubout", "-out", &public])
        .output()
        .unwrap();
    assert!(out.status.success());
    chmod(&setup.path("openssl.key"), 0o600);
    let exp = (now() + 600).to_string();
    let minted = python(
        "import jwt, sys\n\
         key = open(sys.argv[1]).read()\n\
         print(jwt.encode({'sub': 'pyuser', 'stream': 'room9', 'rights': 171, \
         'exp': int(sys.argv[2]), 'iat': 1}, key, algorithm='EdDSA'))",
        &[&key, &exp],
    );
    let out = run(&[
        "verify",
        "--issuer-key",
        &public,
        "--need",
        "watch",
        &minted,
    ]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("\"pyuser\""));

    // The service trusts both issuers.
    let server = common::Server::start(
        &[
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--issuer-key",
            &setup.arg("issuer.pub"),
            "--issuer-key",
            &public,
            "--master-secret-file",
            &setup.arg("master.secret"),
        ],
        &setup.path("serve.log"),
    );
    let kid = now() / 60;
    let answer = curl(&[
        "-H",
        &format!("Authorization: Bearer {minted}"),
        &format!(
            "{}{}",
            server.url,
            key_path("room9", kid, 128, KeyFormat::Hex)
        ),
    ]);
    assert_eq!(answer.status, 200, "{}", answer.body_text());
    assert_eq!(
        answer.body_text(),
        hex(&derive_key(&setup.master_secret(), "room9", kid, 16))
    );

    // Our grants, from our key and from the OpenSSL key, verified by PyJWT.
    let ours = setup.grant("alice", "cam-*", "0xff", 600);
    let by_openssl_key = {
        let out = run(&[
            "grant",
            "--signing-key",
            &key,
            "--sub",
            "bob",
            "--stream",
            "s",
            "--rights",
            "84",
            "--ttl",
            "600",
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        text(&out.stdout).trim().to_owned()
    };
    let check = "import jwt, json, sys\n\
                 key = open(sys.argv[1]).read()\n\
                 print(json.dumps(jwt.decode(sys.argv[2], key, algorithms=['EdDSA']), sort_keys=True))";
    let decoded = python(check, &[&setup.arg("issuer.pub"), &ours]);
    let claims: serde_json::Value = serde_json::from_str(&decoded).unwrap();
    assert_eq!(claims["sub"], "alice");
    assert_eq!(claims["stream"], "cam-*");
    assert_eq!(claims["rights"], 255);
    let decoded = python(check, &[&public, &by_openssl_key]);
    assert!(decoded.contains("\"sub\": \"bob\""), "{decoded}");
    // And PyJWT refuses ours under another key, as a check that it checks.
    let out = Command::new(PYTHON)
        .args(["-c", check, &public, &ours])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(
        text(&out.stderr).contains("InvalidSignatureError"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn privilege_strings() {
    let setup = Setup::new();
    let key_file = setup.path("tea.key");
    std::fs::write(&key_file, "0123456789ABCDEF\n").unwrap();
    chmod(&key_file, 0o600);
    let key_arg = setup.arg("tea.key");
    for encoding in ["hex", "base64"] {
        let out = run(&[
            "privilege",
            "encode",
            "--key-file",
            &key_arg,
            "--account",
            "alice",
            "--sdkappid",
            "1400000000",
            "--auth-id",
            "1234",
            "--privilege-map",
            "0xab",
            "--account-type",
            "36862",
            "--exp",
            "1700000300",
            "--encoding",
            encoding,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let string = text(&out.stdout).trim().to_owned();
        let out = run(&[
            "privilege",
            "decode",
            "--key-file",
            &key_arg,
            "--encoding",
            encoding,
            &string,
        ]);
        assert!(out.status.success(), "{}", text(&out.stderr));
        let fields: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(
            fields,
            serde_json::json!({
                "account": "alice", "sdkappid": 1400000000u32, "auth_id": 1234,
                "exp": 1700000300u32, "privilege_map": 171, "account_type": 36862
            })
        );
    }
    // The known answer of privilege.rs, opened through the command line.
    let known = "1cfa6d0b2accc1353f3029fa5d7ad6becedb1124ddfbc0f7b4fe19649eff8972bfb83f699919755c";
    let out = run(&["privilege", "decode", "--key-file", &key_arg, known]);
    assert!(
        text(&out.stdout).contains("\"auth_id\": 1234"),
        "{}",
        text(&out.stderr)
    );
    // Wrong key, damaged string, not hex: exit 1 with the cause.
    std::fs::write(&key_file, "00112233445566778899aabbccddeeff\n").unwrap();
    for (string, reason) in [
        (known, "wrong key, or the string is damaged"),
        ("zz", "not hex"),
    ] {
        let out = run(&["privilege", "decode", "--key-file", &key_arg, string]);
        assert_eq!(out.status.code(), Some(1));
        assert!(text(&out.stderr).contains(reason), "{}", text(&out.stderr));
    }
    std::fs::write(&key_file, "0123456789ABCDEF\n").unwrap();
    let out = run(&["privilege", "decode", "--key-file", &key_arg, &known[..64]]);
    assert!(
        text(&out.stderr).contains("does not decrypt"),
        "{}",
        text(&out.stderr)
    );
}
