//! Where `c10k serve`'s settings come from: the command line, `C10K_*` environment variables
//! and a `--config` file, layered in that order of precedence over the defaults. The file is
//! TOML, or a gunicorn config in Python, whose settings `pyconfig` turns into the same table.
//!
//! The settings structs (the server's `ServeConfig`, the store's `StoreConfig`, the built-in
//! app's and the Python app's) each derive clap's `Args` and serde, so every setting is a flag,
//! a variable and a file key at once (gunicorn's `Setting`). The libraries that own those structs
//! know nothing of clap or of files: this module reads the file, refuses a key that no struct
//! has, lets whatever the command line or environment gave win, and names the file, line and key
//! of a bad value.

use std::collections::HashMap;
use std::path::{Path, PathBuf};

use c10k_serve::config::ConfigError;
use c10k_serve::ServeConfig;
use clap::parser::ValueSource;
use clap::{ArgMatches, Args, FromArgMatches};
use serde::Serialize;

/// A `--config` file, read once per load (at start, and on each `SIGHUP`); its keys may
/// belong to several settings structs (the server's and the application's), each taking its own
/// with [`layered`].
#[derive(Clone, Debug)]
pub struct ConfigFile {
    pub path: PathBuf,
    /// The file's text as read, which the master hands to its workers (for a Python file: its
    /// settings as TOML, so that the workers do not run it again).
    text: String,
    table: toml::Table,
    /// The line of each key (as written), so every error can name it.
    lines: HashMap<String, usize>,
    /// A Python file's keys as it spells them (gunicorn's `accesslog` for c10k's `access_log`).
    written: HashMap<String, String>,
    /// What running a Python file gave besides its settings (`None` for TOML).
    python: Option<crate::pyconfig::Evaluated>,
    /// The keys (as written) dropped for asking for nothing: gunicorn's default of a setting
    /// c10k refuses or does not have (`check_config = False`), for the log.
    at_default: Vec<String>,
}

impl ConfigFile {
    /// Reads a TOML file (or a Python one with the `python3` on `PATH`).
    #[cfg(test)]
    pub fn read(path: &Path) -> Result<ConfigFile, ConfigError> {
        ConfigFile::load(path, None)
    }

