//! `vellum bench capture`: durable, verified capture receipts per second over loopback
//! HTTP, with a naive baseline and the CPU floor measured in the same run.
//!
//! What runs, all on this machine:
//!
//! 1. **The CPU floor**: the gateway's unavoidable work per message on one thread
//!    (header parse and signature check, the body's age header and SHA-256, the
//!    header's SHA-256, the log entry's leaf hash and the tree append). The floor is
//!    the machine's cores divided by that time.
//! 2. **The gateway**: `vellum serve` started as a child process of this binary on a
//!    fresh deployment in a temporary folder (SQLite and a blob folder, or a scratch
//!    PostgreSQL database and a blob folder), with one enrolled device. Its CPU time
//!    and peak resident memory are read from `/proc`.
//! 3. **The load**: `--concurrency` clients, each on its own keep-alive connection,
//!    posting captures sealed and signed before the clock starts. A receipt counts
//!    once it verifies: its checkpoint's signature (once per checkpoint, which a batch
//!    of receipts shares) and its inclusion proof (every time). A saturating phase
//!    (each client sends its next capture when the last is answered) gives the
//!    throughput; a paced phase (captures scheduled at `--paced-fraction` of that
//!    rate, latency counted from each one's scheduled time, so a stalled server is not
//!    hidden by clients that wait) gives the latency under that load.
//! 4. **The baseline**: a deliberately naive server in this process, bench code only,
//!    storing each request whole as one SQLite row (WAL, `synchronous=FULL`, one
//!    commit per request): no check, no log, no receipt. The same load drives it.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use clap::Args;
use sha2::{Digest as _, Sha256};
use vellum_archive::ports::{DeviceStore, NewDevice, SecretHash};
use vellum_archive::postgres::{self, PgStore};
use vellum_archive::sqlite::SqliteStore;
use vellum_gateway::RECORD_MEDIA_TYPE;
use vellum_protocol::header::{HeaderFields, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keyring::KeyringStatement;
use vellum_protocol::keys::{DeviceKey, generate_note_signer};
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::{self, Identity, SealedBody};
use vellum_tlog::checkpoint::VerifiedCheckpoint;
use vellum_tlog::note::{NoteSigner, NoteVerifier};
use vellum_tlog::tree::Frontier;

use crate::bench::Backend;
use crate::error::{CliError, Kind};
use crate::files::write_output;

#[derive(Debug, Args)]
pub(crate) struct CaptureArgs {
    /// Metadata backend of the gateway the benchmark starts.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Concurrent clients, each with one keep-alive connection.
    #[arg(long, default_value_t = 256)]
    concurrency: usize,
    /// Seconds of each timed phase.
    #[arg(long, default_value_t = 10)]
    seconds: u64,
    /// Plaintext bytes of each message (sealed, a capture frame is about 300 bytes more).
    #[arg(long, default_value_t = 1024)]
    body_size: usize,
    /// The paced phase's rate, as a fraction of the saturating phase's throughput
    /// (0 skips the paced phase).
    #[arg(long, default_value_t = 0.8)]
    paced_fraction: f64,
    /// Captures signed in advance per second of the saturating phase: the most it can
    /// show. Signing them takes time before the clock starts.
    #[arg(long, default_value_t = 60_000)]
    max_rate: u32,
    /// Load the running gateway this one-time enrollment bundle is for, instead of
    /// starting one: the benchmark enrolls its own device with it and seals to the
    /// gateway's keyring. Its captures stay in that archive: use a test deployment.
    #[arg(long, value_name = "FILE")]
    bundle: Option<PathBuf>,
    /// With --bundle: the gateway's URL, when not the one the bundle names.
    #[arg(long, value_name = "URL", requires = "bundle")]
    gateway: Option<String>,
    /// With --bundle: the gateway's process id, to report its CPU and memory (it must
    /// run on this machine; its peak RSS is then the process's peak since it started).
    #[arg(long, value_name = "PID", requires = "bundle")]
    gateway_pid: Option<u32>,
    /// The log level of the gateway started (`[telemetry] level`); its log goes to a
    /// file in the temporary folder.
    #[arg(long, default_value = "info")]
    log_level: String,
    /// After the load, capture one record with a body of this many MiB and report the
    /// gateway's memory growth while it does (0: skip). A gateway this run starts
    /// gets `max_capture_bytes` large enough for it.
    #[arg(long, value_name = "MIB", default_value_t = 0)]
    attachment_mib: usize,
    /// Skip the baseline server.
    #[arg(long)]
    no_baseline: bool,
    /// PostgreSQL server to create the scratch database on (`--backend postgres`).
    #[arg(
        long,
        env = "VELLUM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("bench: {e}"))
}

pub(crate) fn capture(args: &CaptureArgs) -> Result<(), CliError> {
    if args.concurrency == 0 || args.seconds == 0 || args.max_rate == 0 {
        return Err(fail("--concurrency, --seconds and --max-rate must be at least 1"));
    }
    if !["error", "warn", "info", "debug", "trace"].contains(&args.log_level.as_str()) {
        return Err(fail("--log-level is error, warn, info, debug or trace"));
    }
    if !(0.0..=1.0).contains(&args.paced_fraction) {
        return Err(fail("--paced-fraction is between 0 and 1"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(run(args))
}

/// What the device signs with: who it is and what its captures say.
pub(crate) struct Signer {
    pub(crate) key: DeviceKey,
    device_id: DeviceId,
    custodian: Custodian,
    channel: Channel,
    retention: RetentionClass,
    epoch: Epoch,
}

impl Signer {
    /// A new device of `custodian` capturing under `epoch`.
    pub(crate) fn new(
        custodian: Custodian,
        retention: RetentionClass,
        epoch: Epoch,
    ) -> Result<Self, CliError> {
        Ok(Self {
            key: DeviceKey::generate(),
            device_id: DeviceId::from_bytes(*RecordId::new_v7(crate::keys::now_ms()).as_bytes())
                .map_err(fail)?,
            custodian,
            channel: Channel::new("signal").map_err(fail)?,
            retention,
            epoch,
        })
    }
}

/// One capture ready to send: its signed header, which sealed body of the pool it
/// carries, and what its receipt must name.
pub(crate) struct Capture {
    pub(crate) header: Vec<u8>,
    pub(crate) body: usize,
    record_id: RecordId,
    header_sha256: [u8; 32],
}

/// Captures signed before the clock starts; sealed bodies come from a small pool
/// (sealing is the client's cost, and the gateway cannot tell the bodies apart).
pub(crate) struct Prepared {
    pub(crate) bodies: Vec<SealedBody>,
    pub(crate) captures: Vec<Capture>,
}

impl Prepared {
    /// The capture frame of capture `i`: the header's length, the header, the body.
    pub(crate) fn frame(&self, i: usize) -> Vec<u8> {
        let capture = &self.captures[i];
        let body = self.bodies[capture.body].as_bytes();
        let mut frame = Vec::with_capacity(4 + capture.header.len() + body.len());
        frame.extend_from_slice(&(capture.header.len() as u32).to_be_bytes());
        frame.extend_from_slice(&capture.header);
        frame.extend_from_slice(body);
        frame
    }
}

/// Seals the body pool to `recipients`.
pub(crate) fn seal_pool(
    recipients: &[seal::Recipient],
    body_size: usize,
) -> Result<Vec<SealedBody>, CliError> {
    (0..64u8)
        .map(|i| seal::seal(recipients, &vec![i; body_size]).map_err(fail))
        .collect()
}

/// Signs `count` captures with record ids from `first_ms` on (one millisecond apart,
/// so every id is new), on every core.
pub(crate) fn sign(
    signer: &Signer,
    bodies: &[SealedBody],
    first_ms: u64,
    count: usize,
) -> Result<Vec<Capture>, CliError> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    let per_thread = count.div_ceil(threads).max(1);
    let captured_at = UnixMillis(crate::keys::now_ms());
    let ranges: Vec<(usize, usize)> = (0..count)
        .step_by(per_thread)
        .map(|start| (start, (start + per_thread).min(count)))
        .collect();
    let parts = std::thread::scope(|scope| {
        let handles: Vec<_> = ranges
            .iter()
            .map(|&(start, end)| {
                scope.spawn(move || {
                    (start..end)
                        .map(|i| {
                            let body = i % bodies.len();
                            let fields = HeaderFields {
                                record_id: RecordId::new_v7(first_ms + i as u64),
                                device_id: signer.device_id,
                                custodian: signer.custodian.clone(),
                                channel: signer.channel.clone(),
                                captured_at,
                                epoch: signer.epoch,
                                retention: signer.retention.clone(),
                                body: bodies[body].digest(),
                                tokens: Vec::new(),
                            };
                            let signed = fields.sign(&signer.key).map_err(fail)?;
                            Ok(Capture {
                                header_sha256: signed.digest(),
                                header: signed.as_bytes().to_vec(),
                                body,
                                record_id: fields.record_id,
                            })
                        })
                        .collect::<Result<Vec<_>, CliError>>()
                })
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| fail("a signing thread panicked"))?)
            .collect::<Result<Vec<_>, CliError>>()
    })?;
    Ok(parts.into_iter().flatten().collect())
}

/// The CPU floor: microseconds of the gateway's unavoidable work per message, on one
/// thread, over `prepared`.
fn cpu_floor(prepared: &Prepared, key: &vellum_protocol::keys::DevicePublicKey) -> Result<f64, CliError> {
    let n = prepared.captures.len().min(20_000);
    let frames: Vec<Vec<u8>> = (0..n).map(|i| prepared.frame(i)).collect();
    let mut tree = Frontier::new();
    let started = Instant::now();
    for frame in &frames {
        let len = u32::from_be_bytes([frame[0], frame[1], frame[2], frame[3]]) as usize;
        let (header, body) = frame[4..].split_at(len);
        let header = UnverifiedHeader::parse(header)
            .and_then(|h| h.verify(key))
            .map_err(fail)?;
        let body = SealedBody::from_bytes(body.to_vec()).map_err(fail)?;
        if body.digest() != header.fields().body {
            return Err(fail("a prepared body does not match its header"));
        }
        let entry = LogEntry::RecordAppended {
            record_id: header.fields().record_id,
            header_sha256: header.digest(),
            received_at: UnixMillis(0),
        };
        tree.push(entry.leaf_hash());
    }
    Ok(started.elapsed().as_secs_f64() * 1e6 / n.max(1) as f64)
}

/// A process's CPU seconds (user and system) and peak resident set, from `/proc`.
#[derive(Clone, Copy)]
struct Usage {
    cpu_secs: f64,
    peak_rss_mib: f64,
}

/// `None` when `/proc` cannot tell (no such process, say).
fn usage(pid: &str) -> Option<Usage> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // Fields 14 and 15 (utime, stime) count after the parenthesised command name.
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks = fields.get(11)?.parse::<u64>().ok()? + fields.get(12)?.parse::<u64>().ok()?;
    Some(Usage {
        cpu_secs: ticks as f64 / rustix::param::clock_ticks_per_second() as f64,
        peak_rss_mib: memory_mib(pid, "VmHWM:")?,
    })
}

/// A memory line of `/proc/PID/status` (`VmRSS:`, `VmHWM:`), in MiB.
fn memory_mib(pid: &str, field: &str) -> Option<f64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with(field))?;
    Some(line.split_whitespace().nth(1)?.parse::<f64>().ok()? / 1024.0)
}

