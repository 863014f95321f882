//! Test vectors for `docs/formats.md`, produced by the code from fixed inputs.
//!
//! The files under `docs/vectors/` and the copies embedded in `docs/formats.md` must
//! equal what this code produces; run with `VELLUM_UPDATE_VECTORS=1` to rewrite them
//! after a deliberate format change (and then review the diff).

#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

mod common;

use std::fmt::Write as _;
use std::path::PathBuf;

use common::*;
use vellum_protocol::blind::{IndexKey, ParticipantId, TokenKind};
use vellum_protocol::header::HeaderFields;
use vellum_protocol::ids::{Channel, Epoch, UnixMillis};
use vellum_protocol::keyring::KeyringStatement;
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::{BodyDigest, Recipient};
use vellum_tlog::checkpoint::Checkpoint;
use vellum_tlog::note::NoteSigner;
use vellum_tlog::proof::ConsistencyProof;
use vellum_tlog::tree::MemoryTree;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// An age recipient with fixed public bytes (no identity exists for it).
fn recipient(byte: u8) -> Recipient {
    let hrp = bech32::Hrp::parse("age").unwrap();
    bech32::encode::<bech32::Bech32>(hrp, &[byte; 32])
        .unwrap()
        .parse()
        .unwrap()
}

fn header_fields() -> (DeviceKey, HeaderFields, IndexKey) {
    let device = DeviceKey::from_seed(&[1; 32]);
    let index_key = IndexKey::from_bytes([5; 32]);
    let body = BodyDigest {
        sha256: [0xab; 32],
        len: 1234,
    };
    // The participant token is that of "+1 (555) 010-0000" (see the blind-token vectors).
    let fields = fields(record_id(1), body, &index_key);
    (device, fields, index_key)
}

fn record_header() -> String {
    let (device, fields, _) = header_fields();
    let signed = fields.sign(&device).unwrap();
    let mut tokens: Vec<String> = fields.tokens.iter().map(ToString::to_string).collect();
    tokens.sort();
    format!(
        "device seed: 32 bytes of 0x01\ndevice public key: {}\nrecord id: {}\ndevice id: {}\n\
         custodian: {}\nchannel: {}\ncaptured at: {}\nepoch: {}\nretention: {}\n\
         body sha256: {}\nbody length: {}\ntokens: {}\nheader: {}\nheader sha256: {}\n",
        hex(device.public().as_bytes()),
        fields.record_id,
        fields.device_id,
        fields.custodian,
        fields.channel,
        fields.captured_at.0,
        fields.epoch,
        fields.retention,
        hex(&fields.body.sha256),
        fields.body.len,
        tokens.join(" "),
        hex(signed.as_bytes()),
        hex(&signed.digest()),
    )
}

fn blind_tokens() -> String {
    let key = IndexKey::from_bytes([5; 32]);
    let mut out = String::from("index key: 32 bytes of 0x05\n");
    let participants = [
        (
            "phone",
            "+1 (555) 010-0000",
            ParticipantId::phone("+1 (555) 010-0000", None),
        ),
        ("phone", "15550100000", ParticipantId::phone("15550100000", None)),
        (
            "phone, default region GB",
            "020 7946 0000",
            ParticipantId::phone("020 7946 0000", Some("GB")),
        ),
        (
            "email",
            " Ann@Agency.Example ",
            ParticipantId::email(" Ann@Agency.Example "),
        ),
        (
            "handle on slack",
            "@JDoe",
            ParticipantId::handle("slack", "@JDoe"),
        ),
    ];
    for (what, raw, id) in participants {
        let id = id.unwrap();
        writeln!(
            out,
            "{what} {raw:?} -> {} -> {}",
            id.as_str(),
            key.participant(&id)
        )
        .unwrap();
    }
    let channel = Channel::new("signal").unwrap();
    writeln!(
        out,
        "conversation signal \"group-Zm9v\" -> signal:group-Zm9v -> {}",
        key.conversation(&channel, "group-Zm9v").unwrap()
    )
    .unwrap();
    writeln!(out, "day {NOW} -> 2025-11-26 -> {}", key.day(NOW)).unwrap();
    writeln!(
        out,
        "raw kind 0x01 \"x\" -> {}",
        key.token(TokenKind::Participant, "x")
    )
    .unwrap();
    out
}

