use super::*;

fn split(mapped: Option<&[&str]>) -> SplitDns {
    SplitDns {
        cluster_domain: "cluster.local".into(),
        namespace: "emojivoto".into(),
        cluster_namespaces: [
            "default",
            "emojivoto",
            "kube-system",
            "other",
            "example",
            "dev",
        ]
        .map(String::from)
        .into(),
        mapped: mapped.map(|m| m.iter().map(|s| s.to_string()).collect()),
        include_suffixes: vec![],
        exclude_suffixes: DEFAULT_EXCLUDE_SUFFIXES
            .iter()
            .map(|s| s.to_string())
            .collect(),
        reverse_subnets: vec!["10.96.0.0/12".parse().unwrap()],
        machine_search: vec!["corp.example".into()],
        reachable: None,
        naming: Naming::default(),
    }
}

fn cluster(s: &str) -> Decision {
    Decision::Cluster(s.into())
}

fn cluster_first(s: &str) -> Decision {
    Decision::ClusterThenUpstream(s.into())
}

fn machine_first(s: &str) -> Decision {
    Decision::UpstreamThenCluster(s.into())
}

#[test]
fn names_resolve_like_inside_a_pod() {
    let s = split(None);
    assert_eq!(
        s.decide("web-app"),
        machine_first("web-app.emojivoto.svc.cluster.local")
    );
    assert_eq!(
        s.decide("Web-App."),
        machine_first("web-app.emojivoto.svc.cluster.local")
    );
    assert_eq!(
        s.decide("web-app.emojivoto"),
        cluster_first("web-app.emojivoto.svc.cluster.local")
    );
    assert_eq!(
        s.decide("echo.other"),
        cluster_first("echo.other.svc.cluster.local")
    );
    assert_eq!(
        s.decide("echo.other.svc"),
        cluster("echo.other.svc.cluster.local")
    );
    assert_eq!(
        s.decide("web-app.emojivoto.svc.cluster.local."),
        cluster("web-app.emojivoto.svc.cluster.local")
    );
    assert_eq!(s.decide("web-app.nosuchns"), Decision::Upstream);
    assert_eq!(s.decide("example.com"), Decision::Upstream);
    assert_eq!(s.decide("debian.org."), Decision::Upstream);
}

#[test]
fn names_under_the_machines_search_domains_stay_the_machines() {
    // Issue 12: a namespace `example` with a Service `corp` while `corp.example` is the
    // LAN's search domain.
    let s = split(None);
    assert_eq!(s.decide("corp.example"), Decision::Upstream);
    assert_eq!(s.decide("CORP.example."), Decision::Upstream);
    assert_eq!(s.decide("intranet.corp.example"), Decision::Upstream);
    // A sibling of the search domain is no LAN name: the namespace rule applies.
    assert_eq!(
        s.decide("other.example"),
        cluster_first("other.example.svc.cluster.local")
    );
    // Mapped namespaces do not override it either.
    let s = split(Some(&["emojivoto", "example"]));
    assert_eq!(s.decide("corp.example"), Decision::Upstream);
}

#[test]
fn a_namespace_named_like_a_public_suffix_routes_nothing_unless_mapped() {
    // A cluster admin creating namespace `dev` or `de` (public suffixes) must not capture
    // `go.dev` or `paypal.de`: those stay the machine's, never asked of the cluster.
    let mut s = split(None);
    s.cluster_namespaces
        .extend(["de", "uk", "app"].map(String::from));
    for name in ["go.dev", "paypal.de", "bbc.uk", "web.app"] {
        assert_eq!(s.decide(name), Decision::Upstream, "{name}");
    }
    // An ordinary namespace still resolves `<svc>.<ns>` in the cluster first.
    assert_eq!(
        s.decide("web.other"),
        cluster_first("web.other.svc.cluster.local")
    );
    assert_eq!(
        Decision::ClusterThenUpstream("go.dev.svc.cluster.local".into()).sources(),
        [
            Source::Cluster("go.dev.svc.cluster.local"),
            Source::Upstream
        ]
    );
    // The full cluster name and `<svc>.<ns>.svc` still reach it.
    assert_eq!(
        s.decide("web.dev.svc.cluster.local"),
        cluster("web.dev.svc.cluster.local")
    );
    assert_eq!(
        s.decide("web.dev.svc"),
        cluster("web.dev.svc.cluster.local")
    );
    // Named by the user in --mapped-namespaces: routed as any namespace.
    let s = split(Some(&["emojivoto", "dev"]));
    assert_eq!(
        s.decide("go.dev"),
        cluster_first("go.dev.svc.cluster.local")
    );
    // Joined with --namespace dev: the user named it, so `web.dev` is the cluster's first.
    let mut s = split(None);
    s.namespace = "dev".into();
    assert_eq!(
        s.decide("web.dev"),
        cluster_first("web.dev.svc.cluster.local")
    );
    assert!(s.named_namespaces().contains("dev"));
    assert!(is_public_suffix("de") && is_public_suffix("co.uk") && is_public_suffix("Dev."));
    assert!(!is_public_suffix("emojivoto") && !is_public_suffix("kube-system"));
}

