//! The session core on a fake clock: a scripted run, the happy path, rebinding without a
//! handshake, and the refusals before anything changes. Bring-up stopped at every step is in
//! `stops`; serving (lease renewal, the gateway info changing) in `serving`.

use std::time::{Duration, Instant};

use kwg_contract::GatewayInfo;
use kwg_contract::keys::PrivateKey;

use super::*;
use crate::DnsMode;
use crate::error::StepKind;
use crate::journal::Undo;

mod dns;
mod identity;
mod ipv6;
mod serving;
mod stops;
mod userspace;

const INFO: &str = r#"{"version":1,"publicKey":"KEY","endpoints":["192.0.2.1:31820"],
"tunnelCidr":"100.77.0.0/16","gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],
"podCidrs":["10.244.0.0/16"],"dnsIp":"10.96.0.10","clusterDomain":"cluster.local","adminPort":8080}"#;

fn info(key: &PrivateKey) -> GatewayInfo {
    GatewayInfo::from_json(
        INFO.replace("KEY", &key.public_key().to_string())
            .as_bytes(),
    )
    .unwrap()
}

/// `kwg join --name laptop --ttl 90s --timeout 30s` (the other flags at their defaults), then
/// `change`.
fn config(change: impl FnOnce(&mut SessionConfig)) -> SessionConfig {
    let mut c = SessionConfig {
        name: Some("laptop".into()),
        namespace: None,
        mapped_namespaces: None,
        kwg_namespace: "kwg-system".into(),
        interface: "kwg0".into(),
        userspace: false,
        proxy_listen: "127.0.0.1:1080".parse().unwrap(),
        timeout: Duration::from_secs(30),
        ttl: Duration::from_secs(90),
        also_proxy: vec![],
        never_proxy: vec![],
        allow_conflicting_subnets: vec![],
        map: vec![],
        map_pool: vec![],
        cluster_domain: None,
        exclude_suffixes: vec![],
        include_suffixes: vec![],
        dns_mode: DnsMode::Auto,
        dns_listen: "127.77.0.53:53".parse().unwrap(),
        dns_timeout: Duration::from_secs(4),
        resolv_conf: "/etc/resolv.conf".into(),
        naming: Default::default(),
        ipv4_only: None,
    };
    change(&mut c);
    c
}

/// The join's defaults.
fn defaults(_: &mut SessionConfig) {}

/// A step of the driver that failed, as the driver reports it.
fn failed(kind: StepKind, why: &str) -> Error {
    Error::step(kind, why.into(), why)
}

fn facts(gateway: &PrivateKey) -> Facts {
    Facts {
        now_wall: "2026-01-01T00:00:00Z".parse().unwrap(),
        server: "https://192.0.2.1:6443".into(),
        user: "developer".into(),
        context: Some("dev".into()),
        default_namespace: "emojivoto".into(),
        info: info(gateway),
        endpoint: "192.0.2.1:31820".parse().unwrap(),
        namespaces: Some(["emojivoto".to_string(), "default".to_string()].into()),
        machine_routes: vec![],
        machine_addresses: vec!["192.0.2.10".parse().unwrap()],
        api_server: vec!["192.0.2.1".parse().unwrap()],
        interface_exists: false,
        public_key: PrivateKey::generate().public_key(),
        hostname: "laptop".into(),
        machine_tag: String::new(),
        resolv_conf: Some(b"nameserver 192.0.2.53\n".to_vec()),
        uplink: None,
        resolved: plan::Resolved::NotManaged("no stub".into()),
        ipv6_usable: true,
    }
}

/// A session driven by a script: each action answered with its success event unless told
/// otherwise; every action's name recorded.
struct Run {
    s: Session,
    now: Instant,
    log: Vec<String>,
    gateway: PrivateKey,
    /// The last saved journal.
    saved: Option<State>,
}

fn name(a: &Action) -> String {
    match a {
        Action::Undo(u) => format!("undo {}", undo_name(u)),
        a => {
            let dbg = format!("{a:?}");
            let head = dbg
                .split(|c: char| !c.is_alphanumeric())
                .next()
                .unwrap_or("");
            head.to_string()
        }
    }
}

