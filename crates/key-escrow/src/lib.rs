//! Vellum's key escrow: the escrow identity (and optionally the organisation's
//! signing key) split M-of-N among custodians, and the recovery that rebuilds it in
//! memory only, to re-wrap epoch identities to someone who may read.
//!
//! * [`shares`]: Shamir shares with the checks Shamir lacks (which split, how many
//!   are needed, a commitment that catches a wrong share), as text with a checksum.
//! * [`Escrow`]: the ceremony (a fresh escrow identity, split, each share sealed to
//!   its custodian's age recipient) and the recovery (shares, sealed or on paper, back
//!   to the identity; epoch identities re-wrapped to named recipients).
//!
//! Nothing here writes a file or talks to a network; the `vellum escrow` commands do.
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod shares;

use vellum_protocol::seal::{self, Identity, Recipient, SealError, SealedBody};
use zeroize::Zeroizing;

pub use shares::{RecoverError, SecretKind, Share, ShareError, SplitError};

/// Why an escrow operation failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EscrowError {
    /// The split could not be made.
    #[error(transparent)]
    Split(#[from] SplitError),
    /// A share's text is not a share.
    #[error(transparent)]
    Share(#[from] ShareError),
    /// The shares do not rebuild a secret.
    #[error(transparent)]
    Recover(#[from] RecoverError),
    /// The shares rebuilt a secret of another kind than asked for.
    #[error("these are shares of the {found}, not of the {wanted}")]
    WrongKind {
        /// What the shares are of.
        found: &'static str,
        /// What was asked for.
        wanted: &'static str,
    },
    /// A sealed share or a wrapped epoch identity could not be opened, or sealing failed.
    #[error("{what}: {source}")]
    Seal {
        /// What was being opened or sealed.
        what: String,
        /// Why.
        #[source]
        source: SealError,
    },
}

/// A fresh escrow identity, split: its recipient goes into every keyring; its shares
/// go to the custodians; the identity itself was dropped (zeroized) once split.
pub struct Escrow {
    recipient: Recipient,
    shares: Vec<Share>,
}

impl std::fmt::Debug for Escrow {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Escrow")
            .field("recipient", &self.recipient.to_string())
            .field("shares", &self.shares)
            .finish()
    }
}

impl Escrow {
    /// Generates an escrow identity and splits it into `total` shares, `threshold` of
    /// which rebuild it.
    pub fn generate(threshold: u8, total: u8) -> Result<Self, EscrowError> {
        Self::split(&Identity::generate(), threshold, total)
    }

    /// Splits an existing escrow identity (one a quickstart wrote whole, say) into
    /// `total` shares, `threshold` of which rebuild it. Its recipient stays the same,
    /// so every epoch already wrapped to it stays recoverable.
    pub fn split(identity: &Identity, threshold: u8, total: u8) -> Result<Self, EscrowError> {
        let secret = identity.to_secret_string();
        let shares = shares::split(SecretKind::EscrowIdentity, secret.as_bytes(), threshold, total)?;
        Ok(Self {
            recipient: identity.to_public(),
            shares,
        })
    }

    /// The escrow recipient (public): every epoch identity is wrapped to it.
    pub fn recipient(&self) -> &Recipient {
        &self.recipient
    }

    /// The shares, in index order.
    pub fn shares(&self) -> &[Share] {
        &self.shares
    }
}

/// `share`'s text sealed to its custodian's recipient (an age file only they open).
pub fn seal_share(share: &Share, custodian: &Recipient) -> Result<SealedBody, EscrowError> {
    seal::seal(std::slice::from_ref(custodian), share.to_text().as_bytes()).map_err(|source| {
        EscrowError::Seal {
            what: format!("sealing share {}", share.index()),
            source,
        }
    })
}

/// Reads a share: an age file sealed to one of `identities`, or its text or paper
/// form. `name` says which file it came from in errors.
pub fn read_share(bytes: &[u8], identities: &[Identity], name: &str) -> Result<Share, EscrowError> {
    if bytes.starts_with(b"age-encryption.org/") {
        let sealed = SealedBody::from_bytes(bytes.to_vec()).map_err(|source| EscrowError::Seal {
            what: name.to_owned(),
            source,
        })?;
        let text = sealed.open(identities).map_err(|source| EscrowError::Seal {
            what: format!("{name} (give the custodian's identity)"),
            source,
        })?;
        return Ok(Share::parse(&String::from_utf8_lossy(&text))?);
    }
    Ok(Share::parse(&String::from_utf8_lossy(bytes))?)
}

/// Rebuilds the escrow identity from at least M of its shares, in memory only.
pub fn recover_escrow(shares: &[Share]) -> Result<Identity, EscrowError> {
    let secret = recover_kind(shares, SecretKind::EscrowIdentity)?;
    let text = Zeroizing::new(String::from_utf8_lossy(&secret).into_owned());
    Identity::parse(&text).map_err(|_| EscrowError::Recover(RecoverError::WrongShare))
}

/// Rebuilds a secret of `kind` from at least M of its shares.
pub fn recover_kind(shares: &[Share], kind: SecretKind) -> Result<Zeroizing<Vec<u8>>, EscrowError> {
    let (found, secret) = shares::recover(shares)?;
    if found != kind {
        return Err(EscrowError::WrongKind {
            found: found.describe(),
            wanted: kind.describe(),
        });
    }
    Ok(secret)
}

/// Opens a wrapped epoch identity (an age file sealed to the auditors and the escrow
/// recipient) with `holder` and seals it again to `to`. The epoch identity exists in
/// memory only between the two steps; records are not touched.
pub fn rewrap(
    wrapped: &[u8],
    holder: &Identity,
    to: &[Recipient],
    name: &str,
) -> Result<SealedBody, EscrowError> {
    let sealed = SealedBody::from_bytes(wrapped.to_vec()).map_err(|source| EscrowError::Seal {
        what: name.to_owned(),
        source,
    })?;
    let identity = sealed
        .open(std::slice::from_ref(holder))
        .map_err(|source| EscrowError::Seal {
            what: format!("{name} (not wrapped to this identity)"),
            source,
        })?;
    seal::seal(to, &identity).map_err(|source| EscrowError::Seal {
        what: format!("re-wrapping {name}"),
        source,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn custodians_rebuild_the_escrow_identity_and_rewrap_an_epoch_to_a_new_auditor() {
        let escrow = Escrow::generate(2, 3).unwrap();
        let custodians: Vec<Identity> = (0..3).map(|_| Identity::generate()).collect();
        let sealed: Vec<SealedBody> = escrow
            .shares()
            .iter()
            .zip(&custodians)
            .map(|(share, c)| seal_share(share, &c.to_public()).unwrap())
            .collect();
        // An epoch identity wrapped, as the keyring ceremony does, to an auditor and escrow.
        let epoch = Identity::generate();
        let auditor = Identity::generate();
        let wrapped = seal::seal(
            &[auditor.to_public(), escrow.recipient().clone()],
            epoch.to_secret_string().as_bytes(),
        )
        .unwrap();
        let record = seal::seal(&[epoch.to_public()], b"minutes").unwrap();

        // The auditor is gone. Custodians 1 and 3 bring their sealed shares.
        let shares = [
            read_share(sealed[0].as_bytes(), &custodians[..1], "a").unwrap(),
            read_share(sealed[2].as_bytes(), &custodians[2..], "c").unwrap(),
        ];
        assert!(
            read_share(sealed[1].as_bytes(), &custodians[..1], "b").is_err(),
            "another custodian's share opened"
        );
        let recovered = recover_escrow(&shares).unwrap();
        assert_eq!(recovered.to_public().to_string(), escrow.recipient().to_string());
        let newcomer = Identity::generate();
        let rewrapped = rewrap(wrapped.as_bytes(), &recovered, &[newcomer.to_public()], "epoch-1").unwrap();
        let epoch_again = Identity::parse(&String::from_utf8_lossy(
            &rewrapped.open(std::slice::from_ref(&newcomer)).unwrap(),
        ))
        .unwrap();
        assert_eq!(&record.open(&[epoch_again]).unwrap()[..], b"minutes");

        // Shares of the organisation key are not shares of the escrow identity.
        let org = shares::split(SecretKind::OrgSigningKey, b"PRIVATE+KEY+org+0+xyz", 2, 2).unwrap();
        assert!(matches!(recover_escrow(&org), Err(EscrowError::WrongKind { .. })));
        // Paper shares read the same way.
        let paper = escrow.shares()[1].to_paper("custodian b");
        assert_eq!(
            read_share(paper.as_bytes(), &[], "b").unwrap(),
            escrow.shares()[1]
        );
    }
}
