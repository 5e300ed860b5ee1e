//! `kubectl causeway`, a kubectl plugin for people on call: [`status`] puts the whole
//! cluster's Causeway state on one screen with the command that shows more for each problem;
//! [`trace`] draws the path a packet takes between two endpoints, hop by hop. Both are pure
//! functions of a [`snapshot::Snapshot`] read once from the API server, so every verdict is
//! unit-tested; `main.rs` reads, prints and sets the exit code.

pub mod snapshot;
pub mod status;
pub mod trace;