/// What a phase measured.
struct Phase {
    ok: u64,
    failed: u64,
    first_failure: Option<String>,
    secs: f64,
    latencies_us: Vec<u32>,
    /// None when the server's process is not known.
    server_cores: Option<f64>,
    client_cores: f64,
}

impl Phase {
    fn per_sec(&self) -> f64 {
        self.ok as f64 / self.secs.max(f64::MIN_POSITIVE)
    }

    fn percentile_ms(&self, p: f64) -> f64 {
        let n = self.latencies_us.len();
        if n == 0 {
            return 0.0;
        }
        // Nearest rank: the smallest value with at least p of them at or below it.
        let i = ((n as f64 * p).ceil() as usize).clamp(1, n) - 1;
        f64::from(self.latencies_us[i]) / 1e3
    }

    fn summary(&self) -> serde_json::Value {
        serde_json::json!({
            "per_sec": round1(self.per_sec()),
            "p50_ms": round2(self.percentile_ms(0.50)),
            "p90_ms": round2(self.percentile_ms(0.90)),
            "p99_ms": round2(self.percentile_ms(0.99)),
            "max_ms": round2(self.percentile_ms(1.0)),
            "ok": self.ok,
            "failed": self.failed,
            "seconds": round2(self.secs),
            "server_cores": self.server_cores.map(round2),
            "load_generator_cores": round2(self.client_cores),
        })
    }
}

