//! A headless Chromium driven over WebDriver (Debian's `chromium` and `chromium-driver`),
//! for the viewer tests and the viewer benchmark: a small synchronous W3C WebDriver client
//! (sessions, navigation, scripts, pointer and key actions, screenshots, the browser's
//! console log), plus `prof serve` run as a child process.
//!
//! Nothing here skips: a missing browser or driver is a panic that names the packages.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{json, Value};

const INSTALL: &str =
    "install them with `apt-get install -y chromium chromium-driver` (scripts/test.sh does)";

/// The first of `names` found on PATH or in /usr/bin, /usr/lib/chromium.
fn find_program(names: &[&str]) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    let mut dirs: Vec<PathBuf> = std::env::split_paths(&path).collect();
    dirs.push("/usr/bin".into());
    dirs.push("/usr/lib/chromium".into());
    for n in names {
        for d in &dirs {
            let p = d.join(n);
            if p.is_file() {
                return Some(p);
            }
        }
    }
    None
}

/// `chromium` and `chromedriver`, or a panic naming the packages to install.
pub fn chromium_paths() -> (PathBuf, PathBuf) {
    let chromium = find_program(&["chromium", "chromium-browser"]).unwrap_or_else(|| {
        panic!(
            "the viewer tests need headless Chromium, and `chromium` is not installed: {INSTALL}"
        )
    });
    let driver = find_program(&["chromedriver"]).unwrap_or_else(|| {
        panic!(
            "the viewer tests drive Chromium with chromedriver, which is not installed: {INSTALL}"
        )
    });
    (chromium, driver)
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("no free local port")
}

/// A WebDriver error answer (`{"value": {"error": ..., "message": ...}}`).
#[derive(Debug)]
pub struct WdError {
    pub error: String,
    pub message: String,
}

impl std::fmt::Display for WdError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.error, self.message)
    }
}

/// A browser session. Dropping it ends the session and stops chromedriver (and so
/// Chromium).
pub struct Browser {
    driver: Child,
    base: String,
    session: String,
    agent: ureq::Agent,
    _profile_dir: tempfile::TempDir,
    /// Where [`Browser::screenshot`] writes.
    pub artifacts: PathBuf,
}

