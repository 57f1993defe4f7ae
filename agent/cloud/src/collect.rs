//! The long-lived collector: from config + host root to the `cloud` section.

use crate::client::{ImdsClient, ImdsError};
use crate::config::{ConfigError, ImdsConfig, Resolved, ResolvedEndpoint, resolve};
use crate::documents::{
    IdentityFields, answer_text, encode_segment, iam_info, interface_mac, maintenance_events,
    rebalance_notice_time, split_lines, spot_action,
};
use crate::lifecycle::LifecycleWatcher;
use crate::precheck::{
    container_runtime_present, ec2_hint, instance_id_from_firmware, looks_like_instance_id,
};
use crate::report::{
    AccessMode, CloudReport, CloudScan, CloudState, IamInfo, IdentityDocument, ImdsAccess, InstanceFacts,
    LifecycleSnapshot, NetworkInterface, SpotInstanceAction, Tags,
};
use guestward_core::{HostRoot, Problem, Section, Timestamp};
use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

const META: &str = "/latest/meta-data/";
const IDENTITY: &str = "/latest/dynamic/instance-identity/";
/// EC2 allows 50 tags per resource.
const MAX_TAGS: usize = 50;
/// EC2 allows at most a few dozen interfaces even on the largest instances.
const MAX_INTERFACES: usize = 64;
/// After this many requests in a row that got no answer, stop asking for the remaining items:
/// the service is gone (or hanging) and each further item would cost a full timeout.
const MAX_CONSECUTIVE_SILENCES: u32 = 2;

/// Building a collector failed.
#[derive(Debug, thiserror::Error)]
pub enum CollectorError {
    /// The `[imds]` section or an `AWS_EC2_METADATA_*` variable is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// The HTTP client could not be built.
    #[error(transparent)]
    Client(#[from] ImdsError),
}

/// Collects the `cloud` section. Built once from the validated `[imds]` config and owned by
/// the caller for the life of the process: it keeps the one IMDS client (and so the one
/// session token) between scans, shares it with the lifecycle watcher
/// ([`Self::lifecycle_watcher`]), and remembers a negative answer so an instance without IMDS
/// is asked only every `reprobe_interval_secs`.
///
/// It runs no runtime of its own: [`Self::scan`] is async, and synchronous callers lend their
/// runtime to [`Self::scan_blocking`].
#[derive(Debug)]
pub struct CloudCollector {
    config: ImdsConfig,
    resolved: Resolved,
    client: Option<Arc<ImdsClient>>,
    negative: Mutex<Option<(Instant, CloudReport, Vec<Problem>)>>,
    last_instance_id: std::sync::Mutex<Option<String>>,
}

/// One collection: the report and what could not be read.
#[derive(Debug, Clone)]
pub struct CloudOutcome {
    /// The section's data.
    pub report: CloudReport,
    /// Items that could not be read.
    pub problems: Vec<Problem>,
}

impl CloudCollector {
    /// A collector using the process environment for the `AWS_EC2_METADATA_*` variables.
    pub fn new(config: &ImdsConfig) -> Result<Self, CollectorError> {
        Self::with_env(config, &crate::config::process_env)
    }

    /// A collector with an injected environment (tests).
    pub fn with_env(
        config: &ImdsConfig,
        env: &dyn Fn(&str) -> Option<String>,
    ) -> Result<Self, CollectorError> {
        let resolved = resolve(config, env)?;
        let client = match &resolved {
            Resolved::Endpoint(e) => Some(Arc::new(ImdsClient::new(&e.base_url, e.settings.clone())?)),
            Resolved::Disabled { .. } => None,
        };
        Ok(Self {
            config: config.clone(),
            resolved,
            client,
            negative: Mutex::new(None),
            last_instance_id: std::sync::Mutex::new(None),
        })
    }

    /// The shared IMDS client (for the lifecycle watcher); `None` when IMDS is turned off.
    pub fn client(&self) -> Option<Arc<ImdsClient>> {
        self.client.clone()
    }

    /// The endpoint in use, or why there is none.
    pub fn resolved(&self) -> &Resolved {
        &self.resolved
    }

