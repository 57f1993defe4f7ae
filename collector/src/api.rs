//! The HTTP endpoints (see `guestward_report::ingest` for the contract): who the client is,
//! what it may do, and the ingest path from body bytes to one store transaction.

use crate::body::{BodyError, read_body};
use crate::identity::{ClientIdentity, IdentityError, Role, decode_proxy_header, verify_forwarded};
use crate::loglimit::LogLimit;
use crate::memory::Reservation;
use crate::server::{AppState, ConnInfo};
use crate::store::{
    Delivery, FindingFilter, ListenerQuery, NewReport, PackageInventory, PackageQuery, PackageSource,
    StoreError,
};
use guestward_core::Timestamp;
use guestward_report::Report;
use guestward_report::ingest::{
    ACCEPTED_SCHEMA_VERSIONS, BatchResult, ErrorBody, FINDINGS_PATH, Health, HostList, IngestResponse,
    LISTENERS_PATH, PACKAGES_PATH, REPORTS_PATH,
};
use hyper::body::{Bytes, Incoming};
use hyper::header::{CONTENT_ENCODING, CONTENT_LENGTH, CONTENT_TYPE, HeaderValue, RETRY_AFTER};
use hyper::{Method, Request, Response, StatusCode};
use serde::Serialize;
use std::sync::Arc;
use std::time::Instant;
use tracing::{debug, warn};

/// The longest `agent.version` accepted (the agent sends its package version, `0.1.0`).
const MAX_AGENT_VERSION_LEN: usize = 64;
/// How long a request waits for memory for its body before it is answered 503.
const BODY_MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(1);
/// How long a parsed request waits for memory before it is answered 503.
const MEMORY_WAIT: std::time::Duration = std::time::Duration::from_secs(10);

/// A response body, with the memory reserved for it (large answers: a host's latest report)
/// held until it is sent or the connection is gone: a client that never reads what it asked
/// for holds its share of the budget, not memory outside it. Handed to hyper in chunks, so
/// that hyper asks for the next one only once it has written the last: given whole, the
/// bytes sat in hyper's write buffer after the body (and its reservation) was dropped.
#[derive(Debug)]
pub(crate) struct Body {
    rest: Bytes,
    held: Option<Reservation>,
}

/// The most a response body hands over at a time.
const RESPONSE_CHUNK_BYTES: usize = 64 << 10;

impl Body {
    fn new(bytes: Vec<u8>, held: Option<Reservation>) -> Self {
        Self { rest: Bytes::from(bytes), held }
    }
}

impl hyper::body::Body for Body {
    type Data = Bytes;
    type Error = std::convert::Infallible;

    fn poll_frame(
        self: std::pin::Pin<&mut Self>,
        _cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Bytes>, Self::Error>>> {
        let this = self.get_mut();
        if this.rest.is_empty() {
            this.held = None;
            return std::task::Poll::Ready(None);
        }
        let chunk = this.rest.split_to(this.rest.len().min(RESPONSE_CHUNK_BYTES));
        std::task::Poll::Ready(Some(Ok(hyper::body::Frame::data(chunk))))
    }

    fn is_end_stream(&self) -> bool {
        self.rest.is_empty()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        hyper::body::SizeHint::with_exact(self.rest.len() as u64)
    }
}

/// A refusal: status, stable code, and a message for a human.
#[derive(Debug)]
pub(crate) struct ApiError {
    status: StatusCode,
    code: &'static str,
    message: String,
    retry_after_secs: Option<u64>,
}

impl ApiError {
    pub(crate) fn new(status: StatusCode, code: &'static str, message: impl Into<String>) -> Self {
        Self { status, code, message: message.into(), retry_after_secs: None }
    }
    fn invalid(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNPROCESSABLE_ENTITY, "invalid_report", message)
    }
    fn forbidden(message: impl Into<String>) -> Self {
        Self::new(StatusCode::FORBIDDEN, "forbidden", message)
    }
    fn unauthenticated(message: impl Into<String>) -> Self {
        Self::new(StatusCode::UNAUTHORIZED, "unauthenticated", message)
    }
    fn too_large(message: impl Into<String>) -> Self {
        Self::new(StatusCode::PAYLOAD_TOO_LARGE, "too_large", message)
    }
    pub(crate) fn busy() -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            "the collector is busy receiving other reports (limits.max_buffered_bytes); nothing was stored",
        );
        err.retry_after_secs = Some(5);
        err
    }
    /// One client holds its share of the memory budget already (see [`crate::memory`]).
    pub(crate) fn client_busy(share: u64) -> Self {
        let mut err = Self::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "unavailable",
            format!(
                "this client's requests in progress hold its share of the collector's memory \
                 ({} MiB of limits.max_buffered_bytes); nothing was stored, retry once they are done",
                share >> 20
            ),
        );
        err.retry_after_secs = Some(5);
        err
    }
    #[cfg(test)]
    pub(crate) fn status(&self) -> StatusCode {
        self.status
    }
    fn unavailable(e: &StoreError) -> Self {
        warn!(error = %e, "store failed; the request stored nothing");
        let mut err =
            Self::new(StatusCode::SERVICE_UNAVAILABLE, "unavailable", format!("storage failed: {e}"));
        err.retry_after_secs = Some(5);
        err
    }

    fn into_response(self) -> Response<Body> {
        let mut resp =
            json_response(self.status, &ErrorBody { error: self.code.to_string(), message: self.message });
        if let Some(secs) = self.retry_after_secs {
            resp.headers_mut().insert(RETRY_AFTER, HeaderValue::from(secs));
        }
        resp
    }
}

