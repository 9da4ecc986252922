//! The transport under every connection: plain HTTP on the WebSocket port
//! ([`http`]), the WebSocket framing ([`ws`]), TLS ([`tls`]), the
//! connection limits ([`limits`]), a plain TCP socket shared by a
//! connection's reader, writer and shard ([`shared`]), and the write side
//! of a connection ([`outbound`]): what is queued for the socket, whether a
//! write is under way, and the close.
//!
//! Nothing here knows about ticks, subscriptions or shards: the writer
//! stage hands this module encoded frames, and [`crate::connection`] runs
//! the tasks that drive a socket.

pub mod deflate;
pub mod http;
pub mod limits;
pub mod outbound;
pub mod shared;
pub mod tls;
pub mod ws;

/// The subprotocol of the JSON protocol.
pub const JSON_PROTOCOL: &str = "tickwire.v1.json";
/// The subprotocol of the binary protocol: market data in binary frames
/// ([`crate::protocol::binary`]), control messages still JSON text.
pub const BIN_PROTOCOL: &str = "tickwire.v1.bin";