#[test]
fn single_labels_ask_the_machine_first_then_the_connected_namespace() {
    let s = split(None);
    let d = s.decide("intranet");
    assert_eq!(
        d.sources(),
        [
            Source::Upstream,
            Source::Cluster("intranet.emojivoto.svc.cluster.local")
        ]
    );
}

#[test]
fn the_cluster_domain_loses_to_an_equal_or_longer_machine_search_domain() {
    let mut s = split(None);
    s.machine_search = vec!["corp.example".into(), "k8s.corp.example".into()];
    s.cluster_domain = "corp.example".into();
    assert_eq!(s.decide("intranet.corp.example"), Decision::Upstream);
    // A cluster domain inside the LAN's zone is more specific: the cluster's.
    s.cluster_domain = "k8s.corp.example".into();
    s.machine_search = vec!["corp.example".into()];
    assert_eq!(
        s.decide("web-app.emojivoto.svc.k8s.corp.example"),
        cluster("web-app.emojivoto.svc.k8s.corp.example")
    );
    assert_eq!(s.decide("intranet.corp.example"), Decision::Upstream);
}

#[test]
fn machine_search_domains_read_as_glibc_without_the_clusters() {
    let text = "domain old.example\nsearch Corp.Example. emojivoto.svc.cluster.local svc.cluster.local cluster.local lab.example\n";
    assert_eq!(
        machine_search(text, "cluster.local"),
        ["corp.example", "lab.example"]
    );
    assert_eq!(
        machine_search("search a.example\ndomain b.example\n", "cluster.local"),
        ["b.example"]
    );
    assert!(machine_search("nameserver 192.0.2.53\n", "cluster.local").is_empty());
}

#[test]
fn excludes_and_includes() {
    let mut s = split(None);
    s.cluster_namespaces.insert("com".into());
    assert_eq!(s.decide("x.com"), Decision::Upstream);
    s.include_suffixes = vec![".corp.example".into()];
    assert_eq!(
        s.decide("intranet.corp.example"),
        cluster("intranet.corp.example")
    );
    s.include_suffixes = vec!["x.com".into()];
    assert_eq!(s.decide("a.x.com"), cluster("a.x.com"));
}

#[test]
fn mapped_namespaces_hide_the_others() {
    let s = split(Some(&["emojivoto"]));
    assert_eq!(
        s.decide("web-app"),
        machine_first("web-app.emojivoto.svc.cluster.local")
    );
    // `<name>.<ns>` of an unmapped namespace is not the cluster's: the machine's.
    assert_eq!(s.decide("echo.other"), Decision::UpstreamElseHidden);
    assert_eq!(s.decide("echo.nosuchns"), Decision::Upstream);
    assert_eq!(s.decide("echo.other.svc"), Decision::Hidden);
    assert_eq!(s.decide("echo.other.svc.cluster.local"), Decision::Hidden);
    assert_eq!(
        s.decide("web-app.emojivoto.svc.cluster.local"),
        cluster("web-app.emojivoto.svc.cluster.local")
    );
    assert_eq!(Decision::Hidden.sources(), []);
}

#[test]
fn reverse_names_of_cluster_subnets_go_to_the_cluster() {
    let s = split(None);
    assert_eq!(
        s.decide("10.0.96.10.in-addr.arpa."),
        cluster("10.0.96.10.in-addr.arpa")
    );
    assert_eq!(s.decide("80.2.0.192.in-addr.arpa"), Decision::Upstream);
    assert_eq!(
        reverse_name_ip(&format!("{}ip6.arpa", "1.0.".repeat(16))),
        Some("0101:0101:0101:0101:0101:0101:0101:0101".parse().unwrap())
    );
}

