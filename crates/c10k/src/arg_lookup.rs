//! Looking up one of a clap command's arguments by how it is spelled on a command line (`--name`
//! or an alias, `-c`), and whether it takes a value: shared by the `GUNICORN_CMD_ARGS` splice
//! (`cmd_args`) and the filter of gunicorn's flags given at their default (`gunicorn_defaults`),
//! which both walk raw arguments before clap parses them.

use clap::{Arg, Command};

/// The argument spelled `--name` (or one of its aliases).
pub(crate) fn find_long<'a>(cmd: &'a Command, name: &str) -> Option<&'a Arg> {
    cmd.get_arguments().find(|a| {
        a.get_long() == Some(name)
            || a.get_all_aliases()
                .is_some_and(|aliases| aliases.contains(&name))
    })
}

/// The argument spelled `-c` (or one of its short aliases).
pub(crate) fn find_short(cmd: &Command, c: char) -> Option<&Arg> {
    cmd.get_arguments().find(|a| {
        a.get_short() == Some(c)
            || a.get_all_short_aliases()
                .is_some_and(|aliases| aliases.contains(&c))
    })
}

/// Whether the argument takes a value (`--workers 4`), not a switch (`--reload`).
pub(crate) fn takes_value(arg: &Arg) -> bool {
    arg.get_action().takes_values()
}
