//! Tickets and notices through the webhooks the configuration names: a generic JSON shape, or
//! Jira's and ServiceNow's own APIs. A playbook names a webhook; its URL, shape and credentials
//! come from the configuration alone, never from an event. The credential is read from Secrets
//! Manager at call time and goes into the `Authorization` header and nowhere else: not in a
//! record, a log line or an error (errors name the webhook and the HTTP status, and quote at
//! most the start of the response body).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};
use serde_json::{json, Map, Value};

use crate::aws_error::{AwsFailure, CallError};

/// How long one webhook call may take: a ticket system that hangs must not hold the run.
const TIMEOUT: Duration = Duration::from_secs(10);

/// How much of a response body a record or an error quotes.
const QUOTED: usize = 300;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Shape {
    /// `POST url` with `{action, ticket_id, title, body, run}`; answers `{ticket_id}`.
    Generic,
    /// Jira's REST API v2: `url` is the site (`https://example.atlassian.net`).
    Jira,
    /// ServiceNow's Table API on `incident`: `url` is the instance.
    Servicenow,
}

/// One webhook as the security stack passes it (`QUELL_WEBHOOKS`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Webhook {
    pub url: String,
    pub shape: Shape,
    /// Secrets Manager secret whose value is the `Authorization` header (`Basic ...`,
    /// `Bearer ...`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub secret: Option<String>,
    /// Jira: the project tickets are opened in.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub project: Option<String>,
    /// Jira: the transition that closes a ticket.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub close_transition: Option<String>,
}

pub type Webhooks = BTreeMap<String, Webhook>;

/// Whether `url` may receive tickets: HTTPS, or HTTP to this machine only (a local test server).
pub fn acceptable_url(url: &str) -> Result<(), String> {
    let parsed = url
        .parse::<reqwest::Url>()
        .map_err(|e| format!("{url:?} is not a URL: {e}"))?;
    let loopback = matches!(parsed.host_str(), Some("127.0.0.1" | "localhost" | "[::1]"));
    match parsed.scheme() {
        "https" => Ok(()),
        "http" if loopback => Ok(()),
        other => Err(format!(
            "{url:?} uses {other}; tickets carry incident details and credentials: use https"
        )),
    }
}

fn failed(name: &str, message: String) -> CallError {
    CallError {
        call: format!("webhook {name}"),
        failure: AwsFailure {
            code: Some("Quell.Webhook".into()),
            message,
        },
    }
}

/// A ticket id as a ticket system may return it, before it goes into a URL path.
fn usable_ticket(id: &str) -> bool {
    !id.is_empty()
        && id.len() <= 64
        && id
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '-' || c == '_')
}

fn text(v: &Value, key: &str) -> String {
    v[key].as_str().unwrap_or_default().to_owned()
}

/// What one call sends: method, path under the webhook's URL, JSON body.
fn request(
    hook: &Webhook,
    action: &str,
    with: &Value,
    run: &str,
) -> (reqwest::Method, String, Value) {
    let ticket = text(with, "ticket_id");
    let title = text(with, "title");
    let body = text(with, "body");
    match (hook.shape, action) {
        (Shape::Generic, _) => (
            reqwest::Method::POST,
            String::new(),
            json!({"action": action.trim_start_matches("ticket."), "ticket_id": ticket,
                   "title": title, "body": body, "run": run}),
        ),
        (Shape::Jira, "ticket.open") => (
            reqwest::Method::POST,
            "/rest/api/2/issue".into(),
            json!({"fields": {"project": {"key": hook.project.clone().unwrap_or_default()},
                              "summary": title, "description": format!("{body}\n\nQuell run {run}"),
                              "issuetype": {"name": "Task"}}}),
        ),
        (Shape::Jira, "ticket.comment") => (
            reqwest::Method::POST,
            format!("/rest/api/2/issue/{ticket}/comment"),
            json!({"body": body}),
        ),
        (Shape::Jira, _) => (
            reqwest::Method::POST,
            format!("/rest/api/2/issue/{ticket}/transitions"),
            json!({"transition": {"id": hook.close_transition.clone().unwrap_or_default()},
                   "update": {"comment": [{"add": {"body": body}}]}}),
        ),
        (Shape::Servicenow, "ticket.open") => (
            reqwest::Method::POST,
            "/api/now/table/incident".into(),
            json!({"short_description": title, "description": format!("{body}\n\nQuell run {run}")}),
        ),
        (Shape::Servicenow, "ticket.comment") => (
            reqwest::Method::PATCH,
            format!("/api/now/table/incident/{ticket}"),
            json!({"work_notes": body}),
        ),
        (Shape::Servicenow, _) => (
            reqwest::Method::PATCH,
            format!("/api/now/table/incident/{ticket}"),
            json!({"state": "7", "close_code": "Solved (Permanently)", "close_notes": body}),
        ),
    }
}

