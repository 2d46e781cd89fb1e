//! Real storage backends for the API tests: a PostgreSQL cluster (Debian's `postgresql`:
//! initdb into a temporary directory, run as an unprivileged user when the tests run as
//! root, on a loopback port) and an S3-compatible server (moto's, from PyPI, in a venv
//! under target/), each started once per test process and stopped when it exits
//! (PR_SET_PDEATHSIG). Every test gets its own database and bucket.
//!
//! [`backend_tests!`] runs each listed test function twice: on SQLite + files and on
//! PostgreSQL + S3; [`super::config`] builds the configuration of the backend the
//! current test runs on.

use std::cell::Cell;
use std::net::TcpListener;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use prof_server::store::{DbUrl, S3Config, StoreUrl};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    /// SQLite + files in the test's data directory.
    Local,
    /// PostgreSQL + an S3 bucket (the data directory holds local caches only).
    PgS3,
}

thread_local! {
    static BACKEND: Cell<Backend> = const { Cell::new(Backend::Local) };
}

/// The backend the current test runs on.
pub fn backend() -> Backend {
    BACKEND.with(|b| b.get())
}

/// Runs `f` with [`super::config`] building configurations for backend `b`.
pub fn with_backend(b: Backend, f: fn()) {
    BACKEND.with(|c| c.set(b));
    f();
}

/// Each test function `f` listed becomes `sqlite_files::f` and `postgres_s3::f`.
#[macro_export]
macro_rules! backend_tests {
    ($($name:ident),* $(,)?) => {
        mod sqlite_files {
            $(
                #[test]
                fn $name() {
                    $crate::common::backends::with_backend(
                        $crate::common::backends::Backend::Local,
                        super::$name,
                    );
                }
            )*
        }
        mod postgres_s3 {
            $(
                #[test]
                fn $name() {
                    $crate::common::backends::with_backend(
                        $crate::common::backends::Backend::PgS3,
                        super::$name,
                    );
                }
            )*
        }
    };
}

/// Storage for one test on the current backend: (db, store, s3 settings).
pub fn storage_for_test() -> (Option<DbUrl>, Option<StoreUrl>, Option<S3Config>) {
    match backend() {
        Backend::Local => (None, None, None),
        Backend::PgS3 => {
            let db = postgres().new_database();
            let (bucket, s3) = moto().new_bucket();
            (
                Some(DbUrl::Postgres(db)),
                Some(StoreUrl::S3 {
                    bucket,
                    prefix: "prof".into(),
                }),
                Some(s3),
            )
        }
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn wait_for_port(port: u16, what: &str, child: &mut Child) {
    let deadline = Instant::now() + Duration::from_secs(90);
    while Instant::now() < deadline {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return;
        }
        if let Ok(Some(status)) = child.try_wait() {
            panic!("{what} exited before listening ({status})");
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    panic!("{what} did not listen on port {port} within 90 s");
}

/// Spawns `cmd` from a thread that lives as long as the test process, with the parent
/// death signal set (after any change of user, which would clear it): the server stops
/// when the test process ends, however it ends.
fn spawn_for_process_lifetime(mut cmd: Command, signal: i32) -> Child {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(move || {
                if libc::prctl(libc::PR_SET_PDEATHSIG, signal as libc::c_ulong) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
        let _ = tx.send(cmd.spawn());
        // PR_SET_PDEATHSIG fires when the spawning *thread* exits: this one never does.
        loop {
            std::thread::park();
        }
    });
    rx.recv()
        .unwrap()
        .unwrap_or_else(|e| panic!("spawning a test server: {e}"))
}

// ---------------------------------------------------------------------------------------
// PostgreSQL

pub struct Postgres {
    pub port: u16,
    next: AtomicU32,
    _dir: tempfile::TempDir,
    _child: Child,
}

/// `initdb` of Debian's postgresql package (any version), or one on PATH.
fn pg_bindir() -> PathBuf {
    let mut candidates: Vec<PathBuf> = Vec::new();
    if let Ok(rd) = std::fs::read_dir("/usr/lib/postgresql") {
        let mut versions: Vec<PathBuf> = rd.flatten().map(|e| e.path().join("bin")).collect();
        versions.sort();
        candidates.extend(versions.into_iter().rev());
    }
    if let Some(path) = std::env::var_os("PATH") {
        candidates.extend(std::env::split_paths(&path));
    }
    candidates
        .into_iter()
        .find(|d| d.join("initdb").is_file() && d.join("postgres").is_file())
        .unwrap_or_else(|| {
            panic!(
                "the PostgreSQL tests need initdb and postgres: apt-get install postgresql \
                 (scripts/test.sh does)"
            )
        })
}

fn as_unprivileged(cmd: &mut Command) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        // PostgreSQL refuses to run as root: nobody.
        cmd.uid(65534).gid(65534);
    }
}

fn chown_nobody(p: &Path) {
    // SAFETY: geteuid has no preconditions.
    if unsafe { libc::geteuid() } == 0 {
        std::os::unix::fs::chown(p, Some(65534), Some(65534)).unwrap();
    }
}

pub fn postgres() -> &'static Postgres {
    static PG: OnceLock<Postgres> = OnceLock::new();
    PG.get_or_init(|| {
        let bin = pg_bindir();
        let dir = tempfile::Builder::new()
            .prefix("prof-pg")
            .tempdir()
            .unwrap();
        chown_nobody(dir.path());
        let data = dir.path().join("data");
        let mut initdb = Command::new(bin.join("initdb"));
        initdb
            .args([
                "-U",
                "prof",
                "--auth=trust",
                "-E",
                "UTF8",
                "--no-sync",
                "-D",
            ])
            .arg(&data)
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        as_unprivileged(&mut initdb);
        let o = initdb.output().expect("running initdb");
        assert!(
            o.status.success(),
            "initdb failed: {}",
            String::from_utf8_lossy(&o.stderr)
        );
        let port = free_port();
        let mut pg = Command::new(bin.join("postgres"));
        pg.arg("-D")
            .arg(&data)
            .args(["-h", "127.0.0.1", "-p", &port.to_string(), "-k"])
            .arg(dir.path())
            // Throwaway cluster: no fsync; enough connections for many pools.
            .args(["-c", "fsync=off", "-c", "max_connections=400"])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        as_unprivileged(&mut pg);
        // SIGINT: PostgreSQL's fast shutdown.
        let mut child = spawn_for_process_lifetime(pg, libc::SIGINT);
        wait_for_port(port, "postgres", &mut child);
        // Accepting connections can lag listening a little.
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            match postgres::Client::connect(
                &format!("host=127.0.0.1 port={port} user=prof dbname=postgres"),
                postgres::NoTls,
            ) {
                Ok(_) => break,
                Err(e) if Instant::now() > deadline => panic!("postgres does not answer: {e}"),
                Err(_) => std::thread::sleep(Duration::from_millis(100)),
            }
        }
        Postgres {
            port,
            next: AtomicU32::new(0),
            _dir: dir,
            _child: child,
        }
    })
}

