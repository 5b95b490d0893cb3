//! One tunnel stream as a tokio byte stream, and the transport settings both ends share.

use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Most streams (consumer connections) one tunnel carries at once.
pub const MAX_STREAMS: u32 = 4096;
/// Bytes a stream may have in flight unread. Per stream, so a slow consumer only stalls its
/// own stream; the connection-wide window is unlimited, so streams never stall each other, and
/// memory is bounded by `MAX_STREAMS * STREAM_WINDOW` (and in practice by the gateway's
/// per-workload connection limits).
pub const STREAM_WINDOW: u32 = 2 * 1024 * 1024;
/// Keep-alive: well below common NAT UDP mapping timeouts (30 s and more).
pub const KEEP_ALIVE: Duration = Duration::from_secs(5);
/// A tunnel silent for this long is dead (both ends).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(20);

/// Largest UDP payload path MTU discovery tries.
pub const MTU_UPPER_BOUND: u16 = 16 * 1024;

/// The QUIC transport settings of both ends.
pub fn transport() -> Arc<quinn::TransportConfig> {
    let mut t = quinn::TransportConfig::default();
    // Probe for paths wider than Ethernet (loopback, jumbo frames, a local fleet): fewer,
    // larger packets are most of QUIC's per-byte cost. On ordinary paths discovery settles
    // at the real MTU; a black hole is detected and falls back.
    let mut mtu = quinn::MtuDiscoveryConfig::default();
    mtu.upper_bound(MTU_UPPER_BOUND);
    t.mtu_discovery_config(Some(mtu));
    t.max_concurrent_bidi_streams(quinn::VarInt::from_u32(MAX_STREAMS))
        .max_concurrent_uni_streams(quinn::VarInt::from_u32(0))
        .stream_receive_window(quinn::VarInt::from_u32(STREAM_WINDOW))
        .send_window(64 * 1024 * 1024)
        .keep_alive_interval(Some(KEEP_ALIVE))
        .max_idle_timeout(Some(
            quinn::IdleTimeout::try_from(IDLE_TIMEOUT)
                .unwrap_or(quinn::VarInt::from_u32(20_000).into()),
        ));
    Arc::new(t)
}

/// A bidirectional tunnel stream: reads what the far end sends, writes toward it. Shutting
/// down the write half finishes the QUIC stream (the far end reads EOF); dropping it resets
/// whatever is unfinished.
///
/// A stream opened with [`crate::TunnelServer::open_early`] has not seen the node's reply yet:
/// its first read consumes the reply and fails with `ConnectionRefused` (the message names the
/// node's reason) if the node refused the stream.
#[derive(Debug)]
pub struct TunnelStream {
    pub(crate) send: quinn::SendStream,
    pub(crate) recv: quinn::RecvStream,
    /// The node's reply still to be read, and how much of it has arrived.
    reply: Option<([u8; crate::proto::REPLY_LEN], usize)>,
}

impl TunnelStream {
    pub(crate) fn new(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        TunnelStream {
            send,
            recv,
            reply: None,
        }
    }

    pub(crate) fn awaiting_reply(send: quinn::SendStream, recv: quinn::RecvStream) -> Self {
        TunnelStream {
            send,
            recv,
            reply: Some(([0; crate::proto::REPLY_LEN], 0)),
        }
    }

    fn poll_reply(&mut self, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        use crate::proto::{decode_reply, Decoded, Reply};
        use std::io::{Error, ErrorKind};
        while let Some((buf, have)) = self.reply.as_mut() {
            if *have == buf.len() {
                let result = decode_reply(buf);
                self.reply = None;
                return Poll::Ready(match result {
                    Ok(Decoded::Done(Reply::Ok, _)) => Ok(()),
                    Ok(Decoded::Done(reply, _)) => Err(Error::new(
                        ErrorKind::ConnectionRefused,
                        format!("the node refused the stream: {reply}"),
                    )),
                    Ok(Decoded::NeedMore(_)) | Err(_) => Err(Error::new(
                        ErrorKind::InvalidData,
                        "the node sent a malformed reply",
                    )),
                });
            }
            let mut rb = ReadBuf::new(&mut buf[*have..]);
            match Pin::new(&mut self.recv).poll_read(cx, &mut rb) {
                Poll::Pending => return Poll::Pending,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(())) if rb.filled().is_empty() => {
                    return Poll::Ready(Err(Error::new(
                        ErrorKind::UnexpectedEof,
                        "the node closed the stream without a reply",
                    )))
                }
                Poll::Ready(Ok(())) => *have += rb.filled().len(),
            }
        }
        Poll::Ready(Ok(()))
    }
}

impl AsyncRead for TunnelStream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        if self.reply.is_some() {
            match self.poll_reply(cx) {
                Poll::Ready(Ok(())) => {}
                other => return other,
            }
        }
        Pin::new(&mut self.recv).poll_read(cx, buf)
    }
}

impl AsyncWrite for TunnelStream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        AsyncWrite::poll_write(Pin::new(&mut self.send), cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_flush(Pin::new(&mut self.send), cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        AsyncWrite::poll_shutdown(Pin::new(&mut self.send), cx)
    }
}