/// Says how many requests of a phase failed, and the first reason.
fn failures(name: &str, phase: &Phase) {
    if let Some(why) = &phase.first_failure {
        println!("  {name}: {} requests failed; the first: {why}", phase.failed);
    }
}

fn round1(x: f64) -> f64 {
    (x * 10.0).round() / 10.0
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// How a phase sends.
#[derive(Clone, Copy)]
enum Pace {
    /// Each client sends its next capture when the last one is answered.
    Saturate,
    /// Capture `i` is due `i / rate` seconds after the start.
    Rate(f64),
}

/// What answers count: a verified receipt, or (for the baseline) any 200.
#[derive(Clone)]
enum Check {
    Receipt(Arc<ReceiptCheck>),
    Stored,
}

/// Verifies receipts against the log key, remembering the last checkpoints that
/// verified (the receipts of one batch share one).
struct ReceiptCheck {
    log_key: NoteVerifier,
    known: Mutex<Vec<VerifiedCheckpoint>>,
}

impl ReceiptCheck {
    fn verify(&self, text: &[u8], capture: &Capture) -> Result<(), String> {
        let receipt = Receipt::parse(text).map_err(|e| e.to_string())?;
        let known = self
            .known
            .lock()
            .ok()
            .and_then(|k| k.iter().find(|c| c.note() == receipt.checkpoint_note()).cloned());
        if let Some(checkpoint) = known {
            return receipt
                .verify_in(&checkpoint, &capture.record_id, &capture.header_sha256)
                .map(drop)
                .map_err(|e| e.to_string());
        }
        let verified = receipt
            .verify(&self.log_key, &capture.record_id, &capture.header_sha256)
            .map_err(|e| e.to_string())?;
        if let Ok(mut known) = self.known.lock() {
            if known.len() >= 16 {
                known.remove(0);
            }
            known.push(verified.checkpoint);
        }
        Ok(())
    }
}

impl Check {
    fn receipts(log_key: NoteVerifier) -> Self {
        Check::Receipt(Arc::new(ReceiptCheck {
            log_key,
            known: Mutex::new(Vec::new()),
        }))
    }
}

/// Where the load goes.
struct Target {
    url: String,
    credential: String,
    pid: Option<String>,
    check: Check,
}

/// Sends captures `range` of `prepared` to `target` for at most `seconds`.
async fn phase(
    http: &reqwest::Client,
    target: &Target,
    prepared: &Arc<Prepared>,
    range: std::ops::Range<usize>,
    concurrency: usize,
    seconds: f64,
    pace: Pace,
) -> Result<Phase, CliError> {
    let next = Arc::new(AtomicU64::new(range.start as u64));
    let (ok, failed) = (Arc::new(AtomicU64::new(0)), Arc::new(AtomicU64::new(0)));
    let first_failure = Arc::new(Mutex::new(None::<String>));
    let server_before = target.pid.as_deref().and_then(usage);
    let client_before = usage("self");
    let started = Instant::now();
    let deadline = started + Duration::from_secs_f64(seconds);
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..concurrency {
        let (http, prepared, next, ok, failed, first_failure) = (
            http.clone(),
            prepared.clone(),
            next.clone(),
            ok.clone(),
            failed.clone(),
            first_failure.clone(),
        );
        let (url, credential, check, end) = (
            target.url.clone(),
            target.credential.clone(),
            target.check.clone(),
            range.end,
        );
        let first = range.start;
        tasks.spawn(async move {
            let mut latencies = Vec::new();
            loop {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                if i >= end {
                    break;
                }
                let due = match pace {
                    Pace::Saturate => Instant::now(),
                    Pace::Rate(rate) => started + Duration::from_secs_f64((i - first) as f64 / rate),
                };
                if due >= deadline {
                    break;
                }
                tokio::time::sleep_until(due.into()).await;
                let answer = http
                    .post(&url)
                    .bearer_auth(&credential)
                    .header("content-type", RECORD_MEDIA_TYPE)
                    .body(prepared.frame(i))
                    .send()
                    .await;
                let outcome = match answer {
                    Ok(response) if response.status().is_success() => match &check {
                        Check::Stored => Ok(()),
                        Check::Receipt(check) => match response.bytes().await {
                            Ok(text) => check.verify(&text, &prepared.captures[i]),
                            Err(e) => Err(e.to_string()),
                        },
                    },
                    Ok(response) => {
                        let status = response.status();
                        Err(format!("{status}: {}", response.text().await.unwrap_or_default()))
                    }
                    Err(e) => Err(e.to_string()),
                };
                let took = due.elapsed();
                match outcome {
                    Ok(()) => {
                        ok.fetch_add(1, Ordering::Relaxed);
                        latencies.push(u32::try_from(took.as_micros()).unwrap_or(u32::MAX));
                    }
                    Err(why) => {
                        failed.fetch_add(1, Ordering::Relaxed);
                        if let Ok(mut first) = first_failure.lock() {
                            first.get_or_insert(why);
                        }
                    }
                }
                // Saturating: stop at the deadline. Paced: every capture due before it
                // is sent, so a stall near the end shows in the latencies.
                if matches!(pace, Pace::Saturate) && Instant::now() >= deadline {
                    break;
                }
            }
            latencies
        });
    }
    let mut latencies_us = Vec::new();
    while let Some(done) = tasks.join_next().await {
        latencies_us.extend(done.map_err(fail)?);
    }
    let secs = started.elapsed().as_secs_f64();
    latencies_us.sort_unstable();
    let cores = |before: Option<Usage>, after: Option<Usage>| {
        let (before, after) = (before?, after?);
        Some((after.cpu_secs - before.cpu_secs) / secs)
    };
    let server_cores = match target.pid.as_deref() {
        Some(pid) => Some(
            cores(server_before, usage(pid))
                .ok_or_else(|| fail(format!("the CPU time of process {pid} could not be read")))?,
        ),
        None => None,
    };
    let first_failure = first_failure.lock().ok().and_then(|mut f| f.take());
    Ok(Phase {
        ok: ok.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        first_failure,
        secs,
        latencies_us,
        server_cores,
        client_cores: cores(client_before, usage("self")).unwrap_or(0.0),
    })
}

/// A gateway started as a child process on a fresh deployment; stopped when dropped,
/// so no error path leaves it running.
struct Gateway {
    child: std::process::Child,
    log: std::path::PathBuf,
}

impl Drop for Gateway {
    fn drop(&mut self) {
        self.terminate();
    }
}

impl Gateway {
    fn pid(&self) -> String {
        self.child.id().to_string()
    }

    /// Stops it (SIGTERM, as an operator would) and waits; returns its peak RSS.
    fn stop(mut self) -> Option<f64> {
        let peak = usage(&self.pid()).map(|u| u.peak_rss_mib);
        self.terminate();
        peak
    }

    fn terminate(&mut self) {
        if let Ok(None) = self.child.try_wait()
            && let Some(pid) = rustix::process::Pid::from_raw(self.child.id() as i32)
        {
            let _ = rustix::process::kill_process(pid, rustix::process::Signal::TERM);
            let _ = self.child.wait();
        }
    }

    /// The end of its log, to explain a failure.
    fn log_tail(&self) -> String {
        let text = std::fs::read_to_string(&self.log).unwrap_or_default();
        let lines: Vec<&str> = text.lines().collect();
        lines[lines.len().saturating_sub(20)..].join("\n")
    }
}

/// Writes a deployment into `dir` with `signer`'s device enrolled (credential
/// returned) and starts `vellum serve` on it.
async fn start_gateway(
    dir: &Path,
    database_url: &str,
    signer: &Signer,
    args: &CaptureArgs,
) -> Result<(Gateway, Target), CliError> {
    let now = crate::keys::now_ms();
    let (org, note) = bench_keyring(signer.epoch, now)?;
    let log = generate_note_signer("bench.vellum.invalid/log").map_err(fail)?;
    write_output(Some(&dir.join("log.skey")), log.to_skey().as_bytes())?;
    write_output(Some(&dir.join("keyring.note")), note.as_bytes())?;

    let credential = [0x5a_u8; 32];
    if database_url.starts_with("sqlite:") {
        let store = SqliteStore::open(database_url).await.map_err(fail)?;
        enroll(&store, signer, &credential, now).await?;
    } else {
        let store = PgStore::open(database_url).await.map_err(fail)?;
        enroll(&store, signer, &credential, now).await?;
    }
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(fail)?
        .port();
    let config = format!(
        "listen = \"127.0.0.1:{port}\"\n\
         log_key_file = \"log.skey\"\n\
         keyring_file = \"keyring.note\"\n\
         org_key = \"{org_key}\"\n\
         \n\
         [database]\n\
         url = \"{database_url}\"\n\
         \n\
         [blobs]\n\
         folder = \"blobs\"\n\
         \n\
         [telemetry]\n\
         level = \"{log_level}\"\n",
        org_key = org.verifier(),
        log_level = args.log_level,
    );
    // Room for the attachment, if one is to be captured: a frame is its body and at
    // most a few KiB more.
    let config = match args.attachment_mib {
        0 => config,
        mib => {
            let bytes = (mib << 20) + (1 << 20);
            format!(
                "{config}\n[limits]\nmax_capture_bytes = {bytes}\nmax_buffered_bytes = {}\n",
                bytes.max(1 << 30)
            )
        }
    };
    let config_path = dir.join("vellum.toml");
    write_output(Some(&config_path), config.as_bytes())?;
    let log_path = dir.join("gateway.log");
    let log_file = std::fs::File::create(&log_path).map_err(fail)?;
    let child = std::process::Command::new(std::env::current_exe().map_err(fail)?)
        .arg("serve")
        .arg("--config")
        .arg(&config_path)
        .stdin(std::process::Stdio::null())
        .stdout(log_file.try_clone().map_err(fail)?)
        .stderr(log_file)
        .spawn()
        .map_err(fail)?;
    let mut gateway = Gateway { child, log: log_path };
    let base = format!("http://127.0.0.1:{port}");
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(2))
        .build()
        .map_err(fail)?;
    let ready = Instant::now();
    loop {
        if let Ok(Some(status)) = gateway.child.try_wait() {
            return Err(fail(format!(
                "the gateway exited ({status}):\n{}",
                gateway.log_tail()
            )));
        }
        let answer = http.get(format!("{base}/readyz")).send().await;
        if answer.is_ok_and(|r| r.status().is_success()) {
            break;
        }
        if ready.elapsed() > Duration::from_secs(60) {
            let tail = gateway.log_tail();
            gateway.stop();
            return Err(fail(format!("the gateway was not ready within 60 s:\n{tail}")));
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let credential_text = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential)
    };
    let target = Target {
        url: format!("{base}/v1/records"),
        credential: credential_text,
        pid: Some(gateway.pid()),
        check: Check::receipts(log.verifier()),
    };
    Ok((gateway, target))
}