    /// Reads the file at `path`: a gunicorn Python config (see [`crate::pyconfig::location`]),
    /// run with the Python of `venv` (else `$VIRTUAL_ENV`, else `python3`); else TOML. A
    /// worker reads neither: it takes the text its master read.
    pub fn load(path: &Path, venv: Option<&Path>) -> Result<ConfigFile, ConfigError> {
        let from_master = text_from_master();
        if from_master.is_none() {
            if let Some(at) = crate::pyconfig::location(path) {
                return ConfigFile::from_python(path, &at, venv);
            }
        }
        let text = match from_master {
            Some(text) => text,
            None => std::fs::read_to_string(crate::pyconfig::strip_file_prefix(path)).map_err(
                |source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                },
            )?,
        };
        // Values keep their byte spans: toml's own message names the line of a syntax error.
        let spanned: std::collections::BTreeMap<String, toml::Spanned<toml::Value>> =
            toml::from_str(&text).map_err(|e| ConfigError::File {
                path: path.to_owned(),
                message: e.to_string().trim_end().to_owned(),
            })?;
        let line_of = |at: usize| {
            1 + text.as_bytes()[..at.min(text.len())]
                .iter()
                .filter(|&&b| b == b'\n')
                .count()
        };
        let mut table = toml::Table::new();
        let mut lines = HashMap::new();
        for (key, value) in spanned {
            lines.insert(key.clone(), line_of(value.span().start));
            table.insert(key, value.into_inner());
        }
        let mut file = ConfigFile {
            path: path.to_owned(),
            text,
            table,
            lines,
            written: HashMap::new(),
            python: None,
            at_default: Vec::new(),
        };
        file.take_gunicorn_values()?;
        Ok(file)
    }

    /// gunicorn's validators on the file's values (see `gunicorn_values`), in file order: each
    /// value becomes what gunicorn would take it as (`workers = "4"` is 4), and a gunicorn
    /// setting c10k refuses or does not have, at gunicorn's default (`daemon = false`,
    /// `protocol = "http"`), is dropped, since it asks for nothing (see
    /// `gunicorn::asks_for_nothing`). The same for a TOML and a Python file.
    fn take_gunicorn_values(&mut self) -> Result<(), ConfigError> {
        let mut keys: Vec<String> = self.table.keys().cloned().collect();
        keys.sort_by_key(|k| self.lines.get(k).copied());
        for key in keys {
            let Some(value) = self.table.remove(&key) else {
                continue;
            };
            let value = crate::gunicorn_values::convert(&key, value)
                .map_err(|why| self.error(format!("{}: {why}", self.place(&key))))?;
            if crate::gunicorn::asks_for_nothing(&key, &value) {
                let name = self.written.get(&key).unwrap_or(&key).clone();
                self.at_default.push(name);
                continue;
            }
            // A Python dict reaches here for the settings that gunicorn takes as dicts
            // (refused unless at gunicorn's default, above); for any other it is no value.
            if self.python.is_some()
                && value.is_table()
                && crate::gunicorn::refuse_key(&key).is_none()
            {
                return Err(self.error(format!(
                    "{}: a dict is not a value c10k takes (it takes str, int, float, bool, or \
                     a list of str, as a TOML --config file does)",
                    self.place(&key)
                )));
            }
            self.table.insert(key, value);
        }
        Ok(())
    }

    /// A gunicorn config in Python, run now (see `pyconfig`); its settings become the table.
    fn from_python(
        path: &Path,
        at: &crate::pyconfig::Location,
        venv: Option<&Path>,
    ) -> Result<ConfigFile, ConfigError> {
        let error = |message: String| ConfigError::File {
            path: path.to_owned(),
            message,
        };
        if let crate::pyconfig::Location::File(file) = at {
            // As a TOML file's: "cannot read config file x.py: No such file or directory".
            std::fs::metadata(file).map_err(|source| ConfigError::Read {
                path: path.to_owned(),
                source,
            })?;
        }
        let evaluated =
            crate::pyconfig::evaluate(at, venv, crate::pyconfig::TIMEOUT).map_err(error)?;
        let mut table = toml::Table::new();
        let mut lines = HashMap::new();
        let mut written = HashMap::new();
        for s in &evaluated.settings {
            table.insert(s.key.clone(), s.value.clone());
            if let Some(line) = s.line {
                lines.insert(s.key.clone(), line);
            }
            written.insert(s.key.clone(), s.name.clone());
        }
        let mut file = ConfigFile {
            path: path.to_owned(),
            text: String::new(),
            table,
            lines,
            written,
            python: Some(evaluated),
            at_default: Vec::new(),
        };
        file.take_gunicorn_values()?;
        // The workers take the values as converted, and run nothing.
        file.text = toml::to_string(&file.table).map_err(|e| error(e.to_string()))?;
        Ok(file)
    }

    /// In the master, before any worker starts: gives the workers this text (see
    /// [`ENV_FILE_TEXT`]), and the environment a Python file made, as gunicorn's workers
    /// inherit its master's.
    pub fn hand_to_workers(&self) {
        for (k, v) in self.for_workers() {
            std::env::set_var(k, v);
        }
        if let Some(py) = &self.python {
            for k in &py.removed {
                std::env::remove_var(k);
            }
        }
    }

    /// The variables that give workers this text (and a Python file's environment), for the
    /// workers a `SIGHUP` starts (the master's own environment keeps those of the start).
    pub fn for_workers(&self) -> Vec<(String, String)> {
        let mut env = vec![(ENV_FILE_TEXT.to_owned(), self.text.clone())];
        if let Some(py) = &self.python {
            env.extend(py.environ.iter().cloned());
        }
        env
    }

    /// A Python file's `loglevel`, which c10k takes as `--log-level` when that is not given.
    pub fn log_level(&self) -> Option<&str> {
        self.python.as_ref()?.log_level.as_deref()
    }

    /// For the log: which file was read, and for a Python one, how and what it set.
    pub fn describe(&self) -> String {
        // Named, so that a key that seems to vanish from --check-config's output is explained.
        let ignored = if self.at_default.is_empty() {
            String::new()
        } else {
            format!(
                "; at gunicorn's default, which asks for nothing c10k lacks, so ignored: {}",
                self.at_default.join(", ")
            )
        };
        let Some(py) = &self.python else {
            return format!("config file {} read (TOML){ignored}", self.path.display());
        };
        // Those taken: not gunicorn's defaults that ask for nothing (`daemon = False`).
        let mut names: Vec<&str> = py
            .settings
            .iter()
            .filter(|s| self.table.contains_key(&s.key))
            .map(|s| s.name.as_str())
            .collect();
        names.extend(py.log_level.as_ref().map(|_| "loglevel"));
        let mut line = format!(
            "config file {} read (a gunicorn config, run with {}",
            self.path.display(),
            py.python.display()
        );
        let module = matches!(
            crate::pyconfig::location(&self.path),
            Some(crate::pyconfig::Location::Module(_))
        );
        if let (true, Some(file)) = (module, &py.file) {
            line += &format!(" from {file}");
        }
        line += &format!(
            "): {}",
            if names.is_empty() {
                "no settings".to_owned()
            } else {
                names.join(", ")
            }
        );
        if !py.environ.is_empty() {
            let vars: Vec<&str> = py.environ.iter().map(|(k, _)| k.as_str()).collect();
            line += &format!(
                "; it set os.environ {}, which the workers inherit, as in gunicorn",
                vars.join(", ")
            );
        }
        if !py.removed.is_empty() {
            line += &format!("; it removed {} from os.environ", py.removed.join(", "));
        }
        line + &ignored
    }

    /// For the log: the server hooks a Python file sets, which c10k does not call.
    pub fn warnings(&self) -> Vec<String> {
        let Some(py) = self.python.as_ref().filter(|p| !p.hooks.is_empty()) else {
            return Vec::new();
        };
        let hooks: Vec<String> = py
            .hooks
            .iter()
            .map(|(name, line)| match line {
                Some(l) => format!("{name} (line {l})"),
                None => name.clone(),
            })
            .collect();
        vec![format!(
            "{}: c10k does not call gunicorn's server hooks: {} {} ignored. c10k's master is \
             not Python and its workers are not forked from it; work a hook did per worker \
             belongs in the app's module (it is imported in each worker), work done once at \
             start in the unit that starts c10k (a systemd ExecStartPre=, a container's \
             entrypoint)",
            self.path.display(),
            hooks.join(", "),
            if hooks.len() == 1 { "is" } else { "are" }
        )]
    }

    /// "line 3, key `graceful_timeout`": where a key of this file is, named as the file spells
    /// it (either spelling is read, see [`key_id`]; the one to look for in the file is the user's).
    fn place(&self, key: &str) -> String {
        let name = self.written.get(key).map_or(key, String::as_str);
        match self.lines.get(key) {
            Some(line) => format!("line {line}, key `{name}`"),
            None => format!("key `{name}`"),
        }
    }

    /// Names the file, line and key of a setting's error when the file set it (`flag` is
    /// `--name`; a value given on the command line or in the environment is not the file's).
    pub fn blame(&self, matches: &ArgMatches, err: ConfigError) -> ConfigError {
        let ConfigError::Invalid { flag, message } = err else {
            return err;
        };
        let id = key_id(flag.trim_start_matches('-'));
        match self.table.keys().find(|k| key_id(k) == id) {
            Some(key) if !given(matches, &id) => {
                self.error(format!("{}: {message}", self.place(key)))
            }
            _ => ConfigError::Invalid { flag, message },
        }
    }

    fn error(&self, message: String) -> ConfigError {
        ConfigError::File {
            path: self.path.clone(),
            message,
        }
    }

    /// Refuses a key that none of `known` (the settings structs' clap definitions) has, so a typo
    /// is not silently ignored.
    pub fn check_keys(&self, known: &[clap::Command]) -> Result<(), ConfigError> {
        let mut keys: Vec<&String> = self.table.keys().collect();
        keys.sort_by_key(|k| self.lines.get(*k));
        for key in keys {
            let id = key_id(key);
            if crate::gunicorn::satisfied_key(key) {
                continue;
            }
            if !known
                .iter()
                .any(|c| c.get_arguments().any(|a| a.get_id() == id.as_str()))
            {
                let hint = match crate::gunicorn::renamed(key) {
                    Some(name) => format!(" (gunicorn's name; c10k's is `{name}`)"),
                    None => String::new(),
                };
                let what = if self.python.is_some() {
                    "a gunicorn setting that c10k does not have; remove it, or see the README's \
                     gunicorn → c10k table"
                } else {
                    "unknown key"
                };
                return Err(self.error(format!("{}: {what}{hint}", self.place(key))));
            }
        }
        Ok(())
    }

    /// Refuses the first key (in file order) that `refused` has a message for.
    pub fn refuse_keys(&self, refused: impl Fn(&str) -> Option<String>) -> Result<(), ConfigError> {
        let mut keys: Vec<&String> = self.table.keys().collect();
        keys.sort_by_key(|k| self.lines.get(*k));
        match keys.into_iter().find_map(|k| Some((k, refused(k)?))) {
            Some((key, why)) => Err(self.error(format!("{}: {why}", self.place(key)))),
            None => Ok(()),
        }
    }

    pub fn contains(&self, id: &str) -> bool {
        self.table.keys().any(|k| key_id(k) == id)
    }
}

