//! The auditor's side of a production: the records of an opened package (`vellum
//! auditor open`) written as EML (one file each), MBOX, JSON Lines or a CSV load file
//! for eDiscovery tools, and full-text search over them in memory. Plaintext exists
//! here, on the auditor's machine, and nowhere else: the index `grep` builds lives in
//! this process only and is gone when it ends.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{IsTerminal as _, Write as _};
use std::path::Path;

use clap::ValueEnum;
use serde_json::json;
use sha2::{Digest as _, Sha256};
use vellum_protocol::document::{MessageDocument, Participant};
use vellum_protocol::header::UnverifiedHeader;
use vellum_protocol::time::rfc3339;
use zeroize::Zeroizing;

use crate::error::{CliError, Kind};
use crate::files::{Output, read_small};
use crate::package::{Manifest, RecordEntry, inside};

fn fail(kind: Kind, e: impl std::fmt::Display) -> CliError {
    CliError::new(kind, format!("auditor: {e}"))
}

/// The formats of `vellum auditor export`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub(crate) enum Format {
    /// One RFC 5322 message per record (`--out` is a folder to create).
    Eml,
    /// One mbox file (mboxrd) of every record.
    Mbox,
    /// One JSON object per line: the record's metadata and its message document.
    Jsonl,
    /// A CSV load file: one row per record with its fields and SHA-256 digests.
    Csv,
}

/// One opened record: what the package says of it and its message document.
pub(crate) struct Opened {
    pub(crate) entry: RecordEntry,
    pub(crate) custodian: String,
    pub(crate) channel: String,
    pub(crate) captured_at: u64,
    /// The document's JSON as opened (what `document_sha256` hashes).
    pub(crate) json: Zeroizing<Vec<u8>>,
    pub(crate) document: MessageDocument,
    /// Where the document is, relative to the package.
    pub(crate) path: String,
}

/// Where the message documents of a package's records come from.
#[derive(Clone, Copy)]
pub(crate) enum Source<'a> {
    /// `opened/ID.json`, as `vellum auditor open` wrote them (for `grep`, a reading aid).
    Opened,
    /// The sealed bodies, opened again in memory with these identities (for `export`:
    /// an edited `opened/` file is never exported as genuine).
    Sealed(&'a [vellum_protocol::seal::Identity]),
}

/// The package's records, in the manifest's order, with their message documents.
pub(crate) fn opened(dir: &Path, source: Source<'_>) -> Result<Vec<Opened>, CliError> {
    let manifest: Manifest = serde_json::from_slice(&read_small(&dir.join("manifest.json"), 256 << 20)?)
        .map_err(|e| fail(Kind::Malformed, format!("manifest.json: {e}")))?;
    if matches!(source, Source::Opened) && !dir.join("opened").is_dir() {
        return Err(fail(
            Kind::NotFound,
            format!(
                "{} has no opened records: run `vellum auditor open` first",
                dir.display()
            ),
        ));
    }
    let mut out = Vec::with_capacity(manifest.records.len());
    for entry in manifest.records {
        let id = vellum_protocol::ids::RecordId::parse(&entry.record_id).map_err(|_| {
            fail(
                Kind::Malformed,
                format!("manifest: malformed record id {:?}", entry.record_id),
            )
        })?;
        let header = read_small(
            &inside(dir, &entry.header)?,
            vellum_protocol::header::MAX_HEADER_LEN as u64,
        )?;
        let parsed = UnverifiedHeader::parse(&header)
            .map_err(|e| fail(Kind::Malformed, format!("record {id}: {e}")))?;
        let fields = parsed.archived_fields();
        let path = format!("opened/{id}.json");
        let json = match source {
            Source::Opened => Zeroizing::new(read_small(&dir.join(&path), 64 << 20)?),
            Source::Sealed(identities) => crate::package::open_record(dir, &entry, identities)?.1,
        };
        let document = MessageDocument::from_json(&json)
            .map_err(|e| fail(Kind::Malformed, format!("record {id}: {e}")))?;
        out.push(Opened {
            custodian: fields.custodian.to_string(),
            channel: fields.channel.to_string(),
            captured_at: fields.captured_at.0,
            entry,
            json,
            document,
            path,
        });
    }
    Ok(out)
}

/// An email address standing for a participant: the address itself for `mailto:`,
/// otherwise the normal form's value at a reserved domain naming its kind
/// (`+15550100 @tel.invalid`, `bob@slack.handle.invalid`), so that mail tools can
/// thread and sort by person.
fn address(p: &Participant) -> String {
    if let Some(mail) = p.id.strip_prefix("mailto:") {
        return mail.to_owned();
    }
    if let Some(tel) = p.id.strip_prefix("tel:") {
        return format!("{tel}@tel.invalid");
    }
    if let Some((service, name)) = p.id.strip_prefix("handle:").and_then(|h| h.split_once(':')) {
        let local: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || "._+-".contains(c) {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        return format!("{local}@{service}.handle.invalid");
    }
    "unknown@participant.invalid".to_owned()
}

fn mailbox(p: &Participant) -> mail_builder::headers::address::Address<'static> {
    let name = p.display_name.clone().unwrap_or_else(|| p.id.clone());
    (clean(&name), clean(&address(p))).into()
}

