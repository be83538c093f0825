//! `qdn-relay inject` and `qdn-relay status`: talk to a running relay the
//! way Twilio and a dashboard do.

use anyhow::{Context as _, anyhow, bail};
use clap::{Args, Subcommand};
use qdn_relay_core::PhoneNumber;
use qdn_relay_twilio::{Secret, SignatureValidator};
use serde_json::Value;

use crate::dev::DevFile;
use crate::{StatusArgs, Target};

#[derive(Args, Debug)]
pub struct InjectArgs {
    #[command(subcommand)]
    what: Inject,
    #[command(flatten)]
    target: Target,
    /// The Auth Token to sign with (default: the dev file's).
    #[arg(long, env = "TWILIO_AUTH_TOKEN", hide_env_values = true, global = true)]
    auth_token: Option<String>,
}

#[derive(Subcommand, Debug)]
enum Inject {
    /// A text to the business line (from a customer, or from a dispatcher).
    Text {
        /// The sender (default: a sample customer, +16195550100).
        #[arg(long, default_value = "+16195550100")]
        from: String,
        /// The business line (default: the dev file's).
        #[arg(long)]
        to: Option<String>,
        /// The text.
        #[arg(long)]
        body: String,
        /// The MessageSid (default: a fresh one; repeat one to simulate a retried webhook).
        #[arg(long)]
        sid: Option<String>,
    },
    /// A dispatcher's text on the reply webhook (/sms/reply).
    Reply {
        /// The dispatcher (default: the chain's first number).
        #[arg(long)]
        from: Option<String>,
        /// The business line (default: the dev file's).
        #[arg(long)]
        to: Option<String>,
        /// The text (`#K7 on my way`, `ACK`, `PASS`, `DONE`, …).
        #[arg(long)]
        body: String,
    },
    /// A status callback for a message the relay sent.
    Status {
        /// The outbound message's sid (see `qdn-relay status <job>`).
        #[arg(long)]
        sid: String,
        /// queued, sent, delivered, undelivered, failed, …
        #[arg(long)]
        status: String,
        /// Twilio's ErrorCode (e.g. 30003).
        #[arg(long)]
        error_code: Option<u32>,
    },
}

struct Resolved {
    url: String,
    signed_base: String,
    token: Option<String>,
    dev: Option<DevFile>,
}

fn resolve(target: &Target) -> anyhow::Result<Resolved> {
    let dev = DevFile::read(&target.dev_file)?;
    let url = target
        .url
        .clone()
        .or_else(|| dev.as_ref().map(|d| d.url.clone()))
        .unwrap_or_else(|| "http://127.0.0.1:8080".to_owned())
        .trim_end_matches('/')
        .to_owned();
    let signed_base = dev
        .as_ref()
        .and_then(|d| d.public_url.clone())
        .unwrap_or_else(|| url.clone())
        .trim_end_matches('/')
        .to_owned();
    Ok(Resolved {
        url,
        signed_base,
        token: None,
        dev,
    })
}

fn sid() -> String {
    let mut rng = fastrand::Rng::new();
    format!("SM{:016x}{:016x}", rng.u64(..), rng.u64(..))
}

fn number(what: &str, s: &str) -> anyhow::Result<String> {
    let n: PhoneNumber = s.parse().map_err(|e| anyhow!("{what}: {e}"))?;
    Ok(n.to_string())
}