/// A fresh organisation key and the keyring note of `epoch` it signed, valid for a day
/// from `now`, sealing to recipients nobody holds.
pub(crate) fn bench_keyring(epoch: Epoch, now: u64) -> Result<(NoteSigner, String), CliError> {
    let org = generate_note_signer("bench.vellum.invalid/org").map_err(fail)?;
    let statement = KeyringStatement {
        epoch,
        archive: Identity::generate().to_public(),
        escrow: Identity::generate().to_public(),
        valid_from: UnixMillis(now - 60_000),
        valid_until: UnixMillis(now + 86_400_000),
    };
    let note = statement.sign(&org).map_err(fail)?;
    Ok((org, note))
}

/// Enrolls `signer`'s device with `credential` directly in the store.
pub(crate) async fn enroll<S: DeviceStore>(
    store: &S,
    signer: &Signer,
    credential: &[u8; 32],
    now: u64,
) -> Result<(), CliError> {
    let token = SecretHash([1; 32]);
    store
        .add_enrollment(
            &token,
            &signer.custodian,
            &signer.retention,
            UnixMillis(now + 60_000),
        )
        .await
        .map_err(fail)?;
    let device = NewDevice {
        device_id: signer.device_id,
        public_key: signer.key.public(),
        credential: SecretHash(Sha256::digest(credential).into()),
    };
    store
        .enroll(&token, &device, UnixMillis(now))
        .await
        .map_err(fail)?;
    Ok(())
}

