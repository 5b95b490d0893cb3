//! The stream-open protocol: what the gateway asks for at the start of every tunnel stream and
//! what the node answers. Pure: bytes in, values out, no I/O, never a panic on any input.
//!
//! ```text
//! Open  (gateway → node)  "LTO" version:u8=1 port:u16be len:u8 workload-id[len]
//! Logs  (gateway → node)  "LTL" version:u8=1 flags:u8 tail:u32be len:u8 workload-id[len]
//!                         flags: bit 0 follow, bit 1 timestamps, others 0; tail u32::MAX = all
//! Upstream (node → gateway, on a stream the node opens)
//!                         "LTU" version:u8=1 len:u8 upstream-name[len]
//! Reply (node → gateway, or gateway → node for an upstream)
//!                         "LTR" version:u8=1 code:u8
//! ```
//!
//! After an `Ok` reply to an `Open` the stream carries the consumer connection's bytes, both
//! ways, unchanged. After an `Ok` reply to a `Logs` request the node sends the workload
//! container's output (stdout and stderr interleaved, as the engine keeps it) and finishes the
//! stream at the end of the logs, or, when following, keeps sending until the gateway stops
//! reading. Any other reply ends the stream. The node never learns an address from the
//! gateway: it gets a workload id and a port and looks both up in its own current target.
//!
//! The other direction (ADR 0011): a node opens a stream with an `Upstream` header naming one
//! of the upstreams the fleet declared (`registry`, the fleet's image registry), never an
//! address; the gateway resolves the name itself, answers with a reply (`Ok`, or e.g.
//! `UpstreamNotDeclared`) and then carries the bytes both ways.

use std::fmt;

/// Version of the open/reply headers.
pub const VERSION: u8 = 1;
const OPEN_MAGIC: [u8; 3] = *b"LTO";
const LOGS_MAGIC: [u8; 3] = *b"LTL";
const REPLY_MAGIC: [u8; 3] = *b"LTR";
const UPSTREAM_MAGIC: [u8; 3] = *b"LTU";
/// Longest upstream name accepted.
pub const MAX_UPSTREAM_NAME: usize = 32;
/// Longest possible upstream header.
pub const MAX_UPSTREAM_LEN: usize = 3 + 1 + 1 + MAX_UPSTREAM_NAME;
/// Longest workload id accepted (the wire's ids are `w-…`, well below).
pub const MAX_WORKLOAD_ID: usize = 64;
/// Longest possible open header.
pub const MAX_OPEN_LEN: usize = 3 + 1 + 2 + 1 + MAX_WORKLOAD_ID;
/// Longest possible logs header.
pub const MAX_LOGS_LEN: usize = 3 + 1 + 1 + 4 + 1 + MAX_WORKLOAD_ID;
/// Longest possible request header of either kind.
pub const MAX_REQUEST_LEN: usize = if MAX_LOGS_LEN > MAX_OPEN_LEN {
    MAX_LOGS_LEN
} else {
    MAX_OPEN_LEN
};
/// Length of a reply.
pub const REPLY_LEN: usize = 5;
/// `tail` value meaning "all the logs the node keeps".
pub const TAIL_ALL: u32 = u32::MAX;
const FLAG_FOLLOW: u8 = 1;
const FLAG_TIMESTAMPS: u8 = 2;

/// The gateway's request: connect this stream to `workload`'s `port`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Open {
    pub workload: String,
    pub port: u16,
}

/// The gateway's request for a workload's logs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogsOpen {
    pub workload: String,
    /// Keep the stream open and send new output as it comes.
    pub follow: bool,
    /// Prefix every line with the engine's RFC 3339 timestamp.
    pub timestamps: bool,
    /// Only the last `tail` lines ([`TAIL_ALL`]: everything kept).
    pub tail: u32,
}

/// A node's request for one of the upstreams the fleet declared for it (by name: the gateway
/// alone knows where it is).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpstreamOpen {
    pub name: String,
}

/// What a stream asks of the node.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Request {
    /// Connect to a workload's declared port.
    Connect(Open),
    /// Send a workload's logs.
    Logs(LogsOpen),
}

