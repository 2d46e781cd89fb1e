//! PostgreSQL metadata, for several replicas on one database: a pool of connections
//! (`r2d2`), the schema versioned in `prof_schema` and upgraded by [`MIGRATIONS`] under an
//! advisory lock (replicas starting together migrate once).

use postgres::error::SqlState;
use postgres::{NoTls, Row};
use r2d2_postgres::PostgresConnectionManager;

use super::{
    ListPage, ListQuery, MetaStore, ProfileRecord, StoreCounts, StoreError, SymbolRecord,
    TierTotals,
};

/// Schema migrations: entry `i` upgrades version `i` to `i + 1`. Append, never edit.
const MIGRATIONS: &[&str] = &[
    // 1: the same tables as SQLite's schema version 3.
    r#"
    CREATE TABLE profiles (
        id            TEXT PRIMARY KEY,
        name          TEXT NOT NULL,
        created_ms    BIGINT NOT NULL,
        size          BIGINT NOT NULL,
        blob          TEXT NOT NULL,
        command       TEXT NOT NULL,
        processes     BIGINT NOT NULL,
        threads       BIGINT NOT NULL,
        samples       BIGINT NOT NULL,
        weight        BIGINT NOT NULL,
        duration_s    DOUBLE PRECISION NOT NULL,
        start_unix_ns BIGINT NOT NULL,
        mode          TEXT NOT NULL,
        truncated     BOOLEAN NOT NULL,
        tiers         TEXT
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
    CREATE SEQUENCE symbol_seq;
    CREATE TABLE symbols (
        build_id    TEXT PRIMARY KEY,
        blob        TEXT NOT NULL,
        size        BIGINT NOT NULL,
        uploaded_ms BIGINT NOT NULL,
        seq         BIGINT NOT NULL
    );
    CREATE INDEX symbols_blob ON symbols (blob);
    CREATE TABLE health (id INTEGER PRIMARY KEY, at_ms BIGINT NOT NULL);
    "#,
];

/// Any constant: the advisory lock that serializes migrations.
const MIGRATION_LOCK: i64 = 0x7072_6f66_6d69_6772;

type Pool = r2d2::Pool<PostgresConnectionManager<NoTls>>;

pub struct PgMeta {
    /// Always Some until dropped (see the Drop impl).
    pool: Option<Pool>,
}

impl Drop for PgMeta {
    fn drop(&mut self) {
        // A sync postgres connection closes by blocking on its own runtime, which panics
        // on an async worker thread (where the server's state is dropped when it stops):
        // close them on a plain thread.
        if let Some(pool) = self.pool.take() {
            let _ = std::thread::spawn(move || drop(pool)).join();
        }
    }
}

fn db(e: postgres::Error) -> StoreError {
    // The server's message and detail, not just "db error".
    match e.as_db_error() {
        Some(d) => StoreError::Database(format!("{}: {}", d.severity(), d.message())),
        None => StoreError::Database(e.to_string()),
    }
}

fn pool_err(e: r2d2::Error) -> StoreError {
    StoreError::Database(format!("no PostgreSQL connection: {e}"))
}

const PROFILE_COLUMNS: &str = "id, name, created_ms, size, blob, command, processes, threads, \
     samples, weight, duration_s, start_unix_ns, mode, truncated, tiers";

fn to_i64(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn profile_from_row(r: &Row) -> ProfileRecord {
    let tiers: Option<String> = r.get(14);
    ProfileRecord {
        id: r.get(0),
        name: r.get(1),
        tags: Vec::new(),
        created_unix_ms: r.get(2),
        size: r.get::<_, i64>(3) as u64,
        blob: r.get(4),
        command: r.get(5),
        processes: r.get::<_, i64>(6) as u32,
        threads: r.get::<_, i64>(7) as u32,
        samples: r.get::<_, i64>(8) as u64,
        weight: r.get::<_, i64>(9) as u64,
        duration_s: r.get(10),
        start_unix_ns: r.get::<_, i64>(11) as u64,
        mode: r.get(12),
        truncated: r.get(13),
        build_ids: Vec::new(),
        tiers: tiers.and_then(|t| serde_json::from_str::<TierTotals>(&t).ok()),
    }
}

fn symbol_from_row(r: &Row) -> SymbolRecord {
    SymbolRecord {
        build_id: r.get(0),
        blob: r.get(1),
        size: r.get::<_, i64>(2) as u64,
        uploaded_unix_ms: r.get(3),
    }
}

/// Fills in tags and build ids.
fn complete<C: postgres::GenericClient>(
    c: &mut C,
    p: &mut ProfileRecord,
) -> Result<(), StoreError> {
    p.tags = c
        .query(
            "SELECT tag FROM profile_tags WHERE profile_id = $1 ORDER BY tag",
            &[&p.id],
        )
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    p.build_ids = c
        .query(
            "SELECT build_id FROM profile_modules WHERE profile_id = $1 ORDER BY build_id",
            &[&p.id],
        )
        .map_err(db)?
        .iter()
        .map(|r| r.get(0))
        .collect();
    Ok(())
}

/// `%`, `_` and `\` escaped for `ILIKE` (whose default escape character is `\`).
fn like_pattern(s: &str) -> String {
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

impl PgMeta {
    /// Connects to `url` (`postgres://user[:password]@host[:port]/db`) and brings the
    /// schema up to date.
    pub fn open(url: &str) -> Result<PgMeta, StoreError> {
        let config: postgres::Config = url
            .parse()
            .map_err(|e| StoreError::Config(format!("--db {url:?}: {e}")))?;
        let manager = PostgresConnectionManager::new(config, NoTls);
        let pool = r2d2::Pool::builder()
            .max_size(16)
            .min_idle(Some(1))
            .connection_timeout(std::time::Duration::from_secs(10))
            .build(manager)
            .map_err(|e| StoreError::Database(format!("cannot connect to {}: {e}", redact(url))))?;
        let m = PgMeta { pool: Some(pool) };
        m.migrate()?;
        Ok(m)
    }

    fn conn(&self) -> Result<r2d2::PooledConnection<PostgresConnectionManager<NoTls>>, StoreError> {
        match &self.pool {
            Some(p) => p.get().map_err(pool_err),
            None => Err(StoreError::Database("the connection pool is closed".into())),
        }
    }

    fn migrate(&self) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        c.execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .map_err(db)?;
        let result = (|| {
            c.batch_execute("CREATE TABLE IF NOT EXISTS prof_schema (version BIGINT NOT NULL)")
                .map_err(db)?;
            let version: i64 = match c
                .query_opt("SELECT version FROM prof_schema", &[])
                .map_err(db)?
            {
                Some(r) => r.get(0),
                None => {
                    c.execute("INSERT INTO prof_schema (version) VALUES (0)", &[])
                        .map_err(db)?;
                    0
                }
            };
            let known = MIGRATIONS.len() as i64;
            if version > known {
                return Err(StoreError::SchemaTooNew {
                    found: version,
                    known,
                });
            }
            for (i, sql) in MIGRATIONS.iter().enumerate().skip(version as usize) {
                let mut tx = c.transaction().map_err(db)?;
                tx.batch_execute(sql).map_err(db)?;
                tx.execute("UPDATE prof_schema SET version = $1", &[&(i as i64 + 1)])
                    .map_err(db)?;
                tx.commit().map_err(db)?;
            }
            Ok(())
        })();
        let _ = c.execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK]);
        result
    }
}

