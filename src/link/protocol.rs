//! The messages of the link protocol, and the handshake that starts it.
//!
//! See the [module overview](super) for the sequence. In short: the server
//! (`sip-ha serve`) speaks first with [`GREETING`] and its [`Hello`]; the
//! client checks both, answers with its own `Hello`, then sends [`Request`]s,
//! each answered by one [`Response`].

use super::frame::{self, FrameError};
use crate::sync::chunk::{Piece, Signature};
use crate::sync::receive::FileMeta;
use crate::sync::{Child, Entry, RelPath};
use serde::{Deserialize, Serialize};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The version of the messages below. Bump it on any change to an existing
/// message (3: a signature without the whole-file hash; 4: a
/// [`Response::Files`] reports any number of earlier files; 5: a
/// [`Request::SyncRoot`] carries the push's token and what the receiver
/// may trust, and [`Response::SyncDone`] no root hash), and when a new
/// variant is one a sync cannot do without (2: [`Request::Files`]), so
/// that an old peer is named in the handshake with its fix (`sip-ha -c`)
/// instead of failing mid-sync. A variant the sender can do without may be
/// added at the end without a bump (an older peer answers it with
/// [`Response::Error`]).
pub const PROTOCOL_VERSION: u32 = 5;

/// The first bytes `sip-ha serve` writes, before any frame. Frozen: every
/// version of sip-ha starts this way, so that stray shell output and version
/// differences are told apart.
pub const GREETING: &[u8; 8] = b"SIPHA01\n";

/// The magic inside [`Hello`]. Frozen.
pub const HELLO_MAGIC: [u8; 8] = *b"SIPHA\0\0\x01";

/// The software version sent in [`Hello`] and [`StatusReply`].
pub const SOFTWARE_VERSION: &str = env!("CARGO_PKG_VERSION");

/// The first frame each side sends. Its layout is frozen for all versions:
/// only its `version` value changes.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Hello {
    pub magic: [u8; 8],
    pub version: u32,
    /// The sender's software version, for messages.
    pub software: String,
}

impl Hello {
    /// This build's greeting.
    pub fn ours() -> Hello {
        Hello {
            magic: HELLO_MAGIC,
            version: PROTOCOL_VERSION,
            software: SOFTWARE_VERSION.to_string(),
        }
    }
}

