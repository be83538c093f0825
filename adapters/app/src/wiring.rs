//! From settings to a running relay: the store and the ports it also
//! serves ([`Backend`]), the SMS provider the settings choose
//! ([`provider`]), and the relay wired from them ([`Wiring`]).

use std::sync::Arc;

use qdn_relay_aws_sms::AwsSmsClient;
use qdn_relay_core::Failover;
use qdn_relay_core::{
    Clock, EventSink, FanoutSink, Jobs, OptOuts, RateLimiter, Relay, RelayBuilder, SmsProvider,
    Store, SystemClock, TracingSink,
};
use qdn_relay_twilio::{Transport, TwilioClient};

use crate::dry_run::DryRunProvider;
use crate::settings::RelaySettings;
use crate::{DynRelay, SettingsError};

/// Why the relay could not be wired.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum WiringError {
    /// A setting is missing or invalid (the message names its variable).
    #[error(transparent)]
    Settings(#[from] SettingsError),
    /// The Twilio REST client could not be built.
    #[error("Twilio: {0}")]
    Twilio(#[from] qdn_relay_twilio::ConfigError),
    /// The AWS SMS client could not be built.
    #[error("AWS SMS: {0}")]
    AwsSms(#[from] qdn_relay_aws_sms::ConfigError),
    /// The store could not be opened.
    #[error("{var}: {message}")]
    Store {
        /// The variable that names the store (`RELAY_DB`).
        var: &'static str,
        /// What went wrong.
        message: String,
    },
}

/// Where the relay keeps its state: the [`Store`], and the ports that
/// span dispatches ([`OptOuts`], [`RateLimiter`]) where the store keeps
/// them too. A port the backend does not provide stays the core's
/// in-memory default (one process, lost on restart).
#[derive(Clone)]
pub struct Backend {
    store: Arc<dyn Store>,
    opt_outs: Option<Arc<dyn OptOuts>>,
    rate_limiter: Option<Arc<dyn RateLimiter>>,
}

/// `RELAY_DB` could not be opened.
#[cfg(feature = "sqlite")]
fn db_error(path: &std::path::Path, e: &qdn_relay_sqlite::OpenError) -> WiringError {
    WiringError::Store {
        var: "RELAY_DB",
        message: format!("cannot open {}: {e}", path.display()),
    }
}

impl Backend {
    /// `store` alone: opt-outs and rate-limit history in memory.
    pub fn new(store: Arc<dyn Store>) -> Self {
        Self {
            store,
            opt_outs: None,
            rate_limiter: None,
        }
    }

    /// The same backend keeping opt-outs in `opt_outs`.
    pub fn with_opt_outs(mut self, opt_outs: Arc<dyn OptOuts>) -> Self {
        self.opt_outs = Some(opt_outs);
        self
    }

    /// The same backend with its store wrapped by `wrap` (a store that
    /// counts its conflicts for the metrics, say); opt-outs and rate
    /// limits unchanged.
    pub fn map_store(mut self, wrap: impl FnOnce(Arc<dyn Store>) -> Arc<dyn Store>) -> Self {
        self.store = wrap(self.store);
        self
    }

    /// The same backend keeping rate-limit history in `limiter`.
    pub fn with_rate_limiter(mut self, limiter: Arc<dyn RateLimiter>) -> Self {
        self.rate_limiter = Some(limiter);
        self
    }

    /// The store.
    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The SQLite store (feature `sqlite`), which keeps opt-outs in the
    /// same file, so a `STOP` survives restarts. Rate limits stay in
    /// memory (one process).
    #[cfg(feature = "sqlite")]
    pub fn sqlite(store: qdn_relay_sqlite::SqliteStore) -> Self {
        let opt_outs: Arc<dyn OptOuts> = Arc::new(store.clone());
        Self::new(Arc::new(store)).with_opt_outs(opt_outs)
    }

    /// Opens (or creates) the SQLite database at `path` (`RELAY_DB`) as in
    /// [`Backend::sqlite`].
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite(path: impl AsRef<std::path::Path>) -> Result<Self, WiringError> {
        let path = path.as_ref();
        let store = qdn_relay_sqlite::SqliteStore::open(path)
            .await
            .map_err(|e| db_error(path, &e))?;
        Ok(Self::sqlite(store))
    }

    /// Opens the SQLite database at `path` (`RELAY_DB`) for this process
    /// alone, mirrored in memory (`qdn_relay_sqlite::MirroredStore`):
    /// reads never touch the file, saves are committed to it before memory
    /// changes, and another process's mirror on the same file is refused.
    /// Opt-outs are kept in the file and mirrored too.
    #[cfg(feature = "sqlite")]
    pub async fn open_sqlite_exclusive(
        path: impl AsRef<std::path::Path>,
    ) -> Result<Self, WiringError> {
        let path = path.as_ref();
        let store = qdn_relay_sqlite::MirroredStore::open(path)
            .await
            .map_err(|e| db_error(path, &e))?;
        let store = Arc::new(store);
        Ok(Self::new(store.clone()).with_opt_outs(store))
    }

    /// The DynamoDB store (feature `dynamo`), which also keeps opt-outs
    /// and the rate-limit history in its table: a `STOP` and a throttle
    /// hold across every process on the table.
    #[cfg(feature = "dynamo")]
    pub fn dynamo(store: qdn_relay_dynamo::DynamoStore) -> Self {
        let store = Arc::new(store);
        Self::new(store.clone())
            .with_opt_outs(store.clone())
            .with_rate_limiter(store)
    }

    /// The DynamoDB store every runner opens (feature `dynamo`): over
    /// `client` (built once per process from the AWS environment), in the
    /// table layout `lookup` names ([`dynamo_config`](crate::dynamo_config):
    /// `RELAY_DYNAMO_TABLE` and the other `RELAY_DYNAMO_*`), its sweep
    /// starting at a shard chosen at random for this process
    /// (`DynamoStore::due_start`), so processes sharing the table spread
    /// a backlog between them. The store is returned too, for what else a
    /// runner does with it.
    #[cfg(feature = "dynamo")]
    pub fn open_dynamo(
        client: qdn_relay_dynamo::Client,
        lookup: impl Fn(&str) -> Option<String>,
    ) -> Result<(Self, qdn_relay_dynamo::DynamoStore), WiringError> {
        let layout = crate::dynamo_config(lookup)?;
        let start = process_random() % u64::from(layout.shards.max(1));
        let store = qdn_relay_dynamo::DynamoStore::new(client, layout)
            .due_start(u16::try_from(start).unwrap_or(0));
        Ok((Self::dynamo(store.clone()), store))
    }
}

/// A number drawn once per call from the process's randomly keyed hasher
/// (no random-number crate needed for spreading shards).
#[cfg(feature = "dynamo")]
fn process_random() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos()),
    );
    h.write_u32(std::process::id());
    h.finish()
}

