//! Test support: a scripted HTTP/1.1 server for transport unit tests.

use std::io::{BufRead, BufReader, Read, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::{mpsc, Arc, Mutex};

/// One request as the server saw it.
#[derive(Debug)]
pub(crate) struct Seen {
    /// `POST /path?query HTTP/1.1`.
    pub request_line: String,
    /// Header names as sent.
    pub headers: Vec<(String, String)>,
    /// The body as sent.
    pub body: Vec<u8>,
}

impl Seen {
    /// The value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// A scripted answer: status, extra headers, body.
pub(crate) type Answer = (u16, Vec<(&'static str, String)>, String);

/// An HTTP/1.1 server answering each request with the next of `answers` (status, extra headers, body), whichever
/// connection it comes on (a transport's set-up calls and its writes use different clients), reporting what it saw.
pub(crate) fn serve(answers: Vec<Answer>) -> (SocketAddr, mpsc::Receiver<Seen>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let answers = Arc::new(Mutex::new(answers.into_iter()));
    std::thread::spawn(move || {
        while let Ok((stream, _)) = listener.accept() {
            let (tx, answers) = (tx.clone(), Arc::clone(&answers));
            std::thread::spawn(move || serve_connection(stream, &tx, &answers));
        }
    });
    (addr, rx)
}

/// One request (head and `Content-Length` body); `None` when the client closed the connection first.
fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Seen> {
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).unwrap_or(0) == 0 {
        return None;
    }
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        let (n, v) = line.split_once(':').unwrap();
        headers.push((n.trim().to_string(), v.trim().to_string()));
    }
    let len: usize = headers
        .iter()
        .find(|(n, _)| n.eq_ignore_ascii_case("content-length"))
        .map_or(0, |(_, v)| v.parse().unwrap());
    let mut body = vec![0; len];
    reader.read_exact(&mut body).ok()?;
    Some(Seen {
        request_line: request_line.trim_end().to_string(),
        headers,
        body,
    })
}

/// A server that answers one request with `status` and a body of `len` bytes: `start`, then `y`s, written as fast
/// as the client takes them. Reports how many bytes of the body it wrote before the client closed the connection
/// (or all `len` of them).
pub(crate) fn serve_huge(status: u16, start: &str, len: usize) -> (SocketAddr, mpsc::Receiver<usize>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let (tx, rx) = mpsc::channel();
    let start = start.as_bytes().to_vec();
    std::thread::spawn(move || {
        let Ok((stream, _)) = listener.accept() else { return };
        let mut reader = BufReader::new(stream.try_clone().unwrap());
        let mut writer = stream;
        if read_request(&mut reader).is_none() {
            return;
        }
        let head = format!("HTTP/1.1 {status} X\r\nContent-Length: {len}\r\n\r\n");
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(&start))
            .is_err()
        {
            let _ = tx.send(0);
            return;
        }
        let filler = vec![b'y'; 64 << 10];
        let mut written = start.len();
        while written < len {
            match writer.write(&filler[..filler.len().min(len - written)]) {
                Ok(n) if n > 0 => written += n,
                _ => break,
            }
        }
        let _ = tx.send(written);
    });
    (addr, rx)
}

/// Requests on one connection until the client closes it or the answers run out.
fn serve_connection(stream: TcpStream, tx: &mpsc::Sender<Seen>, answers: &Mutex<std::vec::IntoIter<Answer>>) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut writer = stream;
    loop {
        let Some(seen) = read_request(&mut reader) else { return };
        let _ = tx.send(seen);
        let Some((status, extra, text)) = answers.lock().unwrap().next() else {
            return;
        };
        let mut head = format!("HTTP/1.1 {status} X\r\nContent-Length: {}\r\n", text.len());
        for (n, v) in extra {
            head.push_str(&format!("{n}: {v}\r\n"));
        }
        head.push_str("\r\n");
        if writer
            .write_all(head.as_bytes())
            .and_then(|()| writer.write_all(text.as_bytes()))
            .is_err()
        {
            return;
        }
    }
}

/// Panics when `text` shows any 8 bytes in a row of `secret`: a secret cut short still gives most of it away.
pub(crate) fn assert_hidden(secret: &str, text: &str, context: &str) {
    for window in secret.as_bytes().windows(8) {
        let window = String::from_utf8_lossy(window);
        assert!(!text.contains(&*window), "{context}: {window:?} shows in {text}");
    }
}

/// A destination that echoes `secret` (a proxy or server echoing the request's `Authorization` in its error page)
/// with the secret at every position around the cut of the body for the log ([`super::MAX_ERROR_BODY`] bytes),
/// answering final (400) and retried (500) errors in turn: no error of the transport `make` builds for it shows
/// any of the secret, and with 500 bytes before it the text is exactly those bytes and one `**REDACTED**` (the
/// secret is replaced first, then the text cut: 500 + 12 bytes are the 512 kept).
pub(crate) fn assert_echoed_secret_hidden_wherever_the_cut_falls<T: crate::sink::Transport>(
    secret: &str,
    make: impl FnOnce(SocketAddr) -> T,
) {
    let max = super::MAX_ERROR_BODY;
    let pads: Vec<usize> = (max - secret.len() - 2..=max).collect();
    let answers = pads
        .iter()
        .map(|&pad| {
            let status = if pad % 2 == 0 { 400 } else { 500 };
            (status, vec![], format!("{}{secret} and more", "x".repeat(pad)))
        })
        .collect();
    let (addr, _seen) = serve(answers);
    let mut t = make(addr);
    block_on(async {
        for &pad in &pads {
            let text = t.send(b"m f=1 1\n", 1).await.unwrap_err().to_string();
            assert_hidden(secret, &text, &format!("pad {pad}"));
            if pad == 500 {
                assert_eq!(text, format!("status 400: {}**REDACTED**", "x".repeat(500)));
            }
        }
    });
}

/// Runs `f` on a current-thread runtime (what a sink's delivery thread uses).
pub(crate) fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}
