//! The fault-injecting proxy (`tests/fault_proxy.rs`) in front of the sandbox, for the responder
//! only: the sandbox host sends the function's calls to it while the sandbox directory's
//! `responder-endpoint` names it, and straight to the sandbox again once this is dropped.

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use serde_json::Value;

use crate::support::Sandbox;

pub struct FaultProxy {
    child: Child,
    pub url: String,
    routing: PathBuf,
}

impl FaultProxy {
    /// Starts the proxy in front of the sandbox and routes the responder's calls through it.
    pub fn route_responder(s: &Sandbox) -> Result<FaultProxy> {
        let mut child = Command::new(Sandbox::bin_dir().join("quell-fault-proxy"))
            .args(["--upstream", s.endpoint()])
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .context("cannot start quell-fault-proxy: build with `cargo build --workspace --all-targets`")?;
        let mut first = String::new();
        BufReader::new(child.stdout.take().context("the proxy's output")?).read_line(&mut first)?;
        let Some(url) = first.trim().strip_prefix("listening on ") else {
            let _ = child.kill();
            bail!("the proxy said {first:?} instead of where it listens");
        };
        let routing = s.home().join("sandbox").join("responder-endpoint");
        std::fs::write(&routing, url)?;
        Ok(FaultProxy {
            child,
            url: url.to_owned(),
            routing,
        })
    }

    async fn call(&self, method: &str, path: &str, body: String) -> Result<Value> {
        let client =
            hyper_util::client::legacy::Client::builder(hyper_util::rt::TokioExecutor::new())
                .build_http::<Full<Bytes>>();
        let request = hyper::Request::builder()
            .method(method)
            .uri(format!("{}/__proxy/{path}", self.url))
            .body(Full::new(Bytes::from(body)))?;
        let response = client.request(request).await?;
        let status = response.status();
        let body = response.into_body().collect().await?.to_bytes();
        if !status.is_success() {
            bail!(
                "the proxy refused {method} {path}: {}",
                String::from_utf8_lossy(&body)
            );
        }
        Ok(serde_json::from_slice(&body)?)
    }

    /// Sets what the proxy does to the responder's calls (`Faults` in the proxy).
    pub async fn set(&self, faults: &Value) -> Result<()> {
        self.call("PUT", "faults", faults.to_string())
            .await
            .map(|_| ())
    }

    /// Calls seen and faults injected so far.
    pub async fn stats(&self) -> Result<Value> {
        self.call("GET", "stats", String::new()).await
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        let _ = std::fs::remove_file(&self.routing);
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
