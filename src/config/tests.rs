use super::*;

fn parse_str(src: &str) -> Result<Config, ConfigError> {
    parse(src, Path::new("test.toml"))
}

fn err(src: &str) -> String {
    parse_str(src).expect_err("should fail").to_string()
}

/// Each source fails with (at least) each of its messages.
fn expect_errors(cases: &[(&str, &[&str])]) {
    for (src, wanted) in cases {
        let e = err(src);
        for w in *wanted {
            assert!(e.contains(w), "{src:?}: no {w:?} in:\n{e}");
        }
    }
}

#[test]
fn empty_file_gives_defaults() {
    let c = parse_str("").unwrap();
    assert_eq!(c.api.url.as_str(), "https://api.tiketo.eu/graphql");
    assert_eq!(c.api.timeout, Duration::from_millis(800));
    assert_eq!(
        c.readers[0].kind,
        ReaderKind::Serial {
            path: "/dev/ttyACM0".into(),
            baud: 9600
        }
    );
    assert_eq!(c.readers.len(), 1);
    assert_eq!(c.readers[0].name, "reader");
    assert_eq!(c.readers[0].direction, Direction::Entry);
    assert_eq!(
        c.readers[0].outputs,
        LaneOutputs::default(),
        "nothing wired"
    );
    assert_eq!(c.readers[0].max_len, 512);
    assert_eq!(c.readers[0].debounce, Duration::from_millis(1500));
    assert_eq!(c.offline.policy, OfflinePolicy::Cache);
    assert_eq!(c.offline.cache_ttl, Duration::from_secs(86_400));
    assert_eq!(c.offline.max_offline_uses, 1);
    assert!(!c.offline.unknown_accepts);
    assert_eq!(c.store.retention, Duration::from_secs(30 * 86_400));
    assert_eq!(c.store.max_pending, 1_000_000);
    assert_eq!(c.outputs.backend, OutputBackendKind::Gpio);
    assert!(c.outputs.lines.is_empty());
    assert_eq!(c.inputs, InputsConfig::default());
    assert_eq!(c.device.state_dir, PathBuf::from("/var/lib/tiketo-gate"));
}

#[test]
fn the_issue_example_parses() {
    let src = include_str!("../../config/example.toml");
    let c = parse_str(src).unwrap();
    let relay = c.outputs.get("relay").unwrap();
    assert_eq!(
        (&relay.line, relay.active_low, relay.pulse),
        (&LineRef::Pin(17), false, Duration::from_millis(3000))
    );
    assert_eq!(c.outputs.get("green").unwrap().line, LineRef::Pin(27));
    assert_eq!(
        c.outputs.get("buzzer").unwrap().pulse,
        Duration::from_millis(300)
    );
    assert_eq!(c.readers[0].outputs, LaneOutputs::standard());
    assert!(c
        .summary()
        .starts_with("ok: test.toml: device \"front-door\""));
}

#[test]
fn unknown_key_names_key_and_line() {
    let e = err("[api]\nurl = \"https://x.example/graphql\"\n\n[reader]\nbuad = 9600\n");
    assert!(
        e.contains("test.toml:5: reader.buad: unknown key `buad`"),
        "{e}"
    );
    let e = err("[outputs]\nrelay = { pin = 17, pulsems = 3 }\n");
    assert!(
        e.contains(":2:") && e.contains("outputs.relay.pulsems"),
        "{e}"
    );
    let e = err("[rules]\nprojects = []\n[mystery]\nx = 1\n");
    assert!(e.contains(":3: mystery: unknown key"), "{e}");
}

#[test]
fn wrong_types_name_key_and_line() {
    let e = err("[reader]\nkind = \"serial\"\nbaud = \"fast\"\n");
    assert!(e.starts_with("test.toml:3: reader.baud:"), "{e}");
    let e = err("[outputs]\nrelay = { pin = \"17\" }\n");
    assert!(e.contains(":2:") && e.contains("outputs.relay.pin"), "{e}");
}

