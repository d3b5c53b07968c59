//! A QEMU machine: OVMF (code read-only, its own copy of the variables, kept across boots like
//! a machine's NVRAM), the disk as `/dev/vda`, the USB stick (if any) as `/dev/vdb`, pure TCG,
//! the serial port on stdout. No network, or QEMU's user network with the update server at
//! [`SERVER_ADDR`] (a `guestfwd` to the host's `tandem-server`, whatever port it bound). Each boot runs until the machine powers off, the test cuts
//! the power, or a hard timeout (`TANDEM_REALBOOT_TIMEOUT`, seconds) fails it.

use std::fs;
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use super::env::{DEPS_HINT, OVMF_CODE, OVMF_CODE_SECBOOT, OVMF_VARS, OVMF_VARS_SNAKEOIL};
use super::serial::{clean, SerialLog};

/// Where the machine reaches the host's update server: `http://10.0.2.100/`. QEMU forwards
/// every connection to it to the server's port on the host's loopback, so the OS image names
/// one address however the test's server was bound (127.0.0.1, port 0).
pub const SERVER_ADDR: &str = "10.0.2.100:80";
/// The machine's SMBIOS UUID: systemd makes the (transient) machine-id of a read-only root
/// from it in a VM, so the node id stays the same across boots and slots.
const UUID: &str = "5e1f0a6c-1d2b-4c3d-8e4f-7a6e646d0001";

pub struct Vm {
    dir: PathBuf,
    disk: PathBuf,
    usb: Option<PathBuf>,
    server_port: Option<u16>,
    vars: PathBuf,
    /// Secure Boot: OVMF's Secure Boot build (it needs SMM) with the snakeoil keys enrolled.
    secure_boot: bool,
    timeout: Duration,
    boots: usize,
}

impl Vm {
    /// A machine for the disk and the USB stick, with fresh variables in `dir`, where the
    /// serial logs go too.
    pub fn new(dir: &Path, disk: &Path, usb: Option<&Path>) -> Vm {
        let vars = dir.join("OVMF_VARS.fd");
        fs::copy(OVMF_VARS, &vars).expect("OVMF vars");
        Vm {
            dir: dir.to_path_buf(),
            disk: disk.to_path_buf(),
            usb: usb.map(Path::to_path_buf),
            server_port: None,
            vars,
            secure_boot: false,
            timeout: timeout(120),
            boots: 0,
        }
    }

    /// The machine gets a network card with the update server at [`SERVER_ADDR`], forwarded
    /// to `port` on the host's loopback (by `socat`, one per connection).
    /// Its boots may take longer: a systemd OS whose agent installs a release (hashing the
    /// running slot and the new one under TCG) takes 1.5 to 2 minutes.
    pub fn with_server(mut self, port: u16) -> Vm {
        self.server_port = Some(port);
        self.timeout = timeout(360);
        self
    }

    /// The machine boots with Secure Boot on: OVMF's Secure Boot build and fresh variables
    /// with the snakeoil key in PK, KEK and db (for tests only: its private key is public).
    pub fn with_secure_boot(mut self) -> Vm {
        fs::copy(OVMF_VARS_SNAKEOIL, &self.vars).expect("OVMF snakeoil vars");
        self.secure_boot = true;
        self
    }

    /// Plugs in (`Some`) or pulls out (`None`) the USB stick for the next boots.
    pub fn set_usb(&mut self, usb: Option<&Path>) {
        self.usb = usb.map(Path::to_path_buf);
    }

    /// Boots until the machine powers off; fails on the hard timeout.
    pub fn boot(&mut self, name: &str) -> SerialLog {
        self.run(name, None)
    }

    /// Boots until a line containing `marker`, then ends the machine (as a power cut):
    /// for a boot after which the OS keeps running.
    pub fn boot_until(&mut self, name: &str, marker: &str) -> SerialLog {
        self.run(name, Some((marker, Duration::ZERO)))
    }

    /// Boots, and cuts the power (SIGKILL to QEMU) `delay` after a line containing `marker`.
    pub fn boot_and_cut(&mut self, name: &str, marker: &str, delay: Duration) -> SerialLog {
        self.run(name, Some((marker, delay)))
    }

    fn qemu(&self) -> Command {
        let mut cmd = Command::new("qemu-system-x86_64");
        let code = if self.secure_boot {
            OVMF_CODE_SECBOOT
        } else {
            OVMF_CODE
        };
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
            "-no-reboot",
            "-uuid",
            UUID,
        ])
        .args(match self.server_port {
            None => vec!["-nic".to_string(), "none".to_string()],
            // No option ROM: the firmware need not boot from the network.
            Some(port) => vec![
                "-netdev".to_string(),
                format!("user,id=net0,guestfwd=tcp:{SERVER_ADDR}-cmd:socat - TCP:127.0.0.1:{port}"),
                "-device".to_string(),
                "virtio-net-pci,netdev=net0,romfile=".to_string(),
            ],
        })
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,readonly=on,file={code}"))
        .arg("-drive")
        .arg(format!("if=pflash,format=raw,file={}", self.vars.display()))
        .arg("-drive")
        .arg(format!("file={},format=raw,if=virtio", self.disk.display()));
        if self.secure_boot {
            // OVMF's Secure Boot build needs SMM; only SMM may write its variable store, so
            // the OS cannot change the keys. (QEMU merges the two -machine options.)
            cmd.args(["-machine", "smm=on"])
                .args(["-global", "driver=cfi.pflash01,property=secure,value=on"]);
        }
        if let Some(usb) = &self.usb {
            cmd.arg("-drive").arg(format!(
                "file={},format=raw,if=virtio,readonly=on",
                usb.display()
            ));
        }
        cmd.stdin(Stdio::null())
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

/// `TANDEM_REALBOOT_TIMEOUT` (seconds), else `default` seconds.
fn timeout(default: u64) -> Duration {
    Duration::from_secs(
        std::env::var("TANDEM_REALBOOT_TIMEOUT")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(default),
    )
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
