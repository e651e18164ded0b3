//! Reach follows a Service's endpoints (CVE-2021-25740 through kwg): a user who may write
//! Services and EndpointSlices in one namespace makes a Service without selector whose
//! hand-written EndpointSlices point at a pod of another namespace and at the node's API
//! server. Through its ClusterIP a joined laptop reaches neither, while a Service next to it
//! is served, nor through one whose slice spells a pod address with leading zeros; a new
//! endpoint takes effect within about a second, a removed one only after 30 s.

use anyhow::Result;
use kwg_e2e::laptop::{Laptop, laptop, shared, text};
use kwg_e2e::wait_for;
use kwg_sim::testing::Cluster;
use serde_json::{Value, json};
use std::time::{Duration, Instant};

/// The developer as a namespace's team: `edit` in emojivoto (its only reach: the `view` in
/// default the sim gives its group is removed, so echo there is another team's) plus
/// EndpointSlice writes there, as a cluster grants a team that points Services without
/// selector at backends of its own (`edit` alone writes no EndpointSlices since Kubernetes
/// 1.22).
fn developer_owns_emojivoto(c: &Cluster) -> Result<()> {
    c.kubectl_admin(&["-n", "default", "delete", "rolebinding", "developers-view"])?;
    let docs = [
        json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": {"name": "endpointslice-writer", "namespace": "emojivoto"},
            "rules": [{"apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                       "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"]}]}),
        binding("developer-edit", "ClusterRole", "edit"),
        binding("developer-endpointslices", "Role", "endpointslice-writer"),
    ];
    for doc in docs {
        c.kubectl_apply(&c.admin_kubeconfig(), &doc.to_string())?;
    }
    Ok(())
}

fn binding(name: &str, kind: &str, role: &str) -> Value {
    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": {"name": name, "namespace": "emojivoto"},
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": kind, "name": role},
        "subjects": [{"apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "developer"}]})
}

/// A Service without selector in emojivoto: `http` 80 and `https` 443.
fn selectorless(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Service", "metadata": {"name": name, "namespace": "emojivoto"},
        "spec": {"ports": [{"name": "http", "port": 80, "targetPort": 80},
                           {"name": "https", "port": 443, "targetPort": 443}]}})
}

/// A hand-written EndpointSlice of Service `service`: `addrs` on one named port.
fn slice(service: &str, name: &str, port: (&str, u16), addrs: &[&str]) -> Value {
    let eps: Vec<Value> = addrs
        .iter()
        .map(|a| json!({"addresses": [a], "conditions": {"ready": true}}))
        .collect();
    json!({"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": {"name": name, "namespace": "emojivoto",
                     "labels": {"kubernetes.io/service-name": service,
                                "endpointslice.kubernetes.io/managed-by": "team.example.com"}},
        "addressType": "IPv4", "ports": [{"name": port.0, "port": port.1, "protocol": "TCP"}],
        "endpoints": eps})
}

/// Whether `url` answered the laptop within 0.5 s (any HTTP status: it was reached; the
/// cluster is one machine away).
fn reached(l: &Laptop, url: &str) -> bool {
    l.run(&["curl", "-sk", "-o", "/dev/null", "--max-time", "0.5", url])
        .status
        .success()
}

fn svc_ip(c: &Cluster, name: &str) -> Result<String> {
    let jp = "jsonpath={.spec.clusterIP}";
    Ok(c.kubectl_admin(&["-n", "emojivoto", "get", "svc", name, "-o", jp])?)
}

/// How long after `start` `url` is reached (`want`) or refused (`!want`) three times in a row:
/// when the first of those three attempts started.
fn settles(l: &Laptop, url: &str, want: bool, start: Instant) -> Result<Duration> {
    let mut first = None;
    let mut streak = 0;
    wait_for(url, Duration::from_secs(10), || {
        let at = start.elapsed();
        if reached(l, url) == want {
            first.get_or_insert(at);
            streak += 1;
        } else {
            (first, streak) = (None, 0);
        }
        Ok((streak == 3).then_some(()))
    })?;
    Ok(first.unwrap_or_default())
}

#[test]
fn a_cluster_ip_pointing_outside_the_peers_reach_is_refused() -> Result<()> {
    let c = shared();
    developer_owns_emojivoto(&c)?;
    let l = laptop(&c, "pivot");
    l.join(&["--namespace", "emojivoto"]);
    let web = c.pod_ip("emojivoto", "web-app")?;
    let echo = c.pod_ip("default", "echo")?;
    let api = "192.0.2.1";
    // The setup: `default` is out of the developer's reach, emojivoto in it.
    assert!(!reached(&l, &format!("http://{echo}:8080/")));
    assert!(text(&l.curl("web-app:80").stdout).contains("Emoji Vote"));

    // As the developer: `pivot` toward echo in `default` and the node's API server, `own`
    // toward emojivoto's own web-app (a legitimate Service without selector).
    let dev = c.developer_kubeconfig();
    for doc in [
        selectorless("pivot"),
        slice("pivot", "pivot-http", ("http", 8080), &[&echo]),
        slice("pivot", "pivot-https", ("https", 6443), &[api]),
        selectorless("own"),
        slice("own", "own-http", ("http", 80), &[&web]),
    ] {
        c.kubectl_apply(&dev, &doc.to_string())?;
    }
    let (pivot, own) = (svc_ip(&c, "pivot")?, svc_ip(&c, "own")?);
    let (pivot_http, pivot_https) = (format!("http://{pivot}/"), format!("https://{pivot}/"));
    let own_http = format!("http://{own}/");
    // The Service next to it is served (also once the gateway has seen its slice)...
    settles(&l, &own_http, true, Instant::now())?;
    assert!(text(&l.curl(&own_http).stdout).contains("Emoji Vote"));
    // ...while pivot reaches neither echo nor the API server. A pod does: kube-proxy follows
    // the slices, so the refusal is the gateway's.
    let pod = c.pod_netns("emojivoto", "web-app")?;
    let from_pod = kwg_sim::testing::exec(&pod, &["curl", "-s", "--max-time", "2", &pivot_http])?;
    assert!(text(&from_pod.stdout).contains("Echo"), "{from_pod:?}");
    for url in [&pivot_http, &pivot_https] {
        settles(&l, url, false, Instant::now())?;
    }
    // echo's address with leading zeros (the API server takes it, kube-proxy reads it as
    // echo's): refused by the gateway itself, which names it as the last refusal.
    let zeros: Vec<String> = echo.split('.').map(|o| format!("{o:0>3}")).collect();
    for doc in [
        selectorless("zeros"),
        slice("zeros", "zeros-http", ("http", 8080), &[&zeros.join(".")]),
    ] {
        c.kubectl_apply(&dev, &doc.to_string())?;
    }
    let zeros_ip = svc_ip(&c, "zeros")?;
    wait_for(
        "the gateway to refuse zeros",
        Duration::from_secs(10),
        || {
            reached(&l, &format!("http://{zeros_ip}/"));
            let status = l.run(&["kwg", "status", "-o", "json"]).stdout;
            let json: Value = serde_json::from_slice(&status)?;
            let last = &json["reach"]["lastRefused"];
            Ok((last["address"] == zeros_ip.as_str()).then_some(()))
        },
    )?;

    // The slices change: pivot's http now leads to web-app, its https still to the node: one
    // ClusterIP, judged whole (every port), stays refused...
    let to_web = slice("pivot", "pivot-http", ("http", 80), &[&web]);
    c.kubectl_apply(&dev, &to_web.to_string())?;
    settles(&l, &pivot_http, false, Instant::now())?;
    // ...even once that slice goes: kube-proxy may still send a new connection to the node
    // for a moment, so the gateway counts a removed endpoint for 30 s (not waited for here).
    let delete = ["-n", "emojivoto", "delete", "endpointslice", "pivot-https"];
    c.kubectl(&dev, &delete)?;
    let start = Instant::now();
    while start.elapsed() < Duration::from_secs(3) {
        assert!(
            !reached(&l, &pivot_http),
            "served {:?} after",
            start.elapsed()
        );
    }
    // And back: `own` gains an endpoint at the node; refused within about a second (timed
    // from before kubectl, which takes ~0.2 s itself).
    let to_node = slice("own", "own-http", ("http", 80), &[&web, api]);
    let start = Instant::now();
    c.kubectl_apply(&dev, &to_node.to_string())?;
    let closed = settles(&l, &own_http, false, start)?;
    eprintln!("after the slices changed: own refused in {closed:?}");
    assert!(
        closed < Duration::from_millis(1500),
        "refused after {closed:?}"
    );
    Ok(())
}