#[test]
fn bad_values_are_all_reported_with_lines() {
    let src = "[api]\nurl = \"http://example.com/graphql\"\ntimeout_ms = 0\n\n[reader]\nkind = \"usb\"\nmax_len = 0\n\n[offline]\npolicy = \"maybe\"\n\n[outputs]\nbackend = \"sim\"\nrelay = { pin = 40 }\ngreen = { pin = 27 }\nred = { pin = 27 }\nbuzzer = { active_low = true }\n";
    let e = err(src);
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("test.toml:2: api.url: http:// is only allowed for a loopback host")),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("test.toml:3: api.timeout_ms: must be between 50 and 60000 (got 0)")),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "test.toml:6: reader.kind: must be one of \"serial\", \"stdin\", \"hid\" (got \"usb\")"
        )),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test.toml:7: reader.max_len:")),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test.toml:10: offline.policy:")),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l
                .starts_with("test.toml:14: outputs.relay.pin: must be between 0 and 27 (got 40)")),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "test.toml:16: outputs.red.pin: GPIO 27 is already used by outputs.green"
        )),
        "{e}"
    );
    assert!(
        lines
            .iter()
            .any(|l| l.starts_with("test.toml:17: outputs.buzzer: needs a pin")),
        "{e}"
    );
}

#[test]
fn syntax_error_names_the_line() {
    let e = err("[api]\nurl = \"https://x\"\ntimeout_ms = = 3\n");
    assert!(e.starts_with("test.toml:3:"), "{e}");
}

#[test]
fn loopback_http_is_allowed_other_http_is_not() {
    for ok in [
        "http://127.0.0.1:8787/graphql",
        "http://localhost/graphql",
        "http://[::1]:9/graphql",
        "http://127.8.9.1/g",
        "https://api.tiketo.eu/graphql",
    ] {
        assert!(check_api_url(ok).is_ok(), "{ok}");
    }
    for bad in [
        "http://10.0.0.1/graphql",
        "http://api.tiketo.eu/graphql",
        "ftp://x/y",
        "not a url",
        "http://localhost.evil.com/",
    ] {
        assert!(check_api_url(bad).is_err(), "{bad}");
    }
}

#[test]
fn offline_and_store_keys() {
    let c = parse_str("[offline]\npolicy = \"accept\"\ncache_ttl = \"90m\"\nmax_offline_uses = 3\nunknown = \"accept\"\n[store]\nretention_days = 7\nmax_pending = 10\n").unwrap();
    assert_eq!(c.offline.policy, OfflinePolicy::Accept);
    assert_eq!(c.offline.cache_ttl, Duration::from_secs(5400));
    assert_eq!(c.offline.max_offline_uses, 3);
    assert!(c.offline.unknown_accepts);
    assert_eq!(c.store.max_pending, 10);
    assert_eq!(
        parse_str("[offline]\ncache_ttl = 3600\n")
            .unwrap()
            .offline
            .cache_ttl,
        Duration::from_secs(3600)
    );
    let e = err("[offline]\ncache_ttl = \"soon\"\n");
    assert!(e.starts_with("test.toml:2: offline.cache_ttl:"), "{e}");
    let e = err("[offline]\nunknown = \"maybe\"\n");
    assert!(e.starts_with("test.toml:2: offline.unknown:"), "{e}");
}

#[test]
fn http_keys() {
    let c =
        parse_str("[http]\nlisten = \"127.0.0.1:9180\"\nadmin_token = \"correct-horse-battery\"\n")
            .unwrap();
    assert_eq!(c.http.listen.unwrap().port(), 9180);
    assert_eq!(
        c.http.admin_token.unwrap().expose(),
        "correct-horse-battery"
    );
    assert!(parse_str("").unwrap().http.listen.is_none());
    let e = err("[http]\nlisten = \"localhost\"\n");
    assert!(e.starts_with("test.toml:2: http.listen:"), "{e}");
    let e = err("[http]\nlisten = \"127.0.0.1:1\"\nadmin_token = \"short\"\n");
    assert!(e.starts_with("test.toml:3: http.admin_token:"), "{e}");
    assert!(!e.contains("short"), "the token is not echoed: {e}");
}

#[test]
fn dotted_and_inline_tables_are_located() {
    let src = "outputs.backend = \"sim\"\n\n[outputs.relay]\npin = 99\n";
    let e = err(src);
    assert!(e.starts_with("test.toml:4: outputs.relay.pin:"), "{e}");
}

