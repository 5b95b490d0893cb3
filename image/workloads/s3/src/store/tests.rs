use super::*;
use crate::checksum::Algorithm;

fn store(dir: &Path) -> Store {
    Store::open(
        dir,
        StoreOptions {
            quota: Quota::unlimited(),
            min_part_size: 4,
        },
    )
    .unwrap()
}

fn put(s: &Store, bucket: &str, key: &str, data: &[u8]) -> Result<ObjectMeta, StoreError> {
    put_with(s, bucket, key, data, &Expected::default(), &[])
}

fn put_with(
    s: &Store,
    bucket: &str,
    key: &str,
    data: &[u8],
    expected: &Expected,
    trailers: &[(String, String)],
) -> Result<ObjectMeta, StoreError> {
    let mut w = s.begin_put(bucket, key, Some(data.len() as u64), expected)?;
    for chunk in data.chunks(3) {
        s.write(&mut w, chunk)?;
    }
    let attrs = Attrs {
        content_type: Some("text/plain".into()),
        ..Default::default()
    };
    s.commit_put(w, bucket, key, attrs, expected, trailers)
}

fn read(s: &Store, bucket: &str, key: &str) -> Vec<u8> {
    let (meta, f) = s.open_object(bucket, key).unwrap();
    let mut out = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(f, meta.size), &mut out).unwrap();
    out
}

fn tmp_entries(dir: &Path) -> usize {
    fs::read_dir(dir.join("tmp")).unwrap().count()
}

#[test]
fn put_replaces_atomically_and_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let m1 = put(&s, "data", "k/ey with spaces", b"first version").unwrap();
    assert_eq!(
        m1.etag,
        hex::encode(s3s::crypto::Md5::checksum(b"first version"))
    );
    put(&s, "data", "k/ey with spaces", b"second").unwrap();
    assert_eq!(read(&s, "data", "k/ey with spaces"), b"second");
    assert_eq!(s.used(), 6);
    assert_eq!(tmp_entries(dir.path()), 0);
    drop(s);
    let s = store(dir.path());
    assert_eq!(read(&s, "data", "k/ey with spaces"), b"second");
    let (meta, _) = s.open_object("data", "k/ey with spaces").unwrap();
    assert_eq!(meta.attrs.content_type.as_deref(), Some("text/plain"));
    assert_eq!(s.used(), 6);
}

use s3s::crypto::Checksum as _;

#[test]
fn an_abandoned_write_leaves_the_old_object_and_no_temp_file() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    put(&s, "data", "k", b"old").unwrap();
    let mut w = s
        .begin_put("data", "k", None, &Expected::default())
        .unwrap();
    s.write(&mut w, b"new but never committed").unwrap();
    assert_eq!(tmp_entries(dir.path()), 1);
    drop(w); // the client went away
    assert_eq!(tmp_entries(dir.path()), 0);
    assert_eq!(read(&s, "data", "k"), b"old");
}

