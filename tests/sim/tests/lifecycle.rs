//! Two clusters side by side; `down` removes everything of its own cluster only.

mod common;

use kwg_sim::testing::{Cluster, unique_prefix};

fn leftovers(prefix: &str) -> Vec<String> {
    let mut out: Vec<String> = kwg_sim::sh::netns_list()
        .unwrap()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{prefix}-")))
        .collect();
    if std::path::Path::new(&format!("/run/kwg-sim/{prefix}")).exists() {
        out.push(format!("/run/kwg-sim/{prefix}"));
    }
    for e in std::fs::read_dir("/etc/netns")
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = e.file_name().to_string_lossy().into_owned();
        if name.starts_with(&format!("{prefix}-")) {
            out.push(format!("/etc/netns/{name}"));
        }
    }
    out
}

#[test]
fn two_clusters_run_at_once_and_down_leaves_nothing() {
    let (pa, pb) = (unique_prefix(), unique_prefix());
    let a = Cluster::up_with_prefix(&pa).unwrap();
    let b = Cluster::up_with_prefix(&pb).unwrap();
    for c in [&a, &b] {
        let svc = c
            .kubectl_developer(&["-n", "emojivoto", "get", "svc"])
            .unwrap();
        assert!(svc.contains("web-app"));
        let env = String::from_utf8(c.kwg_sim(&["env"]).unwrap().stdout).unwrap();
        assert!(env.contains(&format!(
            "export KUBECONFIG=/run/kwg-sim/{}/developer.kubeconfig",
            c.prefix()
        )));
        assert!(env.contains(&format!(
            "export KWG_SIM_ADMIN_KUBECONFIG=/run/kwg-sim/{}/admin.kubeconfig",
            c.prefix()
        )));
        let status = c.kwg_sim(&["status"]).unwrap();
        assert!(status.status.success());
        assert!(String::from_utf8_lossy(&status.stdout).contains("ready"));
    }
    let pids_a: Vec<i32> = kwg_sim::sh::netns_list()
        .unwrap()
        .iter()
        .filter(|n| n.starts_with(&format!("{pa}-")))
        .flat_map(|n| kwg_sim::sh::netns_pids(n))
        .collect();
    assert!(pids_a.len() >= 7, "daemon and pods run: {pids_a:?}");

    let out = a.kwg_sim(&["down"]).unwrap();
    assert!(out.status.success());
    assert_eq!(leftovers(&pa), Vec::<String>::new());
    assert!(
        pids_a.iter().all(|p| !kwg_sim::sh::alive(*p)),
        "no process of cluster A is left"
    );
    // Idempotent, and B is unaffected.
    assert!(a.kwg_sim(&["down"]).unwrap().status.success());
    assert!(
        b.kubectl_developer(&["-n", "emojivoto", "get", "svc"])
            .unwrap()
            .contains("web-app")
    );
    let status = a.kwg_sim(&["status"]).unwrap();
    assert!(!status.status.success());
    drop(b);
    assert_eq!(leftovers(&pb), Vec::<String>::new());
}