/// What the client asks. New requests go at the end (see the
/// [module overview](super)).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Request {
    /// "What do you say about yourself?": the peer probe.
    Status,
    /// "Run a round now": sent right after this node gave the address up,
    /// so the peer takes it without waiting for its next interval.
    Wake,
    /// Start replacing one of the peer's own files (`sip-ha -c`): `size`
    /// bytes follow in [`InstallChunk`](Request::InstallChunk)s, then
    /// [`InstallCommit`](Request::InstallCommit). `mode` is the permission
    /// bits for the binary (the config is always 0600). Answered with
    /// [`Response::Ok`]; a new `InstallBegin` abandons a transfer in
    /// progress. See [`install`](super::install).
    InstallBegin {
        target: InstallTarget,
        size: u64,
        mode: u32,
    },
    /// The next bytes of the file, at most [`MAX_CHUNK`](super::frame::MAX_CHUNK).
    /// Answered with [`Response::Ok`]; an error abandons the transfer.
    InstallChunk(#[serde(with = "serde_bytes")] Vec<u8>),
    /// All bytes sent: check their BLAKE3 hash and put the file in place.
    /// Answered with [`Response::Installed`].
    InstallCommit { blake3: [u8; 32] },
    /// Abandon the transfer in progress (if any): the old file stays.
    /// Answered with [`Response::Ok`].
    InstallAbort,

    // ---- Sync: the active node pushes one `[[sync.path]]` at a time (see
    // `crate::sync::session` for the receiver, `crate::sync::send` for the
    // sender). `SyncRoot` opens the session for a path; every later sync
    // request acts on the path it opened.
    /// "Scan your copy of `path` and give me its root hash." `path` is the
    /// configured path, which must be in the receiver's own `[sync]`.
    /// `verify`: hash every file (no stat shortcut). `token`: this push's
    /// (random), which the receiver keeps beside its manifest. `trust`:
    /// the token of the sender's last push of this path, when the sender's
    /// own scan came from its watch: a receiver whose manifest is from
    /// that push's session and was not left mid-write may answer from it
    /// without a scan, and read again only what `SyncSelect` asks for.
    /// Answered with [`Response::SyncRoot`].
    SyncRoot {
        path: String,
        verify: bool,
        token: u64,
        trust: Option<u64>,
    },
    /// The [`Child`] listings of these directories of the open path (one
    /// level of the tree walk). Answered with [`Response::SyncListings`].
    SyncListings { path: String, dirs: Vec<RelPath> },
    /// The receiver's manifest entries that the diff needs
    /// (`TreeDiff::select`), from the `from`-th on: answered with
    /// [`Response::SyncEntries`], a page at a time.
    SyncSelect {
        dirs: Vec<RelPath>,
        subtrees: Vec<RelPath>,
        from: u64,
        /// Single differing paths (`TreeDiff::paths`).
        paths: Vec<RelPath>,
    },
    /// Move these paths (children before parents) to the trash.
    /// Answered with [`Response::Ok`].
    SyncDelete { rels: Vec<RelPath> },
    /// Create the directory `rel` or set its metadata. [`Response::Ok`].
    SyncDir { rel: RelPath, meta: FileMeta },
    /// Make `rel` a symlink to `target`. `keep_old`: keep the receiver's
    /// version beside it as a conflict copy. [`Response::Ok`].
    SyncSymlink {
        rel: RelPath,
        target: Vec<u8>,
        meta: FileMeta,
        keep_old: Option<KeepOld>,
    },
    /// Same content (`hash`), new metadata for the file `rel`: the receiver
    /// rewrites it locally, nothing crosses the link. [`Response::Ok`].
    SyncMeta {
        rel: RelPath,
        meta: FileMeta,
        hash: [u8; 32],
    },
    /// A whole small file in one frame (at most
    /// [`MAX_CHUNK`](super::frame::MAX_CHUNK) bytes). [`Response::Ok`].
    FileWhole {
        rel: RelPath,
        meta: FileMeta,
        #[serde(with = "serde_bytes")]
        data: Vec<u8>,
        hash: [u8; 32],
        keep_old: Option<KeepOld>,
    },
    /// Start a file sent as a delta: answered with the receiver's
    /// [`Response::Signature`] of its current copy (empty if none).
    FileBegin {
        rel: RelPath,
        meta: FileMeta,
        size: u64,
        whole_hash: [u8; 32],
        keep_old: Option<KeepOld>,
    },
    /// The next pieces of the file begun (at most about 1 MiB of data).
    /// [`Response::Ok`]; an error abandons the file.
    Pieces(Vec<Piece>),
    /// All pieces sent: check the whole file's hash and put it in place.
    /// [`Response::Ok`].
    FileCommit { hash: [u8; 32] },
    /// The path is done: the receiver rescans its copy, saves its manifest,
    /// and answers [`Response::SyncDone`].
    SyncDone,
    /// Several small files, each whole, put in place together (one flush
    /// to disk for the batch instead of one per file). The receiver writes
    /// them under temp names, then puts them in place in the background
    /// while the next batches come, so its answer, [`Response::Files`], is
    /// the outcome of the files of *earlier* batches that are in place by
    /// then, oldest first: none, one batch's or several's (the receiver
    /// bounds how many it holds). After the last batch the sender sends
    /// [`Request::FilesFlush`] for the outcome of all the rest.
    Files(Vec<WholeFile>),
    /// Wait for every [`Request::Files`] batch to be in place: the outcome
    /// of each file not yet reported, oldest first, [`Response::Files`]
    /// (empty if there is none pending).
    FilesFlush,
}

/// One file of a [`Request::Files`] batch: as [`Request::FileWhole`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WholeFile {
    pub rel: RelPath,
    pub meta: FileMeta,
    /// One byte string on the wire (see `serde_bytes` in Cargo.toml).
    #[serde(with = "serde_bytes")]
    pub data: Vec<u8>,
    pub hash: [u8; 32],
    pub keep_old: Option<KeepOld>,
}

/// Keep the receiver's version of a path as
/// `NAME.sip-ha-conflict-NODE-TIME` (NODE: the receiver's name) before it
/// is replaced: both sides changed it since the last sync.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct KeepOld {
    /// When the sender decided, ms since the epoch: the TIME in the name.
    pub at_ms: u64,
}

/// Which of its own files the peer replaces on an install. The peer decides
/// the path: the client only names the kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub enum InstallTarget {
    /// The sip-ha program (`sip-ha serve` runs it).
    Binary,
    /// The configuration file `sip-ha serve` was started with.
    Config,
}

impl std::fmt::Display for InstallTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            InstallTarget::Binary => "the sip-ha program",
            InstallTarget::Config => "the configuration",
        })
    }
}

