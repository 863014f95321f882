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
