//! The provider envelope on this machine's real cgroup hierarchy: limits are read back from the
//! kernel's files, and a CPU hog, a fork bomb and a memory hog are run inside envelopes to show
//! each cap holds. Needs root and a writable hierarchy not owned by systemd; otherwise each
//! test prints why it is skipped and passes. Every envelope and process is cleaned up by a
//! guard, also when an assertion fails.

use std::io::{Read, Write};
use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::thread::sleep;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use latticed::cgroup::{
    self, detect, envelope_cpus, format_cpu_list, online_cpus, parse_cpu_list, CgroupError,
    CgroupManager, Envelope, EnvelopeLimits, Hierarchy, V2Manager, DEFAULT_CPU_SHARES,
    DEFAULT_CPU_WEIGHT, ENVELOPE_CPU_SHARES, ENVELOPE_CPU_WEIGHT,
};
use nix::sys::signal::{kill, Signal};
use nix::unistd::{access, AccessFlags, Pid};

const MIB: u64 = 1024 * 1024;

/// Held by the tests that measure CPU time, so that their busy loops do not run side by side
/// (the test harness runs tests in parallel threads) and skew each other's figures.
static CPU_MEASUREMENT: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn cpu_measurement() -> std::sync::MutexGuard<'static, ()> {
    CPU_MEASUREMENT
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// Why the real hierarchy cannot be used here, if it cannot.
fn skip_reason() -> Option<String> {
    // /proc/self belongs to the effective uid (nix's `user` feature is not enabled here).
    let root = std::fs::metadata("/proc/self").is_ok_and(|m| m.uid() == 0);
    if !root {
        return Some("not root".into());
    }
    if detect::systemd_booted() {
        return Some("systemd owns the hierarchy (needs the D-Bus SystemdSlice)".into());
    }
    let hierarchy = match detect::detect() {
        Ok(h) => h,
        Err(e) => return Some(format!("no cgroup hierarchy: {e}")),
    };
    let dirs: Vec<PathBuf> = match &hierarchy {
        Hierarchy::V2 { root } => vec![root.clone()],
        Hierarchy::V1 { controllers } | Hierarchy::Hybrid { controllers, .. } => {
            controllers.values().cloned().collect()
        }
    };
    dirs.iter()
        .find(|d| access(d.as_path(), AccessFlags::W_OK).is_err())
        .map(|d| format!("{} is not writable", d.display()))
}

/// An envelope plus the processes a test started in it; dropping it kills them all and removes
/// the envelope.
struct Guard {
    env: Envelope,
    children: Vec<Child>,
}

impl Guard {
    /// An envelope for a fresh node id with `limits` applied, or `None` (skip) with the reason
    /// printed.
    fn new(test: &str, limits: EnvelopeLimits) -> Option<Self> {
        if let Some(reason) = skip_reason() {
            eprintln!("skipping {test}: {reason}");
            return None;
        }
        let nanos = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let node = format!("t{}-{nanos}", std::process::id());
        let env = cgroup::for_node(&node, None).expect("envelope for this machine");
        let guard = Self {
            env,
            children: Vec::new(),
        };
        guard.env.ensure(&limits).expect("ensure");
        Some(guard)
    }

    /// Starts `script` in `sh`, held at a `read` until it is inside the envelope, so nothing it
    /// does happens outside. Returns the index in `children`.
    fn spawn_inside(&mut self, script: &str) -> usize {
        let mut child = Command::new("sh")
            .arg("-c")
            .arg(format!("read go; {script}"))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("spawn sh");
        self.env.add_process(child.id()).expect("add_process");
        let mut stdin = child.stdin.take().expect("stdin");
        stdin.write_all(b"go\n").expect("release the child");
        self.children.push(child);
        self.children.len() - 1
    }