/// Text for a header: control characters (line breaks among them, which would end the
/// header and start another) become spaces.
fn clean(text: &str) -> String {
    text.chars()
        .map(|c| if c.is_control() { ' ' } else { c })
        .collect()
}

/// The record as an RFC 5322 message: participants as mailboxes, the original ids and
/// the record's provenance in `X-Vellum-*` headers, edits and deletions after the
/// text, attachments named by digest.
fn eml(r: &Opened) -> Result<Vec<u8>, CliError> {
    use mail_builder::headers::text::Text;
    let doc = &r.document;
    let subject = clean(
        &doc.conversation
            .title
            .clone()
            .unwrap_or_else(|| format!("{} conversation {}", doc.channel, doc.conversation.id)),
    );
    let text_header = |value: &str| Text::new(clean(value));
    let mut text = doc.body.text.clone();
    for edit in &doc.edits {
        text.push_str(&format!("\n\n[edited {}] {}", rfc3339(edit.at_ms), edit.text));
    }
    for deletion in &doc.deletions {
        let by = deletion.by.as_deref().unwrap_or("unknown");
        text.push_str(&format!("\n\n[deleted {} by {by}]", rfc3339(deletion.at_ms)));
    }
    let recipients: Vec<_> = doc.recipients.iter().map(mailbox).collect();
    let mut message = mail_builder::MessageBuilder::new()
        .message_id(format!("{}@vellum.invalid", r.entry.record_id))
        .from(mailbox(&doc.sender))
        .to(recipients)
        .subject(subject)
        .date((doc.sent_at_ms / 1000) as i64)
        .header("X-Vellum-Record-Id", text_header(&r.entry.record_id))
        .header("X-Vellum-Custodian", text_header(&r.custodian))
        .header("X-Vellum-Channel", text_header(&doc.channel))
        .header("X-Vellum-Conversation", text_header(&doc.conversation.id))
        .header("X-Vellum-Sender", text_header(&doc.sender.id))
        .header(
            "X-Vellum-Leaf-Index",
            text_header(&r.entry.leaf_index.to_string()),
        )
        .header("X-Vellum-Sealed-Sha256", text_header(&r.entry.body_sha256))
        .text_body(text);
    for p in &doc.recipients {
        message = message.header("X-Vellum-Recipient", text_header(&p.id));
    }
    for a in &doc.attachments {
        let name = a.filename.as_deref().unwrap_or("(no name)");
        let line = format!(
            "{} {} bytes sealed, sha256 {}, {name}",
            a.media_type, a.len, a.sha256
        );
        message = message.header("X-Vellum-Attachment", text_header(&line));
    }
    message.write_to_vec().map_err(|e| fail(Kind::Other, e))
}

/// RFC 4180 quoting: a field with a comma, a quote or a line break is quoted, its
/// quotes doubled.
/// One CSV cell. A cell a spreadsheet would read as a formula (one beginning with `=`,
/// `+`, `-`, `@`, a tab or a carriage return) gets a leading `'`, the OWASP rule
/// against CSV injection, so message text never runs in a reviewer's spreadsheet.
fn csv_field(text: &str) -> String {
    if text.starts_with(['=', '+', '-', '@', '\t', '\r']) {
        return format!("\"'{}\"", text.replace('"', "\"\""));
    }
    if text.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", text.replace('"', "\"\""))
    } else {
        text.to_owned()
    }
}

const CSV_COLUMNS: [&str; 15] = [
    "record_id",
    "custodian",
    "channel",
    "captured_at",
    "sent_at",
    "sender",
    "recipients",
    "conversation",
    "subject",
    "attachments",
    "leaf_index",
    "received_at",
    "document_sha256",
    "sealed_sha256",
    "native_file",
];

fn csv_row(r: &Opened) -> String {
    let doc = &r.document;
    let recipients: Vec<&str> = doc.recipients.iter().map(|p| p.id.as_str()).collect();
    let fields = [
        r.entry.record_id.clone(),
        r.custodian.clone(),
        r.channel.clone(),
        rfc3339(r.captured_at),
        rfc3339(doc.sent_at_ms),
        doc.sender.id.clone(),
        recipients.join("; "),
        doc.conversation.id.clone(),
        doc.conversation.title.clone().unwrap_or_default(),
        doc.attachments.len().to_string(),
        r.entry.leaf_index.to_string(),
        rfc3339(r.entry.received_at),
        hex::encode(Sha256::digest(&*r.json)),
        r.entry.body_sha256.clone(),
        r.path.clone(),
    ];
    let cells: Vec<String> = fields.iter().map(|f| csv_field(f)).collect();
    cells.join(",") + "\r\n"
}

