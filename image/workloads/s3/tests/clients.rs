//! The real clients against the real binary: the aws CLI (`s3 cp`, `s3 sync`, `s3api`,
//! `s3 presign` + curl) and boto3 with its default checksums, plus the bad inputs of issue 6.

mod common;

use common::*;

fn setup() -> Option<(tempfile::TempDir, Server, Clients)> {
    let venv = venv()?;
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let clients = Clients::new(&venv, &server);
    Some((dir, server, clients))
}

#[test]
fn aws_cli_cp_sync_ls_and_s3api() {
    let Some((dir, _server, c)) = setup() else {
        return;
    };
    c.aws_ok(&["s3", "mb", "s3://docs"]);
    let src = dir.path().join("src");
    std::fs::create_dir_all(src.join("nested/deeper")).unwrap();
    for (name, body) in [
        ("a.txt", "alpha"),
        ("b.txt", "bravo"),
        ("nested/c.txt", "charlie"),
        ("nested/deeper/d.txt", "delta"),
    ] {
        std::fs::write(src.join(name), body).unwrap();
    }
    c.aws_ok(&[
        "s3",
        "cp",
        src.join("a.txt").to_str().unwrap(),
        "s3://docs/single/a.txt",
    ]);
    c.aws_ok(&["s3", "sync", src.to_str().unwrap(), "s3://docs/tree"]);
    let ls = c.aws_ok(&["s3", "ls", "--recursive", "s3://docs"]);
    for key in [
        "single/a.txt",
        "tree/a.txt",
        "tree/b.txt",
        "tree/nested/c.txt",
        "tree/nested/deeper/d.txt",
    ] {
        assert!(ls.contains(key), "{key} missing from:\n{ls}");
    }
    // a second sync uploads nothing; a changed file is uploaded again
    let again = c.aws_ok(&["s3", "sync", src.to_str().unwrap(), "s3://docs/tree"]);
    assert!(!again.contains("upload:"), "{again}");
    std::fs::write(src.join("b.txt"), "bravo two").unwrap();
    let again = c.aws_ok(&["s3", "sync", src.to_str().unwrap(), "s3://docs/tree"]);
    assert!(
        again.contains("tree/b.txt") && !again.contains("tree/a.txt"),
        "{again}"
    );
    // sync back down
    let back = dir.path().join("back");
    c.aws_ok(&["s3", "sync", "s3://docs/tree", back.to_str().unwrap()]);
    assert_eq!(
        std::fs::read_to_string(back.join("nested/deeper/d.txt")).unwrap(),
        "delta"
    );
    assert_eq!(
        std::fs::read_to_string(back.join("b.txt")).unwrap(),
        "bravo two"
    );

    // list-objects-v2: delimiter, then pages of one key with continuation tokens
    let out = c.aws_ok(&[
        "s3api",
        "list-objects-v2",
        "--bucket",
        "docs",
        "--prefix",
        "tree/",
        "--delimiter",
        "/",
    ]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    let prefixes: Vec<&str> = v["CommonPrefixes"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["Prefix"].as_str().unwrap())
        .collect();
    assert_eq!(prefixes, vec!["tree/nested/"]);
    assert_eq!(v["Contents"].as_array().unwrap().len(), 2);
    let mut keys = Vec::new();
    let mut token: Option<String> = None;
    loop {
        let mut args = vec![
            "s3api",
            "list-objects-v2",
            "--bucket",
            "docs",
            "--max-keys",
            "2",
            "--no-paginate",
        ];
        if let Some(t) = &token {
            args.extend(["--continuation-token", t.as_str()]);
        }
        let v: serde_json::Value = serde_json::from_str(&c.aws_ok(&args)).unwrap();
        keys.extend(
            v["Contents"]
                .as_array()
                .unwrap()
                .iter()
                .map(|o| o["Key"].as_str().unwrap().to_owned()),
        );
        match v["NextContinuationToken"].as_str() {
            Some(t) => token = Some(t.to_owned()),
            None => break,
        }
    }
    assert_eq!(keys.len(), 5, "{keys:?}");
    let mut sorted = keys.clone();
    sorted.sort();
    assert_eq!(keys, sorted);

    // head, ranged get, copy, delete-objects
    let head: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "docs",
        "--key",
        "tree/nested/c.txt",
    ]))
    .unwrap();
    assert_eq!(head["ContentLength"], 7);
    let part = dir.path().join("part");
    let out = c.aws_ok(&[
        "s3api",
        "get-object",
        "--bucket",
        "docs",
        "--key",
        "tree/nested/c.txt",
        "--range",
        "bytes=2-4",
        part.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read_to_string(&part).unwrap(), "arl");
    assert!(out.contains("bytes 2-4/7"), "{out}");
    c.aws_ok(&[
        "s3api",
        "copy-object",
        "--bucket",
        "docs",
        "--key",
        "copy.txt",
        "--copy-source",
        "docs/tree/a.txt",
    ]);
    assert_eq!(c.aws_ok(&["s3", "cp", "s3://docs/copy.txt", "-"]), "alpha");
    let del = r#"{"Objects":[{"Key":"copy.txt"},{"Key":"single/a.txt"},{"Key":"never-existed"}]}"#;
    c.aws_ok(&[
        "s3api",
        "delete-objects",
        "--bucket",
        "docs",
        "--delete",
        del,
    ]);
    let ls = c.aws_ok(&["s3", "ls", "--recursive", "s3://docs"]);
    assert!(
        !ls.contains("copy.txt") && !ls.contains("single/a.txt"),
        "{ls}"
    );

    // a bucket with objects cannot be deleted; emptied, it can
    c.aws_err(&["s3", "rb", "s3://docs"], "BucketNotEmpty");
    c.aws_ok(&["s3", "rm", "--recursive", "s3://docs"]);
    c.aws_ok(&["s3", "rb", "s3://docs"]);
    assert!(!c.aws_ok(&["s3", "ls"]).contains("docs"));
}