    /// Waits up to `timeout` for child `i` to exit, kills what is left in the envelope, and
    /// returns the exit status with stdout and stderr.
    fn finish(&mut self, i: usize, timeout: Duration) -> (ExitStatus, String, String) {
        let child = &mut self.children[i];
        let start = Instant::now();
        let status = loop {
            if let Some(status) = child.try_wait().expect("try_wait") {
                break status;
            }
            assert!(
                start.elapsed() < timeout,
                "child still running after {timeout:?}"
            );
            sleep(Duration::from_millis(50));
        };
        self.kill_all();
        let child = &mut self.children[i];
        let mut out = String::new();
        let mut err = String::new();
        if let Some(mut s) = child.stdout.take() {
            s.read_to_string(&mut out).expect("stdout");
        }
        if let Some(mut s) = child.stderr.take() {
            s.read_to_string(&mut err).expect("stderr");
        }
        (status, out, err)
    }

    fn kill_all(&mut self) {
        for child in &mut self.children {
            let _ = child.kill();
            let _ = child.wait();
        }
        if let Ok(pids) = self.env.procs() {
            for pid in pids {
                if let Ok(pid) = i32::try_from(pid) {
                    let _ = kill(Pid::from_raw(pid), Signal::SIGKILL);
                }
            }
        }
    }

    /// The file `name` of the envelope in the directory of `controller` (v1) or the envelope's
    /// only directory (v2).
    fn file(&self, controller: &str, name: &str) -> PathBuf {
        match &self.env {
            Envelope::V1(m) => m.dir(controller).expect("controller").join(name),
            Envelope::V2(m) => m.dir().join(name),
            other => panic!("not a filesystem envelope: {other:?}"),
        }
    }

    fn read(&self, controller: &str, name: &str) -> String {
        let path = self.file(controller, name);
        std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()))
            .trim()
            .to_owned()
    }

    /// The envelope's CPU weight file and the value the kernel holds in it.
    fn weight(&self) -> (PathBuf, String) {
        let name = match &self.env {
            Envelope::V1(_) => "cpu.shares",
            _ => "cpu.weight",
        };
        (self.file("cpu", name), self.read("cpu", name))
    }

    /// Puts the envelope back at the kernel's default CPU weight, for tests that measure
    /// something else (the cap) and must not be starved by whatever else runs on the machine.
    fn set_default_weight(&self) {
        let (path, _) = self.weight();
        let value = match &self.env {
            Envelope::V1(_) => DEFAULT_CPU_SHARES,
            _ => DEFAULT_CPU_WEIGHT,
        };
        std::fs::write(&path, value.to_string())
            .unwrap_or_else(|e| panic!("writing {}: {e}", path.display()));
    }

    /// CPU used by the envelope over `window`, in cores.
    fn cores_used(&self, window: Duration) -> f64 {
        let start = Instant::now();
        let before = self.env.stats().expect("stats").cpu_usage_ns;
        sleep(window);
        let after = self.env.stats().expect("stats").cpu_usage_ns;
        (after - before) as f64 / start.elapsed().as_nanos() as f64
    }
}

impl Drop for Guard {
    fn drop(&mut self) {
        for _ in 0..50 {
            self.kill_all();
            match self.env.remove() {
                Ok(()) => return,
                Err(_) => sleep(Duration::from_millis(100)),
            }
        }
        if let Err(e) = self.env.remove() {
            eprintln!("could not remove the test envelope: {e}");
        }
    }
}

fn limits(cpu_percent: u32, memory_bytes: u64, pids_max: u32) -> EnvelopeLimits {
    EnvelopeLimits::new(cpu_percent, memory_bytes, pids_max).expect("valid limits")
}

