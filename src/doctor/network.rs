//! The API as this device sees it: DNS, TCP, TLS, HTTP, the clock against the API's, the token, the schema.

use std::time::SystemTime;

use serde_json::json;

use crate::api::classify::{classify_gql_errors, ErrorClass};
use crate::api::{introspect, ops, Client};
use crate::config::Config;
use crate::mask::Secret;

use super::*;

pub(super) async fn api(cfg: &Config, token: Option<&Secret>, enrolled: bool) -> Vec<Check> {
    let mut out = Vec::new();
    let url = &cfg.api.url;
    let (host, port) = crate::api::host_port(url).unwrap_or_else(|| (String::new(), 443));
    // DNS
    let addrs = match timed(STEP, tokio::net::lookup_host((host.as_str(), port))).await {
        Some(Ok(a)) => a.collect::<Vec<_>>(),
        Some(Err(e)) => {
            out.push(
                check("dns", Level::Fail, format!("{host}: {e}"))
                    .fix("check the venue network's DNS, or api.url"),
            );
            return out;
        }
        None => {
            out.push(
                check(
                    "dns",
                    Level::Fail,
                    format!("{host}: no answer within {STEP:?}"),
                )
                .fix("check the network: is the cable in, is there a DHCP lease?"),
            );
            return out;
        }
    };
    let Some(addr) = addrs.first().copied() else {
        out.push(check("dns", Level::Fail, format!("{host}: no address")));
        return out;
    };
    out.push(check(
        "dns",
        Level::Ok,
        if host.parse::<std::net::IpAddr>().is_ok() {
            format!("{host} is an address (no DNS needed)")
        } else {
            format!("{host} is {}", addr.ip())
        },
    ));
    // TCP
    let t = std::time::Instant::now();
    match timed(STEP, tokio::net::TcpStream::connect(addr)).await {
        Some(Ok(_)) => out.push(check(
            "tcp",
            Level::Ok,
            format!("{addr} connects in {} ms", t.elapsed().as_millis()),
        )),
        Some(Err(e)) => {
            out.push(
                check("tcp", Level::Fail, format!("{addr}: {e}"))
                    .fix("a firewall or proxy between the door and the API? outbound TCP to that port must be open"),
            );
            return out;
        }
        None => {
            out.push(
                check(
                    "tcp",
                    Level::Fail,
                    format!("{addr}: no answer within {STEP:?}"),
                )
                .fix("outbound traffic to the API is dropped: ask the venue's network admin"),
            );
            return out;
        }
    }
    let Some(token) = token else {
        out.push(check(
            "auth",
            Level::Fail,
            "no token to ask the API with (see the token line)",
        ));
        return out;
    };
    let client = match Client::new(url.clone(), token, cfg.api.ca_file.as_deref()) {
        Ok(c) => c,
        Err(e) => {
            out.push(check("tls", Level::Fail, e).fix("check api.ca_file"));
            return out;
        }
    };
    let https = url.scheme() == "https";
    // TLS and HTTP: one cheap authenticated request.
    let probe = match timed(
        ANSWER,
        client.probe(ops::WARMUP.name, ops::WARMUP.document, json!({})),
    )
    .await
    {
        Some(Ok(p)) => p,
        Some(Err(e)) => {
            let name = if https { "tls" } else { "http" };
            out.push(check(name, Level::Fail, e.detail).fix(if https {
                "the TLS handshake failed: a proxy that intercepts TLS needs its CA in api.ca_file; check the clock too"
            } else {
                "the API did not answer HTTP"
            }));
            return out;
        }
        None => {
            out.push(
                check("http", Level::Fail, format!("no answer within {ANSWER:?}"))
                    .fix("the API accepts connections but does not answer: a proxy, or an outage at Tiketo"),
            );
            return out;
        }
    };
    if https {
        out.push(check(
            "tls",
            Level::Ok,
            match &cfg.api.ca_file {
                Some(ca) => format!(
                    "the certificate is trusted (with api.ca_file {})",
                    ca.display()
                ),
                None => "the certificate is trusted".to_owned(),
            },
        ));
    }
    let Some(resp) = &probe.response else {
        out.push(
            check(
                "http",
                Level::Fail,
                format!(
                    "HTTP {}: the answer is not GraphQL (it begins {:?})",
                    probe.status, probe.head
                ),
            )
            .fix("a captive portal or a proxy answers instead of the API: log the venue network in, or check api.url"),
        );
        return out;
    };
    out.push(check(
        "http",
        Level::Ok,
        format!(
            "{}, round trip {} ms",
            probe.version,
            probe.elapsed.as_millis()
        ),
    ));
    out.push(clock(&probe));
    // Auth
    let refused = matches!(probe.status, 401 | 403)
        || classify_gql_errors(&resp.errors) == Some(ErrorClass::Auth);
    let which = if enrolled {
        "the device token"
    } else {
        "the workspace token"
    };
    if refused {
        out.push(
            check("auth", Level::Fail, format!("the API refuses {which} (HTTP {})", probe.status)).fix(
                if enrolled {
                    "the device was removed or its token revoked in Tiketo: tiketo-gate enroll --force (with the workspace token)"
                } else {
                    "check the workspace API token in api.token_file"
                },
            ),
        );
        return out;
    }
    if !(200..300).contains(&probe.status) || !resp.errors.is_empty() {
        out.push(check(
            "auth",
            Level::Warn,
            format!(
                "HTTP {}: {}",
                probe.status,
                resp.errors
                    .first()
                    .map(|e| e.message.clone())
                    .unwrap_or_default()
            ),
        ));
    } else {
        out.push(check(
            "auth",
            Level::Ok,
            if enrolled {
                "the API takes the device token".to_owned()
            } else {
                "the API takes the workspace token (the daemon enrols at its first start)"
                    .to_owned()
            },
        ));
    }
    out.push(schema(&client).await);
    out
}

