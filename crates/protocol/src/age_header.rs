//! A structural reader for the age v1 header, enough for a party that holds no key
//! (the gateway) to tell an age file from anything else and count its stanzas.
//!
//! ```text
//! age-encryption.org/v1\n
//! -> <type> <arg>...\n          one per recipient
//! <base64 body, 64-column lines, the last one shorter (maybe empty)>\n
//! --- <base64 MAC>\n
//! <payload: 16-byte nonce, then STREAM chunks>
//! ```
//! Recipients are anonymous in X25519 stanzas; nothing here can tell whom a file is
//! sealed to, only that it is shaped like an age file.

use thiserror::Error;

const VERSION_LINE: &[u8] = b"age-encryption.org/v1\n";
/// Headers larger than this are refused (a real one with a few recipients is < 1 KiB).
pub const MAX_HEADER_LEN: usize = 16 * 1024;
/// Stanzas beyond this number are refused.
pub const MAX_STANZAS: usize = 64;
/// Nonce (16) plus the tag of the final, possibly empty, chunk (16).
const MIN_PAYLOAD_LEN: usize = 32;

/// Why bytes are not an age file.
#[derive(Debug, Error, Clone, Copy, PartialEq, Eq)]
#[error("not an age v1 file: {0}")]
pub struct NotAgeFile(pub &'static str);

/// One recipient stanza's shape.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StanzaShape {
    /// The stanza type, e.g. `X25519`.
    pub tag: String,
    /// Its arguments.
    pub args: Vec<String>,
    /// Decoded body length in bytes.
    pub body_len: usize,
}

impl StanzaShape {
    /// An X25519 stanza: one 32-byte share (43 base64 characters) and a 32-byte body.
    pub fn is_x25519(&self) -> bool {
        self.tag == "X25519" && self.args.len() == 1 && self.args[0].len() == 43 && self.body_len == 32
    }
}

/// The shape of an age header.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HeaderShape {
    /// The stanzas in order.
    pub stanzas: Vec<StanzaShape>,
    /// Bytes of header, up to and including the MAC line.
    pub header_len: usize,
}

/// Reads the header of `bytes` (a whole file or just its beginning).
pub fn inspect(bytes: &[u8]) -> Result<HeaderShape, NotAgeFile> {
    let mut rest = bytes
        .strip_prefix(VERSION_LINE)
        .ok_or(NotAgeFile("missing version line"))?;
    let mut stanzas = Vec::new();
    loop {
        if bytes.len() - rest.len() > MAX_HEADER_LEN {
            return Err(NotAgeFile("header too large"));
        }
        let (line, tail) = take_line(rest)?;
        rest = tail;
        if let Some(mac) = line.strip_prefix(b"--- ") {
            if mac.len() != 43 || !is_base64_nopad(mac) {
                return Err(NotAgeFile("bad header MAC"));
            }
            break;
        }
        let args = line
            .strip_prefix(b"-> ")
            .ok_or(NotAgeFile("expected a stanza or the MAC line"))?;
        if stanzas.len() == MAX_STANZAS {
            return Err(NotAgeFile("too many stanzas"));
        }
        let mut fields = args.split(|&b| b == b' ').map(|f| {
            if f.is_empty() || !f.iter().all(|b| (0x21..=0x7e).contains(b)) {
                return Err(NotAgeFile("bad stanza argument"));
            }
            Ok(String::from_utf8_lossy(f).into_owned())
        });
        let tag = fields.next().ok_or(NotAgeFile("empty stanza"))??;
        let args = fields.collect::<Result<Vec<_>, _>>()?;
        let (body_len, tail) = take_body(rest)?;
        rest = tail;
        stanzas.push(StanzaShape { tag, args, body_len });
    }
    if stanzas.is_empty() {
        return Err(NotAgeFile("no recipient stanza"));
    }
    let header_len = bytes.len() - rest.len();
    if header_len > MAX_HEADER_LEN {
        return Err(NotAgeFile("header too large"));
    }
    Ok(HeaderShape { stanzas, header_len })
}

/// Checks a whole file: header shape plus a payload long enough to hold a final chunk.
pub fn inspect_file(bytes: &[u8]) -> Result<HeaderShape, NotAgeFile> {
    inspect_prefix(bytes, bytes.len() as u64)
}

/// How many leading bytes of a file of `file_len` bytes [`inspect_prefix`] needs: the
/// whole file, or enough for the largest header a file may have.
pub fn prefix_len(file_len: u64) -> usize {
    usize::try_from(file_len).map_or(MAX_HEADER_LEN, |len| len.min(MAX_HEADER_LEN))
}

/// Checks a file of `file_len` bytes from its first bytes (at least
/// [`prefix_len`]`(file_len)` of them): header shape plus a payload long enough to
/// hold a final chunk. A party receiving a large file checks it this way before
/// the rest arrives.
pub fn inspect_prefix(prefix: &[u8], file_len: u64) -> Result<HeaderShape, NotAgeFile> {
    let shape = inspect(prefix)?;
    if file_len.saturating_sub(shape.header_len as u64) < MIN_PAYLOAD_LEN as u64 {
        return Err(NotAgeFile("payload truncated"));
    }
    Ok(shape)
}

fn take_line(bytes: &[u8]) -> Result<(&[u8], &[u8]), NotAgeFile> {
    let limit = bytes.len().min(MAX_HEADER_LEN);
    let end = bytes[..limit]
        .iter()
        .position(|&b| b == b'\n')
        .ok_or(NotAgeFile("header line too long or truncated"))?;
    Ok((&bytes[..end], &bytes[end + 1..]))
}

/// A stanza body: 64-column base64 lines ending with a shorter one.
fn take_body(mut bytes: &[u8]) -> Result<(usize, &[u8]), NotAgeFile> {
    let mut chars = 0usize;
    loop {
        let (line, tail) = take_line(bytes)?;
        bytes = tail;
        if line.len() > 64 || !is_base64_nopad(line) {
            return Err(NotAgeFile("bad stanza body"));
        }
        chars += line.len();
        if chars > MAX_HEADER_LEN {
            return Err(NotAgeFile("stanza body too large"));
        }
        if line.len() < 64 {
            if chars % 4 == 1 {
                return Err(NotAgeFile("bad stanza body length"));
            }
            return Ok((chars * 3 / 4, bytes));
        }
    }
}

fn is_base64_nopad(text: &[u8]) -> bool {
    text.iter()
        .all(|&b| b.is_ascii_alphanumeric() || b == b'+' || b == b'/')
}
