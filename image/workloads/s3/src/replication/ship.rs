//! The shipper: a background task that takes the journal's changes in order, reads the
//! current state of what each one names from the store, and makes the replica match with
//! ordinary S3 requests presigned with SigV4 (`rusty-s3`, sans-I/O) over hyper:
//!
//! | current state on the primary | request |
//! | --- | --- |
//! | object exists | `PUT /bucket/key`, body = the stored bytes, [`super::META_HEADER`] = its metadata |
//! | object missing | `DELETE /bucket/key` (a missing bucket on the replica is fine) |
//! | bucket exists | `PUT /bucket` (already there is fine), then `PUT /bucket?cors` or `DELETE /bucket?cors` |
//! | bucket missing | `DELETE /bucket` (already gone is fine) |
//!
//! Only an answer the replica gave counts as an acknowledgement; anything else is retried
//! with capped exponential backoff, never skipped, so order is kept.

use std::io;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use bytes::Bytes;
use http_body_util::combinators::BoxBody;
use http_body_util::{BodyExt as _, Full, StreamBody};
use hyper::body::Frame;
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, StatusCode};
use hyper_util::rt::TokioIo;
use rusty_s3::{Bucket, Method, UrlStyle};
use url::Url;

use super::format::{Change, Record};
use super::Replication;
use crate::cors::CorsRule;
use crate::store::{ObjectData, ObjectMeta, Store};

type Body = BoxBody<Bytes, io::Error>;

pub const MIN_BACKOFF: Duration = Duration::from_millis(100);
pub const MAX_BACKOFF: Duration = Duration::from_secs(5);
/// While nothing is pending, the replica is probed this often so the status stays current.
pub const PROBE_INTERVAL: Duration = Duration::from_secs(2);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
const REGION: &str = "us-east-1";

/// Where the changes go and the key they are signed with.
#[derive(Clone)]
pub struct Target {
    pub url: Url,
    pub access_key: String,
    secret_key: String,
    /// Which replica is behind `url` (`LATTICE_S3_REPLICA_ID`): through a workload upstream
    /// every replica is at the same `IP:PORT`, so a new replica is told apart by this.
    pub replica_id: Option<String>,
}

impl std::fmt::Debug for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Target")
            .field("url", &self.url.as_str())
            .field("access_key", &self.access_key)
            .field("replica_id", &self.replica_id)
            .field("secret_key", &"<redacted>")
            .finish()
    }
}

impl Target {
    /// `url` must be `http://HOST:PORT` (plain HTTP: the fleet provides the path to the
    /// replica, e.g. through the node's tunnel).
    pub fn parse(url: &str, access_key: String, secret_key: String) -> Result<Target, String> {
        let parsed = Url::parse(url).map_err(|e| format!("{url:?} is not a URL: {e}"))?;
        if parsed.scheme() != "http" {
            return Err(format!("{url:?}: only http:// is supported"));
        }
        if parsed.host_str().is_none() || parsed.port_or_known_default().is_none() {
            return Err(format!("{url:?}: needs a host and a port"));
        }
        if parsed.path() != "/" || parsed.query().is_some() || !parsed.username().is_empty() {
            return Err(format!("{url:?}: give only http://HOST:PORT"));
        }
        Ok(Target {
            url: parsed,
            access_key,
            secret_key,
            replica_id: None,
        })
    }

    /// This target naming its replica `id` (1 to 64 of `a-z 0-9 -`).
    pub fn with_replica_id(mut self, id: &str) -> Result<Target, String> {
        let ok = !id.is_empty()
            && id.len() <= 64
            && id
                .bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
        if !ok {
            return Err(format!("{id:?} is not 1 to 64 of a-z, 0-9 and '-'"));
        }
        self.replica_id = Some(id.to_owned());
        Ok(self)
    }

    /// The canonical form, recorded in the checkpoint (another target means a full copy):
    /// `http://HOST:PORT`, with `#REPLICA_ID` when the replica is named.
    pub fn id(&self) -> String {
        let url = self.url.as_str().trim_end_matches('/');
        match &self.replica_id {
            Some(r) => format!("{url}#{r}"),
            None => url.to_owned(),
        }
    }

    fn bucket(&self, name: &str) -> Result<Bucket, ShipError> {
        Bucket::new(self.url.clone(), UrlStyle::Path, name.to_owned(), REGION)
            .map_err(|e| ShipError::Refused(format!("bucket URL: {e}")))
    }

