//! Leader election I/O: the Lease `kwg-gateway` in the gateway's namespace, read every
//! `retry` and written per [`crate::election`]. Every replica serves peers; only the leader
//! assigns tunnel IPs, writes annotations and Events, deletes expired peers and publishes the
//! gateway info.

use crate::election::{Elector, Record, Step};
use k8s_openapi::api::coordination::v1::{Lease, LeaseSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, PostParams};
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

/// The Lease's name (in `--gateway-namespace`).
pub const LEASE_NAME: &str = "kwg-gateway";

/// This replica's identity in the Lease: the pod name (`HOSTNAME`), else a random one.
pub fn identity() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| format!("kwg-gateway-{}", std::process::id()))
}

fn micro(t: Option<SystemTime>) -> Option<MicroTime> {
    t.and_then(|t| Timestamp::try_from(t).ok()).map(MicroTime)
}

fn record(lease: &Lease) -> Record {
    let spec = lease.spec.clone().unwrap_or_default();
    Record {
        holder: spec.holder_identity,
        lease_duration: Duration::from_secs(spec.lease_duration_seconds.unwrap_or(0).max(0) as u64),
        acquire_time: spec.acquire_time.map(|t| SystemTime::from(t.0)),
        renew_time: spec.renew_time.map(|t| SystemTime::from(t.0)),
        transitions: spec.lease_transitions.unwrap_or(0),
    }
}

fn lease(r: &Record, resource_version: Option<String>) -> Lease {
    Lease {
        metadata: ObjectMeta {
            name: Some(LEASE_NAME.into()),
            resource_version,
            ..Default::default()
        },
        spec: Some(LeaseSpec {
            holder_identity: r.holder.clone(),
            lease_duration_seconds: Some(r.lease_duration.as_secs().max(1) as i32),
            acquire_time: micro(r.acquire_time),
            renew_time: micro(r.renew_time),
            lease_transitions: Some(r.transitions),
            ..Default::default()
        }),
    }
}

/// Creates the Lease (no `current`) or replaces it at the version read; whether it worked.
async fn write(api: &Api<Lease>, current: Option<&Lease>, r: &Record) -> bool {
    let pp = PostParams::default();
    let result = match current {
        None => api.create(&pp, &lease(r, None)).await,
        Some(l) => {
            let rv = l.metadata.resource_version.clone();
            api.replace(LEASE_NAME, &pp, &lease(r, rv)).await
        }
    };
    match result {
        Ok(_) => true,
        Err(kube::Error::Api(s)) if s.is_conflict() || s.is_already_exists() => {
            tracing::debug!("another replica wrote the Lease first");
            false
        }
        Err(e) => {
            tracing::warn!(error = %e, "cannot write the leader Lease (the gateway may create/update leases in its namespace: apply manifests/)");
            false
        }
    }
}

/// Takes part in the election until `token`, telling `leader` whether this replica leads;
/// then releases the Lease if it held it, so another replica takes over at once.
pub async fn run(
    client: kube::Client,
    namespace: String,
    mut elector: Elector,
    leader: watch::Sender<bool>,
    token: CancellationToken,
) {
    let api: Api<Lease> = Api::namespaced(client, &namespace);
    let retry = elector.timing().retry;
    let mut current: Option<Lease> = None;
    loop {
        let now = SystemTime::now();
        match api.get_opt(LEASE_NAME).await {
            Ok(read) => {
                current = read;
                if let Step::Write(r) = elector.decide(current.as_ref().map(record).as_ref(), now)
                    && write(&api, current.as_ref(), &r).await
                {
                    elector.written(r, now);
                }
            }
            Err(e) => tracing::warn!(error = %e, "cannot read the leader Lease; retrying"),
        }
        let leading = elector.is_leader(SystemTime::now());
        leader.send_if_modified(|was| {
            if *was != leading {
                tracing::info!(identity = %elector.identity(), leading, "{}", if leading { "leading: this replica assigns addresses, collects leases and publishes the info" } else { "following: another replica leads" });
                *was = leading;
                true
            } else {
                false
            }
        });
        tokio::select! {
            _ = token.cancelled() => break,
            _ = tokio::time::sleep(retry) => {}
        }
    }
    leader.send_replace(false);
    if let Some(r) = elector.release(SystemTime::now()) {
        let fresh = api.get_opt(LEASE_NAME).await.ok().flatten().or(current);
        if fresh.as_ref().map(record).and_then(|c| c.holder) == Some(elector.identity().into())
            && write(&api, fresh.as_ref(), &r).await
        {
            tracing::info!("released the leader Lease");
        }
    }
}
