//! What `SIGHUP` does to the configuration, after gunicorn's `Arbiter.reload`: the binary builds
//! the configuration again through its [`Reload`] hook (c10k's re-reads the `--config` file over
//! the command line and environment the master was started with) and the master takes the
//! result for every worker it starts from then on.
//!
//! The design choice: a reload is all or nothing, decided before anything changes. A
//! configuration that does not load, or that the master could not run, is logged and changes
//! nothing — the old configuration and workers serve on, as nginx's `-s reload` does (gunicorn's
//! master exits instead). Changed listening addresses are opened again (see `rebind`), and one
//! that cannot be opened fails the reload the same way. A few settings belong to what the master
//! set up once at start (the admin listener, the pid file, the workers' user): a change to one of
//! them is logged with what it needs, and the running value is kept.

use std::collections::BTreeSet;

use anyhow::Context;

use crate::config::ServeConfig;

/// What a [`Reload`] hook returns: the configuration built again, and what the binary's own
/// part of it needs to reach the workers.
pub struct Reloaded {
    pub config: ServeConfig,
    /// Environment variables for every worker started from now on, over the master's own: the
    /// binary's way to hand its workers the settings it read again (c10k's: the new text of the
    /// `--config` file). Replaces the previous reload's.
    pub worker_env: Vec<(String, String)>,
}

/// Builds the configuration again, on `SIGHUP`; an error leaves everything as it was. Called
/// in the master's single thread.
pub type Reload = Box<dyn FnMut() -> anyhow::Result<Reloaded>>;

/// Where a reloaded configuration is going: what the master keeps, and what changed.
#[derive(Debug)]
pub(crate) struct Merged {
    pub config: ServeConfig,
    /// "pid (needs a restart (USR2))": settings changed in the new configuration that the
    /// running master keeps.
    pub kept: Vec<String>,
    /// The listeners are to be opened again (see `rebind`): `bind`, `backlog`, `reuse-port` or
    /// `umask` changed.
    pub sockets: bool,
    /// The new `bind` as the file gives it (before a `:0` has a port), when it changed.
    pub given_bind: Option<Vec<crate::config::Bind>>,
    /// "workers = 4", "access-log (unset)": what the new workers get that the old ones did not.
    pub changed: Vec<String>,
}

/// What a `SIGUSR2` upgrade sets up again: its new master reads the configuration afresh.
const USR2: &str = "needs a restart (USR2)";

/// `new` as the running master can take it: the settings it cannot change copied from
/// `running` (each change named in `kept`, compared with `as_given`, the configuration as it was
/// loaded before inherited sockets rewrote its addresses), and checked as a start checks them.
/// An unchanged `bind` stays the running one (with the addresses inherited sockets have).
pub(crate) fn merge(
    as_given: &ServeConfig,
    running: &ServeConfig,
    new: ServeConfig,
) -> anyhow::Result<Merged> {
    let mut new = new.effective_class();
    let mut kept = Vec::new();
    macro_rules! keep {
        ($needs:expr; $($field:ident),+) => {$(
            if new.$field != as_given.$field {
                kept.push(format!("{} ({})", stringify!($field).replace('_', "-"), $needs));
            }
            new.$field = running.$field.clone();
        )+};
    }
    keep!(USR2; user, group, initgroups, pid, admin, admin_token);
    let sockets = new.bind != as_given.bind
        || crate::rebind::Shape::of(&new) != crate::rebind::Shape::of(as_given);
    let given_bind = (new.bind != as_given.bind).then(|| new.bind.clone());
    if given_bind.is_none() {
        new.bind = running.bind.clone();
        new.bind_chosen = running.bind_chosen;
    }
    new.admin_chosen = running.admin_chosen;
    new.validate()?;
    if new.access_log != running.access_log {
        check_access_log(&new)?;
    }
    let changed = changes(running, &new);
    Ok(Merged {
        config: new,
        kept,
        sockets,
        given_bind,
        changed,
    })
}

