//! Crash safety of the append path: a `vellum bench storage` process appending under
//! load is killed with SIGKILL at a random moment, again and again, on the same data.
//! After every kill the archive must reopen, hold every append that had been
//! acknowledged (its record, its blob with the right digest, the very receipt the
//! client got, which still verifies), and its newest checkpoint must be consistent
//! with every checkpoint seen before.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failure is a failed test"
)]

mod common;

use std::path::Path;
use std::time::Duration;

use common::{acknowledged, assert_extends, start_bench};
use vellum_archive::Archive;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::sqlite::SqliteStore;
use vellum_protocol::receipt::Receipt;
use vellum_tlog::checkpoint;
use vellum_tlog::note::NoteSigner;

const ROUNDS: usize = 15;
/// Newly acknowledged appends checked per round (evenly spread, the last one always).
const PER_ROUND: usize = 1000;
/// Appends from earlier rounds checked again per round, at random.
const OLD_SAMPLE: usize = 100;

/// A small xorshift generator: the seed is printed, so a failing run can be replayed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }
}

/// Runs the load generator until it starts appending, then kills it after a random delay.
fn run_and_kill(dir: &Path, delay: Duration) {
    let args = ["--backend", "sqlite", "--records", "20000", "--concurrency", "64"];
    let mut child = start_bench(&args, dir, &dir.join("receipts.log"));
    std::thread::sleep(delay);
    let _ = child.kill();
    child.wait().unwrap();
}

/// Checks every append acknowledged since the last round (up to `PER_ROUND`, spread
/// evenly) and a random sample of the older ones.
async fn check(dir: &Path, seen: &mut Vec<String>, checked: usize, rng: &mut Rng) -> usize {
    let signer =
        NoteSigner::from_skey(std::fs::read_to_string(dir.join("log.skey")).unwrap().trim()).unwrap();
    let key = signer.verifier();
    let log = SqliteStore::open(&format!("sqlite://{}", dir.join("meta.db").display()))
        .await
        .unwrap();
    let blobs = LocalBlobStore::open(&dir.join("blobs")).unwrap();
    let archive = Archive::open(log, blobs, signer)
        .await
        .expect("the archive reopens after a crash");

    let acknowledged = acknowledged(&dir.join("receipts.log"));
    let fresh = &acknowledged[checked.min(acknowledged.len())..];
    let step = fresh.len().div_ceil(PER_ROUND).max(1);
    let older = (0..OLD_SAMPLE.min(checked)).map(|_| &acknowledged[rng.next() as usize % checked]);
    for (id, receipt_text) in fresh.iter().step_by(step).chain(fresh.last()).chain(older) {
        let record = archive
            .record(*id)
            .await
            .unwrap()
            .unwrap_or_else(|| panic!("acknowledged record {id} was lost"));
        archive
            .body(&record)
            .await
            .expect("the blob of an acknowledged record reads back intact");
        let receipt = Receipt::parse(receipt_text.as_bytes()).unwrap();
        receipt.verify(&key, id, &record.header_sha256).unwrap();
        assert_eq!(
            archive.receipt(&record).await.unwrap().to_text(),
            *receipt_text,
            "receipt of {id} changed"
        );
    }

    if let Some((_, note)) = archive.latest_checkpoint().await.unwrap() {
        let newest = checkpoint::open(note.as_bytes(), &key).unwrap();
        for old_note in seen.iter() {
            let old = checkpoint::open(old_note.as_bytes(), &key).unwrap();
            let why = "the log after a crash extends every earlier checkpoint";
            assert_extends(&archive, &old, &newest, why).await;
        }
        seen.push(note);
    }
    archive.close().await;
    acknowledged.len()
}

#[test]
fn acknowledged_appends_survive_sigkill() {
    let dir = tempfile::tempdir().unwrap();
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_nanos() as u64
        | 1;
    println!("crash test seed {seed}");
    let mut rng = Rng(seed);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut seen = Vec::new();
    let mut counts: Vec<usize> = Vec::new();
    for _ in 0..ROUNDS {
        run_and_kill(dir.path(), Duration::from_millis(5 + rng.next() % 400));
        let checked = counts.last().copied().unwrap_or(0);
        counts.push(runtime.block_on(check(dir.path(), &mut seen, checked, &mut rng)));
    }
    println!("acknowledged appends after each kill: {counts:?}");
    assert!(
        counts.last().copied().unwrap_or(0) > 0,
        "no append was ever acknowledged"
    );
    assert!(seen.len() >= 2, "too few checkpoints to compare");
}