#[test]
fn bad_names_and_keys_answer_s3_errors_and_change_nothing() {
    let Some((dir, server, c)) = setup() else {
        return;
    };
    for bad in ["Bad_Name", "ab", "192.168.0.1", "xn--bucket"] {
        c.aws_err(
            &["s3api", "create-bucket", "--bucket", bad],
            "InvalidBucketName",
        );
    }
    c.aws_ok(&["s3", "mb", "s3://keys"]);
    let f = dir.path().join("f");
    std::fs::write(&f, "x").unwrap();
    let long = "k".repeat(1025);
    c.aws_err(
        &[
            "s3api",
            "put-object",
            "--bucket",
            "keys",
            "--key",
            &long,
            "--body",
            f.to_str().unwrap(),
        ],
        "KeyTooLongError",
    );
    let max = "k".repeat(1024);
    c.aws_ok(&[
        "s3api",
        "put-object",
        "--bucket",
        "keys",
        "--key",
        &max,
        "--body",
        f.to_str().unwrap(),
    ]);
    c.aws_err(&["s3api", "head-bucket", "--bucket", "nosuchbucket"], "404");
    let out = c.aws_ok(&["s3api", "list-objects-v2", "--bucket", "keys"]);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["Contents"].as_array().map(Vec::len), Some(1), "{out}");
    assert_eq!(
        std::fs::read_dir(server.data.join("buckets"))
            .unwrap()
            .count(),
        1
    );
}

