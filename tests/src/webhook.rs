//! A webhook receiver on 127.0.0.1, owned by the test: it records every request (headers and
//! the raw body), answers each with the next scripted answer (a status, or holding the
//! request unanswered for a while), else 200, and checks GitHub-style signatures.

use std::collections::{HashMap, VecDeque};
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::Value;

/// How to answer one request.
#[derive(Debug, Clone, Copy)]
pub enum Answer {
    /// This status (with `Retry-After: 0` on 429 and 503).
    Status(u16),
    /// No answer: keep the connection open this long, then close it.
    Hold(Duration),
}

/// One request as received.
#[derive(Debug, Clone)]
pub struct Hit {
    /// The request line's path.
    pub path: String,
    /// Headers, names in lower case.
    pub headers: HashMap<String, String>,
    /// The raw body.
    pub body: Vec<u8>,
    /// The status answered (0: none).
    pub status: u16,
}

impl Hit {
    /// The body as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }

    /// A header.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .get(&name.to_ascii_lowercase())
            .map(String::as_str)
    }

    /// Whether `header` holds `sha256=<hex HMAC-SHA256(secret, body)>`, compared in constant
    /// time as GitHub tells receivers to.
    pub fn signed_with(&self, header: &str, secret: &str) -> bool {
        let Some(hex) = self.header(header).and_then(|v| v.strip_prefix("sha256=")) else {
            return false;
        };
        let Some(tag) = unhex(hex) else { return false };
        let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA256, secret.as_bytes());
        ring::hmac::verify(&key, &self.body, &tag).is_ok()
    }
}

fn unhex(s: &str) -> Option<Vec<u8>> {
    if !s.len().is_multiple_of(2) {
        return None;
    }
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(s.get(i..i + 2)?, 16).ok())
        .collect()
}

#[derive(Default)]
struct State {
    script: VecDeque<Answer>,
    hits: Vec<Hit>,
}

/// The receiver; it stops when dropped.
pub struct Receiver {
    port: u16,
    state: Arc<Mutex<State>>,
    stop: Arc<AtomicBool>,
}

impl Receiver {
    /// Starts a receiver answering with `script`, then 200.
    pub fn start(script: &[Answer]) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the webhook receiver");
        let port = listener.local_addr().expect("addr").port();
        let state = Arc::new(Mutex::new(State {
            script: script.iter().copied().collect(),
            hits: Vec::new(),
        }));
        let stop = Arc::new(AtomicBool::new(false));
        let (st, stopping) = (state.clone(), stop.clone());
        std::thread::spawn(move || {
            for conn in listener.incoming() {
                if stopping.load(Ordering::SeqCst) {
                    break;
                }
                if let Ok(conn) = conn {
                    let st = st.clone();
                    std::thread::spawn(move || serve(conn, &st));
                }
            }
        });
        Self { port, state, stop }
    }

    /// The URL of `path` on this receiver.
    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    /// Every request so far.
    pub fn hits(&self) -> Vec<Hit> {
        self.state.lock().unwrap().hits.clone()
    }

    /// The requests answered with a 2xx.
    pub fn accepted(&self) -> Vec<Hit> {
        self.hits()
            .into_iter()
            .filter(|h| (200..300).contains(&h.status))
            .collect()
    }

    /// Waits until `n` requests were accepted; panics after `timeout`.
    pub fn wait_accepted(&self, n: usize, timeout: Duration) -> Vec<Hit> {
        self.wait_hits(timeout, |hits| {
            hits.iter()
                .filter(|h| (200..300).contains(&h.status))
                .count()
                >= n
        });
        self.accepted()
    }

    /// Waits until the requests satisfy `done`; panics after `timeout`.
    pub fn wait_hits(&self, timeout: Duration, done: impl Fn(&[Hit]) -> bool) -> Vec<Hit> {
        let deadline = Instant::now() + timeout;
        loop {
            let hits = self.hits();
            if done(&hits) {
                return hits;
            }
            assert!(
                Instant::now() < deadline,
                "the webhook receiver did not get what was expected within {timeout:?}; it got: {:#?}",
                hits.iter()
                    .map(|h| (h.status, String::from_utf8_lossy(&h.body).into_owned()))
                    .collect::<Vec<_>>()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        // Why: wakes the accept loop so that it sees the stop flag; failure means it is gone.
        let _ = TcpStream::connect(("127.0.0.1", self.port));
    }
}

fn serve(conn: TcpStream, state: &Mutex<State>) {
    let mut reader = BufReader::new(conn.try_clone().expect("clone"));
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line.trim().is_empty() {
            return;
        }
        let path = line.split_whitespace().nth(1).unwrap_or("").to_string();
        let mut headers = HashMap::new();
        loop {
            let mut h = String::new();
            if reader.read_line(&mut h).is_err() || h.trim().is_empty() {
                break;
            }
            if let Some((name, value)) = h.split_once(':') {
                headers.insert(name.trim().to_ascii_lowercase(), value.trim().to_string());
            }
        }
        let length = headers
            .get("content-length")
            .and_then(|l| l.parse().ok())
            .unwrap_or(0usize);
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        let answer = state
            .lock()
            .unwrap()
            .script
            .pop_front()
            .unwrap_or(Answer::Status(200));
        let status = match answer {
            Answer::Status(s) => s,
            Answer::Hold(_) => 0,
        };
        state.lock().unwrap().hits.push(Hit {
            path,
            headers,
            body,
            status,
        });
        match answer {
            Answer::Hold(d) => {
                std::thread::sleep(d);
                return;
            }
            Answer::Status(s) => {
                let extra = if s == 429 || s == 503 {
                    "Retry-After: 0\r\n"
                } else {
                    ""
                };
                let text = if (200..300).contains(&s) { "ok" } else { "no" };
                let reply = format!(
                    "HTTP/1.1 {s} X\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n{extra}\r\n{text}",
                    text.len()
                );
                let mut w = &conn;
                if w.write_all(reply.as_bytes()).is_err() {
                    return;
                }
            }
        }
    }
}
