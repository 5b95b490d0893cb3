//! Behind a TLS front end (as behind the fleet's gateway) current clients send their CRC32 as
//! an aws-chunked trailer instead of a header. nginx terminates TLS here and forwards plain
//! HTTP, unbuffered, to the real binary; boto3 and the aws CLI upload through it. Like the
//! fleet's gateway it sets `X-Forwarded-Proto`, and it also listens on plain HTTP, where SSE-C
//! must be refused.

mod common;

use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::*;

struct Nginx(Child);

impl Drop for Nginx {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// nginx with TLS on the first port and plain HTTP on the second.
fn start_nginx(dir: &Path, upstream: &str) -> Option<(Nginx, u16, u16)> {
    let nginx = ["/usr/sbin/nginx", "/usr/bin/nginx"]
        .into_iter()
        .find(|p| Path::new(p).exists());
    let Some(nginx) = nginx else {
        if std::env::var_os("CI").is_some() {
            panic!("nginx is not installed (scripts/test installs nginx-light); CI is set, so this fails");
        }
        eprintln!("SKIPPED: nginx is not installed (scripts/test installs nginx-light)");
        return None;
    };
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    let generated = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .expect("self-signed certificate");
    std::fs::write(&cert, generated.cert.pem()).unwrap();
    std::fs::write(&key, generated.key_pair.serialize_pem()).unwrap();
    let port = free_port();
    let plain = free_port();
    let d = dir.display();
    let conf = format!(
        "daemon off; master_process off; worker_processes 1; user root; pid {d}/nginx.pid; error_log {d}/error.log warn;\n\
         events {{ worker_connections 64; }}\n\
         http {{ access_log off; client_body_temp_path {d}/body; proxy_temp_path {d}/proxy;\n\
           fastcgi_temp_path {d}/fcgi; uwsgi_temp_path {d}/uwsgi; scgi_temp_path {d}/scgi;\n\
           server {{ listen 127.0.0.1:{port} ssl; listen 127.0.0.1:{plain}; ssl_certificate {cert}; ssl_certificate_key {key};\n\
             client_max_body_size 0; proxy_request_buffering off; proxy_buffering off;\n\
             location / {{ proxy_pass http://{upstream}; proxy_http_version 1.1; proxy_set_header Host $http_host;\n\
               proxy_set_header X-Forwarded-Proto $scheme; }} }} }}\n",
        cert = cert.display(),
        key = key.display()
    );
    std::fs::write(dir.join("nginx.conf"), conf).unwrap();
    let child = Command::new(nginx)
        .arg("-c")
        .arg(dir.join("nginx.conf"))
        .arg("-p")
        .arg(dir)
        .stderr(Stdio::inherit())
        .spawn()
        .expect("starting nginx");
    let guard = Nginx(child);
    let deadline = Instant::now() + Duration::from_secs(10);
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(Instant::now() < deadline, "nginx did not listen on {port}");
        std::thread::sleep(Duration::from_millis(50));
    }
    Some((guard, port, plain))
}

#[test]
fn trailing_crc32_checksums_through_a_tls_front_end() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let Some((_nginx, port, _)) = start_nginx(dir.path(), &server.addr) else {
        return;
    };
    let c = Clients::with_keys(
        &venv,
        &format!("https://localhost:{port}"),
        ACCESS_KEY,
        SECRET_KEY,
    );
    let out = c.python_ok(
        r#"
import urllib3; urllib3.disable_warnings()
s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], verify=False)
sent = []
s3.meta.events.register('before-send.s3.PutObject', lambda request, **kw: sent.append(dict(request.headers)))
s3.create_bucket(Bucket='tls')
data = os.urandom(3 * 1024 * 1024 + 7)
r = s3.put_object(Bucket='tls', Key='trailed', Body=data)
h = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent[-1].items()}
print('trailer', h.get('x-amz-trailer'), h.get('x-amz-content-sha256'))
g = s3.get_object(Bucket='tls', Key='trailed', ChecksumMode='ENABLED')
assert g['Body'].read() == data
assert g['ChecksumCRC32'] == r['ChecksumCRC32'], (g.get('ChecksumCRC32'), r)
print('stored-crc32', g['ChecksumCRC32'])
"#,
    );
    assert!(
        out.contains("trailer x-amz-checksum-crc32 STREAMING-UNSIGNED-PAYLOAD-TRAILER"),
        "{out}"
    );
    assert!(out.contains("stored-crc32 "), "{out}");
    // the aws CLI through TLS too, with a multipart upload
    let f = dir.path().join("f.bin");
    std::fs::write(&f, vec![42u8; 9 * 1024 * 1024]).unwrap();
    c.aws_ok(&[
        "--no-verify-ssl",
        "s3",
        "cp",
        f.to_str().unwrap(),
        "s3://tls/cli.bin",
    ]);
    let back = dir.path().join("back.bin");
    c.aws_ok(&[
        "--no-verify-ssl",
        "s3",
        "cp",
        "s3://tls/cli.bin",
        back.to_str().unwrap(),
    ]);
    assert_eq!(std::fs::read(&back).unwrap(), vec![42u8; 9 * 1024 * 1024]);
    assert!(temp_files(&server.data).is_empty());
}

