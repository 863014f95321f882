//! The enrollment bundle: everything a capture client needs to join an archive,
//! issued by an administrator and handed to the device out of band.
//!
//! It is a JSON object (`docs/formats.md`, "Enrollment bundle"):
//!
//! ```json
//! {
//!   "vellum_enrollment": 1,
//!   "gateway": "https://archive.agency.example",
//!   "org_key": "<note verifier key of the organisation>",
//!   "log_key": "<note verifier key of the log>",
//!   "index_key": "<base64url, 32 bytes>",
//!   "token": "<base64url, 32 bytes, one-time>",
//!   "custodian": "j.doe@agency.example",
//!   "retention": "finra-6y",
//!   "expires_at": 1764150000000
//! }
//! ```
//!
//! The token is spent by the first enrollment; the index key stays with clients and
//! auditors. A bundle is therefore a secret until it is used.

use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::{Deserialize, Serialize};
use thiserror::Error;
use vellum_tlog::note::NoteVerifier;
use zeroize::Zeroizing;

use crate::blind::IndexKey;
use crate::ids::{Custodian, RetentionClass, UnixMillis};

/// The only bundle version.
pub const BUNDLE_VERSION: u32 = 1;

/// Why a bundle was refused.
#[derive(Debug, Error)]
#[error("enrollment bundle: {0}")]
pub struct BundleError(String);

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct Wire {
    vellum_enrollment: u32,
    gateway: String,
    org_key: String,
    log_key: String,
    index_key: String,
    token: String,
    custodian: String,
    retention: String,
    expires_at: u64,
    /// The certificate authority of the gateway's TLS certificate (PEM), for a
    /// private PKI.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    ca_cert: Option<String>,
}

/// A parsed, checked enrollment bundle.
pub struct Bundle {
    /// The gateway's base URL (`http://` or `https://`, no trailing slash).
    pub gateway: String,
    /// The organisation key: keyrings not signed by it are refused.
    pub org_key: NoteVerifier,
    /// The log key: receipts whose checkpoints it did not sign are refused.
    pub log_key: NoteVerifier,
    /// The blind-index key.
    pub index_key: IndexKey,
    /// The one-time enrollment token (base64url of 32 bytes).
    pub token: Zeroizing<String>,
    /// The custodian the device captures for.
    pub custodian: Custodian,
    /// The retention class of the device's records.
    pub retention: RetentionClass,
    /// When the token expires.
    pub expires_at: UnixMillis,
    /// The certificate authority (PEM, one or more certificates) the gateway's TLS
    /// certificate is checked against, besides the system's; none for a public one.
    pub ca_cert: Option<String>,
}

impl fmt::Debug for Bundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bundle")
            .field("gateway", &self.gateway)
            .field("custodian", &self.custodian)
            .field("retention", &self.retention)
            .field("expires_at", &self.expires_at)
            .finish_non_exhaustive()
    }
}

impl Bundle {
    /// The bundle as JSON (pretty, one field per line).
    pub fn to_json(&self) -> Zeroizing<String> {
        let wire = Wire {
            vellum_enrollment: BUNDLE_VERSION,
            gateway: self.gateway.clone(),
            org_key: self.org_key.to_string(),
            log_key: self.log_key.to_string(),
            index_key: URL_SAFE_NO_PAD.encode(*self.index_key.to_bytes()),
            token: self.token.to_string(),
            custodian: self.custodian.as_str().to_owned(),
            retention: self.retention.as_str().to_owned(),
            expires_at: self.expires_at.0,
            ca_cert: self.ca_cert.clone(),
        };
        let mut json = serde_json::to_string_pretty(&wire).unwrap_or_default();
        json.push('\n');
        Zeroizing::new(json)
    }

