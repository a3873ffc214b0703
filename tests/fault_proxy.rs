//! A fault-injecting proxy for the tests, the soak and the benchmarks. It stands between the
//! responder and the sandbox (the sandbox host sends the function's calls to it when the sandbox
//! directory's `responder-endpoint` names it) and does to each call what AWS sometimes does:
//!
//! - `throttle`: answers as the service does when it throttles (each protocol's own error shape
//!   and code, so the SDK's retry classifier sees exactly what it would see from AWS);
//! - `error`: HTTP 500, `InternalFailure`;
//! - `timeout`: holds the call for `stall_ms`, then closes the connection without an answer;
//! - `drop`: closes the connection at once.
//!
//! A timeout or a drop comes before the call reaches the sandbox or after it did (the write was
//! made, the answer is lost), half of each: a retry then meets its own earlier write, as it can
//! on AWS. Throttles and errors come before. Every call can also be delayed by an AWS-like
//! latency; calls in flight at once are delayed side by side, as on AWS.
//!
//! ```text
//! quell-fault-proxy --upstream http://127.0.0.1:PORT
//! ```
//! prints `listening on http://127.0.0.1:N` and serves until killed. Its own two paths:
//! `PUT /__proxy/faults` with the faults as JSON (see [`Faults`]), and `GET /__proxy/stats`.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{bail, Context, Result};
use http_body_util::{BodyExt, Full};
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::client::legacy::Client;
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::{Deserialize, Serialize};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
enum Kind {
    Throttle,
    Error,
    Timeout,
    Drop,
}

/// What to do to the calls; everything off by default.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields, default)]
struct Faults {
    /// Share of the chosen calls that get a fault, 0 to 1.
    rate: f64,
    /// The faults to choose from, evenly.
    kinds: Vec<Kind>,
    /// Only calls to these services (`ec2`, `dynamodb`, ...); all when empty.
    services: Vec<String>,
    /// Only these calls (`ec2:RevokeSecurityGroupIngress`); all when empty.
    operations: Vec<String>,
    /// Only calls signed for these Regions; all when empty.
    regions: Vec<String>,
    /// Every call waits this long first, uniformly in [min, max] milliseconds.
    latency_ms: Option<(u64, u64)>,
    /// How long a `timeout` holds the call before it closes the connection.
    stall_ms: u64,
    /// The generator's seed, for a run that can be repeated.
    seed: Option<u64>,
}

impl Default for Faults {
    fn default() -> Self {
        Faults {
            rate: 0.0,
            kinds: vec![Kind::Throttle, Kind::Error, Kind::Timeout, Kind::Drop],
            services: Vec::new(),
            operations: Vec::new(),
            regions: Vec::new(),
            latency_ms: None,
            stall_ms: 2000,
            seed: None,
        }
    }
}

/// What the proxy has done so far.
#[derive(Debug, Default, Serialize)]
struct Stats {
    calls: u64,
    /// Every call, faulted or not, by `service:Operation`.
    calls_by_call: BTreeMap<String, u64>,
    /// Calls the sandbox answered with success and the proxy passed on, by `service:Operation`:
    /// a call the SDK tried again counts once here.
    succeeded_by_call: BTreeMap<String, u64>,
    injected: BTreeMap<Kind, u64>,
    /// Faults by call, `service:Operation`.
    by_call: BTreeMap<String, u64>,
    /// Calls whose fault came after the sandbox had answered (the write was made).
    after_the_write: u64,
}

struct Proxy {
    upstream: hyper::Uri,
    client: Client<hyper_util::client::legacy::connect::HttpConnector, Full<Bytes>>,
    faults: Mutex<Faults>,
    rng: Mutex<fastrand::Rng>,
    stats: Mutex<Stats>,
}

