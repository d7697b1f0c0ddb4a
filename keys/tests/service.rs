// SPDX-License-Identifier: MPL-2.0
//! The key service, started as `streamcrypt-keys serve` on loopback, against
//! curl: rights, expiry and signature cases, TLS, and bad input.

mod common;

use common::{Setup, curl, hex, now, require};
use streamcrypt_core::grant::{Claims, SigningKey, sign};
use streamcrypt_core::key_service::{KeyFormat, derive_key, key_path};

const PERIOD: u64 = 60;

fn claims(stream: &str, rights: u8) -> Claims {
    Claims {
        sub: "carol".into(),
        stream: stream.into(),
        rights,
        exp: now() + 600,
        nbf: 0,
    }
}

/// A KID that is issuable now and stays so while the test runs.
fn current_kid() -> u64 {
    now() / PERIOD
}

fn bearer(token: &str) -> String {
    format!("Authorization: Bearer {token}")
}

#[test]
fn rights_expiry_and_signature_cases() {
    require("curl", "--version", "curl");
    let setup = Setup::new();
    let server = setup.serve(&["--key-period", &PERIOD.to_string()]);
    let master = setup.master_secret();
    let url = |path: &str| format!("{}{path}", server.url);
    let watch = setup.grant("alice", "room1", "0xab", 600);
    let kid = current_kid();

    // Watch grant: hex and raw keys of every length, equal to derive_key.
    for (bits, len) in [(128, 16), (192, 24), (256, 32)] {
        let expected = derive_key(&master, "room1", kid, len);
        let answer = curl(&[
            "-H",
            &bearer(&watch),
            &url(&key_path("room1", kid, bits, KeyFormat::Hex)),
        ]);
        assert_eq!(answer.status, 200, "{}", answer.body_text());
        assert_eq!(answer.body_text(), hex(&expected));
        assert_eq!(answer.header("content-type"), Some("text/plain"));
        assert_eq!(answer.header("cache-control"), Some("no-store"));
        assert_eq!(answer.header("streamcrypt-key-period"), Some("60"));
        let answer = curl(&[
            "-H",
            &bearer(&watch),
            &url(&key_path("room1", kid, bits, KeyFormat::Raw)),
        ]);
        assert_eq!(answer.status, 200);
        assert_eq!(answer.body, expected[..]);
        assert_eq!(
            answer.header("content-type"),
            Some("application/octet-stream")
        );
    }
    // Defaults: 128 bits, hex. Token in the query works as in the header.
    let answer = curl(&[&url(&format!("/v1/streams/room1/keys/{kid}?token={watch}"))]);
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body_text(),
        hex(&derive_key(&master, "room1", kid, 16))
    );
    let key_of = |stream: &str, kid: u64| hex(&derive_key(&master, stream, kid, 16));

    // Each refusal: status, reason in the body, never a key.
    let refused = |args: &[&str], status: u16, reason: &str, stream: &str, kid: u64| {
        let answer = curl(args);
        let body = answer.body_text();
        assert_eq!(answer.status, status, "{args:?}: {body}");
        assert!(body.contains(reason), "{args:?}: {body:?} lacks {reason:?}");
        assert_eq!(body.lines().count(), 1, "{body:?}");
        assert!(!body.contains(&key_of(stream, kid)), "{body}");
        if status == 401 {
            assert_eq!(
                answer.header("www-authenticate"),
                Some(r#"Bearer realm="streamcrypt", error="invalid_token""#)
            );
        }
        answer
    };
    let key_url = url(&key_path("room1", kid, 128, KeyFormat::Hex));

    let publish_only = setup.grant("bob", "room1", "0x54", 600);
    refused(
        &["-H", &bearer(&publish_only), &key_url],
        403,
        "no watch right (rights 0x54",
        "room1",
        kid,
    );
    refused(
        &["-H", &bearer(&watch), &url("/v1/streams/room1/current")],
        403,
        "no publish right (rights 0xab",
        "room1",
        kid,
    );
    let expired = setup.sign(&Claims {
        exp: now() - 1,
        ..claims("room1", 0xff)
    });
    refused(
        &["-H", &bearer(&expired), &key_url],
        401,
        "grant expired at",
        "room1",
        kid,
    );
    let early = setup.sign(&Claims {
        nbf: now() + 3600,
        exp: now() + 7200,
        ..claims("room1", 0xff)
    });
    refused(
        &["-H", &bearer(&early), &key_url],
        401,
        "grant not valid before",
        "room1",
        kid,
    );
    let other_issuer = sign(&SigningKey::generate().unwrap(), &claims("room1", 0xff));
    refused(
        &["-H", &bearer(&other_issuer), &key_url],
        401,
        "bad grant signature",
        "room1",
        kid,
    );
    // The claims of one grant with the signature of another.
    let mut parts: Vec<&str> = watch.split('.').collect();
    let own = setup.sign(&claims("*", 0xff));
    parts[2] = own.rsplit('.').next().unwrap();
    refused(
        &["-H", &bearer(&parts.join(".")), &key_url],
        401,
        "bad grant signature",
        "room1",
        kid,
    );
    refused(
        &[
            "-H",
            &bearer(&watch),
            &url(&key_path("room2", kid, 128, KeyFormat::Hex)),
        ],
        403,
        "the grant is for stream room1, not room2",
        "room2",
        kid,
    );
    refused(&[&key_url], 401, "no grant", "room1", kid);
    refused(
        &["-H", &bearer(&watch), &format!("{key_url}&token={watch}")],
        400,
        "give it once",
        "room1",
        kid,
    );
    refused(
        &["-H", &format!("Authorization: Basic {watch}"), &key_url],
        401,
        "not `Bearer <grant>`",
        "room1",
        kid,
    );

    // Pattern grants cover the streams with their prefix only.
    let pattern = setup.grant("dave", "room-*", "171", 600);
    let answer = curl(&[
        "-H",
        &bearer(&pattern),
        &url(&key_path("room-7", kid, 128, KeyFormat::Hex)),
    ]);
    assert_eq!(answer.status, 200);
    assert_eq!(answer.body_text(), key_of("room-7", kid));
    refused(
        &[
            "-H",
            &bearer(&pattern),
            &url(&key_path("room7", kid, 128, KeyFormat::Hex)),
        ],
        403,
        "the grant is for stream room-*, not room7",
        "room7",
        kid,
    );

    // KIDs: the next one is issued (prefetch), the one after is not.
    let answer = curl(&[
        "-H",
        &bearer(&watch),
        &url(&key_path("room1", kid + 1, 128, KeyFormat::Hex)),
    ]);
    assert_eq!(answer.status, 200);
    refused(
        &[
            "-H",
            &bearer(&watch),
            &url(&key_path("room1", kid + 3, 128, KeyFormat::Hex)),
        ],
        403,
        &format!("key {} is not issued before", kid + 3),
        "room1",
        kid + 3,
    );
    // A grant never yields keys past the period after its expiry.
    let short = setup.sign(&Claims {
        exp: now() + 5,
        ..claims("room1", 0xab)
    });
    let beyond = (now() + 5) / PERIOD + 2;
    refused(
        &[
            "-H",
            &bearer(&short),
            &url(&key_path("room1", beyond, 128, KeyFormat::Hex)),
        ],
        403,
        "is not issued to this grant",
        "room1",
        beyond,
    );

    // Publish rights learn the current KID.
    let publish = setup.grant("erin", "room1", "0xff", 600);
    let before = current_kid();
    let answer = curl(&["-H", &bearer(&publish), &url("/v1/streams/room1/current")]);
    let after = current_kid();
    assert_eq!(answer.status, 200, "{}", answer.body_text());
    let current: streamcrypt_core::key_service::Current =
        serde_json::from_slice(&answer.body).unwrap();
    assert_eq!(current.stream, "room1");
    assert!((before..=after).contains(&current.kid), "{}", current.kid);
    assert_eq!(current.key_period, PERIOD);
    assert_eq!(current.period_ends, (current.kid + 1) * PERIOD);

    // The log: one line per request, with user, stream, KID and outcome, and
    // never a token or a key.
    let log = server.log_text();
    assert!(
        log.lines()
            .any(|line| line.contains("user=\"alice\" stream=\"room1\"")
                && line.contains(&format!("kid={kid} outcome=\"key issued (128 bits, hex)\""))),
        "{log}"
    );
    assert!(log.contains("403 user=\"bob\""), "{log}");
    assert!(log.contains("outcome=\"grant expired at"), "{log}");
    for secret in [&watch, &publish, &pattern, &publish_only] {
        let signature = secret.rsplit('.').next().unwrap();
        assert!(!log.contains(signature), "a token in the log:\n{log}");
    }
    for (stream, len) in [("room1", 16), ("room1", 24), ("room1", 32), ("room-7", 16)] {
        let key = hex(&derive_key(&master, stream, kid, len));
        assert!(!log.contains(&key), "a key in the log:\n{log}");
    }
}

