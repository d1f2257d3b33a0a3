//! `--reload-engine poll`: stats every watched file on each look and names the first whose
//! modification time, size or inode differs from what it was when first seen.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;

/// What a file looked like: modification time (ns), size, inode.
type Stamp = (i64, i64, u64, u64);

/// The poll engine: each file's [`Stamp`] as first seen.
#[derive(Default)]
pub(super) struct Poll {
    seen: HashMap<PathBuf, Stamp>,
}

impl Poll {
    /// The first file that changed since it was first seen. A file that cannot be read (being
    /// saved, or deleted) is skipped, as in gunicorn; a file seen for the first time is only
    /// recorded: it is an edit that reloads, not a creation.
    pub(super) fn check(&mut self, files: &[PathBuf]) -> Option<PathBuf> {
        for file in files {
            let Ok(meta) = std::fs::metadata(file) else {
                continue;
            };
            let stamp = (meta.mtime(), meta.mtime_nsec(), meta.size(), meta.ino());
            match self.seen.get(file) {
                None => {
                    self.seen.insert(file.clone(), stamp);
                }
                Some(old) if *old != stamp => return Some(file.clone()),
                Some(_) => {}
            }
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reload::bump;
    use std::time::Duration;

    #[test]
    fn poll_reloads_on_an_edit_not_on_a_first_sight() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.py");
        let b = dir.path().join("b.py");
        std::fs::write(&a, "x = 1\n").unwrap();
        let mut p = Poll::default();
        let files = vec![a.clone(), b.clone()];
        assert_eq!(p.check(&files), None);
        // Created after the first look: recorded, not a change.
        std::fs::write(&b, "y = 1\n").unwrap();
        assert_eq!(p.check(&files), None);
        assert_eq!(p.check(&files), None);
        bump(&a, 5);
        assert_eq!(p.check(&files), Some(a.clone()));
        // Replaced by a file with an older time still counts (a checkout, a restored copy).
        let mut p = Poll::default();
        assert_eq!(p.check(&files), None);
        let f = std::fs::File::options().write(true).open(&b).unwrap();
        f.set_modified(std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000))
            .unwrap();
        assert_eq!(p.check(&files), Some(b));
    }
}