const TWO_LANES: &str = r#"
[outputs]
backend = "sim"
relay = { pin = 17 }
green = { pin = 27 }
red = { pin = 22 }
buzzer = { pin = 23 }
status = { pin = 24 }
relay_exit = { pin = 5, active_low = true, pulse_ms = 2000 }
green_exit = { pin = 6 }

[[readers]]
name = "entrance"
kind = "serial"
path = "/dev/serial/by-id/usb-A"

[[readers]]
name = "exit"
kind = "hid"
usb_id = "0C2E:0b61"
layout = "de"
direction = "exit"
debounce_ms = 500
outputs = { relay = "relay_exit", green = "green_exit", buzzer = "buzzer" }

[inputs]
exit_button = { pin = 25, active_low = true, bias = "pull-up" }
door_sensor = { pin = 16, held_open_secs = 45 }
"#;

#[test]
fn several_readers_with_their_own_outputs_and_inputs() {
    let c = parse_str(TWO_LANES).unwrap();
    assert!(c.multi_reader);
    assert_eq!(c.readers.len(), 2);
    let (a, b) = (&c.readers[0], &c.readers[1]);
    assert_eq!(
        (a.name.as_str(), a.direction),
        ("entrance", Direction::Entry)
    );
    assert_eq!(a.outputs, LaneOutputs::standard());
    assert_eq!((b.name.as_str(), b.direction), ("exit", Direction::Exit));
    assert_eq!(
        b.kind,
        ReaderKind::Hid {
            source: HidSource::UsbId {
                vendor: 0x0c2e,
                product: 0x0b61
            },
            layout: crate::hid::Layout::De,
            grab: true
        }
    );
    assert_eq!(b.debounce, Duration::from_millis(500));
    assert_eq!(b.outputs.relay.as_deref(), Some("relay_exit"));
    assert_eq!(b.outputs.red, None, "left out: this lane has no red LED");
    let names: Vec<&str> = c.outputs.lines.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        [
            "relay",
            "green",
            "red",
            "buzzer",
            "status",
            "green_exit",
            "relay_exit"
        ]
    );
    assert_eq!(
        c.outputs.get("relay_exit").unwrap().pulse,
        Duration::from_millis(2000)
    );
    let button = c.inputs.exit_button.as_ref().unwrap();
    assert_eq!(button.relay, "relay");
    assert_eq!(button.input.bias, Bias::PullUp);
    assert!(button.input.active_low);
    assert_eq!(button.input.debounce, Duration::from_millis(50));
    let door = c.inputs.door_sensor.as_ref().unwrap();
    assert_eq!(door.held_open, Duration::from_secs(45));
    let sum = c.summary();
    assert!(sum.contains("readers [entrance (serial /dev/serial/by-id/usb-A @ 9600, entry, outputs relay+green+red+buzzer); exit (hid usb 0c2e:0b61 (de layout), exit, outputs relay_exit+green_exit+buzzer)]"), "{sum}");
    assert!(
        sum.contains(
            "inputs [exit button GPIO 25 -> relay, door sensor GPIO 16 (held open after 45 s)]"
        ),
        "{sum}"
    );
}

