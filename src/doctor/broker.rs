//! The broker line (`[mqtt]`): connects as the door's user (another client id, no will: a
//! running daemon stays connected), reads the door's retained status, publishes to the status
//! topic and reads it back, subscribes to the command topic. A wrong password, a denied topic
//! or no broker is ✗ with the fix. And the command key, when commands are on.

use std::time::{Duration, Instant};

use rumqttc::v5::mqttbytes::v5::{ConnectReturnCode, Packet, PubAckReason, SubscribeReasonCode};
use rumqttc::v5::mqttbytes::QoS;
use rumqttc::v5::{AsyncClient, ConnectionError, Event};

use super::{check, Check, Level, STEP};
use crate::config::{Config, MqttConfig};
use crate::mqtt::state::Topics;

/// Every check of `[mqtt]` (none without it).
pub async fn broker(cfg: &Config) -> Vec<Check> {
    let Some(m) = &cfg.mqtt else {
        return Vec::new();
    };
    let mut out = vec![probe(m).await];
    if let Some(p) = &m.command_key_file {
        out.push(match crate::mqtt::link::read_command_key(p) {
            Ok(_) => {
                let mode = std::fs::metadata(p)
                    .map(|md| std::os::unix::fs::PermissionsExt::mode(&md.permissions()))
                    .unwrap_or(0);
                let c = check(
                    "mqtt commands",
                    super::secret_mode_level(mode),
                    format!("signed commands on {}/cmd (key {})", m.topic, p.display()),
                );
                if c.status == Level::Ok {
                    c
                } else {
                    c.fix(format!(
                        "chmod 640 {}: whoever reads the key can open the door",
                        p.display()
                    ))
                }
            }
            Err(e) => check("mqtt commands", Level::Fail, e).fix(
                "openssl rand -hex 32 > the file (the same key signs the commands); chmod 640",
            ),
        });
    }
    if let Some(v) = &m.venue {
        out.push(venue(m, v).await);
    }
    if m.home_assistant_commands {
        out.push(
            check(
                "home assistant",
                Level::Warn,
                format!("plain OPEN/UNLOCK/LOCK on {}/ha/<reader>/lock are obeyed: the broker's ACL is the only check", m.topic),
            )
            .fix("make sure only Home Assistant's user may write there (docs/config.md shows the ACL)"),
        );
    }
    out
}

/// Connects as the door's user with another client id (`<client_id>-<suffix>`) and no will.
async fn connect(
    name: &str,
    m: &MqttConfig,
    suffix: &str,
    deadline: Instant,
) -> Result<(AsyncClient, rumqttc::v5::EventLoop), Check> {
    let id = format!("{}-{suffix}", &m.client_id[..m.client_id.len().min(16)]);
    let mut opts = match crate::mqtt::link::options_without_will(m, &id) {
        Ok(o) => o,
        Err(e) => return Err(check(name, Level::Fail, e).fix("fix the file named above")),
    };
    opts.set_max_packet_size(Some(256 * 1024));
    let (client, mut events) = AsyncClient::new(opts, 16);
    let broker = m.broker();
    let user = m.username.as_deref().unwrap_or("(anonymous)");
    let fail = |msg: String, fix: &str| Err(check(name, Level::Fail, msg).fix(fix.to_owned()));
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left.max(Duration::from_millis(1)), events.poll()).await {
            Err(_) => {
                return fail(
                    format!("{broker}: no answer within {} s", (STEP * 3).as_secs()),
                    "is the broker running, and this port open to the door? (a firewall, the wrong port, TLS on a plain port)",
                )
            }
            Ok(Ok(Event::Incoming(Packet::ConnAck(_)))) => return Ok((client, events)),
            Ok(Ok(_)) => {}
            Ok(Err(ConnectionError::ConnectionRefused(code))) => {
                let fix = match code {
                    ConnectReturnCode::BadUserNamePassword | ConnectReturnCode::NotAuthorized => {
                        "check mqtt.username and the password in mqtt.password_file (mosquitto_passwd sets it on the broker)"
                    }
                    ConnectReturnCode::ClientIdentifierNotValid => "mqtt.client_id: the broker refuses it",
                    _ => "see the broker's log",
                };
                return fail(format!("{broker} refused {user}: {code:?}"), fix);
            }
            Ok(Err(e)) => {
                return fail(
                    format!("{broker}: {e}"),
                    "is the broker running and reachable? (mqtts: is its certificate signed by mqtt.ca_file or the system's roots?)",
                )
            }
        }
    }
}

