//! The device's tasks: TUN → encrypt → UDP or stream, UDP → decrypt → TUN, and timers. Each
//! holds the core's lock only while it runs the crypto of one batch, never across I/O.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::Shared;
use crate::core::{NetBatch, TunBatch};
use crate::io::tun::TunRecvBufs;
use crate::io::udp::RecvBufs;

/// How often the timers run (boringtun asks for `update_timers` about every 250 ms).
const TICK: Duration = Duration::from_millis(100);
/// Ticks between sweeps of the accepted streams no peer uses (see `streams::ORPHANED`).
const SWEEP_EVERY: u64 = 10;
/// Extra non-blocking TUN reads folded into one batch after a blocking one.
const TUN_READS_PER_BATCH: usize = 4;

fn fatal(what: &str, e: &io::Error) -> bool {
    // EBADFD / ENODEV: the interface is gone; anything else is transient.
    let gone = matches!(
        e.raw_os_error(),
        Some(libc::EBADFD) | Some(libc::ENODEV) | Some(libc::EBADF)
    );
    if gone {
        tracing::warn!(error = %e, "{what}: interface gone, stopping");
    } else {
        tracing::debug!(error = %e, "{what} failed");
    }
    gone
}

pub(super) async fn tun_to_udp(shared: Arc<Shared>) {
    let mut bufs = TunRecvBufs::default();
    let mut net = NetBatch::new(1);
    loop {
        match shared.tun.recv(&mut bufs).await {
            Ok(()) => {}
            Err(e) if fatal("TUN read", &e) => return,
            Err(_) => continue,
        }
        net.clear();
        net.set_max_segments(shared.udp().max_gso_segments());
        encrypt_batch(&shared, &mut bufs, &mut net);
        shared.send_net(&net).await;
    }
}

/// Encrypts the packets read (a TSO read's segments split in place, each encrypted straight
/// from the read buffer), plus whatever more the TUN has ready, under one lock.
fn encrypt_batch(shared: &Shared, bufs: &mut TunRecvBufs, net: &mut NetBatch) {
    let now = Instant::now();
    let mut core = shared.core();
    let translation = core.translation();
    if let Some(t) = &translation {
        bufs.translate(t);
    }
    bufs.drain(|p| core.handle_tun(p, now, net));
    for _ in 0..TUN_READS_PER_BATCH {
        if shared.tun.try_recv(bufs).is_err() {
            break;
        }
        if let Some(t) = &translation {
            bufs.translate(t);
        }
        bufs.drain(|p| core.handle_tun(p, now, net));
    }
}

pub(super) async fn udp_to_tun(shared: Arc<Shared>) {
    let udp = shared.udp();
    let mut bufs = RecvBufs::default();
    let mut net = NetBatch::new(1);
    let mut tun = TunBatch::new(shared.tun.offset());
    loop {
        let n = match udp.recv(&mut bufs).await {
            Ok(n) => n,
            Err(e) => {
                tracing::debug!(error = %e, "UDP receive failed");
                continue;
            }
        };
        net.clear();
        net.set_max_segments(udp.max_gso_segments());
        if !decrypt_to_tun(&shared, bufs.datagrams(n), &mut net, &mut tun).await {
            return;
        }
    }
}

/// Decrypts received datagrams into the TUN and sends what the core answers (handshake
/// responses, queued packets). False when the interface is gone.
pub(super) async fn decrypt_to_tun<'a>(
    shared: &Shared,
    datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    net: &mut NetBatch,
    tun: &mut TunBatch,
) -> bool {
    let now = Instant::now();
    let mut datagrams = datagrams.peekable();
    // A receive can hold over a thousand datagrams (UDP GRO): decrypt them into the TUN's
    // frames, coalesced, and write them a batch of frames at a time.
    while datagrams.peek().is_some() {
        tun.clear();
        {
            let mut core = shared.core();
            while !tun.is_full()
                && let Some((from, d)) = datagrams.next()
            {
                core.handle_udp(from, d, now, net, tun);
            }
        }
        if let Err(e) = shared.tun.send(tun).await
            && fatal("TUN write", &e)
        {
            return false;
        }
    }
    if !net.is_empty() {
        shared.send_net(net).await;
    }
    true
}

pub(super) async fn timers(shared: Arc<Shared>) {
    let mut net = NetBatch::new(1);
    let mut interval = tokio::time::interval(TICK);
    interval.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    let mut in_use = HashSet::new();
    for n in 0u64.. {
        interval.tick().await;
        net.clear();
        let now = Instant::now();
        let sweep = n % SWEEP_EVERY == 0 && shared.streams.len() > 0;
        {
            let mut core = shared.core();
            core.tick(now, &mut net);
            if sweep {
                in_use.clear();
                in_use.extend(core.endpoints());
            }
        }
        if sweep {
            shared.streams.sweep(&in_use, now);
        }
        if !net.is_empty() {
            shared.send_net(&net).await;
        }
    }
}

/// (Re)starts the receive task on the current socket, stopping the previous one.
pub(super) fn restart_udp_task(shared: &Arc<Shared>) {
    let task = shared.plane.spawn(udp_to_tun(shared.clone()));
    let old = shared
        .udp_task
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .replace(task);
    if let Some(old) = old {
        old.abort();
    }
}
