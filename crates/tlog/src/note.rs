//! C2SP signed notes (`c2sp.org/signed-note`) with Ed25519 keys.
//!
//! A note is UTF-8 text ending in a newline, a blank line, then one or more lines
//! `— <key name> base64(key id || signature)`. The key id of an Ed25519 key is
//! `SHA-256(name || 0x0A || 0x01 || public key)[:4]`, big-endian. Keys travel as the
//! Go `sumdb/note` strings: a verifier key `name+hex(id)+base64(0x01 || public key)`,
//! a signer key `PRIVATE+KEY+name+hex(id)+base64(0x01 || seed)`.
//!
//! Vellum signs three kinds of note with this module: log checkpoints (log key),
//! keyring statements (organisation key) and, later, disposition certificates.

use std::fmt;

use base64::{Engine as _, engine::general_purpose::STANDARD};
use ed25519_dalek::{Signature, Signer as _, SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};
use thiserror::Error;
use zeroize::Zeroizing;

/// The largest note this module parses, in bytes.
pub const MAX_NOTE_LEN: usize = 64 * 1024;
/// The largest number of signature lines this module accepts on one note
/// (the spec asks verifiers to accept at least 16).
pub const MAX_SIGNATURES: usize = 32;

const ED25519_ALG: u8 = 0x01;
const SIG_PREFIX: &str = "\u{2014} ";
const SKEY_PREFIX: &str = "PRIVATE+KEY+";

/// Why a note or a note key was refused.
#[derive(Debug, Error, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum NoteError {
    /// Larger than [`MAX_NOTE_LEN`].
    #[error("note is larger than {MAX_NOTE_LEN} bytes")]
    TooLarge,
    /// Not UTF-8, a control character, no blank line before the signatures, or a
    /// malformed signature line.
    #[error("malformed note: {0}")]
    Malformed(&'static str),
    /// More than [`MAX_SIGNATURES`] signature lines.
    #[error("note has more than {MAX_SIGNATURES} signatures")]
    TooManySignatures,
    /// A key name that is empty or holds a space or `+`.
    #[error("invalid key name")]
    InvalidKeyName,
    /// A key string that does not decode, or whose id does not match its key.
    #[error("malformed note key")]
    MalformedKey,
    /// A signature by a trusted key (same name and id) did not verify.
    #[error("a signature by trusted key {0:?} does not verify")]
    InvalidSignature(String),
    /// No signature from any trusted key.
    #[error("note is not signed by any trusted key")]
    NoTrustedSignature,
}

/// Checks a key name as the spec requires: non-empty, no Unicode space, no `+`.
pub fn check_key_name(name: &str) -> Result<(), NoteError> {
    if name.is_empty()
        || name
            .chars()
            .any(|c| c.is_whitespace() || c == '+' || c.is_control())
    {
        return Err(NoteError::InvalidKeyName);
    }
    Ok(())
}

/// `SHA-256(name || 0x0A || 0x01 || public key)[:4]` as a big-endian integer.
pub fn key_id(name: &str, public_key: &[u8; 32]) -> u32 {
    let mut hasher = Sha256::new();
    hasher.update(name.as_bytes());
    hasher.update([b'\n', ED25519_ALG]);
    hasher.update(public_key);
    let digest = hasher.finalize();
    u32::from_be_bytes([digest[0], digest[1], digest[2], digest[3]])
}

/// A named Ed25519 key that signs notes. Its `Debug` never shows the key.
pub struct NoteSigner {
    name: String,
    id: u32,
    key: SigningKey,
}

impl fmt::Debug for NoteSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("NoteSigner")
            .field("name", &self.name)
            .field("id", &format_args!("{:08x}", self.id))
            .finish_non_exhaustive()
    }
}

impl NoteSigner {
    /// A signer from a 32-byte Ed25519 seed (the caller draws it from the OS RNG).
    pub fn from_seed(name: &str, seed: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let seed = Zeroizing::new(seed);
        let key = SigningKey::from_bytes(&seed);
        let id = key_id(name, key.verifying_key().as_bytes());
        Ok(Self {
            name: name.to_owned(),
            id,
            key,
        })
    }