#[test]
fn reader_mistakes_name_the_entry_and_line() {
    let bad = TWO_LANES
        .replace("direction = \"exit\"", "direction = \"out\"")
        .replace("relay = \"relay_exit\"", "relay = \"relay_x\"")
        .replace("name = \"exit\"", "name = \"entrance\"");
    let e = err(&bad);
    let lines: Vec<&str> = e.lines().collect();
    assert!(
        lines.iter().any(|l| l.starts_with(
            "test.toml:18: readers[1].name: \"entrance\" is already the name of readers[0]"
        )),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "test.toml:22: readers[1].direction: must be one of \"entry\", \"exit\" (got \"out\")"
        )),
        "{e}"
    );
    assert!(
        lines.iter().any(|l| l.starts_with(
            "test.toml:24: readers[1].outputs.relay: no output \"relay_x\" in [outputs]"
        )),
        "{e}"
    );
    assert!(
            lines
                .iter()
                .any(|l| l
                    .starts_with("test.toml:9: outputs.relay_exit: no reader drives this output")),
            "{e}"
        );
    // Both forms at once, a nameless entry, a serial key on a HID reader, a stdin twice,
    // HID mistakes, one port or one USB id read twice.
    let cases: &[(&str, &[&str])] = &[
            (
                "[reader]\nkind = \"stdin\"\n[[readers]]\nname = \"a\"\n",
                &["use either [reader]"],
            ),
            (
                "[[readers]]\nkind = \"stdin\"\n[[readers]]\nname = \"b\"\nkind = \"stdin\"\n",
                &[
                    "test.toml:1: readers[0]: needs a name",
                    "test.toml:5: readers[1].kind: only one reader can read stdin",
                ],
            ),
            (
                "[reader]\nkind = \"hid\"\npath = \"/dev/input/event3\"\nbaud = 9600\n",
                &["test.toml:4: reader.baud: only for kind = \"serial\""],
            ),
            (
                "[reader]\nkind = \"hid\"\n",
                &["test.toml:1: reader: a hid reader needs a path"],
            ),
            (
                "[reader]\nkind = \"hid\"\nusb_id = \"zz:1\"\n",
                &["test.toml:3: reader.usb_id: must be vendor:product"],
            ),
            (
                "[reader]\nkind = \"hid\"\npath = \"/dev/input/event3\"\nlayout = \"fr\"\n",
                &["test.toml:4: reader.layout: must be one of \"us\", \"de\" (got \"fr\")"],
            ),
            (
                "[[readers]]\nname = \"a\"\npath = \"/dev/ttyACM0\"\n[[readers]]\nname = \"b\"\npath = \"/dev/ttyACM0\"\n",
                &["test.toml:6: readers[1].path: /dev/ttyACM0 is already read by readers[0]"],
            ),
            (
                "[[readers]]\nname = \"a\"\nkind = \"hid\"\nusb_id = \"0c2e:0b61\"\n[[readers]]\nname = \"b\"\nkind = \"hid\"\nusb_id = \"0C2E:0B61\"\n",
                &["test.toml:8: readers[1].usb_id: 0c2e:0b61 is already read by readers[0]"],
            ),
        ];
    expect_errors(cases);
    // The single-reader form keeps working, with a direction if wanted.
    let c = parse_str("[reader]\nkind = \"hid\"\npath = \"/dev/input/by-id/usb-scanner-event-kbd\"\ndirection = \"exit\"\n").unwrap();
    assert!(!c.multi_reader);
    assert_eq!(c.readers[0].direction, Direction::Exit);
    assert!(
        c.summary()
            .contains("reader hid /dev/input/by-id/usb-scanner-event-kbd (us layout) (exit)"),
        "{}",
        c.summary()
    );
}

#[test]
fn the_two_lanes_example_parses() {
    let c = parse_str(include_str!("../../config/two-lanes.toml")).unwrap();
    assert_eq!(c.readers.len(), 2);
    assert_eq!(c.readers[1].direction, Direction::Exit);
    assert!(c.inputs.exit_button.is_some() && c.inputs.door_sensor.is_some());
    assert_eq!(c.outputs.backend, OutputBackendKind::Gpiod);
}

