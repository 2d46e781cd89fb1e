//! The prof server: takes profile uploads, stores them (SQLite + content-addressed files by
//! default), symbolizes them with the same analysis code as `prof report` (uploaded debug
//! files by build id first, then local files whose build id matches), and serves summaries,
//! call trees, timelines and function tables as JSON. The HTTP API is documented in
//! docs/API.md.
//!
//! ```no_run
//! let config = prof_server::Config::local(std::path::PathBuf::from("/tmp/prof-data"));
//! let server = prof_server::spawn(config).unwrap();
//! println!("listening on http://{}", server.addr());
//! server.wait();
//! ```

pub mod api;
pub mod cache;
pub mod diff;
pub mod error;
pub mod lines;
pub mod markers;
pub mod metrics;
pub mod pages;
pub mod params;
pub mod prepare;
pub mod store;
pub mod viewer;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use actix_web::dev::Service as _;
use actix_web::middleware::{Compress, DefaultHeaders};
use actix_web::{web, App, HttpServer};

pub use error::ApiError;
pub use store::{Storage, StoreError};

/// Server settings.
#[derive(Debug, Clone)]
pub struct Config {
    /// Address to listen on (`127.0.0.1:8080`; port 0 picks a free port).
    pub addr: String,
    /// Where the database and blobs live.
    pub data_dir: PathBuf,
    /// Bearer tokens accepted for uploads and deletes (and reads when `private`). Empty:
    /// anyone may upload and delete.
    pub tokens: Vec<String>,
    /// Reads need a token too.
    pub private: bool,
    /// Largest accepted request body (profiles and symbol files), bytes.
    pub max_upload_bytes: u64,
    /// Prepared profiles kept in memory.
    pub cache_profiles: usize,
    /// HTTP worker threads (0: one per CPU).
    pub workers: usize,
    /// The server's URL as clients see it, for links in responses (default: from the
    /// request's Host).
    pub public_url: Option<String>,
    /// Metadata database (default: SQLite in `data_dir`).
    pub db: Option<store::DbUrl>,
    /// Blob store (default: files in `data_dir/blobs`).
    pub store: Option<store::StoreUrl>,
    /// S3 settings for an `s3://` store (None: the AWS environment variables).
    pub s3: Option<store::S3Config>,
    /// Directories whose files may be read to symbolize uploaded profiles, besides the
    /// symbol store: binaries under them by their recorded path, debug files by build id
    /// (`DIR/.build-id/xx/yyyy.debug`). Nothing else on the server's disk is read.
    pub debug_dirs: Vec<PathBuf>,
    /// Delete profiles older than this many days.
    pub keep_days: Option<u32>,
    /// Keep at most this many profiles (the newest).
    pub max_profiles: Option<u64>,
    /// Blobs no record names are swept once older than this.
    pub orphan_grace: std::time::Duration,
    /// How often retention and the orphan sweeper run.
    pub maintenance_every: std::time::Duration,
}

impl Config {
    /// Defaults, with data in `data_dir`, listening on 127.0.0.1:8080.
    pub fn local(data_dir: PathBuf) -> Config {
        Config {
            addr: "127.0.0.1:8080".into(),
            data_dir,
            tokens: Vec::new(),
            private: false,
            max_upload_bytes: 256 << 20,
            cache_profiles: 8,
            workers: 0,
            public_url: None,
            db: None,
            store: None,
            s3: None,
            debug_dirs: Vec::new(),
            keep_days: None,
            max_profiles: None,
            orphan_grace: std::time::Duration::from_secs(3600),
            maintenance_every: std::time::Duration::from_secs(600),
        }
    }

    /// The database and blob store URLs in effect.
    pub fn storage_urls(&self) -> (store::DbUrl, store::StoreUrl) {
        (
            self.db
                .clone()
                .unwrap_or_else(|| store::DbUrl::Sqlite(self.data_dir.join("prof.db"))),
            self.store
                .clone()
                .unwrap_or_else(|| store::StoreUrl::File(self.data_dir.join("blobs"))),
        )
    }

    /// Where the data lives, for the startup message.
    pub fn describe_storage(&self) -> String {
        let (db, store) = self.storage_urls();
        let db = match db {
            store::DbUrl::Sqlite(p) => format!("SQLite {}", p.display()),
            store::DbUrl::Postgres(u) => format!("PostgreSQL {}", store::redact_url(&u)),
        };
        let store = match store {
            store::StoreUrl::File(p) => format!("blobs in {}", p.display()),
            store::StoreUrl::S3 { bucket, prefix } => format!("blobs in s3://{bucket}/{prefix}"),
        };
        format!("{db}, {store}")
    }
}

