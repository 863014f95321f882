//! `vellum bench search`: first-page latency of record search over a large archive.
//!
//! The archive is generated through the store's own batch write (`Sequencing::commit`,
//! what the sequencer calls): records with real signed headers, their search rows,
//! their log leaves and a signed checkpoint per batch, so the tables, indexes and log
//! are what millions of captures leave behind. What is skipped is what `bench capture`
//! measures: HTTP, signature checks and blob writes (bodies are not stored; their
//! locators point nowhere). Custodians and participants are skewed: a few are in many
//! records, most in few.
//!
//! The timed part is one auditor searching over HTTP on loopback through the real
//! router: the access check, the audit event each search appends (a durable log
//! leaf), the query and the answer. Each query is one of several shapes an auditor
//! uses, with random parameters; the report gives the first page's latency over all
//! of them and per shape.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use clap::Args;
use vellum_archive::Archive;
use vellum_archive::blob::none::NoBlobs;
use vellum_archive::ports::{
    AccountStore, AuditStore, BlobLocator, CommitBatch, DeviceStore, KeyStore, LeafRow, LogStore, NewAccount,
    NewRecord, NewSession, Role, SecretHash, Sequencing, SessionStore,
};
use vellum_archive::postgres::{self, PgStore};
use vellum_archive::search::RecordSearch;
use vellum_archive::sqlite::SqliteStore;
use vellum_protocol::blind::{IndexKey, TokenKind};
use vellum_protocol::header::HeaderFields;
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::LogEntry;
use vellum_protocol::seal::BodyDigest;
use vellum_tlog::checkpoint::Checkpoint;
use vellum_tlog::hash::leaf_hash;
use vellum_tlog::note::NoteSigner;
use vellum_tlog::tree::Frontier;

use crate::bench::Backend;
use crate::error::{CliError, Kind};

#[derive(Debug, Args)]
pub(crate) struct SearchArgs {
    /// Metadata backend.
    #[arg(long, value_enum, default_value = "sqlite")]
    backend: Backend,
    /// Records in the archive searched.
    #[arg(long, default_value_t = 10_000_000)]
    records: u64,
    /// Custodians the records belong to.
    #[arg(long, default_value_t = 2_000)]
    custodians: u64,
    /// Distinct participants.
    #[arg(long, default_value_t = 200_000)]
    participants: u64,
    /// Searches timed (after 100 untimed ones).
    #[arg(long, default_value_t = 2_000)]
    queries: usize,
    /// Rows per page.
    #[arg(long, default_value_t = 50)]
    page: u32,
    /// Folder of the SQLite archive (and the log key), kept and reused: a folder
    /// holding fewer records is filled up to --records. Default: a temporary folder.
    #[arg(long)]
    dir: Option<PathBuf>,
    /// PostgreSQL server to create a scratch database on.
    #[arg(
        long,
        env = "VELLUM_BENCH_POSTGRES",
        default_value = "postgres://postgres@127.0.0.1:5432/postgres"
    )]
    postgres_url: String,
    /// Use (and fill up) this PostgreSQL database instead of a scratch one, kept
    /// afterwards; give --dir too, which keeps its log key.
    #[arg(long, value_name = "URL")]
    database: Option<String>,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("bench: {e}"))
}

