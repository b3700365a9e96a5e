//! The servers under test: drainport's HTTP example and nginx, each started
//! pinned with `taskset` by this bench and stopped by pid. nginx runs from
//! a temporary prefix (its config, pid file and error log in one directory)
//! so no root is needed and nothing outside the directory is touched.

use std::io::{Read as _, Write as _};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use testbed::system::{self, CpuTimes, Proc, Res};

/// How long a server gets to start listening or to exit after a stop.
const START_DEADLINE: Duration = Duration::from_secs(10);
pub const EXIT_DEADLINE: Duration = Duration::from_secs(10);

/// How processes are pinned: with `taskset -c CPU` when it is installed,
/// else with the same `sched_setaffinity` call made before `exec`.
pub struct Pinning {
    pub taskset: Option<PathBuf>,
}

impl Pinning {
    pub fn find() -> Pinning {
        Pinning {
            taskset: system::which("taskset"),
        }
    }

    /// `program args`, to run on `cpu` (anywhere for `None`). The child
    /// dies with the bench (see `system::prepare`).
    pub fn command(&self, cpu: Option<usize>, program: &Path, args: &[String]) -> Command {
        let (mut cmd, fallback) = match (cpu, &self.taskset) {
            (Some(cpu), Some(taskset)) => {
                let mut cmd = Command::new(taskset);
                cmd.args(["-c", &cpu.to_string()]).arg(program);
                (cmd, None)
            }
            _ => (Command::new(program), cpu),
        };
        cmd.args(args);
        system::prepare(&mut cmd, fallback, Vec::new());
        cmd
    }

    /// The prefix a reader types to reproduce the pinning.
    pub fn text(&self, cpu: usize) -> String {
        match &self.taskset {
            Some(_) => format!("taskset -c {cpu} "),
            None => format!("(sched_setaffinity to CPU {cpu}) "),
        }
    }
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> Res<u16> {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .map_err(|e| format!("cannot find a free port: {e}"))
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Kind {
    Drainport,
    Nginx,
}

impl Kind {
    pub fn name(self) -> &'static str {
        match self {
            Kind::Drainport => "drainport",
            Kind::Nginx => "nginx",
        }
    }
}

/// One server (for nginx: its master and workers).
pub struct Server {
    pub kind: Kind,
    pub proc: Proc,
    pub port: u16,
    /// nginx's prefix directory, removed on drop.
    dir: Option<PathBuf>,
    nginx: Option<PathBuf>,
}

impl Server {
    /// Starts the HTTP example on `port` (shared through `SO_REUSEPORT`)
    /// and waits for its `listening on` line.
    pub fn drainport(bin: &Path, port: u16, cpu: Option<usize>, pin: &Pinning) -> Res<Server> {
        let args = ["-q".to_owned(), format!("127.0.0.1:{port}")];
        let proc = Proc::spawn("http example", pin.command(cpu, bin, &args), None)?;
        proc.expect("listening on", Instant::now() + START_DEADLINE)?;
        Ok(Server {
            kind: Kind::Drainport,
            proc,
            port,
            dir: None,
            nginx: None,
        })
    }

    /// Starts nginx with `workers` worker processes from a fresh prefix
    /// directory and waits until it answers.
    pub fn nginx(
        nginx: &Path,
        port: u16,
        workers: usize,
        cpu: Option<usize>,
        pin: &Pinning,
    ) -> Res<Server> {
        let dir = std::env::temp_dir().join(format!(
            "drainport-bench-http-nginx-{}-{port}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
        let conf = dir.join("nginx.conf");
        std::fs::write(&conf, nginx_conf(&dir, port, workers))
            .map_err(|e| format!("write {}: {e}", conf.display()))?;
        let proc = Proc::spawn("nginx", pin.command(cpu, nginx, &nginx_args(&dir)), None)?;
        let server = Server {
            kind: Kind::Nginx,
            proc,
            port,
            dir: Some(dir),
            nginx: Some(nginx.to_owned()),
        };
        let deadline = Instant::now() + START_DEADLINE;
        while server.workers().len() < workers || TcpStream::connect(server.addr()).is_err() {
            if Instant::now() >= deadline {
                return Err(format!(
                    "nginx did not start in time; its error log: {}",
                    server.error_log()
                ));
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        Ok(server)
    }

    pub fn addr(&self) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], self.port))
    }

    pub fn url(&self) -> String {
        format!("http://127.0.0.1:{}/", self.port)
    }

    /// nginx's worker processes now (the master's children); none for
    /// drainport.
    pub fn workers(&self) -> Vec<u32> {
        if self.kind != Kind::Nginx {
            return Vec::new();
        }
        children(self.proc.pid)
    }

    /// User + system CPU ticks of the server's processes so far.
    pub fn cpu_ticks(&self) -> Res<u64> {
        let mut pids = vec![self.proc.pid];
        pids.extend(self.workers());
        pids.into_iter().try_fold(0, |sum, pid| {
            CpuTimes::read(pid).map(|t| sum + t.utime + t.stime)
        })
    }

