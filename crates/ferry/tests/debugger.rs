//! The debugger page in Debian's headless Chromium (driven by playwright-core) while
//! @segment/analytics-node sends events to the same running `ferry serve`: events appear
//! live, newest first; filters; the detail view with the item as sent beside the stored
//! event, warnings, a rejection and the destination's outcome; pause and resume; markup
//! in event names stays text. The screenshot is kept as a test artifact
//! (`$FERRY_TEST_ARTIFACTS`, else `target/test-artifacts/debugger.png`).

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use support::{Server, chromium, clients_dir, deps_ready, http, node_works, temp_dir};

const TOKEN: &str = "debug-s3cret";

#[test]
fn the_debugger_page_shows_events_live_in_chromium() {
    let dir = clients_dir();
    let ready = deps_ready(
        "the debugger page in chromium",
        &[
            ("node", node_works()),
            (&format!("{} (Debian chromium)", chromium().display()), chromium().exists()),
            (
                "tests/clients/node_modules (@segment/analytics-node, playwright-core)",
                ["@segment/analytics-node", "playwright-core"]
                    .iter()
                    .all(|p| dir.join("node_modules").join(p).join("package.json").exists()),
            ),
        ],
    );
    if !ready {
        return;
    }
    let data = temp_dir();
    let config = data.path().join("ferry.toml");
    std::fs::write(
        &config,
        format!(
            "[admin]\ntoken = \"{TOKEN}\"\n\n[[sources]]\nid = \"web\"\nwrite_keys = [\"wk_debug\"]\n\n\
             [[destinations]]\nname = \"warehouse\"\ntype = \"sqlite\"\nbatch_ms = 20\n"
        ),
    )
    .unwrap();
    let server = Server::start(data.path(), &["--config", config.to_str().unwrap()]);

    // The page and its stream are behind the admin token.
    for path in ["/debugger", "/debugger/stream"] {
        let (status, _) = http(server.addr, "GET", path, &[], b"").unwrap();
        assert_eq!(status, 401, "{path} without the token");
    }
    let bearer = format!("Bearer {TOKEN}");
    let (status, page) = http(server.addr, "GET", "/debugger", &[("Authorization", &bearer)], b"").unwrap();
    assert_eq!(status, 200);
    assert!(String::from_utf8_lossy(&page).contains("ferry debugger"));

    let artifacts = std::env::var_os("FERRY_TEST_ARTIFACTS")
        .map_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target/test-artifacts"), PathBuf::from);
    let screenshot = artifacts.join("debugger.png");
    let _ = std::fs::remove_file(&screenshot);
    let base = format!("http://{}", server.addr);
    let output = Command::new("node")
        .arg(dir.join("debugger_client.mjs"))
        .args([&base, "wk_debug", TOKEN, "warehouse", screenshot.to_str().unwrap()])
        .current_dir(&dir)
        .output()
        .expect("run node");
    let (stdout, stderr) = (String::from_utf8_lossy(&output.stdout), String::from_utf8_lossy(&output.stderr));
    assert!(
        output.status.success(),
        "debugger_client.mjs failed ({})\nstdout:\n{stdout}\nstderr:\n{stderr}",
        output.status
    );
    assert!(stdout.contains("\"messageIds\""), "no result line:\n{stdout}");
    let size = std::fs::metadata(&screenshot).map(|m| m.len()).unwrap_or(0);
    assert!(size > 10_000, "screenshot {} is {size} bytes", screenshot.display());
}
