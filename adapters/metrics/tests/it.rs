//! The catalogue, the mapping from events, both renderings, and the
//! Grafana dashboard built on the names.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use qdn_relay_core::{
    Actor, DispatchId, EventKind, EventSink, RelayEvent, SendErrorKind, SweepReport, Tag, Timestamp,
};
use qdn_relay_metrics::{
    CATALOGUE, EmfSink, Metrics, MetricsSink, Observation, emf_line, observations,
    sweep_observations, webhook_observations,
};

const T0: Timestamp = Timestamp::from_millis(1_767_603_600_000);

fn event(kind: EventKind, at: Timestamp) -> RelayEvent {
    // An id created at T0 (its creation time is its top 48 bits).
    let dispatch = DispatchId::from_u128((T0.as_millis() as u128) << 80 | 7);
    RelayEvent {
        at,
        dispatch,
        tag: "K7".parse::<Tag>().expect("tag"),
        kind,
    }
}

fn exported() -> BTreeSet<String> {
    CATALOGUE.iter().flat_map(|d| d.exported()).collect()
}

fn line<'a>(text: &'a str, prefix: &str) -> &'a str {
    text.lines()
        .find(|l| l.starts_with(prefix))
        .unwrap_or_else(|| panic!("no line {prefix}:\n{text}"))
}

#[test]
fn every_metric_of_the_catalogue_is_rendered_with_its_help() {
    let m = Metrics::new();
    let fresh = m.render();
    for def in CATALOGUE.iter().filter(|d| d.labels.is_empty()) {
        for name in def.exported() {
            assert!(fresh.contains(&name), "{name} missing at start:\n{fresh}");
        }
    }
    for def in CATALOGUE {
        let labels: Vec<&str> = def.labels.iter().map(|_| "x").collect();
        m.record(&Observation::new(def, &labels, 1.0));
    }
    let text = m.render();
    for def in CATALOGUE {
        for name in def.exported() {
            assert!(text.contains(&name), "{name} missing:\n{text}");
        }
        assert!(
            text.contains(&format!("# HELP {} ", def.name)),
            "{} missing:\n{text}",
            def.name
        );
    }
    let names: BTreeSet<&str> = CATALOGUE.iter().map(|d| d.name).collect();
    assert_eq!(names.len(), CATALOGUE.len(), "names are unique");
}

#[tokio::test]
async fn events_are_counted_with_their_labels() {
    let m = Arc::new(Metrics::new());
    let sink = MetricsSink::new(Arc::clone(&m), "twilio");
    let at = T0.plus(Duration::from_secs(90));
    for kind in [
        EventKind::Sent {
            leg: 0,
            sid: "SM0123456789abcdef0123456789abcdef".parse().expect("sid"),
            via: None,
            purpose: Some(qdn_relay_core::Purpose::Forward { round: 0, level: 0 }),
        },
        EventKind::SendFailed {
            leg: 1,
            kind: SendErrorKind::Unreachable,
            code: Some(21614),
            will_retry: false,
            purpose: Some(qdn_relay_core::Purpose::Reply),
        },
        EventKind::Escalated {
            from_level: 0,
            reason: qdn_relay_core::EscalationReason::Timeout,
            by: None,
        },
        EventKind::Acked {
            by: Actor::Phone("+16195550101".parse().expect("number")),
            level: Some(1),
        },
    ] {
        sink.publish(&event(kind, at)).await.expect("published");
    }
    let text = m.render();
    assert!(line(&text, "qdn_relay_texts_total{").contains("carrier=\"twilio\""));
    assert!(
        text.contains(
            "qdn_relay_texts_total{carrier=\"twilio\",purpose=\"forward\",outcome=\"accepted\"} 1"
        ),
        "{text}"
    );
    assert!(
        text.contains(
            "qdn_relay_texts_total{carrier=\"twilio\",purpose=\"reply\",outcome=\"unreachable\"} 1"
        ),
        "{text}"
    );
    assert!(text.contains(
        "qdn_relay_provider_errors_total{carrier=\"twilio\",stage=\"send\",class=\"unreachable\",code=\"21614\"} 1"
    ), "{text}");
    assert!(
        text.contains("qdn_relay_escalations_total{level=\"0\",reason=\"timeout\"} 1"),
        "{text}"
    );
    assert!(
        text.contains("qdn_relay_acks_total{kind=\"text\",level=\"1\"} 1"),
        "{text}"
    );
    // 90 s from the opening to the ack: in the 120 s bucket, not the 60 s one.
    assert!(
        text.contains("qdn_relay_time_to_ack_seconds_sum{kind=\"text\"} 90.0"),
        "{text}"
    );
    assert!(
        text.contains("qdn_relay_time_to_ack_seconds_bucket{le=\"60.0\",kind=\"text\"} 0"),
        "{text}"
    );
    assert!(
        text.contains("qdn_relay_time_to_ack_seconds_bucket{le=\"120.0\",kind=\"text\"} 1"),
        "{text}"
    );
}

