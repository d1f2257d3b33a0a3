//! The write path's settings, flattened into `c10k serve`'s one settings struct (so each is a
//! flag, a `C10K_*` environment variable and a config-file key at once). clap's derives are behind
//! the `cli` feature, which only the `c10k` binary turns on: this library parses no command line.

use std::path::PathBuf;

use serde::{Deserialize, Serialize};

/// When a `POST /messages` is acknowledged.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum Durability {
    /// After the journal record is fsynced (group commit): nothing acknowledged is ever lost.
    Fsync,
    /// After the record is written to the OS, before fsync: an OS crash or power loss can lose
    /// the last seconds of acknowledged writes (a process crash loses nothing).
    None,
}

/// How `POST /messages` reaches the database.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::ValueEnum))]
#[serde(rename_all = "lowercase")]
pub enum WriteMode {
    /// Journal with group commit, then batched flushes (the default).
    Journal,
    /// The naive way, for comparison: one auto-increment INSERT per request, answered after the
    /// database commits.
    Direct,
}

#[cfg(feature = "cli")]
fn batch(s: &str) -> Result<usize, String> {
    match s.parse::<usize>() {
        Ok(n) if (1..=MAX_FLUSH_BATCH).contains(&n) => Ok(n),
        _ => Err(format!(
            "{s:?} is not a whole number in 1..={MAX_FLUSH_BATCH}"
        )),
    }
}

#[cfg(feature = "cli")]
fn at_least_one(s: &str) -> Result<u64, String> {
    match s.parse::<u64>() {
        Ok(n) if n >= 1 => Ok(n),
        _ => Err(format!("{s:?} is not a whole number ≥ 1")),
    }
}

#[cfg(feature = "cli")]
fn instance(s: &str) -> Result<u16, String> {
    match s.parse::<u16>() {
        Ok(n) if n < crate::ids::MAX_INSTANCES => Ok(n),
        _ => Err(format!("{s:?} is not an instance id in 0..1024")),
    }
}

fn database(s: &str) -> Result<String, String> {
    match crate::db::Dialect::from_url(s) {
        Some(_) => Ok(s.to_owned()),
        None => Err(format!(
            "{s:?} is not a database URL: use sqlite://PATH, mysql://USER:PASS@HOST/DB or postgres://USER:PASS@HOST/DB"
        )),
    }
}

/// Database URLs are shown with the password as `***` (kept here too, beside the settings).
pub use crate::db::redact;

/// Largest `--flush-batch`: 5 bound values per row stays under every dialect's parameter limit.
pub const MAX_FLUSH_BATCH: usize = 5000;

/// Settings of the write path (`POST /messages`, `GET /messages`, `GET /ids`). Its `Debug` hides
/// the database password; so must every other way it is shown ([`redact`]).
#[derive(Clone, Serialize, Deserialize)]
#[cfg_attr(feature = "cli", derive(clap::Args))]
#[serde(rename_all = "kebab-case", default)]
pub struct StoreConfig {
    /// Directory for the journals, id state and the default SQLite database.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_DATA_DIR",
            default_value = "./c10k-data",
            help_heading = "Write path"
        )
    )]
    pub data_dir: PathBuf,

    /// Database URL: sqlite://PATH, mysql://USER:PASS@HOST:PORT/DB or postgres://... [default:
    /// sqlite://DATA_DIR/c10k.db]
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_DATABASE", value_parser = database, help_heading = "Write path"))]
    pub database: Option<String>,

    /// When a write is acknowledged: after the journal fsync, or before it.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_DURABILITY", value_enum, default_value_t = Durability::Fsync,
          help_heading = "Write path"))]
    pub durability: Durability,

    /// journal (group commit + batched flush) or direct (one INSERT per request, for comparison).
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_WRITE_MODE", value_enum, default_value_t = WriteMode::Journal,
          help_heading = "Write path"))]
    pub write_mode: WriteMode,

    /// Most rows in one database statement.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_FLUSH_BATCH", default_value_t = 1000, value_parser = batch,
          help_heading = "Write path"))]
    pub flush_batch: usize,

    /// Milliseconds the flusher waits for a batch to fill before writing what it has.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_FLUSH_INTERVAL", default_value_t = 20, value_parser = at_least_one,
          help_heading = "Write path"))]
    pub flush_interval: u64,

    /// Unflushed rows per worker beyond which new writes get 503 + Retry-After.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_MAX_LAG", default_value_t = 100_000, value_parser = at_least_one,
          help_heading = "Write path"))]
    pub max_lag: u64,

    /// Instance id for the id generator (worker N uses this + N); leased from the database when
    /// not set.
    #[cfg_attr(feature = "cli", arg(long, env = "C10K_INSTANCE_ID", value_parser = instance, help_heading = "Write path"))]
    pub instance_id: Option<u16>,

    /// Connections in each worker's database pool [default: 2 × cores].
    #[cfg_attr(feature = "cli", arg(long, visible_alias = "pool-size", env = "C10K_DB_POOL_SIZE",
          value_parser = clap::value_parser!(u32).range(1..=1000), help_heading = "Write path"))]
    pub db_pool_size: Option<u32>,

    /// Seconds to wait for a pooled connection before answering 503.
    #[cfg_attr(
        feature = "cli",
        arg(
            long,
            env = "C10K_DB_ACQUIRE_TIMEOUT",
            default_value_t = 2.0,
            help_heading = "Write path"
        )
    )]
    pub db_acquire_timeout: f64,

    /// How many instance ids leases hand out (`0..lease_ids`): all 1,024 the id layout has. Not a
    /// flag; tests shrink it to exhaust the space quickly.
    #[cfg_attr(feature = "cli", arg(skip = crate::ids::MAX_INSTANCES))]
    #[serde(skip, default = "all_instance_ids")]
    pub lease_ids: u16,
}

