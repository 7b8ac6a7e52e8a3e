//! A real `shipsec serve` process and a real HTTP client (hyper, HTTP/1.1) for it, over
//! TCP or a Unix socket.

#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response};
use hyper_util::rt::TokioIo;
use serde_json::Value;
use tokio::net::{TcpStream, UnixStream};

/// A server process; killed when dropped.
pub struct Server {
    pub child: Child,
    pub addr: Addr,
    pub dir: PathBuf,
    pub token: Option<String>,
    /// Where it serves workers (`--worker-listen`), `HOST:PORT`.
    pub workers: Option<String>,
    lines: std::sync::mpsc::Receiver<String>,
}

/// Where a server listens.
#[derive(Debug, Clone)]
pub enum Addr {
    Tcp(String),
    Unix(PathBuf),
}

/// A scratch directory of the test's own.
pub fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("shipsec-serve-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// Writes the engine configuration `yaml` into `dir`; the value of `--config`.
pub fn config(dir: &Path, yaml: &str) -> String {
    let path = dir.join("engine.yaml");
    std::fs::write(&path, yaml).unwrap();
    path.display().to_string()
}

/// The `shipsec` binary: cargo's path in tests; beside the `examples/` directory of the
/// running executable otherwise (the load generator).
pub fn binary() -> PathBuf {
    match option_env!("CARGO_BIN_EXE_shipsec") {
        Some(path) => PathBuf::from(path),
        None => {
            let exe = std::env::current_exe().unwrap();
            exe.parent().and_then(Path::parent).unwrap().join("shipsec")
        }
    }
}

/// The `shipsec` binary run through `prefix` (`ip netns exec NS`), or directly.
pub fn command(prefix: &[&str]) -> Command {
    match prefix.split_first() {
        Some((first, rest)) => {
            let mut command = Command::new(first);
            command.args(rest).arg(binary());
            command
        }
        None => Command::new(binary()),
    }
}

/// The lines a child prints on `stdout`, read by a thread of their own.
pub fn lines(stdout: std::process::ChildStdout) -> std::sync::mpsc::Receiver<String> {
    let (tx, lines) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    lines
}

/// Starts a run of `def`; its id (the answer must be 201).
pub async fn start_run(client: &Client, def: &Value) -> String {
    let answer = client
        .post_json("/v1/runs", &serde_json::json!({"definition": def}))
        .await;
    assert_eq!(
        answer.status,
        201,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()["runId"].as_str().unwrap().to_owned()
}

/// The run's result, waited for (at most two minutes).
pub async fn result(client: &Client, run_id: &str) -> Value {
    let answer = client
        .get(&format!("/v1/runs/{run_id}/result?wait=120"))
        .await;
    assert_eq!(
        answer.status,
        200,
        "{}",
        String::from_utf8_lossy(&answer.body)
    );
    answer.json()
}

/// Every event of a run, paging the JSON answer.
pub async fn all_events(client: &Client, run_id: &str) -> Vec<Value> {
    let mut all: Vec<Value> = Vec::new();
    loop {
        let after = all.last().map_or(0, |e| e["seq"].as_u64().unwrap());
        let page = client
            .get(&format!("/v1/runs/{run_id}/events?after={after}"))
            .await
            .json();
        let page = page.as_array().unwrap().clone();
        if page.is_empty() {
            return all;
        }
        all.extend(page);
    }
}

impl Server {
    /// Starts `shipsec serve` with `extra` arguments on 127.0.0.1 (a port of the system's
    /// choosing), journal in `dir/data` with process durability; waits for `ready`.
    pub fn start(dir: &Path, extra: &[&str]) -> Server {
        Server::start_on(dir, &["--listen", "127.0.0.1:0"], extra, None)
    }

    /// As [`Server::start`], listening where `listen` says, with `token` in the
    /// environment.
    pub fn start_on(dir: &Path, listen: &[&str], extra: &[&str], token: Option<&str>) -> Server {
        let env: Vec<(&str, &str)> = token
            .map(|t| ("SHIPSEC_API_TOKEN", t))
            .into_iter()
            .collect();
        let mut server = Server::start_with(dir, listen, extra, &env);
        server.token = token.map(str::to_owned);
        server
    }

    /// As [`Server::start_on`], with `env` set in the server's environment (none of the
    /// test's own `SHIPSEC_API_TOKEN` or `OTEL_*` variables otherwise).
    pub fn start_with(dir: &Path, listen: &[&str], extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_through(&[], dir, listen, extra, env)
    }

    /// As [`Server::start_with`], run through `prefix` (`ip netns exec NS`).
    pub fn start_through(
        prefix: &[&str],
        dir: &Path,
        listen: &[&str],
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let mut command = command(prefix);
        command
            .arg("serve")
            .args(listen)
            .arg("--data-dir")
            .arg(dir.join("data"))
            .args(["--durability", "process"])
            .args(extra)
            .env_remove("SHIPSEC_API_TOKEN")
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit());
        for (key, _) in std::env::vars_os() {
            if key.to_string_lossy().starts_with("OTEL_") {
                command.env_remove(key);
            }
        }
        command.envs(env.iter().copied());
        let mut child = command.spawn().unwrap();
        let lines = lines(child.stdout.take().unwrap());
        let mut addr = None;
        let mut workers = None;
        loop {
            let line = lines
                .recv_timeout(Duration::from_secs(60))
                .expect("the server said it is ready");
            if let Some(rest) = line.strip_prefix("listening on ") {
                addr.get_or_insert(match rest.strip_prefix("http://") {
                    Some(tcp) => Addr::Tcp(tcp.to_owned()),
                    None => Addr::Unix(PathBuf::from(rest.strip_prefix("unix:").unwrap())),
                });
            }
            if let Some(rest) = line.strip_prefix("serving workers on ") {
                workers = Some(rest.to_owned());
            }
            if line.starts_with("ready:") {
                break;
            }
        }
        Server {
            child,
            addr: addr.unwrap(),
            dir: dir.to_path_buf(),
            token: None,
            workers,
            lines,
        }
    }

    /// A client with the server's token.
    pub fn client(&self) -> Client {
        Client {
            addr: self.addr.clone(),
            token: self.token.clone(),
        }
    }

    /// The next line the server prints, within a minute.
    pub fn line(&self) -> Option<String> {
        self.lines.recv_timeout(Duration::from_secs(60)).ok()
    }

    /// Sends `signal` to the server.
    pub fn signal(&self, signal: i32) {
        let pid = i32::try_from(self.child.id()).unwrap();
        assert_eq!(unsafe { libc::kill(pid, signal) }, 0);
    }

    /// Waits for the process to exit; its code.
    pub fn wait(&mut self) -> Option<i32> {
        self.child.wait().unwrap().code()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An HTTP client for one server.
#[derive(Debug, Clone)]
pub struct Client {
    pub addr: Addr,
    pub token: Option<String>,
}

/// An answer: status, headers, body.
#[derive(Debug)]
pub struct Answer {
    pub status: u16,
    pub headers: hyper::HeaderMap,
    pub body: Bytes,
}

impl Answer {
    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&self.body)))
    }

    /// The error code of an error answer.
    pub fn code(&self) -> String {
        self.json()["error"]["code"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    }
}