/// What the server answers, one per request. New responses go at the end.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Response {
    Status(StatusReply),
    /// The request could not be answered (not understood, or the answer
    /// could not be produced). The text is for the operator.
    Error(String),
    /// The answer to [`Request::Wake`]: whether the peer acts now (its loop
    /// was woken, or, in cron mode, a pass was started); false: it acts at
    /// its next cron pass.
    Woken(bool),
    /// The answer to [`Request::InstallCommit`]: the file is in place at
    /// `path` (on the peer); the one it replaced, if any, is kept at
    /// `previous`.
    Installed {
        path: String,
        previous: Option<String>,
    },
    /// Done, nothing to report (install steps).
    Ok,
    /// The answer to [`Request::SyncRoot`]: the receiver's tree root hash
    /// and how many regular files it has there.
    SyncRoot {
        root: [u8; 32],
        files: u64,
    },
    /// The answer to [`Request::SyncListings`], in the order asked: `None`
    /// where the receiver has no such directory.
    SyncListings(Vec<Option<Vec<Child>>>),
    /// A page of the receiver's selected manifest entries; `more`: ask
    /// again from the next index.
    SyncEntries {
        entries: Vec<(RelPath, Entry)>,
        unsettled: Vec<RelPath>,
        more: bool,
    },
    /// The answer to [`Request::FileBegin`].
    Signature(Signature),
    /// The answer to [`Request::SyncDone`]: the receiver's warnings
    /// (owners it could not set...).
    SyncDone {
        warnings: Vec<String>,
    },
    /// The answer to [`Request::Files`] and [`Request::FilesFlush`]: for
    /// each file of earlier batches not reported before (see there), oldest
    /// first, `None` when it is in place, else why not.
    Files(Vec<Option<String>>),
}

/// The peer's answer to [`Request::Status`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct StatusReply {
    /// The peer's sip-ha version.
    pub software_version: String,
    /// The cluster name in the peer's configuration, to catch a link to the
    /// wrong pair.
    pub cluster: String,
    /// The peer's self-report from its last round.
    pub report: sip_ha_core::Report,
    /// One line for humans, e.g. for the status screen.
    pub summary: String,
}

/// Why the handshake failed.
#[derive(Debug, thiserror::Error)]
pub enum HandshakeError {
    /// Something other than the greeting came first: almost always output
    /// from the remote user's shell start-up files.
    #[error(
        "the peer's shell printed something before sip-ha started: \"{0}\" — remove output from the remote user's shell start-up files (.bashrc)"
    )]
    StrayOutput(String),
    /// The stream ended before the greeting was complete; the remote command
    /// probably did not start (see its exit status and stderr).
    #[error("the peer closed the connection before sip-ha greeted (got {got} of {expected} greeting bytes)")]
    ClosedBeforeGreeting { got: usize, expected: usize },
    /// The client hung up before sending its `Hello`.
    #[error("the other side closed the connection before sending its hello")]
    ClosedBeforeHello,
    /// A `Hello` with the wrong magic.
    #[error("the other side's hello is not from sip-ha (magic {0:02x?})")]
    BadMagic([u8; 8]),
    /// The server speaks another protocol version.
    #[error(
        "peer runs sip-ha protocol {peer}, this node speaks {ours}: run `sip-ha -c` to copy this version to the peer (peer software: sip-ha {software})"
    )]
    PeerVersion {
        peer: u32,
        ours: u32,
        software: String,
    },
    /// The client speaks another protocol version.
    #[error(
        "the connecting node runs sip-ha protocol {peer} (sip-ha {software}), this node speaks {ours}: copy one version to both nodes (`sip-ha -c` on the node with the right one)"
    )]
    ClientVersion {
        peer: u32,
        ours: u32,
        software: String,
    },
    #[error("{0}")]
    Frame(#[from] FrameError),
}

/// How many characters of stray output an error message quotes.
const STRAY_SHOWN: usize = 80;

/// How long to wait for more stray output to quote, once it is clear that the
/// greeting is not coming first.
const STRAY_WAIT: Duration = Duration::from_millis(300);