    /// Whether the lifecycle watcher should run on this host: IMDS enabled, and either an
    /// explicit endpoint or a pre-check that says EC2.
    pub fn should_watch(&self, root: &HostRoot) -> bool {
        match &self.resolved {
            Resolved::Disabled { .. } => false,
            Resolved::Endpoint(e) => e.explicit || (root.is_live() && ec2_hint(root).is_ec2),
        }
    }

    /// The instance id learned by the last successful collection, else the firmware's
    /// (`board_asset_tag` on Nitro). No network request: cheap enough for every report.
    pub fn known_instance_id(&self, root: &HostRoot) -> Option<String> {
        let cached = self.last_instance_id.lock().ok().and_then(|g| g.clone());
        cached.or_else(|| instance_id_from_firmware(root))
    }

    /// The lifecycle watcher for this host, on this collector's own client (so the process
    /// holds one IMDS client and one token), polling every `imds.spot_poll_interval_secs` and
    /// `imds.events_poll_interval_secs`. `None` when [`Self::should_watch`] says no.
    pub fn lifecycle_watcher(&self, root: &HostRoot) -> Option<LifecycleWatcher> {
        if !self.should_watch(root) {
            return None;
        }
        let client = self.client.clone()?;
        Some(LifecycleWatcher::new(
            client,
            Duration::from_secs(self.config.spot_poll_interval_secs),
            Duration::from_secs(self.config.events_poll_interval_secs),
        ))
    }

    /// One run of the collector: the `cloud` section, its findings and the instance id. Never
    /// fails: every problem is in the section. Live-only: under a mounted root the section is
    /// skipped, nothing is asked and no identity is claimed (that root's firmware files describe
    /// some other machine, if any).
    pub async fn scan(&self, root: &HostRoot) -> CloudScan {
        if !root.is_live() {
            return CloudScan {
                section: Section::skipped(
                    "IMDS describes the machine the agent runs on, not a mounted root (--root)",
                ),
                findings: Vec::new(),
                instance_id: None,
            };
        }
        let started = Instant::now();
        let outcome = self.collect(root).await;
        let findings = crate::findings::findings(&outcome.report);
        // The host's identity: an id IMDS gave that is not an instance id's shape (a 60,000
        // character one, one with escapes or shell syntax) is reported as a problem, never
        // taken. When IMDS did not answer this time, the id it gave before in this process:
        // one timeout once turned the host id into machine-id for an hour, and the collector
        // refused those reports as another host's.
        let instance_id = outcome
            .report
            .instance_id()
            .filter(|id| looks_like_instance_id(id))
            .map(str::to_string)
            .or_else(|| self.known_instance_id(root));
        let note = match outcome.report.state {
            CloudState::Ec2 => None,
            _ => outcome.report.reason.clone(),
        };
        let section = Section::from_parts(Some(outcome.report), outcome.problems, started);
        let section = match note {
            Some(n) => section.with_note(n),
            None => section,
        };
        CloudScan { section, findings, instance_id }
    }

    /// [`Self::scan`] for a synchronous caller (the daemon's blocking scan threads, a one-shot
    /// command), on the caller's runtime: the crate starts none of its own.
    ///
    /// The runtime must be driven while this blocks: a multi-thread runtime, or a
    /// current-thread one whose `Runtime::block_on` runs on another thread (`Handle::block_on`
    /// alone does not drive a current-thread runtime's I/O and timers). Called from a thread
    /// inside a runtime, where a nested `block_on` may panic, it blocks a plain thread instead.
    pub fn scan_blocking(&self, runtime: &tokio::runtime::Handle, root: &HostRoot) -> CloudScan {
        let started = Instant::now();
        let run = || runtime.block_on(self.scan(root));
        if tokio::runtime::Handle::try_current().is_err() {
            return run();
        }
        std::thread::scope(|s| s.spawn(run).join()).unwrap_or_else(|_| CloudScan {
            section: Section::failed(
                Problem::new("internal", "the cloud collector crashed; this is a bug, please report it"),
                started,
            ),
            findings: Vec::new(),
            instance_id: None,
        })
    }