/// The variable in which the master hands the text of its `--config` file to its workers. A
/// worker started again by the master (`HUP`, `TTIN`, `--max-requests`, a crash) used to read the
/// file anew: one being edited, or left broken, then failed every boot and stopped the whole
/// server ("worker failed to boot twice"), and a `HUP` took some of its new settings (`env`,
/// `app`) but not the server's. Now every worker runs with the configuration its master last
/// read and checked, the file included: the start's, or that of the last `SIGHUP` whose
/// configuration loaded (see `serve_settings::reloader`).
const ENV_FILE_TEXT: &str = "C10K_WORKER_CONFIG_FILE";

/// In a worker, the master's text of the `--config` file, taken out of the environment so the
/// application does not inherit it (it may hold a database password).
fn text_from_master() -> Option<String> {
    if !c10k_serve::is_worker_process() {
        return None;
    }
    let text = std::env::var(ENV_FILE_TEXT).ok()?;
    std::env::remove_var(ENV_FILE_TEXT);
    Some(text)
}

/// gunicorn config files use snake_case; accept it beside kebab-case. The clap id is snake_case.
fn key_id(key: &str) -> String {
    key.replace('-', "_")
}

/// Builds settings struct `T` from command-line/env matches and an optional config file: a
/// value given on the command line or in the environment beats the file, which beats the
/// default. Keys of the file that are not `T`'s are left to other structs.
pub fn layered<T>(matches: &ArgMatches, file: Option<&ConfigFile>) -> Result<T, ConfigError>
where
    T: Args + FromArgMatches + Serialize + serde::de::DeserializeOwned,
{
    let cli = T::from_arg_matches(matches).map_err(|e| ConfigError::Invalid {
        flag: "serve",
        message: e.to_string(),
    })?;
    let Some(file) = file else {
        return Ok(cli);
    };
    let mut merged = toml::Table::try_from(&cli).map_err(|e| file.error(e.to_string()))?;
    let known = T::augment_args(clap::Command::new("serve"));
    let mut keys: Vec<&String> = file.table.keys().collect();
    keys.sort_by_key(|k| file.lines.get(*k));
    for key in keys {
        let value = &file.table[key];
        let id = key_id(key);
        if !known.get_arguments().any(|a| a.get_id() == id.as_str()) {
            continue;
        }
        if given(matches, &id) {
            continue;
        }
        // Try the key alone first, so a wrong type is blamed on its own key and line.
        let mut alone = merged.clone();
        alone.insert(key.replace('_', "-"), value.clone());
        if let Err(e) = toml::Value::Table(alone).try_into::<T>() {
            return Err(file.error(format!("{}: {value}: {}", file.place(key), e.message())));
        }
        merged.insert(key.replace('_', "-"), value.clone());
    }
    toml::Value::Table(merged)
        .try_into()
        .map_err(|e: toml::de::Error| file.error(e.message().to_owned()))
}

