//! Passwords as Argon2id PHC strings (invariant I3): OWASP's minimum parameters
//! (m = 19456 KiB, t = 2, p = 1) or stronger, a 16-byte random salt each, verified in
//! constant time by the argon2 crate.

use argon2::password_hash::{PasswordHash, PasswordHasher as _, PasswordVerifier as _, SaltString};
use argon2::{Algorithm, Argon2, Params, Version};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use zeroize::Zeroizing;

/// Memory cost in KiB: the least accepted.
pub const MEMORY_KIB: u32 = 19_456;
/// Passes: the least accepted.
pub const ITERATIONS: u32 = 2;
/// Lanes.
pub const PARALLELISM: u32 = 1;

/// Argon2id parameters: at least OWASP's minimum, configurable upward.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cost {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

impl Cost {
    /// OWASP's minimum for Argon2id: m = 19456 KiB, t = 2, p = 1.
    pub const MINIMUM: Cost = Cost {
        memory_kib: MEMORY_KIB,
        iterations: ITERATIONS,
        parallelism: PARALLELISM,
    };

    /// These parameters, refused when any is below [`Cost::MINIMUM`] (or absurd:
    /// more than 4 GiB, 64 passes or 16 lanes).
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, String> {
        if memory_kib < MEMORY_KIB || iterations < ITERATIONS || parallelism < PARALLELISM {
            return Err(format!(
                "Argon2id parameters below the minimum (m={MEMORY_KIB} KiB, t={ITERATIONS}, p={PARALLELISM}) are refused"
            ));
        }
        if memory_kib > 4 << 20 || iterations > 64 || parallelism > 16 {
            return Err("Argon2id parameters: at most m=4194304 KiB, t=64, p=16".into());
        }
        Ok(Self {
            memory_kib,
            iterations,
            parallelism,
        })
    }

    /// Memory in KiB.
    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    fn hasher(&self) -> Result<Argon2<'static>, argon2::Error> {
        let params = Params::new(self.memory_kib, self.iterations, self.parallelism, None)?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

impl Default for Cost {
    fn default() -> Self {
        Cost::MINIMUM
    }
}

/// The PHC string of `password` under a fresh random salt, at the minimum cost.
pub fn hash(password: &str) -> Result<String, String> {
    hash_with(Cost::MINIMUM, password)
}

/// The PHC string of `password` under a fresh random salt, at `cost`.
pub fn hash_with(cost: Cost, password: &str) -> Result<String, String> {
    let mut salt = [0u8; 16];
    getrandom::getrandom(&mut salt).map_err(|e| e.to_string())?;
    let salt = SaltString::encode_b64(&salt).map_err(|e| e.to_string())?;
    let hasher = cost.hasher().map_err(|e| e.to_string())?;
    hasher
        .hash_password(password.as_bytes(), &salt)
        .map(|h| h.to_string())
        .map_err(|e| e.to_string())
}

/// A PHC string that no password matches (random salt and random output), for an
/// account that signs in only through single sign-on. Costs nothing to make.
pub fn unusable() -> Result<String, String> {
    let mut bytes = [0u8; 48];
    getrandom::getrandom(&mut bytes).map_err(|e| e.to_string())?;
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD_NO_PAD.encode(b);
    Ok(format!(
        "$argon2id$v=19$m={MEMORY_KIB},t={ITERATIONS},p={PARALLELISM}${}${}",
        b64(&bytes[..16]),
        b64(&bytes[16..])
    ))
}

/// Whether `password` matches the PHC string `phc` (only Argon2id is accepted).
pub fn verify(phc: &str, password: &str) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return false;
    };
    if parsed.algorithm != Algorithm::Argon2id.ident() {
        return false;
    }
    Argon2::default()
        .verify_password(password.as_bytes(), &parsed)
        .is_ok()
}

/// Whether `phc` was computed with weaker parameters than `cost`, so it should be
/// computed again (the next time the password is known, at a successful login).
pub fn needs_rehash(phc: &str, cost: Cost) -> bool {
    let Ok(parsed) = PasswordHash::new(phc) else {
        return true;
    };
    let Ok(params) = Params::try_from(&parsed) else {
        return true;
    };
    parsed.algorithm != Algorithm::Argon2id.ident()
        || params.m_cost() < cost.memory_kib
        || params.t_cost() < cost.iterations
        || params.p_cost() < cost.parallelism
}

/// The shortest password accepted.
pub const MIN_LENGTH: usize = 12;
/// The longest password accepted (Argon2 takes any length; this bounds the work).
pub const MAX_LENGTH: usize = 1024;

/// Passwords everyone tries first, and the words they are built from.
const COMMON: &[&str] = &[
    "password",
    "passw0rd",
    "p@ssword",
    "p@ssw0rd",
    "qwerty",
    "qwertyuiop",
    "asdfghjkl",
    "zxcvbnm",
    "letmein",
    "welcome",
    "admin",
    "administrator",
    "changeme",
    "secret",
    "iloveyou",
    "monkey",
    "dragon",
    "football",
    "baseball",
    "sunshine",
    "princess",
    "master",
    "shadow",
    "superman",
    "trustno1",
    "abc123",
    "login",
    "starwars",
    "whatever",
    "freedom",
    "vellum",
    "archive",
    "records",
    "summer",
    "winter",
    "spring",
    "autumn",
    "default",
    "guest",
    "root",
    "test",
    "user",
];