#[test]
fn leftover_temp_files_are_removed_at_open() {
    let dir = tempfile::tempdir().unwrap();
    drop(store(dir.path()));
    fs::write(dir.path().join("tmp/half-written"), b"xx").unwrap();
    fs::create_dir(dir.path().join("tmp/half-bucket")).unwrap();
    let _s = store(dir.path());
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn a_forged_checksum_is_bad_digest_and_stores_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    put(&s, "data", "k", b"old").unwrap();
    let mut e = Expected::default();
    e.add_value(Algorithm::Crc32, "AAAAAA==").unwrap();
    let err = put_with(&s, "data", "k", b"hello world", &e, &[]).unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::Checksum(ChecksumError::Mismatch(Algorithm::Crc32))
        ),
        "{err}"
    );
    let mut t = Expected::default();
    t.add_trailer_names("x-amz-checksum-sha256").unwrap();
    let forged = [(
        "x-amz-checksum-sha256".to_owned(),
        "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzeA=".to_owned(),
    )];
    assert!(put_with(&s, "data", "k", b"hello world", &t, &forged).is_err());
    let err = put_with(&s, "data", "new", b"hello world", &e, &[]).unwrap_err();
    assert!(matches!(err, StoreError::Checksum(_)));
    assert_eq!(read(&s, "data", "k"), b"old");
    assert!(matches!(
        s.open_object("data", "new"),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert_eq!(tmp_entries(dir.path()), 0);
    // the right values are accepted and stored with the object
    let good = [(
        "x-amz-checksum-sha256".to_owned(),
        "uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=".to_owned(),
    )];
    let m = put_with(&s, "data", "k", b"hello world", &t, &good).unwrap();
    assert_eq!(
        m.checksums.get(Algorithm::Sha256),
        Some("uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzek=")
    );
}

#[test]
fn quota_refuses_before_and_during_the_body_and_counts_replacements() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            quota: Quota::bytes(10),
            min_part_size: 1,
        },
    )
    .unwrap();
    s.create_bucket("data").unwrap();
    put(&s, "data", "a", b"123456").unwrap();
    // known length: refused before a byte is read
    let err = s
        .begin_put("data", "b", Some(5), &Expected::default())
        .unwrap_err();
    assert!(matches!(err, StoreError::Quota(_)), "{err}");
    // unknown length (chunked): refused when the body passes the room
    let mut w = s
        .begin_put("data", "b", None, &Expected::default())
        .unwrap();
    s.write(&mut w, b"1234").unwrap();
    assert!(matches!(s.write(&mut w, b"5"), Err(StoreError::Quota(_))));
    drop(w);
    // replacing "a" frees its 6 bytes
    put(&s, "data", "a", b"1234567890").unwrap();
    assert_eq!(s.used(), 10);
    assert!(matches!(
        s.open_object("data", "b"),
        Err(StoreError::NoSuchKey { .. })
    ));
    s.delete_object("data", "a").unwrap();
    assert_eq!(s.used(), 0);
    // parts count too
    let up = s
        .create_upload("data", "m", Attrs::default(), None, None)
        .unwrap();
    let mut w = s
        .begin_part(
            "data",
            "m",
            &up.upload_id,
            1,
            Some(8),
            &Expected::default(),
            None,
        )
        .unwrap();
    s.write(&mut w, b"12345678").unwrap();
    s.commit_part(w, "data", "m", &up.upload_id, 1, &Expected::default(), &[])
        .unwrap();
    assert!(matches!(
        s.begin_put("data", "x", Some(3), &Expected::default()),
        Err(StoreError::Quota(_))
    ));
    s.abort_upload("data", "m", &up.upload_id).unwrap();
    assert_eq!(s.used(), 0);
}

#[test]
fn buckets_names_existence_and_emptiness() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    assert!(matches!(
        s.create_bucket("Bad_Name"),
        Err(StoreError::Name(NameError::InvalidBucketName { .. }))
    ));
    s.create_bucket("photos").unwrap();
    assert!(matches!(
        s.create_bucket("photos"),
        Err(StoreError::BucketExists(_))
    ));
    assert!(matches!(
        s.begin_put("nope", "k", None, &Expected::default()),
        Err(StoreError::NoSuchBucket(_))
    ));
    assert!(matches!(
        s.begin_put("photos", &"k".repeat(1025), None, &Expected::default()),
        Err(StoreError::Name(NameError::KeyTooLong { len: 1025 }))
    ));
    put(&s, "photos", "a.jpg", b"jpg").unwrap();
    assert!(matches!(
        s.delete_bucket("photos"),
        Err(StoreError::BucketNotEmpty(_))
    ));
    assert_eq!(read(&s, "photos", "a.jpg"), b"jpg");
    assert!(s.delete_object("photos", "a.jpg").unwrap());
    assert!(!s.delete_object("photos", "a.jpg").unwrap());
    s.delete_bucket("photos").unwrap();
    assert!(s.list_buckets().is_empty());
    drop(s);
    assert!(store(dir.path()).list_buckets().is_empty());
}

