//! Content-defined chunks and deltas: how a changed file crosses the link
//! without sending what the standby already has.
//!
//! # The idea
//!
//! Cut a file into chunks at places chosen by its *content* (FastCDC, a
//! rolling "gear" hash over the bytes: a cut wherever the hash matches a
//! mask), not at fixed offsets. Inserting bytes in the middle then changes
//! only the chunk(s) around the insertion: the cut points after it are found
//! again at the same content, merely shifted. Fixed-size blocks would all
//! shift and all differ. Each chunk is named by its BLAKE3 hash.
//!
//! The exchange, for one file that differs:
//!
//! 1. The standby (receiver) computes the [`Signature`] of its old copy: the
//!    list of its chunks (offset, length, hash).
//! 2. The active server (sender) chunks its new copy with the same
//!    parameters and calls [`delta`]: each chunk whose hash is in that
//!    signature becomes [`Piece::Have`] (a 36-byte reference), every other
//!    chunk [`Piece::Data`] (the bytes). It also returns the whole-file hash
//!    of exactly what it streamed ([`DeltaStats::file_hash`]).
//! 3. The standby runs [`apply`]: it copies `Have` chunks out of its old copy
//!    (found by hash) and `Data` as is, into a new file. The file it writes
//!    into hashes what it is given; only if that equals the sender's hash
//!    does the new file replace the old one (see [`receive`](super::receive)).
//!
//! That one check of the whole result is what makes a delta safe, so it is
//! the only one: a chunk copied from an old copy that changed since its
//! signature was taken, a `Have` that names the wrong bytes, a bit flipped
//! anywhere all end as a mismatch, and the old file stays. Hashing each
//! copied chunk again, or the whole file once more inside [`apply`], would
//! add nothing to it and cost a pass of BLAKE3 over the file each (0.2 s
//! per 256 MiB here).
//!
//! An append sends the tail only; a one-byte edit sends the one chunk that
//! holds it, or two when the edit moves a cut point.
//!
//! # Chunk sizes: min 8 KiB, average 32 KiB, max 128 KiB
//!
//! * Most Asterisk configuration files are under 8 KiB: one chunk, sent
//!   whole when changed, which is what we want anyway.
//! * Voicemail, recordings and sound files run from a few hundred KiB to a
//!   few hundred MiB. A 32 KiB average gives a 256 MiB file ~8,000 chunks:
//!   a signature of ~350 KiB on the wire (44 bytes a chunk), about 0.15% of
//!   the file, while a one-byte edit costs ~32 KiB of literal data. An 8 KiB
//!   average would send a 4x larger signature for every changed file to save
//!   ~24 KiB per edit; 128 KiB would save signature bytes but cost 4x more
//!   per edit. (The field notes measured a 14-byte insertion into a 256 MiB
//!   file at one ~24 KiB chunk changed with these settings.)
//! * The 128 KiB maximum bounds every chunk, so the chunker's buffer, one
//!   [`Piece::Data`] and the receiver's copy buffer are each at most 128 KiB:
//!   memory stays at a few hundred KiB whatever the file size.
//!
//! Both sides must use the same parameters: they are constants here, and
//! [`PARAMS_VERSION`] names them so the protocol can refuse a peer that
//! chunks differently (its `Have`s would simply never match, which is
//! correct but slow).
//!
//! Files are *read* (never mmapped): Asterisk rewrites some files in place,
//! and a file truncated under an mmap kills the reader with SIGBUS.

use anyhow::{anyhow, bail, Context, Result};
use fastcdc::v2020::StreamCDC;
use serde::{Deserialize, Serialize};
use std::collections::{HashMap, HashSet};
use std::io::{self, Read, Seek, SeekFrom, Write};