    /// Collects the report. Never fails: every problem is in the outcome.
    pub async fn collect(&self, root: &HostRoot) -> CloudOutcome {
        let endpoint = match &self.resolved {
            Resolved::Disabled { reason } => {
                return CloudOutcome {
                    report: CloudReport::without_facts(
                        CloudState::DisabledByConfig,
                        format!("IMDS is turned off: {reason}"),
                    ),
                    problems: Vec::new(),
                };
            }
            Resolved::Endpoint(e) => e,
        };
        let Some(client) = &self.client else {
            // Unreachable: a client is built whenever the endpoint resolves.
            return CloudOutcome {
                report: CloudReport::without_facts(CloudState::DisabledByConfig, "no IMDS client"),
                problems: Vec::new(),
            };
        };
        if !endpoint.explicit {
            let hint = ec2_hint(root);
            if !hint.is_ec2 {
                return CloudOutcome {
                    report: CloudReport::without_facts(CloudState::NotEc2, hint.reason),
                    problems: Vec::new(),
                };
            }
        }
        {
            let negative = self.negative.lock().await;
            if let Some((at, report, problems)) = &*negative
                && at.elapsed() < Duration::from_secs(self.config.reprobe_interval_secs)
            {
                let mut report = report.clone();
                let since = at.elapsed().as_secs();
                report.reason = Some(format!(
                    "{} (as of {since} s ago; next try within {} s)",
                    report.reason.unwrap_or_default(),
                    self.config.reprobe_interval_secs.saturating_sub(since)
                ));
                return CloudOutcome { report, problems: problems.clone() };
            }
        }
        let outcome = collect_from(client, endpoint, &self.config, root).await;
        let mut negative = self.negative.lock().await;
        match outcome.report.state {
            CloudState::Ec2 => {
                *negative = None;
                if let (Ok(mut g), Some(id)) = (
                    self.last_instance_id.lock(),
                    outcome.report.instance_id().filter(|id| looks_like_instance_id(id)),
                ) {
                    *g = Some(id.to_string());
                }
            }
            CloudState::Unreachable | CloudState::ImdsDisabled => {
                // A host this process has seen answer as EC2 is asked again at the next scan:
                // one timeout there is a hiccup, not an hour without metadata.
                let proven_ec2 = self.last_instance_id.lock().is_ok_and(|g| g.is_some());
                if !(proven_ec2 && outcome.report.state == CloudState::Unreachable) {
                    *negative = Some((Instant::now(), outcome.report.clone(), outcome.problems.clone()));
                }
                // A later success must start from a fresh token handshake.
                client.reset().await;
            }
            CloudState::NotEc2 | CloudState::DisabledByConfig => {}
        }
        outcome
    }
}

/// Result of fetching one item.
enum Item {
    Found(String),
    Missing,
    Failed,
}

struct Fetcher<'a> {
    client: &'a ImdsClient,
    problems: Vec<Problem>,
    silences: u32,
    /// When the whole collection must be over (`imds.collection_deadline_ms`).
    deadline: tokio::time::Instant,
    /// The deadline passed: nothing more is asked; the problem was reported once.
    expired: bool,
}

impl<'a> Fetcher<'a> {
    fn new(client: &'a ImdsClient) -> Self {
        Self {
            client,
            problems: Vec::new(),
            silences: 0,
            deadline: tokio::time::Instant::now() + client.collection_deadline(),
            expired: false,
        }
    }

    /// Runs one request against the collection deadline. `None` when the deadline passed (now,
    /// or before the request could finish): the problem is reported once, naming the item
    /// that was cut off and the key that sets the deadline.
    async fn within_deadline<T>(&mut self, path: &str, request: impl Future<Output = T>) -> Option<T> {
        if !self.expired {
            if let Ok(answer) = tokio::time::timeout_at(self.deadline, request).await {
                return Some(answer);
            }
            self.expired = true;
            let ms = self.client.collection_deadline().as_millis();
            self.problems.push(
                Problem::new(
                    "imds_deadline",
                    format!(
                        "the IMDS collection ran out of time after {ms} ms (imds.collection_deadline_ms) \
                         while asking for {path}; that item and the remaining ones were not read"
                    ),
                )
                .with_path(path.to_string()),
            );
        }
        None
    }