/// The venue line (`mqtt.venue`): the key read, the venue's topics subscribed to as the door's
/// user, the retained records and presences opened with the key. Messages sealed with another
/// venue key are ✗ (a door set up with the wrong key decides alone).
async fn venue(m: &MqttConfig, v: &crate::config::VenueConfig) -> Check {
    let name = "venue";
    let key = match crate::venue::read_key(&v.key_file) {
        Ok(k) => std::sync::Arc::new(k),
        Err(e) => {
            return check(name, Level::Fail, e).fix(
                "the same secret on every door of the venue: openssl rand -hex 32 > the file on one, copy it to the others; chmod 640",
            )
        }
    };
    let deadline = Instant::now() + STEP * 3;
    let (client, mut events) = match connect(name, m, "doctor-venue", deadline).await {
        Ok(c) => c,
        Err(c) => return c,
    };
    let mut topics = crate::mqtt::venue::VenueTopics::new(key.clone(), &v.topic, "-doctor-", 0);
    let user = m.username.as_deref().unwrap_or("(anonymous)");
    let _ = client.try_subscribe_many(
        topics
            .filters()
            .map(|f| rumqttc::v5::mqttbytes::v5::Filter::new(f, QoS::AtMostOnce)),
    );
    let (mut passes, mut foreign, mut damaged) = (0u32, 0u32, 0u32);
    // Retained messages come right after the SUBACK; then a quiet moment ends the count.
    let mut quiet_until: Option<Instant> = None;
    loop {
        let until = quiet_until.map_or(deadline, |q| q.min(deadline));
        let left = until.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, events.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                return check(name, Level::Fail, format!("the connection ended: {e}"))
                    .fix("see the broker's log")
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(a)) => {
                if let Some(bad) = a
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    return check(
                        name,
                        Level::Fail,
                        format!("{user} may not subscribe to {}/# ({bad:?})", v.topic),
                    )
                    .fix("the broker's ACL: every door of the venue reads and writes the venue's tree (docs/config.md shows one)");
                }
                quiet_until = Some(Instant::now() + Duration::from_millis(700));
            }
            Event::Incoming(Packet::Publish(p)) => {
                quiet_until = Some(Instant::now() + Duration::from_millis(700));
                let topic = String::from_utf8_lossy(&p.topic).into_owned();
                match topics.incoming(&topic, &p.payload) {
                    crate::mqtt::venue::Incoming::Record { .. } => passes += 1,
                    crate::mqtt::venue::Incoming::Foreign => foreign += 1,
                    crate::mqtt::venue::Incoming::Damaged(_) => damaged += 1,
                    _ => {}
                }
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    let doors = topics.doors(crate::clock::now_ms());
    let doors = if doors.is_empty() {
        "none".to_owned()
    } else {
        doors.join(", ")
    };
    if foreign > 0 {
        return check(
            name,
            Level::Fail,
            format!(
                "{foreign} message(s) on {} are sealed with another venue key (this door's key id is {}): this door ignores them and decides alone",
                v.topic,
                key.id()
            ),
        )
        .fix("use the same mqtt.venue_key_file content on every door of the venue (or another mqtt.venue for another venue)");
    }
    let c = check(
        name,
        if damaged > 0 { Level::Warn } else { Level::Ok },
        format!(
            "{}: {passes} pass record(s) on the broker open with this door's key (id {}); doors there: {doors}{}",
            v.topic,
            key.id(),
            if damaged > 0 {
                format!("; {damaged} message(s) are not venue records")
            } else {
                String::new()
            }
        ),
    );
    if damaged > 0 {
        c.fix("only the venue's doors should write under mqtt.venue (the broker's ACL)")
    } else {
        c
    }
}

