//! `vellum demo`: the whole capture path in one process, writing every artefact to a
//! folder so that `vellum open` and `vellum verify` can be run on them afterwards.
//!
//! Roles are played in order, each using only what that party would hold: the
//! organisation signs a keyring; the device verifies it against the pinned key, seals
//! and signs; the "gateway" checks header and body without any decryption key and
//! appends to the log; the device verifies its receipt; the auditor opens the bodies.

use std::fs;
use std::path::Path;

use vellum_protocol::blind::IndexKey;
use vellum_protocol::document::{Body, Conversation, MessageDocument, Participant};
use vellum_protocol::header::{HeaderFields, SignedHeader, UnverifiedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keyring::{self, KeyringStatement};
use vellum_protocol::keys::{DeviceKey, generate_note_signer};
use vellum_protocol::receipt::{LogEntry, Receipt};
use vellum_protocol::seal::{self, Identity, SealedBody, format_identity_file};
use vellum_tlog::checkpoint::Checkpoint;
use vellum_tlog::note::NoteSigner;
use vellum_tlog::proof::ConsistencyProof;
use vellum_tlog::tree::MemoryTree;

use crate::error::{CliError, Kind};
use crate::files::{create_new_dir, write_output};
use crate::keys::now_ms;

const DAY_MS: u64 = 86_400_000;

/// One captured message on its way through the demo.
struct Capture {
    record_id: RecordId,
    header: SignedHeader,
    body: SealedBody,
}

pub(crate) fn run(dir: &Path) -> Result<(), CliError> {
    create_new_dir(dir).map_err(|e| {
        CliError::new(
            e.kind(),
            format!("{e} (remove it or pass --dir with a new folder)"),
        )
    })?;
    fs::create_dir(dir.join("records")).map_err(|e| CliError::io(dir, "create folder in", &e))?;
    let now = now_ms();

    step("organisation: org key, log key, epoch-1 archive identity, escrow identity, blind-index key");
    let org = signer("agency.example/org")?;
    let log = signer("log.agency.example")?;
    let archive = Identity::generate();
    let escrow = Identity::generate();
    let index_key = IndexKey::generate();
    write(dir, "org.vkey", format!("{}\n", org.verifier()).as_bytes())?;
    write(dir, "log.vkey", format!("{}\n", log.verifier()).as_bytes())?;
    write_output(
        Some(&dir.join("archive-epoch-1.key")),
        format_identity_file(&archive, now).as_bytes(),
    )?;
    write_output(
        Some(&dir.join("escrow.key")),
        format_identity_file(&escrow, now).as_bytes(),
    )?;

    let statement = KeyringStatement {
        epoch: Epoch(1),
        archive: archive.to_public(),
        escrow: escrow.to_public(),
        valid_from: UnixMillis(now.saturating_sub(DAY_MS)),
        valid_until: UnixMillis(now + 365 * DAY_MS),
    };
    let keyring_note = statement.sign(&org).map_err(|e| fail(&e))?;
    write(dir, "keyring.note", keyring_note.as_bytes())?;

    step("device: verify the keyring against the pinned organisation key");
    let pinned_org = org.verifier();
    let accepted =
        keyring::verify(keyring_note.as_bytes(), &pinned_org, None, UnixMillis(now)).map_err(|e| fail(&e))?;
    let device = DeviceKey::generate();
    let device_id = DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").map_err(|e| fail(&e))?;

    step("device: seal three messages to the archive and escrow recipients, sign their headers");
    let recipients = [
        accepted.statement().archive.clone(),
        accepted.statement().escrow.clone(),
    ];
    let mut captures = Vec::new();
    for (n, text) in [
        "Budget meeting moved to 3pm.",
        "Draft reply to the FOIA request attached.",
        "Approved.",
    ]
    .iter()
    .enumerate()
    {
        let doc = document(text, now + n as u64);
        let body = seal::seal(&recipients, &doc.to_json().map_err(|e| fail(&e))?).map_err(CliError::from)?;
        let record_id = RecordId::new_v7(now + n as u64);
        let fields = HeaderFields {
            record_id,
            device_id,
            custodian: Custodian::new("j.doe@agency.example").map_err(|e| fail(&e))?,
            channel: Channel::new("signal").map_err(|e| fail(&e))?,
            captured_at: UnixMillis(now + n as u64),
            epoch: accepted.statement().epoch,
            retention: RetentionClass::new("finra-6y").map_err(|e| fail(&e))?,
            body: body.digest(),
            tokens: doc.blind_tokens(&index_key).map_err(|e| fail(&e))?,
        };
        let header = fields.sign(&device).map_err(|e| fail(&e))?;
        captures.push(Capture {
            record_id,
            header,
            body,
        });
    }

    step("gateway: verify each header under the device key, check the body digest, append to the log");
    let device_key = device.public();
    let mut tree = MemoryTree::new();
    let mut entries = Vec::new();
    for capture in &captures {
        let verified = UnverifiedHeader::parse(capture.header.as_bytes())
            .and_then(|h| h.verify(&device_key))
            .map_err(|e| fail(&e))?;
        verified
            .check_body(&capture.body.digest())
            .map_err(|e| fail(&e))?;
        let entry = LogEntry::RecordAppended {
            record_id: capture.record_id,
            header_sha256: verified.digest(),
            received_at: UnixMillis(now_ms()),
        };
        tree.push(entry.leaf_hash());
        entries.push(entry);
        if tree.len() == 2 {
            write(dir, "checkpoint-2.note", checkpoint(&log, &tree)?.as_bytes())?;
        }
    }
    let mut tampered = captures[0].header.as_bytes().to_vec();
    tampered[40] ^= 1;
    let refused = UnverifiedHeader::parse(&tampered).and_then(|h| h.verify(&device_key));
    match refused {
        Err(e) => println!("   a header altered in transit is refused: {e}"),
        Ok(_) => {
            return Err(CliError::new(
                Kind::VerifyFailed,
                "an altered header was accepted",
            ));
        }
    }
    let checkpoint_3 = checkpoint(&log, &tree)?;
    write(dir, "checkpoint-3.note", checkpoint_3.as_bytes())?;
    let consistency = ConsistencyProof {
        old: 2,
        new: 3,
        hashes: tree.prove_consistency(2, 3).map_err(|e| fail(&e))?,
    };
    write(dir, "consistency-2-3.proof", consistency.to_text().as_bytes())?;

    step("device: verify each receipt against the pinned log key");
    let pinned_log = log.verifier();
    for (index, (capture, entry)) in captures.iter().zip(&entries).enumerate() {
        let index = index as u64;
        let proof = tree.prove_inclusion(tree.len(), index).map_err(|e| fail(&e))?;
        let receipt = Receipt::new(entry, index, proof, checkpoint_3.clone());
        let verified = receipt
            .verify(&pinned_log, &capture.record_id, &capture.header.digest())
            .map_err(|e| fail(&e))?;
        let stem = format!("records/{}", capture.record_id);
        write(dir, &format!("{stem}.header"), capture.header.as_bytes())?;
        write(dir, &format!("{stem}.age"), capture.body.as_bytes())?;
        write(dir, &format!("{stem}.receipt"), receipt.to_text().as_bytes())?;
        println!(
            "   record {} is leaf {} of a log of {}",
            capture.record_id,
            verified.index,
            verified.checkpoint.size()
        );
    }

    step("auditor: open each body with the epoch identity and recompute its blind tokens");
    for capture in &captures {
        let plain = capture
            .body
            .open(std::slice::from_ref(&archive))
            .map_err(CliError::from)?;
        let doc = MessageDocument::from_json(&plain).map_err(|e| fail(&e))?;
        let header = UnverifiedHeader::parse(capture.header.as_bytes())
            .and_then(|h| h.verify(&device_key))
            .map_err(|e| fail(&e))?;
        let tokens_match = doc.blind_tokens(&index_key).map_err(|e| fail(&e))? == header.fields().tokens;
        println!(
            "   {}: {:?} (tokens match: {tokens_match})",
            capture.record_id, doc.body.text
        );
        if !tokens_match {
            return Err(CliError::new(
                Kind::VerifyFailed,
                "blind tokens differ between header and document",
            ));
        }
    }

    let first = captures
        .first()
        .map(|c| c.record_id.to_string())
        .unwrap_or_default();
    let d = dir.display();
    println!("\nDone. Everything is in {d}/. Try:");
    println!("  vellum verify checkpoint --log-key {d}/log.vkey {d}/checkpoint-3.note");
    println!("  vellum verify inclusion --log-key {d}/log.vkey {d}/records/{first}.receipt");
    println!(
        "  vellum verify consistency --log-key {d}/log.vkey {d}/checkpoint-2.note {d}/checkpoint-3.note {d}/consistency-2-3.proof"
    );
    println!("  vellum open -i {d}/archive-epoch-1.key {d}/records/{first}.age");
    Ok(())
}

fn step(what: &str) {
    println!("-> {what}");
}

fn fail(err: &dyn std::fmt::Display) -> CliError {
    CliError::new(Kind::Other, format!("demo failed: {err}"))
}

fn signer(name: &str) -> Result<NoteSigner, CliError> {
    generate_note_signer(name).map_err(|e| fail(&e))
}

fn write(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), CliError> {
    let path = dir.join(name);
    fs::write(&path, bytes).map_err(|e| CliError::io(&path, "write", &e))
}

fn checkpoint(log: &NoteSigner, tree: &MemoryTree) -> Result<String, CliError> {
    Checkpoint::new(log.name(), tree.len(), tree.root())
        .sign(log)
        .map_err(|e| fail(&e))
}

fn document(text: &str, sent_at_ms: u64) -> MessageDocument {
    let person = |id: &str, name: &str| Participant {
        id: id.into(),
        display_name: Some(name.into()),
        as_written: None,
    };
    MessageDocument {
        version: 1,
        channel: "signal".into(),
        conversation: Conversation {
            id: "group-budget-2026".into(),
            title: Some("Budget".into()),
        },
        sender: person("tel:+15550100000", "J. Doe"),
        recipients: vec![
            person("tel:+15550100001", "A. Smith"),
            person("mailto:records@agency.example", "Records"),
        ],
        sent_at_ms,
        received_at_ms: None,
        body: Body {
            content_type: "text/plain".into(),
            text: text.into(),
        },
        edits: Vec::new(),
        deletions: Vec::new(),
        attachments: Vec::new(),
    }
}
