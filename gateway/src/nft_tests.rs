use super::*;

fn policy() -> Policy {
    Policy {
        interface: "kwg0".into(),
        tunnel_cidr: "100.77.0.0/16".parse().unwrap(),
        gateway_ip: "100.77.0.1".parse().unwrap(),
        admin_port: 8080,
        allowed: [
            "10.96.0.0/12",
            "10.244.0.0/24",
            "10.244.0.0/16",
            "fd00::/64",
        ]
        .iter()
        .map(|s| s.parse().unwrap())
        .collect(),
        allow_peer_to_peer: false,
        reach_rbac: false,
    }
}

#[test]
fn allows_cluster_cidrs_merged() {
    let r = render(&policy());
    assert!(
        r.contains("elements = { 10.96.0.0/12, 10.244.0.0/16 }"),
        "{r}"
    );
    assert!(!r.contains("fd00"), "IPv6 ignored");
    assert!(r.contains("masquerade"));
    assert!(r.contains("ip daddr 100.77.0.1 tcp dport 8080 accept"));
    assert!(r.starts_with("table inet kwg {}\ndelete table inet kwg\n"));
}

#[test]
fn peers_isolated_unless_allowed() {
    let r = render(&policy());
    assert!(!r.contains("oifname \"kwg0\" ip daddr 100.77.0.0/16 accept"));
    assert!(r.contains("iifname \"kwg0\" counter drop"));
    let mut p = policy();
    p.allow_peer_to_peer = true;
    assert!(render(&p).contains("iifname \"kwg0\" oifname \"kwg0\" ip daddr 100.77.0.0/16 accept"));
}

#[test]
fn allow_all_still_drops_link_local_and_peers() {
    let mut p = policy();
    p.allowed = vec!["0.0.0.0/0".parse().unwrap()];
    let r = render(&p);
    let drop_ll = r.find("ip daddr 169.254.0.0/16 counter drop").unwrap();
    let accept = r.find("ip daddr @allowed accept").unwrap();
    assert!(drop_ll < accept, "{r}");
    assert!(r.contains("oifname != \"kwg0\" ip daddr @allowed accept"));
}

#[test]
fn rbac_mode_hands_the_decision_to_the_reach_table() {
    let mut p = policy();
    p.reach_rbac = true;
    let r = render(&p);
    assert!(
        r.contains("iifname \"kwg0\" oifname != \"kwg0\" accept"),
        "{r}"
    );
    let toward = r
        .find("oifname \"kwg0\" ct state established,related accept")
        .unwrap();
    assert!(toward < r.find("oifname \"kwg0\" counter drop").unwrap());
    let reach = render_reach("kwg0", &["192.0.2.0/24".parse().unwrap()]);
    assert!(reach.contains("elements = { 192.0.2.0/24 }"), "{reach}");
    let grant = reach.find("ip saddr . meta mark @peer_ns accept").unwrap();
    assert!(grant < reach.find("update @peer_drops").unwrap());
    let forward = &reach[reach.find("chain forward").unwrap()..];
    let rules: Vec<&str> = forward.lines().map(str::trim).collect();
    let last = rules
        .iter()
        .rposition(|l| l.starts_with("iifname"))
        .unwrap();
    // A full set must not decide: the verdict is a rule of its own, with no condition
    // but the tunnel, and the bookkeeping before it never ends in a verdict.
    assert_eq!(
        rules[last], "iifname \"kwg0\" counter goto refuse",
        "{reach}"
    );
    assert_eq!(
        rules[last - 2..last],
        [
            "iifname \"kwg0\" update @peer_drops { ip saddr }",
            "iifname \"kwg0\" update @refused { ip saddr . ip daddr }"
        ],
        "{reach}"
    );
    let refuse = &reach[reach.find("chain refuse").unwrap()..];
    let tcp = refuse
        .find("meta l4proto tcp reject with tcp reset")
        .unwrap();
    assert!(tcp < refuse.find("reject with icmpx admin-prohibited").unwrap());
}