/// `$XDG_DATA_HOME/prof`, else `~/.local/share/prof`, else `./prof-data`.
pub fn default_data_dir() -> PathBuf {
    if let Some(d) = std::env::var_os("XDG_DATA_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(d).join("prof");
    }
    if let Some(h) = std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        return PathBuf::from(h).join(".local/share/prof");
    }
    PathBuf::from("prof-data")
}

/// `prof serve` / `prof-server` options.
#[derive(Debug, Clone, clap::Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0: any free port).
    #[arg(long, default_value = "127.0.0.1:8080")]
    pub addr: String,
    /// Data directory (database and blobs; with --db and --store, local caches only)
    /// [default: $XDG_DATA_HOME/prof or ~/.local/share/prof].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
    /// Metadata database: sqlite:PATH or postgres://USER[:PASSWORD]@HOST[:PORT]/DB
    /// [default: sqlite:DIR/prof.db].
    #[arg(long, value_name = "URL")]
    pub db: Option<String>,
    /// Blob store: file:DIR or s3://BUCKET/PREFIX (settings from AWS_ENDPOINT_URL,
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_REGION) [default: file:DIR/blobs].
    #[arg(long, value_name = "URL")]
    pub store: Option<String>,
    /// A directory whose binaries and debug files (DIR/.build-id/xx/yyyy.debug) may be
    /// read to symbolize uploaded profiles (repeatable). Without it only uploaded symbol
    /// files are used.
    #[arg(long = "debug-dir", value_name = "DIR")]
    pub debug_dirs: Vec<PathBuf>,
    /// Delete profiles older than N days.
    #[arg(long, value_name = "N")]
    pub keep_days: Option<u32>,
    /// Keep at most N profiles (the newest).
    #[arg(long, value_name = "N")]
    pub max_profiles: Option<u64>,
    /// A token that may upload and delete (repeatable). Without tokens anyone can.
    #[arg(long = "token", value_name = "TOKEN")]
    pub tokens: Vec<String>,
    /// A file with one token per line (blank lines and `#` comments ignored).
    #[arg(long, value_name = "FILE")]
    pub token_file: Option<PathBuf>,
    /// Reading needs a token too.
    #[arg(long)]
    pub private: bool,
    /// Largest upload accepted, in MiB (profiles and symbol files).
    #[arg(long, value_name = "N", default_value_t = 256)]
    pub max_upload_mb: u64,
    /// Prepared (symbolized) profiles kept in memory.
    #[arg(long, value_name = "N", default_value_t = 8)]
    pub cache_profiles: usize,
    /// HTTP worker threads [default: one per CPU].
    #[arg(long, value_name = "N")]
    pub workers: Option<usize>,
    /// The URL clients reach this server at, for links (default: from each request's Host).
    #[arg(long, value_name = "URL")]
    pub public_url: Option<String>,
}

impl ServeArgs {
    pub fn into_config(self) -> Result<Config, ServerError> {
        let mut tokens = self.tokens;
        if let Some(f) = &self.token_file {
            let text = std::fs::read_to_string(f).map_err(|e| {
                ServerError::Config(format!("cannot read the token file {}: {e}", f.display()))
            })?;
            tokens.extend(
                text.lines()
                    .map(str::trim)
                    .filter(|l| !l.is_empty() && !l.starts_with('#'))
                    .map(String::from),
            );
        }
        if tokens
            .iter()
            .any(|t| t.is_empty() || t.contains(char::is_whitespace))
        {
            return Err(ServerError::Config(
                "tokens must be non-empty and contain no spaces".into(),
            ));
        }
        if self.private && tokens.is_empty() {
            return Err(ServerError::Config(
                "--private needs at least one --token (or --token-file)".into(),
            ));
        }
        if self.max_upload_mb == 0 {
            return Err(ServerError::Config(
                "--max-upload-mb must be at least 1".into(),
            ));
        }
        let config_err = |e: StoreError| ServerError::Config(e.to_string());
        if self.keep_days == Some(0) || self.max_profiles == Some(0) {
            return Err(ServerError::Config(
                "--keep-days and --max-profiles must be at least 1".into(),
            ));
        }
        let mut c = Config::local(self.data.unwrap_or_else(default_data_dir));
        c.addr = self.addr;
        c.tokens = tokens;
        c.private = self.private;
        c.max_upload_bytes = self.max_upload_mb.saturating_mul(1 << 20);
        c.cache_profiles = self.cache_profiles.max(1);
        c.workers = self.workers.unwrap_or(0);
        c.public_url = self.public_url;
        c.db = self
            .db
            .as_deref()
            .map(store::DbUrl::parse)
            .transpose()
            .map_err(config_err)?;
        c.store = self
            .store
            .as_deref()
            .map(store::StoreUrl::parse)
            .transpose()
            .map_err(config_err)?;
        c.debug_dirs = self.debug_dirs;
        c.keep_days = self.keep_days;
        c.max_profiles = self.max_profiles;
        Ok(c)
    }
}