    /// Parses a signer key `PRIVATE+KEY+name+hex(id)+base64(0x01 || seed)`.
    pub fn from_skey(text: &str) -> Result<Self, NoteError> {
        let rest = text
            .trim_end()
            .strip_prefix(SKEY_PREFIX)
            .ok_or(NoteError::MalformedKey)?;
        let (name, id, key) = split_key(rest)?;
        let seed: Zeroizing<[u8; 32]> =
            Zeroizing::new(key.as_slice().try_into().map_err(|_| NoteError::MalformedKey)?);
        let signer = Self::from_seed(name, *seed)?;
        if signer.id != id {
            return Err(NoteError::MalformedKey);
        }
        Ok(signer)
    }

    /// The signer key string; keep it secret.
    pub fn to_skey(&self) -> Zeroizing<String> {
        let mut raw = Zeroizing::new(Vec::with_capacity(33));
        raw.push(ED25519_ALG);
        raw.extend_from_slice(self.key.as_bytes());
        Zeroizing::new(format!(
            "{SKEY_PREFIX}{}+{:08x}+{}",
            self.name,
            self.id,
            STANDARD.encode(&*raw)
        ))
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The public half, to pin in verifiers.
    pub fn verifier(&self) -> NoteVerifier {
        NoteVerifier {
            name: self.name.clone(),
            id: self.id,
            key: self.key.verifying_key(),
        }
    }

    /// Signs `text` (which must end in a newline and hold no control character but
    /// newlines) and returns the whole note: text, blank line, signature line.
    pub fn sign(&self, text: &str) -> Result<String, NoteError> {
        check_text(text)?;
        Ok(self.sign_checked_text(text))
    }

    /// [`NoteSigner::sign`] for text the caller built to be valid.
    pub(crate) fn sign_checked_text(&self, text: &str) -> String {
        let mut note = String::with_capacity(text.len() + 128);
        note.push_str(text);
        note.push('\n');
        note.push_str(&self.signature_line(text));
        note
    }

    /// The signature line alone (`— name base64(id || sig)\n`), for adding a second
    /// signature to a note.
    pub fn signature_line(&self, text: &str) -> String {
        let signature = self.key.sign(text.as_bytes());
        let mut raw = Vec::with_capacity(68);
        raw.extend_from_slice(&self.id.to_be_bytes());
        raw.extend_from_slice(&signature.to_bytes());
        format!("{SIG_PREFIX}{} {}\n", self.name, STANDARD.encode(raw))
    }
}

/// A named Ed25519 public key that verifies notes.
#[derive(Clone, PartialEq, Eq)]
pub struct NoteVerifier {
    name: String,
    id: u32,
    key: VerifyingKey,
}

impl fmt::Debug for NoteVerifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "NoteVerifier({self})")
    }
}

impl fmt::Display for NoteVerifier {
    /// The verifier key string `name+hex(id)+base64(0x01 || public key)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut raw = vec![ED25519_ALG];
        raw.extend_from_slice(self.key.as_bytes());
        write!(f, "{}+{:08x}+{}", self.name, self.id, STANDARD.encode(raw))
    }
}

impl NoteVerifier {
    /// Parses a verifier key `name+hex(id)+base64(0x01 || public key)`.
    pub fn from_vkey(text: &str) -> Result<Self, NoteError> {
        let (name, id, key) = split_key(text.trim_end())?;
        let bytes: [u8; 32] = key.as_slice().try_into().map_err(|_| NoteError::MalformedKey)?;
        let verifier = Self::from_public_key(name, bytes)?;
        if verifier.id != id {
            return Err(NoteError::MalformedKey);
        }
        Ok(verifier)
    }

    /// A verifier from a key name and a raw 32-byte Ed25519 public key.
    pub fn from_public_key(name: &str, public_key: [u8; 32]) -> Result<Self, NoteError> {
        check_key_name(name)?;
        let key = VerifyingKey::from_bytes(&public_key).map_err(|_| NoteError::MalformedKey)?;
        if key.is_weak() {
            return Err(NoteError::MalformedKey);
        }
        Ok(Self {
            name: name.to_owned(),
            id: key_id(name, &public_key),
            key,
        })
    }

    /// The key name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The key id.
    pub fn key_id(&self) -> u32 {
        self.id
    }

    /// The raw Ed25519 public key.
    pub fn public_key(&self) -> &[u8; 32] {
        self.key.as_bytes()
    }

    fn verifies(&self, text: &str, signature: &[u8]) -> bool {
        let Ok(signature) = Signature::from_slice(signature) else {
            return false;
        };
        self.key.verify_strict(text.as_bytes(), &signature).is_ok()
    }
}