fn json_response<T: Serialize>(status: StatusCode, value: &T) -> Response<Body> {
    let bytes = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Body::new(bytes, None));
    *resp.status_mut() = status;
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    resp
}

/// Answers one request whose first byte arrived at `started` (its deadline's origin).
pub(crate) async fn handle(
    state: Arc<AppState>,
    conn: Arc<ConnInfo>,
    req: Request<Incoming>,
    started: Instant,
) -> Response<Body> {
    match route(&state, &conn, req, started).await {
        Ok(resp) => resp,
        Err(e) => {
            debug!(peer = %conn.peer, status = %e.status, message = %e.message, "request refused");
            e.into_response()
        }
    }
}

async fn route(
    state: &Arc<AppState>,
    conn: &ConnInfo,
    req: Request<Incoming>,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let client = identify(state, conn, &req)?;
    let key = client.role.to_string();
    if let Err(wait) = state.limiter.check(&key, Instant::now()) {
        let mut err = ApiError::new(
            StatusCode::TOO_MANY_REQUESTS,
            "rate_limited",
            format!(
                "{key}: more than {} requests per second; retry later",
                state.limits.requests_per_sec_per_client
            ),
        );
        err.retry_after_secs = Some(wait.as_secs_f64().ceil().max(1.0) as u64);
        return Err(err);
    }
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    match (method, path.as_str()) {
        (Method::POST, REPORTS_PATH) => ingest(state, &client, conn, req, started).await,
        (Method::GET, "/healthz") => {
            let store = state.store.clone();
            blocking(move || store.health()).await?.map_err(|e| ApiError::unavailable(&e))?;
            Ok(json_response(StatusCode::OK, &Health { status: "ok".into() }))
        }
        (Method::GET, "/v1/hosts") => {
            let Role::Operator(_) = client.role else {
                return Err(ApiError::forbidden(format!(
                    "{}: only operator certificates may list hosts (an agent may read /v1/hosts/<its own id>)",
                    client.role
                )));
            };
            let store = state.store.clone();
            let hosts = blocking(move || store.hosts()).await?.map_err(|e| ApiError::unavailable(&e))?;
            Ok(json_response(StatusCode::OK, &HostList { hosts }))
        }
        (Method::GET, p) if p.starts_with("/v1/hosts/") => {
            let id = p.trim_start_matches("/v1/hosts/").to_string();
            let allowed = match &client.role {
                Role::Operator(_) => true,
                Role::Host(own) => *own == id,
            };
            if !allowed {
                return Err(ApiError::forbidden(format!("{}: may read only its own host", client.role)));
            }
            let store = state.store.clone();
            let lookup = id.clone();
            let gate = Arc::clone(&state.detail_gate);
            let built = blocking(move || {
                let _one_at_a_time = gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
                let detail = store.host(&lookup)?;
                Ok::<_, StoreError>(detail.map(|d| serde_json::to_vec(&d).unwrap_or_else(|_| b"{}".to_vec())))
            });
            match built.await?.map_err(|e| ApiError::unavailable(&e))? {
                Some(bytes) => held_json(state, &client, bytes).await,
                None => Err(ApiError::new(
                    StatusCode::NOT_FOUND,
                    "not_found",
                    format!(
                        "host {id:?} is not stored: it never reported, or it stopped reporting and retention forgot it"
                    ),
                )),
            }
        }
        (Method::GET, FINDINGS_PATH) => {
            let filter = finding_filter(req.uri().query().unwrap_or_default())?;
            fleet_search(state, &client, "findings", move |store| store.findings(&filter)).await
        }
        (Method::GET, PACKAGES_PATH) => {
            let query = package_query(req.uri().query().unwrap_or_default())?;
            fleet_search(state, &client, "packages", move |store| store.packages(&query)).await
        }
        (Method::GET, LISTENERS_PATH) => {
            let query = listener_query(req.uri().query().unwrap_or_default())?;
            fleet_search(state, &client, "listeners", move |store| store.listeners(&query)).await
        }
        (_, REPORTS_PATH | FINDINGS_PATH | PACKAGES_PATH | LISTENERS_PATH | "/healthz" | "/v1/hosts") => {
            Err(ApiError::new(
                StatusCode::METHOD_NOT_ALLOWED,
                "bad_request",
                format!("method not allowed on {path}"),
            ))
        }
        _ => Err(ApiError::new(StatusCode::NOT_FOUND, "not_found", format!("no such endpoint: {path}"))),
    }
}

