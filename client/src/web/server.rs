//! A small synchronous web server on `std::net::TcpListener`: one thread per connection, at
//! most [`MAX_CONNECTIONS`] at a time, each request read within [`REQUEST_DEADLINE`] and
//! bounded by [`Limits`]. Every request must carry the server's token (`?t=TOKEN`, drawn at
//! start and printed in the URL): without it the answer is 403 and nothing else. Pages and
//! endpoints are a [`Handler`]; the dashboard is one, a client's own page will be another.

use super::http::{read_request, Limits, Request, Response};
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// Connections served at once; more are answered 503 at once.
pub const MAX_CONNECTIONS: usize = 32;
/// How long a client has to send its whole request.
pub const REQUEST_DEADLINE: Duration = Duration::from_secs(10);
/// How long writing the answer may take.
pub const WRITE_TIMEOUT: Duration = Duration::from_secs(10);

/// What answers requests that carry the token.
pub type Handler = dyn Fn(&Request) -> Response + Send + Sync;

/// Where a page's first state goes (so it shows something before its first poll).
pub const INITIAL: &str = "/*INITIAL*/null";

/// An HTML page (`template`, everything inline) with its first state in it at [`INITIAL`] (`<`
/// escaped, so no text in the state can close the script), under a strict content security
/// policy: nothing from elsewhere, scripts and styles inline only, images from `img_src`.
pub fn html_page(template: &str, state: &impl serde::Serialize, img_src: &str) -> Response {
    let json = serde_json::to_string(state).unwrap_or_else(|_| "null".into()).replace('<', "\\u003c");
    Response::new(200, "text/html; charset=utf-8", template.replace(INITIAL, &json))
        .with(
            "Content-Security-Policy",
            format!(
                "default-src 'none'; script-src 'unsafe-inline'; style-src 'unsafe-inline'; connect-src 'self'; \
                 img-src {img_src}; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"
            ),
        )
        .with("X-Frame-Options", "DENY")
}

/// Parses `--web ADDR`: an address, or a bare port (on 127.0.0.1).
pub fn parse_addr(addr: &str) -> Result<SocketAddr, String> {
    match addr.parse::<u16>() {
        Ok(port) => Ok(SocketAddr::from(([127, 0, 0, 1], port))),
        Err(_) => addr.parse().map_err(|_| format!("--web {addr}: not an address (IP:PORT) or a port")),
    }
}

/// A fresh token: 128 random bits in hex.
pub fn new_token() -> String {
    common::crypto::to_hex(&common::crypto::random_key()[..16])
}

/// True if `req` carries `token` (compared in constant time).
pub fn has_token(req: &Request, token: &str) -> bool {
    let Some(given) = req.param("t") else { return false };
    let (a, b) = (given.as_bytes(), token.as_bytes());
    a.len() == b.len() && a.iter().zip(b).fold(0u8, |acc, (x, y)| acc | (x ^ y)) == 0
}

/// Reads one request from `conn` and answers it: a refused request gets its error status, one
/// without the token 403, the rest `handler`'s answer. `None`: the connection closed first.
pub fn answer(conn: &mut impl Read, limits: &Limits, token: &str, handler: &Handler) -> Option<Response> {
    match read_request(conn, limits) {
        Err(e) => Response::for_error(&e),
        Ok(req) if !has_token(&req, token) => Some(Response::empty(403)),
        Ok(req) => Some(handler(&req)),
    }
}

/// A stream whose reads fail with `TimedOut` once its deadline has passed.
struct Deadline<'a> {
    stream: &'a TcpStream,
    until: Instant,
}

impl Read for Deadline<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let left = self.until.checked_duration_since(Instant::now()).filter(|d| !d.is_zero());
        let Some(left) = left else { return Err(std::io::ErrorKind::TimedOut.into()) };
        self.stream.set_read_timeout(Some(left))?;
        let mut s = self.stream;
        s.read(buf)
    }
}

/// A bound web server with its token.
pub struct WebServer {
    listener: TcpListener,
    token: String,
    limits: Limits,
}

impl WebServer {
    /// Binds `addr` with a fresh token.
    pub fn bind(addr: SocketAddr, limits: Limits) -> Result<WebServer, String> {
        let listener = TcpListener::bind(addr).map_err(|e| format!("cannot listen on {addr}: {e}"))?;
        Ok(WebServer { listener, token: new_token(), limits })
    }

    /// The address it listens on.
    pub fn local_addr(&self) -> Option<SocketAddr> {
        self.listener.local_addr().ok()
    }

    /// Its token.
    pub fn token(&self) -> &str {
        &self.token
    }

    /// The URL of `path` with the token.
    pub fn url(&self, path: &str) -> String {
        let addr = self.local_addr().map(|a| a.to_string()).unwrap_or_default();
        format!("http://{addr}{path}?t={}", self.token)
    }

