//! Services follow their pods: load balancing, scaling, readiness gating.

mod common;

use common::eventually;
use std::collections::BTreeSet;

/// The pod names answering `http://echo.default/api/x` over `n` requests from `netns`; None if
/// a request fails (a pod being scaled away may still get a request while kube-proxy catches up,
/// as with a real kube-proxy).
fn echo_backends(c: &kwg_sim::testing::Cluster, netns: &str, n: usize) -> Option<BTreeSet<String>> {
    let mut seen = BTreeSet::new();
    for _ in 0..n {
        let body = c
            .exec_ok(
                netns,
                &["curl", "-sS", "-m", "3", "http://echo.default/api/x"],
            )
            .ok()?;
        let v: serde_json::Value = serde_json::from_str(&body).ok()?;
        seen.insert(v["pod"].as_str()?.to_string());
    }
    Some(seen)
}

#[test]
fn a_service_balances_over_its_pods_and_follows_scaling() {
    let c = common::cluster();
    let web = c.pod_netns("emojivoto", "web-app").unwrap();
    let pods: BTreeSet<String> = c
        .kubectl_admin(&[
            "get",
            "pods",
            "-l",
            "app=echo",
            "-o",
            "jsonpath={.items[*].metadata.name}",
        ])
        .unwrap()
        .split_whitespace()
        .map(str::to_string)
        .collect();
    assert_eq!(pods.len(), 2);
    // 30 requests over 2 random backends: missing one has probability 2^-29.
    assert_eq!(echo_backends(&c, &web, 30), Some(pods));

    c.kubectl_admin(&["scale", "deployment/echo", "--replicas=3"])
        .unwrap();
    c.kubectl_admin(&["rollout", "status", "deployment/echo", "--timeout=30s"])
        .unwrap();
    eventually(10, "3 endpoints in the EndpointSlice", || {
        let ips = c
            .kubectl_admin(&[
                "get",
                "endpointslice",
                "echo",
                "-o",
                "jsonpath={.endpoints[*].addresses[0]}",
            ])
            .ok()?;
        (ips.split_whitespace().count() == 3).then_some(())
    });
    eventually(10, "traffic reaching all 3 pods", || {
        (echo_backends(&c, &web, 40)?.len() == 3).then_some(())
    });

    c.kubectl_admin(&["scale", "deployment/echo", "--replicas=1"])
        .unwrap();
    eventually(15, "one backend left", || {
        (echo_backends(&c, &web, 10)?.len() == 1).then_some(())
    });
}

const UNREADY: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: unready, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: unready}}
  template:
    metadata: {labels: {app: unready}}
    spec:
      containers:
        - name: web
          image: kwg-sim:dev
          args: [workload, http, --port, "8080", --title, Unready]
          readinessProbe: {httpGet: {path: /readyz, port: 9999}}
---
apiVersion: v1
kind: Service
metadata: {name: unready, namespace: default}
spec:
  selector: {app: unready}
  ports: [{name: http, port: 80, targetPort: 8080}]
"#;

#[test]
fn a_pod_failing_its_readiness_probe_gets_no_traffic() {
    let c = common::cluster();
    c.kubectl_apply(&c.admin_kubeconfig(), UNREADY).unwrap();
    eventually(15, "the unready pod running", || {
        let phase = c.pod_field("default", "unready", ".status.phase").ok()?;
        (phase == "Running").then_some(())
    });
    let ip = c.pod_ip("default", "unready").unwrap();
    let web = c.pod_netns("emojivoto", "web-app").unwrap();
    // The process serves on its pod IP, but the Service has no ready endpoint and rejects.
    let page = c
        .exec_ok(
            &web,
            &["curl", "-sS", "-m", "3", &format!("http://{ip}:8080/")],
        )
        .unwrap();
    assert!(page.contains("<title>Unready</title>"));
    eventually(10, "a not-ready endpoint in the slice", || {
        let ready = c
            .kubectl_admin(&[
                "get",
                "endpointslice",
                "unready",
                "-o",
                "jsonpath={.endpoints[0].conditions.ready}",
            ])
            .ok()?;
        (ready == "false").then_some(())
    });
    assert_eq!(
        c.pod_field(
            "default",
            "unready",
            ".status.conditions[?(@.type==\"Ready\")].status"
        )
        .unwrap(),
        "False"
    );
    let out = c
        .exec(&web, &["curl", "-sS", "-m", "3", "http://unready.default/"])
        .unwrap();
    assert!(!out.status.success());
    // curl's exit code 7 is "could not connect" (rejected); a timeout would be 28.
    assert_eq!(
        out.status.code(),
        Some(7),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
