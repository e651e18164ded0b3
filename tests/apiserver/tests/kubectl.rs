//! The real `kubectl` against the stand-in, with a written kubeconfig and no extra flags.

mod common;

use std::time::Duration;

use k8s_openapi::api::apps::v1::Deployment;
use kube::api::{Api, Patch, PatchParams};
use serde_json::json;
use tokio::io::{AsyncBufReadExt, BufReader};

use common::Cluster;

/// kubectl's table output as rows of words.
fn words(text: &str) -> Vec<Vec<&str>> {
    text.lines()
        .map(|l| l.split_whitespace().collect())
        .collect()
}

const APP: &str = r#"apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  labels: {app: web}
spec:
  replicas: 2
  selector:
    matchLabels: {app: web}
  template:
    metadata:
      labels: {app: web}
    spec:
      containers:
      - name: web
        image: nginx:1.25
        ports:
        - containerPort: 80
        env:
        - {name: MODE, value: "one"}
---
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  type: NodePort
  selector: {app: web}
  ports:
  - port: 80
    targetPort: 80
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata:
  name: reader
rules:
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list"]
"#;

#[tokio::test]
async fn get_create_label_delete_secrets() {
    let c = Cluster::start().await;
    let ns = c.kubectl_ok("admin", &["get", "ns"]).await;
    let lines = words(&ns);
    assert_eq!(lines[0], vec!["NAME", "STATUS", "AGE"]);
    let names: Vec<&str> = lines[1..].iter().map(|l| l[0]).collect();
    assert_eq!(
        names,
        vec!["default", "kube-node-lease", "kube-public", "kube-system"]
    );
    assert!(lines[1..].iter().all(|l| l[1] == "Active"), "{ns}");

    assert_eq!(
        c.kubectl_ok("admin", &["create", "namespace", "kwg-system"])
            .await,
        "namespace/kwg-system created\n"
    );
    let created = c
        .kubectl_ok(
            "admin",
            &[
                "-n",
                "kwg-system",
                "create",
                "secret",
                "generic",
                "kwg-peer-mybox",
                "--type=kwg.io/peer",
                "--from-literal=name=mybox",
            ],
        )
        .await;
    assert_eq!(created, "secret/kwg-peer-mybox created\n");
    let yaml = c
        .kubectl_ok(
            "admin",
            &["get", "secrets", "-n", "kwg-system", "-o", "yaml"],
        )
        .await;
    let doc: serde_json::Value = serde_yaml_ng::from_str(&yaml).unwrap();
    assert_eq!(doc["kind"], "List");
    let s = &doc["items"][0];
    assert_eq!(s["metadata"]["name"], "kwg-peer-mybox");
    assert_eq!(
        s["data"]["name"], "bXlib3g=",
        "data is base64 on the wire: {yaml}"
    );
    assert_eq!(s["type"], "kwg.io/peer");

    let labeled = c
        .kubectl_ok(
            "admin",
            &[
                "-n",
                "kwg-system",
                "label",
                "secret",
                "kwg-peer-mybox",
                "kwg.io/peer=true",
            ],
        )
        .await;
    assert_eq!(labeled, "secret/kwg-peer-mybox labeled\n");
    let table = c
        .kubectl_ok(
            "admin",
            &[
                "-n",
                "kwg-system",
                "get",
                "secrets",
                "-l",
                "kwg.io/peer=true",
            ],
        )
        .await;
    let rows = words(&table);
    assert_eq!(rows[0], vec!["NAME", "TYPE", "DATA", "AGE"]);
    assert_eq!(rows[1][..3], ["kwg-peer-mybox", "kwg.io/peer", "1"]);
    let none = c
        .kubectl(
            "admin",
            &[
                "-n",
                "kwg-system",
                "get",
                "secrets",
                "-l",
                "kwg.io/peer!=true",
            ],
        )
        .await;
    assert_eq!(
        (none.stdout.as_str(), none.stderr.as_str()),
        ("", "No resources found in kwg-system namespace.\n")
    );
    let by_field = c
        .kubectl_ok(
            "admin",
            &[
                "get",
                "secrets",
                "-A",
                "--field-selector",
                "metadata.name=kwg-peer-mybox",
                "-o",
                "name",
            ],
        )
        .await;
    assert_eq!(by_field, "secret/kwg-peer-mybox\n");

    let deleted = c
        .kubectl_ok(
            "admin",
            &["-n", "kwg-system", "delete", "secret", "kwg-peer-mybox"],
        )
        .await;
    assert_eq!(deleted, "secret \"kwg-peer-mybox\" deleted\n");
    let missing = c
        .kubectl(
            "admin",
            &["-n", "kwg-system", "get", "secret", "kwg-peer-mybox"],
        )
        .await;
    assert!(!missing.ok);
    assert_eq!(
        missing.stderr,
        "Error from server (NotFound): secrets \"kwg-peer-mybox\" not found\n"
    );
}

