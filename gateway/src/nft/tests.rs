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
        ipv6: None,
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

/// Runs a shell script (root, network namespaces); its stdout, or the test fails with both.
fn run_sh(script: &str) -> String {
    let out = std::process::Command::new("sh")
        .args(["-c", script])
        .output()
        .expect("sh");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    text
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
    let text = run_sh(&script);
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
            let script = render_reach("kwg0", &["fd00:1::/64".parse().unwrap()])
                + &render(&policy())
                + &render(&p)
                + &render(&dual_stack(false))
                + &render(&dual_stack(true));
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

fn dual_stack(reach_rbac: bool) -> Policy {
    let mut p = policy();
    p.reach_rbac = reach_rbac;
    p.ipv6 = Some((
        "fd6b:7767::/96".parse().unwrap(),
        "fd6b:7767::644d:1".parse().unwrap(),
    ));
    p
}

#[test]
fn ipv6_is_dropped_unless_the_tunnel_carries_it() {
    let r = render(&policy());
    assert!(
        r.contains("iifname \"kwg0\" meta nfproto ipv6 counter drop"),
        "{r}"
    );
    let r = render(&dual_stack(false));
    assert!(!r.contains("meta nfproto ipv6 counter drop"), "{r}");
    assert!(
        r.contains("set allowed6 { type ipv6_addr; flags interval; elements = { fd00::/64 } }"),
        "{r}"
    );
    assert!(
        r.contains("ip6 saddr != fd6b:7767::/96 counter drop"),
        "{r}"
    );
    assert!(r.contains("ip6 daddr fe80::/10 counter drop"), "{r}");
    assert!(
        r.contains("oifname != \"kwg0\" ip6 daddr @allowed6 accept"),
        "{r}"
    );
    assert!(
        r.contains("ip6 saddr fd6b:7767::/96 oifname != \"kwg0\" masquerade"),
        "{r}"
    );
    assert!(
        r.contains("ip6 daddr fd6b:7767::644d:1 tcp dport 8080 accept"),
        "{r}"
    );
    // With reach by RBAC the reach table judges IPv6 too: no @allowed6 shortcut here.
    let r = render(&dual_stack(true));
    assert!(!r.contains("@allowed6 accept"), "{r}");
}

#[test]
fn ipv6_through_the_tables_follows_the_ipv4_grants() {
    // The real tables in a router namespace between a peer (IPv6 tunnel address
    // fd6b:7767::644d:2, i.e. 100.77.0.2) and a host with a granted Service address, a
    // Service address of a namespace the peer may not reach, and the peer's grant set by the
    // element script the reach loop sends.
    let ns = format!("kwgnft6{}", std::process::id());
    let tables = render(&dual_stack(true)) + &render_reach("kwg0", &[]);
    let mut inv = crate::policy::fixtures::inv();
    let v6 = |s: &str| s.parse::<std::net::Ipv6Addr>().unwrap();
    inv.twins6
        .insert(v6("fd00:10:96::100"), "10.96.1.0".parse().unwrap());
    inv.twins6
        .insert(v6("fd00:10:96::200"), "10.96.2.0".parse().unwrap());
    let mut ids = crate::policy::sets::NsIds::default();
    let peers = [crate::policy::fixtures::peer("100.77.0.2", "alice", &[])];
    let sets = crate::policy::sets::desired(&inv, &peers, crate::policy::fixtures::rbac, &mut ids);
    let elements = crate::policy::sets::diff(&Default::default(), &sets).render(REACH_TABLE);
    let script = format!(
        r#"set -e
A={ns}a R={ns}r B={ns}b
trap 'for n in $A $R $B; do ip netns del $n 2>/dev/null; done' EXIT
for n in $A $R $B; do ip netns add $n; ip -n $n link set lo up; done
for n in $A $R $B; do ip netns exec $n sysctl -qw net.ipv6.conf.all.accept_dad=0 net.ipv6.conf.default.accept_dad=0; done
ip -n $A link add peer type veth peer name kwg0 netns $R
ip -n $R link add host type veth peer name router netns $B
ip -n $A addr add fd6b:7767::644d:2/96 dev peer; ip -n $A addr add fd99::2/64 dev peer; ip -n $A link set peer up
ip -n $R addr add fd6b:7767::644d:1/96 dev kwg0; ip -n $R link set kwg0 up
ip -n $R addr add fd08::1/64 dev host; ip -n $R link set host up
ip -n $B addr add fd08::2/64 dev router; ip -n $B link set router up
ip -n $R route add fd00:10:96::/112 via fd08::2
ip -n $A route add fd00:10:96::/112 via fd6b:7767::644d:1
# Static neighbours: the gateway's kwg0 is a TUN without neighbour discovery, which its input
# chain would drop on a veth.
ip -n $A neigh add fd6b:7767::644d:1 lladdr $(ip -n $R -br link show kwg0 | awk '{{print $3}}') dev peer nud permanent
ip -n $R neigh add fd6b:7767::644d:2 lladdr $(ip -n $A -br link show peer | awk '{{print $3}}') dev kwg0 nud permanent
ip -n $R neigh add fd99::2 lladdr $(ip -n $A -br link show peer | awk '{{print $3}}') dev kwg0 nud permanent
ip -n $B addr add fd00:10:96::100/128 dev lo
ip -n $B addr add fd00:10:96::200/128 dev lo
ip netns exec $R sysctl -qw net.ipv6.conf.all.forwarding=1
ip netns exec $R nft -f - <<'NFT'
{tables}{elements}NFT
ip netns exec $B nft add table ip6 seen
ip netns exec $B nft add chain ip6 seen in '{{ type filter hook input priority 0; }}'
ip netns exec $B nft add rule ip6 seen in ip6 saddr fd08::1 icmpv6 type echo-request counter
ip netns exec $A ping -6 -c1 -W1 fd00:10:96::100 2>&1 | grep -E 'bytes from|filtered|prohibited' | sed 's/^/granted: /' || echo "granted: no answer"
ip netns exec $A ping -6 -c1 -W1 fd00:10:96::200 2>&1 | grep -E 'bytes from|filtered|prohibited' | sed 's/^/other: /' || echo "other: no answer"
ip netns exec $A ping -6 -c1 -W1 -I fd99::2 fd00:10:96::100 2>&1 | grep -q 'bytes from' && echo "spoofed: answered" || echo "spoofed: no answer"
ip netns exec $B nft list chain ip6 seen in | grep -o 'packets [0-9]*' | sed 's/^/masqueraded /'
echo "drops6 $(ip netns exec $R nft -j list set inet {REACH_TABLE} peer_drops6)"
"#
    );
    let text = run_sh(&script);
    assert!(
        text.contains("granted: 64 bytes from fd00:10:96::100"),
        "{text}"
    );
    assert!(
        text.contains("other: ") && !text.contains("other: 64 bytes"),
        "{text}"
    );
    assert!(text.contains("spoofed: no answer"), "{text}");
    // The host saw the granted ping from the router's address (masqueraded), once.
    assert!(text.contains("masqueraded packets 1"), "{text}");
    // The refused IPv6 packet counts for the peer, by its IPv4 address.
    let drops = text.split("drops6 ").nth(1).unwrap_or_default();
    assert_eq!(
        parse_drops(drops),
        [("100.77.0.2".parse().unwrap(), 1)],
        "{drops}"
    );
}