fn undo_name(u: &Undo) -> &'static str {
    match u {
        Undo::DeletePeer { .. } => "DeletePeer",
        Undo::DeleteInterface {
            ifindex: Some(_), ..
        } => "DeleteInterface(created)",
        Undo::DeleteInterface { ifindex: None, .. } => "DeleteInterface(not created)",
        Undo::StopForwarder => "StopForwarder",
        Undo::StopProxy { .. } => "StopProxy",
        Undo::RestoreResolvConf { .. } => "RestoreResolvConf",
        Undo::RevertLink { .. } => "RevertLink",
        Undo::RemoveFirewall { .. } => "RemoveFirewall",
    }
}

impl Run {
    fn new(change: impl FnOnce(&mut SessionConfig)) -> Run {
        let now = Instant::now();
        let config = config(change);
        let joined = "2026-01-01T00:00:00Z".parse().unwrap();
        let template = State::template(&config, None, None, Some(4242), joined);
        Run {
            s: Session::new(config, template, "/state/resolv.conf.orig".into(), now),
            now,
            log: Vec::new(),
            gateway: PrivateKey::generate(),
            saved: None,
        }
    }

    /// The success event of `a`, if it has one.
    fn success(&self, a: &Action) -> Option<Event> {
        Some(match a {
            Action::Inspect => Event::Inspected(Box::new(facts(&self.gateway))),
            Action::Register { .. } => Event::Registered(Default::default()),
            Action::WaitTunnelIp { .. } => Event::TunnelIp("100.77.0.2".parse().unwrap()),
            Action::CreateDevice { .. } => Event::DeviceCreated { ifindex: 7 },
            Action::ConfigureNetwork { .. } => Event::NetworkConfigured,
            Action::InstallFirewall { .. } => Event::FirewallInstalled,
            Action::StartForwarder { .. } => {
                Event::ForwarderStarted("127.77.0.53:53".parse().unwrap())
            }
            Action::WriteResolvConf { .. } => Event::ResolvConfWritten,
            Action::ConfigureResolved(_) => Event::ResolvedConfigured,
            Action::RevertResolved { .. } => Event::ResolvedReverted,
            Action::AwaitHandshake { .. } => Event::Handshake,
            Action::ProbeDns { .. } => Event::DnsAnswered,
            Action::RenewLease { .. } => Event::LeaseRenewed(Default::default()),
            Action::ReadStats => Event::Stats {
                tx_bytes: 0,
                rx_bytes: 0,
                held_packets: 0,
            },
            Action::Undo(_) => Event::Undone(None),
            _ => return None,
        })
    }

    /// Executes queued actions; `answer` may replace an action's event (`Some(None)`: no
    /// answer, the action stays in flight). Stops when nothing is queued.
    fn pump(&mut self, mut answer: impl FnMut(&Action) -> Option<Option<Event>>) {
        while let Some(a) = self.s.poll_action() {
            // The serving phase reads the counters every 250 ms: not worth logging.
            if !matches!(a, Action::ReadStats) {
                self.log.push(name(&a));
            }
            if let Action::Save(s) = &a {
                self.saved = Some((**s).clone());
            }
            let ev = match answer(&a) {
                Some(ev) => ev,
                None => self.success(&a),
            };
            if let Some(ev) = ev {
                self.s.handle(ev, self.now);
            }
        }
    }

    fn advance(&mut self, d: Duration) {
        self.now += d;
        self.s.handle_timeout(self.now);
    }

    fn take_log(&mut self) -> Vec<String> {
        std::mem::take(&mut self.log)
    }
}

const HAPPY: &[&str] = &[
    "Inspect",
    "Progress",
    "Save",
    "Register",
    "Progress",
    "Save",
    "WaitTunnelIp",
    "Save",
    "Save",
    "CreateDevice",
    "Save",
    "ConfigureNetwork",
    "Save",
    "InstallFirewall",
    "Progress",
    "Save",
    "StartForwarder",
    "Save",
    "Save",
    "WriteResolvConf",
    "AwaitHandshake",
    "ProbeDns",
    "Ready",
];

