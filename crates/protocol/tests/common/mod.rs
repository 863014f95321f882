//! Fixtures shared by this crate's integration tests.

#![allow(dead_code, reason = "each test file uses a different subset")]
#![allow(clippy::unwrap_used, reason = "a failed unwrap is a failed test")]

use vellum_protocol::blind::IndexKey;
use vellum_protocol::header::{HeaderFields, SignedHeader};
use vellum_protocol::ids::{Channel, Custodian, DeviceId, Epoch, RecordId, RetentionClass, UnixMillis};
use vellum_protocol::keys::DeviceKey;
use vellum_protocol::seal::BodyDigest;

pub(crate) const NOW: u64 = 1_764_150_000_000;

/// A record id fixed by its bytes, so vectors are reproducible.
pub(crate) fn record_id(n: u8) -> RecordId {
    let mut bytes = [0u8; 16];
    bytes[..6].copy_from_slice(&NOW.to_be_bytes()[2..]);
    bytes[6] = 0x70;
    bytes[8] = 0x80;
    bytes[15] = n;
    RecordId::from_bytes(bytes).unwrap()
}

pub(crate) fn device_id() -> DeviceId {
    DeviceId::parse("0192f0c4-6a3b-7cc1-9a51-3f6e8d2b1a00").unwrap()
}

pub(crate) fn fields(record: RecordId, body: BodyDigest, index_key: &IndexKey) -> HeaderFields {
    HeaderFields {
        record_id: record,
        device_id: device_id(),
        custodian: Custodian::new("j.doe@agency.example").unwrap(),
        channel: Channel::new("signal").unwrap(),
        captured_at: UnixMillis(NOW),
        epoch: Epoch(3),
        retention: RetentionClass::new("finra-6y").unwrap(),
        body,
        tokens: vec![
            index_key.day(NOW),
            index_key.token(vellum_protocol::blind::TokenKind::Participant, "tel:+15550100000"),
        ],
    }
}

pub(crate) fn signed_header(key: &DeviceKey, record: RecordId) -> SignedHeader {
    let body = BodyDigest {
        sha256: [0xab; 32],
        len: 1234,
    };
    fields(record, body, &IndexKey::from_bytes([5; 32]))
        .sign(key)
        .unwrap()
}
