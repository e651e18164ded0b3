//! A test's own nftables table in a laptop's network namespace, removed when dropped: to
//! block UDP to the gateway or the API server from that laptop only.

use crate::laptop::{Laptop, text};

pub struct Blocked<'a> {
    l: &'a Laptop,
    table: String,
}

impl<'a> Blocked<'a> {
    /// Drops (or rejects) what `rule` matches on its way out of the laptop, e.g.
    /// `ip daddr 192.0.2.1 meta l4proto udp drop`.
    pub fn new(l: &'a Laptop, rule: &str) -> Blocked<'a> {
        let table = format!("kwgtest_{}", l.name);
        let chain = "{ type filter hook output priority 0 ; }";
        let rule_argv: Vec<&str> = rule.split_whitespace().collect();
        let mut add_rule = vec!["nft", "add", "rule", "inet", &table, "out"];
        add_rule.extend(rule_argv);
        for argv in [
            vec!["nft", "add", "table", "inet", &table],
            vec!["nft", "add", "chain", "inet", &table, "out", chain],
            add_rule,
        ] {
            let out = l.run(&argv);
            assert!(out.status.success(), "{argv:?}: {}", text(&out.stderr));
        }
        Blocked { l, table }
    }
}

impl Drop for Blocked<'_> {
    fn drop(&mut self) {
        let _ = self.l.run(&["nft", "delete", "table", "inet", &self.table]);
    }
}
