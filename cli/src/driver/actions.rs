//! Executing one action of the session core: what it needs from the cluster, the device, the
//! network and DNS, started now or as a long action whose event comes later.

use std::future::Future;

use kwg_host::netlink::Netlink;
use kwg_wg::device::{DEFAULT_MTU, Device, DeviceConfig, PeerConfig};

use super::{Done, Driver, Long, exec, firewall, inspect};
use crate::cluster::Kube;
use crate::dns::forwarder::Forwarder;
use crate::error::Error;
use crate::peer::peer_config;
use crate::state::{State, StateFile};
use kwg_session::machine::{Action, Event};

/// What starting an action gave: its event now, a future for it, or nothing to report.
pub(super) enum Started {
    Now(Event),
    Long(Long),
    Nothing,
}

/// An action with no event of its own: only a failure is reported.
fn quiet(r: Result<(), Error>) -> Started {
    match r {
        Ok(()) => Started::Nothing,
        Err(e) => Started::Now(Event::Failed(e.into())),
    }
}

fn event(r: Result<(), Error>, ok: Event) -> Started {
    Started::Now(match r {
        Ok(()) => ok,
        Err(e) => Event::Failed(e.into()),
    })
}

impl Driver {
    fn kube(&self) -> Kube {
        self.kube
            .clone()
            .expect("connected before any cluster action")
    }

    fn handle(&self) -> kwg_wg::device::DeviceHandle {
        self.device.as_ref().expect("device created").handle()
    }