impl Client {
    /// The same client with another token (or none).
    pub fn with_token(&self, token: Option<&str>) -> Client {
        Client {
            addr: self.addr.clone(),
            token: token.map(str::to_owned),
        }
    }

    async fn send(&self, request: Request<Full<Bytes>>) -> Response<Incoming> {
        macro_rules! over {
            ($stream:expr) => {{
                let (mut sender, conn) =
                    hyper::client::conn::http1::handshake(TokioIo::new($stream))
                        .await
                        .unwrap();
                tokio::spawn(conn);
                sender.send_request(request).await.unwrap()
            }};
        }
        match &self.addr {
            Addr::Tcp(a) => over!(TcpStream::connect(a).await.unwrap()),
            Addr::Unix(p) => over!(UnixStream::connect(p).await.unwrap()),
        }
    }

    fn request(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: Bytes,
    ) -> Request<Full<Bytes>> {
        let mut builder = Request::builder()
            .method(method)
            .uri(path)
            .header("host", "localhost");
        if let Some(token) = &self.token {
            builder = builder.header("authorization", format!("Bearer {token}"));
        }
        for (k, v) in headers {
            builder = builder.header(*k, *v);
        }
        builder.body(Full::new(body)).unwrap()
    }

    /// A request and its whole answer.
    pub async fn call(
        &self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> Answer {
        let response = self
            .send(self.request(method, path, headers, Bytes::copy_from_slice(body)))
            .await;
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        Answer {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&self, path: &str) -> Answer {
        self.call("GET", path, &[], b"").await
    }

    pub async fn post_json(&self, path: &str, body: &Value) -> Answer {
        self.post_with(path, &[], body).await
    }

    pub async fn post_with(&self, path: &str, headers: &[(&str, &str)], body: &Value) -> Answer {
        let mut all = vec![("content-type", "application/json")];
        all.extend_from_slice(headers);
        self.call("POST", path, &all, body.to_string().as_bytes())
            .await
    }

    /// Opens an event stream; its frames as they come.
    pub async fn stream(&self, path: &str, headers: &[(&str, &str)]) -> (u16, SseReader) {
        let mut all = vec![("accept", "text/event-stream")];
        all.extend_from_slice(headers);
        let response = self
            .send(self.request("GET", path, &all, Bytes::new()))
            .await;
        SseReader::of(response)
    }

    /// As [`Client::stream`], over TCP with a socket receive buffer of `bytes`: a client
    /// that stops reading holds the server up after little data.
    pub async fn stream_slow(&self, path: &str, bytes: u32) -> (u16, SseReader) {
        let Addr::Tcp(addr) = &self.addr else {
            panic!("a slow stream is over TCP")
        };
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(bytes).unwrap();
        let stream = socket.connect(addr.parse().unwrap()).await.unwrap();
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .unwrap();
        tokio::spawn(conn);
        let request = self.request(
            "GET",
            path,
            &[("accept", "text/event-stream")],
            Bytes::new(),
        );
        SseReader::of(sender.send_request(request).await.unwrap())
    }
}

/// One SSE message.
#[derive(Debug, Clone, Default)]
pub struct SseEvent {
    pub event: String,
    pub id: Option<String>,
    pub data: String,
}

/// Reads SSE messages off a response body.
pub struct SseReader {
    body: Incoming,
    buffer: String,
    /// Comment-only blocks (keep-alives) read so far.
    pub comments: usize,
}

impl SseReader {
    fn of(response: Response<Incoming>) -> (u16, SseReader) {
        (
            response.status().as_u16(),
            SseReader {
                body: response.into_body(),
                buffer: String::new(),
                comments: 0,
            },
        )
    }

    /// The next message (comments skipped); `None` once the stream ended.
    pub async fn next(&mut self) -> Option<SseEvent> {
        loop {
            if let Some(end) = self.buffer.find("\n\n") {
                let block = self.buffer[..end + 2].to_owned();
                self.buffer.drain(..end + 2);
                let mut event = SseEvent::default();
                let mut any = false;
                for line in block.lines() {
                    if let Some(v) = line.strip_prefix("event:") {
                        event.event = v.trim().to_owned();
                        any = true;
                    } else if let Some(v) = line.strip_prefix("id:") {
                        event.id = Some(v.trim().to_owned());
                    } else if let Some(v) = line.strip_prefix("data:") {
                        event.data.push_str(v.trim_start());
                        any = true;
                    }
                }
                if any {
                    return Some(event);
                }
                if block.starts_with(':') {
                    self.comments += 1;
                }
                continue;
            }
            let frame = self.body.frame().await?.ok()?;
            if let Ok(data) = frame.into_data() {
                self.buffer.push_str(&String::from_utf8_lossy(&data));
            }
        }
    }

    /// Reads until attempt `attempt` of `node` starts (its `STARTED` trace event); panics
    /// if the stream ends first.
    pub async fn until_started(&mut self, node: &str, attempt: u32) {
        let what = format!("{node} started attempt {attempt}");
        self.until_trace(&what, |e| {
            e["type"] == "STARTED" && e["nodeId"] == node && e["metadata"]["attempt"] == attempt
        })
        .await;
    }

    /// Reads until a trace event that `wanted` accepts (`what` says which, for the panic
    /// when the stream ends first); the event.
    pub async fn until_trace(&mut self, what: &str, wanted: impl Fn(&Value) -> bool) -> Value {
        while let Some(e) = self.next().await {
            if e.event != "trace" {
                continue;
            }
            let event: Value = serde_json::from_str(&e.data).unwrap();
            if wanted(&event) {
                return event;
            }
        }
        panic!("the stream ended before {what}");
    }

    /// Every message to the end.
    pub async fn all(&mut self) -> Vec<SseEvent> {
        let mut all = Vec::new();
        while let Some(e) = self.next().await {
            all.push(e);
        }
        all
    }
}