/// Why the server could not start or stopped. Each message names its cause once (no
/// `source()` chain for a caller's `{:#}` to print again).
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the storage ({what}): {cause}")]
    Store { what: String, cause: StoreError },
    #[error("cannot listen on {addr}: {cause}")]
    Bind { addr: String, cause: std::io::Error },
    #[error("the server failed: {0}")]
    Io(std::io::Error),
}

impl From<std::io::Error> for ServerError {
    fn from(e: std::io::Error) -> ServerError {
        ServerError::Io(e)
    }
}

/// Everything the handlers share.
pub struct AppState {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub cache: cache::Cache,
    pub metrics: metrics::Metrics,
    /// Background preparations run one at a time.
    pub warmup: tokio::sync::Semaphore,
    /// The only files symbolization may read: the symbol store's local directory and
    /// `config.debug_dirs`.
    pub files: Arc<prof_analysis::UnderDirs>,
}

impl AppState {
    pub fn new(config: Config, storage: Storage) -> AppState {
        let mut dirs = vec![storage.blobs.local_dir()];
        dirs.extend(config.debug_dirs.iter().cloned());
        AppState {
            cache: cache::Cache::new(config.cache_profiles),
            files: Arc::new(prof_analysis::UnderDirs::new(dirs)),
            config,
            storage: Arc::new(storage),
            metrics: metrics::Metrics::default(),
            warmup: tokio::sync::Semaphore::new(1),
        }
    }

    /// Opens the storage `config` names (default: SQLite + files in `config.data_dir`).
    pub fn open(config: Config) -> Result<AppState, ServerError> {
        let (db, store) = config.storage_urls();
        let storage =
            Storage::open(&db, &store, &config.data_dir, config.s3.as_ref()).map_err(|cause| {
                ServerError::Store {
                    what: config.describe_storage(),
                    cause,
                }
            })?;
        Ok(AppState::new(config, storage))
    }
}

fn resource(path: &str) -> actix_web::Resource {
    web::resource(path).default_service(web::to(api::not_allowed))
}

/// The routes (see docs/API.md).
pub fn routes(cfg: &mut web::ServiceConfig) {
    cfg.service(
        resource("/api/v1/profiles")
            .route(web::post().to(api::upload))
            .route(web::get().to(api::list)),
    )
    .service(
        resource("/api/v1/profiles/{id}")
            .route(web::get().to(api::get_profile))
            .route(web::delete().to(api::delete)),
    )
    .service(resource("/api/v1/profiles/{id}/tree").route(web::get().to(api::tree)))
    .service(resource("/api/v1/profiles/{id}/timeline").route(web::get().to(api::timeline)))
    .service(resource("/api/v1/profiles/{id}/functions").route(web::get().to(api::functions)))
    .service(resource("/api/v1/profiles/{id}/download").route(web::get().to(api::download)))
    .service(resource("/api/v1/profiles/{id}/lines").route(web::get().to(lines::lines)))
    .service(resource("/api/v1/profiles/{id}/markers").route(web::get().to(markers::markers)))
    .service(resource("/api/v1/profiles/{id}/diff").route(web::get().to(diff::diff)))
    .service(
        resource("/api/v1/symbols/{build_id}")
            .route(web::head().to(api::symbol_head))
            .route(web::put().to(api::symbol_put)),
    )
    .service(resource("/healthz").route(web::get().to(api::healthz)))
    .service(resource("/readyz").route(web::get().to(api::readyz)))
    .service(resource("/metrics").route(web::get().to(api::metrics)))
    // The vmprof client's upload API.
    .configure(api::vmprof::routes)
    // The interactive viewer at / and /p/{id}; the plain pages at /plain.
    .configure(viewer::routes);
}