    /// Presigns `url` for `method` (valid five minutes) with `headers` (lowercase names)
    /// among the signed headers.
    fn sign(
        &self,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        headers: &[(&str, &str)],
    ) -> Url {
        let mut headers = headers.to_vec();
        headers.sort_unstable();
        let mut query = query.to_vec();
        query.sort_unstable();
        rusty_s3::signing::sign(
            &jiff::Timestamp::now(),
            method,
            url,
            &self.access_key,
            &self.secret_key,
            None,
            REGION,
            300,
            query.into_iter(),
            headers.into_iter(),
        )
    }
}

#[derive(Debug, Clone, thiserror::Error)]
pub enum ShipError {
    /// No answer: connection refused, reset, timed out, or a 5xx.
    #[error("replica unreachable: {0}")]
    Unreachable(String),
    /// The replica answered but did not take the change.
    #[error("replica refused: {0}")]
    Refused(String),
}

struct Answer {
    status: StatusCode,
    stored: bool,
    code: Option<String>,
}

/// The `<Code>` of an S3 error body.
fn error_code(body: &[u8]) -> Option<String> {
    let text = std::str::from_utf8(body).ok()?;
    let start = text.find("<Code>")? + "<Code>".len();
    let end = start + text[start..].find("</Code>")?;
    Some(text[start..end].to_owned())
}

/// The body of PutBucketCors for `rules` (S3's XML).
pub fn cors_xml(rules: &[CorsRule]) -> String {
    fn esc(s: &str) -> String {
        s.replace('&', "&amp;")
            .replace('<', "&lt;")
            .replace('>', "&gt;")
            .replace('"', "&quot;")
    }
    let mut x =
        String::from("<CORSConfiguration xmlns=\"http://s3.amazonaws.com/doc/2006-03-01/\">");
    for r in rules {
        x.push_str("<CORSRule>");
        if let Some(id) = &r.id {
            x.push_str(&format!("<ID>{}</ID>", esc(id)));
        }
        for (tag, values) in [
            ("AllowedHeader", &r.allowed_headers),
            ("AllowedMethod", &r.allowed_methods),
            ("AllowedOrigin", &r.allowed_origins),
            ("ExposeHeader", &r.expose_headers),
        ] {
            for v in values {
                x.push_str(&format!("<{tag}>{}</{tag}>", esc(v)));
            }
        }
        if let Some(age) = r.max_age_seconds {
            x.push_str(&format!("<MaxAgeSeconds>{age}</MaxAgeSeconds>"));
        }
        x.push_str("</CORSRule>");
    }
    x.push_str("</CORSConfiguration>");
    x
}

/// One request to the replica. `what` names the operation in errors (never the object).
struct Call {
    what: &'static str,
    method: Method,
    url: Url,
    headers: Vec<(&'static str, String)>,
    body: Body,
    length: u64,
}

impl Call {
    fn new(what: &'static str, method: Method, url: Url) -> Call {
        Call {
            what,
            method,
            url,
            headers: Vec::new(),
            body: empty(),
            length: 0,
        }
    }
}

/// One connection to the replica, opened on demand and dropped on any error.
struct Client {
    target: Target,
    conn: Option<SendRequest<Body>>,
}

impl Client {
    async fn connect(&mut self) -> Result<&mut SendRequest<Body>, ShipError> {
        if let Some(c) = &self.conn {
            if !c.is_closed() {
                return self
                    .conn
                    .as_mut()
                    .ok_or_else(|| ShipError::Unreachable("no connection".into()));
            }
        }
        self.conn = None;
        let host = self.target.url.host_str().unwrap_or_default().to_owned();
        let port = self.target.url.port_or_known_default().unwrap_or(80);
        let stream = tokio::time::timeout(
            CONNECT_TIMEOUT,
            tokio::net::TcpStream::connect((host.as_str(), port)),
        )
        .await
        .map_err(|_| ShipError::Unreachable(format!("connecting to {host}:{port}: timed out")))?
        .map_err(|e| ShipError::Unreachable(format!("connecting to {host}:{port}: {e}")))?;
        let _ = stream.set_nodelay(true);
        let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
            .await
            .map_err(|e| ShipError::Unreachable(format!("HTTP handshake: {e}")))?;
        tokio::spawn(async move {
            if let Err(e) = conn.await {
                tracing::debug!(error = %e, "replica connection ended");
            }
        });
        Ok(self.conn.insert(sender))
    }

