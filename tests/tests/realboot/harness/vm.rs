//! A QEMU machine: OVMF (code read-only, its own copy of the variables, kept across boots like
//! a machine's NVRAM), the disk as `/dev/vda`, the USB stick as `/dev/vdb`, no network, pure
//! TCG, the serial port on stdout. Each boot runs until the machine powers off, the test cuts
//! the power, or a hard timeout (`TANDEM_REALBOOT_TIMEOUT`, seconds) fails it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::env::{DEPS_HINT, OVMF_CODE, OVMF_VARS};
use super::serial::{clean, SerialLog};

pub struct Vm {
    dir: PathBuf,
    disk: PathBuf,
    usb: PathBuf,
    vars: PathBuf,
    timeout: Duration,
    boots: usize,
}

impl Vm {
    /// A machine for the disk and the USB stick, with fresh variables in `dir`, where the
    /// serial logs go too.
    pub fn new(dir: &Path, disk: &Path, usb: &Path) -> Vm {
        let vars = dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).expect("OVMF vars");
        Vm {
            dir: dir.to_path_buf(),
            disk: disk.to_path_buf(),
            usb: usb.to_path_buf(),
            vars,
            timeout: Duration::from_secs(
                std::env::var("TANDEM_REALBOOT_TIMEOUT")
                    .ok()
                    .and_then(|s| s.parse().ok())
                    .unwrap_or(120),
            ),
            boots: 0,
        }
    }

    /// Boots until the machine powers off; fails on the hard timeout.
    pub fn boot(&mut self, name: &str) -> SerialLog {
        self.run(name, None)
    }

    /// Boots, and cuts the power (SIGKILL to QEMU) `delay` after a line containing `marker`.
    pub fn boot_and_cut(&mut self, name: &str, marker: &str, delay: Duration) -> SerialLog {
        self.run(name, Some((marker, delay)))
    }

    fn qemu(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        cmd.args([
            "-nodefaults",
            "-machine",
            "q35,accel=tcg",
            "-m",
            "512",
            "-smp",
            "1",
        ])
        .args([
            "-nographic",
            "-serial",
            "mon:stdio",
            "-nic",
            "none",
            "-no-reboot",
        ])
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={OVMF_CODE}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", self.vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", self.disk.display()))
        .arg("-drive")
        .arg(format!(
            "file={},format=raw,if=virtio,readonly=on",
            self.usb.display()
        ))
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
        cmd
    }

    fn run(&mut self, name: &str, cut: Option<(&str, Duration)>) -> SerialLog {
        self.boots += 1;
        let name = format!("boot-{:02}-{name}", self.boots);
        let path = self.dir.join(format!("{name}.log"));
        let started = Instant::now();
        let mut child = self
            .qemu()
            .spawn()
            .unwrap_or_else(|e| panic!("cannot start QEMU: {e} ({DEPS_HINT})"));
        let (tx, rx) = mpsc::channel::<String>();
        let stdout = child.stdout.take().expect("stdout");
        let stderr = child.stderr.take().expect("stderr");
        let tx2 = tx.clone();
        let readers = [
            std::thread::spawn(move || read_lines(stdout, &tx)),
            std::thread::spawn(move || read_lines(stderr, &tx2)),
        ];
        let mut log = fs::File::create(&path).expect("serial log file");
        let mut text = String::new();
        let deadline = started + self.timeout;
        let mut cut_at: Option<Instant> = None;
        let mut killed = false;
        let mut timed_out = false;
        loop {
            let now = Instant::now();
            if let Some(at) = cut_at {
                if now >= at && !killed {
                    let _ = child.kill();
                    killed = true;
                    text.push_str("TANDEM-HOST power cut (QEMU killed)\n");
                }
            }
            if now >= deadline && !killed {
                let _ = child.kill();
                killed = true;
                timed_out = true;
            }
            let wait = cut_at
                .filter(|_| !killed)
                .map_or(Duration::from_millis(200), |at| {
                    at.saturating_duration_since(now)
                })
                .min(Duration::from_millis(200));
            match rx.recv_timeout(wait) {
                Ok(line) => {
                    let line = clean(&line);
                    let _ = writeln!(log, "{:7.2} {line}", started.elapsed().as_secs_f64());
                    if let Some((marker, delay)) = cut {
                        if cut_at.is_none() && line.contains(marker) {
                            cut_at = Some(Instant::now() + delay);
                        }
                    }
                    text.push_str(&line);
                    text.push('\n');
                }
                Err(mpsc::RecvTimeoutError::Timeout) => {}
                Err(mpsc::RecvTimeoutError::Disconnected) => break,
            }
        }
        let status = child.wait().expect("wait QEMU");
        for r in readers {
            let _ = r.join();
        }
        let log = SerialLog {
            name,
            path,
            text,
            elapsed: started.elapsed(),
        };
        if timed_out {
            log.fail(&format!(
                "no power-off within {:?}: QEMU killed",
                self.timeout
            ));
        }
        if cut.is_some() && !killed {
            log.fail("the machine powered off before the power cut");
        }
        if !killed && !status.success() {
            log.fail(&format!("QEMU exited with {status}"));
        }
        eprintln!("realboot: {} took {:.1?}", log.name, log.elapsed);
        log
    }
}

fn read_lines(stream: impl Read, tx: &mpsc::Sender<String>) {
    let mut reader = BufReader::new(stream);
    let mut buf = Vec::new();
    loop {
        buf.clear();
        match reader.read_until(b'\n', &mut buf) {
            Ok(0) | Err(_) => return,
            Ok(_) => {
                if tx.send(String::from_utf8_lossy(&buf).into_owned()).is_err() {
                    return;
                }
            }
        }
    }
}
