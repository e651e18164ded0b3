//! kube-rs against the stand-in: CRUD, conflicts, selectors, validation and watchers.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Namespace, Secret, Service};
use kube::api::{Api, DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use serde_json::json;

use common::Cluster;

fn api_error(e: kube::Error) -> Box<kube::core::Status> {
    match e {
        kube::Error::Api(s) => s,
        other => panic!("expected an API error, got {other:?}"),
    }
}

fn secret(name: &str, labels: &[(&str, &str)], string_data: &[(&str, &str)]) -> Secret {
    serde_json::from_value(json!({
        "metadata": {"name": name, "labels": labels.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>()},
        "stringData": string_data.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect::<BTreeMap<_, _>>(),
    }))
    .unwrap()
}

#[tokio::test]
async fn secrets_crud_conflict_and_patches() {
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");

    let created = api
        .create(
            &PostParams::default(),
            &secret("s1", &[("kwg.io/peer", "true")], &[("a", "hello")]),
        )
        .await
        .unwrap();
    assert_eq!(
        created.data.as_ref().unwrap()["a"],
        ByteString(b"hello".to_vec())
    );
    assert_eq!(created.type_.as_deref(), Some("Opaque"));
    assert!(created.string_data.is_none());
    assert!(created.metadata.uid.is_some() && created.metadata.creation_timestamp.is_some());
    let rv1: u64 = created
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();

    let dup = api_error(
        api.create(&PostParams::default(), &secret("s1", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (dup.code, dup.reason.as_str(), dup.message.as_str()),
        (409, "AlreadyExists", "secrets \"s1\" already exists")
    );

    // Update with the current resourceVersion works and bumps it; a stale one is a 409.
    let mut fresh = api.get("s1").await.unwrap();
    fresh
        .data
        .as_mut()
        .unwrap()
        .insert("b".into(), ByteString(b"x".to_vec()));
    let updated = api
        .replace("s1", &PostParams::default(), &fresh)
        .await
        .unwrap();
    let rv2: u64 = updated
        .metadata
        .resource_version
        .clone()
        .unwrap()
        .parse()
        .unwrap();
    assert!(rv2 > rv1);
    let stale = api_error(
        api.replace("s1", &PostParams::default(), &fresh)
            .await
            .unwrap_err(),
    );
    assert_eq!(stale.code, 409);
    assert_eq!(
        stale.message,
        "Operation cannot be fulfilled on secrets \"s1\": the object has been modified; please apply your changes to the latest version and try again"
    );

    // Merge, strategic and JSON patches.
    let pp = PatchParams::default();
    api.patch(
        "s1",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"m": "1"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "s1",
        &pp,
        &Patch::Strategic(json!({"metadata": {"annotations": {"kwg.io/tunnel-ip": "100.77.0.2"}}})),
    )
    .await
    .unwrap();
    let jp: json_patch::Patch =
        serde_json::from_value(json!([{"op": "remove", "path": "/data/b"}])).unwrap();
    let p = api.patch("s1", &pp, &Patch::<()>::Json(jp)).await.unwrap();
    assert_eq!(p.metadata.labels.as_ref().unwrap()["m"], "1");
    assert_eq!(
        p.metadata.annotations.as_ref().unwrap()["kwg.io/tunnel-ip"],
        "100.77.0.2"
    );
    assert_eq!(p.data.unwrap().keys().collect::<Vec<_>>(), vec!["a"]);

    // A patch naming the object's own uid applies; another uid is refused (uid is immutable),
    // and the object is left as it was.
    let uid = created.metadata.uid.clone().unwrap();
    let lease =
        |uid: &str| Patch::Merge(json!({"metadata": {"uid": uid}, "stringData": {"c": "1"}}));
    let own = api.patch("s1", &pp, &lease(&uid)).await.unwrap();
    assert_eq!(own.metadata.uid.as_deref(), Some(uid.as_str()));
    let other = api_error(api.patch("s1", &pp, &lease("0d5e")).await.unwrap_err());
    assert_eq!(
        (other.code, other.reason.as_str(), other.message.as_str()),
        (
            422,
            "Invalid",
            "Secret \"s1\" is invalid: metadata.uid: Invalid value: \"0d5e\": field is immutable"
        )
    );
    assert_eq!(api.get("s1").await.unwrap().metadata.uid, Some(uid));

    // Server-side apply creates and then updates.
    let ssa = PatchParams::apply("test").force();
    let applied = api
        .patch("ssa", &ssa, &Patch::Apply(json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "ssa"}, "stringData": {"k": "v"}})))
        .await
        .unwrap();
    assert_eq!(applied.data.unwrap()["k"], ByteString(b"v".to_vec()));

    // generateName.
    let mut g = secret("", &[("kwg.io/peer", "true")], &[]);
    g.metadata.name = None;
    g.metadata.generate_name = Some("peer-".into());
    let gen_name = api
        .create(&PostParams::default(), &g)
        .await
        .unwrap()
        .metadata
        .name
        .unwrap();
    assert!(
        gen_name.starts_with("peer-") && gen_name.len() == 10,
        "{gen_name}"
    );

    // Selectors.
    let names = |l: Vec<Secret>| {
        l.into_iter()
            .map(|s| s.metadata.name.unwrap())
            .collect::<Vec<_>>()
    };
    let peers = api
        .list(&ListParams::default().labels("kwg.io/peer=true"))
        .await
        .unwrap()
        .items;
    assert_eq!(names(peers), vec![gen_name.clone(), "s1".to_string()]);
    let not_peers = api
        .list(&ListParams::default().labels("kwg.io/peer notin (true)"))
        .await
        .unwrap()
        .items;
    assert_eq!(names(not_peers), vec!["ssa".to_string()]);
    let by_name = api
        .list(&ListParams::default().fields("metadata.name=ssa"))
        .await
        .unwrap()
        .items;
    assert_eq!(names(by_name), vec!["ssa".to_string()]);
    let all_ns: Api<Secret> = Api::all(c.client("admin").await);
    let in_default = all_ns
        .list(&ListParams::default().fields("metadata.namespace=default,metadata.name!=ssa"))
        .await
        .unwrap();
    assert_eq!(in_default.items.len(), 2);

    // deleteCollection by label, then single delete and 404.
    let deleted = api
        .delete_collection(
            &DeleteParams::default(),
            &ListParams::default().labels("kwg.io/peer=true"),
        )
        .await
        .unwrap();
    let deleted = deleted
        .left()
        .expect("deleteCollection returns the deleted objects");
    assert_eq!(deleted.items.len(), 2);
    assert_eq!(
        names(api.list(&ListParams::default()).await.unwrap().items),
        vec!["ssa".to_string()]
    );
    api.delete("ssa", &DeleteParams::default()).await.unwrap();
    let gone = api_error(api.get("ssa").await.unwrap_err());
    assert_eq!(
        (gone.code, gone.message.as_str()),
        (404, "secrets \"ssa\" not found")
    );
}

