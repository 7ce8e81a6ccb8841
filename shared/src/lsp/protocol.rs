//! The wire of the Language Server Protocol as this server speaks it:
//! `Content-Length: N\r\n\r\n` framing of JSON-RPC 2.0 messages over a
//! byte stream (stdio), the few message shapes it sends, and `file://` URIs
//! to paths and back. Only the subset the server uses; the fields are the
//! protocol's (positions 0-based, severities 1 = error … 4 = hint).

use std::path::{Path, PathBuf};

use serde_json::{Value, json};
use tokio::io::{AsyncBufRead, AsyncBufReadExt, AsyncReadExt, AsyncWrite, AsyncWriteExt};

use super::LspError;

/// The largest message accepted from a client (64 MiB).
pub const MAX_MESSAGE: usize = 64 << 20;

/// Reads one message: `Ok(None)` at the end of the stream.
pub async fn read_message<R: AsyncBufRead + Unpin>(r: &mut R) -> Result<Option<Value>, LspError> {
    let mut length: Option<usize> = None;
    let mut line = String::new();
    loop {
        line.clear();
        let n = r.read_line(&mut line).await.map_err(LspError::Io)?;
        if n == 0 {
            return Ok(None);
        }
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            if length.is_some() {
                break;
            }
            // Blank lines before a header: tolerated.
            continue;
        }
        if let Some((name, value)) = l.split_once(':')
            && name.trim().eq_ignore_ascii_case("content-length")
        {
            length = Some(value.trim().parse().map_err(|_| {
                LspError::Protocol(format!("bad Content-Length header {:?}", value.trim()))
            })?);
        }
    }
    let length = length.unwrap_or_default();
    if length > MAX_MESSAGE {
        return Err(LspError::Protocol(format!(
            "a message of {length} bytes is over the limit of {MAX_MESSAGE}"
        )));
    }
    let mut body = vec![0; length];
    r.read_exact(&mut body).await.map_err(LspError::Io)?;
    serde_json::from_slice(&body)
        .map(Some)
        .map_err(|e| LspError::Protocol(format!("a message is not JSON: {e}")))
}

/// Writes one message, framed, and flushes.
pub async fn write_message<W: AsyncWrite + Unpin>(w: &mut W, msg: &Value) -> Result<(), LspError> {
    // Serialising a Value cannot fail.
    let body = serde_json::to_vec(msg).unwrap_or_default();
    let mut out = format!("Content-Length: {}\r\n\r\n", body.len()).into_bytes();
    out.extend_from_slice(&body);
    w.write_all(&out).await.map_err(LspError::Io)?;
    w.flush().await.map_err(LspError::Io)
}

pub fn response(id: &Value, result: Value) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "result": result})
}

/// JSON-RPC error codes the server answers with.
pub const METHOD_NOT_FOUND: i64 = -32601;
pub const INVALID_PARAMS: i64 = -32602;
pub const REQUEST_FAILED: i64 = -32803;
pub const SERVER_NOT_INITIALIZED: i64 = -32002;

pub fn error_response(id: &Value, code: i64, message: &str) -> Value {
    json!({"jsonrpc": "2.0", "id": id, "error": {"code": code, "message": message}})
}

pub fn notification(method: &str, params: Value) -> Value {
    json!({"jsonrpc": "2.0", "method": method, "params": params})
}

/// A 0-based position.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Position {
    pub line: u32,
    pub character: u32,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Range {
    pub start: Position,
    pub end: Position,
}

/// Error, as editors show a failure.
pub const SEVERITY_ERROR: u8 = 1;
pub const SEVERITY_WARNING: u8 = 2;

/// The name diagnostics carry as their `source`.
pub const SOURCE: &str = "gitops-run";

/// One diagnostic, as `textDocument/publishDiagnostics` carries it.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, serde::Serialize)]
pub struct Diagnostic {
    pub range: Range,
    pub severity: u8,
    pub code: String,
    pub source: &'static str,
    pub message: String,
}

