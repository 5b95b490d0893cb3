//! What a node may ask of the fleet's registry through its `registry` upstream: pulls by
//! digest, nothing else. Debian's docker-registry takes unauthenticated pushes and deletes and
//! lists every repository, so without this a node (or any local user of its machine, through
//! latticed's loopback proxy) could push tags and blobs, delete other tenants' images or list
//! and pull every account's. Nodes are handed digest-pinned references only, and pulling one
//! needs `GET`/`HEAD` of `/v2/` (the API check), `/v2/NAME/manifests/sha256:HEX` and
//! `/v2/NAME/blobs/sha256:HEX`, never with a body: that is all that passes. Anything else
//! (another method or path, `_catalog`, `tags/list`, a manifest by tag, a query, a body, a
//! header block that never ends) closes the stream before the request is complete.
//!
//! Pure: the gate sees the bytes the node sends, in order, and says whether they may pass; it
//! never needs the registry's answers. A request is only acted upon by the registry once its
//! header block is complete, and the check runs on every write before it is forwarded, so no
//! refused request ever reaches the registry whole.

/// Longest header block accepted (docker's requests are well under 2 KiB).
pub const MAX_HEADER: usize = 16 * 1024;

/// Checks a node's HTTP/1.1 requests to the registry.
#[derive(Debug, Default, Clone)]
pub struct ReadOnlyGate {
    /// The start of a header block not complete yet.
    pending: Vec<u8>,
}

fn check_head(head: &[u8]) -> Result<(), String> {
    let text = std::str::from_utf8(head).map_err(|_| "request header is not UTF-8".to_string())?;
    let mut lines = text.split("\r\n");
    let line = lines.next().unwrap_or_default();
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next(), parts.next(), parts.next());
    let (Some(method), Some(target), Some(version)) = (method, target, version) else {
        return Err(format!("not an HTTP request line: {line:?}"));
    };
    if parts.next().is_some() || !version.starts_with("HTTP/1.") {
        return Err(format!("not an HTTP/1 request line: {line:?}"));
    }
    if method != "GET" && method != "HEAD" {
        return Err(format!(
            "{method} is not allowed (the registry is read-only for nodes)"
        ));
    }
    if !is_pull_by_digest(target) {
        return Err(format!("{target:?} is not a pull by digest"));
    }
    for h in lines.filter(|l| !l.is_empty()) {
        let Some((name, value)) = h.split_once(':') else {
            return Err(format!("malformed header line {h:?}"));
        };
        let name = name.trim().to_ascii_lowercase();
        if name == "transfer-encoding" || (name == "content-length" && value.trim() != "0") {
            return Err("a request with a body is not a registry read".to_string());
        }
    }
    Ok(())
}

/// `/v2/`, or `/v2/NAME/(manifests|blobs)/sha256:<64 hex>` with NAME in the registry's
/// repository-name grammar (lower-case components separated by `/`).
fn is_pull_by_digest(target: &str) -> bool {
    let Some(rest) = target.strip_prefix("/v2/") else {
        return false;
    };
    if rest.is_empty() {
        return true;
    }
    let Some((path, digest)) = rest.rsplit_once("/sha256:") else {
        return false;
    };
    let Some((name, kind)) = path.rsplit_once('/') else {
        return false;
    };
    let name_ok = !name.is_empty()
        && name.split('/').all(|c| {
            !c.is_empty()
                && c.bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b"._-".contains(&b))
        });
    name_ok
        && (kind == "manifests" || kind == "blobs")
        && digest.len() == 64
        && digest
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

impl ReadOnlyGate {
    /// Whether `buf`, the next bytes the node sends, may be forwarded: every header block it
    /// completes is a read.
    pub fn check(&self, buf: &[u8]) -> Result<(), String> {
        self.clone().advance(buf)
    }

    /// Records that `buf` was forwarded (after a successful [`check`](Self::check) of it or
    /// of more).
    pub fn commit(&mut self, buf: &[u8]) {
        // Checked already; an error here cannot happen for checked bytes.
        let _ = self.advance(buf);
    }

