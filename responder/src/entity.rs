//! Parsing the entity ARN of a containment request into something Quell knows how to contain.

use std::fmt;

/// The kinds of entity this responder contains, for error messages.
pub const SUPPORTED: &str = "IAM users (arn:aws:iam::ACCOUNT:user/NAME)";

/// An entity to contain, parsed and checked from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    IamUser(IamUser),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamUser {
    pub partition: String,
    pub account: String,
    /// IAM path, `/` when none.
    pub path: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntityError {
    #[error("'{0}' is not an ARN: expected arn:PARTITION:SERVICE:REGION:ACCOUNT:RESOURCE")]
    NotAnArn(String),
    #[error("'{arn}' has account '{account}': an account id is 12 digits")]
    BadAccount { arn: String, account: String },
    #[error("'{arn}' names {what}, which Quell cannot contain; it contains {SUPPORTED}")]
    Unsupported { arn: String, what: String },
    #[error("'{arn}' has an invalid {part}: {why}")]
    BadName {
        arn: String,
        part: &'static str,
        why: &'static str,
    },
}

impl Entity {
    pub fn parse(arn: &str) -> Result<Entity, EntityError> {
        let parts: Vec<&str> = arn.splitn(6, ':').collect();
        let [prefix, partition, service, region, account, resource] = parts[..] else {
            return Err(EntityError::NotAnArn(arn.to_owned()));
        };
        if prefix != "arn"
            || !matches!(partition, "aws" | "aws-cn" | "aws-us-gov")
            || service.is_empty()
        {
            return Err(EntityError::NotAnArn(arn.to_owned()));
        }
        let unsupported = |what: String| EntityError::Unsupported {
            arn: arn.to_owned(),
            what,
        };
        if service != "iam" {
            return Err(unsupported(format!("a {service} resource")));
        }
        if !region.is_empty() {
            return Err(EntityError::NotAnArn(arn.to_owned()));
        }
        if !is_account_id(account) {
            return Err(EntityError::BadAccount {
                arn: arn.to_owned(),
                account: account.to_owned(),
            });
        }
        let Some(user_path) = resource.strip_prefix("user/") else {
            let kind = resource.split('/').next().unwrap_or(resource);
            return Err(unsupported(format!("an IAM {kind}")));
        };
        let (path, name) = match user_path.rsplit_once('/') {
            Some((dir, name)) => (format!("/{dir}/"), name),
            None => ("/".to_owned(), user_path),
        };
        check_iam_name(arn, name)?;
        if path.len() > 512 || path.contains("//") {
            return Err(EntityError::BadName {
                arn: arn.to_owned(),
                part: "path",
                why: "IAM paths are at most 512 characters without empty segments",
            });
        }
        Ok(Entity::IamUser(IamUser {
            partition: partition.to_owned(),
            account: account.to_owned(),
            path,
            name: name.to_owned(),
        }))
    }

    pub fn account(&self) -> &str {
        match self {
            Entity::IamUser(u) => &u.account,
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Entity::IamUser(_) => "IAM user",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entity::IamUser(u) => &u.name,
        }
    }
}

impl fmt::Display for Entity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Entity::IamUser(u) => write!(
                f,
                "arn:{}:iam::{}:user{}{}",
                u.partition, u.account, u.path, u.name
            ),
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

fn check_iam_name(arn: &str, name: &str) -> Result<(), EntityError> {
    let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
    if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
        return Err(EntityError::BadName {
            arn: arn.to_owned(),
            part: "user name",
            why: "IAM user names are 1-64 characters of letters, digits and +=,.@_-",
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_user_with_and_without_path() {
        let Entity::IamUser(u) = Entity::parse("arn:aws:iam::111122223333:user/alice").unwrap();
        assert_eq!(
            (u.account.as_str(), u.path.as_str(), u.name.as_str()),
            ("111122223333", "/", "alice")
        );
        let Entity::IamUser(u) =
            Entity::parse("arn:aws:iam::111122223333:user/dev/ops/bob").unwrap();
        assert_eq!((u.path.as_str(), u.name.as_str()), ("/dev/ops/", "bob"));
        assert_eq!(
            Entity::parse("arn:aws:iam::111122223333:user/dev/ops/bob")
                .unwrap()
                .to_string(),
            "arn:aws:iam::111122223333:user/dev/ops/bob"
        );
    }

    #[test]
    fn rejects_what_is_not_an_arn() {
        for bad in [
            "",
            "alice",
            "arn:aws:iam::111122223333",
            "urn:aws:iam::111122223333:user/a",
            "arn:nope:iam::111122223333:user/a",
        ] {
            assert!(
                matches!(Entity::parse(bad), Err(EntityError::NotAnArn(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn names_unsupported_types() {
        let e = Entity::parse("arn:aws:s3:::my-bucket").unwrap_err();
        assert_eq!(
            e.to_string(),
            "'arn:aws:s3:::my-bucket' names a s3 resource, which Quell cannot contain; it contains IAM users (arn:aws:iam::ACCOUNT:user/NAME)"
        );
        let e = Entity::parse("arn:aws:iam::111122223333:group/admins").unwrap_err();
        assert!(e.to_string().contains("an IAM group"), "{e}");
    }

    #[test]
    fn rejects_bad_accounts_and_names() {
        assert!(matches!(
            Entity::parse("arn:aws:iam::1111:user/a"),
            Err(EntityError::BadAccount { .. })
        ));
        assert!(matches!(
            Entity::parse("arn:aws:iam::111122223333:user/a b"),
            Err(EntityError::BadName { .. })
        ));
        assert!(matches!(
            Entity::parse("arn:aws:iam::111122223333:user/"),
            Err(EntityError::BadName { .. })
        ));
        let long = format!("arn:aws:iam::111122223333:user/{}", "a".repeat(65));
        assert!(matches!(
            Entity::parse(&long),
            Err(EntityError::BadName { .. })
        ));
    }
}