#[test]
fn configured_buckets_are_created_once_and_kept_with_their_objects_across_restarts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    assert!(s.ensure_bucket("photos").unwrap(), "created");
    assert!(!s.ensure_bucket("photos").unwrap(), "kept");
    put(&s, "photos", "a.jpg", b"jpg").unwrap();
    assert!(matches!(
        s.ensure_bucket("Bad_Name"),
        Err(StoreError::Name(NameError::InvalidBucketName { .. }))
    ));
    drop(s);
    // The next start with the same list and one more: the old bucket keeps its object.
    let s = store(dir.path());
    assert!(!s.ensure_bucket("photos").unwrap());
    assert!(s.ensure_bucket("logs").unwrap());
    assert_eq!(read(&s, "photos", "a.jpg"), b"jpg");
    let names: Vec<_> = s.list_buckets().into_iter().map(|b| b.name).collect();
    assert_eq!(names, ["logs", "photos"]);
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn listing_through_the_store_pages_with_delimiter() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    for k in ["logs/1", "logs/2", "readme", "src/a.rs", "src/b.rs"] {
        put(&s, "data", k, k.as_bytes()).unwrap();
    }
    let q = ListQuery {
        delimiter: Some("/".into()),
        max_keys: 2,
        ..Default::default()
    };
    let p = s.list_objects("data", &q).unwrap();
    assert_eq!(p.common_prefixes, vec!["logs/"]);
    assert_eq!(
        p.objects
            .iter()
            .map(|(k, _)| k.as_str())
            .collect::<Vec<_>>(),
        vec!["readme"]
    );
    assert!(p.truncated);
    let q = ListQuery {
        after: p.next_marker,
        ..q
    };
    let p = s.list_objects("data", &q).unwrap();
    assert_eq!(p.common_prefixes, vec!["src/"]);
    assert!(!p.truncated);
}

fn upload_part(s: &Store, key: &str, id: &str, n: i64, data: &[u8]) -> ObjectMeta {
    let mut w = s
        .begin_part(
            "data",
            key,
            id,
            n,
            Some(data.len() as u64),
            &Expected::default(),
            None,
        )
        .unwrap();
    s.write(&mut w, data).unwrap();
    s.commit_part(w, "data", key, id, n, &Expected::default(), &[])
        .unwrap()
}

fn part(n: i64, etag: &str) -> CompletePart {
    CompletePart {
        part_number: n,
        etag: Some(format!("\"{etag}\"")),
        checksums: vec![],
    }
}

