//! The `s3s::S3` implementation: turns parsed S3 requests into calls on the [`Store`] and its
//! results into S3 answers. Store calls are blocking file I/O; they run in
//! `tokio::task::block_in_place` (the server uses the multi-threaded runtime).

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use base64::engine::general_purpose::URL_SAFE_NO_PAD as TOKEN;
use base64::Engine as _;
use bytes::{Bytes, BytesMut};
use futures_util::StreamExt as _;
use hyper::HeaderMap;
use s3s::dto::*;
use s3s::stream::ByteStream as _;
use s3s::{s3_error, S3Error, S3ErrorCode, S3Request, S3Response, S3Result, S3};

use crate::checksum::{Algorithm, ChecksumError, Checksums, Expected};
use crate::cors::CorsRule;
use crate::names::NameError;
use crate::replication;
use crate::sse::{self, CustomerKey, SseError};
use crate::store::{
    Attrs, CompletePart, CopyKeys, ListQuery, ObjectData, ObjectMeta, ObjectWriter, Store,
    StoreError,
};

/// Body bytes are handed to the store in batches of this size (fewer blocking sections).
const WRITE_BATCH: usize = 1 << 20;
/// GET bodies are read from disk in chunks of this size.
const READ_CHUNK: usize = 256 * 1024;

#[derive(Clone)]
pub struct Backend {
    store: Arc<Store>,
}

impl Backend {
    pub fn new(store: Arc<Store>) -> Self {
        Backend { store }
    }
}

fn blocking<T>(f: impl FnOnce() -> T) -> T {
    tokio::task::block_in_place(f)
}

/// Every store error as the S3 error a client expects, in one exhaustive match.
pub fn to_s3_error(e: StoreError) -> S3Error {
    let msg = e.to_string();
    let code = match e {
        StoreError::Name(NameError::InvalidBucketName { .. }) => S3ErrorCode::InvalidBucketName,
        StoreError::Name(NameError::KeyTooLong { .. }) => S3ErrorCode::KeyTooLongError,
        StoreError::Name(NameError::EmptyKey) => S3ErrorCode::InvalidArgument,
        StoreError::NoSuchBucket(_) => S3ErrorCode::NoSuchBucket,
        StoreError::BucketExists(_) => S3ErrorCode::BucketAlreadyOwnedByYou,
        StoreError::BucketNotEmpty(_) => S3ErrorCode::BucketNotEmpty,
        StoreError::NoSuchKey { .. } => S3ErrorCode::NoSuchKey,
        StoreError::NoSuchUpload(_) => S3ErrorCode::NoSuchUpload,
        StoreError::NoSuchCors(_) => S3ErrorCode::NoSuchCORSConfiguration,
        StoreError::InvalidPart { .. } => S3ErrorCode::InvalidPart,
        StoreError::InvalidPartOrder { .. } => S3ErrorCode::InvalidPartOrder,
        StoreError::EntityTooSmall { .. } => S3ErrorCode::EntityTooSmall,
        StoreError::Quota(_) => {
            let mut err = S3Error::with_message(S3ErrorCode::Custom("QuotaExceeded".into()), msg);
            err.set_status_code(hyper::StatusCode::FORBIDDEN);
            return err;
        }
        StoreError::Checksum(ChecksumError::Mismatch(_) | ChecksumError::Md5Mismatch) => {
            S3ErrorCode::BadDigest
        }
        StoreError::Checksum(ChecksumError::Malformed { .. } | ChecksumError::MalformedMd5(_)) => {
            S3ErrorCode::InvalidDigest
        }
        StoreError::Checksum(
            ChecksumError::UnknownAlgorithm(_) | ChecksumError::MissingTrailer(_),
        ) => S3ErrorCode::InvalidArgument,
        StoreError::Sse(e) => return sse_error(e),
        StoreError::InvalidArgument(_) => S3ErrorCode::InvalidArgument,
        StoreError::IncompleteBody { .. } => S3ErrorCode::IncompleteBody,
        StoreError::Io { .. } | StoreError::Corrupt(_) | StoreError::Journal(_) => {
            tracing::error!(error = %msg, "storage failure");
            return S3Error::with_message(
                S3ErrorCode::InternalError,
                "the server could not complete the request",
            );
        }
    };
    S3Error::with_message(code, msg)
}

/// SSE-C problems with the codes and statuses AWS answers.
pub fn sse_error(e: SseError) -> S3Error {
    let code = match e {
        SseError::BadAlgorithm => S3ErrorCode::InvalidEncryptionAlgorithmError,
        SseError::MissingAlgorithm
        | SseError::MissingKey
        | SseError::MissingKeyMd5
        | SseError::BadKey
        | SseError::KeyMd5Mismatch
        | SseError::UploadKeyMismatch => S3ErrorCode::InvalidArgument,
        SseError::KeyRequired
        | SseError::NotEncrypted
        | SseError::PartKeyRequired
        | SseError::Insecure => S3ErrorCode::InvalidRequest,
        SseError::WrongKey => S3ErrorCode::AccessDenied,
    };
    S3Error::with_message(code, e.to_string())
}

/// The SSE-C key of a request, from its three headers (or the three copy-source headers).
/// Refused over plain HTTP: the fleet's gateway terminates TLS and says how the client came
/// in (`X-Forwarded-Proto`, which it sets itself); a request without that header reached the
/// server directly (a local run or the tests).
fn sse_key(
    headers: &HeaderMap,
    algorithm: Option<&String>,
    key: Option<&String>,
    key_md5: Option<&String>,
) -> S3Result<Option<CustomerKey>> {
    let k = CustomerKey::from_headers(
        algorithm.map(String::as_str),
        key.map(String::as_str),
        key_md5.map(String::as_str),
    )
    .map_err(sse_error)?;
    let plain_http = headers
        .get("x-forwarded-proto")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|p| p.eq_ignore_ascii_case("http"));
    if k.is_some() && plain_http {
        return Err(sse_error(SseError::Insecure));
    }
    Ok(k)
}

