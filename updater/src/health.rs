//! Health checks run in the trial boot of a new slot: commands that must exit 0 and HTTP
//! probes that must answer 2xx, each with its own timeout, all within one overall deadline.
//!
//! The first failure ends the run: one broken check is enough to reject a slot, and the
//! reason is what the operator reads in the report.

use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

use crate::config::{HealthCheck, HealthProbe};

/// How often a running check command is polled for exit.
const POLL_INTERVAL: Duration = Duration::from_millis(20);

/// Why the slot was judged unhealthy.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum HealthFailure {
    #[error("health check {check}: {reason}")]
    Failed { check: String, reason: String },
    #[error("health checks did not finish within the deadline of {}", readable(*.0))]
    Deadline(Duration),
}

/// Runs every check in order; `Ok` only when all passed before `deadline`.
pub fn run_checks(checks: &[HealthCheck], deadline: Duration) -> Result<(), HealthFailure> {
    let start = Instant::now();
    for check in checks {
        let remaining = deadline
            .checked_sub(start.elapsed())
            .filter(|left| !left.is_zero())
            .ok_or(HealthFailure::Deadline(deadline))?;
        let limit = check.timeout.min(remaining);
        tracing::info!(check = %describe(&check.probe), ?limit, "running health check");
        // A check cut short by the overall deadline failed by the deadline, not by its
        // own timeout (whose remainder, `1.999s`, would mean nothing to the operator).
        run_one(&check.probe, limit).map_err(|reason| {
            if start.elapsed() >= deadline {
                HealthFailure::Deadline(deadline)
            } else {
                HealthFailure::Failed {
                    check: describe(&check.probe),
                    reason,
                }
            }
        })?;
    }
    Ok(())
}

fn describe(probe: &HealthProbe) -> String {
    match probe {
        HealthProbe::Exec(argv) => format!("`{}`", argv.join(" ")),
        HealthProbe::Http(url) => format!("GET {url}"),
    }
}

fn run_one(probe: &HealthProbe, limit: Duration) -> Result<(), String> {
    match probe {
        HealthProbe::Exec(argv) => run_command(argv, limit),
        HealthProbe::Http(url) => probe_http(url, limit),
    }
}

fn run_command(argv: &[String], limit: Duration) -> Result<(), String> {
    let (program, args) = argv.split_first().ok_or("empty command")?;
    // Its own process group, so a timeout kills the whole check (`sh -c "sleep 20; true"`
    // must not leave its sleep behind).
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::null())
        .process_group(0)
        .spawn()
        .map_err(|e| format!("cannot start: {e}"))?;
    let start = Instant::now();
    loop {
        if let Some(status) = child.try_wait().map_err(|e| e.to_string())? {
            return if status.success() {
                Ok(())
            } else {
                Err(format!("exited with {status}"))
            };
        }
        if start.elapsed() >= limit {
            // Best effort: the group may have exited between the poll and the kill.
            let group = rustix::process::Pid::from_child(&child);
            let _ = rustix::process::kill_process_group(group, rustix::process::Signal::KILL);
            let _ = child.wait();
            return Err(format!("timed out after {}", readable(limit)));
        }
        thread::sleep(POLL_INTERVAL);
    }
}

/// A duration as an operator writes it (`1.5s`, `2m`), to the millisecond.
pub fn readable(duration: Duration) -> String {
    let millis = Duration::from_millis(duration.as_millis().try_into().unwrap_or(u64::MAX));
    humantime::format_duration(millis).to_string()
}