/// A search of the whole fleet (`GET /v1/findings`, `GET /v1/packages`), for operators only:
/// run on the blocking pool, one at a time with the hosts' details (each reads across the
/// store), its answer held like theirs.
async fn fleet_search<T: serde::Serialize>(
    state: &Arc<AppState>,
    client: &ClientIdentity,
    what: &str,
    search: impl FnOnce(&dyn crate::store::Store) -> Result<T, StoreError> + Send + 'static,
) -> Result<Response<Body>, ApiError> {
    let Role::Operator(_) = &client.role else {
        return Err(ApiError::forbidden(format!(
            "{}: only operator certificates may search the fleet's {what}",
            client.role
        )));
    };
    let store = state.store.clone();
    let gate = Arc::clone(&state.detail_gate);
    let built = blocking(move || {
        let _one_at_a_time = gate.lock().unwrap_or_else(std::sync::PoisonError::into_inner);
        let found = search(store.as_ref())?;
        Ok::<_, StoreError>(serde_json::to_vec(&found).unwrap_or_else(|_| b"{}".to_vec()))
    });
    let bytes = built.await?.map_err(|e| ApiError::unavailable(&e))?;
    held_json(state, client, bytes).await
}

/// A large JSON answer, its memory reserved from the client's share and held until it is
/// sent: a client that never reads what it asked for holds its share, no more.
async fn held_json(
    state: &AppState,
    client: &ClientIdentity,
    bytes: Vec<u8>,
) -> Result<Response<Body>, ApiError> {
    let held = state
        .memory
        .reserve(&client.role.to_string(), bytes.len() as u64, Instant::now() + BODY_MEMORY_WAIT)
        .await?;
    let mut resp = Response::new(Body::new(bytes, Some(held)));
    resp.headers_mut().insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    Ok(resp)
}

/// The most `id` values one `GET /v1/findings` takes.
const MAX_FINDING_IDS: usize = 64;

/// 400: a query that is not understood.
fn bad_query(message: String) -> ApiError {
    ApiError::new(StatusCode::BAD_REQUEST, "bad_request", message)
}

/// A query's `key=value` pairs, each value percent-decoded. A query is the client's: it is
/// quoted in errors, bounded (`quoted`).
fn query_pairs(query: &str) -> Result<Vec<(&str, std::borrow::Cow<'_, str>)>, ApiError> {
    query
        .split('&')
        .filter(|p| !p.is_empty())
        .map(|pair| {
            let (key, value) = pair.split_once('=').unwrap_or((pair, ""));
            let value = percent_encoding::percent_decode_str(value)
                .decode_utf8()
                .map_err(|_| bad_query(format!("query parameter {}: not UTF-8 once decoded", quoted(key))))?;
            Ok((key, value))
        })
        .collect()
}

/// A query's key or value as an error quotes it: escaped, at most 64 characters.
fn quoted(text: &str) -> String {
    guestward_core::text::quote_truncated(text, 64)
}