    /// Executes `action`, or starts it when it waits on the cluster or the network.
    pub(super) async fn start(&mut self, action: Action) -> Started {
        match action {
            Action::Inspect => {
                let (args, dir) = (self.args.clone(), self.dir.clone());
                Started::Long(Box::pin(async move {
                    Done::Inspected(inspect::inspect(&args, &dir).await)
                }))
            }
            Action::Save(state) => quiet(state.save(&self.dir.state())),
            Action::Register { spec, ttl } => {
                let ns = self.args.kube.kwg_namespace.clone();
                long(exec::register(self.kube(), ns, *spec, ttl))
            }
            Action::WaitTunnelIp {
                namespace,
                secret,
                within,
            } => long(exec::wait_tunnel_ip(self.kube(), namespace, secret, within)),
            Action::CreateDevice { name } => self.create_device(name).await,
            Action::StartUserspace(setup) => self.start_userspace(*setup).await,
            Action::ConfigureNetwork {
                name,
                address,
                address6,
                routes,
                gateway,
            } => {
                let r = async {
                    self.set_routes(&name, Some(address), &routes, &[]).await?;
                    if let Some(a) = address6 {
                        self.add_address6(&name, a).await?;
                    }
                    crate::peer::set_translation(&self.handle(), &gateway)?;
                    self.configure_gateway(peer_config(&gateway)).await
                };
                event(r.await, Event::NetworkConfigured)
            }
            // A normal user's join: the helper loads the session's table.
            Action::InstallFirewall { .. } if self.helper.is_some() => {
                let h = self.helper.as_mut().expect("checked");
                event(h.firewall().await, Event::FirewallInstalled)
            }
            Action::InstallFirewall { table, interface } => {
                match firewall::install(&table, &interface).await {
                    Ok(true) => Started::Now(Event::FirewallInstalled),
                    Ok(false) => {
                        let msg = "Warning: nft is not installed: new connections from the cluster to this machine are not filtered, only forwarding from the tunnel is off (install nftables)";
                        tracing::warn!("{msg}");
                        self.warnings.push(msg.to_string());
                        Started::Now(Event::FirewallInstalled)
                    }
                    Err(e) => Started::Now(Event::Failed(e.into())),
                }
            }
            // A normal user's join: the helper binds port 53 and rewrites the resolver file.
            Action::StartForwarder { listen, config } if self.helper.is_some() => {
                match self.start_forwarder_via_helper(listen, *config).await {
                    Ok(addr) => Started::Now(Event::ForwarderStarted(addr)),
                    Err(e) => event(Err(e), Event::ForwarderStarted(listen)),
                }
            }
            Action::WriteResolvConf { contents, .. } if self.helper.is_some() => event(
                self.resolv_conf_via_helper(&contents).await,
                Event::ResolvConfWritten,
            ),
            Action::StartForwarder { listen, config } => {
                match Forwarder::start(listen, *config).await {
                    Ok(f) => {
                        let addr = f.addr;
                        self.forwarder = Some(f);
                        Started::Now(Event::ForwarderStarted(addr))
                    }
                    Err(e) => Started::Now(Event::Failed(e.into())),
                }
            }
            Action::WriteResolvConf {
                path,
                backup,
                original,
                contents,
            } => event(
                exec::write_resolv_conf(&path, &backup, &original, &contents),
                Event::ResolvConfWritten,
            ),
            // A normal user's session: the helper sets the link (its own, to its forwarder).
            Action::ConfigureResolved(link) if self.helper.is_some() => {
                let h = self.helper.as_ref().expect("checked");
                let r = h.resolved_link(&link.domains).await;
                let r = r.map(|said| self.warnings.extend(said));
                event(r, Event::ResolvedConfigured)
            }
            Action::RevertResolved { .. } if self.helper.is_some() => {
                let h = self.helper.as_ref().expect("checked");
                event(h.revert_dns().await, Event::ResolvedReverted)
            }
            Action::ConfigureResolved(link) => {
                let r = match &self.resolved {
                    Some(c) => c.configure(&link).await.map_err(Error::from),
                    None => Err(kwg_session::Error::ResolvedUnavailable {
                        reason: "not connected to it".into(),
                    }
                    .into()),
                };
                event(r, Event::ResolvedConfigured)
            }
            Action::RevertResolved { ifindex } => {
                let r = match &self.resolved {
                    Some(c) => c.revert(ifindex).await.map_err(Error::from),
                    None => Ok(()),
                };
                event(r, Event::ResolvedReverted)
            }
            Action::AwaitHandshake { gateway, poke } => match &self.userspace {
                Some(u) => long(crate::userspace::await_handshake(
                    self.handle(),
                    u.connector(),
                    peer_config(&gateway),
                    poke,
                )),
                None => long(exec::await_handshake(
                    self.handle(),
                    peer_config(&gateway),
                    poke,
                )),
            },
            Action::Rebind { gateway } => match &self.transport {
                Some(t) => {
                    t.stall();
                    Started::Nothing
                }
                None => quiet(crate::peer::rebind(&self.handle(), peer_config(&gateway)).await),
            },
            Action::Rehandshake { gateway, since } => {
                quiet(crate::peer::rehandshake(&self.handle(), peer_config(&gateway), since).await)
            }
            Action::ReadStats => {
                if self.userspace.is_none() {
                    exec::keep_forwarding_off(&self.args.interface);
                }
                self.force_udp_buffers().await;
                let p = self.handle().peers().await.into_iter().next();
                if let Some(p) = &p {
                    // Packets to the gateway are kept a moment, for a rehandshake to send
                    // again (idempotent; a re-added peer gets it back here).
                    let _ = self.handle().set_replay(&p.public_key, true);
                }
                let held_packets = p
                    .as_ref()
                    .and_then(|p| self.handle().held_packets(&p.public_key));
                Started::Now(Event::Stats {
                    tx_bytes: p.as_ref().map_or(0, |p| p.tx_bytes),
                    rx_bytes: p.as_ref().map_or(0, |p| p.rx_bytes),
                    held_packets: held_packets.unwrap_or(0),
                })
            }
            Action::ProbeDns { server, name } => match &self.userspace {
                Some(u) => long(crate::userspace::dns_answers(u.connector(), server, name)),
                None => long(exec::dns_answers(server, name)),
            },
            // Userspace mode has no interface: the stack and the proxy's router follow.
            Action::SetRoutes { add, remove, .. } if self.userspace.is_some() => {
                let u = self.userspace.as_ref().expect("userspace");
                u.set_routes(&add, &remove);
                Started::Nothing
            }
            Action::ChangeAddress { new, .. } if self.userspace.is_some() => {
                let u = self.userspace.as_ref().expect("userspace");
                quiet(u.readdress(new))
            }
            Action::RenewLease {
                namespace,
                secret,
                uid,
                ttl,
            } => {
                let k = &self.args.kube;
                let login = (k.kubeconfig.clone(), k.context.clone());
                let secret = (secret, uid);
                let renew = exec::renew_lease_fresh(self.kube(), login, namespace, secret, ttl);
                Started::Long(Box::pin(async move {
                    match renew.await {
                        (ev, Some(fresh)) => Done::Reconnected(Box::new(fresh), ev),
                        (ev, None) => Done::Event(ev),
                    }
                }))
            }
            Action::UpdateGateway { peer, .. } if self.transport.is_some() => {
                if let Err(e) = crate::peer::set_translation(&self.handle(), &peer) {
                    return Started::Now(Event::Failed(e.into()));
                }
                self.transport
                    .as_ref()
                    .expect("checked")
                    .gateway(peer_config(&peer));
                Started::Nothing
            }
            Action::UpdateGateway { old_key, peer } => {
                let h = self.handle();
                let r = async {
                    if old_key != peer.public_key {
                        h.remove_peer(&old_key).await?;
                    }
                    crate::peer::set_translation(&h, &peer)?;
                    h.upsert_peer(peer_config(&peer)).await.map_err(Error::from)
                };
                quiet(r.await)
            }
            Action::SetRoutes { name, add, remove } => {
                quiet(self.set_routes(&name, None, &add, &remove).await)
            }
            Action::ChangeAddress { name, old, new } => {
                quiet(self.change_address(&name, old, new).await)
            }
            // Userspace mode carries IPv4 only: the session never adds an IPv6 side to it.
            Action::AddAddress { .. } | Action::RemoveAddress { .. }
                if self.userspace.is_some() =>
            {
                Started::Nothing
            }
            Action::AddAddress { name, address } => quiet(self.add_address6(&name, address).await),
            Action::RemoveAddress { name, address } => {
                quiet(self.remove_address(&name, address).await)
            }
            Action::Undo(u) => Started::Now(self.undo(u).await),
            Action::RemoveState => quiet(State::remove(&self.dir.state())),
            Action::Exit | Action::Cancel | Action::Progress(_) | Action::Ready => Started::Nothing,
        }
    }

