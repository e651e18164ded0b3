use super::*;
use hickory_proto::op::Query;
use hickory_proto::rr::rdata::{A, AAAA, PTR, SRV};
use hickory_proto::rr::{RData, Record, RecordType};
use std::collections::BTreeSet;

/// A tiny authoritative DNS server on loopback answering from a fixed table, NXDOMAIN otherwise.
async fn fake_dns(records: Vec<(&'static str, RData)>) -> SocketAddr {
    let sock = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let addr = sock.local_addr().unwrap();
    let tcp = TcpListener::bind(addr).await.unwrap();
    let table = Arc::new(records);
    let reply_to = |table: Arc<Vec<(&'static str, RData)>>, query: &[u8]| {
        let q = Message::from_vec(query).unwrap();
        let mut r = Message::response(q.metadata.id, q.metadata.op_code);
        r.queries = q.queries.clone();
        let name = q.queries[0].name.to_ascii().to_ascii_lowercase();
        for (n, data) in table.iter() {
            if format!("{n}.") == name && data.record_type() == q.queries[0].query_type {
                r.answers.push(Record::from_rdata(
                    q.queries[0].name.clone(),
                    5,
                    data.clone(),
                ));
            }
        }
        if !table.iter().any(|(n, _)| format!("{n}.") == name) {
            r.metadata.response_code = ResponseCode::NXDomain;
        }
        r.to_vec().unwrap()
    };
    let t = table.clone();
    tokio::spawn(async move {
        let mut buf = vec![0u8; 4096];
        loop {
            let (n, from) = sock.recv_from(&mut buf).await.unwrap();
            sock.send_to(&reply_to(t.clone(), &buf[..n]), from)
                .await
                .unwrap();
        }
    });
    tokio::spawn(async move {
        loop {
            let (mut s, _) = tcp.accept().await.unwrap();
            let q = read_frame(&mut s).await.unwrap();
            write_frame(&mut s, &reply_to(table.clone(), &q))
                .await
                .unwrap();
        }
    });
    addr
}

fn split() -> SplitDns {
    SplitDns {
        cluster_domain: "cluster.local".into(),
        namespace: "emojivoto".into(),
        cluster_namespaces: ["emojivoto", "other", "example", "dev"]
            .map(String::from)
            .into(),
        mapped: None,
        include_suffixes: vec![],
        exclude_suffixes: kwg_session::dns::split::DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        reverse_subnets: vec!["10.96.0.0/12".parse().unwrap()],
        machine_search: vec!["corp.example".into()],
        reachable: None,
        naming: Default::default(),
    }
}

async fn setup() -> Forwarder {
    let name = |s: &str| Name::from_ascii(s).unwrap();
    let cluster = fake_dns(vec![
        (
            "web-app.emojivoto.svc.cluster.local",
            RData::A(A("10.96.0.20".parse().unwrap())),
        ),
        (
            "web-app.emojivoto.svc.cluster.local",
            RData::AAAA(AAAA("fd00::20".parse().unwrap())),
        ),
        (
            "echo.other.svc.cluster.local",
            RData::A(A("10.96.0.30".parse().unwrap())),
        ),
        (
            "_http._tcp.web-app.emojivoto.svc.cluster.local",
            RData::SRV(SRV::new(
                0,
                100,
                80,
                name("web-app.emojivoto.svc.cluster.local."),
            )),
        ),
        // Services named like LAN names, in namespaces named like LAN domains.
        (
            "corp.example.svc.cluster.local",
            RData::A(A("10.96.0.66".parse().unwrap())),
        ),
        (
            "nas.emojivoto.svc.cluster.local",
            RData::A(A("10.96.0.67".parse().unwrap())),
        ),
        (
            "20.0.96.10.in-addr.arpa",
            RData::PTR(PTR(name("web-app.emojivoto.svc.cluster.local."))),
        ),
    ])
    .await;
    let lan = fake_dns(vec![
        (
            "intranet.corp.example",
            RData::A(A("192.0.2.80".parse().unwrap())),
        ),
        ("corp.example", RData::A(A("192.0.2.81".parse().unwrap()))),
        ("go.dev", RData::A(A("192.0.2.82".parse().unwrap()))),
        // A home router answers its hosts by single label.
        ("nas", RData::A(A("192.0.2.83".parse().unwrap()))),
    ])
    .await;
    let dead: SocketAddr = {
        // A bound socket that never answers: the forwarder must move on to the next upstream.
        let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
        let a = s.local_addr().unwrap();
        std::mem::forget(s);
        a
    };
    Forwarder::start(
        "127.0.0.1:0".parse().unwrap(),
        ForwarderConfig {
            split: split(),
            cluster,
            upstreams: vec![dead, lan],
            timeout: Duration::from_secs(2),
            mappings: vec![],
        },
    )
    .await
    .unwrap()
}

async fn ask(fwd: SocketAddr, name: &str, qtype: RecordType, tcp: bool) -> Message {
    let mut m = Message::query();
    m.metadata.id = 4242;
    m.metadata.recursion_desired = true;
    m.add_query(Query::query(Name::from_ascii(name).unwrap(), qtype));
    let raw = m.to_vec().unwrap();
    let reply = if tcp {
        relay_tcp(&raw, fwd).await.unwrap()
    } else {
        relay_udp(&raw, fwd).await.unwrap()
    };
    Message::from_vec(&reply).unwrap()
}

fn answers(m: &Message) -> Vec<String> {
    m.answers
        .iter()
        .map(|r| format!("{} {}", r.name, r.data))
        .collect()
}

#[tokio::test]
async fn cluster_names_are_rewritten_and_answered_under_the_asked_name() {
    let f = setup().await;
    let r = ask(f.addr, "web-app.", RecordType::A, false).await;
    assert_eq!(answers(&r), ["web-app. 10.96.0.20"]);
    assert_eq!(r.queries[0].name.to_ascii(), "web-app.");
    let r = ask(f.addr, "web-app.emojivoto.", RecordType::AAAA, false).await;
    assert_eq!(answers(&r), ["web-app.emojivoto. fd00::20"]);
    let r = ask(f.addr, "echo.other.", RecordType::A, true).await;
    assert_eq!(answers(&r), ["echo.other. 10.96.0.30"]);
    let r = ask(
        f.addr,
        "web-app.emojivoto.svc.cluster.local.",
        RecordType::A,
        true,
    )
    .await;
    assert_eq!(
        answers(&r),
        ["web-app.emojivoto.svc.cluster.local. 10.96.0.20"]
    );
    let r = ask(
        f.addr,
        "_http._tcp.web-app.emojivoto.svc.cluster.local.",
        RecordType::SRV,
        false,
    )
    .await;
    assert_eq!(r.answers.len(), 1);
    assert_eq!(r.answers[0].record_type(), RecordType::SRV);
    let r = ask(f.addr, "20.0.96.10.in-addr.arpa.", RecordType::PTR, false).await;
    assert_eq!(
        answers(&r),
        ["20.0.96.10.in-addr.arpa. web-app.emojivoto.svc.cluster.local."]
    );
    let r = ask(f.addr, "nosuch.", RecordType::A, false).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    f.stop();
}

#[tokio::test]
async fn other_names_go_to_the_original_resolvers() {
    let f = setup().await;
    let r = ask(f.addr, "intranet.corp.example.", RecordType::A, false).await;
    assert_eq!(answers(&r), ["intranet.corp.example. 192.0.2.80"]);
    assert_eq!(r.metadata.id, 4242);
    let r = ask(f.addr, "intranet.corp.example.", RecordType::A, true).await;
    assert_eq!(answers(&r), ["intranet.corp.example. 192.0.2.80"]);
    // The cluster's table has no .com names: excluded suffixes never reach it.
    let r = ask(f.addr, "web-app.com.", RecordType::A, false).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
}

#[tokio::test]
async fn the_lan_keeps_its_names_when_the_cluster_has_the_same() {
    let f = setup().await;
    // Issue 12: namespace `example`, Service `corp`, while `corp.example` is the LAN's
    // search domain: the LAN answers.
    let r = ask(f.addr, "corp.example.", RecordType::A, false).await;
    assert_eq!(answers(&r), ["corp.example. 192.0.2.81"]);
    // A namespace `dev`: the cluster's NXDOMAIN for go.dev falls back to the LAN.
    let r = ask(f.addr, "go.dev.", RecordType::A, true).await;
    assert_eq!(answers(&r), ["go.dev. 192.0.2.82"]);
    // A single label the LAN answers stays the LAN's; one it does not know is the
    // connected namespace's.
    let r = ask(f.addr, "nas.", RecordType::A, false).await;
    assert_eq!(answers(&r), ["nas. 192.0.2.83"]);
    let r = ask(f.addr, "web-app.", RecordType::A, false).await;
    assert_eq!(answers(&r), ["web-app. 10.96.0.20"]);
    // Known to neither: NXDOMAIN.
    let r = ask(f.addr, "nosuch.dev.", RecordType::A, false).await;
    assert_eq!(r.metadata.response_code, ResponseCode::NXDomain);
    f.stop();
}

#[tokio::test]
async fn hidden_namespaces_and_timeouts() {
    let mut s = split();
    s.mapped = Some(BTreeSet::from(["emojivoto".to_string()]));
    let f = Forwarder::start(
        "127.0.0.1:0".parse().unwrap(),
        ForwarderConfig {
            split: s,
            cluster: "127.0.0.1:9".parse().unwrap(),
            upstreams: vec![],
            timeout: Duration::from_millis(300),
            mappings: vec![],
        },
    )
    .await
    .unwrap();
    for name in ["echo.other.svc.", "echo.other."] {
        let r = ask(f.addr, name, RecordType::A, false).await;
        assert_eq!(r.metadata.response_code, ResponseCode::NXDomain, "{name}");
    }
    let start = std::time::Instant::now();
    let r = ask(f.addr, "intranet.corp.example.", RecordType::A, false).await;
    assert_eq!(r.metadata.response_code, ResponseCode::ServFail);
    assert!(start.elapsed() < Duration::from_secs(2));
}

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd")
        .map(|d| d.count())
        .unwrap_or(0)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_flood_of_queries_to_a_silent_upstream_neither_exhausts_sockets_nor_stalls_the_forwarder()
{
    // The cluster DNS never answers (a blackhole that reads and drops): every lookup waits
    // for its timeout while holding a socket.
    let blackhole = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let silent = blackhole.local_addr().unwrap();
    tokio::spawn(async move {
        let mut buf = [0u8; 512];
        while blackhole.recv_from(&mut buf).await.is_ok() {}
    });
    let upstream = fake_dns(vec![(
        "intranet.corp.example",
        RData::A(A("192.0.2.80".parse().unwrap())),
    )])
    .await;
    let f = Forwarder::start(
        "127.0.0.1:0".parse().unwrap(),
        ForwarderConfig {
            split: split(),
            cluster: silent,
            upstreams: vec![upstream],
            timeout: Duration::from_secs(3),
            mappings: vec![],
        },
    )
    .await
    .unwrap();
    let before = open_fds();
    let client = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..3000u16 {
        let mut m = Message::query();
        m.metadata.id = i;
        m.add_query(Query::query(
            Name::from_ascii("web-app.emojivoto.svc.cluster.local.").unwrap(),
            RecordType::A,
        ));
        client.send_to(&m.to_vec().unwrap(), f.addr).await.unwrap();
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    let during = open_fds();
    assert!(
        during < before + MAX_IN_FLIGHT + 32,
        "{before} fds before the flood, {during} during it"
    );
    // The forwarder is not stalled: a LAN name is still answered once the flood's lookups
    // time out and free their slots.
    let start = std::time::Instant::now();
    let r = loop {
        let r = tokio::time::timeout(Duration::from_secs(1), async {
            ask(f.addr, "intranet.corp.example.", RecordType::A, false).await
        })
        .await;
        if let Ok(r) = r
            && !r.answers.is_empty()
        {
            break r;
        }
        assert!(
            start.elapsed() < Duration::from_secs(10),
            "the forwarder stayed stalled"
        );
    };
    assert_eq!(r.metadata.response_code, ResponseCode::NoError);
}
