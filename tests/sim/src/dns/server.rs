//! The I/O edge shared by both servers: hickory's UDP/TCP server in front of a pure [`Zone`],
//! and a plain relay to the upstream resolver for names that are not ours.

use std::{net::SocketAddr, time::Duration};

use hickory_proto::{
    op::{Edns, Header, HeaderCounts, Message, MessageType, Metadata, OpCode, Query, ResponseCode},
    rr::{Name, RData, Record, RecordType, rdata::CNAME},
};
use hickory_server::{
    Server,
    net::{runtime::Time, xfer::Protocol},
    server::{Request, RequestHandler, ResponseHandler, ResponseInfo},
    zone_handler::MessageResponseBuilder,
};
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{TcpListener, TcpStream, UdpSocket},
};
use tracing::{debug, warn};

use super::{Error, Reply, Resolution};

/// Idle time after which a TCP client connection is closed.
const TCP_IDLE: Duration = Duration::from_secs(10);
/// Longest CNAME chain followed (a loop of ExternalName Services ends here).
const MAX_CNAME_CHAIN: usize = 8;
/// How long to wait for the upstream resolver (a stub's usual per-try timeout).
const UPSTREAM_TIMEOUT: Duration = Duration::from_secs(3);

/// A zone's pure lookup: one question in, what to answer out.
pub(crate) trait Zone: Send + Sync + Unpin + 'static {
    fn resolve(&self, name: &Name, qtype: RecordType) -> Resolution;
}

/// Serves `zone` on both sockets until the server fails.
pub(crate) async fn run<Z: Zone>(
    zone: Z,
    upstream: Option<SocketAddr>,
    udp: UdpSocket,
    tcp: TcpListener,
) -> Result<(), Error> {
    let mut server = Server::new(Handler { zone, upstream });
    server.register_socket(udp);
    server.register_listener(tcp, TCP_IDLE, 32);
    server.block_until_done().await?;
    Err(Error::Stopped)
}

struct Handler<Z> {
    zone: Z,
    upstream: Option<SocketAddr>,
}

#[async_trait::async_trait]
impl<Z: Zone> RequestHandler for Handler<Z> {
    async fn handle_request<R: ResponseHandler, T: Time>(
        &self,
        request: &Request,
        mut response_handle: R,
    ) -> ResponseInfo {
        let edns = response_edns(request);
        let builder = MessageResponseBuilder::new(&request.queries, edns.as_ref());
        let mut metadata = Metadata::response_from_request(&request.metadata);
        metadata.recursion_available = self.upstream.is_some();

        // One question of opcode QUERY, or an error code (RFC 1035 4.1.1).
        let question = match request.request_info() {
            Err(_) => Err(ResponseCode::FormErr),
            Ok(_)
                if request.metadata.message_type != MessageType::Query
                    || request.metadata.op_code != OpCode::Query =>
            {
                Err(ResponseCode::NotImp)
            }
            Ok(info) => Ok((Name::from(info.query.name()), info.query.query_type())),
        };
        let resolution = question
            .as_ref()
            .map(|(name, qtype)| self.zone.resolve(name, *qtype));
        debug!(?question, ?resolution, "dns query");

        let (metadata, reply) = match (resolution, self.upstream) {
            (Err(rcode), _) => (with_rcode(metadata, *rcode), empty()),
            (Ok(Resolution::Answer(mut reply)), _) => {
                metadata.response_code = reply.rcode;
                metadata.authoritative = true;
                if let Ok((_, qtype)) = &question {
                    let answers = std::mem::take(&mut reply.answers);
                    reply.answers = self.chase_cname(answers, *qtype, request.protocol()).await;
                }
                (metadata, reply)
            }
            (Ok(Resolution::Forward), Some(upstream)) => {
                match relay(upstream, request.as_slice(), request.protocol()).await {
                    Ok(relayed) => {
                        let id = metadata.id;
                        let reply = Reply {
                            rcode: relayed.metadata.response_code,
                            answers: relayed.answers,
                            authorities: relayed.authorities,
                            additionals: relayed.additionals,
                        };
                        let mut metadata = relayed.metadata;
                        metadata.id = id;
                        // We are the client's recursive resolver for forwarded names.
                        metadata.recursion_available = true;
                        (metadata, reply)
                    }
                    Err(error) => {
                        warn!(%upstream, %error, ?question, "upstream resolver failed");
                        (with_rcode(metadata, ResponseCode::ServFail), empty())
                    }
                }
            }
            (Ok(Resolution::Forward | Resolution::Refused), _) => {
                (with_rcode(metadata, ResponseCode::Refused), empty())
            }
        };
        let response = builder.build(
            metadata,
            &reply.answers,
            &reply.authorities,
            [],
            &reply.additionals,
        );
        let sent = response_handle.send_response(response).await;
        sent.unwrap_or_else(|error| {
            warn!(%error, "could not send a DNS response");
            let metadata = Metadata::response_from_request(&request.metadata);
            ResponseInfo::from(Header {
                metadata: with_rcode(metadata, ResponseCode::ServFail),
                counts: HeaderCounts::default(),
            })
        })
    }
}

