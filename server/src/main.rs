//! `prof-server`: the prof server on its own (the same server as `prof serve`).

use anyhow::Context;
use clap::Parser;

#[derive(Parser)]
#[command(
    name = "prof-server",
    version,
    about = "Store, symbolize and serve prof profiles over HTTP"
)]
struct Cli {
    #[command(flatten)]
    serve: prof_server::ServeArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    prof_server::init_logging();
    let config = cli.serve.into_config()?;
    let storage = config.describe_storage();
    let server = prof_server::spawn(config)?;
    eprintln!("prof-server: listening on {} ({storage})", server.url());
    server.wait().context("serving")
}
