//! Database layout: versioned migrations, the resource catalog, object tables and their
//! expression indexes.
//!
//! Layout: one table per resource (`obj_<n>_<slug>`, e.g. `obj_1_managed_user`), created on
//! first write and named in the catalog table `repo_resource`; the name is derived from the
//! catalog row number plus an ASCII slug, so it is always a safe identifier. Each object
//! table is `(id TEXT PRIMARY KEY, rev TEXT, body BLOB)` with the body stored as SQLite
//! JSONB (no re-parsing of JSON text on every `json_extract`).
//!
//! A searchable property gets two indexes: `json_extract(body, <path>)` (serves eq, ranges,
//! `sw`, `pr`, sorting and unique checks) and a partial index on
//! `json_type(body, <path>) WHERE … = 'array'` that holds only the objects where the property
//! is an array, so the "any element matches" branch of a comparison costs an index probe.

use rusqlite::{Connection, OptionalExtension, Transaction};
use sha2::{Digest, Sha256};

use super::sql::{index_key, type_expr, value_expr};
use crate::crest::filter::JsonPointer;
use crate::repo::RepoError;

/// One migration step: the SQL that takes the schema from version `i` to `i + 1`
/// (`PRAGMA user_version`). Append only; never edit a released step.
pub(crate) const MIGRATIONS: &[&str] = &[
    // 1: the catalog of object tables.
    "CREATE TABLE repo_resource (
         resource TEXT NOT NULL PRIMARY KEY,
         tbl TEXT NOT NULL UNIQUE
     );",
    // 2: facts about the store itself (format, last version that opened it), for support.
    "CREATE TABLE repo_meta (
         key TEXT NOT NULL PRIMARY KEY,
         value TEXT NOT NULL
     );
     INSERT INTO repo_meta (key, value) VALUES ('layout', 'table-per-resource,jsonb');",
];

/// Applies the missing migration steps, all in one transaction.
pub(crate) fn migrate(conn: &mut Connection) -> Result<u32, RepoError> {
    migrate_to(conn, MIGRATIONS.len())
}

/// Applies migrations up to version `target` (tests build old databases with it).
pub(crate) fn migrate_to(conn: &mut Connection, target: usize) -> Result<u32, RepoError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(internal("starting the migration"))?;
    let current: u32 = tx
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(internal("reading the schema version"))?;
    let current_idx = current as usize;
    if current_idx > MIGRATIONS.len() {
        return Err(RepoError::Internal(format!(
            "the store has schema version {current}, newer than this gateway knows ({}); \
             refusing to open it",
            MIGRATIONS.len()
        )));
    }
    for (i, step) in MIGRATIONS.iter().enumerate().take(target).skip(current_idx) {
        tx.execute_batch(step).map_err(internal(&format!(
            "migrating the store to version {}",
            i + 1
        )))?;
    }
    let version = target.max(current_idx);
    if version > current_idx {
        tx.pragma_update(None, "user_version", version as u32)
            .map_err(internal("writing the schema version"))?;
    }
    if version >= 2 {
        tx.execute(
            "INSERT INTO repo_meta (key, value) VALUES ('last_opened_by', ?1)
             ON CONFLICT (key) DO UPDATE SET value = excluded.value",
            [env!("CARGO_PKG_VERSION")],
        )
        .map_err(internal("recording the opening version"))?;
    }
    tx.commit().map_err(internal("committing the migration"))?;
    Ok(version as u32)
}

/// `repo_meta` key of the next revision number ([`super::writer`]'s sequence).
const NEXT_REV: &str = "next_rev";

/// Where the revision sequence starts in a store written before it existed: such a store
/// numbered revisions per object from "0", and the revisions of objects it has since deleted
/// are unknown, so the sequence starts above any per-object counter it can realistically
/// hold (2^32 writes of one object).
const NEXT_REV_AFTER_COUNTERS: u64 = 1 << 32;

/// The next revision number: stored in `repo_meta`; for a store without one, 1 when it holds
/// no object table yet, [`NEXT_REV_AFTER_COUNTERS`] when it does.
pub(crate) fn load_next_rev(conn: &Connection) -> Result<u64, RepoError> {
    let stored: Option<String> = conn
        .query_row(
            "SELECT value FROM repo_meta WHERE key = ?1",
            [NEXT_REV],
            |r| r.get(0),
        )
        .optional()
        .map_err(internal("reading the revision sequence"))?;
    if let Some(text) = stored {
        return text.parse().map_err(|_| {
            RepoError::Internal(format!(
                "the stored revision sequence '{text}' is not a number"
            ))
        });
    }
    let has_tables: bool = conn
        .query_row("SELECT EXISTS (SELECT 1 FROM repo_resource)", [], |r| {
            r.get(0)
        })
        .map_err(internal("reading the catalog"))?;
    Ok(if has_tables {
        NEXT_REV_AFTER_COUNTERS
    } else {
        1
    })
}