#[tokio::test]
async fn validation_messages_and_dry_run() {
    let c = Cluster::start().await;
    let client = c.client("admin").await;
    let svcs: Api<Service> = Api::namespaced(client.clone(), "default");
    let bad: Service = serde_json::from_value(json!({"metadata": {"name": "probe"}, "spec": {"clusterIP": "1.1.1.1", "ports": [{"port": 443}]}})).unwrap();
    let dry = PostParams {
        dry_run: true,
        ..Default::default()
    };
    let e = api_error(svcs.create(&dry, &bad).await.unwrap_err());
    assert_eq!(e.code, 422);
    assert_eq!(
        e.message,
        "Service \"probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.1.1.1\"}: failed to allocate IP 1.1.1.1: the provided IP (1.1.1.1) is not in the valid range. The range of valid IPs is 10.96.0.0/12"
    );
    // A dry-run create stores nothing.
    let ok: Service = serde_json::from_value(
        json!({"metadata": {"name": "dry"}, "spec": {"ports": [{"port": 80}]}}),
    )
    .unwrap();
    let d = svcs.create(&dry, &ok).await.unwrap();
    assert!(d.spec.unwrap().cluster_ip.unwrap().starts_with("10."));
    assert!(svcs.get_opt("dry").await.unwrap().is_none());

    // Allocation: ClusterIPs from the range, the kubernetes Service has the first one.
    let k = svcs.get("kubernetes").await.unwrap();
    assert_eq!(k.spec.unwrap().cluster_ip.as_deref(), Some("10.96.0.1"));
    let headless: Service =
        serde_json::from_value(json!({"metadata": {"name": "hl"}, "spec": {"clusterIP": "None"}}))
            .unwrap();
    assert_eq!(
        svcs.create(&PostParams::default(), &headless)
            .await
            .unwrap()
            .spec
            .unwrap()
            .cluster_ip
            .as_deref(),
        Some("None")
    );
    let dns: Service = serde_json::from_value(json!({"metadata": {"name": "kube-dns"}, "spec": {"clusterIP": "10.96.0.10", "ports": [{"port": 53, "protocol": "UDP"}]}})).unwrap();
    svcs.create(&PostParams::default(), &dns).await.unwrap();
    let mut again = dns.clone();
    again.metadata.name = Some("dns2".into());
    let taken = api_error(
        svcs.create(&PostParams::default(), &again)
            .await
            .unwrap_err(),
    );
    assert!(
        taken
            .message
            .ends_with("failed to allocate IP 10.96.0.10: provided IP is already allocated"),
        "{}",
        taken.message
    );

    // NodePorts: kept when requested, allocated otherwise, 422 when taken.
    let np = |name: &str, port: Option<u16>| -> Service {
        let mut p = json!({"port": 51820, "protocol": "UDP"});
        if let Some(port) = port {
            p["nodePort"] = json!(port);
        }
        serde_json::from_value(
            json!({"metadata": {"name": name}, "spec": {"type": "NodePort", "ports": [p]}}),
        )
        .unwrap()
    };
    let a = svcs
        .create(&PostParams::default(), &np("gw", Some(31820)))
        .await
        .unwrap();
    assert_eq!(a.spec.unwrap().ports.unwrap()[0].node_port, Some(31820));
    let b = svcs
        .create(&PostParams::default(), &np("gw2", None))
        .await
        .unwrap();
    let allocated = b.spec.unwrap().ports.unwrap()[0].node_port.unwrap();
    assert!((30000..=32767).contains(&allocated) && allocated != 31820);
    let e = api_error(
        svcs.create(&PostParams::default(), &np("gw3", Some(31820)))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        e.message,
        "Service \"gw3\" is invalid: spec.ports[0].nodePort: Invalid value: 31820: provided port is already allocated"
    );
    // TCP and UDP of one port number share a NodePort, requested or allocated (alloc.go).
    let both = |name: &str, port: Option<u16>| -> Service {
        let mut s = np(name, port);
        let mut tcp = s.spec.as_ref().unwrap().ports.as_ref().unwrap()[0].clone();
        tcp.name = Some("tcp".into());
        tcp.protocol = Some("TCP".into());
        let ports = s.spec.as_mut().unwrap().ports.as_mut().unwrap();
        ports[0].name = Some("udp".into());
        ports.push(tcp);
        s
    };
    for (name, req) in [("gw4", Some(31821)), ("gw5", None)] {
        let s = svcs
            .create(&PostParams::default(), &both(name, req))
            .await
            .unwrap();
        let ports = s.spec.unwrap().ports.unwrap();
        assert!(ports[0].node_port.is_some());
        assert_eq!(ports[0].node_port, ports[1].node_port, "{name}");
    }

    // Names.
    let secrets: Api<Secret> = Api::namespaced(client.clone(), "default");
    let e = api_error(
        secrets
            .create(&PostParams::default(), &secret("Bad_Name", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert!(e.message.starts_with("Secret \"Bad_Name\" is invalid: metadata.name: Invalid value: \"Bad_Name\": a lowercase RFC 1123 subdomain"), "{}", e.message);

    // Namespaces: a missing one is a 404; deleting one deletes what is in it.
    let in_missing: Api<Secret> = Api::namespaced(client.clone(), "nope");
    let e = api_error(
        in_missing
            .create(&PostParams::default(), &secret("x", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(
        (e.code, e.message.as_str()),
        (404, "namespaces \"nope\" not found")
    );
    let nss: Api<Namespace> = Api::all(client.clone());
    nss.create(
        &PostParams::default(),
        &serde_json::from_value(json!({"metadata": {"name": "kwg-system"}})).unwrap(),
    )
    .await
    .unwrap();
    let kwg: Api<Secret> = Api::namespaced(client.clone(), "kwg-system");
    kwg.create(&PostParams::default(), &secret("x", &[], &[]))
        .await
        .unwrap();
    nss.delete("kwg-system", &DeleteParams::default())
        .await
        .unwrap();
    assert!(nss.get_opt("kwg-system").await.unwrap().is_none());
    assert!(
        all_secret_names(&client)
            .await
            .iter()
            .all(|(ns, _)| ns != "kwg-system")
    );
}

async fn all_secret_names(client: &kube::Client) -> Vec<(String, String)> {
    let all: Api<Secret> = Api::all(client.clone());
    all.list(&ListParams::default())
        .await
        .unwrap()
        .items
        .into_iter()
        .map(|s| (s.metadata.namespace.unwrap(), s.metadata.name.unwrap()))
        .collect()
}

#[tokio::test]
async fn unauthenticated_and_forbidden() {
    let c = Cluster::start().await;
    c.write_kubeconfig("stranger", "not-a-token", "default");
    let api: Api<Secret> = Api::namespaced(c.client("stranger").await, "default");
    let e = api_error(api.list(&ListParams::default()).await.unwrap_err());
    assert_eq!((e.code, e.message.as_str()), (401, "Unauthorized"));
    let api: Api<Secret> = Api::namespaced(c.client("nobody").await, "default");
    let e = api_error(
        api.create(&PostParams::default(), &secret("x", &[], &[]))
            .await
            .unwrap_err(),
    );
    assert_eq!(e.code, 403);
    assert_eq!(
        e.message,
        "secrets is forbidden: User \"nobody\" cannot create resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
    // A ServiceAccount token with a RoleBinding limited by resourceNames.
    let admin = c.client("admin").await;
    let roles: Api<k8s_openapi::api::rbac::v1::Role> = Api::namespaced(admin.clone(), "default");
    roles
        .create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "key-reader"},
            "rules": [{"apiGroups": [""], "resources": ["secrets"], "verbs": ["get"], "resourceNames": ["gw-key"]}]})).unwrap())
        .await
        .unwrap();
    let rbs: Api<k8s_openapi::api::rbac::v1::RoleBinding> =
        Api::namespaced(admin.clone(), "default");
    rbs.create(&PostParams::default(), &serde_json::from_value(json!({"metadata": {"name": "gw"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "key-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "gw", "namespace": "default"}]})).unwrap())
        .await
        .unwrap();
    Api::<Secret>::namespaced(admin, "default")
        .create(
            &PostParams::default(),
            &secret("gw-key", &[], &[("k", "v")]),
        )
        .await
        .unwrap();
    let token = c.server.service_account_token("default", "gw");
    c.write_kubeconfig("gw", &token, "default");
    let sa: Api<Secret> = Api::namespaced(c.client("gw").await, "default");
    assert!(sa.get("gw-key").await.is_ok());
    let e = api_error(sa.get("other").await.unwrap_err());
    assert_eq!(
        e.message,
        "secrets \"other\" is forbidden: User \"system:serviceaccount:default:gw\" cannot get resource \"secrets\" in API group \"\" in the namespace \"default\""
    );
}

/// Collects what a watcher reports, as short strings.
fn describe(ev: &Result<watcher::Event<Secret>, watcher::Error>) -> String {
    let label = |s: &Secret| {
        let name = s.metadata.name.clone().unwrap_or_default();
        match s.metadata.labels.as_ref().and_then(|l| l.get("step")) {
            Some(step) => format!("{name}@{step}"),
            None => name,
        }
    };
    match ev {
        Ok(watcher::Event::Init) => "init".into(),
        Ok(watcher::Event::InitApply(s)) => format!("initapply {}", label(s)),
        Ok(watcher::Event::InitDone) => "initdone".into(),
        Ok(watcher::Event::Apply(s)) => format!("apply {}", label(s)),
        Ok(watcher::Event::Delete(s)) => format!("delete {}", label(s)),
        Err(watcher::Error::WatchError(s)) => format!("error {}", s.code),
        Err(e) => format!("error {e}"),
    }
}

async fn next_matching(
    stream: &mut (impl futures::Stream<Item = Result<watcher::Event<Secret>, watcher::Error>> + Unpin),
    seen: &mut Vec<String>,
    want: &str,
) {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        let ev = tokio::time::timeout_at(deadline, stream.next())
            .await
            .unwrap_or_else(|_| panic!("watcher never reported {want:?}; saw {seen:?}"))
            .expect("watcher streams forever");
        let d = describe(&ev);
        seen.push(d.clone());
        if d == want {
            return;
        }
    }
}

#[tokio::test]
async fn watcher_sees_changes_in_order_and_recovers_from_gone() {
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");
    api.create(&PostParams::default(), &secret("before", &[], &[]))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default()).boxed();
    let mut seen = Vec::new();
    next_matching(&mut stream, &mut seen, "initdone").await;
    assert_eq!(seen, vec!["init", "initapply before", "initdone"]);

    let pp = PatchParams::default();
    api.create(&PostParams::default(), &secret("w", &[("step", "1")], &[]))
        .await
        .unwrap();
    api.patch(
        "w",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"step": "2"}}})),
    )
    .await
    .unwrap();
    api.delete("w", &DeleteParams::default()).await.unwrap();
    seen.clear();
    next_matching(&mut stream, &mut seen, "delete w@2").await;
    assert_eq!(seen, vec!["apply w@1", "apply w@2", "delete w@2"]);

    // History lost and watches cut: the watcher resumes from a too-old version, gets 410
    // Gone, re-lists and keeps going.
    api.create(&PostParams::default(), &secret("after", &[], &[]))
        .await
        .unwrap();
    seen.clear();
    next_matching(&mut stream, &mut seen, "apply after").await;
    c.server.compact_history();
    seen.clear();
    next_matching(&mut stream, &mut seen, "initdone").await;
    assert_eq!(
        seen,
        vec![
            "error 410",
            "init",
            "initapply after",
            "initapply before",
            "initdone"
        ]
    );
    api.delete("before", &DeleteParams::default())
        .await
        .unwrap();
    seen.clear();
    next_matching(&mut stream, &mut seen, "delete before").await;
    assert_eq!(seen, vec!["delete before"]);
}

