//! A real syslog socket for tests: a Unix datagram socket in a temporary
//! directory, and a way to run a command that sees it as `/dev/log`.
//!
//! The command runs in a private mount namespace (`unshare --mount`) with a
//! fresh tmpfs on `/dev` holding `null`, `urandom` and a `log` symlink to
//! the test's socket, so glibc's `syslog(3)` writes to the test, and nothing
//! reaches the machine's own syslog.

use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

pub struct SyslogCapture {
    _dir: tempfile::TempDir,
    path: PathBuf,
    socket: UnixDatagram,
}

impl SyslogCapture {
    pub fn new() -> SyslogCapture {
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("log");
        let socket = UnixDatagram::bind(&path).expect("bind the syslog socket");
        socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("socket timeout");
        SyslogCapture {
            _dir: dir,
            path,
            socket,
        }
    }

    /// `program args...`, run so that its `/dev/log` is this socket. Add
    /// `net` to also give it an empty network namespace.
    pub fn command(&self, program: &Path, net: bool) -> Command {
        let script = format!(
            "mount --make-rprivate / && mount -t tmpfs tmpfs /dev && \
             mknod -m 666 /dev/null c 1 3 && mknod -m 666 /dev/urandom c 1 9 && \
             ln -s {} /dev/log && exec \"$@\"",
            self.path.display()
        );
        let mut c = Command::new("unshare");
        c.arg("--mount");
        if net {
            c.arg("--net");
        }
        c.args(["--", "sh", "-c", &script, "sh"]).arg(program);
        c
    }

    /// What a restart of the syslog daemon does to `/dev/log`: the socket
    /// is closed, removed and made anew at the same path. Lines sent to the
    /// old one are lost; a logger must reconnect to reach the new one.
    pub fn restart(&mut self) {
        let _ = std::fs::remove_file(&self.path);
        self.socket = UnixDatagram::bind(&self.path).expect("bind the new syslog socket");
        self.socket
            .set_read_timeout(Some(Duration::from_millis(200)))
            .expect("socket timeout");
    }

    /// Every line received so far (waits briefly for stragglers).
    pub fn lines(&self) -> Vec<String> {
        let mut out = Vec::new();
        let mut buf = vec![0u8; 65536];
        while let Ok(n) = self.socket.recv(&mut buf) {
            out.push(String::from_utf8_lossy(&buf[..n]).into_owned());
        }
        out
    }
}
