//! The report as one HTML file that needs nothing else: styles and script inline, the data as
//! JSON inside it. The page's policy lets only its own script run (by hash), so even a string
//! that slipped into the page as markup could not run code.

use base64::Engine as _;
use sha2::{Digest as _, Sha256};

use super::model::Report;

const TEMPLATE: &str = include_str!("page.html");

pub fn render(report: &Report) -> anyhow::Result<String> {
    let data = for_script_element(&serde_json::to_string(report)?);
    let script = main_script();
    let hash = base64::engine::general_purpose::STANDARD.encode(Sha256::digest(script.as_bytes()));
    Ok(TEMPLATE
        .replacen("{{SCRIPT_HASH}}", &format!("sha256-{hash}"), 1)
        .replacen("{{DATA}}", &data, 1))
}

/// The text of the page's one script, exactly as the browser hashes it.
fn main_script() -> &'static str {
    let start = TEMPLATE
        .rfind("<script>")
        .map(|i| i + "<script>".len())
        .expect("the page has its script");
    let end = TEMPLATE[start..]
        .find("</script>")
        .map(|i| start + i)
        .expect("the script is closed");
    &TEMPLATE[start..end]
}

/// JSON that cannot end its `<script>` element or open a comment: `<`, `>` and `&` only occur
/// inside strings in JSON, where their escapes mean the same.
fn for_script_element(json: &str) -> String {
    json.replace('<', "\\u003c")
        .replace('>', "\\u003e")
        .replace('&', "\\u0026")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn data_cannot_close_its_element() {
        let hostile = r#"{"reason":"</script><script>alert(1)</script><!--"}"#;
        let safe = for_script_element(hostile);
        assert!(!safe.contains('<') && !safe.contains('>'), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back["reason"], "</script><script>alert(1)</script><!--");
    }

    #[test]
    fn the_policy_names_the_script_the_page_carries() {
        assert!(main_script().contains("JSON.parse"));
        assert!(TEMPLATE.contains("script-src '{{SCRIPT_HASH}}'"));
        assert_eq!(
            TEMPLATE.matches("<script>").count(),
            1,
            "one script, hashed"
        );
    }
}
