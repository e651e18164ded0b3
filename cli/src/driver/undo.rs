//! Undoing recorded changes: one step at a time from the daemon, or a whole journal after the
//! daemon was killed (`kwg leave`, the next `kwg join`).

use kwg_host::netlink::Netlink;

use crate::cluster::Kube;
use crate::dns::{resolvconf, resolved};
use crate::error::Error;
use crate::state::{State, StateDir, StateFile, Undo};

/// Undoes one recorded change outside the daemon's own resources (those are dropped by the
/// driver first). Returns what was removed, for the user.
pub async fn undo_step(u: &Undo, kube: Option<&Kube>) -> Result<Option<String>, Error> {
    match u {
        Undo::DeletePeer { .. } => {
            let Some(k) = kube else {
                return Err(left_behind(u, "the cluster cannot be reached".into()));
            };
            // Whatever keeps the delete from happening, the machine is still cleaned up: the
            // gateway collects the peer when its lease ends.
            delete_peer(u, k)
                .await
                .map_err(|e| left_behind(u, e.to_string()))
        }
        Undo::DeleteInterface { name, ifindex } => {
            let nl = Netlink::open()?;
            let ours = match ifindex {
                Some(i) => nl.link_index(name).await.ok() == Some(*i),
                None => false,
            };
            if !ours {
                return Ok(None);
            }
            // Deleting the interface removes its address and routes with it.
            Ok(nl
                .delete_link(name)
                .await?
                .then(|| format!("routes and interface {name}")))
        }
        Undo::StopForwarder | Undo::StopProxy { .. } => Ok(None),
        Undo::RemoveFirewall { table } => Ok(super::firewall::remove(table)
            .await?
            .then(|| format!("firewall table {table}"))),
        Undo::RevertLink { name, ifindex } => {
            // A link that is gone took its DNS settings with it.
            let nl = Netlink::open()?;
            if nl.link_index(name).await.ok() != Some(*ifindex) {
                return Ok(None);
            }
            resolved::Resolved::connect()
                .await?
                .revert(*ifindex)
                .await?;
            Ok(Some(format!("DNS settings of {name} in systemd-resolved")))
        }
        Undo::RestoreResolvConf { path, backup } => restore_resolv_conf(path, backup),
    }
}

/// Deletes the peer Secret of a [`Undo::DeletePeer`] if it is this join's own; the API's
/// error as it is (the daemon logs in again on a 401 and retries).
pub async fn delete_peer(u: &Undo, kube: &Kube) -> Result<Option<String>, Error> {
    let Undo::DeletePeer {
        namespace,
        secret,
        uid,
        public_key,
        ..
    } = u
    else {
        return Ok(None);
    };
    let deleted = kube
        .delete_own_peer(namespace, secret, uid.as_deref(), public_key.as_deref())
        .await?;
    Ok(deleted.then(|| format!("peer Secret {secret}")))
}

/// A [`Undo::DeletePeer`] that could not be done, as the error that lets the rest of the
/// cleanup go on.
pub fn left_behind(u: &Undo, reason: String) -> Error {
    let (namespace, secret, lease_expires) = match u {
        Undo::DeletePeer {
            namespace,
            secret,
            lease_expires,
            ..
        } => (namespace.clone(), secret.clone(), *lease_expires),
        _ => Default::default(),
    };
    Error::PeerLeftBehind(crate::state::LeftBehind {
        namespace,
        secret,
        reason,
        lease_expires,
    })
}

/// Puts the resolver file back as this session found it, leaving other sessions' lines
/// (`dns::resolvconf::restore`), then deletes the backup.
fn restore_resolv_conf(
    path: &std::path::Path,
    backup: &std::path::Path,
) -> Result<Option<String>, Error> {
    Ok(resolvconf::restore(path, backup)?.then(|| "DNS settings".to_string()))
}

/// What undoing a dead daemon's journal removed, and the peer Secret it could not delete.
#[derive(Debug, Default)]
pub struct Cleaned {
    pub removed: Vec<String>,
    pub left_behind: Option<crate::state::LeftBehind>,
}

