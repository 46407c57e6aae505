//! A small RESP2 client for the two connections that carry the load: the publish pipeline
//! and the pub/sub feed. Reads and the rare commands keep using redis-rs.
//!
//! Why not redis-rs there: its pipeline is stop-and-wait per call and clones every command,
//! and its pub/sub stream copies each message into its own allocation before handing it
//! over one at a time. Here a command is encoded once into the socket's buffer, many calls
//! are in flight on one connection, and a read of many replies or messages is parsed in
//! place, each payload a slice of the buffer it arrived in.

mod conn;
mod encode;
mod parse;

pub(super) use conn::read_reply;
pub use conn::{Endpoint, Stream, connect};
pub use encode::{Command, bulk, bulk_header};
pub use parse::{Reply, parse};