#[test]
fn a_sweep_and_webhooks_are_observed() {
    let m = Metrics::new();
    let report = SweepReport {
        fired: 2,
        lateness: vec![Duration::from_millis(3), Duration::from_millis(70)],
        ..SweepReport::default()
    };
    m.record_all(&sweep_observations(&report));
    m.record_all(&webhook_observations(
        "inbound",
        false,
        "signature",
        Duration::from_millis(2),
    ));
    let text = m.render();
    assert!(
        text.contains("qdn_relay_escalation_lateness_seconds_count 2"),
        "{text}"
    );
    assert!(
        text.contains("qdn_relay_escalation_lateness_seconds_bucket{le=\"0.05\"} 1"),
        "one of two within 50 ms: {text}"
    );
    assert!(
        text.contains(
            "qdn_relay_webhooks_total{route=\"inbound\",result=\"refused\",reason=\"signature\"} 1"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn emf_lines_carry_the_metric_its_dimensions_and_value() {
    let lines = Arc::new(Mutex::new(Vec::<String>::new()));
    let out = Arc::clone(&lines);
    let sink = EmfSink::new(
        "aws-sms",
        Arc::new(move |l: &str| out.lock().expect("lock").push(l.to_owned())),
    );
    let at = T0.plus(Duration::from_secs(30));
    sink.publish(&event(
        EventKind::Escalated {
            from_level: 2,
            reason: qdn_relay_core::EscalationReason::Pass,
            by: None,
        },
        at,
    ))
    .await
    .expect("published");
    let lines = lines.lock().expect("lock").clone();
    assert_eq!(lines.len(), 1, "{lines:?}");
    let v: serde_json::Value = serde_json::from_str(&lines[0]).expect("one JSON object");
    let cw = &v["_aws"]["CloudWatchMetrics"][0];
    assert_eq!(v["_aws"]["Timestamp"], at.as_millis());
    assert_eq!(cw["Namespace"], "qdn-relay");
    assert_eq!(cw["Dimensions"][0], serde_json::json!(["level", "reason"]));
    assert_eq!(cw["Metrics"][0]["Name"], "qdn_relay_escalations_total");
    assert_eq!(v["level"], "2");
    assert_eq!(v["reason"], "pass");
    assert_eq!(v["qdn_relay_escalations_total"], 1.0);
    // The same observations as the Prometheus side: one mapping.
    let obs = observations(
        &event(
            EventKind::Escalated {
                from_level: 2,
                reason: qdn_relay_core::EscalationReason::Pass,
                by: None,
            },
            at,
        ),
        "aws-sms",
    );
    assert_eq!(emf_line(&obs[0], "qdn-relay", at), lines[0]);
}

/// Every metric the Grafana dashboard queries exists (and the dashboard
/// uses every metric of the catalogue).
#[test]
fn the_grafana_dashboard_only_references_metrics_that_exist() {
    let json = include_str!("../../../infra/grafana-dashboard.json");
    let d: serde_json::Value = serde_json::from_str(json).expect("dashboard JSON");
    let exported = exported();
    let mut used = BTreeSet::new();
    for panel in d["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            let expr = target["expr"].as_str().expect("expr");
            let mut rest = expr;
            while let Some(i) = rest.find("qdn_relay_") {
                let name: String = rest[i..]
                    .chars()
                    .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                    .collect();
                assert!(
                    exported.contains(&name),
                    "panel {:?} queries {name}, which the relay does not export",
                    panel["title"]
                );
                used.insert(
                    CATALOGUE
                        .iter()
                        .find(|d| d.exported().contains(&name))
                        .map(|d| d.name)
                        .expect("found"),
                );
                rest = &rest[i + name.len()..];
            }
        }
    }
    let unused: Vec<&str> = CATALOGUE
        .iter()
        .map(|d| d.name)
        .filter(|n| !used.contains(n))
        .collect();
    assert!(unused.is_empty(), "not on the dashboard: {unused:?}");
}
