//! M-of-N shares of a secret (Shamir over GF(256), by the `blahaj` crate), in a form
//! a custodian can keep on paper or sealed to their age recipient.
//!
//! A share carries, besides its Shamir point, what recovery must check: which
//! secret it belongs to (`kind`, a random split id), the threshold and the number of
//! shares, and a commitment to the secret. Shamir itself has no integrity: a wrong
//! point rebuilds a wrong secret without complaint, so recovery compares what it
//! rebuilt against the commitment and refuses a mismatch. The commitment is SHA-256
//! of the secret with the split id, so it tells nothing about a secret of 32 random
//! bytes.
//!
//! Binary form (then bech32m with the prefix `vellum-share`, so a mistyped character
//! is caught before anything else):
//!
//! ```text
//! version      1   0x01
//! kind         1   0x01 escrow identity, 0x02 organisation signing key
//! split id    16   random, the same in every share of one split
//! threshold    1   M, shares needed (2..=N)
//! total        1   N, shares made (M..=255)
//! index        1   this share's Shamir x coordinate (1..=N)
//! commitment  32   SHA-256("vellum escrow commitment v1" || kind || split id || secret)
//! value       ..   the Shamir y coordinates, one byte per secret byte
//! ```

use std::collections::BTreeSet;
use std::fmt;

use bech32::primitives::decode::CheckedHrpstring;
use bech32::{Bech32m, Hrp};
use sha2::{Digest as _, Sha256};
use zeroize::Zeroizing;

const VERSION: u8 = 1;
const HEADER: usize = 1 + 1 + 16 + 1 + 1 + 1 + 32;
/// The bech32 prefix of a share's text.
pub const PREFIX: &str = "vellum-share";

/// What a split secret is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SecretKind {
    /// The escrow identity (an age X25519 identity, `AGE-SECRET-KEY-1…`).
    EscrowIdentity,
    /// The organisation's signing key (a signed-note signer key).
    OrgSigningKey,
}

impl SecretKind {
    fn byte(self) -> u8 {
        match self {
            SecretKind::EscrowIdentity => 1,
            SecretKind::OrgSigningKey => 2,
        }
    }

    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(SecretKind::EscrowIdentity),
            2 => Some(SecretKind::OrgSigningKey),
            _ => None,
        }
    }

    /// How people call it.
    pub fn describe(self) -> &'static str {
        match self {
            SecretKind::EscrowIdentity => "escrow identity",
            SecretKind::OrgSigningKey => "organisation signing key",
        }
    }
}

/// Why a secret could not be split.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum SplitError {
    /// M or N out of range.
    #[error("a split needs 2 <= M <= N <= 255 (got {threshold} of {total})")]
    Parameters {
        /// M.
        threshold: u8,
        /// N.
        total: u8,
    },
    /// Nothing to split.
    #[error("the secret is empty")]
    Empty,
    /// The OS random generator failed.
    #[error("no randomness: {0}")]
    Random(String),
}

/// Why a share's text was refused.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum ShareError {
    /// Not bech32m, a checksum mismatch (a mistyped character), or another prefix.
    #[error("not a share, or a character is wrong (the checksum does not match)")]
    Checksum,
    /// A version this program does not read.
    #[error("a share of unknown version {0}")]
    UnknownVersion(u8),
    /// Fields out of range.
    #[error("a malformed share: {0}")]
    Malformed(&'static str),
}

/// Why shares did not rebuild a secret. Nothing is rebuilt in any of these cases.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum RecoverError {
    /// No share given.
    #[error("no shares given")]
    NoShares,
    /// Shares of two different splits (or of two different secrets).
    #[error("the shares come from different splits: share {first} and share {other} do not belong together")]
    DifferentSplits {
        /// The index of a share of the first split.
        first: u8,
        /// The index of a share of another split.
        other: u8,
    },
    /// The same share twice.
    #[error("share {0} was given twice")]
    Duplicate(u8),
    /// Fewer than M shares.
    #[error("{have} distinct shares given, {need} needed")]
    TooFew {
        /// Distinct shares given.
        have: usize,
        /// M.
        need: u8,
    },
    /// The shares rebuilt something that is not the secret: one of them is wrong
    /// (altered, or from a damaged copy).
    #[error("the shares do not rebuild the secret they were made from: at least one share is wrong")]
    WrongShare,
}

/// One custodian's share.
#[derive(Clone, PartialEq, Eq)]
pub struct Share {
    kind: SecretKind,
    split_id: [u8; 16],
    threshold: u8,
    total: u8,
    index: u8,
    commitment: [u8; 32],
    value: Zeroizing<Vec<u8>>,
}

