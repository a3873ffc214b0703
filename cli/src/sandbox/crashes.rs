//! Crashes on request: the local Lambda host kills the responder's process part way through an
//! invocation, as an out-of-memory kill, a hardware fault or a timeout ends one on AWS. The
//! setting lives in a file of the sandbox's folder (`quell sandbox crash` writes it), read before
//! every invocation, so a test can turn crashes on and off while the host runs.
//!
//! Only a delivery's first try is ever killed: its retry, as Lambda's, runs to the end, and
//! `at_most` bounds the kills overall, so a test knows the work can finish.

use std::path::PathBuf;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use super::state::sandbox_dir;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Crashes {
    /// The share of first tries killed, 0 to 1.
    pub rate: f64,
    /// The kill comes at a random moment this many milliseconds into the invocation at most.
    pub within_ms: u64,
    /// Kills in all, from when the setting was written.
    pub at_most: u64,
    /// Seeds the draws, for a run that can be repeated.
    pub seed: u64,
}

fn file() -> PathBuf {
    sandbox_dir().join("crashes.json")
}

/// Turns crashes on, or off with `None`.
pub fn set(crashes: Option<&Crashes>) -> anyhow::Result<()> {
    match crashes {
        Some(c) => std::fs::write(file(), serde_json::to_string_pretty(c)?)?,
        None => match std::fs::remove_file(file()) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e.into()),
            _ => {}
        },
    }
    Ok(())
}

/// What the host draws from: the setting as last read, and the kills made under it.
#[derive(Default)]
pub struct Chaos {
    state: std::sync::Mutex<Option<(Crashes, fastrand::Rng, u64)>>,
}

impl Chaos {
    /// When to kill the invocation about to start, if it is to be killed.
    pub fn draw(&self, first_try: bool) -> Option<Duration> {
        let wanted = std::fs::read_to_string(file())
            .ok()
            .and_then(|t| serde_json::from_str(&t).ok());
        self.draw_under(wanted, first_try)
    }

    fn draw_under(&self, wanted: Option<Crashes>, first_try: bool) -> Option<Duration> {
        let mut state = self
            .state
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        match (wanted, state.as_ref()) {
            (None, _) => *state = None,
            (Some(w), Some((current, _, _))) if *current == w => {}
            (Some(w), _) => {
                let rng = fastrand::Rng::with_seed(w.seed);
                *state = Some((w, rng, 0));
            }
        }
        let (crashes, rng, kills) = state.as_mut()?;
        if !first_try || *kills >= crashes.at_most || rng.f64() >= crashes.rate {
            return None;
        }
        *kills += 1;
        Some(Duration::from_millis(rng.u64(0..=crashes.within_ms)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn every(at_most: u64) -> Crashes {
        Crashes {
            rate: 1.0,
            within_ms: 50,
            at_most,
            seed: 3,
        }
    }

    #[test]
    fn only_first_tries_are_killed_within_the_window_and_never_more_than_allowed() {
        let chaos = Chaos::default();
        assert_eq!(
            chaos.draw_under(Some(every(2)), false),
            None,
            "a retry runs"
        );
        let first = chaos.draw_under(Some(every(2)), true).expect("killed");
        assert!(first <= Duration::from_millis(50));
        assert!(chaos.draw_under(Some(every(2)), true).is_some());
        assert_eq!(chaos.draw_under(Some(every(2)), true), None, "two at most");
        // A new setting starts its own count; none at all kills nothing.
        assert!(chaos.draw_under(Some(every(3)), true).is_some());
        assert_eq!(chaos.draw_under(None, true), None);
        let never = Crashes {
            rate: 0.0,
            ..every(9)
        };
        assert!((0..100).all(|_| chaos.draw_under(Some(never.clone()), true).is_none()));
    }
}
