//! A headless Chromium (Debian's `chromium`) driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: JSON messages ended by a NUL byte, commands on the browser's
//! fd 3, answers on its fd 4), so the tests need no WebSocket client or driver crate. A shell
//! moves the two pipes from stdin and stdout to fds 3 and 4 before it execs the browser.
//!
//! A missing `chromium` fails the test with how to install it (CONTRIBUTING.md §11: a missing
//! tool is an error, never a skip; `scripts/test.sh` installs it).
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, ChildStdout, Command, Stdio};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use base64::Engine;
use serde_json::{json, Value};
use tempfile::TempDir;

/// How long one protocol command may take. Generous: CI runs this beside two emulated
/// machines booting on the same two cores.
const COMMAND_TIMEOUT: Duration = Duration::from_secs(60);

/// How many times a browser that never opens its first page is started afresh. A start that
/// hangs is Chromium's (seen once in CI: no answer to the first command within 30 s), not the
/// dashboard's; every failed start is printed with what the browser logged.
const STARTS: u32 = 2;

/// The flags of a browser with no network beyond what the page asks for and no profile of
/// its own (the machine running the tests may have no network at all).
const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--password-store=basic",
    "--use-mock-keychain",
    "--disable-extensions",
    "--disable-breakpad",
    "--no-default-browser-check",
    "--mute-audio",
    "--remote-debugging-pipe",
];

/// One browser with one page attached.
pub struct Browser {
    child: Child,
    commands: ChildStdin,
    messages: Receiver<Value>,
    next_id: u64,
    session: String,
    errors: Vec<String>,
    profile: TempDir,
}

/// `chromium` on `PATH`, or a failure saying how to get it.
fn chromium() -> PathBuf {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .map(|dir| dir.join("chromium"))
        .find(|p| p.is_file())
        .unwrap_or_else(|| {
            panic!(
                "chromium is missing: the dashboard test drives a real browser; install \
                 Debian's `chromium` package (scripts/test.sh does: apt-get install chromium)"
            )
        })
}

/// A new profile directory, on tmpfs where there is one: a profile on a disk busy with
/// CI's writes makes Chromium's start wait on every `fsync` of its first files.
fn profile_dir() -> TempDir {
    let shm = Path::new("/dev/shm");
    let mut builder = tempfile::Builder::new();
    builder.prefix("tandem-chromium-");
    if shm.is_dir() {
        builder.tempdir_in(shm).unwrap()
    } else {
        builder.tempdir().unwrap()
    }
}

/// The browser's messages as they arrive on `answers` (JSON ended by a NUL byte).
fn read_messages(answers: ChildStdout) -> Receiver<Value> {
    let (tx, messages) = mpsc::channel();
    std::thread::spawn(move || {
        let mut reader = BufReader::new(answers);
        let mut buf = Vec::new();
        while reader.read_until(0, &mut buf).is_ok_and(|n| n > 0) {
            if buf.last() == Some(&0) {
                buf.pop();
            }
            if let Ok(v) = serde_json::from_slice::<Value>(&buf) {
                if tx.send(v).is_err() {
                    break;
                }
            }
            buf.clear();
        }
    });
    messages
}

impl Browser {
    /// Starts the browser with a fresh profile and opens a blank page of `width`×`height`.
    pub fn launch(width: u32, height: u32) -> Browser {
        for start in 1..STARTS {
            match Browser::start(width, height) {
                Ok(browser) => return browser,
                Err(e) => {
                    eprintln!("browser start {start} of {STARTS} failed, starting again: {e}")
                }
            }
        }
        Browser::start(width, height).unwrap_or_else(|e| panic!("{e}"))
    }

