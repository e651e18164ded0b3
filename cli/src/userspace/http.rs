//! The HTTP proxy's request head: `CONNECT host:port` (a tunnel, for HTTPS) or a plain
//! request with an absolute URI (`GET http://web-app.emojivoto/ HTTP/1.1`), rewritten to
//! origin form for the server with `Connection: close` (one request per connection: the next
//! one may be for another host). The head is read up to [`MAX_HEAD`] bytes from an untrusted
//! client; parsing is httparse's.

use tokio::io::{AsyncRead, AsyncReadExt};

use super::target::{Host, Target, TargetError};

/// The largest request head accepted (request line and headers).
pub const MAX_HEAD: usize = 16 * 1024;
/// Headers accepted in one head.
const MAX_HEADERS: usize = 64;
/// Headers meant for the proxy or this one connection (RFC 9110 section 7.6.1), not the server.
const HOP_BY_HOP: &[&str] = &[
    "connection",
    "keep-alive",
    "proxy-connection",
    "proxy-authorization",
    "proxy-authenticate",
    "te",
    "trailer",
    "upgrade",
];

#[derive(Debug, PartialEq, Eq)]
pub enum ProxyRequest {
    /// Open a tunnel and answer `200 Connection established`.
    Connect(Target),
    /// Send `head` (origin form) to the target, then relay both ways.
    Forward { target: Target, head: Vec<u8> },
}