/// `GET /v1/findings`' query: `id` (repeatable: exact, or a prefix ending in `*`) and
/// `min_severity`. Anything else is refused by name, so a misspelt filter never widens the
/// answer to the whole fleet in silence.
fn finding_filter(query: &str) -> Result<FindingFilter, ApiError> {
    let mut filter = FindingFilter::default();
    for (key, value) in query_pairs(query)? {
        match key {
            "id" => {
                let pattern = guestward_core::finding::parse_finding_pattern(&value)
                    .map_err(|e| bad_query(format!("query parameter \"id\": {e}")))?;
                if filter.ids.len() == MAX_FINDING_IDS {
                    return Err(bad_query(format!("more than {MAX_FINDING_IDS} \"id\" parameters")));
                }
                filter.ids.push(pattern);
            }
            "min_severity" => {
                let severity = guestward_core::finding::parse_severity(&value)
                    .map_err(|e| bad_query(format!("query parameter \"min_severity\": {e}")))?;
                filter.min_severity = Some(severity);
            }
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter {} (GET {FINDINGS_PATH} takes id and min_severity)",
                    quoted(other)
                )));
            }
        }
    }
    Ok(filter)
}

/// The most `version` values one `GET /v1/packages` takes.
const MAX_PACKAGE_VERSIONS: usize = 64;

/// `GET /v1/packages`' query: `name` (required), `version` (repeatable), `below`, `source`.
/// As for findings, anything else is refused by name.
fn package_query(query: &str) -> Result<PackageQuery, ApiError> {
    let mut out = PackageQuery::default();
    let mut named = false;
    for (key, value) in query_pairs(query)? {
        let field = |what: &str| {
            crate::store::parse_package_field(&value)
                .map_err(|e| bad_query(format!("query parameter \"{what}\": {e}")))
        };
        match key {
            "name" => {
                out.name = field("name")?;
                named = true;
            }
            "version" => {
                if out.versions.len() == MAX_PACKAGE_VERSIONS {
                    return Err(bad_query(format!(
                        "more than {MAX_PACKAGE_VERSIONS} \"version\" parameters"
                    )));
                }
                out.versions.push(field("version")?);
            }
            "below" => out.below = Some(field("below")?),
            "source" => {
                out.source = Some(
                    PackageSource::parse(&value)
                        .map_err(|e| bad_query(format!("query parameter \"source\": {e}")))?,
                );
            }
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter {} (GET {PACKAGES_PATH} takes name, version, below and source)",
                    quoted(other)
                )));
            }
        }
    }
    if !named {
        return Err(bad_query(format!(
            "GET {PACKAGES_PATH} needs a name (name=openssl, or name=openssl* for every name that starts so)"
        )));
    }
    Ok(out)
}

/// The most `port` and `scope` values one `GET /v1/listeners` takes.
const MAX_LISTENER_PORTS: usize = 64;

/// `GET /v1/listeners`' query: `port` (repeatable), `protocol`, `scope` (repeatable),
/// `process`, `public`; none required (no filter lists every listener, within the answer's
/// bounds). As for findings, anything else is refused by name.
fn listener_query(query: &str) -> Result<ListenerQuery, ApiError> {
    let mut out = ListenerQuery::default();
    for (key, value) in query_pairs(query)? {
        let invalid = |e: String| bad_query(format!("query parameter \"{key}\": {e}"));
        match key {
            "port" => {
                if out.ports.len() == MAX_LISTENER_PORTS {
                    return Err(bad_query(format!("more than {MAX_LISTENER_PORTS} \"port\" parameters")));
                }
                let port = value
                    .parse::<u16>()
                    .map_err(|_| invalid(format!("{} is not a port (0 to 65535)", quoted(&value))))?;
                out.ports.push(port);
            }
            "protocol" => out.protocol = Some(crate::store::parse_protocol(&value).map_err(invalid)?),
            "scope" => {
                let scope = crate::store::parse_scope(&value).map_err(invalid)?;
                if !out.scopes.contains(&scope) {
                    out.scopes.push(scope);
                }
            }
            "process" => out.process = Some(crate::store::parse_process_pattern(&value).map_err(invalid)?),
            "public" => {
                out.public_only = match value.as_ref() {
                    "true" => true,
                    "false" => false,
                    other => return Err(invalid(format!("{} is neither true nor false", quoted(other)))),
                }
            }
            other => {
                return Err(bad_query(format!(
                    "unknown query parameter {} (GET {LISTENERS_PATH} takes port, protocol, scope, process and public)",
                    quoted(other)
                )));
            }
        }
    }
    Ok(out)
}

