//! A laptop: the real session core and transport ladder, driven by a fake driver that executes
//! their actions and steps against the in-memory API server, a real WireGuard core and the
//! fake network (what `cli/src/driver` and `cli/src/transport/run.rs` do with real I/O).

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::time::{Duration, Instant, SystemTime};

use chrono::{DateTime, Utc};
use ipnet::IpNet;
use kwg_contract::keys::{PrivateKey, PublicKey};

use crate::api::Api;
use crate::gateway::{POD, addr};
use crate::net::{self, Net, Stream};
use crate::sut::{self, Action, Event, JoinConfig, Ladder, Mode, NetBatch, PeerConfig, Phase};
use crate::sut::{Rung, Session, State, Step, Timings, TunBatch, Undo, WgCore};

/// The long action in flight, answered when the world allows.
#[derive(Debug, Clone, PartialEq, Eq)]
enum Pending {
    TunnelIp(String),
    Handshake(SocketAddr),
}

/// How a session ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// Left cleanly.
    Left,
    /// Ended with this error (a failed join, or a leave that left something behind).
    Failed(String),
}

pub struct Laptop {
    pub idx: usize,
    pub cfg: JoinConfig,
    pub key: PrivateKey,
    pub session: Option<Session>,
    pub outcome: Option<Outcome>,
    /// The last journal saved.
    pub journal: Option<State>,
    pub ready: bool,
    /// Asleep: nothing runs.
    pub suspended: bool,
    pub udp_port: u16,
    pub wg: Option<WgCore>,
    pub address: Option<Ipv4Addr>,
    ladder: Option<Ladder>,
    /// The transport's gateway peer; its endpoint is the gateway's UDP endpoint.
    gateway: Option<PeerConfig>,
    stream: Option<Stream>,
    pending: Option<Pending>,
    /// The serial of the last handshake with the gateway peer the transport has seen.
    seen_handshake: u64,
    info_seen: u64,
    /// Replies from the pod.
    pub answers: u64,
    next_ping: u32,
    /// The routes through the tunnel interface, as the driver set them.
    pub routes: BTreeSet<IpNet>,
    /// The WireGuard core's silences while serving and awake.
    quiet: Quiet,
}

/// While serving and awake: when the WireGuard core last sent a datagram (or the window
/// began), and the longest silence seen in this window.
#[derive(Debug, Default)]
struct Quiet {
    last_sent: Option<Instant>,
    longest: Duration,
}

impl Quiet {
    /// `out` is about to be sent at `now`.
    fn sending(&mut self, out: &NetBatch, now: Instant) {
        if out.datagrams().next().is_some()
            && let Some(t) = self.last_sent.replace(now)
        {
            self.longest = self.longest.max(now - t);
        }
    }
}

impl Laptop {
    pub fn new(idx: usize, name: &str, key: PrivateKey) -> Laptop {
        Laptop {
            idx,
            cfg: JoinConfig {
                name: name.into(),
                ttl: Duration::from_secs(90),
                timeout: Duration::from_secs(30),
            },
            key,
            session: None,
            outcome: None,
            journal: None,
            ready: false,
            suspended: false,
            udp_port: 40000,
            wg: None,
            address: None,
            ladder: None,
            gateway: None,
            stream: None,
            pending: None,
            seen_handshake: 0,
            info_seen: 0,
            answers: 0,
            next_ping: 0,
            routes: BTreeSet::new(),
            quiet: Quiet::default(),
        }
    }

    pub fn public_key(&self) -> PublicKey {
        self.key.public_key()
    }

    pub fn secret_name(&self) -> String {
        format!("{}{}", kwg_contract::PEER_SECRET_PREFIX, self.cfg.name)
    }

    /// `kwg join`: a new session.
    pub fn join(&mut self, now: Instant) {
        self.session = Some(sut::new_session(&self.cfg, now));
        self.outcome = None;
        self.ready = false;
        self.journal = None;
    }

    pub fn phase(&self) -> Option<Phase> {
        self.session.as_ref().map(Session::phase)
    }

