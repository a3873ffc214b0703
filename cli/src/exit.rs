//! Exit codes, named, so scripts can tell a refusal from a failure.

use std::fmt::Write as _;

/// Everything went as asked.
pub const SUCCESS: u8 = 0;
/// Something failed; the message says what.
pub const FAILURE: u8 = 1;
/// The request was refused (by the CLI's own checks or by the responder).
pub const REFUSED: u8 = 3;
/// The responder tried and failed; the ledger says which steps were done.
pub const CONTAINMENT_FAILED: u8 = 4;
/// No outcome arrived in time.
pub const TIMED_OUT: u8 = 5;

/// The change was applied, but some stack instances failed: the output names them and says how
/// to retry.
pub const INSTANCES_FAILED: u8 = 6;

/// Every exit code with what it means: `--help` and the README print this table (a test holds
/// the README to it).
pub const TABLE: &[(u8, &str)] = &[
    (
        SUCCESS,
        "done as asked (contained, released, installed, healthy)",
    ),
    (
        FAILURE,
        "an error, or `status`/`doctor` found a problem; the message says how to fix it",
    ),
    (
        2,
        "the command line is wrong (unknown option, missing argument)",
    ),
    (
        REFUSED,
        "refused (by the CLI's checks, at the prompt or by the responder); nothing done",
    ),
    (
        CONTAINMENT_FAILED,
        "the responder tried and failed; `quell history ARN` shows which steps were done",
    ),
    (
        TIMED_OUT,
        "no outcome within --timeout; it may still complete (`quell history ARN`)",
    ),
    (
        INSTANCES_FAILED,
        "applied, but stack instances failed where the output says (`--retry-failed`)",
    ),
];

/// [`TABLE`] as `--help` shows it.
pub fn table_text() -> String {
    let mut text = String::from("Exit codes:\n");
    for (code, meaning) in TABLE {
        let _ = writeln!(text, "  {code}  {meaning}");
    }
    text
}

/// An error that carries its own exit code.
#[derive(Debug, thiserror::Error)]
#[error("{message}")]
pub struct Coded {
    pub code: u8,
    pub message: String,
}

pub fn refused(message: impl Into<String>) -> anyhow::Error {
    Coded {
        code: REFUSED,
        message: message.into(),
    }
    .into()
}

pub fn code_for(e: &anyhow::Error) -> u8 {
    e.downcast_ref::<Coded>().map_or(FAILURE, |c| c.code)
}

/// The error and its causes on one line each, most specific last.
pub fn describe(e: &anyhow::Error) -> String {
    let mut text = e.to_string();
    for cause in e.chain().skip(1) {
        text.push_str("\n  caused by: ");
        text.push_str(&cause.to_string());
    }
    text
}