    async fn item(&mut self, path: &str) -> Item {
        if self.silences >= MAX_CONSECUTIVE_SILENCES || self.expired {
            return Item::Failed;
        }
        let client = self.client;
        let Some(answer) = self.within_deadline(path, client.get(path)).await else {
            return Item::Failed;
        };
        match answer {
            Ok(Some(body)) => {
                self.silences = 0;
                Item::Found(body)
            }
            Ok(None) => {
                self.silences = 0;
                Item::Missing
            }
            Err(e) => {
                if e.is_transport() {
                    self.silences += 1;
                    if self.silences == MAX_CONSECUTIVE_SILENCES {
                        self.problems.push(Problem::new(
                            "imds_stopped_answering",
                            "IMDS stopped answering; the remaining items were not asked for",
                        ));
                    }
                } else {
                    self.silences = 0;
                }
                self.problems.push(Problem::new(e.code(), e.to_string()).with_path(path.to_string()));
                Item::Failed
            }
        }
    }

    async fn text(&mut self, path: &str) -> Option<String> {
        match self.item(path).await {
            Item::Found(s) => answer_text(&s),
            Item::Missing | Item::Failed => None,
        }
    }

    async fn lines(&mut self, path: &str) -> Vec<String> {
        self.text(path).await.map(|s| split_lines(&s)).unwrap_or_default()
    }

    fn malformed(&mut self, path: &str, e: &serde_json::Error) {
        self.problems.push(
            Problem::new("malformed", format!("{path}: malformed JSON: {e}")).with_path(path.to_string()),
        );
    }
}

