//! Reading the configuration: the file, then `FERRY_<SECTION>__<KEY>` environment
//! variables over it (flags are applied over both by the commands). Every problem is
//! collected, not just the first: each unknown key (with the closest valid one), then
//! the first error that cannot be stepped over (a wrong type, an unknown variant).

use ferry_destinations::settings::Settings;
use serde::Deserialize;
use toml::{Table, Value};

use super::{Config, DestinationConfig};

/// Environment variables that set configuration keys: `FERRY_` then the key's path in
/// upper case with `__` between levels, e.g. `FERRY_SERVER__LISTEN`, `FERRY_LOG__SYNC`,
/// `FERRY_DATA_DIR` is the `--data-dir` flag's variable (a flag, so it wins anyway).
pub(crate) const ENV_PREFIX: &str = "FERRY_";

/// An override from the environment.
#[derive(Debug, Clone)]
struct Override {
    variable: String,
    path: Vec<String>,
    value: String,
}

fn overrides(env: &[(String, String)]) -> Vec<Override> {
    let mut out: Vec<Override> = env
        .iter()
        .filter_map(|(variable, value)| {
            let rest = variable.strip_prefix(ENV_PREFIX)?;
            rest.contains("__").then(|| Override {
                variable: variable.clone(),
                path: rest.split("__").map(str::to_lowercase).collect(),
                value: value.clone(),
            })
        })
        .collect();
    out.sort_by(|a, b| a.variable.cmp(&b.variable));
    out
}

/// A value from the environment: TOML when it reads as TOML (`true`, `100`, `["a"]`,
/// `"quoted"`), else the text itself.
fn typed(value: &str) -> Value {
    let parsed = format!("v = {value}").parse::<Table>().ok().and_then(|mut t| t.remove("v"));
    parsed.unwrap_or_else(|| Value::String(value.to_owned()))
}

fn set(table: &mut Table, path: &[String], value: Value) -> Result<(), String> {
    let (last, parents) = path.split_last().ok_or("empty key")?;
    let mut here = table;
    for (i, key) in parents.iter().enumerate() {
        let entry = here.entry(key.clone()).or_insert_with(|| Value::Table(Table::new()));
        here = match entry {
            Value::Table(t) => t,
            _ => return Err(format!("`{}` is not a section", path[..=i].join("."))),
        };
    }
    here.insert(last.clone(), value);
    Ok(())
}

/// `unknown field `x`, expected one of `a`, `b`` (serde's wording): `x` and the list.
fn unknown_field(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split("unknown field `").nth(1)?;
    let (name, rest) = rest.split_once('`')?;
    Some((name.to_owned(), backquoted(rest)))
}

/// `unknown variant `x`, expected one of `a`, `b``: `x` and the list.
fn unknown_variant(message: &str) -> Option<(String, Vec<String>)> {
    let rest = message.split("unknown variant `").nth(1)?;
    let (name, rest) = rest.split_once('`')?;
    Some((name.to_owned(), backquoted(rest)))
}

/// The backquoted words of the message's first line (later lines say where: `in `x``).
fn backquoted(text: &str) -> Vec<String> {
    let first = text.lines().next().unwrap_or_default();
    first.split('`').skip(1).step_by(2).map(str::to_owned).collect()
}

/// The closest of `candidates` to `wanted`, when close enough to be a likely typo.
pub(crate) fn closest<'a>(wanted: &str, candidates: &'a [String]) -> Option<&'a str> {
    let best = candidates.iter().map(|c| (distance(wanted, c), c)).min_by_key(|(d, _)| *d)?;
    let limit = (wanted.chars().count() / 3).max(2);
    (best.0 <= limit).then_some(best.1.as_str())
}

/// Levenshtein distance, by characters.
fn distance(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut row: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut diagonal = row[0];
        row[0] = i + 1;
        for (j, cb) in b.iter().enumerate() {
            let above = row[j + 1];
            row[j + 1] = (above + 1).min(row[j] + 1).min(diagonal + usize::from(ca != *cb));
            diagonal = above;
        }
    }
    row[b.len()]
}

