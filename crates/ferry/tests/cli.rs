//! The command line against a running `ferry serve`, through the real binary: `ferry
//! import` of a 100,000-event gzip file (with rejected, unreadable and duplicate lines,
//! then the same file again), `ferry tail` seeing what `ferry send` sends, and `--help`
//! with examples on every command.

mod support;

use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::time::Duration;

use support::{FERRY, Server, log_cat, temp_dir};

fn run(args: &[&str]) -> (i32, String, String) {
    let output = Command::new(FERRY).args(args).env("FERRY_LOG", "warn").output().expect("run ferry");
    (
        output.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn config(dir: &std::path::Path, extra: &str) -> String {
    let path = dir.join("ferry.toml");
    std::fs::write(
        &path,
        format!("destinations = []\n{extra}\n[[sources]]\nid = \"backfill\"\nwrite_keys = [\"wk_backfill\"]\n"),
    )
    .unwrap();
    path.to_str().unwrap().to_owned()
}

#[test]
fn import_backfills_100k_events_through_the_batch_path_once() {
    let dir = temp_dir();
    let config = config(dir.path(), "");
    let server = Server::start(dir.path(), &["--config", &config, "--sync", "never"]);
    let url = format!("http://{}", server.addr);

    // 100,000 lines: events of three kinds (a third without a messageId), 5 the server
    // rejects (a track without `event`), 3 that are not JSON, 2 repeating a messageId.
    let file = dir.path().join("events.jsonl.gz");
    let mut gz = flate2::write::GzEncoder::new(std::fs::File::create(&file).unwrap(), flate2::Compression::fast());
    let (mut valid, mut rejected, mut unreadable, mut repeats) = (0, 0, 0, 0);
    for i in 0..100_000u32 {
        let line = match i {
            _ if i % 20_000 == 7 => {
                rejected += 1;
                format!(r#"{{"type":"track","userId":"u{i}","messageId":"bad-{i}"}}"#)
            }
            _ if i % 33_333 == 11 => {
                unreadable += 1;
                format!("this is line {i}, not JSON")
            }
            _ if i == 50_001 || i == 50_002 => {
                repeats += 1;
                r#"{"type":"track","userId":"u1","event":"Repeated","messageId":"id-1"}"#.to_owned()
            }
            _ if i % 3 == 0 => {
                valid += 1;
                format!(
                    r#"{{"type":"track","userId":"u{}","event":"Backfilled","properties":{{"n":{i}}},"timestamp":"2025-06-01T12:00:00.000Z"}}"#,
                    i % 977
                )
            }
            _ if i % 3 == 1 => {
                valid += 1;
                format!(r#"{{"type":"identify","userId":"u{}","traits":{{"n":{i}}},"messageId":"id-{i}"}}"#, i % 977)
            }
            _ => {
                valid += 1;
                format!(r#"{{"type":"page","anonymousId":"a{i}","name":"Home","messageId":"page-{i}"}}"#)
            }
        };
        writeln!(gz, "{line}").unwrap();
    }
    gz.finish().unwrap();
    assert_eq!((rejected, unreadable, repeats), (5, 3, 2));
    // "id-1" is also the messageId of line 1 (an identify): both repeats are duplicates.
    let stored = valid;

    let (code, stdout, stderr) = run(&["import", file.to_str().unwrap(), "--url", &url, "--write-key", "wk_backfill"]);
    assert_eq!(code, 2, "rejected lines give exit status 2\nstdout: {stdout}\nstderr: {stderr}");
    let expected =
        format!("{stored} accepted, 2 duplicates (already stored), 5 rejected, 3 unreadable lines, 0 not sent");
    assert!(stdout.contains(&expected), "summary {stdout:?} lacks {expected:?}\nstderr: {stderr}");
    assert!(stderr.contains("line 8: missing_event: track needs `event`"), "rejections name their line: {stderr}");
    assert!(stderr.contains("line 33345: not a JSON object"), "unreadable lines are shown: {stderr}");
    assert!(stderr.contains("ferry quarantine list"), "{stderr}");
    assert!(stderr.contains("100%"), "a progress line: {stderr}");

    // The same file again: everything is recognised.
    let (code, stdout, _) = run(&["import", file.to_str().unwrap(), "--url", &url, "--write-key", "wk_backfill"]);
    assert_eq!(code, 2);
    assert!(stdout.contains(&format!("0 accepted, {} duplicates", stored + 2)), "{stdout}");

    drop(server);
    let records = log_cat(dir.path());
    assert_eq!(records.len(), stored as usize, "every valid event stored once");
    let event = |r: &serde_json::Value| r["record"].clone();
    let backfilled = records.iter().map(event).find(|e| e["event"] == "Backfilled").expect("a backfilled track");
    assert_eq!(backfilled["sourceId"], "backfill");
    assert!(backfilled["messageId"].as_str().unwrap().starts_with("import-"), "{backfilled}");
    assert_eq!(backfilled["originalTimestamp"], "2025-06-01T12:00:00.000Z");

    // A wrong key stops at once with what to do.
    let server = Server::start(dir.path(), &["--config", &config]);
    let (code, _, stderr) =
        run(&["import", file.to_str().unwrap(), "--url", &format!("http://{}", server.addr), "--write-key", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--write-key"), "{stderr}");
}

#[test]
fn tail_shows_what_send_sends_with_filters() {
    let dir = temp_dir();
    let config = config(dir.path(), "[admin]\ntoken = \"tail-token\"\n");
    let server = Server::start(dir.path(), &["--config", &config]);
    let url = format!("http://{}", server.addr);

    // Without the token tail says what to do.
    let (code, _, stderr) = run(&["tail", "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--token"), "{stderr}");

    // The token comes from the configuration.
    let mut tail = Command::new(FERRY)
        .args(["tail", "--config", &config, "--url", &url, "--event", "order", "--count", "2"])
        .env("FERRY_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(tail.stderr.take().unwrap());
    let mut first = String::new();
    stderr.read_line(&mut first).unwrap();
    assert!(first.starts_with("watching"), "{first}");

    let send = |args: &[&str]| {
        let mut line = vec!["send", "--config", &config, "--url", &url];
        line.extend_from_slice(args);
        let (code, stdout, stderr) = run(&line);
        assert_eq!(code, 0, "ferry send {args:?}: {stderr}");
        stdout
    };
    let sent = send(&[
        "track",
        "--event",
        "Order Completed",
        "--user-id",
        "u1",
        "--properties",
        r#"{"revenue":"9.5","currency":"eur"}"#,
    ]);
    assert!(sent.starts_with("sent track \"Order Completed\" (messageId "), "{sent}");
    send(&["track", "--event", "Signed Up", "--user-id", "u1"]);
    send(&["identify", "--user-id", "u1", "--traits", r#"{"plan":"pro"}"#]);
    send(&["track", "--event", "Order Refunded", "--anonymous-id", "a9"]);

    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    while tail.try_wait().unwrap().is_none() {
        assert!(std::time::Instant::now() < deadline, "tail did not stop after 2 events");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut out = String::new();
    std::io::Read::read_to_string(&mut tail.stdout.take().unwrap(), &mut out).unwrap();
    assert!(tail.wait().unwrap().success());
    let lines: Vec<&str> = out.lines().filter(|l| !l.starts_with(' ')).collect();
    assert_eq!(lines.len(), 2, "{out}");
    assert!(lines[0].contains("backfill track \"Order Completed\" user=u1 messageId="), "{out}");
    assert!(lines[1].contains("track \"Order Refunded\" anonymous=a9"), "{out}");
    assert!(out.contains("warning revenue_not_number"), "warnings are shown: {out}");

    // Errors from send say what to do.
    let (code, _, stderr) = run(&["send", "track", "--url", &url, "--event", "X", "--write-key", "nope"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("ferry refused the write key") && stderr.contains("--write-key"), "{stderr}");
    let (code, _, stderr) = run(&["send", "track", "--url", "http://127.0.0.1:1", "--event", "X"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("is `ferry serve` running there?"), "{stderr}");
}

#[test]
fn every_command_has_help_with_examples() {
    let commands: &[&[&str]] =
        &[&["serve"], &["check"], &["tail"], &["send"], &["import"], &["replay"], &["log"], &["quarantine"], &["dlq"]];
    for command in commands {
        let mut args = command.to_vec();
        args.push("--help");
        let (code, stdout, stderr) = run(&args);
        assert_eq!(code, 0, "ferry {command:?} --help: {stderr}");
        assert!(stdout.contains("Example"), "ferry {command:?} --help has no examples:\n{stdout}");
    }
}

#[test]
fn check_prints_every_problem_of_a_broken_config_at_once() {
    let dir = temp_dir();
    let path = dir.path().join("ferry.toml");
    std::fs::write(
        &path,
        "[server]\nlistn = \"127.0.0.1:1\"\n[log]\nsync = \"evry\"\n\
         [[sources]]\nid = \"web\"\nwrite_keys = [\"k\"]\n[[sources]]\nid = \"ios\"\nwrite_keys = [\"k\"]\n\
         [[destinations]]\nname = \"hook\"\ntype = \"webhook\"\n",
    )
    .unwrap();
    let config = path.to_str().unwrap();
    let (code, _, stderr) = run(&["check", "--config", config]);
    assert_eq!(code, 1, "{stderr}");
    for expected in [
        "unknown key `server.listn`; did you mean `listen`?",
        "`log.sync`: unknown variant `evry`, expected one of `always`, `interval`, `never`",
        "write key used by two sources: web and ios",
        "destination hook: type webhook needs one to five `urls`",
        "4 problem(s) in the configuration; fix them and run `ferry check` again",
    ] {
        assert!(stderr.contains(expected), "{expected:?} missing from:\n{stderr}");
    }
    // Other commands refuse the same file with the same report.
    let (code, _, stderr) = run(&["serve", "--config", config, "--data-dir", dir.path().to_str().unwrap()]);
    assert_eq!(code, 1);
    assert!(stderr.contains("did you mean `listen`?"), "{stderr}");

    // The environment goes over the file, and is checked the same way.
    std::fs::write(&path, "[server]\nlisten = \"127.0.0.1:1\"\n").unwrap();
    let output = Command::new(FERRY)
        .args(["check", "--config", config])
        .env("FERRY_LOG__SYNC", "sometimes")
        .env("FERRY_SERVER__MAX_BODY_BYTE", "5")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(!output.status.success());
    assert!(
        stderr.contains(
            "unknown key `server.max_body_byte` (from FERRY_SERVER__MAX_BODY_BYTE); did you mean `max_body_bytes`?"
        ),
        "{stderr}"
    );
    assert!(stderr.contains("`log.sync` (from FERRY_LOG__SYNC): unknown variant `sometimes`"), "{stderr}");
    let output =
        Command::new(FERRY).args(["check", "--config", config]).env("FERRY_LOG__SYNC", "never").output().unwrap();
    assert!(output.status.success(), "{}", String::from_utf8_lossy(&output.stderr));
    assert_eq!(String::from_utf8_lossy(&output.stdout).trim(), "configuration is valid");

    // A missing file says what to do.
    let (code, _, stderr) = run(&["check", "--config", "/nonexistent/ferry.toml"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("cannot read config file /nonexistent/ferry.toml") && stderr.contains("--config"),
        "{stderr}"
    );
}

#[test]
fn quarantine_show_and_resubmit_after_a_fix() {
    let dir = temp_dir();
    let config = config(dir.path(), "[admin]\ntoken = \"q-token\"\n");
    let server = Server::start(dir.path(), &["--config", &config]);
    let url = format!("http://{}", server.addr);
    let data = dir.path().to_str().unwrap();
    let body = r#"{"batch":[{"type":"track","userId":"u1","messageId":"broken-1","properties":{"plan":"pro"}}]}"#;
    let auth = support::basic("wk_backfill");
    let (status, _) =
        support::http(server.addr, "POST", "/v1/batch", &[("Authorization", &auth)], body.as_bytes()).unwrap();
    assert_eq!(status, 200);

    let (code, stdout, stderr) = run(&["quarantine", "show", "0", "--data-dir", data]);
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("reason      missing_event: track needs `event`"), "{stdout}");
    assert!(stdout.contains("\"messageId\": \"broken-1\""), "{stdout}");
    let (_, stdout, _) = run(&["quarantine", "show", "0", "--json", "--data-dir", data]);
    let record: serde_json::Value = serde_json::from_str(stdout.trim()).unwrap();
    assert_eq!((record["offset"].as_u64(), record["item"]["messageId"].as_str()), (Some(0), Some("broken-1")));
    let (code, _, stderr) = run(&["quarantine", "show", "9", "--data-dir", data]);
    assert_eq!(code, 1);
    assert!(stderr.contains("no quarantined item at offset 9"), "{stderr}");

    // As it came it is still invalid; fixed, it is stored.
    let (code, _, stderr) = run(&["quarantine", "resubmit", "0", "--config", &config, "--url", &url]);
    assert_eq!(code, 1);
    assert!(stderr.contains("item 0 is still invalid: missing_event") && stderr.contains("--item"), "{stderr}");
    let fixed = dir.path().join("fixed.json");
    let mut item = record["item"].clone();
    item["event"] = "Plan Chosen".into();
    std::fs::write(&fixed, item.to_string()).unwrap();
    let (code, stdout, stderr) =
        run(&["quarantine", "resubmit", "0", "--item", fixed.to_str().unwrap(), "--config", &config, "--url", &url]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.trim(), "resubmitted item 0: stored as messageId broken-1");
    let (code, _, stderr) = run(&["quarantine", "resubmit", "0", "--url", &url, "--token", "wrong"]);
    assert_eq!(code, 1);
    assert!(stderr.contains("--token"), "{stderr}");
    drop(server);
    let stored = log_cat(dir.path());
    assert_eq!(stored.len(), 1);
    assert_eq!(stored[0]["record"]["event"], "Plan Chosen");
}