    fn advance(&mut self, buf: &[u8]) -> Result<(), String> {
        self.pending.extend_from_slice(buf);
        while let Some(end) = self.pending.windows(4).position(|w| w == b"\r\n\r\n") {
            let head: Vec<u8> = self.pending.drain(..end + 4).collect();
            check_head(&head[..end])?;
        }
        if self.pending.len() > MAX_HEADER {
            return Err(format!("a request header longer than {MAX_HEADER} bytes"));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const PULL: &str = "GET /v2/lattice/busybox/manifests/sha256:\
        aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa HTTP/1.1\r\nHost: r\r\n\
        Accept: application/vnd.oci.image.manifest.v1+json\r\n\r\n";

    #[test]
    fn pulls_pass_in_any_split_and_pipelined() {
        let two = format!("{PULL}HEAD /v2/ HTTP/1.1\r\nHost: r\r\nContent-Length: 0\r\n\r\n");
        for cut in 0..two.len() {
            let mut g = ReadOnlyGate::default();
            let (a, b) = two.as_bytes().split_at(cut);
            g.check(a).unwrap();
            g.commit(a);
            g.check(b).unwrap();
            g.commit(b);
            assert!(g.pending.is_empty());
        }
    }

    #[test]
    fn a_digest_pull_is_manifests_or_blobs_of_a_named_repository() {
        let d = "0123456789abcdef".repeat(4);
        for ok in [
            "/v2/".to_string(),
            format!("/v2/lattice/busybox/manifests/sha256:{d}"),
            format!("/v2/a/b_c.d-e/blobs/sha256:{d}"),
        ] {
            assert!(is_pull_by_digest(&ok), "{ok}");
        }
        for bad in [
            "/v2".to_string(),
            format!("/v2/manifests/sha256:{d}"),
            format!("/v2/x/tags/sha256:{d}"),
            format!("/v2/x//blobs/sha256:{d}"),
            format!("/v2/X/blobs/sha256:{d}"),
            format!("/v2/x/blobs/sha256:{d}?ns=evil"),
            format!("/v2/x/blobs/sha512:{d}{d}"),
        ] {
            assert!(!is_pull_by_digest(&bad), "{bad}");
        }
    }

    #[test]
    fn writes_bodies_and_other_paths_are_refused_before_they_complete() {
        for (req, why) in [
            (
                "PUT /v2/x/manifests/latest HTTP/1.1\r\nHost: r\r\n\r\n",
                "PUT is not allowed",
            ),
            (
                "POST /v2/x/blobs/uploads/ HTTP/1.1\r\n\r\n",
                "POST is not allowed",
            ),
            ("PATCH /v2/x/blobs/uploads/u HTTP/1.1\r\n\r\n", "PATCH"),
            (
                "DELETE /v2/x/manifests/sha256:ab HTTP/1.1\r\n\r\n",
                "DELETE",
            ),
            ("GET /debug/vars HTTP/1.1\r\n\r\n", "not a pull by digest"),
            (
                "GET http://evil/v2/ HTTP/1.1\r\n\r\n",
                "not a pull by digest",
            ),
            ("GET /v2/_catalog HTTP/1.1\r\n\r\n", "not a pull by digest"),
            (
                "GET /v2/lattice/s3/tags/list HTTP/1.1\r\n\r\n",
                "not a pull by digest",
            ),
            (
                "GET /v2/lattice/s3/manifests/latest HTTP/1.1\r\n\r\n",
                "not a pull by digest",
            ),
            (
                "GET /v2/a/blobs/sha256:abc HTTP/1.1\r\n\r\n",
                "not a pull by digest",
            ),
            (
                "GET /v2/ HTTP/1.1\r\nContent-Length: 5\r\n\r\n",
                "with a body",
            ),
            (
                "GET /v2/ HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n",
                "with a body",
            ),
            ("GET /v2/\r\n\r\n", "request line"),
            ("GET /v2/ HTTP/1.1\r\nno colon\r\n\r\n", "malformed header"),
        ] {
            let g = ReadOnlyGate::default();
            let e = g.check(req.as_bytes()).unwrap_err();
            assert!(e.contains(why), "{req:?}: {e}");
        }
        // After a good request, in the same write.
        let mut g = ReadOnlyGate::default();
        let both = format!("{PULL}PUT /v2/x/manifests/t HTTP/1.1\r\n\r\n");
        assert!(g.check(both.as_bytes()).is_err());
        // Split: the part before the end of its header may pass (the registry cannot act on
        // it), the write that completes it may not.
        let put = b"PUT /v2/x/manifests/t HTTP/1.1\r\nHost: r\r\n\r\n";
        let (a, b) = put.split_at(put.len() - 2);
        g.check(a).unwrap();
        g.commit(a);
        assert!(g.check(b).is_err());
    }

    #[test]
    fn a_header_that_never_ends_is_refused() {
        let mut g = ReadOnlyGate::default();
        let chunk = vec![b'a'; 4096];
        let mut refused = false;
        for _ in 0..5 {
            if g.check(&chunk).is_err() {
                refused = true;
                break;
            }
            g.commit(&chunk);
        }
        assert!(refused);
    }
}
