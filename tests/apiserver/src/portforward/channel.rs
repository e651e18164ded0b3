//! Port-forward over the WebSocket channel protocol, as the kubelet serves it to a client that
//! does not tunnel SPDY (kube-rs, client-go before 1.30, browsers): kubelet
//! `cri/streaming/portforward/websocket.go` over apiserver `util/wsstream/conn.go`.
//!
//! - Subprotocols `v4.channel.k8s.io` (binary messages) and `v4.base64.channel.k8s.io` (text
//!   messages: channel as an ASCII digit, payload in base64), or none (binary); the first one
//!   the client offers that is known wins; none known → `403` with an empty body.
//! - The ports come from the query (`ports=80,8080` or repeated; the API server turns them into
//!   the kubelet's `port=`); port `i` owns channel `2i` (data, both ways) and `2i+1` (error,
//!   server → client only). The first message on each channel is the port, 2 bytes little-endian.
//! - Each port gets one connection into the pod for the whole WebSocket; a failure is written
//!   as text on its error channel. When every port is done the server closes the WebSocket
//!   (close frame, normal). A client close ends every port's connection. Messages for the error
//!   channel, for unknown channels or empty ones are ignored.

use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use bytes::{Bytes, BytesMut};
use futures::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio_tungstenite::tungstenite::protocol::Message;
use tokio_tungstenite::tungstenite::protocol::frame::CloseFrame;
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_util::sync::CancellationToken;

use super::WsStream;
use super::session::{Target, dial, forward_error, pump};
use crate::http::percent_decode;
use crate::status::ApiError;

/// `"v4." + wsstream.ChannelWebSocketProtocol`.
pub const V4_BINARY: &str = "v4.channel.k8s.io";
/// `"v4." + wsstream.Base64ChannelWebSocketProtocol`.
pub const V4_BASE64: &str = "v4.base64.channel.k8s.io";

/// How channel messages are written on the WebSocket.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Codec {
    /// Binary messages: channel byte, then the payload.
    Binary,
    /// Text messages: `'0' + channel`, then the payload in standard base64.
    Base64,
}

/// The subprotocol to answer and its codec, as x/net/websocket's handshake with wsstream's
/// protocol map picks it: the first offered one that is supported; no offer means `""`.
pub fn negotiate(offered: &[&str]) -> Option<(&'static str, Codec)> {
    if offered.is_empty() {
        return Some(("", Codec::Binary));
    }
    offered.iter().find_map(|p| match *p {
        V4_BINARY => Some((V4_BINARY, Codec::Binary)),
        V4_BASE64 => Some((V4_BASE64, Codec::Base64)),
        _ => None,
    })
}

/// The `ports` query values as the API server decodes `PodPortForwardOptions`
/// (`runtime.Convert_Slice_string_To_Slice_int32`: repeated and comma-separated values).
pub fn parse_ports(query: Option<&str>) -> Result<Vec<u16>, ApiError> {
    let mut ports = Vec::new();
    for (k, v) in form_pairs(query.unwrap_or("")) {
        if k != "ports" {
            continue;
        }
        for p in v.split(',') {
            let port = p.parse::<u16>().map_err(|e| {
                let why = match e.kind() {
                    std::num::IntErrorKind::PosOverflow => "value out of range",
                    _ => "invalid syntax",
                };
                ApiError::bad_request(format!(
                    "cannot convert to []int32: strconv.ParseUint: parsing {p:?}: {why}"
                ))
            })?;
            ports.push(port);
        }
    }
    Ok(ports)
}

/// The kubelet's check of the ports it was given (`NewV4Options`), answered as a plain-text 400.
pub fn check_ports(ports: &[u16]) -> Result<(), String> {
    if ports.is_empty() {
        return Err("query parameter \"port\" is required".into());
    }
    match ports.iter().find(|p| **p == 0) {
        Some(_) => Err("port \"0\" must be > 0".into()),
        None => Ok(()),
    }
}

fn form_pairs(query: &str) -> impl Iterator<Item = (String, String)> + '_ {
    query.split('&').filter(|s| !s.is_empty()).map(|kv| {
        let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
        (percent_decode(k), percent_decode(v))
    })
}

