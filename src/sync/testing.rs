//! Manifest entries for the unit tests of `manifest`, `diff` and `tree`.

use super::manifest::{Entry, Kind, RelPath, Time};

pub fn p(s: &str) -> RelPath {
    RelPath::new(s.as_bytes()).unwrap()
}

/// An entry of `kind` owned by asterisk, mode 0644, a fixed mtime.
pub fn entry(kind: Kind) -> Entry {
    Entry {
        kind,
        mode: 0o644,
        uid: 0,
        gid: 0,
        user: Some("asterisk".into()),
        group: Some("asterisk".into()),
        mtime: Time::new(1_700_000_000, 0),
        ctime: Time::new(1_700_000_000, 0),
        dev: 1,
        ino: 1,
        racy: false,
        placed: false,
    }
}

/// A 10-byte file whose content is told by `n`.
pub fn file(n: u8) -> Entry {
    entry(Kind::File {
        size: 10,
        hash: [n; 32],
    })
}

pub fn dir() -> Entry {
    entry(Kind::Dir)
}