impl Browser {
    /// Starts chromedriver and a headless Chromium with a fresh profile and a
    /// `width`×`height` window; screenshots go to `artifacts`.
    pub fn start(artifacts: &Path, width: u32, height: u32) -> Browser {
        let (chromium, driver_path) = chromium_paths();
        std::fs::create_dir_all(artifacts).unwrap();
        let port = free_port();
        let log = std::fs::File::create(artifacts.join("chromedriver.log")).unwrap();
        let driver = Command::new(&driver_path)
            .arg(format!("--port={port}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap_or_else(|e| panic!("starting {}: {e}", driver_path.display()));
        let agent = ureq::AgentBuilder::new()
            .timeout(Duration::from_secs(60))
            .build();
        let base = format!("http://127.0.0.1:{port}");
        let profile_dir = tempfile::tempdir().unwrap();
        let mut b = Browser {
            driver,
            base,
            session: String::new(),
            agent,
            _profile_dir: profile_dir,
            artifacts: artifacts.to_path_buf(),
        };
        let deadline = Instant::now() + Duration::from_secs(20);
        loop {
            let ready = b
                .agent
                .get(&format!("{}/status", b.base))
                .call()
                .ok()
                .and_then(|r| r.into_json::<Value>().ok())
                .is_some_and(|v| v["value"]["ready"] == true);
            if ready {
                break;
            }
            if let Ok(Some(st)) = b.driver.try_wait() {
                panic!(
                    "chromedriver exited ({st}); see {}",
                    artifacts.join("chromedriver.log").display()
                );
            }
            assert!(
                Instant::now() < deadline,
                "chromedriver did not answer on port {port} within 20 s"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        let args = vec![
            "--headless".to_string(),
            "--no-sandbox".into(),
            "--disable-gpu".into(),
            "--disable-quic".into(),
            "--no-first-run".into(),
            "--disable-background-networking".into(),
            "--disable-component-update".into(),
            "--disable-sync".into(),
            "--disable-dev-shm-usage".into(),
            "--hide-scrollbars".into(),
            format!("--window-size={width},{height}"),
            format!("--user-data-dir={}", b._profile_dir.path().display()),
        ];
        let caps = json!({"capabilities": {"alwaysMatch": {
            "browserName": "chrome",
            "goog:chromeOptions": {"binary": chromium.display().to_string(), "args": args},
            "goog:loggingPrefs": {"browser": "ALL"},
            "timeouts": {"script": 30000, "pageLoad": 60000}
        }}});
        let v = b
            .post_raw("/session", &caps)
            .unwrap_or_else(|e| panic!("cannot start Chromium through chromedriver: {e}"));
        b.session = v["sessionId"]
            .as_str()
            .expect("the new session has an id")
            .to_string();
        b
    }

    fn post_raw(&self, path: &str, body: &Value) -> Result<Value, WdError> {
        let r = self
            .agent
            .post(&format!("{}{path}", self.base))
            .send_json(body.clone());
        Self::answer(r)
    }

    fn answer(r: Result<ureq::Response, ureq::Error>) -> Result<Value, WdError> {
        let resp = match r {
            Ok(resp) => resp,
            Err(ureq::Error::Status(_, resp)) => resp,
            Err(e) => {
                return Err(WdError {
                    error: "transport".into(),
                    message: e.to_string(),
                })
            }
        };
        let v: Value = resp.into_json().map_err(|e| WdError {
            error: "bad answer".into(),
            message: e.to_string(),
        })?;
        let value = v["value"].clone();
        if let Some(err) = value.get("error").and_then(Value::as_str) {
            return Err(WdError {
                error: err.to_string(),
                message: value["message"].as_str().unwrap_or("").to_string(),
            });
        }
        Ok(value)
    }

    fn url(&self, path: &str) -> String {
        format!("{}/session/{}{path}", self.base, self.session)
    }

    /// A session command: POST with a JSON body.
    pub fn try_post(&self, path: &str, body: Value) -> Result<Value, WdError> {
        Self::answer(self.agent.post(&self.url(path)).send_json(body))
    }

    pub fn post(&self, path: &str, body: Value) -> Value {
        self.try_post(path, body)
            .unwrap_or_else(|e| panic!("WebDriver POST {path}: {e}"))
    }

    pub fn try_get(&self, path: &str) -> Result<Value, WdError> {
        Self::answer(self.agent.get(&self.url(path)).call())
    }

    pub fn get(&self, path: &str) -> Value {
        self.try_get(path)
            .unwrap_or_else(|e| panic!("WebDriver GET {path}: {e}"))
    }

    pub fn goto(&self, url: &str) {
        self.post("/url", json!({ "url": url }));
    }

    pub fn current_url(&self) -> String {
        self.get("/url").as_str().unwrap_or("").to_string()
    }

    pub fn refresh(&self) {
        self.post("/refresh", json!({}));
    }

    pub fn back(&self) {
        self.post("/back", json!({}));
    }

    pub fn forward(&self) {
        self.post("/forward", json!({}));
    }

    /// Runs `script` (a function body; `arguments` holds `args`) in the page.
    pub fn js(&self, script: &str, args: Value) -> Value {
        self.post("/execute/sync", json!({ "script": script, "args": args }))
    }

    /// Runs a Chrome DevTools Protocol command through chromedriver.
    pub fn cdp(&self, cmd: &str, params: Value) -> Value {
        self.post("/goog/cdp/execute", json!({ "cmd": cmd, "params": params }))
    }

    /// Polls `condition` (a JS expression) until it is true.
    pub fn wait_for(&self, condition: &str, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        let script = format!("return !!({condition});");
        loop {
            if self.js(&script, json!([])) == Value::Bool(true) {
                return;
            }
            if Instant::now() > deadline {
                let shot = self.screenshot("timeout");
                panic!(
                    "timed out after {timeout:?} waiting for `{condition}` on {}; screenshot {}; console: {:?}",
                    self.current_url(),
                    shot.display(),
                    self.console()
                );
            }
            std::thread::sleep(Duration::from_millis(30));
        }
    }

    /// Saves a PNG screenshot of the viewport as `artifacts/NAME.png`.
    pub fn screenshot(&self, name: &str) -> PathBuf {
        let v = self.get("/screenshot");
        let png = base64::engine::general_purpose::STANDARD
            .decode(v.as_str().unwrap_or(""))
            .expect("the screenshot is base64");
        let path = self.artifacts.join(format!("{name}.png"));
        std::fs::write(&path, png).unwrap();
        path
    }

    /// The browser console's entries since the last call (`{level, message, source}`).
    pub fn console(&self) -> Vec<Value> {
        match self.try_post("/se/log", json!({ "type": "browser" })) {
            Ok(Value::Array(a)) => a,
            Ok(_) => Vec::new(),
            Err(e) => panic!("reading the browser console: {e}"),
        }
    }

    /// Console errors since the last call (level SEVERE: errors, failed requests, CSP
    /// violations, uncaught exceptions).
    pub fn console_errors(&self) -> Vec<String> {
        self.console()
            .into_iter()
            .filter(|e| e["level"] == "SEVERE")
            .map(|e| e["message"].as_str().unwrap_or("").to_string())
            .collect()
    }

    /// The text of an open alert/confirm dialog, if one is open.
    pub fn alert_text(&self) -> Option<String> {
        match self.try_get("/alert/text") {
            Ok(v) => Some(v.as_str().unwrap_or("").to_string()),
            Err(e) if e.error == "no such alert" => None,
            Err(e) => panic!("asking for an alert: {e}"),
        }
    }

    fn pointer(&self, actions: Vec<Value>) {
        self.post(
            "/actions",
            json!({"actions": [{
                "type": "pointer", "id": "mouse",
                "parameters": {"pointerType": "mouse"},
                "actions": actions
            }]}),
        );
        self.try_post("/actions/release", json!({})).ok();
    }

    fn mv(x: f64, y: f64, ms: u64) -> Value {
        json!({"type": "pointerMove", "duration": ms, "origin": "viewport",
               "x": x.round() as i64, "y": y.round() as i64})
    }

    /// Moves the mouse to viewport coordinates (x, y).
    pub fn hover(&self, x: f64, y: f64) {
        self.pointer(vec![Self::mv(x, y, 0)]);
    }

    /// Clicks at viewport coordinates (x, y).
    pub fn click_at(&self, x: f64, y: f64) {
        self.pointer(vec![
            Self::mv(x, y, 0),
            json!({"type": "pointerDown", "button": 0}),
            json!({"type": "pointerUp", "button": 0}),
        ]);
    }

    /// Presses at (x0, y0), drags to (x1, y1) in steps, releases.
    pub fn drag(&self, x0: f64, y0: f64, x1: f64, y1: f64) {
        let mut a = vec![
            Self::mv(x0, y0, 0),
            json!({"type": "pointerDown", "button": 0}),
        ];
        for k in 1..=8 {
            let f = k as f64 / 8.0;
            a.push(Self::mv(x0 + (x1 - x0) * f, y0 + (y1 - y0) * f, 20));
        }
        a.push(json!({"type": "pointerUp", "button": 0}));
        self.pointer(a);
    }

    /// Types `keys` (WebDriver key codes allowed, e.g. "\u{E00C}" for Escape) into
    /// whatever has the focus.
    pub fn keys(&self, keys: &str) {
        let mut a = Vec::new();
        for c in keys.chars() {
            a.push(json!({"type": "keyDown", "value": c.to_string()}));
            a.push(json!({"type": "keyUp", "value": c.to_string()}));
        }
        self.post(
            "/actions",
            json!({"actions": [{"type": "key", "id": "keyboard", "actions": a}]}),
        );
        self.try_post("/actions/release", json!({})).ok();
    }

    /// Clicks the element matching a CSS selector (scrolled into view by the driver).
    pub fn click(&self, css: &str) {
        let id = self.element(css);
        self.post(&format!("/element/{id}/click"), json!({}));
    }

    /// The WebDriver id of the first element matching `css`.
    pub fn element(&self, css: &str) -> String {
        let v = self.post("/element", json!({"using": "css selector", "value": css}));
        v.as_object()
            .and_then(|o| o.values().next())
            .and_then(Value::as_str)
            .unwrap_or_else(|| panic!("no element id for {css}: {v}"))
            .to_string()
    }

    /// Types into the element matching `css` (which gets the focus).
    pub fn type_into(&self, css: &str, text: &str) {
        let id = self.element(css);
        self.post(&format!("/element/{id}/value"), json!({ "text": text }));
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        if !self.session.is_empty() {
            let _ = self
                .agent
                .delete(&format!("{}/session/{}", self.base, self.session))
                .call();
        }
        let _ = self.driver.kill();
        let _ = self.driver.wait();
    }
}

/// `prof serve` on a free loopback port, with its data in a temporary directory. Stopped
/// when dropped.
pub struct Server {
    child: Child,
    pub url: String,
    _data: tempfile::TempDir,
}

impl Server {
    pub fn start(prof: &Path) -> Server {
        Server::start_with(prof, &[])
    }

    /// [`Server::start`] with more `prof serve` options (`--token T`...).
    pub fn start_with(prof: &Path, extra: &[&str]) -> Server {
        let data = tempfile::tempdir().unwrap();
        let mut child = Command::new(prof)
            .args(["serve", "--addr", "127.0.0.1:0", "--workers", "2", "--data"])
            .arg(data.path())
            // The fixtures were built on this machine: the server may read any binary a
            // profile names (by default it reads only uploaded symbol files).
            .args(["--debug-dir", "/"])
            .args(extra)
            .env("PROF_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap_or_else(|e| panic!("starting prof serve: {e}"));
        let stderr = child.stderr.take().unwrap();
        let (tx, rx) = std::sync::mpsc::channel();
        std::thread::spawn(move || {
            let mut sent = false;
            for line in BufReader::new(stderr).lines() {
                let Ok(line) = line else { break };
                if !sent {
                    if let Some(i) = line.find("http://") {
                        let url: String = line[i..]
                            .chars()
                            .take_while(|c| !c.is_whitespace())
                            .collect();
                        let _ = tx.send(url);
                        sent = true;
                        continue;
                    }
                }
                eprintln!("prof serve: {line}");
            }
        });
        let url = rx
            .recv_timeout(Duration::from_secs(30))
            .expect("prof serve did not print its URL within 30 s");
        Server {
            child,
            url,
            _data: data,
        }
    }

    /// Uploads a profile file; returns its id.
    pub fn upload(&self, path: &Path, name: &str) -> String {
        self.upload_with_token(path, name, None)
    }

    /// Uploads with `Authorization: Bearer TOKEN` when a token is given.
    pub fn upload_with_token(&self, path: &Path, name: &str, token: Option<&str>) -> String {
        let bytes = std::fs::read(path).unwrap();
        let mut req = ureq::post(&format!("{}/api/v1/profiles", self.url)).query("name", name);
        if let Some(t) = token {
            req = req.set("Authorization", &format!("Bearer {t}"));
        }
        let resp = req
            .send_bytes(&bytes)
            .unwrap_or_else(|e| panic!("uploading {}: {e}", path.display()));
        let v: Value = resp.into_json().unwrap();
        v["id"]
            .as_str()
            .expect("upload answer has an id")
            .to_string()
    }

    /// GET a JSON document of the API.
    pub fn json(&self, path_and_query: &str) -> Value {
        ureq::get(&format!("{}{path_and_query}", self.url))
            .call()
            .unwrap_or_else(|e| panic!("GET {path_and_query}: {e}"))
            .into_json()
            .unwrap()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