/// Undoes a join whose daemon is gone, from its journal, newest change first. Failed local
/// steps stay in the journal for the next `kwg leave`; a peer Secret that cannot be deleted
/// does not (see [`Cleaned::left_behind`]). The cluster is reached with `kube` (`join` passes
/// the kubeconfig it was given now), else with the journal's kubeconfig.
pub async fn cleanup_dead(
    state: &State,
    dir: &StateDir,
    kube: Option<(Option<&std::path::Path>, Option<&str>)>,
) -> Result<Cleaned, Error> {
    let needs_kube = state
        .undo
        .iter()
        .any(|u| matches!(u, Undo::DeletePeer { .. }));
    let (kubeconfig, context) =
        kube.unwrap_or((state.kubeconfig.as_deref(), state.context.as_deref()));
    let mut connect_error = None;
    let kube = match needs_kube {
        true => match Kube::connect(kubeconfig, context).await {
            Ok(k) => Some(k),
            Err(e) => {
                tracing::info!(error = %e, "cannot reach the cluster to delete the peer Secret");
                connect_error = Some(e.to_string());
                None
            }
        },
        false => None,
    };
    let mut cleaned = Cleaned::default();
    let mut kept = Vec::new();
    let mut first_err = None;
    for u in state.undo.iter().rev() {
        match undo_step(u, kube.as_ref()).await {
            Ok(what) => cleaned.removed.extend(what),
            Err(Error::PeerLeftBehind(mut l)) => {
                if let Some(reason) = connect_error.take() {
                    l.reason = reason;
                }
                cleaned.left_behind = Some(l);
            }
            Err(e) => {
                kept.push(u.clone());
                first_err.get_or_insert(e);
            }
        }
    }
    match first_err {
        None => {
            State::remove(&dir.state())?;
            Ok(cleaned)
        }
        Some(e) => {
            let mut left = state.clone();
            kept.reverse();
            left.undo = kept;
            left.save(&dir.state())?;
            Err(e)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The real write of the resolver file (`exec::write_resolv_conf`) stopped at each of its
    /// points, as a kill there would leave it, then the real undo: the original comes back
    /// byte for byte, and the backup goes.
    #[test]
    fn resolv_conf_is_whole_after_a_kill_at_any_write_step() {
        use super::super::exec::{ResolvWrite, write_resolv_conf_until};
        let original = b"search corp.example\nnameserver 192.0.2.53\n".to_vec();
        let ours = kwg_session::machine::DnsPlan::rendered(
            &original,
            "127.77.0.53:53".parse().unwrap(),
            &["emojivoto.svc.cluster.local".into()],
        );
        // None: killed before the write began.
        let stops = [
            None,
            Some(ResolvWrite::BackedUp),
            Some(ResolvWrite::Truncated),
            Some(ResolvWrite::Written),
        ];
        for stop in stops {
            let dir = tempfile::tempdir().unwrap();
            let (path, backup) = (
                dir.path().join("resolv.conf"),
                dir.path().join("resolv.conf.orig"),
            );
            std::fs::write(&path, &original).unwrap();
            let mut reached = Vec::new();
            if stop.is_some() {
                let killed = write_resolv_conf_until(&path, &backup, &original, &ours, |at| {
                    reached.push(at);
                    match Some(at) == stop {
                        true => Err(Error::invalid("the write", "killed here")),
                        false => Ok(()),
                    }
                });
                assert!(killed.is_err(), "the write went past {stop:?}");
                assert_eq!(reached.last().copied(), stop);
            }
            let at_kill = std::fs::read(&path).unwrap();
            restore_resolv_conf(&path, &backup).unwrap();
            assert_eq!(
                std::fs::read(&path).unwrap(),
                original,
                "killed at {stop:?} with {:?}",
                String::from_utf8_lossy(&at_kill)
            );
            assert!(!backup.exists(), "killed at {stop:?}: the backup stays");
        }
    }
}
