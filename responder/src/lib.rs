//! The Quell responder: the engine that validates, records and carries out containment requests.
//!
//! The `bootstrap` binary only wires this library into the Lambda runtime; everything that decides or
//! acts lives here so the CLI and the tests use the same code (the message contract, the ledger
//! records, ARN parsing).

pub mod audit;
pub mod authorization;
pub mod aws_error;
pub mod clients;
pub mod contract;
pub mod engine;
pub mod entities;
pub mod entity;
pub mod error;
pub mod inbound;
pub mod ledger;
pub mod membership;
pub mod permissions;
pub mod playbooks;
pub mod protection;
pub mod runs;
pub mod secret;
pub mod sessions;
pub mod settings;
pub mod telemetry;

#[cfg(test)]
mod properties;

pub use engine::Responder;
pub use error::ResponderError;
