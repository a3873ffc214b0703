//! Parsing the entity ARN of a containment request into something Quell knows how to contain.
//! Everything that can be refused from the ARN alone is refused here, before any AWS call.

use std::fmt;

/// The kinds of entity this responder contains, for error messages.
pub const SUPPORTED: &str = "IAM users (arn:aws:iam::ACCOUNT:user/NAME), IAM roles (arn:aws:iam::ACCOUNT:role/NAME), Lambda functions (arn:aws:lambda:REGION:ACCOUNT:function:NAME) and EC2 instances (arn:aws:ec2:REGION:ACCOUNT:instance/i-...)";

/// An entity to contain, parsed and checked from its ARN.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Entity {
    IamUser(IamPrincipal),
    IamRole(IamPrincipal),
    Function(Function),
    Instance(Instance),
}

/// An IAM user or role.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IamPrincipal {
    pub partition: String,
    pub account: String,
    /// IAM path, `/` when none.
    pub path: String,
    pub name: String,
}

/// Kept as the old name for the user module.
pub type IamUser = IamPrincipal;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Function {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Instance {
    pub partition: String,
    pub region: String,
    pub account: String,
    pub id: String,
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
    #[error("'{arn}' is {what}: {instead}")]
    Refused {
        arn: String,
        what: &'static str,
        instead: &'static str,
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
            || resource.is_empty()
        {
            return Err(EntityError::NotAnArn(arn.to_owned()));
        }
        let unsupported = |what: String| EntityError::Unsupported {
            arn: arn.to_owned(),
            what,
        };
        let (kind, rest) = match service {
            "iam" | "lambda" | "ec2" => {
                let sep = if service == "lambda" { ':' } else { '/' };
                resource.split_once(sep).unwrap_or((resource, ""))
            }
            other => return Err(unsupported(format!("a {other} resource"))),
        };
        let supported = matches!(
            (service, kind),
            ("iam", "user" | "role") | ("lambda", "function") | ("ec2", "instance")
        );
        if !supported {
            let service_name = match service {
                "iam" => "IAM",
                "lambda" => "Lambda",
                _ => "EC2",
            };
            return Err(unsupported(format!("an {service_name} {kind}")));
        }
        let global = service == "iam";
        if global != region.is_empty() || (!global && !is_region(region)) {
            return Err(EntityError::NotAnArn(arn.to_owned()));
        }
        if !is_account_id(account) {
            return Err(EntityError::BadAccount {
                arn: arn.to_owned(),
                account: account.to_owned(),
            });
        }
        let bad = |part, why| EntityError::BadName {
            arn: arn.to_owned(),
            part,
            why,
        };
        let partition = partition.to_owned();
        let account = account.to_owned();
        let region = region.to_owned();
        match kind {
            "user" | "role" => {
                let (path, name) = match rest.rsplit_once('/') {
                    Some((dir, name)) => (format!("/{dir}/"), name),
                    None => ("/".to_owned(), rest),
                };
                let ok_char = |c: char| c.is_ascii_alphanumeric() || "+=,.@_-".contains(c);
                if name.is_empty() || name.len() > 64 || !name.chars().all(ok_char) {
                    return Err(bad(
                        if kind == "user" {
                            "user name"
                        } else {
                            "role name"
                        },
                        "IAM names are 1-64 characters of letters, digits and +=,.@_-",
                    ));
                }
                if path.len() > 512 || path.contains("//") {
                    return Err(bad(
                        "path",
                        "IAM paths are at most 512 characters without empty segments",
                    ));
                }
                let principal = IamPrincipal {
                    partition,
                    account,
                    path,
                    name: name.to_owned(),
                };
                if kind == "user" {
                    return Ok(Entity::IamUser(principal));
                }
                if principal.path.starts_with("/aws-service-role/") {
                    return Err(EntityError::Refused {
                        arn: arn.to_owned(),
                        what: "a service-linked role, which IAM does not let anyone change",
                        instead: "contain the principal that misuses the service, or turn off the service integration that owns the role",
                    });
                }
                if principal
                    .path
                    .starts_with("/aws-reserved/sso.amazonaws.com/")
                    || principal.name.starts_with("AWSReservedSSO_")
                {
                    return Err(EntityError::Refused {
                        arn: arn.to_owned(),
                        what: "an IAM Identity Center role, which Identity Center manages and would restore",
                        instead: "in IAM Identity Center, remove the user's permission set assignment or disable the user, and revoke its active sessions there",
                    });
                }
                Ok(Entity::IamRole(principal))
            }
            "function" => {
                if rest.contains(':') {
                    return Err(bad("function name", "name the function itself, without a version or alias: containment applies to every version"));
                }
                let ok = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
                if rest.is_empty() || rest.len() > 64 || !rest.chars().all(ok) {
                    return Err(bad(
                        "function name",
                        "Lambda function names are 1-64 characters of letters, digits, '-' and '_'",
                    ));
                }
                Ok(Entity::Function(Function {
                    partition,
                    region,
                    account,
                    name: rest.to_owned(),
                }))
            }
            _ => {
                let hex = rest.strip_prefix("i-").unwrap_or("");
                if !(hex.len() == 8 || hex.len() == 17)
                    || !hex.chars().all(|c| c.is_ascii_hexdigit())
                {
                    return Err(bad(
                        "instance id",
                        "EC2 instance ids are i- followed by 8 or 17 hexadecimal digits",
                    ));
                }
                Ok(Entity::Instance(Instance {
                    partition,
                    region,
                    account,
                    id: rest.to_owned(),
                }))
            }
        }
    }

    pub fn account(&self) -> &str {
        match self {
            Entity::IamUser(p) | Entity::IamRole(p) => &p.account,
            Entity::Function(f) => &f.account,
            Entity::Instance(i) => &i.account,
        }
    }

    pub fn partition(&self) -> &str {
        match self {
            Entity::IamUser(p) | Entity::IamRole(p) => &p.partition,
            Entity::Function(f) => &f.partition,
            Entity::Instance(i) => &i.partition,
        }
    }

    /// The Region to act in; IAM entities are global and are acted on from the responder's Region.
    pub fn region(&self) -> Option<&str> {
        match self {
            Entity::IamUser(_) | Entity::IamRole(_) => None,
            Entity::Function(f) => Some(&f.region),
            Entity::Instance(i) => Some(&i.region),
        }
    }

    pub fn kind(&self) -> &'static str {
        match self {
            Entity::IamUser(_) => "IAM user",
            Entity::IamRole(_) => "IAM role",
            Entity::Function(_) => "Lambda function",
            Entity::Instance(_) => "EC2 instance",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Entity::IamUser(p) | Entity::IamRole(p) => &p.name,
            Entity::Function(f) => &f.name,
            Entity::Instance(i) => &i.id,
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
            Entity::IamRole(r) => write!(
                f,
                "arn:{}:iam::{}:role{}{}",
                r.partition, r.account, r.path, r.name
            ),
            Entity::Function(x) => write!(
                f,
                "arn:{}:lambda:{}:{}:function:{}",
                x.partition, x.region, x.account, x.name
            ),
            Entity::Instance(i) => write!(
                f,
                "arn:{}:ec2:{}:{}:instance/{}",
                i.partition, i.region, i.account, i.id
            ),
        }
    }
}