#[test]
fn last_refused_per_peer_is_the_freshest_element() {
    let json = r#"{"nftables": [{"set": {"family": "inet", "name": "refused", "table": "kwg_reach", "elem": [
        {"elem": {"val": {"concat": ["100.77.0.2", "10.96.0.10"]}, "expires": 1799}},
        {"elem": {"val": {"concat": ["100.77.0.2", "10.96.0.11"]}, "expires": 3599}},
        {"elem": {"val": {"concat": ["100.77.0.3", "10.244.0.9"]}, "expires": 12}}]}}]}"#;
    let ip = |s: &str| s.parse::<Ipv4Addr>().unwrap();
    assert_eq!(
        parse_last_refused(json),
        [
            (ip("100.77.0.2"), ip("10.96.0.11")),
            (ip("100.77.0.3"), ip("10.244.0.9"))
        ]
    );
    assert!(parse_last_refused("garbage").is_empty());
}

#[test]
fn drops_per_peer_from_nft_json() {
    let json = r#"{"nftables": [{"metainfo": {"version": "1.0.6"}}, {"set": {"family": "inet", "name": "peer_drops", "table": "kwg_reach", "type": "ipv4_addr", "elem": [{"elem": {"val": "100.77.0.2", "counter": {"packets": 7, "bytes": 420}}}]}}]}"#;
    assert_eq!(parse_drops(json), [("100.77.0.2".parse().unwrap(), 7)]);
    assert!(parse_drops("garbage").is_empty());
}

#[test]
fn a_full_refused_set_still_refuses() {
    // The rendered reach table, its `refused` set shrunk to 2, in a router namespace
    // between a peer namespace (through `kwg0`) and a host with 6 addresses: the peer's
    // pings to all 6 are refused (ICMP "Packet filtered"), none answered.
    let ns = format!("kwgnft{}", std::process::id());
    let table = render_reach("kwg0", &[]).replace(
        &format!("size {DROP_COUNTERS}; flags dynamic, timeout"),
        "size 2; flags dynamic, timeout",
    );
    assert!(table.contains("size 2;"), "{table}");
    let script = format!(
        r#"set -e
A={ns}a R={ns}r B={ns}b
trap 'for n in $A $R $B; do ip netns del $n 2>/dev/null; done' EXIT
for n in $A $R $B; do ip netns add $n; ip -n $n link set lo up; done
ip -n $A link add peer type veth peer name kwg0 netns $R
ip -n $R link add host type veth peer name router netns $B
ip -n $A addr add 100.77.0.2/24 dev peer; ip -n $A link set peer up
ip -n $R addr add 100.77.0.1/24 dev kwg0; ip -n $R link set kwg0 up
ip -n $R addr add 10.8.0.1/24 dev host; ip -n $R link set host up
ip -n $B addr add 10.8.0.2/24 dev router; ip -n $B link set router up
ip -n $B route add 100.77.0.0/24 via 10.8.0.1
ip -n $R route add 10.9.0.0/24 via 10.8.0.2
ip -n $A route add 10.9.0.0/24 via 100.77.0.1
ip netns exec $R sysctl -qw net.ipv4.ip_forward=1
ip netns exec $R nft -f - <<'NFT'
{table}NFT
for i in 1 2 3 4 5 6; do
  ip -n $B addr add 10.9.0.$i/32 dev lo
  ip netns exec $A ping -c1 -W1 10.9.0.$i 2>&1 | grep -E 'bytes from|filtered' || echo "10.9.0.$i: no answer"
done
"#
    );
    let out = std::process::Command::new("sh")
        .args(["-c", &script])
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(text.matches("Packet filtered").count(), 6, "{text}");
}

#[test]
fn nft_accepts_the_ruleset() {
    // Checked by nft itself (`-c` parses without applying), in a throwaway network namespace.
    let Ok(out) = std::process::Command::new("unshare")
        .args(["--net", "nft", "-c", "-f", "-"])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut c| {
            use std::io::Write;
            let mut p = policy();
            p.reach_rbac = true;
            let script = render_reach("kwg0", &[]) + &render(&policy()) + &render(&p);
            c.stdin.take().unwrap().write_all(script.as_bytes())?;
            c.wait_with_output()
        })
    else {
        panic!("cannot run `unshare --net nft`: install nftables and run as root");
    };
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
