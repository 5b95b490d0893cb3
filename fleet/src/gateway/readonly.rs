//! What a node may ask of the fleet's registry through its `registry` upstream: reads only.
//! Debian's docker-registry takes unauthenticated pushes, so without this a node (or any local
//! user of its machine, through latticed's loopback proxy) could push tags and blobs and fill
//! the registry's disk. Pulls need `GET` and `HEAD` under `/v2/` and never send a body, so
//! that is all that passes: any other method, any other path, a request with a body, or a
//! header block that never ends, and the stream is closed before the request is complete.
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
    if !target.starts_with("/v2/") {
        return Err(format!("{target:?} is not a registry read"));
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

    const PULL: &str = "GET /v2/lattice/busybox/manifests/sha256:ab HTTP/1.1\r\nHost: r\r\n\
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
            ("GET /debug/vars HTTP/1.1\r\n\r\n", "not a registry read"),
            (
                "GET http://evil/v2/ HTTP/1.1\r\n\r\n",
                "not a registry read",
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