#[test]
fn limits_are_in_the_kernel_files_and_removal_cleans_up() {
    let Some(g) = Guard::new("limits_read_back", limits(10, 256 * MIB, 64)) else {
        return;
    };
    let quota = 10 * u64::from(online_cpus()) * 1000;
    match &g.env {
        Envelope::V1(_) => {
            assert_eq!(g.read("cpu", "cpu.cfs_period_us"), "100000");
            assert_eq!(g.read("cpu", "cpu.cfs_quota_us"), quota.to_string());
            assert_eq!(g.read("cpu", "cpu.shares"), ENVELOPE_CPU_SHARES.to_string());
            assert_eq!(
                g.read("memory", "memory.limit_in_bytes"),
                (256 * MIB).to_string()
            );
            if g.file("memory", "memory.memsw.limit_in_bytes").exists() {
                assert_eq!(
                    g.read("memory", "memory.memsw.limit_in_bytes"),
                    (256 * MIB).to_string()
                );
            }
        }
        Envelope::V2(_) => {
            assert_eq!(g.read("cpu", "cpu.max"), format!("{quota} 100000"));
            assert_eq!(g.read("cpu", "cpu.weight"), ENVELOPE_CPU_WEIGHT.to_string());
            assert_eq!(g.read("memory", "memory.max"), (256 * MIB).to_string());
        }
        other => panic!("unexpected {other:?}"),
    }
    assert_eq!(g.read("pids", "pids.max"), "64");
    let parent = g.env.docker_parent();
    assert!(parent.starts_with("/lattice-t"), "{parent}");

    // ensure is idempotent, and lowering memory works in either direction.
    g.env
        .ensure(&limits(20, 64 * MIB, 32))
        .expect("second ensure");
    g.env
        .ensure(&limits(20, 512 * MIB, 32))
        .expect("third ensure");
    assert_eq!(g.read("pids", "pids.max"), "32");

    let dir = g.file("pids", "");
    g.env.remove().expect("remove");
    assert!(!dir.exists(), "{} still there", dir.display());
    g.env.remove().expect("remove twice");
}

#[test]
fn a_kernel_refusal_names_path_and_value() {
    let Some(g) = Guard::new("kernel_refusal", limits(10, 256 * MIB, 64)) else {
        return;
    };
    // No such process: the kernel answers ESRCH to the write into cgroup.procs.
    match g.env.add_process(i32::MAX as u32).unwrap_err() {
        CgroupError::Write {
            path,
            value,
            source,
        } => {
            assert!(path.ends_with("cgroup.procs"), "{}", path.display());
            assert_eq!(value, i32::MAX.to_string());
            assert_eq!(source.raw_os_error(), Some(nix::libc::ESRCH));
        }
        other => panic!("unexpected {other:?}"),
    }
}

#[test]
fn a_cpu_hog_gets_no_more_than_its_share() {
    let _one_at_a_time = cpu_measurement();
    let Some(mut g) = Guard::new("cpu_hog", limits(10, 256 * MIB, 64)) else {
        return;
    };
    // This test is about the cap: at the envelope's low weight the compilers sharing a build
    // machine would take the hog's CPU, and "hardly ran" would say nothing about the cap.
    g.set_default_weight();
    let ncpus = f64::from(online_cpus());
    let share = 0.10 * ncpus; // 10 % of the machine, in cores: 0.2 on 2 CPUs
    g.spawn_inside("while :; do :; done");
    sleep(Duration::from_millis(300));
    let limited = g.cores_used(Duration::from_secs(2));
    eprintln!("cpu hog at 10% of {ncpus} CPUs: {limited:.3} cores (share {share:.2})");
    assert!(
        limited <= share + 0.1,
        "the hog used {limited:.3} cores, the cap is {share:.2}"
    );
    assert!(
        limited >= share / 4.0,
        "the hog hardly ran: {limited:.3} cores"
    );
    let throttled: u64 = g
        .read("cpu", "cpu.stat")
        .lines()
        .find_map(|l| l.strip_prefix("nr_throttled "))
        .and_then(|v| v.parse().ok())
        .expect("nr_throttled in cpu.stat");
    assert!(throttled > 0, "cpu.stat shows no throttling");

    // Raising the cap lets the same hog run well above the old cap: the cap above was the
    // limit. On a machine busy with other work (a CI run next to builds) a 2 s window can be
    // starved, so up to five windows are measured and the best one counts.
    g.env.set_cpu_percent(100).expect("raise the cap");
    sleep(Duration::from_millis(300));
    let clearly_above = share + 0.15;
    let mut free = 0.0f64;
    for _ in 0..5 {
        free = free.max(g.cores_used(Duration::from_secs(2)));
        if free >= 0.5 {
            break;
        }
    }
    eprintln!("cpu hog at 100%: {free:.3} cores");
    assert!(
        free >= clearly_above,
        "an uncapped busy loop used only {free:.3} cores, not clearly above the old cap of \
         {share:.2} (is the machine this busy?)"
    );
}

/// A busy loop outside any envelope (in the test's own cgroup); killed on drop.
struct HostHog(Child);

