//! Ceiling 1: reads the body and answers 200. Nothing is stored.

use clap::Parser;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    ferry_bench::runtime(args.threads)?.block_on(async {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        axum::serve(listener, ferry_bench::router(|_body| async {})).await?;
        Ok(())
    })
}