/// Smallest chunk (except a file's last one).
pub const MIN_CHUNK: u32 = 8 * 1024;
/// Target average chunk.
pub const AVG_CHUNK: u32 = 32 * 1024;
/// Largest chunk: bounds every buffer on both sides.
pub const MAX_CHUNK: u32 = 128 * 1024;
/// Names the chunking parameters (FastCDC 2020, normalization level 1, seed
/// 0, the sizes above, BLAKE3). Bump when any of them changes.
pub const PARAMS_VERSION: u32 = 1;

/// One chunk of a file as the side that holds it sees it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChunkSig {
    pub offset: u64,
    pub len: u32,
    pub hash: [u8; 32],
}

/// What a side has of a file: its chunks, in order.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Signature {
    pub chunks: Vec<ChunkSig>,
    pub size: u64,
}

impl Signature {
    /// The signature of "no file here": every chunk must be sent.
    pub fn empty() -> Signature {
        Signature {
            chunks: Vec::new(),
            size: 0,
        }
    }
}

/// One step of rebuilding a file on the receiver.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum Piece {
    /// The receiver already has this chunk (somewhere in its old copy).
    Have { hash: [u8; 32], len: u32 },
    /// Bytes the receiver does not have (at most [`MAX_CHUNK`]); one byte
    /// string on the wire (see `serde_bytes` in Cargo.toml).
    Data(#[serde(with = "serde_bytes")] Vec<u8>),
}

/// What [`delta`] sent, and what it read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct DeltaStats {
    /// Bytes sent as [`Piece::Data`].
    pub bytes_literal: u64,
    pub chunks_literal: u64,
    /// Chunks sent as [`Piece::Have`].
    pub chunks_reused: u64,
    pub bytes_reused: u64,
    /// BLAKE3 of the whole new file as read: what the receiver must get.
    pub file_hash: [u8; 32],
    /// Bytes read from the new file.
    pub size: u64,
}

/// Chunk `reader` and hash every chunk, reading it once, in bounded memory.
pub fn signature(reader: impl Read) -> Result<Signature> {
    chunked(reader, &mut Whole::Known([0; 32]))
}

/// [`signature`], and the whole file's BLAKE3 from the same read, unless it
/// is already `known`: what the sender lists before [`delta_listed`].
pub fn signature_and_hash(
    reader: impl Read,
    known: Option<[u8; 32]>,
) -> Result<(Signature, [u8; 32])> {
    let mut whole = Whole::new(known);
    let sig = chunked(reader, &mut whole)?;
    Ok((sig, whole.finalize()))
}

fn chunked(reader: impl Read, whole: &mut Whole) -> Result<Signature> {
    let mut chunks = Vec::new();
    let mut size = 0u64;
    for_each_chunk(reader, |offset, data| {
        whole.update(data);
        size += data.len() as u64;
        chunks.push(ChunkSig {
            offset,
            len: chunk_len(data)?,
            hash: *blake3::hash(data).as_bytes(),
        });
        Ok(())
    })?;
    Ok(Signature { chunks, size })
}

/// The sender's half: chunk `new_file` like [`signature`] does and hand each
/// chunk to `emit`, as [`Piece::Have`] when `receiver_sig` lists its hash and
/// as [`Piece::Data`] otherwise. An error from `emit` stops at once and is
/// returned.
pub fn delta(
    new_file: impl Read,
    receiver_sig: &Signature,
    emit: impl FnMut(Piece) -> Result<()>,
) -> Result<DeltaStats> {
    delta_known(new_file, receiver_sig, None, emit)
}

