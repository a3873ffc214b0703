//! AWS limits that Quell's configuration can reach, and where each is kept: checked when the
//! templates are rendered (a clear error before anything is deployed), or met by a fallback.
//!
//! | limit | value | kept by |
//! |---|---|---|
//! | Lambda environment variables, all together | 4 KB | [`check_environment`] at render |
//! | SQS queue policy | 8,192 bytes | `authorization::AuthorizationConfig::check` (at most 20 patterns per kind, size estimated) |
//! | managed policies per IAM user or role | 10 by default | the inline `QuellDenyAll` fallback (`entities::iam`) |
//! | SNS message | 256 KiB | `audit::message` leaves out step states, then steps |
//! | DynamoDB item | 400 KB | `reason`/`requester` 1 KiB, `entity` 2 KiB (`contract`); refused fields clipped |
//! | SQS message delay | 900 s | `containment.isolation_wait_seconds` at most 900 (config) |
//! | Lambda timeout | 900 s | `responder.timeout_seconds` 1 to 900 (config) |
//! | event source mapping `MaximumConcurrency` | 2 to 1000 | `responder.events_concurrency` (config) |
//! | reserved concurrency beside the events queue | at least `events_concurrency` + 2 | `responder.reserved_concurrency` (config) |
//! | StackSet failure tolerance in percent | rounds down | sent as a count, at least one (`converge::stack_set::preferences`) |

/// Lambda's limit on a function's environment variables, keys and values together.
pub const LAMBDA_ENVIRONMENT_BYTES: usize = 4096;

/// What a value CloudFormation fills in (`!Ref`, `!GetAtt`, `!Sub`) takes at most, for the
/// estimate: an ARN or queue URL of Quell's.
const RESOLVED_VALUE_BYTES: usize = 160;

/// The responder's environment in the rendered security template, in bytes, with every value
/// CloudFormation fills in counted at its longest; and the variables, largest first.
pub fn environment_bytes(security_template: &str) -> (usize, Vec<(String, usize)>) {
    let Some(start) = security_template.find("      Environment:\n        Variables:\n") else {
        return (0, Vec::new());
    };
    let mut vars = Vec::new();
    for line in security_template[start..].lines().skip(2) {
        let Some(entry) = line.strip_prefix("          ") else {
            break;
        };
        let Some((key, value)) = entry.split_once(": ") else {
            break;
        };
        let value = value.trim();
        let bytes = if value.starts_with('!') {
            RESOLVED_VALUE_BYTES
        } else {
            // A quoted YAML scalar: the quotes go, doubled single quotes are one.
            let inner = value.trim_matches(|c| c == '\'' || c == '"');
            inner.len() - inner.matches("''").count()
        };
        vars.push((key.to_owned(), key.len() + bytes));
    }
    vars.sort_by_key(|v| std::cmp::Reverse(v.1));
    (vars.iter().map(|(_, n)| n).sum(), vars)
}

/// Refuses a configuration whose responder environment would not fit in Lambda's.
pub fn check_environment(security_template: &str) -> anyhow::Result<()> {
    let (total, vars) = environment_bytes(security_template);
    if total <= LAMBDA_ENVIRONMENT_BYTES {
        return Ok(());
    }
    let largest: Vec<String> = vars
        .iter()
        .take(3)
        .map(|(k, n)| format!("{k} {n} bytes"))
        .collect();
    anyhow::bail!(
        "the responder's environment would take about {total} bytes, over Lambda's {LAMBDA_ENVIRONMENT_BYTES}: the largest are {}. QUELL_PLAYBOOKS carries targets.accounts and exemptions.accounts: name OUs instead of long lists of accounts",
        largest.join(", ")
    )
}
