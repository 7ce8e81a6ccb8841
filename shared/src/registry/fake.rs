//! A scripted registry (a small fake, for unit tests only): answers each
//! request from a rule and records what it was asked. A rule that answers
//! `GET /v2/` with 401 gets a Bearer challenge naming `/token` on the fake,
//! so a test can count the logins.

use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub type Rule = Box<dyn Fn(&str, &str, usize) -> (u16, String) + Send + Sync>;

pub struct FakeRegistry {
    pub addr: String,
    pub log: Arc<Mutex<Vec<String>>>,
}

pub async fn start(rule: Rule) -> FakeRegistry {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap().to_string();
    let log = Arc::new(Mutex::new(Vec::new()));
    let rule = Arc::new(rule);
    let (log2, addr2) = (log.clone(), addr.clone());
    tokio::spawn(async move {
        loop {
            let Ok((mut sock, _)) = listener.accept().await else {
                return;
            };
            let (log, rule, addr) = (log2.clone(), rule.clone(), addr2.clone());
            tokio::spawn(async move {
                loop {
                    let mut head = Vec::new();
                    let mut byte = [0u8; 1];
                    while !head.ends_with(b"\r\n\r\n") {
                        match sock.read(&mut byte).await {
                            Ok(1) => head.push(byte[0]),
                            _ => return,
                        }
                    }
                    let head = String::from_utf8_lossy(&head).to_string();
                    let mut lines = head.lines();
                    let first = lines.next().unwrap_or_default().to_string();
                    let mut parts = first.split(' ');
                    let method = parts.next().unwrap_or_default().to_string();
                    let path = parts.next().unwrap_or_default().to_string();
                    let len: usize = lines
                        .filter_map(|l| l.split_once(':'))
                        .find(|(k, _)| k.eq_ignore_ascii_case("content-length"))
                        .and_then(|(_, v)| v.trim().parse().ok())
                        .unwrap_or(0);
                    let mut body = vec![0u8; len];
                    if sock.read_exact(&mut body).await.is_err() {
                        return;
                    }
                    let n = {
                        let mut log = log.lock().unwrap();
                        log.push(format!("{method} {path}"));
                        log.iter()
                            .filter(|l| **l == format!("{method} {path}"))
                            .count()
                    };
                    let (status, body) = rule(&method, &path, n);
                    let mut extra = String::new();
                    if method == "POST" && status == 202 {
                        extra = format!("Location: http://{addr}/v2/upload/1\r\n");
                    }
                    if method == "PUT" && status == 201 {
                        extra = format!("Location: http://{addr}{path}\r\n");
                    }
                    // A registry that wants a token says where to get it.
                    if path == "/v2/" && status == 401 {
                        extra = format!(
                            "WWW-Authenticate: Bearer realm=\"http://{addr}/token\",service=\"fake\"\r\n"
                        );
                    }
                    let resp = format!(
                        "HTTP/1.1 {status} X\r\nContent-Length: {}\r\nContent-Type: application/json\r\n{extra}\r\n{body}",
                        body.len()
                    );
                    if sock.write_all(resp.as_bytes()).await.is_err() {
                        return;
                    }
                }
            });
        }
    });
    FakeRegistry { addr, log }
}
