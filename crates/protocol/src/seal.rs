//! Sealing with age v1 to X25519 recipients, and opening with X25519 identities.
//!
//! Any standard age implementation opens what this module seals and the other way
//! round; `tests/interop` proves it against an independent implementation.
//!
//! [`SealedBody`] is ciphertext by construction: it is made only by [`seal`] or by
//! [`SealedBody::from_bytes`], which refuses anything that is not shaped like an age
//! file with at least one X25519 stanza. Plaintext cannot become one by accident.

use std::fmt;
use std::io::{self, Read, Write};
use std::str::FromStr;

use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

use crate::age_header::{self, NotAgeFile};

/// Why sealing or opening failed. Cryptographic failures say only which of a few
/// things happened, never why in detail.
#[derive(Debug, Error)]
#[non_exhaustive]
pub enum SealError {
    /// Sealing needs at least one recipient.
    #[error("no recipients")]
    NoRecipients,
    /// A recipient string that is not an `age1…` X25519 recipient.
    #[error("invalid recipient: expected an age1… X25519 recipient")]
    InvalidRecipient,
    /// An identity that is not an `AGE-SECRET-KEY-1…` X25519 identity.
    #[error("invalid identity: expected AGE-SECRET-KEY-1… lines")]
    InvalidIdentity,
    /// Bytes that are not an age file.
    #[error(transparent)]
    NotAgeFile(#[from] NotAgeFile),
    /// No X25519 stanza, or a passphrase (scrypt) stanza.
    #[error("the file is not sealed to X25519 recipients")]
    UnsupportedStanza,
    /// None of the identities opens the file.
    #[error("no identity matches any recipient of this file")]
    NoMatchingKey,
    /// The header MAC or a payload chunk failed authentication, or the file is truncated.
    #[error("the file is corrupted or truncated")]
    Corrupt,
    /// Reading or writing failed.
    #[error("i/o error: {0}")]
    Io(#[source] io::Error),
}

impl From<io::Error> for SealError {
    fn from(err: io::Error) -> Self {
        match err.kind() {
            io::ErrorKind::InvalidData | io::ErrorKind::UnexpectedEof => SealError::Corrupt,
            _ => SealError::Io(err),
        }
    }
}

/// An X25519 age recipient (`age1…`): the public half an archive or auditor key.
#[derive(Clone)]
pub struct Recipient(age::x25519::Recipient);

impl FromStr for Recipient {
    type Err = SealError;

    fn from_str(text: &str) -> Result<Self, SealError> {
        text.trim()
            .parse()
            .map(Recipient)
            .map_err(|_| SealError::InvalidRecipient)
    }
}

impl fmt::Display for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

impl fmt::Debug for Recipient {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Recipient({})", self.0)
    }
}

impl PartialEq for Recipient {
    fn eq(&self, other: &Self) -> bool {
        self.to_string() == other.to_string()
    }
}

impl Eq for Recipient {}

/// An X25519 age identity (`AGE-SECRET-KEY-1…`). Zeroized on drop; `Debug` shows
/// only the public half.
#[derive(Clone)]
pub struct Identity(age::x25519::Identity);

impl fmt::Debug for Identity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Identity(public: {})", self.0.to_public())
    }
}

impl Identity {
    /// A fresh identity from the OS random generator.
    pub fn generate() -> Self {
        Identity(age::x25519::Identity::generate())
    }

    /// Parses one `AGE-SECRET-KEY-1…` string.
    pub fn parse(text: &str) -> Result<Self, SealError> {
        text.trim()
            .parse()
            .map(Identity)
            .map_err(|_| SealError::InvalidIdentity)
    }

    /// The recipient that seals to this identity.
    pub fn to_public(&self) -> Recipient {
        Recipient(self.0.to_public())
    }

    /// The secret string; keep it in memory only as long as needed.
    pub fn to_secret_string(&self) -> Zeroizing<String> {
        use age::secrecy::ExposeSecret as _;
        Zeroizing::new(self.0.to_string().expose_secret().to_owned())
    }
}

/// Parses an identity file as age and rage write them: `#` comments, blank lines,
/// and one `AGE-SECRET-KEY-1…` per line. At least one identity is required.
pub fn parse_identity_file(text: &str) -> Result<Vec<Identity>, SealError> {
    let identities = text
        .lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(Identity::parse)
        .collect::<Result<Vec<_>, _>>()?;
    if identities.is_empty() {
        return Err(SealError::InvalidIdentity);
    }
    Ok(identities)
}

/// An identity file exactly as `age-keygen` writes one: creation time, public key,
/// secret key.
pub fn format_identity_file(identity: &Identity, created_unix_ms: u64) -> Zeroizing<String> {
    Zeroizing::new(format!(
        "# created: {}\n# public key: {}\n{}\n",
        crate::time::rfc3339(created_unix_ms),
        identity.to_public(),
        identity.to_secret_string().as_str()
    ))
}

/// Parses a recipients file: `#` comments, blank lines, one `age1…` per line.
pub fn parse_recipients_file(text: &str) -> Result<Vec<Recipient>, SealError> {
    text.lines()
        .map(str::trim)
        .filter(|line| !line.is_empty() && !line.starts_with('#'))
        .map(str::parse)
        .collect()
}

/// The SHA-256 and length of a sealed body: what a record header commits to.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct BodyDigest {
    /// SHA-256 of the ciphertext.
    pub sha256: [u8; 32],
    /// Length of the ciphertext in bytes.
    pub len: u64,
}

