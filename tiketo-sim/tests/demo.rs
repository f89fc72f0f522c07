//! The README's first command: `cargo run -p tiketo-sim -- demo`, fed a few codes on stdin.
//! (Run through `cargo test --workspace`, which builds the daemon beside this binary.)

use std::io::Write;
use std::process::{Command, Stdio};

#[test]
fn the_demo_runs_end_to_end_and_renders_the_door() {
    let root = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut child = Command::new(env!("CARGO_BIN_EXE_tiketo-sim"))
        .arg("demo")
        .current_dir(&root)
        .env_remove("CARGO")
        .env_remove("TIKETO_GATE_TOKEN")
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("demo starts");
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