/// How the Twilio REST client sends its requests.
#[non_exhaustive]
pub enum TwilioHttp {
    /// reqwest with rustls (feature `twilio-client`): the server's.
    #[cfg(feature = "twilio-client")]
    Reqwest,
    /// The caller's HTTP stack, as the Lambda functions link a single one.
    Transport(Arc<dyn Transport>),
}

/// The SMS provider the settings choose: without `TWILIO_ACCOUNT_SID`
/// ([`RelaySettings::dry_run`]) a [`DryRunProvider`] that logs and records
/// each text; else the Twilio REST client over `http`, its status callback
/// at [`RelaySettings::status_callback`]`(local_base)`.
///
/// Warns in the log when sends are dry-run, and when there is no status
/// callback (failed deliveries then do not escalate early).
///
/// With AWS SMS configured ([`RelaySettings::aws_sms`]) the provider is a
/// [`Failover`] over the carriers `twilio` (the above, dry-run included)
/// and `aws-sms` (the AWS SMS client over the same HTTP stack), which
/// sends each text through the line's carriers in the policy's order
/// (see [`qdn_relay_core::Policy::carriers`]) and passes over a carrier
/// that failed carrier-wide for [`RelaySettings::carrier_cooling_off`].
pub fn provider(
    settings: &RelaySettings,
    http: TwilioHttp,
    local_base: Option<&str>,
) -> Result<Arc<dyn SmsProvider>, WiringError> {
    let Some(aws) = &settings.aws_sms else {
        return twilio(settings, http, local_base);
    };
    let aws_client = match &http {
        #[cfg(feature = "twilio-client")]
        TwilioHttp::Reqwest => AwsSmsClient::new(aws.config.clone())?,
        TwilioHttp::Transport(t) => AwsSmsClient::with_transport(aws.config.clone(), t.clone())?,
    };
    if aws.config.configuration_set.is_none() {
        tracing::warn!(
            "QDN_AWS_SMS_CONFIGURATION_SET is unset: texts through AWS SMS get no delivery events, so their failures do not escalate early"
        );
    }
    let twilio = twilio(settings, http, local_base)?;
    let carriers: Vec<Box<dyn SmsProvider>> = vec![
        Box::new(Named(crate::settings::TWILIO, twilio)),
        Box::new(aws_client),
    ];
    tracing::info!(
        line = %settings.line, aws = %aws.number,
        "carriers: {}",
        settings
            .policy
            .carriers()
            .iter()
            .map(ToString::to_string)
            .collect::<Vec<_>>()
            .join(", then ")
    );
    Ok(Arc::new(
        Failover::new(carriers).with_cooling_off(settings.carrier_cooling_off),
    ))
}