    /// Sends one request and reads the answer (a 5xx counts as no answer).
    async fn send(&mut self, call: Call, timeout: Duration) -> Result<Answer, ShipError> {
        let Call {
            what,
            method,
            url,
            headers,
            body,
            length,
        } = call;
        let mut builder = Request::builder()
            .method(method.to_str())
            .uri(url.as_str())
            .header(hyper::header::HOST, host_header(&url))
            .header(hyper::header::CONTENT_LENGTH, length);
        for (k, v) in &headers {
            builder = builder.header(*k, v.as_str());
        }
        let req = builder
            .body(body)
            .map_err(|e| ShipError::Refused(format!("{what}: building the request: {e}")))?;
        let sender = self.connect().await?;
        sender
            .ready()
            .await
            .map_err(|e| ShipError::Unreachable(format!("{what}: {e}")))?;
        let result = tokio::time::timeout(timeout, async {
            let resp = sender.send_request(req).await?;
            let (parts, body) = resp.into_parts();
            let body = body.collect().await?.to_bytes();
            Ok::<_, hyper::Error>((parts, body))
        })
        .await;
        let (parts, body) = match result {
            Ok(Ok(r)) => r,
            Ok(Err(e)) => {
                self.conn = None;
                return Err(ShipError::Unreachable(format!("{what}: {e}")));
            }
            Err(_) => {
                self.conn = None;
                return Err(ShipError::Unreachable(format!(
                    "{what}: no answer in {timeout:?}"
                )));
            }
        };
        let answer = Answer {
            status: parts.status,
            stored: parts.headers.contains_key(super::STORED_HEADER),
            code: error_code(&body),
        };
        if answer.status.is_server_error() {
            return Err(ShipError::Unreachable(format!(
                "{what}: HTTP {} {}",
                answer.status.as_u16(),
                answer.code.as_deref().unwrap_or("")
            )));
        }
        Ok(answer)
    }

