//! Undoing a join from what the state file recorded: used by the daemon on shutdown or failure,
//! and by `kwg leave` / the next `kwg join` after the daemon was killed.

use kwg_wg::netlink::Netlink;

use crate::cluster::Kube;
use crate::dns::resolvconf;
use crate::error::Error;
use crate::state::{State, StateDir};

/// Restores the resolver first (the machine must never stay without DNS), then removes routes
/// and the interface if they are still there, deletes the peer Secret, and the state file.
/// Returns what was done, one short phrase each. Keeps going after an error and returns the
/// first one, so one failure does not leave the rest behind.
pub async fn undo(
    state: &State,
    dir: &StateDir,
    kube: Option<&Kube>,
) -> (Vec<String>, Result<(), Error>) {
    let mut done = Vec::new();
    let mut first_err: Option<Error> = None;
    let mut keep = |r: Result<(), Error>| {
        if let Err(e) = r
            && first_err.is_none()
        {
            first_err = Some(e);
        }
    };
    match restore_dns(state) {
        Ok(true) => done.push("DNS settings".to_string()),
        Ok(false) => {}
        Err(e) => keep(Err(e)),
    }
    match remove_interface(state).await {
        Ok(true) => done.push(format!("routes and interface {}", state.interface)),
        Ok(false) => {}
        Err(e) => keep(Err(e)),
    }
    if let Some(kube) = kube {
        let secret = format!("{}{}", kwg_wg::contract::PEER_SECRET_PREFIX, state.peer);
        match kube.delete_peer(&state.kwg_namespace, &secret).await {
            Ok(true) => done.push(format!("peer Secret {secret}")),
            Ok(false) => {}
            Err(e) => keep(Err(e)),
        }
    }
    let result = match first_err {
        Some(e) => Err(e),
        None => {
            let _ = std::fs::remove_file(dir.socket());
            let _ = std::fs::remove_file(dir.resolv_backup());
            State::remove(&dir.state())
        }
    };
    (done, result)
}

/// Puts the original resolv.conf back byte for byte if the current one is still ours.
/// `Ok(false)` when there was nothing to restore.
pub fn restore_dns(state: &State) -> Result<bool, Error> {
    let Some(dns) = &state.dns else {
        return Ok(false);
    };
    let (Some(path), Some(backup)) = (&dns.resolv_conf, &dns.backup) else {
        return Ok(false);
    };
    let original = match std::fs::read(backup) {
        Ok(b) => b,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(false),
        Err(e) => {
            return Err(Error::io(
                format!("read the resolv.conf backup {}", backup.display()),
                e,
            ));
        }
    };
    let current = std::fs::read_to_string(path).unwrap_or_default();
    if !resolvconf::is_ours(&current) {
        tracing::warn!(path = %path.display(), "resolv.conf was changed by someone else since kwg join: leaving it as it is");
        return Ok(false);
    }
    resolvconf::write_in_place(path, &original)?;
    Ok(true)
}

async fn remove_interface(state: &State) -> Result<bool, Error> {
    let nl = Netlink::open()?;
    if !nl.link_exists(&state.interface).await? {
        return Ok(false);
    }
    // Deleting the interface removes its address and routes with it.
    Ok(nl.delete_link(&state.interface).await?)
}
