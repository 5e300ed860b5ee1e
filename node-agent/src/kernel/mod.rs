//! The kernel side: [`netlink`] is the only code that changes the node's kernel state (links,
//! addresses, routes, neighbours, FDB entries, sysctls; NAT goes through [`crate::nat`]);
//! [`fake`] is an in-memory dataplane with the kernel's rules for unit tests; [`netns`] enters
//! a network namespace; [`sysctl`] says where the kernel parameters are.

pub mod fake;
pub mod netlink;
pub mod netns;
pub mod sysctl;
