//! The kubelet role runs a Deployment as local processes, restarts them, stops them on delete.

mod common;

use common::eventually;

const DEPLOYMENT: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: probe, namespace: default}
spec:
  replicas: 1
  selector: {matchLabels: {app: probe}}
  template:
    metadata: {labels: {app: probe}}
    spec:
      containers:
        - name: probe
          image: ghcr.io/example/kwg-sim:test
          args: [workload, http, --port, "9000", --title, Probe Test]
          env:
            - {name: MY_POD, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
          readinessProbe: {httpGet: {path: /readyz, port: 9000}}
"#;

fn pid_in(ns: &str) -> Option<i32> {
    kwg_sim::sh::netns_pids(ns).into_iter().next()
}

#[test]
fn the_kubelet_runs_restarts_and_stops_a_deployment() {
    let c = common::cluster();
    c.kubectl_apply(&c.admin_kubeconfig(), DEPLOYMENT).unwrap();
    c.kubectl_admin(&["rollout", "status", "deployment/probe", "--timeout=30s"])
        .unwrap();

    let ns = c.pod_netns("default", "probe").unwrap();
    let pid = eventually(10, "the probe process", || pid_in(&ns));
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    let pod_name = ns
        .trim_start_matches(&format!("{}-pod-default-", c.prefix()))
        .to_string();
    assert!(String::from_utf8_lossy(&environ).contains(&format!("MY_POD={pod_name}")));
    let sa = c
        .exec_ok(
            &ns,
            &[
                "nsenter",
                "-t",
                &pid.to_string(),
                "-m",
                "cat",
                "/var/run/secrets/kubernetes.io/serviceaccount/namespace",
            ],
        )
        .unwrap();
    assert_eq!(sa, "default");

    // Killed: restarted in the same pod, restartCount 1, serving again.
    kwg_sim::sh::kill(pid, nix::sys::signal::Signal::SIGKILL);
    let new_pid = eventually(15, "a restarted process", || {
        pid_in(&ns).filter(|p| *p != pid)
    });
    assert_ne!(new_pid, pid);
    eventually(15, "restartCount 1", || {
        let n = c
            .pod_field(
                "default",
                "probe",
                ".status.containerStatuses[0].restartCount",
            )
            .ok()?;
        (n.trim() == "1").then_some(())
    });
    let echo = c.pod_netns("default", "echo").unwrap();
    eventually(15, "the probe page through its pod IP", || {
        let ip = c.pod_ip("default", "probe").ok()?;
        let page = c
            .exec_ok(
                &echo,
                &["curl", "-sS", "-m", "2", &format!("http://{ip}:9000/")],
            )
            .ok()?;
        page.contains("<title>Probe Test</title>").then_some(())
    });

    // Deleted: the process and the pod's namespace go away.
    c.kubectl_admin(&["delete", "deployment", "probe"]).unwrap();
    eventually(15, "the pod namespace to disappear", || {
        (!kwg_sim::sh::netns_list().unwrap().contains(&ns)).then_some(())
    });
    assert!(!kwg_sim::sh::alive(new_pid));
    eventually(10, "the Pod object to be deleted", || {
        c.kubectl_admin(&["get", "pods", "-l", "app=probe", "-o", "name"])
            .ok()
            .filter(|s| s.trim().is_empty())
    });
}
