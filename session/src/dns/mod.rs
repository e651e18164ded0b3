//! Split DNS decisions: which resolver answers a name (`split`), the resolver file's
//! rendering (`resolvconf`), and the domains of kwg's link in systemd-resolved (`domains`).

pub mod domains;
pub mod resolvconf;
pub mod split;