fn hex(b: u8) -> Option<u8> {
    match b {
        b'0'..=b'9' => Some(b - b'0'),
        b'a'..=b'f' => Some(b - b'a' + 10),
        b'A'..=b'F' => Some(b - b'A' + 10),
        _ => None,
    }
}

fn percent_decode(s: &str) -> Option<String> {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let h = hex(*b.get(i + 1)?)?;
            let l = hex(*b.get(i + 2)?)?;
            out.push(h * 16 + l);
            i += 3;
        } else {
            out.push(b[i]);
            i += 1;
        }
    }
    String::from_utf8(out).ok()
}

/// The path of a `file://` URI (`None` for other schemes or a malformed one).
pub fn path_of_uri(uri: &str) -> Option<PathBuf> {
    let rest = uri.strip_prefix("file://")?;
    // `file://host/path`: only the local host.
    let path = if rest.starts_with('/') {
        rest
    } else {
        let (host, _) = rest.split_once('/')?;
        if host != "localhost" {
            return None;
        }
        &rest[host.len()..]
    };
    let decoded = percent_decode(path)?;
    // Windows: `file:///C:/dir` is `C:/dir`.
    let bytes = decoded.as_bytes();
    if bytes.len() > 2 && bytes[0] == b'/' && bytes[2] == b':' && bytes[1].is_ascii_alphabetic() {
        return Some(PathBuf::from(&decoded[1..]));
    }
    Some(PathBuf::from(decoded))
}

/// The `file://` URI of an absolute path (percent-encoded as VS Code does).
pub fn uri_of_path(path: &Path) -> String {
    let s = path.to_string_lossy().replace('\\', "/");
    let mut out = String::from("file://");
    if !s.starts_with('/') {
        out.push('/');
    }
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"/-._~".contains(&b) {
            out.push(char::from(b));
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn messages_are_framed_and_read_back_and_bad_frames_are_errors() {
        let msg = json!({"jsonrpc": "2.0", "id": 1, "method": "initialize", "params": {"é": 1}});
        let mut buf = Vec::new();
        write_message(&mut buf, &msg).await.unwrap();
        write_message(&mut buf, &notification("exit", Value::Null))
            .await
            .unwrap();
        let text = String::from_utf8(buf.clone()).unwrap();
        assert!(text.starts_with("Content-Length: "), "{text}");
        let mut r = tokio::io::BufReader::new(&buf[..]);
        assert_eq!(read_message(&mut r).await.unwrap(), Some(msg));
        assert_eq!(
            read_message(&mut r).await.unwrap().unwrap()["method"],
            "exit"
        );
        assert_eq!(read_message(&mut r).await.unwrap(), None);

        let bad = b"Content-Length: x\r\n\r\n{}";
        let mut r = tokio::io::BufReader::new(&bad[..]);
        assert!(read_message(&mut r).await.is_err());
        let huge = format!("Content-Length: {}\r\n\r\n", MAX_MESSAGE + 1);
        let mut r = tokio::io::BufReader::new(huge.as_bytes());
        assert!(read_message(&mut r).await.is_err());
        let not_json = b"Content-Type: x\r\nContent-Length: 3\r\n\r\n{{{";
        let mut r = tokio::io::BufReader::new(&not_json[..]);
        assert!(read_message(&mut r).await.is_err());
    }

    #[test]
    fn file_uris_and_paths_round_trip() {
        let p = Path::new("/home/ann/my app/déploy.yaml");
        let uri = uri_of_path(p);
        assert_eq!(uri, "file:///home/ann/my%20app/d%C3%A9ploy.yaml");
        assert_eq!(path_of_uri(&uri).unwrap(), p);
        assert_eq!(
            path_of_uri("file://localhost/etc/x.yaml").unwrap(),
            Path::new("/etc/x.yaml")
        );
        assert_eq!(
            path_of_uri("file:///C:/src/a.yaml").unwrap(),
            Path::new("C:/src/a.yaml")
        );
        assert_eq!(path_of_uri("untitled:1"), None);
        assert_eq!(path_of_uri("file://elsewhere/x"), None);
        assert_eq!(path_of_uri("file:///bad%zz"), None);
    }
}
