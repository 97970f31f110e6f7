//! A lean HTTP/1.1 client: one keep-alive connection per virtual user,
//! the request head written by hand, the answer read into one buffer that
//! is reused from request to request. It knows just what the workloads
//! need: a status, a `Location` and a body sized by `Content-Length` or
//! sent in chunks.
//!
//! A general client (reqwest over hyper) cost 19-32 us of CPU per request
//! on the benchmark machines, about as much as the server's side of an
//! embedded read; this one costs 6-7, and pgbench, the client of the
//! PostgreSQL figures we compare against, about 11. The client shares the
//! machine with the server, so what it spends is taken from the server's
//! throughput (BENCHMARKS.md).

use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// No answer's head may be longer than this.
const MAX_HEAD: usize = 16 * 1024;
/// No answer's body may be longer than this.
const MAX_BODY: usize = 64 * 1024 * 1024;

/// The HTTP methods the workloads use.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Method {
    Get,
    Post,
    Put,
}

impl Method {
    fn as_str(self) -> &'static str {
        match self {
            Method::Get => "GET",
            Method::Post => "POST",
            Method::Put => "PUT",
        }
    }
}

/// Where requests go: the server's address and the `Host` header, parsed
/// once from a base URL like `http://127.0.0.1:8090`.
#[derive(Clone, Debug)]
pub(crate) struct Origin {
    addr: SocketAddr,
    host: String,
    /// The base URL's path, without its last `/` (most often empty).
    base: String,
}

impl Origin {
    /// The origin of `base` (`http://host:port`, maybe with a path that
    /// every request's path is put under); the host is resolved once, here.
    pub(crate) async fn resolve(base: &str) -> io::Result<Origin> {
        let bad =
            |why: &str| io::Error::new(io::ErrorKind::InvalidInput, format!("{base:?}: {why}"));
        let rest = base
            .strip_prefix("http://")
            .ok_or_else(|| bad("only http:// URLs are supported"))?;
        let (host, path) = match rest.find('/') {
            Some(i) => rest.split_at(i),
            None => (rest, ""),
        };
        if host.is_empty() {
            return Err(bad("no host"));
        }
        let with_port = if host
            .rsplit_once(':')
            .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        {
            host.to_owned()
        } else {
            format!("{host}:80")
        };
        let addr = tokio::net::lookup_host(&with_port)
            .await?
            .next()
            .ok_or_else(|| bad("the host has no address"))?;
        Ok(Origin {
            addr,
            host: host.to_owned(),
            base: path.trim_end_matches('/').to_owned(),
        })
    }

    /// An origin no request is sent to (the virtual users of `amqp-echo`).
    pub(crate) fn unused() -> Origin {
        Origin {
            addr: SocketAddr::from(([127, 0, 0, 1], 0)),
            host: String::new(),
            base: String::new(),
        }
    }

    /// The path to request for `path` (which starts with `/`).
    pub(crate) fn path(&self, path: &str) -> String {
        format!("{}{path}", self.base)
    }
}

/// An answer, borrowed from the connection's buffer until the next request.
#[derive(Debug)]
pub(crate) struct Answer<'a> {
    pub(crate) status: u16,
    pub(crate) location: Option<&'a str>,
    pub(crate) body: &'a [u8],
}

/// Where the parts of an answer lie in the buffer.
struct Parsed {
    status: u16,
    location: Option<(usize, usize)>,
    body: (usize, usize),
}

/// One connection, opened on first use and again after any failure.
pub(crate) struct Conn {
    origin: Origin,
    timeout: Duration,
    stream: Option<TcpStream>,
    /// The request being written, then the answer being read.
    out: Vec<u8>,
    buf: Vec<u8>,
}

fn invalid(why: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, why.into())
}

impl Conn {
    pub(crate) fn new(origin: Origin, timeout: Duration) -> Conn {
        Conn {
            origin,
            timeout,
            stream: None,
            out: Vec::with_capacity(512),
            buf: Vec::with_capacity(4096),
        }
    }

