//! A small, strict, bounded HTTP/1.1 request parser and response writer: one request per
//! connection (`Connection: close`), a head of at most [`Limits::max_head`] bytes and
//! [`Limits::max_headers`] lines, a body only by `Content-Length` and at most
//! [`Limits::max_body`] bytes (no chunked bodies). Anything else is a typed [`HttpError`] with
//! the status to answer; nothing here panics on what a client sends.

use std::fmt;
use std::io::{ErrorKind, Read, Write};

/// How much of a request is accepted.
#[derive(Debug, Clone, Copy)]
pub struct Limits {
    /// Bytes of the request line and headers, with their line ends.
    pub max_head: usize,
    /// Header lines.
    pub max_headers: usize,
    /// Bytes of the body.
    pub max_body: usize,
}

impl Default for Limits {
    fn default() -> Self {
        Limits { max_head: 8 * 1024, max_headers: 32, max_body: 16 * 1024 }
    }
}

/// Longest request target (path and query).
pub const MAX_TARGET: usize = 2048;

/// A parsed request.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Request {
    /// `GET`, `POST`, ...
    pub method: String,
    /// The path, as sent (`/api/state`).
    pub path: String,
    /// The query's pairs, percent-decoded, in order.
    pub query: Vec<(String, String)>,
    /// Header names (lower case) and values, in order.
    pub headers: Vec<(String, String)>,
    /// The body (`Content-Length` bytes).
    pub body: Vec<u8>,
}

impl Request {
    /// The first value of query parameter `name`.
    pub fn param(&self, name: &str) -> Option<&str> {
        self.query.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
    }

    /// The first value of header `name` (any case).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }
}

/// Why a request was refused; each has the status to answer with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HttpError {
    /// Malformed: 400.
    Bad(String),
    /// The head is longer than allowed, or has too many lines: 431.
    HeadTooLarge,
    /// The body is longer than allowed: 413.
    BodyTooLarge,
    /// Not HTTP/1.0 or 1.1: 505.
    Version,
    /// A transfer coding (chunked): 501.
    Unsupported(String),
    /// The client took too long: 408.
    Timeout,
    /// The connection closed before a request began: nothing to answer.
    Closed,
}

impl HttpError {
    /// The status to answer with (`None`: close without a word).
    pub fn status(&self) -> Option<u16> {
        match self {
            HttpError::Bad(_) => Some(400),
            HttpError::HeadTooLarge => Some(431),
            HttpError::BodyTooLarge => Some(413),
            HttpError::Version => Some(505),
            HttpError::Unsupported(_) => Some(501),
            HttpError::Timeout => Some(408),
            HttpError::Closed => None,
        }
    }
}

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            HttpError::Bad(why) => write!(f, "bad request: {why}"),
            HttpError::HeadTooLarge => f.write_str("request head too large"),
            HttpError::BodyTooLarge => f.write_str("request body too large"),
            HttpError::Version => f.write_str("only HTTP/1.0 and HTTP/1.1"),
            HttpError::Unsupported(what) => write!(f, "not supported: {what}"),
            HttpError::Timeout => f.write_str("request too slow"),
            HttpError::Closed => f.write_str("closed"),
        }
    }
}

fn bad<T>(why: impl Into<String>) -> Result<T, HttpError> {
    Err(HttpError::Bad(why.into()))
}

/// A `tchar` of RFC 9110 (header names, methods).
fn is_token_char(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

fn hex_val(c: u8) -> Option<u8> {
    (c as char).to_digit(16).map(|d| d as u8)
}

/// Percent-decodes a query component (`+` is a space); malformed escapes or non-UTF-8 are errors.
pub fn percent_decode(s: &str) -> Result<String, HttpError> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'%' => {
                let hi = bytes.get(i + 1).copied().and_then(hex_val);
                let lo = bytes.get(i + 2).copied().and_then(hex_val);
                let (Some(hi), Some(lo)) = (hi, lo) else { return bad("malformed %-escape in the query") };
                out.push(hi * 16 + lo);
                i += 3;
            }
            b'+' => {
                out.push(b' ');
                i += 1;
            }
            c => {
                out.push(c);
                i += 1;
            }
        }
    }
    String::from_utf8(out).or_else(|_| bad("query is not UTF-8"))
}