#[tokio::test]
async fn apply_twice_then_get() {
    let c = Cluster::start().await;
    let file = c.write_file("app.yaml", APP);
    let path = file.to_str().unwrap();
    let first = c.kubectl_ok("admin", &["apply", "-f", path]).await;
    assert_eq!(
        first,
        "deployment.apps/web created\nservice/web created\nrole.rbac.authorization.k8s.io/reader created\n"
    );
    let same = c.kubectl_ok("admin", &["apply", "-f", path]).await;
    assert_eq!(
        same,
        "deployment.apps/web unchanged\nservice/web unchanged\nrole.rbac.authorization.k8s.io/reader unchanged\n"
    );

    c.write_file(
        "app.yaml",
        &APP.replace("nginx:1.25", "nginx:1.26")
            .replace("\"one\"", "\"two\""),
    );
    let second = c.kubectl_ok("admin", &["apply", "-f", path]).await;
    assert_eq!(
        second,
        "deployment.apps/web configured\nservice/web unchanged\nrole.rbac.authorization.k8s.io/reader unchanged\n"
    );
    let spec = c
        .kubectl_ok("admin", &["get", "deploy", "web", "-o", "jsonpath={.metadata.generation} {.spec.template.spec.containers[0].image} {.spec.template.spec.containers[0].env[0].value} {.spec.template.spec.containers[0].ports[0].containerPort}"])
        .await;
    assert_eq!(spec, "2 nginx:1.26 two 80");

    let svc = c.kubectl_ok("admin", &["get", "svc"]).await;
    let rows = words(&svc);
    assert_eq!(
        rows[0],
        vec![
            "NAME",
            "TYPE",
            "CLUSTER-IP",
            "EXTERNAL-IP",
            "PORT(S)",
            "AGE"
        ]
    );
    assert_eq!(
        rows[1][..5],
        ["kubernetes", "ClusterIP", "10.96.0.1", "<none>", "443/TCP"]
    );
    assert_eq!(rows[2][..2], ["web", "NodePort"]);
    assert!(
        rows[2][4].starts_with("80:3") && rows[2][4].ends_with("/TCP"),
        "{svc}"
    );
    let deploy = c.kubectl_ok("admin", &["get", "deploy"]).await;
    assert_eq!(
        deploy
            .lines()
            .next()
            .unwrap()
            .split_whitespace()
            .collect::<Vec<_>>(),
        vec!["NAME", "READY", "UP-TO-DATE", "AVAILABLE", "AGE"]
    );
    assert!(deploy.contains("web    0/2"), "{deploy}");

    // A ClusterIP outside the range is rejected with the real message.
    let bad = c
        .kubectl(
            "admin",
            &[
                "create",
                "service",
                "clusterip",
                "probe",
                "--tcp=80",
                "--clusterip=1.2.3.4",
            ],
        )
        .await;
    assert!(!bad.ok);
    assert_eq!(
        bad.stderr,
        "error: failed to create ClusterIP service: Service \"probe\" is invalid: spec.clusterIPs: Invalid value: []string{\"1.2.3.4\"}: failed to allocate IP 1.2.3.4: the provided IP (1.2.3.4) is not in the valid range. The range of valid IPs is 10.96.0.0/12\n"
    );
    assert_eq!(
        c.kubectl_ok("admin", &["delete", "-f", path])
            .await
            .lines()
            .count(),
        3
    );
    assert_eq!(
        c.kubectl("admin", &["get", "deploy"]).await.stderr,
        "No resources found in default namespace.\n"
    );
}

