//! Byte buffers in anonymous memory mappings of their own.
//!
//! Large buffers live outside the heap so that freeing them gives the
//! memory back to the kernel: as heap `Vec`s, glibc's dynamic mmap
//! threshold moved them into per-thread arenas, which kept them
//! (BENCHMARKS.md). A mapping is also page-aligned, so the filesystem
//! driver can write a buffer past the page cache (`O_DIRECT`) as it is,
//! and untouched pages cost nothing, so a short last buffer costs only what
//! it holds. The workspace forbids `unsafe`; `memmap2`'s `map_anon` is safe.

use std::sync::{Arc, Mutex};

use bytes::Bytes;
use memmap2::MmapMut;

/// A fixed-capacity buffer, the first [`Mapped::len`] bytes of which hold
/// content.
#[derive(Debug)]
pub struct Mapped {
    map: MmapMut,
    filled: usize,
}

impl Mapped {
    /// A new, empty buffer; fails only if the kernel refuses the mapping.
    pub fn new(capacity: usize) -> std::io::Result<Self> {
        Ok(Self {
            map: MmapMut::map_anon(capacity)?,
            filled: 0,
        })
    }

    /// Appends as much of `bytes` as fits; returns how much that was.
    pub fn push(&mut self, bytes: &[u8]) -> usize {
        let n = bytes.len().min(self.room());
        self.map[self.filled..self.filled + n].copy_from_slice(&bytes[..n]);
        self.filled += n;
        n
    }

    /// The content.
    pub fn content(&self) -> &[u8] {
        &self.map[..self.filled]
    }

    /// Bytes of content.
    pub fn len(&self) -> usize {
        self.filled
    }

    /// Whether the buffer holds nothing.
    pub fn is_empty(&self) -> bool {
        self.filled == 0
    }

    /// Bytes that still fit.
    pub fn room(&self) -> usize {
        self.map.len() - self.filled
    }

    /// Empties the buffer for reuse.
    pub fn clear(&mut self) {
        self.filled = 0;
    }

    /// The content as `Bytes`, without a copy; the mapping is unmapped
    /// when the last clone is dropped.
    pub fn freeze(self) -> Bytes {
        let filled = self.filled;
        Bytes::from_owner(self.map).slice(..filled)
    }

    /// The content as `Bytes`, without a copy; when the last clone is
    /// dropped the buffer, emptied, goes to `spare` for reuse (a reused
    /// mapping takes no page faults; a fresh one takes one per page).
    pub fn freeze_into(self, spare: &Spare) -> Bytes {
        let filled = self.filled;
        Bytes::from_owner(Returning {
            buffer: Some(self),
            spare: spare.clone(),
        })
        .slice(..filled)
    }
}

/// Emptied buffers waiting for reuse.
pub type Spare = Arc<Mutex<Vec<Mapped>>>;

/// A frozen buffer's owner: puts it back in its [`Spare`] on drop.
struct Returning {
    buffer: Option<Mapped>,
    spare: Spare,
}

impl AsRef<[u8]> for Returning {
    fn as_ref(&self) -> &[u8] {
        self.buffer.as_ref().map_or(&[], |b| &b.map[..])
    }
}

impl Drop for Returning {
    fn drop(&mut self) {
        if let (Some(mut buffer), Ok(mut spare)) = (self.buffer.take(), self.spare.lock()) {
            buffer.clear();
            spare.push(buffer);
        }
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use super::*;

    #[test]
    fn pushes_what_fits_and_freezes_without_a_copy() {
        let mut buffer = Mapped::new(8192).unwrap();
        assert_eq!(buffer.push(&[7; 5000]), 5000);
        assert_eq!(buffer.push(&[9; 5000]), 3192);
        assert_eq!(buffer.room(), 0);
        let ptr = buffer.content().as_ptr();
        assert!((ptr as usize).is_multiple_of(4096), "not page-aligned");
        let bytes = buffer.freeze();
        assert_eq!(bytes.as_ptr(), ptr);
        assert_eq!(bytes.len(), 8192);
        assert!(bytes[..5000].iter().all(|&b| b == 7) && bytes[5000..].iter().all(|&b| b == 9));
    }

    #[test]
    fn a_frozen_buffer_returns_to_its_spare_when_the_last_clone_drops() {
        let spare = Spare::default();
        let mut buffer = Mapped::new(4096).unwrap();
        buffer.push(b"abc");
        let bytes = buffer.freeze_into(&spare);
        let clone = bytes.clone();
        assert_eq!(&clone[..], b"abc");
        drop(bytes);
        assert!(spare.lock().unwrap().is_empty(), "returned while held");
        drop(clone);
        let returned = spare.lock().unwrap().pop().unwrap();
        assert!(returned.is_empty() && returned.room() == 4096);
    }
}
