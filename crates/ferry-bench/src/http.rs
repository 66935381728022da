//! Just enough of an HTTP/1.1 response parser for the load generator: the status, where the
//! response ends (`Content-Length` or chunked), and whether the server closes the connection.

/// The outcome of looking at the bytes received so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Parse {
    /// More bytes are needed.
    Incomplete,
    /// A whole response: its status, its length in bytes, and whether the connection closes.
    Complete { status: u16, len: usize, close: bool },
}

/// Why a response could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Malformed(pub &'static str);

impl std::fmt::Display for Malformed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed response: {}", self.0)
    }
}

impl std::error::Error for Malformed {}

/// Parse one response at the start of `buf`. Interim (1xx) responses are not expected:
/// the load generator never sends `Expect`.
pub fn parse_response(buf: &[u8]) -> Result<Parse, Malformed> {
    let Some(head_end) = find(buf, b"\r\n\r\n") else {
        return if buf.len() > 64 * 1024 { Err(Malformed("head too long")) } else { Ok(Parse::Incomplete) };
    };
    let head = &buf[..head_end];
    let body_start = head_end + 4;
    let mut lines = head.split(|&b| b == b'\n').map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().ok_or(Malformed("empty"))?;
    if !status_line.starts_with(b"HTTP/1.") || status_line.len() < 12 {
        return Err(Malformed("status line"));
    }
    let status = std::str::from_utf8(&status_line[9..12])
        .ok()
        .and_then(|s| s.parse::<u16>().ok())
        .ok_or(Malformed("status code"))?;
    let mut length = None;
    let mut chunked = false;
    let mut close = status_line.starts_with(b"HTTP/1.0");
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else { continue };
        let (name, value) = (&line[..colon], trim(&line[colon + 1..]));
        if name.eq_ignore_ascii_case(b"content-length") {
            let text = std::str::from_utf8(value).map_err(|_| Malformed("content-length"))?;
            length = Some(text.parse::<usize>().map_err(|_| Malformed("content-length"))?);
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            chunked = contains_ignore_case(value, b"chunked");
        } else if name.eq_ignore_ascii_case(b"connection") {
            close = contains_ignore_case(value, b"close");
        }
    }
    if status == 204 || status == 304 {
        return Ok(Parse::Complete { status, len: body_start, close });
    }
    if chunked {
        return Ok(match chunked_end(&buf[body_start..])? {
            Some(n) => Parse::Complete { status, len: body_start + n, close },
            None => Parse::Incomplete,
        });
    }
    match length {
        Some(n) if buf.len() >= body_start + n => Ok(Parse::Complete { status, len: body_start + n, close }),
        Some(_) => Ok(Parse::Incomplete),
        None => Err(Malformed("neither content-length nor chunked")),
    }
}

/// Length of a complete chunked body (through the final CRLF), if all of it is in `buf`.
fn chunked_end(buf: &[u8]) -> Result<Option<usize>, Malformed> {
    let mut at = 0;
    loop {
        let Some(line_end) = find(&buf[at..], b"\r\n") else { return Ok(None) };
        let line = &buf[at..at + line_end];
        let size_text = line.split(|&b| b == b';').next().unwrap_or_default();
        let size = std::str::from_utf8(trim(size_text))
            .ok()
            .and_then(|s| usize::from_str_radix(s, 16).ok())
            .ok_or(Malformed("chunk size"))?;
        at += line_end + 2;
        if size == 0 {
            // Optional trailers, then an empty line.
            loop {
                let Some(end) = find(&buf[at..], b"\r\n") else { return Ok(None) };
                at += end + 2;
                if end == 0 {
                    return Ok(Some(at));
                }
            }
        }
        if buf.len() < at + size + 2 {
            return Ok(None);
        }
        at += size + 2;
    }
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

fn trim(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

fn contains_ignore_case(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w.eq_ignore_ascii_case(needle))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn content_length() {
        let ok = b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: 16\r\n\r\n{\"success\":true}";
        assert_eq!(parse_response(ok), Ok(Parse::Complete { status: 200, len: ok.len(), close: false }));
        assert_eq!(parse_response(&ok[..ok.len() - 1]), Ok(Parse::Incomplete));
        assert_eq!(parse_response(&ok[..20]), Ok(Parse::Incomplete));
        let mut two = ok.to_vec();
        two.extend_from_slice(ok);
        assert_eq!(parse_response(&two), Ok(Parse::Complete { status: 200, len: ok.len(), close: false }));
    }

    #[test]
    fn close_and_no_content() {
        let r = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 0\r\n\r\n";
        assert_eq!(parse_response(r), Ok(Parse::Complete { status: 503, len: r.len(), close: true }));
        let r = b"HTTP/1.1 204 No Content\r\n\r\n";
        assert_eq!(parse_response(r), Ok(Parse::Complete { status: 204, len: r.len(), close: false }));
    }

    #[test]
    fn chunked() {
        let r = b"HTTP/1.1 429 Too Many Requests\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n0\r\n\r\n";
        assert_eq!(parse_response(r), Ok(Parse::Complete { status: 429, len: r.len(), close: false }));
        assert_eq!(parse_response(&r[..r.len() - 2]), Ok(Parse::Incomplete));
        assert_eq!(parse_response(&r[..r.len() - 8]), Ok(Parse::Incomplete));
    }

    #[test]
    fn garbage() {
        assert!(parse_response(b"SSH-2.0-OpenSSH\r\n\r\n").is_err());
        assert!(parse_response(b"HTTP/1.1 200 OK\r\n\r\n").is_err());
    }
}
