//! SPDY/3.1 framing as the Kubernetes port-forward streams use it (moby/spdystream `spdy/`):
//! control frames `0x8003 type, flags, 24-bit length`, data frames `stream id, flags, 24-bit
//! length`, header blocks compressed with one zlib stream per direction and the SPDY/3 preset
//! dictionary. Pure: bytes in, frames out. spdystream does no flow control (WINDOW_UPDATE and
//! SETTINGS are read and ignored), so neither does this.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use flate2::{Compress, Compression, Decompress, FlushCompress, FlushDecompress};

/// The SPDY/3 header dictionary (draft-mbelshe-httpbis-spdy-00 §2.6.10.1; adler32 0xe3c6a7c2).
pub const DICTIONARY: &[u8] = include_bytes!("spdy3-dictionary.bin");

const VERSION: u16 = 3;
const SYN_STREAM: u16 = 1;
const SYN_REPLY: u16 = 2;
const RST_STREAM: u16 = 3;
const PING: u16 = 6;
const GOAWAY: u16 = 7;
/// FLAG_FIN on control and data frames.
pub const FIN: u8 = 1;
/// Control frames are small; a bigger one is an attack or a bug.
const MAX_CONTROL: usize = 64 * 1024;
/// A decompressed header block larger than this is refused (zlib bomb).
const MAX_HEADERS: usize = 64 * 1024;
/// The 24-bit length field's limit.
pub const MAX_DATA: usize = (1 << 24) - 1;

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum SpdyError {
    #[error("SPDY control frame of version {0}, expected 3")]
    Version(u16),
    #[error("SPDY control frame of {0} bytes is too large")]
    TooLarge(usize),
    #[error("SPDY frame is malformed: {0}")]
    Malformed(&'static str),
    #[error("SPDY header block does not decompress: {0}")]
    Zlib(String),
}

/// A frame, decoded or to send.
#[derive(Debug, Clone, PartialEq)]
pub enum Frame {
    SynStream {
        stream: u32,
        fin: bool,
        headers: Vec<(String, String)>,
    },
    SynReply {
        stream: u32,
        fin: bool,
    },
    RstStream {
        stream: u32,
        status: u32,
    },
    Ping(u32),
    GoAway {
        last: u32,
    },
    Data {
        stream: u32,
        fin: bool,
        data: Bytes,
    },
    /// SETTINGS, HEADERS, WINDOW_UPDATE and unknown types: ignored like spdystream does.
    Ignored,
}

impl Frame {
    /// The value of a header of a SYN_STREAM (names are lower case on the wire).
    pub fn header<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
        headers
            .iter()
            .find(|(n, _)| n.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Reads frames from the peer: holds the peer's header decompression stream.
pub struct Decoder {
    inflate: Decompress,
}

impl Default for Decoder {
    fn default() -> Self {
        Decoder {
            inflate: Decompress::new(true),
        }
    }
}

impl Decoder {
    /// One frame from the front of `buf` if it holds a whole one.
    pub fn decode(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, SpdyError> {
        if buf.len() < 8 {
            return Ok(None);
        }
        let len = u32::from_be_bytes([0, buf[5], buf[6], buf[7]]) as usize;
        let control = buf[0] & 0x80 != 0;
        if control && len > MAX_CONTROL {
            return Err(SpdyError::TooLarge(len));
        }
        if buf.len() < 8 + len {
            buf.reserve(8 + len - buf.len());
            return Ok(None);
        }
        let head = buf.split_to(8);
        let flags = head[4];
        let mut body = buf.split_to(len).freeze();
        let word = u32::from_be_bytes([head[0], head[1], head[2], head[3]]);
        if !control {
            return Ok(Some(Frame::Data {
                stream: word & 0x7fff_ffff,
                fin: flags & FIN != 0,
                data: body,
            }));
        }
        let version = ((word >> 16) & 0x7fff) as u16;
        if version != VERSION {
            return Err(SpdyError::Version(version));
        }
        let need = |b: &Bytes, n: usize| {
            if b.len() < n {
                Err(SpdyError::Malformed(
                    "control frame shorter than its fields",
                ))
            } else {
                Ok(())
            }
        };
        let frame = match (word & 0xffff) as u16 {
            SYN_STREAM => {
                need(&body, 10)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                body.advance(6); // associated stream, priority, slot
                let block = self.inflate(&body)?;
                Frame::SynStream {
                    stream,
                    fin: flags & FIN != 0,
                    headers: parse_block(&block)?,
                }
            }
            SYN_REPLY => {
                need(&body, 4)?;
                let stream = body.get_u32() & 0x7fff_ffff;
                self.inflate(&body)?;
                Frame::SynReply {
                    stream,
                    fin: flags & FIN != 0,
                }
            }
            RST_STREAM => {
                need(&body, 8)?;
                Frame::RstStream {
                    stream: body.get_u32() & 0x7fff_ffff,
                    status: body.get_u32(),
                }
            }
            PING => {
                need(&body, 4)?;
                Frame::Ping(body.get_u32())
            }
            GOAWAY => {
                need(&body, 4)?;
                Frame::GoAway {
                    last: body.get_u32() & 0x7fff_ffff,
                }
            }
            8 => {
                // HEADERS: keep the zlib stream in step, then ignore.
                need(&body, 4)?;
                body.advance(4);
                self.inflate(&body)?;
                Frame::Ignored
            }
            _ => Frame::Ignored,
        };
        Ok(Some(frame))
    }

    fn inflate(&mut self, input: &[u8]) -> Result<Vec<u8>, SpdyError> {
        let mut out = Vec::with_capacity(256);
        let mut pos = 0;
        loop {
            let before = (self.inflate.total_in(), self.inflate.total_out());
            if out.capacity() - out.len() < 256 {
                out.reserve(1024);
            }
            match self
                .inflate
                .decompress_vec(&input[pos..], &mut out, FlushDecompress::Sync)
            {
                Ok(_) => {}
                Err(e) if e.needs_dictionary().is_some() => {
                    self.inflate
                        .set_dictionary(DICTIONARY)
                        .map_err(|e| SpdyError::Zlib(e.to_string()))?;
                }
                Err(e) => return Err(SpdyError::Zlib(e.to_string())),
            }
            pos += (self.inflate.total_in() - before.0) as usize;
            if out.len() > MAX_HEADERS {
                return Err(SpdyError::TooLarge(out.len()));
            }
            let progressed = (self.inflate.total_in(), self.inflate.total_out()) != before;
            if pos >= input.len() && out.len() < out.capacity() {
                return Ok(out);
            }
            if !progressed && self.inflate.total_in() > 0 {
                return Err(SpdyError::Zlib("no progress".into()));
            }
        }
    }
}

fn parse_block(mut b: &[u8]) -> Result<Vec<(String, String)>, SpdyError> {
    let short = SpdyError::Malformed("header block shorter than its lengths");
    let take = |b: &mut &[u8]| -> Result<String, SpdyError> {
        if b.len() < 4 {
            return Err(short.clone());
        }
        let n = b.get_u32() as usize;
        if b.len() < n {
            return Err(short.clone());
        }
        let s = String::from_utf8_lossy(&b[..n]).into_owned();
        b.advance(n);
        Ok(s)
    };
    if b.len() < 4 {
        return Err(SpdyError::Malformed("empty header block"));
    }
    let count = b.get_u32();
    let mut headers = Vec::new();
    for _ in 0..count {
        let name = take(&mut b)?;
        let value = take(&mut b)?;
        headers.push((name.to_ascii_lowercase(), value));
    }
    Ok(headers)
}

/// Writes frames to the peer: holds our header compression stream.
pub struct Encoder {
    deflate: Compress,
    primed: bool,
}

impl Default for Encoder {
    fn default() -> Self {
        Encoder {
            deflate: Compress::new(Compression::default(), true),
            primed: false,
        }
    }
}

impl Encoder {
    pub fn encode(&mut self, frame: &Frame, out: &mut BytesMut) -> Result<(), SpdyError> {
        match frame {
            Frame::SynStream {
                stream,
                fin,
                headers,
            } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream);
                body.put_u32(0);
                body.put_u16(0);
                body.extend_from_slice(&self.block(headers)?);
                control(out, SYN_STREAM, u8::from(*fin) * FIN, &body);
            }
            Frame::SynReply { stream, fin } => {
                let mut body = BytesMut::new();
                body.put_u32(*stream);
                body.extend_from_slice(&self.block(&[])?);
                control(out, SYN_REPLY, u8::from(*fin) * FIN, &body);
            }
            Frame::RstStream { stream, status } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&stream.to_be_bytes());
                body[4..].copy_from_slice(&status.to_be_bytes());
                control(out, RST_STREAM, 0, &body);
            }
            Frame::Ping(id) => control(out, PING, 0, &id.to_be_bytes()),
            Frame::GoAway { last } => {
                let mut body = [0u8; 8];
                body[..4].copy_from_slice(&last.to_be_bytes());
                control(out, GOAWAY, 0, &body);
            }
            Frame::Data { stream, fin, data } => {
                for (i, chunk) in data.chunks(MAX_DATA).enumerate() {
                    let last = (i + 1) * MAX_DATA >= data.len();
                    data_frame(out, *stream, *fin && last, chunk);
                }
                if data.is_empty() {
                    data_frame(out, *stream, *fin, &[]);
                }
            }
            Frame::Ignored => {}
        }
        Ok(())
    }

    fn block(&mut self, headers: &[(String, String)]) -> Result<Vec<u8>, SpdyError> {
        let mut raw = BytesMut::new();
        raw.put_u32(headers.len() as u32);
        for (n, v) in headers {
            raw.put_u32(n.len() as u32);
            raw.extend_from_slice(n.as_bytes());
            raw.put_u32(v.len() as u32);
            raw.extend_from_slice(v.as_bytes());
        }
        if !self.primed {
            self.deflate
                .set_dictionary(DICTIONARY)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            self.primed = true;
        }
        let mut out = Vec::with_capacity(raw.len() + 64);
        let mut pos = 0;
        loop {
            let before = self.deflate.total_in();
            if out.capacity() - out.len() < 64 {
                out.reserve(256);
            }
            self.deflate
                .compress_vec(&raw[pos..], &mut out, FlushCompress::Sync)
                .map_err(|e| SpdyError::Zlib(e.to_string()))?;
            pos += (self.deflate.total_in() - before) as usize;
            if pos >= raw.len() && out.len() < out.capacity() {
                return Ok(out);
            }
        }
    }
}

