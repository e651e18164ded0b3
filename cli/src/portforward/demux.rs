//! The client side of the kubelet's WebSocket port-forward for one port (pure: messages in,
//! what they mean out). Channel 0 carries the port's data both ways, channel 1 the kubelet's
//! error text; the first message on each is the port, 2 bytes little-endian
//! (kubelet `cri/streaming/portforward/websocket.go`).

use bytes::{Buf, Bytes, BytesMut};

/// The data channel of the only forwarded port.
pub const DATA: u8 = 0;
/// Its error channel.
pub const ERROR: u8 = 1;

/// What a binary message from the server means.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Incoming {
    /// Bytes from the pod's port.
    Data(Bytes),
    /// The kubelet could not (or can no longer) forward: its sentence.
    Error(String),
    /// Nothing for the reader (a port frame, an empty message).
    Nothing,
}

/// The server broke the protocol.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProtocolError {
    #[error(
        "the API server sent a message on channel {0}; a single-port forward has channels 0 and 1 only"
    )]
    Channel(u8),
    #[error("the API server's first message on channel {channel} names port {got}, not {want}")]
    Port { channel: u8, got: u16, want: u16 },
    #[error("the API server's first message on channel {0} is not a 2-byte port")]
    PortFrame(u8),
}

/// Reads a single-port forward's messages.
#[derive(Debug, Clone)]
pub struct Demux {
    port: u16,
    /// Whether the port frame of channel 0 and 1 has been seen.
    seen: [bool; 2],
}

impl Demux {
    pub fn new(port: u16) -> Self {
        Demux {
            port,
            seen: [false; 2],
        }
    }

    /// Classify one binary message (channel byte first).
    pub fn on_message(&mut self, mut msg: Bytes) -> Result<Incoming, ProtocolError> {
        if msg.is_empty() {
            return Ok(Incoming::Nothing);
        }
        let channel = msg.get_u8();
        let seen = self
            .seen
            .get_mut(usize::from(channel))
            .ok_or(ProtocolError::Channel(channel))?;
        if !*seen {
            if msg.len() != 2 {
                return Err(ProtocolError::PortFrame(channel));
            }
            let got = msg.get_u16_le();
            if got != self.port {
                return Err(ProtocolError::Port {
                    channel,
                    got,
                    want: self.port,
                });
            }
            *seen = true;
            return Ok(Incoming::Nothing);
        }
        Ok(match channel {
            DATA if msg.is_empty() => Incoming::Nothing,
            DATA => Incoming::Data(msg),
            ERROR => Incoming::Error(String::from_utf8_lossy(&msg).into_owned()),
            other => return Err(ProtocolError::Channel(other)),
        })
    }
}

/// The message that carries `data` to the pod: channel 0, then the bytes.
pub fn data_message(data: &[u8]) -> Bytes {
    let mut b = BytesMut::with_capacity(data.len() + 1);
    b.extend_from_slice(&[DATA]);
    b.extend_from_slice(data);
    b.freeze()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn msg(bytes: &[u8]) -> Bytes {
        Bytes::copy_from_slice(bytes)
    }

    #[test]
    fn port_frames_then_data_then_the_kubelet_error() {
        let mut d = Demux::new(51820);
        let port = 51820u16.to_le_bytes();
        assert_eq!(
            d.on_message(msg(&[0, port[0], port[1]])),
            Ok(Incoming::Nothing)
        );
        assert_eq!(
            d.on_message(msg(&[1, port[0], port[1]])),
            Ok(Incoming::Nothing)
        );
        assert_eq!(
            d.on_message(msg(b"\x00abc")),
            Ok(Incoming::Data(msg(b"abc")))
        );
        // After its port frame a 2-byte message is data like any other.
        assert_eq!(
            d.on_message(msg(&[0, port[0], port[1]])),
            Ok(Incoming::Data(msg(&port)))
        );
        assert_eq!(d.on_message(msg(&[0])), Ok(Incoming::Nothing));
        assert_eq!(
            d.on_message(msg(
                b"\x01error forwarding port 51820 to pod abc, uid : refused"
            )),
            Ok(Incoming::Error(
                "error forwarding port 51820 to pod abc, uid : refused".into()
            ))
        );
    }

    #[test]
    fn a_wrong_port_or_channel_is_a_protocol_error() {
        let mut d = Demux::new(80);
        assert_eq!(
            d.on_message(msg(&[0, 81, 0])),
            Err(ProtocolError::Port {
                channel: 0,
                got: 81,
                want: 80
            })
        );
        assert_eq!(
            d.on_message(msg(&[1, 80])),
            Err(ProtocolError::PortFrame(1))
        );
        assert_eq!(
            d.on_message(msg(&[2, 80, 0])),
            Err(ProtocolError::Channel(2))
        );
    }

    #[test]
    fn data_goes_on_channel_zero() {
        assert_eq!(data_message(b"hi"), msg(b"\x00hi"));
    }
}
