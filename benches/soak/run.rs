//! The soak's timeline: start, load, roll, sample, tear down, judge.

use std::net::{SocketAddr, SocketAddrV4, TcpListener};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use crate::Opts;
use crate::idle::{self, IdleConfig, IdleStats};
use crate::procs::{
    self, CLOSE_SPREAD_SECS, DRAIN_TIMEOUT_SECS, FixedSlot, Reaper, RolledSlot, alive, drain_log,
    fd_count, memory_kib, wait_until,
};
use crate::report::{self, Drain, Figures, Sample};
use crate::traffic::{self, ChurnStats, HostileStats, SESSION_LIMIT};

const SAMPLE_EVERY: Duration = Duration::from_secs(5);
const CHURN_THREADS: usize = 3;
const HOSTILE_THREADS: usize = 2;
const RAMP_DEADLINE: Duration = Duration::from_secs(120);
const TICK: Duration = Duration::from_millis(100);

/// Runs the soak; Ok(pass) when it ran to the end.
pub fn soak(o: &Opts) -> Result<bool, String> {
    let fd_limit = testbed::system::raise_fd_limit();
    let interrupted = Arc::new(AtomicBool::new(false));
    // The first ^C ends the load early and still cleans up; a second one
    // exits at once.
    for sig in [libc::SIGINT, libc::SIGTERM] {
        signal_hook::flag::register_conditional_shutdown(sig, 1, interrupted.clone())
            .and_then(|_| signal_hook::flag::register(sig, interrupted.clone()))
            .map_err(|e| format!("signal handler: {e}"))?;
    }
    let duration = Duration::from_secs_f64(o.minutes * 60.0);
    let dir = std::env::temp_dir().join(format!("drainport-soak-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let addr = free_port()?;
    let SocketAddr::V4(addr4) = addr else {
        return Err("expected an IPv4 address".into());
    };
    println!(
        "soak: {} min on {addr}, {} idle clients, slot 1 rolled every {:?}; state in {}",
        o.minutes,
        o.idle,
        o.restart_every,
        dir.display()
    );

    // Declared first, dropped last: kills whatever is still running.
    let reaper = Reaper::default();
    let mut slot2 = FixedSlot::start(&dir.join("slot2"), addr)?;
    let fd_baseline = fd_count(slot2.pid).ok_or("cannot count slot 2's descriptors")?;
    let mut slot1 = RolledSlot::new(dir.join("slot1"), addr);
    let (_, first) = slot1.upgrade(&reaper)?;
    println!(
        "soak: slot 2 is pid {} ({fd_baseline} fds); slot 1 starts as pid {first}",
        slot2.pid
    );

    let started = Instant::now();
    let hard_deadline = started + duration + Duration::from_secs(300);
    let idle_stats = Arc::new(IdleStats::default());
    let idle_stop = Arc::new(AtomicBool::new(false));
    let idle_thread = {
        let cfg = IdleConfig {
            addr: addr4,
            clients: o.idle,
            stop: idle_stop.clone(),
            hard_deadline,
            seed: seed(),
        };
        let stats = idle_stats.clone();
        thread::spawn(move || idle::run(&cfg, &stats))
    };
    let ramped = wait_until(started + RAMP_DEADLINE, TICK, || {
        idle_stats.initial_done.load(Ordering::SeqCst) >= o.idle
            || interrupted.load(Ordering::SeqCst)
    });
    let ramp = started.elapsed();
    if !ramped {
        idle_stop.store(true, Ordering::SeqCst);
        return Err(format!(
            "the idle clients did not connect within {RAMP_DEADLINE:?}"
        ));
    }
    println!(
        "soak: {} idle clients connected in {:.1} s",
        idle_stats.held.load(Ordering::SeqCst),
        ramp.as_secs_f64()
    );

    // The load.
    let t0 = Instant::now();
    let end = t0 + duration;
    let traffic_stop = Arc::new(AtomicBool::new(false));
    let traffic_deadline = end + Duration::from_secs(60);
    let churn = Arc::new(ChurnStats::default());
    let hostile = Arc::new(HostileStats::default());
    let mut workers: Vec<JoinHandle<()>> = Vec::new();
    for t in 0..CHURN_THREADS {
        let (stop, s) = (traffic_stop.clone(), churn.clone());
        workers.push(thread::spawn(move || {
            traffic::churn(addr, t, &stop, traffic_deadline, &s)
        }));
    }
    for t in 0..HOSTILE_THREADS {
        let (stop, s) = (traffic_stop.clone(), hostile.clone());
        // Offset so the two threads run different kinds at a time.
        workers.push(thread::spawn(move || {
            traffic::hostile(addr, t * 3, &stop, traffic_deadline, &s)
        }));
    }

    let mut samples: Vec<Sample> = Vec::new();
    let mut drains: Vec<Drain> = Vec::new();
    let mut problems: Vec<String> = Vec::new();
    let mut next_sample = t0;
    let mut next_restart = t0 + o.restart_every;
    let mut restarts = 0;
    let mut last_progress = t0;
    loop {
        let now = Instant::now();
        if now >= end {
            break;
        }
        if interrupted.load(Ordering::SeqCst) {
            problems.push("interrupted".into());
            break;
        }
        if !slot2.running() {
            problems.push(format!("slot 2 (pid {}) exited during the run", slot2.pid));
            break;
        }
        if now >= next_sample {
            next_sample += SAMPLE_EVERY;
            if let Some(s) = sample(&mut slot2, t0, &idle_stats) {
                samples.push(s);
            }
        }
        if now >= next_restart {
            next_restart += o.restart_every;
            match slot1.upgrade(&reaper) {
                Ok((old, _new)) => {
                    restarts += 1;
                    match old {
                        Some(pid) => drains.push(Drain {
                            pid,
                            hup_at: Instant::now(),
                            exited_after: None,
                            clients_at_hup: None,
                            timed_out: false,
                            said_exiting: false,
                        }),
                        None => problems.push(format!(
                            "restart {restarts}: no old slot-1 process to drain"
                        )),
                    }
                }
                Err(e) => problems.push(format!("restart {}: {e}", restarts + 1)),
            }
        }
        watch_drains(&mut drains);
        if now.duration_since(last_progress) >= Duration::from_secs(60) {
            last_progress = now;
            print_progress(t0, restarts, &drains, &samples, &idle_stats, &churn);
        }
        thread::sleep(TICK);
    }
    let load_time = t0.elapsed();
    if let Some(s) = sample(&mut slot2, t0, &idle_stats) {
        samples.push(s);
    }

    // Tear down: stop the traffic, then the idle crowd.
    println!(
        "soak: load done after {:.0} s; stopping the clients",
        load_time.as_secs_f64()
    );
    traffic_stop.store(true, Ordering::SeqCst);
    let joined = join_by(workers, SESSION_LIMIT + Duration::from_secs(50));
    idle_stop.store(true, Ordering::SeqCst);
    let idle_joined = join_by(vec![idle_thread], Duration::from_secs(30));
    if !joined || !idle_joined {
        problems.push("a client thread did not stop in time".into());
    }

    // Every drained generation must exit by itself, within its policy.
    let drain_budget = Duration::from_secs(DRAIN_TIMEOUT_SECS + CLOSE_SPREAD_SECS + 15);
    let last_hup = drains
        .iter()
        .map(|d| d.hup_at)
        .max()
        .unwrap_or_else(Instant::now);
    wait_until(last_hup + drain_budget, TICK, || {
        watch_drains(&mut drains);
        drains.iter().all(|d| d.exited_after.is_some())
    });
    let log1 = std::fs::read_to_string(slot1.log()).unwrap_or_default();
    for d in &mut drains {
        let said = drain_log(&log1, d.pid);
        d.clients_at_hup = said.clients;
        d.timed_out = said.timed_out;
        d.said_exiting = said.said_exiting;
    }

    // Slot 2 must be back to its baseline descriptors once its clients left.
    let mut last_clients = None;
    let emptied = wait_until(
        Instant::now() + Duration::from_secs(30),
        Duration::from_millis(500),
        || {
            last_clients = slot2.status_clients();
            last_clients == Some(0)
        },
    );
    let mut fd_final = fd_count(slot2.pid);
    if emptied {
        wait_until(Instant::now() + Duration::from_secs(5), TICK, || {
            fd_final = fd_count(slot2.pid);
            fd_final == Some(fd_baseline)
        });
    } else {
        problems.push(format!(
            "slot 2 still reports clients={last_clients:?} 30 s after every client left"
        ));
    }
    let (rss_end, hwm_end) = memory_kib(slot2.pid).unwrap_or_default();

    // Finally both slots drain, and must exit 0.
    let current1 = slot1.current();
    if let Some(pid) = current1 {
        procs::signal(pid, libc::SIGHUP);
    }
    slot2.signal(libc::SIGHUP);
    let slot2_exit = slot2.wait(Duration::from_secs(30));
    let slot1_exited = wait_until(Instant::now() + Duration::from_secs(30), TICK, || {
        current1.is_none_or(|p| !alive(p))
    });
    if !slot2_exit.is_some_and(|s| s.success()) {
        problems.push(format!(
            "slot 2 did not exit 0 after its final HUP: {slot2_exit:?}"
        ));
    }
    if !slot1_exited {
        problems.push(format!(
            "slot 1 (pid {current1:?}) did not exit after its final HUP"
        ));
    }
    let leftovers = reaper.running();
    if !leftovers.is_empty() {
        problems.push(format!(
            "drainport processes still running at the end: {leftovers:?}"
        ));
    }
    drop(reaper);

    let r = Figures {
        opts: o,
        fd_limit,
        duration: load_time,
        wall: started.elapsed(),
        ramp,
        starts: slot1.starts,
        restarts,
        drains: &drains,
        samples: &samples,
        fd_baseline,
        fd_final,
        rss_end,
        hwm_end,
        idle: &idle_stats,
        churn: &churn,
        hostile: &hostile,
        problems: &problems,
    };
    write_samples(&samples);
    let (body, pass) = r.render();
    println!("\n{body}");
    let interrupted = interrupted.load(Ordering::SeqCst);
    if o.write && !interrupted {
        let path = Path::new(procs::ROOT).join("docs/benchmarks.md");
        report::write_section(&path, &body)?;
        println!("soak: report written to {}", path.display());
    } else {
        println!("soak: report not written (--no-write or interrupted)");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(pass)
}

/// Keeps the raw samples beside the bench binary (target/release/), for
/// a closer look at the RSS curve.
fn write_samples(samples: &[Sample]) {
    let Some(dir) = std::env::current_exe()
        .ok()
        .and_then(|p| Some(p.parent()?.parent()?.to_owned()))
    else {
        return;
    };
    let path = dir.join("soak-samples.csv");
    let mut csv = String::from("t_s,rss_kib,fds,clients,idle_held\n");
    for s in samples {
        let clients = s.clients.map_or(String::new(), |c| c.to_string());
        csv += &format!("{:.1},{},{},{clients},{}\n", s.t, s.rss_kib, s.fds, s.held);
    }
    match std::fs::write(&path, csv) {
        Ok(()) => println!("soak: samples written to {}", path.display()),
        Err(e) => eprintln!("soak: cannot write {}: {e}", path.display()),
    }
}

/// Notes the generations that have exited since the last look.
fn watch_drains(drains: &mut [Drain]) {
    for d in drains.iter_mut().filter(|d| d.exited_after.is_none()) {
        if !alive(d.pid) {
            d.exited_after = Some(d.hup_at.elapsed());
        }
    }
}

/// Samples slot 2: its client count (SIGUSR1), then at once its
/// descriptors and memory, and the idle crowd's size.
fn sample(slot2: &mut FixedSlot, t0: Instant, idle: &IdleStats) -> Option<Sample> {
    let clients = slot2.status_clients();
    let fds = fd_count(slot2.pid)?;
    let (rss_kib, _) = memory_kib(slot2.pid)?;
    Some(Sample {
        t: t0.elapsed().as_secs_f64(),
        rss_kib,
        fds,
        clients,
        held: idle.held.load(Ordering::Relaxed),
    })
}

fn print_progress(
    t0: Instant,
    restarts: usize,
    drains: &[Drain],
    samples: &[Sample],
    idle: &IdleStats,
    churn: &ChurnStats,
) {
    let last = samples.last();
    println!(
        "soak: {:>4.0} s: {restarts} restarts, {} drains done; slot 2 RSS {} KiB, {} fds; idle held {}, failures {}; churn {} ok, {} failed",
        t0.elapsed().as_secs_f64(),
        drains.iter().filter(|d| d.exited_after.is_some()).count(),
        last.map_or(0, |s| s.rss_kib),
        last.map_or(0, |s| s.fds),
        idle.held.load(Ordering::Relaxed),
        idle.failures.load(Ordering::Relaxed),
        churn.ok.load(Ordering::Relaxed),
        churn.failed.load(Ordering::Relaxed),
    );
}

/// Joins threads that have finished by `limit`; false if any had not.
fn join_by(handles: Vec<JoinHandle<impl Sized>>, limit: Duration) -> bool {
    let all = wait_until(Instant::now() + limit, TICK, || {
        handles.iter().all(|h| h.is_finished())
    });
    for h in handles {
        if h.is_finished() && h.join().is_err() {
            eprintln!("soak: a client thread panicked");
            return false;
        }
    }
    all
}

fn free_port() -> Result<SocketAddr, String> {
    TcpListener::bind(SocketAddrV4::new([127, 0, 0, 1].into(), 0))
        .and_then(|l| l.local_addr())
        .map_err(|e| format!("find a free port: {e}"))
}

fn seed() -> u64 {
    let nanos = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as u64);
    nanos ^ (u64::from(std::process::id()) << 32)
}