#[tokio::test]
async fn watch_sees_a_change() {
    let c = Cluster::start().await;
    c.kubectl_ok(
        "admin",
        &[
            "create",
            "secret",
            "generic",
            "watched",
            "--from-literal=a=b",
        ],
    )
    .await;
    let mut child = c.spawn_kubectl("admin", &["get", "secrets", "-w"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("kubectl get -w printed a line in time")
            .unwrap()
            .expect("kubectl get -w still running")
    };
    assert_eq!(
        next().await.split_whitespace().collect::<Vec<_>>(),
        vec!["NAME", "TYPE", "DATA", "AGE"]
    );
    assert!(next().await.starts_with("watched "));
    c.kubectl_ok(
        "admin",
        &[
            "patch",
            "secret",
            "watched",
            "-p",
            r#"{"data":{"b":"Yw=="}}"#,
        ],
    )
    .await;
    let changed = next().await;
    let cols: Vec<&str> = changed.split_whitespace().collect();
    assert_eq!(cols[..3], ["watched", "Opaque", "2"], "{changed}");
    child.kill().await.unwrap();
}

#[tokio::test]
async fn can_i_and_forbidden() {
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "namespace", "kwg-system"])
        .await;
    assert_eq!(
        c.kubectl_ok(
            "admin",
            &["auth", "can-i", "create", "secrets", "-n", "kwg-system"]
        )
        .await,
        "yes\n"
    );
    let no = c
        .kubectl(
            "nobody",
            &["auth", "can-i", "create", "secrets", "-n", "kwg-system"],
        )
        .await;
    assert!(!no.ok);
    assert_eq!(no.stdout, "no\n");
    let denied = c
        .kubectl(
            "nobody",
            &[
                "-n",
                "kwg-system",
                "create",
                "secret",
                "generic",
                "x",
                "--from-literal=a=b",
            ],
        )
        .await;
    assert!(!denied.ok);
    assert_eq!(
        denied.stderr,
        "error: failed to create secret secrets is forbidden: User \"nobody\" cannot create resource \"secrets\" in API group \"\" in the namespace \"kwg-system\"\n"
    );
    let list = c.kubectl("nobody", &["get", "ns"]).await;
    assert_eq!(
        list.stderr,
        "Error from server (Forbidden): namespaces is forbidden: User \"nobody\" cannot list resource \"namespaces\" in API group \"\" at the cluster scope\n"
    );

    let whoami = c.kubectl_ok("nobody", &["auth", "whoami"]).await;
    assert_eq!(
        whoami,
        "ATTRIBUTE   VALUE\nUsername    nobody\nGroups      [system:authenticated]\n"
    );

    // Granting view through a RoleBinding made with kubectl changes the answers.
    c.kubectl_ok(
        "admin",
        &[
            "-n",
            "kwg-system",
            "create",
            "rolebinding",
            "nobody-view",
            "--clusterrole=view",
            "--user=nobody",
        ],
    )
    .await;
    assert_eq!(
        c.kubectl_ok(
            "nobody",
            &["auth", "can-i", "list", "configmaps", "-n", "kwg-system"]
        )
        .await,
        "yes\n"
    );
    let list = c
        .kubectl_ok("nobody", &["auth", "can-i", "--list", "-n", "kwg-system"])
        .await;
    let rows = words(&list);
    assert_eq!(
        rows[0],
        vec![
            "Resources",
            "Non-Resource",
            "URLs",
            "Resource",
            "Names",
            "Verbs"
        ]
    );
    assert!(
        rows.iter()
            .any(|r| r[0] == "configmaps" && r[3..] == ["[get", "list", "watch]"]),
        "{list}"
    );
    // The real `view`: no Secrets, and neither Leases nor Nodes.
    for hidden in ["secrets", "leases.coordination.k8s.io", "nodes"] {
        assert!(!rows.iter().any(|r| r[0] == hidden), "{hidden}: {list}");
    }
    let secrets = c
        .kubectl(
            "nobody",
            &["auth", "can-i", "get", "secrets", "-n", "kwg-system"],
        )
        .await;
    assert_eq!(secrets.stdout, "no\n");
    assert_eq!(
        c.kubectl_ok(
            "nobody",
            &["-n", "kwg-system", "get", "configmaps", "-o", "name"]
        )
        .await,
        "configmap/kube-root-ca.crt\n"
    );
}