/// One WebSocket message carrying `data` on `channel`.
pub fn encode(codec: Codec, channel: u8, data: &[u8]) -> Message {
    match codec {
        Codec::Binary => {
            let mut b = BytesMut::with_capacity(data.len() + 1);
            b.extend_from_slice(&[channel]);
            b.extend_from_slice(data);
            Message::Binary(b.freeze())
        }
        Codec::Base64 => {
            let mut s = String::with_capacity(1 + data.len().div_ceil(3) * 4);
            s.push(char::from(b'0' + channel));
            STANDARD.encode_string(data, &mut s);
            Message::text(s)
        }
    }
}

/// `(channel, payload)` of a message from the client; `None` for messages wsstream skips
/// (empty ones, control frames, undecodable base64 is logged and skipped too).
pub fn decode(codec: Codec, msg: Message) -> Option<(u8, Bytes)> {
    let raw: Bytes = match msg {
        Message::Binary(b) => b,
        Message::Text(t) => Bytes::copy_from_slice(t.as_bytes()),
        _ => return None,
    };
    let (&first, rest) = raw.split_first()?;
    match codec {
        Codec::Binary => Some((first, raw.slice(1..))),
        Codec::Base64 => {
            let data = STANDARD.decode(rest).ok()?;
            Some((first.wrapping_sub(b'0'), Bytes::from(data)))
        }
    }
}

/// Serve the channel protocol on an upgraded connection until every port is done.
pub async fn serve(
    ws: WsStream,
    codec: Codec,
    ports: Vec<u16>,
    target: Arc<Target>,
    stop: CancellationToken,
) {
    let (mut sink, mut stream) = ws.split();
    let (tx, mut rx) = mpsc::channel::<(u8, Bytes)>(64);
    let writer = tokio::spawn(async move {
        while let Some((ch, data)) = rx.recv().await {
            if sink.feed(encode(codec, ch, &data)).await.is_err() {
                return;
            }
            while let Ok((ch, data)) = rx.try_recv() {
                if sink.feed(encode(codec, ch, &data)).await.is_err() {
                    return;
                }
            }
            if sink.flush().await.is_err() {
                return;
            }
        }
        let close = CloseFrame {
            code: CloseCode::Normal,
            reason: "".into(),
        };
        let _ = sink.send(Message::Close(Some(close))).await;
    });
    let mut inbound = Vec::with_capacity(ports.len());
    let mut forwards = Vec::with_capacity(ports.len());
    for (i, port) in ports.iter().copied().enumerate() {
        let (data, error) = (2 * i as u8, 2 * i as u8 + 1);
        let le = Bytes::copy_from_slice(&port.to_le_bytes());
        let _ = tx.send((data, le.clone())).await;
        let _ = tx.send((error, le)).await;
        let (itx, irx) = mpsc::channel::<Bytes>(16);
        inbound.push(itx);
        let (target, tx) = (target.clone(), tx.clone());
        forwards.push(tokio::spawn(async move {
            match dial(&target, port).await {
                Ok(tcp) => pump(tcp, irx, &tx, |b| (data, b)).await,
                Err(why) => {
                    let text = forward_error(&port.to_string(), &target, &why);
                    tracing::debug!(%text, "port-forward failed");
                    let _ = tx.send((error, Bytes::from(text))).await;
                }
            }
        }));
    }
    drop(tx);
    let reader = async move {
        while let Some(Ok(msg)) = stream.next().await {
            if msg.is_close() {
                break;
            }
            let Some((ch, data)) = decode(codec, msg) else {
                continue;
            };
            // Even channels are the ports' data; odd ones (errors) are write-only.
            let Some(port) = inbound.get(usize::from(ch) / 2).filter(|_| ch % 2 == 0) else {
                continue;
            };
            if !data.is_empty() && port.send(data).await.is_err() {
                continue;
            }
        }
    };
    let all = futures::future::join_all(forwards);
    tokio::pin!(all);
    let client_closed = tokio::select! {
        _ = stop.cancelled() => false,
        _ = reader => true,
        _ = &mut all => false,
    };
    if client_closed {
        // The client closed: every port's connection ends (its inbound is gone), then the
        // server closes.
        all.await;
    }
    let _ = writer.await;
}

#[cfg(test)]
mod tests;
