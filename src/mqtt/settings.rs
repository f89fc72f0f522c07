//! The `[mqtt]` table's rules (pure): the broker's url, a client id, a topic prefix.

/// `mqtt://host[:port]` or `mqtts://host[:port]` -> (tls, host, port).
pub fn parse_url(url: &str) -> Result<(bool, String, u16), String> {
    let u = url::Url::parse(url).map_err(|e| format!("{url:?} is not a url: {e}"))?;
    let tls = match u.scheme() {
        "mqtt" => false,
        "mqtts" => true,
        other => {
            return Err(format!(
                "{other}:// is not a broker url: mqtt://host:1883 or mqtts://host:8883"
            ))
        }
    };
    let host = match u.host() {
        Some(url::Host::Domain(d)) => d.to_owned(),
        Some(url::Host::Ipv4(a)) => a.to_string(),
        Some(url::Host::Ipv6(a)) => a.to_string(),
        None => return Err(format!("{url:?} names no host")),
    };
    if !u.username().is_empty() || u.password().is_some() {
        return Err("no credentials in the url: mqtt.username and mqtt.password_file".into());
    }
    if !(u.path().is_empty() || u.path() == "/") || u.query().is_some() || u.fragment().is_some() {
        return Err(format!(
            "{url:?}: only scheme, host and port (no path or query)"
        ));
    }
    let port = u.port().unwrap_or(if tls { 8883 } else { 1883 });
    Ok((tls, host, port))
}

/// A client id: 1 to 23 of `A-Z a-z 0-9 _ -` (what every broker must take, MQTT 3.1.1
/// 3.1.3.1, and nothing a topic or a log could misread).
pub fn check_client_id(id: &str) -> Result<(), String> {
    if id.is_empty() || id.len() > 23 {
        return Err(format!("{id:?}: 1 to 23 characters"));
    }
    if let Some(c) = id
        .chars()
        .find(|c| !(c.is_ascii_alphanumeric() || *c == '_' || *c == '-'))
    {
        return Err(format!("{id:?}: only A-Z a-z 0-9 _ - (not {c:?})"));
    }
    Ok(())
}

/// A topic prefix: levels of printable characters without the wildcards `+` and `#`, no
/// empty level, not starting with `$` (the broker's own), at most 200 bytes.
pub fn check_topic(t: &str) -> Result<(), String> {
    if t.is_empty() || t.len() > 200 {
        return Err(format!("{t:?}: 1 to 200 bytes"));
    }
    if t.starts_with('$') {
        return Err(format!("{t:?}: topics starting with $ are the broker's"));
    }
    if t.contains(['+', '#']) {
        return Err(format!(
            "{t:?}: no wildcards (+ or #) in a topic to publish to"
        ));
    }
    if t.split('/').any(str::is_empty) {
        return Err(format!(
            "{t:?}: no empty level (a leading, trailing or double /)"
        ));
    }
    if t.chars().any(|c| c.is_control() || c.is_whitespace()) {
        return Err(format!("{t:?}: no spaces or control characters"));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn broker_urls() {
        assert_eq!(
            parse_url("mqtt://broker.local").unwrap(),
            (false, "broker.local".into(), 1883)
        );
        assert_eq!(
            parse_url("mqtts://10.0.0.5:8884").unwrap(),
            (true, "10.0.0.5".into(), 8884)
        );
        assert_eq!(
            parse_url("mqtt://[::1]:1884").unwrap(),
            (false, "::1".into(), 1884)
        );
        assert!(parse_url("http://broker")
            .unwrap_err()
            .contains("not a broker url"));
        assert!(parse_url("mqtt://u:p@broker")
            .unwrap_err()
            .contains("no credentials"));
        assert!(parse_url("mqtt://broker/x")
            .unwrap_err()
            .contains("no path"));
        assert!(parse_url("broker:1883").is_err());
    }

    #[test]
    fn client_ids_and_topics() {
        assert!(check_client_id("front-door_1").is_ok());
        assert!(check_client_id("front door").unwrap_err().contains("' '"));
        assert!(check_client_id("").is_err());
        assert!(check_client_id(&"a".repeat(24)).is_err());
        assert!(check_topic("tiketo-gate/front-door").is_ok());
        assert!(check_topic("venue/+/door")
            .unwrap_err()
            .contains("wildcards"));
        assert!(check_topic("a//b").unwrap_err().contains("empty level"));
        assert!(check_topic("/a").is_err() && check_topic("a/").is_err());
        assert!(check_topic("$SYS/x").is_err());
        assert!(check_topic("a b").is_err());
    }
}