/// Records the next revision number, in the transaction that used the ones before it.
pub(crate) fn store_next_rev(tx: &Transaction<'_>, next: u64) -> Result<(), RepoError> {
    tx.prepare_cached(
        "INSERT INTO repo_meta (key, value) VALUES (?1, ?2)
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
    )
    .and_then(|mut s| s.execute(rusqlite::params![NEXT_REV, next.to_string()]))
    .map(|_| ())
    .map_err(internal("recording the revision sequence"))
}

/// Every resource → table mapping of the catalog.
pub(crate) fn load_catalog(conn: &Connection) -> Result<Vec<(String, String)>, RepoError> {
    let mut stmt = conn
        .prepare("SELECT resource, tbl FROM repo_resource")
        .map_err(internal("reading the catalog"))?;
    let rows = stmt
        .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
        .map_err(internal("reading the catalog"))?;
    rows.collect::<Result<Vec<_>, _>>()
        .map_err(internal("reading the catalog"))
}

/// The table of `resource` in the transaction's view, if it exists.
pub(crate) fn find_table(
    tx: &Transaction<'_>,
    resource: &str,
) -> Result<Option<String>, RepoError> {
    tx.prepare_cached("SELECT tbl FROM repo_resource WHERE resource = ?1")
        .and_then(|mut s| s.query_row([resource], |r| r.get(0)).optional())
        .map_err(internal("reading the catalog"))
}

/// Creates the table of `resource` and its catalog row.
pub(crate) fn create_table(tx: &Transaction<'_>, resource: &str) -> Result<String, RepoError> {
    let next: i64 = tx
        .query_row(
            "SELECT coalesce(max(rowid), 0) + 1 FROM repo_resource",
            [],
            |r| r.get(0),
        )
        .map_err(internal("numbering a new table"))?;
    let tbl = format!("obj_{next}_{}", slug(resource));
    tx.execute(
        "INSERT INTO repo_resource (rowid, resource, tbl) VALUES (?1, ?2, ?3)",
        rusqlite::params![next, resource, tbl],
    )
    .map_err(internal("adding a table to the catalog"))?;
    tx.execute_batch(&format!(
        "CREATE TABLE \"{tbl}\" (
             id TEXT NOT NULL PRIMARY KEY,
             rev TEXT NOT NULL,
             body BLOB NOT NULL
         );"
    ))
    .map_err(internal("creating an object table"))?;
    Ok(tbl)
}

/// Lowercase ASCII letters and digits of `resource`, other characters as `_`, at most 40.
fn slug(resource: &str) -> String {
    resource
        .chars()
        .take(40)
        .map(|c| {
            if c.is_ascii_alphanumeric() {
                c.to_ascii_lowercase()
            } else {
                '_'
            }
        })
        .collect()
}

/// Index names of a property: `<tbl>_x_<hash>` (value) and `<tbl>_a_<hash>` (arrays).
fn index_names(tbl: &str, field: &JsonPointer) -> (String, String) {
    let digest = Sha256::digest(index_key(field).as_bytes());
    let hash: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
    (format!("{tbl}_x_{hash}"), format!("{tbl}_a_{hash}"))
}

/// Makes the property indexes of `tbl` exactly those of `fields` (`_id` and `_rev` are
/// columns and need none).
pub(crate) fn set_indexes(
    tx: &Transaction<'_>,
    tbl: &str,
    fields: &[JsonPointer],
) -> Result<(), RepoError> {
    let mut wanted = Vec::new();
    for field in fields {
        if matches!(field.tokens(), [t] if t == "_id" || t == "_rev") {
            continue;
        }
        let (x, a) = index_names(tbl, field);
        wanted.push((x, a, field));
    }
    let existing: Vec<String> = {
        let mut stmt = tx
            .prepare(
                "SELECT name FROM sqlite_master WHERE type = 'index' AND tbl_name = ?1
                 AND (substr(name, 1, length(?1) + 3) = ?1 || '_x_'
                   OR substr(name, 1, length(?1) + 3) = ?1 || '_a_')",
            )
            .map_err(internal("listing indexes"))?;
        let rows = stmt
            .query_map([tbl], |r| r.get(0))
            .map_err(internal("listing indexes"))?;
        rows.collect::<Result<_, _>>()
            .map_err(internal("listing indexes"))?
    };
    for name in &existing {
        if !wanted.iter().any(|(x, a, _)| x == name || a == name) {
            tx.execute_batch(&format!("DROP INDEX \"{name}\""))
                .map_err(internal("dropping an index"))?;
        }
    }
    for (x, a, field) in &wanted {
        let v = value_expr(field);
        let t = type_expr(field);
        tx.execute_batch(&format!(
            "CREATE INDEX IF NOT EXISTS \"{x}\" ON \"{tbl}\" ({v});
             CREATE INDEX IF NOT EXISTS \"{a}\" ON \"{tbl}\" ({t}) WHERE {t} = 'array';"
        ))
        .map_err(internal("creating an index"))?;
    }
    Ok(())
}

/// Maps a SQLite error to [`RepoError::Internal`] naming what was being done.
pub(crate) fn internal(what: &str) -> impl Fn(rusqlite::Error) -> RepoError + '_ {
    move |e| RepoError::Internal(format!("{what}: {e}"))
}