    pub fn serving(&self) -> bool {
        self.phase() == Some(Phase::Serving)
    }

    pub fn running(&self) -> bool {
        self.session.is_some() && self.outcome.is_none()
    }

    /// `kwg leave`.
    pub fn leave(&mut self, now: Instant, api: &mut Api, net: &mut Net, wall: SystemTime) {
        if let Some(s) = self.session.as_mut().filter(|_| self.outcome.is_none()) {
            s.handle(Event::Leave, now);
            self.pump(now, api, net, wall);
        }
    }

    /// Sends one ping to the pod through the tunnel.
    pub fn ping(&mut self, now: Instant, net: &mut Net) {
        let (Some(wg), Some(src)) = (self.wg.as_mut(), self.address) else {
            return;
        };
        self.next_ping += 1;
        let p = sut::ipv4(src.octets(), POD.octets(), &self.next_ping.to_be_bytes());
        let mut out = NetBatch::new(1);
        wg.handle_tun(&p, now, &mut out);
        self.send(out, now, net);
    }

    /// The longest the WireGuard core stayed silent while serving and awake, in the current
    /// window (since it last began serving or woke up), up to `now`.
    pub fn quiet(&self, now: Instant) -> Duration {
        let q = &self.quiet;
        q.last_sent
            .map_or(Duration::ZERO, |t| q.longest.max(now - t))
    }

    /// Whether the gateway peer completed a handshake within REJECT_AFTER_TIME (180 s).
    fn established(&self, now: Instant, wall: SystemTime) -> bool {
        let (Some(wg), Some(gw)) = (self.wg.as_ref(), self.gateway.as_ref()) else {
            return false;
        };
        wg.peer_stats(&gw.public_key, now, wall)
            .and_then(|p| p.last_handshake)
            .and_then(|t| wall.duration_since(t).ok())
            .is_some_and(|age| age < Duration::from_secs(180))
    }

    /// The allowed IPs of the gateway peer on the WireGuard core.
    pub fn gateway_allowed_ips(&self, now: Instant, wall: SystemTime) -> Option<BTreeSet<IpNet>> {
        let (wg, gw) = (self.wg.as_ref()?, self.gateway.as_ref()?);
        let p = wg.peer_stats(&gw.public_key, now, wall)?;
        Some(p.allowed_ips.iter().copied().collect())
    }

    /// Sends what the WireGuard core put out, noting when.
    fn send(&mut self, out: NetBatch, now: Instant, net: &mut Net) {
        self.quiet.sending(&out, now);
        send(self.idx, self.udp_port, out, net);
    }

    /// One turn of the driver at `now`.
    pub fn tick(&mut self, now: Instant, api: &mut Api, net: &mut Net, wall: SystemTime) {
        // The keepalive window: serving, awake, and a WireGuard session the gateway answered
        // within REJECT_AFTER_TIME (boringtun gives up sending once its handshake attempts
        // expire).
        if self.suspended || !self.running() || !self.serving() || !self.established(now, wall) {
            self.quiet = Quiet::default();
        } else if self.quiet.last_sent.is_none() {
            self.quiet.last_sent = Some(now);
        }
        if self.suspended || !self.running() {
            return;
        }
        let s = self.session.as_mut().expect("running");
        if s.poll_timeout().is_some_and(|t| now >= t) {
            s.handle_timeout(now);
        }
        self.pump(now, api, net, wall);
        self.observe(now, api, net, wall);
        if let Some(l) = self.ladder.as_mut() {
            l.tick(now);
        }
        self.steps(now, api, net);
        self.pump(now, api, net, wall);
        if let Some(wg) = self.wg.as_mut() {
            let mut out = NetBatch::new(1);
            wg.tick(now, &mut out);
            self.send(out, now, net);
        }
    }