fn all_instance_ids() -> u16 {
    crate::ids::MAX_INSTANCES
}

impl Default for StoreConfig {
    fn default() -> StoreConfig {
        StoreConfig {
            data_dir: PathBuf::from("./c10k-data"),
            database: None,
            durability: Durability::Fsync,
            write_mode: WriteMode::Journal,
            flush_batch: 1000,
            flush_interval: 20,
            max_lag: 100_000,
            instance_id: None,
            db_pool_size: None,
            db_acquire_timeout: 2.0,
            lease_ids: crate::ids::MAX_INSTANCES,
        }
    }
}

impl std::fmt::Debug for StoreConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StoreConfig")
            .field("data_dir", &self.data_dir)
            .field("database", &self.database.as_deref().map(redact))
            .field("durability", &self.durability)
            .field("write_mode", &self.write_mode)
            .field("flush_batch", &self.flush_batch)
            .field("flush_interval", &self.flush_interval)
            .field("max_lag", &self.max_lag)
            .field("instance_id", &self.instance_id)
            .field("db_pool_size", &self.db_pool_size)
            .field("db_acquire_timeout", &self.db_acquire_timeout)
            .field("lease_ids", &self.lease_ids)
            .finish()
    }
}

/// A setting that cannot be used, naming its flag.
#[derive(Debug, thiserror::Error)]
#[error("{flag}: {message}")]
pub struct ConfigError {
    pub flag: &'static str,
    pub message: String,
}

impl StoreConfig {
    /// A config for tests and tools: data under `dir`, SQLite there unless `database` is given.
    pub fn in_dir(dir: impl Into<PathBuf>) -> StoreConfig {
        StoreConfig {
            data_dir: dir.into(),
            ..StoreConfig::default()
        }
    }

    /// The effective database URL.
    pub fn database_url(&self) -> String {
        match &self.database {
            Some(url) => url.clone(),
            None => format!("sqlite://{}/c10k.db", self.data_dir.display()),
        }
    }

    /// The database URL with any password replaced by `***`, for logs and error messages.
    pub fn database_url_redacted(&self) -> String {
        redact(&self.database_url())
    }

    pub fn pool_size(&self) -> u32 {
        self.db_pool_size.unwrap_or_else(|| {
            let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
            (2 * cores) as u32
        })
    }

    /// Checks what clap's parsers check, for values that came from a config file.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |flag, message: String| Err(ConfigError { flag, message });
        if !(1..=MAX_FLUSH_BATCH).contains(&self.flush_batch) {
            return bad("--flush-batch", format!("must be in 1..={MAX_FLUSH_BATCH}"));
        }
        if self.flush_interval == 0 {
            return bad("--flush-interval", "must be at least 1 ms".into());
        }
        if self.max_lag == 0 {
            return bad("--max-lag", "must be at least 1".into());
        }
        if let Some(id) = self.instance_id {
            if id >= crate::ids::MAX_INSTANCES {
                return bad("--instance-id", "must be in 0..1024".into());
            }
        }
        if !(1..=crate::ids::MAX_INSTANCES).contains(&self.lease_ids) {
            return bad("lease_ids", "must be in 1..=1024".into());
        }
        if self.db_pool_size == Some(0) {
            return bad("--db-pool-size", "must be at least 1".into());
        }
        if !self.db_acquire_timeout.is_finite() || self.db_acquire_timeout <= 0.0 {
            return bad(
                "--db-acquire-timeout",
                "must be a number of seconds > 0".into(),
            );
        }
        if let Err(e) = database(&self.database_url()) {
            return bad("--database", e);
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_are_redacted() {
        let c = StoreConfig {
            database: Some("mysql://c10k:S3cretPW@127.0.0.1:3306/c10k".into()),
            ..StoreConfig::default()
        };
        let shown = format!("{c:?} {c:#?} {}", c.database_url_redacted());
        assert!(!shown.contains("S3cretPW"), "{shown}");
        assert!(
            shown.contains("mysql://c10k:***@127.0.0.1:3306/c10k"),
            "{shown}"
        );
        assert_eq!(redact("mysql://u:s3cret@h:1/db"), "mysql://u:***@h:1/db");
        assert_eq!(redact("postgres://u@h/db"), "postgres://u@h/db");
        assert_eq!(redact("sqlite://./x.db"), "sqlite://./x.db");
    }

    #[test]
    fn bad_values_are_refused_naming_the_flag() {
        let c = StoreConfig {
            flush_batch: 0,
            ..StoreConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--flush-batch"));
        let c = StoreConfig {
            database: Some("redis://x".into()),
            ..StoreConfig::default()
        };
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .starts_with("--database"));
        StoreConfig::default().validate().unwrap();
    }
}