/// A request id unique across replicas: a random per-process prefix and a counter.
fn next_request_id() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    use std::sync::OnceLock;
    static PREFIX: OnceLock<String> = OnceLock::new();
    static NEXT: AtomicU64 = AtomicU64::new(1);
    let prefix = PREFIX.get_or_init(|| {
        let mut b = [0u8; 4];
        let _ = getrandom::fill(&mut b);
        prof_analysis::hex(&b)
    });
    format!("{prefix}-{}", NEXT.fetch_add(1, Ordering::Relaxed))
}

/// Error answers that carry no body of their own (the HTTP layer's: a malformed path or
/// header an extractor refused, an overflowing payload) get the API's JSON error body.
fn json_errors(
    res: actix_web::dev::ServiceResponse<impl actix_web::body::MessageBody + 'static>,
) -> actix_web::dev::ServiceResponse<actix_web::body::BoxBody> {
    let status = res.status();
    let needs_body = (status.is_client_error() || status.is_server_error())
        && !res
            .headers()
            .contains_key(actix_web::http::header::CONTENT_TYPE);
    if !needs_body {
        return res.map_into_boxed_body();
    }
    let msg = match res.response().error() {
        Some(e) if !e.to_string().is_empty() => e.to_string(),
        _ => status
            .canonical_reason()
            .unwrap_or("request failed")
            .to_string(),
    };
    let (req, _) = res.into_parts();
    actix_web::dev::ServiceResponse::new(req, error::json_error(status, &msg))
}

/// Logs to standard error with `tracing` (access lines: request id, method, route, path,
/// status, ms; errors with their message). `PROF_LOG=warn` (or error, debug) changes the
/// level; the default is info.
pub fn init_logging() {
    let level = match std::env::var("PROF_LOG").ok().as_deref() {
        Some("error") => tracing::Level::ERROR,
        Some("warn") => tracing::Level::WARN,
        Some("debug") => tracing::Level::DEBUG,
        Some("trace") => tracing::Level::TRACE,
        _ => tracing::Level::INFO,
    };
    use tracing_subscriber::layer::SubscriberExt as _;
    use tracing_subscriber::util::SubscriberInitExt as _;
    // The server's own lines at `level`; its libraries' (actix) only when they warn.
    let targets = tracing_subscriber::filter::Targets::new()
        .with_target("prof_server", level)
        .with_default(tracing::Level::WARN.min(level));
    let _ = tracing_subscriber::registry()
        .with(
            tracing_subscriber::fmt::layer()
                .with_writer(std::io::stderr)
                .with_ansi(false),
        )
        .with(targets)
        .try_init();
}

/// Runs retention (`--keep-days`, `--max-profiles`) and the orphan blob sweeper now and
/// then, on its own thread (the storage calls block). Several replicas may all run it:
/// every step is safe to repeat. The thread ends once the server (which owns the state)
/// is gone.
fn spawn_maintenance(state: web::Data<AppState>) {
    let every = state.config.maintenance_every;
    let weak = Arc::downgrade(&state.into_inner());
    let _ = std::thread::Builder::new()
        .name("prof-maintenance".into())
        .spawn(move || loop {
            match weak.upgrade() {
                Some(st) => run_maintenance(&st),
                None => return,
            }
            std::thread::sleep(every);
        });
}

/// One round of retention and sweeping; failures are logged and counted, not fatal.
pub fn run_maintenance(state: &AppState) {
    use std::sync::atomic::Ordering;
    let c = &state.config;
    match state.storage.apply_retention(c.keep_days, c.max_profiles) {
        Ok(gone) => {
            for id in &gone {
                state.cache.remove(id);
            }
            if !gone.is_empty() {
                tracing::info!(count = gone.len(), "retention deleted profiles");
            }
            state
                .metrics
                .retention_deletes
                .fetch_add(gone.len() as u64, Ordering::Relaxed);
        }
        Err(e) => {
            state
                .metrics
                .maintenance_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "retention failed");
        }
    }
    match state.storage.sweep_orphans(c.orphan_grace) {
        Ok(n) => {
            if n > 0 {
                tracing::info!(count = n, "swept orphan blobs");
            }
            state.metrics.orphans_swept.fetch_add(n, Ordering::Relaxed);
        }
        Err(e) => {
            state
                .metrics
                .maintenance_errors
                .fetch_add(1, Ordering::Relaxed);
            tracing::error!(error = %e, "sweeping orphan blobs failed");
        }
    }
}

/// A server running on its own thread.
pub struct RunningServer {
    addr: SocketAddr,
    handle: actix_web::dev::ServerHandle,
    thread: std::thread::JoinHandle<Result<(), std::io::Error>>,
}