    /// A datagram for this laptop's UDP port or one of its streams.
    pub fn receive(
        &mut self,
        from: SocketAddr,
        dst: SocketAddr,
        bytes: &[u8],
        now: Instant,
        net: &mut Net,
    ) {
        if self.suspended {
            return;
        }
        let on_stream = self.stream.is_some_and(|s| s.laptop_end == dst);
        let on_udp = dst.ip() == net::laptop_ip(self.idx) && dst.port() == self.udp_port;
        let Some(wg) = self.wg.as_mut().filter(|_| on_stream || on_udp) else {
            return;
        };
        let mut out = NetBatch::new(1);
        let mut tun = TunBatch::new(0);
        wg.handle_udp(from, bytes, now, &mut out, &mut tun);
        for p in tun.packets() {
            if addr(p, 12) == POD {
                self.answers += 1;
            }
        }
        self.send(out, now, net);
    }

    /// Executes the session's actions until it has none.
    fn pump(&mut self, now: Instant, api: &mut Api, net: &mut Net, wall: SystemTime) {
        while let Some(a) = self.session.as_mut().and_then(Session::poll_action) {
            if let Some(ev) = self.execute(a, now, api, net, wall) {
                self.session.as_mut().expect("running").handle(ev, now);
            }
        }
    }