/// A key no section has, offered to serde to have it list the keys a section takes.
const PROBE: &str = "zz_probe";

/// The keys of a `[[destinations]]` table of type `kind` that are the type's own (none
/// for an unknown type), from serde's list.
fn own_keys(kind: &str) -> Vec<String> {
    let probe = Table::from_iter([("type".to_owned(), Value::from(kind)), (PROBE.to_owned(), Value::from(1))]);
    let error = Settings::deserialize(probe).err().map(|e| e.to_string()).unwrap_or_default();
    unknown_field(&error).map(|(_, fields)| fields).unwrap_or_default()
}

/// Every key a `[[destinations]]` table of type `kind` takes: `name`, `type`, the type's
/// own, then those every destination takes.
fn destination_keys(kind: &str) -> Vec<String> {
    let (name_and_type, delivery) = DestinationConfig::KEYS.split_at(2);
    let name_and_type = name_and_type.iter().map(|k| (*k).to_owned());
    name_and_type.chain(own_keys(kind)).chain(delivery.iter().map(|k| (*k).to_owned())).collect()
}

/// The `[[destinations]]` table serde refused `key` in, when `fields` (serde's list) are a
/// type's own keys: the first whose type is that one and has `key`. Its path, and every key
/// it takes.
fn unknown_destination_key(table: &Table, key: &str, fields: &[String]) -> Option<(Vec<String>, Vec<String>)> {
    let Some(Value::Array(items)) = table.get("destinations") else { return None };
    for (i, item) in items.iter().enumerate() {
        let Some(Value::String(kind)) = item.get("type") else { continue };
        if item.get(key).is_none() || own_keys(kind) != fields {
            continue;
        }
        return Some((vec![format!("destinations[{i}]"), key.to_owned()], destination_keys(kind)));
    }
    None
}

/// The key of a `[[destinations]]` table that `message` (the first line of serde's error)
/// is about, when serde could only say `destinations`: a type's own keys reach it through
/// a buffer that forgets where they were, so each is tried alone.
fn destination_key_of(table: &Table, message: &str) -> Option<String> {
    let Some(Value::Array(items)) = table.get("destinations") else { return None };
    for item in items {
        let (Value::Table(item), Some(kind)) = (item, item.get("type")) else { continue };
        for (key, value) in item {
            if key != "type" && DestinationConfig::KEYS.contains(&key.as_str()) {
                continue;
            }
            let alone = Table::from_iter([("type".to_owned(), kind.clone()), (key.clone(), value.clone())]);
            let error = Settings::deserialize(alone).err().map(|e| e.to_string()).unwrap_or_default();
            if error.lines().next() == Some(message) {
                return Some(format!("destinations.{key}"));
            }
        }
    }
    None
}

/// Where `key` sits among the tables (and arrays of tables) of `value`, preferring a
/// table whose other keys are among `fields` (the struct serde was filling).
fn find(value: &Table, key: &str, fields: &[String]) -> Option<Vec<String>> {
    fn walk(
        table: &Table,
        key: &str,
        fields: &[String],
        path: &mut Vec<String>,
        found: &mut Vec<(usize, Vec<String>)>,
    ) {
        if table.contains_key(key) {
            let fit = table.keys().filter(|k| fields.contains(k)).count();
            let mut at = path.clone();
            at.push(key.to_owned());
            found.push((fit, at));
        }
        for (name, child) in table {
            match child {
                Value::Table(t) => {
                    path.push(name.clone());
                    walk(t, key, fields, path, found);
                    path.pop();
                }
                Value::Array(items) => {
                    for (i, item) in items.iter().enumerate() {
                        if let Value::Table(t) = item {
                            path.push(format!("{name}[{i}]"));
                            walk(t, key, fields, path, found);
                            path.pop();
                        }
                    }
                }
                _ => {}
            }
        }
    }
    let mut found = Vec::new();
    walk(value, key, fields, &mut Vec::new(), &mut found);
    // The best fit; among equals, the first met.
    let best = found.iter().map(|(fit, _)| *fit).max()?;
    found.into_iter().find(|(fit, _)| *fit == best).map(|(_, path)| path)
}