#[test]
fn multipart_parts_in_order_missing_parts_and_small_parts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    put(&s, "data", "big", b"old").unwrap();
    let up = s
        .create_upload(
            "data",
            "big",
            Attrs::default(),
            Some(Algorithm::Crc32),
            None,
        )
        .unwrap();
    let id = up.upload_id.as_str();
    let p2 = upload_part(&s, "big", id, 2, b"BBBBB");
    let p1 = upload_part(&s, "big", id, 1, b"AAAAA");
    let p3 = upload_part(&s, "big", id, 3, b"C");
    let err = s
        .complete_upload("data", "big", id, &[part(2, &p2.etag), part(1, &p1.etag)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidPartOrder {
                part: 1,
                previous: 2
            }
        ),
        "{err}"
    );
    let err = s
        .complete_upload("data", "big", id, &[part(1, &p1.etag), part(4, "00")])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidPart { part: 4, .. }),
        "{err}"
    );
    let err = s
        .complete_upload("data", "big", id, &[part(1, &p2.etag)])
        .unwrap_err();
    assert!(
        matches!(err, StoreError::InvalidPart { part: 1, .. }),
        "{err}"
    );
    let err = s
        .complete_upload("data", "big", id, &[part(3, &p3.etag), part(4, "x")])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::InvalidPart { .. } | StoreError::EntityTooSmall { .. }
        ),
        "{err}"
    );
    assert_eq!(
        read(&s, "data", "big"),
        b"old",
        "failed completions change nothing"
    );
    let (_, parts) = s.list_parts("data", "big", id).unwrap();
    assert_eq!(
        parts.iter().map(|p| p.part_number).collect::<Vec<_>>(),
        vec![1, 2, 3]
    );
    assert_eq!(s.list_uploads("data", "").unwrap().len(), 1);

    let m = s
        .complete_upload("data", "big", id, &[part(1, &p1.etag), part(3, &p3.etag)])
        .unwrap();
    assert_eq!(read(&s, "data", "big"), b"AAAAAC");
    assert!(m.etag.ends_with("-2"), "{}", m.etag);
    assert!(m
        .checksums
        .get(Algorithm::Crc32)
        .is_some_and(|c| c.ends_with("-2")));
    assert!(s.list_uploads("data", "").unwrap().is_empty());
    assert!(matches!(
        s.list_parts("data", "big", id),
        Err(StoreError::NoSuchUpload(_))
    ));
    assert_eq!(s.used(), 6, "unlisted part 2 is freed with the upload");
    assert_eq!(tmp_entries(dir.path()), 0);
}

#[test]
fn parts_below_the_minimum_size_are_refused_except_the_last() {
    let dir = tempfile::tempdir().unwrap();
    let s = Store::open(
        dir.path(),
        StoreOptions {
            quota: Quota::unlimited(),
            min_part_size: 5,
        },
    )
    .unwrap();
    s.create_bucket("data").unwrap();
    let up = s
        .create_upload("data", "k", Attrs::default(), None, None)
        .unwrap();
    let id = up.upload_id.as_str();
    let p1 = upload_part(&s, "k", id, 1, b"1234");
    let p2 = upload_part(&s, "k", id, 2, b"x");
    let err = s
        .complete_upload("data", "k", id, &[part(1, &p1.etag), part(2, &p2.etag)])
        .unwrap_err();
    assert!(
        matches!(
            err,
            StoreError::EntityTooSmall {
                part: 1,
                size: 4,
                min: 5
            }
        ),
        "{err}"
    );
    s.complete_upload("data", "k", id, &[part(1, &p1.etag)])
        .unwrap();
    assert_eq!(read(&s, "data", "k"), b"1234");
}

#[test]
fn uploads_survive_a_reopen_and_bad_upload_ids_are_no_such_upload() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let up = s
        .create_upload("data", "k", Attrs::default(), None, None)
        .unwrap();
    let p1 = upload_part(&s, "k", &up.upload_id, 1, b"abc");
    drop(s);
    let s = store(dir.path());
    assert_eq!(s.used(), 3);
    for bad in ["../../buckets", "0123", &up.upload_id.to_uppercase()] {
        assert!(
            matches!(
                s.abort_upload("data", "k", bad),
                Err(StoreError::NoSuchUpload(_))
            ),
            "{bad}"
        );
    }
    assert!(matches!(
        s.abort_upload("data", "other", &up.upload_id),
        Err(StoreError::NoSuchUpload(_))
    ));
    s.complete_upload("data", "k", &up.upload_id, &[part(1, &p1.etag)])
        .unwrap();
    assert_eq!(read(&s, "data", "k"), b"abc");
}