    fn execute(
        &mut self,
        a: Action,
        now: Instant,
        api: &mut Api,
        net: &mut Net,
        wall: SystemTime,
    ) -> Option<Event> {
        let wall_utc = DateTime::<Utc>::from(wall);
        let unreachable = || Some(Event::Failed(sut::api_unreachable()));
        match a {
            Action::Inspect => {
                if api.blocked {
                    return unreachable();
                }
                let info = api.info.clone();
                let ep = info.endpoints[0].ip().expect("an address endpoint");
                let endpoint = SocketAddr::new(ep, info.endpoints[0].port);
                self.info_seen = api.info_version;
                let facts = sut::facts(
                    wall_utc,
                    info,
                    endpoint,
                    net::laptop_ip(self.idx),
                    self.public_key(),
                    &self.cfg.name,
                );
                Some(Event::Inspected(Box::new(facts)))
            }
            Action::Progress(_) => None,
            Action::Save(s) => {
                self.journal = Some(*s);
                None
            }
            Action::Register { mut spec, ttl } => {
                if api.blocked {
                    return unreachable();
                }
                spec.lease_expires = wall_utc + ttl;
                match api.register(&spec, wall_utc) {
                    Ok(uid) => Some(Event::Registered(sut::Registration {
                        uid,
                        lease_expires: spec.lease_expires,
                    })),
                    Err(_) => Some(Event::Failed(sut::name_taken(
                        &spec.name.to_string(),
                        &spec.secret_name(),
                    ))),
                }
            }
            Action::WaitTunnelIp { secret, .. } => {
                self.pending = Some(Pending::TunnelIp(secret));
                None
            }
            Action::CreateDevice { .. } => {
                self.wg = Some(WgCore::new(Some(self.key.clone())));
                Some(Event::DeviceCreated { ifindex: 7 })
            }
            Action::ConfigureNetwork {
                address,
                gateway,
                routes,
                ..
            } => {
                self.address = Some(v4(address));
                self.routes = routes.into_iter().collect();
                let wg = self.wg.as_mut().expect("created");
                let mut first = gateway.clone();
                first.endpoint = sut::first_endpoint(Mode::Auto, gateway.endpoint);
                wg.upsert_peer(sut::peer_config(&first));
                self.ladder = Some(Ladder::new(Mode::Auto, Timings::default(), now));
                self.gateway = Some(sut::peer_config(&gateway));
                self.seen_handshake = 0;
                Some(Event::NetworkConfigured)
            }
            Action::InstallFirewall { .. } => Some(Event::FirewallInstalled),
            Action::StartForwarder { listen, .. } => Some(Event::ForwarderStarted(listen)),
            Action::WriteResolvConf { .. } => Some(Event::ResolvConfWritten),
            Action::ConfigureResolved(_) => Some(Event::ResolvedConfigured),
            Action::RevertResolved { .. } => Some(Event::ResolvedReverted),
            Action::StartUserspace(_) => Some(Event::Failed(sut::api_unreachable())),
            Action::AwaitHandshake { poke, .. } => {
                self.pending = Some(Pending::Handshake(poke));
                None
            }
            Action::Rehandshake { gateway, since } => {
                let wg = self.wg.as_mut()?;
                let key = gateway.public_key;
                let ep = wg
                    .peer_config(&key)
                    .and_then(|c| c.endpoint)
                    .or(gateway.endpoint)?;
                let mut out = NetBatch::new(1);
                wg.initiate_replaying(&key, ep, since, now, &mut out);
                self.quiet.sending(&out, now);
                send(self.idx, self.udp_port, out, net);
                None
            }
            Action::Rebind { .. } => {
                if let Some(l) = self.ladder.as_mut() {
                    l.stall(now);
                }
                None
            }
            Action::ProbeDns { .. } => Some(Event::DnsAnswered),
            Action::Ready => {
                self.ready = true;
                None
            }
            Action::ReadStats => {
                let wg = self.wg.as_mut()?;
                let first = wg.peers(now, wall).into_iter().next();
                if let Some(p) = &first {
                    wg.set_replay(&p.public_key, true);
                }
                let held = first.as_ref().and_then(|p| wg.held_packets(&p.public_key));
                Some(Event::Stats {
                    tx_bytes: first.as_ref().map_or(0, |p| p.tx_bytes),
                    rx_bytes: first.as_ref().map_or(0, |p| p.rx_bytes),
                    held_packets: held.unwrap_or(0),
                })
            }
            Action::RenewLease {
                secret, uid, ttl, ..
            } => {
                if api.blocked {
                    return Some(Event::LeaseFailed(sut::LeaseFailure::Other(
                        sut::api_unreachable(),
                    )));
                }
                let expires = wall_utc + ttl;
                Some(match api.renew(&secret, uid.as_deref(), expires) {
                    Ok(()) => Event::LeaseRenewed(expires),
                    Err(f) => Event::LeaseFailed(f),
                })
            }
            Action::UpdateGateway { peer, .. } => {
                self.follow(sut::peer_config(&peer));
                None
            }
            Action::SetRoutes { add, remove, .. } => {
                for r in remove {
                    self.routes.remove(&r);
                }
                self.routes.extend(add);
                None
            }
            Action::ChangeAddress { new, .. } => {
                self.address = Some(v4(new));
                None
            }
            // Only the IPv6 tunnel address moves this way (ipv6.json appearing or withdrawn
            // while joined); the model's gateway publishes no ipv6.json.
            Action::AddAddress { address, .. } | Action::RemoveAddress { address, .. } => {
                panic!(
                    "laptop {}: no ipv6.json was published, yet {address} changes",
                    self.idx
                )
            }
            Action::Cancel => {
                self.pending = None;
                None
            }
            Action::Undo(u) => Some(self.undo(u, api, net)),
            Action::RemoveState => {
                self.journal = None;
                None
            }
            Action::Exit => {
                let s = self.session.as_mut().expect("running");
                self.outcome = Some(match s.outcome() {
                    Ok(_) => Outcome::Left,
                    Err(e) => Outcome::Failed(e.to_string()),
                });
                self.pending = None;
                None
            }
        }
    }

    fn undo(&mut self, u: Undo, api: &mut Api, net: &mut Net) -> Event {
        match u {
            Undo::DeletePeer {
                secret,
                uid,
                public_key,
                ..
            } => {
                if api.blocked {
                    return Event::UndoFailed(sut::api_unreachable());
                }
                let who = self.cfg.name.clone() + "#" + &self.idx.to_string();
                api.delete_own(&secret, uid.as_deref(), public_key.as_deref(), &who);
                Event::Undone(Some(format!("peer Secret {secret}")))
            }
            Undo::DeleteInterface { .. } => {
                if let Some(s) = self.stream.take() {
                    net.close_stream(s.laptop_end);
                }
                self.wg = None;
                self.ladder = None;
                self.gateway = None;
                self.address = None;
                // The interface's routes go with it.
                self.routes.clear();
                Event::Undone(Some("interface".into()))
            }
            _ => Event::Undone(None),
        }
    }

