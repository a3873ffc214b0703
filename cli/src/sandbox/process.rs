//! Finding and stopping exactly the processes the sandbox started, never another that happens to
//! have been given the same pid since.

use std::time::{Duration, Instant};

use nix::sys::signal::{kill, Signal};
use nix::unistd::Pid;

pub fn alive(pid: u32) -> bool {
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    kill(Pid::from_raw(raw), None).is_ok()
        && !std::fs::read_to_string(format!("/proc/{pid}/stat"))
            .is_ok_and(|s| s.split_whitespace().nth(2) == Some("Z"))
}

/// The process's command line, arguments joined by spaces.
pub fn command_line(pid: u32) -> Option<String> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|b| *b == 0)
            .map(|a| String::from_utf8_lossy(a).into_owned())
            .collect::<Vec<_>>()
            .join(" "),
    )
}

/// Stops `pid` if its command line still contains every one of `expect`. Says whether it stopped one.
pub fn stop(pid: u32, expect: &[&str]) -> bool {
    let Some(cmd) = command_line(pid) else {
        return false;
    };
    if !expect.iter().all(|e| cmd.contains(e)) {
        return false;
    }
    let Ok(raw) = i32::try_from(pid) else {
        return false;
    };
    let target = Pid::from_raw(raw);
    let _ = kill(target, Signal::SIGTERM);
    if gone_within(pid, Duration::from_secs(5)) {
        return true;
    }
    // On a loaded machine the end can take a while even after SIGKILL: `sandbox down` returns
    // only once the process is gone, so whatever runs next finds nothing of it.
    let _ = kill(target, Signal::SIGKILL);
    gone_within(pid, Duration::from_secs(10));
    true
}

fn gone_within(pid: u32, limit: Duration) -> bool {
    let start = Instant::now();
    while start.elapsed() < limit {
        if !alive(pid) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}
