//! The database sinks: SQLite, MariaDB/MySQL and PostgreSQL through sqlx pools, one code path.
//!
//! The three pools are variants of one enum and each operation is written once: `on_pool!`
//! expands the same sqlx calls for every variant, and only the SQL text differs where the dialects
//! do (upsert syntax, placeholders, auto-increment). A batch is one statement: a multi-row
//! `INSERT ... VALUES` on SQLite and MariaDB, `INSERT ... SELECT FROM UNNEST($1, ...)` on
//! PostgreSQL (five array parameters whatever the batch size). Every batch insert is idempotent on
//! the id (`ON CONFLICT DO NOTHING` / `ON DUPLICATE KEY UPDATE id = id`), so replaying a journal
//! after a crash never duplicates a row.

use std::str::FromStr;
use std::time::Duration;

use sqlx::mysql::{MySqlConnectOptions, MySqlPool, MySqlPoolOptions};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions};
use sqlx::{QueryBuilder, Row};

use crate::record::Message;

/// `scheme://user:secret@host/db` → `scheme://user:***@host/db`.
pub fn redact(url: &str) -> String {
    let Some((scheme, rest)) = url.split_once("://") else {
        return url.to_owned();
    };
    match rest.rsplit_once('@') {
        Some((auth, host)) => match auth.split_once(':') {
            Some((user, _)) => format!("{scheme}://{user}:***@{host}"),
            None => url.to_owned(),
        },
        None => url.to_owned(),
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Dialect {
    Sqlite,
    MySql,
    Postgres,
}

impl Dialect {
    pub fn from_url(url: &str) -> Option<Dialect> {
        let scheme = url.split_once(':')?.0;
        match scheme {
            "sqlite" => Some(Dialect::Sqlite),
            "mysql" | "mariadb" => Some(Dialect::MySql),
            "postgres" | "postgresql" => Some(Dialect::Postgres),
            _ => None,
        }
    }
}

#[derive(Clone, Debug)]
pub enum Db {
    Sqlite(SqlitePool),
    MySql(MySqlPool),
    Postgres(PgPool),
}

/// The advisory lock key [`Db::migrate`] holds on PostgreSQL ("c10k" in ASCII).
const PG_MIGRATE_LOCK: i64 = 0x6331_306b;

macro_rules! on_pool {
    ($db:expr, $pool:ident => $body:expr) => {
        match $db {
            Db::Sqlite($pool) => $body,
            Db::MySql($pool) => $body,
            Db::Postgres($pool) => $body,
        }
    };
}

/// Pool figures for `c10k status`.
#[derive(Clone, Copy, Debug, Default, serde::Serialize)]
pub struct PoolStats {
    pub size: u32,
    pub idle: usize,
    pub max: u32,
}

impl Db {
    /// Builds the pool without connecting: the first use connects, so a server can start (and
    /// acknowledge writes into its journal) while the database is down.
    pub fn connect_lazy(url: &str, pool_size: u32, acquire_timeout: Duration) -> sqlx::Result<Db> {
        let dialect = Dialect::from_url(url).ok_or_else(|| {
            sqlx::Error::Configuration(
                format!("unknown database URL scheme in {:?}", redact(url)).into(),
            )
        })?;
        Ok(match dialect {
            Dialect::Sqlite => {
                let opts = SqliteConnectOptions::from_str(url)?
                    .create_if_missing(true)
                    .journal_mode(SqliteJournalMode::Wal)
                    .busy_timeout(Duration::from_secs(5));
                Db::Sqlite(
                    SqlitePoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(acquire_timeout)
                        .test_before_acquire(false)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::MySql => {
                let url = url.replacen("mariadb:", "mysql:", 1);
                let opts = MySqlConnectOptions::from_str(&url)?.charset("utf8mb4");
                Db::MySql(
                    MySqlPoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(opts),
                )
            }
            Dialect::Postgres => {
                let opts = PgConnectOptions::from_str(url)?;
                Db::Postgres(
                    PgPoolOptions::new()
                        .max_connections(pool_size)
                        .acquire_timeout(acquire_timeout)
                        .connect_lazy_with(opts),
                )
            }
        })
    }

    pub fn dialect(&self) -> Dialect {
        match self {
            Db::Sqlite(_) => Dialect::Sqlite,
            Db::MySql(_) => Dialect::MySql,
            Db::Postgres(_) => Dialect::Postgres,
        }
    }

    pub fn pool_stats(&self) -> PoolStats {
        on_pool!(self, p => PoolStats {
            size: p.size(),
            idle: p.num_idle(),
            max: p.options().get_max_connections(),
        })
    }

    pub async fn close(&self) {
        on_pool!(self, p => p.close().await)
    }

    /// Creates the tables if they are missing (idempotent; runs at start and after an outage).
    pub async fn migrate(&self) -> sqlx::Result<()> {
        let (messages, direct, instances) = match self.dialect() {
            Dialect::Sqlite => (
                "CREATE TABLE IF NOT EXISTS c10k_messages (id INTEGER PRIMARY KEY, \
                 room TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL)",
                "CREATE TABLE IF NOT EXISTS c10k_messages_direct (id INTEGER PRIMARY KEY AUTOINCREMENT, \
                 room TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, ts INTEGER NOT NULL)",
                "CREATE TABLE IF NOT EXISTS c10k_instances (id INTEGER PRIMARY KEY, \
                 holder TEXT NOT NULL, expires_at INTEGER NOT NULL, last_ts INTEGER NOT NULL)",
            ),
            Dialect::MySql => (
                "CREATE TABLE IF NOT EXISTS c10k_messages (id BIGINT NOT NULL PRIMARY KEY, \
                 room VARCHAR(64) NOT NULL, user_name VARCHAR(64) NOT NULL, text TEXT NOT NULL, \
                 ts BIGINT NOT NULL, KEY room_id (room, id)) DEFAULT CHARSET=utf8mb4",
                "CREATE TABLE IF NOT EXISTS c10k_messages_direct (id BIGINT NOT NULL AUTO_INCREMENT PRIMARY KEY, \
                 room VARCHAR(64) NOT NULL, user_name VARCHAR(64) NOT NULL, text TEXT NOT NULL, \
                 ts BIGINT NOT NULL) DEFAULT CHARSET=utf8mb4",
                "CREATE TABLE IF NOT EXISTS c10k_instances (id INT NOT NULL PRIMARY KEY, \
                 holder VARCHAR(128) NOT NULL, expires_at BIGINT NOT NULL, last_ts BIGINT NOT NULL) \
                 DEFAULT CHARSET=utf8mb4",
            ),
            Dialect::Postgres => (
                "CREATE TABLE IF NOT EXISTS c10k_messages (id BIGINT PRIMARY KEY, \
                 room TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, ts BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS c10k_messages_direct (id BIGSERIAL PRIMARY KEY, \
                 room TEXT NOT NULL, user_name TEXT NOT NULL, text TEXT NOT NULL, ts BIGINT NOT NULL)",
                "CREATE TABLE IF NOT EXISTS c10k_instances (id INT PRIMARY KEY, \
                 holder TEXT NOT NULL, expires_at BIGINT NOT NULL, last_ts BIGINT NOT NULL)",
            ),
        };
        let index = match self.dialect() {
            Dialect::MySql => None, // declared inline above (MySQL has no CREATE INDEX IF NOT EXISTS)
            _ => {
                Some("CREATE INDEX IF NOT EXISTS c10k_messages_room_id ON c10k_messages (room, id)")
            }
        };
        let statements = [messages, direct, instances].into_iter().chain(index);
        match self {
            // `CREATE TABLE IF NOT EXISTS` is not safe against itself in PostgreSQL: two sessions
            // creating the same table at once collide on the catalog's unique index
            // (`pg_type_typname_nsp_index`), which is what the workers of several hosts booting
            // together on a fresh database do. One transaction-scoped advisory lock per database
            // makes them take turns; the later ones find the tables there.
            Db::Postgres(p) => {
                let mut tx = p.begin().await?;
                sqlx::query("SELECT pg_advisory_xact_lock($1)")
                    .bind(PG_MIGRATE_LOCK)
                    .execute(&mut *tx)
                    .await?;
                for sql in statements {
                    sqlx::query(sql).execute(&mut *tx).await?;
                }
                tx.commit().await?;
            }
            // MariaDB: the same turn-taking with a named lock, held by one connection (released
            // with its session if the process dies).
            Db::MySql(p) => {
                let mut c = p.acquire().await?;
                let got: Option<i64> = sqlx::query_scalar("SELECT GET_LOCK('c10k_schema', 60)")
                    .fetch_one(&mut *c)
                    .await?;
                if got != Some(1) {
                    return Err(sqlx::Error::Protocol(
                        "timed out waiting for the schema lock (GET_LOCK c10k_schema)".into(),
                    ));
                }
                let mut result = Ok(());
                for sql in statements {
                    if let Err(e) = sqlx::query(sql).execute(&mut *c).await {
                        result = Err(e);
                        break;
                    }
                }
                let unlocked = sqlx::query("SELECT RELEASE_LOCK('c10k_schema')")
                    .execute(&mut *c)
                    .await;
                if unlocked.is_err() {
                    // Do not hand a connection that may still hold the lock back to the pool.
                    drop(c.detach());
                }
                result?;
            }
            Db::Sqlite(p) => {
                for sql in statements {
                    sqlx::query(sql).execute(p).await?;
                }
            }
        }
        Ok(())
    }

    /// Inserts `rows` in one statement, skipping ids already present. Returns rows inserted.
    pub async fn insert_batch(&self, rows: &[Message]) -> sqlx::Result<u64> {
        if rows.is_empty() {
            return Ok(0);
        }
        const HEAD: &str = "INSERT INTO c10k_messages (id, room, user_name, text, ts) ";
        let done = match self {
            Db::Postgres(p) => {
                let ids: Vec<i64> = rows.iter().map(|m| m.id as i64).collect();
                let rooms: Vec<&str> = rows.iter().map(|m| m.room.as_str()).collect();
                let users: Vec<&str> = rows.iter().map(|m| m.user.as_str()).collect();
                let texts: Vec<&str> = rows.iter().map(|m| m.text.as_str()).collect();
                let ts: Vec<i64> = rows.iter().map(|m| m.ts as i64).collect();
                sqlx::query(&format!(
                    "{HEAD}SELECT * FROM UNNEST($1::int8[], $2::text[], $3::text[], $4::text[], $5::int8[]) \
                     ON CONFLICT (id) DO NOTHING"
                ))
                .bind(ids)
                .bind(rooms)
                .bind(users)
                .bind(texts)
                .bind(ts)
                .execute(p)
                .await?
                .rows_affected()
            }
            Db::Sqlite(p) => {
                let mut q = QueryBuilder::new(HEAD);
                q.push_values(rows, |mut b, m| {
                    b.push_bind(m.id as i64)
                        .push_bind(&m.room)
                        .push_bind(&m.user)
                        .push_bind(&m.text)
                        .push_bind(m.ts as i64);
                });
                q.push(" ON CONFLICT (id) DO NOTHING");
                q.build().execute(p).await?.rows_affected()
            }
            Db::MySql(p) => {
                let mut q = QueryBuilder::new(HEAD);
                q.push_values(rows, |mut b, m| {
                    b.push_bind(m.id as i64)
                        .push_bind(&m.room)
                        .push_bind(&m.user)
                        .push_bind(&m.text)
                        .push_bind(m.ts as i64);
                });
                // Not INSERT IGNORE: that would also swallow real errors (truncation, charset).
                q.push(" ON DUPLICATE KEY UPDATE id = id");
                q.build().execute(p).await?.rows_affected()
            }
        };
        Ok(done)
    }

    /// The seed's "before" case: one auto-increment INSERT, committed before the answer.
    pub async fn insert_direct(
        &self,
        room: &str,
        user: &str,
        text: &str,
        ts: u64,
    ) -> sqlx::Result<u64> {
        let ts = ts as i64;
        let id = match self {
            Db::Sqlite(p) => sqlx::query(
                "INSERT INTO c10k_messages_direct (room, user_name, text, ts) VALUES (?, ?, ?, ?)",
            )
            .bind(room)
            .bind(user)
            .bind(text)
            .bind(ts)
            .execute(p)
            .await?
            .last_insert_rowid() as u64,
            Db::MySql(p) => sqlx::query(
                "INSERT INTO c10k_messages_direct (room, user_name, text, ts) VALUES (?, ?, ?, ?)",
            )
            .bind(room)
            .bind(user)
            .bind(text)
            .bind(ts)
            .execute(p)
            .await?
            .last_insert_id(),
            Db::Postgres(p) => sqlx::query(
                "INSERT INTO c10k_messages_direct (room, user_name, text, ts) VALUES ($1, $2, $3, $4) RETURNING id",
            )
            .bind(room)
            .bind(user)
            .bind(text)
            .bind(ts)
            .fetch_one(p)
            .await?
            .try_get::<i64, _>(0)? as u64,
        };
        Ok(id)
    }

    /// Messages of `room` with ids above `after`, oldest first, at most `limit`.
    /// `table` is `c10k_messages` or `c10k_messages_direct` (a constant, never client input).
    pub async fn room_after(
        &self,
        table: &'static str,
        room: &str,
        after: u64,
        limit: u32,
    ) -> sqlx::Result<Vec<Message>> {
        let sql = self.sql(&format!(
            "SELECT id, room, user_name, text, ts FROM {table} \
             WHERE room = ? AND id > ? ORDER BY id LIMIT ?"
        ));
        on_pool!(self, p => {
            let rows = sqlx::query(&sql)
                .bind(room)
                .bind(after as i64)
                .bind(i64::from(limit))
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| {
                    Ok(Message {
                        id: r.try_get::<i64, _>(0)? as u64,
                        room: r.try_get(1)?,
                        user: r.try_get(2)?,
                        text: r.try_get(3)?,
                        ts: r.try_get::<i64, _>(4)? as u64,
                    })
                })
                .collect()
        })
    }

    /// How many rows carry `id` (tests check "exactly once").
    pub async fn count_id(&self, id: u64) -> sqlx::Result<i64> {
        let sql = self.sql("SELECT COUNT(*) FROM c10k_messages WHERE id = ?");
        on_pool!(self, p => sqlx::query(&sql).bind(id as i64).fetch_one(p).await?.try_get::<i64, _>(0))
    }

    /// All message ids, ascending (tests).
    pub async fn all_ids(&self) -> sqlx::Result<Vec<u64>> {
        let sql = "SELECT id FROM c10k_messages ORDER BY id";
        on_pool!(self, p => {
            let rows = sqlx::query(sql).fetch_all(p).await?;
            rows.iter().map(|r| Ok(r.try_get::<i64, _>(0)? as u64)).collect()
        })
    }

    /// Empties the tables (tests sharing one server).
    pub async fn truncate_for_tests(&self) -> sqlx::Result<()> {
        on_pool!(self, p => {
            for t in ["c10k_messages", "c10k_messages_direct", "c10k_instances"] {
                sqlx::query(&format!("DELETE FROM {t}")).execute(p).await?;
            }
        });
        Ok(())
    }

    // ---- instance leases -------------------------------------------------------------------

    /// Takes the lowest free or expired instance id for `holder` until `expires_at` (Unix ms).
    /// Returns the id and the last timestamp its previous holder recorded.
    pub async fn lease(
        &self,
        holder: &str,
        now: u64,
        expires_at: u64,
        max: u16,
    ) -> sqlx::Result<Option<(u16, u64)>> {
        let rows: Vec<(i64, i64, i64)> = on_pool!(self, p => {
            let rows = sqlx::query("SELECT id, expires_at, last_ts FROM c10k_instances")
                .fetch_all(p)
                .await?;
            rows.iter()
                .map(|r| Ok((r.try_get::<i32, _>(0)?.into(), r.try_get(1)?, r.try_get(2)?)))
                .collect::<sqlx::Result<Vec<_>>>()?
        });
        let taken: std::collections::HashMap<i64, (i64, i64)> = rows
            .into_iter()
            .map(|(id, exp, last)| (id, (exp, last)))
            .collect();
        let insert = match self.dialect() {
            Dialect::MySql => "INSERT IGNORE INTO c10k_instances (id, holder, expires_at, last_ts) VALUES (?, ?, ?, 0)",
            _ => "INSERT INTO c10k_instances (id, holder, expires_at, last_ts) VALUES (?, ?, ?, 0) ON CONFLICT (id) DO NOTHING",
        };
        let insert = self.sql(insert);
        let steal = self.sql(
            "UPDATE c10k_instances SET holder = ?, expires_at = ? WHERE id = ? AND expires_at < ?",
        );
        for id in 0..i64::from(max) {
            let got = match taken.get(&id) {
                None => on_pool!(self, p => sqlx::query(&insert)
                    .bind(id as i32).bind(holder).bind(expires_at as i64)
                    .execute(p).await?.rows_affected()),
                Some(&(exp, _)) if exp < now as i64 => on_pool!(self, p => sqlx::query(&steal)
                    .bind(holder).bind(expires_at as i64).bind(id as i32).bind(now as i64)
                    .execute(p).await?.rows_affected()),
                Some(_) => 0,
            };
            if got == 1 {
                let last = taken.get(&id).map_or(0, |&(_, last)| last.max(0) as u64);
                return Ok(Some((id as u16, last)));
            }
        }
        Ok(None)
    }

    /// Extends a lease this holder still has. `false`: it was lost (expired and taken).
    pub async fn renew(
        &self,
        id: u16,
        holder: &str,
        expires_at: u64,
        last_ts: u64,
    ) -> sqlx::Result<bool> {
        let sql = self.sql(
            "UPDATE c10k_instances SET expires_at = ?, last_ts = ? WHERE id = ? AND holder = ?",
        );
        let n = on_pool!(self, p => sqlx::query(&sql)
            .bind(expires_at as i64).bind(last_ts as i64).bind(i32::from(id)).bind(holder)
            .execute(p).await?.rows_affected());
        Ok(n == 1)
    }

    /// Takes over the lease `id` from `old_holder`, a previous holder known to be gone (the worker
    /// whose journal lock we now hold), whether or not its lease has expired yet. Returns the last
    /// timestamp recorded under it, or `None` if the lease has another holder by now.
    pub async fn take_over(
        &self,
        id: u16,
        old_holder: &str,
        holder: &str,
        expires_at: u64,
    ) -> sqlx::Result<Option<u64>> {
        let update = self.sql(
            "UPDATE c10k_instances SET holder = ?, expires_at = ? WHERE id = ? AND holder = ?",
        );
        let n = on_pool!(self, p => sqlx::query(&update)
            .bind(holder).bind(expires_at as i64).bind(i32::from(id)).bind(old_holder)
            .execute(p).await?.rows_affected());
        if n != 1 {
            return Ok(None);
        }
        let select = self.sql("SELECT last_ts FROM c10k_instances WHERE id = ?");
        let last: i64 = on_pool!(self, p => sqlx::query(&select)
            .bind(i32::from(id)).fetch_one(p).await?.try_get(0)?);
        Ok(Some(last.max(0) as u64))
    }

    /// Leases held now (tests and tools): ids whose lease has not expired at `now`.
    pub async fn live_leases(&self, now: u64) -> sqlx::Result<Vec<u16>> {
        let sql = self.sql("SELECT id FROM c10k_instances WHERE expires_at > ? ORDER BY id");
        on_pool!(self, p => {
            let rows = sqlx::query(&sql).bind(now as i64).fetch_all(p).await?;
            rows.iter().map(|r| Ok(r.try_get::<i32, _>(0)? as u16)).collect()
        })
    }

    /// Gives a lease back (expires it now), recording the last timestamp issued under it.
    pub async fn release(&self, id: u16, holder: &str, last_ts: u64) -> sqlx::Result<()> {
        self.renew(id, holder, 0, last_ts).await.map(|_| ())
    }

    /// `?` placeholders become `$1, $2, ...` on PostgreSQL.
    fn sql(&self, sql: &str) -> String {
        if self.dialect() != Dialect::Postgres {
            return sql.to_owned();
        }
        let mut out = String::with_capacity(sql.len() + 8);
        let mut n = 0;
        for c in sql.chars() {
            if c == '?' {
                n += 1;
                out.push('$');
                out.push_str(&n.to_string());
            } else {
                out.push(c);
            }
        }
        out
    }
}
