//! `ferry send <type>`: one test event to a running server, the way a Segment library
//! sends it (`POST /v1/<type>` with the write key as Basic auth).

use anyhow::Context;
use serde_json::{Map, Value, json};

use crate::cmd::client::{self, ServerArgs};
use crate::config::Config;

/// The calls of the Segment spec.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Call {
    Track,
    Identify,
    Page,
    Screen,
    Group,
    Alias,
}

impl Call {
    fn name(self) -> &'static str {
        match self {
            Call::Track => "track",
            Call::Identify => "identify",
            Call::Page => "page",
            Call::Screen => "screen",
            Call::Group => "group",
            Call::Alias => "alias",
        }
    }
}

#[derive(Debug, clap::Args)]
#[command(after_help = "Examples:
  ferry send track --event 'Signed Up' --user-id u1 --properties '{\"plan\":\"pro\"}'
  ferry send identify --user-id u1 --traits '{\"email\":\"ada@example.com\"}'
  ferry send page --name Pricing --anonymous-id a1
  ferry send group --user-id u1 --group-id acme
  ferry send alias --user-id u1 --previous-id a1
  ferry send track --event Test --url http://ferry.internal:8088 --write-key wk_live")]
pub(crate) struct SendArgs {
    /// The call: track, identify, page, screen, group or alias.
    #[arg(value_enum)]
    call: Call,
    /// `event` of a track call.
    #[arg(long)]
    event: Option<String>,
    /// `name` of a page or screen call.
    #[arg(long)]
    name: Option<String>,
    /// `userId` (at least one of --user-id and --anonymous-id; default: anonymousId
    /// `ferry-send`).
    #[arg(long)]
    user_id: Option<String>,
    #[arg(long)]
    anonymous_id: Option<String>,
    /// `groupId` of a group call.
    #[arg(long)]
    group_id: Option<String>,
    /// `previousId` of an alias call.
    #[arg(long)]
    previous_id: Option<String>,
    /// `properties`, a JSON object.
    #[arg(long)]
    properties: Option<String>,
    /// `traits`, a JSON object.
    #[arg(long)]
    traits: Option<String>,
    /// `context`, a JSON object.
    #[arg(long)]
    context: Option<String>,
    /// `messageId` (default: a new UUID).
    #[arg(long)]
    message_id: Option<String>,
    /// `timestamp`, ISO-8601 (default: now, as the server receives it).
    #[arg(long)]
    timestamp: Option<String>,
    /// The source's write key (default: the first one configured).
    #[arg(long, env = "FERRY_WRITE_KEY", hide_env_values = true)]
    write_key: Option<String>,
    #[command(flatten)]
    server: ServerArgs,
}

fn object(flag: &str, text: Option<&str>) -> anyhow::Result<Option<Value>> {
    let Some(text) = text else { return Ok(None) };
    let value: Value = serde_json::from_str(text)
        .with_context(|| format!("{flag} is not JSON; quote it, e.g. {flag} '{{\"plan\":\"pro\"}}'"))?;
    anyhow::ensure!(value.is_object(), "{flag} must be a JSON object such as '{{\"plan\":\"pro\"}}'");
    Ok(Some(value))
}

