//! `prof serve`, `prof upload` and `prof run --web`: the client side of the prof server.
//!
//! Uploading a profile first asks the server, by build id, which of the profile's modules
//! it has symbols for, and sends the debug files (or the binaries themselves) of the
//! modules it lacks and that samples actually hit; then the profile. The server URL
//! comes from `--server`/`--web=URL`, else `$PROF_SERVER`; the token from `--token`, else
//! `$PROF_TOKEN`.

use std::io::{IsTerminal, Read, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};
use object::Object;
use prof_format::{node_kind, Profile};

/// `prof upload` options.
#[derive(clap::Args)]
pub struct UploadArgs {
    /// The profile to upload.
    #[arg(value_name = "PATH", default_value = "prof.data")]
    path: PathBuf,
    /// The server's URL [default: $PROF_SERVER].
    #[arg(long, value_name = "URL")]
    server: Option<String>,
    /// Bearer token for servers that require one [default: $PROF_TOKEN].
    #[arg(long, value_name = "TOKEN")]
    token: Option<String>,
    /// A name for the profile (default: its command line).
    #[arg(long, value_name = "NAME")]
    name: Option<String>,
    /// A tag for the profile (repeatable).
    #[arg(long = "tag", value_name = "TAG")]
    tags: Vec<String>,
    /// Do not upload debug files, even those the server lacks.
    #[arg(long)]
    no_symbols: bool,
}

/// `prof serve`.
pub fn serve(args: prof_server::ServeArgs) -> Result<i32> {
    prof_server::init_logging();
    let config = args.into_config()?;
    let storage = config.describe_storage();
    let server = prof_server::spawn(config)?;
    eprintln!(
        "prof: serving on {} ({storage}; Ctrl-C to stop)",
        server.url()
    );
    server.wait().context("serving")?;
    Ok(0)
}

fn env_nonempty(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.trim().is_empty())
}

/// `prof upload`: prints the viewer URL on stdout.
pub fn upload(args: UploadArgs) -> Result<i32> {
    let server = args
        .server
        .or_else(|| env_nonempty("PROF_SERVER"))
        .ok_or_else(|| anyhow!("no server to upload to: pass --server URL or set PROF_SERVER"))?;
    let token = args.token.or_else(|| env_nonempty("PROF_TOKEN"));
    let shown = args.path.display();
    let bytes = std::fs::read(&args.path).with_context(|| format!("{shown}: cannot read"))?;
    let client = Client::new(&server, token)?;
    let url = client.upload_all(&bytes, args.name.as_deref(), &args.tags, !args.no_symbols)?;
    println!("{url}");
    Ok(0)
}

/// After `prof run --web[=URL]` wrote the profile at `path`: upload it (to `web`, else
/// `$PROF_SERVER`, else a local server started here and kept serving until Ctrl-C).
/// Returns the exit code `prof run` ends with.
pub fn after_run(web: &str, path: &Path, code: i32, data: Option<&Path>) -> Result<i32> {
    let bytes = std::fs::read(path).with_context(|| format!("{}: cannot read", path.display()))?;
    let token = env_nonempty("PROF_TOKEN");
    let remote = if web.is_empty() {
        env_nonempty("PROF_SERVER")
    } else {
        Some(web.to_string())
    };
    match remote {
        Some(url) => {
            let uploaded = Client::new(&url, token).and_then(|c| c.upload_all(&bytes, None, &[], true));
            match uploaded {
                Ok(link) => {
                    eprintln!("prof: profile uploaded: {link}");
                    Ok(code)
                }
                // Cause first, then advice that works as written.
                Err(e) => Err(anyhow!(
                    "{e:#}; the profile is saved in {p}: upload it once the server is up with `prof upload {p} --server {url}`",
                    p = path.display(),
                )),
            }
        }
        None => match serve_locally(&bytes, data) {
            Ok(()) => Ok(code),
            Err(e) => Err(anyhow!(
                "{e:#}; the profile is saved in {p}: see it with `prof serve` and `prof upload {p} --server URL`, or `prof report {p}`",
                p = path.display(),
            )),
        },
    }
}

