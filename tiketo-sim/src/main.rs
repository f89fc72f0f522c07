#![forbid(unsafe_code)]

use std::io::{BufRead, IsTerminal};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{ExitCode, Stdio};

use clap::{Parser, Subcommand};
use tiketo_sim::{Seed, Sim, SimOptions};

/// A fake Tiketo GraphQL API on loopback, for tests, demos and installers.
#[derive(Parser)]
#[command(name = "tiketo-sim", version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Serve the fake API until stopped.
    Serve {
        #[arg(long, default_value = "127.0.0.1:8787")]
        listen: SocketAddr,
        /// The workspace API token it accepts.
        #[arg(long, env = "TIKETO_SIM_TOKEN", default_value = "sim-workspace-token")]
        token: String,
        /// A seed file (TOML); default: the demo seed.
        #[arg(long)]
        seed: Option<PathBuf>,
        /// Serve HTTPS with a certificate from a CA made at start.
        #[arg(long)]
        tls: bool,
        /// With --tls: write the CA's PEM here (for the daemon's api.ca_file).
        #[arg(long, requires = "tls")]
        ca_out: Option<PathBuf>,
        /// Serve this SDL instead of the project's (a schema that changed: drift tests,
        /// `tiketo-gate doctor`).
        #[arg(long)]
        schema: Option<PathBuf>,
        /// Answer introspection (`__schema`, `__type`) with an error, as an AppSync API with
        /// introspection switched off does.
        #[arg(long)]
        no_introspection: bool,
    },
    /// The README demo: the fake API and the daemon, codes typed on stdin, outputs shown.
    Demo {
        /// The daemon config to start from (its api.url is pointed at the sim).
        #[arg(long, default_value = "config/demo.toml")]
        config: PathBuf,
        #[arg(long)]
        seed: Option<PathBuf>,
    },
}

