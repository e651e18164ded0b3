//! The pure core of the cluster DNS: watch events into the index, questions into replies.

use hickory_proto::{
    op::ResponseCode,
    rr::{Name, RecordType},
};
use k8s_openapi::api::{core::v1::Service, discovery::v1::EndpointSlice};
use kube::runtime::watcher::Event;
use serde_json::json;

use super::{answer::resolve, index::Index};
use crate::dns::{Reply, Resolution, ZoneApex};

fn service(ns: &str, name: &str, spec: serde_json::Value) -> Service {
    serde_json::from_value(json!({"metadata": {"namespace": ns, "name": name}, "spec": spec}))
        .unwrap()
}

fn cluster_ip(ns: &str, name: &str, ip: &str, ports: serde_json::Value) -> Service {
    service(
        ns,
        name,
        json!({"clusterIP": ip, "clusterIPs": [ip], "ports": ports}),
    )
}

/// A slice of `svc` with endpoints `(ip, hostname, ready)` and a named TCP port.
fn slice(ns: &str, name: &str, svc: &str, eps: &[(&str, Option<&str>, bool)]) -> EndpointSlice {
    let endpoints: Vec<_> = eps
        .iter()
        .map(|(ip, host, ready)| json!({"addresses": [ip], "hostname": host, "conditions": {"ready": ready}}))
        .collect();
    serde_json::from_value(json!({
        "metadata": {"namespace": ns, "name": name, "labels": {"kubernetes.io/service-name": svc}},
        "addressType": "IPv4",
        "endpoints": endpoints,
        "ports": [{"name": "peer", "protocol": "TCP", "port": 7000}],
    }))
    .unwrap()
}

/// The cluster of these tests, delivered as an initial list like a fresh watcher does.
fn cluster() -> Index {
    let mut index = Index::default();
    let _ = index.apply_service_event(Event::Init);
    for svc in [
        cluster_ip(
            "default",
            "kubernetes",
            "10.96.0.1",
            json!([{"name": "https", "port": 443}]),
        ),
        cluster_ip(
            "emojivoto",
            "web-app",
            "10.96.0.20",
            json!([{"name": "http", "port": 80, "protocol": "TCP"}, {"name": "dns", "port": 53, "protocol": "UDP"}]),
        ),
        service(
            "data",
            "db",
            json!({"clusterIP": "None", "ports": [{"name": "peer", "port": 7000}]}),
        ),
        service(
            "data",
            "ext",
            json!({"type": "ExternalName", "externalName": "intranet.corp.example"}),
        ),
    ] {
        let _ = index.apply_service_event(Event::InitApply(svc));
    }
    let _ = index.apply_service_event(Event::InitDone);
    let _ = index.apply_slice_event(Event::Init);
    let _ = index.apply_slice_event(Event::InitApply(slice(
        "data",
        "db-abc",
        "db",
        &[
            ("10.244.0.7", Some("db-0"), true),
            ("10.244.0.8", None, true),
            ("10.244.0.9", None, false),
        ],
    )));
    let _ = index.apply_slice_event(Event::InitDone);
    index
}

fn apex() -> ZoneApex {
    ZoneApex::new(Name::from_ascii("cluster.local.").unwrap(), 5)
}

fn ask(index: &Index, name: &str, qtype: RecordType) -> Resolution {
    resolve(index, &apex(), &Name::from_ascii(name).unwrap(), qtype)
}

fn reply(index: &Index, name: &str, qtype: RecordType) -> Reply {
    match ask(index, name, qtype) {
        Resolution::Answer(reply) => reply,
        other => panic!("{name} {qtype}: expected an authoritative answer, got {other:?}"),
    }
}

fn lines(records: &[hickory_proto::rr::Record]) -> Vec<String> {
    records.iter().map(ToString::to_string).collect()
}

fn assert_negative(reply: &Reply, rcode: ResponseCode) {
    assert_eq!(reply.rcode, rcode);
    assert!(reply.answers.is_empty(), "{:?}", reply.answers);
    assert_eq!(lines(&reply.authorities).len(), 1);
    assert_eq!(reply.authorities[0].record_type(), RecordType::SOA);
    assert_eq!(reply.authorities[0].name.to_string(), "cluster.local.");
}

