//! Principals Quell must never contain: the configured list, and Quell's own roles always (a
//! responder that can be told to lock itself out is a responder an attacker can switch off).
//!
//! Matching ignores letter case: IAM names are unique whatever their case, so `role/Admin` and
//! `role/admin` are one role. The engine matches the ARN AWS returns for the entity, path
//! included, before anything is written.

use wildmatch::WildMatch;

#[derive(Debug)]
pub struct Protection {
    patterns: Vec<(String, WildMatch)>,
}

impl Protection {
    pub fn new(configured: &[String], name_prefix: &str) -> Protection {
        let own = format!("arn:*:iam::*:role/{name_prefix}-*");
        let patterns = configured
            .iter()
            .cloned()
            .chain(std::iter::once(own))
            .map(|p| {
                let m = WildMatch::new(&p.to_lowercase());
                (p, m)
            })
            .collect();
        Protection { patterns }
    }

    /// The pattern that protects `arn`, if any.
    pub fn protecting(&self, arn: &str) -> Option<&str> {
        let arn = arn.to_lowercase();
        self.patterns
            .iter()
            .find(|(_, m)| m.matches(&arn))
            .map(|(p, _)| p.as_str())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn configured_and_own_roles_are_protected() {
        let p = Protection::new(
            &["arn:aws:iam::111122223333:user/break-glass".into()],
            "quell",
        );
        assert_eq!(
            p.protecting("arn:aws:iam::111122223333:user/break-glass"),
            Some("arn:aws:iam::111122223333:user/break-glass")
        );
        assert!(p
            .protecting("arn:aws:iam::444455556666:role/quell-responder")
            .is_some());
        assert!(p
            .protecting("arn:aws:iam::111122223333:user/alice")
            .is_none());
        assert!(p
            .protecting("arn:aws:iam::111122223333:user/break-glass-2")
            .is_none());
    }

    #[test]
    fn letter_case_does_not_escape_protection() {
        let p = Protection::new(&["arn:aws:iam::111122223333:role/Admin".into()], "quell");
        assert!(p
            .protecting("arn:aws:iam::111122223333:role/admin")
            .is_some());
        assert!(p
            .protecting("arn:aws:iam::111122223333:role/ADMIN")
            .is_some());
        assert!(p
            .protecting("arn:aws:iam::444455556666:role/Quell-Responder")
            .is_some());
    }
}
