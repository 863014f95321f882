//! `vellum bench storage`: appends per second and latency of the archive's append path.
//!
//! Everything a client would do before sending (sealing, signing, header verification)
//! happens before the clock starts; what is timed is `Archive::append` end to end:
//! blob write, tree update, checkpoint signature, database commit, receipt.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use clap::{Args, ValueEnum};
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::ports::{BlobStore, LogStore};
use vellum_archive::postgres::{self, PgStore};
use vellum_archive::sqlite::SqliteStore;
use vellum_archive::{Archive, Submission};
use vellum_protocol::header::UnverifiedHeader;
use vellum_protocol::ids::{Custodian, Epoch, RetentionClass};
use vellum_protocol::keys::generate_note_signer;
use vellum_protocol::seal::Identity;
use vellum_tlog::note::NoteSigner;

use crate::error::{CliError, Kind};

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Backend {
    /// SQLite (WAL, synchronous=FULL) and a local blob folder.
    Sqlite,
    /// PostgreSQL and a local blob folder.
    Postgres,
}

#[derive(Debug, Args)]
pub(crate) struct StorageArgs {
    /// Metadata backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Appends to time.
    #[arg(long, default_value_t = 100_000)]
    records: usize,
    /// Concurrent writers.
    #[arg(long, default_value_t = 512)]
    concurrency: usize,
    /// Plaintext bytes per record (sealed size is this plus about 200).
    #[arg(long, default_value_t = 1035)]
    body_size: usize,
    /// PostgreSQL server to create a scratch database on.
    #[arg(
        long,
        env = "VELLUM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Append to this existing PostgreSQL database instead of a scratch one, which
    /// several processes can do at once (each with its own `--dir`, all holding the
    /// same `log.skey`).
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Folder for the data (default: a temporary folder, removed afterwards). A folder
    /// that exists is reopened: its log key is kept in `log.skey` (mode 0600), so runs
    /// append to the same log.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// Append one line per resolved append to this file: the record id, a space and the
    /// receipt in base64. Used by the crash test to know what was acknowledged.
    #[arg(long, value_name = "FILE")]
    receipts: Option<PathBuf>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("bench: {e}"))
}

pub(crate) fn storage(args: &StorageArgs) -> Result<(), CliError> {
    if args.records == 0 || args.concurrency == 0 {
        return Err(CliError::new(
            Kind::Other,
            "--records and --concurrency must be at least 1",
        ));
    }
    if args.database.is_some() && args.backend != Backend::Postgres {
        return Err(CliError::new(Kind::Other, "--database needs --backend postgres"));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(run(args))
}

/// Cuts a receipt log back to its last whole line: a run killed while writing a line
/// leaves part of it, which the next run's first line must not continue.
fn drop_partial_line(path: &Path) -> Result<(), CliError> {
    let Ok(bytes) = std::fs::read(path) else {
        return Ok(());
    };
    let whole = bytes.iter().rposition(|b| *b == b'\n').map_or(0, |i| i + 1);
    if whole < bytes.len() {
        let file = std::fs::OpenOptions::new().write(true).open(path).map_err(fail)?;
        file.set_len(whole as u64).map_err(fail)?;
    }
    Ok(())
}

async fn run(args: &StorageArgs) -> Result<(), CliError> {
    let scratch = crate::files::private_tempdir().map_err(fail)?;
    let dir = args.dir.clone().unwrap_or_else(|| scratch.path().to_owned());
    let blobs = LocalBlobStore::open(&dir.join("blobs")).map_err(fail)?;
    let signer = log_signer(args.dir.as_deref())?;
    let receipts = match &args.receipts {
        Some(path) => {
            drop_partial_line(path)?;
            Some(Arc::new(std::sync::Mutex::new(
                std::fs::OpenOptions::new()
                    .create(true)
                    .append(true)
                    .open(path)
                    .map_err(fail)?,
            )))
        }
        None => None,
    };
    eprintln!("bench: preparing {} sealed, signed records…", args.records);
    let submissions = prepare(args.records, args.body_size)?;
    let sealed_len = submissions.first().map_or(0, |s| s.body.digest().len);
    let report = match args.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join("meta.db").display());
            let log = SqliteStore::open(&url).await.map_err(fail)?;
            measure(log, blobs, signer, submissions, args.concurrency, receipts).await?
        }
        Backend::Postgres if args.database.is_some() => {
            let url = args.database.as_deref().unwrap_or_default();
            let log = PgStore::open(url).await.map_err(fail)?;
            measure(log, blobs, signer, submissions, args.concurrency, receipts).await?
        }
        Backend::Postgres => {
            let name = format!("vellum_bench_{}", std::process::id());
            let url = postgres::create_database(&args.postgres_url, &name)
                .await
                .map_err(fail)?;
            let outcome = async {
                let log = PgStore::open(&url).await.map_err(fail)?;
                measure(log, blobs, signer, submissions, args.concurrency, receipts).await
            }
            .await;
            postgres::drop_database(&args.postgres_url, &name)
                .await
                .map_err(fail)?;
            outcome?
        }
    };
    let backend = match args.backend {
        Backend::Sqlite => "sqlite+folder",
        Backend::Postgres => "postgres+folder",
    };
    if args.json {
        let json = serde_json::json!({
            "backend": backend,
            "records": args.records,
            "concurrency": args.concurrency,
            "sealed_bytes": sealed_len,
            "appends_per_sec": report.per_sec,
            "p50_ms": report.p50,
            "p90_ms": report.p90,
            "p99_ms": report.p99,
            "max_ms": report.max,
            "checkpoints": report.checkpoints,
        });
        println!("{json}");
    } else {
        println!(
            "{backend}: {} appends of {sealed_len}-byte sealed records, {} writers\n\
             {:.0} appends/s; latency p50 {:.2} ms, p90 {:.2} ms, p99 {:.2} ms, max {:.2} ms; {} checkpoints (mean batch {:.0})",
            args.records,
            args.concurrency,
            report.per_sec,
            report.p50,
            report.p90,
            report.p99,
            report.max,
            report.checkpoints,
            args.records as f64 / report.checkpoints.max(1) as f64
        );
    }
    Ok(())
}