/// The node's answer to an [`Open`] or a [`LogsOpen`].
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
    /// The node is not accepting streams at all (shutting down, too many streams); for an
    /// upstream: the gateway is not (the node has too many upstream streams open).
    Unavailable,
    /// The upstream name is not one the fleet declared for this node.
    UpstreamNotDeclared,
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
            Reply::UpstreamNotDeclared => 7,
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
            7 => Reply::UpstreamNotDeclared,
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
            Reply::UpstreamNotDeclared => "upstream_not_declared",
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
    #[error("upstream name of {0} bytes (1..={MAX_UPSTREAM_NAME} allowed)")]
    NameLength(usize),
    #[error("upstream name holds characters other than [a-z0-9-]")]
    NameChars,
    #[error("port 0")]
    PortZero,
    #[error("unknown logs flags {0:#04x}")]
    Flags(u8),
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

/// Encodes a logs header. Refuses what [`decode_logs`] would refuse.
pub fn encode_logs(logs: &LogsOpen) -> Result<Vec<u8>, ProtoError> {
    check_id(logs.workload.as_bytes())?;
    let flags = if logs.follow { FLAG_FOLLOW } else { 0 }
        | if logs.timestamps { FLAG_TIMESTAMPS } else { 0 };
    let mut out = Vec::with_capacity(10 + logs.workload.len());
    out.extend_from_slice(&LOGS_MAGIC);
    out.push(VERSION);
    out.push(flags);
    out.extend_from_slice(&logs.tail.to_be_bytes());
    out.push(logs.workload.len() as u8);
    out.extend_from_slice(logs.workload.as_bytes());
    Ok(out)
}

/// Decodes a logs header from the start of `buf`.
pub fn decode_logs(buf: &[u8]) -> Result<Decoded<LogsOpen>, ProtoError> {
    if !check_prefix(buf, &LOGS_MAGIC)? || buf.len() < 10 {
        return Ok(Decoded::NeedMore(10));
    }
    let flags = buf[4];
    if flags & !(FLAG_FOLLOW | FLAG_TIMESTAMPS) != 0 {
        return Err(ProtoError::Flags(flags));
    }
    let tail = u32::from_be_bytes([buf[5], buf[6], buf[7], buf[8]]);
    let len = usize::from(buf[9]);
    if len == 0 || len > MAX_WORKLOAD_ID {
        return Err(ProtoError::IdLength(len));
    }
    if buf.len() < 10 + len {
        return Ok(Decoded::NeedMore(10 + len));
    }
    let id = &buf[10..10 + len];
    check_id(id)?;
    let workload = String::from_utf8_lossy(id).into_owned();
    Ok(Decoded::Done(
        LogsOpen {
            workload,
            follow: flags & FLAG_FOLLOW != 0,
            timestamps: flags & FLAG_TIMESTAMPS != 0,
            tail,
        },
        10 + len,
    ))
}

/// Decodes whichever request header starts `buf` (the node's side of every stream).
pub fn decode_request(buf: &[u8]) -> Result<Decoded<Request>, ProtoError> {
    if buf.len() >= 3 && buf[..3] == LOGS_MAGIC {
        return Ok(match decode_logs(buf)? {
            Decoded::Done(l, n) => Decoded::Done(Request::Logs(l), n),
            Decoded::NeedMore(n) => Decoded::NeedMore(n),
        });
    }
    if buf.len() < 3 && LOGS_MAGIC.starts_with(buf) {
        // "", "L" or "LT": either kind may follow.
        return Ok(Decoded::NeedMore(3));
    }
    Ok(match decode_open(buf)? {
        Decoded::Done(o, n) => Decoded::Done(Request::Connect(o), n),
        Decoded::NeedMore(n) => Decoded::NeedMore(n),
    })
}

/// True if `name` may name an upstream on the wire: 1–32 of `[a-z0-9-]`. No dots or colons,
/// so no host name or address can pass for one.
pub fn valid_upstream_name(name: &str) -> bool {
    check_name(name.as_bytes()).is_ok()
}

fn check_name(name: &[u8]) -> Result<(), ProtoError> {
    if name.is_empty() || name.len() > MAX_UPSTREAM_NAME {
        return Err(ProtoError::NameLength(name.len()));
    }
    if !name
        .iter()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
    {
        return Err(ProtoError::NameChars);
    }
    Ok(())
}

/// Encodes an upstream header. Refuses what [`decode_upstream`] would refuse.
pub fn encode_upstream(up: &UpstreamOpen) -> Result<Vec<u8>, ProtoError> {
    check_name(up.name.as_bytes())?;
    let mut out = Vec::with_capacity(5 + up.name.len());
    out.extend_from_slice(&UPSTREAM_MAGIC);
    out.push(VERSION);
    out.push(up.name.len() as u8);
    out.extend_from_slice(up.name.as_bytes());
    Ok(out)
}

