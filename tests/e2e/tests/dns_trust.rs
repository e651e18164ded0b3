//! What the cluster cannot take from the laptop's names and terminal (issue 12): a namespace
//! `example` with a Service `corp`, and a Service `intranet` in the connected namespace, while
//! `corp.example` is the LAN's search domain and `intranet.corp.example` a LAN host; LAN names
//! keep their LAN answers after `kwg join`, cluster names still resolve. Cluster text with
//! terminal escapes is printed by `kwg peers` without them.

use kwg_e2e::laptop::{laptop, shared, text};
use kwg_sim::names::LAN_ZONE;

/// The intranet host's address in the LAN zone.
const INTRANET: &str = "192.0.2.80";

#[test]
fn a_namespace_named_like_the_lan_domain_does_not_capture_lan_names() {
    let sim = shared();
    let l = laptop(&sim, "dnstrust");
    let resolv = text(&l.resolv_conf());
    assert!(
        resolv.contains(&format!("search {LAN_ZONE}")),
        "the laptop's resolver has no LAN search domain:\n{resolv}"
    );
    // The attack, as an admin: namespace `example`, Service `corp` in it (corp.example), and
    // a Service named like the LAN host in the namespace the laptop connects to.
    sim.kubectl_admin(&["create", "namespace", "example"])
        .unwrap();
    sim.kubectl_admin(&[
        "-n",
        "example",
        "create",
        "service",
        "clusterip",
        "corp",
        "--tcp=80:80",
    ])
    .unwrap();
    sim.kubectl_admin(&[
        "-n",
        "emojivoto",
        "create",
        "service",
        "clusterip",
        "intranet",
        "--tcp=80:80",
    ])
    .unwrap();
    let corp_before = l.dig("corp.example");
    assert_eq!(l.getent("intranet"), INTRANET);

    l.join(&["--namespace", "emojivoto"]);
    let joined = text(&l.resolv_conf());
    let search = joined
        .lines()
        .find(|s| s.starts_with("search "))
        .unwrap_or_default();
    assert!(
        search.starts_with(&format!("search {LAN_ZONE} emojivoto.svc.cluster.local")),
        "the LAN's search domain is not first:\n{joined}"
    );
    // The LAN's names keep their answers.
    assert_eq!(l.dig("intranet.corp.example"), INTRANET);
    assert_eq!(l.getent("intranet.corp.example"), INTRANET);
    assert_eq!(
        l.dig("corp.example"),
        corp_before,
        "corp.example changed its answer after join"
    );
    // A single label through the search list (as applications ask): the LAN's domain first,
    // so the Service `intranet` does not shadow the LAN host.
    assert_eq!(l.getent("intranet"), INTRANET);
    // Cluster names still resolve: single label, <svc>.<ns>, and the Service in `example`
    // by its cluster name.
    for name in ["web-app", "web-app.emojivoto"] {
        let ip = l.getent(name);
        assert!(ip.starts_with("10.96."), "{name}: {ip:?}");
        let ip = l.dig(name);
        assert!(ip.starts_with("10.96."), "dig {name}: {ip:?}");
    }
    let corp = l.dig("corp.example.svc.cluster.local");
    assert!(corp.starts_with("10.96."), "corp.example.svc: {corp:?}");
    // A name the cluster does not know in an existing namespace falls back to the LAN's
    // answer (here the LAN refuses it: no cluster answer either).
    assert_eq!(l.dig_status("nosuch.example"), "REFUSED");

    // Cluster text with terminal escapes, as an admin (the admission policy exempts
    // admins): a peer Secret whose hostname clears the screen and retitles the terminal.
    // The contract refuses control characters in a peer's fields, so `kwg peers` leaves the
    // row out and prints no escape; the rendering itself (owner, hostname, namespaces, the
    // gateway's error annotation, which the gateway rewrites too soon to test here) is
    // covered by output::tests::peers_and_status_never_print_terminal_escapes.
    sim.kubectl_admin(&[
        "-n",
        "kwg-system",
        "create",
        "secret",
        "generic",
        "kwg-peer-evil",
        "--type=kwg.io/peer",
        "--from-literal=name=evil",
        "--from-literal=publicKey=R/1fifW6DnWEaiJX90vmU+815KVsE7NYFYo24FvWHnA=",
        "--from-literal=owner=admin",
        "--from-literal=hostname=h\u{1b}[2J\u{1b}]0;pwned\u{7}",
        "--from-literal=namespaces=",
        "--from-literal=leaseExpires=2030-01-01T00:00:00Z",
    ])
    .unwrap();
    sim.kubectl_admin(&[
        "-n",
        "kwg-system",
        "label",
        "secret",
        "kwg-peer-evil",
        "kwg.io/peer=true",
    ])
    .unwrap();
    let peers = l.kwg(&["peers", "-o", "wide"]);
    let out = text(&peers.stdout);
    assert!(peers.status.success(), "{}", text(&peers.stderr));
    assert!(
        !out.contains('\u{1b}') && !out.contains('\u{7}'),
        "kwg peers printed an escape: {out:?}"
    );
    assert!(
        out.lines().any(|l| l.starts_with("*  dnstrust ")),
        "no marked row:\n{out}"
    );
    sim.kubectl_admin(&["-n", "kwg-system", "delete", "secret", "kwg-peer-evil"])
        .unwrap();

    sim.kubectl_admin(&["-n", "emojivoto", "delete", "service", "intranet"])
        .unwrap();
    sim.kubectl_admin(&["delete", "namespace", "example"])
        .unwrap();
}
