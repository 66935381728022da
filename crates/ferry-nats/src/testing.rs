//! Real `nats-server` processes for tests (feature `test-util`): one node, or a cluster of
//! three, on free loopback ports other than the machine's own server, each node with its
//! own JetStream directory, which survives a kill and a restart.

#![allow(clippy::missing_panics_doc)]

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// The `nats-server` binary the tests run: `$FERRY_TEST_NATS_SERVER`. `None` (and a loud
/// line on stderr) when it is not set; the CI script sets it.
pub fn server_binary(test: &str) -> Option<PathBuf> {
    let path = std::env::var_os("FERRY_TEST_NATS_SERVER").map(PathBuf::from).filter(|p| !p.as_os_str().is_empty());
    if path.is_none() {
        let banner = format!(
            "\n==================== SKIPPED ({test}): FERRY_TEST_NATS_SERVER is not set ====================\n\n"
        );
        let _ = std::io::Write::write_all(&mut std::io::stderr(), banner.as_bytes());
    }
    path
}

/// A process's resident memory (`VmRSS`) in KiB; 0 when it cannot be read.
pub fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

/// A free loopback port (free when asked; the server binds it right after).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0").and_then(|l| l.local_addr()).map(|a| a.port()).expect("a free port")
}

/// One `nats-server` with JetStream, killed when dropped.
pub struct NatsNode {
    binary: PathBuf,
    pub name: String,
    pub port: u16,
    cluster_port: Option<u16>,
    routes: Vec<u16>,
    store: PathBuf,
    child: Option<Child>,
    /// Whether it ever listened: a restart keeps its ports, a first start may move.
    listened: bool,
}

impl NatsNode {
    /// A single node storing under `dir`.
    pub fn single(binary: &Path, dir: &Path) -> NatsNode {
        let mut node = NatsNode {
            binary: binary.to_owned(),
            name: "n1".to_owned(),
            port: free_port(),
            cluster_port: None,
            routes: Vec::new(),
            store: dir.join("n1"),
            child: None,
            listened: false,
        };
        node.start();
        node
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start (or start again, on the same ports and store) and wait until it listens. The
    /// ports were free when picked, but another test's `free_port` may hold one for a
    /// moment, and then nats-server exits at once: it is started again a little later,
    /// and on a first start (nothing refers to its client port yet) on another client port.
    pub fn start(&mut self) {
        assert!(self.child.is_none(), "{} is running", self.name);
        for _ in 0..5 {
            if self.try_start() {
                self.listened = true;
                return;
            }
            std::thread::sleep(Duration::from_millis(100));
            if !self.listened {
                self.port = free_port();
            }
        }
        panic!("nats-server {} exited at start five times (port {} in use?)", self.name, self.port);
    }

    /// One attempt: true once it listens, false if it exited first.
    fn try_start(&mut self) -> bool {
        let mut command = Command::new(&self.binary);
        command
            .args(["-a", "127.0.0.1", "-p", &self.port.to_string(), "-js", "-n", &self.name, "-sd"])
            .arg(&self.store)
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        if let Some(cluster) = self.cluster_port {
            let routes: Vec<String> = self.routes.iter().map(|p| format!("nats-route://127.0.0.1:{p}")).collect();
            command.args([
                "--cluster_name",
                "ferry-test",
                "--cluster",
                &format!("nats://127.0.0.1:{cluster}"),
                "--routes",
                &routes.join(","),
            ]);
        }
        let child = self.child.insert(command.spawn().expect("start nats-server"));
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let listening = says_info(self.port);
            // It exits at once when a port is taken.
            if matches!(child.try_wait(), Ok(Some(_))) {
                self.child = None;
                return false;
            }
            if listening {
                return true;
            }
            assert!(Instant::now() < deadline, "nats-server {} did not listen within 10 s", self.name);
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGKILL.
    pub fn kill(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn running(&self) -> bool {
        self.child.is_some()
    }

    /// The server's process id, while it runs.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }
}

impl Drop for NatsNode {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Whether a NATS server answers on `port`: it greets every client with `INFO` (a port
/// held by something else may accept the connection and say nothing).
fn says_info(port: u16) -> bool {
    let Ok(mut stream) = std::net::TcpStream::connect(("127.0.0.1", port)) else { return false };
    let _ = stream.set_read_timeout(Some(Duration::from_millis(500)));
    let mut greeting = [0u8; 4];
    std::io::Read::read_exact(&mut stream, &mut greeting).is_ok() && &greeting == b"INFO"
}

/// Three clustered nodes.
pub struct NatsCluster {
    pub nodes: Vec<NatsNode>,
}

impl NatsCluster {
    pub fn start(binary: &Path, dir: &Path) -> NatsCluster {
        // Six distinct ports: the OS may hand a released port out again.
        let mut ports: Vec<u16> = Vec::new();
        while ports.len() < 6 {
            let port = free_port();
            if !ports.contains(&port) {
                ports.push(port);
            }
        }
        let (cluster_ports, client_ports) = ports.split_at(3);
        let mut nodes: Vec<NatsNode> = (0..3)
            .map(|i| NatsNode {
                binary: binary.to_owned(),
                name: format!("n{}", i + 1),
                port: client_ports[i],
                cluster_port: Some(cluster_ports[i]),
                routes: cluster_ports.iter().enumerate().filter(|(j, _)| *j != i).map(|(_, p)| *p).collect(),
                store: dir.join(format!("n{}", i + 1)),
                child: None,
                listened: false,
            })
            .collect();
        for node in &mut nodes {
            node.start();
        }
        NatsCluster { nodes }
    }

    /// Every node's URL, comma-separated.
    pub fn urls(&self) -> Vec<String> {
        self.nodes.iter().map(NatsNode::url).collect()
    }

    /// The node named `name` (`n1`, `n2`, `n3`).
    pub fn node(&mut self, name: &str) -> &mut NatsNode {
        self.nodes.iter_mut().find(|n| n.name == name).expect("a node of that name")
    }
}

/// The name of the node leading `stream` (`n1`...), asked through `url`; `None` while the
/// stream has no leader or the node cannot answer.
pub fn stream_leader(url: &str, stream: &str) -> Option<String> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().ok()?;
    runtime.block_on(async {
        let client = tokio::time::timeout(Duration::from_secs(2), async_nats::connect(url)).await.ok()?.ok()?;
        let js = async_nats::jetstream::new(client);
        let info = tokio::time::timeout(Duration::from_secs(2), async {
            let stream = js.get_stream_no_info(stream).await.ok()?;
            stream.get_info().await.ok()
        })
        .await
        .ok()??;
        info.cluster.and_then(|c| c.leader)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A client port that another process holds when the node first starts: the node
    /// starts on another port instead of failing or passing the holder off as itself.
    #[test]
    fn a_first_start_moves_off_a_taken_client_port() {
        let Some(binary) = server_binary("a_first_start_moves_off_a_taken_client_port") else { return };
        let dir = tempfile::tempdir().unwrap();
        let holder = TcpListener::bind("127.0.0.1:0").unwrap();
        let taken = holder.local_addr().unwrap().port();
        let mut node = NatsNode {
            binary,
            name: "n1".to_owned(),
            port: taken,
            cluster_port: None,
            routes: Vec::new(),
            store: dir.path().join("n1"),
            child: None,
            listened: false,
        };
        node.start();
        assert_ne!(node.port, taken);
        assert!(node.running());
        assert!(std::net::TcpStream::connect(("127.0.0.1", node.port)).is_ok());
    }
}
