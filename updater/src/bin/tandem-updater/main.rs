//! `tandem-updater`: the on-node agent. Parses arguments, builds an [`Agent`] from the
//! configuration file, runs one operation and maps its error to a documented exit code.

mod allocator;
mod progress;

use std::io::Write;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use updater::config::DEFAULT_CONFIG_PATH;
use updater::daemon::Daemon;
use updater::error::chain;
use updater::state::Phase;
use updater::{
    Agent, AgentConfig, BootCheck, InstallOptions, InstallRequest, NodeSnapshot, Source,
};

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
    /// Verify a bundle file, a repository directory (USB stick) or a repository URL and write
    /// it into the inactive slot, then flip the boot entry to a trial of it. A manual install
    /// sends no report to the server: only the daemon reports its installs (boot-check
    /// reports the commit or rollback that follows when [server] has a report_token_file).
    Install {
        /// A `.tandem` bundle file, or with --channel a repository directory or an
        /// http(s):// repository URL.
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
    allocator::fix_mmap_threshold();
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
                outcome.release.product, outcome.release.version, outcome.target, outcome
            );
            print(cli.json, &outcome, &text);
        }
        Cmd::BootCheck => {
            // One snapshot for the check and its report: the state is read once.
            let mut snapshot = NodeSnapshot::default();
            // The outcome is printed and the report queued before the reboot command runs:
            // `systemctl reboot` returns at once and systemd then stops this process.
            let daemon = match agent.config().server.clone() {
                Some(server) => Some(Daemon::new(&agent, server)?),
                None => None,
            };
            let check = agent.boot_check_then(&mut snapshot, |snapshot, check| {
                print(cli.json, check, &boot_check_text(check));
                if let Some(daemon) = &daemon {
                    daemon.report_boot_check_in(snapshot, check);
                }
            })?;
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
                    daemon.reboot_when_allowed(&poll)?;
                }
            } else {
                daemon.run(!no_reboot, None)?;
            }
        }
        Cmd::Status => {
            let status = agent.status()?;
            // A write in progress holds the lock; one that holds nothing was interrupted.
            let writing_now = agent.lock_is_held();
            print(cli.json, &status, &describe_status(&status, writing_now));
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

fn describe_status(status: &updater::Status, writing_now: bool) -> String {
    let mut out = format!(
        "booted: slot {}; next boot: {}; backend: {}\n",
        status.booted,
        status
            .next_boot
            .map_or("nothing bootable".into(), |s| format!("slot {s}")),
        status.backend
    );
    let being_written = match &status.state.phase {
        Phase::Writing {
            target, release, ..
        } => Some((*target, release)),
        _ => None,
    };
    for slot in &status.slots {
        let release = match (&slot.release, being_written) {
            (_, Some((target, r))) if target == slot.slot => {
                format!("{} {} partly written, not bootable", r.product, r.version)
            }
            (Some(r), _) => format!("{} {}", r.product, r.version),
            (None, _) if slot.boot.is_bootable() => {
                "an image the updater did not write (factory)".into()
            }
            (None, _) => "no image the updater wrote, not bootable".into(),
        };
        out.push_str(&format!(
            "slot {}: {release}{} [{}] partuuid {}\n",
            slot.slot,
            if slot.committed { ", committed" } else { "" },
            slot.boot,
            slot.partuuid
        ));
        if let Some(hash) = &slot.root_hash {
            out.push_str(&format!("  verity root hash {hash}\n"));
        }
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
    out.push_str(&describe_pairs(&status.partition_pairs));
    if let Some(wait) = &status.state.reboot_wait {
        out.push_str(&format!("reboot: {}\n", wait.describe()));
    }
    if let Some(lease) = &status.state.lease {
        out.push_str(&format!(
            "reboot lease: held in group {} since {}\n",
            lease.group, lease.taken_at
        ));
    }
    if let Some(enrollment) = &status.enrollment {
        out.push_str(&format!("{}\n", enrollment.describe()));
    }
    out.push_str(&format!(
        "state: {}; security floor {}",
        describe_phase(&status.state.phase, writing_now),
        status.counters.security_floor
    ));
    out
}

/// Each further partition pair: both partitions, the booted slot's marked, and the image the
/// agent wrote into each (a short SHA-256, as `sha256sum` prints it, cut to 12 digits).
fn describe_pairs(pairs: &[updater::PairStatus]) -> String {
    let mut out = String::new();
    for pair in pairs {
        out.push_str(&format!(
            "pair {}:
",
            pair.name
        ));
        for part in &pair.partitions {
            let holds = match &part.written {
                Some(w) => format!(
                    "{} {}{}, asset {}, {} bytes, sha256 {}",
                    w.product,
                    w.version,
                    if w.complete { "" } else { " partly written" },
                    w.asset,
                    w.size,
                    w.sha256.get(..12).unwrap_or(&w.sha256)
                ),
                None => "unknown (not written by the updater)".into(),
            };
            out.push_str(&format!(
                "  {} (slot {}{}): {holds}\n",
                part.partition,
                part.slot,
                if part.booted { ", booted" } else { "" }
            ));
        }
    }
    out
}

/// The agent's phase for a reader; `writing_now` tells a write in progress from one that
/// was interrupted (killed, power cut), which the next install resumes.
fn describe_phase(phase: &Phase, writing_now: bool) -> String {
    let named = |r: &updater::state::Release| format!("{} {}", r.product, r.version);
    match phase {
        Phase::Idle => "idle".into(),
        Phase::Writing {
            target, release, ..
        } if writing_now => format!("writing {} into slot {target}", named(release)),
        Phase::Writing {
            target, release, ..
        } => format!(
            "interrupted while writing {} into slot {target}: run install again (it resumes)",
            named(release)
        ),
        Phase::Written {
            target,
            release,
            activated: true,
        } => format!(
            "{} written to slot {target}, boots next as a trial",
            named(release)
        ),
        Phase::Written {
            target, release, ..
        } => format!(
            "{} staged in slot {target}: run `tandem-updater activate` to boot it",
            named(release)
        ),
        Phase::Trial { target, release } => format!(
            "{} in its trial boot in slot {target}: boot-check commits or rolls it back",
            named(release)
        ),
        Phase::Committed { slot, release } => {
            format!("{} committed in slot {slot}", named(release))
        }
        Phase::RolledBack {
            slot,
            release,
            reason,
        } => format!("{} rolled back from slot {slot}: {reason}", named(release)),
    }
}

/// What `boot-check` says it did.
fn boot_check_text(check: &BootCheck) -> String {
    match check {
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
    }
}