fn probe_http(url: &str, limit: Duration) -> Result<(), String> {
    repo_client::http::probe(url, limit)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpListener;

    fn exec(argv: &[&str], timeout: Duration) -> HealthCheck {
        HealthCheck {
            probe: HealthProbe::Exec(argv.iter().map(|s| s.to_string()).collect()),
            timeout,
        }
    }

    /// A one-shot HTTP server on loopback answering every request with `status`.
    fn serve_once(status: &'static str) -> String {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/healthz", listener.local_addr().unwrap());
        thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            let mut request = [0u8; 1024];
            let _ = stream.read(&mut request);
            let response = format!("HTTP/1.1 {status}\r\ncontent-length: 0\r\n\r\n");
            stream.write_all(response.as_bytes()).unwrap();
        });
        url
    }

    #[test]
    fn passing_commands_pass() {
        let checks = [exec(&["true"], Duration::from_secs(5))];
        assert_eq!(run_checks(&checks, Duration::from_secs(10)), Ok(()));
    }

    #[test]
    fn a_failing_command_names_itself_and_its_exit() {
        let checks = [
            exec(&["true"], Duration::from_secs(5)),
            exec(&["sh", "-c", "exit 7"], Duration::from_secs(5)),
        ];
        let failure = run_checks(&checks, Duration::from_secs(10)).unwrap_err();
        let text = failure.to_string();
        assert!(
            text.contains("sh -c exit 7") && text.contains("7"),
            "{text}"
        );
    }

    #[test]
    fn a_hanging_command_is_killed_at_its_timeout() {
        let start = Instant::now();
        let checks = [exec(&["sleep", "30"], Duration::from_millis(200))];
        let failure = run_checks(&checks, Duration::from_secs(10)).unwrap_err();
        assert!(failure.to_string().contains("timed out"), "{failure}");
        assert!(start.elapsed() < Duration::from_secs(10));
    }

    #[test]
    fn a_timeout_kills_the_checks_children_too() {
        let dir = tempfile::tempdir().unwrap();
        let pid_file = dir.path().join("pid");
        let script = format!("sleep 30 & echo $! > {}; wait", pid_file.display());
        let checks = [exec(&["sh", "-c", &script], Duration::from_millis(500))];
        run_checks(&checks, Duration::from_secs(10)).unwrap_err();
        let pid = std::fs::read_to_string(&pid_file).unwrap();
        let stat = format!("/proc/{}/stat", pid.trim());
        // Killed: gone, or a zombie until its new parent reaps it.
        let alive = || {
            std::fs::read_to_string(&stat).is_ok_and(|s| {
                s.rsplit(')')
                    .next()
                    .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
            })
        };
        let start = Instant::now();
        while alive() && start.elapsed() < Duration::from_secs(5) {
            thread::sleep(Duration::from_millis(20));
        }
        assert!(
            !alive(),
            "the check's child {} outlived the timeout",
            pid.trim()
        );
    }

    #[test]
    fn the_overall_deadline_bounds_every_check() {
        let checks = [
            exec(&["sleep", "30"], Duration::from_secs(60)),
            exec(&["true"], Duration::from_secs(60)),
        ];
        let failure = run_checks(&checks, Duration::from_millis(300)).unwrap_err();
        assert_eq!(
            failure.to_string(),
            "health checks did not finish within the deadline of 300ms"
        );
    }

    #[test]
    fn a_missing_program_fails() {
        let checks = [exec(&["/nonexistent/check"], Duration::from_secs(1))];
        let failure = run_checks(&checks, Duration::from_secs(1)).unwrap_err();
        assert!(failure.to_string().contains("cannot start"), "{failure}");
    }

    #[test]
    fn http_probes_need_a_2xx_answer() {
        let ok = HealthCheck {
            probe: HealthProbe::Http(serve_once("200 OK")),
            timeout: Duration::from_secs(5),
        };
        assert_eq!(run_checks(&[ok], Duration::from_secs(10)), Ok(()));
        let bad = HealthCheck {
            probe: HealthProbe::Http(serve_once("503 Service Unavailable")),
            timeout: Duration::from_secs(5),
        };
        let failure = run_checks(&[bad], Duration::from_secs(10)).unwrap_err();
        assert!(failure.to_string().contains("503"), "{failure}");
    }
}