/// Age ciphertext held in memory. See the module docs for why it cannot hold plaintext.
#[derive(Clone, PartialEq, Eq)]
pub struct SealedBody {
    bytes: Vec<u8>,
    digest: BodyDigest,
}

impl fmt::Debug for SealedBody {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "SealedBody({} bytes)", self.bytes.len())
    }
}

impl SealedBody {
    /// Accepts bytes shaped like an age file with at least one X25519 stanza and no
    /// passphrase stanza. Other stanzas are tolerated: age implementations add random
    /// "grease" stanzas so that parsers stay open to new recipient types.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SealError> {
        check_sealed_prefix(&bytes, bytes.len() as u64)?;
        let digest = BodyDigest {
            sha256: Sha256::digest(&bytes).into(),
            len: bytes.len() as u64,
        };
        Ok(Self { bytes, digest })
    }

    /// The ciphertext.
    pub fn as_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The ciphertext, consumed.
    pub fn into_bytes(self) -> Vec<u8> {
        self.bytes
    }

    /// SHA-256 and length of the ciphertext.
    pub fn digest(&self) -> BodyDigest {
        self.digest
    }

    /// Opens the body with any of `identities`.
    pub fn open(&self, identities: &[Identity]) -> Result<Zeroizing<Vec<u8>>, SealError> {
        let mut out = Zeroizing::new(Vec::with_capacity(self.bytes.len()));
        open_stream(identities, self.bytes.as_slice(), &mut *out)?;
        Ok(out)
    }
}

/// The rule [`SealedBody::from_bytes`] applies, checked on the first bytes of a body
/// of `body_len` bytes (at least [`age_header::prefix_len`]`(body_len)` of them, or
/// the whole body): what a receiver checks of a body too large to hold before storing
/// the rest.
pub fn check_sealed_prefix(prefix: &[u8], body_len: u64) -> Result<(), SealError> {
    let shape = age_header::inspect_prefix(prefix, body_len)?;
    let x25519 = shape.stanzas.iter().filter(|s| s.is_x25519()).count();
    if x25519 == 0 || shape.stanzas.iter().any(|s| s.tag == "scrypt") {
        return Err(SealError::UnsupportedStanza);
    }
    Ok(())
}

/// Seals `plaintext` in memory to every recipient.
pub fn seal(recipients: &[Recipient], plaintext: &[u8]) -> Result<SealedBody, SealError> {
    let mut out = Vec::with_capacity(plaintext.len() + 200 + 90 * recipients.len());
    seal_stream(recipients, plaintext, &mut out)?;
    SealedBody::from_bytes(out)
}

/// Seals a stream to every recipient, writing ciphertext to `output` as it goes (age
/// works in 64 KiB chunks, so memory stays flat for any size). Returns the digest of
/// what was written.
pub fn seal_stream<R: Read, W: Write>(
    recipients: &[Recipient],
    mut input: R,
    output: W,
) -> Result<BodyDigest, SealError> {
    if recipients.is_empty() {
        return Err(SealError::NoRecipients);
    }
    let encryptor = age::Encryptor::with_recipients(recipients.iter().map(|r| &r.0 as &dyn age::Recipient))
        .map_err(|_| SealError::NoRecipients)?;
    let mut hashing = HashingWriter::new(output);
    let mut writer = encryptor.wrap_output(&mut hashing).map_err(SealError::Io)?;
    io::copy(&mut input, &mut writer).map_err(SealError::Io)?;
    writer.finish().map_err(SealError::Io)?;
    Ok(hashing.finish())
}

/// Opens a stream with any of `identities`, writing plaintext to `output` as each
/// chunk authenticates. Returns the plaintext length.
///
/// A chunk is written only after it authenticates, but a file truncated or corrupted
/// part-way fails *after* earlier chunks were written: callers that write to a file
/// must discard it on error.
pub fn open_stream<R: Read, W: Write>(
    identities: &[Identity],
    input: R,
    mut output: W,
) -> Result<u64, SealError> {
    let decryptor = age::Decryptor::new(input).map_err(map_decrypt_error)?;
    let mut reader = decryptor
        .decrypt(identities.iter().map(|i| &i.0 as &dyn age::Identity))
        .map_err(map_decrypt_error)?;
    let mut buf = Zeroizing::new(vec![0u8; 64 * 1024]);
    let mut total = 0u64;
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(err) if err.kind() == io::ErrorKind::Interrupted => continue,
            Err(err) => return Err(err.into()),
        };
        output.write_all(&buf[..n]).map_err(SealError::Io)?;
        total += n as u64;
    }
    Ok(total)
}

fn map_decrypt_error(err: age::DecryptError) -> SealError {
    match err {
        age::DecryptError::NoMatchingKeys => SealError::NoMatchingKey,
        age::DecryptError::Io(err) => err.into(),
        age::DecryptError::InvalidHeader | age::DecryptError::UnknownFormat => {
            SealError::NotAgeFile(NotAgeFile("invalid header"))
        }
        _ => SealError::Corrupt,
    }
}

/// A writer that hashes and counts what passes through it.
struct HashingWriter<W> {
    inner: W,
    hasher: Sha256,
    len: u64,
}

impl<W: Write> HashingWriter<W> {
    fn new(inner: W) -> Self {
        Self {
            inner,
            hasher: Sha256::new(),
            len: 0,
        }
    }

    fn finish(self) -> BodyDigest {
        BodyDigest {
            sha256: self.hasher.finalize().into(),
            len: self.len,
        }
    }
}

impl<W: Write> Write for HashingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.len += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}
