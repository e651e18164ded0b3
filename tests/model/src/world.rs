//! The simulated world on one fake clock: the API server's data, the gateway, the laptops and
//! the network between them. [`World::run_for`] advances the clock in ticks, each tick running
//! every part's timers and delivering what is in flight until the network is quiet.

use std::net::{IpAddr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use ipnet::Ipv4Net;
use kwg_contract::GatewayInfo;
use kwg_contract::keys::PrivateKey;

use crate::api::Api;
use crate::gateway::Gateway;
use crate::laptop::Laptop;
use crate::net::{self, Net, To};
use crate::sut::{NetBatch, Rung, TunBatch, WgCore};

/// How often the drivers look at their timers (the transport's and health's 100 ms).
pub const TICK: Duration = Duration::from_millis(100);

pub const TUNNEL_CIDR: &str = "100.77.0.0/16";
pub const PORTS: [u16; 2] = [31820, 31821];

/// The cluster's Service and pod CIDRs as the gateway publishes them, one set per variant: as
/// installed; a second pod CIDR next to the first (a cluster that grew); a second Service CIDR
/// and the first pod CIDR only.
pub const CIDRS: [(&[&str], &[&str]); 3] = [
    (&["10.96.0.0/12"], &["10.244.0.0/16"]),
    (&["10.96.0.0/12"], &["10.244.0.0/16", "10.245.0.0/16"]),
    (&["10.96.0.0/12", "172.20.0.0/16"], &["10.244.0.0/16"]),
];

pub struct World {
    pub start: Instant,
    pub now: Instant,
    wall0: SystemTime,
    pub api: Api,
    pub net: Net,
    pub gateway: Gateway,
    pub laptops: Vec<Laptop>,
    /// Which [`CIDRS`] the gateway publishes.
    pub cidrs: usize,
}

/// The gateway info the gateway publishes for `key` on `port`, with the CIDRs of variant
/// `cidrs` of [`CIDRS`].
pub fn info(key: &PrivateKey, port: u16, cidrs: usize) -> GatewayInfo {
    let (service, pod) = CIDRS[cidrs];
    let list = |l: &[&str]| format!("{:?}", l);
    let json = format!(
        r#"{{"version":1,"publicKey":"{}","endpoints":["{}:{port}"],
"tunnelCidr":"{TUNNEL_CIDR}","gatewayIp":"100.77.0.1","serviceCidrs":{},
"podCidrs":{},"clusterDomain":"cluster.local","adminPort":8080}}"#,
        key.public_key(),
        net::NODE,
        list(service),
        list(pod),
    );
    GatewayInfo::from_json(json.as_bytes()).expect("valid gateway info")
}

impl World {
    /// A world with laptops named `names` (two laptops may share a name: two machines of the
    /// same owner picking the same peer name).
    pub fn new(names: &[&str], seed: u64) -> World {
        let now = Instant::now();
        let key = PrivateKey::generate();
        let port = PORTS[0];
        let cidr: Ipv4Net = TUNNEL_CIDR.parse().expect("a CIDR");
        World {
            start: now,
            now,
            wall0: "2026-01-01T00:00:00Z"
                .parse::<DateTime<Utc>>()
                .expect("a time")
                .into(),
            api: Api::new(info(&key, port, 0)),
            net: Net::new(seed),
            gateway: Gateway::new(key, cidr, port),
            laptops: names
                .iter()
                .enumerate()
                .map(|(i, n)| Laptop::new(i, n, PrivateKey::generate()))
                .collect(),
            cidrs: 0,
        }
    }

    pub fn wall(&self) -> SystemTime {
        self.wall0 + self.now.duration_since(self.start)
    }

    /// Runs the world for `d` of fake time; `ping` laptops send a ping every tick.
    pub fn run_for(&mut self, d: Duration, ping: &[usize]) {
        let end = self.now + d;
        while self.now < end {
            self.now += TICK;
            crate::clock::advance(TICK);
            self.tick(ping);
        }
    }

    fn tick(&mut self, ping: &[usize]) {
        let (now, wall) = (self.now, self.wall());
        self.gateway.maybe_reconcile(&mut self.api, wall);
        self.break_streams();
        for l in &mut self.laptops {
            l.tick(now, &mut self.api, &mut self.net, wall);
        }
        for i in ping {
            let l = &mut self.laptops[*i];
            if l.running() && !l.suspended {
                l.ping(now, &mut self.net);
            }
        }
        self.gateway.tick(now, &mut self.net);
        self.deliver();
        // What the deliveries changed (annotations, deletes) reaches the gateway at once.
        self.gateway.maybe_reconcile(&mut self.api, wall);
    }