#[test]
fn copy_and_cors_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("src").unwrap();
    s.create_bucket("dst").unwrap();
    let m = put(&s, "src", "a", b"payload").unwrap();
    let c = s
        .copy_object("src", "a", "dst", "b", None, CopyKeys::default())
        .unwrap();
    assert_eq!(c.etag, m.etag);
    assert_eq!(read(&s, "dst", "b"), b"payload");
    assert!(matches!(
        s.copy_object("src", "missing", "dst", "c", None, CopyKeys::default()),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert!(matches!(s.get_cors("src"), Err(StoreError::NoSuchCors(_))));
    let rule = CorsRule {
        id: None,
        allowed_origins: vec!["*".into()],
        allowed_methods: vec!["PUT".into()],
        allowed_headers: vec!["*".into()],
        expose_headers: vec![],
        max_age_seconds: None,
    };
    s.set_cors("src", Some(vec![rule.clone()])).unwrap();
    drop(s);
    let s = store(dir.path());
    assert_eq!(s.get_cors("src").unwrap(), vec![rule]);
    s.set_cors("src", None).unwrap();
    assert!(matches!(s.get_cors("src"), Err(StoreError::NoSuchCors(_))));
}

#[test]
fn a_damaged_object_file_is_moved_aside_and_the_rest_stays_available() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    put(&s, "data", "good", b"fine").unwrap();
    put(&s, "data", "bad", b"will be damaged").unwrap();
    drop(s);
    let (_, bad) = Layout {
        root: dir.path().to_owned(),
    }
    .object("data", "bad");
    fs::write(&bad, b"garbage without a footer").unwrap();
    let s = store(dir.path());
    assert_eq!(read(&s, "data", "good"), b"fine");
    assert!(matches!(
        s.open_object("data", "bad"),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert_eq!(fs::read_dir(dir.path().join("damaged")).unwrap().count(), 1);
    assert_eq!(s.used(), 4);
}

// --- SSE-C ---------------------------------------------------------------------------------

fn ckey(b: u8) -> CustomerKey {
    CustomerKey::from_bytes([b; 32])
}

fn put_sse(s: &Store, key: &str, data: &[u8], k: &CustomerKey) -> ObjectMeta {
    let mut w = s
        .begin_put("data", key, Some(data.len() as u64), &Expected::default())
        .unwrap();
    w.encrypt(k);
    for c in data.chunks(10_000) {
        s.write(&mut w, c).unwrap();
    }
    s.commit_put(w, "data", key, Attrs::default(), &Expected::default(), &[])
        .unwrap()
}

fn read_sse(s: &Store, key: &str, k: &CustomerKey, start: u64, end: u64) -> Vec<u8> {
    let (meta, f) = s.open_object("data", key).unwrap();
    sse::check_access(meta.sse.as_ref(), Some(k)).unwrap();
    let sse = meta.sse.as_ref().unwrap();
    let mut d = sse::Decryptor::new(f, 0, k.clone(), sse, start, end);
    let mut out = Vec::new();
    io::Read::read_to_end(&mut d, &mut out).unwrap();
    out
}

/// Every file under the data directory, concatenated.
fn all_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn text(n: usize) -> Vec<u8> {
    b"the quick brown fox jumps over the lazy dog; "
        .iter()
        .copied()
        .cycle()
        .take(n)
        .collect()
}

#[test]
fn sse_c_objects_are_ciphertext_on_disk_and_survive_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let plain = text(200_000);
    let k = ckey(7);
    let meta = put_sse(&s, "secret", &plain, &k);
    assert_eq!(meta.size, plain.len() as u64);
    assert_ne!(meta.etag, hex::encode(s3s::crypto::Md5::checksum(&plain)));
    assert_eq!(s.used(), plain.len() as u64);
    let disk = all_bytes(dir.path());
    assert!(!disk.windows(20).any(|w| w == &plain[..20]));
    assert!(
        !disk.windows(32).any(|w| w == [7u8; 32]),
        "the key is not stored"
    );
    drop(s);
    let s = store(dir.path());
    assert_eq!(read_sse(&s, "secret", &k, 0, plain.len() as u64), plain);
    assert_eq!(
        read_sse(&s, "secret", &k, 65_530, 65_545),
        &plain[65_530..65_545]
    );
    let (meta, _) = s.open_object("data", "secret").unwrap();
    assert_eq!(
        sse::check_access(meta.sse.as_ref(), Some(&ckey(8))),
        Err(SseError::WrongKey)
    );
    assert_eq!(
        sse::check_access(meta.sse.as_ref(), None),
        Err(SseError::KeyRequired)
    );
}

#[test]
fn sse_c_multipart_takes_only_the_uploads_key_and_reads_across_parts() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let k = ckey(1);
    let up = s
        .create_upload("data", "mp", Attrs::default(), None, Some(&k))
        .unwrap();
    let id = up.upload_id.as_str();
    assert!(up.sse.is_some());
    let json = fs::read(dir.path().join("uploads").join(id).join("upload.json")).unwrap();
    assert!(!json.windows(32).any(|w| w == [1u8; 32]));
    // a part without the key, or with another, is refused and stores nothing
    for other in [None, Some(&ckey(2))] {
        let e = s
            .begin_part("data", "mp", id, 1, Some(3), &Expected::default(), other)
            .unwrap_err();
        assert!(matches!(e, StoreError::Sse(_)), "{e}");
    }
    let (a, b) = (text(70_000), text(5_000));
    let mut etags = Vec::new();
    for (n, data) in [(1, &a), (2, &b)] {
        let mut w = s
            .begin_part("data", "mp", id, n, None, &Expected::default(), Some(&k))
            .unwrap();
        s.write(&mut w, data).unwrap();
        let m = s
            .commit_part(w, "data", "mp", id, n, &Expected::default(), &[])
            .unwrap();
        assert_eq!(m.size, data.len() as u64);
        etags.push(m.etag);
    }
    let meta = s
        .complete_upload("data", "mp", id, &[part(1, &etags[0]), part(2, &etags[1])])
        .unwrap();
    assert_eq!(meta.size, 75_000);
    assert_eq!(meta.sse.as_ref().unwrap().extents.len(), 2);
    let all: Vec<u8> = a.iter().chain(&b).copied().collect();
    assert_eq!(read_sse(&s, "mp", &k, 0, 75_000), all);
    assert_eq!(read_sse(&s, "mp", &k, 69_990, 70_010), &all[69_990..70_010]);
    assert!(!all_bytes(dir.path()).windows(20).any(|w| w == &a[..20]));
}

