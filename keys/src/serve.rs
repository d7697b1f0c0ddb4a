// SPDX-License-Identifier: MPL-2.0
//! The key service on the network: HTTP/1.1 (hyper) on tokio, with TLS through
//! rustls (ring) when given a certificate, and hard limits so that no client can
//! hold it: at most `max_connections` connections (further ones wait in the
//! listen queue), request heads of at most 16 KiB and 64 headers (431
//! otherwise), 10 s to send a request head or finish a TLS handshake, and 5
//! minutes per connection.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use bytes::Buf;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioIo, TokioTimer};
use rustls::ServerConfig;
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_rustls::TlsAcceptor;
use zeroize::Zeroizing;

use crate::commands::unix_now;
use crate::service::{LogLine, Service};

/// Request line and headers, in bytes.
const MAX_HEAD_LEN: usize = 16 * 1024;
const MAX_HEADERS: usize = 64;
const HEAD_TIMEOUT: Duration = Duration::from_secs(10);
const CONNECTION_LIFETIME: Duration = Duration::from_secs(300);
/// The first byte of a TLS handshake record.
const TLS_HANDSHAKE: u8 = 0x16;

/// A response body that is wiped when dropped: it may hold a key. hyper writes
/// it with vectored writes (`writev`), so it is not copied into hyper's buffer.
pub struct WipedBody {
    bytes: Zeroizing<Vec<u8>>,
    position: usize,
}

impl Buf for WipedBody {
    fn remaining(&self) -> usize {
        self.bytes.len() - self.position
    }

    fn chunk(&self) -> &[u8] {
        &self.bytes[self.position..]
    }

    fn advance(&mut self, count: usize) {
        assert!(count <= self.remaining(), "advance past the end");
        self.position += count;
    }
}

/// The rustls configuration for a PEM certificate chain and private key.
pub fn tls_config(cert: &Path, key: &Path) -> Result<Arc<ServerConfig>, String> {
    let certs = CertificateDer::pem_file_iter(cert)
        .and_then(|certs| certs.collect::<Result<Vec<_>, _>>())
        .map_err(|e| format!("TLS certificate {}: {e}", cert.display()))?;
    if certs.is_empty() {
        return Err(format!(
            "TLS certificate {}: no CERTIFICATE block",
            cert.display()
        ));
    }
    let key =
        PrivateKeyDer::from_pem_file(key).map_err(|e| format!("TLS key {}: {e}", key.display()))?;
    let mut config =
        ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_safe_default_protocol_versions()
            .map_err(|e| format!("TLS: {e}"))?
            .with_no_client_auth()
            .with_single_cert(certs, key)
            .map_err(|e| format!("TLS certificate and key: {e}"))?;
    config.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(config))
}

/// A log line about a connection rather than a request.
fn log_connection(peer: SocketAddr, status: Option<StatusCode>, outcome: &str) {
    eprintln!(
        "{}",
        LogLine {
            now: unix_now(),
            peer,
            method: "-",
            path: None,
            status,
            user: None,
            stream: None,
            kid: None,
            outcome,
        }
    );
}

/// Serves `listener` until the process ends.
pub async fn run(
    service: Arc<Service>,
    listener: TcpListener,
    tls: Option<Arc<ServerConfig>>,
    max_connections: usize,
) {
    let acceptor = tls.map(TlsAcceptor::from);
    let slots = Arc::new(Semaphore::new(max_connections));
    loop {
        let slot = slots
            .clone()
            .acquire_owned()
            .await
            .expect("the semaphore is never closed");
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                // Out of file descriptors and the like: wait, then go on.
                eprintln!("streamcrypt-keys: accept failed: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
                continue;
            }
        };
        let service = service.clone();
        let acceptor = acceptor.clone();
        tokio::spawn(async move {
            let _slot = slot;
            // Responses are small; send them at once.
            let _ = stream.set_nodelay(true);
            match acceptor {
                None => serve_connection(service, stream, peer).await,
                Some(acceptor) => serve_tls(service, acceptor, stream, peer).await,
            }
        });
    }
}

