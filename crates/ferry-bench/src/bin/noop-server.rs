//! Ceiling 1, the no-op server: reads each request body and answers 200
//! `{"success":true}`. Nothing is parsed or stored; what is left is the cost of HTTP on this
//! machine with ferry's stack (axum on hyper, tokio).
//!
//! `noop-server --listen 127.0.0.1:0 --threads 1` prints `noop-server listening on http://ADDR`.

use clap::Parser;

#[derive(Parser)]
#[command(about = "Answers every POST with 200 after reading the body (the benchmark's no-op ceiling)")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// Runtime worker threads.
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_bench::server::runtime(args.threads)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("noop-server listening on http://{}", listener.local_addr()?);
        axum::serve(listener, ferry_bench::server::router(|_body| async { Ok(()) })).await?;
        Ok(())
    })
}
