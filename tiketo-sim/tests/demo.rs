//! The README's first command: `cargo run -p tiketo-sim -- demo`, fed a few codes on stdin.
//! (Run through `cargo test --workspace`, which builds the daemon beside this binary.)

use std::io::Write;
use std::process::{Command, Stdio};

/// The demo as the README runs it, from the repository's top folder, its three streams piped.
fn demo() -> std::process::Child {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    Command::new(env!("CARGO_BIN_EXE_tiketo-sim"))
        .arg("demo")
        .current_dir(&root)
        .env_remove("CARGO")
        .env_remove("TIKETO_GATE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo starts")
}

/// The demo's guest screen has one port (config/demo.toml): one demo at a time.
static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

#[test]
fn the_demo_runs_end_to_end_and_renders_the_door() {
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = demo();
    // Give the daemon time to enrol, then type codes and end the input.
    std::thread::sleep(std::time::Duration::from_millis(1500));
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"VALID-0001\nVOIDED-0001\n")
        .unwrap();
    drop(child.stdin.take());
    let out = child.wait_with_output().unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stdout}\n{stderr}");
    assert!(
        stdout.contains("VALID-0001"),
        "the seed codes are listed:\n{stdout}"
    );
    assert!(
        stdout.contains("door relay   ON  (door open)"),
        "{stdout}\n{stderr}"
    );
    assert!(stdout.contains("red LED      ON"), "{stdout}");
    assert!(stderr.contains("verdict=accept reason=valid"), "{stderr}");
    assert!(stderr.contains("verdict=reject reason=voided"), "{stderr}");
}

/// Ctrl-C ends the demo as Ctrl-D does: the door is shown locked, the daemon stops cleanly,
/// the temporary directory goes. (Here SIGINT reaches the wrapper alone; from a terminal it
/// reaches the daemon too.) The doctor command the demo prints is one that works beside it.
#[test]
fn ctrl_c_ends_the_demo_as_ctrl_d_does() {
    use std::io::BufRead;
    let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|p| p.into_inner());
    let mut child = demo();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel::<String>();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    let wait_for = |what: &str, seen: &mut Vec<String>| {
        let end = std::time::Instant::now() + std::time::Duration::from_secs(20);
        while std::time::Instant::now() < end {
            if let Ok(l) = rx.recv_timeout(std::time::Duration::from_millis(100)) {
                let hit = l.contains(what);
                seen.push(l);
                if hit {
                    return;
                }
            }
        }
        panic!("no {what:?} in:\n{}", seen.join("\n"));
    };
    wait_for("doctor --config", &mut seen);
    let doctor = seen.last().unwrap().clone();
    let cfg = doctor.split("--config ").nth(1).unwrap().trim().to_owned();
    let dir = std::path::Path::new(&cfg).parent().unwrap().to_owned();
    assert!(dir.exists());
    wait_for("status LED   ON", &mut seen);
    child
        .stdin
        .as_mut()
        .unwrap()
        .write_all(b"VALID-0001\n")
        .unwrap();
    wait_for("door relay   ON  (door open)", &mut seen);
    // The doctor beside the running demo, as printed (with this build's daemon).
    let daemon =
        std::path::Path::new(env!("CARGO_BIN_EXE_tiketo-sim")).with_file_name("tiketo-gate");
    let doc = Command::new(&daemon)
        .args(["doctor", "--config", &cfg])
        .current_dir(std::env::temp_dir())
        .output()
        .unwrap();
    let doc_out = String::from_utf8_lossy(&doc.stdout);
    assert!(doc.status.success(), "doctor beside the demo:\n{doc_out}");
    assert!(
        doc_out.contains("the running daemon serves the guest screen"),
        "{doc_out}"
    );

    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    wait_for("ended;", &mut seen);
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", seen.join("\n"));
    let relay: Vec<_> = seen.iter().filter(|l| l.contains("door relay")).collect();
    assert!(
        relay.last().unwrap().contains("off (locked)"),
        "the door is shown locked at the end:\n{}",
        seen.join("\n")
    );
    assert!(!dir.exists(), "{} left behind", dir.display());
}
