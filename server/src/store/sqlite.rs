//! SQLite metadata: one file, WAL journal, schema versioned with `PRAGMA user_version`
//! and upgraded by [`MIGRATIONS`] when the server opens it.

use std::path::Path;
use std::sync::Mutex;

use rusqlite::{params, Connection, OptionalExtension, Row};

use super::{
    ListPage, ListQuery, MetaStore, ProfileRecord, StoreCounts, StoreError, SymbolRecord,
    TierTotals,
};

/// Schema migrations: entry `i` upgrades version `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: profiles, their tags and modules, symbol files.
    r#"
    CREATE TABLE profiles (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        created_ms    INTEGER NOT NULL,
        size          INTEGER NOT NULL,
        blob          TEXT NOT NULL,
        command       TEXT NOT NULL,
        processes     INTEGER NOT NULL,
        threads       INTEGER NOT NULL,
        samples       INTEGER NOT NULL,
        weight        INTEGER NOT NULL,
        duration_s    REAL NOT NULL,
        start_unix_ns INTEGER NOT NULL,
        mode          TEXT NOT NULL,
        truncated     INTEGER NOT NULL
    );
    CREATE INDEX profiles_created ON profiles (created_ms DESC, id DESC);
    CREATE INDEX profiles_blob ON profiles (blob);
    CREATE TABLE profile_tags (
        profile_id TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
        tag        TEXT NOT NULL,
        PRIMARY KEY (profile_id, tag)
    );
    CREATE INDEX profile_tags_tag ON profile_tags (tag);
    CREATE TABLE profile_modules (
        profile_id TEXT NOT NULL REFERENCES profiles (id) ON DELETE CASCADE,
        build_id   TEXT NOT NULL,
        PRIMARY KEY (profile_id, build_id)
    );
    CREATE TABLE symbols (
        build_id    TEXT PRIMARY KEY,
        blob        TEXT NOT NULL,
        size        INTEGER NOT NULL,
        uploaded_ms INTEGER NOT NULL
    );
    CREATE INDEX symbols_blob ON symbols (blob);
    "#,
    // 2: tier totals, filled in when a profile is first analyzed (JSON object).
    r#"
    ALTER TABLE profiles ADD COLUMN tiers TEXT;
    "#,
    // 3: symbol sequence numbers (cache invalidation across replicas), a health probe row.
    r#"
    ALTER TABLE symbols ADD COLUMN seq INTEGER NOT NULL DEFAULT 0;
    CREATE TABLE health (id INTEGER PRIMARY KEY, at_ms INTEGER NOT NULL);
    "#,
];

pub struct SqliteMeta {
    conn: Mutex<Connection>,
}

fn db(e: rusqlite::Error) -> StoreError {
    StoreError::Database(e.to_string())
}

const PROFILE_COLUMNS: &str = "id, name, created_ms, size, blob, command, processes, threads, \
     samples, weight, duration_s, start_unix_ns, mode, truncated, tiers";

impl SqliteMeta {
    /// Opens (creating if needed) the database at `path` and brings its schema up to date.
    pub fn open(path: &Path) -> Result<SqliteMeta, StoreError> {
        let conn = Connection::open(path).map_err(db)?;
        Self::init(conn)
    }

    /// An in-memory database (tests).
    pub fn in_memory() -> Result<SqliteMeta, StoreError> {
        Self::init(Connection::open_in_memory().map_err(db)?)
    }

    fn init(mut conn: Connection) -> Result<SqliteMeta, StoreError> {
        conn.busy_timeout(std::time::Duration::from_secs(10))
            .map_err(db)?;
        // WAL: readers do not block the writer; NORMAL sync is durable across crashes of
        // the server (not of the machine's power, which WAL + NORMAL trades for speed).
        let _mode: String = conn
            .query_row("PRAGMA journal_mode = WAL", [], |r| r.get(0))
            .map_err(db)?;
        conn.execute_batch("PRAGMA synchronous = NORMAL; PRAGMA foreign_keys = ON;")
            .map_err(db)?;
        migrate(&mut conn)?;
        Ok(SqliteMeta {
            conn: Mutex::new(conn),
        })
    }

    fn conn(&self) -> std::sync::MutexGuard<'_, Connection> {
        // A panic while holding the lock cannot leave SQLite inconsistent (it rolls back
        // open transactions), so a poisoned lock is still usable.
        self.conn.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The schema version of the open database.
    pub fn schema_version(&self) -> Result<i64, StoreError> {
        self.conn()
            .query_row("PRAGMA user_version", [], |r| r.get(0))
            .map_err(db)
    }
}

