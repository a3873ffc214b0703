//! What the local Lambda host has delivered, per queue: kept in the host process and written to
//! the sandbox's folder after every round, so `quell sandbox status` shows what is in flight,
//! retried and dead-lettered, as Lambda's metrics would.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Mutex;

use serde::{Deserialize, Serialize};

use super::state::sandbox_dir;

/// One queue's counts since the host started.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueCounts {
    /// Received and not settled yet.
    pub in_flight: u64,
    /// Settled: the function took them (deleted from the queue).
    pub delivered: u64,
    /// Invocations tried again: the function failed, or named the message in `batchItemFailures`.
    pub retried: u64,
    /// Sent to the dead-letter queue after every try, or dropped where Lambda would drop them.
    pub dead_lettered: u64,
    pub dropped: u64,
    /// First tries whose process the host killed part way through (`quell sandbox crash`).
    #[serde(default)]
    pub killed: u64,
    /// Rounds in which the host itself could not hand a message over (the message was made
    /// visible again at once, for the next round).
    pub host_errors: u64,
}

/// The counts of every queue, by queue name.
#[derive(Debug, Default)]
pub struct Deliveries {
    counts: Mutex<BTreeMap<String, QueueCounts>>,
}

fn file() -> PathBuf {
    sandbox_dir().join("host-deliveries.json")
}

fn queue_name(url: &str) -> String {
    url.rsplit('/').next().unwrap_or(url).to_owned()
}

impl Deliveries {
    pub fn count(&self, queue_url: &str, change: impl FnOnce(&mut QueueCounts)) {
        let mut counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        change(counts.entry(queue_name(queue_url)).or_default());
    }

    /// Written where `quell sandbox status` reads it; a failure to write is only logged.
    pub fn save(&self) {
        let counts = self
            .counts
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .clone();
        let text = serde_json::to_string_pretty(&counts).unwrap_or_default();
        // Written aside and renamed over: pollers save side by side, and a reader never sees
        // half a file.
        let aside = file().with_extension(format!("{:x}.partial", fastrand::u64(..)));
        if let Err(e) = std::fs::write(&aside, text).and_then(|()| std::fs::rename(&aside, file()))
        {
            tracing::warn!(error = %e, "cannot write the host's delivery counts");
        }
    }
}

/// What the running host last wrote, empty before it delivered anything.
pub fn load() -> BTreeMap<String, QueueCounts> {
    std::fs::read_to_string(file())
        .ok()
        .and_then(|t| serde_json::from_str(&t).ok())
        .unwrap_or_default()
}