/// The real `edit` (Kubernetes >= 1.22, CVE-2021-25740): writes Services, only reads
/// Endpoints and EndpointSlices, which decide where a Service's traffic goes.
#[tokio::test]
async fn edit_writes_services_but_not_endpoints() {
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "namespace", "team"])
        .await;
    let bind = [
        "-n",
        "team",
        "create",
        "rolebinding",
        "nobody-edit",
        "--clusterrole=edit",
        "--user=nobody",
    ];
    c.kubectl_ok("admin", &bind).await;
    let can = |verb: &'static str, what: &'static str| {
        let c = &c;
        async move {
            c.kubectl("nobody", &["auth", "can-i", verb, what, "-n", "team"])
                .await
                .stdout
        }
    };
    assert_eq!(can("create", "services").await, "yes\n");
    for what in ["endpoints", "endpointslices.discovery.k8s.io"] {
        assert_eq!(can("create", what).await, "no\n", "{what}");
        assert_eq!(can("update", what).await, "no\n", "{what}");
        assert_eq!(can("list", what).await, "yes\n", "{what}");
    }
    // `admin` neither (it is `edit` plus Roles and RoleBindings).
    let bind = [
        "-n",
        "team",
        "create",
        "rolebinding",
        "nobody-admin",
        "--clusterrole=admin",
        "--user=nobody",
    ];
    c.kubectl_ok("admin", &bind).await;
    assert_eq!(
        can("create", "endpointslices.discovery.k8s.io").await,
        "no\n"
    );
    assert_eq!(
        can("create", "rolebindings.rbac.authorization.k8s.io").await,
        "yes\n"
    );
}

/// A hand-written EndpointSlice as Kubernetes takes it: `kubectl apply` replaces its
/// (atomic) ports and endpoints, and special addresses are refused with the real message.
#[tokio::test]
async fn hand_written_endpoint_slices() {
    let c = Cluster::start().await;
    let slice = |port: u16, addr: &str| {
        format!(
            r#"{{"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
              "metadata": {{"name": "pivot-1", "namespace": "default",
                            "labels": {{"kubernetes.io/service-name": "pivot"}}}},
              "addressType": "IPv4", "ports": [{{"name": "http", "port": {port}, "protocol": "TCP"}}],
              "endpoints": [{{"addresses": ["{addr}"]}}]}}"#
        )
    };
    let file = c.write_file("slice.json", &slice(8080, "10.244.0.2"));
    let path = file.to_str().unwrap();
    c.kubectl_ok("admin", &["apply", "-f", path]).await;
    c.write_file("slice.json", &slice(80, "10.244.0.6"));
    c.kubectl_ok("admin", &["apply", "-f", path]).await;
    let jp = "jsonpath={.ports[*].port} {.endpoints[*].addresses[*]}";
    let got = c
        .kubectl_ok("admin", &["get", "endpointslice", "pivot-1", "-o", jp])
        .await;
    assert_eq!(got, "80 10.244.0.6");
    c.write_file("slice.json", &slice(80, "127.0.0.1"));
    let loopback = c.kubectl("admin", &["apply", "-f", path]).await;
    assert!(
        loopback.stderr.contains(
            "endpoints[0].addresses[0]: Invalid value: \"127.0.0.1\": may not be in the loopback range (127.0.0.0/8, ::1/128)"
        ),
        "{}",
        loopback.stderr
    );
}

