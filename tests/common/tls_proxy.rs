//! A TLS-terminating proxy on 127.0.0.1:0 in front of a plain HTTP server (a real influxd, the New Relic
//! stand-in), so the engine's https path is tested against the same receivers as its http path.
//!
//! rustls (the engine's own TLS library, reached through rumqttc's re-export so the tests need no extra
//! dependency) with the server certificate of [`super::mosquitto::make_tls_files`]. One thread per connection:
//! the handshake, then bytes are copied both ways, polling each side with a 2 ms read timeout until either side
//! closes. Handshakes that fail (the client does not trust the certificate) are counted.

use std::io::{ErrorKind, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rumqttc::tokio_rustls::rustls;
use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};

use super::mosquitto::TlsFiles;

/// A running proxy; stops accepting on drop.
pub struct TlsProxy {
    /// Where clients connect (https).
    pub addr: SocketAddr,
    /// Completed handshakes.
    pub handshakes: Arc<AtomicU64>,
    /// Handshakes that failed (e.g. the client rejected the certificate).
    pub handshake_failures: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
}

fn is_timeout(e: &std::io::Error) -> bool {
    matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut)
}

impl TlsProxy {
    /// Listens on 127.0.0.1:0 with `files`' server certificate, forwarding to `backend`.
    pub fn start(backend: SocketAddr, files: &TlsFiles) -> TlsProxy {
        let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_file_iter(&files.cert)
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap();
        let key = PrivateKeyDer::from_pem_file(&files.key).unwrap();
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let config = Arc::new(
            rustls::ServerConfig::builder_with_provider(provider)
                .with_safe_default_protocol_versions()
                .unwrap()
                .with_no_client_auth()
                .with_single_cert(certs, key)
                .unwrap(),
        );
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        listener.set_nonblocking(true).unwrap();
        let addr = listener.local_addr().unwrap();
        let proxy = TlsProxy {
            addr,
            handshakes: Arc::new(AtomicU64::new(0)),
            handshake_failures: Arc::new(AtomicU64::new(0)),
            stop: Arc::new(AtomicBool::new(false)),
        };
        let (ok, failed, stop) = (
            Arc::clone(&proxy.handshakes),
            Arc::clone(&proxy.handshake_failures),
            Arc::clone(&proxy.stop),
        );
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((tcp, _)) => {
                        let (config, ok, failed, stop) = (
                            Arc::clone(&config),
                            Arc::clone(&ok),
                            Arc::clone(&failed),
                            Arc::clone(&stop),
                        );
                        std::thread::spawn(move || serve(tcp, backend, config, &ok, &failed, &stop));
                    }
                    Err(e) if is_timeout(&e) => std::thread::sleep(Duration::from_millis(5)),
                    Err(_) => break,
                }
            }
        });
        proxy
    }
}

impl Drop for TlsProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn serve(
    tcp: TcpStream,
    backend: SocketAddr,
    config: Arc<rustls::ServerConfig>,
    ok: &AtomicU64,
    failed: &AtomicU64,
    stop: &AtomicBool,
) {
    let poll = Some(Duration::from_millis(2));
    if tcp.set_nonblocking(false).is_err() || tcp.set_read_timeout(poll).is_err() {
        return;
    }
    let Ok(conn) = rustls::ServerConnection::new(config) else {
        return;
    };
    let mut tls = rustls::StreamOwned::new(conn, tcp);
    let deadline = Instant::now() + Duration::from_secs(5);
    while tls.conn.is_handshaking() {
        match tls.conn.complete_io(&mut tls.sock) {
            Ok(_) => {}
            Err(e) if is_timeout(&e) && Instant::now() < deadline => {}
            Err(_) => {
                failed.fetch_add(1, Ordering::Relaxed);
                return;
            }
        }
    }
    ok.fetch_add(1, Ordering::Relaxed);
    let Ok(mut plain) = TcpStream::connect(backend) else {
        return;
    };
    if plain.set_read_timeout(poll).is_err() {
        return;
    }
    let mut buf = vec![0u8; 64 << 10];
    while !stop.load(Ordering::Relaxed) {
        match tls.read(&mut buf) {
            Ok(0) => return,
            Ok(n) => {
                if plain.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
        match plain.read(&mut buf) {
            Ok(0) => {
                tls.conn.send_close_notify();
                let _ = tls.flush();
                return;
            }
            Ok(n) => {
                if tls.write_all(&buf[..n]).and_then(|()| tls.flush()).is_err() {
                    return;
                }
            }
            Err(e) if is_timeout(&e) => {}
            Err(_) => return,
        }
    }
}
