//! The wire protocol of `docs/PROTOCOL.md`, in one place: client requests
//! in ([`request`]), server messages out, as JSON ([`json`]: the hot
//! market-data encoders written by hand, control messages typed) or as the
//! records of the binary subprotocol `tickwire.v1.bin` ([`binary`]).
//!
//! Nothing here does I/O or keeps per-connection state beyond what a
//! caller passes in: the writer stage decides what to send and when, and
//! this module decides what it looks like on the wire.

pub mod binary;
pub mod control;
pub mod json;
pub mod request;
