use super::*;
use std::net::Ipv6Addr;

/// Set in the child run inside its own network namespace.
const IN_NETNS: &str = "KWG_ADMIN_TEST_NETNS";

/// In a network namespace with `net.ipv6.bindv6only=1` (a pod can have it), the admin
/// address `[::]` still takes IPv4 connections (the kubelet probes over IPv4) and the log
/// names the address bound. The test runs itself again under `unshare --net`.
#[test]
fn the_dual_stack_admin_address_takes_ipv4_even_with_bindv6only() {
    if std::env::var_os(IN_NETNS).is_some() {
        return bind_and_connect_over_ipv4();
    }
    let exe = std::env::current_exe().unwrap();
    let script = "ip link set lo up && sysctl -qw net.ipv6.bindv6only=1 && exec \"$0\" --exact admin::tests::the_dual_stack_admin_address_takes_ipv4_even_with_bindv6only";
    let Ok(out) = std::process::Command::new("unshare")
        .args(["--net", "sh", "-c", script])
        .arg(exe)
        .env(IN_NETNS, "1")
        .output()
    else {
        panic!("cannot run `unshare --net`: install util-linux and run as root");
    };
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The child ran the test (not zero tests, filtered out).
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("1 passed"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

fn bind_and_connect_over_ipv4() {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    rt.block_on(async {
        let sysctl = std::fs::read_to_string("/proc/sys/net/ipv6/conf/all/disable_ipv6");
        if sysctl.is_ok_and(|v| v.trim() == "1") {
            return; // no IPv6 here: the fallback to 0.0.0.0 is what serves
        }
        let listener = bind(SocketAddr::from((Ipv6Addr::UNSPECIFIED, 0)))
            .await
            .unwrap();
        let bound = listener.local_addr().unwrap();
        assert_eq!(bound.ip(), Ipv6Addr::UNSPECIFIED);
        let v4 = SocketAddr::from(([127, 0, 0, 1], bound.port()));
        let accept = tokio::spawn(async move { listener.accept().await.map(|_| ()) });
        tokio::net::TcpStream::connect(v4)
            .await
            .unwrap_or_else(|e| panic!("an IPv4 connection to {bound} refused: {e}"));
        accept.await.unwrap().unwrap();
    });
}