/// Whether setting `id` was given on the command line or in the environment.
pub fn given(matches: &ArgMatches, id: &str) -> bool {
    matches!(
        matches.value_source(id),
        Some(ValueSource::CommandLine | ValueSource::EnvVariable)
    )
}

/// `WEB_CONCURRENCY`, which gunicorn (and Heroku, Render, Dokku, which set it) take as the
/// default of `--workers`: a flag, `C10K_WORKERS` or a file's `workers` wins over it.
fn web_concurrency() -> Result<Option<usize>, ConfigError> {
    let Some(v) = std::env::var_os("WEB_CONCURRENCY") else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    match v.trim().parse::<usize>() {
        Ok(n) if n >= 1 => Ok(Some(n)),
        _ => Err(ConfigError::Invalid {
            flag: "WEB_CONCURRENCY",
            message: format!(
                "{v:?} is not a whole number ≥ 1 (c10k reads it as the default of --workers, \
                 as gunicorn does; unset it or give --workers)"
            ),
        }),
    }
}

/// `PORT`, which gunicorn (and Heroku, Render, Cloud Run, Fly, which set it) take as the default
/// bind: `0.0.0.0:$PORT`. A `--bind`, `C10K_BIND` or the file's `bind` wins over it.
fn platform_port() -> Result<Option<c10k_serve::Bind>, ConfigError> {
    let Some(v) = std::env::var_os("PORT") else {
        return Ok(None);
    };
    let v = v.to_string_lossy();
    match v.trim().parse::<u16>() {
        Ok(port) => Ok(Some(c10k_serve::Bind::http(c10k_serve::BindAddr::Tcp(
            std::net::SocketAddr::from(([0, 0, 0, 0], port)),
        )))),
        Err(_) => Err(ConfigError::Invalid {
            flag: "PORT",
            message: format!(
                "{v:?} is not a port number (c10k reads it as the default of --bind, \
                 0.0.0.0:$PORT, as gunicorn does; unset it or give --bind)"
            ),
        }),
    }
}

