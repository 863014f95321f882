//! `vellum bench login-flood`: capture throughput over HTTP with and without a flood of
//! logins, to check that password work (Argon2id) cannot starve ingest (I3).
//!
//! One process runs a gateway (SQLite and a blob folder in a temporary folder, the
//! production Argon2 parameters, login rate limits lifted so every attempt costs a
//! hash) and its load: `--clients` capture clients posting pre-sealed, pre-signed
//! frames over loopback HTTP for `--seconds`, first alone, then alongside `--flooders`
//! tasks posting `--login-rate` logins a second with wrong passwords for an existing
//! account. The load generator shares the machine in both phases alike.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use clap::Args;
use vellum_archive::Archive;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::ports::{AccountStore as _, NewAccount, Role};
use vellum_archive::sqlite::SqliteStore;
use vellum_gateway::auth::jwt::JwtKeys;
use vellum_gateway::auth::{Auth, password};
use vellum_gateway::{Gateway, RECORD_MEDIA_TYPE};
use vellum_protocol::ids::{Custodian, Epoch, RetentionClass, UnixMillis};
use vellum_protocol::keys::generate_note_signer;
use vellum_protocol::seal::Identity;

use crate::bench_capture::{Prepared, Signer, bench_keyring, enroll, seal_pool, sign};
use crate::error::{CliError, Kind};

#[derive(Debug, Args)]
pub(crate) struct FloodArgs {
    /// Concurrent capture clients.
    #[arg(long, default_value_t = 32)]
    clients: usize,
    /// Concurrent login flooders.
    #[arg(long, default_value_t = 32)]
    flooders: usize,
    /// Login attempts a second the flooders send together (open loop: an attacker
    /// does not wait for answers or honour Retry-After).
    #[arg(long, default_value_t = 200)]
    login_rate: u32,
    /// Seconds per phase.
    #[arg(long, default_value_t = 5)]
    seconds: u64,
    /// Rounds of (alone, flooded) phases; figures are medians over rounds, so slow
    /// drift of the machine affects both sides alike.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Argon2 computations at once (the gateway's `parallel_password_hashes`).
    #[arg(long, default_value_t = 2)]
    parallel_hashes: usize,
    /// Password computations a second at most (the gateway's `password_hashes_per_second`).
    #[arg(long, default_value_t = vellum_gateway::auth::DEFAULT_HASHES_PER_SECOND)]
    hashes_per_second: u32,
    /// Print one JSON object instead of text.
    #[arg(long)]
    json: bool,
}

fn fail(e: impl std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("bench: {e}"))
}