/// Decodes an upstream header from the start of `buf` (the gateway's side of a stream the node
/// opened; bytes after the header belong to the upstream connection).
pub fn decode_upstream(buf: &[u8]) -> Result<Decoded<UpstreamOpen>, ProtoError> {
    if !check_prefix(buf, &UPSTREAM_MAGIC)? || buf.len() < 5 {
        return Ok(Decoded::NeedMore(5));
    }
    let len = usize::from(buf[4]);
    if len == 0 || len > MAX_UPSTREAM_NAME {
        return Err(ProtoError::NameLength(len));
    }
    if buf.len() < 5 + len {
        return Ok(Decoded::NeedMore(5 + len));
    }
    let name = &buf[5..5 + len];
    check_name(name)?;
    // check_name allows ASCII only, so this is valid UTF-8.
    let name = String::from_utf8_lossy(name).into_owned();
    Ok(Decoded::Done(UpstreamOpen { name }, 5 + len))
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

    fn logs(id: &str, follow: bool, timestamps: bool, tail: u32) -> LogsOpen {
        LogsOpen {
            workload: id.into(),
            follow,
            timestamps,
            tail,
        }
    }

    #[test]
    fn logs_requests_round_trip_and_either_kind_decodes_as_a_request() {
        for l in [
            logs("w-web", false, false, TAIL_ALL),
            logs("w-web", true, false, 100),
            logs("w-db_2", true, true, 0),
        ] {
            let bytes = encode_logs(&l).unwrap();
            assert!(bytes.len() <= MAX_REQUEST_LEN);
            assert_eq!(
                decode_logs(&bytes).unwrap(),
                Decoded::Done(l.clone(), bytes.len())
            );
            assert_eq!(
                decode_request(&bytes).unwrap(),
                Decoded::Done(Request::Logs(l), bytes.len())
            );
            for cut in 0..bytes.len() {
                match decode_request(&bytes[..cut]).unwrap() {
                    Decoded::NeedMore(n) => assert!(n > cut, "cut {cut} asks for {n}"),
                    d => panic!("cut {cut}: {d:?}"),
                }
            }
        }
        let o = open("w-web", 80);
        let bytes = encode_open(&o).unwrap();
        assert_eq!(
            decode_request(&bytes).unwrap(),
            Decoded::Done(Request::Connect(o), bytes.len())
        );
    }

    #[test]
    fn bad_logs_headers_are_named() {
        assert_eq!(
            decode_logs(b"LTL\x01\x04\xff\xff\xff\xff\x01a"),
            Err(ProtoError::Flags(4))
        );
        assert_eq!(decode_request(b"LTL\x07"), Err(ProtoError::Version(7)));
        assert_eq!(
            decode_logs(b"LTL\x01\x00\x00\x00\x00\x00\x00"),
            Err(ProtoError::IdLength(0))
        );
        assert_eq!(
            decode_request(b"LTL\x01\x01\x00\x00\x00\x05\x03../"),
            Err(ProtoError::IdChars)
        );
        assert_eq!(decode_request(b"LTX"), Err(ProtoError::Magic));
        assert_eq!(
            encode_logs(&logs("10.0.0.1", false, false, 1)),
            Err(ProtoError::IdChars)
        );
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
            Reply::UpstreamNotDeclared,
        ] {
            assert_eq!(decode_reply(&encode_reply(r)).unwrap(), Decoded::Done(r, 5));
        }
        assert_eq!(decode_reply(b"LTR\x01\x09"), Err(ProtoError::ReplyCode(9)));
        assert_eq!(Reply::UpstreamNotDeclared.as_str(), "upstream_not_declared");
        assert_eq!(decode_reply(b"LT"), Ok(Decoded::NeedMore(5)));
        assert_eq!(decode_reply(b"XX"), Err(ProtoError::Magic));
    }

    fn up(name: &str) -> UpstreamOpen {
        UpstreamOpen { name: name.into() }
    }

    #[test]
    fn upstream_requests_round_trip_and_report_their_length() {
        for name in ["registry", "a", "backup-2", &"r".repeat(MAX_UPSTREAM_NAME)] {
            let u = up(name);
            let mut bytes = encode_upstream(&u).unwrap();
            let n = bytes.len();
            assert!(n <= MAX_UPSTREAM_LEN);
            assert_eq!(&bytes[..5], &[b'L', b'T', b'U', VERSION, name.len() as u8]);
            bytes.extend_from_slice(b"GET /v2/ HTTP/1.1\r\n");
            assert_eq!(decode_upstream(&bytes).unwrap(), Decoded::Done(u, n));
            for cut in 0..n {
                match decode_upstream(&bytes[..cut]).unwrap() {
                    Decoded::NeedMore(m) => assert!(m > cut, "cut {cut} asks for {m}"),
                    d => panic!("cut {cut}: {d:?}"),
                }
            }
        }
    }

    #[test]
    fn bad_upstream_headers_are_named() {
        // Another kind of header, or none at all.
        assert_eq!(decode_upstream(b"LTO\x01"), Err(ProtoError::Magic));
        assert_eq!(decode_upstream(b"GET /v2/"), Err(ProtoError::Magic));
        assert_eq!(decode_upstream(b"X"), Err(ProtoError::Magic));
        assert_eq!(
            decode_upstream(b"LTU\x02\x01a"),
            Err(ProtoError::Version(2))
        );
        assert_eq!(decode_upstream(b"LTU\x00"), Err(ProtoError::Version(0)));
        assert_eq!(
            decode_upstream(b"LTU\x01\x00"),
            Err(ProtoError::NameLength(0))
        );
        assert_eq!(
            decode_upstream(b"LTU\x01\x21"),
            Err(ProtoError::NameLength(33))
        );
        assert_eq!(
            decode_upstream(b"LTU\x01\xff"),
            Err(ProtoError::NameLength(255))
        );
        // Addresses, host names, paths and capitals are not upstream names.
        for bad in [
            &b"10.0.0.1:5000"[..],
            b"registry.example",
            b"../etc",
            b"Registry",
            b"reg istry",
            b"reg\x00",
            b"\xff\xfe",
        ] {
            let mut bytes = b"LTU\x01".to_vec();
            bytes.push(bad.len() as u8);
            bytes.extend_from_slice(bad);
            assert_eq!(
                decode_upstream(&bytes),
                Err(ProtoError::NameChars),
                "{bad:?}"
            );
        }
        // A valid length with too few bytes is incomplete, not an error.
        assert_eq!(
            decode_upstream(b"LTU\x01\x08regi"),
            Ok(Decoded::NeedMore(13))
        );
        assert_eq!(decode_upstream(b""), Ok(Decoded::NeedMore(5)));
        // The encoder refuses the same.
        assert_eq!(encode_upstream(&up("")), Err(ProtoError::NameLength(0)));
        assert_eq!(
            encode_upstream(&up(&"r".repeat(33))),
            Err(ProtoError::NameLength(33))
        );
        assert_eq!(
            encode_upstream(&up("127.0.0.1:5000")),
            Err(ProtoError::NameChars)
        );
        assert!(valid_upstream_name("registry"));
        assert!(!valid_upstream_name("registry.fleet"));
        // Requests the node serves are not upstream headers, and the other way round.
        assert_eq!(
            decode_request(&encode_upstream(&up("registry")).unwrap()),
            Err(ProtoError::Magic)
        );
    }

    proptest! {
        #[test]
        fn decoding_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..96)) {
            let _ = decode_upstream(&bytes);
            let _ = decode_open(&bytes);
            let _ = decode_logs(&bytes);
            let _ = decode_request(&bytes);
            let _ = decode_reply(&bytes);
        }

        #[test]
        fn valid_opens_round_trip(id in "[A-Za-z0-9_-]{1,64}", port in 1u16..) {
            let o = Open { workload: id, port };
            let bytes = encode_open(&o).unwrap();
            prop_assert!(bytes.len() <= MAX_OPEN_LEN);
            prop_assert_eq!(decode_open(&bytes).unwrap(), Decoded::Done(o, bytes.len()));
        }

        #[test]
        fn valid_upstreams_round_trip(name in "[a-z0-9-]{1,32}") {
            let u = UpstreamOpen { name };
            let bytes = encode_upstream(&u).unwrap();
            prop_assert!(bytes.len() <= MAX_UPSTREAM_LEN);
            prop_assert_eq!(decode_upstream(&bytes).unwrap(), Decoded::Done(u, bytes.len()));
        }
    }
}
