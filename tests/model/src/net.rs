//! The fake network between laptops and the gateway: UDP datagrams (lost, reordered or
//! blocked as told) and streams (TCP, the API server's port-forward) that carry WireGuard
//! datagrams in order or break when their transport is blocked.

use std::collections::{BTreeMap, VecDeque};
use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use rand::rngs::StdRng;
use rand::seq::SliceRandom;
use rand::{Rng, SeedableRng};

use crate::sut::Rung;

/// The gateway node's address (its UDP endpoint and TCP listener).
pub const NODE: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);

/// Laptop `i`'s LAN address.
pub fn laptop_ip(i: usize) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(192, 0, 2, 10 + i as u8))
}

/// Who a datagram is for.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum To {
    Gateway,
    Laptop(usize),
}

#[derive(Debug, Clone)]
pub struct Datagram {
    pub to: To,
    /// The source address the receiver sees.
    pub from: SocketAddr,
    /// The address it was sent to (the receiver checks it still listens there).
    pub dst: SocketAddr,
    pub bytes: Vec<u8>,
    /// Carried by a stream (in order), not UDP.
    pub stream: bool,
}

/// An open stream between a laptop and the gateway.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Stream {
    pub laptop: usize,
    pub rung: Rung,
    /// The endpoint the laptop's device gives the stream.
    pub laptop_end: SocketAddr,
    /// Where the gateway sees the stream's packets come from.
    pub gateway_end: SocketAddr,
}

#[derive(Debug)]
pub struct Net {
    pub udp_blocked: bool,
    pub tcp_blocked: bool,
    /// A share of UDP datagrams is lost.
    pub lossy: bool,
    /// UDP datagrams in flight are delivered in random order.
    pub reorder: bool,
    rng: StdRng,
    queue: VecDeque<Datagram>,
    streams: BTreeMap<u64, Stream>,
    next_stream: u64,
    /// Datagrams dropped (for the reports of a failing case).
    pub dropped: u64,
}

/// The share of UDP datagrams a lossy network drops.
const LOSS: f64 = 0.25;

impl Net {
    pub fn new(seed: u64) -> Net {
        Net {
            udp_blocked: false,
            tcp_blocked: false,
            lossy: false,
            reorder: false,
            rng: StdRng::seed_from_u64(seed),
            queue: VecDeque::new(),
            streams: BTreeMap::new(),
            next_stream: 1,
            dropped: 0,
        }
    }

    /// Opens a stream of `rung` for laptop `i`.
    pub fn open_stream(&mut self, laptop: usize, rung: Rung) -> Stream {
        let id = self.next_stream;
        self.next_stream += 1;
        let r = rung as u8;
        let port = 1000 + id as u16;
        let s = Stream {
            laptop,
            rung,
            laptop_end: SocketAddr::new(Ipv4Addr::new(198, 18, laptop as u8, r).into(), port),
            gateway_end: SocketAddr::new(Ipv4Addr::new(198, 19, laptop as u8, r).into(), port),
        };
        self.streams.insert(id, s);
        s
    }

    pub fn stream_open(&self, laptop_end: SocketAddr) -> bool {
        self.streams.values().any(|s| s.laptop_end == laptop_end)
    }

    pub fn close_stream(&mut self, laptop_end: SocketAddr) {
        self.streams.retain(|_, s| s.laptop_end != laptop_end);
    }

    /// Breaks the streams `keep` refuses (their transport blocked, the gateway pod gone).
    pub fn break_streams(&mut self, keep: impl Fn(&Stream) -> bool) {
        self.streams.retain(|_, s| keep(s));
    }

    /// Laptop `i` sends `bytes` from its UDP port `port` to `dst`.
    pub fn from_laptop(&mut self, i: usize, port: u16, dst: SocketAddr, bytes: Vec<u8>) {
        if let Some(s) = self
            .streams
            .values()
            .find(|s| s.laptop == i && s.laptop_end == dst)
        {
            let (from, dst) = (s.gateway_end, s.gateway_end);
            return self.queue.push_back(Datagram {
                to: To::Gateway,
                from,
                dst,
                bytes,
                stream: true,
            });
        }
        let from = SocketAddr::new(laptop_ip(i), port);
        self.udp(To::Gateway, from, dst, bytes);
    }

    /// The gateway, listening on `port`, sends `bytes` to `dst`.
    pub fn from_gateway(&mut self, port: u16, dst: SocketAddr, bytes: Vec<u8>) {
        if let Some(s) = self.streams.values().find(|s| s.gateway_end == dst) {
            let (to, from) = (To::Laptop(s.laptop), s.laptop_end);
            return self.queue.push_back(Datagram {
                to,
                from,
                dst: from,
                bytes,
                stream: true,
            });
        }
        let Some(i) = (10..60)
            .find(|n| laptop_ip(n - 10) == dst.ip())
            .map(|n| n - 10)
        else {
            self.dropped += 1;
            return;
        };
        let from = SocketAddr::new(NODE.into(), port);
        self.udp(To::Laptop(i), from, dst, bytes);
    }

    fn udp(&mut self, to: To, from: SocketAddr, dst: SocketAddr, bytes: Vec<u8>) {
        if self.udp_blocked || (self.lossy && self.rng.random_bool(LOSS)) {
            self.dropped += 1;
            return;
        }
        self.queue.push_back(Datagram {
            to,
            from,
            dst,
            bytes,
            stream: false,
        });
    }

    /// Everything in flight now, in delivery order.
    pub fn take(&mut self) -> Vec<Datagram> {
        let mut all: Vec<Datagram> = self.queue.drain(..).collect();
        if self.reorder {
            // UDP datagrams swap places among themselves; a stream keeps its order.
            let slots: Vec<usize> = (0..all.len()).filter(|i| !all[*i].stream).collect();
            let mut order = slots.clone();
            order.shuffle(&mut self.rng);
            let moved: Vec<Datagram> = order.iter().map(|i| all[*i].clone()).collect();
            for (slot, d) in slots.into_iter().zip(moved) {
                all[slot] = d;
            }
        }
        all
    }

    pub fn is_empty(&self) -> bool {
        self.queue.is_empty()
    }
}