/// Whether `password` may be set for `username`: at least [`MIN_LENGTH`] characters,
/// not the username, not one of the passwords everyone tries first (nor one of them
/// with digits or symbols added), not one repeated character or a run of the keyboard
/// or the alphabet. The text says what to change.
pub fn check_new(password: &str, username: &str) -> Result<(), String> {
    let length = password.chars().count();
    if length < MIN_LENGTH {
        return Err(format!("a password has at least {MIN_LENGTH} characters"));
    }
    if password.len() > MAX_LENGTH {
        return Err(format!("a password has at most {MAX_LENGTH} bytes"));
    }
    let lower = password.to_lowercase();
    if lower.contains(&username.to_lowercase()) {
        return Err("a password must not contain the username".into());
    }
    let core: String = lower.chars().filter(|c| c.is_alphabetic()).collect();
    let stem = lower.trim_end_matches(|c: char| !c.is_alphabetic());
    if COMMON
        .iter()
        .any(|w| lower == *w || stem == *w || core == *w || core == format!("{w}{w}"))
    {
        return Err("this password is among the first ones attackers try".into());
    }
    let first = lower.chars().next().unwrap_or(' ');
    if lower.chars().all(|c| c == first) {
        return Err("a password must not be one repeated character".into());
    }
    for run in [
        "abcdefghijklmnopqrstuvwxyz",
        "01234567890",
        "qwertyuiopasdfghjklzxcvbnm",
    ] {
        if run.contains(lower.as_str()) || lower.chars().all(|c| c.is_ascii_digit()) {
            return Err("a password must not be a run of the keyboard, the alphabet or digits".into());
        }
    }
    Ok(())
}

/// A random password for someone to change at first login: 24 characters of
/// base64url (144 bits).
pub fn one_time_password() -> Result<Zeroizing<String>, String> {
    let mut bytes = Zeroizing::new([0u8; 18]);
    getrandom::getrandom(bytes.as_mut()).map_err(|e| e.to_string())?;
    Ok(Zeroizing::new(URL_SAFE_NO_PAD.encode(*bytes)))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]
mod tests {
    use super::*;

    #[test]
    fn hashes_are_argon2id_with_at_least_the_owasp_parameters() {
        let phc = hash("correct horse battery staple").unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(verify(&phc, "correct horse battery staple"));
        assert!(!verify(&phc, "correct horse battery stapler"));
        // Salted: the same password hashes differently each time.
        assert_ne!(phc, hash("correct horse battery staple").unwrap());
    }

    #[test]
    fn other_algorithms_and_garbage_never_verify() {
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, Params::default())
            .hash_password(b"pw", &SaltString::encode_b64(&[7; 16]).unwrap())
            .unwrap()
            .to_string();
        assert!(!verify(&argon2i, "pw"));
        assert!(!verify("5f4dcc3b5aa765d61d8327deb882cf99", "password"));
        assert!(!verify("", ""));
    }

    #[test]
    fn weak_new_passwords_are_refused_with_a_reason() {
        for weak in [
            "short",
            "password",
            "Password123!",
            "P@ssw0rd2026",
            "qwertyuiop12",
            "aaaaaaaaaaaaaaa",
            "123456789012",
            "abcdefghijklm",
            "my-name-is-alice!",
            "changemechangeme",
        ] {
            assert!(check_new(weak, "alice").is_err(), "accepted {weak:?}");
        }
        for strong in [
            "correct horse battery staple",
            "vX9#mQ2!tL7&pR4",
            "Ŝtrong-Ünicode-pass",
        ] {
            assert_eq!(check_new(strong, "alice"), Ok(()), "{strong:?}");
        }
    }

    #[test]
    fn weaker_hashes_are_flagged_for_rehashing() {
        let strong = hash("correct horse battery staple").unwrap();
        assert!(!needs_rehash(&strong, Cost::MINIMUM));
        let weak = Argon2::new(
            Algorithm::Argon2id,
            Version::V0x13,
            Params::new(8192, 1, 1, None).unwrap(),
        )
        .hash_password(b"pw", &SaltString::encode_b64(&[7; 16]).unwrap())
        .unwrap()
        .to_string();
        assert!(needs_rehash(&weak, Cost::MINIMUM));
        assert!(needs_rehash("garbage", Cost::MINIMUM));
        // Raising the configured cost flags what the old cost made.
        let raised = Cost::new(32_768, 3, 1).unwrap();
        assert!(needs_rehash(&strong, raised));
        let rehashed = hash_with(raised, "correct horse battery staple").unwrap();
        assert!(
            rehashed.starts_with("$argon2id$v=19$m=32768,t=3,p=1$"),
            "{rehashed}"
        );
        assert!(!needs_rehash(&rehashed, raised));
        assert!(verify(&rehashed, "correct horse battery staple"));
    }

    #[test]
    fn costs_below_the_minimum_are_refused() {
        assert!(Cost::new(19_455, 2, 1).is_err());
        assert!(Cost::new(19_456, 1, 1).is_err());
        assert!(Cost::new(19_456, 2, 0).is_err());
        assert_eq!(Cost::new(19_456, 2, 1), Ok(Cost::MINIMUM));
    }

    #[test]
    fn an_unusable_hash_is_well_formed_and_matches_nothing() {
        let phc = unusable().unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert!(PasswordHash::new(&phc).is_ok());
        assert!(!verify(&phc, ""));
        assert_ne!(phc, unusable().unwrap());
    }

    #[test]
    fn one_time_passwords_are_long_and_fresh() {
        let a = one_time_password().unwrap();
        assert_eq!(a.len(), 24);
        assert_ne!(a, one_time_password().unwrap());
    }
}
