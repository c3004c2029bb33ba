//! Cutting a body of unknown length into multipart-upload parts.
//!
//! A part that has to be gathered from several chunks lives in an anonymous
//! memory mapping of its own ([`Mapped`]) rather than on the heap.
//! With `Vec`s, glibc's dynamic mmap threshold moved the 8 MiB parts into
//! per-thread arenas after the first few were freed, and the arenas kept
//! them: peak RSS while pushing 64 MiB blobs to MinIO was 71 MiB for about
//! 30 MiB of live data, and the process stayed at 55 MiB afterwards
//! (BENCHMARKS.md). A mapping goes back to the kernel the moment the
//! uploaded part's last `Bytes` is dropped.

use bytes::Bytes;
use futures::StreamExt;

use super::super::{ByteStream, StorageError, StorageResult};
use crate::mapped::Mapped;

/// Reads the next part of `body`: `size` bytes, fewer only where the body
/// ends (and whether it did). Bytes of a chunk beyond `size` are kept in
/// `carry` for the next part, so a part never outgrows `size`. A part that
/// is one chunk (most small objects) is that chunk, uncopied; a larger one
/// is gathered into one [`Mapped`] buffer of exactly `size` bytes, of which
/// only the pages written are ever resident.
pub(super) async fn read_part(
    body: &mut ByteStream,
    size: usize,
    carry: &mut Option<Bytes>,
) -> StorageResult<(Bytes, bool)> {
    let mut single: Option<Bytes> = None;
    let mut gathered: Option<Mapped> = None;
    let mut len = 0;
    let mut eof = false;
    while len < size {
        let chunk = match carry.take() {
            Some(chunk) => chunk,
            None => match body.next().await {
                Some(Ok(chunk)) => chunk,
                Some(Err(err)) => return Err(body_error(err)),
                None => {
                    eof = true;
                    break;
                }
            },
        };
        let take = chunk.len().min(size - len);
        if take < chunk.len() {
            *carry = Some(chunk.slice(take..));
        }
        len += take;
        match (&mut gathered, single.take()) {
            (None, None) => single = Some(chunk.slice(..take)),
            (None, Some(first)) => {
                let mut buf = Mapped::new(size)?;
                buf.push(&first);
                buf.push(&chunk[..take]);
                gathered = Some(buf);
            }
            (Some(buf), _) => {
                buf.push(&chunk[..take]);
            }
        }
    }
    let part = match (gathered, single) {
        (Some(buf), _) => buf.freeze(),
        (None, Some(one)) => one,
        (None, None) => Bytes::new(),
    };
    Ok((part, eof))
}