#[test]
fn gpiod_lines_and_input_mistakes() {
    let c = parse_str("[outputs]\nbackend = \"gpiod\"\nchip = \"gpiochip4\"\nrelay = { line = \"GPIO17\", active_low = true }\ngreen = { chip = \"gpiochip0\", offset = 27 }\nred = { pin = 22 }\n[inputs]\ndoor_sensor = { line = \"GPIO5\", bias = \"pull-up\", active_low = true }\n").unwrap();
    assert_eq!(c.outputs.backend, OutputBackendKind::Gpiod);
    assert_eq!(c.outputs.chip, "gpiochip4");
    assert_eq!(
        c.outputs.get("relay").unwrap().line,
        LineRef::Named("GPIO17".into())
    );
    assert_eq!(
        c.outputs.get("green").unwrap().line,
        LineRef::ChipOffset {
            chip: "gpiochip0".into(),
            offset: 27
        }
    );
    assert!(c.summary().contains("outputs gpiod (gpiochip4) [relay line \"GPIO17\" active-low, green gpiochip0 line 27, red 22]"), "{}", c.summary());
    // Names and chips need gpiod; one way to name a line; inputs cannot share a line.
    expect_errors(&[
            (
                "[outputs]\nrelay = { line = \"GPIO17\" }\n",
                &["test.toml:2: outputs.relay.line: line names and chip offsets need outputs.backend = \"gpiod\""],
            ),
            (
                "[outputs]\nbackend = \"gpiod\"\nrelay = { pin = 17, line = \"GPIO17\" }\n",
                &["test.toml:3: outputs.relay: give one of pin, line, or chip and offset"],
            ),
            (
                "[outputs]\nchip = \"gpiochip0\"\n",
                &["test.toml:2: outputs.chip: only for backend = \"gpiod\""],
            ),
            (
                "[outputs]\nrelay = { pin = 17 }\n[inputs]\nexit_button = { pin = 17, held_open_secs = 3 }\ndoor_sensor = { pin = 5, bias = \"up\" }\n",
                &[
                    "test.toml:4: inputs.exit_button: GPIO 17 is already used by outputs.relay",
                    "test.toml:4: inputs.exit_button.held_open_secs: only for inputs.door_sensor",
                    "test.toml:5: inputs.door_sensor.bias: must be one of",
                ],
            ),
            (
                "[outputs]\nrelay = { pin = 17 }\n[inputs]\nexit_button = { pin = 6, relay = \"door2\" }\n",
                &["test.toml:4: inputs.exit_button.relay: the output it releases, \"door2\", is not in [outputs]"],
            ),
            (
                "[outputs]\nbackend = \"sim\"\nlogfile = \"x\"\n",
                &["test.toml:3: outputs.logfile: unknown key"],
            ),
            (
                "[outputs]\nrelay = { pin = 17, pulse = 3 }\n",
                &["test.toml:2: outputs.relay.pulse: unknown key `pulse`"],
            ),
        ]);
    // The old example's sim_log under the gpio backend is still fine.
    assert!(parse_str("[outputs]\nbackend = \"gpio\"\nsim_log = \"-\"\n").is_ok());
}

#[test]
fn opening_hours_per_reader_and_their_errors() {
    let c = parse_str(
        r#"[device]
timezone = "UTC"
[rules]
hours = ["Mon-Fri 07:00-19:00"]
closed_dates = ["2026-12-25"]
unsynced_clock = "reject"
[[readers]]
name = "front"
kind = "stdin"
[[readers]]
name = "staff"
kind = "serial"
hours = ["Daily 00:00-24:00"]
"#,
    )
    .unwrap();
    assert_eq!(c.hours.unsynced_clock, crate::hours::UnsyncedClock::Reject);
    let sat_noon: jiff::civil::DateTime = "2026-12-12T12:00".parse().unwrap();
    let christmas: jiff::civil::DateTime = "2026-12-25T12:00".parse().unwrap();
    assert!(!c.readers[0].hours.is_open_at(sat_noon));
    assert!(c.readers[1].hours.is_open_at(sat_noon), "its own hours");
    assert!(
        !c.readers[1].hours.is_open_at(christmas),
        "closed dates kept from [rules]"
    );
    assert!(!parse_str("").unwrap().readers[0].hours.is_set());
    expect_errors(&[
        (
            "[rules]\nhours = [\"Mon-Fri 7-19\"]\n",
            &["test.toml:2: rules.hours: entry 1: \"7\" is not a time of day"],
        ),
        (
            "[rules]\nclosed_dates = [\"2026-12-32\"]\n",
            &["test.toml:2: rules.closed_dates: entry 1: \"2026-12-32\" is not a date"],
        ),
        (
            "[device]\ntimezone = \"Europe/Praha\"\n",
            &["test.toml:2: device.timezone: \"Europe/Praha\" is not a time zone"],
        ),
        (
            "[rules]\nunsynced_clock = \"open\"\n",
            &["test.toml:2: rules.unsynced_clock: must be one of"],
        ),
        (
            "[[readers]]\nname = \"a\"\nkind = \"stdin\"\nhours = [\"Sun 10:00\"]\n",
            &["test.toml:4: readers[0].hours: entry 1:"],
        ),
    ]);
}