pub(crate) fn login_flood(args: &FloodArgs) -> Result<(), CliError> {
    if args.clients == 0 || args.seconds == 0 {
        return Err(CliError::new(
            Kind::Other,
            "--clients and --seconds must be at least 1",
        ));
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(fail)?;
    runtime.block_on(run(args))
}

struct Phase {
    captures: u64,
    logins: u64,
    busy: u64,
}

async fn run(args: &FloodArgs) -> Result<(), CliError> {
    let dir = crate::files::private_tempdir().map_err(fail)?;
    let now = crate::keys::now_ms();
    let store = SqliteStore::open(&format!("sqlite://{}", dir.path().join("meta.db").display()))
        .await
        .map_err(fail)?;
    let blobs = LocalBlobStore::open(&dir.path().join("blobs")).map_err(fail)?;

    // A device, an account to guess at, and a keyring.
    let device = Signer::new(
        Custodian::new("bench@agency.example").map_err(fail)?,
        RetentionClass::new("finra-6y").map_err(fail)?,
        Epoch(1),
    )?;
    let credential = [2u8; 32];
    enroll(&store, &device, &credential, now).await?;
    let account = NewAccount {
        account_id: [9; 16],
        username: "flood-target".into(),
        role: Role::Admin,
        password_phc: password::hash("the real password of the target").map_err(fail)?,
        must_change_password: false,
        external_id: None,
    };
    store
        .create_account(&account, UnixMillis(now))
        .await
        .map_err(fail)?;
    let (org, note) = bench_keyring(Epoch(1), now)?;
    let keyring = vellum_protocol::keyring::verify(note.as_bytes(), &org.verifier(), None, UnixMillis(now))
        .map_err(fail)?;
    let jwt = JwtKeys::new("bench", "bench", 900, &[7; 32], &[]).map_err(fail)?;
    let auth = Auth::new(jwt, 3600, args.parallel_hashes, Duration::from_secs(10))
        .map_err(fail)?
        .with_hashes_per_second(args.hashes_per_second);
    let signer = generate_note_signer("bench.vellum.invalid/log").map_err(fail)?;
    let archive = Archive::open(store, blobs, signer).await.map_err(fail)?;
    let gateway = Arc::new(Gateway::new(archive, keyring, auth).with_login_limits(u32::MAX, u32::MAX));

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.map_err(fail)?;
    let base = format!("http://{}", listener.local_addr().map_err(fail)?);
    let (stop_server, stopped) = tokio::sync::oneshot::channel::<()>();
    let server = tokio::spawn(vellum_gateway::server::serve(
        listener,
        vellum_gateway::router(gateway.clone()),
        None,
        async {
            let _ = stopped.await;
        },
    ));

    // Enough frames for every phase at a generous rate, sealed and signed up front.
    let per_phase = (args.seconds * 12_000) as usize;
    let phases = 2 * args.rounds.max(1);
    eprintln!("bench: preparing {} sealed, signed frames…", phases * per_phase);
    let bodies = seal_pool(&[Identity::generate().to_public()], 1035)?;
    let captures = sign(&device, &bodies, now, phases * per_phase)?;
    let prepared = Prepared { bodies, captures };
    let frames: Vec<Vec<u8>> = (0..prepared.captures.len()).map(|i| prepared.frame(i)).collect();
    let credential_text = {
        use base64::Engine as _;
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(credential)
    };
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(args.clients + args.flooders)
        .build()
        .map_err(fail)?;

    let mut chunks = frames.chunks(per_phase);
    let (mut alone, mut flooded, mut drops) = (Vec::new(), Vec::new(), Vec::new());
    let (mut logins, mut busy) = (Vec::new(), 0);
    for round in 1..=args.rounds.max(1) {
        eprintln!(
            "bench: round {round}: {} s of captures alone, then with {} logins/s…",
            args.seconds, args.login_rate
        );
        let quiet = phase(
            &http,
            &base,
            &credential_text,
            chunks.next().unwrap_or_default(),
            args,
            0,
        )
        .await?;
        let noisy = phase(
            &http,
            &base,
            &credential_text,
            chunks.next().unwrap_or_default(),
            args,
            args.flooders,
        )
        .await?;
        let secs = args.seconds as f64;
        let (a, b) = (quiet.captures as f64 / secs, noisy.captures as f64 / secs);
        alone.push(a);
        flooded.push(b);
        drops.push(100.0 * (a - b) / a.max(f64::MIN_POSITIVE));
        logins.push(noisy.logins as f64 / secs);
        busy += quiet.busy + noisy.busy;
    }
    let _ = stop_server.send(());
    let _ = server.await;
    gateway.archive().close().await;

    let (baseline, under_flood) = (median(&mut alone), median(&mut flooded));
    let (drop, logins) = (median(&mut drops), median(&mut logins));
    if args.json {
        println!(
            "{}",
            serde_json::json!({
                "clients": args.clients,
                "flooders": args.flooders,
                "login_rate": args.login_rate,
                "seconds": args.seconds,
                "parallel_hashes": args.parallel_hashes,
                "hashes_per_second": args.hashes_per_second,
                "captures_per_s": (baseline * 10.0).round() / 10.0,
                "captures_per_s_under_flood": (under_flood * 10.0).round() / 10.0,
                "drop_percent": (drop * 10.0).round() / 10.0,
                "logins_per_s_under_flood": (logins * 10.0).round() / 10.0,
                "rounds": args.rounds,
                "busy_answers": busy,
            })
        );
    } else {
        println!("captures alone          {baseline:.1}/s");
        println!(
            "captures under flood    {under_flood:.1}/s ({drop:.1}% lower, median of the rounds' drops)"
        );
        println!("logins answered (flood) {logins:.1}/s, busy answers {busy}");
        println!("(medians of {} rounds)", args.rounds);
    }
    Ok(())
}

fn median(values: &mut [f64]) -> f64 {
    values.sort_by(f64::total_cmp);
    match values.len() {
        0 => 0.0,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

async fn phase(
    http: &reqwest::Client,
    base: &str,
    credential: &str,
    frames: &[Vec<u8>],
    args: &FloodArgs,
    flooders: usize,
) -> Result<Phase, CliError> {
    let frames: Arc<Vec<Vec<u8>>> = Arc::new(frames.to_vec());
    let next = Arc::new(AtomicU64::new(0));
    let (captures, logins, busy) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let running = Arc::new(AtomicBool::new(true));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..flooders {
        let (http, url, logins, busy, running) = (
            http.clone(),
            format!("{base}/v1/auth/login"),
            logins.clone(),
            busy.clone(),
            running.clone(),
        );
        let every = Duration::from_secs_f64(flooders as f64 / f64::from(args.login_rate.max(1)));
        tasks.spawn(async move {
            let body = r#"{"username":"flood-target","password":"a wrong guess at the password"}"#;
            let mut pace = tokio::time::interval(every);
            pace.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
            while running.load(Ordering::Relaxed) {
                pace.tick().await;
                // Open loop: each attempt goes out on its own, whatever the last one's fate.
                let attempt = http
                    .post(&url)
                    .header("content-type", "application/json")
                    .body(body)
                    .send();
                let (logins, busy) = (logins.clone(), busy.clone());
                tokio::spawn(async move {
                    match attempt.await.map(|r| r.status().as_u16()) {
                        Ok(401) => logins.fetch_add(1, Ordering::Relaxed),
                        Ok(_) => busy.fetch_add(1, Ordering::Relaxed),
                        Err(_) => 0,
                    };
                });
            }
        });
    }
    let started = Instant::now();
    let deadline = started + Duration::from_secs(args.seconds);
    for _ in 0..args.clients {
        let (http, url, frames, next, captures, busy) = (
            http.clone(),
            format!("{base}/v1/records"),
            frames.clone(),
            next.clone(),
            captures.clone(),
            busy.clone(),
        );
        let credential = credential.to_owned();
        tasks.spawn(async move {
            while Instant::now() < deadline {
                let i = next.fetch_add(1, Ordering::Relaxed) as usize;
                let Some(frame) = frames.get(i) else { return };
                let sent = http
                    .post(&url)
                    .bearer_auth(&credential)
                    .header("content-type", RECORD_MEDIA_TYPE)
                    .body(frame.clone())
                    .send()
                    .await;
                match sent.map(|r| r.status().as_u16()) {
                    Ok(200) => captures.fetch_add(1, Ordering::Relaxed),
                    Ok(_) => busy.fetch_add(1, Ordering::Relaxed),
                    Err(_) => 0,
                };
            }
        });
    }
    tokio::time::sleep_until(deadline.into()).await;
    running.store(false, Ordering::Relaxed);
    while tasks.join_next().await.is_some() {}
    if next.load(Ordering::Relaxed) as usize >= frames.len() {
        return Err(fail("ran out of prepared frames: lower --clients or --seconds"));
    }
    Ok(Phase {
        captures: captures.load(Ordering::Relaxed),
        logins: logins.load(Ordering::Relaxed),
        busy: busy.load(Ordering::Relaxed),
    })
}