impl fmt::Debug for Share {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "Share({} {} of {}, threshold {})",
            self.kind.describe(),
            self.index,
            self.total,
            self.threshold
        )
    }
}

fn commitment(kind: SecretKind, split_id: &[u8; 16], secret: &[u8]) -> [u8; 32] {
    let mut hash = Sha256::new();
    hash.update(b"vellum escrow commitment v1");
    hash.update([kind.byte()]);
    hash.update(split_id);
    hash.update(secret);
    hash.finalize().into()
}

/// Splits `secret` into `total` shares of which any `threshold` rebuild it.
pub fn split(kind: SecretKind, secret: &[u8], threshold: u8, total: u8) -> Result<Vec<Share>, SplitError> {
    if threshold < 2 || total < threshold {
        return Err(SplitError::Parameters { threshold, total });
    }
    if secret.is_empty() {
        return Err(SplitError::Empty);
    }
    let mut split_id = [0u8; 16];
    getrandom::getrandom(&mut split_id).map_err(|e| SplitError::Random(e.to_string()))?;
    let commitment = commitment(kind, &split_id, secret);
    let points = blahaj::Sharks(threshold).dealer(secret).take(usize::from(total));
    Ok(points
        .map(|point| {
            let bytes = Zeroizing::new(Vec::from(&point));
            Share {
                kind,
                split_id,
                threshold,
                total,
                index: bytes[0],
                commitment,
                value: Zeroizing::new(bytes[1..].to_vec()),
            }
        })
        .collect())
}

/// Rebuilds the secret from at least M shares of one split, checked against the
/// commitment the shares carry.
pub fn recover(shares: &[Share]) -> Result<(SecretKind, Zeroizing<Vec<u8>>), RecoverError> {
    let first = shares.first().ok_or(RecoverError::NoShares)?;
    let mut seen = BTreeSet::new();
    for share in shares {
        let same_split = share.kind == first.kind
            && share.split_id == first.split_id
            && share.threshold == first.threshold
            && share.total == first.total
            && share.commitment == first.commitment
            && share.value.len() == first.value.len();
        if !same_split {
            return Err(RecoverError::DifferentSplits {
                first: first.index,
                other: share.index,
            });
        }
        if !seen.insert(share.index) {
            return Err(RecoverError::Duplicate(share.index));
        }
    }
    if seen.len() < usize::from(first.threshold) {
        return Err(RecoverError::TooFew {
            have: seen.len(),
            need: first.threshold,
        });
    }
    let points: Vec<blahaj::Share> = shares
        .iter()
        .map(|s| {
            let mut bytes = Zeroizing::new(Vec::with_capacity(1 + s.value.len()));
            bytes.push(s.index);
            bytes.extend_from_slice(&s.value);
            blahaj::Share::try_from(bytes.as_slice())
        })
        .collect::<Result<_, _>>()
        .map_err(|_| RecoverError::WrongShare)?;
    let secret = Zeroizing::new(
        blahaj::Sharks(first.threshold)
            .recover(&points)
            .map_err(|_| RecoverError::WrongShare)?,
    );
    if commitment(first.kind, &first.split_id, &secret) != first.commitment {
        return Err(RecoverError::WrongShare);
    }
    Ok((first.kind, secret))
}

impl Share {
    /// What secret it is a share of.
    pub fn kind(&self) -> SecretKind {
        self.kind
    }

    /// Its index (1..=N).
    pub fn index(&self) -> u8 {
        self.index
    }

    /// M.
    pub fn threshold(&self) -> u8 {
        self.threshold
    }

    /// N.
    pub fn total(&self) -> u8 {
        self.total
    }

    /// The split it belongs to, in hex (the same on every share of one split).
    pub fn split_id(&self) -> String {
        self.split_id.iter().map(|b| format!("{b:02x}")).collect()
    }

    fn to_bytes(&self) -> Zeroizing<Vec<u8>> {
        let mut out = Zeroizing::new(Vec::with_capacity(HEADER + self.value.len()));
        out.extend_from_slice(&[VERSION, self.kind.byte()]);
        out.extend_from_slice(&self.split_id);
        out.extend_from_slice(&[self.threshold, self.total, self.index]);
        out.extend_from_slice(&self.commitment);
        out.extend_from_slice(&self.value);
        out
    }