/// What a call is: its service from the signature's credential scope, its operation from the
/// JSON protocols' target, the query protocols' `Action`, or its method and path.
#[derive(Debug, Clone, PartialEq, Eq)]
struct Call {
    service: String,
    region: String,
    operation: String,
    protocol: Protocol,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Protocol {
    /// `X-Amz-Target`: DynamoDB, SQS, Secrets Manager, SSM, Organizations, ...
    Json,
    /// Form-encoded `Action=`: IAM, STS, SNS.
    Query,
    /// EC2's own query dialect.
    Ec2,
    /// S3.
    RestXml,
    /// Lambda, EventBridge Scheduler, Security Hub.
    RestJson,
}

fn call_of(headers: &hyper::HeaderMap, method: &str, path: &str, body: &[u8]) -> Call {
    let header = |k: &str| headers.get(k).and_then(|v| v.to_str().ok()).unwrap_or("");
    let scope: Vec<&str> = header("authorization")
        .split("Credential=")
        .nth(1)
        .map(|c| c.split('/').collect())
        .unwrap_or_default();
    let service = scope.get(3).copied().unwrap_or("unknown").to_owned();
    let region = scope.get(2).copied().unwrap_or("unknown").to_owned();
    let target = header("x-amz-target");
    if !target.is_empty() {
        let operation = target.rsplit('.').next().unwrap_or(target).to_owned();
        return Call {
            service,
            region,
            operation,
            protocol: Protocol::Json,
        };
    }
    let form = String::from_utf8_lossy(body);
    if let Some(action) = form
        .split('&')
        .find_map(|pair| pair.strip_prefix("Action="))
    {
        let protocol = if service == "ec2" {
            Protocol::Ec2
        } else {
            Protocol::Query
        };
        return Call {
            service,
            region,
            operation: action.to_owned(),
            protocol,
        };
    }
    let protocol = if service == "s3" {
        Protocol::RestXml
    } else {
        Protocol::RestJson
    };
    Call {
        operation: format!("{method} {}", path.split('?').next().unwrap_or(path)),
        service,
        region,
        protocol,
    }
}

/// The answer AWS gives when it throttles or fails, in the call's own protocol.
fn aws_error(call: &Call, kind: Kind) -> Response<Full<Bytes>> {
    let (status, code) = match (kind, call.protocol) {
        (Kind::Throttle, Protocol::Ec2) => {
            (StatusCode::SERVICE_UNAVAILABLE, "RequestLimitExceeded")
        }
        (Kind::Throttle, Protocol::Query) => (StatusCode::BAD_REQUEST, "Throttling"),
        (Kind::Throttle, Protocol::RestXml) => (StatusCode::SERVICE_UNAVAILABLE, "SlowDown"),
        (Kind::Throttle, _) => (StatusCode::BAD_REQUEST, "ThrottlingException"),
        (_, Protocol::RestXml) => (StatusCode::INTERNAL_SERVER_ERROR, "InternalError"),
        _ => (StatusCode::INTERNAL_SERVER_ERROR, "InternalFailure"),
    };
    let message = format!("injected by quell-fault-proxy ({code})");
    let (content_type, body) = match call.protocol {
        Protocol::Ec2 => ("text/xml", format!(
            "<Response><Errors><Error><Code>{code}</Code><Message>{message}</Message></Error></Errors><RequestID>fault</RequestID></Response>"
        )),
        Protocol::Query => ("text/xml", format!(
            "<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{message}</Message></Error><RequestId>fault</RequestId></ErrorResponse>"
        )),
        Protocol::RestXml => ("application/xml", format!(
            "<Error><Code>{code}</Code><Message>{message}</Message><RequestId>fault</RequestId></Error>"
        )),
        Protocol::Json => ("application/x-amz-json-1.0", serde_json::json!({"__type": code, "message": message}).to_string()),
        Protocol::RestJson => ("application/json", serde_json::json!({"message": message}).to_string()),
    };
    let mut response = Response::builder()
        .status(status)
        .header("content-type", content_type)
        .header("x-amzn-requestid", "fault");
    if matches!(call.protocol, Protocol::RestJson | Protocol::Json) {
        response = response.header("x-amzn-errortype", code);
    }
    if call.service == "sqs" {
        // SQS's JSON protocol also names the query-era code.
        response = response.header("x-amzn-query-error", format!("{code};Sender"));
    }
    response
        .body(Full::new(Bytes::from(body)))
        .expect("a valid response")
}

/// The connection is closed without an answer: hyper drops it when the service fails.
#[derive(Debug)]
struct CutConnection;

impl std::fmt::Display for CutConnection {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("connection cut by quell-fault-proxy")
    }
}

impl std::error::Error for CutConnection {}

impl Proxy {
    /// The fault for this call, if one is due, and whether it comes after the write.
    fn draw(&self, call: &Call) -> (Option<Kind>, bool, Option<Duration>) {
        let faults = self.faults.lock().expect("faults").clone();
        let mut rng = self.rng.lock().expect("rng");
        let latency = faults
            .latency_ms
            .map(|(lo, hi)| Duration::from_millis(rng.u64(lo.min(hi)..=hi.max(lo))));
        let chosen = (faults.services.is_empty() || faults.services.contains(&call.service))
            && (faults.regions.is_empty() || faults.regions.contains(&call.region))
            && (faults.operations.is_empty()
                || faults
                    .operations
                    .contains(&format!("{}:{}", call.service, call.operation)));
        if !chosen || faults.kinds.is_empty() || rng.f64() >= faults.rate {
            return (None, false, latency);
        }
        let kind = faults.kinds[rng.usize(..faults.kinds.len())];
        let after = matches!(kind, Kind::Timeout | Kind::Drop) && rng.bool();
        (Some(kind), after, latency)
    }

