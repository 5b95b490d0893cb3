//! SSE-C with the real clients: the aws CLI (`s3 cp --sse-c AES256 --sse-c-key`, single and
//! multipart) and boto3 (`SSECustomerKey`: put, get, ranges, head, multipart, copy), the
//! refusals AWS answers, the bytes on disk, and the logs.

mod common;

use std::path::Path;

use base64::Engine as _;
use common::*;

const MARKER: &str = "LATTICE-PLAINTEXT-MARKER";

fn key_bytes(seed: u8) -> Vec<u8> {
    (0..32u8)
        .map(|i| i.wrapping_mul(73).wrapping_add(seed))
        .collect()
}

/// Text that is easy to find: the marker with a counter, over and over.
fn plaintext(n: usize) -> Vec<u8> {
    let mut out = Vec::with_capacity(n + 64);
    let mut i = 0u64;
    while out.len() < n {
        out.extend_from_slice(format!("{MARKER}-{i:012}\n").as_bytes());
        i += 1;
    }
    out.truncate(n);
    out
}

/// Every file under `dir`, concatenated.
fn disk_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                stack.push(p);
            } else {
                out.extend(std::fs::read(&p).unwrap());
            }
        }
    }
    out
}

fn contains(hay: &[u8], needle: &[u8]) -> bool {
    hay.windows(needle.len()).any(|w| w == needle)
}

/// Neither the plaintext nor the key, raw or base64, is anywhere under the data directory.
fn assert_nothing_in_clear(data: &Path, keys: &[&[u8]]) {
    let disk = disk_bytes(data);
    assert!(!disk.is_empty());
    assert!(
        !contains(&disk, MARKER.as_bytes()),
        "plaintext found on disk"
    );
    for k in keys {
        assert!(!contains(&disk, k), "a key found on disk");
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert!(
            !contains(&disk, b64.as_bytes()),
            "a base64 key found on disk"
        );
    }
}

#[test]
fn aws_cli_cp_with_sse_c_up_and_down_single_and_multipart() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let c = Clients::new(&venv, &server);
    c.aws_ok(&["s3", "mb", "s3://vault"]);
    let key = dir.path().join("key.bin");
    std::fs::write(&key, key_bytes(1)).unwrap();
    let other = dir.path().join("other.bin");
    std::fs::write(&other, key_bytes(2)).unwrap();
    let key_arg = format!("fileb://{}", key.display());
    let other_arg = format!("fileb://{}", other.display());

    // 300 KB: one PUT; 20 MiB: the CLI's multipart (8 MiB parts), SSE-C on every part
    for (name, size) in [("small.txt", 300_000), ("big.txt", 20 << 20)] {
        let src = dir.path().join(name);
        let data = plaintext(size);
        std::fs::write(&src, &data).unwrap();
        let dst = format!("s3://vault/{name}");
        c.aws_ok(&[
            "s3",
            "cp",
            "--sse-c",
            "AES256",
            "--sse-c-key",
            &key_arg,
            src.to_str().unwrap(),
            &dst,
        ]);
        let back = dir.path().join(format!("back-{name}"));
        c.aws_ok(&[
            "s3",
            "cp",
            "--sse-c",
            "AES256",
            "--sse-c-key",
            &key_arg,
            &dst,
            back.to_str().unwrap(),
        ]);
        assert!(std::fs::read(&back).unwrap() == data, "{name}: other bytes");
        // without the key: S3's 400 on the HEAD the CLI does first; with another: 403
        let refused = dir.path().join("refused");
        c.aws_err(&["s3", "cp", &dst, refused.to_str().unwrap()], "400");
        c.aws_err(
            &[
                "s3",
                "cp",
                "--sse-c",
                "AES256",
                "--sse-c-key",
                &other_arg,
                &dst,
                refused.to_str().unwrap(),
            ],
            "403",
        );
        assert!(!refused.exists());
    }
    let head: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "vault",
        "--key",
        "big.txt",
        "--sse-customer-algorithm",
        "AES256",
        "--sse-customer-key",
        &key_arg,
    ]))
    .unwrap();
    assert_eq!(head["ContentLength"], 20 << 20);
    assert_eq!(head["SSECustomerAlgorithm"], "AES256");
    assert!(head["ETag"].as_str().unwrap().ends_with("-3\""), "{head}");
    // the CLI's s3api get-object without the key: InvalidRequest, as AWS
    c.aws_err(
        &[
            "s3api",
            "get-object",
            "--bucket",
            "vault",
            "--key",
            "small.txt",
            dir.path().join("x").to_str().unwrap(),
        ],
        "InvalidRequest",
    );
    assert_nothing_in_clear(&server.data, &[&key_bytes(1)]);
    assert!(temp_files(&server.data).is_empty());
}

