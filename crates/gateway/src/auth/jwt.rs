//! Access tokens: JWTs signed with EdDSA (Ed25519), at most 15 minutes long.
//!
//! Every check is explicit: the header must say `EdDSA` and name a `kid` this gateway
//! knows (the current key, or a previous one kept for verification during a
//! rotation); `iss`, `aud`, `exp`, `nbf`, `sub`, `sid` and `jti` must be present and
//! right. `alg: none`, every HMAC algorithm and any other algorithm are refused before
//! a key is even looked up, so a token "signed" with the public key as an HMAC secret
//! gets nowhere.

use std::collections::HashMap;
use std::fmt;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use ed25519_dalek::SigningKey;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::{Digest as _, Sha256};
use vellum_archive::ports::Role;
use zeroize::Zeroizing;

/// The longest an access token may live, in seconds.
pub const MAX_TTL_SECS: u64 = 15 * 60;

/// What an access token may be used for.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "kebab-case")]
pub enum Scope {
    /// Everything the role allows.
    Full,
    /// Only setting up the second factor (a first login that must enroll TOTP).
    MfaSetup,
}

/// The claims of an access token.
#[derive(Clone, Debug, Serialize, Deserialize)]
pub struct Claims {
    /// Issuer.
    pub iss: String,
    /// Audience.
    pub aud: String,
    /// The account id (hex).
    pub sub: String,
    /// The session (refresh-token family) id (hex).
    pub sid: String,
    /// The role when the token was issued (the gateway checks the current one).
    pub role: String,
    /// What the token may do.
    pub scope: Scope,
    /// Issued at, Unix seconds.
    pub iat: u64,
    /// Not before, Unix seconds.
    pub nbf: u64,
    /// Expires, Unix seconds.
    pub exp: u64,
    /// A unique id (hex of 16 random bytes).
    pub jti: String,
}

/// Why a token was refused (never more precise towards the client than "invalid").
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum TokenError {
    /// Not a JWT, or not EdDSA, or a `kid` this gateway does not know.
    #[error("malformed token or unknown key")]
    Malformed,
    /// Signature, issuer, audience, time or claims wrong.
    #[error("invalid token: {0}")]
    Invalid(String),
}

/// The gateway's token keys: one to sign with, any number to verify with.
pub struct JwtKeys {
    issuer: String,
    audience: String,
    ttl_secs: u64,
    kid: String,
    signing: EncodingKey,
    verifying: HashMap<String, DecodingKey>,
    /// The root of keys derived from the signing seed (see [`JwtKeys::derive_key`]).
    derived: Zeroizing<[u8; 32]>,
}

impl fmt::Debug for JwtKeys {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("JwtKeys")
            .field("issuer", &self.issuer)
            .field("kid", &self.kid)
            .field("verifying", &self.verifying.keys().collect::<Vec<_>>())
            .finish_non_exhaustive()
    }
}

fn hmac_sha256(key: &[u8], data: &[u8]) -> [u8; 32] {
    use hmac::Mac as _;
    let mut mac = <hmac::Hmac<Sha256> as hmac::Mac>::new_from_slice(key)
        .unwrap_or_else(|_| unreachable!("HMAC takes keys of any length"));
    mac.update(data);
    mac.finalize().into_bytes().into()
}

/// The key id of an Ed25519 public key: the first 8 bytes of its SHA-256, hex.
pub fn key_id(public: &[u8; 32]) -> String {
    hex::encode(&Sha256::digest(public)[..8])
}

/// PKCS#8 v1 DER of an Ed25519 seed (RFC 8410): a fixed prefix, then the seed.
fn pkcs8(seed: &[u8; 32]) -> Zeroizing<Vec<u8>> {
    const PREFIX: [u8; 16] = [
        0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20,
    ];
    let mut der = Zeroizing::new(PREFIX.to_vec());
    der.extend_from_slice(seed);
    der
}

