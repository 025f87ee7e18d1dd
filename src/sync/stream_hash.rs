//! The BLAKE3 of what is written to an incoming file, taken as it is
//! written: on the writing thread, or on a thread of its own for a big file
//! rebuilt from the standby's old copy.
//!
//! The standby checks every file it receives against the sender's hash
//! before putting it in place, so each byte it writes is hashed once. For
//! a delta of a big file that pass is most of the work: rebuilding a
//! 256 MiB recording from its old chunks is a copy within the page cache,
//! and hashing it took as long again (bench/sync.sh, poke: 0.37 s ->
//! 0.26-0.34 s). With the hashing on a second thread, the copy and the
//! hash overlap: the writer hands over blocks of [`BLOCK`] bytes and goes
//! on.
//!
//! Only then: a file that crosses the link whole keeps another core busy
//! already (sshd decrypting it), and there the extra copy into blocks cost
//! more than the overlap gave (the first copy of 20 big files, both ends on
//! one 2-core machine: 10.0-10.8 s inline, 11.3-13.0 s threaded).

use std::sync::mpsc::{self, Receiver, SyncSender};
use std::thread::JoinHandle;

/// Files from this size on are hashed on a thread of their own. Below it
/// the thread and the copies into blocks cost more than they save, and a
/// first copy of 100,000 small files would start 100,000 threads.
pub const THREAD_FROM: u64 = 16 << 20;

/// What the writer hands the hashing thread at a time.
pub const BLOCK: usize = 1 << 20;

/// Blocks waiting for the hashing thread at most (memory: this many plus
/// the one being hashed and the one being filled).
const QUEUED: usize = 2;

/// The running hash of one incoming file.
pub struct StreamHash {
    state: State,
}

enum State {
    Inline(Box<blake3::Hasher>),
    Threaded {
        /// The block being filled.
        block: Vec<u8>,
        full: SyncSender<Vec<u8>>,
        /// Blocks the thread has hashed, to be filled again.
        empty: Receiver<Vec<u8>>,
        worker: JoinHandle<blake3::Hasher>,
    },
    /// The thread could not take a block (it cannot fail short of a
    /// panic): the hash is unknown, and the file must not be accepted.
    Lost,
    Done([u8; 32]),
}

impl StreamHash {
    /// A hash taken on the writing thread.
    pub fn inline() -> StreamHash {
        StreamHash {
            state: State::Inline(Box::default()),
        }
    }

    /// A hash for a file of `size` bytes rebuilt locally (mostly from an
    /// old copy): on a thread of its own from [`THREAD_FROM`] on.
    pub fn for_rebuild(size: u64) -> StreamHash {
        let inline = || State::Inline(Box::default());
        if size < THREAD_FROM {
            return StreamHash { state: inline() };
        }
        let (full, blocks) = mpsc::sync_channel::<Vec<u8>>(QUEUED);
        let (give_back, empty) = mpsc::channel();
        let spawned = std::thread::Builder::new()
            .name("sip-ha-hash".into())
            .spawn(move || {
                let mut hasher = blake3::Hasher::new();
                for mut block in blocks {
                    hasher.update(&block);
                    block.clear();
                    // The writer may be gone already; the block is freed.
                    let _ = give_back.send(block);
                }
                hasher
            });
        let state = match spawned {
            Ok(worker) => State::Threaded {
                block: Vec::with_capacity(BLOCK),
                full,
                empty,
                worker,
            },
            // No thread to be had (a process limit): hashed inline.
            Err(_) => inline(),
        };
        StreamHash { state }
    }

    /// Add `data`, the next bytes written.
    pub fn update(&mut self, mut data: &[u8]) {
        match &mut self.state {
            State::Inline(hasher) => {
                hasher.update(data);
            }
            State::Threaded {
                block, full, empty, ..
            } => {
                while !data.is_empty() {
                    let take = (BLOCK - block.len()).min(data.len());
                    block.extend_from_slice(&data[..take]);
                    data = &data[take..];
                    if block.len() == BLOCK {
                        let next = empty
                            .try_recv()
                            .unwrap_or_else(|_| Vec::with_capacity(BLOCK));
                        let filled = std::mem::replace(block, next);
                        if full.send(filled).is_err() {
                            self.state = State::Lost;
                            return;
                        }
                    }
                }
            }
            State::Lost | State::Done(_) => {}
        }
    }

    /// The hash of everything added, or `None` if it was lost (the
    /// hashing thread stopped, which takes a panic). Nothing may be added
    /// after.
    pub fn finalize(&mut self) -> Option<[u8; 32]> {
        let state = std::mem::replace(&mut self.state, State::Lost);
        let hash = match state {
            State::Inline(hasher) => Some(*hasher.finalize().as_bytes()),
            State::Threaded {
                block,
                full,
                worker,
                ..
            } => {
                let sent = block.is_empty() || full.send(block).is_ok();
                // Ends the thread's loop.
                drop(full);
                match worker.join() {
                    Ok(hasher) if sent => Some(*hasher.finalize().as_bytes()),
                    _ => None,
                }
            }
            State::Lost => None,
            State::Done(hash) => Some(hash),
        };
        if let Some(hash) = hash {
            self.state = State::Done(hash);
        }
        hash
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bytes(len: usize) -> Vec<u8> {
        (0..len)
            .map(|i| (i.wrapping_mul(2_654_435_761) >> 7) as u8)
            .collect()
    }

    /// Whatever the sizes of the writes, inline or threaded, the hash is
    /// BLAKE3 of the bytes in order, and asking again gives it again.
    #[test]
    fn the_hash_is_blake3_of_the_bytes_in_order() {
        let data = bytes(3 * BLOCK + 12_345);
        for expected_size in [0, THREAD_FROM] {
            for piece in [1, 7_000, 32 * 1024, BLOCK, BLOCK + 1, data.len()] {
                let mut h = StreamHash::for_rebuild(expected_size);
                assert_eq!(
                    matches!(h.state, State::Threaded { .. }),
                    expected_size >= THREAD_FROM
                );
                if piece == 1 {
                    // Byte by byte is slow: a shorter stretch of it.
                    for b in &data[..100_000] {
                        h.update(std::slice::from_ref(b));
                    }
                    h.update(&data[100_000..]);
                } else {
                    for c in data.chunks(piece) {
                        h.update(c);
                    }
                }
                let want = *blake3::hash(&data).as_bytes();
                assert_eq!(
                    h.finalize(),
                    Some(want),
                    "size {expected_size}, writes of {piece}"
                );
                assert_eq!(h.finalize(), Some(want));
            }
        }
    }

    #[test]
    fn nothing_written_is_the_hash_of_nothing() {
        for size in [0, THREAD_FROM] {
            let mut h = StreamHash::for_rebuild(size);
            assert_eq!(h.finalize(), Some(*blake3::hash(b"").as_bytes()));
        }
        let mut h = StreamHash::inline();
        h.update(b"abc");
        assert_eq!(h.finalize(), Some(*blake3::hash(b"abc").as_bytes()));
    }
}