/// The naive baseline server: each request stored whole as one SQLite row, one commit
/// per request, nothing checked. Bench code only; it listens on loopback for the
/// duration of its phase.
mod baseline {
    use std::sync::{Arc, Mutex};

    use axum::body::Bytes;
    use axum::extract::State;
    use axum::http::StatusCode;
    use axum::routing::post;

    use super::{CliError, fail};

    type Db = Arc<Mutex<rusqlite::Connection>>;

    async fn store(State(db): State<Db>, body: Bytes) -> StatusCode {
        let stored = tokio::task::spawn_blocking(move || {
            let db = db.lock().map_err(|_| ())?;
            db.execute("INSERT INTO requests (body) VALUES (?1)", [body.as_ref()])
                .map_err(drop)
        })
        .await;
        match stored {
            Ok(Ok(_)) => StatusCode::OK,
            _ => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }

    /// A running baseline server; dropped, it stops.
    pub(super) struct Server {
        pub(super) url: String,
        stop: Option<tokio::sync::oneshot::Sender<()>>,
        thread: Option<std::thread::JoinHandle<()>>,
    }

    impl Drop for Server {
        fn drop(&mut self) {
            if let Some(stop) = self.stop.take() {
                let _ = stop.send(());
            }
            if let Some(thread) = self.thread.take() {
                let _ = thread.join();
            }
        }
    }

    /// Starts the server on its own runtime and threads, storing into `path`.
    pub(super) fn start(path: &std::path::Path) -> Result<Server, CliError> {
        let db = rusqlite::Connection::open(path).map_err(fail)?;
        db.execute_batch(
            "PRAGMA journal_mode = WAL; PRAGMA synchronous = FULL;
             CREATE TABLE requests (id INTEGER PRIMARY KEY, body BLOB NOT NULL);",
        )
        .map_err(fail)?;
        let db: Db = Arc::new(Mutex::new(db));
        let listener = std::net::TcpListener::bind("127.0.0.1:0").map_err(fail)?;
        listener.set_nonblocking(true).map_err(fail)?;
        let url = format!("http://{}/v1/records", listener.local_addr().map_err(fail)?);
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let thread = std::thread::spawn(move || {
            let Ok(runtime) = tokio::runtime::Builder::new_multi_thread().enable_all().build() else {
                return;
            };
            runtime.block_on(async move {
                let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                    return;
                };
                let app = axum::Router::new()
                    .route("/v1/records", post(store))
                    .with_state(db);
                let _ = axum::serve(listener, app)
                    .with_graceful_shutdown(async {
                        let _ = stopped.await;
                    })
                    .await;
            });
        });
        Ok(Server {
            url,
            stop: Some(stop),
            thread: Some(thread),
        })
    }
}