/// Remove the key at `path`; whether it was there.
fn remove(table: &mut Table, path: &[String]) -> bool {
    let Some((last, parents)) = path.split_last() else { return false };
    let mut here = table;
    for part in parents {
        let (name, index) = match part.split_once('[') {
            Some((name, i)) => (name, i.trim_end_matches(']').parse::<usize>().ok()),
            None => (part.as_str(), None),
        };
        let next = match (here.get_mut(name), index) {
            (Some(Value::Table(t)), None) => t,
            (Some(Value::Array(items)), Some(i)) => match items.get_mut(i) {
                Some(Value::Table(t)) => t,
                _ => return false,
            },
            _ => return false,
        };
        here = next;
    }
    // A whole section is not dropped for one bad key inside it.
    if matches!(here.get(last), None | Some(Value::Table(_)))
        || matches!(here.get(last), Some(Value::Array(a)) if a.iter().any(Value::is_table))
    {
        return false;
    }
    here.remove(last).is_some()
}

/// The configuration from `text` (named `origin` in errors) and the environment, or
/// every problem found.
pub(crate) fn read(text: &str, origin: &str, env: &[(String, String)]) -> Result<Config, Vec<String>> {
    let mut table: Table = text.parse().map_err(|e: toml::de::Error| vec![format!("{origin}: {e}")])?;
    let mut errors = Vec::new();
    let overrides = overrides(env);
    for o in &overrides {
        if let Err(why) = set(&mut table, &o.path, typed(&o.value)) {
            errors.push(format!("{}: {why}", o.variable));
        }
    }
    // A value from the environment that reads as a number or a boolean may be meant as
    // text (a token of digits, say): where the typed value fails and the text passes,
    // take the text.
    for o in &overrides {
        if typed(&o.value).is_str() {
            continue;
        }
        if Config::deserialize(table.clone()).is_err() {
            let mut as_text = table.clone();
            if set(&mut as_text, &o.path, Value::String(o.value.clone())).is_ok() {
                let typed_error = Config::deserialize(table.clone()).err().map(|e| e.to_string());
                let text_error = Config::deserialize(as_text.clone()).err().map(|e| e.to_string());
                if text_error.is_none()
                    || (typed_error.is_some_and(|e| e.contains("invalid type"))
                        && text_error.is_some_and(|e| !e.contains("invalid type")))
                {
                    table = as_text;
                }
            }
        }
    }
    let from_env = |path: &[String]| {
        let plain: Vec<String> = path.iter().map(|p| p.split('[').next().unwrap_or(p).to_owned()).collect();
        overrides.iter().find(|o| o.path == plain).map(|o| format!(" (from {})", o.variable)).unwrap_or_default()
    };
    for _ in 0..200 {
        let error = match Config::deserialize(table.clone()) {
            Ok(config) if errors.is_empty() => return Ok(config),
            Ok(rest) => {
                // What is left is read: its own problems belong in the same report.
                errors.extend(rest.problems());
                return Err(errors);
            }
            Err(error) => error.to_string(),
        };
        if let Some((name, fields)) = unknown_field(&error) {
            // A destination's key is one of its type's or of every destination's.
            let (path, fields) = match unknown_destination_key(&table, &name, &fields) {
                Some(found) => found,
                None => match find(&table, &name, &fields) {
                    Some(path) => (path, fields),
                    None => {
                        errors.push(format!("{origin}: {}", error.trim()));
                        return Err(errors);
                    }
                },
            };
            let hint = match closest(&name, &fields) {
                Some(best) => format!("; did you mean `{best}`?"),
                None => format!("; valid keys here: {}", fields.join(", ")),
            };
            errors.push(format!("{origin}: unknown key `{}`{}{hint}", path.join("."), from_env(&path)));
            remove(&mut table, &path);
            continue;
        }
        // Not something to step over: the message, and the key it is about.
        let mut lines = error.trim().lines();
        let first = lines.next().unwrap_or_default();
        let mut message = first.to_owned();
        if let Some((name, variants)) = unknown_variant(&error)
            && let Some(best) = closest(&name, &variants)
        {
            message.push_str(&format!("; did you mean `{best}`?"));
        }
        let mut key = lines.find_map(|l| l.trim().strip_prefix("in `")).map(|k| k.trim_end_matches('`').to_owned());
        if key.as_deref() == Some("destinations") {
            key = destination_key_of(&table, first).or(key);
        }
        let Some(key) = key else {
            errors.push(format!("{origin}: {message}"));
            return Err(errors);
        };
        let path: Vec<String> = key.split('.').map(str::to_owned).collect();
        errors.push(format!("{origin}: `{key}`{}: {message}", from_env(&path)));
        // Without the key its default applies, and the rest can be checked too.
        if !remove(&mut table, &path) {
            return Err(errors);
        }
    }
    errors.push(format!("{origin}: too many unknown keys"));
    Err(errors)
}

