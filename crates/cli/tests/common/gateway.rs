//! A real gateway process for tests: `vellum quickstart` or `vellum serve` on a free
//! loopback port, plain HTTP requests to it, and a stop that waits for it.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// A port nobody listens on right now.
pub(crate) fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A running gateway; killed when dropped.
pub(crate) struct Running {
    pub(crate) child: Child,
    pub(crate) port: u16,
    pub(crate) stdout: PathBuf,
    pub(crate) stderr: PathBuf,
}

impl Running {
    /// Starts `vellum ARGS` with output to `log_dir`, waiting until `/readyz` answers.
    pub(crate) fn start(command: Command, port: u16, log_dir: &Path, name: &str) -> Self {
        Self::start_with(command, port, log_dir, name, true)
    }

    /// As [`Self::start`]; `probe` false for a TLS listener (plain probes fail there),
    /// where it waits for the start-up line instead.
    pub(crate) fn start_with(
        mut command: Command,
        port: u16,
        log_dir: &Path,
        name: &str,
        probe: bool,
    ) -> Self {
        let stdout = log_dir.join(format!("{name}.stdout"));
        let stderr = log_dir.join(format!("{name}.stderr"));
        let child = command
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&stdout).unwrap())
            .stderr(std::fs::File::create(&stderr).unwrap())
            .spawn()
            .unwrap();
        let mut running = Self {
            child,
            port,
            stdout,
            stderr,
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let ready = if probe {
                http(port, "GET", "/readyz").is_some_and(|(status, _)| status == 200)
            } else {
                running.stderr_text().contains("serving on")
            };
            if ready {
                return running;
            }
            let exited = running.child.try_wait().ok().flatten();
            assert!(
                exited.is_none(),
                "gateway exited ({exited:?}): {}",
                running.stderr_text()
            );
            assert!(
                Instant::now() < deadline,
                "gateway not ready: {}",
                running.stderr_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub(crate) fn stderr_text(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }

    pub(crate) fn stdout_text(&self) -> String {
        std::fs::read_to_string(&self.stdout).unwrap_or_default()
    }

    /// SIGTERM, then waits for a clean exit.
    pub(crate) fn stop(mut self) {
        let pid = self.child.id().to_string();
        let status = Command::new("kill").args(["-TERM", &pid]).status().unwrap();
        assert!(status.success());
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                assert!(
                    status.success(),
                    "gateway exited with {status}: {}",
                    self.stderr_text()
                );
                return;
            }
            assert!(Instant::now() < deadline, "gateway did not stop");
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// `vellum quickstart --data DATA --listen 127.0.0.1:PORT`.
pub(crate) fn quickstart(data: &Path, port: u16) -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_vellum"));
    command.args([
        "quickstart",
        "--data",
        data.to_str().unwrap(),
        "--listen",
        &format!("127.0.0.1:{port}"),
    ]);
    command
}

/// One HTTP/1.1 request without a body; `None` when nothing listens.
pub(crate) fn http(port: u16, method: &str, path: &str) -> Option<(u16, String)> {
    request(port, method, path, "", "")
}

/// One HTTP/1.1 request: `headers` are extra header lines (each ending in CRLF).
pub(crate) fn request(
    port: u16,
    method: &str,
    path: &str,
    headers: &str,
    body: &str,
) -> Option<(u16, String)> {
    let mut stream = TcpStream::connect(("127.0.0.1", port)).ok()?;
    stream.set_read_timeout(Some(Duration::from_secs(30))).ok()?;
    write!(
        stream,
        "{method} {path} HTTP/1.1\r\nHost: 127.0.0.1\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    )
    .ok()?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).ok()?;
    let status = answer.split(' ').nth(1)?.parse().ok()?;
    let body = answer.split_once("\r\n\r\n").map(|(_, b)| b.to_owned())?;
    Some((status, body))
}

/// A minimal OTLP/HTTP receiver: answers 200 to every POST and keeps the bodies.
pub(crate) struct Collector {
    pub(crate) port: u16,
    pub(crate) bodies: Arc<Mutex<Vec<Vec<u8>>>>,
}

impl Collector {
    pub(crate) fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let bodies = Arc::new(Mutex::new(Vec::new()));
        let kept = bodies.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(stream) = stream else { return };
                let kept = kept.clone();
                std::thread::spawn(move || serve_collector(stream, &kept));
            }
        });
        Self { port, bodies }
    }

    /// Every byte received so far.
    pub(crate) fn received(&self) -> Vec<u8> {
        self.bodies.lock().unwrap().concat()
    }
}

fn serve_collector(stream: TcpStream, kept: &Mutex<Vec<Vec<u8>>>) {
    let mut writer = stream.try_clone().unwrap();
    let mut reader = BufReader::new(stream);
    loop {
        let mut length = 0usize;
        let mut line = String::new();
        // Request line and headers.
        loop {
            line.clear();
            if reader.read_line(&mut line).unwrap_or(0) == 0 {
                return;
            }
            if line == "\r\n" {
                break;
            }
            if let Some((name, value)) = line.split_once(':')
                && name.eq_ignore_ascii_case("content-length")
            {
                length = value.trim().parse().unwrap_or(0);
            }
        }
        let mut body = vec![0; length];
        if reader.read_exact(&mut body).is_err() {
            return;
        }
        kept.lock().unwrap().push(body);
        let ok = "HTTP/1.1 200 OK\r\nContent-Type: application/x-protobuf\r\nContent-Length: 0\r\n\r\n";
        if writer.write_all(ok.as_bytes()).is_err() {
            return;
        }
    }
}