    /// The share as one bech32m string (lower case), `vellum-share1…`.
    pub fn to_text(&self) -> Zeroizing<String> {
        let hrp = Hrp::parse_unchecked(PREFIX);
        Zeroizing::new(
            bech32::encode::<Bech32m>(hrp, &self.to_bytes())
                .unwrap_or_else(|_| unreachable!("a share is far below bech32m's length limit")),
        )
    }

    /// The share laid out for paper: a heading, then the text in groups of five
    /// characters, six groups a line. [`Share::parse`] reads it back (whitespace and
    /// lines starting with `#` are ignored).
    pub fn to_paper(&self, custodian: &str) -> Zeroizing<String> {
        let text = self.to_text();
        let mut out = Zeroizing::new(format!(
            "# Vellum escrow share: {} share {} of {} ({} needed)\n# custodian: {custodian}\n# split: {}\n",
            self.kind.describe(),
            self.index,
            self.total,
            self.threshold,
            self.split_id()
        ));
        for line in text.as_bytes().chunks(30) {
            let groups: Vec<&str> = line
                .chunks(5)
                .map(|g| std::str::from_utf8(g).unwrap_or_default())
                .collect();
            out.push_str(&groups.join(" "));
            out.push('\n');
        }
        out
    }

    /// Reads a share from its text or paper form.
    pub fn parse(text: &str) -> Result<Self, ShareError> {
        let compact: Zeroizing<String> = Zeroizing::new(
            text.lines()
                .filter(|l| !l.trim_start().starts_with('#'))
                .flat_map(str::chars)
                .filter(|c| !c.is_whitespace())
                .collect::<String>()
                .to_ascii_lowercase(),
        );
        let checked = CheckedHrpstring::new::<Bech32m>(&compact).map_err(|_| ShareError::Checksum)?;
        if checked.hrp().as_str() != PREFIX {
            return Err(ShareError::Checksum);
        }
        let bytes: Zeroizing<Vec<u8>> = Zeroizing::new(checked.byte_iter().collect());
        if bytes.first() != Some(&VERSION) {
            return Err(bytes
                .first()
                .map_or(ShareError::Malformed("empty"), |v| ShareError::UnknownVersion(*v)));
        }
        if bytes.len() <= HEADER {
            return Err(ShareError::Malformed("too short"));
        }
        let kind = SecretKind::from_byte(bytes[1]).ok_or(ShareError::Malformed("unknown kind"))?;
        let mut split_id = [0u8; 16];
        split_id.copy_from_slice(&bytes[2..18]);
        let (threshold, total, index) = (bytes[18], bytes[19], bytes[20]);
        if threshold < 2 || total < threshold || index == 0 || index > total {
            return Err(ShareError::Malformed("threshold, total or index out of range"));
        }
        let mut commitment = [0u8; 32];
        commitment.copy_from_slice(&bytes[21..HEADER]);
        Ok(Share {
            kind,
            split_id,
            threshold,
            total,
            index,
            commitment,
            value: Zeroizing::new(bytes[HEADER..].to_vec()),
        })
    }
}

#[cfg(test)]
#[allow(
    clippy::unwrap_used,
    clippy::expect_used,
    reason = "a failed unwrap is a failed test"
)]
mod tests {
    use super::*;

    const SECRET: &[u8] = b"AGE-SECRET-KEY-1 stands in for thirty-two random bytes";

    #[test]
    fn any_m_shares_rebuild_the_secret() {
        let shares = split(SecretKind::EscrowIdentity, SECRET, 3, 5).unwrap();
        assert_eq!(shares.len(), 5);
        for a in 0..5 {
            for b in a + 1..5 {
                for c in b + 1..5 {
                    let chosen = [shares[a].clone(), shares[b].clone(), shares[c].clone()];
                    let (kind, secret) = recover(&chosen).unwrap();
                    assert_eq!((kind, secret.as_slice()), (SecretKind::EscrowIdentity, SECRET));
                }
            }
        }
        // More than M works too.
        assert_eq!(recover(&shares).unwrap().1.as_slice(), SECRET);
    }

    #[test]
    fn text_and_paper_forms_round_trip() {
        let shares = split(SecretKind::OrgSigningKey, SECRET, 2, 3).unwrap();
        let text = shares[1].to_text();
        assert!(text.starts_with("vellum-share1"), "{}", text.as_str());
        assert_eq!(Share::parse(&text).unwrap(), shares[1]);
        let paper = shares[1].to_paper("Records Officer");
        assert!(paper.contains("share 2 of 3 (2 needed)"), "{}", paper.as_str());
        assert_eq!(Share::parse(&paper).unwrap(), shares[1]);
        assert_eq!(Share::parse(&paper.to_uppercase()).unwrap(), shares[1]);
    }

