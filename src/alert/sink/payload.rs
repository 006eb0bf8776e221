//! JSON bodies: Alertmanager's API v2 (`POST /api/v2/alerts`) and Alertmanager's webhook
//! format (version 4), so receivers written for Alertmanager work with pgvigil unchanged.

use std::time::SystemTime;

use serde_json::{Value, json};

use super::Notification;
use crate::alert::state::Labels;

/// Alertmanager's "zero time", used in webhook bodies as the end of a firing alert.
const ZERO_TIME: &str = "0001-01-01T00:00:00Z";

/// RFC 3339 with milliseconds, as Alertmanager writes it.
pub fn rfc3339(t: SystemTime) -> String {
    humantime::format_rfc3339_millis(t).to_string()
}

/// A stable id of a label set (FNV-1a over the sorted pairs), like Alertmanager's fingerprint.
pub fn fingerprint(labels: &Labels) -> String {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for (k, v) in labels {
        for byte in k.bytes().chain([0xff]).chain(v.bytes()).chain([0xff]) {
            hash ^= u64::from(byte);
            hash = hash.wrapping_mul(0x0000_0100_0000_01b3);
        }
    }
    format!("{hash:016x}")
}

/// `POST /api/v2/alerts`: a firing alert carries `endsAt` in the near future (re-sent before
/// then), a resolved one its resolution time.
pub fn alertmanager_v2(batch: &[&Notification]) -> Value {
    Value::Array(
        batch
            .iter()
            .map(|n| {
                let mut alert = json!({
                    "labels": n.labels,
                    "annotations": n.annotations,
                    "startsAt": rfc3339(n.starts_at),
                    "endsAt": rfc3339(n.resolved_at.unwrap_or(n.valid_until)),
                });
                if let Some(url) = &n.generator_url {
                    alert["generatorURL"] = Value::String(url.clone());
                }
                alert
            })
            .collect(),
    )
}

/// One webhook body for alerts of one status (all firing, or all resolved).
pub fn webhook(batch: &[&Notification], external_url: Option<&str>) -> Value {
    let status = if batch.iter().all(|n| n.is_resolved()) {
        "resolved"
    } else {
        "firing"
    };
    let alerts: Vec<Value> = batch
        .iter()
        .map(|n| {
            json!({
                "status": if n.is_resolved() { "resolved" } else { "firing" },
                "labels": n.labels,
                "annotations": n.annotations,
                "startsAt": rfc3339(n.starts_at),
                "endsAt": n.resolved_at.map(rfc3339).unwrap_or_else(|| ZERO_TIME.to_owned()),
                "generatorURL": n.generator_url.clone().unwrap_or_default(),
                "fingerprint": fingerprint(&n.labels),
            })
        })
        .collect();
    let common_labels = common(batch.iter().map(|n| &n.labels));
    let common_annotations = common(batch.iter().map(|n| &n.annotations));
    let group_labels: Labels = common_labels
        .get("alertname")
        .map(|a| [("alertname".to_owned(), a.clone())].into())
        .unwrap_or_default();
    json!({
        "version": "4",
        "groupKey": format!("{{}}:{{alertname={:?}}}", group_labels.get("alertname").map_or("", String::as_str)),
        "truncatedAlerts": 0,
        "status": status,
        "receiver": "pgvigil",
        "groupLabels": group_labels,
        "commonLabels": common_labels,
        "commonAnnotations": common_annotations,
        "externalURL": external_url.unwrap_or_default(),
        "alerts": alerts,
    })
}

/// The pairs every map shares.
fn common<'a>(mut maps: impl Iterator<Item = &'a Labels>) -> Labels {
    let Some(first) = maps.next() else {
        return Labels::new();
    };
    let mut shared = first.clone();
    for m in maps {
        shared.retain(|k, v| m.get(k) == Some(v));
    }
    shared
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    fn notification(datname: &str, resolved: bool) -> Notification {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        Notification {
            labels: [
                ("alertname", "IdleInTransaction"),
                ("severity", "warning"),
                ("datname", datname),
            ]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v.to_owned()))
            .collect(),
            annotations: [("summary".to_owned(), "s".to_owned())].into(),
            starts_at: t,
            resolved_at: resolved.then_some(t + Duration::from_secs(60)),
            valid_until: t + Duration::from_secs(1200),
            generator_url: None,
        }
    }

    #[test]
    fn alertmanager_times() {
        let firing = notification("shop", false);
        let resolved = notification("crm", true);
        let v = alertmanager_v2(&[&firing, &resolved]);
        assert_eq!(v[0]["startsAt"], "2023-11-14T22:13:20.000Z");
        assert_eq!(v[0]["endsAt"], "2023-11-14T22:33:20.000Z");
        assert_eq!(v[1]["endsAt"], "2023-11-14T22:14:20.000Z");
        assert_eq!(v[0]["labels"]["datname"], "shop");
        assert!(v[0].get("generatorURL").is_none());
    }

    #[test]
    fn webhook_shape() {
        let a = notification("shop", true);
        let b = notification("crm", true);
        let v = webhook(&[&a, &b], Some("http://pgvigil:9961"));
        assert_eq!(v["version"], "4");
        assert_eq!(v["status"], "resolved");
        assert_eq!(v["commonLabels"]["alertname"], "IdleInTransaction");
        assert!(v["commonLabels"].get("datname").is_none());
        assert_eq!(v["groupLabels"]["alertname"], "IdleInTransaction");
        assert_eq!(v["alerts"][1]["status"], "resolved");
        assert_ne!(v["alerts"][0]["fingerprint"], v["alerts"][1]["fingerprint"]);
        let firing = notification("shop", false);
        assert_eq!(webhook(&[&firing], None)["alerts"][0]["endsAt"], ZERO_TIME);
    }
}