/// The client's half: reads the greeting and the server's [`Hello`], checks
/// them, then sends this node's `Hello`. Returns the server's `Hello`.
///
/// Nothing is written until the greeting has been read and checked.
pub async fn client_handshake<R, W>(reader: &mut R, writer: &mut W) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    let mut first = Vec::with_capacity(GREETING.len());
    let mut buf = [0u8; 8];
    while first.len() < GREETING.len() {
        let want = GREETING.len() - first.len();
        let n = reader
            .read(&mut buf[..want])
            .await
            .map_err(FrameError::Read)?;
        if n == 0 {
            break;
        }
        first.extend_from_slice(&buf[..n]);
        if !GREETING.starts_with(&first) {
            break;
        }
    }
    if !GREETING.starts_with(&first) {
        return Err(stray_output(reader, first).await);
    }
    if first.len() < GREETING.len() {
        return Err(HandshakeError::ClosedBeforeGreeting {
            got: first.len(),
            expected: GREETING.len(),
        });
    }

    let hello: Hello = match frame::recv(reader).await? {
        Some(hello) => hello,
        None => {
            return Err(HandshakeError::ClosedBeforeGreeting {
                got: GREETING.len(),
                expected: GREETING.len() + frame::HEADER_LEN,
            })
        }
    };
    if hello.magic != HELLO_MAGIC {
        return Err(HandshakeError::BadMagic(hello.magic));
    }
    if hello.version != PROTOCOL_VERSION {
        // Tell the server why we are leaving, for its log; the error that
        // matters is ours.
        let _ = frame::send(writer, &Hello::ours()).await;
        return Err(HandshakeError::PeerVersion {
            peer: hello.version,
            ours: PROTOCOL_VERSION,
            software: hello.software,
        });
    }
    frame::send(writer, &Hello::ours()).await?;
    Ok(hello)
}