impl Drop for HostHog {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// utime + stime of `pid`, in seconds.
fn process_cpu_secs(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).expect("stat of the hog");
    // The fields after the command name, which is in parentheses and may hold spaces.
    let fields: Vec<&str> = stat[stat.rfind(')').expect("comm") + 2..]
        .split_whitespace()
        .collect();
    let ticks: u64 =
        fields[11].parse::<u64>().expect("utime") + fields[12].parse::<u64>().expect("stime");
    let hz = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .unwrap_or(100);
    ticks as f64 / hz as f64
}

/// Over `window`: (cores used by the envelope, cores used by the host's hog).
fn contended(g: &Guard, host: &HostHog, window: Duration) -> (f64, f64) {
    let start = Instant::now();
    let env0 = g.env.stats().expect("stats").cpu_usage_ns;
    let host0 = process_cpu_secs(host.0.id());
    sleep(window);
    let env1 = g.env.stats().expect("stats").cpu_usage_ns;
    let host1 = process_cpu_secs(host.0.id());
    let secs = start.elapsed().as_secs_f64();
    ((env1 - env0) as f64 / 1e9 / secs, (host1 - host0) / secs)
}

#[test]
fn the_host_wins_a_contended_cpu() {
    let _one_at_a_time = cpu_measurement();
    // The cap is the whole machine, so only the weight decides. A busy loop in the envelope
    // and one on the host, both pinned to CPU 0: the host's should get about 1024 / 204 = 5
    // times as much (whatever else runs on CPU 0 takes from both alike).
    let Some(mut g) = Guard::new("host_wins", limits(100, 256 * MIB, 64)) else {
        return;
    };
    let (_, weight) = g.weight();
    let expected = match &g.env {
        Envelope::V1(_) => ENVELOPE_CPU_SHARES,
        _ => ENVELOPE_CPU_WEIGHT,
    };
    assert_eq!(weight, expected.to_string());
    let busy = "while :; do :; done";
    g.spawn_inside(&format!("exec taskset -c 0 sh -c '{busy}'"));
    let host = HostHog(
        Command::new("taskset")
            .args(["-c", "0", "sh", "-c", busy])
            .spawn()
            .expect("taskset (util-linux)"),
    );
    sleep(Duration::from_millis(300));
    let (inside, outside) = contended(&g, &host, Duration::from_secs(3));
    let ratio = inside / outside;
    eprintln!("CPU 0, envelope at weight {weight}: envelope {inside:.3} cores, host {outside:.3} cores, ratio {ratio:.3}");

    // The same two loops with the envelope at the default weight: the low weight is the cause.
    g.set_default_weight();
    sleep(Duration::from_millis(300));
    let (inside_eq, outside_eq) = contended(&g, &host, Duration::from_secs(3));
    let ratio_eq = inside_eq / outside_eq;
    eprintln!("CPU 0, envelope at the default weight: envelope {inside_eq:.3} cores, host {outside_eq:.3} cores, ratio {ratio_eq:.3}");

    assert!(
        outside > 0.05,
        "the host's loop hardly ran: {outside:.3} cores"
    );
    assert!(inside > 0.0, "the envelope was starved altogether");
    assert!(
        ratio < 0.5,
        "at weight {weight} the envelope got {ratio:.3} of the host's CPU (expected about 0.2)"
    );
    assert!(
        ratio_eq > 2.0 * ratio,
        "at the default weight the envelope got {ratio_eq:.3} of the host's CPU, at the low weight {ratio:.3}"
    );
    g.kill_all();
}

/// `Cpus_allowed_list` of a process: the CPUs the kernel lets it run on.
fn cpus_allowed(pid: u32) -> Vec<u32> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).expect("status");
    let list = status
        .lines()
        .find_map(|l| l.strip_prefix("Cpus_allowed_list:"))
        .expect("Cpus_allowed_list");
    parse_cpu_list(list).expect("a CPU list")
}