    /// Parses and checks a bundle.
    pub fn from_json(bytes: &[u8]) -> Result<Self, BundleError> {
        let bad = |what: String| BundleError(what);
        let wire: Wire = serde_json::from_slice(bytes).map_err(|e| bad(format!("not a bundle: {e}")))?;
        let wire = Zeroizing::new(wire);
        if wire.vellum_enrollment != BUNDLE_VERSION {
            return Err(bad(format!("unsupported version {}", wire.vellum_enrollment)));
        }
        let gateway = wire.gateway.trim_end_matches('/').to_owned();
        if !(gateway.starts_with("https://") || gateway.starts_with("http://")) {
            return Err(bad("gateway must be an http:// or https:// URL".into()));
        }
        let key =
            |name: &str, text: &str| NoteVerifier::from_vkey(text).map_err(|e| bad(format!("{name}: {e}")));
        let index_key: [u8; 32] = URL_SAFE_NO_PAD
            .decode(&wire.index_key)
            .ok()
            .and_then(|b| b.try_into().ok())
            .ok_or_else(|| bad("index_key: expected 32 bytes of base64url".into()))?;
        if let Some(pem) = &wire.ca_cert
            && !pem.trim_start().starts_with("-----BEGIN CERTIFICATE-----")
        {
            return Err(bad(
                "ca_cert: expected PEM certificates (-----BEGIN CERTIFICATE-----)".into(),
            ));
        }
        let token_ok = URL_SAFE_NO_PAD.decode(&wire.token).is_ok_and(|b| b.len() == 32);
        if !token_ok {
            return Err(bad("token: expected 32 bytes of base64url".into()));
        }
        Ok(Self {
            gateway,
            org_key: key("org_key", &wire.org_key)?,
            log_key: key("log_key", &wire.log_key)?,
            index_key: IndexKey::from_bytes(index_key),
            token: Zeroizing::new(wire.token.clone()),
            custodian: Custodian::new(&wire.custodian).map_err(|e| bad(e.to_string()))?,
            retention: RetentionClass::new(&wire.retention).map_err(|e| bad(e.to_string()))?,
            expires_at: UnixMillis(wire.expires_at),
            ca_cert: wire.ca_cert.clone(),
        })
    }
}

impl zeroize::Zeroize for Wire {
    fn zeroize(&mut self) {
        self.index_key.zeroize();
        self.token.zeroize();
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;
    use crate::keys::generate_note_signer;

    fn bundle() -> Bundle {
        Bundle {
            gateway: "https://archive.agency.example".into(),
            org_key: generate_note_signer("org.example").unwrap().verifier(),
            log_key: generate_note_signer("log.example").unwrap().verifier(),
            index_key: IndexKey::from_bytes([9; 32]),
            token: Zeroizing::new(URL_SAFE_NO_PAD.encode([4u8; 32])),
            custodian: Custodian::new("j.doe@agency.example").unwrap(),
            retention: RetentionClass::new("finra-6y").unwrap(),
            expires_at: UnixMillis(1_764_150_000_000),
            ca_cert: None,
        }
    }

    #[test]
    fn a_bundle_survives_its_json() {
        let original = bundle();
        let parsed = Bundle::from_json(original.to_json().as_bytes()).unwrap();
        assert_eq!(parsed.to_json(), original.to_json());
        assert_eq!(*parsed.index_key.to_bytes(), [9; 32]);
        // Debug output never shows the token or the index key.
        let debug = format!("{parsed:?}");
        assert!(!debug.contains(parsed.token.as_str()), "{debug}");
    }

    #[test]
    fn bad_bundles_are_refused_with_the_field_named() {
        let json = bundle().to_json();
        let value: serde_json::Value = serde_json::from_str(&json).unwrap();
        let cases = [
            ("vellum_enrollment", serde_json::json!(2), "version"),
            ("gateway", serde_json::json!("ftp://x"), "gateway"),
            ("org_key", serde_json::json!("nope"), "org_key"),
            ("index_key", serde_json::json!("AAAA"), "index_key"),
            ("token", serde_json::json!("short"), "token"),
            ("custodian", serde_json::json!("has space"), "custodian"),
            ("extra", serde_json::json!(1), "unknown field"),
        ];
        for (field, bad, expect) in cases {
            let mut v = value.clone();
            v[field] = bad;
            let err = Bundle::from_json(v.to_string().as_bytes())
                .unwrap_err()
                .to_string();
            assert!(err.contains(expect), "{field}: {err}");
        }
    }
}