#[tokio::test]
async fn kustomize_and_rollout_status() {
    let c = Cluster::start().await;
    c.write_file("k/app.yaml", APP);
    c.write_file(
        "k/ns.yaml",
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: kwg-system\n",
    );
    let dir = c.write_file(
        "k/kustomization.yaml",
        "namespace: kwg-system\nresources:\n- ns.yaml\n- app.yaml\n",
    );
    let out = c
        .kubectl_ok(
            "admin",
            &["apply", "-k", dir.parent().unwrap().to_str().unwrap()],
        )
        .await;
    assert_eq!(
        out,
        "namespace/kwg-system created\nrole.rbac.authorization.k8s.io/reader created\nservice/web created\ndeployment.apps/web created\n"
    );

    let mut rollout = c.spawn_kubectl(
        "admin",
        &[
            "-n",
            "kwg-system",
            "rollout",
            "status",
            "deploy/web",
            "--timeout=30s",
        ],
    );
    tokio::time::sleep(Duration::from_millis(500)).await;
    // What the sim's kubelet does once the pods run.
    let deploys: Api<Deployment> = Api::namespaced(c.client("admin").await, "kwg-system");
    let status = json!({"status": {"observedGeneration": 1, "replicas": 2, "updatedReplicas": 2, "readyReplicas": 2, "availableReplicas": 2}});
    deploys
        .patch_status("web", &PatchParams::default(), &Patch::Merge(status))
        .await
        .unwrap();
    let out = tokio::time::timeout(Duration::from_secs(30), async {
        let mut s = String::new();
        tokio::io::AsyncReadExt::read_to_string(rollout.stdout.as_mut().unwrap(), &mut s)
            .await
            .unwrap();
        (rollout.wait().await.unwrap(), s)
    })
    .await
    .expect("rollout status finishes");
    assert!(out.0.success(), "{}", out.1);
    assert!(
        out.1
            .ends_with("deployment \"web\" successfully rolled out\n"),
        "{}",
        out.1
    );
    let ready = c
        .kubectl_ok(
            "admin",
            &["-n", "kwg-system", "get", "deploy", "web", "--no-headers"],
        )
        .await;
    assert_eq!(
        ready.split_whitespace().take(4).collect::<Vec<_>>(),
        vec!["web", "2/2", "2", "2"]
    );
}

#[tokio::test]
async fn server_side_apply_scale_and_diff() {
    let c = Cluster::start().await;
    let file = c.write_file("app.yaml", APP);
    let path = file.to_str().unwrap();
    let out = c
        .kubectl_ok("admin", &["apply", "--server-side", "-f", path])
        .await;
    assert_eq!(
        out,
        "deployment.apps/web serverside-applied\nservice/web serverside-applied\nrole.rbac.authorization.k8s.io/reader serverside-applied\n"
    );
    assert_eq!(
        c.kubectl_ok("admin", &["scale", "deploy/web", "--replicas=3"])
            .await,
        "deployment.apps/web scaled\n"
    );
    let got = c
        .kubectl_ok(
            "admin",
            &[
                "get",
                "deploy",
                "web",
                "-o",
                "jsonpath={.spec.replicas} {.metadata.generation}",
            ],
        )
        .await;
    assert_eq!(got, "3 2");
    // `kubectl diff` (a dry-run server-side apply) shows the drift and changes nothing.
    let diff = c
        .kubectl("admin", &["diff", "--server-side", "-f", path])
        .await;
    assert!(
        !diff.ok && diff.stdout.contains("-  replicas: 3\n+  replicas: 2\n"),
        "{}{}",
        diff.stdout,
        diff.stderr
    );
    let still = c
        .kubectl_ok(
            "admin",
            &["get", "deploy", "web", "-o", "jsonpath={.spec.replicas}"],
        )
        .await;
    assert_eq!(still, "3");
}