/// Every key of every section, from serde's own list of each struct's fields (asked by
/// offering a key no struct has), for the configuration reference check. A destination
/// type's own keys are `destinations[<type>].<key>`; those every destination takes are
/// `destinations[].<key>`.
#[cfg(test)]
pub(crate) fn known_keys() -> Vec<String> {
    let fields = |toml_text: &str| -> Vec<String> {
        let error = toml::from_str::<Config>(toml_text).expect_err("the probe key is unknown").to_string();
        unknown_field(&error).expect("serde lists the fields").1
    };
    let mut keys = Vec::new();
    let sections = [
        ("", "zz_probe = 1\n".to_owned()),
        ("server.", "[server]\nzz_probe = 1\n".to_owned()),
        ("log.", "[log]\nzz_probe = 1\n".to_owned()),
        ("admin.", "[admin]\nzz_probe = 1\n".to_owned()),
        ("nats.", "[nats]\nzz_probe = 1\n".to_owned()),
        ("sources[].", "[[sources]]\nid = \"a\"\nwrite_keys = []\nzz_probe = 1\n".to_owned()),
        (
            "destinations[mixpanel].service_account.",
            "[[destinations]]\nname = \"a\"\ntype = \"mixpanel\"\n[destinations.service_account]\nuser = \"u\"\nsecret = \"s\"\nproject_id = \"p\"\nzz_probe = 1\n".to_owned(),
        ),
    ];
    for (prefix, probe) in sections {
        for field in fields(&probe) {
            keys.push(format!("{prefix}{field}"));
        }
    }
    keys.extend(DestinationConfig::KEYS.iter().map(|key| format!("destinations[].{key}")));
    let probe = Table::from_iter([("type".to_owned(), Value::from(PROBE))]);
    let error = Settings::deserialize(probe).expect_err("the probe type is unknown").to_string();
    let (_, kinds) = unknown_variant(&error).expect("serde lists the types");
    for kind in kinds {
        keys.extend(own_keys(&kind).iter().map(|key| format!("destinations[{kind}].{key}")));
    }
    keys
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect()
    }

    #[test]
    fn every_unknown_key_is_reported_with_the_closest_valid_one() {
        let text = "data_dri = \"x\"\n[server]\nlistn = \"127.0.0.1:1\"\n[log]\nsync = \"never\"\nretention_hour = 5\n\
                    [[destinations]]\nname = \"w\"\ntype = \"webhook\"\nurls = [\"http://x\"]\nbatch_event = 5\n\
                    [[destinations]]\nname = \"v\"\ntype = \"webhook\"\nurls = [\"http://x\"]\nwhatever_this_is = 1\n";
        let errors = read(text, "ferry.toml", &[]).unwrap_err();
        assert_eq!(
            errors,
            [
                "ferry.toml: unknown key `data_dri`; did you mean `data_dir`?",
                "ferry.toml: unknown key `destinations[0].batch_event`; did you mean `batch_events`?",
                "ferry.toml: unknown key `destinations[1].whatever_this_is`; valid keys here: name, type, urls, headers, shared_secret, method, batch, start, batch_events, batch_bytes, batch_ms, max_age_seconds, retry_initial_ms, retry_max_ms, timeout_ms",
                "ferry.toml: unknown key `log.retention_hour`; did you mean `retention_hours`?",
                "ferry.toml: unknown key `server.listn`; did you mean `listen`?",
            ]
        );
    }

    /// A key is checked against its destination's type: `url` belongs to the postgres
    /// destination and not to the sqlite one, and a wrong value of a type's own key is
    /// located although serde reads those through a buffer.
    #[test]
    fn destination_keys_are_checked_against_their_type() {
        let text = "[[destinations]]\nname = \"pg\"\ntype = \"postgres\"\nurl = \"postgres://h\"\n\
                    [[destinations]]\nname = \"lite\"\ntype = \"sqlite\"\nurl = \"postgres://h\"\npaht = \"w.db\"\n";
        let errors = read(text, "f", &[]).unwrap_err();
        assert_eq!(errors.len(), 2, "{errors:?}");
        assert!(errors[0].starts_with("f: unknown key `destinations[1].paht`; did you mean `path`?"), "{errors:?}");
        assert!(
            errors[1].starts_with("f: unknown key `destinations[1].url`; valid keys here: name, type, path,"),
            "{errors:?}"
        );
        let errors =
            read("[[destinations]]\nname = \"l\"\ntype = \"files\"\nlevel = \"high\"\n", "f", &[]).unwrap_err();
        assert_eq!(errors, ["f: `destinations.level`: invalid type: string \"high\", expected u32"]);
        let text = "[[destinations]]\nname = \"m\"\ntype = \"mixpanel\"\nproject_token = \"t\"\n\
                    [destinations.service_account]\nuser = \"u\"\nsecret = \"s\"\nprojet_id = \"p\"\n";
        let errors = read(text, "f", &[]).unwrap_err();
        assert_eq!(errors[0], "f: unknown key `destinations[0].service_account.projet_id`; did you mean `project_id`?");
    }

    #[test]
    fn wrong_types_and_variants_are_located_and_explained() {
        let errors = read("[log]\nsync = \"sometimes\"\n", "ferry.toml", &[]).unwrap_err();
        assert_eq!(
            errors,
            ["ferry.toml: `log.sync`: unknown variant `sometimes`, expected one of `always`, `interval`, `never`"]
        );
        let errors =
            read("[[destinations]]\nname = \"x\"\ntype = \"postgre\"\nurl = \"postgres://h\"\n", "f", &[]).unwrap_err();
        assert_eq!(errors.len(), 1, "{errors:?}");
        assert!(errors[0].ends_with("did you mean `postgres`?"), "{errors:?}");
        let errors =
            read("[server]\nmax_body_bytes = \"big\"\nlisten = 5\n[log]\nsync = \"evry\"\n", "f", &[]).unwrap_err();
        assert_eq!(errors.len(), 3, "every one is reported: {errors:?}");
        assert!(errors[0].starts_with("f: `log.sync`: unknown variant `evry`"), "{errors:?}");
        assert!(errors[1].starts_with("f: `server.listen`: invalid type"), "{errors:?}");
        assert!(errors[2].starts_with("f: `server.max_body_bytes`: invalid type"), "{errors:?}");
        let errors = read("", "f", &env(&[("FERRY_LOG__SYNC_INTERVAL_MS", "soon")])).unwrap_err();
        assert!(
            errors[0].starts_with("f: `log.sync_interval_ms` (from FERRY_LOG__SYNC_INTERVAL_MS): invalid type"),
            "{errors:?}"
        );
        let errors = read("[server\n", "f", &[]).unwrap_err();
        assert!(errors[0].starts_with("f: TOML parse error at line 1"), "{errors:?}");
    }

    #[test]
    fn the_environment_goes_over_the_file() {
        let text = "[server]\nlisten = \"127.0.0.1:1\"\n[log]\nretention_hours = 1\n";
        let config = read(
            text,
            "f",
            &env(&[
                ("FERRY_SERVER__LISTEN", "0.0.0.0:9"),
                ("FERRY_LOG__RETENTION_HOURS", "48"),
                ("FERRY_LOG__SYNC", "never"),
                ("FERRY_ADMIN__TOKEN", "12345"),
                ("FERRY_SERVER__TRUSTED_PROXIES", "[\"10.0.0.1\"]"),
                ("FERRY_LOG", "debug"),
                ("FERRY_ADMIN_TOKEN", "not a config key"),
                ("HOME", "/root"),
            ]),
        )
        .unwrap();
        assert_eq!(config.server.listen.to_string(), "0.0.0.0:9");
        assert_eq!(config.log.retention_hours, 48);
        assert_eq!(config.log.sync, super::super::Sync::Never);
        assert_eq!(config.admin.token.as_deref(), Some("12345"), "digits meant as text");
        assert_eq!(config.server.trusted_proxies.len(), 1);
        let errors = read("", "f", &env(&[("FERRY_SERVER__LISTN", "0.0.0.0:9")])).unwrap_err();
        assert_eq!(errors, ["f: unknown key `server.listn` (from FERRY_SERVER__LISTN); did you mean `listen`?"]);
        let errors = read("data_dir = \"d\"\n", "f", &env(&[("FERRY_DATA_DIR__X", "1")])).unwrap_err();
        assert_eq!(errors, ["FERRY_DATA_DIR__X: `data_dir` is not a section"]);
    }

    #[test]
    fn closest_keys_are_typos_only() {
        let fields: Vec<String> = ["listen", "public_url", "max_body_bytes"].map(String::from).to_vec();
        assert_eq!(closest("listne", &fields), Some("listen"));
        assert_eq!(closest("max_body_byte", &fields), Some("max_body_bytes"));
        assert_eq!(closest("colour", &fields), None);
        assert_eq!(distance("kitten", "sitting"), 3);
    }
}