async fn probe(m: &MqttConfig) -> Check {
    let name = "mqtt broker";
    let topics = Topics::new(&m.topic);
    let start = Instant::now();
    let deadline = start + STEP * 3;
    let (client, mut events) = match connect(name, m, "doctor", deadline).await {
        Ok(c) => c,
        Err(c) => return c,
    };
    let broker = m.broker();
    let user = m.username.as_deref().unwrap_or("(anonymous)");
    let fail = |msg: String, fix: &str| check(name, Level::Fail, msg).fix(fix.to_owned());
    // 2. Subscribe to the status (its retained value: the daemon's) and the command topic.
    let _ = client.try_subscribe(topics.status.clone(), QoS::AtLeastOnce);
    let _ = client.try_subscribe(topics.cmd.clone(), QoS::AtLeastOnce);
    let mut subacks = 0;
    let mut retained: Option<String> = None;
    let mut published = false;
    let mut acked = false;
    let mut echoed = false;
    while Instant::now() < deadline && !(acked && echoed) {
        let left = deadline.saturating_duration_since(Instant::now());
        let ev = match tokio::time::timeout(left, events.poll()).await {
            Err(_) => break,
            Ok(Err(e)) => {
                return fail(
                    format!("{broker}: the connection ended: {e}"),
                    "see the broker's log",
                )
            }
            Ok(Ok(ev)) => ev,
        };
        match ev {
            Event::Incoming(Packet::SubAck(a)) => {
                subacks += 1;
                if let Some(bad) = a
                    .return_codes
                    .iter()
                    .find(|c| !matches!(c, SubscribeReasonCode::Success(_)))
                {
                    let which = if subacks == 1 {
                        &topics.status
                    } else {
                        &topics.cmd
                    };
                    return fail(
                        format!("{user} may not subscribe to {which} ({bad:?})"),
                        "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
                    );
                }
                if subacks == 2 && !published {
                    // The status as it is (a non-retained copy: nothing changes for others).
                    let body = retained.clone().unwrap_or_else(|| "offline".into());
                    let _ =
                        client.try_publish(topics.status.clone(), QoS::AtLeastOnce, false, body);
                    published = true;
                }
            }
            Event::Incoming(Packet::Publish(p)) if p.topic.as_ref() == topics.status.as_bytes() => {
                let body = String::from_utf8_lossy(&p.payload).into_owned();
                if p.retain && retained.is_none() && !published {
                    retained = Some(body);
                } else if published {
                    echoed = true;
                }
            }
            Event::Incoming(Packet::PubAck(a)) => {
                if !matches!(
                    a.reason,
                    PubAckReason::Success | PubAckReason::NoMatchingSubscribers
                ) {
                    return fail(
                        format!("{user} may not publish to {} ({:?})", topics.status, a.reason),
                        "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
                    );
                }
                acked = true;
            }
            _ => {}
        }
    }
    let _ = client.try_disconnect();
    let _ = tokio::time::timeout(Duration::from_millis(300), events.poll()).await;
    if !(acked && echoed) {
        return fail(
            format!("{broker}: connected as {user}, but the status topic's message did not come back"),
            "the broker's ACL: the door's user reads and writes its own tree (docs/config.md shows one)",
        );
    }
    let daemon = match retained.as_deref() {
        Some("online") => "the daemon is online there",
        Some("offline") => "the daemon says offline there",
        _ => "no daemon has connected yet",
    };
    check(
        name,
        Level::Ok,
        format!(
            "{broker} as {user}: publishes and reads {}, subscribes to {} ({} ms); {daemon}",
            topics.status,
            topics.cmd,
            start.elapsed().as_millis()
        ),
    )
}