/// A provider under the carrier name the policy uses (the dry-run provider
/// stands in for Twilio).
struct Named(&'static str, Arc<dyn SmsProvider>);

#[async_trait::async_trait]
impl SmsProvider for Named {
    async fn send(
        &self,
        msg: &qdn_relay_core::OutboundMessage,
    ) -> Result<qdn_relay_core::SendReceipt, qdn_relay_core::SendError> {
        self.1.send(msg).await
    }
    fn name(&self) -> &str {
        self.0
    }
}

/// Twilio's REST client, or the dry-run provider.
fn twilio(
    settings: &RelaySettings,
    http: TwilioHttp,
    local_base: Option<&str>,
) -> Result<Arc<dyn SmsProvider>, WiringError> {
    let Some(config) = &settings.twilio else {
        tracing::warn!(
            "DRY-RUN: TWILIO_ACCOUNT_SID is unset; texts are logged and recorded, not sent"
        );
        return Ok(Arc::new(DryRunProvider::new()));
    };
    let mut config = config.clone();
    config.status_callback = settings.status_callback(local_base);
    if config.status_callback.is_none() {
        tracing::warn!(
            "RELAY_PUBLIC_URL is unset: texts go out without a status callback, so failed deliveries do not escalate early"
        );
    }
    let client = match http {
        #[cfg(feature = "twilio-client")]
        TwilioHttp::Reqwest => TwilioClient::new(config)?,
        TwilioHttp::Transport(t) => TwilioClient::with_transport(config, t)?,
    };
    Ok(Arc::new(client))
}

/// The relay wired from settings: the business line and policy of
/// `settings`, the store and the ports of a [`Backend`], a provider (see
/// [`provider`]), the system clock, events to the log ([`TracingSink`])
/// and to any [`sink`](Wiring::sink) added, and optionally the host's job
/// system.
///
/// ```
/// use std::sync::Arc;
/// use qdn_relay_app::{Backend, DryRunProvider, RelaySettings, Wiring};
/// let settings = RelaySettings::from_lookup(|k| match k {
///     "QDN_TWILIO_NUMBER" => Some("+16195550000".into()),
///     "RELAY_CHAIN" => Some("+16195550101,+18583354807".into()),
///     _ => None,
/// })?;
/// let backend = Backend::new(Arc::new(qdn_relay_core::MemoryStore::new()));
/// let relay = Wiring::new(&settings, backend, Arc::new(DryRunProvider::new())).build();
/// assert_eq!(relay.lines().collect::<Vec<_>>(), [settings.line]);
/// # Ok::<(), qdn_relay_app::SettingsError>(())
/// ```
pub struct Wiring<'s> {
    settings: &'s RelaySettings,
    backend: Backend,
    provider: Arc<dyn SmsProvider>,
    clock: Arc<dyn Clock>,
    sinks: Vec<Box<dyn EventSink>>,
    jobs: Option<Arc<dyn Jobs>>,
}

impl<'s> Wiring<'s> {
    /// The relay of `settings` over `backend`, sending through `provider`.
    pub fn new(
        settings: &'s RelaySettings,
        backend: Backend,
        provider: Arc<dyn SmsProvider>,
    ) -> Self {
        Self {
            settings,
            backend,
            provider,
            clock: Arc::new(SystemClock),
            sinks: Vec::new(),
            jobs: None,
        }
    }