#[tokio::test]
async fn selector_watch_sees_unlabel_as_delete() {
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");
    let mut stream = watcher(
        api.clone(),
        watcher::Config::default().labels("kwg.io/peer=true"),
    )
    .boxed();
    let mut seen = Vec::new();
    next_matching(&mut stream, &mut seen, "initdone").await;
    api.create(&PostParams::default(), &secret("p", &[], &[]))
        .await
        .unwrap();
    let pp = PatchParams::default();
    api.patch(
        "p",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"kwg.io/peer": "true"}}})),
    )
    .await
    .unwrap();
    api.patch(
        "p",
        &pp,
        &Patch::Merge(json!({"metadata": {"labels": {"kwg.io/peer": null}}})),
    )
    .await
    .unwrap();
    seen.clear();
    next_matching(&mut stream, &mut seen, "delete p").await;
    assert_eq!(seen, vec!["apply p", "delete p"]);
}

#[tokio::test]
async fn ca_is_reused_and_shutdown_stops_serving() {
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");
    assert!(api.list(&ListParams::default()).await.is_ok());
    c.server.clone().shutdown().await;
    let refused = tokio::time::timeout(Duration::from_secs(10), api.list(&ListParams::default()))
        .await
        .expect("a stopped server answers quickly");
    assert!(refused.is_err(), "the server still answers after shutdown");

    // A second server on the same state directory keeps the CA, so old kubeconfigs stay valid.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let cfg = kwg_apiserver::Config {
        service_cidr: "10.96.0.0/12".parse().unwrap(),
        service_cidr_secondary: None,
        cert_sans: vec!["127.0.0.1".into()],
        state_dir: c.dir.path().join("state"),
    };
    let second = kwg_apiserver::ApiServer::serve(cfg, listener)
        .await
        .unwrap();
    assert_eq!(second.ca_pem(), c.server.ca_pem());
    second.shutdown().await;
}