/// A failed body as a storage error. A body read from storage (the
/// sources `compose` concatenates) carries that read's [`StorageError`]
/// inside the `io::Error`; it comes back as itself, so a missing source
/// stays not found and a throttled read retryable, instead of passing for
/// a client's broken body.
fn body_error(err: std::io::Error) -> StorageError {
    if !err
        .get_ref()
        .is_some_and(|inner| inner.is::<StorageError>())
    {
        return StorageError::Body(err);
    }
    let kind = err.kind();
    match err
        .into_inner()
        .map(|inner| inner.downcast::<StorageError>())
    {
        Some(Ok(storage)) => *storage,
        // Not reached: the check above found a StorageError inside.
        Some(Err(inner)) => StorageError::Body(std::io::Error::new(kind, inner)),
        None => StorageError::Body(kind.into()),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn body(chunks: &[&[u8]]) -> ByteStream {
        let chunks: Vec<std::io::Result<Bytes>> = chunks
            .iter()
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        Box::pin(futures::stream::iter(chunks))
    }

    /// Parts are exactly `size` bytes, with what a chunk holds beyond a
    /// part carried into the next one, and nothing lost or repeated.
    #[tokio::test]
    async fn parts_are_cut_at_their_size() {
        let mut stream = body(&[b"abc", b"defgh", b"ij", b"klmnopq"]);
        let mut carry = None;
        let mut parts = Vec::new();
        loop {
            let (part, eof) = read_part(&mut stream, 4, &mut carry).await.unwrap();
            assert!(part.len() <= 4);
            if !part.is_empty() {
                parts.push(String::from_utf8(part.to_vec()).unwrap());
            }
            if eof {
                break;
            }
        }
        assert_eq!(parts, ["abcd", "efgh", "ijkl", "mnop", "q"]);
        assert!(carry.is_none());
    }

    /// A gathered part spanning many pages keeps every byte in order, and
    /// a short last part is as long as what it holds.
    #[tokio::test]
    async fn gathered_parts_keep_every_byte() {
        let data: Vec<u8> = (0..100_000u32).map(|i| (i % 251) as u8).collect();
        let chunks: Vec<&[u8]> = data.chunks(7_000).collect();
        let mut stream = body(&chunks);
        let mut carry = None;
        let (first, eof) = read_part(&mut stream, 65_536, &mut carry).await.unwrap();
        assert!(!eof);
        assert_eq!(&first[..], &data[..65_536]);
        let (rest, eof) = read_part(&mut stream, 65_536, &mut carry).await.unwrap();
        assert!(eof);
        assert_eq!(&rest[..], &data[65_536..]);
    }

    /// A body error fails the part instead of cutting it short.
    #[tokio::test]
    async fn a_body_error_fails_the_part() {
        let chunks: Vec<std::io::Result<Bytes>> = vec![
            Ok(Bytes::from_static(b"abc")),
            Err(std::io::Error::other("client went away")),
        ];
        let mut stream: ByteStream = Box::pin(futures::stream::iter(chunks));
        let mut carry = None;
        let err = read_part(&mut stream, 64, &mut carry).await.unwrap_err();
        assert!(matches!(err, StorageError::Body(_)), "{err:?}");
    }

    /// Regression: a storage error carried through a body (the sources
    /// of `compose`'s fallback, read one after another) came back as a body
    /// error, so a missing chunk answered 500 instead of 404 and throttling
    /// 500 instead of 503. It comes back as the storage error it was.
    #[tokio::test]
    async fn storage_errors_in_a_body_keep_their_kind() {
        let throttled = StorageError::Backend {
            message: "SlowDown".into(),
            retryable: true,
        };
        for (inner, check) in [
            (
                StorageError::NotFound("uploads/x/chunks/1".into()),
                StorageError::is_not_found as fn(&StorageError) -> bool,
            ),
            (throttled, StorageError::is_retryable),
        ] {
            let chunks: Vec<std::io::Result<Bytes>> = vec![
                Ok(Bytes::from_static(b"abc")),
                Err(std::io::Error::other(inner)),
            ];
            let mut stream: ByteStream = Box::pin(futures::stream::iter(chunks));
            let err = read_part(&mut stream, 64, &mut None).await.unwrap_err();
            assert!(check(&err), "{err:?}");
        }
    }

    /// A body of one chunk is its own part, not copied; one chunk larger
    /// than a part is sliced, not copied either.
    #[tokio::test]
    async fn a_single_chunk_is_not_copied() {
        let chunk = Bytes::from_static(b"0123456789");
        let mut stream: ByteStream = Box::pin(futures::stream::iter([Ok(chunk.clone())]));
        let mut carry = None;
        let (part, eof) = read_part(&mut stream, 64, &mut carry).await.unwrap();
        assert!(eof);
        assert_eq!(part.as_ptr(), chunk.as_ptr());

        let mut stream: ByteStream = Box::pin(futures::stream::iter([Ok(chunk.clone())]));
        let (first, eof) = read_part(&mut stream, 6, &mut carry).await.unwrap();
        assert!(!eof);
        assert_eq!(first.as_ptr(), chunk.as_ptr());
        let (rest, eof) = read_part(&mut stream, 6, &mut carry).await.unwrap();
        assert_eq!(&rest[..], b"6789");
        assert!(eof);
    }
}