/// The SSE-C headers of an answer: the algorithm and the MD5 of the key the client sent.
fn sse_answer(key: Option<&CustomerKey>) -> (Option<String>, Option<String>) {
    match key {
        Some(k) => (
            Some(sse::ALGORITHM.to_owned()),
            Some(k.md5_base64().to_owned()),
        ),
        None => (None, None),
    }
}

fn ts(ms: i64) -> Timestamp {
    Timestamp::from(UNIX_EPOCH + Duration::from_millis(u64::try_from(ms).unwrap_or(0)))
}

fn checksum_error(e: ChecksumError) -> S3Error {
    to_s3_error(StoreError::Checksum(e))
}

/// What the client declared about the body: header checksum values, trailer names
/// (`x-amz-trailer`), the SDK's algorithm, Content-MD5.
fn expected(
    headers: &HeaderMap,
    values: [(Algorithm, Option<&String>); 5],
    content_md5: Option<&String>,
    algorithm: Option<&ChecksumAlgorithm>,
) -> S3Result<Expected> {
    let mut e = Expected::default();
    for (a, v) in values {
        if let Some(v) = v {
            e.add_value(a, v).map_err(checksum_error)?;
        }
    }
    if let Some(md5) = content_md5 {
        e.set_content_md5(md5).map_err(checksum_error)?;
    }
    if let Some(t) = headers.get("x-amz-trailer").and_then(|v| v.to_str().ok()) {
        e.add_trailer_names(t).map_err(checksum_error)?;
    }
    let sdk = headers
        .get("x-amz-sdk-checksum-algorithm")
        .and_then(|v| v.to_str().ok());
    for name in sdk
        .into_iter()
        .chain(algorithm.map(ChecksumAlgorithm::as_str))
    {
        e.request(name).map_err(checksum_error)?;
    }
    Ok(e)
}

