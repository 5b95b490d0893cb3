//! The stream-open protocol: what the gateway asks for at the start of every tunnel stream and
//! what the node answers. Pure: bytes in, values out, no I/O, never a panic on any input.
//!
//! ```text
//! Open  (gateway → node)  "LTO" version:u8=1 port:u16be len:u8 workload-id[len]
//! Reply (node → gateway)  "LTR" version:u8=1 code:u8
//! ```
//!
//! After an `Ok` reply the stream carries the consumer connection's bytes, both ways,
//! unchanged. Any other reply ends the stream. The node never learns an address from the
//! gateway: it gets a workload id and a port and looks both up in its own current target.

use std::fmt;

/// Version of the open/reply headers.
pub const VERSION: u8 = 1;
const OPEN_MAGIC: [u8; 3] = *b"LTO";
const REPLY_MAGIC: [u8; 3] = *b"LTR";
/// Longest workload id accepted (the wire's ids are `w-…`, well below).
pub const MAX_WORKLOAD_ID: usize = 64;
/// Longest possible open header.
pub const MAX_OPEN_LEN: usize = 3 + 1 + 2 + 1 + MAX_WORKLOAD_ID;
/// Length of a reply.
pub const REPLY_LEN: usize = 5;

/// The gateway's request: connect this stream to `workload`'s `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub workload: String,
    pub port: u16,
}

/// The node's answer to an [`Open`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reply {
    /// Connected: bytes follow.
    Ok,
    /// The workload is not in this node's current target.
    UnknownWorkload,
    /// The workload does not declare that port.
    PortNotDeclared,
    /// The workload has no running container (stopped, starting, removed).
    NotRunning,
    /// The container did not accept the connection.
    ConnectFailed,
    /// The open header was malformed.
    BadRequest,
    /// The node is not accepting streams at all (shutting down, too many streams).
    Unavailable,
}

impl Reply {
    fn code(self) -> u8 {
        match self {
            Reply::Ok => 0,
            Reply::UnknownWorkload => 1,
            Reply::PortNotDeclared => 2,
            Reply::NotRunning => 3,
            Reply::ConnectFailed => 4,
            Reply::BadRequest => 5,
            Reply::Unavailable => 6,
        }
    }

    fn from_code(code: u8) -> Option<Reply> {
        Some(match code {
            0 => Reply::Ok,
            1 => Reply::UnknownWorkload,
            2 => Reply::PortNotDeclared,
            3 => Reply::NotRunning,
            4 => Reply::ConnectFailed,
            5 => Reply::BadRequest,
            6 => Reply::Unavailable,
            _ => return None,
        })
    }

    /// A stable name for logs and metrics.
    pub fn as_str(self) -> &'static str {
        match self {
            Reply::Ok => "ok",
            Reply::UnknownWorkload => "unknown_workload",
            Reply::PortNotDeclared => "port_not_declared",
            Reply::NotRunning => "not_running",
            Reply::ConnectFailed => "connect_failed",
            Reply::BadRequest => "bad_request",
            Reply::Unavailable => "unavailable",
        }
    }
}

impl fmt::Display for Reply {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtoError {
    #[error("not a tunnel header (bad magic)")]
    Magic,
    #[error("unsupported tunnel protocol version {0}")]
    Version(u8),
    #[error("workload id of {0} bytes (1..={MAX_WORKLOAD_ID} allowed)")]
    IdLength(usize),
    #[error("workload id holds characters other than [A-Za-z0-9_-]")]
    IdChars,
    #[error("port 0")]
    PortZero,
    #[error("unknown reply code {0}")]
    ReplyCode(u8),
    #[error("the stream ended inside a header")]
    Truncated,
}

/// A decoded value and how many bytes it took, or a request for more bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Decoded<T> {
    Done(T, usize),
    /// At least this many bytes in total are needed before trying again.
    NeedMore(usize),
}

/// True if `id` may name a workload on the wire: 1–64 of `[A-Za-z0-9_-]`.
pub fn valid_workload_id(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= MAX_WORKLOAD_ID
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_')
}

/// Encodes an open header. Refuses what [`decode_open`] would refuse.
pub fn encode_open(open: &Open) -> Result<Vec<u8>, ProtoError> {
    check_id(open.workload.as_bytes())?;
    if open.port == 0 {
        return Err(ProtoError::PortZero);
    }
    let mut out = Vec::with_capacity(7 + open.workload.len());
    out.extend_from_slice(&OPEN_MAGIC);
    out.push(VERSION);
    out.extend_from_slice(&open.port.to_be_bytes());
    out.push(open.workload.len() as u8);
    out.extend_from_slice(open.workload.as_bytes());
    Ok(out)
}

fn check_id(id: &[u8]) -> Result<(), ProtoError> {
    if id.is_empty() || id.len() > MAX_WORKLOAD_ID {
        return Err(ProtoError::IdLength(id.len()));
    }
    if !id
        .iter()
        .all(|b| b.is_ascii_alphanumeric() || *b == b'-' || *b == b'_')
    {
        return Err(ProtoError::IdChars);
    }
    Ok(())
}