fn migrate(conn: &mut Connection) -> Result<(), StoreError> {
    let known = MIGRATIONS.len() as i64;
    let version: i64 = conn
        .query_row("PRAGMA user_version", [], |r| r.get(0))
        .map_err(db)?;
    if version > known {
        return Err(StoreError::SchemaTooNew {
            found: version,
            known,
        });
    }
    for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
        // IMMEDIATE: take the write lock up front (a read upgraded to a write fails at
        // once, without waiting, when another process wrote meanwhile).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        tx.execute_batch(sql).map_err(db)?;
        tx.pragma_update(None, "user_version", i as i64 + 1)
            .map_err(db)?;
        tx.commit().map_err(db)?;
    }
    Ok(())
}

fn profile_from_row(r: &Row<'_>) -> rusqlite::Result<ProfileRecord> {
    let tiers: Option<String> = r.get(14)?;
    Ok(ProfileRecord {
        id: r.get(0)?,
        name: r.get(1)?,
        tags: Vec::new(),
        created_unix_ms: r.get(2)?,
        size: r.get::<_, i64>(3)? as u64,
        blob: r.get(4)?,
        command: r.get(5)?,
        processes: r.get::<_, i64>(6)? as u32,
        threads: r.get::<_, i64>(7)? as u32,
        samples: r.get::<_, i64>(8)? as u64,
        weight: r.get::<_, i64>(9)? as u64,
        duration_s: r.get(10)?,
        start_unix_ns: r.get::<_, i64>(11)? as u64,
        mode: r.get(12)?,
        truncated: r.get::<_, i64>(13)? != 0,
        build_ids: Vec::new(),
        tiers: tiers.and_then(|t| serde_json::from_str::<TierTotals>(&t).ok()),
    })
}

