//! `tandem-updater`: the on-node agent. Parses arguments, builds an [`Agent`] from the
//! configuration file, runs one operation and maps its error to a documented exit code.

mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use updater::config::DEFAULT_CONFIG_PATH;
use updater::daemon::Daemon;
use updater::error::chain;
use updater::{Agent, AgentConfig, BootCheck, InstallOptions, InstallRequest, Source};

#[derive(Parser)]
#[command(
    version,
    about = "Tandem's on-node agent: verified atomic A/B OS updates"
)]
struct Cli {
    /// The agent's configuration file.
    #[arg(long, global = true, default_value = DEFAULT_CONFIG_PATH)]
    config: PathBuf,
    /// Print results as JSON on stdout.
    #[arg(long, global = true)]
    json: bool,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// Verify a bundle file or a repository directory (USB stick) and write it into the
    /// inactive slot, then flip the boot entry to a trial of it.
    Install {
        /// A `.tandem` bundle file, or a repository directory with --channel.
        source: PathBuf,
        /// The channel to follow in a repository.
        #[arg(long)]
        channel: Option<String>,
        /// Install even a version that rolled back on this node before.
        #[arg(long)]
        force: bool,
        /// Write and verify now; flip later with `activate`.
        #[arg(long)]
        stage: bool,
    },
    /// Run once per boot: judge a slot in trial (health checks), commit or roll back.
    BootCheck,
    /// Flip the boot entry to an image written with `install --stage`.
    Activate,
    /// Go back to the other slot when it holds a committed image (or the factory image).
    Rollback {
        /// Do not run the reboot command.
        #[arg(long)]
        no_reboot: bool,
        /// Go back even to a security version below the node's floor.
        #[arg(long)]
        force: bool,
    },
    /// Show the slots, their boot state and releases, and the agent's state.
    Status,
    /// Poll the `[server]` of the configuration, install what the channel offers when the
    /// rollout selects this node, report outcomes, reboot into the new slot.
    Daemon {
        /// Poll once and exit (cron, tests).
        #[arg(long)]
        once: bool,
        /// Do not run the reboot command after an install.
        #[arg(long)]
        no_reboot: bool,
    },
}

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(proto::term::colour(&std::io::stderr()))
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .init();
    let cli = Cli::parse();
    match run(&cli) {
        Ok(code) => code,
        Err(error) => {
            eprintln!("tandem-updater: {}", chain(&error));
            if cli.json {
                let body = serde_json::json!({"error": {
                    "code": error.code(),
                    "message": chain(&error),
                    "exit_code": error.exit_code(),
                }});
                print(true, &body, "");
            }
            ExitCode::from(error.exit_code())
        }
    }
}

/// Exit code of a `boot-check` that rolled the slot back (docs/updater.md).
const ROLLED_BACK: u8 = updater::error::ExitClass::RolledBack as u8;

