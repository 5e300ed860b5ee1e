//! OverlayGateways: [`status`] decides a gateway's routes, conditions and active host from
//! plain inputs (pure, table-tested), with [`routes6`] for the IPv6 side of RouteToNodes (on an
//! IPv6 or dual-stack network); [`credentials`] keeps one ServiceAccount per ClientJoin
//! client; [`controller`] gathers the inputs from the caches and the election Leases and writes
//! the result (I/O).

pub mod controller;
pub mod credentials;
pub mod routes6;
pub mod status;