/// [`delta`], for a file whose whole hash is already `known` (the scan's,
/// when the file's stat shows it unchanged since): it is not computed
/// again, and [`DeltaStats::file_hash`] is `known`. The receiver checks
/// it all the same before putting the file in place.
pub fn delta_known(
    new_file: impl Read,
    receiver_sig: &Signature,
    known: Option<[u8; 32]>,
    mut emit: impl FnMut(Piece) -> Result<()>,
) -> Result<DeltaStats> {
    let have: HashSet<[u8; 32]> = receiver_sig.chunks.iter().map(|c| c.hash).collect();
    let mut stats = DeltaStats::default();
    let mut whole = Whole::new(known);
    if have.is_empty() {
        // Nothing to match: plain blocks, no chunking or chunk hashes.
        return plain(new_file, emit, stats, whole);
    }
    for_each_chunk(new_file, |_, data| {
        whole.update(data);
        stats.size += data.len() as u64;
        let hash = *blake3::hash(data).as_bytes();
        let len = chunk_len(data)?;
        if have.contains(&hash) {
            stats.chunks_reused += 1;
            stats.bytes_reused += u64::from(len);
            emit(Piece::Have { hash, len })
        } else {
            stats.chunks_literal += 1;
            stats.bytes_literal += u64::from(len);
            emit(Piece::Data(data.to_vec()))
        }
    })?;
    stats.file_hash = whole.finalize();
    Ok(stats)
}

/// [`delta`], from `ours`: the [`signature`] of `new_file`, taken
/// beforehand (while the receiver took its own, so the two overlap), and
/// its whole hash `file_hash` ([`signature_and_hash`]). Reads only the
/// chunks the receiver lacks, each checked against the hash listed for it:
/// a mismatch means the file changed since it was listed, and is an error.
/// [`DeltaStats::file_hash`] is `file_hash`.
pub fn delta_listed(
    new_file: &std::fs::File,
    ours: &Signature,
    file_hash: [u8; 32],
    receiver_sig: &Signature,
    mut emit: impl FnMut(Piece) -> Result<()>,
) -> Result<DeltaStats> {
    use std::os::unix::fs::FileExt;
    let have: HashSet<[u8; 32]> = receiver_sig.chunks.iter().map(|c| c.hash).collect();
    let mut stats = DeltaStats {
        file_hash,
        size: ours.size,
        ..DeltaStats::default()
    };
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    for c in &ours.chunks {
        if have.contains(&c.hash) {
            stats.chunks_reused += 1;
            stats.bytes_reused += u64::from(c.len);
            emit(Piece::Have {
                hash: c.hash,
                len: c.len,
            })?;
            continue;
        }
        let Some(data) = buf.get_mut(..c.len as usize) else {
            bail!(
                "a listed chunk of {} bytes is over the {MAX_CHUNK} maximum",
                c.len
            );
        };
        new_file
            .read_exact_at(data, c.offset)
            .context("cannot read the file to send")?;
        if blake3::hash(data).as_bytes() != &c.hash {
            bail!("the file changed after its chunks were listed");
        }
        stats.chunks_literal += 1;
        stats.bytes_literal += u64::from(c.len);
        emit(Piece::Data(data.to_vec()))?;
    }
    Ok(stats)
}

/// The whole-file hash of a delta: computed as the file is read, or known.
enum Whole {
    Hashing(Box<blake3::Hasher>),
    Known([u8; 32]),
}

impl Whole {
    fn new(known: Option<[u8; 32]>) -> Whole {
        match known {
            Some(hash) => Whole::Known(hash),
            None => Whole::Hashing(Box::new(blake3::Hasher::new())),
        }
    }

    fn update(&mut self, data: &[u8]) {
        if let Whole::Hashing(h) = self {
            h.update(data);
        }
    }

    fn finalize(&self) -> [u8; 32] {
        match self {
            Whole::Hashing(h) => *h.finalize().as_bytes(),
            Whole::Known(hash) => *hash,
        }
    }
}

