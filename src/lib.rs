//! Herald: a publish/subscribe event bus over WebSockets.
//!
//! A topic router with wildcard (glob) subscriptions fans each published event out to every
//! matching subscriber. Each subscriber's session keeps a bounded buffer, so a client that is
//! slow or briefly disconnected loses nothing: on reconnect it resumes from its last sequence
//! number, and where the buffer overflowed it is told exactly which range it missed.
//!
//! Embedding: start a [`Server`] from your own program, or use a [`Bus`] directly to publish
//! and subscribe in-process without a socket.
//!
//! ```no_run
//! # async fn demo() -> std::io::Result<()> {
//! let mut config = herald::Config::default();
//! config.listen = "127.0.0.1:0".parse().unwrap();
//! let server = herald::Server::bind(config).await?;
//! println!("listening on {}", server.local_addr());
//! let bus = server.bus();
//! let mut sub = bus.subscribe("orders/**").await.unwrap();
//! bus.publish_json("orders/eu/created", &serde_json::json!({"id": 1})).unwrap();
//! let first = sub.recv().await;
//! # drop(first);
//! server.run().await
//! # }
//! ```
//!
//! The wire protocol is specified in `PROTOCOL.md`; its frame types and the topic syntax live in
//! the `herald-protocol` crate, re-exported here as [`protocol`] and [`topic`]. A program that
//! only talks to a Herald server needs the `herald-client` crate, not this one.

pub mod auth;
pub mod backend;
pub mod bus;
pub mod cli;
pub mod cluster;
pub mod config;
pub mod event;
pub mod fd_limit;
pub mod metrics;
mod prefetch;
pub mod reload;
pub mod router;
pub mod server;
pub mod session;
pub mod store;

pub use herald_protocol as protocol;
pub use herald_protocol::topic;

pub use bus::Bus;
pub use config::Config;
pub use server::{ReloadHandle, Server, ShutdownHandle};