#[test]
fn service_name_resolves_to_its_cluster_ip() {
    let r = reply(
        &cluster(),
        "Web-App.emojivoto.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(r.rcode, ResponseCode::NoError);
    assert_eq!(
        lines(&r.answers),
        ["web-app.emojivoto.svc.cluster.local. 5 IN A 10.96.0.20"]
    );
}

#[test]
fn aaaa_of_an_ipv4_service_is_nodata_with_soa() {
    let r = reply(
        &cluster(),
        "web-app.emojivoto.svc.cluster.local.",
        RecordType::AAAA,
    );
    assert_negative(&r, ResponseCode::NoError);
}

#[test]
fn missing_names_in_the_cluster_domain_are_nxdomain_with_soa() {
    let index = cluster();
    for name in [
        "nope.emojivoto.svc.cluster.local.",
        "web-app.nons.svc.cluster.local.",
        "nons.svc.cluster.local.",
        "www.google.com.default.svc.cluster.local.",
        "foo.cluster.local.",
        "_nope._tcp.web-app.emojivoto.svc.cluster.local.",
        "_http._udp.web-app.emojivoto.svc.cluster.local.",
        "db-9.db.data.svc.cluster.local.",
        "not-an-ip.default.pod.cluster.local.",
    ] {
        assert_negative(&reply(&index, name, RecordType::A), ResponseCode::NXDomain);
    }
}

#[test]
fn existing_namespace_and_zone_apex_are_nodata() {
    let index = cluster();
    assert_negative(
        &reply(&index, "emojivoto.svc.cluster.local.", RecordType::A),
        ResponseCode::NoError,
    );
    assert_negative(
        &reply(&index, "svc.cluster.local.", RecordType::A),
        ResponseCode::NoError,
    );
    let soa = reply(&index, "cluster.local.", RecordType::SOA);
    assert_eq!(soa.answers[0].record_type(), RecordType::SOA);
}

#[test]
fn headless_service_resolves_to_its_ready_pod_ips() {
    let r = reply(&cluster(), "db.data.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&r.answers),
        [
            "db.data.svc.cluster.local. 5 IN A 10.244.0.7",
            "db.data.svc.cluster.local. 5 IN A 10.244.0.8"
        ]
    );
    let pod = reply(&cluster(), "db-0.db.data.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&pod.answers),
        ["db-0.db.data.svc.cluster.local. 5 IN A 10.244.0.7"]
    );
    let dashed = reply(
        &cluster(),
        "10-244-0-8.db.data.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        lines(&dashed.answers),
        ["10-244-0-8.db.data.svc.cluster.local. 5 IN A 10.244.0.8"]
    );
}

#[test]
fn srv_of_a_named_port_targets_the_service_with_its_address() {
    let r = reply(
        &cluster(),
        "_http._tcp.web-app.emojivoto.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&r.answers),
        [
            "_http._tcp.web-app.emojivoto.svc.cluster.local. 5 IN SRV 0 100 80 web-app.emojivoto.svc.cluster.local."
        ]
    );
    assert_eq!(
        lines(&r.additionals),
        ["web-app.emojivoto.svc.cluster.local. 5 IN A 10.96.0.20"]
    );
    let udp = reply(
        &cluster(),
        "_dns._udp.web-app.emojivoto.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(udp.answers.len(), 1);
}

#[test]
fn srv_of_a_headless_service_targets_each_ready_pod() {
    let r = reply(
        &cluster(),
        "_peer._tcp.db.data.svc.cluster.local.",
        RecordType::SRV,
    );
    assert_eq!(
        lines(&r.answers),
        [
            "_peer._tcp.db.data.svc.cluster.local. 5 IN SRV 0 50 7000 db-0.db.data.svc.cluster.local.",
            "_peer._tcp.db.data.svc.cluster.local. 5 IN SRV 0 50 7000 10-244-0-8.db.data.svc.cluster.local.",
        ]
    );
    assert_eq!(
        lines(&r.additionals),
        [
            "db-0.db.data.svc.cluster.local. 5 IN A 10.244.0.7",
            "10-244-0-8.db.data.svc.cluster.local. 5 IN A 10.244.0.8",
        ]
    );
}

#[test]
fn ptr_of_cluster_ips_and_headless_pods() {
    let index = cluster();
    let r = reply(&index, "1.0.96.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        lines(&r.answers),
        ["1.0.96.10.in-addr.arpa. 5 IN PTR kubernetes.default.svc.cluster.local."]
    );
    let r = reply(&index, "7.0.244.10.in-addr.arpa.", RecordType::PTR);
    assert_eq!(
        lines(&r.answers),
        ["7.0.244.10.in-addr.arpa. 5 IN PTR db-0.db.data.svc.cluster.local."]
    );
    // Unknown and not-ready addresses fall through to the upstream resolver.
    assert_eq!(
        ask(&index, "9.0.244.10.in-addr.arpa.", RecordType::PTR),
        Resolution::Forward
    );
    assert_eq!(
        ask(&index, "80.2.0.192.in-addr.arpa.", RecordType::PTR),
        Resolution::Forward
    );
}

#[test]
fn pod_names_resolve_to_their_dashed_address() {
    let r = reply(
        &cluster(),
        "10-244-0-5.default.pod.cluster.local.",
        RecordType::A,
    );
    assert_eq!(
        lines(&r.answers),
        ["10-244-0-5.default.pod.cluster.local. 5 IN A 10.244.0.5"]
    );
}

#[test]
fn external_name_is_a_cname() {
    let r = reply(&cluster(), "ext.data.svc.cluster.local.", RecordType::A);
    assert_eq!(
        lines(&r.answers),
        ["ext.data.svc.cluster.local. 5 IN CNAME intranet.corp.example."]
    );
}

#[test]
fn names_outside_the_cluster_domain_are_forwarded() {
    let index = cluster();
    assert_eq!(
        ask(&index, "intranet.corp.example.", RecordType::A),
        Resolution::Forward
    );
    assert_eq!(ask(&index, "local.", RecordType::SOA), Resolution::Forward);
}

#[test]
fn changes_follow_apply_delete_and_relist() {
    let mut index = cluster();
    let name = "late.default.svc.cluster.local.";
    assert_negative(&reply(&index, name, RecordType::A), ResponseCode::NXDomain);
    let late = cluster_ip("default", "late", "10.96.0.99", json!([]));
    let _ = index.apply_service_event(Event::Apply(late.clone()));
    assert_eq!(
        lines(&reply(&index, name, RecordType::A).answers),
        [format!("{name} 5 IN A 10.96.0.99")]
    );
    let _ = index.apply_service_event(Event::Delete(late));
    assert_negative(&reply(&index, name, RecordType::A), ResponseCode::NXDomain);

    // A pod turning not-ready leaves the headless answer.
    let _ = index.apply_slice_event(Event::Apply(slice(
        "data",
        "db-abc",
        "db",
        &[("10.244.0.7", Some("db-0"), false)],
    )));
    assert_negative(
        &reply(&index, "db.data.svc.cluster.local.", RecordType::A),
        ResponseCode::NoError,
    );

    // A relist replaces everything: what it does not list is gone.
    let _ = index.apply_service_event(Event::Init);
    let _ = index.apply_service_event(Event::InitApply(cluster_ip(
        "default",
        "kubernetes",
        "10.96.0.1",
        json!([]),
    )));
    let _ = index.apply_service_event(Event::InitDone);
    assert_negative(
        &reply(
            &index,
            "web-app.emojivoto.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
    assert_eq!(
        reply(
            &index,
            "kubernetes.default.svc.cluster.local.",
            RecordType::A
        )
        .answers
        .len(),
        1
    );
}

/// The serial of the zone's SOA as a secondary reads it (the answer to `cluster.local. SOA`).
fn soa_serial(index: &Index) -> u32 {
    let answers = reply(index, "cluster.local.", RecordType::SOA).answers;
    match answers.as_slice() {
        [record] => match &record.data {
            hickory_proto::rr::RData::SOA(soa) => soa.serial,
            other => panic!("the apex SOA answered {other:?}"),
        },
        other => panic!("the apex SOA answered {other:?}"),
    }
}

#[test]
fn soa_serial_changes_with_the_data() {
    let mut index = cluster();
    let first = soa_serial(&index);
    // Reading is no change: the serial stays, so a secondary polling it fetches nothing.
    let _ = reply(
        &index,
        "web-app.emojivoto.svc.cluster.local.",
        RecordType::A,
    );
    assert_eq!(soa_serial(&index), first, "a question moved the serial");
    // A new Service, then a changed slice: each moves the serial forward (RFC 1982 order).
    let _ = index.apply_service_event(Event::Apply(cluster_ip(
        "default",
        "x",
        "10.96.0.9",
        json!([]),
    )));
    let second = soa_serial(&index);
    let _ = index.apply_slice_event(Event::Apply(slice(
        "data",
        "db-abc",
        "db",
        &[("10.244.0.7", Some("db-0"), true)],
    )));
    let third = soa_serial(&index);
    let ahead = |new: u32, old: u32| (1..1 << 31).contains(&new.wrapping_sub(old));
    assert!(
        ahead(second, first) && ahead(third, second),
        "serials {first}, {second}, {third}"
    );
}

#[test]
fn a_relist_is_visible_only_once_complete() {
    let mut index = cluster();
    assert!(!index.apply_service_event(Event::Init));
    assert!(!index.apply_service_event(Event::InitApply(cluster_ip(
        "default",
        "new",
        "10.96.0.5",
        json!([])
    ))));
    // Mid-relist the old data still answers.
    assert_eq!(
        reply(
            &index,
            "web-app.emojivoto.svc.cluster.local.",
            RecordType::A
        )
        .answers
        .len(),
        1
    );
    assert!(index.apply_service_event(Event::InitDone));
    assert_eq!(
        reply(&index, "new.default.svc.cluster.local.", RecordType::A)
            .answers
            .len(),
        1
    );
    assert_negative(
        &reply(
            &index,
            "web-app.emojivoto.svc.cluster.local.",
            RecordType::A,
        ),
        ResponseCode::NXDomain,
    );
}
