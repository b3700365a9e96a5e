//! The scenarios: start servers, start client workers, collect figures.

use std::collections::HashMap;
use std::ffi::CString;
use std::net::SocketAddr;
use std::os::fd::AsRawFd as _;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::client::WORKER_ENV;
use crate::report::Stats;
use testbed::system::{self, Proc, Res};

/// Client processes for an idle crowd, each from its own source address
/// (127.0.0.2, 127.0.0.3, ...).
const CROWD_WORKERS: usize = 4;
/// Connects in flight per crowd worker.
const CROWD_CONNECTS: usize = 128;
/// Connections in the ping-pong and pipelined scenarios.
const LOAD_CONNS: usize = 50;
/// Lines in flight per connection when pipelining.
const PIPELINE_DEPTH: usize = 16;
/// Concurrent connect-line-close loops in the churn scenario.
const CHURN_SLOTS: usize = 50;
/// Source addresses for churn (127.0.0.10 to 127.0.0.17), so that closed
/// connections waiting in TIME_WAIT do not exhaust one address's ports.
const CHURN_SOURCES: std::ops::RangeInclusive<u8> = 10..=17;

/// How long a run waits for the machine to fall quiet before starting.
const QUIET_WAIT: Duration = Duration::from_secs(20);
/// Busy share of all CPUs under which the machine counts as quiet.
const QUIET_BELOW: f64 = 0.10;

/// What to run and how long: the flags that shape a run, which the report
/// also states.
#[derive(Clone, Copy)]
pub struct Plan {
    pub runs: usize,
    pub secs: f64,
    pub warm: f64,
    pub idle: usize,
    pub drain_clients: usize,
    /// Scenarios 1 to 8 selected.
    pub sel: [bool; 9],
}

/// What to run, how long, and where.
pub struct Cfg {
    pub plan: Plan,
    pub redis: Option<PathBuf>,
    pub perf: Option<PathBuf>,
    pub server_cpu: Option<usize>,
    pub client_cpu: Option<usize>,
}

impl Cfg {
    pub fn on(&self, n: usize) -> bool {
        self.plan.sel[n]
    }

    fn run_ms(&self) -> u64 {
        (self.plan.secs * 1000.0) as u64
    }