#[test]
fn buzzer_patterns() {
    let c = parse_str(
        "[outputs]\nbackend = \"sim\"\nbuzzer = { pin = 23, pulse_ms = 100, accept = [40], attention = [50, 50, 50] }\n",
    )
    .unwrap();
    let p = &c.outputs.get("buzzer").unwrap().patterns;
    let ms = |v: &[u64]| {
        v.iter()
            .map(|m| Duration::from_millis(*m))
            .collect::<Vec<_>>()
    };
    assert_eq!(p.accept, ms(&[40]));
    assert_eq!(p.reject, ms(&[100, 100, 100]), "two beeps stay the default");
    assert_eq!(p.attention, ms(&[50, 50, 50]));
    let d =
        parse_str("[outputs]\nbackend = \"sim\"\nbuzzer = { pin = 23, reject = [200] }\n").unwrap();
    let p = &d.outputs.get("buzzer").unwrap().patterns;
    assert!(p.accept.is_empty(), "no accept chirp by default");
    assert_eq!(
        p.attention,
        ms(&[200]),
        "attention follows reject unless given"
    );
    expect_errors(&[
        (
            "[outputs]\nbackend = \"sim\"\nbuzzer = { pin = 23, accept = [0] }\n",
            &["test.toml:3: outputs.buzzer.accept: each step must be between 1 and 10000 ms (got 0)"],
        ),
        (
            "[outputs]\nbackend = \"sim\"\nbuzzer = { pin = 23, reject = \"beep\" }\n",
            &["outputs.buzzer.reject: must be a list of milliseconds"],
        ),
        (
            "[outputs]\nbackend = \"sim\"\ngreen = { pin = 27, accept = [40] }\n",
            &["outputs.green.accept: a sound pattern is only for a buzzer"],
        ),
    ]);
}

#[test]
fn the_guest_screen() {
    assert!(
        parse_str("").unwrap().display.is_none(),
        "off unless listen is set"
    );
    let off = parse_str("[display]\ngreeting = \"Hi {firstName}\"\n").unwrap();
    assert!(off.display.is_none());
    assert!(
        off.notes[0].contains("the guest screen is off"),
        "{:?}",
        off.notes
    );
    let c = parse_str(
        "[device]\nname = \"d1\"\n[display]\nlisten = \"127.0.0.1:9181\"\nlanguage = \"cs\"\ngreeting = \"Ahoj {firstName}\"\n[display.strings]\nidle = \"Sem kartu\"\n",
    )
    .unwrap();
    let d = c.display.unwrap();
    assert_eq!(d.door, "d1");
    assert_eq!(d.hold, Duration::from_millis(4000));
    assert_eq!(d.strings["idle"], "Sem kartu");
    assert_eq!(d.strings["welcome"], "Vítejte");
    assert!(d.wants_parameters());
    expect_errors(&[
        (
            "[display]\nlisten = \"127.0.0.1:9181\"\ngreeting = \"Hi {first name}\"\n",
            &["test.toml:3: display.greeting: unknown placeholder {first name}"],
        ),
        (
            "[display]\nlisten = \"127.0.0.1:9181\"\nlanguage = \"fr\"\n",
            &["test.toml:3: display.language: must be one of \"cs\", \"de\", \"en\" (got \"fr\")"],
        ),
        (
            "[display]\nlisten = \"127.0.0.1:9181\"\n[display.strings]\nwelcom = \"Hi\"\n",
            &["test.toml:4: display.strings.welcom: unknown string `welcom`"],
        ),
        (
            "[display]\nlisten = \"127.0.0.1:9181\"\nreaders = [\"side\"]\n",
            &["test.toml:3: display.readers: entry 1: no reader is named \"side\""],
        ),
        (
            "[display]\nlisten = \"9181\"\n",
            &["test.toml:2: display.listen: must be an address and port"],
        ),
        (
            "[http]\nlisten = \"127.0.0.1:9180\"\n[display]\nlisten = \"127.0.0.1:9180\"\n",
            &["display.listen: 127.0.0.1:9180 is already http.listen"],
        ),
        (
            "[display]\nlisten = \"127.0.0.1:9181\"\nhold_ms = 10\n",
            &["display.hold_ms: must be between 500 and 60000"],
        ),
    ]);
}