/// The client's identity. A proxy header is honoured only from a trusted proxy, and then only
/// after the forwarded certificate verifies against the CA; from anyone else it is refused
/// outright (never ignored: a client sending it is either misconfigured or trying to pose as
/// another host, and either deserves a clear answer).
fn identify(state: &AppState, conn: &ConnInfo, req: &Request<Incoming>) -> Result<ClientIdentity, ApiError> {
    let header = &state.proxy.header;
    let mut values = req.headers().get_all(header).iter();
    if let Some(value) = values.next() {
        if !conn.trusted_proxy {
            static SITE: LogLimit = LogLimit::new();
            if let Some(suppressed) = SITE.allow() {
                warn!(peer = %conn.peer, header = %header, suppressed, "client-certificate header from a peer that is not a trusted proxy; refused");
            }
            return Err(ApiError::forbidden(format!(
                "header {header} is accepted only from trusted proxies ([proxy] trusted); {} is not one",
                conn.peer.ip()
            )));
        }
        if values.next().is_some() {
            return Err(ApiError::new(
                StatusCode::BAD_REQUEST,
                "bad_request",
                format!("header {header} appears more than once"),
            ));
        }
        let chain =
            decode_proxy_header(value.as_bytes()).map_err(|e| ApiError::unauthenticated(e.to_string()))?;
        let now = rustls::pki_types::UnixTime::now();
        return verify_forwarded(state.tls.verifier.as_ref(), &chain, now).map_err(|e: IdentityError| {
            static SITE: LogLimit = LogLimit::new();
            if let Some(suppressed) = SITE.allow() {
                warn!(peer = %conn.peer, error = %e, suppressed, "trusted proxy forwarded a certificate that does not verify");
            }
            ApiError::unauthenticated(e.to_string())
        });
    }
    match &conn.tls_identity {
        Some(Ok(id)) => Ok(id.clone()),
        Some(Err(e)) => Err(ApiError::unauthenticated(e.to_string())),
        None => Err(ApiError::unauthenticated(format!(
            "no client certificate: connect with one issued by the collector's CA (a trusted proxy forwards it in header {header})"
        ))),
    }
}

async fn blocking<T: Send + 'static>(f: impl FnOnce() -> T + Send + 'static) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(f).await.map_err(|e| {
        warn!(error = %e, "a request's worker task failed");
        ApiError::new(StatusCode::INTERNAL_SERVER_ERROR, "internal", "internal error; nothing was stored")
    })
}

