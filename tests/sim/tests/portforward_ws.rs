//! kwg's port-forward client (`kwg::portforward`, WebSocket `v4.channel.k8s.io`) and kube-rs's
//! `Api::portforward` from the laptop, through the API server stand-in, into pods of the
//! one-machine cluster: an HTTP request to emojivoto's web-app, the kubelet's error for a
//! closed port, the real 403 sentence for a user without `pods/portforward`, and a kwg user
//! (the shipped kwg-user role) reaching a ready gateway pod's WireGuard TCP port.

mod common;

use std::io::ErrorKind;
use std::path::Path;

use k8s_openapi::api::core::v1::Pod;
use kwg::portforward::{self, PortForwardError};
use kwg_sim::testing::Cluster;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

const GET: &[u8] = b"GET / HTTP/1.1\r\nHost: web-app\r\nConnection: close\r\n\r\n";

/// Run `f` with a kube client of `kubeconfig`, on a thread inside the laptop's namespace.
fn in_laptop<T, F>(
    c: &Cluster,
    kubeconfig: &Path,
    f: impl FnOnce(kube::Client) -> F + Send + 'static,
) -> T
where
    T: Send + 'static,
    F: std::future::Future<Output = T>,
{
    let text = std::fs::read_to_string(kubeconfig).unwrap();
    c.run_in(&c.netns("laptop"), move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        Ok(rt.block_on(async move {
            let client = kwg_sim::daemon::client_from_kubeconfig(&text)
                .await
                .unwrap();
            f(client).await
        }))
    })
    .unwrap()
}

/// Send one HTTP request over `s` and read the whole answer.
async fn http<S: AsyncRead + AsyncWrite + Unpin>(mut s: S) -> String {
    s.write_all(GET).await.unwrap();
    s.flush().await.unwrap();
    let mut page = Vec::new();
    let mut buf = vec![0u8; 64 * 1024];
    // The page ends with the body (Connection: close): stop at </html>.
    while !String::from_utf8_lossy(&page).contains("</html>") {
        match s.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => page.extend_from_slice(&buf[..n]),
        }
    }
    String::from_utf8_lossy(&page).into_owned()
}

#[test]
fn kwg_and_kube_rs_port_forward_to_pods_like_kubectl() {
    let c = common::cluster();
    let pod = c
        .pod_field("emojivoto", "web-app", ".metadata.name")
        .unwrap();

    // kwg's client and kube-rs's carry an HTTP request to the pod's port 80.
    let p = pod.clone();
    let (ours, theirs, closed) = in_laptop(&c, &c.admin_kubeconfig(), move |client| async move {
        let s = portforward::open(client.clone(), "emojivoto", &p, 80)
            .await
            .unwrap();
        let ours = http(s).await;
        let pods: kube::Api<Pod> = kube::Api::namespaced(client.clone(), "emojivoto");
        let mut pf = pods.portforward(&p, &[80]).await.unwrap();
        let theirs = http(pf.take_stream(80).unwrap()).await;
        // Nothing listens on 81: a read returns the kubelet's sentence.
        let mut s = portforward::open(client, "emojivoto", &p, 81)
            .await
            .unwrap();
        let mut buf = [0u8; 64];
        let e = s.read(&mut buf).await.unwrap_err();
        (ours, theirs, (e.kind(), e.to_string()))
    });
    for page in [&ours, &theirs] {
        assert!(page.starts_with("HTTP/1.1 200"), "{page}");
        assert!(page.contains("<title>Emoji Vote</title>"), "{page}");
    }
    assert_eq!(closed.0, ErrorKind::ConnectionRefused);
    assert!(
        closed.1.starts_with("error forwarding port 81 to pod ")
            && closed
                .1
                .contains("failed to connect to localhost:81 inside namespace")
            && closed
                .1
                .contains("IPv4: dial tcp4 127.0.0.1:81: connect: connection refused"),
        "{}",
        closed.1
    );

    // developer may view pods in default but not port-forward there (its `edit` in emojivoto
    // would allow it): the real 403, as one sentence.
    let echo = c.pod_field("default", "echo", ".metadata.name").unwrap();
    let p = echo.clone();
    let refused = in_laptop(&c, &c.developer_kubeconfig(), move |client| async move {
        match portforward::open(client, "default", &p, 8080).await {
            Err(e @ PortForwardError::Forbidden { .. }) => e.to_string(),
            Err(e) => panic!("expected a 403, got {e}"),
            Ok(_) => panic!("developer must not port-forward in default"),
        }
    });
    assert_eq!(
        refused,
        format!(
            "your kubeconfig user may not port-forward to the kwg gateway's pods in namespace \
             default (pods \"{echo}\" is forbidden: User \"developer\" cannot get resource \
             \"pods/portforward\" in API group \"\" in the namespace \"default\"): ask a \
             cluster admin for get and create on pods/portforward in default (the kwg-user \
             role in manifests/rbac-user.yaml has it)"
        )
    );
}

#[test]
fn a_kwg_user_reaches_a_ready_gateway_pod() {
    let c = common::cluster();
    let manifests = concat!(env!("CARGO_MANIFEST_DIR"), "/../../manifests/");
    c.kubectl(&c.admin_kubeconfig(), &["apply", "-k", manifests])
        .unwrap();
    let ready_pods = || {
        let jsonpath = "jsonpath={range .items[*]}{.metadata.name} \
            {.status.conditions[?(@.type==\"Ready\")].status}{\"\\n\"}{end}";
        let args = ["-n", "kwg-gateway", "get", "pods", "-o", jsonpath];
        let out = c.kubectl(&c.admin_kubeconfig(), &args).unwrap_or_default();
        out.lines()
            .filter(|l| l.ends_with(" True"))
            .map(|l| l.split(' ').next().unwrap().to_string())
            .collect::<Vec<_>>()
    };
    common::eventually(60, "a ready gateway pod", || {
        Some(()).filter(|_| !ready_pods().is_empty())
    });
    // developer is a kwg user (group kwg:users): the shipped role lets it list the gateway's
    // pods and open a port-forward to the WireGuard TCP port (51820).
    let (pod, open) = in_laptop(&c, &c.developer_kubeconfig(), |client| async move {
        let (pod, mut s) = portforward::open_gateway(client, "kwg-gateway", 51820)
            .await
            .unwrap();
        // A closed port would answer at once with the kubelet's error; the gateway's listener
        // takes the connection and waits for WireGuard.
        let mut buf = [0u8; 64];
        let wait = std::time::Duration::from_millis(1500);
        let open = tokio::time::timeout(wait, s.read(&mut buf)).await.is_err();
        (pod, open)
    });
    assert!(open, "the port-forward to {pod}:51820 ended at once");
    let names = ready_pods();
    assert!(
        names.contains(&pod),
        "{pod} is not among the ready pods {names:?}"
    );
}