fn jsonl_row(r: &Opened) -> Result<String, CliError> {
    let document: serde_json::Value = serde_json::from_slice(&r.json)
        .map_err(|e| fail(Kind::Malformed, format!("record {}: {e}", r.entry.record_id)))?;
    let row = json!({
        "record_id": r.entry.record_id,
        "leaf_index": r.entry.leaf_index,
        "custodian": r.custodian,
        "channel": r.channel,
        "captured_at": r.captured_at,
        "received_at": r.entry.received_at,
        "header_sha256": r.entry.header_sha256,
        "sealed_sha256": r.entry.body_sha256,
        "document_sha256": hex::encode(Sha256::digest(&*r.json)),
        "document": document,
    });
    Ok(row.to_string() + "\n")
}

/// mboxrd: each message after a `From ` line; a body line starting with `>*From ` gets
/// one more `>`.
fn mbox_entry(r: &Opened) -> Result<Vec<u8>, CliError> {
    let message = eml(r)?;
    let text = String::from_utf8_lossy(&message);
    let mut out = format!(
        "From {} {}\n",
        address(&r.document.sender),
        asctime(r.document.sent_at_ms)
    )
    .into_bytes();
    for line in text.split('\n') {
        let line = line.strip_suffix('\r').unwrap_or(line);
        if line.trim_start_matches('>').starts_with("From ") {
            out.push(b'>');
        }
        out.extend_from_slice(line.as_bytes());
        out.push(b'\n');
    }
    out.push(b'\n');
    Ok(out)
}

/// The date of an mbox `From ` line, as C's asctime writes it: `Thu Nov 27 01:05:34 2026`.
fn asctime(unix_ms: u64) -> String {
    const DAYS: [&str; 7] = ["Thu", "Fri", "Sat", "Sun", "Mon", "Tue", "Wed"];
    const MONTHS: [&str; 12] = [
        "Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec",
    ];
    let (year, month, day) = vellum_protocol::time::civil_date(unix_ms);
    let secs = (unix_ms / 1000) % 86_400;
    let weekday = DAYS[((unix_ms / 86_400_000) % 7) as usize];
    let month = MONTHS[(month as usize).saturating_sub(1).min(11)];
    format!(
        "{weekday} {month} {day:>2} {:02}:{:02}:{:02} {year}",
        secs / 3600,
        secs / 60 % 60,
        secs % 60
    )
}

/// Writes the opened records of package `dir` as `format` to `out`, which must not
/// exist (a folder for EML).
pub(crate) fn export(
    dir: &Path,
    format: Format,
    out: &Path,
    identities: &[vellum_protocol::seal::Identity],
) -> Result<(), CliError> {
    let records = opened(dir, Source::Sealed(identities))?;
    match format {
        Format::Eml => {
            crate::files::create_new_dir(out)?;
            for r in &records {
                crate::files::write_output(Some(&out.join(format!("{}.eml", r.entry.record_id))), &eml(r)?)?;
            }
        }
        Format::Mbox | Format::Jsonl | Format::Csv => {
            let mut output = Output::create(Some(out))?;
            let to_terminal = out == Path::new("-") && std::io::stdout().is_terminal();
            let mut writer = output.writer();
            let write_err = |e: std::io::Error| CliError::io(out, "write", &e);
            if format == Format::Csv {
                writer
                    .write_all((CSV_COLUMNS.join(",") + "\r\n").as_bytes())
                    .map_err(write_err)?;
            }
            for r in &records {
                let bytes = match format {
                    Format::Mbox => mbox_entry(r)?,
                    Format::Jsonl => jsonl_row(r)?.into_bytes(),
                    _ => csv_row(r).into_bytes(),
                };
                let bytes = match to_terminal {
                    // Message text never reaches a terminal raw.
                    true => vellum_protocol::text::escape_keeping_lines(&String::from_utf8_lossy(&bytes))
                        .into_owned()
                        .into_bytes(),
                    false => bytes,
                };
                writer.write_all(&bytes).map_err(write_err)?;
            }
            drop(writer);
            output.commit()?;
        }
    }
    println!("exported {} records to {}", records.len(), out.display());
    Ok(())
}

/// Lowercase words of letters and digits.
fn words(text: &str) -> impl Iterator<Item = String> + '_ {
    text.split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .map(str::to_lowercase)
}