#[test]
fn sse_c_copies_decrypt_and_encrypt_with_each_sides_key() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let plain = text(100_000);
    let (k1, k2) = (ckey(1), ckey(2));
    put_sse(&s, "a", &plain, &k1);
    let copy = |src, dst, source, dest| {
        s.copy_object("data", src, "data", dst, None, CopyKeys { source, dest })
    };
    assert!(matches!(
        copy("a", "b", None, None),
        Err(StoreError::Sse(SseError::KeyRequired))
    ));
    assert!(matches!(
        copy("a", "b", Some(&k2), None),
        Err(StoreError::Sse(SseError::WrongKey))
    ));
    assert!(s.open_object("data", "b").is_err(), "nothing stored");
    // re-keyed in place, then to a plain copy with the MD5 ETag
    copy("a", "a", Some(&k1), Some(&k2)).unwrap();
    assert_eq!(read_sse(&s, "a", &k2, 0, 100_000), plain);
    let m = copy("a", "plain", Some(&k2), None).unwrap();
    assert!(m.sse.is_none());
    assert_eq!(m.etag, hex::encode(s3s::crypto::Md5::checksum(&plain)));
    assert_eq!(read(&s, "data", "plain"), plain);
    // plain to encrypted
    copy("plain", "enc", None, Some(&k1)).unwrap();
    assert_eq!(read_sse(&s, "enc", &k1, 0, 100_000), plain);
    assert!(matches!(
        copy("plain", "x", Some(&k1), None),
        Err(StoreError::Sse(SseError::NotEncrypted))
    ));
}

