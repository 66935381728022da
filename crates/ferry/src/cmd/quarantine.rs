//! `ferry quarantine ...`: read the items that failed validation, with their reasons,
//! and send one again (fixed) through a running server's admin API.

use std::io::{Read, Write};
use std::path::PathBuf;

use anyhow::Context;
use serde_json::Value;

use crate::backend::Which;
use crate::cmd::Pages;
use crate::cmd::client::{self, ServerArgs};
use crate::config::Config;

#[derive(Debug, clap::Subcommand)]
pub(crate) enum QuarantineCommand {
    /// Print quarantined items, oldest first, one JSON object per line:
    /// {"offset", "receivedAt", "sourceId", "code", "message", "field", "messageId", "item"}.
    ///
    /// Examples:
    ///   ferry quarantine list --limit 20
    ///   ferry quarantine list | jq -r .code | sort | uniq -c
    #[command(verbatim_doc_comment)]
    List {
        /// Start at this quarantine offset.
        #[arg(long, default_value_t = 0)]
        from: u64,
        /// Print at most this many items.
        #[arg(long)]
        limit: Option<usize>,
    },
    /// Show one quarantined item: why it was refused, and the item as it came.
    ///
    /// Examples:
    ///   ferry quarantine show 12
    ///   ferry quarantine show 12 --json | jq .item
    #[command(verbatim_doc_comment)]
    Show {
        /// Its offset (from `ferry quarantine list`).
        offset: u64,
        /// The record as one JSON object instead.
        #[arg(long)]
        json: bool,
    },
    /// Send a quarantined item through validation again, as it was or fixed, via a running
    /// server's admin API; stored when it now passes.
    ///
    /// Examples:
    ///   ferry quarantine resubmit 12
    ///   ferry quarantine show 12 --json | jq '.item | .event = "Order Completed"' > fixed.json
    ///   ferry quarantine resubmit 12 --item fixed.json
    #[command(verbatim_doc_comment)]
    Resubmit {
        /// Its offset.
        offset: u64,
        /// The fixed item, a JSON file (`-` for standard input); default: the item as it came.
        #[arg(long)]
        item: Option<PathBuf>,
        /// The admin token (default: admin.token from the configuration, or FERRY_ADMIN_TOKEN).
        #[arg(long, env = "FERRY_ADMIN_TOKEN", hide_env_values = true)]
        token: Option<String>,
        #[command(flatten)]
        server: ServerArgs,
    },
}

pub(crate) fn run(config: &Config, command: QuarantineCommand) -> anyhow::Result<()> {
    match command {
        QuarantineCommand::List { from, limit } => list(config, from, limit),
        QuarantineCommand::Show { offset, json } => show(config, offset, json),
        QuarantineCommand::Resubmit { offset, item, token, server } => resubmit(config, offset, item, token, &server),
    }
}

fn show(config: &Config, offset: u64, json: bool) -> anyhow::Result<()> {
    let Some(view) = Pages::open(config, Which::Quarantine)? else {
        anyhow::bail!(
            "the quarantine is empty (no {} yet); is --data-dir right?",
            config.data_dir.join("quarantine").display()
        );
    };
    let record = view.read(offset, 1)?.into_iter().find(|(o, _)| *o == offset);
    let Some((_, record)) = record else {
        anyhow::bail!("no quarantined item at offset {offset}; see `ferry quarantine list` for the offsets");
    };
    let mut doc: Value = serde_json::from_slice(&record).context("the quarantine record is not JSON")?;
    if json {
        if let Some(o) = doc.as_object_mut() {
            o.insert("offset".into(), offset.into());
        }
        println!("{doc}");
        return Ok(());
    }
    let text = |k: &str| doc.get(k).and_then(Value::as_str).unwrap_or("-").to_owned();
    println!("offset      {offset}");
    println!("received    {}", text("receivedAt"));
    println!("source      {}", text("sourceId"));
    println!("messageId   {}", text("messageId"));
    println!(
        "reason      {}: {}{}",
        text("code"),
        text("message"),
        doc.get("field").and_then(Value::as_str).map(|f| format!(" (field {f})")).unwrap_or_default()
    );
    let item = match &doc["item"] {
        Value::String(raw) => serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.clone())),
        other => other.clone(),
    };
    println!("item\n{}", serde_json::to_string_pretty(&item)?);
    Ok(())
}