    /// Publishes events to `sink` too (after the log, in the order added).
    pub fn sink(mut self, sink: impl EventSink + 'static) -> Self {
        self.sinks.push(Box::new(sink));
        self
    }

    /// Syncs each dispatch to the host's job system.
    pub fn jobs(mut self, jobs: Arc<dyn Jobs>) -> Self {
        self.jobs = Some(jobs);
        self
    }

    /// Reads time from `clock` instead of the system clock (tests).
    pub fn clock(mut self, clock: Arc<dyn Clock>) -> Self {
        self.clock = clock;
        self
    }

    /// The core's builder with all of the above set, for what the wiring
    /// does not choose (`job_sync_mode`, `sweep_concurrency`, more lines).
    pub fn builder(self) -> RelayBuilder<dyn Store, dyn SmsProvider, dyn Clock> {
        let Backend {
            store,
            opt_outs,
            rate_limiter,
        } = self.backend;
        let mut sinks: Vec<Box<dyn EventSink>> = vec![Box::new(TracingSink)];
        sinks.extend(self.sinks);
        let mut b = Relay::builder(store, self.provider, self.clock)
            .line(self.settings.line, self.settings.policy.clone())
            .sink(Arc::new(FanoutSink(sinks)));
        if let Some(o) = opt_outs {
            b = b.opt_outs(o);
        }
        if let Some(l) = rate_limiter {
            b = b.rate_limiter(l);
        }
        if let Some(j) = self.jobs {
            b = b.jobs(j);
        }
        b
    }