/// Builds the effective config from parsed command-line/env matches and an optional TOML
/// file whose keys must all be the server's (the tests' way in; `c10k serve` shares its file
/// with the application's settings and calls [`resolve_serve`]).
#[cfg(test)]
fn resolve(matches: &ArgMatches, file: Option<&Path>) -> Result<ServeConfig, ConfigError> {
    let file = file.map(ConfigFile::read).transpose()?;
    if let Some(file) = &file {
        file.check_keys(&[ServeConfig::augment_args(clap::Command::new("serve"))])?;
    }
    resolve_serve(matches, file.as_ref())
}

/// The server's settings from command-line/env matches and a config file already read and
/// checked; keys that are not the server's are ignored.
pub fn resolve_serve(
    matches: &ArgMatches,
    file: Option<&ConfigFile>,
) -> Result<ServeConfig, ConfigError> {
    let mut config: ServeConfig = layered(matches, file)?;
    if !given(matches, "bind") && !file.is_some_and(|f| f.contains("bind")) {
        if let Some(bind) = platform_port()? {
            config.bind = vec![bind];
        }
    }
    if !given(matches, "workers") && !file.is_some_and(|f| f.contains("workers")) {
        if let Some(n) = web_concurrency()? {
            config.workers = n;
        }
    }
    config.admin_chosen = given(matches, "admin") || file.is_some_and(|f| f.contains("admin"));
    config.bind_chosen = given(matches, "bind") || file.is_some_and(|f| f.contains("bind"));
    // gunicorn's default format written out, with no access log, asks for nothing (gunicorn
    // writes no access log either); another format without a log stays refused.
    if config.access_log.is_none()
        && config.access_log_format.as_deref().map(str::trim)
            == Some(crate::gunicorn_defaults::ACCESS_LOG_FORMAT)
    {
        config.access_log_format = None;
    }
    if given(matches, "admin_token") {
        // Not serialised, so the layering above lost it (a file's value came through).
        config.admin_token = matches.get_one::<String>("admin_token").cloned();
    }
    config.validate().map_err(|e| match file {
        Some(f) => f.blame(matches, e),
        None => e,
    })?;
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;
    use c10k_serve::config::{AdminAddr, AllowFrom, Bind, BindAddr, Protocol, WorkerClass};
    use c10k_store::StoreConfig;
    use clap::{CommandFactory, Parser};

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        serve: ServeConfig,
    }

    #[derive(Parser)]
    struct StoreCli {
        #[command(flatten)]
        store: StoreConfig,
    }

    fn matches(args: &[&str]) -> ArgMatches {
        let mut argv = vec!["serve"];
        argv.extend_from_slice(args);
        Cli::command().try_get_matches_from(argv).unwrap()
    }

    /// The libraries write their defaults out by hand (they know no clap); they must be the
    /// ones `--help` shows and a command line without flags gives.
    #[test]
    fn default_impls_match_clap_defaults() {
        let from_clap = ServeConfig::from_arg_matches(&matches(&[])).unwrap();
        assert_eq!(
            format!("{from_clap:?}"),
            format!("{:?}", ServeConfig::default())
        );
        let m = StoreCli::command().try_get_matches_from(["x"]).unwrap();
        let from_clap = StoreConfig::from_arg_matches(&m).unwrap();
        assert_eq!(
            format!("{from_clap:?}"),
            format!("{:?}", StoreConfig::default())
        );
    }

    #[test]
    fn store_flags_refuse_bad_values() {
        for args in [
            &["--flush-batch", "0"][..],
            &["--flush-batch", "100000"],
            &["--instance-id", "1024"],
            &["--database", "redis://x"],
            &["--durability", "maybe"],
            &["--max-lag", "0"],
        ] {
            let mut argv = vec!["x"];
            argv.extend_from_slice(args);
            let e = StoreCli::command().try_get_matches_from(argv).err();
            assert!(e.is_some(), "{args:?}");
        }
    }

    #[test]
    fn admin_beyond_loopback_needs_a_token_that_is_never_shown() {
        let e = resolve(&matches(&["--admin", "0.0.0.0:9191"]), None).unwrap_err();
        let e = e.to_string();
        assert!(e.contains("--admin") && e.contains("--admin-token"), "{e}");
        let c = resolve(
            &matches(&["--admin", "0.0.0.0:9191", "--admin-token", "s3cret-t0ken"]),
            None,
        )
        .unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("s3cret-t0ken"));
        assert!(!c.to_toml().contains("s3cret-t0ken"), "{}", c.to_toml());
        for loopback in ["127.0.0.1:0", "[::1]:0", "unix:/tmp/c10k-admin.sock"] {
            resolve(&matches(&["--admin", loopback]), None).unwrap();
        }
        let e = resolve(&matches(&["--admin-token", " "]), None).unwrap_err();
        assert!(e.to_string().contains("--admin-token"), "{e}");
        // From a file too, and the command line beats it.
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "admin = \"0.0.0.0:9191\"\nadmin-token = \"from-file\"\n",
        )
        .unwrap();
        let c = resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("from-file"));
        let c = resolve(&matches(&["--admin-token", "cli"]), Some(&path)).unwrap();
        assert_eq!(c.admin_token.as_deref(), Some("cli"));
    }

    #[test]
    fn admin_off_and_not_on_the_public_bind() {
        let m = matches(&["--admin", "off"]);
        let c = resolve(&m, None).unwrap();
        assert_eq!(c.admin, AdminAddr(None));
        assert!(c.admin_chosen);
        assert!(!resolve(&matches(&[]), None).unwrap().admin_chosen);
        let m = matches(&["--bind", "127.0.0.1:8000", "--admin", "127.0.0.1:8000"]);
        let e = resolve(&m, None).unwrap_err();
        assert!(e.to_string().contains("--admin"), "{e}");
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.admin, AdminAddr(None));
    }

    #[test]
    fn file_fills_what_cli_left_default() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "workers = 3\nworker_class = \"gthread\"\nbacklog = 64\n",
        )
        .unwrap();
        let c = resolve(&matches(&["--backlog", "128"]), Some(&path)).unwrap();
        assert_eq!(c.workers, 3);
        assert_eq!(c.worker_class, WorkerClass::Gthread);
        assert_eq!(c.backlog, 128, "command line beats the file");
    }

    #[test]
    fn unknown_key_and_bad_values_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(&path, "wrokers = 3\n").unwrap();
        let e = resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("wrokers"), "{e}");

        std::fs::write(&path, "workers = -1\n").unwrap();
        let e = resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("c10k.toml"), "{e}");

        std::fs::write(&path, "worker-class = \"fork\"\n").unwrap();
        let e = resolve(&matches(&[]), Some(&path)).unwrap_err();
        assert!(e.to_string().contains("fork"), "{e}");
    }

    #[test]
    fn uwsgi_binds_beside_http_ones_in_every_source() {
        let m = matches(&[
            "--bind",
            "127.0.0.1:8000,uwsgi://127.0.0.1:3031,uwsgi+unix:/run/c10k.sock,unix:/tmp/h.sock",
            "--uwsgi-allow-from",
            "10.0.0.0/8,2001:db8::/32",
        ]);
        let c = resolve(&m, None).unwrap();
        let protocols: Vec<_> = c.bind.iter().map(|b| b.protocol).collect();
        use Protocol::{Http, Uwsgi};
        assert_eq!(protocols, [Http, Uwsgi, Uwsgi, Http]);
        assert_eq!(c.bind[2].addr, BindAddr::Unix("/run/c10k.sock".into()));
        assert_eq!(c.protocol_of(1), Uwsgi);
        assert_eq!(c.protocol_of(9), Http);
        assert!(c.uwsgi_allows(Some("10.1.2.3:1".parse().unwrap())));
        assert!(!c.uwsgi_allows(Some("11.0.0.1:1".parse().unwrap())));
        assert!(c.uwsgi_allows(Some("[2001:db8::5]:1".parse().unwrap())));
        assert!(!c.uwsgi_allows(Some("127.0.0.1:1".parse().unwrap())));
        // The same strings in a config file, and back through the worker's TOML.
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.bind, c.bind);
        assert_eq!(back.uwsgi_allow_from, c.uwsgi_allow_from);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "bind = [\"uwsgi://127.0.0.1:3031\"]\nuwsgi_allow_from = [\"*\"]\n",
        )
        .unwrap();
        let c = resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.bind, vec![Bind::uwsgi("127.0.0.1:3031".parse().unwrap())]);
        assert!(c.uwsgi_allows(Some("192.0.2.1:5".parse().unwrap())));
        assert_eq!(
            "uwsgi://:3031".parse::<Bind>().unwrap(),
            Bind::uwsgi("0.0.0.0:3031".parse().unwrap())
        );
        for bad in [
            "uwsgi://",
            "uwsgi://nohost",
            "uwsgi+unix:",
            "uwsgi:/x",
            "uwsgi://unix:/x.sock",
        ] {
            let e = bad.parse::<Bind>().unwrap_err();
            assert!(!e.is_empty(), "{bad}");
        }
        for bad in ["10.0.0.0/33", "::/129", "host", ""] {
            assert!(bad.parse::<AllowFrom>().is_err(), "{bad}");
        }
    }

    #[test]
    fn gunicorn_bind_forms() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("gunicorn.conf.toml");
        std::fs::write(&path, "bind = \"127.0.0.1:8001\"\nworkers = 2\n").unwrap();
        let c = resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!(c.bind, vec!["127.0.0.1:8001".parse().unwrap()]);
        let c = resolve(&matches(&["--bind", ":8000"]), None).unwrap();
        assert_eq!(c.bind, vec!["0.0.0.0:8000".parse().unwrap()]);
        let c = resolve(&matches(&["--bind", "localhost:8000"]), None).unwrap();
        match &c.bind[..] {
            [Bind {
                addr: BindAddr::Tcp(a),
                ..
            }] => assert!(a.ip().is_loopback() && a.port() == 8000, "{a}"),
            other => panic!("{other:?}"),
        }
        let c = resolve(&matches(&["--bind", "tcp://127.0.0.1:8002"]), None).unwrap();
        assert_eq!(c.bind, vec!["127.0.0.1:8002".parse().unwrap()]);
        let back: ServeConfig = toml::from_str(&c.to_toml()).unwrap();
        assert_eq!(back.bind, c.bind, "workers read the list form back");
        for bad in ["localhost", "host:port", ":99999", "[::1:8000"] {
            assert!(bad.parse::<BindAddr>().is_err(), "{bad}");
        }
    }

    #[test]
    fn file_errors_name_key_file_and_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        for (text, line, key) in [
            ("backlog = 64\nworkers = \"four\"\n", 2, "workers"),
            ("# comment\n\nworkers = 0\n", 3, "workers"),
            ("bind = \"nowhere\"\n", 1, "bind"),
            ("threads = 2\nkeepalive = -1.0\n", 2, "keepalive"),
            // Named as written, not rewritten with dashes.
            ("graceful_timeout = \"x\"\n", 1, "graceful_timeout"),
            ("body-min-rate = -1\n", 1, "body-min-rate"),
            ("x = 1\nwrokers = 3\n", 1, "x"),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = resolve(&matches(&[]), Some(&path)).unwrap_err().to_string();
            assert!(e.contains("c10k.toml"), "{text:?}: {e}");
            assert!(e.contains(&format!("line {line}")), "{text:?}: {e}");
            assert!(e.contains(&format!("`{key}`")), "{text:?}: {e}");
        }
        std::fs::write(&path, "workers = [\n").unwrap();
        let e = resolve(&matches(&[]), Some(&path)).unwrap_err().to_string();
        assert!(e.contains("c10k.toml") && e.contains("line"), "{e}");
        // A value the command line overrides is not the file's to blame.
        std::fs::write(&path, "workers = 0\n").unwrap();
        let c = resolve(&matches(&["--workers", "2"]), Some(&path)).unwrap();
        assert_eq!(c.workers, 2);
    }

    /// A TOML file takes the values gunicorn's validators take (gunicorn_values): numbers and
    /// booleans as strings, a comma-separated string for a list; and gunicorn's defaults of
    /// settings c10k refuses, written out, ask for nothing, as in a gunicorn.conf.py. Before,
    /// `workers = "4"` was "invalid type: string \"4\", expected usize", and
    /// `preload_app = false` was refused as --preload (by `c10k serve`; here it was an unknown key).
    #[test]
    fn toml_takes_gunicorns_values() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("c10k.toml");
        std::fs::write(
            &path,
            "workers = \"4\"\nthreads = \" 2 \"\ntimeout = \"45\"\nbacklog = \"0x40\"\n\
             max_requests = \"1_000\"\nreuse_port = \"True\"\n\
             forwarded_allow_ips = \"10.0.0.1, 10.0.0.2\"\nspew = false\n\
             daemon = \"false\"\nlogconfig_dict = {}\n\
             [secure_scheme_headers]\nX-FORWARDED-PROTOCOL = \"ssl\"\n\
             X-FORWARDED-PROTO = \"https\"\nX-FORWARDED-SSL = \"on\"\n",
        )
        .unwrap();
        let c = resolve(&matches(&[]), Some(&path)).unwrap();
        assert_eq!((c.workers, c.threads, c.backlog), (4, 2, 64));
        assert_eq!(
            (c.timeout, c.max_requests, c.reuse_port),
            (45.0, 1000, true)
        );
        assert_eq!(
            c.forwarded_allow_ips,
            vec![
                "10.0.0.1".parse::<AllowFrom>().unwrap(),
                "10.0.0.2".parse().unwrap()
            ]
        );
        let file = ConfigFile::read(&path).unwrap();
        for dropped in ["spew", "daemon", "logconfig_dict", "secure_scheme_headers"] {
            assert!(!file.contains(dropped), "{dropped}");
        }
        // What gunicorn refuses too is refused, naming the file, line and key, what was given
        // and what is expected.
        for (text, needle) in [
            (
                "backlog = 64\nworkers = \"four\"\n",
                "c10k.toml: line 2, key `workers`: \"four\" is not a whole number: an int, or a \
                 str that Python's int(value, 0) reads",
            ),
            (
                "workers = \"-1\"\n",
                "c10k.toml: line 1, key `workers`: \"-1\" is -1: must not be negative",
            ),
            (
                "max-requests = -1\n",
                "c10k.toml: line 1, key `max-requests`: -1: must not be negative",
            ),
            (
                "reuse_port = \"yes\"\n",
                "c10k.toml: line 1, key `reuse_port`: \"yes\" is not a boolean: true or false",
            ),
            (
                "workers = \"0\"\n",
                "c10k.toml: line 1, key `workers`: must be at least 1",
            ),
        ] {
            std::fs::write(&path, text).unwrap();
            let e = resolve(&matches(&[]), Some(&path)).unwrap_err().to_string();
            assert!(e.contains(needle), "{text:?}: {e}");
        }
    }

    #[test]
    fn cli_rejects_bad_values() {
        for args in [
            &["--workers", "0"][..],
            &["--worker-class", "fork"],
            &["--keepalive", "-1"],
            &["--body-min-rate", "-1"],
            &["--body-min-rate", "0.5"],
            &["--bind", "nonsense"],
            &["--bind", "uwsgi://nonsense"],
            &["--uwsgi-allow-from", "nonsense"],
        ] {
            let mut argv = vec!["serve"];
            argv.extend_from_slice(args);
            assert!(
                Cli::command().try_get_matches_from(argv).is_err(),
                "{args:?}"
            );
        }
    }
}
