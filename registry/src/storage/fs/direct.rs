//! Writing the bulk of large files past the page cache (`O_DIRECT`).
//!
//! A buffered write copies every byte into the page cache, which the kernel
//! must first find memory for, and writes it back later; for a 1 GiB push
//! that was most of the server's CPU after SHA-256 (0.7-1.2 s of system time
//! for `dd` of 1 GiB with `fdatasync` here, against 0.1 s with `O_DIRECT`;
//! BENCHMARKS.md). Blob pushes are written once and read later, if at all,
//! by other clients, so caching them as they arrive buys little and evicts
//! what is hot (manifests, link records, popular layers). MinIO writes large
//! objects with `O_DIRECT` for the same reasons.
//!
//! Only what lies past [`DIRECT_FROM`] bytes of a file goes direct, in
//! [`DIRECT_BUFFER`] pieces from page-aligned anonymous mappings (direct I/O needs aligned
//! memory, offsets and lengths, and the workspace forbids `unsafe`); the
//! unaligned tail goes through the page cache, and the final `fdatasync`
//! makes both durable. A filesystem without direct I/O (tmpfs, some network
//! and FUSE filesystems) refuses the open (with any error) or the write
//! (with `EINVAL`); the write then goes through the page cache, as every
//! write did before.

use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use crate::mapped::Mapped;

/// Bytes of a file written through the page cache before the rest goes
/// direct. Most layers are smaller and stay cached for the pulls that
/// often follow a push; the rare huge ones (toolchains, models), which would
/// evict the most, are recognised by growing past it. The price is that the
/// first pull of what went direct reads the disk (BENCHMARKS.md).
pub(super) const DIRECT_FROM: u64 = 64 * 1024 * 1024;
/// Size of one direct write. With 1 MiB writes `dd` wrote 1 GiB here in
/// 0.5 s with 0.1 s of system time; with 256 KiB ones in 0.8-1.1 s and
/// 0.25-0.46 s.
pub(super) const DIRECT_BUFFER: usize = 1024 * 1024;
/// Alignment of direct writes: the largest logical block size of common
/// disks, a divisor of the page size the mappings are aligned to.
pub(super) const ALIGN: usize = 4096;

/// A new, empty buffer for one direct write: [`DIRECT_BUFFER`] bytes,
/// page-aligned. Fails only if the kernel refuses the mapping.
pub(super) fn new_buffer() -> io::Result<Mapped> {
    Mapped::new(DIRECT_BUFFER)
}

/// Whether the file being written has a direct descriptor.
#[derive(Debug)]
pub(super) enum Direct {
    /// Not tried yet: opened by the first direct write.
    Untried,
    Open(File),
    /// The filesystem refused; everything goes through the page cache.
    Unsupported,
}

impl Direct {
    /// Whether writes may still try to go direct.
    pub(super) fn possible(&self) -> bool {
        !matches!(self, Self::Unsupported)
    }

    /// Writes `data` at `offset`: where both are aligned (the memory to a
    /// page, as a [`Mapped`] buffer is, the offset to [`ALIGN`]) the aligned
    /// part direct, the rest, and everything if the filesystem has no
    /// direct I/O, through `cached`. Runs on a blocking thread.
    pub(super) fn write_at(
        &mut self,
        path: &Path,
        cached: &File,
        data: &[u8],
        offset: u64,
    ) -> io::Result<()> {
        let aligned = data.len() - data.len() % ALIGN;
        let memory_aligned = (data.as_ptr() as usize).is_multiple_of(ALIGN);
        let written = match self.file(path, offset) {
            Some(file) if aligned > 0 && memory_aligned => {
                match file.write_all_at(&data[..aligned], offset) {
                    Ok(()) => aligned,
                    Err(err) if refused(&err) => {
                        *self = Self::Unsupported;
                        0
                    }
                    Err(err) => return Err(err),
                }
            }
            _ => 0,
        };
        let rest = &data[written..];
        if rest.is_empty() {
            return Ok(());
        }
        cached.write_all_at(rest, offset + written as u64)
    }

    /// The direct descriptor, opened on first use; `None` where the
    /// filesystem has no direct I/O or `offset` is not aligned.
    fn file(&mut self, path: &Path, offset: u64) -> Option<&File> {
        if !offset.is_multiple_of(ALIGN as u64) {
            return None;
        }
        if matches!(self, Self::Untried) {
            // Any failure to open a second descriptor (no direct I/O, no
            // descriptors left, a FUSE filesystem refusing the flag) leaves
            // the cached one, which works: the write goes on through it.
            *self = match open_direct(path) {
                Ok(file) => Self::Open(file),
                Err(err) => {
                    tracing::debug!(path = %path.display(), error = %err, "writing through the page cache");
                    Self::Unsupported
                }
            };
        }
        match self {
            Self::Open(file) => Some(file),
            _ => None,
        }
    }
}