fn resubmit(
    config: &Config,
    offset: u64,
    item: Option<PathBuf>,
    token: Option<String>,
    server: &ServerArgs,
) -> anyhow::Result<()> {
    let item: Option<Value> = match item {
        None => None,
        Some(path) => {
            let mut text = String::new();
            if path.as_os_str() == "-" {
                std::io::stdin().read_to_string(&mut text)?;
            } else {
                text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
            }
            let value: Value = serde_json::from_str(&text).context("--item must hold one JSON object")?;
            anyhow::ensure!(value.is_object(), "--item must hold one JSON object (a Segment message)");
            Some(value)
        }
    };
    let base = client::base_url(config, server);
    let url = format!("{base}/admin/v1/quarantine/{offset}/resubmit");
    let mut headers = vec![(hyper::header::CONTENT_TYPE, "application/json".parse()?)];
    headers.extend(client::bearer(config, token)?);
    let body = serde_json::json!({ "item": item }).to_string();
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = runtime.block_on(async {
        client::client()?
            .send(hyper::Method::POST, &url, &headers, bytes::Bytes::from(body), client::REQUEST_TIMEOUT)
            .await
            .map_err(|e| client::unreachable(&base, &e))
    })?;
    match reply.status {
        200 => {}
        401 => anyhow::bail!(
            "ferry wants the admin token ({}); pass --token or set FERRY_ADMIN_TOKEN",
            client::explain(401, &reply.body)
        ),
        status => anyhow::bail!("ferry did not resubmit: {}", client::explain(status, &reply.body)),
    }
    let answer: Value = serde_json::from_slice(&reply.body).context("unexpected answer from ferry")?;
    if answer["resubmitted"] == true {
        let ids: Vec<&str> = answer["messageIds"].as_array().into_iter().flatten().filter_map(Value::as_str).collect();
        let duplicate = if answer["duplicate"] == true { " (already stored: a duplicate)" } else { "" };
        println!("resubmitted item {offset}: stored as messageId {}{duplicate}", ids.join(", "));
        return Ok(());
    }
    anyhow::bail!(
        "item {offset} is still invalid: {}: {}{}; fix it and pass it with --item (see `ferry quarantine resubmit --help`)",
        answer["code"].as_str().unwrap_or("?"),
        answer["message"].as_str().unwrap_or("?"),
        answer["field"].as_str().map(|f| format!(" (field {f})")).unwrap_or_default()
    )
}

fn list(config: &Config, from: u64, limit: Option<usize>) -> anyhow::Result<()> {
    let Some(view) = Pages::open(config, Which::Quarantine)? else {
        println!("quarantine is empty (no {} yet)", config.data_dir.join("quarantine").display());
        return Ok(());
    };
    let stdout = std::io::stdout();
    let mut out = std::io::BufWriter::new(stdout.lock());
    let mut next = from;
    let mut left = limit.unwrap_or(usize::MAX);
    let end = view.end()?;
    while left > 0 {
        let records = view.read_before(next, end, left.min(1024))?;
        let Some(last) = records.last() else { break };
        next = last.0 + 1;
        for (offset, record) in &records {
            // Records are JSON objects written by ferry-event; add the offset up front.
            let body = std::str::from_utf8(record).unwrap_or("{}").trim();
            let rest = body.strip_prefix('{').unwrap_or("}");
            let separator = if rest.trim_start().starts_with('}') { "" } else { "," };
            writeln!(out, "{{\"offset\":{offset}{separator}{rest}")?;
        }
        left -= records.len();
    }
    out.flush()?;
    Ok(())
}
