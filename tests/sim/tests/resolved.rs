//! kwg's systemd-resolved client against the real systemd-resolved (Debian's package, unpacked
//! and run in a laptop's namespace on a private bus): per-link DNS for a TUN link routes the
//! cluster's names to kwg's server, LAN names still go to the LAN resolver, and nothing of kwg
//! stays after a revert or after the link goes away.

mod common;

use std::net::{SocketAddr, UdpSocket};
use std::sync::{Arc, Mutex, mpsc};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType};
use hickory_proto::rr::{RData, Record, RecordType, rdata::A};
use kwg::dns::resolved::{self, Detection, LinkConfig};
use kwg_sim::testing::ResolvedNs;

/// The address every A query of the responder answers.
const ANSWER: [u8; 4] = [10, 96, 7, 7];

#[test]
fn resolved_sends_cluster_names_to_the_tunnel_link_and_forgets_them_on_revert_and_link_loss() {
    let c = common::cluster();
    let ns = c.add_laptop(&kwg_sim::testing::unique("rs")).unwrap();
    let r = c.start_resolved(&ns).unwrap();
    eprintln!(
        "systemd-resolved {} owned its bus name {} ms after spawn",
        r.package().version(),
        r.started_in().as_millis()
    );
    assert!(r.started_in() < Duration::from_secs(5));
    // Before kwg: LAN names resolve through the stub, cluster names do not.
    assert_lan_resolves(&r);
    assert!(getent(&r, "x.cluster.local").is_none());

    let tun = TunHolder::create(&ns, "kwg0");
    c.exec_ok(&ns, &["ip", "addr", "add", "100.64.0.2/32", "dev", "kwg0"])
        .unwrap();
    c.exec_ok(&ns, &["ip", "link", "set", "kwg0", "up"])
        .unwrap();
    let ifindex = ifindex(&c, &ns, "kwg0");
    let server: SocketAddr = "127.77.0.53:53".parse().unwrap();
    let responder = Responder::start(&ns, server);
    let named = Default::default();
    let domains =
        resolved::link_domains("cluster.local", "emojivoto", ["default"], &[], &named).unwrap();
    let mut domains = domains.domains;
    domains.extend(resolved::reverse_domains(&["10.96.0.0/12"
        .parse()
        .unwrap()]));
    let cfg = LinkConfig {
        ifindex,
        server,
        domains,
    };

    let rt = runtime();
    let client = rt.block_on(async {
        let stub = kwg_sim::names::Names::etc_netns(&ns).join("resolv.conf");
        match resolved::detect_with(&stub, Some(&r.bus_address())).await {
            Ok(Detection::Managed(client)) => client,
            other => panic!("resolved not detected behind the stub: {other:?}"),
        }
    });
    rt.block_on(client.configure(&cfg)).unwrap();

    let status = r.resolvectl(&["status", "kwg0"]).unwrap();
    assert!(status.contains("DNS Servers: 127.77.0.53"), "{status}");
    assert!(
        status
            .contains("DNS Domain: ~cluster.local emojivoto.svc.cluster.local ~default ~emojivoto"),
        "{status}"
    );
    assert!(status.contains("-DefaultRoute"), "{status}");
    assert!(status.contains("Current Scopes: DNS"), "{status}");
    // What glibc reads: resolved writes the search domain into the stub file.
    let resolv = r.exec_ok(&["cat", "/etc/resolv.conf"]).unwrap();
    assert!(resolv.contains("nameserver 127.0.0.53"), "{resolv}");
    assert!(
        resolv.contains("search emojivoto.svc.cluster.local"),
        "{resolv}"
    );

    // Names a user types: an FQDN, <svc>.<ns>, a single label (the search domain).
    for (typed, asked) in [
        ("x.cluster.local", "x.cluster.local"),
        ("web-app.emojivoto", "web-app.emojivoto"),
        ("web-app", "web-app.emojivoto.svc.cluster.local"),
    ] {
        assert_eq!(getent(&r, typed).as_deref(), Some("10.96.7.7"), "{typed}");
        assert!(
            responder.saw(asked),
            "{asked} not asked: {:?}",
            responder.names()
        );
    }
    // A reverse lookup of a Service address goes to kwg too (~96.10.in-addr.arpa).
    let _ = getent(&r, "10.96.7.7");
    assert!(
        responder.saw("7.7.96.10.in-addr.arpa"),
        "{:?}",
        responder.names()
    );
    assert_lan_resolves(&r);
    assert!(!responder.saw("intranet.corp.example"));

    rt.block_on(client.revert(ifindex)).unwrap();
    assert_nothing_of_kwg(&r, &responder);

    // A server off port 53 goes through SetLinkDNSEx; then the TUN closes (a crashed daemon):
    // resolved forgets the link by itself.
    let other: SocketAddr = "127.77.0.53:5300".parse().unwrap();
    let responder2 = Responder::start(&ns, other);
    let cfg2 = LinkConfig {
        server: other,
        ..cfg
    };
    rt.block_on(client.configure(&cfg2)).unwrap();
    let status = r.resolvectl(&["status", "kwg0"]).unwrap();
    assert!(status.contains("127.77.0.53:5300"), "{status}");
    assert_eq!(getent(&r, "y.cluster.local").as_deref(), Some("10.96.7.7"));
    assert!(responder2.saw("y.cluster.local"));
    drop(tun);
    common::eventually(5, "kwg0 to go away", || {
        let links = c.exec_ok(&ns, &["ip", "-o", "link"]).unwrap();
        (!links.contains("kwg0")).then_some(())
    });
    assert_nothing_of_kwg(&r, &responder2);
    // Reverting a link that is gone is not an error (leave after a crash).
    rt.block_on(client.revert(ifindex)).unwrap();
}