async fn serve_tls(
    service: Arc<Service>,
    acceptor: TlsAcceptor,
    mut stream: TcpStream,
    peer: SocketAddr,
) {
    // A client speaking plain HTTP to the TLS port gets a plain answer saying so,
    // rather than a TLS alert it cannot read.
    let mut first = [0u8; 1];
    match tokio::time::timeout(HEAD_TIMEOUT, stream.peek(&mut first)).await {
        Ok(Ok(1)) if first[0] != TLS_HANDSHAKE => {
            let reason = "this port speaks HTTPS (TLS); plain HTTP is refused";
            let response = format!(
                "HTTP/1.1 400 Bad Request\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                 Connection: close\r\n\r\n{reason}\n",
                reason.len() + 1
            );
            let _ = tokio::time::timeout(HEAD_TIMEOUT, stream.write_all(response.as_bytes())).await;
            let _ = stream.shutdown().await;
            log_connection(peer, Some(StatusCode::BAD_REQUEST), reason);
            return;
        }
        Ok(Ok(_)) => {}
        Ok(Err(e)) => return log_connection(peer, None, &format!("read failed: {e}")),
        Err(_) => return log_connection(peer, None, "no TLS handshake within 10 s"),
    }
    match tokio::time::timeout(HEAD_TIMEOUT, acceptor.accept(stream)).await {
        Ok(Ok(tls)) => serve_connection(service, tls, peer).await,
        Ok(Err(e)) => log_connection(peer, None, &format!("TLS handshake failed: {e}")),
        Err(_) => log_connection(peer, None, "TLS handshake not finished within 10 s"),
    }
}

async fn serve_connection<IO>(service: Arc<Service>, io: IO, peer: SocketAddr)
where
    IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let handler = service_fn(move |request: Request<Incoming>| {
        let service = service.clone();
        async move { Ok::<_, Infallible>(respond(&service, &request, peer)) }
    });
    let connection = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEAD_TIMEOUT)
        .max_header_size(MAX_HEAD_LEN)
        .max_headers(MAX_HEADERS)
        .writev(true)
        .serve_connection(TokioIo::new(io), handler);
    tokio::pin!(connection);
    let result = tokio::select! {
        result = connection.as_mut() => result,
        () = tokio::time::sleep(CONNECTION_LIFETIME) => {
            connection.as_mut().graceful_shutdown();
            match tokio::time::timeout(HEAD_TIMEOUT, connection.as_mut()).await {
                Ok(result) => result,
                Err(_) => return log_connection(peer, None, "closed at the end of its lifetime"),
            }
        }
    };
    if let Err(e) = result {
        // hyper has answered what it could (431 for a head too large, 400 for one
        // it cannot parse); the request never reached `respond`, so log it here.
        let (status, outcome) = if e.is_parse_too_large() {
            (
                Some(StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE),
                format!("request head over {MAX_HEAD_LEN} bytes or {MAX_HEADERS} headers"),
            )
        } else if e.is_parse() {
            (
                Some(StatusCode::BAD_REQUEST),
                format!("unreadable request: {e}"),
            )
        } else if e.is_timeout() {
            (None, "no complete request head within 10 s".to_owned())
        } else {
            (None, format!("connection failed: {e}"))
        };
        log_connection(peer, status, &outcome);
    }
}

fn respond(
    service: &Service,
    request: &Request<Incoming>,
    peer: SocketAddr,
) -> Response<Full<WipedBody>> {
    let now = unix_now();
    let answer = service.answer(request.method(), request.uri(), request.headers(), now);
    eprintln!(
        "{}",
        LogLine {
            now,
            peer,
            method: request.method().as_str(),
            path: Some(request.uri().path()),
            status: Some(answer.status),
            user: answer.user.as_deref(),
            stream: answer.stream.as_deref(),
            kid: answer.kid,
            outcome: &answer.outcome,
        }
    );
    let mut response = Response::new(Full::new(WipedBody {
        bytes: answer.body,
        position: 0,
    }));
    *response.status_mut() = answer.status;
    response.headers_mut().extend(answer.headers);
    response
}