    /// Streams whose transport is blocked break.
    fn break_streams(&mut self) {
        let (tcp, api) = (self.net.tcp_blocked, self.api.blocked);
        self.net.break_streams(|s| match s.rung {
            Rung::Tcp => !tcp,
            Rung::ApiServer => !api,
            Rung::Udp => true,
        });
    }

    /// Delivers until nothing is in flight (zero latency; a bounded number of rounds).
    pub fn deliver(&mut self) {
        let now = self.now;
        for _ in 0..50 {
            if self.net.is_empty() {
                return;
            }
            for d in self.net.take() {
                match d.to {
                    To::Gateway => {
                        let listening = d.dst.ip() == IpAddr::from(net::NODE)
                            && d.dst.port() == self.gateway.port;
                        let stream = !listening && d.dst == d.from;
                        if listening || stream {
                            self.gateway.receive(d.from, &d.bytes, now, &mut self.net);
                        }
                    }
                    To::Laptop(i) => {
                        self.laptops[i].receive(d.from, d.dst, &d.bytes, now, &mut self.net)
                    }
                }
            }
        }
        panic!("the network does not settle");
    }

    /// The gateway pod restarts: memory lost, streams to it broken.
    pub fn restart_gateway(&mut self) {
        self.gateway.restart();
        self.net.break_streams(|_| false);
    }

    /// The operator rotates the gateway's key: device and published info change.
    pub fn rotate_gateway_key(&mut self) {
        let key = PrivateKey::generate();
        self.gateway.set_key(key.clone());
        let port = self.gateway.port;
        self.api.set_info(info(&key, port, self.cidrs));
    }

    /// The cluster's Service and pod CIDRs change to variant `cidrs` of [`CIDRS`]: the gateway
    /// publishes them.
    pub fn change_cidrs(&mut self, cidrs: usize) {
        self.cidrs = cidrs;
        let key = self.gateway.key.clone();
        let port = self.gateway.port;
        self.api.set_info(info(&key, port, cidrs));
    }

    /// The gateway moves to the other node port: the old one no longer answers.
    pub fn move_gateway_port(&mut self) {
        let port = if self.gateway.port == PORTS[0] {
            PORTS[1]
        } else {
            PORTS[0]
        };
        self.gateway.port = port;
        self.net.break_streams(|_| false);
        let key = self.gateway.key.clone();
        self.api.set_info(info(&key, port, self.cidrs));
    }

    /// Whether a machine holding `key` and claiming `src` gets a packet to the pod through
    /// the gateway now: a fresh WireGuard core, straight to the gateway (no network faults).
    pub fn key_reaches_pod(&mut self, key: &PrivateKey, src: std::net::Ipv4Addr) -> bool {
        let now = self.now;
        let mut wg = WgCore::new(Some(key.clone()));
        let gw_ep = SocketAddr::new(net::NODE.into(), self.gateway.port);
        let mut peer = crate::sut::PeerConfig::new(self.gateway.public_key());
        peer.endpoint = Some(gw_ep);
        peer.allowed_ips = vec!["0.0.0.0/0".parse().expect("a net")];
        wg.upsert_peer(peer);
        let from: SocketAddr = "203.0.113.7:5555".parse().expect("an address");
        let before = self.gateway.reached.get(&src).copied().unwrap_or(0);
        let p = crate::sut::ipv4(src.octets(), crate::gateway::POD.octets(), b"sneak");
        let mut out = NetBatch::new(1);
        wg.handle_tun(&p, now, &mut out);
        let mut pending: Vec<Vec<u8>> = out.datagrams().map(|(_, d)| d.to_vec()).collect();
        for _ in 0..10 {
            for d in std::mem::take(&mut pending) {
                let answers = self.gateway.handle(from, &d, now);
                for (_, a) in answers.datagrams() {
                    let mut out = NetBatch::new(1);
                    let mut tun = TunBatch::new(0);
                    wg.handle_udp(gw_ep, a, now, &mut out, &mut tun);
                    pending.extend(out.datagrams().map(|(_, d)| d.to_vec()));
                }
            }
            if pending.is_empty() {
                break;
            }
        }
        self.gateway.reached.get(&src).copied().unwrap_or(0) > before
    }
}
