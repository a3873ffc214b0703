//! Every operation the responder can call (`quell_responder::permissions::OPERATIONS`) is
//! allowed to the role it runs under by the policy the templates render: action names, with IAM's
//! wildcards. Which resources and conditions each statement names is the scanners' and the
//! end-to-end tests' business; this makes sure nothing is forgotten, which moto would never show.

use quell_responder::permissions::{RunsAs, OPERATIONS};
use wildmatch::WildMatch;

use crate::config::Config;
use crate::render::render_all;

/// The text of resource `logical_id` in a rendered template.
fn resource<'a>(template: &'a str, logical_id: &str) -> &'a str {
    let start = template
        .find(&format!("\n  {logical_id}:\n"))
        .unwrap_or_else(|| panic!("no resource {logical_id}"))
        + 1;
    let rest = &template[start..];
    let end = rest
        .match_indices("\n  ")
        .map(|(i, _)| i)
        .find(|&i| {
            rest[i + 3..]
                .chars()
                .next()
                .is_some_and(|c| c.is_ascii_uppercase())
        })
        .or_else(|| rest.find("\nOutputs:"))
        .unwrap_or(rest.len());
    &rest[..end]
}

/// The actions of the `Allow` statements in a role's own policies (not its trust policy).
fn allowed(role: &str) -> Vec<String> {
    let policies = &role[role.find("Policies:").expect("inline policies")..];
    let mut actions = Vec::new();
    let mut allow = false;
    let mut in_actions = false;
    for line in policies.lines() {
        let t = line.trim();
        if t.starts_with('#') || t.is_empty() {
            continue;
        }
        if t.starts_with("- Sid:") || t.starts_with("- Effect:") {
            allow = false;
            in_actions = false;
        }
        let t = t.trim_start_matches("- ");
        if let Some(effect) = t.strip_prefix("Effect:") {
            allow = effect.trim() == "Allow";
            in_actions = false;
            continue;
        }
        if let Some(rest) = t.strip_prefix("Action:") {
            in_actions = rest.trim().is_empty();
            if allow && !in_actions {
                actions.push(rest.trim().to_owned());
            }
            continue;
        }
        if in_actions && line.trim_start().starts_with("- ") {
            if allow {
                actions.push(t.to_owned());
            }
            continue;
        }
        in_actions = false;
    }
    actions
}

fn grants(actions: &[String], action: &str) -> bool {
    let action = action.to_lowercase();
    actions
        .iter()
        .any(|a| WildMatch::new(&a.to_lowercase()).matches(&action))
}

fn rendered() -> crate::render::Rendered {
    let config = Config::parse(
        include_str!("../../quell.example.yaml"),
        std::path::Path::new("quell.example.yaml"),
    )
    .unwrap();
    render_all(&config).unwrap()
}

fn role_actions(runs_as: RunsAs) -> Vec<String> {
    let r = rendered();
    let (file, id) = match runs_as {
        RunsAs::Execution => ("security.yaml", "ResponderRole"),
        RunsAs::Member => ("member-roles.yaml", "ResponderMemberRole"),
        RunsAs::OrgReader => ("management.yaml", "OrgReaderRole"),
    };
    allowed(resource(&r[file], id))
}

#[test]
fn every_operation_the_responder_calls_is_granted_to_the_role_it_runs_under() {
    let mut missing = Vec::new();
    for runs_as in [RunsAs::Execution, RunsAs::Member, RunsAs::OrgReader] {
        let actions = role_actions(runs_as);
        assert!(!actions.is_empty(), "{runs_as:?}: no actions read");
        for op in OPERATIONS.iter().filter(|o| o.runs_as == runs_as) {
            if !grants(&actions, op.action) {
                missing.push(format!("{} ({}) as {runs_as:?}", op.call, op.action));
            }
        }
    }
    assert!(missing.is_empty(), "not granted: {missing:#?}");
}

#[test]
fn the_reader_sees_statements_as_iam_does() {
    let role = "  R:\n    Properties:\n      AssumeRolePolicyDocument:\n        Statement:\n          - Effect: Allow\n            Action: sts:AssumeRole\n      Policies:\n        - PolicyName: p\n          PolicyDocument:\n            Statement:\n              - Sid: A\n                Effect: Allow\n                Action:\n                  - ec2:Describe*\n                  # a comment\n                  - iam:GetRole\n                Resource: \"*\"\n              - Sid: D\n                Effect: Deny\n                Action: iam:*\n                Resource: \"*\"\n              - Effect: Allow\n                Action: sns:Publish\n";
    let a = allowed(role);
    assert_eq!(a, ["ec2:Describe*", "iam:GetRole", "sns:Publish"]);
    assert!(grants(&a, "ec2:DescribeTags"));
    assert!(!grants(&a, "iam:PutRolePolicy"), "a Deny grants nothing");
    assert!(
        !grants(&a, "sts:AssumeRole"),
        "the trust policy grants nothing"
    );
}