/// A second, direct descriptor on the file at `path`.
#[cfg(any(target_os = "linux", target_os = "android", target_os = "freebsd"))]
fn open_direct(path: &Path) -> io::Result<File> {
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_DIRECT)
        .open(path)
}

/// Elsewhere (macOS has no `O_DIRECT`) every write goes through the cache.
#[cfg(not(any(target_os = "linux", target_os = "android", target_os = "freebsd")))]
fn open_direct(_path: &Path) -> io::Result<File> {
    Err(io::Error::from(io::ErrorKind::Unsupported))
}

/// Whether `err` says the filesystem does not do direct I/O (or not with
/// this alignment), rather than that the write failed.
fn refused(err: &io::Error) -> bool {
    err.raw_os_error() == Some(libc::EINVAL)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    fn filled(len: usize) -> Mapped {
        let mut buffer = new_buffer().unwrap();
        let data: Vec<u8> = (0..len).map(|i| (i % 251) as u8).collect();
        assert_eq!(buffer.push(&data), len);
        buffer
    }

    /// On this machine's filesystem (ext4, as in CI) an aligned write opens
    /// the direct descriptor and is not refused; an unaligned tail follows
    /// through the page cache, and the file holds every byte in place.
    #[test]
    fn aligned_writes_go_direct_and_tails_through_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let cached = File::create(&path).unwrap();
        let mut direct = Direct::Untried;
        let buffer = filled(DIRECT_BUFFER - 100);
        direct
            .write_at(&path, &cached, buffer.content(), 0)
            .unwrap();
        direct
            .write_at(&path, &cached, buffer.content(), DIRECT_BUFFER as u64)
            .unwrap();
        assert!(
            matches!(direct, Direct::Open(_)),
            "direct I/O was not used on {}: {direct:?}",
            dir.path().display()
        );
        let stored = std::fs::read(&path).unwrap();
        assert_eq!(stored.len(), 2 * DIRECT_BUFFER - 100);
        let expected = buffer.content();
        assert!(stored[..DIRECT_BUFFER - 100] == *expected, "first differs");
        assert!(
            stored[DIRECT_BUFFER - 100..DIRECT_BUFFER] == [0; 100],
            "gap"
        );
        assert!(stored[DIRECT_BUFFER..] == *expected, "second differs");
    }

    /// An unaligned offset never opens the direct descriptor, and once the
    /// filesystem refused, everything goes through the page cache.
    #[test]
    fn unaligned_offsets_and_refusing_filesystems_use_the_cache() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let cached = File::create(&path).unwrap();
        let buffer = filled(3 * ALIGN);
        let mut direct = Direct::Untried;
        direct
            .write_at(&path, &cached, buffer.content(), 7)
            .unwrap();
        assert!(matches!(direct, Direct::Untried), "{direct:?}");
        let mut refused = Direct::Unsupported;
        refused
            .write_at(&path, &cached, buffer.content(), (7 + 3 * ALIGN) as u64)
            .unwrap();
        assert!(!refused.possible());
        let stored = std::fs::read(&path).unwrap();
        let expected = buffer.content();
        assert_eq!(stored.len(), 7 + 6 * ALIGN);
        assert!(stored[7..7 + 3 * ALIGN] == *expected, "first differs");
        assert!(stored[7 + 3 * ALIGN..] == *expected, "second differs");
    }

    /// Memory that is not page-aligned (a chunk of a client's body) goes
    /// through the page cache, without counting as a refusal: the kernel
    /// would refuse it with the same `EINVAL` as a filesystem without
    /// direct I/O.
    #[test]
    fn unaligned_memory_goes_through_the_cache_and_is_no_refusal() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("file");
        let cached = File::create(&path).unwrap();
        let buffer = filled(3 * ALIGN + 1);
        let unaligned = &buffer.content()[1..];
        let mut direct = Direct::Untried;
        direct.write_at(&path, &cached, unaligned, 0).unwrap();
        assert!(direct.possible(), "{direct:?}");
        assert!(
            std::fs::read(&path).unwrap() == unaligned,
            "stored bytes differ"
        );
    }

    #[test]
    fn refusal_is_einval_only() {
        assert!(refused(&io::Error::from_raw_os_error(libc::EINVAL)));
        assert!(!refused(&io::Error::from_raw_os_error(libc::EIO)));
        assert!(!refused(&io::Error::other("x")));
    }
}