pub(super) fn clock(probe: &crate::api::Probe) -> Check {
    let synced = clock_synced();
    let skew = probe.date.map(|date| {
        // The Date header was made about half a round trip ago.
        let now = SystemTime::now() - probe.elapsed / 2;
        match now.duration_since(date) {
            Ok(ahead) => (ahead, '+'),
            Err(e) => (e.duration(), '-'),
        }
    });
    let skew_text = match skew {
        Some((d, sign)) => format!("{sign}{:.1} s against the API", d.as_secs_f64()),
        None => "the API sent no Date".to_owned(),
    };
    let level = skew.map(|(d, _)| skew_level(d)).unwrap_or(Level::Warn);
    let sync_text = match &synced {
        Some(by) => format!("synced ({by})"),
        None => "NOT synced".to_owned(),
    };
    let c = check(
        "clock",
        if synced.is_none() && level == Level::Ok {
            Level::Warn
        } else {
            level
        },
        format!("{skew_text}; {sync_text}"),
    );
    match (c.status, synced) {
        (Level::Ok, _) => c,
        (_, None) => c.fix("timedatectl set-ntp true (or start chrony); pass expiry and offline decisions use this clock"),
        (_, Some(_)) => c.fix("the clock is off although synced: check the NTP servers"),
    }
}

/// Who keeps the clock synced, if it is: the kernel's word (any NTP daemon), timesyncd's
/// file, or chrony.
pub(super) fn clock_synced() -> Option<&'static str> {
    match crate::clock::sync_source() {
        Some(crate::clock::SyncSource::Kernel) => {
            return Some("the kernel: an NTP daemon disciplines it")
        }
        Some(crate::clock::SyncSource::Timesyncd) => return Some("systemd-timesyncd"),
        None => {}
    }
    let out = std::process::Command::new("chronyc")
        .args(["-n", "tracking"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .ok()?;
    let text = String::from_utf8_lossy(&out.stdout);
    (out.status.success() && text.contains("Leap status     : Normal")).then_some("chrony")
}

pub(super) async fn schema(client: &Client) -> Check {
    let resp = match timed(
        ANSWER,
        client.execute("Introspection", introspect::QUERY, json!({})),
    )
    .await
    {
        Some(Ok(r)) => r,
        Some(Err(e)) => {
            return check("schema", Level::Warn, format!("skipped: {e}"));
        }
        None => {
            return check(
                "schema",
                Level::Warn,
                format!("skipped: no answer within {ANSWER:?}"),
            )
        }
    };
    let Some(data) = resp
        .data
        .filter(|d| d.get("__schema").is_some_and(|s| !s.is_null()))
    else {
        return check(
            "schema",
            Level::Warn,
            match resp.errors.first() {
                Some(e) if classify_gql_errors(&resp.errors) == Some(ErrorClass::Mismatch) => {
                    format!(
                        "skipped: the server does not answer introspection ({})",
                        e.message
                    )
                }
                Some(e) => format!("skipped: {}", e.message),
                None => "skipped: the server's answer has no schema".to_owned(),
            },
        );
    };
    let sdl = match introspect::sdl_from_introspection(&data) {
        Ok(s) => s,
        Err(e) => {
            return check(
                "schema",
                Level::Fail,
                format!("the server's schema cannot be read: {e}"),
            )
        }
    };
    let schema = match introspect::schema(&sdl) {
        Ok(s) => s,
        Err(e) => return check("schema", Level::Fail, e),
    };
    let sent = crate::api::documents_sent();
    let breaks = introspect::check(&schema, &sent);
    if breaks.is_empty() {
        return check(
            "schema",
            Level::Ok,
            format!(
                "every document the daemon sends fits the live schema ({} operations)",
                sent.len()
            ),
        );
    }
    let text: Vec<String> = breaks
        .iter()
        .map(|b| format!("{}: {}", b.operation, b.problem))
        .collect();
    check("schema", Level::Fail, text.join("; ")).fix(
        "Tiketo's API changed: update tiketo-gate (or ask Tiketo); meanwhile the daemon raises API MISMATCH, decides by the offline policy and keeps every scan",
    )
}
