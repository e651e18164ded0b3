//! Netlink in a network namespace of the test's.
use super::*;
use std::sync::atomic::{AtomicU32, Ordering};

/// A throwaway network namespace, deleted on drop (also when the test panics).
struct TempNetns(String);

impl TempNetns {
    fn new() -> Self {
        static N: AtomicU32 = AtomicU32::new(0);
        let name = format!(
            "kwgnl{}-{}",
            std::process::id() % 100_000,
            N.fetch_add(1, Ordering::SeqCst)
        );
        let ok = std::process::Command::new("ip")
            .args(["netns", "add", &name])
            .status()
            .expect("run ip netns add")
            .success();
        assert!(ok, "ip netns add {name} failed (tests need root)");
        Self(name)
    }

    /// Runs `f` on a fresh thread that entered this namespace, with its own runtime.
    fn run<F, Fut>(&self, f: F)
    where
        F: FnOnce() -> Fut + Send + 'static,
        Fut: std::future::Future<Output = ()>,
    {
        let path = format!("/run/netns/{}", self.0);
        std::thread::spawn(move || {
            let ns = std::fs::File::open(&path).expect("open netns");
            nix::sched::setns(ns, nix::sched::CloneFlags::CLONE_NEWNET).expect("setns");
            tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime")
                .block_on(f());
        })
        .join()
        .expect("test thread panicked");
    }
}

impl Drop for TempNetns {
    fn drop(&mut self) {
        let _ = std::process::Command::new("ip")
            .args(["netns", "del", &self.0])
            .status();
    }
}

fn net(s: &str) -> IpNet {
    s.parse().unwrap()
}

#[test]
fn configures_link_address_and_routes_idempotently() {
    let ns = TempNetns::new();
    ns.run(|| async {
        let nl = Netlink::open().unwrap();
        assert!(!nl.link_exists("kd0").await.unwrap());
        // No dummy module on this kernel: a veth pair inside the namespace stands in.
        let ok = std::process::Command::new("ip")
            .args(["link", "add", "kd0", "type", "veth", "peer", "name", "kd1"])
            .status()
            .unwrap()
            .success();
        assert!(ok, "ip link add veth");
        nl.link_up("kd0", Some(1380)).await.unwrap();
        nl.add_address("kd0", net("100.77.0.2/32")).await.unwrap();
        nl.add_address("kd0", net("100.77.0.2/32")).await.unwrap();
        assert_eq!(
            nl.addresses("kd0").await.unwrap(),
            vec![net("100.77.0.2/32")]
        );

        nl.replace_route(net("10.96.0.0/12"), "kd0").await.unwrap();
        nl.replace_route(net("10.96.0.0/12"), "kd0").await.unwrap();
        nl.replace_route(net("fd00:10::/64"), "kd0").await.unwrap();
        let routes = nl.routes().await.unwrap();
        let ours: Vec<_> = routes
            .iter()
            .filter(|r| r.table == MAIN_TABLE && r.interface.as_deref() == Some("kd0"))
            .map(|r| r.to_string())
            .collect();
        assert!(
            ours.contains(&"10.96.0.0/12 dev kd0".to_string()),
            "{ours:?}"
        );
        assert!(
            ours.contains(&"fd00:10::/64 dev kd0".to_string()),
            "{ours:?}"
        );
        assert_eq!(ours.iter().filter(|r| r.starts_with("10.96.")).count(), 1);

        assert!(nl.delete_route(net("10.96.0.0/12"), "kd0").await.unwrap());
        assert!(!nl.delete_route(net("10.96.0.0/12"), "kd0").await.unwrap());
        let routes = nl.routes().await.unwrap();
        assert!(!routes.iter().any(|r| r.destination == net("10.96.0.0/12")));

        let link = nl.link("kd0").await.unwrap();
        assert!(link.up);
        assert_eq!(link.mtu, 1380);
        assert!(nl.delete_link("kd0").await.unwrap());
        assert!(!nl.delete_link("kd0").await.unwrap());
        assert!(!nl.delete_route(net("10.96.0.0/12"), "kd0").await.unwrap());
    });
}

#[test]
fn missing_link_is_named() {
    let ns = TempNetns::new();
    ns.run(|| async {
        let nl = Netlink::open().unwrap();
        let err = nl.link_up("nope0", None).await.unwrap_err();
        assert_eq!(
            err.to_string(),
            "network interface nope0 does not exist (was the device stopped?)"
        );
    });
}
