//! Ceiling 2, the durable no-op server: the least any durable 2xx can cost on this disk.
//! Each request body goes to one writer thread; the writer takes everything queued, appends
//! it to one file with one `write`, calls `fdatasync` once (group commit) and only then lets
//! the handlers answer 200. Nothing is parsed, framed or indexed.
//!
//! `durable-noop-server --listen 127.0.0.1:0 --file /var/tmp/x/log.bin --threads 1` prints
//! `durable-noop-server listening on http://ADDR`.

use std::io::Write;
use std::path::PathBuf;
use std::sync::mpsc;

use axum::body::Bytes;
use clap::Parser;
use tokio::sync::oneshot;

#[derive(Parser)]
#[command(about = "Appends each body to one file with group commit and answers after fdatasync")]
struct Args {
    /// Address to listen on.
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    /// The file to append to (created or truncated).
    #[arg(long)]
    file: PathBuf,
    /// Runtime worker threads (the writer thread comes on top).
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

type Pending = (Bytes, oneshot::Sender<bool>);

/// The group-commit loop: block for the first body, take all others already queued, one
/// write, one fdatasync, then acknowledge them all.
fn writer(mut file: std::fs::File, queue: mpsc::Receiver<Pending>) {
    let mut buf = Vec::with_capacity(1 << 20);
    let mut group: Vec<Pending> = Vec::new();
    while let Ok(first) = queue.recv() {
        group.push(first);
        group.extend(queue.try_iter());
        buf.clear();
        for (body, _) in &group {
            buf.extend_from_slice(body);
            buf.push(b'\n');
        }
        let ok = file.write_all(&buf).and_then(|()| file.sync_data());
        if let Err(error) = &ok {
            eprintln!("durable-noop-server: {error}");
        }
        for (_, ack) in group.drain(..) {
            let _ = ack.send(ok.is_ok());
        }
    }
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&args.file)?;
    let (queue, pending) = mpsc::channel::<Pending>();
    std::thread::Builder::new().name("group-commit".into()).spawn(move || writer(file, pending))?;
    ferry_bench::server::runtime(args.threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("durable-noop-server listening on http://{}", listener.local_addr()?);
        let sink = move |body: Bytes| {
            let queue = queue.clone();
            async move {
                let (ack, done) = oneshot::channel();
                queue.send((body, ack)).map_err(|_| "writer gone")?;
                match done.await {
                    Ok(true) => Ok(()),
                    _ => Err("write failed"),
                }
            }
        };
        axum::serve(listener, ferry_bench::server::router(sink)).await?;
        Ok(())
    })
}
