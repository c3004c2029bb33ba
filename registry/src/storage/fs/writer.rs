//! Streaming a body into a new, fsynced file without holding the body in
//! memory or stalling the request on the disk.
//!
//! Body bytes are copied into pooled buffers of [`BUFFER_SIZE`]; one buffer
//! is written on the blocking pool while the next fills, so an upload holds
//! two buffers and hyper's read buffer is free again as soon as a chunk is
//! copied. (`tokio::fs::File` copied every byte into a buffer of its own of
//! up to 2 MiB and handed off each write, open and sync separately.)
//!
//! Durability without a long stall at the end: a large file is flushed to
//! disk while it is written (an `fdatasync` in the background every
//! [`SYNC_EVERY`] bytes), so the fsync that must precede the 201 finds
//! little left to write. With one sync at the end, pushing 1 GiB waited
//! about 0.3 s on it after the last byte arrived (BENCHMARKS.md).

use std::fs::File;
use std::io::Write;
use std::path::Path;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use tokio::task::JoinHandle;

use super::buffers::{self, BufferPool};
use super::joined;
use crate::storage::{ByteStream, StorageError, StorageResult};

/// Bytes written between the starts of two background syncs.
const SYNC_EVERY: u64 = 32 * 1024 * 1024;

/// Writes `body` to a new file at `path` and fsyncs it, on the blocking
/// pool (see [`BatchWriter`]). The last chunk is held back until the body
/// ends, so that a body of one chunk (a link record, a manifest) is written
/// as it is: no copy, no pooled buffer, one hand-off for create, write and
/// sync together.
pub(super) async fn write_new(
    path: &Path,
    mut body: ByteStream,
    pool: &Arc<BufferPool>,
) -> StorageResult<()> {
    let mut writer = BatchWriter {
        path,
        pool,
        file: None,
        in_flight: None,
        buffer: None,
        syncing: None,
        unsynced: 0,
    };
    let mut held: Option<Bytes> = None;
    let result = loop {
        match body.next().await {
            Some(Ok(chunk)) => {
                if let Some(previous) = held.replace(chunk)
                    && let Err(err) = writer.push(&previous).await
                {
                    break Err(err);
                }
            }
            Some(Err(err)) => break Err(StorageError::Body(err)),
            None => break writer.finish(held.take()).await,
        }
    };
    if result.is_err() {
        writer.settle().await;
    }
    result
}

/// A file being written in batches; see the module docs.
struct BatchWriter<'a> {
    path: &'a Path,
    pool: &'a Arc<BufferPool>,
    /// The file, between writes; created by the first one.
    file: Option<Arc<File>>,
    /// The write under way; it hands the file back.
    in_flight: Option<JoinHandle<std::io::Result<Arc<File>>>>,
    buffer: Option<buffers::Buffer>,
    /// The background `fdatasync` under way, if any.
    syncing: Option<JoinHandle<std::io::Result<()>>>,
    /// Bytes handed to writes since the last background sync started.
    unsynced: u64,
}