#[test]
fn multipart_100_mib_with_the_cli_and_part_order_errors() {
    let Some((dir, server, c)) = setup() else {
        return;
    };
    c.aws_ok(&["s3", "mb", "s3://big"]);
    let f = dir.path().join("big.bin");
    let data: Vec<u8> = (0..100 * 1024 * 1024u32)
        .map(|i| (i.wrapping_mul(2654435761) >> 24) as u8)
        .collect();
    std::fs::write(&f, &data).unwrap();
    c.aws_ok(&["s3", "cp", f.to_str().unwrap(), "s3://big/big.bin"]);
    let head: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "big",
        "--key",
        "big.bin",
    ]))
    .unwrap();
    assert_eq!(head["ContentLength"], 100 * 1024 * 1024);
    assert!(
        head["ETag"].as_str().unwrap().ends_with("-13\""),
        "8 MiB parts: {head}"
    );
    let back = dir.path().join("back.bin");
    c.aws_ok(&["s3", "cp", "s3://big/big.bin", back.to_str().unwrap()]);
    assert!(
        std::fs::read(&back).unwrap() == data,
        "downloaded bytes differ"
    );

    // by hand: parts out of order and a missing part are refused and nothing is stored
    let up: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "manual",
    ]))
    .unwrap();
    let id = up["UploadId"].as_str().unwrap();
    let p = dir.path().join("p");
    std::fs::write(&p, vec![7u8; 5 * 1024 * 1024]).unwrap();
    let mut etags = Vec::new();
    for n in ["1", "2"] {
        let out: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
            "s3api",
            "upload-part",
            "--bucket",
            "big",
            "--key",
            "manual",
            "--upload-id",
            id,
            "--part-number",
            n,
            "--body",
            p.to_str().unwrap(),
        ]))
        .unwrap();
        etags.push(out["ETag"].as_str().unwrap().to_owned());
    }
    let listed: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "list-parts",
        "--bucket",
        "big",
        "--key",
        "manual",
        "--upload-id",
        id,
    ]))
    .unwrap();
    assert_eq!(listed["Parts"].as_array().unwrap().len(), 2);
    let uploads = c.aws_ok(&["s3api", "list-multipart-uploads", "--bucket", "big"]);
    assert!(uploads.contains(id), "{uploads}");
    let reversed = serde_json::json!({"Parts": [{"PartNumber": 2, "ETag": etags[1]}, {"PartNumber": 1, "ETag": etags[0]}]}).to_string();
    c.aws_err(
        &[
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            "big",
            "--key",
            "manual",
            "--upload-id",
            id,
            "--multipart-upload",
            &reversed,
        ],
        "InvalidPartOrder",
    );
    let missing = serde_json::json!({"Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 3, "ETag": etags[1]}]}).to_string();
    c.aws_err(
        &[
            "s3api",
            "complete-multipart-upload",
            "--bucket",
            "big",
            "--key",
            "manual",
            "--upload-id",
            id,
            "--multipart-upload",
            &missing,
        ],
        "InvalidPart",
    );
    c.aws_err(
        &["s3api", "head-object", "--bucket", "big", "--key", "manual"],
        "404",
    );
    let good = serde_json::json!({"Parts": [{"PartNumber": 1, "ETag": etags[0]}, {"PartNumber": 2, "ETag": etags[1]}]}).to_string();
    c.aws_ok(&[
        "s3api",
        "complete-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "manual",
        "--upload-id",
        id,
        "--multipart-upload",
        &good,
    ]);
    let head: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "head-object",
        "--bucket",
        "big",
        "--key",
        "manual",
    ]))
    .unwrap();
    assert_eq!(head["ContentLength"], 10 * 1024 * 1024);
    // abort
    let up: serde_json::Value = serde_json::from_str(&c.aws_ok(&[
        "s3api",
        "create-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "gone",
    ]))
    .unwrap();
    let id = up["UploadId"].as_str().unwrap();
    c.aws_ok(&[
        "s3api",
        "abort-multipart-upload",
        "--bucket",
        "big",
        "--key",
        "gone",
        "--upload-id",
        id,
    ]);
    c.aws_err(
        &[
            "s3api",
            "list-parts",
            "--bucket",
            "big",
            "--key",
            "gone",
            "--upload-id",
            id,
        ],
        "NoSuchUpload",
    );
    assert!(temp_files(&server.data).is_empty());
}

