//! From the laptop: kubectl works, the cluster CIDRs do not, LAN DNS and NodePorts do.

mod common;

use std::net::UdpSocket;
use std::time::Duration;

#[test]
fn the_laptop_has_kubectl_and_the_lan_but_not_the_cluster_network() {
    let c = common::cluster();
    let laptop = c.netns("laptop");
    let svc = c
        .kubectl_developer(&["-n", "emojivoto", "get", "svc"])
        .unwrap();
    assert!(svc.contains("web-app"), "{svc}");
    // A team's RBAC: its group edits emojivoto and views default, nothing in kube-system.
    let kube_system = c
        .kubectl_output(
            &c.developer_kubeconfig(),
            &["-n", "kube-system", "get", "svc"],
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&kube_system.stderr).trim(),
        "Error from server (Forbidden): services is forbidden: User \"developer\" cannot list resource \"services\" in API group \"\" in the namespace \"kube-system\""
    );
    // The developer can read but not write.
    let denied = c
        .exec(
            &laptop,
            &[
                "kubectl",
                "--kubeconfig",
                c.developer_kubeconfig().to_str().unwrap(),
                "create",
                "namespace",
                "nope",
            ],
        )
        .unwrap();
    assert!(!denied.status.success());

    let pod_ip = c.pod_ip("emojivoto", "web-app").unwrap();
    for url in [
        "https://10.96.0.1/healthz".to_string(),
        format!("http://{pod_ip}/"),
    ] {
        let out = c.exec(&laptop, &["curl", "-sk", "-m", "2", &url]).unwrap();
        assert!(
            !out.status.success(),
            "{url} must be unreachable from the laptop"
        );
    }
    let routes = c.exec_ok(&laptop, &["ip", "route"]).unwrap();
    assert!(
        !routes.contains("10.96.") && !routes.contains("10.244.") && !routes.contains("default"),
        "{routes}"
    );

    // Host DNS: the laptop's resolver is the LAN's, which knows corp.example.
    let resolv = std::fs::read_to_string(format!("/etc/netns/{laptop}/resolv.conf")).unwrap();
    assert!(resolv.contains("nameserver 192.0.2.53"));
    let host = c
        .exec_ok(&laptop, &["getent", "hosts", "intranet.corp.example"])
        .unwrap();
    assert!(host.starts_with("192.0.2.80"), "{host}");
    let page = c
        .exec_ok(
            &laptop,
            &["curl", "-sS", "-m", "5", "http://intranet.corp.example/"],
        )
        .unwrap();
    assert!(page.contains("<title>Corp Intranet</title>"));

    // The API server on the LAN.
    let version = c
        .exec_ok(
            &laptop,
            &[
                "curl",
                "-sS",
                "-m",
                "5",
                "--cacert",
                &format!("/run/kwg-sim/{}/ca.crt", c.prefix()),
                "https://192.0.2.1:6443/version",
            ],
        )
        .unwrap();
    assert!(version.contains("gitVersion"), "{version}");
}

#[test]
fn a_nodeport_udp_service_reaches_a_pod_from_the_laptop() {
    let c = common::cluster();
    let echoed = c
        .run_in(&c.netns("laptop"), || {
            let sock = UdpSocket::bind("0.0.0.0:0").unwrap();
            sock.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
            sock.send_to(b"hello nodeport", "192.0.2.1:30007").unwrap();
            let mut buf = [0u8; 64];
            let (n, from) = sock.recv_from(&mut buf).unwrap();
            Ok((buf[..n].to_vec(), from))
        })
        .unwrap();
    assert_eq!(echoed.0, b"hello nodeport");
    assert_eq!(echoed.1.to_string(), "192.0.2.1:30007");
    // And TCP on the NodePort.
    let page = c
        .exec_ok(
            &c.netns("laptop"),
            &["curl", "-sS", "-m", "5", "http://192.0.2.1:30080/"],
        )
        .unwrap();
    assert!(page.contains("<title>Echo</title>"));
}

#[test]
fn extra_laptops_join_the_lan() {
    let c = common::cluster();
    let out = c.kwg_sim(&["laptop", "add", "bob"]).unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bob = c.netns("bob");
    let svc = c
        .kubectl(
            &c.developer_kubeconfig(),
            &["-n", "emojivoto", "get", "svc"],
        )
        .unwrap();
    assert!(svc.contains("web-app"));
    let page = c
        .exec_ok(
            &bob,
            &["curl", "-sS", "-m", "5", "http://intranet.corp.example/"],
        )
        .unwrap();
    assert!(page.contains("Corp Intranet"));
    assert!(
        c.kwg_sim(&["laptop", "del", "bob"])
            .unwrap()
            .status
            .success()
    );
    let list = kwg_sim::sh::netns_list().unwrap();
    assert!(!list.contains(&bob));
}

#[test]
fn a_udp_flow_through_a_nodeport_survives_the_replacement_of_its_pods() {
    let c = common::cluster();
    // A socket made inside the laptop namespace stays there; one source port = one flow.
    let sock = c
        .run_in(&c.netns("laptop"), || {
            Ok(UdpSocket::bind("0.0.0.0:0").unwrap())
        })
        .unwrap();
    sock.set_read_timeout(Some(Duration::from_millis(300)))
        .unwrap();
    let echoes = |sock: &UdpSocket| {
        let mut buf = [0u8; 16];
        sock.send_to(b"ping", "192.0.2.1:30007").is_ok() && matches!(sock.recv(&mut buf), Ok(4))
    };
    assert!(echoes(&sock));
    c.kubectl_admin(&["delete", "pods", "-l", "app=echo"])
        .unwrap();
    // Kept busy, a flow still pinned to a deleted pod would never expire: kube-proxy must drop it.
    common::eventually(15, "the same UDP flow answered by a new pod", || {
        echoes(&sock).then_some(())
    });
}