/// What the load runs against.
struct Setup {
    backend: String,
    signer: Signer,
    /// Who the bodies are sealed to.
    recipients: Vec<seal::Recipient>,
    target: Target,
    /// The gateway this run started, if it started one.
    started: Option<Gateway>,
    /// The scratch PostgreSQL database to drop afterwards.
    scratch_db: Option<String>,
}

/// A fresh deployment in `dir`, served by a `vellum serve` this run starts.
async fn local(args: &CaptureArgs, dir: &Path) -> Result<Setup, CliError> {
    let signer = Signer::new(
        Custodian::new("bench@agency.example").map_err(fail)?,
        RetentionClass::new("finra-6y").map_err(fail)?,
        Epoch(1),
    )?;
    let (backend, database_url, scratch_db) = match args.backend {
        Backend::Sqlite => (
            "sqlite+folder",
            format!("sqlite://{}", dir.join("meta.db").display()),
            None,
        ),
        Backend::Postgres => {
            let name = format!("vellum_bench_capture_{}", std::process::id());
            let url = postgres::create_database(&args.postgres_url, &name)
                .await
                .map_err(fail)?;
            ("postgres+folder", url, Some(name))
        }
    };
    match start_gateway(dir, &database_url, &signer, args).await {
        Ok((gateway, target)) => Ok(Setup {
            backend: backend.into(),
            signer,
            recipients: vec![Identity::generate().to_public()],
            target,
            started: Some(gateway),
            scratch_db,
        }),
        Err(e) => {
            if let Some(name) = scratch_db {
                let _ = postgres::drop_database(&args.postgres_url, &name).await;
            }
            Err(e)
        }
    }
}

/// A running gateway, through a one-time enrollment bundle: its keyring, checked
/// against the bundle's organisation key, and a device enrolled over HTTP.
async fn remote(args: &CaptureArgs, bundle: &Path) -> Result<Setup, CliError> {
    let bundle = vellum_protocol::bundle::Bundle::from_json(&crate::files::read_small(bundle, 64 * 1024)?)
        .map_err(|e| fail(format!("{}: {e}", bundle.display())))?;
    let base = args
        .gateway
        .clone()
        .unwrap_or_else(|| bundle.gateway.clone())
        .trim_end_matches('/')
        .to_owned();
    if !vellum_gateway::auth::oidc::https_or_loopback(&base) {
        return Err(fail(
            "the gateway must be an https:// URL (plain http:// only to this machine): the \
             enrollment token and the device credential cross it",
        ));
    }
    // Never follow a redirect: it would carry the token and the credential elsewhere.
    let http = reqwest::Client::builder()
        .redirect(reqwest::redirect::Policy::none())
        .timeout(Duration::from_secs(30))
        .build()
        .map_err(fail)?;
    let answer = |what: &'static str| move |e: reqwest::Error| fail(format!("{what}: {e}"));
    let note = http
        .get(format!("{base}/v1/keyring"))
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(answer("keyring"))?
        .bytes()
        .await
        .map_err(answer("keyring"))?;
    let keyring =
        vellum_protocol::keyring::verify(&note, &bundle.org_key, None, UnixMillis(crate::keys::now_ms()))
            .map_err(|e| fail(format!("the gateway's keyring: {e}")))?;
    let statement = keyring.statement();
    let signer = Signer::new(
        bundle.custodian.clone(),
        bundle.retention.clone(),
        statement.epoch,
    )?;
    let public_key = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(signer.key.public().as_bytes())
    };
    let request = serde_json::json!({
        "token": bundle.token.as_str(),
        "device_id": signer.device_id.to_string(),
        "public_key": public_key,
    });
    let enrolled = http
        .post(format!("{base}/v1/devices"))
        .header("content-type", "application/json")
        .body(request.to_string())
        .send()
        .await
        .and_then(reqwest::Response::error_for_status)
        .map_err(answer("enrollment"))?
        .bytes()
        .await
        .map_err(answer("enrollment"))?;
    let enrolled: serde_json::Value =
        serde_json::from_slice(&enrolled).map_err(|e| fail(format!("the enrollment answer: {e}")))?;
    let credential = enrolled["credential"]
        .as_str()
        .ok_or_else(|| fail("the enrollment answer has no credential"))?
        .to_owned();
    Ok(Setup {
        backend: format!("remote {base}"),
        recipients: vec![statement.archive.clone(), statement.escrow.clone()],
        signer,
        target: Target {
            url: format!("{base}/v1/records"),
            credential,
            pid: args.gateway_pid.map(|pid| pid.to_string()),
            check: Check::receipts(bundle.log_key.clone()),
        },
        started: None,
        scratch_db: None,
    })
}

async fn run(args: &CaptureArgs) -> Result<(), CliError> {
    let scratch = crate::files::private_tempdir().map_err(fail)?;
    let mut setup = match &args.bundle {
        Some(bundle) => remote(args, bundle).await?,
        None => local(args, scratch.path()).await?,
    };
    let outcome = load(args, &setup).await;
    let peak_rss_mib = match setup.started.take() {
        Some(gateway) => gateway.stop(),
        None => setup
            .target
            .pid
            .as_deref()
            .and_then(usage)
            .map(|u| u.peak_rss_mib),
    };
    if let Some(name) = &setup.scratch_db
        && let Err(e) = postgres::drop_database(&args.postgres_url, name).await
    {
        eprintln!("bench: warning: the scratch database {name} was not dropped: {e}");
    }
    let (mut measured, prepared) = outcome?;
    measured.peak_rss_mib = peak_rss_mib;
    let baseline = if args.no_baseline {
        None
    } else {
        Some(run_baseline(args, &scratch.path().join("baseline.db"), &prepared).await?)
    };
    report(args, &setup.backend, &measured, baseline.as_ref())
}

