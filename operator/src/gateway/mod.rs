//! OverlayGateways: [`status`] decides a gateway's routes, conditions and active host from
//! plain inputs (pure, table-tested); [`credentials`] keeps one ServiceAccount per ClientJoin
//! client; [`controller`] gathers the inputs from the caches and the election Leases and writes
//! the result (I/O).

pub mod controller;
pub mod credentials;
pub mod status;
