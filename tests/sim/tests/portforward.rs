//! The real `kubectl port-forward` through the API server stand-in, from the laptop: HTTP to
//! emojivoto's web-app over the WebSocket tunnel, the SPDY fallback for a user who may only
//! `create pods/portforward`, the kubelet's error for a closed port, and the real 403.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};

use kwg_sim::testing::Cluster;

/// A running `kubectl port-forward`, killed by PID on drop; its stdout is kept open (kubectl
/// writes "Handling connection for N" there and fails on a closed pipe).
struct Forward(
    Child,
    #[allow(dead_code)] BufReader<std::process::ChildStdout>,
);

impl Drop for Forward {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn web_pod(c: &Cluster) -> String {
    c.pod_field("emojivoto", "web-app", ".metadata.name")
        .unwrap()
}

/// Start `kubectl port-forward pod/<pod> LOCAL:REMOTE` in the laptop and wait for "Forwarding from".
fn forward(c: &Cluster, kubeconfig: &std::path::Path, pod: &str, ports: &str) -> Forward {
    forward_with(c, kubeconfig, pod, ports, &[])
}

/// [`forward`] with more kubectl flags (e.g. `-v=6` to log each request and its answer).
fn forward_with(
    c: &Cluster,
    kubeconfig: &std::path::Path,
    pod: &str,
    ports: &str,
    flags: &[&str],
) -> Forward {
    let mut child = Command::new("ip")
        .args([
            "netns",
            "exec",
            &c.netns("laptop"),
            "kubectl",
            "--kubeconfig",
        ])
        .arg(kubeconfig)
        .args([
            "-n",
            "emojivoto",
            "port-forward",
            &format!("pod/{pod}"),
            ports,
        ])
        .args(flags)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("kubectl runs");
    let mut out = BufReader::new(child.stdout.take().unwrap());
    let mut line = String::new();
    out.read_line(&mut line).unwrap();
    assert!(
        line.starts_with("Forwarding from 127.0.0.1:"),
        "kubectl said {line:?}"
    );
    Forward(child, out)
}

fn curl(c: &Cluster, url: &str) -> std::process::Output {
    c.exec(&c.netns("laptop"), &["curl", "-sS", "-m", "5", url])
        .unwrap()
}

/// The page at `url`, or a panic with curl's complaint.
fn page(c: &Cluster, url: &str) -> String {
    let out = curl(c, url);
    let page = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(
        page.contains("<title>Emoji Vote</title>"),
        "{url}: {page} {}",
        String::from_utf8_lossy(&out.stderr)
    );
    page
}

#[test]
fn kubectl_port_forward_carries_http_and_answers_like_a_real_cluster() {
    let c = common::cluster();
    let pod = web_pod(&c);

    // WebSocket (SPDY tunnelled), as admin: two requests over two forwarded connections.
    let fw = forward(&c, &c.admin_kubeconfig(), &pod, "18080:80");
    for _ in 0..2 {
        page(&c, "http://127.0.0.1:18080/");
    }
    drop(fw);

    // Nothing listens on 81 in the pod: the kubelet's error reaches kubectl's stderr.
    let mut fw = forward(&c, &c.admin_kubeconfig(), &pod, "18081:81");
    let got = curl(&c, "http://127.0.0.1:18081/");
    assert!(!got.status.success());
    let _ = fw.0.kill();
    let mut err = String::new();
    std::io::Read::read_to_string(fw.0.stderr.as_mut().unwrap(), &mut err).unwrap();
    let want = "an error occurred forwarding 18081 -> 81: error forwarding port 81 to pod ";
    assert!(err.contains(want), "{err}");
    assert!(
        err.contains("failed to connect to localhost:81 inside namespace")
            && err.contains("IPv4: dial tcp4 127.0.0.1:81: connect: connection refused"),
        "{err}"
    );

    // developer has `view` in default (get pods) but no pods/portforward there (its `edit` in
    // emojivoto would allow it): the WebSocket GET is refused (get), kubectl falls back to
    // SPDY (POST), and prints the create refusal.
    let echo = c.pod_field("default", "echo", ".metadata.name").unwrap();
    let out = c
        .kubectl_output(
            &c.developer_kubeconfig(),
            &[
                "-n",
                "default",
                "port-forward",
                &format!("pod/{echo}"),
                "18082:8080",
            ],
        )
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert_eq!(
        stderr.trim(),
        format!(
            "error: error upgrading connection: pods \"{echo}\" is forbidden: User \"developer\" \
             cannot create resource \"pods/portforward\" in API group \"\" in the namespace \"default\""
        )
    );
    // A missing pod: kubectl's own GET gets the 404.
    let out = c
        .kubectl_output(
            &c.admin_kubeconfig(),
            &["-n", "emojivoto", "port-forward", "pod/nope", "18083:80"],
        )
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&out.stderr).trim(),
        "Error from server (NotFound): pods \"nope\" not found"
    );
}

#[test]
fn create_only_rbac_works_through_the_spdy_fallback() {
    let c = common::cluster();
    let pod = web_pod(&c);
    // `nobody` may get pods (kubectl reads the pod first) and create pods/portforward, not get
    // it: the WebSocket upgrade (a GET) is refused and the SPDY upgrade (a POST) carries it.
    let rbac = r#"
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: forwarder, namespace: emojivoto}
rules:
- {apiGroups: [""], resources: [pods], verbs: [get]}
- {apiGroups: [""], resources: [pods/portforward], verbs: [create]}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: forwarder, namespace: emojivoto}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: forwarder}
subjects:
- {apiGroup: rbac.authorization.k8s.io, kind: User, name: nobody}
"#;
    c.kubectl_apply(&c.admin_kubeconfig(), rbac).unwrap();
    // -v=6: kubectl logs each request it sends with the answer's status.
    let mut fw = forward_with(&c, &c.nobody_kubeconfig(), &pod, "18090:80", &["-v=6"]);
    page(&c, "http://127.0.0.1:18090/");
    // kubectl took the connection (on its stdout) ...
    let mut line = String::new();
    while line.starts_with("Forwarding from") || line.is_empty() {
        line.clear();
        fw.1.read_line(&mut line).unwrap();
    }
    assert_eq!(line.trim(), "Handling connection for 18090");
    let _ = fw.0.kill();
    let mut log = String::new();
    std::io::Read::read_to_string(fw.0.stderr.as_mut().unwrap(), &mut log).unwrap();
    // ... and the one upgrade the API server granted was SPDY's POST: kubectl's WebSocket
    // dialer was refused and it fell back, so the page came through the SPDY session.
    let url = format!("/api/v1/namespaces/emojivoto/pods/{pod}/portforward\"");
    let answered = |verb: &str, status: &str| {
        log.lines().any(|l| {
            l.contains(&format!("\"Response\" verb=\"{verb}\""))
                && l.contains(&url)
                && l.contains(&format!("status=\"{status}"))
        })
    };
    assert!(
        log.contains("fallback to secondary dialer from primary dialer err: unable to upgrade streaming request: pods")
            && log.contains("cannot get resource \"pods/portforward\""),
        "the WebSocket dialer was not refused:\n{log}"
    );
    assert!(
        answered("POST", "101 Switching Protocols"),
        "no SPDY upgrade:\n{log}"
    );
    assert!(
        !answered("GET", "101"),
        "the WebSocket upgrade was granted:\n{log}"
    );
}