fn check_prefix(buf: &[u8], magic: &[u8; 3]) -> Result<bool, ProtoError> {
    let n = buf.len().min(3);
    if buf[..n] != magic[..n] {
        return Err(ProtoError::Magic);
    }
    if buf.len() > 3 && buf[3] != VERSION {
        return Err(ProtoError::Version(buf[3]));
    }
    Ok(buf.len() >= 4)
}

/// Decodes an open header from the start of `buf` (which may hold more bytes after it).
pub fn decode_open(buf: &[u8]) -> Result<Decoded<Open>, ProtoError> {
    if !check_prefix(buf, &OPEN_MAGIC)? || buf.len() < 7 {
        return Ok(Decoded::NeedMore(7));
    }
    let port = u16::from_be_bytes([buf[4], buf[5]]);
    let len = usize::from(buf[6]);
    if len == 0 || len > MAX_WORKLOAD_ID {
        return Err(ProtoError::IdLength(len));
    }
    if buf.len() < 7 + len {
        return Ok(Decoded::NeedMore(7 + len));
    }
    let id = &buf[7..7 + len];
    check_id(id)?;
    if port == 0 {
        return Err(ProtoError::PortZero);
    }
    // check_id allows ASCII only, so this is valid UTF-8.
    let workload = String::from_utf8_lossy(id).into_owned();
    Ok(Decoded::Done(Open { workload, port }, 7 + len))
}

pub fn encode_reply(reply: Reply) -> [u8; REPLY_LEN] {
    [
        REPLY_MAGIC[0],
        REPLY_MAGIC[1],
        REPLY_MAGIC[2],
        VERSION,
        reply.code(),
    ]
}

pub fn decode_reply(buf: &[u8]) -> Result<Decoded<Reply>, ProtoError> {
    if !check_prefix(buf, &REPLY_MAGIC)? || buf.len() < REPLY_LEN {
        return Ok(Decoded::NeedMore(REPLY_LEN));
    }
    let reply = Reply::from_code(buf[4]).ok_or(ProtoError::ReplyCode(buf[4]))?;
    Ok(Decoded::Done(reply, REPLY_LEN))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    fn open(id: &str, port: u16) -> Open {
        Open {
            workload: id.into(),
            port,
        }
    }

    #[test]
    fn open_round_trips_and_reports_its_length() {
        let o = open("w-web_1", 8080);
        let mut bytes = encode_open(&o).unwrap();
        let n = bytes.len();
        bytes.extend_from_slice(b"GET / HTTP/1.1\r\n");
        assert_eq!(decode_open(&bytes).unwrap(), Decoded::Done(o, n));
    }

    #[test]
    fn partial_headers_ask_for_more() {
        let bytes = encode_open(&open("w-a", 80)).unwrap();
        for cut in 0..bytes.len() {
            match decode_open(&bytes[..cut]).unwrap() {
                Decoded::NeedMore(n) => assert!(n > cut, "cut {cut} asks for {n}"),
                d => panic!("cut {cut}: {d:?}"),
            }
        }
    }

    #[test]
    fn bad_headers_are_named() {
        assert_eq!(decode_open(b"GET /"), Err(ProtoError::Magic));
        assert_eq!(decode_open(b"LTO\x02"), Err(ProtoError::Version(2)));
        assert_eq!(
            decode_open(b"LTO\x01\x00\x50\x00"),
            Err(ProtoError::IdLength(0))
        );
        assert_eq!(
            decode_open(b"LTO\x01\x00\x50\x41"),
            Err(ProtoError::IdLength(65))
        );
        assert_eq!(
            decode_open(b"LTO\x01\x00\x50\x03a/b"),
            Err(ProtoError::IdChars)
        );
        assert_eq!(
            decode_open(b"LTO\x01\x00\x00\x01a"),
            Err(ProtoError::PortZero)
        );
        assert_eq!(encode_open(&open("a b", 1)), Err(ProtoError::IdChars));
        assert_eq!(encode_open(&open("a", 0)), Err(ProtoError::PortZero));
        assert_eq!(
            encode_open(&open(&"x".repeat(65), 1)),
            Err(ProtoError::IdLength(65))
        );
        // An address is not a workload id.
        assert_eq!(encode_open(&open("10.0.0.1", 80)), Err(ProtoError::IdChars));
    }

    #[test]
    fn replies_round_trip() {
        for r in [
            Reply::Ok,
            Reply::UnknownWorkload,
            Reply::PortNotDeclared,
            Reply::NotRunning,
            Reply::ConnectFailed,
            Reply::BadRequest,
            Reply::Unavailable,
        ] {
            assert_eq!(decode_reply(&encode_reply(r)).unwrap(), Decoded::Done(r, 5));
        }
        assert_eq!(decode_reply(b"LTR\x01\x09"), Err(ProtoError::ReplyCode(9)));
        assert_eq!(decode_reply(b"LT"), Ok(Decoded::NeedMore(5)));
        assert_eq!(decode_reply(b"XX"), Err(ProtoError::Magic));
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = decode_open(&bytes);
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn valid_opens_round_trip(id in "[A-Za-z0-9_-]{1,64}", port in 1u16..) {
            let o = Open { workload: id, port };
            let bytes = encode_open(&o).unwrap();
            prop_assert!(bytes.len() <= MAX_OPEN_LEN);
            prop_assert_eq!(decode_open(&bytes).unwrap(), Decoded::Done(o, bytes.len()));
        }
    }
}