pub fn is_account_id(s: &str) -> bool {
    s.len() == 12 && s.bytes().all(|b| b.is_ascii_digit())
}

/// The shape of a Region code (`us-east-1`, `us-gov-west-1`); which Regions exist is AWS's to say.
fn is_region(s: &str) -> bool {
    let parts: Vec<&str> = s.split('-').collect();
    parts.len() >= 3
        && parts.iter().all(|p| {
            !p.is_empty()
                && p.chars()
                    .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit())
        })
        && parts
            .last()
            .is_some_and(|p| p.chars().all(|c| c.is_ascii_digit()))
}

/// The partition of a Region's ARNs.
pub fn partition_of(region: &str) -> &'static str {
    if region.starts_with("cn-") {
        "aws-cn"
    } else if region.starts_with("us-gov-") {
        "aws-us-gov"
    } else {
        "aws"
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_users_and_roles_with_and_without_path() {
        let Ok(Entity::IamUser(u)) = Entity::parse("arn:aws:iam::111122223333:user/alice") else {
            panic!()
        };
        assert_eq!(
            (u.account.as_str(), u.path.as_str(), u.name.as_str()),
            ("111122223333", "/", "alice")
        );
        let Ok(Entity::IamUser(u)) = Entity::parse("arn:aws:iam::111122223333:user/dev/ops/bob")
        else {
            panic!()
        };
        assert_eq!((u.path.as_str(), u.name.as_str()), ("/dev/ops/", "bob"));
        let Ok(Entity::IamRole(r)) = Entity::parse("arn:aws:iam::111122223333:role/app/runtime")
        else {
            panic!()
        };
        assert_eq!((r.path.as_str(), r.name.as_str()), ("/app/", "runtime"));
        for arn in [
            "arn:aws:iam::111122223333:user/dev/ops/bob",
            "arn:aws:iam::111122223333:role/app-runtime",
            "arn:aws:lambda:eu-west-1:111122223333:function:orders",
            "arn:aws:ec2:us-east-1:111122223333:instance/i-0123456789abcdef0",
        ] {
            assert_eq!(Entity::parse(arn).unwrap().to_string(), arn);
        }
    }

    #[test]
    fn parses_functions_and_instances_with_their_region() {
        let e = Entity::parse("arn:aws:lambda:eu-west-1:111122223333:function:orders").unwrap();
        assert_eq!(
            (e.kind(), e.region(), e.name()),
            ("Lambda function", Some("eu-west-1"), "orders")
        );
        let e = Entity::parse("arn:aws:ec2:us-east-1:111122223333:instance/i-12345678").unwrap();
        assert_eq!(
            (e.kind(), e.region(), e.name()),
            ("EC2 instance", Some("us-east-1"), "i-12345678")
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
            "arn:aws:iam:us-east-1:111122223333:user/a",
            "arn:aws:lambda::111122223333:function:f",
            "arn:aws:ec2:mars:111122223333:instance/i-12345678",
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
        assert!(e.to_string().starts_with("'arn:aws:s3:::my-bucket' names a s3 resource, which Quell cannot contain; it contains IAM users"), "{e}");
        let e = Entity::parse("arn:aws:iam::111122223333:group/admins").unwrap_err();
        assert!(e.to_string().contains("an IAM group"), "{e}");
        let e =
            Entity::parse("arn:aws:ec2:us-east-1:111122223333:volume/vol-12345678").unwrap_err();
        assert!(e.to_string().contains("an EC2 volume"), "{e}");
    }

    #[test]
    fn refuses_roles_iam_will_not_let_quell_change_and_says_what_to_do() {
        let e = Entity::parse("arn:aws:iam::111122223333:role/aws-service-role/elasticloadbalancing.amazonaws.com/AWSServiceRoleForElasticLoadBalancing").unwrap_err();
        assert!(matches!(e, EntityError::Refused { .. }));
        assert!(e.to_string().contains("service-linked role"), "{e}");
        let e = Entity::parse("arn:aws:iam::111122223333:role/aws-reserved/sso.amazonaws.com/eu-west-1/AWSReservedSSO_Admin_0123456789abcdef").unwrap_err();
        assert!(e.to_string().contains("IAM Identity Center"), "{e}");
        assert!(e.to_string().contains("permission set assignment"), "{e}");
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
        assert!(matches!(
            Entity::parse("arn:aws:lambda:us-east-1:111122223333:function:f:prod"),
            Err(EntityError::BadName { .. })
        ));
        assert!(matches!(
            Entity::parse("arn:aws:ec2:us-east-1:111122223333:instance/i-xyz"),
            Err(EntityError::BadName { .. })
        ));
    }
}