    pub(crate) fn origin(&self) -> &Origin {
        &self.origin
    }

    /// Sends one request and reads its answer. A request on a connection
    /// kept from before that fails before any byte of an answer came (the
    /// server closed it meanwhile) is sent again once on a new one.
    pub(crate) async fn send(
        &mut self,
        method: Method,
        path: &str,
        body: Option<&[u8]>,
    ) -> io::Result<Answer<'_>> {
        self.out.clear();
        self.out.extend_from_slice(method.as_str().as_bytes());
        self.out.push(b' ');
        self.out.extend_from_slice(path.as_bytes());
        self.out.extend_from_slice(b" HTTP/1.1\r\nHost: ");
        self.out.extend_from_slice(self.origin.host.as_bytes());
        self.out.extend_from_slice(b"\r\n");
        if let Some(body) = body {
            self.out
                .extend_from_slice(b"Content-Type: application/json\r\nContent-Length: ");
            self.out
                .extend_from_slice(body.len().to_string().as_bytes());
            self.out.extend_from_slice(b"\r\n\r\n");
            self.out.extend_from_slice(body);
        } else {
            self.out.extend_from_slice(b"\r\n");
        }
        let timeout = self.timeout;
        let parsed = match tokio::time::timeout(timeout, self.exchange()).await {
            Ok(Ok(parsed)) => parsed,
            Ok(Err(e)) => {
                self.stream = None;
                return Err(e);
            }
            Err(_) => {
                self.stream = None;
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("no whole answer within {timeout:?}"),
                ));
            }
        };
        let location = parsed
            .location
            .and_then(|(from, to)| std::str::from_utf8(&self.buf[from..to]).ok());
        Ok(Answer {
            status: parsed.status,
            location,
            body: &self.buf[parsed.body.0..parsed.body.1],
        })
    }

    async fn exchange(&mut self) -> io::Result<Parsed> {
        let reused = self.stream.is_some();
        match self.once().await {
            Err(Failed { early: true, .. }) if reused => {
                self.stream = None;
                self.once().await.map_err(|f| f.error)
            }
            r => r.map_err(|f| f.error),
        }
    }

    /// One try on the current connection (a new one if there is none).
    async fn once(&mut self) -> Result<Parsed, Failed> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.origin.addr)
                .await
                .map_err(Failed::late)?;
            stream.set_nodelay(true).map_err(Failed::late)?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err(Failed::late(invalid("no connection")));
        };
        stream.write_all(&self.out).await.map_err(Failed::early)?;
        self.buf.clear();
        fill(stream, &mut self.buf).await.map_err(Failed::early)?;
        let whole = read_rest(stream, &mut self.buf)
            .await
            .map_err(Failed::late)?;
        if whole.close {
            self.stream = None;
        }
        Ok(whole.answer)
    }
}

/// A failure of one try: `early` if nothing of an answer had come, which
/// on a kept connection means the server had closed it (sent again once).
struct Failed {
    error: io::Error,
    early: bool,
}

impl Failed {
    fn early(error: io::Error) -> Failed {
        Failed { error, early: true }
    }

    fn late(error: io::Error) -> Failed {
        Failed {
            error,
            early: false,
        }
    }
}

struct Whole {
    answer: Parsed,
    close: bool,
}

/// Reads more into `buf`; an end of stream is an error.
async fn fill(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<()> {
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(buf.capacity().max(4096));
    }
    let n = stream.read_buf(buf).await?;
    if n == 0 {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "the server closed the connection",
        ));
    }
    Ok(())
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