/// [`delta`] against an empty signature: the file in [`MAX_CHUNK`]-sized
/// literal pieces.
fn plain(
    mut new_file: impl Read,
    mut emit: impl FnMut(Piece) -> Result<()>,
    mut stats: DeltaStats,
    mut whole: Whole,
) -> Result<DeltaStats> {
    let mut buf = vec![0u8; MAX_CHUNK as usize];
    loop {
        let mut filled = 0;
        while filled < buf.len() {
            match new_file.read(&mut buf[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => return Err(e).context("cannot read the file to send"),
            }
        }
        if filled == 0 {
            break;
        }
        let data = &buf[..filled];
        whole.update(data);
        stats.size += filled as u64;
        stats.chunks_literal += 1;
        stats.bytes_literal += filled as u64;
        emit(Piece::Data(data.to_vec()))?;
        if filled < buf.len() {
            break;
        }
    }
    stats.file_hash = whole.finalize();
    Ok(stats)
}

/// The receiver's half: rebuild the new file into `out` from `pieces`,
/// copying [`Piece::Have`] chunks out of `old` (whose signature is
/// `old_sig`). Returns the number of bytes written.
///
/// What was written is not checked here: `out` is an
/// [`IncomingFile`](super::receive::IncomingFile), which hashes it and is
/// put in place only if that matches the sender's [`DeltaStats::file_hash`]
/// (an old file changed since its signature ends there, as a mismatch; see
/// the module doc). A `Have` this side cannot satisfy (unknown hash, wrong
/// length, no old file, an old file now too short) is an error here: never
/// a panic.
pub fn apply<R: Read + Seek>(
    mut old: Option<&mut R>,
    old_sig: &Signature,
    pieces: impl Iterator<Item = Result<Piece>>,
    mut out: impl Write,
) -> Result<u64> {
    let index: HashMap<[u8; 32], ChunkSig> = old_sig.chunks.iter().map(|c| (c.hash, *c)).collect();
    let mut buf = Vec::new();
    // Where the old file's cursor is, to skip seeks for runs of chunks.
    let mut pos: Option<u64> = None;
    let mut written = 0u64;
    for piece in pieces {
        match piece? {
            Piece::Data(data) => {
                out.write_all(&data)
                    .with_context(|| format!("cannot write the rebuilt file at byte {written}"))?;
                written += data.len() as u64;
            }
            Piece::Have { hash, len } => {
                let chunk = index.get(&hash).ok_or_else(|| {
                    anyhow!(
                        "peer asked for a chunk this side does not have ({}, {len} bytes)",
                        short_hex(&hash)
                    )
                })?;
                if chunk.len != len {
                    bail!(
                        "peer asked for chunk {} as {len} bytes, but this side has it as {} bytes",
                        short_hex(&hash),
                        chunk.len
                    );
                }
                let Some(file) = old.as_deref_mut() else {
                    bail!(
                        "peer asked for a chunk this side does not have ({}): there is no old file",
                        short_hex(&hash)
                    );
                };
                if pos != Some(chunk.offset) {
                    file.seek(SeekFrom::Start(chunk.offset)).with_context(|| {
                        format!("cannot seek to byte {} of the old file", chunk.offset)
                    })?;
                }
                buf.resize(len as usize, 0);
                file.read_exact(&mut buf).with_context(|| {
                    format!(
                        "cannot read {len} bytes at byte {} of the old file (was it truncated?)",
                        chunk.offset
                    )
                })?;
                pos = Some(chunk.offset + u64::from(len));
                out.write_all(&buf)
                    .with_context(|| format!("cannot write the rebuilt file at byte {written}"))?;
                written += u64::from(len);
            }
        }
    }
    out.flush().context("cannot flush the rebuilt file")?;
    Ok(written)
}

/// Run the chunker over `reader`, calling `f(offset, bytes)` per chunk.
fn for_each_chunk(reader: impl Read, mut f: impl FnMut(u64, &[u8]) -> Result<()>) -> Result<()> {
    let chunker = StreamCDC::new(
        RetryInterrupted(reader),
        MIN_CHUNK as usize,
        AVG_CHUNK as usize,
        MAX_CHUNK as usize,
    );
    for chunk in chunker {
        let chunk = chunk
            .map_err(io::Error::from)
            .context("cannot read the file")?;
        f(chunk.offset, &chunk.data)?;
    }
    Ok(())
}

fn chunk_len(data: &[u8]) -> Result<u32> {
    // Never more than MAX_CHUNK; checked rather than assumed.
    u32::try_from(data.len()).map_err(|_| anyhow!("chunk of {} bytes is too large", data.len()))
}

/// The first bytes of a hash in hex, for messages.
pub fn short_hex(hash: &[u8; 32]) -> String {
    hash[..8].iter().map(|b| format!("{b:02x}")).collect()
}

/// StreamCDC gives up on `EINTR`; a signal must not fail a sync.
struct RetryInterrupted<R>(R);

impl<R: Read> Read for RetryInterrupted<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            match self.0.read(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                other => return other,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::io::Cursor;

    /// Deterministic pseudo-random bytes (xorshift64*), so tests can make
    /// megabytes without proptest generating (and shrinking) them.
    fn noise(seed: u64, len: usize) -> Vec<u8> {
        let mut out = Vec::with_capacity(len);
        let mut g = Gen(seed | 1);
        while out.len() < len {
            out.extend_from_slice(&g.next().to_le_bytes());
        }
        out.truncate(len);
        out
    }

    struct Gen(u64);
    impl Gen {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 >> 12;
            self.0 ^= self.0 << 25;
            self.0 ^= self.0 >> 27;
            self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
    }

    /// Sync `old` to `new`: signature of old, delta of new, apply. Returns
    /// the rebuilt bytes and the stats.
    fn roundtrip(old: &[u8], new: &[u8]) -> (Vec<u8>, DeltaStats) {
        let sig = signature(old).unwrap();
        let mut pieces = Vec::new();
        let stats = delta(new, &sig, |p| {
            pieces.push(p);
            Ok(())
        })
        .unwrap();
        let mut out = Vec::new();
        let written = apply(
            Some(&mut Cursor::new(old)),
            &sig,
            pieces.into_iter().map(Ok),
            &mut out,
        )
        .unwrap();
        assert_eq!(written, out.len() as u64);
        assert_eq!(stats.file_hash, *blake3::hash(new).as_bytes());
        assert_eq!(blake3::hash(&out), blake3::hash(new));
        (out, stats)
    }

    #[test]
    fn signature_covers_the_file_in_order() {
        let data = noise(7, 1_000_000);
        let sig = signature(&data[..]).unwrap();
        assert_eq!(sig.size, data.len() as u64);
        let (same, whole) = signature_and_hash(&data[..], None).unwrap();
        assert_eq!(same, sig);
        assert_eq!(whole, *blake3::hash(&data).as_bytes());
        let (_, told) = signature_and_hash(&data[..], Some([7; 32])).unwrap();
        assert_eq!(told, [7; 32], "a known hash is taken as is");
        let mut next = 0u64;
        for c in &sig.chunks {
            assert_eq!(c.offset, next);
            assert!(c.len <= MAX_CHUNK);
            let (a, b) = (c.offset as usize, (c.offset + u64::from(c.len)) as usize);
            assert_eq!(c.hash, *blake3::hash(&data[a..b]).as_bytes());
            next += u64::from(c.len);
        }
        assert_eq!(next, data.len() as u64);
        assert!(sig.chunks.len() > 10, "{} chunks", sig.chunks.len());
    }

    #[test]
    fn empty_file() {
        let sig = signature(&[][..]).unwrap();
        assert_eq!(sig, Signature::empty());
        let (out, stats) = roundtrip(b"", b"");
        assert!(out.is_empty());
        assert_eq!(stats.chunks_literal + stats.chunks_reused, 0);
    }

    #[test]
    fn unknown_have_is_an_error_not_a_panic() {
        let old = noise(1, 100_000);
        let sig = signature(&old[..]).unwrap();
        let bogus = Piece::Have {
            hash: [0xab; 32],
            len: 10,
        };
        let err = apply(
            Some(&mut Cursor::new(&old)),
            &sig,
            std::iter::once(Ok(bogus.clone())),
            Vec::new(),
        )
        .unwrap_err();
        assert!(
            err.to_string()
                .contains("peer asked for a chunk this side does not have"),
            "{err:#}"
        );
        // No old file at all.
        let err = apply(
            None::<&mut Cursor<Vec<u8>>>,
            &Signature::empty(),
            std::iter::once(Ok(bogus)),
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("does not have"), "{err:#}");
        // Known hash, but claimed with another length.
        let c = sig.chunks[0];
        let err = apply(
            Some(&mut Cursor::new(&old)),
            &sig,
            std::iter::once(Ok(Piece::Have {
                hash: c.hash,
                len: c.len + 1,
            })),
            Vec::new(),
        )
        .unwrap_err();
        assert!(err.to_string().contains("bytes"), "{err:#}");
    }

    /// An old file changed after its signature: `apply` copies what is
    /// there now, and the result no longer hashes to the sender's file, so
    /// the receiver's check refuses it (tests/sync_receive.rs checks that
    /// refusal end to end). A truncated one cannot even be read.
    #[test]
    fn old_file_changed_after_its_signature_gives_another_hash() {
        let old = noise(2, 300_000);
        let sig = signature(&old[..]).unwrap();
        let pieces = || {
            sig.chunks.iter().map(|c| {
                Ok(Piece::Have {
                    hash: c.hash,
                    len: c.len,
                })
            })
        };
        let mut changed = old.clone();
        changed[10] ^= 1;
        let mut out = Vec::new();
        apply(Some(&mut Cursor::new(changed)), &sig, pieces(), &mut out).unwrap();
        assert_eq!(out.len(), old.len());
        assert_ne!(blake3::hash(&out), blake3::hash(&old));

        let short = old[..old.len() - 1].to_vec();
        let err = apply(Some(&mut Cursor::new(short)), &sig, pieces(), Vec::new()).unwrap_err();
        assert!(err.to_string().contains("truncated"), "{err:#}");
    }

    #[test]
    fn one_byte_change_in_64_mib_sends_at_most_two_chunks() {
        let dir = tempfile::tempdir().unwrap();
        let old_path = dir.path().join("old");
        let len = 64 << 20;
        let mut data = noise(64, len);
        std::fs::write(&old_path, &data).unwrap();
        data[len / 2 + 12_345] ^= 0x5a;

        let mut old = std::fs::File::open(&old_path).unwrap();
        let sig = signature(&mut old).unwrap();
        assert_eq!(sig.size, len as u64);
        let mut pieces = Vec::new();
        let stats = delta(&data[..], &sig, |p| {
            pieces.push(p);
            Ok(())
        })
        .unwrap();
        assert!(stats.chunks_literal <= 2, "{stats:?}");
        assert!(stats.bytes_literal <= 2 * u64::from(MAX_CHUNK), "{stats:?}");
        assert_eq!(stats.size, len as u64);

        let mut out = Vec::with_capacity(len);
        apply(Some(&mut old), &sig, pieces.into_iter().map(Ok), &mut out).unwrap();
        assert_eq!(stats.file_hash, *blake3::hash(&data).as_bytes());
        assert!(out == data);
    }

    #[test]
    fn a_known_hash_is_used_and_the_pieces_are_the_same() {
        let data: Vec<u8> = (0..3 * MAX_CHUNK as usize + 17)
            .map(|i| (i * 31 % 251) as u8)
            .collect();
        for sig in [
            Signature::empty(),
            signature(&data[..2 * MAX_CHUNK as usize]).unwrap(),
        ] {
            let mut computed = Vec::new();
            let a = delta(&data[..], &sig, |p| {
                computed.push(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(a.file_hash, *blake3::hash(&data).as_bytes());
            let mut known = Vec::new();
            let b = delta_known(&data[..], &sig, Some([9; 32]), |p| {
                known.push(p);
                Ok(())
            })
            .unwrap();
            assert_eq!(b.file_hash, [9; 32], "the known hash, not computed");
            assert_eq!(known, computed);
            assert_eq!((b.size, b.bytes_literal), (a.size, a.bytes_literal));
        }
    }

    /// Listing the new file's chunks first (while the receiver lists its
    /// own) sends the same pieces as chunking it against the receiver's
    /// signature; a file changed after it was listed is refused.
    #[test]
    fn a_delta_from_listed_chunks_is_the_same_and_sees_a_change() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("new");
        let old = noise(5, 2_000_000);
        let mut new = old.clone();
        new[1_000_000] ^= 0x5a;
        new.extend_from_slice(&noise(6, 300_000));
        std::fs::write(&path, &new).unwrap();
        let theirs = signature(&old[..]).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let (ours, whole) = signature_and_hash(&file, None).unwrap();

        let mut direct = Vec::new();
        let a = delta(&new[..], &theirs, |p| {
            direct.push(p);
            Ok(())
        })
        .unwrap();
        let mut listed = Vec::new();
        let b = delta_listed(&file, &ours, whole, &theirs, |p| {
            listed.push(p);
            Ok(())
        })
        .unwrap();
        assert_eq!(listed, direct);
        assert_eq!(b, a);
        assert!(b.chunks_literal >= 1 && b.chunks_reused >= 1, "{b:?}");
        let mut out = Vec::new();
        apply(
            Some(&mut Cursor::new(&old)),
            &theirs,
            listed.into_iter().map(Ok),
            &mut out,
        )
        .unwrap();
        assert_eq!(b.file_hash, *blake3::hash(&new).as_bytes());
        assert!(out == new);

        // Changed in a chunk the receiver lacks, after the listing.
        let mut changed = new.clone();
        changed[new.len() - 10] ^= 1;
        std::fs::write(&path, &changed).unwrap();
        let file = std::fs::File::open(&path).unwrap();
        let e = delta_listed(&file, &ours, whole, &theirs, |_| Ok(())).unwrap_err();
        assert!(
            e.to_string()
                .contains("changed after its chunks were listed"),
            "{e:#}"
        );
    }

    /// `serde_bytes` changes how the data is decoded (in one copy, not
    /// byte by byte), not the encoding: a peer of the previous build reads
    /// the same bytes.
    #[test]
    fn data_pieces_encode_as_before() {
        #[derive(Serialize, Deserialize, PartialEq, Debug)]
        enum Before {
            Have { hash: [u8; 32], len: u32 },
            Data(Vec<u8>),
        }
        let data: Vec<u8> = (0..70_000u32).map(|i| (i % 253) as u8).collect();
        let now = postcard::to_stdvec(&Piece::Data(data.clone())).unwrap();
        let before = postcard::to_stdvec(&Before::Data(data.clone())).unwrap();
        assert_eq!(now, before);
        assert_eq!(
            postcard::from_bytes::<Piece>(&before).unwrap(),
            Piece::Data(data.clone())
        );
        assert_eq!(
            postcard::from_bytes::<Before>(&now).unwrap(),
            Before::Data(data)
        );
        let have = Piece::Have {
            hash: [7; 32],
            len: 9,
        };
        let old_have = Before::Have {
            hash: [7; 32],
            len: 9,
        };
        assert_eq!(
            postcard::to_stdvec(&have).unwrap(),
            postcard::to_stdvec(&old_have).unwrap()
        );
    }

    #[test]
    fn emit_error_stops_the_delta() {
        let data = noise(3, 500_000);
        let mut calls = 0;
        let err = delta(&data[..], &Signature::empty(), |_| {
            calls += 1;
            bail!("link closed")
        })
        .unwrap_err();
        assert_eq!(calls, 1);
        assert!(err.to_string().contains("link closed"));
    }

    /// The kinds of edit a file sees between two syncs.
    #[derive(Debug, Clone)]
    enum Edit {
        Identical,
        Insert { at: f64, len: usize },
        Append(usize),
        Truncate(f64),
        New,
    }

    fn edit() -> impl Strategy<Value = Edit> {
        prop_oneof![
            Just(Edit::Identical),
            (0.0..1.0f64, 1usize..5_000).prop_map(|(at, len)| Edit::Insert { at, len }),
            (1usize..300_000).prop_map(Edit::Append),
            (0.0..1.0f64).prop_map(Edit::Truncate),
            Just(Edit::New),
        ]
    }

    proptest! {
        // A fixed seed: the insertion bound below is statistical (see
        // there), so the cases must not change from run to run.
        #![proptest_config(ProptestConfig {
            cases: 48,
            rng_seed: proptest::test_runner::RngSeed::Fixed(0x5349_5048_4153_594e),
            failure_persistence: None,
            ..ProptestConfig::default()
        })]

        #[test]
        fn delta_then_apply_rebuilds_exactly(seed: u64, len in 0usize..1_500_000, e in edit()) {
            let old = noise(seed, len);
            let new = match &e {
                Edit::Identical => old.clone(),
                Edit::Insert { at, len: n } => {
                    let at = (old.len() as f64 * at) as usize;
                    let mut v = old[..at].to_vec();
                    v.extend(noise(seed ^ 0xdead, *n));
                    v.extend_from_slice(&old[at..]);
                    v
                }
                Edit::Append(n) => {
                    let mut v = old.clone();
                    v.extend(noise(seed ^ 0xbeef, *n));
                    v
                }
                Edit::Truncate(keep) => old[..(old.len() as f64 * keep) as usize].to_vec(),
                Edit::New => noise(seed ^ 0xf00d, len),
            };
            let (out, stats) = roundtrip(&old, &new);
            prop_assert!(out == new);
            prop_assert_eq!(stats.bytes_literal + stats.bytes_reused, new.len() as u64);
            let old_chunks = signature(&old[..]).unwrap().chunks.len() as u64;
            match e {
                Edit::Identical => prop_assert_eq!(stats.chunks_literal, 0),
                // Every chunk that ends before the insertion is found again
                // (a cut depends only on the bytes before it), except an old
                // last chunk, which ended at EOF rather than at a cut. After
                // the insertion the cut points fall back in step within a
                // chunk or two: over 3,000 random insertions of 1-5,000 bytes
                // into files of up to 1.5 MB, 86% changed 1 chunk, 10% 2,
                // 3% 3, and none more than 6.
                Edit::Insert { at, len: n } => {
                    let at = (old.len() as f64 * at) as u64;
                    let sig = signature(&old[..]).unwrap();
                    let before = sig.chunks.iter().filter(|c| c.offset + u64::from(c.len) <= at).count() as u64;
                    prop_assert!(stats.chunks_reused + 1 >= before, "{:?}", stats);
                    prop_assert!(stats.chunks_literal <= 8, "{:?}", stats);
                    prop_assert!(stats.bytes_literal <= 8 * u64::from(MAX_CHUNK) + n as u64);
                }
                // The old file's last chunk may grow; everything before it
                // is reused.
                Edit::Append(n) => {
                    prop_assert!(stats.chunks_reused + 1 >= old_chunks, "{:?}", stats);
                    prop_assert!(stats.bytes_literal <= u64::from(MAX_CHUNK) + n as u64);
                }
                Edit::Truncate(_) => prop_assert!(stats.chunks_literal <= 1, "{:?}", stats),
                // Random data shares no chunk with other random data.
                Edit::New => prop_assert_eq!(stats.chunks_reused, 0),
            }
        }
    }
}
