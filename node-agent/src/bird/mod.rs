//! BIRD 2 as the node's BGP speaker in Routed mode (issue #17): the agent renders BIRD's
//! configuration from the PodNetwork's `routed.bgp`, runs BIRD beside itself, and reads the
//! sessions and learned routes back over BIRD's control socket. BIRD announces the node's
//! subnet and learns the routers' routes; it never writes the kernel. The agent stays the
//! one owner of the node's routes and installs the learned ones through its plan, as before.
//!
//! Pure logic is separate from I/O:
//! - `render` (pure): `bird.conf` from a [`SpeakerConfig`](crate::bgp::SpeakerConfig);
//! - `parse` (pure): `show protocols all` and `show route ... all` into sessions and routes,
//!   and BIRD's errors into sentences;
//! - `sessions` (pure): the session table the agent sees, with when each state began and the
//!   last NOTIFICATION a peer sent;
//! - `control` (I/O): the control-socket protocol;
//! - `process` (I/O): BIRD's files, `bird -p`, starting `bird -f`, leftovers;
//! - `speaker` (I/O): [`Speaker`], the supervisor behind `crate::bgp`'s public face.

pub mod control;
mod error;
pub mod parse;
mod process;
pub mod render;
mod sessions;
mod speaker;

pub use error::BirdError;
pub use process::{DEFAULT_DIR, Options};
pub use speaker::Speaker;
