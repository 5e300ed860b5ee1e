//! The decision side, pure: [`model`] is the data (the kernel objects the agent owns and the
//! operations on them), [`plan`] the state a node should have, [`diff`] the operations from
//! what is to what should be, [`status`] the NodeSubnet status a pass reports.

pub mod diff;
pub mod model;
pub mod plan;
pub mod status;
