//! One image layer: a gzip'd tar of a small root filesystem, reproducible
//! byte for byte.
//!
//! The same inputs give the same digest: entries are sorted by path with
//! their parent directories added, every entry has one fixed mtime and
//! numeric owners without names, and the gzip header carries no time or
//! file name.

use std::collections::BTreeMap;
use std::io::Write as _;

use anyhow::{Context, Result};
use flate2::{Compression, GzBuilder};

use crate::oci::sha256_digest;

/// Mode of the parent directories the packer adds.
const PARENT_MODE: u32 = 0o755;

/// One file or directory of a root filesystem.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// Relative to the root, no leading or trailing `/`.
    path: String,
    mode: u32,
    /// Owner uid, also used as the gid.
    owner: u64,
    /// `None` for a directory.
    contents: Option<Vec<u8>>,
}

impl Entry {
    /// A root-owned file.
    pub fn file(path: &str, mode: u32, contents: Vec<u8>) -> Self {
        Self {
            path: path.trim_matches('/').to_string(),
            mode,
            owner: 0,
            contents: Some(contents),
        }
    }

    /// A directory owned by `owner` (uid and gid).
    pub fn dir(path: &str, mode: u32, owner: u64) -> Self {
        Self {
            path: path.trim_matches('/').to_string(),
            mode,
            owner,
            contents: None,
        }
    }
}

/// A packed layer: the compressed blob and the digest of the uncompressed
/// tar (the config's `rootfs.diff_ids`).
#[derive(Debug)]
pub struct Layer {
    pub gzip: Vec<u8>,
    pub diff_id: String,
}

/// Packs `entries` (and their parent directories, root-owned, 0755), all
/// with modification time `mtime` (seconds since the epoch).
pub fn pack(entries: Vec<Entry>, mtime: u64) -> Result<Layer> {
    let mut builder = tar::Builder::new(Vec::new());
    for entry in with_parents(entries).values() {
        append(&mut builder, entry, mtime)
            .with_context(|| format!("cannot add /{} to the layer", entry.path))?;
    }
    let tar = builder
        .into_inner()
        .context("cannot finish the layer tar")?;
    let diff_id = sha256_digest(&tar);
    let mut gzip = GzBuilder::new().write(Vec::new(), Compression::default());
    gzip.write_all(&tar).context("cannot compress the layer")?;
    let gzip = gzip.finish().context("cannot compress the layer")?;
    Ok(Layer { gzip, diff_id })
}

/// The entries by path, with every missing ancestor directory added; a
/// parent sorts before its children.
fn with_parents(entries: Vec<Entry>) -> BTreeMap<String, Entry> {
    let mut tree: BTreeMap<String, Entry> = entries
        .into_iter()
        .map(|entry| (entry.path.clone(), entry))
        .collect();
    let parents: Vec<String> = tree.keys().flat_map(|path| ancestors(path)).collect();
    for parent in parents {
        tree.entry(parent.clone())
            .or_insert_with(|| Entry::dir(&parent, PARENT_MODE, 0));
    }
    tree
}

/// `a/b/c` → `a`, `a/b`.
fn ancestors(path: &str) -> Vec<String> {
    path.match_indices('/')
        .map(|(at, _)| path[..at].to_string())
        .collect()
}

fn append(builder: &mut tar::Builder<Vec<u8>>, entry: &Entry, mtime: u64) -> Result<()> {
    let mut header = tar::Header::new_ustar();
    header.set_mode(entry.mode);
    header.set_uid(entry.owner);
    header.set_gid(entry.owner);
    header.set_mtime(mtime);
    match &entry.contents {
        Some(contents) => {
            header.set_entry_type(tar::EntryType::Regular);
            header.set_size(contents.len() as u64);
            builder.append_data(&mut header, &entry.path, contents.as_slice())?;
        }
        None => {
            header.set_entry_type(tar::EntryType::Directory);
            header.set_size(0);
            builder.append_data(&mut header, format!("{}/", entry.path), std::io::empty())?;
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::io::Read as _;

    use super::*;

    fn sample() -> Vec<Entry> {
        vec![
            Entry::file("/usr/local/bin/tool", 0o755, b"#!binary".to_vec()),
            Entry::dir("/tmp", 0o1777, 0),
            Entry::dir("/var/lib/data", 0o755, 65532),
            Entry::file(
                "/etc/passwd",
                0o644,
                b"root:x:0:0::/:/sbin/nologin\n".to_vec(),
            ),
        ]
    }

    fn unpack(layer: &Layer) -> Vec<(String, u32, u64, u64, Vec<u8>)> {
        let mut tar = Vec::new();
        flate2::read::GzDecoder::new(layer.gzip.as_slice())
            .read_to_end(&mut tar)
            .unwrap();
        assert_eq!(sha256_digest(&tar), layer.diff_id);
        let mut archive = tar::Archive::new(tar.as_slice());
        archive
            .entries()
            .unwrap()
            .map(|entry| {
                let mut entry = entry.unwrap();
                let header = entry.header().clone();
                let mut data = Vec::new();
                entry.read_to_end(&mut data).unwrap();
                (
                    entry.path().unwrap().display().to_string(),
                    header.mode().unwrap(),
                    header.uid().unwrap(),
                    header.mtime().unwrap(),
                    data,
                )
            })
            .collect()
    }

    #[test]
    fn entries_are_sorted_with_parents_owners_modes_and_one_mtime() {
        let entries = unpack(&pack(sample(), 1_700_000_000).unwrap());
        let paths: Vec<&str> = entries.iter().map(|e| e.0.as_str()).collect();
        assert_eq!(
            paths,
            [
                "etc/",
                "etc/passwd",
                "tmp/",
                "usr/",
                "usr/local/",
                "usr/local/bin/",
                "usr/local/bin/tool",
                "var/",
                "var/lib/",
                "var/lib/data/",
            ]
        );
        assert!(entries.iter().all(|e| e.3 == 1_700_000_000));
        let tool = &entries[6];
        assert_eq!(
            (tool.1, tool.2, tool.4.as_slice()),
            (0o755, 0, &b"#!binary"[..])
        );
        assert_eq!((entries[2].1, entries[2].2), (0o1777, 0));
        assert_eq!((entries[9].1, entries[9].2), (0o755, 65532));
        assert_eq!((entries[8].1, entries[8].2), (0o755, 0));
    }

    #[test]
    fn the_same_inputs_give_the_same_bytes() {
        let mut reversed = sample();
        reversed.reverse();
        let a = pack(sample(), 42).unwrap();
        let b = pack(reversed, 42).unwrap();
        assert_eq!(a.gzip, b.gzip);
        assert_ne!(pack(sample(), 43).unwrap().diff_id, a.diff_id);
    }
}