async fn ingest(
    state: &Arc<AppState>,
    client: &ClientIdentity,
    conn: &ConnInfo,
    req: Request<Incoming>,
    started: Instant,
) -> Result<Response<Body>, ApiError> {
    let host = match &client.role {
        Role::Host(h) => h.clone(),
        Role::Operator(_) => {
            return Err(ApiError::forbidden(format!(
                "{}: operator certificates may not post reports",
                client.role
            )));
        }
    };
    let zstd = is_zstd_json(req.headers())?;
    let headers = req.headers();
    let limits = &state.limits;
    let declared =
        headers.get(CONTENT_LENGTH).and_then(|v| v.to_str().ok()).and_then(|v| v.parse::<u64>().ok());
    let deadline = started + limits.request_timeout;
    let client_key = client.role.to_string();
    // Memory: the body is reserved against the budget before it is read (its declared length,
    // else the cap), so many clients at once cannot hold more than the budget, nor one client
    // more than its share.
    let expected = declared.unwrap_or(limits.max_body_bytes).min(limits.max_body_bytes);
    // A short wait: under memory pressure a quick 503 makes the agent back off and frees this
    // connection, where a long wait would only hold it.
    let reserved =
        state.memory.reserve(&client_key, expected, deadline.min(Instant::now() + BODY_MEMORY_WAIT)).await?;
    let body = read_body(req.into_body(), limits.max_body_bytes, declared, deadline)
        .await
        .map_err(|e| body_error(e, limits))?;

    // Decompressing and parsing are CPU work with transient memory: a few at a time, as many
    // as there are cores, and no longer waited for than the request may take.
    let slot = tokio::time::timeout_at(
        tokio::time::Instant::from_std(deadline),
        state.parse_slots.clone().acquire_owned(),
    )
    .await
    .map_err(|_| ApiError::busy())?
    .map_err(|_| ApiError::busy())?;
    let max_decompressed = limits.max_decompressed_bytes;
    let (json, tree) = blocking(move || {
        let json = if zstd { crate::body::decompress_zstd(&body, max_decompressed)? } else { body };
        let tree = crate::json_cost::tree_cost(&json)
            .map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
        Ok::<_, ApiError>((json, tree))
    })
    .await??;
    // What the parse will hold: the tree, the reports as JSON (kept for the store) and the
    // typed reports (smaller than the tree). The compressed body is gone by now.
    let parsing = tree.saturating_add(json.len() as u64);
    let budget = state.memory.total_bytes();
    if parsing > budget {
        return Err(ApiError::too_large(format!(
            "the reports would take about {} MiB of memory once parsed, more than the collector's \
             whole budget ({} MiB, limits.max_buffered_bytes); send fewer reports per request",
            parsing.div_ceil(1 << 20),
            budget >> 20
        )));
    }
    // The body's reservation is given back first: this one covers what is left of it (the
    // decompressed JSON), and a parse as large as the client's share must not find part of
    // the share taken by its own body.
    drop(reserved);
    let reserved = state.memory.reserve(&client_key, parsing, Instant::now() + MEMORY_WAIT).await?;
    let host2 = host.clone();
    let peer = conn.peer;
    let max_reports = limits.max_reports_per_request;
    let new = blocking(move || {
        let reports = parse_reports(&json, max_reports)?;
        drop(json);
        check_hosts(&reports, &host2, peer)?;
        Ok::<_, ApiError>(
            reports
                .into_iter()
                .map(|(r, json)| NewReport {
                    packages: r
                        .packages
                        .as_ref()
                        .and_then(|s| s.data.as_ref())
                        .map(PackageInventory::from_report),
                    listeners: r
                        .network
                        .as_ref()
                        .and_then(|s| s.data.as_ref())
                        .map(crate::store::ListenerIndex::from_report),
                    host_id: host2.clone(),
                    sequence: r.sequence.unwrap_or_default(),
                    collected_at: r.collected_at,
                    agent_version: r.agent.version,
                    batch_id: r.batch_id,
                    json,
                    findings: r.findings,
                    events: r.events,
                })
                .collect::<Vec<_>>(),
        )
    })
    .await??;
    drop(slot);
    // The reservation stays whole until the store is done: the events' payloads kept for it
    // are trees like the one estimated.

    let state2 = state.clone();
    let delivery = Delivery {
        host_id: host.clone(),
        certificate: client.certificate.clone(),
        received_at: Timestamp::now(),
    };
    blocking(move || {
        let statuses = state2.store.ingest(&delivery, &new).map_err(|e| match e {
            StoreError::ForeignBatch { .. } => ApiError::invalid(e.to_string()),
            other => ApiError::unavailable(&other),
        })?;
        drop(reserved);
        let results = new
            .iter()
            .zip(statuses)
            .map(|(r, status)| BatchResult {
                batch_id: r.batch_id.clone(),
                sequence: Some(r.sequence),
                status,
            })
            .collect();
        Ok(json_response(StatusCode::OK, &IngestResponse { results }))
    })
    .await?
}

fn body_error(e: BodyError, limits: &crate::config::Limits) -> ApiError {
    match e {
        BodyError::TooLarge => ApiError::too_large(format!(
            "the body is larger than {} bytes (limits.max_body_bytes); send fewer reports per request",
            limits.max_body_bytes
        )),
        BodyError::Timeout => ApiError::new(
            StatusCode::REQUEST_TIMEOUT,
            "bad_request",
            format!("the body was not received within {} s", limits.request_timeout.as_secs()),
        ),
        BodyError::Read(e) => {
            ApiError::new(StatusCode::BAD_REQUEST, "bad_request", format!("cannot read the body: {e}"))
        }
    }
}