#[test]
fn sse_c_through_a_tls_front_end_and_refused_over_its_plain_http() {
    let Some(venv) = venv() else { return };
    let dir = tempfile::tempdir().unwrap();
    let server = Server::start(&dir.path().join("data"));
    let Some((_nginx, port, plain)) = start_nginx(dir.path(), &server.addr) else {
        return;
    };
    let c = Clients::with_keys(
        &venv,
        &format!("https://localhost:{port}"),
        ACCESS_KEY,
        SECRET_KEY,
    );
    // boto3 over TLS: a trailing CRC32 and SSE-C in one PUT
    let out = c.python_ok(
        r#"
import urllib3; urllib3.disable_warnings()
s3 = boto3.client('s3', endpoint_url=os.environ['S3_ENDPOINT'], verify=False)
K = bytes(range(32))
sent = []
s3.meta.events.register('before-send.s3.PutObject', lambda request, **kw: sent.append(dict(request.headers)))
s3.create_bucket(Bucket='tls')
data = os.urandom(1024 * 1024 + 3)
s3.put_object(Bucket='tls', Key='enc', Body=data, SSECustomerAlgorithm='AES256', SSECustomerKey=K)
h = {k.lower(): (v.decode() if isinstance(v, bytes) else v) for k, v in sent[-1].items()}
print('trailer', h.get('x-amz-trailer'))
g = s3.get_object(Bucket='tls', Key='enc', SSECustomerAlgorithm='AES256', SSECustomerKey=K, Range='bytes=65000-70000')
assert g['Body'].read() == data[65000:70001]
print('no-key', code(s3.get_object, Bucket='tls', Key='enc'))
# the same front end on plain HTTP: SSE-C refused, nothing stored; without SSE-C it works
http = boto3.client('s3', endpoint_url='http://127.0.0.1:' + os.environ['PLAIN'])
print('plain-http', code(http.put_object, Bucket='tls', Key='leaked', Body=b'x', SSECustomerAlgorithm='AES256', SSECustomerKey=K))
print('plain-http-get', code(http.get_object, Bucket='tls', Key='enc', SSECustomerAlgorithm='AES256', SSECustomerKey=K))
print('after', code(s3.head_object, Bucket='tls', Key='leaked'))
http.put_object(Bucket='tls', Key='clear', Body=b'x')
"#
        .replace("os.environ['PLAIN']", &format!("'{plain}'"))
        .as_str(),
    );
    assert!(out.contains("trailer x-amz-checksum-crc32"), "{out}");
    for line in [
        "no-key InvalidRequest",
        "plain-http InvalidRequest",
        "plain-http-get InvalidRequest",
        "after 404",
    ] {
        assert!(out.contains(line), "expected {line:?} in:\n{out}");
    }
    // the aws CLI over TLS with SSE-C, multipart (9 MiB)
    let key = dir.path().join("key.bin");
    std::fs::write(&key, [7u8; 32]).unwrap();
    let key_arg = format!("fileb://{}", key.display());
    let f = dir.path().join("f.bin");
    let data: Vec<u8> = (0..9 * 1024 * 1024u32).map(|i| (i % 253) as u8).collect();
    std::fs::write(&f, &data).unwrap();
    let sse = ["--sse-c", "AES256", "--sse-c-key", key_arg.as_str()];
    let up = [
        &["--no-verify-ssl", "s3", "cp"][..],
        &sse,
        &[f.to_str().unwrap(), "s3://tls/cli.bin"],
    ]
    .concat();
    c.aws_ok(&up);
    let back = dir.path().join("back.bin");
    let down = [
        &["--no-verify-ssl", "s3", "cp"][..],
        &sse,
        &["s3://tls/cli.bin", back.to_str().unwrap()],
    ]
    .concat();
    c.aws_ok(&down);
    assert!(std::fs::read(&back).unwrap() == data);
    assert!(temp_files(&server.data).is_empty());
}