impl<Z: Zone> Handler<Z> {
    /// Follows a CNAME that ends an authoritative answer (an ExternalName Service), in our
    /// zone or upstream, so that stub resolvers, which do not chase CNAMEs, get the addresses
    /// too (as CoreDNS does).
    async fn chase_cname(
        &self,
        mut answers: Vec<Record>,
        qtype: RecordType,
        protocol: Protocol,
    ) -> Vec<Record> {
        for _ in 0..MAX_CNAME_CHAIN {
            let Some(target) = cname_target(&answers, qtype) else {
                break;
            };
            let more = match (self.zone.resolve(&target, qtype), self.upstream) {
                (Resolution::Answer(reply), _) => reply.answers,
                (Resolution::Forward, Some(upstream)) => {
                    let mut query = Message::query();
                    query.metadata.recursion_desired = true;
                    query.add_query(Query::query(target.clone(), qtype));
                    let relayed = match query.to_vec() {
                        Ok(bytes) => relay(upstream, &bytes, protocol).await,
                        Err(e) => Err(Error::UpstreamReply {
                            upstream,
                            reason: e.to_string(),
                        }),
                    };
                    match relayed {
                        Ok(reply) => reply.answers,
                        Err(error) => {
                            debug!(%target, %error, "could not follow CNAME upstream");
                            break;
                        }
                    }
                }
                _ => break,
            };
            if more.is_empty() {
                break;
            }
            answers.extend(more);
        }
        answers
    }
}

/// The target of a CNAME ending `answers`, if the client asked for another type.
fn cname_target(answers: &[Record], qtype: RecordType) -> Option<Name> {
    if matches!(qtype, RecordType::CNAME | RecordType::ANY) {
        return None;
    }
    match &answers.last()?.data {
        RData::CNAME(CNAME(target)) => Some(target.clone()),
        _ => None,
    }
}

fn empty() -> Reply {
    Reply::records(Vec::new(), Vec::new())
}

fn with_rcode(mut metadata: Metadata, response_code: ResponseCode) -> Metadata {
    metadata.response_code = response_code;
    metadata
}

/// EDNS of the response mirrors the request's (RFC 6891 6.1.1); its payload size is what lets
/// UDP answers grow past 512 bytes before hickory sets TC.
fn response_edns(request: &Request) -> Option<Edns> {
    request.edns.as_ref().map(|req| {
        let mut edns = Edns::new();
        edns.set_max_payload(req.max_payload().max(512));
        edns.set_version(0);
        edns
    })
}

/// Sends the client's query bytes unchanged to `upstream` over the client's transport and
/// returns the decoded reply (TC is kept: a UDP client then retries over TCP, as with any
/// resolver).
async fn relay(upstream: SocketAddr, query: &[u8], protocol: Protocol) -> Result<Message, Error> {
    let exchange = async {
        match protocol {
            Protocol::Udp => relay_udp(upstream, query).await,
            _ => relay_tcp(upstream, query).await,
        }
    };
    let bytes = tokio::time::timeout(UPSTREAM_TIMEOUT, exchange)
        .await
        .map_err(|_| Error::UpstreamTimeout { upstream })?
        .map_err(|source| Error::Upstream { upstream, source })?;
    Message::from_vec(&bytes).map_err(|e| Error::UpstreamReply {
        upstream,
        reason: e.to_string(),
    })
}

async fn relay_udp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let local: SocketAddr = if upstream.is_ipv4() {
        ([0, 0, 0, 0], 0).into()
    } else {
        ([0u16; 8], 0).into()
    };
    let socket = UdpSocket::bind(local).await?;
    socket.connect(upstream).await?;
    socket.send(query).await?;
    let mut buf = vec![0; 65535];
    loop {
        let n = socket.recv(&mut buf).await?;
        // Only the reply to this query (same id) counts; drop stray datagrams.
        if n >= 2 && query.len() >= 2 && buf[..2] == query[..2] {
            buf.truncate(n);
            return Ok(buf);
        }
    }
}

async fn relay_tcp(upstream: SocketAddr, query: &[u8]) -> std::io::Result<Vec<u8>> {
    let mut stream = TcpStream::connect(upstream).await?;
    let len = u16::try_from(query.len()).map_err(std::io::Error::other)?;
    stream.write_all(&len.to_be_bytes()).await?;
    stream.write_all(query).await?;
    let len = stream.read_u16().await?;
    let mut buf = vec![0; usize::from(len)];
    stream.read_exact(&mut buf).await?;
    Ok(buf)
}