/// Reads a little more of what came instead of the greeting and builds the
/// error quoting it. If the greeting shows up after the stray text, only the
/// text before it is quoted.
async fn stray_output<R>(reader: &mut R, mut seen: Vec<u8>) -> HandshakeError
where
    R: AsyncRead + Unpin + ?Sized,
{
    let limit = STRAY_SHOWN + GREETING.len();
    let deadline = tokio::time::Instant::now() + STRAY_WAIT;
    let mut buf = [0u8; 128];
    while seen.len() < limit && find(&seen, GREETING).is_none() {
        let want = (limit - seen.len()).min(buf.len());
        match tokio::time::timeout_at(deadline, reader.read(&mut buf[..want])).await {
            Ok(Ok(n)) if n > 0 => seen.extend_from_slice(&buf[..n]),
            _ => break,
        }
    }
    if let Some(at) = find(&seen, GREETING) {
        seen.truncate(at);
    }
    HandshakeError::StrayOutput(quotable(&seen, STRAY_SHOWN))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Up to `max` characters of `bytes`, with control characters escaped
/// (`\n`, `\u{1b}`) so the text fits on one line.
pub(crate) fn printable(bytes: &[u8], max: usize) -> String {
    escaped(bytes, max, char::is_control)
}

/// Like [`printable`], also escaping `"` and `\`, for quoting inside `"..."`.
fn quotable(bytes: &[u8], max: usize) -> String {
    escaped(bytes, max, |c| c.is_control() || c == '"' || c == '\\')
}

fn escaped(bytes: &[u8], max: usize, escape: impl Fn(char) -> bool) -> String {
    let text = String::from_utf8_lossy(bytes);
    let mut out = String::new();
    for (shown, c) in text.chars().enumerate() {
        if shown == max {
            out.push('…');
            break;
        }
        if escape(c) {
            out.extend(c.escape_debug());
        } else {
            out.push(c);
        }
    }
    out
}

/// The server's half: writes the greeting and this node's [`Hello`], then
/// reads and checks the client's. Returns the client's `Hello`.
pub async fn server_handshake<R, W>(reader: &mut R, writer: &mut W) -> Result<Hello, HandshakeError>
where
    R: AsyncRead + Unpin + ?Sized,
    W: AsyncWrite + Unpin + ?Sized,
{
    writer
        .write_all(GREETING)
        .await
        .map_err(FrameError::Write)?;
    frame::send(writer, &Hello::ours()).await?;
    let hello: Hello = frame::recv(reader)
        .await?
        .ok_or(HandshakeError::ClosedBeforeHello)?;
    if hello.magic != HELLO_MAGIC {
        return Err(HandshakeError::BadMagic(hello.magic));
    }
    if hello.version != PROTOCOL_VERSION {
        return Err(HandshakeError::ClientVersion {
            peer: hello.version,
            ours: PROTOCOL_VERSION,
            software: hello.software,
        });
    }
    Ok(hello)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The frozen parts must never change: an older or newer sip-ha relies on
    /// them to report a version difference.
    #[test]
    fn frozen_hello_layout() {
        let hello = Hello {
            magic: HELLO_MAGIC,
            version: 300,
            software: "x".into(),
        };
        let bytes = frame::encode(&hello).unwrap();
        assert_eq!(bytes, b"SIPHA\0\0\x01\xac\x02\x01x");
        assert_eq!(GREETING, b"SIPHA01\n");
    }

    #[test]
    fn status_reply_round_trip() {
        let reply = Response::Status(StatusReply {
            software_version: "1.2.3".into(),
            cluster: "pbx".into(),
            report: sip_ha_core::Report {
                role: sip_ha_core::Role::Slave,
                stance: sip_ha_core::Stance::Ready,
                holds_address: false,
                health: sip_ha_core::Health::Up,
                maintenance: false,
                epoch: 42,
                active: Some(sip_ha_core::Role::Master),
            },
            summary: "standby, ready".into(),
        });
        let bytes = frame::encode(&reply).unwrap();
        assert_eq!(frame::decode::<Response>(&bytes).unwrap(), reply);
    }

    /// Existing variants keep their numbers: the install messages were
    /// added after `Wake` and `Woken`.
    #[test]
    fn install_variants_come_last() {
        assert_eq!(frame::encode(&Request::Status).unwrap(), [0]);
        assert_eq!(frame::encode(&Request::Wake).unwrap(), [1]);
        assert_eq!(
            frame::encode(&Request::InstallBegin {
                target: InstallTarget::Config,
                size: 300,
                mode: 0o600,
            })
            .unwrap(),
            [2, 1, 0xac, 0x02, 0x80, 0x03]
        );
        assert_eq!(frame::encode(&Request::InstallAbort).unwrap(), [5]);
        assert_eq!(frame::encode(&Response::Woken(true)).unwrap(), [2, 1]);
        assert_eq!(frame::encode(&Response::Ok).unwrap(), [4]);
        let chunk = Request::InstallChunk(vec![7; 1000]);
        let bytes = frame::encode(&chunk).unwrap();
        assert_eq!(bytes.len(), 1 + 2 + 1000, "bytes travel as they are");
        assert_eq!(frame::decode::<Request>(&bytes).unwrap(), chunk);
        let done = Response::Installed {
            path: "/usr/local/sbin/sip-ha".into(),
            previous: Some("/usr/local/sbin/sip-ha.prev".into()),
        };
        assert_eq!(
            frame::decode::<Response>(&frame::encode(&done).unwrap()).unwrap(),
            done
        );
    }

    /// The sync requests and responses came after the install ones.
    #[test]
    fn sync_variants_come_last() {
        assert_eq!(frame::encode(&Request::SyncDone).unwrap(), [17]);
        let root = Request::SyncRoot {
            path: "/e".into(),
            verify: true,
            token: 7,
            trust: None,
        };
        assert_eq!(frame::encode(&root).unwrap(), [6, 2, b'/', b'e', 1, 7, 0]);
        assert_eq!(
            frame::encode(&Response::SyncRoot {
                root: [0; 32],
                files: 3
            })
            .unwrap()[0],
            5
        );
    }

    #[test]
    fn printable_escapes_and_cuts() {
        assert_eq!(printable(b"Welcome!\n", 80), "Welcome!\\n");
        assert_eq!(printable(b"\x1b[1mhi", 80), "\\u{1b}[1mhi");
        assert_eq!(printable(&[b'a'; 100], 3), "aaa…");
        assert_eq!(printable(b"say \"hi\"", 80), "say \"hi\"");
        assert_eq!(quotable(b"say \"hi\"", 80), "say \\\"hi\\\"");
    }

    #[tokio::test]
    async fn stray_text_is_quoted_up_to_the_greeting() {
        let mut input: &[u8] = b"Welcome!\nSIPHA01\n\0\0\0\x05junk";
        let mut out = Vec::new();
        let err = client_handshake(&mut input, &mut out).await.unwrap_err();
        assert!(
            matches!(&err, HandshakeError::StrayOutput(s) if s == "Welcome!\\n"),
            "{err}"
        );
        assert!(out.is_empty(), "the client wrote before the greeting");
    }

    #[tokio::test]
    async fn short_stray_text_then_end() {
        let mut input: &[u8] = b"hi\n";
        let err = client_handshake(&mut input, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            matches!(&err, HandshakeError::StrayOutput(s) if s == "hi\\n"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn nothing_at_all() {
        let mut input: &[u8] = b"";
        let err = client_handshake(&mut input, &mut Vec::new())
            .await
            .unwrap_err();
        assert!(
            matches!(err, HandshakeError::ClosedBeforeGreeting { got: 0, .. }),
            "{err}"
        );
    }
}
