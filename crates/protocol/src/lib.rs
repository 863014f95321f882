//! Vellum's wire formats, shared by capture clients, the gateway and auditors.
//!
//! Nothing here does I/O beyond the `Read`/`Write` it is handed: no network, no
//! database, no files. Every format is specified byte for byte in `docs/formats.md`,
//! with test vectors checked by this crate's tests.
//!
//! | module | what |
//! |---|---|
//! | [`document`] | the message document a client seals (JSON) |
//! | [`seal`] | age v1 sealing to X25519 recipients, [`seal::SealedBody`] |
//! | [`age_header`] | the structural check of age files a keyless party can make |
//! | [`header`] | the signed, canonical record header; parse-then-verify |
//! | [`blind`] | blind tokens and the normalisation of participant ids |
//! | [`bundle`] | the enrollment bundle an administrator hands to a capture client |
//! | [`keyring`] | the organisation-signed keyring statement, rollback refusal |
//! | [`receipt`] | log entries and capture receipts (C2SP `tlog-proof`) |
//! | [`text`] | free text people send: what it may hold, and how it is shown on a terminal |
//!
//! A capture, end to end, without a server:
//!
//! ```
//! use vellum_protocol::{blind::IndexKey, header::{HeaderFields, UnverifiedHeader}, ids::*, keys::DeviceKey, seal};
//!
//! let auditor = seal::Identity::generate();
//! let device = DeviceKey::generate();
//! let body = seal::seal(&[auditor.to_public()], b"{\"text\":\"hello\"}").unwrap();
//!
//! let fields = HeaderFields {
//!     record_id: RecordId::new_v7(1_764_150_000_000),
//!     device_id: DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap(),
//!     custodian: Custodian::new("j.doe@agency.example").unwrap(),
//!     channel: Channel::new("signal").unwrap(),
//!     captured_at: UnixMillis(1_764_150_000_000),
//!     epoch: Epoch(1),
//!     retention: RetentionClass::new("7y").unwrap(),
//!     body: body.digest(),
//!     tokens: vec![IndexKey::generate().day(1_764_150_000_000)],
//! };
//! let signed = fields.sign(&device).unwrap();
//!
//! // The gateway: parse, find the device's key, verify, check the body.
//! let header = UnverifiedHeader::parse(signed.as_bytes()).unwrap().verify(&device.public()).unwrap();
//! header.check_body(&body.digest()).unwrap();
//!
//! // An auditor opens the body.
//! assert_eq!(&body.open(&[auditor]).unwrap()[..], b"{\"text\":\"hello\"}");
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

pub mod age_header;
pub mod blind;
pub mod bundle;
pub mod document;
pub mod header;
pub mod ids;
pub mod keyring;
pub mod keys;
pub mod receipt;
pub mod seal;
pub mod text;
pub mod time;