#[test]
fn happy_path_records_each_undo_before_its_step() {
    let mut r = Run::new(defaults);
    let mut journal_before = Vec::new();
    let mut last_saved: Vec<Undo> = Vec::new();
    while let Some(a) = r.s.poll_action() {
        r.log.push(name(&a));
        if let Action::Save(s) = &a {
            last_saved = s.undo.clone();
        }
        journal_before.push((
            name(&a),
            last_saved.iter().map(undo_name).collect::<Vec<_>>(),
        ));
        if let Some(ev) = r.success(&a) {
            r.s.handle(ev, r.now);
        }
    }
    assert_eq!(r.log, HAPPY);
    assert_eq!(r.s.phase(), Phase::Serving);
    let at = |step: &str| {
        journal_before
            .iter()
            .find(|(n, _)| n == step)
            .unwrap()
            .1
            .clone()
    };
    assert_eq!(at("Register"), ["DeletePeer"]);
    assert_eq!(
        at("CreateDevice"),
        ["DeletePeer", "DeleteInterface(not created)"]
    );
    assert_eq!(
        at("ConfigureNetwork"),
        ["DeletePeer", "DeleteInterface(created)"]
    );
    assert_eq!(
        at("StartForwarder"),
        [
            "DeletePeer",
            "DeleteInterface(created)",
            "RemoveFirewall",
            "StopForwarder"
        ]
    );
    assert_eq!(
        at("WriteResolvConf"),
        [
            "DeletePeer",
            "DeleteInterface(created)",
            "RemoveFirewall",
            "StopForwarder",
            "RestoreResolvConf"
        ]
    );
    let state = r.s.state().unwrap();
    assert_eq!(state.tunnel_ip, Some("100.77.0.2".parse().unwrap()));
    assert_eq!(state.peer.as_str(), "laptop");
    assert_eq!(
        state.dns.as_ref().unwrap().forwarder,
        "127.77.0.53:53".parse().unwrap()
    );
}

fn undo_tail(log: &[String]) -> Vec<String> {
    log.iter()
        .filter(|n| n.starts_with("undo "))
        .cloned()
        .collect()
}

#[test]
fn without_a_handshake_the_udp_port_is_rebound_after_1s_then_every_2s() {
    let mut r = Run::new(defaults);
    r.pump(|a| (name(a) == "AwaitHandshake").then_some(None));
    r.take_log();
    let start = r.now;
    assert_eq!(r.s.poll_timeout(), Some(start + REBIND_FIRST));
    let mut rebinds = Vec::new();
    for _ in 0..60 {
        r.advance(Duration::from_millis(100));
        r.pump(|_| None);
        if r.take_log().contains(&"Rebind".to_string()) {
            rebinds.push(r.now - start);
        }
    }
    let ms: Vec<u128> = rebinds.iter().map(|d| d.as_millis()).collect();
    assert_eq!(ms, [1000, 3000, 5000]);
    r.s.handle(Event::Handshake, r.now);
    r.pump(|_| None);
    assert_eq!(r.s.phase(), Phase::Serving);
}

#[test]
fn an_existing_interface_is_refused_before_anything_changes() {
    let mut r = Run::new(|c| c.interface = "wg0".into());
    let gw = PrivateKey::generate();
    r.pump(|a| {
        matches!(a, Action::Inspect).then(|| {
            let mut f = facts(&gw);
            f.interface_exists = true;
            Some(Event::Inspected(Box::new(f)))
        })
    });
    assert_eq!(r.take_log(), ["Inspect", "Exit"]);
    let err = r.s.outcome().unwrap_err().to_string();
    assert!(err.contains("interface wg0 already exists"), "{err}");
}

#[test]
fn a_namespace_that_does_not_exist_is_refused_before_anything_changes() {
    type Flags = fn(&mut SessionConfig);
    for (flags, sentence) in [
        (
            (|c| c.namespace = Some("doesnotexist".into())) as Flags,
            "namespaces \"doesnotexist\" not found: kubectl get namespaces lists them; pass an existing one with --namespace",
        ),
        (
            |c| c.mapped_namespaces = Some(vec!["default".into(), "typo".into()]),
            "namespaces \"typo\" not found",
        ),
    ] {
        let mut r = Run::new(flags);
        r.pump(|_| None);
        assert_eq!(r.take_log(), ["Inspect", "Exit"]);
        let err = r.s.outcome().unwrap_err().to_string();
        assert!(err.contains(sentence), "{err}");
    }
    // A user who may not list namespaces is told it could not be checked, and joins.
    let mut r = Run::new(|c| c.namespace = Some("unlisted".into()));
    let gw = PrivateKey::generate();
    r.pump(|a| {
        matches!(a, Action::Inspect).then(|| {
            let mut f = facts(&gw);
            f.namespaces = None;
            Some(Event::Inspected(Box::new(f)))
        })
    });
    assert_eq!(r.s.phase(), Phase::Serving);
    // The "could not check" line comes before the usual "Connected to" line.
    assert_eq!(&r.log[..4], ["Inspect", "Progress", "Progress", "Save"]);
}
