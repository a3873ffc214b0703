//! The shipped playbooks and event fixtures (`playbooks/` at the top of the repository), as the
//! tests read them.

use serde_json::Value;

use crate::definition::Playbook;
use crate::Node;

/// A file under `playbooks/`: JSON or YAML by its extension.
pub fn shipped(path: &str) -> Value {
    let full = format!("{}/../playbooks/{path}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&full).unwrap_or_else(|e| panic!("{full}: {e}"));
    let json = std::path::Path::new(path)
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("json"));
    if json {
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
    } else {
        serde_saphyr::from_str(&text).unwrap_or_else(|e| panic!("{full}: {e}"))
    }
}

/// An event from `playbooks/fixtures/events`.
pub fn event(name: &str) -> Value {
    shipped(&format!("fixtures/events/{name}"))
}

/// A shipped playbook, read and checked.
pub fn playbook(name: &str) -> Playbook {
    let v = shipped(name);
    Playbook::parse(Node::new(&v, "")).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// The names of every shipped playbook, sorted.
pub fn playbook_files() -> Vec<String> {
    let dir = format!("{}/../playbooks", env!("CARGO_MANIFEST_DIR"));
    let mut files: Vec<String> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{dir}: {e}"))
        .filter_map(|e| e.ok()?.file_name().into_string().ok())
        .filter(|n| {
            std::path::Path::new(n)
                .extension()
                .is_some_and(|e| e.eq_ignore_ascii_case("yaml"))
        })
        .collect();
    files.sort();
    files
}
