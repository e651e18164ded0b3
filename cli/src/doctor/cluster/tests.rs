use super::*;
use crate::doctor::check::Outcome;

fn kc(auth: Auth) -> Result<Kubeconfig, String> {
    Ok(Kubeconfig {
        context: "dev".into(),
        user: "alice".into(),
        server: "https://192.0.2.1:6443".into(),
        auth,
    })
}

#[test]
fn a_missing_exec_plugin_is_named_with_its_install_hint() {
    let c = kubeconfig(&kc(Auth::Exec {
        command: "gke-gcloud-auth-plugin".into(),
        found: false,
        install_hint: Some("Install it with gcloud components install".into()),
    }));
    assert_eq!(c.outcome, Outcome::Fail);
    assert_eq!(c.code, Some(ExitCode::Credentials));
    assert!(
        c.detail
            .contains("`gke-gcloud-auth-plugin`, which is not on PATH")
    );
    assert!(
        c.fix
            .unwrap()
            .contains("(Install it with gcloud components install)")
    );
    let ok = kubeconfig(&kc(Auth::Exec {
        command: "kubelogin".into(),
        found: true,
        install_hint: None,
    }));
    assert_eq!(ok.outcome, Outcome::Pass);
    assert!(
        ok.detail.contains("credential plugin kubelogin"),
        "{}",
        ok.detail
    );
    assert_eq!(kubeconfig(&kc(Auth::None)).outcome, Outcome::Warn);
    let missing = kubeconfig(&Err("no kubeconfig".into()));
    assert!(missing.fix.unwrap().contains("--kubeconfig"));
}

#[test]
fn api_failures_map_to_credentials_or_unreachable() {
    let s = "https://192.0.2.1:6443";
    assert_eq!(
        api(s, &ApiProbe::Unauthorized).code,
        Some(ExitCode::Credentials)
    );
    let down = api(s, &ApiProbe::Unreachable("connection refused".into()));
    assert_eq!(down.code, Some(ExitCode::ApiUnreachable));
    assert!(
        down.detail
            .ends_with("cannot be reached: connection refused")
    );
    let up = api(
        s,
        &ApiProbe::Answered {
            version: "v1.33.0".into(),
            user: Some("alice".into()),
        },
    );
    assert_eq!(
        up.detail,
        format!("{s} answers (Kubernetes v1.33.0), authenticated as alice")
    );
}

#[test]
fn needs_are_what_the_shipped_kwg_user_roles_grant() {
    let needs = needs("team-kwg");
    let has = |verb: &str, resource: &str, ns: Option<&str>| {
        needs
            .iter()
            .any(|n| n.verb == verb && n.resource == resource && n.namespace.as_deref() == ns)
    };
    assert!(has("create", "secrets", Some("team-kwg")), "{needs:?}");
    assert!(has("delete", "secrets", Some("team-kwg")));
    assert!(has("list", "namespaces", None));
    let info = needs
        .iter()
        .find(|n| n.resource == "configmaps" && n.verb == "get")
        .unwrap();
    assert_eq!(
        info.name.as_deref(),
        Some(kwg_contract::GATEWAY_INFO_CONFIGMAP)
    );
    assert_eq!(
        info.to_string(),
        "get configmaps kwg-gateway-info in team-kwg"
    );
    // The laptop's watch of the gateway info lists it first (by name): kwg doctor asks for
    // list and watch too, as the shipped Role grants them.
    for verb in ["list", "watch"] {
        let n = needs
            .iter()
            .find(|n| n.resource == "configmaps" && n.verb == verb)
            .unwrap_or_else(|| panic!("no {verb} configmaps need: {needs:?}"));
        assert_eq!(
            n.to_string(),
            format!("{verb} configmaps kwg-gateway-info in team-kwg")
        );
    }
    assert!(
        !needs
            .iter()
            .any(|n| n.namespace.as_deref() == Some("kwg-system"))
    );
}

#[test]
fn rbac_lists_every_denied_permission_and_the_binding_to_apply() {
    let n = |verb: &str, resource: &str| Need {
        verb: verb.into(),
        group: String::new(),
        resource: resource.into(),
        subresource: None,
        namespace: Some("kwg-system".into()),
        name: None,
    };
    let all_ok = [
        (n("create", "secrets"), Ok(true)),
        (n("get", "secrets"), Ok(true)),
    ];
    assert_eq!(rbac("alice", &all_ok).outcome, Outcome::Pass);
    let denied = [
        (n("create", "secrets"), Ok(false)),
        (n("get", "secrets"), Ok(true)),
        (n("delete", "secrets"), Ok(false)),
    ];
    let c = rbac("alice", &denied);
    assert_eq!(c.code, Some(ExitCode::Credentials));
    assert_eq!(
        c.detail,
        "alice may not create, delete secrets in kwg-system"
    );
    assert!(c.fix.unwrap().contains("manifests/rbac-user-binding.yaml"));
    let err = [(n("create", "secrets"), Err("403".into()))];
    assert!(rbac("alice", &err).detail.contains("cannot ask whether"));
}