fn parse_query(q: &str) -> Result<Vec<(String, String)>, HttpError> {
    q.split('&')
        .filter(|p| !p.is_empty())
        .map(|p| {
            let (k, v) = p.split_once('=').unwrap_or((p, ""));
            Ok((percent_decode(k)?, percent_decode(v)?))
        })
        .collect()
}

/// The request line's method, path and query, as a request without headers or body.
fn parse_request_line(line: &str) -> Result<Request, HttpError> {
    let mut parts = line.split(' ');
    let (Some(method), Some(target), Some(version), None) = (parts.next(), parts.next(), parts.next(), parts.next())
    else {
        return bad("the request line is not METHOD TARGET VERSION");
    };
    if method.is_empty() || method.len() > 16 || !method.bytes().all(|c| c.is_ascii_uppercase()) {
        return bad("bad method");
    }
    match version {
        "HTTP/1.1" | "HTTP/1.0" => {}
        v if v.starts_with("HTTP/") => return Err(HttpError::Version),
        _ => return bad("bad HTTP version"),
    }
    if !target.starts_with('/') || target.len() > MAX_TARGET || !target.bytes().all(|c| c.is_ascii_graphic()) {
        return bad("bad request target");
    }
    let (path, query) = target.split_once('?').unwrap_or((target, ""));
    Ok(Request { method: method.to_string(), path: path.to_string(), query: parse_query(query)?, ..Default::default() })
}

/// Parses a request's head (without the blank line that ends it); the request (without its
/// body) and the body's length.
pub fn parse_head(head: &[u8], limits: &Limits) -> Result<(Request, usize), HttpError> {
    if head.len() > limits.max_head {
        return Err(HttpError::HeadTooLarge);
    }
    let head = std::str::from_utf8(head).or_else(|_| bad("the head is not UTF-8"))?;
    let mut lines = head.split("\r\n");
    let mut req = parse_request_line(lines.next().unwrap_or_default())?;
    let headers = &mut req.headers;
    let mut length: Option<usize> = None;
    for line in lines {
        if headers.len() >= limits.max_headers {
            return Err(HttpError::HeadTooLarge);
        }
        if line.starts_with([' ', '\t']) {
            return bad("folded header line");
        }
        let Some((name, value)) = line.split_once(':') else { return bad("header line without a colon") };
        if name.is_empty() || !name.bytes().all(is_token_char) {
            return bad("bad header name");
        }
        let value = value.trim_matches([' ', '\t']);
        if value.bytes().any(|c| c.is_ascii_control() && c != b'\t') {
            return bad("control character in a header");
        }
        let name = name.to_ascii_lowercase();
        match name.as_str() {
            "transfer-encoding" => return Err(HttpError::Unsupported("transfer codings (chunked bodies)".into())),
            "content-length" => {
                if value.is_empty() || value.len() > 19 || !value.bytes().all(|c| c.is_ascii_digit()) {
                    return bad("bad Content-Length");
                }
                let n: u64 = value.parse().or_else(|_| bad("bad Content-Length"))?;
                let n = usize::try_from(n).unwrap_or(usize::MAX);
                if length.is_some_and(|l| l != n) {
                    return bad("two different Content-Lengths");
                }
                length = Some(n);
            }
            _ => {}
        }
        headers.push((name, value.to_string()));
    }
    let length = length.unwrap_or(0);
    if length > limits.max_body {
        return Err(HttpError::BodyTooLarge);
    }
    Ok((req, length))
}

fn read_some(r: &mut impl Read, buf: &mut [u8]) -> Result<usize, HttpError> {
    loop {
        match r.read(buf) {
            Ok(n) => return Ok(n),
            Err(e) if e.kind() == ErrorKind::Interrupted => continue,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return Err(HttpError::Timeout)
            }
            Err(_) => return Err(HttpError::Closed),
        }
    }
}

