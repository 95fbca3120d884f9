//! Box state in SQLite (`BOXLITE_HOME/db/boxlite.db`, WAL mode).
//!
//! Several processes use one home at once: a CLI running `exec`, another running `ls`, a
//! box's monitor. WAL lets readers proceed while one writer commits, and a busy timeout
//! makes a writer wait for another instead of failing. Statements here are short; the
//! long operations on a box (boot, shutdown) are serialized by the box's file lock, not
//! by holding a transaction open.
//!
//! The schema is versioned with `PRAGMA user_version`: migration N takes the database
//! from version N to N+1, and all pending ones run in one transaction. A database newer
//! than this build is refused rather than guessed at. Box config and status are JSON
//! columns read leniently (see `litebox::record`), so rows written by an older version,
//! with fields missing or extra, still load.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rusqlite::{Connection, OptionalExtension, params};

use crate::model::{BoxConfig, BoxRow, BoxStatus, Health};

/// Each entry moves the schema one version up. Never edit a released entry; append.
const MIGRATIONS: &[&str] = &[
    // 0 -> 1: boxes.
    "CREATE TABLE boxes (
        id TEXT PRIMARY KEY NOT NULL,
        name TEXT UNIQUE,
        created_at INTEGER NOT NULL,
        config TEXT NOT NULL,
        status TEXT NOT NULL
    ) STRICT;",
];

/// The schema version this build writes.
#[allow(clippy::cast_possible_truncation)] // a handful of migrations, in a const
pub const SCHEMA_VERSION: u32 = MIGRATIONS.len() as u32;

#[derive(Debug, thiserror::Error)]
pub enum DbError {
    #[error("opening the state database {path}")]
    Open {
        path: PathBuf,
        #[source]
        source: rusqlite::Error,
    },
    #[error(
        "the state database {path} has schema version {found}, newer than this boxlite understands ({supported}); use a newer boxlite"
    )]
    NewerSchema {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error("state database: {context}")]
    Sql {
        context: String,
        #[source]
        source: rusqlite::Error,
    },
    #[error("the name {0:?} is already used by another box")]
    NameTaken(String),
}

fn sql(context: impl Into<String>) -> impl FnOnce(rusqlite::Error) -> DbError {
    let context = context.into();
    move |source| DbError::Sql { context, source }
}

/// The state database of one home. Cheap to clone: clones share the connection.
///
/// Every call blocks (on the mutex, and on SQLite's busy timeout while another process
/// writes): async code reaches it through `Home::db`, which runs it on the blocking pool.
#[derive(Debug, Clone)]
pub struct Db {
    path: PathBuf,
    conn: Arc<Mutex<Connection>>,
}

/// How long a statement waits for another process's lock on the state.
const BUSY_TIMEOUT: Duration = Duration::from_secs(30);