#[cfg(test)]
mod reference {
    /// docs/configuration.md lists exactly the keys ferry knows.
    #[test]
    fn config_reference_lists_every_key() {
        let text = include_str!("../../../../docs/configuration.md");
        let mut documented = Vec::new();
        let mut prefix: Option<String> = None;
        for line in text.lines() {
            if let Some(heading) = line.strip_prefix("## ") {
                prefix = match heading.trim() {
                    "Top level" => Some(String::new()),
                    "`[[sources]]`" => Some("sources[].".into()),
                    "`[[destinations]]`" => Some("destinations[].".into()),
                    "`[destinations.service_account]` (mixpanel)" => {
                        Some("destinations[mixpanel].service_account.".into())
                    }
                    other => match other.strip_prefix("`[[destinations]]` type = \"") {
                        Some(kind) => kind.strip_suffix('"').map(|kind| format!("destinations[{kind}].")),
                        None => other.strip_prefix("`[").and_then(|s| s.strip_suffix("]`")).map(|s| format!("{s}.")),
                    },
                };
                continue;
            }
            if let (Some(prefix), Some(row)) = (&prefix, line.strip_prefix("| `")) {
                let key = row.split('`').next().unwrap_or_default();
                documented.push(format!("{prefix}{key}"));
            }
        }
        let mut known = super::known_keys();
        known.sort();
        documented.sort();
        let missing: Vec<&String> = known.iter().filter(|k| !documented.contains(k)).collect();
        let unknown: Vec<&String> = documented.iter().filter(|k| !known.contains(k)).collect();
        assert!(
            missing.is_empty() && unknown.is_empty(),
            "not documented: {missing:?}; documented but unknown: {unknown:?}"
        );
        assert!(known.len() > 40, "the probe found the keys: {known:?}");
    }
}