fn load_seed(path: Option<&Path>) -> Result<Seed, String> {
    match path {
        None => Ok(Seed::demo()),
        Some(p) => {
            let text = std::fs::read_to_string(p).map_err(|e| format!("{}: {e}", p.display()))?;
            Seed::parse(&text).map_err(|e| format!("{}: {e}", p.display()))
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime");
    match cli.command {
        Command::Serve {
            listen,
            token,
            seed,
            tls,
            ca_out,
            schema,
            no_introspection,
        } => {
            let schema = match schema.as_deref().map(std::fs::read_to_string) {
                None => None,
                Some(Ok(s)) => Some(s),
                Some(Err(e)) => {
                    eprintln!("tiketo-sim: --schema: {e}");
                    return ExitCode::from(2);
                }
            };
            let seed = match load_seed(seed.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tiketo-sim: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(async move {
                let sim = match Sim::start(SimOptions {
                    listen,
                    token,
                    seed,
                    tls,
                    schema,
                    introspection: !no_introspection,
                    ..SimOptions::default()
                })
                .await
                {
                    Ok(s) => s,
                    Err(e) => {
                        eprintln!("tiketo-sim: cannot start on {listen}: {e}");
                        return ExitCode::from(1);
                    }
                };
                if let (Some(path), Some(pem)) = (&ca_out, sim.ca_pem()) {
                    if let Err(e) = std::fs::write(path, pem) {
                        eprintln!("tiketo-sim: {}: {e}", path.display());
                        return ExitCode::from(1);
                    }
                }
                eprintln!("tiketo-sim: serving {}", sim.url());
                let _ = tokio::signal::ctrl_c().await;
                ExitCode::SUCCESS
            })
        }
        Command::Demo { config, seed } => {
            let seed = match load_seed(seed.as_deref()) {
                Ok(s) => s,
                Err(e) => {
                    eprintln!("tiketo-sim: {e}");
                    return ExitCode::from(2);
                }
            };
            rt.block_on(demo(config, seed))
        }
    }
}

/// The daemon binary beside this one; built first when run through `cargo run`, in view
/// (cargo's own progress on stderr), so the first minute is not a blank one.
fn daemon_binary() -> Result<PathBuf, String> {
    let me = std::env::current_exe().map_err(|e| e.to_string())?;
    let dir = me.parent().ok_or("no directory")?.to_owned();
    if let Ok(cargo) = std::env::var("CARGO") {
        let release = dir.ends_with("release");
        eprintln!(
            "tiketo-sim demo: building the daemon (cargo build -p tiketo-gate{}): the first time \
             takes a minute or two, later ones a second",
            if release { " --release" } else { "" }
        );
        let mut cmd = std::process::Command::new(cargo);
        cmd.args(["build", "-p", "tiketo-gate"]);
        if release {
            cmd.arg("--release");
        }
        // `cargo run` gave this process its package's variables (CARGO_MANIFEST_DIR and the
        // like); passed on, they make the inner build differ from a plain `cargo build` and
        // each rebuilds what the other built.
        for (k, _) in std::env::vars_os() {
            if is_cargo_run_var(&k.to_string_lossy()) {
                cmd.env_remove(&k);
            }
        }
        let status = cmd.status().map_err(|e| format!("cannot run cargo: {e}"))?;
        if !status.success() {
            return Err("building tiketo-gate failed".into());
        }
    }
    let bin = dir.join("tiketo-gate");
    if bin.exists() {
        Ok(bin)
    } else {
        Err(format!(
            "{} not found: run `cargo build --workspace` first",
            bin.display()
        ))
    }
}

/// A variable `cargo run` sets for the program it runs (not one of the user's settings such
/// as CARGO_HOME, CARGO_TARGET_DIR or CARGO_BUILD_*).
fn is_cargo_run_var(k: &str) -> bool {
    k.starts_with("CARGO_PKG_")
        || matches!(
            k,
            "CARGO_MANIFEST_DIR"
                | "CARGO_MANIFEST_PATH"
                | "CARGO_MANIFEST_LINKS"
                | "CARGO_CRATE_NAME"
                | "CARGO_BIN_NAME"
                | "CARGO_PRIMARY_PACKAGE"
                | "CARGO_RUSTC_CURRENT_DIR"
        )
}

async fn demo(config: PathBuf, seed: Seed) -> ExitCode {
    let bin = match daemon_binary() {
        Ok(b) => b,
        Err(e) => {
            eprintln!("tiketo-sim demo: {e}");
            return ExitCode::from(1);
        }
    };
    let text = match std::fs::read_to_string(&config) {
        Ok(t) => t,
        Err(e) => {
            eprintln!(
                "tiketo-sim demo: {}: {e} (run it from the repository's top folder)",
                config.display()
            );
            return ExitCode::from(2);
        }
    };
    let sim = match Sim::start(SimOptions {
        seed: seed.clone(),
        ..SimOptions::default()
    })
    .await
    {
        Ok(s) => s,
        Err(e) => {
            eprintln!("tiketo-sim demo: cannot start the fake API: {e}");
            return ExitCode::from(1);
        }
    };
    // Point the demo config at this sim (it listens on a free port), give it a fresh state
    // directory (this sim knows no device enrolled before) and the sim's token in a file of
    // its own, so that `tiketo-gate doctor` with the same config works beside the demo.
    let dir = std::env::temp_dir().join(format!("tiketo-demo-{}", std::process::id()));
    let token_path = dir.join("token");
    let text = point_config(&text, &sim.url(), &dir.join("state"), &token_path);
    let cfg_path = dir.join("demo.toml");
    if let Err(e) = write_demo_files(&dir, &cfg_path, &text, &token_path, sim.token()) {
        eprintln!("tiketo-sim demo: {e}");
        let _ = std::fs::remove_dir_all(&dir);
        return ExitCode::from(1);
    }

    let color = std::io::stdout().is_terminal();
    println!("tiketo-gate demo: the fake Tiketo API is at {}", sim.url());
    println!("Type a code and press Enter (Ctrl-D or Ctrl-C ends the demo). Seeded codes:");
    for p in &seed.passes {
        println!("  {:<14} {}", p.code, describe(p));
    }
    println!("  anything else  not_found");
    println!(
        "Beside it, in another terminal: cargo run -q -- doctor --config {}\n",
        cfg_path.display()
    );

    let mut child = match tokio::process::Command::new(&bin)
        .args(["run", "--config"])
        .arg(&cfg_path)
        .stdin(Stdio::inherit())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
    {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tiketo-sim demo: cannot start {}: {e}", bin.display());
            let _ = std::fs::remove_dir_all(&dir);
            return ExitCode::from(1);
        }
    };
    let stdout = child.stdout.take().expect("piped stdout");
    let render = tokio::task::spawn_blocking(move || {
        for line in std::io::BufReader::new(stdout.into_std_or_panic()).lines() {
            let Ok(line) = line else { break };
            println!("{}", render_output(&line, color));
        }
    });
    // Ctrl-C ends the demo as Ctrl-D does: the daemon stops (the terminal sent it SIGINT too;
    // it is passed on in case only this process got it), its last output lines are shown,
    // and the temporary directory goes.
    let status = tokio::select! {
        s = child.wait() => s,
        _ = tokio::signal::ctrl_c() => {
            if let Some(pid) = child.id().and_then(|p| rustix::process::Pid::from_raw(p as i32)) {
                let _ = rustix::process::kill_process(pid, rustix::process::Signal::INT);
            }
            child.wait().await
        }
    };
    let _ = render.await;
    let _ = std::fs::remove_dir_all(&dir);
    println!("tiketo-gate demo: ended; {} removed", dir.display());
    match status {
        Ok(s) if s.success() => ExitCode::SUCCESS,
        _ => ExitCode::from(1),
    }
}

/// The demo config `text` with its `url`, `state_dir` and `token_file` lines pointed at
/// this run's sim and files.
fn point_config(text: &str, url: &str, state: &Path, token: &Path) -> String {
    text.lines()
        .map(|l| {
            let t = l.trim_start();
            let key = t.split(['=', ' ']).next().unwrap_or("");
            match key {
                "url" => format!("url = \"{url}\""),
                "state_dir" => format!("state_dir = \"{}\"", state.display()),
                "token_file" => format!("token_file = \"{}\"", token.display()),
                _ => l.to_owned(),
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// The demo's directory (only its user may read it), its config, and the token file (mode
/// 0600, as the daemon wants a token file).
fn write_demo_files(
    dir: &Path,
    cfg: &Path,
    text: &str,
    token_path: &Path,
    token: &str,
) -> std::io::Result<()> {
    use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)?;
    std::fs::write(cfg, text)?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(token_path)?;
    std::io::Write::write_all(&mut f, token.as_bytes())
}

trait IntoStd {
    fn into_std_or_panic(self) -> std::fs::File;
}

impl IntoStd for tokio::process::ChildStdout {
    fn into_std_or_panic(self) -> std::fs::File {
        let fd: std::os::fd::OwnedFd = self.into_owned_fd().expect("stdout fd");
        std::fs::File::from(fd)
    }
}

fn describe(p: &tiketo_sim::SeedPass) -> String {
    let mut s = if p.voided {
        "voided".to_owned()
    } else if p.expires.as_deref().is_some_and(|e| e < "2026") {
        "expired".to_owned()
    } else if p.project == "proj-other" {
        "another project (wrong_project)".to_owned()
    } else {
        "valid".to_owned()
    };
    if let Some(n) = p.entries {
        s.push_str(&format!(
            ", event ticket with {n} entr{} (then refused)",
            if n == 1 { "y" } else { "ies" }
        ));
    }
    if p.scan_voided {
        s.push_str(", but the server voids its scan event (refused)");
    }
    if p.project == "proj-loyalty" {
        s.push_str(", loyalty project: 10 reward points per check-in");
    }
    s
}

/// `{"ts_ms":..,"output":"relay","on":true}` -> a readable line.
fn render_output(line: &str, color: bool) -> String {
    let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
        return line.to_owned();
    };
    let output = v["output"].as_str().unwrap_or("?");
    let on = v["on"].as_bool().unwrap_or(false);
    if v["restarted"].as_bool() == Some(true) {
        // On already and its time started over: a second accept during the pulse.
        let (text, paint) = match output {
            "relay" => (
                "door relay   ON  again (open longer: its pulse starts over)",
                "\x1b[1;32m",
            ),
            "green" => ("green LED    ON  again", "\x1b[32m"),
            _ => ("", ""),
        };
        let text = if text.is_empty() {
            format!("{output:<12} ON  again")
        } else {
            text.to_owned()
        };
        return if color {
            format!("    {paint}{text}\x1b[0m")
        } else {
            format!("    {text}")
        };
    }
    let (label, paint) = match (output, on) {
        ("relay", true) => ("door relay   ON  (door open)", "\x1b[1;32m"),
        ("relay", false) => ("door relay   off (locked)", "\x1b[2m"),
        ("green", true) => ("green LED    ON", "\x1b[32m"),
        ("red", true) => ("red LED      ON", "\x1b[31m"),
        ("buzzer", true) => ("buzzer       BEEP", "\x1b[33m"),
        ("status", true) => ("status LED   ON  (running)", "\x1b[36m"),
        (_, false) => ("", "\x1b[2m"),
        _ => ("", ""),
    };
    let text = if label.is_empty() {
        format!("{output:<12} {}", if on { "ON" } else { "off" })
    } else {
        label.to_owned()
    };
    if color {
        format!("    {paint}{text}\x1b[0m")
    } else {
        format!("    {text}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_restarted_relay_is_shown_as_a_door_open_longer() {
        let on = render_output(r#"{"ts_ms":1,"output":"relay","on":true}"#, false);
        assert_eq!(on, "    door relay   ON  (door open)");
        let again = render_output(
            r#"{"ts_ms":2,"output":"relay","on":true,"restarted":true}"#,
            false,
        );
        assert!(again.contains("door relay   ON  again"), "{again}");
        assert_eq!(
            render_output(
                r#"{"ts_ms":2,"output":"lamp","on":true,"restarted":true}"#,
                false
            ),
            "    lamp         ON  again"
        );
    }

    #[test]
    fn the_demo_config_points_at_this_runs_sim_state_and_token() {
        let text = "[device]\nname = \"d\"\nstate_dir = \"target/x\"\n[api]\nurl = \"http://a\"\ntoken_file = \"config/demo-token\"  # c\ntimeout_ms = 800";
        let out = point_config(
            text,
            "http://127.0.0.1:5/graphql",
            Path::new("/tmp/d/state"),
            Path::new("/tmp/d/token"),
        );
        assert!(
            out.contains("url = \"http://127.0.0.1:5/graphql\""),
            "{out}"
        );
        assert!(out.contains("state_dir = \"/tmp/d/state\""), "{out}");
        assert!(out.contains("token_file = \"/tmp/d/token\""), "{out}");
        assert!(out.contains("timeout_ms = 800") && out.contains("name = \"d\""));
    }

    #[test]
    fn only_what_cargo_run_sets_is_kept_from_the_inner_build() {
        for k in [
            "CARGO_MANIFEST_DIR",
            "CARGO_PKG_NAME",
            "CARGO_CRATE_NAME",
            "CARGO_BIN_NAME",
        ] {
            assert!(is_cargo_run_var(k), "{k}");
        }
        for k in [
            "CARGO",
            "CARGO_HOME",
            "CARGO_TARGET_DIR",
            "CARGO_BUILD_JOBS",
            "PATH",
        ] {
            assert!(!is_cargo_run_var(k), "{k}");
        }
    }
}