    async fn create_device(&mut self, name: String) -> Started {
        if crate::privileged::needed() {
            return match self.create_device_via_helper(&name).await {
                Ok(ifindex) => Started::Now(Event::DeviceCreated { ifindex }),
                Err(e) => Started::Now(Event::Failed(e.into())),
            };
        }
        let key = self.key.clone().expect("key loaded");
        let r = async {
            let device = Device::start(DeviceConfig {
                name: name.clone(),
                private_key: key,
                listen_port: 0,
                mtu: DEFAULT_MTU,
                uapi_dir: Some(self.dir.uapi_dir()),
            })
            .await?;
            self.device = Some(device);
            // Before any address, route or peer: nothing the cluster sends can be forwarded.
            exec::refuse_forwarding(&name)?;
            Ok::<_, Error>(Netlink::open()?.link_index(&name).await?)
        };
        match r.await {
            Ok(ifindex) => Started::Now(Event::DeviceCreated { ifindex }),
            Err(e) => Started::Now(Event::Failed(e.into())),
        }
    }

    async fn start_userspace(&mut self, mut setup: crate::userspace::Setup) -> Started {
        let key = self.key.clone().expect("key loaded");
        let gateway = setup.gateway.clone();
        setup.gateway.endpoint =
            crate::transport::first_endpoint(self.args.transport.into(), gateway.endpoint);
        match crate::userspace::Userspace::start(key, &self.args.interface, setup).await {
            Ok((device, u)) => {
                let listen = u.listen;
                self.device = Some(device);
                self.userspace = Some(u);
                self.start_transport(peer_config(&gateway));
                Started::Now(Event::UserspaceStarted(listen))
            }
            Err(e) => Started::Now(Event::Failed(e.into())),
        }
    }

    /// Adds the gateway peer and starts choosing its path (see [`crate::transport`]).
    async fn configure_gateway(&mut self, gateway: PeerConfig) -> Result<(), Error> {
        let mut first = gateway.clone();
        first.endpoint =
            crate::transport::first_endpoint(self.args.transport.into(), gateway.endpoint);
        self.handle().upsert_peer(first).await?;
        self.start_transport(gateway);
        Ok(())
    }

    /// Starts choosing the path of `gateway` (already on the device; its endpoint is UDP's).
    fn start_transport(&mut self, gateway: PeerConfig) {
        use crate::transport::{Timings, Transport};
        let mode = self.args.transport.into();
        if let Some(udp) = gateway.endpoint {
            let timings = Timings {
                probe_every: self.args.transport_probe_every,
                ..Timings::default()
            };
            // The API-server rung port-forwards to a pod of the gateway's namespace.
            let ns = self.args.kube.gateway_namespace.clone();
            let (handle, kube) = (self.handle(), self.kube.clone());
            let t = Transport::start(mode, timings, handle, gateway, udp, kube, ns);
            self.transport = Some(t);
        }
    }
}

/// A long action whose future yields its event.
fn long(fut: impl Future<Output = Event> + Send + 'static) -> Started {
    Started::Long(Box::pin(async move { Done::Event(fut.await) }))
}