pub(crate) fn search(args: &SearchArgs) -> Result<(), CliError> {
    if args.records == 0 || args.custodians == 0 || args.participants == 0 || args.queries == 0 {
        return Err(fail(
            "--records, --custodians, --participants and --queries must be at least 1",
        ));
    }
    if args.database.is_some() && (args.backend != Backend::Postgres || args.dir.is_none()) {
        return Err(fail(
            "--database needs --backend postgres and --dir (for its log key)",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(run(args))
}

/// The deterministic stream of random numbers the generator and the queries draw from.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        // SplitMix64.
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }

    /// An index below `n`, skewed: index k is drawn about (n/k)^(2/3) times as often
    /// as the last one.
    fn skewed(&mut self, n: u64) -> u64 {
        ((self.unit().powi(3) * n as f64) as u64).min(n - 1)
    }
}

/// What the generated archive looks like, shared by the generator and the queries.
struct World {
    custodians: u64,
    participants: u64,
    /// The first capture time; records span three years from here.
    start: u64,
    span: u64,
    index_key: IndexKey,
}

const CHANNELS: [(&str, f64); 5] = [
    ("signal", 0.4),
    ("email", 0.7),
    ("sms", 0.85),
    ("slack", 0.95),
    ("teams", 1.0),
];
const DAY: u64 = 86_400_000;

impl World {
    fn new(args: &SearchArgs) -> Self {
        Self {
            custodians: args.custodians,
            participants: args.participants,
            start: 1_672_531_200_000, // 2023-01-01
            span: 3 * 365 * DAY,
            index_key: IndexKey::from_bytes([7; 32]),
        }
    }

    fn custodian(&self, n: u64) -> Custodian {
        Custodian::new(&format!("custodian-{n:05}@agency.example")).unwrap_or_else(|_| unreachable!())
    }

    fn participant(&self, n: u64) -> vellum_protocol::blind::BlindToken {
        self.index_key
            .token(TokenKind::Participant, &format!("mailto:p{n}@example.org"))
    }

    /// Record `i` of `total`: captured in order over the span, two participants and a
    /// day token, a skewed custodian with two devices.
    fn fields(&self, i: u64, total: u64, rng: &mut Rng, body: BodyDigest) -> HeaderFields {
        let captured_at = self.start + (u128::from(i) * u128::from(self.span) / u128::from(total)) as u64;
        let custodian = rng.skewed(self.custodians);
        let pick = rng.unit();
        let channel = CHANNELS
            .iter()
            .find(|(_, upto)| pick < *upto)
            .map_or("teams", |(c, _)| c);
        let mut device = [0u8; 16];
        device[..8].copy_from_slice(&(custodian * 2 + rng.next() % 2 + 1).to_be_bytes());
        device[6] = 0x40; // a version-4 UUID
        device[8] = 0x80;
        HeaderFields {
            record_id: RecordId::new_v7(captured_at),
            device_id: DeviceId::from_bytes(device).unwrap_or_else(|_| unreachable!()),
            custodian: self.custodian(custodian),
            channel: Channel::new(channel).unwrap_or_else(|_| unreachable!()),
            captured_at: UnixMillis(captured_at),
            epoch: Epoch(1),
            retention: RetentionClass::new("finra-6y").unwrap_or_else(|_| unreachable!()),
            body,
            tokens: vec![
                self.participant(rng.skewed(self.participants)),
                self.participant(rng.skewed(self.participants)),
                self.index_key.day(captured_at),
            ],
        }
    }
}

/// One generated batch, ready to commit.
struct Batch {
    records: Vec<NewRecord>,
}

fn generate_batch(
    world: &World,
    key: &DeviceKey,
    from: u64,
    count: u64,
    total: u64,
) -> Result<Batch, CliError> {
    let mut rng = Rng(from.wrapping_mul(0x2545_f491_4f6c_dd1d) ^ 0x5eed);
    let mut records = Vec::with_capacity(count as usize);
    for i in from..from + count {
        let mut sha256 = [0u8; 32];
        sha256[..8].copy_from_slice(&rng.next().to_be_bytes());
        let body = BodyDigest {
            sha256,
            len: 1200 + rng.next() % 2000,
        };
        let mut fields = world.fields(i, total, &mut rng, body);
        // As a parsed header has them: sorted, each once.
        fields.tokens.sort_unstable();
        fields.tokens.dedup();
        let header = fields.sign(key).map_err(fail)?.as_bytes().to_vec();
        records.push(NewRecord {
            record_id: fields.record_id,
            leaf_index: i,
            header,
            received_at: UnixMillis(fields.captured_at.0 + 500 + rng.next() % 5_000),
            blob: BlobLocator(format!("bench/{}", hex::encode(&body.sha256[..8]))),
            fields,
        });
    }
    Ok(Batch { records })
}

/// The size of the log in `store`, filled with generated records up to `total`.
async fn fill<L: LogStore + AuditStore>(
    store: &L,
    signer: &NoteSigner,
    world: &Arc<World>,
    records: u64,
) -> Result<(u64, f64), CliError> {
    const BATCH: u64 = 20_000;
    let mut tx = store.sequence().await.map_err(fail)?;
    let state = tx.load_state().await.map_err(fail)?;
    drop(tx);
    // The log also holds the audit events of earlier runs' searches: the records are
    // the other leaves.
    let audits = store.audit_from(0, u32::MAX).await.map_err(fail)?.len() as u64;
    let total = records + audits;
    let mut frontier = Frontier::from_hashes(state.size, state.frontier).map_err(fail)?;
    if frontier.size() >= total {
        return Ok((frontier.size() - audits, 0.0));
    }
    eprintln!(
        "bench: generating leaves {}..{total} ({audits} earlier leaves are audit events)",
        frontier.size()
    );
    let started = Instant::now();
    let key = Arc::new(DeviceKey::generate());
    // Two generator threads sign while the store writes.
    let (send, mut receive) = tokio::sync::mpsc::channel::<Result<Batch, CliError>>(4);
    let first = frontier.size();
    let mut producers = Vec::new();
    for lane in 0..2u64 {
        let (world, key, send) = (world.clone(), key.clone(), send.clone());
        producers.push(std::thread::spawn(move || {
            let mut from = first + lane * BATCH;
            while from < total {
                let count = BATCH.min(total - from);
                if send
                    .blocking_send(generate_batch(&world, &key, from, count, total))
                    .is_err()
                {
                    return;
                }
                from += 2 * BATCH;
            }
        }));
    }
    drop(send);
    // Batches arrive from two lanes; commit them in leaf order.
    let mut waiting = std::collections::BTreeMap::new();
    let mut last_report = Instant::now();
    while frontier.size() < total {
        let batch = receive
            .recv()
            .await
            .ok_or_else(|| fail("the generator stopped"))??;
        waiting.insert(batch.records[0].leaf_index, batch);
        while let Some(batch) = waiting.remove(&frontier.size()) {
            let mut leaves = Vec::with_capacity(batch.records.len());
            for r in &batch.records {
                let entry = LogEntry::RecordAppended {
                    record_id: r.record_id,
                    header_sha256: sha256(&r.header),
                    received_at: r.received_at,
                }
                .to_bytes();
                let completed = frontier.push(leaf_hash(&entry));
                let hashes = completed
                    .iter()
                    .flat_map(|(_, h)| h.as_bytes().to_vec())
                    .collect();
                leaves.push(LeafRow {
                    index: r.leaf_index,
                    entry,
                    hashes,
                });
            }
            let checkpoint = Checkpoint::new(signer.name(), frontier.size(), frontier.root())
                .sign(signer)
                .map_err(fail)?;
            let tx = store.sequence().await.map_err(fail)?;
            tx.commit(CommitBatch {
                records: batch.records,
                audits: Vec::new(),
                leaves,
                size: frontier.size(),
                checkpoint,
            })
            .await
            .map_err(|e| {
                fail(format!(
                    "{e}: {}",
                    std::error::Error::source(&e)
                        .map(|s| s.to_string())
                        .unwrap_or_default()
                ))
            })?;
            if last_report.elapsed().as_secs() >= 10 {
                last_report = Instant::now();
                let rate = (frontier.size() - first) as f64 / started.elapsed().as_secs_f64();
                eprintln!("bench: {} of {total} leaves ({rate:.0}/s)", frontier.size());
            }
        }
    }
    for p in producers {
        let _ = p.join();
    }
    Ok((frontier.size() - audits, started.elapsed().as_secs_f64()))
}

fn sha256(bytes: &[u8]) -> [u8; 32] {
    use sha2::Digest as _;
    sha2::Sha256::digest(bytes).into()
}

/// The query shapes timed.
const SHAPES: [&str; 7] = [
    "custodian",
    "custodian+month",
    "participant",
    "custodian+participant",
    "hour",
    "day-token",
    "custodian+channel",
];

fn query(world: &World, shape: &str, rng: &mut Rng, page: u32) -> serde_json::Value {
    let custodian = world.custodian(rng.skewed(world.custodians)).to_string();
    let at = world.start + (rng.unit() * world.span as f64) as u64;
    let participant = hex::encode(world.participant(rng.skewed(world.participants)).0);
    let mut q = serde_json::json!({ "limit": page });
    match shape {
        "custodian" => q["custodians"] = serde_json::json!([custodian]),
        "custodian+month" => {
            q["custodians"] = serde_json::json!([custodian]);
            q["captured_from"] = serde_json::json!(at);
            q["captured_to"] = serde_json::json!(at + 30 * DAY);
        }
        "participant" => q["tokens"] = serde_json::json!([participant]),
        "custodian+participant" => {
            q["custodians"] = serde_json::json!([custodian]);
            q["tokens"] = serde_json::json!([participant]);
        }
        "hour" => {
            q["captured_from"] = serde_json::json!(at);
            q["captured_to"] = serde_json::json!(at + 3_600_000);
        }
        "day-token" => q["tokens"] = serde_json::json!([hex::encode(world.index_key.day(at).0)]),
        _ => {
            q["custodians"] = serde_json::json!([custodian]);
            q["channels"] = serde_json::json!(["sms"]);
        }
    }
    q
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let rank = ((p * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

fn round2(x: f64) -> f64 {
    (x * 100.0).round() / 100.0
}

/// Serves `store` on loopback and times the searches of one signed-in auditor.
async fn measure<L>(
    store: L,
    signer: NoteSigner,
    world: &World,
    args: &SearchArgs,
) -> Result<serde_json::Value, CliError>
where
    L: LogStore + DeviceStore + AccountStore + SessionStore + AuditStore + KeyStore + RecordSearch + Clone,
{
    let now = crate::keys::now_ms();
    let (org, note) = crate::bench_capture::bench_keyring(Epoch(1), now)?;
    let keyring = vellum_protocol::keyring::verify(note.as_bytes(), &org.verifier(), None, UnixMillis(now))
        .map_err(fail)?;
    let auth = vellum_gateway::auth::Auth::ephemeral("bench").map_err(fail)?;
    // The auditor: an account and a session made in the store, as a sign-in would.
    let mut account = [0u8; 16];
    getrandom::getrandom(&mut account).map_err(fail)?;
    let session = *RecordId::new_v7(now).as_bytes();
    store
        .create_account(
            &NewAccount {
                account_id: account,
                username: format!("bench-auditor-{}", hex::encode(&account[..4])),
                role: Role::Auditor,
                password_phc: vellum_gateway::auth::password::unusable().map_err(fail)?,
                must_change_password: false,
                external_id: None,
            },
            UnixMillis(now),
        )
        .await
        .map_err(fail)?;
    let mut refresh = [0u8; 32];
    getrandom::getrandom(&mut refresh).map_err(fail)?;
    store
        .start_session(&NewSession {
            family_id: session,
            account_id: account,
            refresh: &SecretHash(refresh),
            now: UnixMillis(now),
            expires_at: UnixMillis(now + 3_600_000),
            ends_at: UnixMillis(now + 3_600_000),
            idp_second_factor: true,
        })
        .await
        .map_err(fail)?;
    let token = auth
        .jwt()
        .issue(
            &account,
            &session,
            Role::Auditor,
            vellum_gateway::auth::jwt::Scope::Full,
            now / 1000,
        )
        .map_err(fail)?;
    let archive = Archive::open(store, NoBlobs, signer).await.map_err(fail)?;
    let gateway = Arc::new(vellum_gateway::Gateway::new(archive, keyring, auth).with_org_key(org.verifier()));
    let app = vellum_gateway::router(gateway.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
    let addr = listener.local_addr().map_err(fail)?;
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vellum_gateway::server::serve(listener, app, None, async {
        let _ = stopped.await;
    }));
    let client = reqwest::Client::builder().build().map_err(fail)?;
    let url = format!("http://{addr}/v1/records/search");
    let mut rng = Rng(0xbe_4c4);
    let mut by_shape: Vec<Vec<f64>> = vec![Vec::new(); SHAPES.len()];
    let mut all = Vec::with_capacity(args.queries);
    let mut rows = 0u64;
    for n in 0..(100 + args.queries) {
        let shape = n % SHAPES.len();
        let body = query(world, SHAPES[shape], &mut rng, args.page);
        let started = Instant::now();
        let page = post(&client, &url, &token, &body).await?;
        let ms = started.elapsed().as_secs_f64() * 1000.0;
        if n >= 100 {
            rows += page["records"].as_array().map_or(0, |r| r.len() as u64);
            by_shape[shape].push(ms);
            all.push(ms);
        }
    }
    // Counting, separately: the same shapes with `count` (capped at 10,000).
    let mut counted = Vec::new();
    for n in 0..(args.queries / 4).max(SHAPES.len()) {
        let mut body = query(world, SHAPES[n % SHAPES.len()], &mut rng, args.page);
        body["count"] = serde_json::json!(true);
        let started = Instant::now();
        post(&client, &url, &token, &body).await?;
        counted.push(started.elapsed().as_secs_f64() * 1000.0);
    }
    let _ = stop.send(());
    let _ = server.await;
    gateway.archive().close().await;
    let sort = |v: &mut Vec<f64>| v.sort_by(f64::total_cmp);
    sort(&mut all);
    sort(&mut counted);
    let mut shapes = serde_json::Map::new();
    for (name, mut v) in SHAPES.iter().zip(by_shape) {
        sort(&mut v);
        shapes.insert(
            (*name).to_owned(),
            serde_json::json!({ "p50_ms": round2(percentile(&v, 0.5)), "p99_ms": round2(percentile(&v, 0.99)), "max_ms": round2(percentile(&v, 1.0)) }),
        );
    }
    Ok(serde_json::json!({
        "queries": all.len(),
        "mean_rows": round2(rows as f64 / all.len().max(1) as f64),
        "p50_ms": round2(percentile(&all, 0.5)),
        "p90_ms": round2(percentile(&all, 0.9)),
        "p99_ms": round2(percentile(&all, 0.99)),
        "max_ms": round2(percentile(&all, 1.0)),
        "count_p50_ms": round2(percentile(&counted, 0.5)),
        "count_p99_ms": round2(percentile(&counted, 0.99)),
        "shapes": shapes,
    }))
}

/// One search: its page, or an error with the gateway's answer.
async fn post(
    client: &reqwest::Client,
    url: &str,
    token: &str,
    body: &serde_json::Value,
) -> Result<serde_json::Value, CliError> {
    let answer = client
        .post(url)
        .bearer_auth(token)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(body.to_string())
        .send()
        .await
        .map_err(fail)?;
    let status = answer.status();
    let bytes = answer.bytes().await.map_err(fail)?;
    if !status.is_success() {
        return Err(fail(format!(
            "search answered {status}: {}",
            String::from_utf8_lossy(&bytes)
        )));
    }
    serde_json::from_slice(&bytes).map_err(fail)
}

/// Vacuums and analyses a PostgreSQL archive just filled, as autovacuum would in time,
/// so that the figures do not depend on when it wakes up.
async fn settle(url: &str) -> Result<(), CliError> {
    eprintln!("bench: VACUUM (ANALYZE), as autovacuum would after a bulk load");
    postgres::vacuum_analyze(url).await.map_err(fail)
}

async fn run(args: &SearchArgs) -> Result<(), CliError> {
    let scratch = crate::files::private_tempdir().map_err(fail)?;
    let dir = args.dir.clone().unwrap_or_else(|| scratch.path().to_owned());
    std::fs::create_dir_all(&dir).map_err(|e| CliError::io(&dir, "create folder", &e))?;
    let signer = crate::bench::log_signer(Some(&dir))?;
    let world = Arc::new(World::new(args));
    let (records, generated_s, mut report) = match args.backend {
        Backend::Sqlite => {
            let url = format!("sqlite://{}", dir.join("search.db").display());
            let store = SqliteStore::open(&url).await.map_err(fail)?;
            let (records, generated) = fill(&store, &signer, &world, args.records).await?;
            (records, generated, measure(store, signer, &world, args).await?)
        }
        Backend::Postgres if args.database.is_some() => {
            let store = PgStore::open(args.database.as_deref().unwrap_or_default())
                .await
                .map_err(fail)?;
            let (records, generated) = fill(&store, &signer, &world, args.records).await?;
            settle(args.database.as_deref().unwrap_or_default()).await?;
            (records, generated, measure(store, signer, &world, args).await?)
        }
        Backend::Postgres => {
            let name = format!("vellum_bench_search_{}", std::process::id());
            let url = postgres::create_database(&args.postgres_url, &name)
                .await
                .map_err(fail)?;
            let outcome = async {
                let store = PgStore::open(&url).await.map_err(fail)?;
                let (records, generated) = fill(&store, &signer, &world, args.records).await?;
                settle(&url).await?;
                Ok::<_, CliError>((records, generated, measure(store, signer, &world, args).await?))
            }
            .await;
            postgres::drop_database(&args.postgres_url, &name)
                .await
                .map_err(fail)?;
            outcome?
        }
    };
    let backend = match args.backend {
        Backend::Sqlite => "sqlite",
        Backend::Postgres => "postgres",
    };
    report["backend"] = serde_json::json!(backend);
    report["records"] = serde_json::json!(records);
    report["custodians"] = serde_json::json!(args.custodians);
    report["participants"] = serde_json::json!(args.participants);
    report["page"] = serde_json::json!(args.page);
    report["generate_seconds"] = serde_json::json!(round2(generated_s));
    if args.json {
        println!("{report}");
    } else {
        println!(
            "{backend}: {} records; {} searches, first page of {}: p50 {} ms, p90 {} ms, p99 {} ms, max {} ms; with a count: p50 {} ms, p99 {} ms",
            records,
            report["queries"],
            args.page,
            report["p50_ms"],
            report["p90_ms"],
            report["p99_ms"],
            report["max_ms"],
            report["count_p50_ms"],
            report["count_p99_ms"],
        );
        for (shape, figures) in report["shapes"].as_object().into_iter().flatten() {
            println!(
                "  {shape:<22} p50 {} ms, p99 {} ms",
                figures["p50_ms"], figures["p99_ms"]
            );
        }
    }
    Ok(())
}