impl BatchWriter<'_> {
    /// Copies `bytes` in, writing each buffer that fills.
    async fn push(&mut self, mut bytes: &[u8]) -> StorageResult<()> {
        while !bytes.is_empty() {
            let buffer = self.buffer.get_or_insert_with(|| self.pool.take());
            bytes = &bytes[buffer.push(bytes)..];
            if buffer.room() == 0
                && let Some(full) = self.buffer.take()
            {
                self.write(full.into_bytes(), false).await?;
            }
        }
        Ok(())
    }

    /// Writes what is buffered and `last`, then syncs the file.
    async fn finish(&mut self, last: Option<Bytes>) -> StorageResult<()> {
        match last {
            // Nothing buffered: `last` goes as it is, without a copy.
            Some(last) if self.buffer.is_none() => return self.write(last, true).await,
            Some(last) => self.push(&last).await?,
            None => {}
        }
        let tail = self
            .buffer
            .take()
            .map_or_else(Bytes::new, buffers::Buffer::into_bytes);
        self.write(tail, true).await
    }

    /// Hands `data` to the blocking pool once the previous write is done;
    /// the last write is awaited, with the file's fsync.
    async fn write(&mut self, data: Bytes, last: bool) -> StorageResult<()> {
        if let Some(task) = self.in_flight.take() {
            self.file = Some(joined(task.await)?);
        }
        if !last {
            self.sync_in_background().await?;
        } else if let Some(task) = self.syncing.take() {
            // A sync still running must succeed too: after a failed fsync
            // a later one may report success for pages that were lost.
            joined(task.await)?;
        }
        self.unsynced += data.len() as u64;
        let (path, open) = (self.path.to_path_buf(), self.file.take());
        let task = tokio::task::spawn_blocking(move || {
            let file = match open {
                Some(file) => file,
                None => Arc::new(File::create(&path)?),
            };
            (&*file).write_all(&data)?;
            if last {
                file.sync_data()?;
            }
            Ok(file)
        });
        if last {
            return joined(task.await).map(drop);
        }
        self.in_flight = Some(task);
        Ok(())
    }

    /// Starts an `fdatasync` of what is written so far once [`SYNC_EVERY`]
    /// bytes have accumulated and the previous one is done (its error, if
    /// any, fails the write).
    async fn sync_in_background(&mut self) -> StorageResult<()> {
        if self.unsynced < SYNC_EVERY {
            return Ok(());
        }
        let Some(file) = self.file.clone() else {
            return Ok(());
        };
        if let Some(task) = self.syncing.take_if(|task| task.is_finished()) {
            joined(task.await)?;
        }
        if self.syncing.is_none() {
            self.unsynced = 0;
            self.syncing = Some(tokio::task::spawn_blocking(move || file.sync_data()));
        }
        Ok(())
    }

    /// Waits for work still under way: a write may yet create the file,
    /// and the caller's clean-up of a failed write must come after it.
    async fn settle(&mut self) {
        if let Some(task) = self.in_flight.take() {
            let _ = task.await;
        }
        if let Some(task) = self.syncing.take() {
            let _ = task.await;
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::super::buffers::BUFFER_SIZE;
    use super::*;

    fn pattern(len: usize) -> Vec<u8> {
        (0..len).map(|i| (i % 253) as u8).collect()
    }

    fn body_of(data: &[u8], fail_at_end: bool) -> ByteStream {
        let mut chunks: Vec<std::io::Result<Bytes>> = data
            .chunks(1 << 20)
            .map(|c| Ok(Bytes::copy_from_slice(c)))
            .collect();
        if fail_at_end {
            chunks.push(Err(std::io::Error::other("client went away")));
        }
        Box::pin(futures::stream::iter(chunks))
    }

    /// A file large enough for several background syncs is stored whole.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn background_syncs_keep_every_byte() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let pool = Arc::new(BufferPool::default());
        let data = pattern(usize::try_from(2 * SYNC_EVERY).unwrap() + 54_321);
        write_new(&path, body_of(&data, false), &pool)
            .await
            .unwrap();
        assert!(std::fs::read(&path).unwrap() == data, "stored bytes differ");
    }

    /// A body failing after background syncs started fails the write with
    /// the body's error, once the writes under way have finished. (Whether
    /// `settle` waited is a race this test cannot force; it checks that
    /// what came before the failure was written whole and in order.)
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn failure_after_background_syncs_settles_everything() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let pool = Arc::new(BufferPool::default());
        let data = pattern(usize::try_from(SYNC_EVERY).unwrap() + (3 << 20));
        let err = write_new(&path, body_of(&data, true), &pool)
            .await
            .unwrap_err();
        assert!(matches!(err, StorageError::Body(_)), "{err:?}");
        // Every chunk but the last (held back until the body ends) filled
        // whole buffers, all written: the file holds exactly those bytes.
        let written = data.len() - (1 << 20);
        assert_eq!(written % BUFFER_SIZE, 0);
        assert!(
            std::fs::read(&path).unwrap() == data[..written],
            "bytes differ"
        );
    }
}
