//! The storage behaviour suite: each case is an async fn over
//! `Arc<dyn ObjectStore>`; `storage_suite!` instantiates the cases for one
//! driver. Included with `#[path]` by `registry/tests/storage_suite.rs`
//! (filesystem, in-process S3) and `e2e/tests/storage_minio.rs` (MinIO).

use std::sync::Arc;

use berth_registry::storage::{ByteRange, ByteStream, Key, ObjectStore, PutMode, StorageError};
use bytes::Bytes;

pub type Store = Arc<dyn ObjectStore>;
pub type TestResult = Result<(), Box<dyn std::error::Error + Send + Sync>>;

fn key(s: &str) -> Key {
    Key::new(s).unwrap()
}

fn body(chunks: &[&'static [u8]]) -> ByteStream {
    let items: Vec<std::io::Result<Bytes>> =
        chunks.iter().map(|c| Ok(Bytes::from_static(c))).collect();
    Box::pin(futures::stream::iter(items))
}

fn failing_body() -> ByteStream {
    let items: Vec<std::io::Result<Bytes>> = vec![
        Ok(Bytes::from_static(b"partial")),
        Err(std::io::Error::other("client went away")),
    ];
    Box::pin(futures::stream::iter(items))
}

async fn read(store: &Store, k: &str) -> Result<Bytes, StorageError> {
    store.get_bytes(&key(k)).await.map(|(data, _)| data)
}

pub async fn put_get_head(store: Store) -> TestResult {
    let meta = store
        .put(
            &key("a/b/c"),
            body(&[b"hello ", b"world"]),
            PutMode::Overwrite,
        )
        .await?;
    assert_eq!(meta.size, 11);
    assert_eq!(
        read(&store, "a/b/c").await?,
        Bytes::from_static(b"hello world")
    );
    let head = store.head(&key("a/b/c")).await?;
    assert_eq!((head.size, &head.etag), (meta.size, &meta.etag));
    assert!(
        store
            .head(&key("a/b/missing"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    assert!(
        store
            .get(&key("nope"), None)
            .await
            .unwrap_err()
            .is_not_found()
    );
    Ok(())
}

pub async fn ranged_get(store: Store) -> TestResult {
    store
        .put_bytes(
            &key("r"),
            Bytes::from_static(b"0123456789"),
            PutMode::Overwrite,
        )
        .await?;
    let object = store
        .get(&key("r"), Some(ByteRange { start: 2, end: 4 }))
        .await?;
    let data: Vec<Bytes> = futures::StreamExt::collect::<Vec<_>>(object.body)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(data.concat(), b"234");
    let beyond = store
        .get(&key("r"), Some(ByteRange { start: 5, end: 10 }))
        .await;
    assert!(
        matches!(beyond, Err(StorageError::InvalidRange)),
        "{beyond:?}"
    );
    Ok(())
}

pub async fn overwrite_changes_etag(store: Store) -> TestResult {
    let first = store
        .put_bytes(&key("o"), Bytes::from_static(b"one"), PutMode::Overwrite)
        .await?;
    let second = store
        .put_bytes(&key("o"), Bytes::from_static(b"two"), PutMode::Overwrite)
        .await?;
    assert_ne!(first.etag, second.etag);
    assert_eq!(read(&store, "o").await?, Bytes::from_static(b"two"));
    Ok(())
}

pub async fn create_new_is_exclusive(store: Store) -> TestResult {
    store
        .put_bytes(&key("c"), Bytes::from_static(b"first"), PutMode::CreateNew)
        .await?;
    let again = store
        .put_bytes(&key("c"), Bytes::from_static(b"second"), PutMode::CreateNew)
        .await;
    assert!(matches!(again, Err(StorageError::PreconditionFailed(_))));
    assert_eq!(read(&store, "c").await?, Bytes::from_static(b"first"));
    Ok(())
}

/// Racing creators: exactly one wins. Needs an atomic conditional put.
pub async fn create_new_race_has_one_winner(store: Store) -> TestResult {
    let mut tasks = Vec::new();
    for i in 0..8u8 {
        let store = store.clone();
        tasks.push(tokio::spawn(async move {
            store
                .put_bytes(&key("race"), Bytes::from(vec![i]), PutMode::CreateNew)
                .await
                .is_ok()
        }));
    }
    let mut winners = 0;
    for task in tasks {
        winners += usize::from(task.await?);
    }
    assert_eq!(winners, 1);
    Ok(())
}

pub async fn if_match_detects_changes(store: Store) -> TestResult {
    let missing = store
        .put_bytes(
            &key("m"),
            Bytes::from_static(b"x"),
            PutMode::IfMatch("nope".into()),
        )
        .await;
    assert!(matches!(missing, Err(StorageError::PreconditionFailed(_))));
    let v1 = store
        .put_bytes(&key("m"), Bytes::from_static(b"v1"), PutMode::Overwrite)
        .await?;
    let v2 = store
        .put_bytes(
            &key("m"),
            Bytes::from_static(b"v2"),
            PutMode::IfMatch(v1.etag.clone()),
        )
        .await?;
    let stale = store
        .put_bytes(
            &key("m"),
            Bytes::from_static(b"v3"),
            PutMode::IfMatch(v1.etag),
        )
        .await;
    assert!(matches!(stale, Err(StorageError::PreconditionFailed(_))));
    assert_eq!(store.head(&key("m")).await?.etag, v2.etag);
    assert_eq!(read(&store, "m").await?, Bytes::from_static(b"v2"));
    Ok(())
}

pub async fn failed_body_leaves_nothing(store: Store) -> TestResult {
    let fresh = store
        .put(&key("f/new"), failing_body(), PutMode::Overwrite)
        .await;
    assert!(matches!(fresh, Err(StorageError::Body(_))));
    assert!(store.head(&key("f/new")).await.unwrap_err().is_not_found());

    store
        .put_bytes(
            &key("f/old"),
            Bytes::from_static(b"kept"),
            PutMode::Overwrite,
        )
        .await?;
    assert!(
        store
            .put(&key("f/old"), failing_body(), PutMode::Overwrite)
            .await
            .is_err()
    );
    assert_eq!(read(&store, "f/old").await?, Bytes::from_static(b"kept"));
    Ok(())
}

pub async fn delete_is_idempotent(store: Store) -> TestResult {
    store
        .put_bytes(&key("d/x"), Bytes::from_static(b"x"), PutMode::Overwrite)
        .await?;
    store.delete(&key("d/x")).await?;
    store.delete(&key("d/x")).await?;
    assert!(store.head(&key("d/x")).await.unwrap_err().is_not_found());
    // The emptied directory does not block a key of the same name later.
    store
        .put_bytes(&key("d/x"), Bytes::from_static(b"y"), PutMode::Overwrite)
        .await?;
    Ok(())
}

pub async fn list_is_sorted_and_paginates(store: Store) -> TestResult {
    let names = ["l/a/b/c", "l/a/b-x", "l/a/b0", "l/z", "l/a/a", "other/q"];
    for name in names {
        store
            .put_bytes(&key(name), Bytes::from_static(b"."), PutMode::Overwrite)
            .await?;
    }
    let all = store.list("l/", None, 100).await?;
    let got: Vec<&str> = all.keys.iter().map(Key::as_str).collect();
    assert_eq!(got, ["l/a/a", "l/a/b-x", "l/a/b/c", "l/a/b0", "l/z"]);
    assert!(!all.truncated);

    let mut seen = Vec::new();
    let mut after: Option<String> = None;
    loop {
        let page = store.list("l/", after.as_deref(), 2).await?;
        seen.extend(page.keys.iter().map(|k| k.to_string()));
        after = page.keys.last().map(|k| k.to_string());
        if !page.truncated {
            break;
        }
    }
    assert_eq!(seen, got);
    // `truncated` is exact: a page that ends on the last key says so, and
    // one that stops before it says more follow (the registry's `Link`
    // header relies on this, without a second look).
    assert!(!store.list("l/", None, 5).await?.truncated);
    assert!(!store.list("l/", Some("l/a/b0"), 1).await?.truncated);
    assert!(store.list("l/", None, 4).await?.truncated);
    assert!(store.list("empty/", None, 10).await?.keys.is_empty());
    Ok(())
}

pub async fn copy_and_compose(store: Store) -> TestResult {
    store
        .put_bytes(&key("s/1"), Bytes::from_static(b"abc"), PutMode::Overwrite)
        .await?;
    store
        .put_bytes(&key("s/2"), Bytes::from_static(b"def"), PutMode::Overwrite)
        .await?;
    store.copy(&key("s/1"), &key("t/copy")).await?;
    assert_eq!(read(&store, "t/copy").await?, Bytes::from_static(b"abc"));

    let one = store.compose(&[key("s/2")], &key("t/one")).await?;
    assert_eq!(one.size, 3);
    let both = store
        .compose(&[key("s/1"), key("s/2")], &key("t/both"))
        .await?;
    assert_eq!(both.size, 6);
    assert_eq!(read(&store, "t/both").await?, Bytes::from_static(b"abcdef"));
    // Sources may go away afterwards without touching the result.
    store.delete(&key("s/2")).await?;
    assert_eq!(read(&store, "t/one").await?, Bytes::from_static(b"def"));
    assert!(
        store
            .compose(&[key("s/missing")], &key("t/x"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    Ok(())
}

pub async fn multipart_roundtrip(store: Store) -> TestResult {
    let dest = key("mp/object");
    let id = store.create_multipart(&dest).await?;
    // S3 wants every part but the last to be at least 5 MiB.
    let first = Bytes::from(vec![b'h'; 5 * 1024 * 1024]);
    let first_body: ByteStream = Box::pin(futures::stream::iter([Ok(first.clone())]));
    let p2 = store.put_part(&dest, &id, 2, body(&[b"world"])).await?;
    let p1 = store.put_part(&dest, &id, 1, first_body).await?;
    assert!(
        store.head(&dest).await.unwrap_err().is_not_found(),
        "invisible before completion"
    );
    let meta = store.complete_multipart(&dest, &id, &[p1, p2]).await?;
    assert_eq!(meta.size, first.len() as u64 + 5);
    let expected = [&first[..], b"world"].concat();
    assert_eq!(read(&store, "mp/object").await?, expected);

    let aborted = store.create_multipart(&key("mp/aborted")).await?;
    store
        .put_part(&key("mp/aborted"), &aborted, 1, body(&[b"x"]))
        .await?;
    store.abort_multipart(&key("mp/aborted"), &aborted).await?;
    assert!(
        store
            .head(&key("mp/aborted"))
            .await
            .unwrap_err()
            .is_not_found()
    );
    Ok(())
}

/// Aborting twice succeeds, and a part sent after the abort is refused as
/// unknown. (s3s-fs answers AccessDenied for unknown uploads, so this runs
/// on the filesystem and MinIO only.)
pub async fn multipart_abort_is_idempotent(store: Store) -> TestResult {
    let dest = key("mp/twice");
    let id = store.create_multipart(&dest).await?;
    store.abort_multipart(&dest, &id).await?;
    store.abort_multipart(&dest, &id).await?;
    let late = store.put_part(&dest, &id, 1, body(&[b"y"])).await;
    assert!(late.unwrap_err().is_not_found());
    Ok(())
}

/// Bodies larger than one part (and chunked oddly) round-trip intact.
pub async fn large_objects_use_parts(store: Store) -> TestResult {
    let data: Vec<u8> = (0..(20 * 1024 * 1024 + 123))
        .map(|i: u32| (i % 253) as u8)
        .collect();
    let data = Bytes::from(data);
    let pieces: Vec<std::io::Result<Bytes>> = data
        .chunks(3 * 1024 * 1024 + 7)
        .map(|c| Ok(Bytes::copy_from_slice(c)))
        .collect();
    let meta = store
        .put(
            &key("big/object"),
            Box::pin(futures::stream::iter(pieces)),
            PutMode::CreateNew,
        )
        .await?;
    assert_eq!(meta.size, data.len() as u64);
    assert_eq!(read(&store, "big/object").await?, data);
    let range = ByteRange {
        start: 6 * 1024 * 1024,
        end: 6 * 1024 * 1024 + 9,
    };
    let object = store.get(&key("big/object"), Some(range)).await?;
    assert_eq!(object.meta.size, data.len() as u64);
    let got: Vec<Bytes> = futures::StreamExt::collect::<Vec<_>>(object.body)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(got.concat(), &data[6 * 1024 * 1024..6 * 1024 * 1024 + 10]);
    // A range large enough to be streamed in several chunks.
    let (start, end) = (1024 * 1024 + 5, 3 * 1024 * 1024 + 17);
    let object = store
        .get(&key("big/object"), Some(ByteRange { start, end }))
        .await?;
    let got: Vec<Bytes> = futures::StreamExt::collect::<Vec<_>>(object.body)
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    assert_eq!(got.concat(), &data[start as usize..=end as usize]);
    // Composing small pieces (below any part minimum) works too.
    store
        .put_bytes(
            &key("big/a"),
            Bytes::from_static(b"abc"),
            PutMode::Overwrite,
        )
        .await?;
    let both = store
        .compose(
            &[key("big/a"), key("big/object"), key("big/a")],
            &key("big/both"),
        )
        .await?;
    assert_eq!(both.size, data.len() as u64 + 6);
    Ok(())
}

/// `storage_suite!(name, make_store())` instantiates every case for one
/// driver; `make_store()` returns the store and a guard that keeps its
/// backing resources alive. Add `race` after the maker for drivers whose
/// conditional puts are atomic.
macro_rules! storage_suite {
    ($driver:ident, $make:expr $(, $extra:ident)*) => {
        mod $driver {
            use super::*;
            storage_suite!(@cases $make;
                put_get_head, ranged_get, overwrite_changes_etag, create_new_is_exclusive,
                if_match_detects_changes, failed_body_leaves_nothing, delete_is_idempotent,
                list_is_sorted_and_paginates, copy_and_compose, multipart_roundtrip,
                large_objects_use_parts $(, $extra)*);
        }
    };
    (@cases $make:expr; $($case:ident),*) => {
        $(
            #[tokio::test]
            async fn $case() -> TestResult {
                let (store, _guard) = $make.await;
                cases::$case(store).await
            }
        )*
    };
}