fn keyring() -> String {
    let org = NoteSigner::from_seed("agency.example/org", [2; 32]).unwrap();
    let statement = KeyringStatement {
        epoch: Epoch(3),
        archive: recipient(0x11),
        escrow: recipient(0x22),
        valid_from: UnixMillis(NOW),
        valid_until: UnixMillis(NOW + 90 * 86_400_000),
    };
    format!(
        "org key seed: 32 bytes of 0x02\norg verifier key: {}\n\n{}",
        org.verifier(),
        statement.sign(&org).unwrap()
    )
}

fn log_and_receipt() -> String {
    let (device, fields, _) = header_fields();
    let log = NoteSigner::from_seed("log.agency.example", [3; 32]).unwrap();
    let header = fields.sign(&device).unwrap();
    let mut tree = MemoryTree::new();
    let mut out = format!(
        "log key seed: 32 bytes of 0x03\nlog verifier key: {}\n",
        log.verifier()
    );
    let mut target = None;
    for n in 0..5u8 {
        let digest = if n == 3 { header.digest() } else { [n; 32] };
        let entry = LogEntry::RecordAppended {
            record_id: record_id(if n == 3 { 1 } else { 100 + n }),
            header_sha256: digest,
            received_at: UnixMillis(NOW + 1000 * u64::from(n)),
        };
        writeln!(out, "entry {n}: {}", hex(&entry.to_bytes())).unwrap();
        writeln!(out, "leaf hash {n}: {}", hex(entry.leaf_hash().as_bytes())).unwrap();
        tree.push(entry.leaf_hash());
        if n == 3 {
            target = Some(entry);
        }
    }
    let checkpoint = Checkpoint::new(log.name(), tree.len(), tree.root())
        .sign(&log)
        .unwrap();
    let receipt = Receipt::new(
        &target.unwrap(),
        3,
        tree.prove_inclusion(5, 3).unwrap(),
        checkpoint.clone(),
    );
    let consistency = ConsistencyProof {
        old: 3,
        new: 5,
        hashes: tree.prove_consistency(3, 5).unwrap(),
    };
    let old = Checkpoint::new(log.name(), 3, tree.root_at(3).unwrap())
        .sign(&log)
        .unwrap();
    write!(
        out,
        "\ncheckpoint at size 3:\n{old}\ncheckpoint at size 5:\n{checkpoint}\nreceipt for entry 3 (the header vector's record):\n{}\nconsistency proof 3 -> 5:\n{}",
        receipt.to_text(),
        consistency.to_text()
    )
    .unwrap();
    out
}

fn vectors() -> Vec<(&'static str, String)> {
    vec![
        ("record-header", record_header()),
        ("blind-tokens", blind_tokens()),
        ("keyring", keyring()),
        ("log-receipt", log_and_receipt()),
    ]
}

fn docs() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../../docs")
}

#[test]
fn committed_vectors_match_the_code() {
    let update = std::env::var_os("VELLUM_UPDATE_VECTORS").is_some();
    for (name, content) in vectors() {
        let path = docs().join("vectors").join(format!("{name}.txt"));
        if update {
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(&path, &content).unwrap();
        }
        let committed = std::fs::read_to_string(&path).unwrap_or_default();
        assert!(
            committed == content,
            "{} differs from what the code produces:\n{content}",
            path.display()
        );
    }
}

#[test]
fn formats_md_embeds_each_vector_verbatim() {
    let formats = std::fs::read_to_string(docs().join("formats.md")).unwrap();
    for (name, content) in vectors() {
        let marker = format!("<!-- vector: {name} -->\n```text\n");
        let start = formats
            .find(&marker)
            .unwrap_or_else(|| panic!("formats.md has no block for vector {name}"));
        let block = &formats[start + marker.len()..];
        let block = &block[..block.find("```\n").unwrap()];
        assert!(
            block == content,
            "formats.md block {name} differs from docs/vectors/{name}.txt"
        );
    }
}