impl JwtKeys {
    /// Keys signing with `seed` and also accepting tokens of `previous` public keys.
    pub fn new(
        issuer: &str,
        audience: &str,
        ttl_secs: u64,
        seed: &[u8; 32],
        previous: &[[u8; 32]],
    ) -> Result<Self, String> {
        if ttl_secs == 0 || ttl_secs > MAX_TTL_SECS {
            return Err(format!("access tokens live 1 to {MAX_TTL_SECS} seconds"));
        }
        let public = SigningKey::from_bytes(seed).verifying_key().to_bytes();
        let kid = key_id(&public);
        let mut verifying = HashMap::new();
        for key in std::iter::once(&public).chain(previous) {
            let decoding = DecodingKey::from_ed_components(&URL_SAFE_NO_PAD.encode(key))
                .map_err(|e| format!("token verification key: {e}"))?;
            verifying.insert(key_id(key), decoding);
        }
        Ok(Self {
            issuer: issuer.to_owned(),
            audience: audience.to_owned(),
            ttl_secs,
            kid,
            signing: EncodingKey::from_ed_der(&pkcs8(seed)),
            verifying,
            derived: Zeroizing::new(hmac_sha256(seed, b"vellum: keys derived from the token key")),
        })
    }

    /// A 32-byte key for `purpose`, derived from the signing seed (HMAC-SHA256), so
    /// every gateway sharing the token key shares it, and a new token key replaces it.
    pub fn derive_key(&self, purpose: &str) -> Zeroizing<[u8; 32]> {
        Zeroizing::new(hmac_sha256(&*self.derived, purpose.as_bytes()))
    }

    /// How long tokens live, in seconds.
    pub fn ttl_secs(&self) -> u64 {
        self.ttl_secs
    }

    /// A token for `account` in session `session`.
    pub fn issue(
        &self,
        account: &[u8; 16],
        session: &[u8; 16],
        role: Role,
        scope: Scope,
        now_secs: u64,
    ) -> Result<String, String> {
        let mut jti = [0u8; 16];
        getrandom::getrandom(&mut jti).map_err(|e| e.to_string())?;
        let claims = Claims {
            iss: self.issuer.clone(),
            aud: self.audience.clone(),
            sub: hex::encode(account),
            sid: hex::encode(session),
            role: role.as_str().to_owned(),
            scope,
            iat: now_secs,
            nbf: now_secs,
            exp: now_secs + self.ttl_secs,
            jti: hex::encode(jti),
        };
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(self.kid.clone());
        jsonwebtoken::encode(&header, &claims, &self.signing).map_err(|e| e.to_string())
    }