fn info() -> GatewayInfo {
    GatewayInfo::from_json(
        br#"{"version":1,"publicKey":"p0DgqXpMPbxjtgkBYpjGFK6fJVGdjwi3mv3ZCw5qQV0=","endpoints":["192.0.2.1:31820"],
        "tunnelCidr":"100.77.0.0/16","gatewayIp":"100.77.0.1","serviceCidrs":["10.96.0.0/12"],
        "podCidrs":["10.244.0.0/16"],"dnsIp":"10.96.0.10","clusterDomain":"cluster.local","adminPort":9090}"#,
    )
    .unwrap()
}

#[test]
fn gateway_scaled_to_zero_names_the_scale_command() {
    let i = InfoProbe::Valid(Box::new(info()));
    let c = gateway("kwg-system", "kwg-gateway", &i, Some((0, 0, 0)));
    assert_eq!(c.code, Some(ExitCode::GatewayMissing));
    assert!(c.detail.contains("0/0 pods"), "{}", c.detail);
    assert_eq!(
        c.fix.unwrap(),
        "scale it up: kubectl -n kwg-gateway scale deployment kwg-gateway --replicas=1"
    );
    let crashing = gateway("kwg-system", "kwg-gateway", &i, Some((0, 1, 1)));
    assert!(crashing.fix.unwrap().contains("describe deployment"));
    assert_eq!(
        gateway("kwg-system", "kwg-gateway", &i, Some((1, 1, 1))).outcome,
        Outcome::Pass
    );
    let missing = gateway("kwg-system", "kwg-gateway", &InfoProbe::Missing, None);
    assert!(missing.fix.unwrap().contains("kubectl apply -k manifests/"));
    let newer = gateway(
        "kwg-system",
        "kwg-gateway",
        &InfoProbe::Invalid("contract version 2, this kwg speaks 1".into()),
        None,
    );
    assert!(newer.fix.unwrap().contains("release that matches"));
}

#[test]
fn a_deleted_or_lapsed_peer_is_named_as_such() {
    let now: chrono::DateTime<chrono::Utc> = "2026-01-01T00:10:00Z".parse().unwrap();
    let gone = peer(
        &SecretProbe::Missing {
            namespace: "kwg-system".into(),
            name: "kwg-peer-laptop".into(),
        },
        now,
    );
    assert_eq!(gone.outcome, Outcome::Fail);
    assert!(
        gone.detail
            .starts_with("the peer Secret kwg-system/kwg-peer-laptop was deleted"),
        "{}",
        gone.detail
    );
    let lapsed = peer(
        &SecretProbe::Present {
            lease_expires: Some("2026-01-01T00:09:00Z".parse().unwrap()),
        },
        now,
    );
    assert_eq!(lapsed.outcome, Outcome::Fail);
    assert_eq!(
        lapsed.detail,
        "the peer Secret's lease ended 1m ago: the gateway removes this peer"
    );
    let fine = peer(
        &SecretProbe::Present {
            lease_expires: Some("2026-01-01T00:20:00Z".parse().unwrap()),
        },
        now,
    );
    assert_eq!(fine.outcome, Outcome::Pass);
    assert_eq!(fine.detail, "in place, lease ends in 10m");
}

#[test]
fn rejected_credentials_fail_the_api_check_with_log_in_again() {
    let c = api("https://192.0.2.1:6443", &ApiProbe::Unauthorized);
    assert_eq!(c.outcome, Outcome::Fail);
    assert_eq!(c.code, Some(ExitCode::Credentials));
    assert!(c.fix.unwrap().starts_with("log in again"));
}

#[test]
fn node_tuning_warns_with_the_ethtool_fix_when_the_gateway_gets_one_datagram_per_frame() {
    let mut i = info();
    assert_eq!(
        node_tuning(&InfoProbe::Valid(Box::new(i.clone()))).outcome,
        Outcome::Skip
    );
    i.udp_receive = Some(kwg_contract::UdpReceive {
        one_per_frame: true,
        messages: 20_000,
        datagrams: 20_400,
        observed_at: "2026-12-07T17:00:00Z".parse().unwrap(),
    });
    let c = node_tuning(&InfoProbe::Valid(Box::new(i.clone())));
    assert_eq!(c.outcome, Outcome::Warn);
    assert_eq!(c.code, None, "a warning does not fail doctor");
    assert!(
        c.detail
            .contains("one UDP datagram per frame under load (1.0 per message"),
        "{}",
        c.detail
    );
    let fix = c.fix.unwrap();
    assert!(
        fix.contains("ethtool -K <nic> rx-udp-gro-forwarding on")
            && fix.contains("docs/performance.md"),
        "{fix}"
    );
    i.udp_receive = Some(kwg_contract::UdpReceive {
        one_per_frame: false,
        messages: 500,
        datagrams: 20_000,
        observed_at: "2026-12-07T17:00:00Z".parse().unwrap(),
    });
    let c = node_tuning(&InfoProbe::Valid(Box::new(i)));
    assert_eq!(c.outcome, Outcome::Pass);
    assert!(
        c.detail.contains("40.0 datagrams per message"),
        "{}",
        c.detail
    );
    assert_eq!(node_tuning(&InfoProbe::Missing).outcome, Outcome::Skip);
}