fn control(out: &mut BytesMut, kind: u16, flags: u8, body: &[u8]) {
    out.put_u16(0x8000 | VERSION);
    out.put_u16(kind);
    out.put_u32((u32::from(flags) << 24) | body.len() as u32);
    out.extend_from_slice(body);
}

fn data_frame(out: &mut BytesMut, stream: u32, fin: bool, data: &[u8]) {
    out.put_u32(stream & 0x7fff_ffff);
    out.put_u32((u32::from(fin) << 24) | data.len() as u32);
    out.extend_from_slice(data);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn hdrs(v: &[(&str, &str)]) -> Vec<(String, String)> {
        v.iter()
            .map(|(a, b)| (a.to_string(), b.to_string()))
            .collect()
    }

    #[test]
    fn dictionary_is_the_spdy3_one() {
        // zlib's adler32 of the dictionary: the DICTID every SPDY/3 peer sends.
        let (mut a, mut b) = (1u32, 0u32);
        for &c in DICTIONARY {
            a = (a + u32::from(c)) % 65521;
            b = (b + a) % 65521;
        }
        assert_eq!((b << 16) | a, 0xe3c6_a7c2);
    }

    #[test]
    fn frames_round_trip_through_a_shared_zlib_stream() {
        let mut enc = Encoder::default();
        let mut dec = Decoder::default();
        let frames = vec![
            Frame::SynStream {
                stream: 1,
                fin: false,
                headers: hdrs(&[("streamtype", "error"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::SynStream {
                stream: 3,
                fin: false,
                headers: hdrs(&[("streamtype", "data"), ("port", "80"), ("requestid", "0")]),
            },
            Frame::Ping(1),
            Frame::Data {
                stream: 3,
                fin: true,
                data: Bytes::from_static(b"GET / HTTP/1.1\r\n\r\n"),
            },
            Frame::RstStream {
                stream: 1,
                status: 5,
            },
            Frame::GoAway { last: 3 },
        ];
        let mut wire = BytesMut::new();
        for f in &frames {
            enc.encode(f, &mut wire).unwrap();
        }
        // Fed one byte at a time: partial frames wait for more.
        let mut buf = BytesMut::new();
        let mut got = Vec::new();
        for b in wire {
            buf.put_u8(b);
            while let Some(f) = dec.decode(&mut buf).unwrap() {
                got.push(f);
            }
        }
        assert_eq!(got, frames);
    }

    #[test]
    fn reply_decodes_and_bad_frames_are_refused() {
        let mut enc = Encoder::default();
        let mut wire = BytesMut::new();
        enc.encode(
            &Frame::SynReply {
                stream: 1,
                fin: false,
            },
            &mut wire,
        )
        .unwrap();
        let mut dec = Decoder::default();
        assert_eq!(
            dec.decode(&mut wire).unwrap(),
            Some(Frame::SynReply {
                stream: 1,
                fin: false
            })
        );
        let mut v2 = BytesMut::from(&[0x80, 2, 0, 1, 0, 0, 0, 0][..]);
        assert_eq!(dec.decode(&mut v2), Err(SpdyError::Version(2)));
        let mut huge = BytesMut::from(&[0x80, 3, 0, 1, 0, 0xff, 0xff, 0xff][..]);
        assert_eq!(dec.decode(&mut huge), Err(SpdyError::TooLarge(0xff_ffff)));
        let mut short = BytesMut::from(&[0x80, 3, 0, 6, 0, 0, 0, 2, 0, 0][..]);
        assert!(matches!(
            dec.decode(&mut short),
            Err(SpdyError::Malformed(_))
        ));
    }
}