#[test]
fn https_with_rustls() {
    require("curl", "--version", "curl");
    require("openssl", "version", "openssl");
    let setup = Setup::new();
    let status = std::process::Command::new("openssl")
        .args([
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:prime256v1",
        ])
        .args(["-nodes", "-days", "1", "-subj", "/CN=127.0.0.1"])
        .args(["-addext", "subjectAltName=IP:127.0.0.1"])
        .args([
            "-keyout",
            &setup.arg("tls.key"),
            "-out",
            &setup.arg("tls.crt"),
        ])
        .output()
        .unwrap();
    assert!(status.status.success(), "{}", common::text(&status.stderr));
    let server = setup.serve(&[
        "--tls-cert",
        &setup.arg("tls.crt"),
        "--tls-key",
        &setup.arg("tls.key"),
    ]);
    assert!(
        server.url.starts_with("https://127.0.0.1:"),
        "{}",
        server.url
    );
    let cacert = ["--cacert", &setup.arg("tls.crt")];
    server.assert_healthy(&cacert);
    let watch = setup.grant("alice", "room1", "0xab", 600);
    let kid = current_kid();
    let answer = curl(
        &[
            &cacert[..],
            &[&format!(
                "{}{}&token={watch}",
                server.url,
                key_path("room1", kid, 128, KeyFormat::Raw)
            )],
        ]
        .concat(),
    );
    assert_eq!(answer.status, 200);
    assert_eq!(
        answer.body,
        derive_key(&setup.master_secret(), "room1", kid, 16)[..]
    );

    // Plain HTTP to the TLS port: a clear refusal, and the service goes on.
    let plain = server.url.replace("https://", "http://");
    let answer = curl(&[&format!("{plain}/health")]);
    assert_eq!(answer.status, 400);
    assert!(
        answer.body_text().contains("this port speaks HTTPS"),
        "{}",
        answer.body_text()
    );
    // Without the CA, curl refuses the certificate; the service goes on too.
    let out = std::process::Command::new("curl")
        .args(["-s", &format!("{}/health", server.url)])
        .output()
        .unwrap();
    assert!(!out.status.success());
    server.assert_healthy(&cacert);
    assert!(
        server.log_text().contains("TLS handshake failed"),
        "{}",
        server.log_text()
    );
}