    /// The claims of a valid token.
    pub fn verify(&self, token: &str) -> Result<Claims, TokenError> {
        let header = jsonwebtoken::decode_header(token).map_err(|_| TokenError::Malformed)?;
        if header.alg != Algorithm::EdDSA {
            return Err(TokenError::Malformed);
        }
        let key = header
            .kid
            .as_deref()
            .and_then(|kid| self.verifying.get(kid))
            .ok_or(TokenError::Malformed)?;
        let mut validation = Validation::new(Algorithm::EdDSA);
        validation.algorithms = vec![Algorithm::EdDSA];
        validation.set_issuer(&[&self.issuer]);
        validation.set_audience(&[&self.audience]);
        validation.set_required_spec_claims(&["exp", "nbf", "iss", "aud", "sub"]);
        validation.validate_nbf = true;
        validation.leeway = 5;
        let data = jsonwebtoken::decode::<Claims>(token, key, &validation)
            .map_err(|e| TokenError::Invalid(e.to_string()))?;
        let claims = data.claims;
        let hex_of =
            |text: &str, len: usize| text.len() == 2 * len && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !(hex_of(&claims.sub, 16) && hex_of(&claims.sid, 16) && hex_of(&claims.jti, 16)) {
            return Err(TokenError::Invalid("bad sub, sid or jti".into()));
        }
        if claims.exp.saturating_sub(claims.iat) > MAX_TTL_SECS {
            return Err(TokenError::Invalid("lifetime over the maximum".into()));
        }
        Ok(claims)
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    fn keys(seed: u8) -> JwtKeys {
        JwtKeys::new("https://gw.example", "vellum", 900, &[seed; 32], &[]).unwrap()
    }

    fn public(seed: u8) -> [u8; 32] {
        SigningKey::from_bytes(&[seed; 32]).verifying_key().to_bytes()
    }

    fn now() -> u64 {
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_secs()
    }

    fn claims(keys: &JwtKeys, iat: u64) -> Claims {
        Claims {
            iss: keys.issuer.clone(),
            aud: keys.audience.clone(),
            sub: hex::encode([1u8; 16]),
            sid: hex::encode([2u8; 16]),
            role: "auditor".into(),
            scope: Scope::Full,
            iat,
            nbf: iat,
            exp: iat + 900,
            jti: hex::encode([3u8; 16]),
        }
    }

    fn signed(keys: &JwtKeys, header: Header, claims: &Claims) -> String {
        jsonwebtoken::encode(&header, claims, &keys.signing).unwrap()
    }

    fn eddsa(kid: &str) -> Header {
        let mut header = Header::new(Algorithm::EdDSA);
        header.kid = Some(kid.to_owned());
        header
    }

    #[test]
    fn a_fresh_token_verifies_and_carries_its_claims() {
        let k = keys(1);
        let token = k
            .issue(&[1; 16], &[2; 16], Role::Auditor, Scope::Full, now())
            .unwrap();
        let claims = k.verify(&token).unwrap();
        assert_eq!(
            (claims.sub, claims.role, claims.scope),
            (hex::encode([1u8; 16]), "auditor".into(), Scope::Full)
        );
        assert!(
            JwtKeys::new("i", "a", 901, &[1; 32], &[]).is_err(),
            "over 15 minutes"
        );
    }

    #[test]
    fn every_forgery_and_misuse_is_refused() {
        let k = keys(1);
        let kid = k.kid.clone();
        let t = now();
        let good = claims(&k, t);
        let with = |change: &dyn Fn(&mut Claims)| {
            let mut c = good.clone();
            change(&mut c);
            signed(&k, eddsa(&kid), &c)
        };
        let b64 = |v: &serde_json::Value| URL_SAFE_NO_PAD.encode(v.to_string());
        let body = b64(&serde_json::to_value(&good).unwrap());
        let valid = signed(&k, eddsa(&kid), &good);
        let tampered = {
            let mut forged = good.clone();
            forged.role = "admin".into();
            let parts: Vec<&str> = valid.split('.').collect();
            format!(
                "{}.{}.{}",
                parts[0],
                b64(&serde_json::to_value(&forged).unwrap()),
                parts[2]
            )
        };
        let hs256 = {
            // The public key used as an HMAC secret: the classic algorithm confusion.
            let mut header = Header::new(Algorithm::HS256);
            header.kid = Some(kid.clone());
            let secret = EncodingKey::from_secret(&public(1));
            jsonwebtoken::encode(&header, &good, &secret).unwrap()
        };
        let none = format!("{}.{body}.", b64(&serde_json::json!({"alg": "none", "kid": kid})));
        let foreign = signed(&keys(2), eddsa(&keys(2).kid), &good);
        let cases: Vec<(&str, String)> = vec![
            (
                "expired",
                with(&|c| {
                    c.iat = t - 2000;
                    c.nbf = t - 2000;
                    c.exp = t - 1000;
                }),
            ),
            (
                "not yet valid",
                with(&|c| {
                    c.nbf = t + 600;
                }),
            ),
            ("wrong audience", with(&|c| c.aud = "someone-else".into())),
            ("wrong issuer", with(&|c| c.iss = "https://evil.example".into())),
            ("lifetime too long", with(&|c| c.exp = c.iat + 86_400)),
            ("bad subject", with(&|c| c.sub = "admin".into())),
            ("unknown kid", signed(&k, eddsa("0011223344556677"), &good)),
            ("no kid", signed(&k, Header::new(Algorithm::EdDSA), &good)),
            ("tampered claims", tampered),
            ("HS256 with the public key", hs256),
            ("alg none", none),
            ("another gateway's key", foreign),
            ("garbage", "not.a.token".into()),
        ];
        assert!(k.verify(&valid).is_ok());
        for (what, token) in cases {
            assert!(k.verify(&token).is_err(), "accepted: {what}");
        }
    }

    #[test]
    fn a_rotated_key_still_verifies_the_tokens_it_signed() {
        let old = keys(1);
        let token = old
            .issue(&[1; 16], &[2; 16], Role::Admin, Scope::Full, now())
            .unwrap();
        let rotated = JwtKeys::new("https://gw.example", "vellum", 900, &[9; 32], &[public(1)]).unwrap();
        assert!(rotated.verify(&token).is_ok());
        let fresh = rotated
            .issue(&[1; 16], &[2; 16], Role::Admin, Scope::Full, now())
            .unwrap();
        assert!(
            old.verify(&fresh).is_err(),
            "the old set does not know the new key"
        );
        let dropped = JwtKeys::new("https://gw.example", "vellum", 900, &[9; 32], &[]).unwrap();
        assert!(dropped.verify(&token).is_err());
    }
}