    #[test]
    fn a_mistyped_character_is_caught_by_the_checksum() {
        let text = split(SecretKind::EscrowIdentity, SECRET, 2, 2).unwrap()[0].to_text();
        for at in [PREFIX.len() + 1, text.len() / 2, text.len() - 1] {
            let mut typo = text.as_bytes().to_vec();
            typo[at] = if typo[at] == b'q' { b'p' } else { b'q' };
            let typo = String::from_utf8(typo).unwrap();
            assert_eq!(Share::parse(&typo), Err(ShareError::Checksum), "at {at}");
        }
        assert_eq!(Share::parse("age1somethingelse"), Err(ShareError::Checksum));
        assert_eq!(Share::parse(""), Err(ShareError::Checksum));
    }

    #[test]
    fn bad_sets_of_shares_are_refused_with_their_own_error() {
        let shares = split(SecretKind::EscrowIdentity, SECRET, 3, 5).unwrap();
        let other = split(SecretKind::EscrowIdentity, SECRET, 3, 5).unwrap();
        assert_eq!(recover(&[]), Err(RecoverError::NoShares));
        assert_eq!(
            recover(&shares[..2]),
            Err(RecoverError::TooFew { have: 2, need: 3 })
        );
        assert_eq!(
            recover(&[shares[0].clone(), shares[1].clone(), shares[1].clone()]),
            Err(RecoverError::Duplicate(shares[1].index))
        );
        assert!(matches!(
            recover(&[shares[0].clone(), shares[1].clone(), other[2].clone()]),
            Err(RecoverError::DifferentSplits { .. })
        ));
        // A share whose value was altered (and whose text was then re-encoded, so the
        // checksum passes): the rebuilt secret does not match the commitment.
        let mut altered = shares[2].clone();
        altered.value[0] ^= 1;
        let altered = Share::parse(&altered.to_text()).unwrap();
        assert_eq!(
            recover(&[shares[0].clone(), shares[1].clone(), altered]),
            Err(RecoverError::WrongShare)
        );
        assert_eq!(
            split(SecretKind::EscrowIdentity, SECRET, 1, 3).unwrap_err(),
            SplitError::Parameters {
                threshold: 1,
                total: 3
            }
        );
        assert_eq!(
            split(SecretKind::EscrowIdentity, SECRET, 4, 3).unwrap_err(),
            SplitError::Parameters {
                threshold: 4,
                total: 3
            }
        );
        assert_eq!(
            split(SecretKind::EscrowIdentity, b"", 2, 3).unwrap_err(),
            SplitError::Empty
        );
    }

    /// The point of M-of-N: M-1 shares are consistent with every secret. For any
    /// target, one more point exists that completes the M-1 real shares to it; so
    /// the M-1 shares cannot tell the real secret from any other.
    #[test]
    fn m_minus_one_shares_are_consistent_with_any_secret() {
        let shares = split(SecretKind::EscrowIdentity, SECRET, 3, 5).unwrap();
        let known = [shares[0].clone(), shares[3].clone()];
        let targets: [&[u8]; 2] = [
            &[0u8; SECRET.len()],
            b"an entirely different secret of equal length!!!!!!!!!!",
        ];
        for target in targets {
            assert_eq!(target.len(), SECRET.len());
            // Build the completing point byte by byte: 256 candidates per byte.
            let x = 200u8;
            let mut y = Vec::new();
            for (i, wanted) in target.iter().enumerate() {
                let pick = (0..=255u8)
                    .find(|candidate| {
                        let points: Vec<blahaj::Share> = known
                            .iter()
                            .map(|s| blahaj::Share::try_from([s.index, s.value[i]].as_slice()).unwrap())
                            .chain([blahaj::Share::try_from([x, *candidate].as_slice()).unwrap()])
                            .collect();
                        blahaj::Sharks(3).recover(&points).unwrap() == [*wanted]
                    })
                    .expect("some point completes every byte");
                y.push(pick);
            }
            let points: Vec<blahaj::Share> = known
                .iter()
                .map(|s| {
                    let mut bytes = vec![s.index];
                    bytes.extend_from_slice(&s.value);
                    blahaj::Share::try_from(bytes.as_slice()).unwrap()
                })
                .chain([blahaj::Share::try_from([&[x], y.as_slice()].concat().as_slice()).unwrap()])
                .collect();
            assert_eq!(blahaj::Sharks(3).recover(&points).unwrap(), target);
        }
    }
}