#[test]
fn bad_input_is_refused_and_the_service_keeps_serving() {
    require("curl", "--version", "curl");
    let setup = Setup::new();
    let server = setup.serve(&[]);
    let watch = setup.grant("alice", "*", "0xab", 600);
    let kid = current_kid();
    let b64 = |text: &str| {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(text)
    };
    let payload = b64(&serde_json::to_string(&claims("room1", 0xff)).unwrap());
    // HS256 "signed" with the issuer's public key as the HMAC secret: the
    // classic algorithm confusion.
    let public_pem = std::fs::read(setup.path("issuer.pub")).unwrap();
    let hs_input = format!("{}.{payload}", b64(r#"{"alg":"HS256","typ":"JWT"}"#));
    let hs_tag = ring::hmac::sign(
        &ring::hmac::Key::new(ring::hmac::HMAC_SHA256, &public_pem),
        hs_input.as_bytes(),
    );
    let hs256 = format!("{hs_input}.{}", {
        use base64::Engine;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(hs_tag.as_ref())
    });
    let alg_none = format!("{}.{payload}.", b64(r#"{"alg":"none"}"#));
    let huge = format!(
        "{}.{payload}.{}",
        b64(r#"{"alg":"EdDSA"}"#),
        "A".repeat(9000)
    );
    let key_url = format!(
        "{}{}",
        server.url,
        key_path("room1", kid, 128, KeyFormat::Hex)
    );

    let tokens: [(&str, &str); 8] = [
        ("abc", "3 parts"),
        ("a.b.c", "not base64url"),
        ("a.b.c.d", "this one has 4"),
        ("!!!.!!!.!!!", "not base64url"),
        (&alg_none, "unsupported grant algorithm \"none\""),
        (&hs256, "unsupported grant algorithm \"HS256\""),
        (&huge, "grant too long"),
        ("", "the token is empty"),
    ];
    for (token, reason) in tokens {
        let answer = curl(&["-H", &format!("Authorization: Bearer {token}"), &key_url]);
        assert_eq!(answer.status, 401, "{token:.40}: {}", answer.body_text());
        assert!(
            answer.body_text().contains(reason),
            "{token:.40}: {}",
            answer.body_text()
        );
        server.assert_healthy(&[]);
    }

    // Heads over 16 KiB: 431; many headers too.
    let big = format!("X-Filler: {}", "a".repeat(20_000));
    let answer = curl(&["-H", &big, &format!("{}/health", server.url)]);
    assert_eq!(answer.status, 431);
    server.assert_healthy(&[]);
    let many: Vec<String> = (0..80).map(|i| format!("X-H{i}: {i}")).collect();
    let mut args: Vec<&str> = many.iter().flat_map(|h| ["-H", h.as_str()]).collect();
    let health = format!("{}/health", server.url);
    args.push(&health);
    assert_eq!(curl(&args).status, 431);
    server.assert_healthy(&[]);

    let auth = bearer(&watch);
    let cases: &[(&str, &str, u16, &str)] = &[
        // KIDs
        (
            "GET",
            "/v1/streams/room1/keys/18446744073709551615",
            403,
            "is not issued",
        ),
        (
            "GET",
            "/v1/streams/room1/keys/18446744073709551616",
            400,
            "bad KID",
        ),
        ("GET", "/v1/streams/room1/keys/-1", 400, "bad KID"),
        ("GET", "/v1/streams/room1/keys/+5", 400, "bad KID"),
        ("GET", "/v1/streams/room1/keys/0x10", 400, "bad KID"),
        ("GET", "/v1/streams/room1/keys/", 400, "bad KID"),
        // Path tricks in stream names
        ("GET", "/v1/streams/../keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams/./keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams/%2e%2e/keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams/a%2Fb/keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams/a%00b/keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams//keys/1", 400, "bad stream name"),
        ("GET", "/v1/streams/%2e%2e/current", 400, "bad stream name"),
        ("GET", "/v1/streams/room1/../../health", 404, "no such path"),
        ("GET", "/v1/streams/room1/keys/1/x", 404, "no such path"),
        ("GET", "/v1/streams/a/b/keys/1", 404, "no such path"),
        ("GET", "/etc/passwd", 404, "no such path"),
        // Query
        ("GET", "/v1/streams/room1/keys/1?bits=64", 400, "bad bits"),
        ("GET", "/v1/streams/room1/keys/1?bits=", 400, "bad bits"),
        (
            "GET",
            "/v1/streams/room1/keys/1?format=pem",
            400,
            "bad format",
        ),
        (
            "GET",
            "/v1/streams/room1/keys/1?bits=128&bits=256",
            400,
            "given twice",
        ),
        (
            "GET",
            "/v1/streams/room1/keys/1?debug=1",
            400,
            "unknown query parameter",
        ),
        (
            "GET",
            "/v1/streams/room1/current?bits=128",
            400,
            "does not apply here",
        ),
        // Methods
        (
            "POST",
            "/v1/streams/room1/keys/1",
            405,
            "method POST is not allowed",
        ),
        ("PUT", "/health", 405, "method PUT is not allowed"),
        (
            "DELETE",
            "/v1/streams/room1/current",
            405,
            "method DELETE is not allowed",
        ),
        ("OPTIONS", "/health", 405, "method OPTIONS is not allowed"),
    ];
    for &(method, path, status, reason) in cases {
        let answer = curl(&["-X", method, "-H", &auth, &format!("{}{path}", server.url)]);
        assert_eq!(
            answer.status,
            status,
            "{method} {path}: {}",
            answer.body_text()
        );
        assert!(
            answer.body_text().contains(reason),
            "{method} {path}: {}",
            answer.body_text()
        );
        if status == 405 {
            assert_eq!(answer.header("allow"), Some("GET"));
        }
        server.assert_healthy(&[]);
    }
    // A very long stream name, and one just long enough.
    let long = "a".repeat(129);
    let answer = curl(&[
        "-H",
        &auth,
        &format!("{}/v1/streams/{long}/keys/{kid}", server.url),
    ]);
    assert_eq!(answer.status, 400);
    let longest = "a".repeat(128);
    let answer = curl(&[
        "-H",
        &auth,
        &format!("{}/v1/streams/{longest}/keys/{kid}", server.url),
    ]);
    assert_eq!(answer.status, 200, "{}", answer.body_text());
    // A URL far too long for the head.
    let answer = curl(&[&format!(
        "{}/v1/streams/{}/keys/1",
        server.url,
        "a".repeat(40_000)
    )]);
    assert_eq!(answer.status, 431);
    server.assert_healthy(&[]);
    // Log lines quote what the client sent: no forged lines.
    let answer = curl(&[
        "-H",
        &auth,
        &format!("{}/v1/streams/x%0Ay/keys/1", server.url),
    ]);
    assert_eq!(answer.status, 400);
    for line in server.log_text().lines() {
        assert!(
            line.starts_with("20"),
            "a line not from the service: {line:?}"
        );
    }
}