fn blob_files(dir: &Path) -> Vec<String> {
    let mut v: Vec<String> = fs::read_dir(dir.join("buckets/data/blobs"))
        .map(|d| {
            d.map(|e| e.unwrap().file_name().into_string().unwrap())
                .collect()
        })
        .unwrap_or_default();
    v.sort();
    v
}

fn complete_two(s: &Store, key: &str, a: &[u8], b: &[u8]) -> ObjectMeta {
    let id = s
        .create_upload("data", key, Attrs::default(), None, None)
        .unwrap()
        .upload_id;
    let p1 = upload_part(s, key, &id, 1, a);
    let p2 = upload_part(s, key, &id, 2, b);
    s.complete_upload("data", key, &id, &[part(1, &p1.etag), part(2, &p2.etag)])
        .unwrap()
}

#[test]
fn a_multipart_object_is_a_manifest_of_its_parts_and_its_blobs_go_with_it() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let meta = complete_two(&s, "m", b"AAAAA", b"BBB");
    assert_eq!(meta.size, 8);
    assert_eq!(meta.parts, Some(2));
    assert_eq!(meta.blobs.as_ref().map(Vec::len), Some(2));
    assert_eq!(read(&s, "data", "m"), b"AAAAABBB");
    assert_eq!(blob_files(dir.path()).len(), 2);
    assert_eq!(s.used(), 8, "a manifest's size counts once");
    // ranges across the parts, through Seek
    let (_, mut data) = s.open_object("data", "m").unwrap();
    io::Seek::seek(&mut data, io::SeekFrom::Start(3)).unwrap();
    let mut out = Vec::new();
    io::Read::read_to_end(&mut io::Read::take(&mut data, 4), &mut out).unwrap();
    assert_eq!(out, b"AABB");

    // reopened: the same object, the same count, the blobs kept
    drop(s);
    let s = store(dir.path());
    assert_eq!(read(&s, "data", "m"), b"AAAAABBB");
    assert_eq!(s.used(), 8);
    assert_eq!(blob_files(dir.path()).len(), 2);

    // a copy is a plain object: deleting the source leaves it whole
    s.copy_object("data", "m", "data", "c", None, CopyKeys::default())
        .unwrap();
    assert_eq!(blob_files(dir.path()).len(), 2);

    // overwritten by another multipart object: only the new blobs remain
    let (_, mut held) = s.open_object("data", "m").unwrap();
    complete_two(&s, "m", b"CCCCC", b"DD");
    assert_eq!(read(&s, "data", "m"), b"CCCCCDD");
    assert_eq!(blob_files(dir.path()).len(), 2);
    let mut old = Vec::new();
    io::Read::read_to_end(&mut held, &mut old).unwrap();
    assert_eq!(
        old, b"AAAAABBB",
        "a reader opened before keeps the old bytes"
    );
    assert_eq!(s.used(), 7 + 8);

    // overwritten by a PUT, then deleted: no blob left
    complete_two(&s, "n", b"EEEEE", b"F");
    put(&s, "data", "m", b"plain").unwrap();
    assert_eq!(blob_files(dir.path()).len(), 2, "n's blobs only");
    s.delete_object("data", "n").unwrap();
    assert!(blob_files(dir.path()).is_empty());
    assert_eq!(read(&s, "data", "c"), b"AAAAABBB");
    assert_eq!(s.used(), 5 + 8);
}