/// As at start: every worker opens `--access-log`; a file that cannot be opened is the reload's
/// error, once, rather than each new worker's. Given to the workers' user, as at start.
fn check_access_log(config: &ServeConfig) -> anyhow::Result<()> {
    let Some(path) = config.access_log.as_deref().filter(|p| *p != "-") else {
        return Ok(());
    };
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .with_context(|| format!("cannot open --access-log {path}"))?;
    let owner = crate::owner::resolve(config.user.as_deref(), config.group.as_deref())
        .map_err(|(flag, message)| anyhow::anyhow!("{flag}: {message}"))?;
    if let Some(owner) = &owner {
        crate::owner::give(path.as_ref(), owner)
            .with_context(|| format!("--user: cannot give --access-log {path} to it"))?;
    }
    Ok(())
}

/// The settings whose value differs, as `key = value` in the new configuration (`key (unset)`
/// for one it no longer has), in key order. The admin token is never serialised, so never shown.
fn changes(old: &ServeConfig, new: &ServeConfig) -> Vec<String> {
    let table = |c: &ServeConfig| toml::Table::try_from(c).unwrap_or_default();
    let (old, new) = (table(old), table(new));
    let keys: BTreeSet<&String> = old.keys().chain(new.keys()).collect();
    keys.into_iter()
        .filter(|k| old.get(*k) != new.get(*k))
        .map(|k| match new.get(k) {
            Some(v) => format!("{k} = {v}"),
            None => format!("{k} (unset)"),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn workers_change_and_a_changed_bind_is_taken() {
        let as_given = ServeConfig::default();
        let mut running = as_given.clone();
        // As a systemd or USR2 hand-over rewrites it: not a change of the configuration.
        running.bind = vec!["127.0.0.1:41234".parse().unwrap()];
        let mut new = as_given.clone();
        new.workers = 3;
        new.timeout = 7.0;
        let m = merge(&as_given, &running, new).unwrap();
        assert_eq!(m.config.workers, 3);
        assert_eq!(m.config.bind, running.bind);
        assert!(m.kept.is_empty(), "{:?}", m.kept);
        assert_eq!(m.changed, ["timeout = 7.0", "workers = 3"]);

        assert!(!m.sockets);

        let mut new = as_given.clone();
        new.bind = vec!["127.0.0.1:9000".parse().unwrap()];
        new.pid = Some("/tmp/x.pid".into());
        new.access_log = Some("-".into());
        let m = merge(&as_given, &running, new.clone()).unwrap();
        // A new address is the new workers', opened by the master (see `rebind`).
        assert_eq!(m.config.bind, new.bind);
        assert!(m.sockets);
        assert_eq!(m.given_bind, Some(new.bind.clone()));
        assert_eq!(m.config.pid, None);
        assert_eq!(m.kept, ["pid (needs a restart (USR2))"]);
        assert_eq!(
            m.changed,
            ["access-log = \"-\"", "bind = [\"127.0.0.1:9000\"]"]
        );

        // Only the backlog: the running addresses, shaped anew.
        let mut new = as_given.clone();
        new.backlog = 64;
        let m = merge(&as_given, &running, new).unwrap();
        assert_eq!(m.config.bind, running.bind);
        assert!(m.sockets && m.given_bind.is_none());
    }

    #[test]
    fn an_invalid_configuration_is_refused_and_sync_with_threads_is_gthread() {
        let c = ServeConfig::default();
        let mut new = c.clone();
        new.access_log_format = Some("%(h)s".into());
        let e = merge(&c, &c, new).unwrap_err().to_string();
        assert!(e.contains("--access-log-format"), "{e}");
        let mut new = c.clone();
        new.worker_class = crate::config::WorkerClass::Sync;
        new.threads = 4;
        let m = merge(&c, &c, new).unwrap();
        assert_eq!(m.config.worker_class, crate::config::WorkerClass::Gthread);
    }
}
