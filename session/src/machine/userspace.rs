//! Userspace mode in the session: after the tunnel IP, one step starts the device on a
//! packet channel, the userspace stack and the proxy, instead of the TUN, network, firewall
//! and DNS steps; then the handshake and the DNS probe as usual (through the stack).

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::stage::Step;
use super::{Action, Session};
use crate::journal::Undo;

impl Session {
    pub(super) fn start_userspace(&mut self, ip: Ipv4Addr) {
        let listen = self.config.proxy_listen;
        self.record(Undo::StopProxy { listen });
        let Some(plan) = self.plan() else { return };
        let setup = crate::userspace::Setup {
            address: ip,
            gateway_ip: plan.info.gateway_ip.addr(),
            gateway: plan.gateway.clone(),
            subnets: plan.routes.iter().map(|r| r.subnet).collect(),
            dns: plan.dns.as_ref().map(|d| d.forwarder.clone()),
            listen,
        };
        self.step(
            Step::CreatingDevice { ip },
            Action::StartUserspace(Box::new(setup)),
        );
    }

    pub(super) fn userspace_started(&mut self, ip: Ipv4Addr, proxy: SocketAddr, now: Instant) {
        self.journal(|s| {
            s.proxy = Some(proxy);
            for u in &mut s.undo {
                if let Undo::StopProxy { listen } = u {
                    *listen = proxy;
                }
            }
        });
        let Some(plan) = self.plan() else { return };
        let msg = format!(
            "Userspace tunnel up as {ip} to gateway {} (no interface, routes or DNS changes): SOCKS5 and HTTP proxy on {proxy}",
            plan.gateway
                .endpoint
                .map(|e| e.to_string())
                .unwrap_or_default(),
        );
        self.actions.push_back(Action::Progress(msg));
        self.verify(ip, None, now);
    }
}