#[test]
fn presigned_urls_work_with_curl_until_they_expire() {
    let Some((dir, _server, c)) = setup() else {
        return;
    };
    c.aws_ok(&["s3", "mb", "s3://share"]);
    let f = dir.path().join("f");
    std::fs::write(&f, "shared content").unwrap();
    c.aws_ok(&["s3", "cp", f.to_str().unwrap(), "s3://share/doc.txt"]);
    let url = c.aws_ok(&["s3", "presign", "s3://share/doc.txt", "--expires-in", "300"]);
    let url = url.trim();
    assert!(
        url.contains("X-Amz-Algorithm=AWS4-HMAC-SHA256"),
        "not SigV4: {url}"
    );
    assert_eq!(curl(&[url]), (200, "shared content".to_owned()));
    // a tampered signature is refused
    let last = url.chars().last().unwrap();
    let tampered = format!(
        "{}{}",
        &url[..url.len() - 1],
        if last == '0' { '1' } else { '0' }
    );
    let (status, body) = curl(&[&tampered]);
    assert_eq!(status, 403, "{body}");
    // expiry is honoured
    let short = c.aws_ok(&["s3", "presign", "s3://share/doc.txt", "--expires-in", "1"]);
    std::thread::sleep(std::time::Duration::from_millis(2500));
    let (status, body) = curl(&[short.trim()]);
    assert_eq!(status, 403, "{body}");
    assert!(
        body.contains("AccessDenied") && body.contains("expired"),
        "{body}"
    );
}

#[test]
fn boto3_default_checksums_forged_checksums_and_quota() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start_with(
        &dir.path().join("data"),
        ACCESS_KEY,
        SECRET_KEY,
        &["--quota-bytes", "30000000"],
    );
    let c = Clients::new(&venv, &server);
    let out = c.python_ok(
        r#"
s3.create_bucket(Bucket='pyb')
r = s3.put_object(Bucket='pyb', Key='small', Body=b'hello world')
assert r['ChecksumCRC32'] == 'DUoRhQ==', r            # boto3's default: CRC32, verified and echoed
print('if-none-match', code(s3.get_object, Bucket='pyb', Key='small', IfNoneMatch=r['ETag']))
print('if-match', code(s3.get_object, Bucket='pyb', Key='small', IfMatch='"0123"'))
g = s3.get_object(Bucket='pyb', Key='small', ChecksumMode='ENABLED')
assert g['Body'].read() == b'hello world' and g['ChecksumCRC32'] == 'DUoRhQ=='
for alg in ['SHA1', 'SHA256']:  # CRC32C needs awscrt in botocore
    r = s3.put_object(Bucket='pyb', Key='alg-' + alg, Body=b'x' * 1000, ChecksumAlgorithm=alg)
    assert r['Checksum' + alg], r
# forged values: BadDigest and nothing stored
print('forged', code(s3.put_object, Bucket='pyb', Key='forged', Body=b'hello world', ChecksumCRC32='AAAAAA=='))
print('forged-sha256', code(s3.put_object, Bucket='pyb', Key='forged', Body=b'hello world',
      ChecksumSHA256='uU0nuZNNPgilLlLX2n2r+sSE7+N6U4DukIj3rOLvzeA='))
print('forged-md5', code(s3.put_object, Bucket='pyb', Key='forged', Body=b'hello world', ContentMD5='XrY7u+Ae7tCTyyK7j1rNwA=='))
print('after-forged', code(s3.head_object, Bucket='pyb', Key='forged'))
# overwriting with a forged checksum keeps the old object
print('overwrite', code(s3.put_object, Bucket='pyb', Key='small', Body=b'other', ChecksumCRC32='AAAAAA=='))
assert s3.get_object(Bucket='pyb', Key='small')['Body'].read() == b'hello world'
# multipart with boto3's managed transfer (CRC32 per part)
import io
from boto3.s3.transfer import TransferConfig
data = bytes(range(256)) * (12 * 1024 * 1024 // 256)
s3.upload_fileobj(io.BytesIO(data), 'pyb', 'multi', Config=TransferConfig(multipart_threshold=5*1024*1024, multipart_chunksize=5*1024*1024))
buf = io.BytesIO(); s3.download_fileobj('pyb', 'multi', buf)
assert buf.getvalue() == data
# quota: 30 MB allowed, 12 MiB used: a 20 MB object does not fit
print('quota', code(s3.put_object, Bucket='pyb', Key='toobig', Body=b'z' * 20000000))
print('after-quota', code(s3.head_object, Bucket='pyb', Key='toobig'))
s3.put_object(Bucket='pyb', Key='fits', Body=b'z' * 1000000)
"#,
    );
    assert!(out.contains("if-none-match 304"), "{out}");
    assert!(out.contains("if-match PreconditionFailed"), "{out}");
    assert!(out.contains("forged BadDigest"), "{out}");
    assert!(out.contains("forged-sha256 BadDigest"), "{out}");
    assert!(out.contains("forged-md5 BadDigest"), "{out}");
    assert!(out.contains("after-forged 404"), "{out}");
    assert!(out.contains("overwrite BadDigest"), "{out}");
    assert!(out.contains("quota QuotaExceeded"), "{out}");
    assert!(out.contains("after-quota 404"), "{out}");
    assert!(temp_files(&server.data).is_empty());
    // the CLI shows the same code
    let f = dir.path().join("big");
    std::fs::write(&f, vec![0u8; 20_000_000]).unwrap();
    c.aws_err(
        &[
            "s3api",
            "put-object",
            "--bucket",
            "pyb",
            "--key",
            "cli-big",
            "--body",
            f.to_str().unwrap(),
        ],
        "QuotaExceeded",
    );
}