pub async fn run(a: InjectArgs) -> anyhow::Result<()> {
    let mut r = resolve(&a.target)?;
    r.token = a
        .auth_token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| r.dev.as_ref().and_then(|d| d.auth_token.clone()));
    let token = r.token.clone().ok_or_else(|| {
        anyhow!("no token to sign with: set TWILIO_AUTH_TOKEN or start `qdn-relay serve` in dry-run here (it writes {})", a.target.dev_file.display())
    })?;
    let line = |to: &Option<String>| -> anyhow::Result<String> {
        match to
            .clone()
            .or_else(|| r.dev.as_ref().map(|d| d.line.clone()))
        {
            Some(t) => number("--to", &t),
            None => bail!("--to is required (no dev file with the business line)"),
        }
    };
    let account = std::env::var("TWILIO_ACCOUNT_SID")
        .ok()
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "AC00000000000000000000000000000000".to_owned());
    let (path, params): (&str, Vec<(String, String)>) = match &a.what {
        Inject::Text {
            from,
            to,
            body,
            sid: given,
        } => {
            let s = given.clone().unwrap_or_else(sid);
            let p = vec![
                ("MessageSid", s.clone()),
                ("SmsMessageSid", s),
                ("AccountSid", account),
                ("From", number("--from", from)?),
                ("To", line(to)?),
                ("Body", body.clone()),
                ("NumMedia", "0".to_owned()),
                ("NumSegments", "1".to_owned()),
            ];
            (
                "/sms/inbound",
                p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            )
        }
        Inject::Reply { from, to, body } => {
            let from = match from
                .clone()
                .or_else(|| r.dev.as_ref().and_then(|d| d.chain.first().cloned()))
            {
                Some(f) => number("--from", &f)?,
                None => bail!("--from is required (no dev file with the chain)"),
            };
            let s = sid();
            let p = vec![
                ("MessageSid", s.clone()),
                ("SmsMessageSid", s),
                ("AccountSid", account),
                ("From", from),
                ("To", line(to)?),
                ("Body", body.clone()),
                ("NumMedia", "0".to_owned()),
            ];
            (
                "/sms/reply",
                p.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            )
        }
        Inject::Status {
            sid,
            status,
            error_code,
        } => {
            let mut p = vec![
                ("MessageSid".to_owned(), sid.clone()),
                ("SmsSid".to_owned(), sid.clone()),
                ("AccountSid".to_owned(), account),
                ("MessageStatus".to_owned(), status.clone()),
                ("SmsStatus".to_owned(), status.clone()),
            ];
            if let Some(code) = error_code {
                p.push(("ErrorCode".to_owned(), code.to_string()));
            }
            ("/sms/status", p)
        }
    };
    let signed_url = format!("{}{path}", r.signed_base);
    let signature = SignatureValidator::new(Secret::new(token)).sign_form(&signed_url, &params);
    let res = reqwest::Client::new()
        .post(format!("{}{path}", r.url))
        .header("X-Twilio-Signature", signature)
        .form(&params)
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {}", r.url))?;
    let status = res.status();
    let body = res.text().await.unwrap_or_default();
    println!("POST {path} → {status}");
    if !body.trim().is_empty() {
        println!("{body}");
    }
    if !status.is_success() {
        bail!("the relay answered {status}");
    }
    Ok(())
}

pub async fn status(a: StatusArgs) -> anyhow::Result<()> {
    let r = resolve(&a.target)?;
    let token = a
        .token
        .clone()
        .filter(|t| !t.is_empty())
        .or_else(|| r.dev.as_ref().and_then(|d| d.dashboard_token.clone()))
        .ok_or_else(|| anyhow!("no dashboard token: set RELAY_DASHBOARD_TOKEN or --token"))?;
    let res = reqwest::Client::new()
        .get(format!("{}/sms/dispatch-status/{}", r.url, a.job))
        .bearer_auth(token)
        .send()
        .await
        .with_context(|| format!("cannot reach the relay at {}", r.url))?;
    let code = res.status();
    let body = res.text().await.unwrap_or_default();
    if !code.is_success() {
        bail!("the relay answered {code}: {body}");
    }
    let v: Value = serde_json::from_str(&body).context("the relay's answer is not JSON")?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&v)?);
        return Ok(());
    }
    print!("{}", summary(&v));
    Ok(())
}

/// A readable view of a status JSON.
fn summary(v: &Value) -> String {
    let s = |k: &str| v[k].as_str().unwrap_or("-").to_owned();
    let mut out = format!(
        "dispatch #{} ({})\n  customer        {}\n  first text      {:?}\n  final_status    {}\n  state           {} (round {}, level {})\n  primary at      {}\n  backup at       {}\n  primary ack at  {}\n  next deadline   {}\n",
        s("tag"),
        s("dispatch_id"),
        s("customer_phone"),
        s("body"),
        s("final_status"),
        s("state"),
        v["round"],
        v["level"],
        s("forwarded_to_primary_at"),
        s("forwarded_to_backup_at"),
        s("primary_ack_at"),
        s("next_deadline"),
    );
    out.push_str("  texts sent:\n");
    for leg in v["legs"].as_array().into_iter().flatten() {
        out.push_str(&format!(
            "    #{} {} → {} [{}] {} {}\n",
            leg["index"],
            leg["purpose"]["kind"].as_str().unwrap_or("?"),
            leg["to"].as_str().unwrap_or("?"),
            leg["status"].as_str().unwrap_or("?"),
            leg["sid"].as_str().unwrap_or("(no sid)"),
            leg["error_code"]
                .as_u64()
                .map(|c| format!("error {c}"))
                .unwrap_or_default(),
        ));
    }
    out
}
