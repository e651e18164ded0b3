//! Where a session is, and what exists there: each stage holds exactly the state that exists
//! in it (the plan and the journal once inspected, the tunnel IP once assigned, the link once
//! created, the lease and the stall detector while serving), so no step asks for what an
//! earlier step may not have made. [`Phase`] is its name, for the driver and `kwg status`.

use std::net::{Ipv4Addr, SocketAddr};
use std::time::Instant;

use super::health::Health;
use super::serving::Readdress;
use super::{DnsTarget, Lease, Phase, Plan};
use crate::journal::State;

/// The session's stage.
#[derive(Debug)]
pub(super) enum Stage {
    /// Nothing planned, nothing changed.
    Inspecting,
    /// Planned and journalled: bring-up, then serving.
    Joined(Box<Joined>),
    /// Undoing the journal, newest step first (none when nothing was saved).
    TearingDown(Option<State>),
    /// Over; the journal as last saved (its failed undo steps), if any.
    Done(Option<State>),
}

/// A planned session: its plan, its journal (the state file: what to undo) and its step.
#[derive(Debug)]
pub(super) struct Joined {
    pub plan: Plan,
    pub journal: State,
    pub step: Step,
}

/// The steps after planning, each with what exists in it.
#[derive(Debug)]
pub(super) enum Step {
    Registering,
    WaitingTunnelIp,
    /// The tunnel IP is assigned; the TUN (or the userspace stack) is being created.
    CreatingDevice {
        ip: Ipv4Addr,
    },
    ConfiguringNetwork(Tun),
    InstallingFirewall(Tun),
    StartingDns(Tun),
    WritingResolvConf(Tun),
    ConfiguringResolved(Tun),
    /// Queries did not arrive through resolved: its link is being reverted.
    RevertingResolved {
        ip: Ipv4Addr,
        check: ResolvedCheck,
    },
    AwaitingHandshake {
        ip: Ipv4Addr,
        /// The tunnel link (none in userspace mode).
        link: Option<u32>,
        /// When to move to a fresh UDP port.
        rebind: Instant,
    },
    ProbingDns {
        ip: Ipv4Addr,
        /// In mode auto with resolved: when to fall back to the resolver file.
        check: Option<ResolvedCheck>,
    },
    Serving(Box<Serving>),
}

/// The tunnel interface with its address.
#[derive(Debug, Clone, Copy)]
pub(super) struct Tun {
    pub ip: Ipv4Addr,
    pub ifindex: u32,
}

/// Mode auto's check that queries arrive through systemd-resolved, with what falling back
/// needs.
#[derive(Debug, Clone)]
pub(super) struct ResolvedCheck {
    /// When the probe through resolved's stub gives up.
    pub at: Instant,
    /// The link whose DNS is reverted.
    pub ifindex: u32,
    /// The forwarder the resolver file then points at.
    pub forwarder: SocketAddr,
    /// The resolver file.
    pub fallback: DnsTarget,
}

/// A joined session.
#[derive(Debug)]
pub(super) struct Serving {
    pub ip: Ipv4Addr,
    /// The interface's IPv4 address: `ip`, mapped when the tunnel CIDR is a virtual subnet
    /// (as planned when it was last set: a gateway change may map it elsewhere since).
    pub address: ipnet::IpNet,
    pub lease: Lease,
    pub health: Health,
    /// Following a new gateway: its tunnel IP for this machine is to be read again.
    pub readdress: Option<Readdress>,
}

impl Stage {
    pub(super) fn phase(&self) -> Phase {
        match self {
            Stage::Inspecting => Phase::Inspecting,
            Stage::Joined(j) => j.step.phase(),
            Stage::TearingDown(_) => Phase::TearingDown,
            Stage::Done(_) => Phase::Done,
        }
    }
}

impl Step {
    pub(super) fn phase(&self) -> Phase {
        match self {
            Step::Registering => Phase::Registering,
            Step::WaitingTunnelIp => Phase::WaitingTunnelIp,
            Step::CreatingDevice { .. } => Phase::CreatingDevice,
            Step::ConfiguringNetwork(_) => Phase::ConfiguringNetwork,
            Step::InstallingFirewall(_) => Phase::InstallingFirewall,
            Step::StartingDns(_) => Phase::StartingDns,
            Step::WritingResolvConf(_) => Phase::WritingResolvConf,
            Step::ConfiguringResolved(_) => Phase::ConfiguringResolved,
            Step::RevertingResolved { .. } => Phase::RevertingResolved,
            Step::AwaitingHandshake { .. } => Phase::AwaitingHandshake,
            Step::ProbingDns { .. } => Phase::ProbingDns,
            Step::Serving(_) => Phase::Serving,
        }
    }
}
