//! What the Causeway operator and node agent share in talking to the API server (the API
//! types themselves are in `causeway-crds`, which stays free of I/O):
//!
//! - [`apiserver`]: the API servers' own addresses (the `default/kubernetes` endpoints);
//! - [`cache`]: reflector caches without `managedFields`;
//! - [`cli`]: command-line values both binaries take (optional listen addresses);
//! - [`logging`]: `--log-format text|json` and `--log-level`, the same in both binaries;
//! - [`metrics`]: the Prometheus naming conventions both binaries' `/metrics` are tested against;
//! - [`signal`]: SIGINT/SIGTERM for a clean stop;
//! - [`events`]: an events.k8s.io publisher whose series, unlike kube-runtime's `Recorder`,
//!   only fold identical notes;
//! - [`heartbeat`]: the agents' heartbeat Leases, and the operator's clock-skew-proof view of
//!   which agents went silent;
//! - [`election`]: the Lease through which BridgeHosts candidates elect the VIP holder;
//! - [`status`]: status writes by server-side apply.

pub mod apiserver;
pub mod cache;
pub mod cli;
pub mod election;
pub mod events;
pub mod heartbeat;
pub mod logging;
pub mod metrics;
pub mod signal;
pub mod status;