/// Starts a server on a free loopback port, uploads the profile to it, prints the link
/// and serves until Ctrl-C. Its data goes to `data`, else to a temporary directory
/// removed when prof exits (say so: nothing is kept behind the user's back).
fn serve_locally(bytes: &[u8], data: Option<&Path>) -> Result<()> {
    let temp;
    let (dir, kept) = match data {
        Some(d) => (d.to_path_buf(), true),
        None => {
            temp = tempfile::Builder::new()
                .prefix("prof-web-")
                .tempdir()
                .context("creating a temporary directory for the local server")?;
            (temp.path().to_path_buf(), false)
        }
    };
    let mut config = prof_server::Config::local(dir.clone());
    config.addr = "127.0.0.1:0".into();
    // This user's own server for a profile this machine just recorded: it may read the
    // binaries the profile names, wherever they are.
    config.debug_dirs = vec![std::path::PathBuf::from("/")];
    let server = prof_server::spawn(config).context("starting a local server")?;
    // Same machine: the server reads the binaries itself; no symbol upload needed.
    let link = Client::new(&server.url(), None)?.upload_all(bytes, None, &[], false)?;
    let where_ = if kept {
        format!("data kept in {}", dir.display())
    } else {
        format!(
            "data in {}, removed when you stop; keep it with --data DIR",
            dir.display()
        )
    };
    eprintln!("prof: serving the profile at {link} ({where_}; Ctrl-C to stop)");
    server.wait().context("serving")?;
    Ok(())
}

/// A prof server's API.
pub struct Client {
    base: String,
    token: Option<String>,
    agent: ureq::Agent,
}

/// "cannot reach URL: connection refused": the cause once (ureq's own message repeats
/// the URL and wraps the OS error twice).
fn unreachable(base: &str, e: &ureq::Error) -> String {
    let mut src: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = src {
        if let Some(io) = err.downcast_ref::<std::io::Error>() {
            let kind = io.kind().to_string();
            return format!("cannot reach {base}: {kind}");
        }
        src = err.source();
    }
    match e {
        ureq::Error::Transport(t) => format!(
            "cannot reach {base}: {}",
            t.message()
                .map(str::to_string)
                .unwrap_or_else(|| t.kind().to_string())
        ),
        other => format!("cannot reach {base}: {other}"),
    }
}

/// The message of a JSON error body, else the body's start.
fn error_message(resp: ureq::Response) -> String {
    let status = resp.status();
    let mut body = String::new();
    let _ = resp.into_reader().take(64 << 10).read_to_string(&mut body);
    let msg = serde_json::from_str::<serde_json::Value>(&body)
        .ok()
        .and_then(|v| v["error"].as_str().map(String::from))
        .unwrap_or_else(|| body.chars().take(300).collect());
    format!("the server answered {status}: {msg}")
}

impl Client {
    pub fn new(base: &str, token: Option<String>) -> Result<Client> {
        let base = base.trim_end_matches('/').to_string();
        if !(base.starts_with("http://") || base.starts_with("https://")) {
            bail!("{base:?} is not a server URL (expected http://HOST:PORT or https://…)");
        }
        let agent = ureq::AgentBuilder::new()
            .timeout_connect(Duration::from_secs(10))
            .timeout_read(Duration::from_secs(300))
            .build();
        Ok(Client { base, token, agent })
    }

    fn request(&self, method: &str, path: &str) -> ureq::Request {
        let r = self.agent.request(method, &format!("{}{path}", self.base));
        match &self.token {
            Some(t) => r.set("Authorization", &format!("Bearer {t}")),
            None => r,
        }
    }

