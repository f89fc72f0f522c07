//! The pure parts of a scan, without IO: `cargo bench --bench pure`.

use divan::black_box;
use tiketo_gate::api::{classify, parse_pass, parse_response};
use tiketo_gate::decision::{decide, PassFacts, Rules};
use tiketo_gate::framing::Framer;

fn main() {
    divan::main();
}

#[divan::bench]
fn frame_one_code() -> usize {
    let mut f = Framer::new(512);
    let mut n = 0;
    f.feed(black_box(b"TIKETO-PASS-0123456789-ABCDEFGH\r\n"), |_| {
        n += 1
    });
    n
}

/// A keyboard-mode reader's 31-character code (German layout): 128 key events, as the
/// evdev reader decodes them.
#[divan::bench]
fn decode_one_hid_code(bencher: divan::Bencher) {
    use tiketo_gate::hid::{keystrokes, HidDecoder, Layout, EV_KEY};
    let events: Vec<(u16, u16, i32)> = keystrokes(Layout::De, "TIKETO-PASS-0123456789-ABCDEFGH")
        .unwrap()
        .into_iter()
        .filter(|(t, _, _)| *t == EV_KEY)
        .collect();
    bencher.bench(|| {
        let mut d = HidDecoder::new(Layout::De, 512);
        let mut n = 0;
        for &(_, code, value) in black_box(&events) {
            d.key(code, value, |_| n += 1);
        }
        n
    });
}

#[divan::bench]
fn frame_64k_garbage_then_a_code() -> usize {
    let garbage = vec![b'x'; 64 * 1024];
    let mut f = Framer::new(512);
    let mut n = 0;
    f.feed(black_box(&garbage), |_| n += 1);
    f.feed(black_box(b"\r\nVALID-0001\r\n"), |_| n += 1);
    n
}

#[divan::bench]
fn decide_a_pass() -> bool {
    let pass = PassFacts {
        id: "pass-1".into(),
        template_id: "tpl".into(),
        project_id: Some("proj".into()),
        expires: Some(time::OffsetDateTime::from_unix_timestamp(4_000_000_000).unwrap()),
        voided: false,
        scan_config: None,
        parameters: None,
    };
    let rules = Rules {
        projects: vec!["proj".into()],
        templates: vec![],
        reward_points: 0,
    };
    decide(
        black_box(Some(&pass)),
        &rules,
        time::OffsetDateTime::now_utc(),
    )
    .is_ok()
}

#[divan::bench]
fn parse_a_pass_response() -> bool {
    let body = br#"{"data":{"passByScanCode":{"expirationDate":"2099-12-31T23:59:59Z","id":"pass-valid-1","project":{"id":"proj-main","scanConfig":null},"templateId":"tpl-entry","voided":false}}}"#;
    let r = parse_response(black_box(body)).unwrap();
    parse_pass(r.data.as_ref().unwrap().get("passByScanCode").unwrap())
        .unwrap()
        .is_some()
}

#[divan::bench]
fn classify_appsync_errors() -> bool {
    let body = br#"{"data":null,"errors":[{"path":["e1"],"errorType":"Lambda:ExecutionTimeoutException","message":"x"},{"errorType":"MappingTemplate","message":"y"}]}"#;
    let r = parse_response(black_box(body)).unwrap();
    classify::classify_gql_errors(&r.errors).is_some()
}