    async fn handle(
        self: Arc<Self>,
        request: Request<Incoming>,
    ) -> Result<Response<Full<Bytes>>, CutConnection> {
        let (parts, body) = request.into_parts();
        let body = body.collect().await.map_err(|_| CutConnection)?.to_bytes();
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str)
            .to_owned();
        if let Some(own) = path.strip_prefix("/__proxy/") {
            return Ok(self.control(own, &parts.method, &body));
        }
        let call = call_of(&parts.headers, parts.method.as_str(), &path, &body);
        let (fault, after, latency) = self.draw(&call);
        {
            let mut stats = self.stats.lock().expect("stats");
            stats.calls += 1;
            *stats
                .calls_by_call
                .entry(format!("{}:{}", call.service, call.operation))
                .or_default() += 1;
            if let Some(kind) = fault {
                *stats.injected.entry(kind).or_default() += 1;
                *stats
                    .by_call
                    .entry(format!("{}:{}", call.service, call.operation))
                    .or_default() += 1;
                stats.after_the_write += u64::from(after);
            }
        }
        if let Some(latency) = latency {
            tokio::time::sleep(latency).await;
        }
        let stall = Duration::from_millis(self.faults.lock().expect("faults").stall_ms);
        match (fault, after) {
            (Some(kind @ (Kind::Throttle | Kind::Error)), _) => return Ok(aws_error(&call, kind)),
            (Some(Kind::Drop), false) => return Err(CutConnection),
            (Some(Kind::Timeout), false) => {
                tokio::time::sleep(stall).await;
                return Err(CutConnection);
            }
            _ => {}
        }
        let answer = self.forward(parts, body).await;
        match (fault, answer) {
            (Some(Kind::Timeout), _) => {
                tokio::time::sleep(stall).await;
                Err(CutConnection)
            }
            (Some(_), _) | (None, Err(_)) => Err(CutConnection),
            (None, Ok(response)) => {
                if response.status().is_success() {
                    *self
                        .stats
                        .lock()
                        .expect("stats")
                        .succeeded_by_call
                        .entry(format!("{}:{}", call.service, call.operation))
                        .or_default() += 1;
                }
                Ok(response)
            }
        }
    }

    /// The call as it came, to the sandbox: the same method, path, headers (the signature covers
    /// the Host header, which is kept) and body.
    async fn forward(
        &self,
        parts: hyper::http::request::Parts,
        body: Bytes,
    ) -> Result<Response<Full<Bytes>>> {
        let path = parts
            .uri
            .path_and_query()
            .map_or("/", hyper::http::uri::PathAndQuery::as_str);
        let uri: hyper::Uri = format!(
            "{}{}",
            self.upstream.to_string().trim_end_matches('/'),
            path
        )
        .parse()
        .context("upstream URI")?;
        let mut out = Request::builder().method(parts.method).uri(uri);
        for (name, value) in &parts.headers {
            if name != "connection" && name != "transfer-encoding" {
                out = out.header(name, value);
            }
        }
        let response = self
            .client
            .request(out.body(Full::new(body))?)
            .await
            .context("the sandbox did not answer")?;
        let (parts, body) = response.into_parts();
        let body = body.collect().await?.to_bytes();
        let mut back = Response::builder().status(parts.status);
        for (name, value) in &parts.headers {
            if name != "connection" && name != "transfer-encoding" {
                back = back.header(name, value);
            }
        }
        Ok(back.body(Full::new(body))?)
    }

    fn control(&self, path: &str, method: &hyper::Method, body: &[u8]) -> Response<Full<Bytes>> {
        let answer = |status: StatusCode, text: String| {
            Response::builder()
                .status(status)
                .header("content-type", "application/json")
                .body(Full::new(Bytes::from(text)))
                .expect("a valid response")
        };
        match (method.as_str(), path) {
            ("PUT", "faults") => match serde_json::from_slice::<Faults>(body) {
                Ok(faults) if (0.0..=1.0).contains(&faults.rate) => {
                    if let Some(seed) = faults.seed {
                        *self.rng.lock().expect("rng") = fastrand::Rng::with_seed(seed);
                    }
                    let text = serde_json::to_string(&faults).unwrap_or_default();
                    *self.faults.lock().expect("faults") = faults;
                    answer(StatusCode::OK, text)
                }
                Ok(_) => answer(StatusCode::BAD_REQUEST, "\"rate must be 0 to 1\"".into()),
                Err(e) => answer(
                    StatusCode::BAD_REQUEST,
                    serde_json::json!(e.to_string()).to_string(),
                ),
            },
            ("GET", "faults") => answer(
                StatusCode::OK,
                serde_json::to_string(&*self.faults.lock().expect("faults")).unwrap_or_default(),
            ),
            ("GET", "stats") => answer(
                StatusCode::OK,
                serde_json::to_string(&*self.stats.lock().expect("stats")).unwrap_or_default(),
            ),
            _ => answer(
                StatusCode::NOT_FOUND,
                "\"PUT /__proxy/faults, GET /__proxy/faults or GET /__proxy/stats\"".into(),
            ),
        }
    }
}