fn run(cli: &Cli) -> updater::Result<ExitCode> {
    let mut agent = Agent::open(AgentConfig::load(&cli.config)?)?;
    agent.write_options.progress = Some(std::sync::Arc::new(progress::Bar::new()));
    // Every command that changes anything holds the state directory's lock (the daemon
    // takes it per poll, so a boot-check is never locked out for long).
    let _lock = match cli.command {
        Cmd::Status | Cmd::Daemon { .. } => None,
        _ => agent.lock()?,
    };
    match &cli.command {
        Cmd::Install {
            source,
            channel,
            force,
            stage,
        } => {
            let request = InstallRequest {
                source: Source::parse(source)?,
                channel: channel.clone(),
                options: InstallOptions {
                    force: *force,
                    stage: *stage,
                },
            };
            let outcome = agent.install(&request)?;
            let verb = if outcome.activated {
                "installed; boots next as a trial"
            } else {
                "staged; run `tandem-updater activate` to boot it"
            };
            let text = format!(
                "{} {} written to slot {} ({}): {verb}",
                outcome.release.product, outcome.release.version, outcome.target, outcome.report
            );
            print(cli.json, &outcome, &text);
        }
        Cmd::BootCheck => {
            let check = agent.boot_check()?;
            let text = match &check {
                BootCheck::Nothing { booted } => format!("slot {booted}: no update in trial"),
                BootCheck::Committed {
                    slot,
                    version,
                    checks: 0,
                } => format!(
                    "slot {slot} ({version}) committed WITHOUT health checks: none configured ([[health]] in the configuration)"
                ),
                BootCheck::Committed { slot, version, .. } => {
                    format!("slot {slot} ({version}) passed its health checks: committed")
                }
                BootCheck::RolledBack {
                    slot,
                    version,
                    reason,
                } => format!("slot {slot} ({version}) rolled back: {reason}"),
                BootCheck::FirmwareRolledBack { slot, version } => {
                    format!("slot {slot} ({version}) never came up: the firmware rolled back")
                }
                BootCheck::UnrecordedTrial { slot, booted } if slot == booted => format!(
                    "slot {slot} booted as a trial of nothing the agent wrote: marked bad, rebooting into the other slot"
                ),
                BootCheck::UnrecordedTrial { slot, .. } => format!(
                    "slot {slot} was left in trial with nothing the agent wrote: marked bad"
                ),
            };
            print(cli.json, &check, &text);
            if let Some(server) = agent.config().server.clone() {
                Daemon::new(&agent, server)?.report_boot_check(&check);
            }
            if !matches!(
                check,
                BootCheck::Nothing { .. } | BootCheck::Committed { .. }
            ) {
                return Ok(ExitCode::from(ROLLED_BACK));
            }
        }
        Cmd::Activate => {
            let slot = agent.activate()?;
            print(
                cli.json,
                &slot,
                &format!("slot {slot} boots next as a trial"),
            );
        }
        Cmd::Rollback { no_reboot, force } => {
            let slot = agent.rollback(!no_reboot, *force)?;
            print(
                cli.json,
                &slot,
                &format!("slot {slot} boots next as a trial"),
            );
        }
        Cmd::Daemon { once, no_reboot } => {
            let server = agent.config().server.clone().ok_or_else(|| {
                updater::Error::Usage(format!(
                    "{} has no [server] section: nothing to poll",
                    cli.config.display()
                ))
            })?;
            let mut daemon = Daemon::new(&agent, server)?;
            if *once {
                let poll = daemon.poll_once()?;
                print(cli.json, &poll.to_string(), &poll.to_string());
                if poll.wants_reboot() && !no_reboot {
                    daemon.reboot(&poll)?;
                }
            } else {
                daemon.run(!no_reboot, None)?;
            }
        }
        Cmd::Status => {
            let status = agent.status()?;
            print(cli.json, &status, &describe_status(&status));
        }
    }
    Ok(ExitCode::SUCCESS)
}

/// Prints the result; a closed stdout (`| head`) ends the output quietly.
fn print(json: bool, value: &impl serde::Serialize, text: &str) {
    let out = if json {
        match serde_json::to_string_pretty(value) {
            Ok(out) => out,
            Err(e) => {
                eprintln!("tandem-updater: cannot encode JSON: {e}");
                return;
            }
        }
    } else {
        text.to_owned()
    };
    let _ = writeln!(std::io::stdout().lock(), "{out}");
}

fn describe_status(status: &updater::Status) -> String {
    let mut out = format!(
        "booted: slot {}; next boot: {}; backend: {}\n",
        status.booted,
        status
            .next_boot
            .map_or("nothing bootable".into(), |s| format!("slot {s}")),
        status.backend
    );
    for slot in &status.slots {
        let release = match &slot.release {
            Some(r) => format!("{} {}", r.product, r.version),
            None if slot.boot.is_bootable() => {
                "an image the updater did not write (factory)".into()
            }
            None => "no image the updater wrote, not bootable".into(),
        };
        out.push_str(&format!(
            "slot {}: {release}{} [{}] partuuid {}\n",
            slot.slot,
            if slot.committed { ", committed" } else { "" },
            slot.boot,
            slot.partuuid
        ));
        for file in &slot.boot_files {
            let about = file.version.as_deref().or(file.text.as_deref());
            out.push_str(&format!(
                "  {}: {} bytes, sha256 {}{}\n",
                file.file.file_name(),
                file.size,
                file.sha256.to_hex(),
                about.map(|a| format!(" ({a})")).unwrap_or_default()
            ));
        }
    }
    out.push_str(&format!(
        "state: {}; security floor {}",
        serde_json::to_string(&status.state.phase).unwrap_or_default(),
        status.counters.security_floor
    ));
    out
}