    /// The relay.
    pub fn build(self) -> Arc<DynRelay> {
        Arc::new(self.builder().build())
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use qdn_relay_core::testing::{RecordingProvider, RecordingSink};
    use qdn_relay_core::{
        InboundText, ManualClock, MemoryOptOuts, MemoryStore, Outcome, PhoneNumber, Timestamp,
    };

    use super::*;

    fn settings(extra: &[(&str, &str)]) -> RelaySettings {
        let mut pairs = vec![
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101,+18583354807"),
        ];
        pairs.extend_from_slice(extra);
        RelaySettings::from_lookup(|k| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect("valid settings")
    }

    #[tokio::test]
    async fn the_wired_relay_texts_the_settings_chain_and_publishes_to_every_sink() {
        let s = settings(&[("RELAY_ACK_TIMEOUT", "2m")]);
        let store = Arc::new(MemoryStore::new());
        let opt_outs = Arc::new(MemoryOptOuts::new());
        let clock = Arc::new(ManualClock::new(Timestamp::from_millis(1_767_603_600_000)));
        let provider = Arc::new(RecordingProvider::with_clock(clock.clone()));
        let sink = Arc::new(RecordingSink::new());
        let relay = Wiring::new(
            &s,
            Backend::new(store.clone()).with_opt_outs(opt_outs.clone()),
            provider.clone(),
        )
        .clock(clock.clone())
        .sink(sink.clone())
        .build();
        assert!(Arc::ptr_eq(
            relay.opt_outs(),
            &(opt_outs.clone() as Arc<dyn OptOuts>)
        ));
        let text = InboundText {
            sid: "SM0123456789abcdef0123456789abcdef".parse().expect("a sid"),
            from: "+16195550100".parse().expect("a number"),
            to: s.line,
            body: "Need a dumpster".into(),
            media: Vec::new(),
        };
        let Outcome::Opened(id) = relay.inbound(text).await.expect("accepted") else {
            panic!("a first text opens a dispatch")
        };
        assert_eq!(provider.accepted_to(s.chain[0]).len(), 1);
        assert!(!sink.events().is_empty(), "the added sink hears the events");
        let d = store.get(id).await.expect("get").expect("stored");
        assert_eq!(
            d.level_deadline(),
            Some(clock.now().plus(Duration::from_secs(120)))
        );
    }

    #[test]
    fn without_an_account_the_provider_is_dry_run_and_with_one_twilio() {
        let transport = || TwilioHttp::Transport(Arc::new(NoTransport));
        let dry = provider(&settings(&[]), transport(), None).expect("dry-run");
        assert_eq!(dry.name(), "dry-run");
        let s = settings(&[
            ("TWILIO_ACCOUNT_SID", "AC0123456789abcdef0123456789abcdef"),
            ("TWILIO_AUTH_TOKEN", "token"),
        ]);
        let twilio = provider(&s, transport(), Some("http://127.0.0.1:8080")).expect("twilio");
        assert_eq!(twilio.name(), "twilio");
    }

    const AWS: &[(&str, &str)] = &[
        ("QDN_AWS_SMS_NUMBER", "+16195550900"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE"),
        (
            "AWS_SECRET_ACCESS_KEY",
            "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY",
        ),
    ];

    fn settings_err(extra: &[(&str, &str)]) -> SettingsError {
        let mut pairs = vec![
            ("QDN_TWILIO_NUMBER", "+16195550000"),
            ("RELAY_CHAIN", "+16195550101,+18583354807"),
        ];
        pairs.extend_from_slice(extra);
        RelaySettings::from_lookup(|k| {
            pairs
                .iter()
                .rev()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| (*v).to_owned())
        })
        .expect_err("invalid settings")
    }

    #[test]
    fn with_aws_sms_the_line_has_two_carriers_in_order_and_the_provider_fails_over() {
        let mut extra = AWS.to_vec();
        extra.push(("QDN_AWS_SMS_CONFIGURATION_SET", "relay-events"));
        extra.push(("QDN_AWS_SMS_ORIGINATION_IDENTITY", "pool-0123456789abcdef"));
        extra.push(("RELAY_CARRIER_COOLING_OFF", "2m"));
        let s = settings(&extra);
        let carriers: Vec<String> = s
            .policy
            .carriers()
            .iter()
            .map(ToString::to_string)
            .collect();
        assert_eq!(carriers, ["twilio +16195550000", "aws-sms +16195550900"]);
        let aws = s.aws_sms.as_ref().expect("configured");
        assert_eq!(aws.config.region, "us-east-1");
        assert_eq!(
            aws.config.origination_of(aws.number).as_str(),
            "pool-0123456789abcdef"
        );
        assert_eq!(s.carrier_cooling_off, Duration::from_secs(120));
        let transport = TwilioHttp::Transport(Arc::new(NoTransport));
        let p = provider(&s, transport, None).expect("both carriers");
        assert_eq!(p.name(), "failover");
        // Without AWS: one carrier, no list.
        assert!(settings(&[]).policy.carriers().is_empty());
        assert!(
            !format!("{aws:?}").contains("wJalrXUtnFEMI"),
            "no secret in Debug"
        );
    }

    #[test]
    fn every_bad_carrier_setting_names_its_variable() {
        let with_aws = |extra: &[(&'static str, &'static str)]| {
            let mut v = AWS.to_vec();
            v.extend_from_slice(extra);
            v
        };
        let cases: Vec<(Vec<(&str, &str)>, &str)> = vec![
            (
                with_aws(&[("QDN_AWS_SMS_NUMBER", "six one nine")]),
                "QDN_AWS_SMS_NUMBER",
            ),
            (
                vec![("QDN_AWS_SMS_CONFIGURATION_SET", "relay-events")],
                "QDN_AWS_SMS_NUMBER",
            ),
            (
                with_aws(&[("QDN_AWS_SMS_CONFIGURATION_SET", "no spaces allowed")]),
                "QDN_AWS_SMS_CONFIGURATION_SET",
            ),
            (
                with_aws(&[("QDN_AWS_SMS_ORIGINATION_IDENTITY", "pool id?")]),
                "QDN_AWS_SMS_ORIGINATION_IDENTITY",
            ),
            (
                with_aws(&[("QDN_AWS_SMS_REGION", "US East")]),
                "QDN_AWS_SMS_REGION",
            ),
            (
                vec![("QDN_AWS_SMS_NUMBER", "+16195550900")],
                "QDN_AWS_SMS_REGION",
            ),
            (
                with_aws(&[("QDN_AWS_SMS_NUMBER", "+16195550101")]),
                "QDN_AWS_SMS_NUMBER",
            ),
            (
                with_aws(&[("RELAY_CARRIER_COOLING_OFF", "0s")]),
                "RELAY_CARRIER_COOLING_OFF",
            ),
            (
                with_aws(&[("QDN_AWS_SMS_SNS_TOPICS", "arn:aws:sqs:us-east-1:1:q")]),
                "QDN_AWS_SMS_SNS_TOPICS",
            ),
            (
                with_aws(&[("RELAY_CARRIER_COOLING_OFF", "soon")]),
                "RELAY_CARRIER_COOLING_OFF",
            ),
        ];
        for (extra, var) in cases {
            let e = settings_err(&extra);
            assert_eq!(e.var, var, "{extra:?}: {e}");
        }
    }

    #[test]
    fn a_policy_files_carriers_must_be_the_configured_ones() {
        let dir = tempfile::tempdir().expect("a temp dir");
        let write = |name: &str, carriers: &str| {
            let path = dir.path().join(name);
            std::fs::write(
                &path,
                format!("{carriers}\n[[levels]]\ntargets = [\"+16195550101\"]\n"),
            )
            .expect("write");
            path.display().to_string()
        };
        let aws_first = write(
            "aws-first.toml",
            "[[carriers]]\ncarrier = \"aws-sms\"\nnumber = \"+16195550900\"\n\
             [[carriers]]\ncarrier = \"twilio\"\nnumber = \"+16195550000\"",
        );
        let mut extra = AWS.to_vec();
        extra.push(("RELAY_POLICY", &aws_first));
        let s = settings(&extra);
        assert_eq!(
            s.policy.carriers()[0].carrier,
            "aws-sms",
            "the file's order"
        );

        let cases = [
            (
                "[[carriers]]\ncarrier = \"aws-sms\"\nnumber = \"+16195550900\"",
                false,
                "carriers[0]: aws-sms is not configured",
            ),
            (
                "[[carriers]]\ncarrier = \"twilio\"\nnumber = \"+16195550999\"",
                false,
                "carriers[0]: twilio sends from the business line",
            ),
            (
                "[[carriers]]\ncarrier = \"aws-sms\"\nnumber = \"+16195550901\"",
                true,
                "carriers[0]: aws-sms sends from +16195550901 but QDN_AWS_SMS_NUMBER",
            ),
            (
                "[[carriers]]\ncarrier = \"telnyx\"\nnumber = \"+16195550901\"",
                false,
                "unknown carrier \"telnyx\"",
            ),
        ];
        for (i, (carriers, aws, says)) in cases.into_iter().enumerate() {
            let path = write(&format!("bad{i}.toml"), carriers);
            let mut extra = if aws { AWS.to_vec() } else { Vec::new() };
            extra.push(("RELAY_POLICY", &path));
            let e = settings_err(&extra);
            assert_eq!(e.var, "RELAY_POLICY", "{e}");
            assert!(e.message.contains(says), "{e}");
        }
    }

    #[tokio::test]
    async fn a_dispatchers_text_to_the_lines_aws_number_is_the_lines() {
        let s = settings(AWS);
        let store = Arc::new(MemoryStore::new());
        let provider = Arc::new(RecordingProvider::new());
        let relay = Wiring::new(&s, Backend::new(store.clone()), provider.clone()).build();
        let text = |sid: &str, from: &str, to: PhoneNumber, body: &str| InboundText {
            sid: sid.parse().expect("a sid"),
            from: from.parse().expect("a number"),
            to,
            body: body.into(),
            media: Vec::new(),
        };
        let Outcome::Opened(id) = relay
            .inbound(text(
                "SMa0000000000000000000000000000001",
                "+16195550100",
                s.line,
                "help",
            ))
            .await
            .expect("opened")
        else {
            panic!("opened")
        };
        let aws = s.aws_sms.as_ref().expect("aws").number;
        relay
            .inbound(text(
                "SMa0000000000000000000000000000002",
                "+16195550101",
                aws,
                "on my way",
            ))
            .await
            .expect("a dispatcher's text");
        let d = store.get(id).await.expect("get").expect("stored");
        assert!(d.ack().is_some(), "the reply to the AWS number acked");
        let to_customer = provider.accepted_to("+16195550100".parse().expect("n"));
        assert_eq!(to_customer.len(), 1, "the reply reached the customer");
        assert_eq!(
            to_customer[0].message.from, s.line,
            "from the business line"
        );
        assert_eq!(
            to_customer[0].message.routes.len(),
            1,
            "only the business line's carrier"
        );
    }

    /// A transport the test never sends through.
    #[derive(Debug)]
    struct NoTransport;

    #[async_trait::async_trait]
    impl Transport for NoTransport {
        async fn send(
            &self,
            _request: qdn_relay_transport::Request,
            _timeout: Duration,
        ) -> Result<qdn_relay_transport::Answer, qdn_relay_transport::TransportError> {
            unreachable!("building a provider sends nothing")
        }
    }
}
