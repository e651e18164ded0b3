//! The I/O edges of the device: the TUN (with virtio-net offloads) and the UDP socket (with
//! recvmmsg, UDP GSO and GRO through quinn-udp). Each falls back to one packet per syscall when
//! the kernel lacks a feature.

pub mod offload;
pub mod stats;
pub mod stream;
pub mod tun;
pub mod udp;