#[test]
fn mqtt_is_off_without_a_url_and_checked_with_one() {
    let c = parse_str("[device]\nname = \"front-door\"\n").unwrap();
    assert!(c.mqtt.is_none());
    let c = parse_str(
        "[device]\nname = \"front-door\"\n[mqtt]\nurl = \"mqtts://broker.venue:8884\"\nusername = \"front\"\npassword_file = \"/etc/tiketo-gate/mqtt-password\"\n",
    )
    .unwrap();
    let m = c.mqtt.as_ref().unwrap();
    assert_eq!(
        (m.tls, m.host.as_str(), m.port),
        (true, "broker.venue", 8884)
    );
    assert_eq!(m.client_id, "front-door");
    assert_eq!(m.topic, "tiketo-gate/front-door");
    assert_eq!(m.keep_alive, Duration::from_secs(10));
    assert_eq!(m.max_pending, 100_000);
    assert!(!m.home_assistant && m.command_key_file.is_none());
    assert!(
        c.summary().ends_with(
            ", mqtt mqtts://broker.venue:8884 as front-door under tiketo-gate/front-door"
        ),
        "{}",
        c.summary()
    );
    expect_errors(&[
        (
            "[mqtt]\ntopic = \"x\"\n",
            &["test.toml:1: mqtt.url: missing: [mqtt] is off without it"],
        ),
        (
            "[mqtt]\nurl = \"http://broker\"\n",
            &["test.toml:2: mqtt.url: http:// is not a broker url"],
        ),
        (
            "[mqtt]\nurl = \"mqtt://b\"\nclient_id = \"front door\"\ntopic = \"v/+/d\"\n",
            &[
                "test.toml:3: mqtt.client_id: \"front door\": only A-Z a-z 0-9 _ -",
                "test.toml:4: mqtt.topic: \"v/+/d\": no wildcards",
            ],
        ),
        (
            "[device]\nname = \"Front Door\"\n[mqtt]\nurl = \"mqtt://b\"\n",
            &["mqtt.client_id: missing: device.name \"Front Door\" is not a client id"],
        ),
        (
            "[mqtt]\nurl = \"mqtt://b\"\nkeep_alive_s = 60\nhome_assistant_commands = true\npassword_file = \"/p\"\ncert_file = \"/c\"\n",
            &[
                "test.toml:3: mqtt.keep_alive_s",
                "mqtt.home_assistant_commands: only with home_assistant = true",
                "mqtt.username: missing: a password_file needs a username",
                "mqtt.key_file: missing: cert_file needs its key_file",
            ],
        ),
        (
            "[mqtt]\nurl = \"mqtt://b\"\nkeepalive = 5\n",
            &["test.toml:3: mqtt.keepalive: unknown key"],
        ),
    ]);
}

#[test]
fn a_venue_needs_its_key_a_topic_of_its_own_and_a_broker() {
    let c = parse_str(
        "[device]\nname = \"front-door\"\n[offline]\nrefresh_per_minute = 30\n[mqtt]\nurl = \"mqtt://b\"\nvenue = \"tiketo-gate/venues/main-hall\"\nvenue_key_file = \"/etc/tiketo-gate/venue.key\"\n",
    )
    .unwrap();
    let v = c.mqtt.as_ref().unwrap().venue.as_ref().unwrap();
    assert_eq!(v.topic, "tiketo-gate/venues/main-hall");
    assert_eq!(c.offline.refresh_per_minute, 30);
    assert_eq!(parse_str("").unwrap().offline.refresh_per_minute, 10);
    expect_errors(&[
        (
            "[mqtt]\nurl = \"mqtt://b\"\nvenue = \"v/hall\"\n",
            &["mqtt.venue_key_file: missing: a venue needs its key"],
        ),
        (
            "[mqtt]\nurl = \"mqtt://b\"\nvenue_key_file = \"/k\"\n",
            &["mqtt.venue: missing: venue_key_file needs the venue's topic"],
        ),
        (
            "[device]\nname = \"d1\"\n[mqtt]\nurl = \"mqtt://b\"\nvenue = \"tiketo-gate\"\nvenue_key_file = \"/k\"\n",
            &["mqtt.venue: must not be the door's own topic or hold it"],
        ),
        (
            "[mqtt]\nurl = \"mqtt://b\"\nvenue = \"v/#\"\nvenue_key_file = \"/k\"\n",
            &["test.toml:3: mqtt.venue: \"v/#\": no wildcards"],
        ),
        (
            "[mqtt]\nvenue = \"v\"\nvenue_key_file = \"/k\"\n",
            &["mqtt.url: missing: [mqtt] is off without it"],
        ),
        (
            "[offline]\nrefresh_per_minute = 601\n",
            &["test.toml:2: offline.refresh_per_minute"],
        ),
    ]);
}
