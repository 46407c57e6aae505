//! A real `redis-server` for the cluster and metrics tests.

use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A `redis-server` of our own on a free port, with an append-only file synced on every
/// write, so a restart keeps every acknowledged publish.
pub struct Redis {
    pub port: u16,
    dir: PathBuf,
    child: Option<Child>,
}

impl Redis {
    pub fn start() -> Redis {
        let port = std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let dir = std::env::temp_dir().join(format!("herald-redis-{}-{port}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let mut r = Redis {
            port,
            dir,
            child: None,
        };
        r.launch();
        r
    }

    /// Starts (or restarts) the server on the same port and directory.
    pub fn launch(&mut self) {
        let child = Command::new("redis-server")
            .args([
                "--port",
                &self.port.to_string(),
                "--bind",
                "127.0.0.1",
                "--dir",
                self.dir.to_str().unwrap(),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("redis-server is not installed (./scripts/test.sh installs it)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while std::net::TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    /// Runs `redis-cli` against this server; its output.
    pub fn cli(&self, args: &[&str]) -> String {
        let out = Command::new("redis-cli")
            .arg("-p")
            .arg(self.port.to_string())
            .args(args)
            .output()
            .expect("redis-cli");
        assert!(out.status.success(), "redis-cli {args:?}: {out:?}");
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    /// Kills Redis at once (no shutdown save: only the append-only file survives).
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

impl Redis {
    /// `n` nodes of this Redis with the config file `config`, each ready.
    pub async fn nodes(&self, n: usize, config: &std::path::Path) -> Vec<super::Binary> {
        let mut v = Vec::new();
        for _ in 0..n {
            let b = self.node(config);
            ready(&b).await;
            v.push(b);
        }
        v
    }

    /// A `herald` node of this Redis on a free port, with the config file `config`.
    pub fn node(&self, config: &std::path::Path) -> super::Binary {
        super::Binary::spawn(&[
            "--listen",
            "127.0.0.1:0",
            "--redis",
            &self.url(),
            "--config",
            config.to_str().unwrap(),
        ])
    }
}

/// A config file for cluster nodes, named after `name`. Written beside and renamed into
/// place: tests run in parallel, and a node starting while another test rewrites the file
/// must never read it half written (empty: no config).
pub fn config_file(name: &str, body: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let dir = std::env::temp_dir();
    let p = dir.join(format!("herald-cluster-{}-{name}.toml", std::process::id()));
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let tmp = dir.join(format!(
        "herald-cluster-{}-{name}.{n}.tmp",
        std::process::id()
    ));
    std::fs::write(&tmp, body).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

/// A connected client of node `b`, past its `hello`.
pub async fn client(b: &super::Binary) -> super::Raw {
    let mut c = super::Raw::connect(&b.ws_url()).await;
    c.hello().await;
    c
}

/// Waits until a node's `/readyz` answers 200: its feed is connected to Redis (and so it
/// listens to the control channel) and it has read the revocations.
pub async fn ready(b: &super::Binary) {
    let url = format!("http://{}/readyz", b.addr);
    let deadline = Instant::now() + super::WAIT;
    loop {
        if let Ok(r) = super::http().get(&url).send().await
            && r.status() == 200
        {
            return;
        }
        assert!(Instant::now() < deadline, "node never became ready");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

impl Drop for Redis {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}
