//! PodNetworks: [`conflicts`] settles what several networks want of the same nodes and
//! ranges, [`ipam`] plans each node's subnet, [`rollup`] turns what the agents report into the
//! network's conditions (all three pure, table-tested); [`controller`] reads the caches, runs
//! them (its own decisions in [`controller::decide`], pure too) and writes the results;
//! [`incremental`] keeps what a full re-plan found so that the events after it cost only what
//! they change.

pub mod conflicts;
pub mod controller;
pub mod gather;
pub mod incremental;
pub mod ipam;
pub mod rollup;