/// Reads one request from `r` (which should time out on its own: see the server).
pub fn read_request(r: &mut impl Read, limits: &Limits) -> Result<Request, HttpError> {
    let mut buf: Vec<u8> = Vec::with_capacity(1024);
    let mut chunk = [0u8; 2048];
    let mut from = 0; // where the blank line may start, given what was searched already
    let end = loop {
        if let Some(i) = buf[from..].windows(4).position(|w| w == b"\r\n\r\n") {
            break from + i;
        }
        if buf.len() > limits.max_head + 4 {
            return Err(HttpError::HeadTooLarge);
        }
        from = buf.len().saturating_sub(3);
        let n = read_some(r, &mut chunk)?;
        if n == 0 {
            return Err(if buf.is_empty() { HttpError::Closed } else { HttpError::Bad("incomplete request".into()) });
        }
        buf.extend_from_slice(&chunk[..n]);
    };
    let (mut req, length) = parse_head(&buf[..end], limits)?;
    let mut body = buf.split_off(end + 4);
    if body.len() > length {
        return bad("more bytes than Content-Length (one request per connection)");
    }
    while body.len() < length {
        let want = (length - body.len()).min(chunk.len());
        let n = read_some(r, &mut chunk[..want])?;
        if n == 0 {
            return bad("body shorter than Content-Length");
        }
        body.extend_from_slice(&chunk[..n]);
    }
    req.body = body;
    Ok(req)
}

/// A response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    /// Status code.
    pub status: u16,
    /// Its `Content-Type` ("" with an empty body).
    pub content_type: &'static str,
    /// Extra headers.
    pub headers: Vec<(&'static str, String)>,
    /// The body.
    pub body: Vec<u8>,
}

/// The reason phrase of the statuses used here.
pub fn reason(status: u16) -> &'static str {
    match status {
        200 => "OK",
        400 => "Bad Request",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        413 => "Content Too Large",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        501 => "Not Implemented",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        505 => "HTTP Version Not Supported",
        _ => "Unknown",
    }
}

impl Response {
    /// A response with a body.
    pub fn new(status: u16, content_type: &'static str, body: impl Into<Vec<u8>>) -> Response {
        Response { status, content_type, headers: Vec::new(), body: body.into() }
    }

    /// A status and nothing else.
    pub fn empty(status: u16) -> Response {
        Response::new(status, "", Vec::new())
    }

    /// Plain text.
    pub fn text(status: u16, text: &str) -> Response {
        Response::new(status, "text/plain; charset=utf-8", text.as_bytes())
    }

    /// JSON of `value`.
    pub fn json(status: u16, value: &impl serde::Serialize) -> Response {
        Response::new(status, "application/json", serde_json::to_vec(value).unwrap_or_default())
    }

    /// The answer to a refused request (`None`: close without a word).
    pub fn for_error(e: &HttpError) -> Option<Response> {
        e.status().map(|s| Response::text(s, &e.to_string()))
    }

    /// With an extra header.
    pub fn with(mut self, name: &'static str, value: impl Into<String>) -> Response {
        self.headers.push((name, value.into()));
        self
    }