impl RunningServer {
    /// The address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://ADDR`.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// Stops it (finishing requests in flight) and waits for its thread.
    pub fn stop(self) {
        let handle = self.handle.clone();
        let _ = std::thread::spawn(move || {
            actix_web::rt::System::new().block_on(handle.stop(true));
        })
        .join();
        let _ = self.thread.join();
    }

    /// Waits until it stops (SIGINT or SIGTERM stop it).
    pub fn wait(self) -> Result<(), ServerError> {
        match self.thread.join() {
            Ok(r) => r.map_err(ServerError::Io),
            Err(_) => Err(ServerError::Io(std::io::Error::other(
                "the server thread panicked",
            ))),
        }
    }
}

/// Opens the storage, binds `config.addr` and serves on a new thread. Returns once it
/// listens.
pub fn spawn(config: Config) -> Result<RunningServer, ServerError> {
    let state = web::Data::new(AppState::open(config)?);
    spawn_with_state(state)
}

/// [`spawn`] with storage already set up (another backend, tests).
pub fn spawn_with_state(state: web::Data<AppState>) -> Result<RunningServer, ServerError> {
    spawn_maintenance(state.clone());
    let (tx, rx) = std::sync::mpsc::channel();
    let thread = std::thread::Builder::new()
        .name("prof-server".into())
        .spawn(move || {
            let sys = actix_web::rt::System::new();
            let started = sys.block_on(async { build(state) });
            match started {
                Ok((server, addr)) => {
                    let _ = tx.send(Ok((addr, server.handle())));
                    sys.block_on(server)
                }
                Err(e) => {
                    let _ = tx.send(Err(e));
                    Ok(())
                }
            }
        })?;
    match rx.recv() {
        Ok(Ok((addr, handle))) => Ok(RunningServer {
            addr,
            handle,
            thread,
        }),
        Ok(Err(e)) => {
            let _ = thread.join();
            Err(e)
        }
        Err(_) => Err(ServerError::Io(std::io::Error::other(
            "the server thread died while starting",
        ))),
    }
}

fn build(state: web::Data<AppState>) -> Result<(actix_web::dev::Server, SocketAddr), ServerError> {
    let config = state.config.clone();
    let data = state.clone();
    let mut server = HttpServer::new(move || {
        let metrics_state = data.clone();
        App::new()
            .app_data(data.clone())
            .wrap(Compress::default())
            .wrap(
                DefaultHeaders::new()
                    .add(("X-Content-Type-Options", "nosniff"))
                    .add(("Referrer-Policy", "no-referrer")),
            )
            .wrap_fn(move |req, srv| {
                let start = Instant::now();
                let route = req
                    .match_pattern()
                    .unwrap_or_else(|| "(unmatched)".to_string());
                let method = req.method().to_string();
                let path = req.path().to_string();
                let request_id = next_request_id();
                let st = metrics_state.clone();
                let fut = srv.call(req);
                async move {
                    let res = json_errors(fut.await?);
                    let status = res.status().as_u16();
                    let secs = start.elapsed().as_secs_f64();
                    st.metrics.request(&route, &method, status, secs);
                    let ms = (secs * 1000.0 * 10.0).round() / 10.0;
                    let error = res.response().error().map(|e| e.to_string());
                    if status >= 500 {
                        tracing::error!(target: "prof_server::access", request_id = %request_id, %method, %route, %path, status, ms, error = error.as_deref().unwrap_or(""), "request");
                    } else {
                        tracing::info!(target: "prof_server::access", request_id = %request_id, %method, %route, %path, status, ms, "request");
                    }
                    let mut res = res;
                    if let Ok(v) = actix_web::http::header::HeaderValue::from_str(&request_id) {
                        res.headers_mut().insert(
                            actix_web::http::header::HeaderName::from_static("x-request-id"),
                            v,
                        );
                    }
                    Ok(res)
                }
            })
            .configure(routes)
            .default_service(web::to(api::not_found))
    });
    if config.workers > 0 {
        server = server.workers(config.workers);
    }
    let server = server
        .bind(config.addr.as_str())
        .map_err(|cause| ServerError::Bind {
            addr: config.addr.clone(),
            cause,
        })?;
    let addr =
        server.addrs().first().copied().ok_or_else(|| {
            ServerError::Config(format!("{} resolves to no address", config.addr))
        })?;
    Ok((server.run(), addr))
}