    /// Sends `body` with a progress line on stderr when it takes a while.
    fn send(&self, r: ureq::Request, body: &[u8], label: &str) -> Result<ureq::Response> {
        let reader = Progress::new(body, label);
        let r = r
            .set("Content-Type", "application/octet-stream")
            .set("Content-Length", &body.len().to_string());
        let result = r.send(reader);
        match result {
            Ok(resp) => Ok(resp),
            Err(ureq::Error::Status(_, resp)) => Err(anyhow!("{label}: {}", error_message(resp))),
            Err(e) => Err(anyhow!("{label}: {}", unreachable(&self.base, &e))),
        }
    }

    /// Whether the server has symbols for `build_id` (hex).
    pub fn has_symbols(&self, build_id: &str) -> Result<bool> {
        let r = self.request("HEAD", &format!("/api/v1/symbols/{build_id}"));
        match r.call() {
            Ok(_) => Ok(true),
            Err(ureq::Error::Status(404, _)) => Ok(false),
            Err(ureq::Error::Status(_, resp)) => Err(anyhow!(
                "asking for symbols of {build_id}: {}",
                error_message(resp)
            )),
            Err(e) => Err(anyhow!("{}", unreachable(&self.base, &e))),
        }
    }

    pub fn put_symbols(&self, build_id: &str, file: &Path) -> Result<()> {
        let bytes =
            std::fs::read(file).with_context(|| format!("{}: cannot read", file.display()))?;
        let r = self.request("PUT", &format!("/api/v1/symbols/{build_id}"));
        self.send(r, &bytes, &format!("uploading symbols {}", file.display()))?;
        Ok(())
    }

    /// Uploads a profile; returns the viewer URL.
    pub fn upload_profile(
        &self,
        bytes: &[u8],
        name: Option<&str>,
        tags: &[String],
    ) -> Result<String> {
        let mut r = self.request("POST", "/api/v1/profiles");
        if let Some(n) = name {
            r = r.query("name", n);
        }
        for t in tags {
            r = r.query("tag", t);
        }
        let resp = self.send(r, bytes, "uploading the profile")?;
        let v: serde_json::Value = serde_json::from_reader(resp.into_reader().take(1 << 20))
            .context("the server's answer to the upload is not JSON")?;
        v["url"]
            .as_str()
            .map(String::from)
            .ok_or_else(|| anyhow!("the server's answer to the upload has no url: {v}"))
    }

    /// Symbols the server lacks (when `symbols`), then the profile. Returns the viewer URL.
    pub fn upload_all(
        &self,
        bytes: &[u8],
        name: Option<&str>,
        tags: &[String],
        symbols: bool,
    ) -> Result<String> {
        // Other tools' profiles (vmprof, perf script, folded stacks) are imported here,
        // as `prof report` does, and uploaded as the prof log they become.
        let imported;
        let (profile, bytes) = match prof_analysis::import::detect(bytes) {
            Some(f) if f != prof_analysis::import::InputFormat::Prof => {
                imported = prof_analysis::import::import_bytes(bytes)
                    .map_err(|e| anyhow!("not an uploadable profile: {e}"))?;
                (imported.profile.clone(), &imported.log[..])
            }
            _ => (
                prof_format::read_profile(bytes)
                    .map_err(|e| anyhow!("not an uploadable profile: {e}"))?,
                bytes,
            ),
        };
        if symbols {
            for (build_id, file) in symbol_files(&profile) {
                if self.has_symbols(&build_id)? {
                    continue;
                }
                if let Err(e) = self.put_symbols(&build_id, &file) {
                    // The profile is still worth uploading: those frames show as
                    // module+offset on the server.
                    eprintln!("prof: warning: {e:#}");
                }
            }
        }
        self.upload_profile(bytes, name, tags)
    }
}