/// Checks `Content-Type` (JSON) and `Content-Encoding` (none or zstd); true for zstd.
fn is_zstd_json(headers: &hyper::HeaderMap) -> Result<bool, ApiError> {
    let content_type = headers.get(CONTENT_TYPE).and_then(|v| v.to_str().ok()).unwrap_or("");
    let mime = content_type.split(';').next().unwrap_or("").trim();
    if !mime.eq_ignore_ascii_case("application/json") {
        return Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Type must be application/json, got {content_type:?}"),
        ));
    }
    match headers.get(CONTENT_ENCODING).map(|v| v.to_str().unwrap_or("?").trim().to_ascii_lowercase()) {
        None => Ok(false),
        Some(e) if e.is_empty() || e == "identity" => Ok(false),
        Some(e) if e == "zstd" => Ok(true),
        Some(e) => Err(ApiError::new(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "unsupported_encoding",
            format!("Content-Encoding {e:?} is not supported; send zstd or no encoding"),
        )),
    }
}

/// Every report must be of the client's own host: one that is not refuses the request.
fn check_hosts(
    reports: &[(Report, Vec<u8>)],
    host: &str,
    peer: std::net::SocketAddr,
) -> Result<(), ApiError> {
    for (report, _) in reports {
        if report.agent.host_id.as_deref() != Some(host) {
            static SITE: LogLimit = LogLimit::new();
            if let Some(suppressed) = SITE.allow() {
                warn!(
                    suppressed,
                    peer = %peer,
                    certificate_host = %host,
                    report_host = ?report.agent.host_id,
                    batch_id = %report.batch_id,
                    "report for another host refused; the request stored nothing"
                );
            }
            let reported = match &report.agent.host_id {
                Some(id) => format!("is for host {id:?}"),
                None => "names no host (agent.host_id is missing)".to_owned(),
            };
            return Err(ApiError::forbidden(format!(
                "report {} {reported}, but the client certificate is host {host:?}'s; nothing was \
                 stored (issue the agent a certificate for its own host id, or set [agent] host_id \
                 in its agent.toml to the certificate's)",
                report.batch_id
            )));
        }
    }
    Ok(())
}

