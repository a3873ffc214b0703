//! Names the commit this `quell` was built from, for `quell --version`: a report or a bug filed
//! against a build can then be traced to its source.

use std::path::Path;
use std::process::Command;

fn main() {
    let git = Path::new("../.git");
    // Cargo runs a build script again on every build when a file it watches is missing, and a
    // fresh clone keeps its branches in packed-refs: only files that exist are watched.
    // A commit rewrites a file under refs/ (a directory is watched whole).
    for watched in ["HEAD", "packed-refs", "refs"] {
        if git.join(watched).exists() {
            println!("cargo:rerun-if-changed=../.git/{watched}");
        }
    }
    let commit = Command::new("git")
        .args(["log", "-1", "--format=%h %cs"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .filter(|c| !c.is_empty())
        .unwrap_or_else(|| "unknown commit".to_owned());
    println!("cargo:rustc-env=QUELL_COMMIT={commit}");
}