async fn collect_from(
    client: &ImdsClient,
    endpoint: &ResolvedEndpoint,
    config: &ImdsConfig,
    root: &HostRoot,
) -> CloudOutcome {
    let mut access = ImdsAccess {
        endpoint: endpoint.base_url.clone(),
        endpoint_source: endpoint.source,
        access_mode: None,
        token_refused_status: None,
        imdsv1_answers: None,
        token_ttl_secs: None,
        declared_hop_limit: config.http_put_response_hop_limit,
        container_runtime_present: container_runtime_present(root),
    };
    let mut f = Fetcher::new(client);
    // The first request decides whether there is an IMDS at all.
    let first = format!("{META}instance-id");
    let Some(first_answer) = f.within_deadline(&first, client.get(&first)).await else {
        let reason = format!(
            "IMDS at {} did not answer within imds.collection_deadline_ms ({} ms)",
            endpoint.base_url,
            client.collection_deadline().as_millis()
        );
        access.access_mode = client.access_mode().await;
        let mut report = CloudReport::without_facts(CloudState::Unreachable, reason);
        report.imds = Some(access);
        return CloudOutcome { report, problems: f.problems };
    };
    let instance_id = match first_answer {
        Ok(body) => body.map(|b| b.trim().to_string()).filter(|b| !b.is_empty()),
        Err(e) => {
            access.access_mode = client.access_mode().await;
            access.token_refused_status = client.token_refusal_status().await;
            let (state, reason) = match &e {
                ImdsError::Forbidden { .. } => (
                    CloudState::ImdsDisabled,
                    "IMDS answered 403 Forbidden: it is turned off for this instance".to_string(),
                ),
                ImdsError::TokenRefused { status } => (
                    CloudState::ImdsDisabled,
                    format!(
                        "IMDSv2 is unavailable (token PUT answered {status}) and imds.allow_imdsv1_fallback = false"
                    ),
                ),
                _ => (
                    CloudState::Unreachable,
                    format!("IMDS at {} did not answer usefully: {e}", endpoint.base_url),
                ),
            };
            let mut report = CloudReport::without_facts(state, reason);
            report.imds = Some(access);
            let problems = if state == CloudState::ImdsDisabled {
                // A deliberate owner decision, not a failure of the agent.
                Vec::new()
            } else {
                vec![Problem::new(e.code(), e.to_string()).with_path(first)]
            };
            return CloudOutcome { report, problems };
        }
    };
    // Every instance metadata service has an instance id. A server without one (a web server
    // answering 404 to everything at a mistyped endpoint) is no IMDS: taken for one, its 404
    // to the token request read as "IMDSv2 unavailable" and raised IMDSv1 findings for an
    // instance that does not exist.
    if instance_id.is_none() {
        access.access_mode = client.access_mode().await;
        let reason = format!(
            "{} answered, but has no {first} (404 or empty): it is not an EC2 instance metadata service",
            endpoint.base_url
        );
        let mut report = CloudReport::without_facts(CloudState::Unreachable, reason.clone());
        report.imds = Some(access);
        return CloudOutcome { report, problems: vec![Problem::new("not_imds", reason).with_path(first)] };
    }
    if instance_id.as_deref().is_some_and(|id| !looks_like_instance_id(id)) {
        f.problems.push(
            Problem::new("malformed", "instance-id does not look like an EC2 instance id").with_path(first),
        );
    }

    // Identity document first: it carries the account and architecture.
    let identity_doc = f.text(&format!("{IDENTITY}document")).await;
    let raw_identity = identity_doc.as_deref().and_then(|d| match IdentityFields::read(d) {
        Ok(r) => Some(r),
        Err(e) => {
            f.malformed(&format!("{IDENTITY}document"), &e);
            None
        }
    });
    let identity = match identity_doc {
        Some(document) => Some(IdentityDocument {
            document,
            rsa2048: f.text(&format!("{IDENTITY}rsa2048")).await,
            signature: f.text(&format!("{IDENTITY}signature")).await,
            fetched_at: Timestamp::now(),
        }),
        None => None,
    };

    let mut instance = InstanceFacts {
        instance_id,
        instance_type: f.text(&format!("{META}instance-type")).await,
        ami_id: f.text(&format!("{META}ami-id")).await,
        region: f.text(&format!("{META}placement/region")).await,
        availability_zone: f.text(&format!("{META}placement/availability-zone")).await,
        availability_zone_id: f.text(&format!("{META}placement/availability-zone-id")).await,
        lifecycle: f.text(&format!("{META}instance-life-cycle")).await,
        private_ipv4: f.text(&format!("{META}local-ipv4")).await,
        public_ipv4: f.text(&format!("{META}public-ipv4")).await,
        ipv6: f.lines(&format!("{META}ipv6")).await,
        local_hostname: f.text(&format!("{META}local-hostname")).await,
        ..Default::default()
    };
    if let Some(fields) = raw_identity {
        fields.fill(&mut instance);
    }

    let interfaces = collect_interfaces(&mut f).await;
    let iam = collect_iam(&mut f).await;
    let tags = if config.collect_tags { collect_tags(&mut f).await } else { Some(Tags::NotCollected) };
    let lifecycle = lifecycle_with(&mut f).await;

    access.access_mode = client.access_mode().await;
    access.token_refused_status = client.token_refusal_status().await;
    access.token_ttl_secs = client.token_ttl_secs().await;
    let probe_path = format!("{META}instance-id");
    let probe = match access.access_mode {
        Some(AccessMode::V1Fallback) => None,
        _ if config.probe_imdsv1 && !f.expired => {
            f.within_deadline(&probe_path, client.probe_without_token(&probe_path)).await
        }
        _ => None,
    };
    access.imdsv1_answers = match (access.access_mode, probe) {
        (Some(AccessMode::V1Fallback), _) => Some(true),
        (_, Some(probe)) => match probe {
            Ok(200) => Some(true),
            Ok(401 | 403) => Some(false),
            Ok(other) => {
                f.problems
                    .push(Problem::new("imds_status", format!("token-less probe answered HTTP {other}")));
                None
            }
            Err(e) => {
                f.problems.push(Problem::new(e.code(), format!("token-less probe: {e}")));
                None
            }
        },
        (_, None) => None,
    };

    let report = CloudReport {
        state: CloudState::Ec2,
        reason: None,
        imds: Some(access),
        instance: Some(instance),
        interfaces,
        iam,
        tags,
        lifecycle: Some(lifecycle),
        identity,
    };
    CloudOutcome { report, problems: f.problems }
}