/// Sealed bodies are reused from a small pool (sealing is the client's cost, not the
/// archive's); every header is distinct and signed.
fn prepare(records: usize, body_size: usize) -> Result<Vec<Submission>, CliError> {
    use crate::bench_capture::{Signer, seal_pool, sign};
    let signer = Signer::new(
        Custodian::new("bench@agency.example").map_err(fail)?,
        RetentionClass::new("finra-6y").map_err(fail)?,
        Epoch(1),
    )?;
    let bodies = seal_pool(&[Identity::generate().to_public()], body_size)?;
    sign(&signer, &bodies, crate::keys::now_ms(), records)?
        .into_iter()
        .map(|capture| {
            let header = UnverifiedHeader::parse(&capture.header)
                .and_then(|h| h.verify(&signer.key.public()))
                .map_err(fail)?;
            Ok(Submission {
                header,
                body: bodies[capture.body].clone().into(),
            })
        })
        .collect()
}

/// One line, one `write`: a process killed mid-run leaves whole lines (and at most
/// a final partial one, which readers ignore).
fn record_receipt(file: &std::sync::Mutex<std::fs::File>, id: &str, receipt: &str) -> Result<(), CliError> {
    use std::io::Write as _;
    let line = format!("{id} {}\n", STANDARD.encode(receipt.as_bytes()));
    let mut file = file.lock().map_err(|_| fail("receipt log lock poisoned"))?;
    file.write_all(line.as_bytes()).map_err(fail)
}

struct Report {
    per_sec: f64,
    p50: f64,
    p90: f64,
    p99: f64,
    max: f64,
    checkpoints: u64,
}

/// The log key: kept in `DIR/log.skey` when a folder is given, so a rerun (or a restart
/// after a crash) extends the same log; otherwise a fresh one.
pub(crate) fn log_signer(dir: Option<&std::path::Path>) -> Result<NoteSigner, CliError> {
    let Some(dir) = dir else {
        return generate_note_signer(LOG_NAME).map_err(fail);
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    let path = dir.join("log.skey");
    match std::fs::read_to_string(&path) {
        Ok(text) => NoteSigner::from_skey(text.trim()).map_err(fail),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            let signer = generate_note_signer(LOG_NAME).map_err(fail)?;
            crate::files::write_output(Some(&path), signer.to_skey().as_bytes())?;
            Ok(signer)
        }
        Err(e) => Err(fail(e)),
    }
}

const LOG_NAME: &str = "bench.vellum.invalid";

type ReceiptLog = Option<Arc<std::sync::Mutex<std::fs::File>>>;

async fn measure<L: LogStore, B: BlobStore>(
    log: L,
    blobs: B,
    signer: NoteSigner,
    submissions: Vec<Submission>,
    concurrency: usize,
    receipts: ReceiptLog,
) -> Result<Report, CliError> {
    let archive = Arc::new(Archive::open(log, blobs, signer).await.map_err(fail)?);
    let total = submissions.len();
    let mut shares: Vec<Vec<Submission>> = (0..concurrency).map(|_| Vec::new()).collect();
    for (i, s) in submissions.into_iter().enumerate() {
        shares[i % concurrency].push(s);
    }
    eprintln!("bench: timing {total} appends");
    let started = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for share in shares {
        let archive = archive.clone();
        let receipts = receipts.clone();
        tasks.spawn(async move {
            let mut latencies = Vec::with_capacity(share.len());
            for submission in share {
                let id = submission.header.fields().record_id;
                let t = Instant::now();
                let receipt = archive.append(submission).await.map_err(fail)?;
                latencies.push(t.elapsed());
                if let Some(file) = &receipts {
                    record_receipt(file, &id.to_string(), &receipt.to_text())?;
                }
            }
            Ok::<_, CliError>(latencies)
        });
    }
    let mut latencies: Vec<Duration> = Vec::with_capacity(total);
    while let Some(done) = tasks.join_next().await {
        latencies.extend(done.map_err(fail)??);
    }
    let elapsed = started.elapsed();
    let checkpoints = count_checkpoints(&archive).await?;
    archive.close().await;
    latencies.sort_unstable();
    let pct = |p: f64| {
        latencies[((latencies.len() as f64 * p) as usize).min(latencies.len() - 1)].as_secs_f64() * 1e3
    };
    Ok(Report {
        per_sec: total as f64 / elapsed.as_secs_f64(),
        p50: pct(0.50),
        p90: pct(0.90),
        p99: pct(0.99),
        max: latencies.last().map_or(0.0, |d| d.as_secs_f64() * 1e3),
        checkpoints,
    })
}

/// Checkpoints written during the run: one per batch.
async fn count_checkpoints<L: LogStore, B: BlobStore>(archive: &Archive<L, B>) -> Result<u64, CliError> {
    let mut count = 0;
    let mut size = 1;
    while let Some((found, _)) = archive
        .log_store()
        .checkpoint_at_least(size)
        .await
        .map_err(fail)?
    {
        count += 1;
        size = found + 1;
    }
    Ok(count)
}
