//! Migrations compiled into the binary, applied on open, never edited once released.

use std::borrow::Cow;

use sqlx::migrate::{Migrate, MigrateError, Migration, MigrationType, Migrator};

use crate::error::StoreError;

/// One backend's migrations: (version, description, SQL).
pub(crate) type Embedded = &'static [(i64, &'static str, &'static str)];

pub(crate) const SQLITE: Embedded = &[
    (
        1,
        "archive",
        include_str!("../../../migrations/sqlite/0001_archive.sql"),
    ),
    (
        2,
        "devices",
        include_str!("../../../migrations/sqlite/0002_devices.sql"),
    ),
    (
        3,
        "accounts",
        include_str!("../../../migrations/sqlite/0003_accounts.sql"),
    ),
    (
        4,
        "keys",
        include_str!("../../../migrations/sqlite/0004_keys.sql"),
    ),
    (
        5,
        "search",
        include_str!("../../../migrations/sqlite/0005_search.sql"),
    ),
    (
        6,
        "device retention",
        include_str!("../../../migrations/sqlite/0006_device_retention.sql"),
    ),
];
pub(crate) const POSTGRES: Embedded = &[
    (
        1,
        "archive",
        include_str!("../../../migrations/postgres/0001_archive.sql"),
    ),
    (
        2,
        "devices",
        include_str!("../../../migrations/postgres/0002_devices.sql"),
    ),
    (
        3,
        "accounts",
        include_str!("../../../migrations/postgres/0003_accounts.sql"),
    ),
    (
        4,
        "keys",
        include_str!("../../../migrations/postgres/0004_keys.sql"),
    ),
    (
        5,
        "search",
        include_str!("../../../migrations/postgres/0005_search.sql"),
    ),
    (
        6,
        "device retention",
        include_str!("../../../migrations/postgres/0006_device_retention.sql"),
    ),
];

fn migrator(migrations: Embedded) -> Migrator {
    let list: Vec<Migration> = migrations
        .iter()
        .map(|(version, description, sql)| {
            Migration::new(
                *version,
                Cow::Borrowed(*description),
                MigrationType::Simple,
                Cow::Borrowed(*sql),
                false,
            )
        })
        .collect();
    Migrator {
        migrations: Cow::Owned(list),
        ..Migrator::DEFAULT
    }
}

/// Applies `migrations` to the database behind `conn`; refuses a database that carries
/// migrations this program does not know (written by a newer Vellum) or whose applied
/// migrations were edited.
pub(crate) async fn run<'a, A>(migrations: Embedded, conn: A) -> Result<(), StoreError>
where
    A: sqlx::Acquire<'a>,
    <A::Connection as std::ops::Deref>::Target: Migrate,
{
    let known = migrations.iter().map(|m| m.0).max().unwrap_or(0);
    migrator(migrations).run(conn).await.map_err(|e| match e {
        MigrateError::VersionMissing(found) => StoreError::SchemaTooNew { found, known },
        other => StoreError::backend("apply migrations", other),
    })
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a failure is a failed test")]
    use super::*;

    /// Migration 6 binds each device enrolled before it to the retention classes its
    /// records already use (so no device's captures start failing on upgrade), and
    /// leaves a device with no record unbound (its first capture binds it).
    #[tokio::test]
    async fn devices_are_bound_to_the_classes_they_used_before_the_upgrade() {
        let pool = sqlx::sqlite::SqlitePoolOptions::new()
            .max_connections(1)
            .connect("sqlite::memory:")
            .await
            .unwrap();
        run(&SQLITE[..5], &pool).await.unwrap();
        for (device, custodian) in [(1u8, "ann"), (2, "bob"), (3, "cy")] {
            sqlx::query(
                "INSERT INTO devices (device_id, public_key, credential_hash, custodian, enrolled_at) \
                 VALUES ($1, $2, $3, $4, 0)",
            )
            .bind(vec![device; 16])
            .bind(vec![device; 32])
            .bind(vec![device + 100; 32])
            .bind(custodian)
            .execute(&pool)
            .await
            .unwrap();
        }
        // Device 1 captured under two classes, device 2 under one, device 3 never.
        for (leaf, device, retention) in [
            (0i64, 1u8, "default"),
            (1, 1, "permanent"),
            (2, 2, "default"),
            (3, 1, "default"),
        ] {
            sqlx::query(
                "INSERT INTO record_index (leaf_index, custodian, device_id, channel, retention, epoch, \
                 captured_at, received_at, body_len) VALUES ($1, 'x', $2, 'email', $3, 1, 0, 0, 1)",
            )
            .bind(leaf)
            .bind(vec![device; 16])
            .bind(retention)
            .execute(&pool)
            .await
            .unwrap();
        }
        run(SQLITE, &pool).await.unwrap();
        let bound: Vec<(Vec<u8>, String)> =
            sqlx::query_as("SELECT device_id, retention FROM device_retention ORDER BY device_id, retention")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(
            bound,
            vec![
                (vec![1; 16], "default".to_owned()),
                (vec![1; 16], "permanent".to_owned()),
                (vec![2; 16], "default".to_owned()),
            ]
        );
        // Each binding waits to be recorded as an audit event at the gateway's start.
        let unaudited: Vec<Vec<u8>> =
            sqlx::query_scalar("SELECT device_id FROM device_retention_unaudited ORDER BY device_id")
                .fetch_all(&pool)
                .await
                .unwrap();
        assert_eq!(unaudited, vec![vec![1; 16], vec![2; 16]]);
    }
}