    /// The long actions' answers and what the transport watches on the device.
    fn observe(&mut self, now: Instant, api: &mut Api, net: &mut Net, wall: SystemTime) {
        let session = self.session.as_mut().expect("running");
        match self.pending.clone() {
            Some(Pending::TunnelIp(secret)) if !api.blocked => match api.decided(&secret) {
                Some(Ok(ip)) => {
                    self.pending = None;
                    session.handle(Event::TunnelIp(ip), now);
                }
                Some(Err(reason)) => {
                    self.pending = None;
                    let e = sut::api_unreachable();
                    tracing_reason(&reason);
                    session.handle(Event::Failed(e), now);
                }
                None => {}
            },
            _ => {}
        }
        // Later gateway info reaches a serving session (the driver's watch).
        if !api.blocked && session.phase() == Phase::Serving && api.info_version != self.info_seen {
            self.info_seen = api.info_version;
            session.handle(Event::GatewayInfo(Box::new(api.info.clone())), now);
        }
        let Some(gw) = self.gateway.as_ref().map(|g| g.public_key) else {
            return;
        };
        let Some(wg) = self.wg.as_mut() else {
            return;
        };
        let hs = wg.peer_stats(&gw, now, wall).and_then(|p| p.last_handshake);
        // A new handshake by its serial, as the transport's `observe` tells it.
        let serial = wg.handshake_serial(&gw).unwrap_or(0);
        if serial != 0 && serial != self.seen_handshake {
            self.seen_handshake = serial;
            if let Some(l) = self.ladder.as_mut() {
                l.handshake(now);
            }
        }
        if let Some(Pending::Handshake(poke)) = self.pending {
            if hs.is_some() {
                self.pending = None;
                self.session
                    .as_mut()
                    .expect("running")
                    .handle(Event::Handshake, now);
            } else if let Some(src) = self.address {
                let p = sut::ipv4(src.octets(), octets(poke.ip()), b"poke");
                let mut out = NetBatch::new(1);
                wg.handle_tun(&p, now, &mut out);
                self.quiet.sending(&out, now);
                send(self.idx, self.udp_port, out, net);
            }
        }
        if let Some((from, at)) = wg.heard_other(&gw)
            && now.saturating_duration_since(at) < Duration::from_secs(5)
        {
            let rung = match self.stream {
                Some(s) if s.laptop_end == from => s.rung,
                _ => Rung::Udp,
            };
            if let Some(l) = self.ladder.as_mut() {
                l.heard(rung, now);
            }
        }
        if let Some(s) = self.stream
            && !net.stream_open(s.laptop_end)
        {
            self.stream = None;
            if let Some(l) = self.ladder.as_mut() {
                l.stream_closed("closed by the gateway or the network", now);
            }
        }
    }

