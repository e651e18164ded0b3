//! The data plane's own thread: a single-threaded tokio runtime that owns the device's sockets
//! and runs the tasks moving packets (both directions) and the timers.
//!
//! On the caller's multi-threaded runtime the two directions ran on different workers: each
//! batch's crypto held the core's lock while the other direction waited on it, and every
//! readiness event woke a worker on the other core. On one thread the directions take turns
//! batch by batch without contention, and the caller's runtime stays free for the control plane
//! (UAPI, Kubernetes, DNS). On the 2-core bench machine (bench-tunnel.sh) this took kwg-wg's
//! CPU per Gbit/s down by about 10 % and its 1-stream throughput up by 10–15 %.

use std::io;

use tokio::runtime::Handle;
use tokio::sync::oneshot;

pub(crate) struct DataPlane {
    handle: Handle,
    /// Dropping it ends the thread; the runtime then drops every task still on it.
    stop: Option<oneshot::Sender<()>>,
}

impl DataPlane {
    /// Starts the thread, named after the interface. The runtime is built (and, at the end,
    /// dropped) on that thread: dropping a runtime inside the caller's async context would panic.
    pub(crate) fn start(ifname: &str) -> io::Result<DataPlane> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (ready, handle) = std::sync::mpsc::sync_channel::<io::Result<Handle>>(1);
        std::thread::Builder::new()
            .name(format!("wg {ifname}"))
            .spawn(move || {
                let rt = match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(rt) => rt,
                    Err(e) => {
                        let _ = ready.send(Err(e));
                        return;
                    }
                };
                let _ = ready.send(Ok(rt.handle().clone()));
                // Err when the sender is dropped: that is the signal.
                let _ = rt.block_on(stopped);
            })?;
        let handle = handle
            .recv()
            .map_err(|_| io::Error::other("the data-plane thread ended before its runtime"))??;
        Ok(DataPlane {
            handle,
            stop: Some(stop),
        })
    }

    /// The runtime the data plane's sockets must be created in (`handle().enter()`) and its
    /// tasks spawned on.
    pub(crate) fn handle(&self) -> &Handle {
        &self.handle
    }
}

impl Drop for DataPlane {
    fn drop(&mut self) {
        drop(self.stop.take());
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn tasks_run_on_the_plane_thread_and_stop_with_it() {
        let plane = DataPlane::start("t0").unwrap();
        let name = plane
            .handle()
            .spawn(async { std::thread::current().name().map(str::to_owned) })
            .await
            .unwrap();
        assert_eq!(name.as_deref(), Some("wg t0"));
        let (tx, rx) = oneshot::channel::<()>();
        let forever = plane.handle().spawn(async move {
            let _tx = tx;
            std::future::pending::<()>().await
        });
        drop(plane);
        // The runtime dropped the task (and with it the sender) when the thread ended.
        assert!(rx.await.is_err());
        assert!(forever.await.unwrap_err().is_cancelled());
    }
}
