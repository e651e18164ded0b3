//! What a user debugging a tunnel reads: events inside the peer's span, drops summarised.

use std::io::Write;
use std::sync::{Arc, Mutex};

use base64::Engine;
use tracing_subscriber::fmt::MakeWriter;

use super::*;

/// Formatted log output, captured in memory.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl<'a> MakeWriter<'a> for Captured {
    type Writer = Captured;
    fn make_writer(&'a self) -> Captured {
        self.clone()
    }
}

impl Captured {
    fn lines(&self) -> Vec<String> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines().map(str::to_owned).collect()
    }
}

/// Runs `f` with a debug-level text subscriber and returns the lines it logged.
fn capture(f: impl FnOnce()) -> Vec<String> {
    let out = Captured::default();
    let subscriber = tracing_subscriber::fmt()
        .with_writer(out.clone())
        .with_ansi(false)
        .with_max_level(tracing::Level::DEBUG)
        .finish();
    tracing::subscriber::with_default(subscriber, f);
    out.lines()
}

fn only<'a>(lines: &'a [String], needle: &str) -> &'a str {
    let found: Vec<&String> = lines.iter().filter(|l| l.contains(needle)).collect();
    assert_eq!(found.len(), 1, "one line with {needle:?} in {lines:#?}");
    found[0]
}

#[test]
fn handshake_is_logged_in_the_peer_span_without_keys() {
    let (ka, kb) = (PrivateKey::generate(), PrivateKey::generate());
    let secrets: Vec<String> = [&ka, &kb]
        .iter()
        .flat_map(|k| {
            [
                k.to_string(),
                crate::keys::hex32(k.as_bytes()),
                base64::engine::general_purpose::STANDARD.encode(&k.as_bytes()[..12]),
            ]
        })
        .collect();
    let (a_short, b_short) = (ka.public_key().short(), kb.public_key().short());
    let lines = capture(|| {
        let mut p = Pair::with_keys(ka, kb);
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
        let spoofed = ipv4([10, 9, 9, 9], [10, 0, 0, 2], b"spoofed");
        p.a_sends(&spoofed);
        p.a_sends(&spoofed);
        p.b.tick(p.now, &mut NetBatch::new(4));
        p.b.remove_peer(&p.a_key);
    });

    // A initiated towards B; B answered A. Each line sits in the span of the peer it is about.
    let initiator = only(&lines, "role=initiator");
    assert!(initiator.contains("handshake completed"), "{initiator}");
    assert!(
        initiator.contains(&format!("peer{{peer={b_short}}}")),
        "{initiator}"
    );
    let responder = only(&lines, "role=responder");
    assert!(
        responder.contains(&format!("peer{{peer={a_short}}}")),
        "{responder}"
    );
    let learned = only(&lines, "endpoint learned");
    assert!(learned.contains(A_ADDR), "{learned}");
    // Two spoofed packets, one summary line at the next tick.
    let spoofed = only(&lines, "inner source is outside");
    assert!(spoofed.contains("count=2"), "{spoofed}");
    assert!(
        spoofed.contains(&format!("peer{{peer={a_short}}}")),
        "{spoofed}"
    );
    assert_eq!(lines.iter().filter(|l| l.contains("peer added")).count(), 2);
    only(&lines, "peer removed");
    for secret in &secrets {
        for line in &lines {
            assert!(!line.contains(secret.as_str()), "private key in {line}");
        }
    }
}

#[test]
fn roaming_logs_old_and_new_endpoints() {
    let lines = capture(|| {
        let mut p = Pair::new();
        p.a_sends(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"hello"));
        let mut net = NetBatch::new(1);
        p.a.handle_tun(&ipv4([10, 0, 0, 1], [10, 0, 0, 2], b"x"), p.now, &mut net);
        let roamed: SocketAddr = "[2001:db8::7]:4000".parse().unwrap();
        for (_, d) in net.datagrams() {
            p.b.handle_udp(
                roamed,
                d,
                p.now,
                &mut NetBatch::new(1),
                &mut TunBatch::new(1),
            );
        }
    });
    let roamed = only(&lines, "endpoint roamed");
    assert!(
        roamed.contains(&format!("old={A_ADDR} new=[2001:db8::7]:4000")),
        "{roamed}"
    );
}
