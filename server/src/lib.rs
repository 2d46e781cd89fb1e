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
pub mod exports;
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
        }
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
    /// Data directory (database and blobs) [default: $XDG_DATA_HOME/prof or ~/.local/share/prof].
    #[arg(long, value_name = "DIR")]
    pub data: Option<PathBuf>,
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
        Ok(Config {
            addr: self.addr,
            data_dir: self.data.unwrap_or_else(default_data_dir),
            tokens,
            private: self.private,
            max_upload_bytes: self.max_upload_mb.saturating_mul(1 << 20),
            cache_profiles: self.cache_profiles.max(1),
            workers: self.workers.unwrap_or(0),
            public_url: self.public_url,
        })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("{0}")]
    Config(String),
    #[error("cannot open the data directory {dir}: {source}")]
    Store {
        dir: String,
        #[source]
        source: StoreError,
    },
    #[error("cannot listen on {addr}: {source}")]
    Bind {
        addr: String,
        #[source]
        source: std::io::Error,
    },
    #[error("the server failed: {0}")]
    Io(#[from] std::io::Error),
}

/// Everything the handlers share.
pub struct AppState {
    pub config: Config,
    pub storage: Arc<Storage>,
    pub cache: cache::Cache,
    pub metrics: metrics::Metrics,
    /// Background preparations run one at a time.
    pub warmup: tokio::sync::Semaphore,
}

impl AppState {
    pub fn new(config: Config, storage: Storage) -> AppState {
        AppState {
            cache: cache::Cache::new(config.cache_profiles),
            config,
            storage: Arc::new(storage),
            metrics: metrics::Metrics::default(),
            warmup: tokio::sync::Semaphore::new(1),
        }
    }

    /// Opens the local storage in `config.data_dir`.
    pub fn open(config: Config) -> Result<AppState, ServerError> {
        let storage =
            Storage::open_local(&config.data_dir).map_err(|source| ServerError::Store {
                dir: config.data_dir.display().to_string(),
                source,
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
    .service(resource("/metrics").route(web::get().to(api::metrics)))
    // Exports on download (`?format=`) and the vmprof client's upload API.
    .configure(exports::routes)
    // The interactive viewer at / and /p/{id}; the plain pages at /plain.
    .configure(viewer::routes);
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
                let st = metrics_state.clone();
                let fut = srv.call(req);
                async move {
                    let res = fut.await?;
                    st.metrics.request(
                        &route,
                        &method,
                        res.status().as_u16(),
                        start.elapsed().as_secs_f64(),
                    );
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
        .map_err(|source| ServerError::Bind {
            addr: config.addr.clone(),
            source,
        })?;
    let addr =
        server.addrs().first().copied().ok_or_else(|| {
            ServerError::Config(format!("{} resolves to no address", config.addr))
        })?;
    Ok((server.run(), addr))
}