#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error("the request head is larger than {MAX_HEAD} bytes")]
    TooLarge,
    #[error("the request is not HTTP/1.x: {0}")]
    Malformed(String),
    #[error("{0}: this proxy takes http:// URLs and CONNECT (for https, the client uses CONNECT)")]
    Scheme(String),
    #[error(transparent)]
    Target(#[from] TargetError),
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl HttpError {
    /// The status line's code and reason for this error.
    pub fn status(&self) -> (u16, &'static str) {
        match self {
            HttpError::TooLarge => (431, "Request Header Fields Too Large"),
            _ => (400, "Bad Request"),
        }
    }
}

/// Reads until the end of the head (an empty line) into `buf`, which may already hold the
/// first bytes; returns the head's length (bytes after it belong to the body).
pub async fn read_head<R: AsyncRead + Unpin>(
    r: &mut R,
    buf: &mut Vec<u8>,
) -> Result<usize, HttpError> {
    let mut searched: usize = 0;
    loop {
        if let Some(i) = find_end(&buf[searched.saturating_sub(3)..]) {
            return Ok(searched.saturating_sub(3) + i);
        }
        if buf.len() >= MAX_HEAD {
            return Err(HttpError::TooLarge);
        }
        searched = buf.len();
        let mut chunk = [0u8; 2048];
        let room = (MAX_HEAD - buf.len()).min(chunk.len());
        let n = r.read(&mut chunk[..room]).await?;
        if n == 0 {
            return Err(HttpError::Malformed(
                "the client closed before the end of the head".into(),
            ));
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

/// The index just past `\r\n\r\n`.
fn find_end(b: &[u8]) -> Option<usize> {
    b.windows(4).position(|w| w == b"\r\n\r\n").map(|i| i + 4)
}

/// Parses a complete head.
pub fn parse(head: &[u8]) -> Result<ProxyRequest, HttpError> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    match req.parse(head) {
        Ok(httparse::Status::Complete(_)) => {}
        Ok(httparse::Status::Partial) => {
            return Err(HttpError::Malformed("incomplete head".into()));
        }
        Err(e) => return Err(HttpError::Malformed(e.to_string())),
    }
    let method = req.method.unwrap_or_default();
    let uri = req.path.unwrap_or_default();
    if method == "CONNECT" {
        return Ok(ProxyRequest::Connect(Target::parse(uri)?));
    }
    let rest = match uri.split_once("://") {
        Some((scheme, rest)) if scheme.eq_ignore_ascii_case("http") => rest,
        Some((scheme, _)) => return Err(HttpError::Scheme(format!("{scheme}:// URL"))),
        None => {
            return Err(HttpError::Scheme(format!(
                "not an absolute URL: {}",
                short(uri)
            )));
        }
    };
    let (authority, path) = match rest.find(['/', '?']) {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    let path = if path.starts_with('?') {
        format!("/{path}")
    } else {
        path.to_string()
    };
    if authority.contains('@') {
        return Err(HttpError::Malformed(
            "credentials in the URL are not forwarded".into(),
        ));
    }
    let target = match Target::parse(authority) {
        Ok(t) => t,
        Err(TargetError::NoPort(_)) => Target {
            host: Host::parse(authority)?,
            port: 80,
        },
        Err(e) => return Err(e.into()),
    };
    let mut out = format!("{method} {path} HTTP/1.1\r\n").into_bytes();
    let mut host = false;
    for h in req.headers.iter() {
        let name = h.name.to_ascii_lowercase();
        if HOP_BY_HOP.contains(&name.as_str()) {
            continue;
        }
        host |= name == "host";
        out.extend_from_slice(h.name.as_bytes());
        out.extend_from_slice(b": ");
        out.extend_from_slice(h.value);
        out.extend_from_slice(b"\r\n");
    }
    if !host {
        out.extend_from_slice(format!("Host: {authority}\r\n").as_bytes());
    }
    out.extend_from_slice(b"Connection: close\r\n\r\n");
    Ok(ProxyRequest::Forward { target, head: out })
}

fn short(s: &str) -> String {
    s.chars().take(80).collect()
}

/// A complete response for an error: the status and one sentence.
pub fn error_response(code: u16, reason: &str, sentence: &str) -> Vec<u8> {
    let body = format!("{sentence}\n");
    format!(
        "HTTP/1.1 {code} {reason}\r\nContent-Type: text/plain; charset=utf-8\r\nConnection: close\r\nContent-Length: {}\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

pub const ESTABLISHED: &[u8] = b"HTTP/1.1 200 Connection established\r\n\r\n";

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connect_and_absolute_get_are_understood() {
        let r =
            parse(b"CONNECT web-app.emojivoto:443 HTTP/1.1\r\nHost: web-app.emojivoto:443\r\n\r\n");
        assert_eq!(
            r.unwrap(),
            ProxyRequest::Connect(Target::parse("web-app.emojivoto:443").unwrap())
        );
        let r = parse(
            b"GET http://web-app.emojivoto/api/list?x=1 HTTP/1.1\r\nHost: web-app.emojivoto\r\nProxy-Connection: Keep-Alive\r\nProxy-Authorization: Basic eA==\r\nAccept: */*\r\n\r\n",
        )
        .unwrap();
        let ProxyRequest::Forward { target, head } = r else {
            panic!("not forwarded")
        };
        assert_eq!(target.to_string(), "web-app.emojivoto:80");
        assert_eq!(
            String::from_utf8(head).unwrap(),
            "GET /api/list?x=1 HTTP/1.1\r\nHost: web-app.emojivoto\r\nAccept: */*\r\nConnection: close\r\n\r\n"
        );
        let ProxyRequest::Forward { target, head } =
            parse(b"HEAD http://10.96.0.20:8080?q HTTP/1.0\r\n\r\n").unwrap()
        else {
            panic!()
        };
        assert_eq!(target.to_string(), "10.96.0.20:8080");
        assert!(head.starts_with(b"HEAD /?q HTTP/1.1\r\nHost: 10.96.0.20:8080\r\n"));
    }

    #[test]
    fn what_the_proxy_refuses() {
        for bad in [
            &b"GET https://web-app/ HTTP/1.1\r\n\r\n"[..],
            b"GET /relative HTTP/1.1\r\n\r\n",
            b"GET http://user:pw@web-app/ HTTP/1.1\r\n\r\n",
            b"CONNECT web-app HTTP/1.1\r\n\r\n",
            b"CONNECT a\0b:443 HTTP/1.1\r\n\r\n",
            b"GET http://web-app/ HTTP/1.1\r\nBad Header\r\n\r\n",
            b"\x16\x03\x01 tls\r\n\r\n",
        ] {
            let r = parse(bad);
            assert!(r.is_err(), "{:?} accepted", String::from_utf8_lossy(bad));
            assert_eq!(r.unwrap_err().status().0, 400);
        }
    }

    #[tokio::test]
    async fn the_head_is_bounded_and_the_body_kept() {
        let mut input: &[u8] = b"OST http://x/ HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi";
        let mut buf = b"P".to_vec();
        let n = read_head(&mut input, &mut buf).await.unwrap();
        assert_eq!(&buf[n..], b"hi");
        assert!(matches!(parse(&buf[..n]), Ok(ProxyRequest::Forward { .. })));
        let endless = vec![b'a'; 100_000];
        let mut input: &[u8] = &endless;
        let mut buf = Vec::new();
        assert!(matches!(
            read_head(&mut input, &mut buf).await,
            Err(HttpError::TooLarge)
        ));
        assert!(buf.len() <= MAX_HEAD);
    }
}