    /// One keep-alive `GET /` on a fresh connection: the response, read
    /// up to the end of its body.
    pub fn get(&self) -> Res<String> {
        let name = self.kind.name();
        let mut s = TcpStream::connect_timeout(&self.addr(), START_DEADLINE)
            .map_err(|e| format!("connect to {name}: {e}"))?;
        s.set_read_timeout(Some(START_DEADLINE)).ok();
        s.write_all(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
            .map_err(|e| format!("send to {name}: {e}"))?;
        let mut resp = Vec::new();
        let mut chunk = [0u8; 4096];
        // Bounded: each pass reads at least one byte, and 64 KiB is plenty.
        while resp.len() < 65_536 {
            if let Some(end) = resp.windows(4).position(|w| w == b"\r\n\r\n") {
                let head = String::from_utf8_lossy(&resp[..end]).to_ascii_lowercase();
                let body: usize = head
                    .lines()
                    .find_map(|l| l.strip_prefix("content-length:"))
                    .and_then(|v| v.trim().parse().ok())
                    .ok_or_else(|| format!("{name} sent no Content-Length: {head:?}"))?;
                if resp.len() >= end + 4 + body {
                    resp.truncate(end + 4 + body);
                    break;
                }
            }
            match s.read(&mut chunk) {
                Ok(0) => return Err(format!("{name} closed before a whole response")),
                Ok(n) => resp.extend_from_slice(&chunk[..n]),
                Err(e) => return Err(format!("read from {name}: {e}")),
            }
        }
        String::from_utf8(resp).map_err(|_| format!("{name} sent non-UTF-8"))
    }

    /// Checks that `GET /` answers 200 with `hello from <pid or nginx>`,
    /// and returns the response's size in bytes on a keep-alive connection.
    pub fn check(&self) -> Res<usize> {
        let resp = self.get()?;
        let body = resp.split_once("\r\n\r\n").map_or("", |(_, b)| b);
        let who = body
            .strip_prefix("hello from ")
            .and_then(|b| b.strip_suffix('\n'))
            .unwrap_or("");
        // Siblings share a port, so any of them may answer.
        let right = match self.kind {
            Kind::Drainport => !who.is_empty() && who.bytes().all(|b| b.is_ascii_digit()),
            Kind::Nginx => who == "nginx",
        };
        if !resp.starts_with("HTTP/1.1 200 ") || !right {
            return Err(format!("{} answered {resp:?}", self.kind.name()));
        }
        Ok(resp.len())
    }

    /// `nginx -s reload` for this instance.
    pub fn reload(&self) -> Res<()> {
        let (Some(nginx), Some(dir)) = (&self.nginx, &self.dir) else {
            return Err("reload is for nginx".into());
        };
        let out = Command::new(nginx)
            .args(nginx_args(dir).iter().take(6))
            .args(["-s", "reload"])
            .output()
            .map_err(|e| format!("nginx -s reload: {e}"))?;
        if !out.status.success() {
            return Err(format!(
                "nginx -s reload failed: {}",
                String::from_utf8_lossy(&out.stderr).trim()
            ));
        }
        Ok(())
    }

    fn error_log(&self) -> String {
        self.dir
            .as_ref()
            .and_then(|d| std::fs::read_to_string(d.join("error.log")).ok())
            .unwrap_or_default()
    }

    /// A graceful stop: SIGHUP for drainport, SIGQUIT for nginx; then waits
    /// for a clean exit.
    pub fn stop(mut self) -> Res<()> {
        let sig = match self.kind {
            Kind::Drainport => libc::SIGHUP,
            Kind::Nginx => libc::SIGQUIT,
        };
        self.proc.signal(sig)?;
        let status = self.proc.wait_until(Instant::now() + EXIT_DEADLINE)?;
        if !status.success() {
            return Err(format!("{} exited with {status}", self.kind.name()));
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        // nginx workers outlive a killed master, so they are stopped by pid
        // first; `Proc`'s own drop then kills the master if still alive.
        let workers = self.workers();
        for pid in workers {
            // SAFETY: kill(2) on a worker of an nginx this bench started.
            unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
        }
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

/// nginx's command line for the prefix `dir`, in the foreground.
fn nginx_args(dir: &Path) -> Vec<String> {
    let d = dir.display();
    vec![
        "-p".into(),
        format!("{d}"),
        "-c".into(),
        format!("{d}/nginx.conf"),
        "-e".into(),
        format!("{d}/error.log"),
        "-g".into(),
        "daemon off;".into(),
    ]
}

/// nginx as drainport's closest equal: `workers` processes, one static
/// answer of the same length, keep-alive with no request limit, no access
/// log, every path it writes inside `dir`.
pub fn nginx_conf(dir: &Path, port: u16, workers: usize) -> String {
    let d = dir.display();
    format!(
        "worker_processes {workers};
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 1024; }}
http {{
    access_log off;
    # nginx closes a keep-alive connection after 1000 requests by default;
    # drainport never does, so neither does this nginx.
    keepalive_requests 1000000000;
    client_body_temp_path {d}/body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    default_type text/plain;
    server {{
        listen 127.0.0.1:{port};
        location / {{ return 200 \"hello from nginx\\n\"; }}
    }}
}}
"
    )
}

/// The children of `pid` (`/proc/<pid>/task/<pid>/children`).
pub fn children(pid: u32) -> Vec<u32> {
    std::fs::read_to_string(format!("/proc/{pid}/task/{pid}/children"))
        .unwrap_or_default()
        .split_whitespace()
        .filter_map(|p| p.parse().ok())
        .collect()
}

/// Whether `pid` is still running (a zombie counts as gone).
pub fn alive(pid: u32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .is_ok_and(|stat| !stat[stat.rfind(')').unwrap_or(0)..].starts_with(") Z"))
}