    /// Executes the ladder's steps (connects resolve at once: blocked or not).
    fn steps(&mut self, now: Instant, api: &Api, net: &mut Net) {
        while let Some(step) = self.ladder.as_mut().and_then(Ladder::poll) {
            match step {
                Step::Connect(rung) => {
                    let blocked = match rung {
                        Rung::Tcp => net.tcp_blocked,
                        Rung::ApiServer => api.blocked,
                        Rung::Udp => true,
                    };
                    let ladder = self.ladder.as_mut().expect("polled");
                    if blocked {
                        ladder.connect_failed(rung, &format!("{rung} blocked by the model"), now);
                    } else {
                        let s = net.open_stream(self.idx, rung);
                        if let Some(old) = self.stream.replace(s) {
                            net.close_stream(old.laptop_end);
                        }
                        ladder.connected(rung, now);
                    }
                }
                Step::Use { rung, restart } => {
                    let ep = match rung {
                        Rung::Udp => self.udp_endpoint(),
                        _ => self.stream.map(|s| s.laptop_end),
                    };
                    if let Some(ep) = ep {
                        self.pin(ep, restart);
                    }
                }
                Step::Rebind => {
                    self.udp_port += 1;
                    let (Some(gw), Some(wg)) = (self.gateway.clone(), self.wg.as_mut()) else {
                        continue;
                    };
                    let mut out = NetBatch::new(1);
                    let sent = gw
                        .endpoint
                        .is_some_and(|ep| wg.initiate_to(&gw.public_key, ep, now, &mut out));
                    if !sent {
                        wg.remove_peer(&gw.public_key);
                        wg.upsert_peer(gw);
                    }
                    self.quiet.sending(&out, now);
                    send(self.idx, self.udp_port, out, net);
                    if let Some(ep) = self.udp_endpoint() {
                        self.pin(ep, false);
                    }
                }
                Step::Probe(_) => {
                    let (Some(gw), Some(ep)) = (self.gateway.clone(), self.udp_endpoint()) else {
                        continue;
                    };
                    if let Some(wg) = self.wg.as_mut() {
                        let mut out = NetBatch::new(1);
                        wg.initiate_to(&gw.public_key, ep, now, &mut out);
                        self.quiet.sending(&out, now);
                        send(self.idx, self.udp_port, out, net);
                    }
                }
                Step::Close => {
                    if let Some(s) = self.stream.take() {
                        net.close_stream(s.laptop_end);
                    }
                }
            }
        }
    }

    fn udp_endpoint(&self) -> Option<SocketAddr> {
        self.gateway.as_ref().and_then(|g| g.endpoint)
    }

    /// Pins the gateway peer to `ep`; `restart` drops its session so the next packet starts a
    /// new handshake there.
    fn pin(&mut self, ep: SocketAddr, restart: bool) {
        let (Some(gw), Some(wg)) = (self.gateway.clone(), self.wg.as_mut()) else {
            return;
        };
        if restart {
            wg.remove_peer(&gw.public_key);
            let mut p = gw.clone();
            p.endpoint = Some(ep);
            wg.upsert_peer(p);
        }
        if let Some(mut cfg) = wg.peer_config(&gw.public_key).cloned() {
            cfg.endpoint = Some(ep);
            wg.upsert_peer(cfg);
        }
        wg.pin_endpoint(&gw.public_key, true);
    }

    /// The gateway info changed: the new peer, on the current path.
    fn follow(&mut self, peer: PeerConfig) {
        let old = self.gateway.as_ref().map(|g| g.public_key);
        let udp = peer.endpoint.or(self.udp_endpoint());
        let mut gw = peer.clone();
        gw.endpoint = udp;
        self.gateway = Some(gw);
        let pinned = match self.ladder.as_ref().map(Ladder::pinned) {
            Some(Rung::Udp) => udp,
            _ => self.stream.map(|s| s.laptop_end),
        };
        let Some(wg) = self.wg.as_mut() else {
            return;
        };
        if let Some(old) = old.filter(|o| *o != peer.public_key) {
            wg.remove_peer(&old);
        }
        let mut p = peer;
        p.endpoint = pinned;
        let key = p.public_key;
        wg.upsert_peer(p);
        if pinned.is_some() {
            wg.pin_endpoint(&key, true);
        }
    }

    /// Where the ladder has the gateway's traffic now.
    pub fn path(&self) -> Option<Rung> {
        self.ladder.as_ref().and_then(Ladder::path)
    }
}

fn send(idx: usize, port: u16, out: NetBatch, net: &mut Net) {
    for (dst, d) in out.datagrams() {
        net.from_laptop(idx, port, dst, d.to_vec());
    }
}

fn v4(net: IpNet) -> Ipv4Addr {
    match net.addr() {
        IpAddr::V4(a) => a,
        IpAddr::V6(_) => panic!("the tunnel address is IPv4"),
    }
}

fn octets(ip: IpAddr) -> [u8; 4] {
    match ip {
        IpAddr::V4(a) => a.octets(),
        IpAddr::V6(_) => [0; 4],
    }
}

/// The gateway refused the Secret (the model has no such case yet: it shows up in the log).
fn tracing_reason(reason: &str) {
    eprintln!("gateway refused the peer Secret: {reason}");
}