#[test]
fn the_host_keeps_the_cpus_the_envelope_does_not_need() {
    let online =
        parse_cpu_list(&std::fs::read_to_string("/sys/devices/system/cpu/online").unwrap())
            .expect("online CPUs");
    if online.len() < 2 {
        eprintln!("skipping host_keeps_cpus: one CPU cannot be split");
        return;
    }
    let Some(mut g) = Guard::new("host_keeps_cpus", limits(100, 256 * MIB, 64)) else {
        return;
    };
    let Envelope::V1(m) = &g.env else {
        eprintln!("skipping host_keeps_cpus: the v2 path is tested on the image (QEMU)");
        return;
    };
    let Some(env_dir) = m.dir("cpuset").map(PathBuf::from) else {
        eprintln!("skipping host_keeps_cpus: no cpuset controller mounted");
        return;
    };
    let i = g.spawn_inside("exec sleep 60");
    let pid = g.children[i].id();
    assert_eq!(
        cpus_allowed(pid),
        online,
        "a 100 % envelope runs everywhere"
    );
    // A cgroup inside the envelope holding the process, as Docker makes one per container
    // (with the envelope's CPUs copied in): v1 refuses to narrow a parent below a child's
    // CPUs, so this is what makes the order of the writes matter.
    let child = env_dir.join("c1");
    std::fs::create_dir(&child).expect("mkdir a child cpuset");
    for f in ["cpuset.mems", "cpuset.cpus"] {
        std::fs::write(child.join(f), std::fs::read(env_dir.join(f)).unwrap()).unwrap();
    }
    std::fs::write(child.join("cgroup.procs"), pid.to_string()).expect("move into the child");

    g.env
        .ensure(&limits(50, 256 * MIB, 64))
        .expect("narrow the envelope");
    let pinned = envelope_cpus(50, &online).expect("half the CPUs");
    assert_eq!(g.read("cpuset", "cpuset.cpus"), format_cpu_list(&pinned));
    assert_eq!(
        cpus_allowed(pid),
        pinned,
        "the container's process moved with its envelope"
    );
    assert!(
        !pinned.contains(&online[0]),
        "CPU {} stays the host's",
        online[0]
    );

    g.env
        .ensure(&limits(100, 256 * MIB, 64))
        .expect("widen the envelope");
    assert_eq!(
        cpus_allowed(pid),
        online,
        "widened again, the process may run everywhere"
    );
    g.kill_all();
    for _ in 0..50 {
        if std::fs::remove_dir(&child).is_ok() {
            break;
        }
        sleep(Duration::from_millis(20));
    }
}

#[test]
fn v1_refuses_a_cap_below_a_container_quota() {
    let Some(g) = Guard::new("cap_below_child", limits(50, 256 * MIB, 64)) else {
        return;
    };
    if !matches!(g.env, Envelope::V1(_)) {
        eprintln!("skipping cap_below_child: only cgroup v1 has this rule");
        return;
    }
    // A container cgroup inside the envelope with a quota of 40 % of one CPU.
    let child = g.file("cpu", "container");
    std::fs::create_dir(&child).expect("mkdir child");
    std::fs::write(child.join("cpu.cfs_quota_us"), "40000").expect("child quota");
    let err = g.env.set_cpu_percent(1).unwrap_err();
    assert!(
        matches!(&err, CgroupError::CpuQuotaBelowChild { value, .. } if *value == (u64::from(online_cpus()) * 1000).to_string()),
        "{err}"
    );
    eprintln!("{err}");
    std::fs::remove_dir(&child).expect("rmdir child");
}

#[test]
fn a_fork_bomb_stops_at_the_pids_limit() {
    let Some(mut g) = Guard::new("fork_bomb", limits(50, 256 * MIB, 20)) else {
        return;
    };
    let bomb = g.spawn_inside(
        "i=0; while [ $i -lt 200 ]; do sleep 30 >/dev/null 2>&1 & i=$((i+1)); done; echo all-forked",
    );
    // dash gives up at the first failed fork; wait for that, then look before killing.
    let start = Instant::now();
    while g.children[bomb].try_wait().expect("try_wait").is_none() {
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "the bomb never hit the limit"
        );
        sleep(Duration::from_millis(50));
    }
    let stats = g.env.stats().expect("stats");
    eprintln!("fork bomb: {stats:?}");
    assert!(stats.pids_current <= 20, "{stats:?}");
    assert!(
        stats.pids_current >= 15,
        "the bomb did not fill the envelope: {stats:?}"
    );
    if let Some(hits) = stats.pids_limit_hits {
        assert!(hits >= 1, "{stats:?}");
    }
    let peak = g.file("pids", "pids.peak");
    if peak.exists() {
        assert_eq!(g.read("pids", "pids.peak"), "20");
    }
    let (status, out, err) = g.finish(bomb, Duration::from_secs(5));
    assert!(!status.success(), "{status:?}");
    assert!(!out.contains("all-forked"), "{out}");
    assert!(err.to_lowercase().contains("fork"), "sh said: {err:?}");
}