#[tokio::test]
async fn streaming_list_watcher() {
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");
    api.create(&PostParams::default(), &secret("a", &[], &[]))
        .await
        .unwrap();
    let mut stream = watcher(api.clone(), watcher::Config::default().streaming_lists()).boxed();
    let mut seen = Vec::new();
    next_matching(&mut stream, &mut seen, "initdone").await;
    assert_eq!(seen, vec!["init", "initapply a", "initdone"]);
    api.create(&PostParams::default(), &secret("b", &[], &[]))
        .await
        .unwrap();
    seen.clear();
    next_matching(&mut stream, &mut seen, "apply b").await;
    assert_eq!(seen, vec!["apply b"]);
}

#[tokio::test]
async fn a_delete_with_a_uid_precondition_spares_a_recreated_object() {
    use kube::api::Preconditions;
    let c = Cluster::start().await;
    let api: Api<Secret> = Api::namespaced(c.client("admin").await, "default");
    let first = api
        .create(&PostParams::default(), &secret("pre", &[], &[]))
        .await
        .unwrap();
    api.delete("pre", &DeleteParams::default()).await.unwrap();
    let second = api
        .create(&PostParams::default(), &secret("pre", &[], &[]))
        .await
        .unwrap();
    let with_uid = |uid: Option<String>| DeleteParams {
        preconditions: Some(Preconditions {
            uid,
            resource_version: None,
        }),
        ..DeleteParams::default()
    };
    let e = api_error(
        api.delete("pre", &with_uid(first.metadata.uid.clone()))
            .await
            .unwrap_err(),
    );
    assert_eq!((e.code, e.reason.as_str()), (409, "Conflict"));
    assert_eq!(
        e.message,
        format!(
            "Precondition failed: UID in precondition: {}, UID in object meta: {}",
            first.metadata.uid.unwrap(),
            second.metadata.uid.clone().unwrap()
        )
    );
    assert!(api.get_opt("pre").await.unwrap().is_some());
    api.delete("pre", &with_uid(second.metadata.uid))
        .await
        .unwrap();
    assert!(api.get_opt("pre").await.unwrap().is_none());
}