    fn warm_ms(&self) -> u64 {
        (self.plan.warm * 1000.0) as u64
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Kind {
    Drainport,
    Redis,
}

/// A server under test.
struct Target {
    kind: Kind,
    proc: Proc,
    addr: SocketAddr,
    dir: Option<PathBuf>,
}

impl Drop for Target {
    fn drop(&mut self) {
        if let Some(dir) = &self.dir {
            let _ = std::fs::remove_dir_all(dir);
        }
    }
}

impl Target {
    fn pid(&self) -> u32 {
        self.proc.pid
    }

    fn proto(&self) -> String {
        match self.kind {
            Kind::Drainport => format!("echo:{}", self.pid()),
            Kind::Redis => "redis".into(),
        }
    }

    /// Key prefix in the stats: `s` for drainport, `r` for Redis.
    fn tag(&self) -> &'static str {
        match self.kind {
            Kind::Drainport => "s",
            Kind::Redis => "r",
        }
    }
}

fn start_drainport(cfg: &Cfg) -> Res<Target> {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_drainport"));
    cmd.args(["-q", "127.0.0.1:0"]).stderr(Stdio::inherit());
    let proc = Proc::spawn("drainport", cmd, cfg.server_cpu)?;
    let deadline = Instant::now() + Duration::from_secs(10);
    let running = proc.expect(" running", deadline)?;
    if running != format!("Process {} running", proc.pid) {
        return Err(format!("unexpected first line {running:?}"));
    }
    let addr = proc.listening(deadline)?;
    Ok(Target {
        kind: Kind::Drainport,
        proc,
        addr,
        dir: None,
    })
}

fn start_redis(cfg: &Cfg, program: &Path) -> Res<Target> {
    // Redis takes a fixed port: borrow a free one from the kernel.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("cannot find a free port: {e}"))?
        .port();
    let dir = std::env::temp_dir().join(format!(
        "drainport-load-redis-{}-{port}",
        std::process::id()
    ));
    std::fs::create_dir_all(&dir).map_err(|e| format!("mkdir {}: {e}", dir.display()))?;
    let maxclients = cfg.plan.idle.max(cfg.plan.drain_clients) + 200;
    let mut cmd = Command::new(program);
    cmd.arg("--bind")
        .arg("127.0.0.1")
        .arg("--port")
        .arg(port.to_string())
        .arg("--save")
        .arg("")
        .arg("--appendonly")
        .arg("no")
        .arg("--daemonize")
        .arg("no")
        .arg("--maxclients")
        .arg(maxclients.to_string())
        .arg("--dir")
        .arg(&dir)
        .arg("--logfile")
        .arg("")
        .arg("--loglevel")
        .arg("warning")
        // It listens on 127.0.0.1 only; protected mode would refuse the
        // crowd's other loopback source addresses (127.0.0.2, ...).
        .arg("--protected-mode")
        .arg("no")
        .stderr(Stdio::inherit());
    let mut target = Target {
        kind: Kind::Redis,
        proc: Proc::spawn("redis-server", cmd, cfg.server_cpu)?,
        addr: SocketAddr::from(([127, 0, 0, 1], port)),
        dir: Some(dir),
    };
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        if let Some(status) = target.proc.try_wait() {
            return Err(format!("redis-server exited at start with {status}"));
        }
        if redis_pong(target.addr).is_ok() {
            return Ok(target);
        }
        if Instant::now() >= deadline {
            return Err("redis-server did not answer PING within 10s".into());
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn redis_pong(addr: SocketAddr) -> std::io::Result<()> {
    use std::io::{Read as _, Write as _};
    let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_millis(200))?;
    s.set_read_timeout(Some(Duration::from_secs(1)))?;
    s.write_all(b"PING\r\n")?;
    let mut reply = [0u8; 7];
    s.read_exact(&mut reply)?;
    if &reply != b"+PONG\r\n" {
        return Err(std::io::Error::other("not +PONG"));
    }
    Ok(())
}

fn worker(cfg: &Cfg, mode: &str, args: &[(&str, String)]) -> Res<Proc> {
    worker_keeping(cfg, mode, args, Vec::new())
}

fn worker_keeping(cfg: &Cfg, mode: &str, args: &[(&str, String)], keep_fds: Vec<i32>) -> Res<Proc> {
    let exe = std::env::current_exe().map_err(|e| format!("current_exe: {e}"))?;
    let mut cmd = Command::new(exe);
    cmd.env(WORKER_ENV, mode).stderr(Stdio::inherit());
    for (k, v) in args {
        cmd.arg(format!("{k}={v}"));
    }
    Proc::spawn_keeping(
        &format!("{mode} worker"),
        &mut cmd,
        cfg.client_cpu,
        keep_fds,
    )
}

/// Parses a worker's `result k=v ...` line.
fn fields(line: &str) -> HashMap<String, f64> {
    line.split_whitespace()
        .filter_map(|kv| kv.split_once('='))
        .filter_map(|(k, v)| Some((k.to_owned(), v.parse().ok()?)))
        .collect()
}

fn field(f: &HashMap<String, f64>, key: &str) -> Res<f64> {
    f.get(key)
        .copied()
        .ok_or_else(|| format!("worker result lacks {key}"))
}

/// Idle connections held by several worker processes.
struct Crowd {
    workers: Vec<Proc>,
}

fn open_crowd(cfg: &Cfg, t: &Target, n: usize) -> Res<Crowd> {
    let mut workers = Vec::new();
    for i in 0..CROWD_WORKERS {
        let share = n / CROWD_WORKERS + usize::from(i < n % CROWD_WORKERS);
        if share == 0 {
            continue;
        }
        workers.push(worker(
            cfg,
            "idle",
            &[
                ("addr", t.addr.to_string()),
                ("src", format!("127.0.0.{}", 2 + i)),
                ("n", share.to_string()),
                ("conc", CROWD_CONNECTS.to_string()),
                ("life_s", "900".into()),
                ("proto", t.proto()),
            ],
        )?);
    }
    let deadline = Instant::now() + Duration::from_secs(150);
    for w in &workers {
        w.expect("ready", deadline)?;
    }
    Ok(Crowd { workers })
}

impl Crowd {
    /// Closes every connection; returns the monotonic times of the first
    /// and the last `close`.
    fn close(self) -> Res<(u64, u64)> {
        let mut workers = self.workers;
        let times = send_close(&mut workers, false)?;
        let deadline = Instant::now() + Duration::from_secs(30);
        for w in workers {
            w.finish(deadline)?;
        }
        Ok(times)
    }
}

/// Sends `close` to every worker, or `close_keep 1` to the first when
/// `keep_one`, and returns the first and last close times they report.
fn send_close(workers: &mut [Proc], keep_one: bool) -> Res<(u64, u64)> {
    for (i, w) in workers.iter_mut().enumerate() {
        w.send(if i == 0 && keep_one {
            "close_keep 1"
        } else {
            "close"
        })?;
    }
    let deadline = Instant::now() + Duration::from_secs(30);
    let (mut first, mut last) = (u64::MAX, 0);
    for w in workers.iter() {
        let line = w.expect("closed", deadline)?;
        let mut it = line.split_whitespace().skip(1).map(str::parse::<u64>);
        match (it.next(), it.next()) {
            (Some(Ok(a)), Some(Ok(b))) => {
                first = first.min(a);
                last = last.max(b);
            }
            _ => return Err(format!("bad line {line:?}")),
        }
    }
    Ok((first, last))
}

/// How many descriptors process `pid` has open.
fn fd_count(pid: u32) -> Res<usize> {
    Ok(std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map_err(|e| format!("/proc/{pid}/fd: {e}"))?
        .count())
}

/// Scenario 1 (and the Redis side of it): RSS before and after an idle
/// crowd, every connection proven served. Leaves the crowd open.
fn idle_memory(cfg: &Cfg, t: &Target, stats: &mut Stats) -> Res<Crowd> {
    let tag = t.tag();
    let rss0 = system::status_kb(t.pid(), "VmRSS")?;
    let crowd = open_crowd(cfg, t, cfg.plan.idle)?;
    // Let the server finish the last accepts' bookkeeping.
    std::thread::sleep(Duration::from_millis(100));
    let rss1 = system::status_kb(t.pid(), "VmRSS")?;
    let hwm = system::status_kb(t.pid(), "VmHWM")?;
    let per_conn = (rss1 as f64 - rss0 as f64) * 1024.0 / cfg.plan.idle as f64;
    stats.add(&format!("{tag}1.bpc"), per_conn);
    stats.add(&format!("{tag}1.rss0"), rss0 as f64);
    stats.add(&format!("{tag}1.rss1"), rss1 as f64);
    stats.add(&format!("{tag}1.hwm"), hwm as f64);
    Ok(crowd)
}

/// What one ping-pong or pipelined run measured.
struct Load {
    rate: f64,
    measured: f64,
    p50_us: f64,
    p99_us: f64,
    p999_us: f64,
    user_us: f64,
    total_us: f64,
    sched_us: f64,
    /// Raw server CPU ticks over the window, for pooling across runs.
    uticks: f64,
    sticks: f64,
    tck: f64,
    /// Share of the window the server and the client worker were on CPU.
    server_busy: f64,
    client_busy: f64,
}

fn load(cfg: &Cfg, t: &Target, depth: usize, stat: bool) -> Res<Load> {
    load_with(cfg, t, depth, stat, None)
}

/// A ping-pong or pipelined run; with `perf` (its control and ack pipe
/// ends), the worker turns counting on and off around its measured window.
fn load_with(
    cfg: &Cfg,
    t: &Target,
    depth: usize,
    stat: bool,
    perf: Option<(i32, i32)>,
) -> Res<Load> {
    let mut args = vec![
        ("addr", t.addr.to_string()),
        ("proto", t.proto()),
        ("conns", LOAD_CONNS.to_string()),
        ("depth", depth.to_string()),
        ("warm_ms", cfg.warm_ms().to_string()),
        ("run_ms", cfg.run_ms().to_string()),
    ];
    if stat {
        args.push(("stat_pid", t.pid().to_string()));
    }
    let mut keep = Vec::new();
    if let Some((ctl, ack)) = perf {
        args.push(("perf_ctl", ctl.to_string()));
        args.push(("perf_ack", ack.to_string()));
        keep = vec![ctl, ack];
    }
    let w = worker_keeping(cfg, "pingpong", &args, keep)?;
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.plan.warm + cfg.plan.secs + 90.0);
    let line = w.expect("result", deadline)?;
    w.finish(deadline)?;
    let f = fields(&line);
    let measured = field(&f, "measured")?;
    if measured == 0.0 {
        return Err("no request completed in the measured window".into());
    }
    let tck = field(&f, "clk_tck")?;
    let per_req = |ticks: f64| ticks / tck * 1e6 / measured;
    let utime = field(&f, "utime_ticks")?;
    let stime = field(&f, "stime_ticks")?;
    Ok(Load {
        rate: field(&f, "rate")?,
        measured,
        p50_us: field(&f, "p50_ns")? / 1e3,
        p99_us: field(&f, "p99_ns")? / 1e3,
        p999_us: field(&f, "p999_ns")? / 1e3,
        user_us: per_req(utime),
        total_us: per_req(utime + stime),
        sched_us: field(&f, "sched_ns")? / 1e3 / measured,
        uticks: utime,
        sticks: stime,
        tck,
        server_busy: field(&f, "sched_ns")? / 1e9 / field(&f, "secs")? * 100.0,
        client_busy: field(&f, "client_sched_ns")? / 1e9 / field(&f, "secs")? * 100.0,
    })
}

fn record_load(stats: &mut Stats, prefix: &str, l: &Load) {
    stats.add(&format!("{prefix}.rate"), l.rate);
    stats.add(&format!("{prefix}.p50"), l.p50_us);
    stats.add(&format!("{prefix}.p99"), l.p99_us);
    stats.add(&format!("{prefix}.p999"), l.p999_us);
    stats.add(&format!("{prefix}.user"), l.user_us);
    stats.add(&format!("{prefix}.total"), l.total_us);
    stats.add(&format!("{prefix}.sched"), l.sched_us);
    stats.add(&format!("{prefix}.uticks"), l.uticks);
    stats.add(&format!("{prefix}.sticks"), l.sticks);
    stats.add(&format!("{prefix}.tck"), l.tck);
    stats.add(&format!("{prefix}.reqs"), l.measured);
    stats.add(&format!("{prefix}.sbusy"), l.server_busy);
    stats.add(&format!("{prefix}.cbusy"), l.client_busy);
}

/// Notes a failed scenario and carries on with the next one.
fn attempt<T>(errors: &mut Vec<String>, what: &str, run: usize, r: Res<T>) -> Option<T> {
    match r {
        Ok(v) => Some(v),
        Err(e) => {
            let mut e = e.replace('\n', " ");
            if e.len() > 300 {
                let mut cut = 300;
                while !e.is_char_boundary(cut) {
                    cut -= 1;
                }
                e.truncate(cut);
                e.push_str("...");
            }
            let msg = format!("run {}: {what}: {e}", run + 1);
            eprintln!("load: {msg}");
            errors.push(msg);
            None
        }
    }
}

/// Scenarios 1, 2, 3, 4 and 6 on one server (drainport), or the Redis
/// side of scenario 8 (1, 2 and 4).
fn server_block(
    cfg: &Cfg,
    kind: Kind,
    run: usize,
    stats: &mut Stats,
    errors: &mut Vec<String>,
) -> Res<()> {
    let t = match kind {
        Kind::Drainport => start_drainport(cfg)?,
        Kind::Redis => start_redis(cfg, cfg.redis.as_deref().ok_or("no redis")?)?,
    };
    let tag = t.tag();
    let dp = kind == Kind::Drainport;
    let name = if dp { "drainport" } else { "redis" };
    let want_idle = cfg.on(1) || (dp && cfg.on(3));
    let mut beside_crowd = None;
    if want_idle {
        let crowd = attempt(
            errors,
            &format!("{name} idle memory"),
            run,
            idle_memory(cfg, &t, stats),
        );
        if let Some(crowd) = crowd {
            if dp && cfg.on(3) {
                beside_crowd = attempt(
                    errors,
                    "ping-pong beside the idle crowd",
                    run,
                    load(cfg, &t, 1, true),
                );
                if let Some(l) = &beside_crowd {
                    record_load(stats, "s3", l);
                }
            }
            attempt(errors, &format!("{name} crowd close"), run, crowd.close());
        }
    }
    if cfg.on(2) || (dp && cfg.on(3)) {
        let alone = attempt(
            errors,
            &format!("{name} ping-pong"),
            run,
            load(cfg, &t, 1, true),
        );
        if let Some(l) = &alone {
            record_load(stats, &format!("{tag}2"), l);
        }
        if let (Some(with), Some(without)) = (&beside_crowd, &alone) {
            stats.add("s3.p99ratio", with.p99_us / without.p99_us);
            stats.add("s3.rateratio", with.rate / without.rate);
        }
    }
    if cfg.on(4) {
        if let Some(l) = attempt(
            errors,
            &format!("{name} pipelined"),
            run,
            load(cfg, &t, PIPELINE_DEPTH, true),
        ) {
            record_load(stats, &format!("{tag}4"), &l);
        }
    }
    if dp && cfg.on(6) {
        if let Some(rate) = attempt(errors, "churn", run, churn(cfg, &t)) {
            stats.add("s6.rate", rate);
        }
    }
    Ok(())
}

/// Scenario 6: connect, one line, reply, close, in a loop.
fn churn(cfg: &Cfg, t: &Target) -> Res<f64> {
    let srcs: Vec<String> = CHURN_SOURCES.map(|i| format!("127.0.0.{i}")).collect();
    let w = worker(
        cfg,
        "churn",
        &[
            ("addr", t.addr.to_string()),
            ("proto", t.proto()),
            ("conc", CHURN_SLOTS.to_string()),
            ("srcs", srcs.join(",")),
            ("warm_ms", cfg.warm_ms().to_string()),
            ("run_ms", cfg.run_ms().to_string()),
        ],
    )?;
    let deadline = Instant::now() + Duration::from_secs_f64(cfg.plan.warm + cfg.plan.secs + 90.0);
    let line = w.expect("result", deadline)?;
    w.finish(deadline)?;
    field(&fields(&line), "rate")
}

/// Scenario 5: syscalls the server makes per ping-pong request, counted by
/// `perf stat` over the whole client run (connects and closes included).
fn syscalls(cfg: &Cfg, perf: &Path, stats: &mut Stats) -> Res<()> {
    let t = start_drainport(cfg)?;
    let (ctl_r, ctl_w) = system::pipe()?;
    let (ack_r, ack_w) = system::pipe()?;
    let out = std::env::temp_dir().join(format!("drainport-load-perf-{}.csv", std::process::id()));
    let err = std::env::temp_dir().join(format!("drainport-load-perf-{}.err", std::process::id()));
    let err_file = std::fs::File::create(&err).map_err(|e| format!("{}: {e}", err.display()))?;
    let mut cmd = Command::new(perf);
    cmd.args(["stat", "-e", "syscalls:sys_enter_*", "-x", ",", "-D", "-1"])
        .arg("-o")
        .arg(&out)
        .arg("--control")
        .arg(format!("fd:{},{}", ctl_r.as_raw_fd(), ack_w.as_raw_fd()))
        .arg("-p")
        .arg(t.pid().to_string())
        .stderr(err_file);
    let perf_err = || {
        std::fs::read_to_string(&err)
            .unwrap_or_default()
            .replace('\n', " ")
    };
    let mut p = Proc::spawn_keeping(
        "perf",
        &mut cmd,
        cfg.client_cpu,
        vec![ctl_r.as_raw_fd(), ack_w.as_raw_fd()],
    )?;
    drop((ctl_r, ack_w));
    // perf has its events open (and disabled) once it answers a command.
    system::write_fd(&ctl_w, b"disable\n")?;
    system::read_until(&ack_r, b"ack\n", Instant::now() + Duration::from_secs(60))
        .map_err(|e| format!("perf did not start: {e}; {}", perf_err()))?;
    // The worker turns counting on after its warm-up and off after its
    // measured window, so connects, warm-up and closes are not counted.
    let l = load_with(
        cfg,
        &t,
        1,
        false,
        Some((ctl_w.as_raw_fd(), ack_r.as_raw_fd())),
    )?;
    // perf prints its counts on SIGINT; detaching from hundreds of
    // tracepoints takes it several seconds.
    p.signal(libc::SIGINT)?;
    let status = p.wait_until(Instant::now() + Duration::from_secs(180))?;
    let text = std::fs::read_to_string(&out).map_err(|e| format!("perf output: {e}"));
    let _ = std::fs::remove_file(&out);
    let _ = std::fs::remove_file(&err);
    let text = text?;
    if !status.success() && !text.contains("sys_enter") {
        return Err(format!("perf exited with {status}"));
    }
    let mut counts: Vec<(String, f64)> = Vec::new();
    for line in text.lines().filter(|l| !l.starts_with('#')) {
        let cols: Vec<&str> = line.split(',').collect();
        if cols.len() < 3 {
            continue;
        }
        let Some(name) = cols[2].strip_prefix("syscalls:sys_enter_") else {
            continue;
        };
        let n: f64 = cols[0].trim().parse().unwrap_or(0.0);
        counts.push((name.to_owned(), n));
    }
    if counts.is_empty() {
        return Err("perf counted no syscall tracepoint".into());
    }
    let reqs = l.measured;
    let all: f64 = counts.iter().map(|c| c.1).sum();
    let epoll: f64 = counts
        .iter()
        .filter(|c| c.0.starts_with("epoll_wait") || c.0.starts_with("epoll_pwait"))
        .map(|c| c.1)
        .sum();
    stats.add("s5.total", all / reqs);
    stats.add("s5.excl", (all - epoll) / reqs);
    stats.add("s5.epoll", epoll / reqs);
    stats.add("s5.reqs", reqs);
    for (name, n) in counts.iter().filter(|c| c.1 > 0.0) {
        stats.add(&format!("s5.sc.{name}"), n / reqs);
    }
    Ok(())
}

/// Scenario 7: SIGHUP a server holding an idle crowd, close the crowd, and
/// time the exit while sampling its memory.
///
/// With `lone` false every client closes at once and the server's exit is
/// timed from the last `close()`. With `lone` true all clients but one close,
/// the bench waits until the server has let go of them (its descriptor count
/// says so), then the last one closes alone: that isolates the exit itself
/// from the work of tearing down thousands of connections.
fn drain(cfg: &Cfg, lone: bool, stats: &mut Stats) -> Res<()> {
    let mut t = start_drainport(cfg)?;
    let pid = t.pid();
    let crowd = open_crowd(cfg, &t, cfg.plan.drain_clients)?;
    let exited = system::pidfd(pid)?;
    let rss_hup = system::status_kb(pid, "VmRSS")?;
    let hwm_hup = system::status_kb(pid, "VmHWM")?;
    let path = CString::new(format!("/proc/{pid}/status")).map_err(|e| e.to_string())?;
    let sampler = std::thread::Builder::new()
        .name("rss-sampler".into())
        .spawn(move || {
            let deadline = Instant::now() + Duration::from_secs(120);
            let mut buf = vec![0u8; 8192];
            let (mut peak, mut hwm, mut samples) = (0u64, 0u64, 0u64);
            let mut exit_ns = None;
            while Instant::now() < deadline {
                if system::readable(&exited, 0) {
                    exit_ns = Some(system::mono_ns());
                    break;
                }
                if let Some((rss, h)) = system::rss_hwm(&path, &mut buf) {
                    peak = peak.max(rss);
                    hwm = h;
                    samples += 1;
                }
                if system::readable(&exited, 1) {
                    exit_ns = Some(system::mono_ns());
                    break;
                }
            }
            (exit_ns, peak, hwm, samples)
        })
        .map_err(|e| format!("cannot start the sampler: {e}"))?;
    let cpu_hup = system::CpuTimes::read(pid)?;
    let hup_ns = system::mono_ns();
    t.proc.signal(libc::SIGHUP)?;
    let line = t
        .proc
        .expect("closing tasks", Instant::now() + Duration::from_secs(5))?;
    let tasks: usize = line
        .rsplit(' ')
        .next()
        .and_then(|n| n.parse().ok())
        .ok_or_else(|| format!("bad line {line:?}"))?;
    if tasks != cfg.plan.drain_clients {
        return Err(format!(
            "server reported {tasks} tasks at SIGHUP, not {}",
            cfg.plan.drain_clients
        ));
    }
    // The listener retires 50 ms after the signal; close well after that.
    std::thread::sleep(Duration::from_millis(200));
    let cpu_close = system::CpuTimes::read(pid)?;
    let mut workers = crowd.workers;
    let ms = |a: u64, b: u64| (b as f64 - a as f64) / 1e6;
    let (first_close, last_close) = if lone {
        let fds_before = fd_count(pid)?;
        let (_, mass_last) = send_close(&mut workers, true)?;
        // Wait until the server holds one client.
        let target = fds_before - (cfg.plan.drain_clients - 1);
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let n = fd_count(pid)?;
            if n <= target {
                break;
            }
            if Instant::now() >= deadline {
                return Err(format!(
                    "the server still had {n} descriptors (waiting for {target}) 60s after its clients closed"
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
        }
        stats.add("s7.backlog_ms", ms(mass_last, system::mono_ns()));
        // Let it settle, then the last client leaves alone.
        std::thread::sleep(Duration::from_millis(50));
        let w = &mut workers[0];
        w.send("close")?;
        let line = w.expect("closed", Instant::now() + Duration::from_secs(10))?;
        let last: u64 = line
            .split_whitespace()
            .nth(2)
            .and_then(|v| v.parse().ok())
            .ok_or_else(|| format!("bad line {line:?}"))?;
        (last, last)
    } else {
        send_close(&mut workers, false)?
    };
    let deadline = Instant::now() + Duration::from_secs(30);
    for w in workers {
        w.finish(deadline)?;
    }
    let (exit_ns, peak, hwm_end, samples) = sampler
        .join()
        .map_err(|_| "the sampler panicked".to_string())?;
    let exit_ns = exit_ns.ok_or("the server did not exit within 120s of SIGHUP")?;
    // The zombie keeps its CPU times until it is reaped.
    let cpu_exit = system::CpuTimes::read(pid)?;
    let status = t.proc.wait_until(Instant::now() + Duration::from_secs(5))?;
    if !status.success() {
        return Err(format!("the server exited with {status}"));
    }
    t.proc.expect(
        "has no clients left, exiting",
        Instant::now() + Duration::from_secs(1),
    )?;
    if lone {
        stats.add("s7.lone_exit_ms", ms(last_close, exit_ns));
        return Ok(());
    }
    stats.add("s7.exit_ms", ms(last_close, exit_ns));
    stats.add("s7.hup_exit_ms", ms(hup_ns, exit_ns));
    stats.add("s7.close_span_ms", ms(first_close, last_close));
    stats.add("s7.rss_hup", rss_hup as f64);
    stats.add("s7.rss_peak", peak.max(rss_hup) as f64);
    stats.add("s7.growth", peak.saturating_sub(rss_hup) as f64);
    stats.add("s7.hwm_hup", hwm_hup as f64);
    stats.add("s7.hwm_end", hwm_end.max(hwm_hup) as f64);
    stats.add("s7.hwm_growth", hwm_end.saturating_sub(hwm_hup) as f64);
    stats.add("s7.samples", samples as f64);
    let n = cfg.plan.drain_clients as f64;
    stats.add(
        "s7.cpu_per_close_us",
        cpu_exit.sched_ns.saturating_sub(cpu_close.sched_ns) as f64 / 1e3 / n,
    );
    stats.add(
        "s7.cpu_before_close_ms",
        cpu_close.sched_ns.saturating_sub(cpu_hup.sched_ns) as f64 / 1e6,
    );
    stats.add("s7.client_close_us", ms(first_close, last_close) * 1e3 / n);
    Ok(())
}

/// Per-run ratios drainport / Redis for the keys both sides measured.
fn redis_ratios(stats: &mut Stats, before: &HashMap<String, usize>) {
    for (key, ours, theirs) in [
        ("x1.bpc", "s1.bpc", "r1.bpc"),
        ("x2.rate", "s2.rate", "r2.rate"),
        ("x2.p50", "s2.p50", "r2.p50"),
        ("x2.p99", "s2.p99", "r2.p99"),
        ("x2.user", "s2.user", "r2.user"),
        ("x2.total", "s2.total", "r2.total"),
        ("x4.rate", "s4.rate", "r4.rate"),
        ("x4.user", "s4.user", "r4.user"),
        ("x4.total", "s4.total", "r4.total"),
    ] {
        let fresh = |k: &str| stats.len(k) > before.get(k).copied().unwrap_or(0);
        if fresh(ours) && fresh(theirs) {
            if let (Some(a), Some(b)) = (stats.last(ours), stats.last(theirs)) {
                if b != 0.0 {
                    stats.add(key, a / b);
                }
            }
        }
    }
}

/// Runs every selected scenario `cfg.plan.runs` times, interleaving drainport
/// and Redis run by run.
pub fn run_all(cfg: &Cfg, stats: &mut Stats, errors: &mut Vec<String>) {
    let redis_on = cfg.on(8) && cfg.redis.is_some();
    let dp_block = [1, 2, 3, 4, 6].iter().any(|&n| cfg.on(n));
    for run in 0..cfg.plan.runs {
        // Other work on this shared machine skews everything: give it a
        // bounded chance to pass, and record how busy the machine was.
        let quiet_deadline = Instant::now() + QUIET_WAIT;
        let busy = loop {
            let busy = system::machine_busy(Duration::from_millis(500));
            if busy < QUIET_BELOW || Instant::now() >= quiet_deadline {
                break busy;
            }
        };
        stats.add("bg.busy", busy * 100.0);
        let started = Instant::now();
        eprintln!(
            "load: run {} of {} (machine {:.0}% busy before it)",
            run + 1,
            cfg.plan.runs,
            busy * 100.0
        );
        let before = stats.lens();
        let order = if run % 2 == 0 {
            [Kind::Drainport, Kind::Redis]
        } else {
            [Kind::Redis, Kind::Drainport]
        };
        for kind in order {
            let r = match kind {
                Kind::Drainport if dp_block => server_block(cfg, kind, run, stats, errors),
                Kind::Redis if redis_on => server_block(cfg, kind, run, stats, errors),
                _ => Ok(()),
            };
            let name = if kind == Kind::Drainport {
                "drainport"
            } else {
                "redis"
            };
            attempt(errors, &format!("{name} start"), run, r);
        }
        if redis_on {
            redis_ratios(stats, &before);
        }
        if cfg.on(5) {
            if let Some(perf) = &cfg.perf {
                attempt(errors, "syscalls", run, syscalls(cfg, perf, stats));
            }
        }
        if cfg.on(7) {
            attempt(errors, "drain", run, drain(cfg, false, stats));
            attempt(
                errors,
                "drain, last client alone",
                run,
                drain(cfg, true, stats),
            );
        }
        eprintln!(
            "load: run {} took {:.1}s",
            run + 1,
            started.elapsed().as_secs_f64()
        );
    }
}