fn arguments() -> Result<(String, String)> {
    let mut args = std::env::args().skip(1);
    let (mut upstream, mut listen) = (None, "127.0.0.1:0".to_owned());
    while let Some(a) = args.next() {
        match a.as_str() {
            "--upstream" => upstream = args.next(),
            "--listen" => listen = args.next().context("--listen needs an address")?,
            other => bail!("unknown argument {other}: expected --upstream URL [--listen ADDRESS]"),
        }
    }
    Ok((
        upstream.context("--upstream URL is required (the sandbox's endpoint)")?,
        listen,
    ))
}

#[tokio::main]
async fn main() -> Result<()> {
    let (upstream, listen) = arguments()?;
    let listener = tokio::net::TcpListener::bind(&listen)
        .await
        .with_context(|| format!("cannot listen on {listen}"))?;
    let proxy = Arc::new(Proxy {
        upstream: upstream.parse().context("--upstream is not a URL")?,
        client: Client::builder(TokioExecutor::new()).build_http(),
        faults: Mutex::new(Faults::default()),
        rng: Mutex::new(fastrand::Rng::new()),
        stats: Mutex::new(Stats::default()),
    });
    println!("listening on http://{}", listener.local_addr()?);
    loop {
        let (stream, _) = listener.accept().await?;
        let proxy = proxy.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| proxy.clone().handle(request));
            // A cut connection ends here, as it should: the caller sees it closed.
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> hyper::HeaderMap {
        let mut h = hyper::HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, v.parse().unwrap());
        }
        h
    }

    const SIGNED_EC2: &str = "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/ec2/aws4_request, SignedHeaders=host, Signature=x";

    #[test]
    fn each_protocol_names_its_call() {
        let json = headers(&[
            (
                "authorization",
                "AWS4-HMAC-SHA256 Credential=AKID/20261130/us-east-1/dynamodb/aws4_request",
            ),
            ("x-amz-target", "DynamoDB_20120810.PutItem"),
        ]);
        let c = call_of(&json, "POST", "/", b"{}");
        assert_eq!(
            (c.service.as_str(), c.operation.as_str(), c.protocol),
            ("dynamodb", "PutItem", Protocol::Json)
        );
        let ec2 = headers(&[("authorization", SIGNED_EC2)]);
        let c = call_of(
            &ec2,
            "POST",
            "/",
            b"Action=RevokeSecurityGroupIngress&Version=2016-11-15",
        );
        assert_eq!(
            (c.operation.as_str(), c.protocol),
            ("RevokeSecurityGroupIngress", Protocol::Ec2)
        );
        let lambda = headers(&[(
            "authorization",
            "AWS4-HMAC-SHA256 Credential=A/d/us-east-1/lambda/aws4_request",
        )]);
        let c = call_of(
            &lambda,
            "GET",
            "/2015-03-31/functions/f/configuration?x=1",
            b"",
        );
        assert_eq!(
            (c.operation.as_str(), c.protocol),
            (
                "GET /2015-03-31/functions/f/configuration",
                Protocol::RestJson
            )
        );
    }

    #[test]
    fn a_throttle_is_what_the_service_itself_would_say() {
        let call = call_of(
            &headers(&[("authorization", SIGNED_EC2)]),
            "POST",
            "/",
            b"Action=DescribeInstances",
        );
        let r = aws_error(&call, Kind::Throttle);
        assert_eq!(r.status(), StatusCode::SERVICE_UNAVAILABLE);
        let iam = Call {
            service: "iam".into(),
            region: "us-east-1".into(),
            operation: "GetUser".into(),
            protocol: Protocol::Query,
        };
        assert_eq!(
            aws_error(&iam, Kind::Throttle).status(),
            StatusCode::BAD_REQUEST
        );
        assert_eq!(
            aws_error(&iam, Kind::Error).status(),
            StatusCode::INTERNAL_SERVER_ERROR
        );
    }
}