#[test]
fn blobs_no_manifest_names_are_moved_aside_at_start_and_the_upload_stays() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    put(&s, "data", "m", b"old").unwrap();
    // a completion that crashed after linking its parts, before the manifest's rename
    let id = s
        .create_upload("data", "m", Attrs::default(), None, None)
        .unwrap()
        .upload_id;
    let p1 = upload_part(&s, "m", &id, 1, b"AAAAA");
    let blobs = dir.path().join("buckets/data/blobs");
    fs::create_dir_all(&blobs).unwrap();
    fs::hard_link(s.layout.part(&id, 1), blobs.join("0123456789ab.00001")).unwrap();
    drop(s);
    let s = store(dir.path());
    assert!(
        blob_files(dir.path()).is_empty(),
        "the unnamed blob is gone from blobs/"
    );
    assert_eq!(read(&s, "data", "m"), b"old");
    // the upload is whole and completes
    let done = s
        .complete_upload("data", "m", &id, &[part(1, &p1.etag)])
        .unwrap();
    assert_eq!(done.size, 5);
    assert_eq!(read(&s, "data", "m"), b"AAAAA");
    assert!(s.list_uploads("data", "").unwrap().is_empty());

    // a manifest whose blob is missing is damage: moved aside, the rest stays
    let x = complete_two(&s, "x", b"XXXXX", b"Y");
    fs::remove_file(blobs.join(&x.blobs.unwrap()[0].name)).unwrap();
    drop(s);
    let s = store(dir.path());
    assert!(matches!(
        s.open_object("data", "x"),
        Err(StoreError::NoSuchKey { .. })
    ));
    assert_eq!(read(&s, "data", "m"), b"AAAAA");
    assert_eq!(
        blob_files(dir.path()).len(),
        1,
        "m's blob only: x's other is moved aside"
    );
    // ...with its data: the sweep deletes nothing (x's surviving part is there, and so is the
    // unnamed blob of the crashed completion above).
    let damaged: Vec<Vec<u8>> = fs::read_dir(dir.path().join("damaged"))
        .unwrap()
        .map(|e| fs::read(e.unwrap().path()).unwrap())
        .collect();
    // (a part file is its data followed by its metadata trailer)
    assert!(damaged.iter().any(|d| d.starts_with(b"Y{")), "{damaged:?}");
}

#[test]
fn a_crash_after_the_manifest_before_the_upload_is_removed_keeps_the_object_whole() {
    let dir = tempfile::tempdir().unwrap();
    let s = store(dir.path());
    s.create_bucket("data").unwrap();
    let id = s
        .create_upload("data", "m", Attrs::default(), None, None)
        .unwrap()
        .upload_id;
    let p1 = upload_part(&s, "m", &id, 1, b"AAAAA");
    let p2 = upload_part(&s, "m", &id, 2, b"BB");
    let info = fs::read(s.layout.upload(&id).join("upload.json")).unwrap();
    let meta = s
        .complete_upload("data", "m", &id, &[part(1, &p1.etag), part(2, &p2.etag)])
        .unwrap();
    // the state a crash between the manifest's rename and the upload's removal leaves: the
    // upload's directory with its parts, which are the object's blobs under other names
    let up = s.layout.upload(&id);
    fs::create_dir(&up).unwrap();
    fs::write(up.join("upload.json"), info).unwrap();
    for (n, b) in meta.blobs.as_ref().unwrap().iter().enumerate() {
        fs::hard_link(
            dir.path().join("buckets/data/blobs").join(&b.name),
            s.layout.part(&id, n as u32 + 1),
        )
        .unwrap();
    }
    drop(s);
    let s = store(dir.path());
    assert_eq!(read(&s, "data", "m"), b"AAAAABB");
    assert_eq!(s.list_uploads("data", "").unwrap().len(), 1);
    assert_eq!(s.used(), 7 + 7, "the upload's parts count until it ends");
    // aborting it removes its names only: the object keeps its data
    s.abort_upload("data", "m", &id).unwrap();
    assert_eq!(read(&s, "data", "m"), b"AAAAABB");
    assert_eq!(blob_files(dir.path()).len(), 2);
    assert_eq!(s.used(), 7);
    drop(s);
    let s = store(dir.path());
    assert_eq!(read(&s, "data", "m"), b"AAAAABB");
    assert_eq!(blob_files(dir.path()).len(), 2);
}