/// The trailing headers of an aws-chunked body, once it has been read to the end.
fn trailers<T>(req: &S3Request<T>) -> Vec<(String, String)> {
    let Some(t) = &req.trailing_headers else {
        return Vec::new();
    };
    t.take()
        .map(|h| {
            h.iter()
                .filter_map(|(k, v)| Some((k.as_str().to_owned(), v.to_str().ok()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

fn body_error(e: s3s::StdError) -> S3Error {
    match e.downcast::<S3Error>() {
        Ok(s3) => *s3,
        Err(e) => S3Error::with_message(
            S3ErrorCode::IncompleteBody,
            format!("reading the request body failed: {e}"),
        ),
    }
}

/// Streams the body into the writer; checks the length the client announced.
async fn receive(
    store: &Store,
    w: &mut ObjectWriter,
    mut body: StreamingBlob,
    length: Option<u64>,
) -> S3Result<()> {
    let mut batch = BytesMut::new();
    while let Some(chunk) = body.next().await {
        let chunk = chunk.map_err(body_error)?;
        batch.extend_from_slice(&chunk);
        if batch.len() >= WRITE_BATCH {
            let data = batch.split().freeze();
            blocking(|| store.write_bytes(w, data)).map_err(to_s3_error)?;
        }
    }
    if !batch.is_empty() {
        let data = batch.freeze();
        blocking(|| store.write_bytes(w, data)).map_err(to_s3_error)?;
    }
    match length {
        Some(expected) if expected != w.written() => Err(to_s3_error(StoreError::IncompleteBody {
            got: w.written(),
            expected,
        })),
        _ => Ok(()),
    }
}

fn body_length(body: &StreamingBlob, content_length: Option<i64>) -> Option<u64> {
    body.remaining_length()
        .exact()
        .map(|n| n as u64)
        .or(content_length.and_then(|n| u64::try_from(n).ok()))
}

fn user_metadata(m: Option<Metadata>) -> std::collections::BTreeMap<String, String> {
    m.map(|m| m.into_iter().collect()).unwrap_or_default()
}

fn checksum_values(c: &Checksums) -> [Option<String>; 5] {
    let get = |a| c.get(a).map(str::to_owned);
    [
        get(Algorithm::Crc32),
        get(Algorithm::Crc32c),
        get(Algorithm::Crc64Nvme),
        get(Algorithm::Sha1),
        get(Algorithm::Sha256),
    ]
}

/// What GET and HEAD report of an object's checksums: nothing unless the client asked.
fn reported_checksums(c: &Checksums, wanted: bool) -> ([Option<String>; 5], Option<ChecksumType>) {
    if wanted {
        (checksum_values(c), checksum_type(c))
    } else {
        Default::default()
    }
}

/// An object's user metadata as GET and HEAD answer it: absent when there is none.
fn stored_metadata(
    user: &std::collections::BTreeMap<String, String>,
) -> Option<HashMap<String, String>> {
    (!user.is_empty()).then(|| user.clone().into_iter().collect())
}

fn checksum_type(c: &Checksums) -> Option<ChecksumType> {
    match (c.values.is_empty(), c.composite) {
        (true, _) => None,
        (false, true) => Some(ChecksumType::from_static(ChecksumType::COMPOSITE)),
        (false, false) => Some(ChecksumType::from_static(ChecksumType::FULL_OBJECT)),
    }
}

/// Percent-encodes for `encoding-type=url` (keys may hold characters XML 1.0 cannot carry).
fn url_encode(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        if b.is_ascii_alphanumeric() || b"-_.~/".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out
}

fn decode_token(token: &str) -> S3Result<String> {
    TOKEN
        .decode(token)
        .ok()
        .and_then(|b| String::from_utf8(b).ok())
        .ok_or_else(|| {
            s3_error!(
                InvalidArgument,
                "The continuation token provided is incorrect"
            )
        })
}

fn max_keys(n: Option<i32>) -> S3Result<usize> {
    match n {
        None => Ok(1000),
        Some(n) if n < 0 => Err(s3_error!(InvalidArgument, "max-keys must not be negative")),
        Some(n) => Ok((n as usize).min(1000)),
    }
}

/// Seconds since the epoch of an HTTP date (S3 compares Last-Modified at second granularity).
fn epoch_secs(t: &Timestamp) -> Option<i64> {
    let mut buf = Vec::new();
    t.format(TimestampFormat::EpochSeconds, &mut buf).ok()?;
    let text = String::from_utf8(buf).ok()?;
    text.split('.').next()?.parse().ok()
}

fn etag_matches(cond: &ETagCondition, etag: &str) -> bool {
    match cond {
        ETagCondition::Any => true,
        ETagCondition::ETag(e) => e.value() == etag,
    }
}

/// If-Match / If-Unmodified-Since (412) and If-None-Match / If-Modified-Since (304), in the
/// order RFC 9110 and S3 apply them.
fn check_conditions(
    etag: &str,
    last_modified_ms: i64,
    if_match: Option<&ETagCondition>,
    if_none_match: Option<&ETagCondition>,
    if_modified_since: Option<&Timestamp>,
    if_unmodified_since: Option<&Timestamp>,
) -> S3Result<()> {
    let modified = last_modified_ms.div_euclid(1000);
    match if_match {
        Some(c) if !etag_matches(c, etag) => {
            return Err(s3_error!(
                PreconditionFailed,
                "If-Match does not match the object's ETag"
            ));
        }
        Some(_) => {}
        None => {
            if if_unmodified_since
                .and_then(epoch_secs)
                .is_some_and(|t| modified > t)
            {
                return Err(s3_error!(
                    PreconditionFailed,
                    "the object was modified after If-Unmodified-Since"
                ));
            }
        }
    }
    match if_none_match {
        Some(c) if etag_matches(c, etag) => return Err(s3_error!(NotModified)),
        Some(_) => {}
        None => {
            if if_modified_since
                .and_then(epoch_secs)
                .is_some_and(|t| modified <= t)
            {
                return Err(s3_error!(NotModified));
            }
        }
    }
    Ok(())
}

fn to_cors(rule: CORSRule) -> CorsRule {
    CorsRule {
        id: rule.id,
        allowed_origins: rule.allowed_origins,
        allowed_methods: rule.allowed_methods,
        allowed_headers: rule.allowed_headers.unwrap_or_default(),
        expose_headers: rule.expose_headers.unwrap_or_default(),
        max_age_seconds: rule.max_age_seconds,
    }
}

fn from_cors(rule: CorsRule) -> CORSRule {
    CORSRule {
        id: rule.id,
        allowed_origins: rule.allowed_origins,
        allowed_methods: rule.allowed_methods,
        allowed_headers: Some(rule.allowed_headers).filter(|v| !v.is_empty()),
        expose_headers: Some(rule.expose_headers).filter(|v| !v.is_empty()),
        max_age_seconds: rule.max_age_seconds,
    }
}

impl Backend {
    /// A replica receiving an object from its primary: the body is the object's stored bytes
    /// (ciphertext for SSE-C) and the header its stored metadata, both kept as they are, so
    /// the replica answers with the primary's ETag, times, checksums and SSE-C key check. Only
    /// the deployment's own key can sign it, and it writes nothing that key could not write.
    async fn put_replicated(
        &self,
        mut req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if self.store.journal().is_some() {
            return Err(s3_error!(
                InvalidRequest,
                "this server is a replication primary; it does not take replicated objects"
            ));
        }
        let meta: ObjectMeta = req
            .headers
            .get(replication::META_HEADER)
            .and_then(|v| {
                base64::engine::general_purpose::STANDARD
                    .decode(v.as_bytes())
                    .ok()
            })
            .and_then(|json| serde_json::from_slice(&json).ok())
            .ok_or_else(|| {
                s3_error!(
                    InvalidArgument,
                    "x-lattice-replica-meta is not base64 of an object's stored metadata"
                )
            })?;
        let body = req
            .input
            .body
            .take()
            .ok_or_else(|| s3_error!(IncompleteBody, "PutObject needs a body"))?;
        let length = meta.stored_size();
        if body_length(&body, req.input.content_length).is_some_and(|n| n != length) {
            return Err(s3_error!(
                InvalidArgument,
                "the body's length is not the stored size the metadata says"
            ));
        }
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let mut w =
            blocking(|| self.store.begin_replica_put(&bucket, &key, &meta)).map_err(to_s3_error)?;
        receive(&self.store, &mut w, body, Some(length)).await?;
        let meta =
            blocking(|| self.store.commit_replica(w, &bucket, &key, meta)).map_err(to_s3_error)?;
        let mut resp = S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            ..Default::default()
        });
        resp.headers.insert(
            replication::STORED_HEADER,
            hyper::header::HeaderValue::from_static("stored"),
        );
        Ok(resp)
    }
}

#[async_trait::async_trait]
impl S3 for Backend {
    async fn create_bucket(
        &self,
        req: S3Request<CreateBucketInput>,
    ) -> S3Result<S3Response<CreateBucketOutput>> {
        let bucket = req.input.bucket;
        blocking(|| self.store.create_bucket(&bucket)).map_err(to_s3_error)?;
        Ok(S3Response::new(CreateBucketOutput {
            location: Some(format!("/{bucket}")),
        }))
    }

    async fn head_bucket(
        &self,
        req: S3Request<HeadBucketInput>,
    ) -> S3Result<S3Response<HeadBucketOutput>> {
        blocking(|| self.store.head_bucket(&req.input.bucket)).map_err(to_s3_error)?;
        Ok(S3Response::new(HeadBucketOutput::default()))
    }

    async fn delete_bucket(
        &self,
        req: S3Request<DeleteBucketInput>,
    ) -> S3Result<S3Response<DeleteBucketOutput>> {
        blocking(|| self.store.delete_bucket(&req.input.bucket)).map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteBucketOutput {}))
    }

    async fn list_buckets(
        &self,
        _req: S3Request<ListBucketsInput>,
    ) -> S3Result<S3Response<ListBucketsOutput>> {
        let buckets = blocking(|| self.store.list_buckets())
            .into_iter()
            .map(|b| Bucket {
                name: Some(b.name),
                creation_date: Some(ts(b.created_ms)),
                bucket_region: None,
            })
            .collect();
        Ok(S3Response::new(ListBucketsOutput {
            buckets: Some(buckets),
            ..Default::default()
        }))
    }

    async fn get_bucket_location(
        &self,
        req: S3Request<GetBucketLocationInput>,
    ) -> S3Result<S3Response<GetBucketLocationOutput>> {
        blocking(|| self.store.head_bucket(&req.input.bucket)).map_err(to_s3_error)?;
        Ok(S3Response::new(GetBucketLocationOutput::default()))
    }

    async fn put_object(
        &self,
        req: S3Request<PutObjectInput>,
    ) -> S3Result<S3Response<PutObjectOutput>> {
        if req.headers.contains_key(replication::META_HEADER) {
            return self.put_replicated(req).await;
        }
        let i = &req.input;
        let expected = expected(
            &req.headers,
            [
                (Algorithm::Crc32, i.checksum_crc32.as_ref()),
                (Algorithm::Crc32c, i.checksum_crc32c.as_ref()),
                (Algorithm::Crc64Nvme, i.checksum_crc64nvme.as_ref()),
                (Algorithm::Sha1, i.checksum_sha1.as_ref()),
                (Algorithm::Sha256, i.checksum_sha256.as_ref()),
            ],
            i.content_md5.as_ref(),
            i.checksum_algorithm.as_ref(),
        )?;
        let sse_key = sse_key(
            &req.headers,
            i.sse_customer_algorithm.as_ref(),
            i.sse_customer_key.as_ref(),
            i.sse_customer_key_md5.as_ref(),
        )?;
        let mut req = req;
        let body = req
            .input
            .body
            .take()
            .ok_or_else(|| s3_error!(IncompleteBody, "PutObject needs a body"))?;
        let length = body_length(&body, req.input.content_length);
        let (bucket, key) = (req.input.bucket.clone(), req.input.key.clone());
        let mut w = blocking(|| self.store.begin_put(&bucket, &key, length, &expected))
            .map_err(to_s3_error)?;
        if let Some(k) = &sse_key {
            w.encrypt(k);
        }
        receive(&self.store, &mut w, body, length).await?;
        let trailers = trailers(&req);
        let i = req.input;
        let attrs = Attrs {
            content_type: i.content_type,
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            user: user_metadata(i.metadata),
        };
        let meta = blocking(|| {
            self.store
                .commit_put(w, &bucket, &key, attrs, &expected, &trailers)
        })
        .map_err(to_s3_error)?;
        let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_values(&meta.checksums);
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(sse_key.as_ref());
        Ok(S3Response::new(PutObjectOutput {
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            sse_customer_algorithm,
            sse_customer_key_md5,
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: checksum_type(&meta.checksums),
            ..Default::default()
        }))
    }

    async fn get_object(
        &self,
        req: S3Request<GetObjectInput>,
    ) -> S3Result<S3Response<GetObjectOutput>> {
        let i = req.input;
        let sse_key = sse_key(
            &req.headers,
            i.sse_customer_algorithm.as_ref(),
            i.sse_customer_key.as_ref(),
            i.sse_customer_key_md5.as_ref(),
        )?;
        let (meta, file) =
            blocking(|| self.store.open_object(&i.bucket, &i.key)).map_err(to_s3_error)?;
        sse::check_access(meta.sse.as_ref(), sse_key.as_ref()).map_err(sse_error)?;
        check_conditions(
            &meta.etag,
            meta.last_modified_ms,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        let range = match &i.range {
            None => None,
            Some(r) => Some(r.check(meta.size).map_err(|_| {
                s3_error!(
                    InvalidRange,
                    "The requested range is not satisfiable for an object of {} bytes",
                    meta.size
                )
            })?),
        };
        let (start, end) = range.as_ref().map_or((0, meta.size), |r| (r.start, r.end));
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(sse_key.as_ref());
        let body = match (&meta.sse, sse_key) {
            (Some(s), Some(k)) => StreamingBlob::wrap(decrypt_stream(sse::Decryptor::new(
                file, 0, k, s, start, end,
            ))),
            _ => {
                let mut data = file;
                std::io::Seek::seek(&mut data, std::io::SeekFrom::Start(start))
                    .map_err(S3Error::internal_error)?;
                StreamingBlob::wrap(read_stream(data, end - start))
            }
        };
        let with_checksums = range.is_none()
            && i.checksum_mode
                .as_ref()
                .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let ([crc32, crc32c, crc64nvme, sha1, sha256], kind) =
            reported_checksums(&meta.checksums, with_checksums);
        let a = meta.attrs.clone();
        let output = GetObjectOutput {
            body: Some(body),
            sse_customer_algorithm,
            sse_customer_key_md5,
            content_length: Some((end - start) as i64),
            content_range: range.map(|r| {
                format!(
                    "bytes {}-{}/{}",
                    r.start,
                    r.end.saturating_sub(1),
                    meta.size
                )
            }),
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(ts(meta.last_modified_ms)),
            metadata: stored_metadata(&meta.attrs.user),
            content_type: a.content_type,
            cache_control: a.cache_control,
            content_disposition: a.content_disposition,
            content_encoding: a.content_encoding,
            content_language: a.content_language,
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: kind,
            parts_count: meta.parts.map(|n| n as i32),
            ..Default::default()
        };
        Ok(S3Response::new(output))
    }

    async fn head_object(
        &self,
        req: S3Request<HeadObjectInput>,
    ) -> S3Result<S3Response<HeadObjectOutput>> {
        let i = req.input;
        let sse_key = sse_key(
            &req.headers,
            i.sse_customer_algorithm.as_ref(),
            i.sse_customer_key.as_ref(),
            i.sse_customer_key_md5.as_ref(),
        )?;
        let (meta, _) =
            blocking(|| self.store.open_object(&i.bucket, &i.key)).map_err(to_s3_error)?;
        sse::check_access(meta.sse.as_ref(), sse_key.as_ref()).map_err(sse_error)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(sse_key.as_ref());
        check_conditions(
            &meta.etag,
            meta.last_modified_ms,
            i.if_match.as_ref(),
            i.if_none_match.as_ref(),
            i.if_modified_since.as_ref(),
            i.if_unmodified_since.as_ref(),
        )?;
        let with_checksums = i
            .checksum_mode
            .as_ref()
            .is_some_and(|m| m.as_str() == ChecksumMode::ENABLED);
        let ([crc32, crc32c, crc64nvme, sha1, sha256], kind) =
            reported_checksums(&meta.checksums, with_checksums);
        let a = meta.attrs.clone();
        Ok(S3Response::new(HeadObjectOutput {
            content_length: Some(meta.size as i64),
            sse_customer_algorithm,
            sse_customer_key_md5,
            accept_ranges: Some("bytes".into()),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            last_modified: Some(ts(meta.last_modified_ms)),
            metadata: stored_metadata(&meta.attrs.user),
            content_type: a.content_type,
            cache_control: a.cache_control,
            content_disposition: a.content_disposition,
            content_encoding: a.content_encoding,
            content_language: a.content_language,
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: kind,
            parts_count: meta.parts.map(|n| n as i32),
            ..Default::default()
        }))
    }

    async fn delete_object(
        &self,
        req: S3Request<DeleteObjectInput>,
    ) -> S3Result<S3Response<DeleteObjectOutput>> {
        let i = req.input;
        blocking(|| self.store.delete_object(&i.bucket, &i.key)).map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteObjectOutput::default()))
    }

    async fn delete_objects(
        &self,
        req: S3Request<DeleteObjectsInput>,
    ) -> S3Result<S3Response<DeleteObjectsOutput>> {
        let i = req.input;
        blocking(|| self.store.head_bucket(&i.bucket)).map_err(to_s3_error)?;
        let quiet = i.delete.quiet.unwrap_or(false);
        let (mut deleted, mut errors) = (Vec::new(), Vec::new());
        for o in i.delete.objects {
            match blocking(|| self.store.delete_object(&i.bucket, &o.key)) {
                Ok(_) => deleted.push(DeletedObject {
                    key: Some(o.key),
                    ..Default::default()
                }),
                Err(e) => {
                    let err = to_s3_error(e);
                    errors.push(Error {
                        code: Some(err.code().as_str().to_owned()),
                        key: Some(o.key),
                        message: err.message().map(str::to_owned),
                        version_id: None,
                    });
                }
            }
        }
        Ok(S3Response::new(DeleteObjectsOutput {
            deleted: if quiet { None } else { Some(deleted) },
            errors: Some(errors).filter(|e| !e.is_empty()),
            ..Default::default()
        }))
    }

    async fn copy_object(
        &self,
        req: S3Request<CopyObjectInput>,
    ) -> S3Result<S3Response<CopyObjectOutput>> {
        let i = &req.input;
        let (src_bucket, src_key) = match &i.copy_source {
            CopySource::Bucket { bucket, key, .. } => (bucket.to_string(), key.to_string()),
            CopySource::AccessPoint { .. } | CopySource::Outpost { .. } => {
                return Err(s3_error!(
                    NotImplemented,
                    "access points and outposts are not supported"
                ));
            }
        };
        let replace = i
            .metadata_directive
            .as_ref()
            .is_some_and(|d| d.as_str() == MetadataDirective::REPLACE);
        let attrs = replace.then(|| Attrs {
            content_type: i.content_type.clone(),
            cache_control: i.cache_control.clone(),
            content_disposition: i.content_disposition.clone(),
            content_encoding: i.content_encoding.clone(),
            content_language: i.content_language.clone(),
            user: user_metadata(i.metadata.clone()),
        });
        let source_key = sse_key(
            &req.headers,
            i.copy_source_sse_customer_algorithm.as_ref(),
            i.copy_source_sse_customer_key.as_ref(),
            i.copy_source_sse_customer_key_md5.as_ref(),
        )?;
        let dest_key = sse_key(
            &req.headers,
            i.sse_customer_algorithm.as_ref(),
            i.sse_customer_key.as_ref(),
            i.sse_customer_key_md5.as_ref(),
        )?;
        // S3 allows a copy onto itself that changes the encryption (a new SSE-C key).
        if !replace
            && src_bucket == i.bucket
            && src_key == i.key
            && source_key.is_none()
            && dest_key.is_none()
        {
            return Err(s3_error!(
                InvalidRequest,
                "This copy request is illegal because it is trying to copy an object to itself without changing the object's metadata."
            ));
        }
        let keys = CopyKeys {
            source: source_key.as_ref(),
            dest: dest_key.as_ref(),
        };
        let meta = blocking(|| {
            self.store
                .copy_object(&src_bucket, &src_key, &i.bucket, &i.key, attrs, keys)
        })
        .map_err(to_s3_error)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(dest_key.as_ref());
        Ok(S3Response::new(CopyObjectOutput {
            sse_customer_algorithm,
            sse_customer_key_md5,
            copy_object_result: Some(CopyObjectResult {
                e_tag: Some(ETag::Strong(meta.etag.clone())),
                last_modified: Some(ts(meta.last_modified_ms)),
                ..Default::default()
            }),
            ..Default::default()
        }))
    }

    async fn list_objects_v2(
        &self,
        req: S3Request<ListObjectsV2Input>,
    ) -> S3Result<S3Response<ListObjectsV2Output>> {
        let i = req.input;
        let after = match (&i.continuation_token, &i.start_after) {
            (Some(t), _) => Some(decode_token(t)?),
            (None, Some(s)) => Some(s.clone()),
            (None, None) => None,
        };
        let query = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            after,
            max_keys: max_keys(i.max_keys)?,
        };
        let page = blocking(|| self.store.list_objects(&i.bucket, &query)).map_err(to_s3_error)?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let key_count = (page.objects.len() + page.common_prefixes.len()) as i32;
        let contents: Vec<Object> = page
            .objects
            .into_iter()
            .map(|(key, e)| Object {
                key: Some(enc(key)),
                size: Some(e.size as i64),
                e_tag: Some(ETag::Strong(e.etag)),
                last_modified: Some(ts(e.last_modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let common: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsV2Output {
            name: Some(i.bucket),
            prefix: Some(enc(query.prefix)),
            delimiter: i.delimiter.map(enc),
            max_keys: Some(query.max_keys as i32),
            key_count: Some(key_count),
            is_truncated: Some(page.truncated),
            continuation_token: i.continuation_token,
            next_continuation_token: page
                .next_marker
                .filter(|_| page.truncated)
                .map(|m| TOKEN.encode(m)),
            start_after: i.start_after.map(enc),
            encoding_type: i.encoding_type,
            contents: Some(contents).filter(|c| !c.is_empty()),
            common_prefixes: Some(common).filter(|c| !c.is_empty()),
            ..Default::default()
        }))
    }

    async fn list_objects(
        &self,
        req: S3Request<ListObjectsInput>,
    ) -> S3Result<S3Response<ListObjectsOutput>> {
        let i = req.input;
        let query = ListQuery {
            prefix: i.prefix.clone().unwrap_or_default(),
            delimiter: i.delimiter.clone(),
            after: i.marker.clone(),
            max_keys: max_keys(i.max_keys)?,
        };
        let page = blocking(|| self.store.list_objects(&i.bucket, &query)).map_err(to_s3_error)?;
        let url = i
            .encoding_type
            .as_ref()
            .is_some_and(|e| e.as_str() == EncodingType::URL);
        let enc = |s: String| if url { url_encode(&s) } else { s };
        let contents: Vec<Object> = page
            .objects
            .into_iter()
            .map(|(key, e)| Object {
                key: Some(enc(key)),
                size: Some(e.size as i64),
                e_tag: Some(ETag::Strong(e.etag)),
                last_modified: Some(ts(e.last_modified_ms)),
                storage_class: Some(ObjectStorageClass::from_static(
                    ObjectStorageClass::STANDARD,
                )),
                ..Default::default()
            })
            .collect();
        let common: Vec<CommonPrefix> = page
            .common_prefixes
            .into_iter()
            .map(|p| CommonPrefix {
                prefix: Some(enc(p)),
            })
            .collect();
        Ok(S3Response::new(ListObjectsOutput {
            name: Some(i.bucket),
            prefix: Some(enc(query.prefix)),
            delimiter: i.delimiter.map(enc),
            marker: i.marker.map(enc),
            max_keys: Some(query.max_keys as i32),
            is_truncated: Some(page.truncated),
            next_marker: page.next_marker.filter(|_| page.truncated).map(enc),
            encoding_type: i.encoding_type,
            contents: Some(contents).filter(|c| !c.is_empty()),
            common_prefixes: Some(common).filter(|c| !c.is_empty()),
            ..Default::default()
        }))
    }

    async fn create_multipart_upload(
        &self,
        req: S3Request<CreateMultipartUploadInput>,
    ) -> S3Result<S3Response<CreateMultipartUploadOutput>> {
        let sse_key = sse_key(
            &req.headers,
            req.input.sse_customer_algorithm.as_ref(),
            req.input.sse_customer_key.as_ref(),
            req.input.sse_customer_key_md5.as_ref(),
        )?;
        let i = req.input;
        let algorithm = match &i.checksum_algorithm {
            None => None,
            Some(a) => Some(Algorithm::from_name(a.as_str()).ok_or_else(|| {
                checksum_error(ChecksumError::UnknownAlgorithm(a.as_str().into()))
            })?),
        };
        let attrs = Attrs {
            content_type: i.content_type,
            cache_control: i.cache_control,
            content_disposition: i.content_disposition,
            content_encoding: i.content_encoding,
            content_language: i.content_language,
            user: user_metadata(i.metadata),
        };
        let info = blocking(|| {
            self.store
                .create_upload(&i.bucket, &i.key, attrs, algorithm, sse_key.as_ref())
        })
        .map_err(to_s3_error)?;
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(sse_key.as_ref());
        Ok(S3Response::new(CreateMultipartUploadOutput {
            sse_customer_algorithm,
            sse_customer_key_md5,
            bucket: Some(info.bucket),
            key: Some(info.key),
            upload_id: Some(info.upload_id),
            checksum_algorithm: i.checksum_algorithm,
            checksum_type: algorithm.map(|_| ChecksumType::from_static(ChecksumType::COMPOSITE)),
            ..Default::default()
        }))
    }

    async fn upload_part(
        &self,
        mut req: S3Request<UploadPartInput>,
    ) -> S3Result<S3Response<UploadPartOutput>> {
        let i = &req.input;
        let expected = expected(
            &req.headers,
            [
                (Algorithm::Crc32, i.checksum_crc32.as_ref()),
                (Algorithm::Crc32c, i.checksum_crc32c.as_ref()),
                (Algorithm::Crc64Nvme, i.checksum_crc64nvme.as_ref()),
                (Algorithm::Sha1, i.checksum_sha1.as_ref()),
                (Algorithm::Sha256, i.checksum_sha256.as_ref()),
            ],
            i.content_md5.as_ref(),
            i.checksum_algorithm.as_ref(),
        )?;
        let sse_key = sse_key(
            &req.headers,
            i.sse_customer_algorithm.as_ref(),
            i.sse_customer_key.as_ref(),
            i.sse_customer_key_md5.as_ref(),
        )?;
        let body = req
            .input
            .body
            .take()
            .ok_or_else(|| s3_error!(IncompleteBody, "UploadPart needs a body"))?;
        let length = body_length(&body, req.input.content_length);
        let (bucket, key, id, n) = (
            req.input.bucket.clone(),
            req.input.key.clone(),
            req.input.upload_id.clone(),
            i64::from(req.input.part_number),
        );
        let mut w = blocking(|| {
            self.store
                .begin_part(&bucket, &key, &id, n, length, &expected, sse_key.as_ref())
        })
        .map_err(to_s3_error)?;
        receive(&self.store, &mut w, body, length).await?;
        let trailers = trailers(&req);
        let meta = blocking(|| {
            self.store
                .commit_part(w, &bucket, &key, &id, n, &expected, &trailers)
        })
        .map_err(to_s3_error)?;
        let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_values(&meta.checksums);
        let (sse_customer_algorithm, sse_customer_key_md5) = sse_answer(sse_key.as_ref());
        Ok(S3Response::new(UploadPartOutput {
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            sse_customer_algorithm,
            sse_customer_key_md5,
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            ..Default::default()
        }))
    }

    async fn complete_multipart_upload(
        &self,
        req: S3Request<CompleteMultipartUploadInput>,
    ) -> S3Result<S3Response<CompleteMultipartUploadOutput>> {
        let i = req.input;
        let parts: Vec<CompletePart> = i
            .multipart_upload
            .and_then(|m| m.parts)
            .unwrap_or_default()
            .into_iter()
            .map(|p| {
                let checksums = [
                    (Algorithm::Crc32, p.checksum_crc32),
                    (Algorithm::Crc32c, p.checksum_crc32c),
                    (Algorithm::Crc64Nvme, p.checksum_crc64nvme),
                    (Algorithm::Sha1, p.checksum_sha1),
                    (Algorithm::Sha256, p.checksum_sha256),
                ]
                .into_iter()
                .filter_map(|(a, v)| Some((a, v?)))
                .collect();
                CompletePart {
                    part_number: p.part_number.map_or(0, i64::from),
                    etag: p.e_tag.map(|e| e.value().to_owned()),
                    checksums,
                }
            })
            .collect();
        if parts.is_empty() {
            return Err(s3_error!(
                MalformedXML,
                "CompleteMultipartUpload must name at least one part"
            ));
        }
        let meta = blocking(|| {
            self.store
                .complete_upload(&i.bucket, &i.key, &i.upload_id, &parts)
        })
        .map_err(to_s3_error)?;
        let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_values(&meta.checksums);
        Ok(S3Response::new(CompleteMultipartUploadOutput {
            bucket: Some(i.bucket.clone()),
            key: Some(i.key.clone()),
            location: Some(format!("/{}/{}", i.bucket, url_encode(&i.key))),
            e_tag: Some(ETag::Strong(meta.etag.clone())),
            checksum_crc32: crc32,
            checksum_crc32c: crc32c,
            checksum_crc64nvme: crc64nvme,
            checksum_sha1: sha1,
            checksum_sha256: sha256,
            checksum_type: checksum_type(&meta.checksums),
            ..Default::default()
        }))
    }

    async fn abort_multipart_upload(
        &self,
        req: S3Request<AbortMultipartUploadInput>,
    ) -> S3Result<S3Response<AbortMultipartUploadOutput>> {
        let i = req.input;
        blocking(|| self.store.abort_upload(&i.bucket, &i.key, &i.upload_id))
            .map_err(to_s3_error)?;
        Ok(S3Response::new(AbortMultipartUploadOutput::default()))
    }

    async fn list_parts(
        &self,
        req: S3Request<ListPartsInput>,
    ) -> S3Result<S3Response<ListPartsOutput>> {
        let i = req.input;
        let (info, parts) = blocking(|| self.store.list_parts(&i.bucket, &i.key, &i.upload_id))
            .map_err(to_s3_error)?;
        let marker = i.part_number_marker.unwrap_or(0).max(0) as u32;
        let max = i.max_parts.unwrap_or(1000).clamp(0, 1000) as usize;
        let after: Vec<_> = parts
            .into_iter()
            .filter(|p| p.part_number > marker)
            .collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next = page.last().map(|p| p.part_number as i32);
        let parts = page
            .into_iter()
            .map(|p| {
                let [crc32, crc32c, crc64nvme, sha1, sha256] = checksum_values(&p.meta.checksums);
                Part {
                    part_number: Some(p.part_number as i32),
                    size: Some(p.meta.size as i64),
                    e_tag: Some(ETag::Strong(p.meta.etag)),
                    last_modified: Some(ts(p.meta.last_modified_ms)),
                    checksum_crc32: crc32,
                    checksum_crc32c: crc32c,
                    checksum_crc64nvme: crc64nvme,
                    checksum_sha1: sha1,
                    checksum_sha256: sha256,
                }
            })
            .collect();
        Ok(S3Response::new(ListPartsOutput {
            bucket: Some(info.bucket),
            key: Some(info.key),
            upload_id: Some(info.upload_id),
            part_number_marker: i.part_number_marker,
            next_part_number_marker: next.filter(|_| truncated),
            max_parts: Some(max as i32),
            is_truncated: Some(truncated),
            parts: Some(parts),
            checksum_algorithm: info
                .checksum_algorithm
                .map(|a| ChecksumAlgorithm::from(a.name().to_owned())),
            ..Default::default()
        }))
    }

    async fn list_multipart_uploads(
        &self,
        req: S3Request<ListMultipartUploadsInput>,
    ) -> S3Result<S3Response<ListMultipartUploadsOutput>> {
        let i = req.input;
        let prefix = i.prefix.clone().unwrap_or_default();
        let uploads =
            blocking(|| self.store.list_uploads(&i.bucket, &prefix)).map_err(to_s3_error)?;
        let max = i.max_uploads.unwrap_or(1000).clamp(0, 1000) as usize;
        let marker = i.key_marker.clone();
        let after: Vec<_> = uploads
            .into_iter()
            .filter(|u| marker.as_ref().is_none_or(|m| u.key > *m))
            .collect();
        let truncated = after.len() > max;
        let page: Vec<_> = after.into_iter().take(max).collect();
        let next = page.last().map(|u| (u.key.clone(), u.upload_id.clone()));
        let uploads = page
            .into_iter()
            .map(|u| MultipartUpload {
                key: Some(u.key),
                upload_id: Some(u.upload_id),
                initiated: Some(ts(u.initiated_ms)),
                checksum_algorithm: u
                    .checksum_algorithm
                    .map(|a| ChecksumAlgorithm::from(a.name().to_owned())),
                ..Default::default()
            })
            .collect();
        Ok(S3Response::new(ListMultipartUploadsOutput {
            bucket: Some(i.bucket),
            prefix: i.prefix,
            key_marker: i.key_marker,
            max_uploads: Some(max as i32),
            is_truncated: Some(truncated),
            next_key_marker: next.as_ref().filter(|_| truncated).map(|n| n.0.clone()),
            next_upload_id_marker: next.filter(|_| truncated).map(|n| n.1),
            uploads: Some(uploads),
            ..Default::default()
        }))
    }

    async fn get_bucket_cors(
        &self,
        req: S3Request<GetBucketCorsInput>,
    ) -> S3Result<S3Response<GetBucketCorsOutput>> {
        let rules = blocking(|| self.store.get_cors(&req.input.bucket)).map_err(to_s3_error)?;
        Ok(S3Response::new(GetBucketCorsOutput {
            cors_rules: Some(rules.into_iter().map(from_cors).collect()),
        }))
    }

    async fn put_bucket_cors(
        &self,
        req: S3Request<PutBucketCorsInput>,
    ) -> S3Result<S3Response<PutBucketCorsOutput>> {
        let i = req.input;
        let rules = i
            .cors_configuration
            .cors_rules
            .into_iter()
            .map(to_cors)
            .collect();
        blocking(|| self.store.set_cors(&i.bucket, Some(rules))).map_err(to_s3_error)?;
        Ok(S3Response::new(PutBucketCorsOutput {}))
    }

    async fn delete_bucket_cors(
        &self,
        req: S3Request<DeleteBucketCorsInput>,
    ) -> S3Result<S3Response<DeleteBucketCorsOutput>> {
        blocking(|| self.store.set_cors(&req.input.bucket, None)).map_err(to_s3_error)?;
        Ok(S3Response::new(DeleteBucketCorsOutput {}))
    }
}

/// The object's bytes from the current position, `len` of them, in chunks read in blocking
/// sections (positioned reads straight into the chunk; page-cache hits mostly, so no thread
/// hop as `tokio::fs` would make).
fn read_stream(
    data: ObjectData,
    len: u64,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    use std::io::Read as _;
    futures_util::stream::try_unfold((data, len), |(mut data, left)| async move {
        if left == 0 {
            return Ok(None);
        }
        let want = left.min(READ_CHUNK as u64) as usize;
        let mut buf = BytesMut::zeroed(want);
        blocking(|| -> std::io::Result<()> {
            let mut filled = 0;
            while filled < want {
                match data.read(&mut buf[filled..]) {
                    Ok(0) => {
                        return Err(std::io::Error::new(
                            std::io::ErrorKind::UnexpectedEof,
                            "object file is shorter than its metadata says",
                        ))
                    }
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => return Err(e),
                }
            }
            Ok(())
        })?;
        Ok(Some((buf.freeze(), (data, left - want as u64))))
    })
}

/// The plaintext a decryptor yields, in chunks read in blocking sections.
fn decrypt_stream(
    d: sse::Decryptor<ObjectData>,
) -> impl futures_util::Stream<Item = Result<Bytes, std::io::Error>> + Send + Sync + 'static {
    use std::io::Read as _;
    futures_util::stream::try_unfold(d, |mut d| async move {
        let mut buf = BytesMut::zeroed(READ_CHUNK);
        let filled = blocking(|| -> std::io::Result<usize> {
            let mut filled = 0;
            while filled < buf.len() {
                match d.read(&mut buf[filled..]) {
                    Ok(0) => break,
                    Ok(n) => filled += n,
                    Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                    Err(e) => {
                        tracing::error!(error = %e, "reading an encrypted object failed");
                        return Err(e);
                    }
                }
            }
            Ok(filled)
        })?;
        if filled == 0 {
            return Ok(None);
        }
        buf.truncate(filled);
        Ok(Some((buf.freeze(), d)))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn strong(e: &str) -> ETagCondition {
        ETagCondition::ETag(ETag::Strong(e.to_owned()))
    }

    fn at(secs: i64) -> Timestamp {
        ts(secs * 1000)
    }

    fn code(r: S3Result<()>) -> String {
        r.map_or_else(|e| e.code().as_str().to_owned(), |()| "OK".to_owned())
    }

    #[test]
    fn conditional_requests_answer_304_and_412_as_s3_does() {
        // an object with ETag "abc", modified at second 1000
        fn c(
            m: Option<&ETagCondition>,
            n: Option<&ETagCondition>,
            ms: Option<&Timestamp>,
            us: Option<&Timestamp>,
        ) -> String {
            code(check_conditions("abc", 1_000_500, m, n, ms, us))
        }
        assert_eq!(c(Some(&strong("abc")), None, None, None), "OK");
        assert_eq!(
            c(Some(&strong("xyz")), None, None, None),
            "PreconditionFailed"
        );
        assert_eq!(c(None, Some(&strong("abc")), None, None), "NotModified");
        assert_eq!(
            c(None, Some(&ETagCondition::Any), None, None),
            "NotModified"
        );
        assert_eq!(c(None, Some(&strong("xyz")), None, None), "OK");
        assert_eq!(c(None, None, Some(&at(1000)), None), "NotModified");
        assert_eq!(c(None, None, Some(&at(999)), None), "OK");
        assert_eq!(c(None, None, None, Some(&at(999))), "PreconditionFailed");
        assert_eq!(c(None, None, None, Some(&at(1000))), "OK");
        // a matching If-Match wins over If-Unmodified-Since, If-None-Match over If-Modified-Since
        assert_eq!(c(Some(&strong("abc")), None, None, Some(&at(1))), "OK");
        assert_eq!(c(None, Some(&strong("xyz")), Some(&at(2000)), None), "OK");
    }

    #[test]
    fn list_keys_are_url_encoded_on_request() {
        assert_eq!(url_encode("a b/ü+%.txt"), "a%20b/%C3%BC%2B%25.txt");
    }
}