/// Splits `name+hex8+base64` into its parts; the base64 must start with the Ed25519 byte.
fn split_key(text: &str) -> Result<(&str, u32, Zeroizing<Vec<u8>>), NoteError> {
    let mut parts = text.splitn(3, '+');
    let (Some(name), Some(id_hex), Some(key_b64)) = (parts.next(), parts.next(), parts.next()) else {
        return Err(NoteError::MalformedKey);
    };
    check_key_name(name).map_err(|_| NoteError::MalformedKey)?;
    if id_hex.len() != 8 || !id_hex.bytes().all(|b| b.is_ascii_hexdigit()) {
        return Err(NoteError::MalformedKey);
    }
    let id = u32::from_str_radix(id_hex, 16).map_err(|_| NoteError::MalformedKey)?;
    let raw = Zeroizing::new(STANDARD.decode(key_b64).map_err(|_| NoteError::MalformedKey)?);
    match raw.split_first() {
        Some((&ED25519_ALG, key)) if key.len() == 32 => Ok((name, id, Zeroizing::new(key.to_vec()))),
        _ => Err(NoteError::MalformedKey),
    }
}

/// Checks note text: non-empty, ends in a newline, no control character but newline.
fn check_text(text: &str) -> Result<(), NoteError> {
    if text.len() > MAX_NOTE_LEN {
        return Err(NoteError::TooLarge);
    }
    if !text.ends_with('\n') {
        return Err(NoteError::Malformed("text does not end in a newline"));
    }
    if text.chars().any(|c| c.is_control() && c != '\n') {
        return Err(NoteError::Malformed("control character in text"));
    }
    Ok(())
}

/// One signature line of a note, not yet checked.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NoteSignature {
    /// The key name.
    pub name: String,
    /// The key id.
    pub key_id: u32,
    /// The signature bytes (after the key id).
    pub signature: Vec<u8>,
}

/// A note split into text and signature lines, no signature checked yet.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Note {
    text: String,
    signatures: Vec<NoteSignature>,
}

impl Note {
    /// Splits a note at its last blank line and parses each signature line.
    pub fn parse(bytes: &[u8]) -> Result<Self, NoteError> {
        if bytes.len() > MAX_NOTE_LEN {
            return Err(NoteError::TooLarge);
        }
        let note = std::str::from_utf8(bytes).map_err(|_| NoteError::Malformed("not UTF-8"))?;
        if note.chars().any(|c| c.is_control() && c != '\n') {
            return Err(NoteError::Malformed("control character"));
        }
        let split = note
            .rfind("\n\n")
            .ok_or(NoteError::Malformed("no blank line before signatures"))?;
        let (text, sigs) = (&note[..=split], &note[split + 2..]);
        if sigs.is_empty() || !sigs.ends_with('\n') {
            return Err(NoteError::Malformed("signature block must end in a newline"));
        }
        let mut signatures = Vec::new();
        for line in sigs[..sigs.len() - 1].split('\n') {
            if signatures.len() == MAX_SIGNATURES {
                return Err(NoteError::TooManySignatures);
            }
            signatures.push(parse_signature_line(line)?);
        }
        Ok(Self {
            text: text.to_owned(),
            signatures,
        })
    }

    /// The signed text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// The signature lines.
    pub fn signatures(&self) -> &[NoteSignature] {
        &self.signatures
    }

    /// Checks the signatures against trusted keys: every signature whose name and id
    /// match a trusted key must verify, and at least one must.
    pub fn verify(self, trusted: &[&NoteVerifier]) -> Result<VerifiedNote, NoteError> {
        let mut verified_by = Vec::new();
        for sig in &self.signatures {
            let Some(key) = trusted.iter().find(|k| k.name == sig.name && k.id == sig.key_id) else {
                continue;
            };
            if !key.verifies(&self.text, &sig.signature) {
                return Err(NoteError::InvalidSignature(sig.name.clone()));
            }
            verified_by.push(sig.name.clone());
        }
        if verified_by.is_empty() {
            return Err(NoteError::NoTrustedSignature);
        }
        Ok(VerifiedNote {
            text: self.text,
            verified_by,
        })
    }
}