/// Fills in tags and build ids.
fn complete(conn: &Connection, p: &mut ProfileRecord) -> rusqlite::Result<()> {
    let mut st =
        conn.prepare_cached("SELECT tag FROM profile_tags WHERE profile_id = ? ORDER BY tag")?;
    p.tags = st
        .query_map([&p.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    let mut st = conn.prepare_cached(
        "SELECT build_id FROM profile_modules WHERE profile_id = ? ORDER BY build_id",
    )?;
    p.build_ids = st
        .query_map([&p.id], |r| r.get(0))?
        .collect::<rusqlite::Result<_>>()?;
    Ok(())
}

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

/// `%`, `_` and `\` escaped for `LIKE … ESCAPE '\'`.
fn like_escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len() + 2);
    out.push('%');
    for c in s.chars() {
        if matches!(c, '%' | '_' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('%');
    out
}

impl MetaStore for SqliteMeta {
    fn insert_profile(&self, p: &ProfileRecord) -> Result<(), StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock up front (a read upgraded to a write fails at
        // once, without waiting, when another process wrote meanwhile).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let exists: bool = tx
            .query_row(
                "SELECT EXISTS (SELECT 1 FROM profiles WHERE id = ?)",
                [&p.id],
                |r| r.get(0),
            )
            .map_err(db)?;
        if exists {
            return Err(StoreError::Duplicate(p.id.clone()));
        }
        tx.execute(
            &format!(
                "INSERT INTO profiles ({PROFILE_COLUMNS}) \
                 VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15)"
            ),
            params![
                p.id,
                p.name,
                p.created_unix_ms,
                to_i64(p.size),
                p.blob,
                p.command,
                p.processes as i64,
                p.threads as i64,
                to_i64(p.samples),
                to_i64(p.weight),
                p.duration_s,
                to_i64(p.start_unix_ns),
                p.mode,
                p.truncated as i64,
                p.tiers.as_ref().and_then(|t| serde_json::to_string(t).ok()),
            ],
        )
        .map_err(db)?;
        for t in &p.tags {
            tx.execute(
                "INSERT OR IGNORE INTO profile_tags (profile_id, tag) VALUES (?, ?)",
                params![p.id, t],
            )
            .map_err(db)?;
        }
        for b in &p.build_ids {
            tx.execute(
                "INSERT OR IGNORE INTO profile_modules (profile_id, build_id) VALUES (?, ?)",
                params![p.id, b],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let conn = self.conn();
        let mut p = conn
            .query_row(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = ?"),
                [id],
                profile_from_row,
            )
            .optional()
            .map_err(db)?;
        if let Some(p) = &mut p {
            complete(&conn, p).map_err(db)?;
        }
        Ok(p)
    }

    fn list_profiles(&self, q: &ListQuery) -> Result<ListPage, StoreError> {
        let conn = self.conn();
        let mut conds = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(n) = &q.name {
            conds.push("name LIKE ? ESCAPE '\\'");
            args.push(like_escape(n));
        }
        if let Some(t) = &q.tag {
            conds.push("id IN (SELECT profile_id FROM profile_tags WHERE tag = ?)");
            args.push(t.clone());
        }
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let total: i64 = conn
            .query_row(
                &format!("SELECT COUNT(*) FROM profiles {where_}"),
                rusqlite::params_from_iter(args.iter()),
                |r| r.get(0),
            )
            .map_err(db)?;
        let sql = format!(
            "SELECT {PROFILE_COLUMNS} FROM profiles {where_} \
             ORDER BY created_ms DESC, id DESC LIMIT {} OFFSET {}",
            q.limit,
            to_i64(q.offset)
        );
        let mut st = conn.prepare(&sql).map_err(db)?;
        let mut items: Vec<ProfileRecord> = st
            .query_map(rusqlite::params_from_iter(args.iter()), profile_from_row)
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        for p in &mut items {
            complete(&conn, p).map_err(db)?;
        }
        Ok(ListPage {
            total: total as u64,
            items,
        })
    }

    fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock up front (a read upgraded to a write fails at
        // once, without waiting, when another process wrote meanwhile).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let mut p = tx
            .query_row(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = ?"),
                [id],
                profile_from_row,
            )
            .optional()
            .map_err(db)?;
        if let Some(p) = &mut p {
            complete(&tx, p).map_err(db)?;
            tx.execute("DELETE FROM profiles WHERE id = ?", [id])
                .map_err(db)?;
        }
        tx.commit().map_err(db)?;
        Ok(p)
    }

    fn set_tiers(&self, id: &str, tiers: &TierTotals) -> Result<(), StoreError> {
        let json = serde_json::to_string(tiers).map_err(|e| StoreError::Database(e.to_string()))?;
        self.conn()
            .execute(
                "UPDATE profiles SET tiers = ? WHERE id = ?",
                params![json, id],
            )
            .map_err(db)?;
        Ok(())
    }

    fn put_symbol(&self, s: &SymbolRecord) -> Result<Option<SymbolRecord>, StoreError> {
        let mut conn = self.conn();
        // IMMEDIATE: take the write lock up front (a read upgraded to a write fails at
        // once, without waiting, when another process wrote meanwhile).
        let tx = conn
            .transaction_with_behavior(rusqlite::TransactionBehavior::Immediate)
            .map_err(db)?;
        let old = tx
            .query_row(
                "SELECT build_id, blob, size, uploaded_ms FROM symbols WHERE build_id = ?",
                [&s.build_id],
                symbol_from_row,
            )
            .optional()
            .map_err(db)?;
        tx.execute(
            "INSERT INTO symbols (build_id, blob, size, uploaded_ms, seq) \
             VALUES (?1, ?2, ?3, ?4, (SELECT COALESCE(MAX(seq), 0) + 1 FROM symbols)) \
             ON CONFLICT (build_id) DO UPDATE SET blob = ?2, size = ?3, uploaded_ms = ?4, \
             seq = (SELECT COALESCE(MAX(seq), 0) + 1 FROM symbols)",
            params![s.build_id, s.blob, to_i64(s.size), s.uploaded_unix_ms],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(old)
    }

    fn symbol(&self, build_id: &str) -> Result<Option<SymbolRecord>, StoreError> {
        self.conn()
            .query_row(
                "SELECT build_id, blob, size, uploaded_ms FROM symbols WHERE build_id = ?",
                [build_id],
                symbol_from_row,
            )
            .optional()
            .map_err(db)
    }

    fn symbol_seq(&self, build_ids: &[String]) -> Result<i64, StoreError> {
        if build_ids.is_empty() {
            return Ok(0);
        }
        let marks = vec!["?"; build_ids.len()].join(", ");
        self.conn()
            .query_row(
                &format!("SELECT COALESCE(MAX(seq), 0) FROM symbols WHERE build_id IN ({marks})"),
                rusqlite::params_from_iter(build_ids.iter()),
                |r| r.get(0),
            )
            .map_err(db)
    }

    fn blob_refs(&self, blob: &str) -> Result<u64, StoreError> {
        self.conn()
            .query_row(
                "SELECT (SELECT COUNT(*) FROM profiles WHERE blob = ?1) \
                     + (SELECT COUNT(*) FROM symbols WHERE blob = ?1)",
                [blob],
                |r| r.get::<_, i64>(0),
            )
            .map(|n| n as u64)
            .map_err(db)
    }

    fn expired_profiles(
        &self,
        before_ms: Option<i64>,
        keep: Option<u64>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let conn = self.conn();
        let before = before_ms.unwrap_or(i64::MIN);
        let keep = keep.map(to_i64).unwrap_or(i64::MAX);
        let mut st = conn
            .prepare(
                "SELECT id FROM profiles WHERE created_ms < ?1 \
                 OR id NOT IN (SELECT id FROM profiles ORDER BY created_ms DESC, id DESC LIMIT ?2) \
                 ORDER BY created_ms, id LIMIT ?3",
            )
            .map_err(db)?;
        let ids = st
            .query_map(params![before, keep, limit], |r| r.get(0))
            .map_err(db)?
            .collect::<rusqlite::Result<_>>()
            .map_err(db)?;
        Ok(ids)
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        let conn = self.conn();
        let (profiles, profile_bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM profiles",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)?;
        let (symbols, symbol_bytes): (i64, i64) = conn
            .query_row(
                "SELECT COUNT(*), COALESCE(SUM(size), 0) FROM symbols",
                [],
                |r| Ok((r.get(0)?, r.get(1)?)),
            )
            .map_err(db)?;
        Ok(StoreCounts {
            profiles: profiles as u64,
            profile_bytes: profile_bytes as u64,
            symbols: symbols as u64,
            symbol_bytes: symbol_bytes as u64,
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()
            .query_row("SELECT COUNT(*) FROM health", [], |r| r.get::<_, i64>(0))
            .map(|_| ())
            .map_err(db)
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.conn()
            .execute(
                "INSERT INTO health (id, at_ms) VALUES (1, ?1) \
                 ON CONFLICT (id) DO UPDATE SET at_ms = ?1",
                [super::now_ms()],
            )
            .map(|_| ())
            .map_err(db)
    }

    fn kind(&self) -> &'static str {
        "sqlite"
    }
}

fn symbol_from_row(r: &Row<'_>) -> rusqlite::Result<SymbolRecord> {
    Ok(SymbolRecord {
        build_id: r.get(0)?,
        blob: r.get(1)?,
        size: r.get::<_, i64>(2)? as u64,
        uploaded_unix_ms: r.get(3)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(id: &str, name: &str, created: i64, tags: &[&str]) -> ProfileRecord {
        ProfileRecord {
            id: id.into(),
            name: name.into(),
            tags: tags.iter().map(|t| t.to_string()).collect(),
            created_unix_ms: created,
            size: 10,
            blob: format!("{:064}", created),
            command: "cmd".into(),
            processes: 1,
            threads: 2,
            samples: 3,
            weight: 4,
            duration_s: 1.5,
            start_unix_ns: 99,
            mode: "cpu".into(),
            truncated: false,
            build_ids: vec!["aabb".into()],
            tiers: None,
        }
    }

    #[test]
    fn insert_list_filter_delete() {
        let m = SqliteMeta::in_memory().unwrap();
        assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len() as i64);
        m.insert_profile(&rec("a", "first run", 1, &["ci", "x"]))
            .unwrap();
        m.insert_profile(&rec("b", "Second_run", 2, &["ci"]))
            .unwrap();
        m.insert_profile(&rec("c", "third 100%", 3, &[])).unwrap();
        let all = m
            .list_profiles(&ListQuery {
                limit: 10,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(all.total, 3);
        let ids: Vec<&str> = all.items.iter().map(|p| p.id.as_str()).collect();
        assert_eq!(ids, ["c", "b", "a"]);
        assert_eq!(all.items[2].tags, ["ci", "x"]);
        assert_eq!(all.items[2].build_ids, ["aabb"]);
        let page = m
            .list_profiles(&ListQuery {
                limit: 1,
                offset: 1,
                ..Default::default()
            })
            .unwrap();
        assert_eq!(page.total, 3);
        assert_eq!(page.items[0].id, "b");
        let q = |name: Option<&str>, tag: Option<&str>| {
            m.list_profiles(&ListQuery {
                limit: 10,
                offset: 0,
                name: name.map(String::from),
                tag: tag.map(String::from),
            })
            .unwrap()
            .items
            .into_iter()
            .map(|p| p.id)
            .collect::<Vec<_>>()
        };
        assert_eq!(q(Some("RUN"), None), ["b", "a"]);
        assert_eq!(q(Some("_"), None), ["b"]);
        assert_eq!(q(Some("100%"), None), ["c"]);
        assert_eq!(q(None, Some("ci")), ["b", "a"]);
        assert_eq!(q(Some("first"), Some("ci")), ["a"]);
        let mut tiers = TierTotals::new();
        tiers.insert("jit".into(), 5);
        m.set_tiers("a", &tiers).unwrap();
        assert_eq!(m.profile("a").unwrap().unwrap().tiers, Some(tiers));
        assert_eq!(m.blob_refs(&format!("{:064}", 1)).unwrap(), 1);
        assert!(matches!(
            m.insert_profile(&rec("a", "again", 9, &[])),
            Err(StoreError::Duplicate(_))
        ));
        assert_eq!(m.expired_profiles(Some(2), None, 10).unwrap(), ["a"]);
        assert_eq!(m.expired_profiles(None, Some(1), 10).unwrap(), ["a", "b"]);
        let gone = m.delete_profile("a").unwrap().unwrap();
        assert_eq!(gone.tags, ["ci", "x"]);
        assert_eq!(m.blob_refs(&format!("{:064}", 1)).unwrap(), 0);
        assert!(m.delete_profile("a").unwrap().is_none());
        assert!(m.profile("a").unwrap().is_none());
        assert_eq!(q(None, Some("x")), Vec::<String>::new());
        assert_eq!(m.counts().unwrap().profiles, 2);
    }

    #[test]
    fn symbols_upsert() {
        let m = SqliteMeta::in_memory().unwrap();
        let s = SymbolRecord {
            build_id: "ab".into(),
            blob: "k1".into(),
            size: 5,
            uploaded_unix_ms: 1,
        };
        assert_eq!(m.symbol_seq(&["ab".into()]).unwrap(), 0);
        assert!(m.put_symbol(&s).unwrap().is_none());
        let seq1 = m.symbol_seq(&["ab".into(), "cd".into()]).unwrap();
        assert!(seq1 > 0);
        let s2 = SymbolRecord {
            blob: "k2".into(),
            ..s.clone()
        };
        assert_eq!(m.put_symbol(&s2).unwrap(), Some(s));
        assert!(m.symbol_seq(&["ab".into()]).unwrap() > seq1);
        assert_eq!(m.symbol_seq(&["cd".into()]).unwrap(), 0);
        assert_eq!(m.symbol("ab").unwrap(), Some(s2));
        assert_eq!(m.blob_refs("k2").unwrap(), 1);
        assert_eq!(m.blob_refs("k1").unwrap(), 0);
        m.check_writable().unwrap();
        m.ping().unwrap();
    }

    #[test]
    fn migrations_are_idempotent_and_refuse_newer_schemas() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.db");
        {
            let m = SqliteMeta::open(&path).unwrap();
            m.insert_profile(&rec("a", "n", 1, &[])).unwrap();
        }
        // A database at schema version 1 (before tier totals) is upgraded in place.
        {
            let c = Connection::open(&path).unwrap();
            c.execute_batch(
                "ALTER TABLE profiles DROP COLUMN tiers; DROP TABLE health; \
                 ALTER TABLE symbols DROP COLUMN seq; PRAGMA user_version = 1;",
            )
            .unwrap();
        }
        let m = SqliteMeta::open(&path).unwrap();
        assert_eq!(m.schema_version().unwrap(), MIGRATIONS.len() as i64);
        assert_eq!(m.profile("a").unwrap().unwrap().name, "n");
        drop(m);
        Connection::open(&path)
            .unwrap()
            .pragma_update(None, "user_version", 99)
            .unwrap();
        assert!(matches!(
            SqliteMeta::open(&path),
            Err(StoreError::SchemaTooNew { found: 99, .. })
        ));
    }
}
