//! The stack against a second smoltcp interface standing in for a pod (10.96.0.20): a
//! connection carries a megabyte each way and ends with FIN on both sides; a closed port is
//! refused; a connection nobody answers times out for its user.

use std::collections::VecDeque;

use smoltcp::iface::{Config, Interface, SocketSet};
use smoltcp::socket::tcp;
use smoltcp::wire::{HardwareAddress, IpAddress, IpCidr};

use super::*;

const POD: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 20);

/// The pod: echoes whatever arrives on port 80 and closes when the client did.
fn pod(mut from_stack: mpsc::Receiver<Vec<u8>>, to_stack: mpsc::Sender<Vec<u8>>) {
    tokio::spawn(async move {
        let started = tokio::time::Instant::now();
        let now = || smoltcp::time::Instant::from_micros(started.elapsed().as_micros() as i64);
        let mut dev = Queues {
            rx: VecDeque::new(),
            tx: VecDeque::new(),
            mtu: 1420,
        };
        let mut iface = Interface::new(Config::new(HardwareAddress::Ip), &mut dev, now());
        iface.update_ip_addrs(|a| {
            let _ = a.push(IpCidr::new(IpAddress::Ipv4(POD), 32));
        });
        let _ = iface
            .routes_mut()
            .add_default_ipv4_route(Ipv4Addr::new(100, 77, 0, 1));
        let mut sockets = SocketSet::new(Vec::new());
        let mut sock = tcp::Socket::new(
            tcp::SocketBuffer::new(vec![0; 65536]),
            tcp::SocketBuffer::new(vec![0; 65536]),
        );
        sock.listen(80).unwrap();
        let h = sockets.add(sock);
        loop {
            iface.poll(now(), &mut dev, &mut sockets);
            let s = sockets.get_mut::<tcp::Socket>(h);
            while s.can_recv() && s.can_send() {
                let room = s.send_capacity() - s.send_queue();
                let data = s.recv(|b| {
                    let n = b.len().min(room);
                    (n, b[..n].to_vec())
                });
                let _ = s.send_slice(&data.unwrap_or_default());
            }
            if s.state() == tcp::State::CloseWait && s.send_queue() == 0 {
                s.close();
            }
            iface.poll(now(), &mut dev, &mut sockets);
            while let Some(p) = dev.tx.pop_front() {
                let _ = to_stack.send(p).await;
            }
            let delay = iface
                .poll_delay(now(), &sockets)
                .map_or(Duration::from_millis(50), Duration::from);
            tokio::select! {
                p = from_stack.recv() => match p {
                    Some(p) => dev.rx.push_back(p),
                    None => return,
                },
                _ = tokio::time::sleep(delay) => {}
            }
        }
    });
}

fn stack_with_pod() -> Netstack {
    let (to_pod, from_stack) = mpsc::channel(1024);
    let (to_stack, from_pod) = mpsc::channel(1024);
    pod(from_stack, to_stack);
    let channel = PacketChannel {
        tx: to_pod,
        rx: from_pod,
    };
    Netstack::start(
        channel,
        Ipv4Addr::new(100, 77, 0, 2),
        Ipv4Addr::new(100, 77, 0, 1),
        1420,
    )
}

#[tokio::test]
async fn a_connection_carries_a_megabyte_each_way_and_ends_cleanly() {
    let stack = stack_with_pod();
    let conn = stack
        .connector()
        .connect(SocketAddrV4::new(POD, 80), Duration::from_secs(5))
        .await
        .unwrap();
    // A local client spliced to the connection, as the proxy does.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let client = TcpStream::connect(listener.local_addr().unwrap())
        .await
        .unwrap();
    let (local, _) = listener.accept().await.unwrap();
    let spliced = tokio::spawn(conn.splice(local));
    let sent: Vec<u8> = (0..1 << 20).map(|i| (i % 251) as u8).collect();
    let (mut r, mut w) = client.into_split();
    let data = sent.clone();
    let writer = tokio::spawn(async move {
        w.write_all(&data).await.unwrap();
        // FIN: the pod echoes the rest, then closes too.
        w.shutdown().await.unwrap();
    });
    let mut got = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(20), r.read_to_end(&mut got)).await;
    assert!(read.is_ok(), "no end of stream after {} bytes", got.len());
    assert_eq!(got.len(), sent.len());
    assert!(got == sent, "the bytes changed on the way");
    writer.await.unwrap();
    tokio::time::timeout(Duration::from_secs(5), spliced)
        .await
        .expect("the splice ends when both sides did")
        .unwrap();
}

#[tokio::test]
async fn a_closed_port_is_refused_and_silence_times_out() {
    let stack = stack_with_pod();
    let refused = stack
        .connector()
        .connect(SocketAddrV4::new(POD, 81), Duration::from_secs(5))
        .await;
    assert_eq!(
        refused.err().map(|e| e.kind()),
        Some(io::ErrorKind::ConnectionRefused)
    );
    let silent = stack
        .connector()
        .connect(
            SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 99), 80),
            Duration::from_millis(300),
        )
        .await;
    assert_eq!(
        silent.err().map(|e| e.kind()),
        Some(io::ErrorKind::TimedOut)
    );
}
