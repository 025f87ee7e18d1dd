//! Framing: how messages are cut out of a byte stream.
//!
//! A frame is a 4-byte big-endian length followed by that many bytes of
//! payload. The payload is one message encoded with postcard (compact, serde,
//! no schema on the wire). A frame longer than [`MAX_FRAME`] is refused
//! before anything is allocated, so a confused or hostile peer cannot make
//! this node allocate gigabytes; bulk data (the files `sip-ha -c` sends) travels as a
//! sequence of frames of at most [`MAX_CHUNK`] bytes of data each.
//!
//! The end of the stream is only normal *between* frames: [`read_frame`]
//! returns `Ok(None)` there, and [`FrameError::Truncated`] when the stream
//! ends inside a frame.
//!
//! Writers should be buffered (`tokio::io::BufWriter`): [`write_frame`]
//! writes the header and the payload separately and does not flush; [`send`]
//! flushes after the frame.

use serde::de::DeserializeOwned;
use serde::Serialize;
use std::io;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// The largest payload a frame may carry: 8 MiB.
pub const MAX_FRAME: usize = 8 * 1024 * 1024;

/// The largest piece of bulk data to put in one message, leaving room in the
/// frame for the rest of the message.
pub const MAX_CHUNK: usize = 1024 * 1024;

/// Bytes in the length header.
pub const HEADER_LEN: usize = 4;

/// Why a frame could not be read, written or decoded. The messages are
/// complete sentences; none of the variants has a `source`.
#[derive(Debug, thiserror::Error)]
pub enum FrameError {
    /// The length header announced more than [`MAX_FRAME`].
    #[error("peer sent a frame of {len} bytes, more than the {max} allowed")]
    TooLarge { len: u64, max: usize },
    /// This side tried to send more than [`MAX_FRAME`] (a bug: messages must
    /// be cut into chunks).
    #[error("refusing to send a frame of {len} bytes, more than the {max} allowed")]
    TooLargeToSend { len: usize, max: usize },
    /// The stream ended inside a frame. Counts include the header.
    #[error("connection closed in the middle of a frame (got {got} of {expected} bytes)")]
    Truncated { got: usize, expected: usize },
    /// The payload is not a valid encoding of the expected message.
    #[error("peer sent a malformed {what} ({len} bytes): {error}")]
    Malformed {
        what: &'static str,
        len: usize,
        error: postcard::Error,
    },
    /// The payload decoded, but bytes were left over.
    #[error("peer sent a malformed {what}: {extra} unexpected bytes after the message")]
    TrailingBytes { what: &'static str, extra: usize },
    /// A message could not be encoded (a type postcard cannot represent).
    #[error("could not encode {what}: {error}")]
    Encode {
        what: &'static str,
        error: postcard::Error,
    },
    #[error("reading from the peer failed: {0}")]
    Read(io::Error),
    #[error("writing to the peer failed: {0}")]
    Write(io::Error),
}

/// Reads one frame and returns its payload, or `None` if the stream ended
/// cleanly before the first byte of a frame.
pub async fn read_frame<R>(reader: &mut R) -> Result<Option<Vec<u8>>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut header = [0u8; HEADER_LEN];
    let got = read_full(reader, &mut header).await?;
    if got == 0 {
        return Ok(None);
    }
    if got < HEADER_LEN {
        return Err(FrameError::Truncated {
            got,
            expected: HEADER_LEN,
        });
    }
    let len = u32::from_be_bytes(header);
    let len = usize::try_from(len)
        .ok()
        .filter(|&len| len <= MAX_FRAME)
        .ok_or(FrameError::TooLarge {
            len: u64::from(len),
            max: MAX_FRAME,
        })?;
    let mut payload = vec![0u8; len];
    let got = read_full(reader, &mut payload).await?;
    if got < len {
        return Err(FrameError::Truncated {
            got: HEADER_LEN + got,
            expected: HEADER_LEN + len,
        });
    }
    Ok(Some(payload))
}

/// Fills `buf` unless the stream ends first; returns how many bytes it got.
async fn read_full<R>(reader: &mut R, buf: &mut [u8]) -> Result<usize, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
{
    let mut got = 0;
    while got < buf.len() {
        match reader.read(&mut buf[got..]).await {
            Ok(0) => break,
            Ok(n) => got += n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(FrameError::Read(e)),
        }
    }
    Ok(got)
}