#[tokio::test]
async fn logs_and_follow() {
    let c = Cluster::start().await;
    let logs = c.dir.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let dir = logs.clone();
    c.server.set_pod_logs(move |ns, pod, container| {
        Some(dir.join(format!("{ns}_{pod}_{container}.log")))
    });
    let log = logs.join("default_gw_gateway.log");
    std::fs::write(&log, "one\ntwo\nthree\n").unwrap();
    let pod = c.write_file("pod.yaml", "apiVersion: v1\nkind: Pod\nmetadata:\n  name: gw\nspec:\n  containers:\n  - name: gateway\n    image: kwg-gateway\n");
    c.kubectl_ok("admin", &["apply", "-f", pod.to_str().unwrap()])
        .await;
    let pods = c.kubectl_ok("admin", &["get", "pods"]).await;
    let rows = words(&pods);
    assert_eq!(
        rows[0],
        vec!["NAME", "READY", "STATUS", "RESTARTS", "AGE", "IP"]
    );
    assert_eq!(rows[1][..4], ["gw", "0/1", "Pending", "0"]);
    assert_eq!(
        c.kubectl_ok("admin", &["logs", "gw"]).await,
        "one\ntwo\nthree\n"
    );
    assert_eq!(
        c.kubectl_ok("admin", &["logs", "gw", "--tail=1"]).await,
        "three\n"
    );

    let mut child = c.spawn_kubectl("admin", &["logs", "-f", "gw"]);
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut next = async || {
        tokio::time::timeout(Duration::from_secs(20), lines.next_line())
            .await
            .expect("a log line in time")
            .unwrap()
    };
    assert_eq!(next().await.as_deref(), Some("one"));
    assert_eq!(next().await.as_deref(), Some("two"));
    assert_eq!(next().await.as_deref(), Some("three"));
    std::fs::OpenOptions::new()
        .append(true)
        .open(&log)
        .map(|mut f| std::io::Write::write_all(&mut f, b"four\n"))
        .unwrap()
        .unwrap();
    assert_eq!(next().await.as_deref(), Some("four"));
    // Deleting the pod ends the stream.
    c.kubectl_ok("admin", &["delete", "pod", "gw"]).await;
    assert_eq!(next().await, None);
    assert!(child.wait().await.unwrap().success());
}

#[tokio::test]
async fn a_list_naming_one_object_is_authorized_by_its_resource_name() {
    // The real API server takes a list's or watch's `fieldSelector=metadata.name=x` as the
    // request's name, so `resourceNames: [x]` with the list verb allows it (kwg's watch of
    // the gateway info ConfigMap relies on this).
    let c = Cluster::start().await;
    c.kubectl_ok("admin", &["create", "namespace", "kwg-system"])
        .await;
    for name in ["info", "other"] {
        c.kubectl_ok("admin", &["-n", "kwg-system", "create", "configmap", name])
            .await;
    }
    for grant in [
        "role info-reader --verb=get,list,watch --resource=configmaps --resource-name=info",
        "rolebinding info-reader --role=info-reader --user=nobody",
    ] {
        let mut args = vec!["-n", "kwg-system", "create"];
        args.extend(grant.split(' '));
        c.kubectl_ok("admin", &args).await;
    }
    let get = |selector: &'static str| {
        let c = &c;
        async move {
            let mut args = vec!["-n", "kwg-system", "get", "configmaps", "-o", "name"];
            if !selector.is_empty() {
                args.extend(["--field-selector", selector]);
            }
            c.kubectl("nobody", &args).await
        }
    };
    let named = get("metadata.name=info").await;
    assert!(named.ok, "{}", named.stderr);
    assert_eq!(named.stdout, "configmap/info\n");
    let other = get("metadata.name=other").await;
    assert!(!other.ok);
    assert!(
        other
            .stderr
            .contains("configmaps \"other\" is forbidden: User \"nobody\" cannot list resource \"configmaps\" in API group \"\" in the namespace \"kwg-system\""),
        "{}",
        other.stderr
    );
    assert!(
        !get("").await.ok,
        "a list of every ConfigMap is not allowed"
    );
}