    /// The bytes on the wire: status line, headers (nothing cached, nothing sniffed, no
    /// referrer, the connection closed), body.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("HTTP/1.1 {} {}\r\n", self.status, reason(self.status));
        if !self.content_type.is_empty() {
            head.push_str(&format!("Content-Type: {}\r\n", self.content_type));
        }
        head.push_str(&format!("Content-Length: {}\r\n", self.body.len()));
        head.push_str("Cache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\n");
        head.push_str("Referrer-Policy: no-referrer\r\nConnection: close\r\n");
        for (k, v) in &self.headers {
            head.push_str(&format!("{k}: {v}\r\n"));
        }
        head.push_str("\r\n");
        let mut out = head.into_bytes();
        out.extend_from_slice(&self.body);
        out
    }

    /// Writes it to `w`.
    pub fn write_to(&self, w: &mut impl Write) -> std::io::Result<()> {
        w.write_all(&self.to_bytes())?;
        w.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn read(bytes: &[u8]) -> Result<Request, HttpError> {
        read_request(&mut &bytes[..], &Limits::default())
    }

    #[test]
    fn a_plain_get_and_a_post_with_a_body() {
        let req = read(b"GET /api/state?t=ab%43d&x=1+2 HTTP/1.1\r\nHost: a\r\nX-Y:  z \r\n\r\n").unwrap();
        assert_eq!((req.method.as_str(), req.path.as_str()), ("GET", "/api/state"));
        assert_eq!((req.param("t"), req.param("x"), req.param("q")), (Some("abCd"), Some("1 2"), None));
        assert_eq!((req.header("host"), req.header("x-y")), (Some("a"), Some("z")));
        let req = read(b"POST /api/op HTTP/1.0\r\nContent-Length: 5\r\n\r\nhello").unwrap();
        assert_eq!(req.body, b"hello");
    }

    #[test]
    fn hostile_heads_are_refused_with_their_status() {
        let cases: &[(&[u8], u16)] = &[
            (b"GET / HTTP/1.1\r\n\r\n", 0),
            (b"\r\n\r\n", 400),
            (b"GET\r\n\r\n", 400),
            (b"GET / HTTP/1.1 extra\r\n\r\n", 400),
            (b"GET  / HTTP/1.1\r\n\r\n", 400),
            (b"get / HTTP/1.1\r\n\r\n", 400),
            (b"GET http://x/ HTTP/1.1\r\n\r\n", 400),
            (b"GET /a\x01b HTTP/1.1\r\n\r\n", 400),
            (b"GET / FTP/1.0\r\n\r\n", 400),
            (b"GET / HTTP/2.0\r\n\r\n", 505),
            (b"GET /?t=%zz HTTP/1.1\r\n\r\n", 400),
            (b"GET /?t=%ff HTTP/1.1\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nNoColon\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nBad Name: x\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\r\n c\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: b\x00c\r\n\r\n", 400),
            (b"GET / HTTP/1.1\r\nA: \xff\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: -1\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 99999999999999999999\r\n\r\n", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 999999999\r\n\r\n", 413),
            (b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n", 501),
            (b"POST / HTTP/1.1\r\nContent-Length: 10\r\n\r\nshort", 400),
            (b"POST / HTTP/1.1\r\nContent-Length: 1\r\n\r\ntoo long", 400),
            (b"GET / HTTP/1.1\r\nHost: a\r\n", 400),
        ];
        for (bytes, status) in cases {
            let got = read(bytes).err().and_then(|e| e.status()).unwrap_or(0);
            assert_eq!(got, *status, "{:?}", String::from_utf8_lossy(bytes));
        }
        assert_eq!(read(b""), Err(HttpError::Closed));
    }

    #[test]
    fn oversized_heads_stop_at_the_limit() {
        let mut long = b"GET / HTTP/1.1\r\nX: ".to_vec();
        long.extend(std::iter::repeat_n(b'a', 1_000_000));
        assert_eq!(read(&long), Err(HttpError::HeadTooLarge), "no end of the head in sight");
        long.extend_from_slice(b"\r\n\r\n");
        assert_eq!(read(&long), Err(HttpError::HeadTooLarge));
        let many: String = (0..40).map(|i| format!("H{i}: x\r\n")).collect();
        let req = format!("GET / HTTP/1.1\r\n{many}\r\n");
        assert_eq!(read(req.as_bytes()), Err(HttpError::HeadTooLarge), "too many header lines");
        let target = format!("GET /{} HTTP/1.1\r\n\r\n", "a".repeat(MAX_TARGET));
        assert_eq!(read(target.as_bytes()).unwrap_err().status(), Some(400));
    }

    #[test]
    fn responses_close_the_connection_and_are_not_cached() {
        let bytes = Response::text(200, "hi").with("X-Frame-Options", "DENY").to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\n"), "{text}");
        for h in
            ["Content-Length: 2\r\n", "Connection: close\r\n", "Cache-Control: no-store\r\n", "X-Frame-Options: DENY"]
        {
            assert!(text.contains(h), "{h} in {text}");
        }
        assert!(text.ends_with("\r\n\r\nhi"));
        let empty = String::from_utf8(Response::empty(403).to_bytes()).unwrap();
        assert!(empty.starts_with("HTTP/1.1 403 Forbidden\r\n") && empty.ends_with("Content-Length: 0\r\nCache-Control: no-store\r\nX-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\nConnection: close\r\n\r\n"), "{empty}");
    }
}
