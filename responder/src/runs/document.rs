//! The declared playbooks reach the responder as one JSON document in the artifacts bucket, under
//! a key named by the SHA-256 of its content; the function's configuration names the key. The
//! responder refuses a document whose content does not hash to its key, so whoever can write the
//! bucket still cannot change what runs: that takes changing the function's configuration, which
//! is as strong as changing its code. A playbook change is a new key, a stack update and a cold
//! start: no new responder build.

use quell_playbook::definition::Playbook;
use quell_playbook::Node;
use serde_json::Value;
use sha2::{Digest, Sha256};

pub const KEY_PREFIX: &str = "declared-playbooks/";

/// Where the document for `body` is kept.
pub fn key_for(body: &[u8]) -> String {
    format!("{KEY_PREFIX}{}.json", hex::encode(Sha256::digest(body)))
}

/// The declared playbooks, checked and parsed.
#[derive(Debug, Clone, Default)]
pub struct Library {
    pub key: String,
    pub playbooks: Vec<Playbook>,
    /// Why the document was refused, when it was: then no declared playbook runs (the built-in
    /// ones still do), and every event a trigger would have taken says so.
    pub refused: Option<String>,
}

impl Library {
    pub fn playbook(&self, id: &str) -> Option<&Playbook> {
        self.playbooks.iter().find(|p| p.id == id)
    }

    /// The document at `key`, refused unless its content hashes to the key and every playbook
    /// in it passes the language's checks (the CLI checked them; a document changed on the way is
    /// not run at all).
    pub fn parse(key: &str, body: &[u8]) -> Result<Library, String> {
        let expected = key_for(body);
        if expected != key {
            return Err(format!(
                "the declared playbooks at {key} do not hash to their key (their content is {expected}); none is run: run `quell upgrade` to ship them again"
            ));
        }
        let list: Vec<Value> = serde_json::from_slice(body)
            .map_err(|e| format!("the declared playbooks at {key} are not a JSON list: {e}"))?;
        let mut playbooks = Vec::new();
        for (i, source) in list.iter().enumerate() {
            let at = format!("declared_playbooks[{i}]");
            let playbook = Playbook::parse(Node::new(source, &at))
                .map_err(|p| format!("the declared playbooks at {key} do not check: {at}: {p}"))?;
            playbooks.push(playbook);
        }
        Ok(Library {
            key: key.to_owned(),
            playbooks,
            refused: None,
        })
    }
}

/// The bucket and key of `s3://BUCKET/KEY`, as the security stack sets it.
pub fn location(uri: &str) -> Result<(String, String), String> {
    uri.strip_prefix("s3://")
        .and_then(|rest| rest.split_once('/'))
        .filter(|(bucket, key)| !bucket.is_empty() && key.starts_with(KEY_PREFIX))
        .map(|(bucket, key)| (bucket.to_owned(), key.to_owned()))
        .ok_or_else(|| {
            format!(
                "QUELL_DECLARED_PLAYBOOKS is {uri:?}; expected s3://BUCKET/{KEY_PREFIX}SHA256.json"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    pub(crate) fn document() -> Vec<u8> {
        br#"[{"id": "tag-instances", "version": 1, "description": "Tags an instance.",
              "mode": "auto", "trigger": {"manual": {}},
              "target": {"type": "AWS::EC2::Instance", "id": "${{ finding.resource_id }}"},
              "steps": [{"id": "mark", "action": "tag", "with": {"tags": {"quell:seen": "yes"}}}]}]"#
            .to_vec()
    }

    #[test]
    fn a_document_is_run_only_when_it_hashes_to_its_key() {
        let body = document();
        let key = key_for(&body);
        let library = Library::parse(&key, &body).unwrap();
        assert_eq!(library.playbooks[0].id, "tag-instances");

        let mut changed = body.clone();
        let at = changed.len() - 3;
        changed[at] = b' ';
        let e = Library::parse(&key, &changed).unwrap_err();
        assert!(e.contains("do not hash to their key"), "{e}");
    }

    #[test]
    fn a_document_with_a_playbook_that_does_not_check_is_refused_whole() {
        let body = br#"[{"id": "x", "version": 1}]"#;
        let e = Library::parse(&key_for(body), body).unwrap_err();
        assert!(e.contains("declared_playbooks[0]"), "{e}");
    }

    #[test]
    fn only_an_s3_uri_under_the_documents_prefix_is_a_location() {
        assert_eq!(
            location("s3://bucket/declared-playbooks/ab.json").unwrap(),
            ("bucket".into(), "declared-playbooks/ab.json".into())
        );
        for bad in [
            "bucket/declared-playbooks/a",
            "s3://bucket/other/a.json",
            "s3:///declared-playbooks/a",
        ] {
            assert!(location(bad).is_err(), "{bad}");
        }
    }
}