    /// One start: the browser process and its first page, or what went wrong.
    fn start(width: u32, height: u32) -> Result<Browser, String> {
        let profile = profile_dir();
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(r#"exec "$0" "$@" 3<&0 4>&1 0</dev/null 1>/dev/null"#)
            .arg(chromium())
            .args(FLAGS)
            .arg(format!("--user-data-dir={}", profile.path().display()))
            .arg(format!("--window-size={width},{height}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::from(
                std::fs::File::create(profile.path().join("stderr.log")).unwrap(),
            ))
            .spawn()
            .unwrap();
        let commands = child.stdin.take().unwrap();
        let messages = read_messages(child.stdout.take().unwrap());
        let mut browser = Browser {
            child,
            commands,
            messages,
            next_id: 0,
            session: String::new(),
            errors: Vec::new(),
            profile,
        };
        let target =
            browser.try_send("Target.createTarget", json!({"url": "about:blank"}), None)?;
        let attached = browser.call_browser(
            "Target.attachToTarget",
            json!({"targetId": target["targetId"], "flatten": true}),
        );
        browser.session = attached["sessionId"].as_str().unwrap().to_owned();
        browser.call("Page.enable", json!({}));
        browser.call("Runtime.enable", json!({}));
        browser.call("Log.enable", json!({}));
        Ok(browser)
    }

    /// Script exceptions, console errors and browser log errors (a Content-Security-Policy
    /// violation is one) seen so far.
    pub fn errors(&self) -> Vec<String> {
        self.errors.clone()
    }

    /// Keeps an event if it reports an error.
    fn note(&mut self, event: &Value) {
        let params = &event["params"];
        let error = match event["method"].as_str() {
            Some("Runtime.exceptionThrown") => Some(params["exceptionDetails"].to_string()),
            Some("Runtime.consoleAPICalled") if params["type"] == "error" => {
                Some(params["args"].to_string())
            }
            Some("Log.entryAdded") if params["entry"]["level"] == "error" => {
                Some(params["entry"].to_string())
            }
            _ => None,
        };
        self.errors.extend(error);
    }

    /// Sends a command and waits for its answer, keeping the events that arrive meanwhile.
    fn try_send(
        &mut self,
        method: &str,
        params: Value,
        session: Option<String>,
    ) -> Result<Value, String> {
        self.next_id += 1;
        let id = self.next_id;
        let mut msg = json!({"id": id, "method": method, "params": params});
        if let Some(s) = session {
            msg["sessionId"] = json!(s);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.commands
            .write_all(&bytes)
            .map_err(|e| self.failure(&format!("sending {method}: {e}")))?;
        let deadline = Instant::now() + COMMAND_TIMEOUT;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            let answer = self.messages.recv_timeout(left).map_err(|e| match e {
                RecvTimeoutError::Timeout => self.failure(&format!(
                    "chromium did not answer {method} within {COMMAND_TIMEOUT:?}"
                )),
                RecvTimeoutError::Disconnected => self.failure(&format!(
                    "chromium closed its pipe before answering {method}"
                )),
            })?;
            if answer.get("method").is_some() {
                self.note(&answer);
                continue;
            }
            if answer["id"] == json!(id) {
                assert!(
                    answer.get("error").is_none(),
                    "{method} failed: {}",
                    answer["error"]
                );
                return Ok(answer["result"].clone());
            }
        }
    }

    /// `what` went wrong, with whether the browser still runs and the end of its log.
    fn failure(&mut self, what: &str) -> String {
        let state = match self.child.try_wait() {
            Ok(Some(status)) => format!("it exited: {status}"),
            _ => "it still runs".to_owned(),
        };
        let log =
            std::fs::read_to_string(self.profile.path().join("stderr.log")).unwrap_or_default();
        // Its complaints about the missing D-Bus come at every start and say nothing.
        let said: Vec<&str> = log.lines().filter(|l| !l.contains("dbus/")).collect();
        let tail = &said[said.len().saturating_sub(20)..];
        format!(
            "{what} ({state}); the last lines it logged:\n{}",
            tail.join("\n")
        )
    }

    fn send(&mut self, method: &str, params: Value, session: Option<String>) -> Value {
        self.try_send(method, params, session)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    fn call_browser(&mut self, method: &str, params: Value) -> Value {
        self.send(method, params, None)
    }

    /// A command to the page.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        let session = self.session.clone();
        self.send(method, params, Some(session))
    }

    /// Opens `url` in the page.
    pub fn navigate(&mut self, url: &str) {
        let r = self.call("Page.navigate", json!({"url": url}));
        assert!(r.get("errorText").is_none(), "loading {url}: {r}");
    }

    /// The value of a JavaScript expression (awaited if a promise); fails on an exception.
    pub fn eval(&mut self, expression: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expression, "returnByValue": true, "awaitPromise": true}),
        );
        assert!(
            r.get("exceptionDetails").is_none(),
            "{expression} threw: {}",
            r["exceptionDetails"]
        );
        r["result"]["value"].clone()
    }

    /// Evaluates `expression` until it is truthy (20 s at most), and returns its value.
    pub fn wait_for(&mut self, expression: &str, what: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let v = self.eval(expression);
            if !matches!(v, Value::Null | Value::Bool(false)) && v != json!("") && v != json!(0) {
                return v;
            }
            assert!(Instant::now() < deadline, "the page never showed {what}");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Clicks the middle of the first element matching `selector` with the mouse.
    pub fn click(&mut self, selector: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        let at = self.eval(&format!(
            "(() => {{ const e = document.querySelector({quoted}); if (!e) return null; \
             e.scrollIntoView({{block: 'center'}}); const r = e.getBoundingClientRect(); \
             return [r.x + r.width / 2, r.y + r.height / 2]; }})()"
        ));
        let (x, y) = (at[0].as_f64(), at[1].as_f64());
        let (Some(x), Some(y)) = (x, y) else {
            panic!("nothing to click at {selector}");
        };
        for kind in ["mousePressed", "mouseReleased"] {
            self.call(
                "Input.dispatchMouseEvent",
                json!({"type": kind, "x": x, "y": y, "button": "left", "clickCount": 1}),
            );
        }
    }

    /// Focuses the field `selector` and types `text` as keyboard input, then checks the field
    /// holds it. Focus comes from the page's own `focus()`, not a click: a click computed
    /// while the layout still moves (after a viewport change, under load) can land beside it.
    pub fn type_into(&mut self, selector: &str, text: &str) {
        let quoted = serde_json::to_string(selector).unwrap();
        self.eval(&format!("document.querySelector({quoted}).focus()"));
        self.call("Input.insertText", json!({"text": text}));
        let value = self.eval(&format!("document.querySelector({quoted}).value"));
        assert_eq!(value, json!(text), "the text typed into {selector}");
    }

    /// Renders the page in a `width`×`height` viewport (`mobile`: as a phone, honouring the
    /// viewport meta tag), the whole page beyond it included, and saves it as a PNG at `path`.
    pub fn screenshot(&mut self, path: &Path, (width, height): (u32, u32), mobile: bool) {
        self.call(
            "Emulation.setDeviceMetricsOverride",
            json!({"width": width, "height": height, "deviceScaleFactor": 1, "mobile": mobile}),
        );
        let full = self
            .eval("document.documentElement.scrollHeight")
            .as_u64()
            .unwrap()
            .clamp(u64::from(height), 8000);
        let clip = json!({"x": 0, "y": 0, "width": width, "height": full, "scale": 1});
        let shot = self.call(
            "Page.captureScreenshot",
            json!({"format": "png", "captureBeyondViewport": true, "clip": clip}),
        );
        let png = base64::engine::general_purpose::STANDARD
            .decode(shot["data"].as_str().unwrap())
            .unwrap();
        assert!(png.starts_with(b"\x89PNG"), "a PNG");
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, png).unwrap();
        self.call("Emulation.clearDeviceMetricsOverride", json!({}));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        // Closing through the protocol lets Chromium end its helper processes itself.
        self.next_id += 1;
        let close = json!({"id": self.next_id, "method": "Browser.close"}).to_string();
        let _ = self.commands.write_all(format!("{close}\0").as_bytes());
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