impl Db {
    /// Open (creating if needed) and migrate the database at `path`.
    pub fn open(path: &Path) -> Result<Db, DbError> {
        let open_err = |source| DbError::Open {
            path: path.to_path_buf(),
            source,
        };
        let mut conn = Connection::open(path).map_err(open_err)?;
        conn.busy_timeout(BUSY_TIMEOUT).map_err(open_err)?;
        // WAL is persistent in the file; asking again is cheap. NORMAL is durable across
        // process crashes, which is what the state needs to survive.
        set_wal(&conn).map_err(open_err)?;
        conn.pragma_update(None, "synchronous", "NORMAL")
            .map_err(open_err)?;
        migrate(&mut conn, path)?;
        Ok(Db {
            path: path.to_path_buf(),
            conn: Arc::new(Mutex::new(conn)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the connection cannot leave it half-updated (every write
        // is one statement or one transaction), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Insert a new box. Fails with [`DbError::NameTaken`] when the name is in use.
    pub fn insert(&self, row: &BoxRow) -> Result<(), DbError> {
        let res = self.conn().execute(
            "INSERT INTO boxes (id, name, created_at, config, status) VALUES (?1, ?2, ?3, ?4, ?5)",
            params![
                row.id,
                row.name,
                i64::try_from(row.created_at).unwrap_or(i64::MAX),
                to_json(&row.config),
                to_json(&row.status)
            ],
        );
        match res {
            Ok(_) => Ok(()),
            Err(rusqlite::Error::SqliteFailure(e, Some(msg)))
                if e.code == rusqlite::ErrorCode::ConstraintViolation
                    && msg.contains("boxes.name") =>
            {
                Err(DbError::NameTaken(row.name.clone().unwrap_or_default()))
            }
            Err(e) => Err(sql(format!("inserting box {}", row.id))(e)),
        }
    }

    /// Replace a box's status. Returns false when the box no longer exists.
    pub fn update_status(&self, id: &str, status: &BoxStatus) -> Result<bool, DbError> {
        let n = self
            .conn()
            .execute(
                "UPDATE boxes SET status = ?2 WHERE id = ?1",
                params![id, to_json(status)],
            )
            .map_err(sql(format!("updating box {id}")))?;
        Ok(n == 1)
    }

    /// Record a health observation, atomically and only while the box is still running
    /// on the VMM `vmm_pid` (a concurrent stop or restart wins).
    pub fn update_health(&self, id: &str, vmm_pid: i32, health: &Health) -> Result<bool, DbError> {
        let n = self
            .conn()
            .execute(
                "UPDATE boxes SET status = json_set(status, '$.health', json(?2))
                 WHERE id = ?1 AND json_extract(status, '$.state') = 'Running'
                   AND json_extract(status, '$.vmm.pid') = ?3",
                params![id, to_json(health), vmm_pid],
            )
            .map_err(sql(format!("recording the health of box {id}")))?;
        Ok(n == 1)
    }

    pub fn delete(&self, id: &str) -> Result<(), DbError> {
        self.conn()
            .execute("DELETE FROM boxes WHERE id = ?1", params![id])
            .map_err(sql(format!("deleting box {id}")))?;
        Ok(())
    }

    pub fn get(&self, id: &str) -> Result<Option<BoxRow>, DbError> {
        self.conn()
            .query_row(
                "SELECT id, name, created_at, config, status FROM boxes WHERE id = ?1",
                params![id],
                read_row,
            )
            .optional()
            .map_err(sql(format!("reading box {id}")))
    }

    /// Every box, oldest first.
    pub fn list(&self) -> Result<Vec<BoxRow>, DbError> {
        let conn = self.conn();
        let mut stmt = conn
            .prepare_cached(
                "SELECT id, name, created_at, config, status FROM boxes ORDER BY created_at, id",
            )
            .map_err(sql("listing boxes"))?;
        let rows = stmt
            .query_map([], read_row)
            .map_err(sql("listing boxes"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(sql("listing boxes"))?;
        Ok(rows)
    }

    /// Ids that start with `prefix`, and the id of the box named `prefix`, if any.
    pub fn lookup(&self, key: &str) -> Result<(Vec<String>, Option<String>), DbError> {
        let conn = self.conn();
        let by_name: Option<String> = conn
            .query_row("SELECT id FROM boxes WHERE name = ?1", params![key], |r| {
                r.get(0)
            })
            .optional()
            .map_err(sql(format!("looking up {key:?}")))?;
        // Ids are lowercase hex, so a prefix never contains LIKE wildcards once validated;
        // substr comparison avoids the question entirely.
        let mut stmt = conn
            .prepare_cached("SELECT id FROM boxes WHERE substr(id, 1, length(?1)) = ?1 ORDER BY id")
            .map_err(sql(format!("looking up {key:?}")))?;
        let ids = stmt
            .query_map(params![key], |r| r.get(0))
            .map_err(sql(format!("looking up {key:?}")))?
            .collect::<Result<Vec<String>, _>>()
            .map_err(sql(format!("looking up {key:?}")))?;
        Ok((ids, by_name))
    }

    #[cfg(test)]
    pub fn count(&self) -> Result<usize, DbError> {
        self.conn()
            .query_row("SELECT count(*) FROM boxes", [], |r| r.get::<_, i64>(0))
            .map(|n| usize::try_from(n).unwrap_or(0))
            .map_err(sql("counting boxes"))
    }
}

/// Switch the file to WAL. Changing the journal mode needs the file to itself, and SQLite
/// answers "database is locked" at once rather than through the busy handler while
/// another process is creating or switching the same new file (two commands started
/// together on a fresh home), so this waits for that itself, as long as the busy
/// timeout.
fn set_wal(conn: &Connection) -> rusqlite::Result<()> {
    let deadline = std::time::Instant::now() + BUSY_TIMEOUT;
    loop {
        match conn.pragma_update(None, "journal_mode", "WAL") {
            Err(rusqlite::Error::SqliteFailure(e, _))
                if e.code == rusqlite::ErrorCode::DatabaseBusy
                    && std::time::Instant::now() < deadline =>
            {
                crate::util::blocking::sleep(Duration::from_millis(5));
            }
            r => return r,
        }
    }
}

fn migrate(conn: &mut Connection, path: &Path) -> Result<(), DbError> {
    let tx = conn
        .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
        .map_err(sql("starting the schema migration"))?;
    let found: u32 = tx
        .pragma_query_value(None, "user_version", |r| r.get(0))
        .map_err(sql("reading the schema version"))?;
    if found > SCHEMA_VERSION {
        return Err(DbError::NewerSchema {
            path: path.to_path_buf(),
            found,
            supported: SCHEMA_VERSION,
        });
    }
    for (i, step) in MIGRATIONS.iter().enumerate().skip(found as usize) {
        tx.execute_batch(step)
            .map_err(sql(format!("migrating the schema to version {}", i + 1)))?;
    }
    if found < SCHEMA_VERSION {
        tx.pragma_update(None, "user_version", SCHEMA_VERSION)
            .map_err(sql("writing the schema version"))?;
        tracing::info!(from = found, to = SCHEMA_VERSION, "state database migrated");
    }
    tx.commit().map_err(sql("committing the schema migration"))
}

fn to_json<T: serde::Serialize>(v: &T) -> String {
    serde_json::to_string(v).expect("plain structs serialize")
}

/// Decode a row. A JSON column that does not parse at all (not just missing or extra
/// fields) still yields a row, marked Failed with the reason, so the box stays visible
/// and removable instead of breaking every listing.
fn read_row(r: &rusqlite::Row<'_>) -> rusqlite::Result<BoxRow> {
    let id: String = r.get(0)?;
    let config_text: String = r.get(3)?;
    let status_text: String = r.get(4)?;
    let mut problems = Vec::new();
    let config = serde_json::from_str::<BoxConfig>(&config_text).unwrap_or_else(|e| {
        problems.push(format!("config: {e}"));
        BoxConfig::default()
    });
    let mut status = serde_json::from_str::<BoxStatus>(&status_text).unwrap_or_else(|e| {
        problems.push(format!("status: {e}"));
        BoxStatus::default()
    });
    if !problems.is_empty() {
        status = BoxStatus::unreadable(format!("unreadable record: {}", problems.join("; ")));
    }
    Ok(BoxRow {
        id,
        name: r.get(1)?,
        created_at: u64::try_from(r.get::<_, i64>(2)?).unwrap_or(0),
        config,
        status,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::{BoxState, HealthState};

    fn temp_db() -> (PathBuf, Db) {
        let dir = std::env::temp_dir().join(format!("bx-db-{:016x}", rand::random::<u64>()));
        std::fs::create_dir_all(&dir).unwrap();
        let db = Db::open(&dir.join("boxlite.db")).unwrap();
        (dir, db)
    }

    fn row(id: &str, name: Option<&str>) -> BoxRow {
        BoxRow {
            id: id.into(),
            name: name.map(Into::into),
            created_at: 1,
            config: BoxConfig {
                image: "boxlite/busybox".into(),
                ..Default::default()
            },
            status: BoxStatus::default(),
        }
    }

    #[test]
    fn row_from_an_older_schema_with_missing_and_extra_fields_loads() {
        let (dir, db) = temp_db();
        db.conn()
            .execute(
                "INSERT INTO boxes VALUES ('abc', NULL, 5, ?1, ?2)",
                params![
                    r#"{"image":"boxlite/busybox","cpus":1,"tpm":true}"#,
                    r#"{"state":"Stopped","last_error":"old","legacy_pid":12}"#
                ],
            )
            .unwrap();

        let got = db.get("abc").unwrap().unwrap();

        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(got.config.cpus, 1);
        assert_eq!(got.config.memory_mib, 512);
        assert_eq!(got.status.state(), BoxState::Stopped);
        assert_eq!(got.status.last_error.as_deref(), Some("old"));
    }

    #[test]
    fn unparseable_row_is_listed_as_failed_with_the_reason() {
        let (dir, db) = temp_db();
        db.conn()
            .execute(
                "INSERT INTO boxes VALUES ('bad', NULL, 5, 'not json', '{}')",
                [],
            )
            .unwrap();

        let rows = db.list().unwrap();

        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].status.state(), BoxState::Failed);
        assert!(
            rows[0]
                .status
                .last_error
                .as_ref()
                .unwrap()
                .contains("config")
        );
    }

    #[test]
    fn health_update_applies_only_to_the_running_vmm_it_observed() {
        let (dir, db) = temp_db();
        let mut r = row("a1", None);
        r.status = BoxStatus::in_state(BoxState::Running);
        r.status.vmm = Some(crate::util::process::ProcessId {
            pid: 42,
            start_time: 1,
        });
        db.insert(&r).unwrap();
        let sick = Health {
            state: HealthState::Unhealthy,
            failing_streak: 3,
            last_error: Some("timeout".into()),
            checked_at: Some(7),
        };

        let stale = db.update_health("a1", 41, &sick).unwrap();
        let applied = db.update_health("a1", 42, &sick).unwrap();
        let got = db.get("a1").unwrap().unwrap();

        std::fs::remove_dir_all(dir).unwrap();
        assert!(!stale);
        assert!(applied);
        assert_eq!(got.status.health, sick);
        assert_eq!(got.status.state(), BoxState::Running);
    }

    #[test]
    fn duplicate_name_is_refused_with_the_name() {
        let (dir, db) = temp_db();
        db.insert(&row("a1", Some("web"))).unwrap();

        let err = db.insert(&row("b2", Some("web"))).unwrap_err();

        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(&err, DbError::NameTaken(n) if n == "web"), "{err}");
    }

    #[test]
    fn reopening_migrates_once_and_keeps_rows() {
        let (dir, db) = temp_db();
        db.insert(&row("a1", None)).unwrap();
        drop(db);

        let again = Db::open(&dir.join("boxlite.db")).unwrap();
        let version: u32 = again
            .conn()
            .pragma_query_value(None, "user_version", |r| r.get(0))
            .unwrap();
        let n = again.count().unwrap();

        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(version, SCHEMA_VERSION);
        assert_eq!(n, 1);
    }

    #[test]
    fn database_from_a_newer_version_is_refused() {
        let (dir, db) = temp_db();
        db.conn()
            .pragma_update(None, "user_version", SCHEMA_VERSION + 1)
            .unwrap();
        drop(db);

        let err = Db::open(&dir.join("boxlite.db")).unwrap_err();

        std::fs::remove_dir_all(dir).unwrap();
        assert!(matches!(err, DbError::NewerSchema { .. }), "{err}");
        assert!(err.to_string().contains("newer than this boxlite"));
    }

    #[test]
    fn prefix_lookup_returns_every_match_and_the_exact_name() {
        let (dir, db) = temp_db();
        db.insert(&row("abc1", Some("ab"))).unwrap();
        db.insert(&row("abc2", None)).unwrap();
        db.insert(&row("ffff", None)).unwrap();

        let (ids, by_name) = db.lookup("ab").unwrap();

        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(ids, vec!["abc1".to_string(), "abc2".to_string()]);
        assert_eq!(by_name.as_deref(), Some("abc1"));
    }

    #[test]
    fn commands_opening_a_new_home_together_all_open_it() {
        // Two commands started at once on a fresh home both create and switch the same
        // new file to WAL; SQLite refuses one at once, outside its busy handler.
        for round in 0..20 {
            let dir = std::env::temp_dir()
                .join(format!("bx-db-race-{:016x}-{round}", rand::random::<u64>()));
            std::fs::create_dir_all(&dir).unwrap();
            let path = dir.join("boxlite.db");
            let start = std::sync::Arc::new(std::sync::Barrier::new(6));
            let opened: Vec<_> = (0..6)
                .map(|_| {
                    let (path, start) = (path.clone(), start.clone());
                    std::thread::spawn(move || {
                        start.wait();
                        Db::open(&path).map(|_| ()).map_err(|e| e.to_string())
                    })
                })
                .collect::<Vec<_>>()
                .into_iter()
                .map(|t| t.join().unwrap())
                .collect();
            std::fs::remove_dir_all(&dir).unwrap();
            for r in opened {
                r.unwrap();
            }
        }
    }

    #[test]
    fn two_connections_write_concurrently_without_busy_errors() {
        let (dir, db) = temp_db();
        let path = dir.join("boxlite.db");
        let other = Db::open(&path).unwrap();
        let t = std::thread::spawn(move || {
            for i in 0..200 {
                other.insert(&row(&format!("o{i}"), None)).unwrap();
            }
        });
        for i in 0..200 {
            db.insert(&row(&format!("m{i}"), None)).unwrap();
        }
        t.join().unwrap();

        let n = db.count().unwrap();
        std::fs::remove_dir_all(dir).unwrap();
        assert_eq!(n, 400);
    }
}
