//! Ceiling 2: appends each body to one file with group commit — one writer thread takes
//! everything queued, one write, one fdatasync — and answers after the sync. The least
//! any durable 2xx can cost.

use std::io::Write;
use std::sync::mpsc;

use clap::Parser;
use tokio::sync::oneshot;

#[derive(Parser)]
struct Args {
    #[arg(long, default_value = "127.0.0.1:0")]
    listen: std::net::SocketAddr,
    #[arg(long)]
    file: std::path::PathBuf,
    #[arg(long, default_value_t = 1)]
    threads: usize,
}

fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let (tx, rx) = mpsc::channel::<(axum::body::Bytes, oneshot::Sender<()>)>();
    let mut file = std::fs::OpenOptions::new().create(true).truncate(true).write(true).open(&args.file)?;
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        while let Ok(first) = rx.recv() {
            let mut group = vec![first];
            group.extend(rx.try_iter());
            buf.clear();
            for (body, _) in &group {
                buf.extend_from_slice(body);
            }
            file.write_all(&buf).expect("write");
            file.sync_data().expect("fdatasync");
            for (_, ack) in group {
                let _ = ack.send(());
            }
        }
    });
    let tx = std::sync::Arc::new(std::sync::Mutex::new(tx));
    ferry_bench::runtime(args.threads)?.block_on(async move {
        let listener = tokio::net::TcpListener::bind(args.listen).await?;
        println!("listening on http://{}", listener.local_addr()?);
        let sink = move |body| {
            let tx = tx.clone();
            async move {
                let (ack, done) = oneshot::channel();
                let sent = tx.lock().map(|tx| tx.send((body, ack)).is_ok()).unwrap_or(false);
                if sent {
                    let _ = done.await;
                }
            }
        };
        axum::serve(listener, ferry_bench::router(sink)).await?;
        Ok(())
    })
}
