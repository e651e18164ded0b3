//! The model test's world: laptops running the real session core and transport ladder, the
//! gateway's real core, real WireGuard cores on both ends, an in-memory API server and a fake
//! network, all on one fake clock. The state machine test and its reference model are in
//! `tests/model.rs`; docs/architecture.md ("Model test") says what it covers.

pub mod api;
pub mod clock;
pub mod gateway;
pub mod laptop;
pub mod net;
pub mod sut;
pub mod world;
