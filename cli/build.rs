//! Names the commit this `quell` was built from, for `quell --version`: a report or a bug filed
//! against a build can then be traced to its source.

use std::path::Path;
use std::process::Command;

fn main() {
    let git = Path::new("../.git");
    println!("cargo:rerun-if-changed=../.git/HEAD");
    if let Ok(head) = std::fs::read_to_string(git.join("HEAD")) {
        if let Some(reference) = head.trim().strip_prefix("ref: ") {
            println!("cargo:rerun-if-changed=../.git/{reference}");
            println!("cargo:rerun-if-changed=../.git/packed-refs");
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