/// The same load against the naive baseline server.
async fn run_baseline(args: &CaptureArgs, db: &Path, prepared: &Arc<Prepared>) -> Result<Phase, CliError> {
    eprintln!("bench: the naive baseline, {} s…", args.seconds);
    let server = baseline::start(db)?;
    let target = Target {
        url: server.url.clone(),
        credential: String::new(),
        pid: None,
        check: Check::Stored,
    };
    phase(
        &client(args.concurrency)?,
        &target,
        prepared,
        0..prepared.captures.len(),
        args.concurrency,
        args.seconds as f64,
        Pace::Saturate,
    )
    .await
}

/// What the load measured.
struct Measured {
    /// The large capture, when one was asked for.
    attachment: Option<serde_json::Value>,
    frame_bytes: usize,
    floor_us: f64,
    saturated: Phase,
    paced: Option<(f64, Phase)>,
    peak_rss_mib: Option<f64>,
}

/// Captures one record whose sealed body is `mib` MiB while sampling the gateway's
/// resident memory every 5 ms: what a large attachment costs the gateway.
async fn attachment(
    http: &reqwest::Client,
    setup: &Setup,
    pool: &[SealedBody],
    mib: usize,
) -> Result<serde_json::Value, CliError> {
    eprintln!("bench: one capture of {mib} MiB…");
    let body = seal::seal(&setup.recipients, &vec![0x61; mib << 20]).map_err(fail)?;
    let mut bodies = pool.to_vec();
    bodies.push(body);
    let first_ms = crate::keys::now_ms() + 10_000_000;
    let mut captures = sign(&setup.signer, &bodies[bodies.len() - 1..], first_ms, 1)?;
    captures[0].body = bodies.len() - 1;
    let prepared = Prepared { bodies, captures };
    let frame = prepared.frame(0);
    let resident = |pid: &str| memory_mib(pid, "VmRSS:");
    let pid = setup.target.pid.clone();
    let before = pid.as_deref().and_then(resident);
    let peak = Arc::new(Mutex::new(before.unwrap_or(0.0)));
    let sampling = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let sampler = tokio::spawn({
        let (pid, peak, sampling) = (pid.clone(), peak.clone(), sampling.clone());
        async move {
            while sampling.load(Ordering::Relaxed) {
                if let (Some(now), Ok(mut peak)) = (pid.as_deref().and_then(resident), peak.lock()) {
                    *peak = peak.max(now);
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        }
    });
    let started = Instant::now();
    let answer = http
        .post(&setup.target.url)
        .bearer_auth(&setup.target.credential)
        .header("content-type", RECORD_MEDIA_TYPE)
        .body(frame)
        .send()
        .await
        .map_err(fail)?;
    let status = answer.status().as_u16();
    let text = answer.bytes().await.map_err(fail)?;
    let secs = started.elapsed().as_secs_f64();
    sampling.store(false, Ordering::Relaxed);
    let _ = sampler.await;
    let verified = match (&setup.target.check, status) {
        (Check::Receipt(check), 200) => check.verify(&text, &prepared.captures[0]).is_ok(),
        _ => false,
    };
    let peak = peak.lock().map_or(0.0, |p| *p);
    Ok(serde_json::json!({
        "mib": mib,
        "status": status,
        "receipt_verified": verified,
        "seconds": round2(secs),
        "gateway_rss_before_mib": before.map(round1),
        "gateway_rss_peak_mib": before.map(|_| round1(peak)),
        "gateway_rss_growth_mib": before.map(|b| round1(peak - b)),
    }))
}

fn client(concurrency: usize) -> Result<reqwest::Client, CliError> {
    reqwest::Client::builder()
        .pool_max_idle_per_host(concurrency)
        .build()
        .map_err(fail)
}

/// Signs the captures, measures the CPU floor, then runs the phases against the
/// setup's target; returns what it measured and the captures (for the baseline).
async fn load(args: &CaptureArgs, setup: &Setup) -> Result<(Measured, Arc<Prepared>), CliError> {
    let signer = &setup.signer;
    let bodies = seal_pool(&setup.recipients, args.body_size)?;
    let warmup = args.max_rate as usize;
    let total = warmup + args.max_rate as usize * args.seconds as usize;
    eprintln!(
        "bench: signing {total} captures of {} plaintext bytes…",
        args.body_size
    );
    let first_ms = crate::keys::now_ms();
    let captures = sign(signer, &bodies, first_ms, total)?;
    let mut prepared = Arc::new(Prepared { bodies, captures });
    let frame_bytes = prepared.frame(0).len();
    eprintln!("bench: the CPU floor…");
    let floor_us = cpu_floor(&prepared, &signer.key.public())?;

    let (http, target) = (client(args.concurrency)?, &setup.target);
    eprintln!("bench: warming up, 1 s…");
    phase(
        &http,
        target,
        &prepared,
        0..warmup,
        args.concurrency,
        1.0,
        Pace::Saturate,
    )
    .await?;
    eprintln!(
        "bench: saturating, {} s, {} clients…",
        args.seconds, args.concurrency
    );
    let saturated = phase(
        &http,
        target,
        &prepared,
        warmup..total,
        args.concurrency,
        args.seconds as f64,
        Pace::Saturate,
    )
    .await?;
    if let Some(why) = &saturated.first_failure {
        return Err(fail(format!(
            "{} captures failed; the first: {why}",
            saturated.failed
        )));
    }
    let rate = saturated.per_sec() * args.paced_fraction;
    let paced = if rate >= 1.0 {
        let count = (rate * args.seconds as f64).ceil() as usize;
        eprintln!("bench: paced at {rate:.0}/s, {} s…", args.seconds);
        let more = sign(signer, &prepared.bodies, first_ms + total as u64, count)?;
        let at = prepared.captures.len();
        Arc::get_mut(&mut prepared)
            .ok_or_else(|| fail("the prepared captures are still shared"))?
            .captures
            .extend(more);
        let phase = phase(
            &http,
            target,
            &prepared,
            at..at + count,
            args.concurrency,
            args.seconds as f64,
            Pace::Rate(rate),
        )
        .await?;
        Some((rate, phase))
    } else {
        None
    };
    let attachment = match args.attachment_mib {
        0 => None,
        mib => Some(attachment(&http, setup, &prepared.bodies, mib).await?),
    };
    let measured = Measured {
        attachment,
        frame_bytes,
        floor_us,
        saturated,
        paced,
        peak_rss_mib: None,
    };
    Ok((measured, prepared))
}

fn report(
    args: &CaptureArgs,
    backend: &str,
    measured: &Measured,
    baseline: Option<&Phase>,
) -> Result<(), CliError> {
    let (frame_bytes, floor_us) = (measured.frame_bytes, measured.floor_us);
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let floor_per_sec = cores as f64 * 1e6 / floor_us;
    let s = &measured.saturated;
    let rate = s.per_sec();
    let baseline_per_sec = baseline.map(Phase::per_sec);
    let json = serde_json::json!({
        "backend": backend,
        "concurrency": args.concurrency,
        "seconds": args.seconds,
        "body_size": args.body_size,
        "frame_bytes": frame_bytes,
        "receipts_per_sec": round1(rate),
        "p50_ms": round2(s.percentile_ms(0.50)),
        "p90_ms": round2(s.percentile_ms(0.90)),
        "p99_ms": round2(s.percentile_ms(0.99)),
        "max_ms": round2(s.percentile_ms(1.0)),
        "failed": s.failed,
        "gateway_cores": s.server_cores.map(round2),
        "gateway_cpu_us_per_receipt": s.server_cores.map(|c| round1(c * 1e6 / rate.max(f64::MIN_POSITIVE))),
        "load_generator_cpu_us_per_receipt": round1(s.client_cores * 1e6 / rate.max(f64::MIN_POSITIVE)),
        "load_generator_cores": round2(s.client_cores),
        "peak_rss_mib": measured.peak_rss_mib.map(round1),
        "paced": measured.paced.as_ref().map(|(rate, p)| {
            let mut summary = p.summary();
            summary["target_per_sec"] = round1(*rate).into();
            summary
        }),
        "baseline_per_sec": baseline_per_sec.map(round1),
        // The baseline server runs in this process: its CPU is in the process's.
        "baseline": baseline.map(|b| {
            let mut summary = b.summary();
            if let Some(fields) = summary.as_object_mut()
                && let Some(cores) = fields.remove("load_generator_cores")
            {
                fields.remove("server_cores");
                fields.insert("server_and_load_generator_cores".into(), cores);
            }
            summary
        }),
        "ratio_to_baseline": baseline_per_sec.map(|b| round2(rate / b.max(f64::MIN_POSITIVE))),
        "attachment": measured.attachment,
        "floor_us_per_message": round2(floor_us),
        "floor_per_sec": round1(floor_per_sec),
        "fraction_of_floor": round2(rate / floor_per_sec),
    });
    if args.json {
        println!("{json}");
        return Ok(());
    }
    println!(
        "{backend}: {} clients, {} s, {frame_bytes}-byte captures ({} plaintext bytes)",
        args.concurrency, args.seconds, args.body_size
    );
    println!(
        "  verified receipts   {rate:.0}/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        s.percentile_ms(0.50),
        s.percentile_ms(0.90),
        s.percentile_ms(0.99),
        s.percentile_ms(1.0)
    );
    let known = |value: Option<f64>, unit: &str| {
        value.map_or_else(|| "not measured".to_owned(), |v| format!("{v:.2} {unit}"))
    };
    println!(
        "  gateway             {}, peak RSS {}; load generator {:.2} cores",
        known(s.server_cores, "cores"),
        known(measured.peak_rss_mib, "MiB"),
        s.client_cores
    );
    if let Some((target, p)) = &measured.paced {
        println!(
            "  paced at {target:.0}/s    {:.0}/s answered; p50 {:.2} ms, p99 {:.2} ms (from each capture's scheduled time)",
            p.per_sec(),
            p.percentile_ms(0.50),
            p.percentile_ms(0.99)
        );
        failures("paced", p);
    }
    if let (Some(b), Some(per_sec)) = (baseline, baseline_per_sec) {
        println!(
            "  naive baseline      {per_sec:.0}/s (p99 {:.2} ms): Vellum does {:.2}× its rate",
            b.percentile_ms(0.99),
            rate / per_sec.max(f64::MIN_POSITIVE)
        );
        failures("baseline", b);
    }
    if let Some(a) = &measured.attachment {
        println!(
            "  one {} MiB capture  status {}, receipt verified: {}, {} s; gateway RSS {} → {} MiB (growth {} MiB)",
            a["mib"],
            a["status"],
            a["receipt_verified"],
            a["seconds"],
            a["gateway_rss_before_mib"],
            a["gateway_rss_peak_mib"],
            a["gateway_rss_growth_mib"]
        );
    }
    println!(
        "  CPU floor           {floor_us:.1} µs a message on one core: {floor_per_sec:.0}/s on {} cores; Vellum reaches {:.2} of it",
        std::thread::available_parallelism().map_or(1, |n| n.get()),
        rate / floor_per_sec
    );
    Ok(())
}