/// Lower-case hex.
fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The GNU build id of an ELF file, if it is one and has one.
fn file_build_id(path: &Path) -> Option<Vec<u8>> {
    // metadata() does not open the file: a FIFO or device is never opened.
    if !std::fs::metadata(path).ok()?.is_file() {
        return None;
    }
    let f = std::fs::File::open(path).ok()?;
    // SAFETY: a read-only map of a regular file; a file truncated meanwhile could fault,
    // the risk every tool that maps binaries takes.
    let map = unsafe { memmap2::Mmap::map(&f) }.ok()?;
    let obj = object::File::parse(&*map).ok()?;
    obj.build_id().ok().flatten().map(<[u8]>::to_vec)
}

/// (build id, local file) of every module that samples hit and whose debug file (under
/// /usr/lib/debug/.build-id) or own file is here with the recorded build id.
pub fn symbol_files(profile: &Profile) -> Vec<(String, PathBuf)> {
    let mut out: Vec<(String, PathBuf)> = Vec::new();
    for p in &profile.processes {
        let mut addrs: Vec<u64> = p
            .nodes
            .iter()
            .skip(1)
            .filter(|n| n.kind == node_kind::NATIVE)
            .map(|n| n.value)
            .collect();
        addrs.sort_unstable();
        addrs.dedup();
        for m in &p.modules {
            if m.build_id.is_empty() || !m.path.starts_with('/') {
                continue;
            }
            let id = hex(&m.build_id);
            if out.iter().any(|(b, _)| *b == id) {
                continue;
            }
            let hit = m.ranges.iter().any(|&(s, e)| {
                let i = addrs.partition_point(|&a| a < s);
                addrs.get(i).is_some_and(|&a| a < e)
            });
            if !hit {
                continue;
            }
            let debug = PathBuf::from(format!(
                "/usr/lib/debug/.build-id/{}/{}.debug",
                &id[..2],
                &id[2..]
            ));
            let candidates = [debug, PathBuf::from(&m.path)];
            if let Some(f) = candidates
                .into_iter()
                .find(|c| file_build_id(c).as_deref() == Some(&m.build_id[..]))
            {
                out.push((id, f));
            }
        }
    }
    out
}

/// A body reader that draws a progress line on stderr (a terminal) for uploads that take
/// more than a second.
struct Progress<'a> {
    data: &'a [u8],
    pos: usize,
    label: String,
    start: Instant,
    last: Instant,
    finished: bool,
    tty: bool,
}

impl<'a> Progress<'a> {
    fn new(data: &'a [u8], label: &str) -> Progress<'a> {
        let now = Instant::now();
        Progress {
            data,
            pos: 0,
            label: label.to_string(),
            start: now,
            last: now,
            finished: false,
            tty: std::io::stderr().is_terminal(),
        }
    }

    fn draw(&self) {
        let total = self.data.len().max(1);
        let width = 30;
        let filled = self.pos * width / total;
        let mib = |b: usize| b as f64 / (1 << 20) as f64;
        let secs = self.start.elapsed().as_secs_f64().max(1e-3);
        let mut err = std::io::stderr().lock();
        let _ = write!(
            err,
            "\rprof: {} [{}{}] {:3}% {:.1}/{:.1} MiB, {:.1} MiB/s",
            self.label,
            "#".repeat(filled),
            " ".repeat(width - filled),
            self.pos * 100 / total,
            mib(self.pos),
            mib(self.data.len()),
            mib(self.pos) / secs
        );
        if self.pos == self.data.len() {
            let _ = writeln!(err);
        }
        let _ = err.flush();
    }
}

impl Read for Progress<'_> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = buf.len().min(256 << 10).min(self.data.len() - self.pos);
        buf[..n].copy_from_slice(&self.data[self.pos..self.pos + n]);
        self.pos += n;
        if self.tty && !self.finished {
            let now = Instant::now();
            let done = self.pos == self.data.len();
            if now.duration_since(self.start) >= Duration::from_secs(1)
                && (done || now.duration_since(self.last) >= Duration::from_millis(100))
            {
                self.last = now;
                self.finished = done;
                self.draw();
            }
        }
        Ok(n)
    }
}