#[test]
fn boto3_sse_c_put_get_ranges_head_multipart_copy_and_refusals() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let log = dir.path().join("server.log");
    // the most verbose logging there is: the keys must still not appear in it
    let server = Server::start_logging(&dir.path().join("data"), "trace", &log);
    let c = Clients::new(&venv, &server);
    let k1 = key_bytes(1);
    let k2 = key_bytes(2);
    let script = format!(
        r#"
K1 = bytes({k1:?})
K2 = bytes({k2:?})
import base64, hashlib, io
MARK = b'{MARKER}'
def text(n):
    out = b''.join(MARK + b'-%012d\n' % i for i in range(n // 38 + 1))
    return out[:n]
s3.create_bucket(Bucket='bkt')
data = text(300_000)
r = s3.put_object(Bucket='bkt', Key='k', Body=data, SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert r['SSECustomerAlgorithm'] == 'AES256', r
assert r['SSECustomerKeyMD5'] == base64.b64encode(hashlib.md5(K1).digest()).decode(), r
assert r['ETag'].strip('"') != hashlib.md5(data).hexdigest(), 'the ETag is not the MD5 of the plaintext'
g = s3.get_object(Bucket='bkt', Key='k', SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert g['Body'].read() == data
assert g['SSECustomerAlgorithm'] == 'AES256'
# ranges inside one segment, across a 64 KiB segment border, to the end, the last bytes
for rng, lo, hi in [('bytes=10-20', 10, 21), ('bytes=65530-65545', 65530, 65546),
                    ('bytes=131000-300000', 131000, 300000), ('bytes=-7', 299993, 300000)]:
    g = s3.get_object(Bucket='bkt', Key='k', Range=rng, SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
    assert g['Body'].read() == data[lo:hi], rng
    assert g['ContentRange'] == 'bytes %d-%d/300000' % (lo, hi - 1), g['ContentRange']
h = s3.head_object(Bucket='bkt', Key='k', SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert h['ContentLength'] == 300000 and h['SSECustomerAlgorithm'] == 'AES256'
print('get-no-key', code(s3.get_object, Bucket='bkt', Key='k'))
print('get-wrong-key', code(s3.get_object, Bucket='bkt', Key='k', SSECustomerAlgorithm='AES256', SSECustomerKey=K2))
print('range-wrong-key', code(s3.get_object, Bucket='bkt', Key='k', Range='bytes=0-9', SSECustomerAlgorithm='AES256', SSECustomerKey=K2))
print('head-no-key', code(s3.head_object, Bucket='bkt', Key='k'))
print('head-wrong-key', code(s3.head_object, Bucket='bkt', Key='k', SSECustomerAlgorithm='AES256', SSECustomerKey=K2))
# a key MD5 that does not match the key: InvalidArgument, and the object is unchanged
bad_md5 = base64.b64encode(hashlib.md5(K2).digest()).decode()
print('put-bad-md5', code(s3.put_object, Bucket='bkt', Key='k', Body=b'replaced', SSECustomerAlgorithm='AES256',
      SSECustomerKey=base64.b64encode(K1).decode(), SSECustomerKeyMD5=bad_md5))
print('put-short-key', code(s3.put_object, Bucket='bkt', Key='k', Body=b'replaced', SSECustomerAlgorithm='AES256', SSECustomerKey=K1[:16]))
assert s3.get_object(Bucket='bkt', Key='k', SSECustomerAlgorithm='AES256', SSECustomerKey=K1)['Body'].read() == data
# a plain object read with a key
s3.put_object(Bucket='bkt', Key='plain', Body=b'public')
print('plain-with-key', code(s3.get_object, Bucket='bkt', Key='plain', SSECustomerAlgorithm='AES256', SSECustomerKey=K1))
# over plain HTTP through the gateway (it sets X-Forwarded-Proto): refused, nothing stored
def plain_http(request, **kw):
    request.headers['X-Forwarded-Proto'] = 'http'
s3.meta.events.register('before-sign.s3.PutObject', plain_http)
print('insecure', code(s3.put_object, Bucket='bkt', Key='insecure', Body=data, SSECustomerAlgorithm='AES256', SSECustomerKey=K1))
s3.meta.events.unregister('before-sign.s3.PutObject', plain_http)
print('after-insecure', code(s3.head_object, Bucket='bkt', Key='insecure'))

# multipart by hand: every part needs the upload's key
big = text(6 * 1024 * 1024) + text(1_000_003)
up = s3.create_multipart_upload(Bucket='bkt', Key='mp', SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert up['SSECustomerAlgorithm'] == 'AES256'
uid = up['UploadId']
p1, p2 = big[:6 * 1024 * 1024], big[6 * 1024 * 1024:]
print('part-no-key', code(s3.upload_part, Bucket='bkt', Key='mp', UploadId=uid, PartNumber=1, Body=p1))
print('part-wrong-key', code(s3.upload_part, Bucket='bkt', Key='mp', UploadId=uid, PartNumber=1, Body=p1,
      SSECustomerAlgorithm='AES256', SSECustomerKey=K2))
parts = []
for n, body in [(1, p1), (2, p2)]:
    r = s3.upload_part(Bucket='bkt', Key='mp', UploadId=uid, PartNumber=n, Body=body, SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
    parts.append({{'PartNumber': n, 'ETag': r['ETag']}})
s3.complete_multipart_upload(Bucket='bkt', Key='mp', UploadId=uid, MultipartUpload={{'Parts': parts}})
g = s3.get_object(Bucket='bkt', Key='mp', SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert g['Body'].read() == big
lo = 6 * 1024 * 1024 - 100
g = s3.get_object(Bucket='bkt', Key='mp', Range='bytes=%d-%d' % (lo, lo + 199), SSECustomerAlgorithm='AES256', SSECustomerKey=K1)
assert g['Body'].read() == big[lo:lo + 200], 'range across the parts'
print('mp-no-key', code(s3.get_object, Bucket='bkt', Key='mp'))
# boto3's managed transfer (upload_fileobj) with SSE-C
from boto3.s3.transfer import TransferConfig
cfg = TransferConfig(multipart_threshold=5 * 1024 * 1024, multipart_chunksize=5 * 1024 * 1024)
s3.upload_fileobj(io.BytesIO(big), 'bkt', 'managed', ExtraArgs={{'SSECustomerAlgorithm': 'AES256', 'SSECustomerKey': K1}}, Config=cfg)
buf = io.BytesIO()
s3.download_fileobj('bkt', 'managed', buf, ExtraArgs={{'SSECustomerAlgorithm': 'AES256', 'SSECustomerKey': K1}}, Config=cfg)
assert buf.getvalue() == big

# copy: the source's key to read, a new key for the copy; in place to change the key
print('copy-no-source-key', code(s3.copy_object, Bucket='bkt', Key='k2', CopySource='bkt/k'))
s3.copy_object(Bucket='bkt', Key='k2', CopySource='bkt/k', CopySourceSSECustomerAlgorithm='AES256', CopySourceSSECustomerKey=K1,
               SSECustomerAlgorithm='AES256', SSECustomerKey=K2)
assert s3.get_object(Bucket='bkt', Key='k2', SSECustomerAlgorithm='AES256', SSECustomerKey=K2)['Body'].read() == data
print('copy-old-key', code(s3.get_object, Bucket='bkt', Key='k2', SSECustomerAlgorithm='AES256', SSECustomerKey=K1))
s3.copy_object(Bucket='bkt', Key='mp', CopySource='bkt/mp', CopySourceSSECustomerAlgorithm='AES256', CopySourceSSECustomerKey=K1,
               SSECustomerAlgorithm='AES256', SSECustomerKey=K2)
assert s3.get_object(Bucket='bkt', Key='mp', SSECustomerAlgorithm='AES256', SSECustomerKey=K2)['Body'].read() == big
"#
    );
    let out = c.python_ok(&script);
    for line in [
        "get-no-key InvalidRequest",
        "get-wrong-key AccessDenied",
        "range-wrong-key AccessDenied",
        "head-no-key 400",
        "head-wrong-key 403",
        "put-bad-md5 InvalidArgument",
        "put-short-key InvalidArgument",
        "plain-with-key InvalidRequest",
        "insecure InvalidRequest",
        "after-insecure 404",
        "part-no-key InvalidRequest",
        "part-wrong-key InvalidArgument",
        "mp-no-key InvalidRequest",
        "copy-no-source-key InvalidRequest",
        "copy-old-key AccessDenied",
    ] {
        assert!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    assert_nothing_in_clear(&server.data, &[&k1, &k2]);
    assert!(temp_files(&server.data).is_empty());
    // at RUST_LOG=trace the server logged, and never a key
    let text = std::fs::read(&log).unwrap();
    assert!(contains(&text, b"serving S3"), "no log written");
    for k in [&k1, &k2] {
        let b64 = base64::engine::general_purpose::STANDARD.encode(k);
        assert!(
            !contains(&text, b64.as_bytes()),
            "a key is in the server's log"
        );
    }
}