impl Postgres {
    /// A new empty database; its URL.
    pub fn new_database(&self) -> String {
        let name = format!(
            "t{}_{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        let mut c = postgres::Client::connect(
            &format!(
                "host=127.0.0.1 port={} user=prof dbname=postgres",
                self.port
            ),
            postgres::NoTls,
        )
        .unwrap();
        c.batch_execute(&format!("CREATE DATABASE {name}")).unwrap();
        format!("postgres://prof@127.0.0.1:{}/{name}", self.port)
    }
}

// ---------------------------------------------------------------------------------------
// S3 (moto)

pub struct Moto {
    pub port: u16,
    next: AtomicU32,
    _child: Child,
}

/// target/ (the test executable is target/debug/deps/NAME).
fn target_dir() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    exe.ancestors()
        .find(|a| a.file_name().is_some_and(|n| n == "target"))
        .map(Path::to_path_buf)
        .unwrap_or_else(|| exe.parent().unwrap().to_path_buf())
}

/// target/moto-venv/bin/moto_server, creating the venv (python3 -m venv; pip install
/// moto[server] from PyPI) the first time, under a lock shared by concurrent test binaries.
fn moto_server() -> PathBuf {
    let venv = target_dir().join("moto-venv");
    let server = venv.join("bin/moto_server");
    let done = venv.join(".complete");
    if done.is_file() {
        return server;
    }
    let lock = std::fs::File::create(target_dir().join("moto-venv.lock")).unwrap();
    lock.lock().unwrap();
    if done.is_file() {
        return server;
    }
    let run = |cmd: &mut Command, what: &str| {
        let o = cmd.output().unwrap_or_else(|e| {
            panic!(
                "{what}: {e} (the S3 tests need python3 with venv: apt-get install python3-venv)"
            )
        });
        assert!(
            o.status.success(),
            "{what} failed: {}{}",
            String::from_utf8_lossy(&o.stdout),
            String::from_utf8_lossy(&o.stderr)
        );
    };
    // A venv hard-codes its path: built in place; the marker says it is complete.
    let _ = std::fs::remove_dir_all(&venv);
    run(
        Command::new("python3").args(["-m", "venv"]).arg(&venv),
        "python3 -m venv",
    );
    run(
        Command::new(venv.join("bin/pip")).args(["install", "-q", "moto[server]"]),
        "pip install moto[server]",
    );
    std::fs::write(&done, b"").unwrap();
    server
}

pub fn moto() -> &'static Moto {
    static MOTO: OnceLock<Moto> = OnceLock::new();
    MOTO.get_or_init(|| {
        let server = moto_server();
        let port = free_port();
        let mut cmd = Command::new(server);
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let mut child = spawn_for_process_lifetime(cmd, libc::SIGTERM);
        wait_for_port(port, "moto_server", &mut child);
        Moto {
            port,
            next: AtomicU32::new(0),
            _child: child,
        }
    })
}

impl Moto {
    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    pub fn config(&self) -> S3Config {
        S3Config {
            endpoint: Some(self.endpoint()),
            region: "us-east-1".into(),
            access_key: "testing".into(),
            secret_key: "testing".into(),
            session_token: None,
        }
    }

    /// A new empty bucket: its name and the settings to reach it.
    pub fn new_bucket(&self) -> (String, S3Config) {
        let name = format!(
            "t{}-{}",
            std::process::id(),
            self.next.fetch_add(1, Ordering::Relaxed)
        );
        // moto does not check signatures: a plain PUT creates the bucket.
        let r = ureq::put(&format!("{}/{name}", self.endpoint())).call();
        assert!(r.is_ok(), "creating bucket {name}: {r:?}");
        (name, self.config())
    }
}