/// Full-text search over the opened records of package `dir`: every record whose text
/// (body, edits, conversation title, participants' ids and names, attachment names)
/// holds every word of `query`; a quoted phrase must appear as written (case aside).
/// The index is built in this process's memory and dropped at its end.
pub(crate) fn grep(dir: &Path, query: &str) -> Result<(), CliError> {
    let records = opened(dir, Source::Opened)?;
    let mut phrases = Vec::new();
    let mut terms = BTreeSet::new();
    for (i, part) in query.split('"').enumerate() {
        if i % 2 == 1 {
            if !part.trim().is_empty() {
                phrases.push(part.to_lowercase());
            }
            terms.extend(words(part));
        } else {
            terms.extend(words(part));
        }
    }
    if terms.is_empty() {
        return Err(fail(Kind::Other, "the query has no words"));
    }
    // The inverted index: word → records holding it.
    let mut index: BTreeMap<String, BTreeSet<usize>> = BTreeMap::new();
    let mut texts = Vec::with_capacity(records.len());
    for (n, r) in records.iter().enumerate() {
        let doc = &r.document;
        let mut text = Zeroizing::new(doc.body.text.clone());
        for extra in doc
            .edits
            .iter()
            .map(|e| e.text.as_str())
            .chain(doc.conversation.title.as_deref())
            .chain(std::iter::once(doc.sender.id.as_str()))
            .chain(doc.sender.display_name.as_deref())
            .chain(doc.recipients.iter().map(|p| p.id.as_str()))
            .chain(doc.recipients.iter().filter_map(|p| p.display_name.as_deref()))
            .chain(doc.attachments.iter().filter_map(|a| a.filename.as_deref()))
        {
            text.push('\n');
            text.push_str(extra);
        }
        for word in words(&text) {
            index.entry(word).or_default().insert(n);
        }
        texts.push(text);
    }
    let mut hits: Option<BTreeSet<usize>> = None;
    for term in &terms {
        let holding = index.get(term).cloned().unwrap_or_default();
        hits = Some(match hits {
            None => holding,
            Some(h) => h.intersection(&holding).copied().collect(),
        });
    }
    let hits: Vec<usize> = hits
        .unwrap_or_default()
        .into_iter()
        .filter(|n| {
            phrases
                .iter()
                .all(|p| texts[*n].to_lowercase().contains(p.as_str()))
        })
        .collect();
    for n in &hits {
        let r = &records[*n];
        let first = terms.iter().next().map(String::as_str).unwrap_or_default();
        println!(
            "{}  {}  {:<24} {}",
            r.entry.record_id,
            rfc3339(r.document.sent_at_ms),
            r.custodian,
            snippet(&texts[*n], first)
        );
    }
    eprintln!("{} of {} records match", hits.len(), records.len());
    Ok(())
}

/// Up to 80 characters of `text` around the first occurrence of `word`, on one line.
fn snippet(text: &str, word: &str) -> String {
    let lower = text.to_lowercase();
    let at = lower.find(word).unwrap_or(0);
    // Positions in the lowercased text map to the original only when lowercasing kept
    // lengths; otherwise start at the beginning.
    let at = if lower.len() == text.len() && text.is_char_boundary(at) {
        at
    } else {
        0
    };
    let start = text[..at].char_indices().rev().nth(30).map_or(0, |(i, _)| i);
    let piece: String = text[start..].chars().take(80).collect();
    vellum_protocol::text::escape(&piece.replace(['\n', '\r'], " ")).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn header_text_cannot_break_a_line() {
        assert_eq!(clean("Budget\r\nBcc: x@y\n\nbody"), "Budget  Bcc: x@y  body");
    }

    #[test]
    fn csv_fields_are_quoted_when_they_must_be() {
        assert_eq!(csv_field("plain"), "plain");
        assert_eq!(csv_field("a,b"), "\"a,b\"");
        assert_eq!(csv_field("say \"hi\""), "\"say \"\"hi\"\"\"");
        assert_eq!(csv_field("two\nlines"), "\"two\nlines\"");
        // Formulas are neutralised, whatever they begin with.
        for formula in [
            "=HYPERLINK(\"http://x\")",
            "+1+1",
            "-2+3",
            "@SUM(A1)",
            "\t=1",
            "\r=1",
        ] {
            let cell = csv_field(formula);
            assert!(cell.starts_with("\"'"), "{cell}");
        }
        assert_eq!(csv_field("=1,\"2\""), "\"'=1,\"\"2\"\"\"");
    }

    #[test]
    fn mbox_dates_read_as_asctime() {
        assert_eq!(asctime(0), "Thu Jan  1 00:00:00 1970");
        assert_eq!(asctime(1_764_150_000_000), "Wed Nov 26 09:40:00 2025");
    }

    #[test]
    fn snippets_never_split_a_character() {
        // Lowercasing changes byte lengths here while the total stays the same.
        let text = "İ éa Ω and more";
        assert!(!snippet(text, "éa").is_empty());
        assert!(snippet("Die Straße", "straße").contains("Straße"));
    }
}
