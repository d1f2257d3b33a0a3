//! gunicorn's `GUNICORN_CMD_ARGS`: extra `serve` flags in an environment variable, read as
//! gunicorn reads them.
//!
//! gunicorn (`app/base.py`, `load_config`) splits the value with `shlex.split`, parses it with
//! the command line's own parser, and applies it after the config file and before the real
//! command line; so a setting given in both takes the command line's value, whole (a `-b` on the
//! command line replaces every `-b` of the variable instead of adding to them). The design choice
//! here: the variable's tokens are spliced into the arguments right after `serve`, minus every
//! flag (and the APP_MODULE) that the real command line also gives, and clap parses the result
//! once. They therefore rank as command-line flags — above `C10K_*` variables and the `--config`
//! file — yet below the real command line, and clap's own checks and messages apply to them.
//! Telling which tokens belong to which flag is a short walk over clap's definition of the
//! flags (long and short names, aliases, whether a value follows).

use std::ffi::OsString;
use std::ops::Range;

use clap::Command;

use c10k_bench::UsageError;

use crate::arg_lookup::{find_long, find_short, takes_value};

pub const VAR: &str = "GUNICORN_CMD_ARGS";

/// The arguments to parse, and what was taken from the variable (for the log).
pub struct Spliced {
    pub args: Vec<OsString>,
    /// The variable's flags and APP_MODULE that were used.
    pub used: Vec<String>,
    /// The variable's flags (and APP_MODULE) that the command line overrode.
    pub overridden: Vec<String>,
    /// The variable's gunicorn flags at gunicorn's default of a setting c10k lacks
    /// (`--protocol http`), left out (see `gunicorn_defaults`).
    pub at_default: Vec<String>,
}

/// What a run of tokens holds: flags (by clap id; `None` for a flag clap does not know, which
/// clap then reports) and positional arguments.
#[derive(Debug, PartialEq)]
enum Item {
    Flag(Option<String>, Range<usize>),
    Positional(usize),
    /// A `--`: everything after it is positional.
    DoubleDash(usize),
}

/// Splits `tokens` into flags (with their values) and positionals, as clap would, stopping at
/// the first positional when `stop_at_positional` (the subcommand's name, at the top level).
fn items(cmd: &Command, tokens: &[String], stop_at_positional: bool) -> Vec<Item> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let t = tokens[i].as_str();
        let start = i;
        i += 1;
        if t == "--" {
            out.push(Item::DoubleDash(start));
            out.extend((i..tokens.len()).map(Item::Positional));
            break;
        }
        if let Some(long) = t.strip_prefix("--") {
            let (name, inline) = match long.split_once('=') {
                Some((name, _)) => (name, true),
                None => (long, false),
            };
            let arg = find_long(cmd, name);
            if arg.is_some_and(takes_value) && !inline && i < tokens.len() {
                i += 1;
            }
            out.push(Item::Flag(arg.map(|a| a.get_id().to_string()), start..i));
        } else if let Some(shorts) = t.strip_prefix('-').filter(|s| !s.is_empty()) {
            // `-w4`, `-w 4`, `-w=4`, or a cluster of switches (`-Rx`): the first short that
            // takes a value takes the rest of the token, or the next token.
            let mut id = None;
            for (at, c) in shorts.char_indices() {
                let arg = find_short(cmd, c);
                id = arg.map(|a| a.get_id().to_string());
                if arg.is_some_and(takes_value) {
                    if at + c.len_utf8() == shorts.len() && i < tokens.len() {
                        i += 1;
                    }
                    break;
                }
                if arg.is_none() {
                    break;
                }
            }
            out.push(Item::Flag(id, start..i));
        } else if stop_at_positional {
            out.push(Item::Positional(start));
            break;
        } else {
            out.push(Item::Positional(start));
        }
    }
    out
}

/// A flag and its value as the start-up log shows them: the values of `--env`, `--database`
/// (a URL with a password) and `--admin-token` as `***`.
fn for_log(id: Option<&str>, words: &[String]) -> String {
    if !matches!(id, Some("env" | "database" | "admin_token")) {
        return words.join(" ");
    }
    let flag = &words[0];
    if words.len() > 1 {
        format!("{flag} ***")
    } else if let Some((name, _)) = flag.split_once('=').filter(|_| flag.starts_with("--")) {
        format!("{name}=***")
    } else {
        // `-eKEY=VALUE`: the short flag, then the value.
        format!("{} ***", flag.chars().take(2).collect::<String>())
    }
}