#[test]
fn wrong_secret_unknown_key_and_another_tenants_bucket_are_refused() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let mine = Server::start(&dir.path().join("mine"));
    let theirs = Server::start_with(
        &dir.path().join("theirs"),
        "AKIDOTHERTENANT",
        "their-secret-abcdef",
        &[],
    );
    let me = Clients::new(&venv, &mine);
    let them = Clients::with_keys(
        &venv,
        &theirs.endpoint(),
        "AKIDOTHERTENANT",
        "their-secret-abcdef",
    );
    them.aws_ok(&["s3", "mb", "s3://private"]);
    let f = dir.path().join("f");
    std::fs::write(&f, "their data").unwrap();
    them.aws_ok(&["s3", "cp", f.to_str().unwrap(), "s3://private/secret.txt"]);

    // my valid credentials against their endpoint
    let mine_at_theirs = Clients::with_keys(&venv, &theirs.endpoint(), ACCESS_KEY, SECRET_KEY);
    mine_at_theirs.aws_err(&["s3", "ls", "s3://private"], "InvalidAccessKeyId");
    mine_at_theirs.aws_err(
        &["s3", "cp", f.to_str().unwrap(), "s3://private/secret.txt"],
        "InvalidAccessKeyId",
    );
    mine_at_theirs.aws_err(
        &["s3", "rm", "s3://private/secret.txt"],
        "InvalidAccessKeyId",
    );
    // the right key with a wrong secret
    let wrong = Clients::with_keys(&venv, &mine.endpoint(), ACCESS_KEY, "not-the-secret-000");
    wrong.aws_err(
        &["s3", "mb", "s3://created-by-wrong"],
        "SignatureDoesNotMatch",
    );
    assert!(!me.aws_ok(&["s3", "ls"]).contains("created-by-wrong"));
    // theirs is unchanged
    assert_eq!(
        them.aws_ok(&["s3", "cp", "s3://private/secret.txt", "-"]),
        "their data"
    );
    // anonymous requests are refused too
    let (status, _) = curl(&[&format!("{}/private/secret.txt", theirs.endpoint())]);
    assert_eq!(status, 403);
}