/// Reads the rest of an answer whose first bytes are in `buf`.
async fn read_rest(stream: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<Whole> {
    let head_end = loop {
        if let Some(at) = find(buf, b"\r\n\r\n") {
            break at + 4;
        }
        if buf.len() > MAX_HEAD {
            return Err(invalid("an answer's head is too long"));
        }
        fill(stream, buf).await?;
    };
    let head = parse_head(&buf[..head_end])?;
    let body = match head.length {
        Length::Known(n) => {
            if n > MAX_BODY {
                return Err(invalid(format!("a body of {n} bytes is too long")));
            }
            while buf.len() < head_end + n {
                fill(stream, buf).await?;
            }
            if buf.len() > head_end + n {
                return Err(invalid("bytes past the answer's end"));
            }
            (head_end, head_end + n)
        }
        Length::Chunked => {
            let end = dechunk(stream, buf, head_end).await?;
            (head_end, end)
        }
    };
    Ok(Whole {
        answer: Parsed {
            status: head.status,
            location: head.location,
            body,
        },
        close: head.close,
    })
}

/// How an answer's body is delimited.
enum Length {
    Known(usize),
    Chunked,
}

struct Head {
    status: u16,
    location: Option<(usize, usize)>,
    length: Length,
    close: bool,
}

/// Parses a head (status line and headers, the blank line included);
/// the location is given as a range of `head`.
fn parse_head(head: &[u8]) -> io::Result<Head> {
    let text = std::str::from_utf8(head).map_err(|_| invalid("an answer's head is not UTF-8"))?;
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let mut parts = status_line.splitn(3, ' ');
    let version = parts.next().unwrap_or_default();
    if !version.starts_with("HTTP/1.") {
        return Err(invalid(format!("not an HTTP/1 answer: {status_line:?}")));
    }
    let status = parts
        .next()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or_else(|| invalid(format!("no status in {status_line:?}")))?;
    let mut length = None;
    let mut close = version == "HTTP/1.0";
    let mut location = None;
    for line in lines {
        let Some((name, value)) = line.split_once(':') else {
            continue;
        };
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<usize>()
                .map_err(|_| invalid(format!("a bad Content-Length: {value:?}")))?;
            length = Some(Length::Known(n));
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            if value.eq_ignore_ascii_case("chunked") {
                length = Some(Length::Chunked);
            }
        } else if name.eq_ignore_ascii_case("connection") {
            close = value.eq_ignore_ascii_case("close");
        } else if name.eq_ignore_ascii_case("location") {
            let from = value.as_ptr() as usize - text.as_ptr() as usize;
            location = Some((from, from + value.len()));
        }
    }
    // Without a length only 1xx, 204 and 304 answers are complete here.
    let length = match length {
        Some(l) => l,
        None if status == 204 || status == 304 || status < 200 => Length::Known(0),
        None => return Err(invalid("an answer with neither a length nor chunks")),
    };
    Ok(Head {
        status,
        location,
        length,
        close,
    })
}