fn flag_ids(items: &[Item]) -> Vec<&str> {
    items
        .iter()
        .filter_map(|item| match item {
            Item::Flag(Some(id), _) => Some(id.as_str()),
            _ => None,
        })
        .collect()
}

/// The command with every `env = "C10K_..."` turned off: the variable's flags are checked alone,
/// so that an error in a `C10K_*` variable is not blamed on it.
fn without_env(cmd: Command) -> Command {
    cmd.mut_args(|a| a.env(None))
        .mut_subcommand("serve", |s| s.mut_args(|a| a.env(None)))
}

fn usage(value: &str, problem: impl std::fmt::Display) -> anyhow::Error {
    UsageError::new(format!(
        "{VAR}={value:?}: {problem} (it holds extra `c10k serve` flags, as gunicorn's does)"
    ))
    .into()
}

/// `args` (the process's arguments) with the variable's flags spliced in, if the subcommand is
/// `serve` and the variable is set; `Ok(None)` otherwise. A value that cannot be split (an
/// unbalanced quote), or that holds a flag c10k does not take or refuses, is a usage error
/// (exit status 2) naming the variable.
pub fn splice(
    cli: &Command,
    args: &[OsString],
    value: Option<OsString>,
) -> anyhow::Result<Option<Spliced>> {
    let Some(value) = value else {
        return Ok(None);
    };
    let text = value.to_string_lossy();
    let Some(tokens) = shlex::split(&text) else {
        return Err(usage(
            &text,
            "cannot be split into arguments (an unbalanced quote, or a \
                                  trailing backslash)",
        ));
    };
    if value.to_str().is_none() {
        return Err(usage(&text, "is not valid UTF-8"));
    }
    if tokens.is_empty() {
        return Ok(None);
    }
    let mut cmd = cli.clone();
    cmd.build();
    let argv: Vec<String> = args
        .iter()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    let Some(sub_at) = serve_at(&cmd, &argv) else {
        return Ok(None);
    };
    // The global flags before the subcommand count as the command line's too.
    let top = items(&cmd, &argv[1..sub_at], false);
    let Some(serve) = cmd.find_subcommand("serve") else {
        return Ok(None);
    };
    // gunicorn's flags at the default of a setting c10k lacks ask for nothing: left out before
    // anything checks the variable.
    let (tokens, at_default) = crate::gunicorn_defaults::drop_default_flags(
        serve,
        &tokens.iter().map(OsString::from).collect::<Vec<_>>(),
    );
    let tokens: Vec<String> = tokens
        .iter()
        .map(|t| t.to_string_lossy().into_owned())
        .collect();

    // The variable alone first, so that its mistakes are reported as its own.
    let alone: Vec<OsString> = ["c10k", "serve"]
        .into_iter()
        .map(OsString::from)
        .chain(tokens.iter().map(OsString::from))
        .collect();
    if let Some(msg) = crate::gunicorn::worker_class_arg(&alone)
        .as_deref()
        .and_then(crate::gunicorn::refuse_worker_class)
    {
        return Err(usage(&text, msg));
    }
    match without_env(cli.clone()).try_get_matches_from(&alone) {
        Ok(matches) => {
            if let Some(msg) = matches
                .subcommand_matches("serve")
                .and_then(crate::gunicorn::refuse)
            {
                return Err(usage(&text, msg));
            }
        }
        // --help or --version in the variable: clap shows it when the whole line is parsed.
        Err(e)
            if matches!(
                e.kind(),
                clap::error::ErrorKind::DisplayHelp | clap::error::ErrorKind::DisplayVersion
            ) => {}
        Err(e) => {
            let rendered = e.render().to_string();
            let first = rendered.lines().next().unwrap_or_default();
            return Err(usage(&text, first.trim_start_matches("error: ")));
        }
    }

    let real = items(serve, &argv[sub_at + 1..], false);
    let mut given = flag_ids(&top);
    given.extend(flag_ids(&real));
    let real_has_positional = real.iter().any(|i| matches!(i, Item::Positional(_)));
    let real_has_dash = real.iter().any(|i| matches!(i, Item::DoubleDash(_)));

    let mut flags = Vec::new();
    let mut positionals = Vec::new();
    let (mut used, mut overridden) = (Vec::new(), Vec::new());
    for item in items(serve, &tokens, false) {
        match item {
            Item::Flag(id, range) => {
                let words = tokens[range].to_vec();
                let shown = for_log(id.as_deref(), &words);
                if id.as_deref().is_some_and(|id| given.contains(&id)) {
                    overridden.push(shown);
                } else {
                    used.push(shown);
                    flags.extend(words);
                }
            }
            Item::Positional(at) if real_has_positional => overridden.push(tokens[at].clone()),
            Item::Positional(at) => {
                used.push(tokens[at].clone());
                positionals.push(tokens[at].clone());
            }
            Item::DoubleDash(_) => {}
        }
    }

    let mut out: Vec<OsString> = args[..=sub_at].to_vec();
    out.extend(flags.into_iter().map(OsString::from));
    out.extend(args[sub_at + 1..].iter().cloned());
    if !positionals.is_empty() {
        if !real_has_dash {
            out.push("--".into());
        }
        out.extend(positionals.into_iter().map(OsString::from));
    }
    Ok(Some(Spliced {
        args: out,
        used,
        overridden,
        at_default,
    }))
}

