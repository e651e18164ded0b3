//! The device's tasks: TUN → encrypt → UDP or stream, UDP → decrypt → TUN, and timers. Each
//! holds the core's lock only while it runs the crypto of one batch, never across I/O.

use std::collections::HashSet;
use std::io;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use super::Shared;
use crate::core::{Core, NetBatch, TunBatch};
use crate::io::tun::{Tun, TunRecvBufs};
use crate::io::udp::{RecvBufs, Udp};

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

/// Receive rounds (recvmmsg calls) decrypted into one TUN batch before it is written, when the
/// socket already holds more and the rounds so far carried fewer than [`DATAGRAMS_PER_WRITE`].
/// Peers' datagrams interleave in the socket's queue: with 16 laptops uploading, one round of
/// 32 datagrams holds about 2 segments of each connection, and writing after every round made
/// super-packets of about 2 segments (and a TCP ACK back through the TUN for each). Over several
/// rounds each connection's segments meet in one super-packet. Only what is already queued is
/// read, never waited for.
pub(super) const ROUNDS_PER_WRITE: usize = 16;
/// Datagrams after which the rounds stop and the batch is written: 16 rounds of one datagram
/// per message. A round that UDP GRO coalesced (hundreds of one flow's datagrams) is written at
/// once, as before: holding several such rounds back delayed a single stream's delivery and
/// ACKs (kwg-wg fell from 2.35 to 1.24-1.65 Gbit/s in bench-tunnel.sh). Folding more when many
/// connections share the rounds (64 segments of each: 1024 datagrams at 16 laptops) was
/// measured worse at the gateway under 16 laptops (12 against 16 segments per TUN packet in
/// the same run, docs/performance.md).
pub(super) const DATAGRAMS_PER_WRITE: usize = 512;

/// Where the receive task gets datagrams: the device's UDP socket, or a test's rounds.
pub(super) trait Receive {
    /// Waits for datagrams and reads one round into `bufs`; the entries read.
    async fn recv(&self, bufs: &mut RecvBufs) -> io::Result<usize>;
    /// One round of what is already queued, or `WouldBlock`.
    fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize>;
}

impl Receive for Udp {
    async fn recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        Udp::recv(self, bufs).await
    }

    fn try_recv(&self, bufs: &mut RecvBufs) -> io::Result<usize> {
        Udp::try_recv(self, bufs)
    }
}

/// Where decrypted packets are written: the device's TUN, or a test's record of the writes.
pub(super) trait WriteTun {
    /// Writes every frame of the batch (one syscall each).
    async fn send(&self, batch: &mut TunBatch) -> io::Result<()>;
}

impl WriteTun for Tun {
    async fn send(&self, batch: &mut TunBatch) -> io::Result<()> {
        Tun::send(self, batch).await
    }
}

pub(super) async fn udp_to_tun(shared: Arc<Shared>) {
    let udp = shared.udp();
    let mut bufs = RecvBufs::default();
    let mut net = NetBatch::new(1);
    let mut tun = TunBatch::new(shared.tun.offset());
    loop {
        net.clear();
        net.set_max_segments(udp.max_gso_segments());
        if !receive_to_tun(
            &shared.core,
            &*udp,
            &mut bufs,
            &mut net,
            &mut tun,
            &shared.tun,
        )
        .await
        {
            return;
        }
        if !net.is_empty() {
            shared.send_net(&net).await;
        }
    }
}

/// Waits for datagrams, then decrypts them and up to [`ROUNDS_PER_WRITE`] - 1 more rounds the
/// socket already holds into `tun`, written once at the end (and whenever it fills). What the
/// core answers (handshake responses, queued packets) is left in `net`. False when the
/// interface is gone.
pub(super) async fn receive_to_tun(
    core: &Mutex<Core>,
    udp: &impl Receive,
    bufs: &mut RecvBufs,
    net: &mut NetBatch,
    tun: &mut TunBatch,
    out: &impl WriteTun,
) -> bool {
    let mut n = match udp.recv(bufs).await {
        Ok(n) => n,
        Err(e) => {
            tracing::debug!(error = %e, "UDP receive failed");
            return true;
        }
    };
    tun.clear();
    let mut datagrams = 0;
    for round in 1.. {
        match decrypt_into(core, bufs.datagrams(n), net, tun, out).await {
            Some(d) => datagrams += d,
            None => return false,
        }
        if round == ROUNDS_PER_WRITE || datagrams >= DATAGRAMS_PER_WRITE {
            break;
        }
        // WouldBlock (nothing more queued) or a failed read: write what the rounds made.
        match udp.try_recv(bufs) {
            Ok(m) => n = m,
            Err(_) => break,
        }
    }
    write_tun(out, tun).await
}

/// Decrypts received datagrams into the TUN and sends what the core answers (handshake
/// responses, queued packets). False when the interface is gone.
pub(super) async fn decrypt_to_tun<'a>(
    shared: &Shared,
    datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    net: &mut NetBatch,
    tun: &mut TunBatch,
) -> bool {
    tun.clear();
    if decrypt_into(&shared.core, datagrams, net, tun, &shared.tun)
        .await
        .is_none()
        || !write_tun(&shared.tun, tun).await
    {
        return false;
    }
    if !net.is_empty() {
        shared.send_net(net).await;
    }
    true
}

/// Decrypts `datagrams` into `tun` (coalesced), writing it whenever it fills: a receive can
/// hold over a thousand datagrams (UDP GRO). The core's lock is held only while decrypting.
/// The datagrams decrypted; `None` when the interface is gone.
async fn decrypt_into<'a>(
    core: &Mutex<Core>,
    datagrams: impl Iterator<Item = (SocketAddr, &'a [u8])>,
    net: &mut NetBatch,
    tun: &mut TunBatch,
    out: &impl WriteTun,
) -> Option<usize> {
    let now = Instant::now();
    let mut datagrams = datagrams.peekable();
    let mut count = 0;
    while datagrams.peek().is_some() {
        {
            // A panic while holding the lock leaves the core usable: recover it.
            let mut core = core.lock().unwrap_or_else(|e| e.into_inner());
            while !tun.is_full()
                && let Some((from, d)) = datagrams.next()
            {
                core.handle_udp(from, d, now, net, tun);
                count += 1;
            }
        }
        if tun.is_full() && !write_tun(out, tun).await {
            return None;
        }
    }
    Some(count)
}

/// Writes and empties `tun`. False when the interface is gone.
async fn write_tun(out: &impl WriteTun, tun: &mut TunBatch) -> bool {
    if tun.is_empty() {
        return true;
    }
    let r = out.send(tun).await;
    tun.clear();
    !matches!(r, Err(e) if fatal("TUN write", &e))
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

#[cfg(test)]
mod tests;
