//! [`UsageError`]: a refused plan or command line, the one usage error of every `c10k` command.

/// A refused plan or command line; the binary exits 2 with this message. The one usage error of
/// every `c10k` command: `c10k lab` and `c10k serve` raise it too (this is the lowest crate
/// that all of them depend on).
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct UsageError(String);

impl UsageError {
    pub fn new(msg: impl Into<String>) -> UsageError {
        UsageError(msg.into())
    }
}