    /// Sends and accepts only 2xx or one of the `ok` error codes.
    async fn expect(&mut self, call: Call, ok: &[&str]) -> Result<Answer, ShipError> {
        let what = call.what;
        let timeout = Duration::from_secs(30) + Duration::from_millis(call.length / 1024);
        let a = self.send(call, timeout).await?;
        if a.status.is_success() || a.code.as_deref().is_some_and(|c| ok.contains(&c)) {
            return Ok(a);
        }
        Err(ShipError::Refused(format!(
            "{what}: HTTP {} {}",
            a.status.as_u16(),
            a.code.as_deref().unwrap_or("")
        )))
    }
}

fn host_header(url: &Url) -> String {
    match url.port() {
        Some(p) => format!("{}:{p}", url.host_str().unwrap_or_default()),
        None => url.host_str().unwrap_or_default().to_owned(),
    }
}

fn empty() -> Body {
    Full::new(Bytes::new())
        .map_err(|never| match never {})
        .boxed()
}

/// The object's stored bytes, `[0, len)` of `data` (its file or a manifest's blobs), as a
/// streamed body; each chunk is read on tokio's blocking pool.
fn file_body(data: ObjectData, len: u64) -> Body {
    let stream = futures_util::stream::unfold((Some(data), len), |(data, left)| async move {
        let mut data = data?;
        if left == 0 {
            return None;
        }
        let want = left.min(256 * 1024) as usize;
        let read = tokio::task::spawn_blocking(move || {
            let mut buf = vec![0u8; want];
            let r = io::Read::read(&mut data, &mut buf);
            (r, buf, data)
        })
        .await;
        let (r, mut buf, data) = match read {
            Ok(done) => done,
            Err(e) => return Some((Err(io::Error::other(e)), (None, 0))),
        };
        match r {
            Ok(0) => Some((
                Err(io::Error::new(
                    io::ErrorKind::UnexpectedEof,
                    "object file shorter than its metadata",
                )),
                (None, 0),
            )),
            Ok(n) => {
                buf.truncate(n);
                Some((
                    Ok(Frame::data(Bytes::from(buf))),
                    (Some(data), left - n as u64),
                ))
            }
            Err(e) => Some((Err(e), (None, 0))),
        }
    });
    StreamBody::new(stream).boxed()
}

impl Replication {
    /// Ships changes until the process ends.
    pub async fn run(self: Arc<Self>, store: Arc<Store>, target: Target) {
        let mut client = Client { target, conn: None };
        let mut backoff = MIN_BACKOFF;
        loop {
            let record = match self.journal.front() {
                Err(stalled) => {
                    // A damaged record: nothing after it may be shipped. Reported by status().
                    tracing::debug!(error = %stalled, "replication stopped at a damaged journal record");
                    tokio::time::sleep(MAX_BACKOFF).await;
                    continue;
                }
                Ok(None) => {
                    if let Err(e) = tokio::task::block_in_place(|| self.journal.persist(true)) {
                        tracing::error!(error = %e, "writing the replication checkpoint");
                    }
                    self.caught_up(true);
                    tokio::select! {
                        () = self.journal.appended() => {}
                        () = tokio::time::sleep(PROBE_INTERVAL) => {
                            let probe = probe(&mut client).await;
                            self.reached(probe.as_ref().map(|_| ()));
                        }
                    }
                    continue;
                }
                Ok(Some(r)) => r,
            };
            self.caught_up(false);
            match ship(&store, &mut client, &record).await {
                Ok(()) => {
                    self.journal.ack(record.seq);
                    self.reached(Ok(()));
                    backoff = MIN_BACKOFF;
                    if let Err(e) = tokio::task::block_in_place(|| self.journal.persist(false)) {
                        tracing::error!(error = %e, "writing the replication checkpoint");
                    }
                }
                Err(e) => {
                    client.conn = None;
                    self.reached(Err(&e));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(MAX_BACKOFF);
                }
            }
        }
    }
}

impl Client {
    /// A call presigned for the replica; `headers` are signed and sent.
    fn signed(
        &self,
        what: &'static str,
        method: Method,
        url: Url,
        query: &[(&str, &str)],
        headers: Vec<(&'static str, String)>,
    ) -> Call {
        let signed: Vec<(&str, &str)> = headers.iter().map(|(k, v)| (*k, v.as_str())).collect();
        let url = self.target.sign(method, url, query, &signed);
        Call {
            headers,
            ..Call::new(what, method, url)
        }
    }
}

/// Any HTTP answer from the replica's status endpoint means it is reachable.
async fn probe(client: &mut Client) -> Result<(), ShipError> {
    let url = client
        .target
        .url
        .join("_lattice/replication")
        .map_err(|e| ShipError::Refused(format!("probe URL: {e}")))?;
    let call = Call::new("probe", Method::Get, url);
    client.send(call, Duration::from_secs(10)).await.map(|_| ())
}

/// Makes the replica hold what the primary holds now for the record's object or bucket.
async fn ship(store: &Arc<Store>, client: &mut Client, record: &Record) -> Result<(), ShipError> {
    match &record.change {
        Change::Object { bucket, key } => {
            let state =
                tokio::task::block_in_place(|| store.object_state(bucket, key)).map_err(|e| {
                    ShipError::Refused(format!("reading the object on the primary: {}", redact(&e)))
                })?;
            let url = client
                .target
                .bucket(bucket)?
                .object_url(key)
                .map_err(|e| ShipError::Refused(format!("object URL: {e}")))?;
            match state {
                Some((meta, file)) => put_object(client, url, &meta, file).await,
                None => {
                    let call = client.signed("DELETE object", Method::Delete, url, &[], vec![]);
                    let ok = ["NoSuchBucket", "NoSuchKey"];
                    client.expect(call, &ok).await.map(|_| ())
                }
            }
        }
        Change::Bucket { bucket } => {
            let state = tokio::task::block_in_place(|| store.bucket_state(bucket));
            let url = client.target.bucket(bucket)?.base_url().clone();
            let Some(cors) = state else {
                let call = client.signed("DELETE bucket", Method::Delete, url, &[], vec![]);
                return client.expect(call, &["NoSuchBucket"]).await.map(|_| ());
            };
            let call = client.signed("PUT bucket", Method::Put, url.clone(), &[], vec![]);
            let ok = ["BucketAlreadyOwnedByYou", "BucketAlreadyExists"];
            client.expect(call, &ok).await?;
            let cors_query = [("cors", "")];
            let call = match cors {
                Some(rules) => {
                    let xml = cors_xml(&rules);
                    let md5 = base64::engine::general_purpose::STANDARD.encode(
                        <s3s::crypto::Md5 as s3s::crypto::Checksum>::checksum(xml.as_bytes()),
                    );
                    let headers = vec![("content-md5", md5)];
                    Call {
                        length: xml.len() as u64,
                        body: Full::new(Bytes::from(xml))
                            .map_err(|never| match never {})
                            .boxed(),
                        ..client.signed("PUT bucket CORS", Method::Put, url, &cors_query, headers)
                    }
                }
                None => client.signed(
                    "DELETE bucket CORS",
                    Method::Delete,
                    url,
                    &cors_query,
                    vec![],
                ),
            };
            client
                .expect(call, &["NoSuchCORSConfiguration"])
                .await
                .map(|_| ())
        }
    }
}

async fn put_object(
    client: &mut Client,
    url: Url,
    meta: &ObjectMeta,
    file: ObjectData,
) -> Result<(), ShipError> {
    // The replica stores the bytes as one file: how they are laid out here is not its business
    // (and a manifest's blob list would make the header long).
    let meta = &ObjectMeta {
        blobs: None,
        ..meta.clone()
    };
    let json = serde_json::to_vec(meta)
        .map_err(|e| ShipError::Refused(format!("object metadata: {e}")))?;
    let headers = vec![(
        super::META_HEADER,
        base64::engine::general_purpose::STANDARD.encode(json),
    )];
    let len = meta.stored_size();
    let call = Call {
        body: file_body(file, len),
        length: len,
        ..client.signed("PUT object", Method::Put, url, &[], headers)
    };
    let answer = client.expect(call, &[]).await?;
    if !answer.stored {
        return Err(ShipError::Refused(
            "PUT object: the replica did not take the primary's metadata (is it a lattice-s3 that accepts replication?)".into(),
        ));
    }
    Ok(())
}

/// A store error for the status: its kind, without the object's name.
fn redact(e: &crate::store::StoreError) -> &'static str {
    use crate::store::StoreError as E;
    match e {
        E::Io { .. } => "I/O error (see the log)",
        E::Corrupt(_) => "damaged object file (see the log)",
        _ => "unexpected error (see the log)",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn targets_are_plain_http_host_and_port_and_the_secret_is_not_printed() {
        let t = Target::parse("http://10.1.2.3:9000", "AK".into(), "s3cr3t-value".into()).unwrap();
        assert_eq!(t.id(), "http://10.1.2.3:9000");
        assert!(!format!("{t:?}").contains("s3cr3t-value"));
        for bad in ["https://h:1", "h:1", "http://h:1/path", "http://u:p@h:1"] {
            assert!(
                Target::parse(bad, "AK".into(), "s".into()).is_err(),
                "{bad}"
            );
        }
    }

    #[test]
    fn error_codes_are_read_from_s3_error_bodies() {
        let body =
            b"<?xml version=\"1.0\"?><Error><Code>NoSuchBucket</Code><Message>x</Message></Error>";
        assert_eq!(error_code(body).as_deref(), Some("NoSuchBucket"));
        assert_eq!(error_code(b""), None);
    }

    #[test]
    fn cors_rules_become_s3_xml() {
        let x = cors_xml(&[CorsRule {
            id: Some("a&b".into()),
            allowed_origins: vec!["https://x".into()],
            allowed_methods: vec!["GET".into()],
            allowed_headers: vec![],
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(60),
        }]);
        assert!(x.contains("<ID>a&amp;b</ID><AllowedMethod>GET</AllowedMethod><AllowedOrigin>https://x</AllowedOrigin><ExposeHeader>ETag</ExposeHeader><MaxAgeSeconds>60</MaxAgeSeconds>"), "{x}");
    }

    #[test]
    fn presigned_urls_carry_the_signed_headers() {
        let t = Target::parse(
            "http://127.0.0.1:9000",
            "AKID".into(),
            "secret-secret".into(),
        )
        .unwrap();
        let url = t.bucket("photos").unwrap().object_url("a b/c").unwrap();
        let signed = t.sign(Method::Put, url, &[], &[("x-lattice-replica-meta", "e30=")]);
        let s = signed.as_str();
        assert!(
            s.starts_with("http://127.0.0.1:9000/photos/a%20b/c?"),
            "{s}"
        );
        assert!(
            s.contains("X-Amz-SignedHeaders=host%3Bx-lattice-replica-meta"),
            "{s}"
        );
        assert!(!s.contains("secret-secret"));
    }
}