/// `resolvectl status` shows neither kwg's server nor its domains; cluster names fail and
/// reach no responder; LAN names still resolve.
fn assert_nothing_of_kwg(r: &ResolvedNs, responder: &Responder) {
    let all = r.resolvectl(&["status"]).unwrap();
    assert!(!all.contains("127.77.0.53"), "{all}");
    assert!(!all.contains("cluster.local"), "{all}");
    assert!(!all.contains("emojivoto"), "{all}");
    assert!(!all.contains("in-addr.arpa"), "{all}");
    let resolv = r.exec_ok(&["cat", "/etc/resolv.conf"]).unwrap();
    assert!(!resolv.contains("cluster.local"), "{resolv}");
    let before = responder.names().len();
    assert!(getent(r, "z.cluster.local").is_none());
    assert_eq!(responder.names().len(), before, "{:?}", responder.names());
    assert_lan_resolves(r);
}

fn assert_lan_resolves(r: &ResolvedNs) {
    assert_eq!(
        getent(r, "intranet.corp.example").as_deref(),
        Some("192.0.2.80")
    );
}

/// `getent hosts NAME` inside resolved's namespaces (glibc → resolv.conf → the stub): the
/// first address, or None when the name does not resolve.
fn getent(r: &ResolvedNs, name: &str) -> Option<String> {
    let out = r.exec(&["getent", "hosts", name]).unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    text.split_whitespace().next().map(str::to_string)
}

fn ifindex(c: &kwg_sim::testing::Cluster, ns: &str, link: &str) -> u32 {
    let line = c.exec_ok(ns, &["ip", "-o", "link", "show", link]).unwrap();
    line.split(':').next().unwrap().trim().parse().unwrap()
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
}

/// A TUN link held open by a thread, as kwg's daemon holds its interface (a TUN without a
/// process has no carrier, and resolved drops its DNS scope); dropping it deletes the link.
struct TunHolder {
    stop: Option<mpsc::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl TunHolder {
    fn create(ns: &str, name: &str) -> TunHolder {
        let (ns, name) = (ns.to_string(), name.to_string());
        let (ready_tx, ready_rx) = mpsc::channel();
        let (stop, stop_rx) = mpsc::channel::<()>();
        let thread = std::thread::spawn(move || {
            kwg_sim::netns::enter(&ns).unwrap();
            let rt = runtime();
            let _in_rt = rt.enter();
            match kwg_wg::io::tun::Tun::create(&name, 1280) {
                Ok(_tun) => {
                    ready_tx.send(Ok(())).unwrap();
                    let _ = stop_rx.recv(); // _tun closes (and the link goes) after this
                }
                Err(e) => ready_tx.send(Err(e)).unwrap(),
            }
        });
        ready_rx.recv().unwrap().expect("creating the TUN");
        TunHolder {
            stop: Some(stop),
            thread: Some(thread),
        }
    }
}

impl Drop for TunHolder {
    fn drop(&mut self) {
        drop(self.stop.take());
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A tiny DNS server standing in for kwg's forwarder: answers every A query with 10.96.7.7
/// (other types: no data) and records the names it was asked.
struct Responder {
    names: Arc<Mutex<Vec<String>>>,
    stop: Arc<std::sync::atomic::AtomicBool>,
}

impl Responder {
    fn start(ns: &str, addr: SocketAddr) -> Responder {
        let sock = kwg_sim::netns::run_in(ns, move || {
            UdpSocket::bind(addr).map_err(kwg_sim::Error::io(format!("binding {addr}")))
        })
        .unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(100)))
            .unwrap();
        let names = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (n, s) = (names.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut buf = [0u8; 1500];
            while !s.load(std::sync::atomic::Ordering::Relaxed) {
                let Ok((len, from)) = sock.recv_from(&mut buf) else {
                    continue;
                };
                if let Some(reply) = answer(&buf[..len], &n) {
                    let _ = sock.send_to(&reply, from);
                }
            }
        });
        Responder { names, stop }
    }

    fn names(&self) -> Vec<String> {
        self.names.lock().unwrap().clone()
    }

    fn saw(&self, name: &str) -> bool {
        self.names().iter().any(|n| n == name)
    }
}

impl Drop for Responder {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
    }
}

fn answer(query: &[u8], names: &Mutex<Vec<String>>) -> Option<Vec<u8>> {
    let q = Message::from_vec(query).ok()?;
    let question = q.queries.first()?.clone();
    let name = question.name().to_string();
    names
        .lock()
        .unwrap()
        .push(name.trim_end_matches('.').to_ascii_lowercase());
    let mut reply = Message::response(q.metadata.id, q.metadata.op_code);
    reply.metadata.message_type = MessageType::Response;
    reply.metadata.recursion_desired = q.metadata.recursion_desired;
    reply.metadata.recursion_available = true;
    reply.metadata.authoritative = true;
    reply.add_query(question.clone());
    if question.query_type() == RecordType::A {
        let a = RData::A(A::from(std::net::Ipv4Addr::from(ANSWER)));
        reply.add_answer(Record::from_rdata(question.name().clone(), 5, a));
    }
    reply.to_vec().ok()
}
