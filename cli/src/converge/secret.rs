//! The ExternalId secret: generated once, kept in Secrets Manager in the security account, never
//! passed through a template where the console would show it.

use aws_config::SdkConfig;
use quell_responder::aws_error::Described;
use quell_responder::secret::ExternalIds;

use crate::printer::Printer;

pub fn random_id() -> anyhow::Result<String> {
    let mut bytes = [0u8; 32];
    getrandom::fill(&mut bytes).map_err(|e| anyhow::anyhow!("no randomness available: {e}"))?;
    Ok(hex::encode(bytes))
}

/// The secret's ARN and value, or `None` when it does not exist yet.
pub async fn read(
    security: &SdkConfig,
    name: &str,
) -> anyhow::Result<Option<(String, ExternalIds)>> {
    let sm = crate::calls::client!(aws_sdk_secretsmanager, security);
    match sm
        .describe_secret()
        .secret_id(name)
        .send()
        .await
        .described("secretsmanager:DescribeSecret")
    {
        Ok(found) => {
            let ids = ExternalIds::load(&sm, name).await?;
            Ok(Some((found.arn().unwrap_or_default().to_owned(), ids)))
        }
        Err(e) if e.is_code("ResourceNotFoundException") => Ok(None),
        Err(e) => Err(e.into()),
    }
}

/// The secret's ARN and value; created with fresh random ids when missing.
pub async fn ensure(
    security: &SdkConfig,
    name: &str,
    printer: &Printer,
) -> anyhow::Result<(String, ExternalIds)> {
    if let Some(found) = read(security, name).await? {
        return Ok(found);
    }
    let ids = ExternalIds {
        message_external_id: random_id()?,
        role_external_id: random_id()?,
        previous_message_external_id: None,
        previous_valid_until: None,
    };
    let created = crate::calls::client!(aws_sdk_secretsmanager, security)
        .create_secret()
        .name(name)
        .description(
            "Quell ExternalIds: containment message authentication and member-role assumption",
        )
        .secret_string(serde_json::to_string(&ids)?)
        .send()
        .await
        .described("secretsmanager:CreateSecret")?;
    printer.status(&format!("created secret {name}"));
    Ok((created.arn().unwrap_or_default().to_owned(), ids))
}