#[test]
fn a_memory_hog_is_oom_killed_inside_its_limit() {
    use std::os::unix::process::ExitStatusExt;
    let Some(mut g) = Guard::new("memory_hog", limits(50, 32 * MIB, 64)) else {
        return;
    };
    // dash keeps the whole command substitution in memory: 100 MB in a 32 MiB envelope.
    let hog = g.spawn_inside("a=$(head -c 100000000 /dev/zero | tr '\\0' x); echo survived ${#a}");
    let (status, out, _) = g.finish(hog, Duration::from_secs(60));
    assert_eq!(
        status.signal(),
        Some(Signal::SIGKILL as i32),
        "{status:?} {out}"
    );
    assert!(!out.contains("survived"), "{out}");
    let stats = g.env.stats().expect("stats");
    eprintln!("memory hog: {stats:?}");
    assert!(
        stats.oom_kills.is_none_or(|n| n >= 1),
        "the kernel reports no OOM kill: {stats:?}"
    );
    if let Envelope::V1(_) = g.env {
        let max: u64 = g
            .read("memory", "memory.max_usage_in_bytes")
            .parse()
            .expect("number");
        assert!(max <= 32 * MIB, "peak {max} above the cap");
    }
}

#[test]
fn this_machine_is_detected() {
    let hierarchy = detect::detect().expect("mountinfo");
    eprintln!("hierarchy: {hierarchy:?}");
    if skip_reason().is_none() {
        // Whatever it is, an envelope can be made for it.
        cgroup::for_node("n-detect", None).expect("an envelope for this machine");
    }
}

#[test]
fn v2_paths_on_the_unified_mount_of_a_hybrid_machine() {
    // The hybrid build machines mount cgroup2 with no controllers: the v2 manager must refuse
    // by name, and its process handling (the `direct` leaf, procs, remove) works on the real
    // kernel even without controllers.
    if let Some(reason) = skip_reason() {
        eprintln!("skipping v2_on_unified: {reason}");
        return;
    }
    let Ok(Hierarchy::Hybrid { unified, .. }) = detect::detect() else {
        eprintln!("skipping v2_on_unified: not a hybrid hierarchy");
        return;
    };
    let node = format!("t{}-v2", std::process::id());
    let m = V2Manager::new(&node, &unified, online_cpus()).expect("manager");
    let mut g = Guard {
        env: Envelope::V2(m.clone()),
        children: Vec::new(),
    };
    match m.ensure(&limits(10, 256 * MIB, 64)).unwrap_err() {
        CgroupError::MissingController { controller, place } => {
            assert_eq!(controller, "cpu");
            assert_eq!(place, unified.join("cgroup.controllers"));
        }
        other => panic!("unexpected {other:?}"),
    }
    assert!(!m.dir().exists(), "nothing is created when refusing");

    std::fs::create_dir(m.dir()).expect("mkdir envelope");
    let i = g.spawn_inside("sleep 30");
    let pid = g.children[i].id();
    // sh may have forked `sleep` by now: look for sh's pid, not for it alone.
    let leaf = std::fs::read_to_string(m.dir().join("direct/cgroup.procs")).expect("leaf procs");
    assert!(leaf.lines().any(|l| l == pid.to_string()), "{leaf:?}");
    assert!(m.procs().expect("procs").contains(&pid));
    g.kill_all();
    let start = Instant::now();
    while let Err(e) = m.remove() {
        assert!(start.elapsed() < Duration::from_secs(5), "{e}");
        sleep(Duration::from_millis(50));
    }
    assert!(!m.dir().exists());
}
