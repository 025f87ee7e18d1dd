//! The shipped example config (`sip-ha.toml`), ready to use in a test.

use std::path::{Path, PathBuf};
use std::process::Output;

/// The example config written into `dir`, with its state_dir moved to
/// `dir/state`. Its 192.168.0.x addresses stay: run the binary in an empty
/// network namespace (`unshare --net`) so that nothing is sent to them.
pub fn example_in(dir: &Path) -> PathBuf {
    let src = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/sip-ha.toml"))
        .expect("sip-ha.toml at the repository root");
    let state = dir.join("state");
    let src = src.replace(
        "state_dir = \"/var/lib/sip-ha\"",
        &format!("state_dir = \"{}\"", state.display()),
    );
    assert!(
        src.contains(&state.display().to_string()),
        "example config has state_dir"
    );
    let path = dir.join("sip-ha.toml");
    std::fs::write(&path, src).expect("write the config");
    path
}

/// A finished command's standard output and error, as one text.
pub fn text(o: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}