#[test]
fn search_list_is_the_machines_first_then_the_namespaces() {
    assert_eq!(
        split(None).search_domains(),
        [
            "corp.example",
            "emojivoto.svc.cluster.local",
            "svc.cluster.local",
            "cluster.local"
        ]
    );
}

fn named(alias: &str, secondary: bool) -> SplitDns {
    SplitDns {
        naming: Naming {
            alias: Some(alias.into()),
            secondary,
        },
        ..split(None)
    }
}

#[test]
fn every_session_answers_names_under_its_alias() {
    for secondary in [false, true] {
        let s = named("staging", secondary);
        assert_eq!(
            s.decide("web-app.emojivoto.svc.staging."),
            cluster("web-app.emojivoto.svc.cluster.local")
        );
        assert_eq!(
            s.decide("web-app-0.web-app-headless.emojivoto.svc.staging"),
            cluster("web-app-0.web-app-headless.emojivoto.svc.cluster.local")
        );
        assert_eq!(
            s.decide("kubernetes.default.svc.staging"),
            cluster("kubernetes.default.svc.cluster.local")
        );
        // Another alias, or a namespace that does not exist, is not this session's.
        assert_eq!(s.decide("web-app.emojivoto.svc.prod"), Decision::Upstream);
        assert_eq!(s.decide("web-app.nowhere.svc.staging"), Decision::Hidden);
    }
}

#[test]
fn a_secondary_session_leaves_short_names_and_the_cluster_domain_to_the_primary() {
    let primary = named("dev", false);
    let secondary = named("staging", true);
    for q in [
        "web-app",
        "web-app.emojivoto",
        "web-app.emojivoto.svc",
        "web-app.emojivoto.svc.cluster.local",
    ] {
        assert_ne!(primary.decide(q), Decision::Upstream, "{q}");
        assert_eq!(secondary.decide(q), Decision::Upstream, "{q}");
    }
    // Its own subnets' reverse names stay its own.
    assert_eq!(
        secondary.decide("10.0.96.10.in-addr.arpa"),
        cluster("10.0.96.10.in-addr.arpa")
    );
    assert_eq!(secondary.search_domains(), vec!["corp.example".to_string()]);
    assert!(primary.search_domains().len() > 1);
    let domains = |s: &SplitDns| -> Vec<String> {
        crate::dns::domains::split_domains(s)
            .unwrap()
            .iter()
            .map(ToString::to_string)
            .filter(|d| !d.contains("arpa"))
            .collect()
    };
    assert_eq!(domains(&secondary), vec!["~svc.staging".to_string()]);
    let p = domains(&primary);
    assert!(
        p.contains(&"~svc.dev".to_string()) && p.contains(&"~cluster.local".to_string()),
        "{p:?}"
    );
}

#[test]
fn a_context_name_becomes_a_dns_label() {
    assert_eq!(alias_of("kind-dev"), "kind-dev");
    assert_eq!(
        alias_of("arn:aws:eks:eu-west-1:1:cluster/prod"),
        "arn-aws-eks-eu-west-1-1-cluster-prod"
    );
    assert_eq!(alias_of("Dev.Example"), "dev-example");
    assert_eq!(alias_of("--"), "cluster");
    assert_eq!(alias_of("local"), "local-cluster");
    assert_eq!(alias_of(&"x".repeat(80)).len(), 63);
    assert!(check_alias("staging").is_ok());
    // A public top-level domain would send svc.<tld> (registrable by anyone) to the cluster.
    for tld in ["prod", "dev", "app", "io", "com"] {
        assert_eq!(alias_of(tld), format!("{tld}-cluster"));
        let why = check_alias(tld).unwrap_err();
        assert!(why.contains("--alias") && why.contains("public"), "{why}");
    }
    assert_eq!(alias_of("Dev"), "dev-cluster");
    for fine in [
        "kind-dev",
        "default",
        "default-2",
        "cluster",
        "staging",
        "dev-cluster",
    ] {
        assert_eq!(alias_of(fine), fine);
        assert!(check_alias(fine).is_ok(), "{fine}");
    }
    let e = check_alias("Staging_1").unwrap_err();
    assert!(e.contains("--alias staging-1"), "{e}");
    assert!(check_alias("local").unwrap_err().contains("special-use"));
}