fn parse_signature_line(line: &str) -> Result<NoteSignature, NoteError> {
    let rest = line
        .strip_prefix(SIG_PREFIX)
        .ok_or(NoteError::Malformed("signature line must start with an em dash"))?;
    let (name, b64) = rest
        .split_once(' ')
        .ok_or(NoteError::Malformed("signature line has no key name"))?;
    check_key_name(name).map_err(|_| NoteError::Malformed("invalid key name in signature line"))?;
    let raw = STANDARD
        .decode(b64)
        .map_err(|_| NoteError::Malformed("signature is not base64"))?;
    if raw.len() < 5 {
        return Err(NoteError::Malformed("signature too short"));
    }
    let (id, signature) = raw.split_at(4);
    Ok(NoteSignature {
        name: name.to_owned(),
        key_id: u32::from_be_bytes([id[0], id[1], id[2], id[3]]),
        signature: signature.to_vec(),
    })
}

/// The text of a note at least one trusted key has signed, with every trusted
/// signature verified. The only way to get one is [`Note::verify`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedNote {
    text: String,
    verified_by: Vec<String>,
}

impl VerifiedNote {
    /// The verified text, including its final newline.
    pub fn text(&self) -> &str {
        &self.text
    }

    /// Names of the trusted keys whose signatures verified.
    pub fn verified_by(&self) -> &[String] {
        &self.verified_by
    }
}

/// Parses `bytes` as a note and verifies it against one trusted key.
pub fn open(bytes: &[u8], trusted: &NoteVerifier) -> Result<VerifiedNote, NoteError> {
    Note::parse(bytes)?.verify(&[trusted])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn signer(name: &str, seed: u8) -> NoteSigner {
        NoteSigner::from_seed(name, [seed; 32]).unwrap()
    }

    #[test]
    fn sign_then_open() {
        let s = signer("example.com/a", 1);
        let note = s.sign("hello\nworld\n").unwrap();
        let verified = open(note.as_bytes(), &s.verifier()).unwrap();
        assert_eq!(verified.text(), "hello\nworld\n");
        assert_eq!(verified.verified_by(), ["example.com/a"]);
    }

    #[test]
    fn keys_round_trip_through_strings() {
        let s = signer("example.com/a", 2);
        let again = NoteSigner::from_skey(&s.to_skey()).unwrap();
        assert_eq!(again.verifier(), s.verifier());
        let vkey = s.verifier().to_string();
        assert_eq!(NoteVerifier::from_vkey(&vkey).unwrap(), s.verifier());
        // A key id that does not match the key is refused.
        let (head, tail) = vkey.split_at(vkey.find('+').unwrap() + 1);
        let forged = format!("{head}00000000{}", &tail[8..]);
        assert_eq!(NoteVerifier::from_vkey(&forged), Err(NoteError::MalformedKey));
    }

    #[test]
    fn text_with_blank_lines_splits_at_the_last_one() {
        let s = signer("n", 3);
        let note = s.sign("a\n\nb\n").unwrap();
        assert_eq!(open(note.as_bytes(), &s.verifier()).unwrap().text(), "a\n\nb\n");
    }

    #[test]
    fn wrong_or_unknown_keys_are_refused() {
        let a = signer("example.com/a", 4);
        let note = a.sign("text\n").unwrap();
        // Another key under another name: the signature is unknown, so nothing verifies.
        assert_eq!(
            open(note.as_bytes(), &signer("example.com/b", 5).verifier()),
            Err(NoteError::NoTrustedSignature)
        );
        // A tampered text under the right key is an invalid signature.
        let tampered = note.replacen("text", "texT", 1);
        assert_eq!(
            open(tampered.as_bytes(), &a.verifier()),
            Err(NoteError::InvalidSignature("example.com/a".into()))
        );
    }

    #[test]
    fn unknown_signatures_are_ignored_when_a_trusted_one_verifies() {
        let a = signer("example.com/a", 6);
        let b = signer("example.com/b", 7);
        let mut note = a.sign("text\n").unwrap();
        note.push_str(&b.signature_line("text\n"));
        let verified = open(note.as_bytes(), &b.verifier()).unwrap();
        assert_eq!(verified.verified_by(), ["example.com/b"]);
    }

    #[test]
    fn refuses_bad_text_and_names() {
        let s = signer("n", 8);
        assert!(s.sign("no newline").is_err());
        assert!(s.sign("tab\there\n").is_err());
        assert_eq!(
            NoteSigner::from_seed("has space", [0; 32]).unwrap_err(),
            NoteError::InvalidKeyName
        );
        assert_eq!(
            NoteSigner::from_seed("a+b", [0; 32]).unwrap_err(),
            NoteError::InvalidKeyName
        );
        assert!(Note::parse(b"text\n").is_err());
        assert!(Note::parse(b"text\n\n- n AAAA\n").is_err());
    }
}