/// Where `serve` is in `argv` (the process's arguments, the program first), if it is the
/// subcommand: after the global flags and their values.
pub(crate) fn serve_at(cmd: &Command, argv: &[String]) -> Option<usize> {
    let top = items(cmd, argv.get(1..).unwrap_or_default(), true);
    let Some(&Item::Positional(sub_at)) = top.last() else {
        return None;
    };
    let sub_at = sub_at + 1;
    (argv[sub_at] == "serve").then_some(sub_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn run(value: &str, args: &[&str]) -> anyhow::Result<Option<Spliced>> {
        let args: Vec<OsString> = args.iter().map(OsString::from).collect();
        splice(&crate::cli::Cli::command(), &args, Some(value.into()))
    }

    fn spliced(value: &str, args: &[&str]) -> Vec<String> {
        run(value, args)
            .unwrap()
            .unwrap()
            .args
            .iter()
            .map(|a| a.to_string_lossy().into_owned())
            .collect()
    }

    #[test]
    fn flags_go_after_serve_and_the_command_line_wins_whole() {
        assert_eq!(
            spliced(
                "-w 3 --bind=127.0.0.1:1 -b 127.0.0.1:2 --timeout 5 -e A=1",
                &[
                    "c10k",
                    "--log-level",
                    "debug",
                    "serve",
                    "-b",
                    "127.0.0.1:3",
                    "-t7"
                ]
            ),
            [
                "c10k",
                "--log-level",
                "debug",
                "serve",
                "-w",
                "3",
                "-e",
                "A=1",
                "-b",
                "127.0.0.1:3",
                "-t7"
            ]
        );
    }

    #[test]
    fn aliases_global_flags_and_the_app() {
        let out = run(
            "--keep-alive 3 --log-level warning 'app:create(\"a b\")'",
            &["c10k", "serve", "--keepalive", "4", "--log-level", "info"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(out.used, ["app:create(\"a b\")"]);
        assert_eq!(out.overridden, ["--keep-alive 3", "--log-level warning"]);
        let args: Vec<_> = out.args.iter().map(|a| a.to_str().unwrap()).collect();
        assert_eq!(
            args,
            [
                "c10k",
                "serve",
                "--keepalive",
                "4",
                "--log-level",
                "info",
                "--",
                "app:create(\"a b\")"
            ]
        );
        // The command line's APP_MODULE wins.
        let out = run("a:app -w2", &["c10k", "serve", "b:app"])
            .unwrap()
            .unwrap();
        assert_eq!(out.overridden, ["a:app"]);
        assert_eq!(out.used, ["-w2"]);
        // Secrets stay out of the log line.
        let out = run(
            "-e K=v --env=K2=v -eK3=v --database mysql://u:pw@h/db --admin-token t",
            &["c10k", "serve"],
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            out.used,
            [
                "-e ***",
                "--env=***",
                "-e ***",
                "--database ***",
                "--admin-token ***"
            ]
        );
        assert!(out.args.iter().any(|a| a == "mysql://u:pw@h/db"));
    }

    #[test]
    fn other_subcommands_and_an_empty_value_are_left_alone() {
        assert!(run("-w 3", &["c10k", "bench", "-n", "1"])
            .unwrap()
            .is_none());
        assert!(run("  ", &["c10k", "serve"]).unwrap().is_none());
    }

    #[test]
    fn mistakes_name_the_variable() {
        for (value, problem) in [
            ("--bind '127.0.0.1:1", "cannot be split"),
            ("--no-such-flag", "unexpected argument"),
            ("--workers many", "invalid value"),
            ("--daemon", "--daemon:"),
            ("-k uvicorn.workers.UvicornWorker", "ASGI"),
        ] {
            let err = run(value, &["c10k", "serve"]).err().unwrap().to_string();
            assert!(err.starts_with("GUNICORN_CMD_ARGS="), "{err}");
            assert!(err.contains(problem), "{value}: {err}");
        }
    }
}