async fn collect_interfaces(f: &mut Fetcher<'_>) -> Vec<NetworkInterface> {
    let base = format!("{META}network/interfaces/macs/");
    let macs = f.lines(&base).await;
    if macs.len() > MAX_INTERFACES {
        f.problems.push(Problem::new(
            "truncated",
            format!("{} interfaces listed; only the first {MAX_INTERFACES} read", macs.len()),
        ));
    }
    let mut out = Vec::new();
    for entry in macs.into_iter().take(MAX_INTERFACES) {
        let Some(mac) = interface_mac(&entry).map(str::to_string) else {
            let shown = entry.trim_end_matches('/');
            f.problems.push(
                Problem::new("malformed", format!("not a MAC address in the interface list: {shown:?}"))
                    .with_path(base.clone()),
            );
            continue;
        };
        let p = format!("{base}{mac}/");
        let device_number = f.text(&format!("{p}device-number")).await.and_then(|s| s.parse().ok());
        out.push(NetworkInterface {
            interface_id: f.text(&format!("{p}interface-id")).await,
            device_number,
            subnet_id: f.text(&format!("{p}subnet-id")).await,
            vpc_id: f.text(&format!("{p}vpc-id")).await,
            security_group_ids: f.lines(&format!("{p}security-group-ids")).await,
            private_ipv4s: f.lines(&format!("{p}local-ipv4s")).await,
            public_ipv4s: f.lines(&format!("{p}public-ipv4s")).await,
            ipv6s: f.lines(&format!("{p}ipv6s")).await,
            mac,
        });
    }
    out.sort_by_key(|i| i.device_number.unwrap_or(u32::MAX));
    out
}

async fn collect_iam(f: &mut Fetcher<'_>) -> Option<IamInfo> {
    // Only `iam/info`: it names the profile without handing out credentials.
    let path = format!("{META}iam/info");
    let body = f.text(&path).await?;
    match iam_info(&body) {
        Ok(info) => Some(info),
        Err(e) => {
            f.malformed(&path, &e);
            None
        }
    }
}

async fn collect_tags(f: &mut Fetcher<'_>) -> Option<Tags> {
    let base = format!("{META}tags/instance");
    let keys = match f.item(&base).await {
        Item::Found(s) => split_lines(&s),
        Item::Missing => return Some(Tags::NotEnabled),
        Item::Failed => return None,
    };
    if keys.len() > MAX_TAGS {
        f.problems.push(Problem::new(
            "truncated",
            format!("{} tags listed; only the first {MAX_TAGS} read", keys.len()),
        ));
    }
    let mut values = BTreeMap::new();
    for key in keys.into_iter().take(MAX_TAGS) {
        // IMDS does not serve tag values of keys containing '/'; the value may be empty.
        let value = match f.item(&format!("{base}/{}", encode_segment(&key))).await {
            Item::Found(v) => v,
            Item::Missing | Item::Failed => continue,
        };
        values.insert(key, value);
    }
    Some(Tags::Enabled { values })
}

/// Reads the lifecycle signals with an existing client (the watcher calls this).
pub async fn fetch_lifecycle(client: &ImdsClient) -> (LifecycleSnapshot, Vec<Problem>) {
    let mut f = Fetcher::new(client);
    let snapshot = lifecycle_with(&mut f).await;
    (snapshot, f.problems)
}

/// Reads only the spot interruption notice (the frequent poll).
pub async fn fetch_spot_action(client: &ImdsClient) -> (Option<SpotInstanceAction>, Vec<Problem>) {
    let mut f = Fetcher::new(client);
    let spot = spot_with(&mut f).await;
    (spot, f.problems)
}

async fn spot_with(f: &mut Fetcher<'_>) -> Option<SpotInstanceAction> {
    let path = format!("{META}spot/instance-action");
    let body = f.text(&path).await?;
    match spot_action(&body) {
        Ok(action) => Some(action),
        Err(e) => {
            f.malformed(&path, &e);
            None
        }
    }
}

async fn lifecycle_with(f: &mut Fetcher<'_>) -> LifecycleSnapshot {
    let maint_path = format!("{META}events/maintenance/scheduled");
    let maintenance_events = match f.text(&maint_path).await {
        None => Vec::new(),
        Some(body) => match maintenance_events(&body) {
            Ok(events) => events,
            Err(e) => {
                f.malformed(&maint_path, &e);
                Vec::new()
            }
        },
    };
    let spot_instance_action = spot_with(f).await;
    let rebalance_path = format!("{META}events/recommendations/rebalance");
    let rebalance_notice_time = match f.text(&rebalance_path).await {
        None => None,
        Some(body) => match rebalance_notice_time(&body) {
            Ok(time) => Some(time),
            Err(e) => {
                f.malformed(&rebalance_path, &e);
                None
            }
        },
    };
    let autoscaling_target_state = f.text(&format!("{META}autoscaling/target-lifecycle-state")).await;
    LifecycleSnapshot {
        maintenance_events,
        spot_instance_action,
        rebalance_notice_time,
        autoscaling_target_state,
    }
}
