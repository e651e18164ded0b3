//! This process's privilege: root, or CAP_NET_ADMIN in its effective set.

/// CAP_NET_ADMIN's bit in the capability sets (linux/capability.h).
const CAP_NET_ADMIN: u32 = 12;

/// Whether this process may create interfaces and routes.
pub fn privileged() -> bool {
    nix::unistd::geteuid().is_root() || has_cap_net_admin()
}

/// Whether CAP_NET_ADMIN is in this process's effective capabilities.
pub fn has_cap_net_admin() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("CapEff:"))
                .and_then(|v| u64::from_str_radix(v.trim(), 16).ok())
        })
        .is_some_and(|caps| caps & (1 << CAP_NET_ADMIN) != 0)
}