    /// Serves forever, each connection on a thread of its own.
    pub fn serve(self, handler: Arc<Handler>) {
        let active = Arc::new(AtomicUsize::new(0));
        let token: Arc<str> = self.token.into();
        for conn in self.listener.incoming() {
            let Ok(mut conn) = conn else { continue };
            if active.fetch_add(1, Ordering::SeqCst) >= MAX_CONNECTIONS {
                active.fetch_sub(1, Ordering::SeqCst);
                let _ = conn.set_write_timeout(Some(Duration::from_secs(1)));
                let _ = Response::text(503, "busy").write_to(&mut conn);
                continue;
            }
            let (active2, token, handler, limits) = (active.clone(), token.clone(), handler.clone(), self.limits);
            let spawned = std::thread::Builder::new().name("web".into()).spawn(move || {
                serve_one(conn, &limits, &token, &*handler);
                active2.fetch_sub(1, Ordering::SeqCst);
            });
            if spawned.is_err() {
                active.fetch_sub(1, Ordering::SeqCst);
            }
        }
    }
}

fn serve_one(mut conn: TcpStream, limits: &Limits, token: &str, handler: &Handler) {
    let _ = conn.set_write_timeout(Some(WRITE_TIMEOUT));
    let response =
        answer(&mut Deadline { stream: &conn, until: Instant::now() + REQUEST_DEADLINE }, limits, token, handler);
    if let Some(r) = response {
        if r.write_to(&mut conn).is_ok() {
            // Let the client read the answer before the close (unread input would reset it).
            let _ = conn.shutdown(std::net::Shutdown::Write);
            let _ = conn.set_read_timeout(Some(Duration::from_millis(200)));
            let _ = std::io::copy(&mut (&conn).take(64 * 1024), &mut std::io::sink());
        }
    }
    let _ = conn.flush();
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hello(req: &Request) -> Response {
        Response::text(200, &format!("hello {}", req.path))
    }

    fn status(bytes: &[u8], token: &str) -> u16 {
        answer(&mut &bytes[..], &Limits::default(), token, &hello).map(|r| r.status).unwrap_or(0)
    }

    #[test]
    fn the_token_is_required_and_compared_whole() {
        let t = new_token();
        assert_eq!(t.len(), 32);
        assert_ne!(t, new_token());
        assert_eq!(status(format!("GET /x?t={t} HTTP/1.1\r\n\r\n").as_bytes(), &t), 200);
        assert_eq!(status(b"GET /x HTTP/1.1\r\n\r\n", &t), 403);
        assert_eq!(status(format!("GET /x?t={} HTTP/1.1\r\n\r\n", &t[..31]).as_bytes(), &t), 403);
        assert_eq!(status(format!("GET /x?t={t}0 HTTP/1.1\r\n\r\n").as_bytes(), &t), 403);
        assert_eq!(status(b"GET /x?t= HTTP/1.1\r\n\r\n", &t), 403);
        let forbidden = answer(&mut &b"GET / HTTP/1.1\r\n\r\n"[..], &Limits::default(), &t, &hello).unwrap();
        assert!(forbidden.body.is_empty() && forbidden.content_type.is_empty(), "403 and nothing else");
        assert_eq!(status(b"GARBAGE\r\n\r\n", &t), 400, "malformed before forbidden");
    }

    fn exchange(addr: SocketAddr, bytes: &[u8]) -> String {
        let mut s = TcpStream::connect(addr).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(20))).unwrap();
        let _ = s.write_all(bytes);
        let _ = s.shutdown(std::net::Shutdown::Write);
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    }

    #[test]
    fn hostile_requests_over_a_socket_get_their_status_and_the_server_goes_on() {
        let server = WebServer::bind("127.0.0.1:0".parse().unwrap(), Limits::default()).unwrap();
        let (addr, token) = (server.local_addr().unwrap(), server.token().to_string());
        std::thread::spawn(move || server.serve(Arc::new(hello)));
        let big = format!("GET /?t={token} HTTP/1.1\r\nX: {}\r\n\r\n", "a".repeat(100_000));
        assert!(exchange(addr, big.as_bytes()).starts_with("HTTP/1.1 431 "));
        assert!(exchange(addr, b"BLAH BLAH\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(exchange(addr, b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n").starts_with("HTTP/1.1 400 "));
        assert!(exchange(addr, b"GET / HTTP/1.1\r\n\r\n").starts_with("HTTP/1.1 403 "));
        assert_eq!(exchange(addr, b""), "", "closed without a request: no answer");
        let ok = exchange(addr, format!("GET /x?t={token} HTTP/1.1\r\nHost: h\r\n\r\n").as_bytes());
        assert!(ok.starts_with("HTTP/1.1 200 ") && ok.ends_with("hello /x"), "{ok}");
    }
}