/// The URL without its password, for messages.
pub fn redact(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(s), Some(at)) if at > s => {
            let creds = &url[s + 3..at];
            match creds.split_once(':') {
                Some((user, _)) => format!("{}{user}:***{}", &url[..s + 3], &url[at..]),
                None => url.to_string(),
            }
        }
        _ => url.to_string(),
    }
}

impl MetaStore for PgMeta {
    fn insert_profile(&self, p: &ProfileRecord) -> Result<(), StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(db)?;
        let tiers = p.tiers.as_ref().and_then(|t| serde_json::to_string(t).ok());
        let r = tx.execute(
            &format!(
                "INSERT INTO profiles ({PROFILE_COLUMNS}) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
            ),
            &[
                &p.id,
                &p.name,
                &p.created_unix_ms,
                &to_i64(p.size),
                &p.blob,
                &p.command,
                &i64::from(p.processes),
                &i64::from(p.threads),
                &to_i64(p.samples),
                &to_i64(p.weight),
                &p.duration_s,
                &to_i64(p.start_unix_ns),
                &p.mode,
                &p.truncated,
                &tiers,
            ],
        );
        if let Err(e) = r {
            if e.code() == Some(&SqlState::UNIQUE_VIOLATION) {
                return Err(StoreError::Duplicate(p.id.clone()));
            }
            return Err(db(e));
        }
        for t in &p.tags {
            tx.execute(
                "INSERT INTO profile_tags (profile_id, tag) VALUES ($1, $2) ON CONFLICT DO NOTHING",
                &[&p.id, t],
            )
            .map_err(db)?;
        }
        for b in &p.build_ids {
            tx.execute(
                "INSERT INTO profile_modules (profile_id, build_id) VALUES ($1, $2) \
                 ON CONFLICT DO NOTHING",
                &[&p.id, b],
            )
            .map_err(db)?;
        }
        tx.commit().map_err(db)
    }

    fn profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let mut c = self.conn()?;
        let row = c
            .query_opt(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = $1"),
                &[&id],
            )
            .map_err(db)?;
        match row {
            None => Ok(None),
            Some(r) => {
                let mut p = profile_from_row(&r);
                complete(&mut *c, &mut p)?;
                Ok(Some(p))
            }
        }
    }

    fn list_profiles(&self, q: &ListQuery) -> Result<ListPage, StoreError> {
        let mut c = self.conn()?;
        let mut conds = Vec::new();
        let mut args: Vec<String> = Vec::new();
        if let Some(n) = &q.name {
            args.push(like_pattern(n));
            conds.push(format!("name ILIKE ${}", args.len()));
        }
        if let Some(t) = &q.tag {
            args.push(t.clone());
            conds.push(format!(
                "id IN (SELECT profile_id FROM profile_tags WHERE tag = ${})",
                args.len()
            ));
        }
        let where_ = if conds.is_empty() {
            String::new()
        } else {
            format!("WHERE {}", conds.join(" AND "))
        };
        let params: Vec<&(dyn postgres::types::ToSql + Sync)> = args
            .iter()
            .map(|a| a as &(dyn postgres::types::ToSql + Sync))
            .collect();
        let total: i64 = c
            .query_one(&format!("SELECT COUNT(*) FROM profiles {where_}"), &params)
            .map_err(db)?
            .get(0);
        let rows = c
            .query(
                &format!(
                    "SELECT {PROFILE_COLUMNS} FROM profiles {where_} \
                     ORDER BY created_ms DESC, id DESC LIMIT {} OFFSET {}",
                    q.limit,
                    to_i64(q.offset)
                ),
                &params,
            )
            .map_err(db)?;
        let mut items = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut p = profile_from_row(r);
            complete(&mut *c, &mut p)?;
            items.push(p);
        }
        Ok(ListPage {
            total: total as u64,
            items,
        })
    }

    fn delete_profile(&self, id: &str) -> Result<Option<ProfileRecord>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(db)?;
        let row = tx
            .query_opt(
                &format!("SELECT {PROFILE_COLUMNS} FROM profiles WHERE id = $1 FOR UPDATE"),
                &[&id],
            )
            .map_err(db)?;
        let Some(row) = row else {
            return Ok(None);
        };
        let mut p = profile_from_row(&row);
        complete(&mut tx, &mut p)?;
        tx.execute("DELETE FROM profiles WHERE id = $1", &[&id])
            .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(Some(p))
    }

    fn set_tiers(&self, id: &str, tiers: &TierTotals) -> Result<(), StoreError> {
        let json = serde_json::to_string(tiers).map_err(|e| StoreError::Database(e.to_string()))?;
        self.conn()?
            .execute(
                "UPDATE profiles SET tiers = $1 WHERE id = $2",
                &[&json, &id],
            )
            .map_err(db)?;
        Ok(())
    }

    fn put_symbol(&self, s: &SymbolRecord) -> Result<Option<SymbolRecord>, StoreError> {
        let mut c = self.conn()?;
        let mut tx = c.transaction().map_err(db)?;
        // The row lock (or, for a new build id, the unique index) orders concurrent puts.
        let old = tx
            .query_opt(
                "SELECT build_id, blob, size, uploaded_ms FROM symbols WHERE build_id = $1 \
                 FOR UPDATE",
                &[&s.build_id],
            )
            .map_err(db)?
            .map(|r| symbol_from_row(&r));
        tx.execute(
            "INSERT INTO symbols (build_id, blob, size, uploaded_ms, seq) \
             VALUES ($1, $2, $3, $4, nextval('symbol_seq')) \
             ON CONFLICT (build_id) DO UPDATE SET blob = $2, size = $3, uploaded_ms = $4, \
             seq = nextval('symbol_seq')",
            &[&s.build_id, &s.blob, &to_i64(s.size), &s.uploaded_unix_ms],
        )
        .map_err(db)?;
        tx.commit().map_err(db)?;
        Ok(old)
    }

    fn symbol(&self, build_id: &str) -> Result<Option<SymbolRecord>, StoreError> {
        Ok(self
            .conn()?
            .query_opt(
                "SELECT build_id, blob, size, uploaded_ms FROM symbols WHERE build_id = $1",
                &[&build_id],
            )
            .map_err(db)?
            .map(|r| symbol_from_row(&r)))
    }

    fn symbol_seq(&self, build_ids: &[String]) -> Result<i64, StoreError> {
        if build_ids.is_empty() {
            return Ok(0);
        }
        let ids: Vec<&str> = build_ids.iter().map(String::as_str).collect();
        Ok(self
            .conn()?
            .query_one(
                "SELECT COALESCE(MAX(seq), 0)::BIGINT FROM symbols WHERE build_id = ANY($1)",
                &[&ids],
            )
            .map_err(db)?
            .get(0))
    }

    fn blob_refs(&self, blob: &str) -> Result<u64, StoreError> {
        let n: i64 = self
            .conn()?
            .query_one(
                "SELECT (SELECT COUNT(*) FROM profiles WHERE blob = $1) \
                     + (SELECT COUNT(*) FROM symbols WHERE blob = $1)",
                &[&blob],
            )
            .map_err(db)?
            .get(0);
        Ok(n as u64)
    }

    fn expired_profiles(
        &self,
        before_ms: Option<i64>,
        keep: Option<u64>,
        limit: u32,
    ) -> Result<Vec<String>, StoreError> {
        let before = before_ms.unwrap_or(i64::MIN);
        let keep = keep.map(to_i64).unwrap_or(i64::MAX);
        Ok(self
            .conn()?
            .query(
                "SELECT id FROM profiles WHERE created_ms < $1 \
                 OR id NOT IN (SELECT id FROM profiles ORDER BY created_ms DESC, id DESC LIMIT $2) \
                 ORDER BY created_ms, id LIMIT $3",
                &[&before, &keep, &i64::from(limit)],
            )
            .map_err(db)?
            .iter()
            .map(|r| r.get(0))
            .collect())
    }

    fn counts(&self) -> Result<StoreCounts, StoreError> {
        let mut c = self.conn()?;
        let p = c
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM profiles",
                &[],
            )
            .map_err(db)?;
        let s = c
            .query_one(
                "SELECT COUNT(*), COALESCE(SUM(size), 0)::BIGINT FROM symbols",
                &[],
            )
            .map_err(db)?;
        Ok(StoreCounts {
            profiles: p.get::<_, i64>(0) as u64,
            profile_bytes: p.get::<_, i64>(1) as u64,
            symbols: s.get::<_, i64>(0) as u64,
            symbol_bytes: s.get::<_, i64>(1) as u64,
        })
    }

    fn ping(&self) -> Result<(), StoreError> {
        self.conn()?.query_one("SELECT 1", &[]).map_err(db)?;
        Ok(())
    }

    fn check_writable(&self) -> Result<(), StoreError> {
        self.conn()?
            .execute(
                "INSERT INTO health (id, at_ms) VALUES (1, $1) \
                 ON CONFLICT (id) DO UPDATE SET at_ms = $1",
                &[&super::now_ms()],
            )
            .map_err(db)?;
        Ok(())
    }

    fn kind(&self) -> &'static str {
        "postgres"
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn passwords_stay_out_of_messages() {
        assert_eq!(
            super::redact("postgres://u:secret@h:5432/db"),
            "postgres://u:***@h:5432/db"
        );
        assert_eq!(super::redact("postgres://u@h/db"), "postgres://u@h/db");
    }
}