/// The event as the server will receive it.
fn message(args: &SendArgs) -> anyhow::Result<Value> {
    let mut m = Map::new();
    let mut put = |key: &str, value: Option<Value>| {
        if let Some(value) = value {
            m.insert(key.to_owned(), value);
        }
    };
    put("type", Some(json!(args.call.name())));
    put("messageId", Some(json!(args.message_id.clone().unwrap_or_else(|| uuid::Uuid::new_v4().to_string()))));
    let anonymous = match (&args.user_id, &args.anonymous_id) {
        (None, None) => Some("ferry-send".to_owned()),
        (_, anonymous) => anonymous.clone(),
    };
    put("userId", args.user_id.clone().map(Value::String));
    put("anonymousId", anonymous.map(Value::String));
    put("event", args.event.clone().map(Value::String));
    put("name", args.name.clone().map(Value::String));
    put("groupId", args.group_id.clone().map(Value::String));
    put("previousId", args.previous_id.clone().map(Value::String));
    put("properties", object("--properties", args.properties.as_deref())?);
    put("traits", object("--traits", args.traits.as_deref())?);
    put("context", object("--context", args.context.as_deref())?);
    put("timestamp", args.timestamp.clone().map(Value::String));
    let missing = match args.call {
        Call::Track if args.event.is_none() => Some("a track call needs --event"),
        Call::Group if args.group_id.is_none() => Some("a group call needs --group-id"),
        Call::Alias if args.previous_id.is_none() || args.user_id.is_none() => {
            Some("an alias call needs --user-id and --previous-id")
        }
        _ => None,
    };
    if let Some(missing) = missing {
        anyhow::bail!("{missing}; see `ferry send --help` for examples");
    }
    Ok(Value::Object(m))
}

pub(crate) fn run(config: &Config, args: SendArgs) -> anyhow::Result<()> {
    let message = message(&args)?;
    let base = client::base_url(config, &args.server);
    let key = client::write_key(config, args.write_key.clone());
    let url = format!("{base}/v1/{}", args.call.name());
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    let reply = runtime.block_on(async {
        let http = client::client()?;
        let headers = [client::basic(&key)?, (hyper::header::CONTENT_TYPE, "application/json".parse()?)];
        let body = bytes::Bytes::from(message.to_string());
        http.send(hyper::Method::POST, &url, &headers, body, client::REQUEST_TIMEOUT)
            .await
            .map_err(|e| client::unreachable(&base, &e))
    })?;
    let id = message["messageId"].as_str().unwrap_or_default();
    match reply.status {
        200 => {
            let what = message.get("event").or(message.get("name")).and_then(Value::as_str);
            println!(
                "sent {}{} (messageId {id}) to {base}",
                args.call.name(),
                what.map(|w| format!(" {w:?}")).unwrap_or_default()
            );
            Ok(())
        }
        400 => anyhow::bail!(
            "ferry refused the event: {}; it is kept in quarantine (`ferry quarantine list`)",
            client::explain(reply.status, &reply.body)
        ),
        401 => anyhow::bail!(
            "ferry refused the write key: {}; pass a configured key with --write-key (or FERRY_WRITE_KEY)",
            client::explain(reply.status, &reply.body)
        ),
        status => anyhow::bail!("ferry answered {}; try again later", client::explain(status, &reply.body)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::Parser;

    #[derive(Parser)]
    struct Wrapper {
        #[command(flatten)]
        args: SendArgs,
    }

    fn parse(line: &[&str]) -> SendArgs {
        Wrapper::try_parse_from(std::iter::once("send").chain(line.iter().copied())).unwrap().args
    }

    #[test]
    fn messages_follow_the_spec() {
        let m =
            message(&parse(&["track", "--event", "Signed Up", "--user-id", "u1", "--properties", r#"{"plan":"pro"}"#]))
                .unwrap();
        assert_eq!(
            (m["type"].as_str(), m["event"].as_str(), m["userId"].as_str()),
            (Some("track"), Some("Signed Up"), Some("u1"))
        );
        assert_eq!(m["properties"]["plan"], "pro");
        assert!(m.get("anonymousId").is_none());
        assert_eq!(m["messageId"].as_str().unwrap().len(), 36);
        let page = message(&parse(&["page", "--name", "Pricing"])).unwrap();
        assert_eq!(page["anonymousId"], "ferry-send");
        let err = message(&parse(&["track"])).unwrap_err().to_string();
        assert!(err.contains("needs --event"), "{err}");
        let err = message(&parse(&["identify", "--traits", "[1]"])).unwrap_err().to_string();
        assert!(err.contains("must be a JSON object"), "{err}");
        let err = message(&parse(&["alias", "--user-id", "u"])).unwrap_err().to_string();
        assert!(err.contains("--previous-id"), "{err}");
    }
}