/// Writes one frame (header, then payload). Does not flush.
pub async fn write_frame<W>(writer: &mut W, payload: &[u8]) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
{
    let len = u32::try_from(payload.len())
        .ok()
        .filter(|_| payload.len() <= MAX_FRAME)
        .ok_or(FrameError::TooLargeToSend {
            len: payload.len(),
            max: MAX_FRAME,
        })?;
    writer
        .write_all(&len.to_be_bytes())
        .await
        .map_err(FrameError::Write)?;
    writer.write_all(payload).await.map_err(FrameError::Write)?;
    Ok(())
}

/// Encodes a message as a frame payload.
pub fn encode<T: Serialize>(message: &T) -> Result<Vec<u8>, FrameError> {
    postcard::to_stdvec(message).map_err(|error| FrameError::Encode {
        what: type_name::<T>(),
        error,
    })
}

/// Decodes a frame payload as one message of type `T`; the whole payload must
/// be used.
pub fn decode<T: DeserializeOwned>(payload: &[u8]) -> Result<T, FrameError> {
    let what = type_name::<T>();
    let (message, rest) =
        postcard::take_from_bytes::<T>(payload).map_err(|error| FrameError::Malformed {
            what,
            len: payload.len(),
            error,
        })?;
    if !rest.is_empty() {
        return Err(FrameError::TrailingBytes {
            what,
            extra: rest.len(),
        });
    }
    Ok(message)
}

/// Encodes `message`, writes it as one frame and flushes.
pub async fn send<W, T>(writer: &mut W, message: &T) -> Result<(), FrameError>
where
    W: AsyncWrite + Unpin + ?Sized,
    T: Serialize,
{
    let payload = encode(message)?;
    write_frame(writer, &payload).await?;
    writer.flush().await.map_err(FrameError::Write)
}

/// Reads one frame and decodes it as a `T`; `None` at a clean end of stream.
pub async fn recv<R, T>(reader: &mut R) -> Result<Option<T>, FrameError>
where
    R: AsyncRead + Unpin + ?Sized,
    T: DeserializeOwned,
{
    match read_frame(reader).await? {
        None => Ok(None),
        Some(payload) => decode(&payload).map(Some),
    }
}

/// The last segment of a type's name, for error messages: `Request`, not
/// `sip_ha::link::protocol::Request`.
fn type_name<T>() -> &'static str {
    let full = std::any::type_name::<T>();
    // Strip generic arguments before taking the last path segment.
    let base = full.split('<').next().unwrap_or(full);
    base.rsplit("::").next().unwrap_or(base)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn round_trip_and_clean_end() {
        let (mut a, mut b) = tokio::io::duplex(64);
        let writer = tokio::spawn(async move {
            send(&mut a, &(7u32, String::from("seven"))).await.unwrap();
            send(&mut a, &vec![1u8; 300]).await.unwrap();
        });
        let first: (u32, String) = recv(&mut b).await.unwrap().unwrap();
        assert_eq!(first, (7, "seven".to_string()));
        let second: Vec<u8> = recv(&mut b).await.unwrap().unwrap();
        assert_eq!(second, vec![1u8; 300]);
        writer.await.unwrap();
        assert!(recv::<_, u32>(&mut b).await.unwrap().is_none());
    }

    #[tokio::test]
    async fn truncated_header() {
        let mut input: &[u8] = &[0, 0];
        let err = read_frame(&mut input).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "connection closed in the middle of a frame (got 2 of 4 bytes)"
        );
    }

    #[tokio::test]
    async fn refuses_to_send_oversize() {
        let mut sink = Vec::new();
        let err = write_frame(&mut sink, &vec![0u8; MAX_FRAME + 1])
            .await
            .unwrap_err();
        assert!(matches!(err, FrameError::TooLargeToSend { .. }), "{err}");
        assert!(sink.is_empty());
    }

    #[test]
    fn trailing_bytes_refused() {
        let mut payload = encode(&5u32).unwrap();
        payload.push(0);
        let err = decode::<u32>(&payload).unwrap_err();
        assert!(err.to_string().contains("unexpected bytes"), "{err}");
    }

    #[test]
    fn short_type_names() {
        assert_eq!(type_name::<Vec<u8>>(), "Vec");
        assert_eq!(type_name::<u32>(), "u32");
    }
}