/// Checks the body's shape report by report, so the refusal names the report (`batch_id`) and
/// the field. Returns each report typed and as JSON (what is stored).
fn parse_reports(json: &[u8], max_reports: usize) -> Result<Vec<(Report, Vec<u8>)>, ApiError> {
    let value: serde_json::Value =
        serde_json::from_slice(json).map_err(|e| ApiError::invalid(format!("malformed JSON: {e}")))?;
    let serde_json::Value::Object(mut top) = value else {
        return Err(ApiError::invalid("the body must be a JSON object {\"reports\": [...]}"));
    };
    let Some(serde_json::Value::Array(items)) = top.remove("reports") else {
        return Err(ApiError::invalid("field `reports` is missing or not an array"));
    };
    if items.is_empty() {
        return Err(ApiError::invalid("field `reports` is empty"));
    }
    if items.len() > max_reports {
        return Err(ApiError::too_large(format!(
            "{} reports in one request; the limit is {max_reports} (limits.max_reports_per_request)",
            items.len()
        )));
    }
    let mut out = Vec::with_capacity(items.len());
    for (i, item) in items.into_iter().enumerate() {
        let batch_id = match item.get("batch_id") {
            Some(serde_json::Value::String(s)) => s.clone(),
            _ => {
                return Err(ApiError::invalid(format!(
                    "report #{i}: field `batch_id` is missing or not a string"
                )));
            }
        };
        if batch_id.is_empty()
            || batch_id.len() > 128
            || !batch_id.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.' | b':'))
        {
            return Err(ApiError::invalid(format!(
                "report #{i}: field `batch_id` {:?} is not valid (1 to 128 letters, digits, `-`, `_`, `.`, `:`; the agent sends a UUID)",
                batch_id.chars().take(140).collect::<String>()
            )));
        }
        match item.get("schema_version").and_then(serde_json::Value::as_u64) {
            Some(v) if ACCEPTED_SCHEMA_VERSIONS.iter().any(|a| u64::from(*a) == v) => {}
            Some(v) => {
                return Err(ApiError::invalid(format!(
                    "report {batch_id}: unknown schema_version {v}; this collector accepts {ACCEPTED_SCHEMA_VERSIONS:?} (upgrade the collector)"
                )));
            }
            None => {
                return Err(ApiError::invalid(format!(
                    "report {batch_id}: field `schema_version` is missing or not a number"
                )));
            }
        }
        match item.get("sequence").and_then(serde_json::Value::as_u64) {
            None => {
                return Err(ApiError::invalid(format!(
                    "report {batch_id}: field `sequence` is missing or not a number (only the daemon's reports are shipped)"
                )));
            }
            // The store keeps sequences as SQLite integers: a larger one would be stored as
            // another number than the one acknowledged (every such report as the same one).
            Some(v) if i64::try_from(v).is_err() => {
                return Err(ApiError::invalid(format!(
                    "report {batch_id}: field `sequence` {v} is larger than {} (no agent counts that far)",
                    i64::MAX
                )));
            }
            Some(_) => {}
        }
        let bytes =
            serde_json::to_vec(&item).map_err(|e| ApiError::invalid(format!("report {batch_id}: {e}")))?;
        let report: Report = serde_json::from_value(item).map_err(|e| {
            ApiError::invalid(format!("report {batch_id}: does not match the report schema: {e}"))
        })?;
        // Shown to every operator in the fleet listing (`GET /v1/hosts`): one host must not
        // make that listing large or put text of its choosing in it.
        let version = &report.agent.version;
        if version.is_empty()
            || version.len() > MAX_AGENT_VERSION_LEN
            || !version
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'+' | b'_' | b'~'))
        {
            return Err(ApiError::invalid(format!(
                "report {batch_id}: field `agent.version` {:?} is not a version (1 to {MAX_AGENT_VERSION_LEN} letters, digits, `.`, `-`, `+`, `_`, `~`)",
                version.chars().take(80).collect::<String>()
            )));
        }
        out.push((report, bytes));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn refusals_name_the_batch_and_the_field() {
        let e = parse_reports(br#"{"reports":[{"batch_id":"b-1","schema_version":2}]}"#, 10).unwrap_err();
        assert!(e.message.contains("b-1") && e.message.contains("`sequence`"), "{}", e.message);
        let e = parse_reports(br#"{"reports":[{"batch_id":"b-2","schema_version":99,"sequence":1}]}"#, 10)
            .unwrap_err();
        assert!(e.message.contains("b-2") && e.message.contains("schema_version 99"), "{}", e.message);
        let e = parse_reports(br#"{"reports":[{"batch_id":"b-3","schema_version":2,"sequence":1}]}"#, 10)
            .unwrap_err();
        assert!(e.message.contains("b-3") && e.message.contains("missing field"), "{}", e.message);
        let e = parse_reports(br#"{"reports":[{"#, 10).unwrap_err();
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        // A sequence the store cannot hold as it is: refused, not stored as another number.
        let e = parse_reports(
            br#"{"reports":[{"batch_id":"b-4","schema_version":2,"sequence":9223372036854775808}]}"#,
            10,
        )
        .unwrap_err();
        assert!(e.message.contains("b-4") && e.message.contains("is larger than"), "{}", e.message);
        assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
        let e = parse_reports(br#"{"reports":[1,2,3]}"#, 2).unwrap_err();
        assert_eq!(e.status, StatusCode::PAYLOAD_TOO_LARGE);
    }

    /// The agent version is shown in every operator's fleet listing: a long or odd one is
    /// refused, naming the report and the field.
    #[test]
    fn an_agent_version_that_is_not_a_version_is_refused() {
        let report = |version: &str| {
            let mut r = serde_json::to_value(guestward_report::Report::new(
                guestward_report::AgentInfo {
                    version: version.to_string(),
                    host_id: Some("h".into()),
                    host_id_source: guestward_report::HostIdSource::Config,
                },
                guestward_core::Timestamp::now(),
            ))
            .unwrap();
            r["batch_id"] = "b-v".into();
            r["sequence"] = 1.into();
            serde_json::to_vec(&serde_json::json!({ "reports": [r] })).unwrap()
        };
        assert!(parse_reports(&report("0.1.0"), 10).is_ok());
        assert!(parse_reports(&report("1.2.3-rc.1+build.5"), 10).is_ok());
        for bad in ["", "V".repeat(65).as_str(), "1.0\u{1b}[2J", "1.0 (evil)"] {
            let e = parse_reports(&report(bad), 10).unwrap_err();
            assert_eq!(e.status, StatusCode::UNPROCESSABLE_ENTITY);
            assert!(e.message.contains("b-v") && e.message.contains("agent.version"), "{}", e.message);
        }
    }
}