/// Decodes a chunked body that starts at `from` in `buf`, in place: the
/// body ends up at `from..` the returned end.
async fn dechunk(stream: &mut TcpStream, buf: &mut Vec<u8>, from: usize) -> io::Result<usize> {
    let mut out = from; // end of the decoded body so far
    let mut at = from; // start of the next chunk's size line
    loop {
        let line_end = loop {
            if let Some(i) = find(&buf[at..], b"\r\n") {
                break at + i;
            }
            fill(stream, buf).await?;
        };
        let size_text =
            std::str::from_utf8(&buf[at..line_end]).map_err(|_| invalid("a bad chunk size"))?;
        let size_text = size_text.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_text, 16)
            .map_err(|_| invalid(format!("a bad chunk size {size_text:?}")))?;
        if out - from + size > MAX_BODY {
            return Err(invalid("a chunked body is too long"));
        }
        let data = line_end + 2;
        while buf.len() < data + size + 2 {
            fill(stream, buf).await?;
        }
        if size == 0 {
            // No trailers are expected: the last chunk ends the answer.
            buf.truncate(out);
            return Ok(out);
        }
        buf.copy_within(data..data + size, out);
        out += size;
        at = data + size + 2;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncBufReadExt;
    use tokio::net::TcpListener;

    /// A server that answers each request on a connection with the next
    /// of `answers`, then closes the connection; returns its origin and
    /// the requests it saw, in order.
    async fn serve(answers: Vec<&'static str>) -> (Origin, tokio::task::JoinHandle<Vec<String>>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let base = format!("http://{}", listener.local_addr().unwrap());
        let task = tokio::spawn(async move {
            let (stream, _) = listener.accept().await.unwrap();
            let mut stream = tokio::io::BufReader::new(stream);
            let mut seen = Vec::new();
            for answer in answers {
                let mut req = String::new();
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    stream.read_line(&mut line).await.unwrap();
                    if let Some(v) = line.strip_prefix("Content-Length: ") {
                        length = v.trim().parse().unwrap();
                    }
                    req.push_str(&line);
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                stream.read_exact(&mut body).await.unwrap();
                req.push_str(std::str::from_utf8(&body).unwrap());
                seen.push(req);
                stream.get_mut().write_all(answer.as_bytes()).await.unwrap();
            }
            seen
        });
        (Origin::resolve(&base).await.unwrap(), task)
    }

    #[tokio::test]
    async fn answers_by_length_and_by_chunks_share_one_connection() {
        let (origin, server) = serve(vec![
            "HTTP/1.1 201 Created\r\nLocation: /api/v1/rides/7\r\ncontent-length: 2\r\n\r\n{}",
            "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\n[1,\r\n2;x=y\r\n2]\r\n0\r\n\r\n",
            "HTTP/1.1 204 No Content\r\n\r\n",
        ])
        .await;
        let host = origin.host.clone();
        let mut conn = Conn::new(origin, Duration::from_secs(5));
        let a = conn
            .send(Method::Post, "/api/v1/rides", Some(b"{\"a\":1}"))
            .await
            .unwrap();
        assert_eq!(
            (a.status, a.location, a.body),
            (201, Some("/api/v1/rides/7"), &b"{}"[..])
        );
        let a = conn.send(Method::Get, "/x?y=1", None).await.unwrap();
        assert_eq!((a.status, a.body), (200, &b"[1,2]"[..]));
        let a = conn.send(Method::Put, "/z", Some(b"")).await.unwrap();
        assert_eq!((a.status, a.body), (204, &b""[..]));
        let seen = server.await.unwrap();
        assert_eq!(
            seen[0],
            format!("POST /api/v1/rides HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: 7\r\n\r\n{{\"a\":1}}")
        );
        assert_eq!(
            seen[1],
            format!("GET /x?y=1 HTTP/1.1\r\nHost: {host}\r\n\r\n")
        );
    }

    #[tokio::test]
    async fn a_connection_the_server_closed_is_opened_again() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let origin = Origin::resolve(&format!("http://{}", listener.local_addr().unwrap()))
            .await
            .unwrap();
        let server = tokio::spawn(async move {
            for _ in 0..2 {
                let (mut stream, _) = listener.accept().await.unwrap();
                let mut buf = vec![0; 1024];
                let _ = stream.read(&mut buf).await.unwrap();
                stream
                    .write_all(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
                    .await
                    .unwrap();
                // Closed without a word, as an idle keep-alive is.
            }
        });
        let mut conn = Conn::new(origin, Duration::from_secs(5));
        for _ in 0..2 {
            let a = conn.send(Method::Get, "/", None).await.unwrap();
            assert_eq!((a.status, a.body), (200, &b"ok"[..]));
        }
        server.await.unwrap();
    }

    #[test]
    fn bad_heads_are_errors_not_panics() {
        for head in [
            "HTTP/1.1 abc OK\r\n\r\n",
            "SPDY 200 OK\r\n\r\n",
            "HTTP/1.1 200 OK\r\nContent-Length: -1\r\n\r\n",
            "HTTP/1.1 200 OK\r\n\r\n",
            "",
        ] {
            assert!(parse_head(head.as_bytes()).is_err(), "{head:?}");
        }
        let h = parse_head(b"HTTP/1.0 204 No Content\r\n\r\n").unwrap();
        assert!(h.close && h.status == 204);
    }
}
