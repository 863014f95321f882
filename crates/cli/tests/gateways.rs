//! Several gateway processes on one PostgreSQL database: two `vellum bench storage`
//! processes append to the same log at once; one is killed with SIGKILL mid-run (most
//! likely inside a batch transaction, holding the sequencing lock), and the other
//! keeps appending within seconds. Afterwards every append either process
//! acknowledged is in the log once, with the receipt it was given, in one history.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a failure is a failed test"
)]

mod common;

use std::collections::HashSet;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{acknowledged, assert_extends, start_bench};
use vellum_archive::Archive;
use vellum_archive::blob::local::LocalBlobStore;
use vellum_archive::ports::LogStore as _;
use vellum_archive::postgres::{self, PgStore};
use vellum_protocol::keys::generate_note_signer;
use vellum_protocol::receipt::Receipt;
use vellum_tlog::checkpoint;
use vellum_tlog::note::NoteSigner;

/// The log name `vellum bench storage` signs with.
const LOG_NAME: &str = "bench.vellum.invalid";

fn count(receipts: &Path) -> usize {
    acknowledged(receipts).len()
}

/// Waits until `receipts` holds at least `n` acknowledged appends; panics after `limit`.
fn wait_for(receipts: &Path, n: usize, limit: Duration) -> Duration {
    let started = Instant::now();
    while count(receipts) < n {
        assert!(
            started.elapsed() < limit,
            "{} acknowledged appends after {limit:?}, wanted {n}",
            count(receipts)
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    started.elapsed()
}

#[test]
fn two_processes_share_one_log_and_the_survivor_carries_on() {
    let admin = std::env::var("VELLUM_TEST_POSTGRES").expect(
        "VELLUM_TEST_POSTGRES is not set: this test needs a PostgreSQL server (scripts/test starts one)",
    );
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let name = format!("vellum_test_gateways_{}", std::process::id());
    let url = runtime
        .block_on(postgres::create_database(&admin, &name))
        .unwrap();

    let signer = generate_note_signer(LOG_NAME).unwrap();
    let (a, b) = (tempfile::tempdir().unwrap(), tempfile::tempdir().unwrap());
    for dir in [a.path(), b.path()] {
        std::fs::write(dir.join("log.skey"), signer.to_skey()).unwrap();
    }
    let (receipts_a, receipts_b) = (a.path().join("receipts.log"), b.path().join("receipts.log"));
    let args = |records: &'static str| {
        [
            "--backend",
            "postgres",
            "--database",
            url.as_str(),
            "--records",
            records,
            "--concurrency",
            "64",
        ]
    };
    // A would run far longer than the test: it is killed. B runs to the end.
    let mut first = start_bench(&args("100000"), a.path(), &receipts_a);
    let mut second = start_bench(&args("15000"), b.path(), &receipts_b);
    wait_for(&receipts_a, 1000, Duration::from_secs(60));
    wait_for(&receipts_b, 1000, Duration::from_secs(60));

    first.kill().unwrap();
    first.wait().unwrap();
    let before = count(&receipts_b);
    let resumed = wait_for(&receipts_b, before + 1000, Duration::from_secs(10));
    println!("the survivor acknowledged 1000 more appends {resumed:?} after the kill");
    let status = second.wait().unwrap();
    assert!(status.success(), "the surviving process failed: {status}");

    let mut all = acknowledged(&receipts_a);
    let from_a = all.len();
    all.extend(acknowledged(&receipts_b));
    assert_eq!(all.len() - from_a, 15_000, "the survivor did not finish its run");
    runtime.block_on(check(&url, signer, &all));
    runtime.block_on(postgres::drop_database(&admin, &name)).unwrap();
}

/// Every acknowledged append is stored once, with the receipt it was given, and every
/// receipt's checkpoint is consistent with the newest one.
async fn check(url: &str, signer: NoteSigner, acknowledged: &[(vellum_protocol::ids::RecordId, String)]) {
    let key = signer.verifier();
    let scratch = tempfile::tempdir().unwrap();
    let archive = Archive::open(
        PgStore::open(url).await.unwrap(),
        LocalBlobStore::open(scratch.path()).unwrap(),
        signer,
    )
    .await
    .unwrap();
    let (size, note) = archive.latest_checkpoint().await.unwrap().unwrap();
    let newest = checkpoint::open(note.as_bytes(), &key).unwrap();
    let mut indexes = HashSet::new();
    let mut checked_sizes = HashSet::new();
    let mut stored = std::collections::HashMap::new();
    for chunk in acknowledged.chunks(1000) {
        let ids: Vec<_> = chunk.iter().map(|(id, _)| *id).collect();
        for record in archive.log_store().records(&ids).await.unwrap() {
            stored.insert(record.record_id, record);
        }
    }
    for (id, text) in acknowledged {
        let record = stored
            .get(id)
            .unwrap_or_else(|| panic!("acknowledged record {id} is not in the log"));
        let verified = Receipt::parse(text.as_bytes())
            .unwrap()
            .verify(&key, id, &record.header_sha256)
            .unwrap();
        assert_eq!(verified.index, record.leaf_index);
        assert!(
            indexes.insert(verified.index),
            "leaf {} handed out twice",
            verified.index
        );
        let old = verified.checkpoint;
        if checked_sizes.insert(old.size()) {
            let why = "every checkpoint either process signed is in one history";
            assert_extends(&archive, &old, &newest, why).await;
        }
    }
    assert!(size >= indexes.len() as u64);
    archive.close().await;
}
