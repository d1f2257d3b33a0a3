//! The `c10k` binary: parse the command line, run it, map the outcome to an exit code.

mod arg_lookup;
mod builtin;
mod cli;
mod cmd_args;
mod gunicorn;
mod gunicorn_defaults;
mod gunicorn_values;
mod logging;
mod pyconfig;
mod python;
mod serve_settings;
mod settings;
mod status;

use std::process::ExitCode;

fn main() -> ExitCode {
    match cli::parse().and_then(cli::run) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            // Writing to a closed pipe (`c10k ... | head`) is not a failure.
            if let Some(io) = err.root_cause().downcast_ref::<std::io::Error>() {
                if io.kind() == std::io::ErrorKind::BrokenPipe {
                    return ExitCode::SUCCESS;
                }
            }
            eprintln!("c10k: {err:#}");
            ExitCode::from(cli::exit_code(&err))
        }
    }
}