#[test]
fn cors_configuration_and_preflight() {
    let Some((_dir, server, c)) = setup() else {
        return;
    };
    c.aws_ok(&["s3", "mb", "s3://web"]);
    c.aws_err(
        &["s3api", "get-bucket-cors", "--bucket", "web"],
        "NoSuchCORSConfiguration",
    );
    let cfg = r#"{"CORSRules":[{"AllowedOrigins":["https://console.example"],"AllowedMethods":["PUT","GET"],"AllowedHeaders":["*"],"ExposeHeaders":["ETag"],"MaxAgeSeconds":600}]}"#;
    c.aws_ok(&[
        "s3api",
        "put-bucket-cors",
        "--bucket",
        "web",
        "--cors-configuration",
        cfg,
    ]);
    let got = c.aws_ok(&["s3api", "get-bucket-cors", "--bucket", "web"]);
    assert!(
        got.contains("https://console.example") && got.contains("600"),
        "{got}"
    );
    let url = format!("{}/web/upload.bin", server.endpoint());
    let preflight = |origin: &str, method: &str| {
        let out = std::process::Command::new("curl")
            .args([
                "-s",
                "-i",
                "-X",
                "OPTIONS",
                &url,
                "-H",
                &format!("Origin: {origin}"),
            ])
            .args(["-H", &format!("Access-Control-Request-Method: {method}")])
            .args([
                "-H",
                "Access-Control-Request-Headers: content-type,x-amz-date",
            ])
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).to_lowercase()
    };
    let ok = preflight("https://console.example", "PUT");
    assert!(ok.starts_with("http/1.1 200"), "{ok}");
    assert!(
        ok.contains("access-control-allow-origin: https://console.example"),
        "{ok}"
    );
    assert!(ok.contains("access-control-allow-methods: put"), "{ok}");
    assert!(ok.contains("access-control-max-age: 600"), "{ok}");
    let denied = preflight("https://evil.example", "PUT");
    assert!(
        denied.starts_with("http/1.1 403") && !denied.contains("access-control-allow-origin"),
        "{denied}"
    );
    let denied = preflight("https://console.example", "DELETE");
    assert!(denied.starts_with("http/1.1 403"), "{denied}");
    c.aws_ok(&["s3api", "delete-bucket-cors", "--bucket", "web"]);
    assert!(preflight("https://console.example", "PUT").starts_with("http/1.1 403"));
}

#[test]
fn sigterm_lets_an_upload_in_flight_finish_then_exits() {
    let Some((dir, mut server, c)) = setup() else {
        return;
    };
    c.aws_ok(&["s3", "mb", "s3://drain"]);
    let url = c.python_ok(
        "from botocore.config import Config\n\
         s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], config=Config(signature_version='s3v4'))\n\
         print(s3.generate_presigned_url('put_object', Params={'Bucket': 'drain', 'Key': 'slow.bin'}, ExpiresIn=300))\n",
    );
    let f = dir.path().join("slow.bin");
    let data: Vec<u8> = (0..3 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    // 3 MiB at 2 MiB/s: still sending when the signal comes
    let upload = std::process::Command::new("curl")
        .args([
            "-sS",
            "-o",
            "/dev/null",
            "-w",
            "%{http_code}",
            "--limit-rate",
            "2M",
            "-T",
        ])
        .arg(&f)
        .arg(url.trim())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    std::thread::sleep(std::time::Duration::from_millis(600));
    let pid = server.child.id().to_string();
    assert!(std::process::Command::new("kill")
        .args(["-TERM", &pid])
        .status()
        .unwrap()
        .success());
    let out = upload.wait_with_output().unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stdout),
        "200",
        "the upload in flight was cut by SIGTERM"
    );
    let status = server.child.wait().unwrap();
    assert!(
        status.success(),
        "lattice-s3 exited with {status} after SIGTERM"
    );
    server.restart();
    let c = Clients::new(&c.venv, &server);
    let back = dir.path().join("back.bin");
    c.aws_ok(&["s3", "cp", "s3://drain/slow.bin", back.to_str().unwrap()]);
    assert!(std::fs::read(&back).unwrap() == data, "stored bytes differ");
}