/// The ticket id an opening call returned.
fn ticket_of(shape: Shape, answer: &Value) -> String {
    match shape {
        Shape::Generic => text(answer, "ticket_id"),
        Shape::Jira => text(answer, "key"),
        Shape::Servicenow => text(&answer["result"], "sys_id"),
    }
}

/// Calls webhook `name` for `action` (`ticket.open`, `ticket.comment`, `ticket.close`,
/// `notify`); `authorization` is the secret's value when the webhook has one. Returns what to
/// record and the step's outputs.
pub async fn call(
    client: &reqwest::Client,
    hooks: &Webhooks,
    name: &str,
    action: &str,
    with: &Value,
    run: &str,
    authorization: Option<&str>,
) -> Result<(String, Value, Map<String, Value>), CallError> {
    let Some(hook) = hooks.get(name) else {
        return Err(failed(
            name,
            format!("no webhook {name:?} in the configuration's webhooks"),
        ));
    };
    acceptable_url(&hook.url).map_err(|e| failed(name, e))?;
    let ticket = text(with, "ticket_id");
    if action != "ticket.open" && action != "notify" && !usable_ticket(&ticket) {
        return Err(failed(
            name,
            format!("{ticket:?} is not a ticket id (letters, digits, '-', '_')"),
        ));
    }
    let (method, path, body) = if action == "notify" {
        (
            reqwest::Method::POST,
            String::new(),
            json!({"action": "notify", "message": text(with, "message"), "run": run}),
        )
    } else {
        request(hook, action, with, run)
    };
    let url = format!("{}{path}", hook.url.trim_end_matches('/'));
    let mut req = client
        .request(method, &url)
        .timeout(TIMEOUT)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(body.to_string());
    if let Some(value) = authorization {
        req = req.header("authorization", value);
    }
    let answer = req
        .send()
        .await
        // reqwest's error names the URL, never the headers.
        .map_err(|e| failed(name, format!("{action}: {}", e.without_url())))?;
    let status = answer.status();
    let text_body = answer.text().await.unwrap_or_default();
    let quoted: String = text_body.chars().take(QUOTED).collect();
    if !status.is_success() {
        return Err(failed(name, format!("{action}: HTTP {status}: {quoted}")));
    }
    let mut outputs = Map::new();
    if action == "ticket.open" {
        let parsed: Value = serde_json::from_str(&text_body).unwrap_or_default();
        let id = ticket_of(hook.shape, &parsed);
        if !usable_ticket(&id) {
            return Err(failed(
                name,
                format!("{action}: the answer names no ticket id: {quoted}"),
            ));
        }
        outputs.insert("ticket_id".into(), json!(id));
    }
    Ok((
        format!("{action} through webhook {name}: HTTP {}", status.as_u16()),
        json!({ "webhook": name, "status": status.as_u16(), "ticket_id": outputs.get("ticket_id") }),
        outputs,
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_https_or_loopback_http_receives_tickets() {
        assert!(acceptable_url("https://example.atlassian.net").is_ok());
        assert!(acceptable_url("http://127.0.0.1:8080/hook").is_ok());
        for bad in ["http://tickets.example.com", "ftp://x", "not a url"] {
            assert!(acceptable_url(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn a_ticket_id_from_an_answer_never_reaches_a_path_unless_it_is_plain() {
        assert!(usable_ticket("SEC-42"));
        for bad in ["", "../admin", "SEC-1/comment?x=1", &"x".repeat(65)] {
            assert!(!usable_ticket(bad), "{bad}");
        }
    }

    #[test]
    fn each_shape_opens_comments_and_closes_where_its_api_does() {
        let jira = Webhook {
            url: "https://x.atlassian.net".into(),
            shape: Shape::Jira,
            secret: None,
            project: Some("SEC".into()),
            close_transition: Some("31".into()),
        };
        let with = json!({"ticket_id": "SEC-7", "title": "t", "body": "b"});
        let (_, path, body) = request(&jira, "ticket.open", &with, "run:x");
        assert_eq!(path, "/rest/api/2/issue");
        assert_eq!(body["fields"]["project"]["key"], "SEC");
        let (_, path, body) = request(&jira, "ticket.close", &with, "run:x");
        assert_eq!(path, "/rest/api/2/issue/SEC-7/transitions");
        assert_eq!(body["transition"]["id"], "31");
        let now = Webhook {
            shape: Shape::Servicenow,
            ..jira
        };
        let (method, path, _) = request(&now, "ticket.comment", &with, "run:x");
        assert_eq!(
            (method, path.as_str()),
            (reqwest::Method::PATCH, "/api/now/table/incident/SEC-7")
        );
        assert_eq!(
            ticket_of(Shape::Servicenow, &json!({"result": {"sys_id": "abc123"}})),
            "abc123"
        );
    }
}
