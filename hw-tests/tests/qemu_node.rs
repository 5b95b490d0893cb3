//! The image builds (or is found in the cache) with its manifest; then one chained scenario
//! on it: provision → boot in QEMU → registered with a fleet the test started → checks in the
//! guest → reboot → same node. scripts/test runs the first test alone in the background while
//! it compiles, so the scenario later finds the image built.
//!
//! Runs only with LATTICE_HW_TESTS=1, as root (scripts/hw-test). The serial console is kept in
//! build/hw-tests/logs/ when it fails.

use lattice_hw_tests::{enabled, fleet::Fleet, guest::Guest, image::cached_image, wait_for};
use lattice_image::provision::{provision, Provision};
use lattice_image::tools::SystemRunner;
use lattice_wire::wifi::WifiConfig;
use std::process::Command;
use std::time::{Duration, Instant};

/// Power-on to registered, under software emulation (the target is 90 s; CI machines
/// are slower and shared, so the test allows more and prints the figure).
const REGISTER_TIMEOUT: Duration = Duration::from_secs(300);
/// Deploy to running in the guest: dockerd pulls the test image through an SSH forward and
/// starts it, all under software emulation.
const WORKLOAD_TIMEOUT: Duration = Duration::from_secs(300);

/// An image `scripts/test-images` built and pushed (pinned by digest): `LATTICE_TEST_IMAGE`
/// (busybox) or `LATTICE_S3_IMAGE` (the static lattice-s3).
fn built_image(var: &str) -> String {
    let env = lattice_hw_tests::repo_root().join("build/test-images.env");
    let text = std::fs::read_to_string(&env)
        .unwrap_or_else(|e| panic!("{}: {e} (scripts/test-images makes it)", env.display()));
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("{var}=")))
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|| panic!("{} names no {var}", env.display()))
}

fn test_image() -> String {
    built_image("LATTICE_TEST_IMAGE")
}

/// Waits for workload `name` to be running; its `workload show --json`. Panics with the
/// workload and latticed's log if it is not within [`WORKLOAD_TIMEOUT`].
fn running(fleet: &Fleet, guest: &Guest, name: &str) -> serde_json::Value {
    wait_for(WORKLOAD_TIMEOUT, Duration::from_secs(2), || {
        let v: serde_json::Value =
            serde_json::from_str(&fleet.cli(&["workload", "show", name, "--json"])).ok()?;
        (v["state"] == "running").then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "{name} not running within {WORKLOAD_TIMEOUT:?}: {}\nlatticed:\n{}",
            fleet.cli(&["workload", "show", name]),
            guest
                .ssh("journalctl -u latticed --no-pager | tail -n 40")
                .1
        )
    })
}

/// The aws CLI scripts/test installs into build/pyenv (the S3 tests' client).
fn aws(fleet: &Fleet, creds: &serde_json::Value, args: &[&str], stdin: &[u8]) -> String {
    let out = try_aws(fleet, creds, args, stdin);
    assert!(
        out.status.success(),
        "aws {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The aws CLI's whole output, for callers that wait for it to succeed.
fn try_aws(
    fleet: &Fleet,
    creds: &serde_json::Value,
    args: &[&str],
    stdin: &[u8],
) -> std::process::Output {
    use std::io::Write;
    let c = &creds["credentials"];
    let mut child = Command::new(lattice_hw_tests::repo_root().join("build/pyenv/bin/aws"))
        .arg("--endpoint-url")
        .arg(creds["endpoint"].as_str().expect("endpoint"))
        .args(args)
        .env(
            "AWS_ACCESS_KEY_ID",
            c["access_key_id"].as_str().expect("key"),
        )
        .env(
            "AWS_SECRET_ACCESS_KEY",
            c["secret_access_key"].as_str().expect("secret"),
        )
        .env("AWS_CA_BUNDLE", &fleet.apps_ca)
        .env("AWS_DEFAULT_REGION", "us-east-1")
        .env("AWS_EC2_METADATA_DISABLED", "true")
        .env("AWS_CONFIG_FILE", "/dev/null")
        .env("AWS_SHARED_CREDENTIALS_FILE", "/dev/null")
        .env_remove("AWS_PROFILE")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .expect("run build/pyenv/bin/aws (scripts/test installs it)");
    child.stdin.take().unwrap().write_all(stdin).unwrap();
    child.wait_with_output().unwrap()
}

#[test]
fn the_image_builds_with_its_manifest_and_checksums() {
    if !enabled("the_image_builds_with_its_manifest_and_checksums") {
        return;
    }
    let image = cached_image();
    if let Some(s) = image.build_secs {
        eprintln!("FIGURE image build: {s:.0} s");
    }
    // Inspect reads the manifest without mounting.
    let release = lattice_image::inspect::inspect(&image.raw, &mut SystemRunner::new()).unwrap();
    assert!(release.version_of("docker.io").is_some(), "{release:?}");
    assert!(release.version_of("rauc").is_some());
    assert!(release.fields.contains_key("LATTICED_VERSION"));
    // Both images are listed in SHA256SUMS, and match it.
    let dir = image.raw.parent().unwrap();
    let sums = std::fs::read_to_string(dir.join("SHA256SUMS")).unwrap();
    for f in [&image.raw, &image.qcow2] {
        let name = f.file_name().unwrap().to_string_lossy().into_owned();
        assert!(sums.contains(&name), "{name} not in SHA256SUMS: {sums}");
    }
    let check = Command::new("sha256sum")
        .args(["--check", "--quiet", "SHA256SUMS"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(
        check.status.success(),
        "{}",
        String::from_utf8_lossy(&check.stdout)
    );
}

#[test]
fn image_boots_registers_and_keeps_its_identity() {
    if !enabled("image_boots_registers_and_keeps_its_identity") {
        return;
    }
    let image = cached_image();
    if let Some(s) = image.build_secs {
        eprintln!("FIGURE image build: {s:.0} s");
    }
    let dir = tempfile::tempdir().unwrap();

    // A copy of the image, provisioned with a token and a test SSH key.
    let fleet = Fleet::start(&dir.path().join("fleet"), &built_image("LATTICE_S3_IMAGE"));
    let img = dir.path().join("node.img");
    let cp = Command::new("cp")
        .args(["--sparse=always"])
        .arg(&image.raw)
        .arg(&img)
        .status()
        .unwrap();
    assert!(cp.success());
    let key = dir.path().join("id_ed25519");
    let kg = Command::new("ssh-keygen")
        .args(["-q", "-t", "ed25519", "-N", "", "-f"])
        .arg(&key)
        .status()
        .unwrap();
    assert!(kg.success());
    let pubkey = std::fs::read_to_string(key.with_extension("pub")).unwrap();
    provision(
        &img,
        &Provision {
            provisioning: fleet.provisioning(),
            authorized_keys: Some(pubkey),
            wifi: Some(WifiConfig::new(WIFI_SSID, Some(WIFI_PSK), None).unwrap()),
        },
        &mut SystemRunner::new(),
    )
    .unwrap();

    // Power on → registered and online.
    // On a disk 1 GiB larger than the image, as when it is written to a bigger stick.
    let image_bytes = std::fs::metadata(&img).unwrap().len();
    let data_before = lattice_image::gpt::GptTable::read(&img)
        .unwrap()
        .find(lattice_image::layout::Role::Data.part_label(), &img)
        .map(|p| p.size_bytes())
        .unwrap();
    // Room for an `s3` workload's 2 GiB volume: the fleet offers half a node's free disk to
    // workloads (the overlay stays sparse: the volume is preallocated, not written).
    const GROWTH: u64 = 5 << 30;
    let mut guest = Guest::boot(&img, dir.path(), &key, Some(image_bytes + GROWTH));
    let node = wait_for(REGISTER_TIMEOUT, Duration::from_secs(1), || {
        fleet.nodes().into_iter().find(|n| n["online"] == true)
    })
    .unwrap_or_else(|| {
        panic!(
            "no node registered within {REGISTER_TIMEOUT:?}; fleet log:\n{}",
            fleet.log_text()
        )
    });
    let registered = guest.started.elapsed();
    eprintln!(
        "FIGURE power-on to registered ({}): {:.1} s",
        guest.spec.accel.name(),
        registered.as_secs_f64()
    );
    let id = node["id"].as_str().unwrap().to_string();

    // SSH is on because a key was provisioned.
    wait_for(Duration::from_secs(120), Duration::from_secs(2), || {
        (guest.ssh("true").0 == 0).then_some(())
    })
    .expect("SSH with the provisioned key");

    // latticed under systemd with the Docker engine up.
    for unit in ["latticed", "docker", "containerd", "systemd-timesyncd"] {
        let state = guest.ssh(&format!("systemctl is-active {unit}")).1;
        assert_eq!(state.trim(), "active", "{unit}");
    }
    // A notify service with systemd's watchdog, fed by latticed (checked again after the
    // workload runs, when latticed has outlived the interval several times).
    let unit = guest.ok("systemctl show -p Type -p WatchdogUSec -p StatusText latticed");
    for want in [
        "Type=notify".to_string(),
        format!(
            "WatchdogUSec={}s",
            lattice_image::system::LATTICED_WATCHDOG_SECS
        ),
        format!("StatusText=node {id}: supervising"),
    ] {
        assert!(unit.lines().any(|l| l.trim() == want), "{want}: {unit}");
    }
    assert_eq!(
        guest
            .ok("docker info --format '{{.ServerVersion}}' >/dev/null && echo up")
            .trim(),
        "up"
    );
    // cgroup v2 with systemd: what latticed's envelope will use here.
    assert_eq!(guest.ok("stat -fc %T /sys/fs/cgroup").trim(), "cgroup2fs");
    // Docker's storage and latticed's identity are on the data partition.
    assert!(guest
        .ok("findmnt -no SOURCE /var/lib/docker")
        .contains("[/docker]"));
    let reg = guest.ok("cat /var/lib/latticed/registration.json");
    assert!(reg.contains(&id), "{reg}");

    // The data partition took the rest of the larger disk, and its file system followed.
    let part: u64 = guest
        .ok("lsblk -bndo SIZE /dev/disk/by-partlabel/lattice-data")
        .trim()
        .parse()
        .unwrap();
    assert!(
        part >= data_before + GROWTH - (4 << 20),
        "the data partition did not grow: {part} bytes, {data_before} in the image"
    );
    let fs: u64 = guest
        .ok("df -B1 --output=size /data | tail -n1")
        .trim()
        .parse()
        .unwrap();
    assert!(
        fs > data_before + GROWTH / 2,
        "the data file system did not grow with its partition: {fs} bytes; {}",
        guest
            .ssh("journalctl -b -u systemd-repart -u 'systemd-growfs*' --no-pager")
            .1
    );

    // Read-only root, even for root.
    let (code, _, err) = guest.ssh("touch /usr/x");
    assert_ne!(code, 0, "touch /usr/x succeeded on the root filesystem");
    assert!(err.contains("Read-only file system"), "{err}");
    assert!(guest.ok("findmnt -no OPTIONS /").starts_with("ro"));

    // No account with an empty or unhashed password.
    let shadow = guest.ok("cat /etc/shadow");
    assert_eq!(
        lattice_image::system::accounts_with_password_problems(&shadow),
        Vec::<String>::new()
    );
    // Password logins are off in sshd.
    assert!(guest.ok("sshd -T").contains("passwordauthentication no"));

    // A workload from the fleet runs in Docker inside the node's envelope, a systemd slice
    // whose limits systemd holds, and answers consumers through the tunnel and the gateway.
    let image_ref = test_image();
    let registry_port: u16 = image_ref
        .split_once('/')
        .and_then(|(host, _)| host.rsplit_once(':'))
        .and_then(|(_, p)| p.parse().ok())
        .expect("test image on a loopback registry");
    let _registry = guest.reverse_forward(registry_port, registry_port);
    let deployed = Instant::now();
    fleet.cli(&[
        "deploy",
        "container",
        "web",
        "--image",
        &image_ref,
        "--port",
        "8080",
        "--",
        "sh",
        "-c",
        "mkdir -p /tmp/www && echo hello-from-qemu > /tmp/www/index.html && exec httpd -f -p 8080 -h /tmp/www",
    ]);
    let shown = running(&fleet, &guest, "web");
    assert_eq!(shown["node"].as_str(), Some(id.as_str()));
    eprintln!(
        "FIGURE deploy to running in QEMU ({}): {:.1} s",
        guest.spec.accel.name(),
        deployed.elapsed().as_secs_f64()
    );
    let slices = guest.ok("ls /sys/fs/cgroup/lattice.slice");
    let slice = slices
        .split_whitespace()
        .find(|s| s.starts_with("lattice-") && s.ends_with(".slice"))
        .unwrap_or_else(|| panic!("no envelope slice under lattice.slice: {slices}"))
        .to_string();
    // The limits are systemd's (set over D-Bus), not files written behind its back.
    let props = guest.ok(&format!(
        "systemctl show -p CPUQuotaPerSecUSec -p MemoryMax -p TasksMax -p CPUWeight -p AllowedCPUs '{slice}'"
    ));
    assert!(
        !props.contains("CPUQuotaPerSecUSec=infinity") && props.contains("CPUQuotaPerSecUSec="),
        "{props}"
    );
    assert!(!props.contains("MemoryMax=infinity"), "{props}");
    assert!(!props.contains("TasksMax=infinity"), "{props}");
    let cgroup = guest.ok(&format!(
        "cat /proc/$(docker ps -q --filter label=io.lattice.node={id} | head -n1 | xargs docker inspect -f '{{{{.State.Pid}}}}')/cgroup"
    ));
    assert!(
        cgroup.contains(&format!("/lattice.slice/{slice}/")),
        "the container is not inside the envelope: {cgroup}"
    );
    // The default cap, 50 % of the guest's two CPUs, needs one: the envelope runs on CPU 1
    // and CPU 0 stays the host's, set through systemd (AllowedCPUs) and felt by the container.
    assert!(
        props.lines().any(|l| l.trim() == "AllowedCPUs=1"),
        "the envelope is not pinned to CPU 1: {props}"
    );
    let allowed = guest.ok(&format!(
        "grep Cpus_allowed_list /proc/$(docker ps -q --filter label=io.lattice.node={id} | head -n1 | xargs docker inspect -f '{{{{.State.Pid}}}}')/status"
    ));
    assert!(
        allowed.split_whitespace().last() == Some("1"),
        "the container may run outside the envelope's CPUs: {allowed}"
    );
    // Through the node's tunnel and the fleet's gateway, as a consumer reaches it.
    let apps = fleet.apps_http.clone().expect("the fleet runs its gateway");
    let page = wait_for(Duration::from_secs(60), Duration::from_secs(1), || {
        let out = Command::new("curl")
            .args([
                "-s",
                "--max-time",
                "10",
                "-H",
                "Host: web--operator.lattice-apps.localhost",
            ])
            .arg(format!("http://{apps}/"))
            .output()
            .ok()?;
        let body = String::from_utf8_lossy(&out.stdout).into_owned();
        body.contains("hello-from-qemu").then_some(body)
    })
    .unwrap_or_else(|| {
        panic!(
            "the workload did not answer through the gateway; in the guest:\n{}",
            guest
                .ssh("ip -4 addr; ip -4 route; iptables -S; iptables -t nat -S; docker ps -a")
                .1
        )
    });
    assert_eq!(page.trim(), "hello-from-qemu");

    // An `s3` workload: its volume is a preallocated ext4 file on the data partition,
    // loop-mounted by latticed; an object put through the gateway must be there after the
    // reboot below.
    // latticed mounts volumes where dockerd sees them: in the host's mount namespace.
    let ns = guest
        .ok("readlink /proc/1/ns/mnt /proc/$(systemctl show -p MainPID --value latticed)/ns/mnt");
    let ns: Vec<&str> = ns.lines().collect();
    assert!(
        ns.len() == 2 && ns[0] == ns[1],
        "latticed runs in a mount namespace of its own: {ns:?}"
    );
    let s3_deployed = Instant::now();
    fleet.cli(&["deploy", "s3", "files", "--bucket", "hw-test"]);
    running(&fleet, &guest, "files");
    eprintln!(
        "FIGURE s3 deploy to running in QEMU ({}): {:.1} s",
        guest.spec.accel.name(),
        s3_deployed.elapsed().as_secs_f64()
    );
    let mounts = guest.ok("grep '^/dev/loop' /proc/mounts || true");
    let volume = mounts
        .lines()
        .find(|l| l.contains(" /var/lib/latticed/volumes/") && l.contains("/data.mnt ext4 "))
        .unwrap_or_else(|| panic!("no loop-mounted ext4 volume for files: {mounts}"))
        .to_string();
    assert!(
        volume.contains("nosuid") && volume.contains("nodev"),
        "{volume}"
    );
    let creds: serde_json::Value =
        serde_json::from_str(&fleet.cli(&["workload", "show", "files", "--credentials", "--json"]))
            .expect("credentials json");
    let object = format!("written before the reboot by {id}\n");
    aws(
        &fleet,
        &creds,
        &["s3", "cp", "-", "s3://hw-test/before-reboot.txt"],
        object.as_bytes(),
    );
    assert_eq!(
        aws(
            &fleet,
            &creds,
            &["s3", "cp", "s3://hw-test/before-reboot.txt", "-"],
            b""
        ),
        object
    );

    // The runtime's limits hold on this cgroup v2 + systemd system: a memory hog is killed
    // inside its own plan's limit (the node and the other workload live on), a CPU hog gets
    // no more than its plan's share and a fork bomb is refused at its plan's task limit.
    for (name, script) in [
        ("hog-mem", "a=0123456789; while :; do a=$a$a; done"),
        ("hog-cpu", "while :; do :; done"),
        ("hog-pids", "while :; do sleep 1000 & done"),
    ] {
        fleet.cli(&[
            "deploy",
            "container",
            name,
            "--image",
            &image_ref,
            "--plan",
            "micro",
            "--",
            "sh",
            "-c",
            script,
        ]);
    }
    let oom = wait_for(WORKLOAD_TIMEOUT, Duration::from_secs(2), || {
        let v: serde_json::Value =
            serde_json::from_str(&fleet.cli(&["workload", "show", "hog-mem", "--json"])).ok()?;
        let killed = v["restarts"].as_u64().unwrap_or(0) >= 1
            || v["reason"]
                .as_str()
                .is_some_and(|r| r.contains("out of memory"));
        killed.then_some(v)
    })
    .unwrap_or_else(|| {
        panic!(
            "the memory hog was not OOM-killed: {}",
            fleet.cli(&["workload", "show", "hog-mem"])
        )
    });
    eprintln!(
        "memory hog: state {}, restarts {}",
        oom["state"], oom["restarts"]
    );
    // The kill happened inside a container's own limit: the envelope slice counts an OOM kill
    // in its subtree (memory.events) but never hit its own limit (memory.events.local).
    let envelope = format!("/sys/fs/cgroup/lattice.slice/{slice}");
    let events = guest.ok(&format!(
        "cat '{envelope}/memory.events'; echo --; cat '{envelope}/memory.events.local'"
    ));
    let (subtree, local) = events.split_once("--").expect("two files");
    let oom_kills = |text: &str| -> u64 {
        text.lines()
            .find_map(|l| l.strip_prefix("oom_kill "))
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(0)
    };
    assert!(
        oom_kills(subtree) >= 1,
        "no OOM kill under the envelope: {events}"
    );
    assert_eq!(oom_kills(local), 0, "the envelope itself ran out: {events}");
    assert!(
        guest
            .ok("dmesg | grep -c 'Memory cgroup out of memory' || true")
            .trim()
            != "0",
        "the kernel logged no memory-cgroup OOM kill"
    );
    // The CPU hog: its own cgroup's usage over 5 s of the guest's clock.
    let cpu_cgroup = wait_for(WORKLOAD_TIMEOUT, Duration::from_secs(2), || {
        let pid = guest.ok(&format!(
            "docker ps --no-trunc --filter label=io.lattice.node={id} --format '{{{{.ID}}}} {{{{.Command}}}}' \
             | grep 'while :; do :; done' | cut -d' ' -f1 | head -n1 \
             | xargs -r docker inspect -f '{{{{.State.Pid}}}}'"
        ));
        let pid = pid.trim();
        if pid.is_empty() || pid == "0" {
            return None;
        }
        let line = guest.ok(&format!("cat /proc/{pid}/cgroup"));
        let path = line.trim().strip_prefix("0::")?.to_string();
        Some(format!("/sys/fs/cgroup{path}"))
    })
    .expect("the CPU hog runs");
    assert!(
        cpu_cgroup.starts_with(&format!("{envelope}/")),
        "the CPU hog is outside the envelope: {cpu_cgroup}"
    );
    let used = guest.ok(&format!(
        "a=$(awk '/^usage_usec/{{print $2}}' '{cpu_cgroup}/cpu.stat'); t0=$(cut -d' ' -f1 /proc/uptime); \
         sleep 5; b=$(awk '/^usage_usec/{{print $2}}' '{cpu_cgroup}/cpu.stat'); t1=$(cut -d' ' -f1 /proc/uptime); \
         echo \"$a $b $t0 $t1\""
    ));
    let f: Vec<f64> = used
        .split_whitespace()
        .filter_map(|x| x.parse().ok())
        .collect();
    assert_eq!(f.len(), 4, "{used}");
    let cores = (f[1] - f[0]) / 1e6 / (f[3] - f[2]);
    eprintln!("FIGURE CPU hog on the micro plan (0.1 core) in QEMU: {cores:.3} cores");
    assert!(
        (0.02..=0.15).contains(&cores),
        "the CPU hog used {cores:.3} cores; its plan allows 0.1"
    );
    // The fork bomb: the kernel refused a fork in its container's own scope, directly under
    // the envelope. Read from the kernel's log, which it writes once per cgroup at the first
    // refusal: busybox sh exits when a fork fails, so the container (and its scope) ends and
    // restarts, and its pids.events may be gone before it can be read.
    let bomb_ids = wait_for(WORKLOAD_TIMEOUT, Duration::from_secs(2), || {
        let ids = guest.ok(&format!(
            "docker ps -a --no-trunc --filter label=io.lattice.node={id} --format '{{{{.ID}}}} {{{{.Command}}}}' \
             | grep -F 'sleep 1000 &' | cut -d' ' -f1"
        ));
        let ids: Vec<String> = ids.lines().map(|l| l.trim().to_string()).collect();
        (!ids.is_empty()).then_some(ids)
    })
    .expect("the fork bomb was started");
    let limit = guest.ok(&format!(
        "docker inspect -f '{{{{.HostConfig.PidsLimit}}}}' {}",
        bomb_ids[0]
    ));
    assert_eq!(limit.trim(), "64", "the micro plan's task limit");
    let envelope_rel = envelope.trim_start_matches("/sys/fs/cgroup");
    let refused = wait_for(Duration::from_secs(90), Duration::from_secs(2), || {
        let log = guest.ok("dmesg | grep -F 'fork rejected by pids controller' || true");
        let ids = guest.ok(&format!(
            "docker ps -a --no-trunc --filter label=io.lattice.node={id} --format '{{{{.ID}}}} {{{{.Command}}}}' \
             | grep -F 'sleep 1000 &' | cut -d' ' -f1"
        ));
        log.lines()
            .find(|l| {
                ids.lines().any(|c| {
                    l.contains(&format!("{envelope_rel}/docker-{}.scope", c.trim()))
                })
            })
            .map(str::to_string)
    })
    .unwrap_or_else(|| {
        panic!(
            "the kernel never refused the fork bomb a fork in its own scope; its log:\n{}",
            guest.ok("dmesg | grep -F pids || true")
        )
    });
    eprintln!("fork bomb: {}", refused.trim());
    assert_eq!(guest.ssh("true").0, 0, "the node still forks");
    // Stop the bomb (it restarts on and on): the checks below measure the node, not the bomb.
    fleet.cli(&["delete", "hog-pids"]);
    // The rest of the node is unharmed.
    let web: serde_json::Value =
        serde_json::from_str(&fleet.cli(&["workload", "show", "web", "--json"])).unwrap();
    assert_eq!(web["state"], "running", "{web}");
    wifi_joins_from_the_config_partition(&guest);

    // latticed has run for longer than its watchdog interval without a restart: it fed it.
    let watchdog = Duration::from_secs(lattice_image::system::LATTICED_WATCHDOG_SECS.into());
    let up_for = || {
        let out = guest.ok(
            "echo $(cut -d' ' -f1 /proc/uptime) $(systemctl show -p ActiveEnterTimestampMonotonic --value latticed)",
        );
        let mut f = out.split_whitespace();
        let uptime: f64 = f.next().and_then(|v| v.parse().ok()).expect("uptime");
        let since_us: f64 = f.next().and_then(|v| v.parse().ok()).expect("active since");
        Duration::from_secs_f64((uptime - since_us / 1e6).max(0.0))
    };
    let lived = up_for();
    if lived < watchdog + Duration::from_secs(5) {
        std::thread::sleep(watchdog + Duration::from_secs(5) - lived);
    }
    let runs = guest.ok("systemctl show -p NRestarts -p ActiveState latticed");
    assert!(
        runs.lines().any(|l| l.trim() == "NRestarts=0")
            && runs.lines().any(|l| l.trim() == "ActiveState=active"),
        "latticed restarted (watchdog?) after {:?} up: {runs}\n{}",
        up_for(),
        guest
            .ssh("journalctl -u latticed --no-pager | tail -n 30")
            .1
    );

    // Reboot: the same node comes back (identity on the data partition). On by default;
    // `LATTICE_HW_REBOOT=0` skips it (a quicker local run).
    if std::env::var("LATTICE_HW_REBOOT").is_ok_and(|v| v == "0") {
        eprintln!("reboot check skipped (LATTICE_HW_REBOOT=0)");
        guest.kill();
        return;
    }
    // Reboot: the same node comes back (identity on the data partition).
    let before = Instant::now();
    let shutdown = guest.reboot(Duration::from_secs(180));
    eprintln!(
        "FIGURE orderly shutdown before the reset ({}): {:.1} s",
        guest.spec.accel.name(),
        shutdown.as_secs_f64()
    );
    wait_for(REGISTER_TIMEOUT, Duration::from_secs(2), || {
        (guest.ssh("systemctl is-active latticed").1.trim() == "active").then_some(())
    })
    .expect("latticed active again after reboot");
    let active_again = before.elapsed();
    // Where the boot spent its time (for the next person reading a slow figure).
    eprintln!(
        "boot after the reboot:\n{}",
        guest
            .ssh("systemd-analyze critical-chain latticed.service 2>&1 | head -n 16")
            .1
    );
    let nodes = wait_for(Duration::from_secs(120), Duration::from_secs(1), || {
        let n = fleet.nodes();
        let online = n
            .iter()
            .any(|x| x["online"] == true && x["last_seen_ms"].as_u64().is_some());
        online.then_some(n)
    })
    .expect("node online again");
    assert_eq!(
        nodes.len(),
        1,
        "a reboot must not make a new node: {nodes:?}"
    );
    assert_eq!(nodes[0]["id"].as_str(), Some(id.as_str()));
    assert!(guest
        .ok("cat /var/lib/latticed/registration.json")
        .contains(&id));
    let log = guest.ok("journalctl -b -u latticed --no-pager");
    assert!(log.contains("already registered"), "{log}");
    // The s3 workload is back on its volume, and the object acknowledged before the reboot is
    // there.
    let stored = wait_for(WORKLOAD_TIMEOUT, Duration::from_secs(3), || {
        let v: serde_json::Value =
            serde_json::from_str(&fleet.cli(&["workload", "show", "files", "--json"])).ok()?;
        if v["state"] != "running" {
            return None;
        }
        let out = try_aws(
            &fleet,
            &creds,
            &["s3", "cp", "s3://hw-test/before-reboot.txt", "-"],
            b"",
        );
        out.status
            .success()
            .then(|| String::from_utf8_lossy(&out.stdout).into_owned())
    })
    .unwrap_or_else(|| {
        panic!(
            "the s3 workload did not serve its object after the reboot: {}",
            fleet.cli(&["workload", "show", "files"])
        )
    });
    assert_eq!(stored, object, "the object changed across the reboot");
    eprintln!(
        "FIGURE reboot to latticed active again: {:.1} s",
        active_again.as_secs_f64()
    );
    eprintln!(
        "FIGURE reboot to the s3 object served again: {:.1} s",
        before.elapsed().as_secs_f64()
    );
    guest.kill();
}

const WIFI_SSID: &str = "lattice test";
const WIFI_PSK: &str = "correct horse battery";

/// Wi-Fi from the config partition, over real WPA2: two simulated radios (the kernel's
/// mac80211_hwsim) in the guest, one an access point with a DHCP server (wpa_supplicant in AP
/// mode and networkd, both on the image already), the other left to the image's own
/// `lattice-wifi@` unit, which must join with the provisioned passphrase and get an address.
fn wifi_joins_from_the_config_partition(guest: &Guest) {
    let started = Instant::now();
    guest.ok(&format!(
        "set -e; systemctl mask --runtime lattice-wifi@wlan1.service; \
         mkdir -p /run/systemd/network /run/test-ap; \
         printf '[Match]\\nName=wlan1\\n\\n[Network]\\nAddress=192.168.77.1/24\\nDHCPServer=yes\\n' \
           > /run/systemd/network/00-test-ap.network; \
         networkctl reload; \
         printf 'ctrl_interface=/run/test-ap\\nnetwork={{\\n ssid=\"{WIFI_SSID}\"\\n mode=2\\n frequency=2412\\n \
           key_mgmt=WPA-PSK\\n proto=RSN\\n pairwise=CCMP\\n group=CCMP\\n psk=\"{WIFI_PSK}\"\\n}}\\n' > /run/test-ap/ap.conf; \
         modprobe mac80211_hwsim radios=2; \
         for i in $(seq 50); do ip link show wlan1 >/dev/null 2>&1 && break; sleep 0.2; done; \
         wpa_supplicant -B -i wlan1 -c /run/test-ap/ap.conf -D nl80211"
    ));
    let joined = wait_for(Duration::from_secs(120), Duration::from_secs(2), || {
        let out = guest.ok(
            "wpa_cli -i wlan0 status 2>/dev/null | grep -E '^(wpa_state|ssid)=' || true; \
             ip -4 -o addr show dev wlan0 2>/dev/null || true",
        );
        (out.contains("wpa_state=COMPLETED") && out.contains("inet 192.168.77.")).then_some(out)
    })
    .unwrap_or_else(|| {
        panic!(
            "wlan0 did not join the test network; in the guest:\n{}",
            guest
                .ssh(
                    "systemctl status --no-pager 'lattice-wifi@*' ; journalctl -b --no-pager \
                     -u 'lattice-wifi@*' | tail -n 30; networkctl; ip addr"
                )
                .1
        )
    });
    assert!(joined.contains(&format!("ssid={WIFI_SSID}")), "{joined}");
    // Joined by the image's own unit (udev asked for it by the interface's name), and boot
    // waits for any one link, not for every managed one.
    assert_eq!(
        guest
            .ssh("systemctl is-active lattice-wifi@wlan0.service")
            .1
            .trim(),
        "active"
    );
    let wait_online = guest.ok("systemctl show -p ExecStart systemd-networkd-wait-online.service");
    assert!(wait_online.contains("--any"), "{wait_online}");
    eprintln!(
        "FIGURE Wi-Fi radio up to joined with an address (WPA2, mac80211_hwsim): {:.1} s",
        started.elapsed().as_secs_f64()
    );
    // The key stays in /run, the owner's alone, and the passphrase itself is nowhere in it.
    let conf = guest.ok(
        "stat -c '%a %U' /run/lattice-wifi/wlan0.conf; grep -c 'correct horse' /run/lattice-wifi/wlan0.conf || true",
    );
    assert_eq!(
        conf.split_whitespace().collect::<Vec<_>>(),
        ["600", "root", "0"],
        "{conf}"
    );
    // A cable wins: traffic leaves through the wired interface while both are up.
    let route = guest.ok("ip -4 route get 1.1.1.1");
    assert!(
        !route.contains("dev wlan0"),
        "Wi-Fi preferred to the cable: {route}"
    );
    // The test network is gone again (the rest of the test measures the node, not the radios).
    let _ = guest.ssh("pkill -f '[w]pa_supplicant -B -i wlan1'; systemctl stop lattice-wifi@wlan0.service; rmmod mac80211_hwsim");
}

/// The hobbyist's path: `lattice up --qemu-node IMAGE` runs the fleet, a local node and the
/// image in QEMU, and the guest joins the same fleet as the local node although the two reach
/// it by different addresses (127.0.0.1 and 10.0.2.2). Stopping `lattice up` powers the guest
/// off in order.
#[test]
fn lattice_up_boots_a_qemu_node_beside_the_local_one() {
    if !enabled("lattice_up_boots_a_qemu_node_beside_the_local_one") {
        return;
    }
    use std::io::{BufRead, BufReader};
    let image = cached_image();
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("up");
    let cli_config = dir.path().join("cli.toml");
    let port = || {
        std::net::TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .unwrap()
            .port()
            .to_string()
    };
    let (http, mqtt, apps_http, apps_https) = (port(), port(), port(), port());
    let log = dir.path().join("up.log");
    let started = Instant::now();
    let mut up = Command::new(lattice_hw_tests::workspace_bin("lattice"))
        .arg("up")
        .arg("--data")
        .arg(&data)
        .args(["--http", &format!("127.0.0.1:{http}")])
        .args(["--mqtt", &format!("127.0.0.1:{mqtt}")])
        .args(["--apps-http", &format!("127.0.0.1:{apps_http}")])
        .args(["--apps-https", &format!("127.0.0.1:{apps_https}")])
        .args(["--heartbeat-secs", "2", "--no-registry"])
        .arg("--latticed")
        .arg(lattice_hw_tests::workspace_bin("latticed"))
        .arg("--qemu-node")
        .arg(&image.raw)
        .env("LATTICE_CLI_CONFIG", &cli_config)
        .stdout(std::process::Stdio::piped())
        .stderr(std::fs::File::create(&log).unwrap())
        .spawn()
        .expect("spawn lattice up");
    let stdout = BufReader::new(up.stdout.take().unwrap());
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in stdout.lines().map_while(Result::ok) {
            eprintln!("up: {line}");
            let _ = tx.send(line);
        }
    });
    // Lossy: the firmware writes escape sequences that are not always UTF-8.
    let read = |p: &std::path::Path| {
        String::from_utf8_lossy(&std::fs::read(p).unwrap_or_default()).into_owned()
    };
    // The copy and its provisioning happen before "ready".
    loop {
        let line = rx
            .recv_timeout(Duration::from_secs(180))
            .unwrap_or_else(|_| panic!("lattice up did not get ready: {}", read(&log)));
        if line.starts_with("ready:") {
            break;
        }
    }
    let serial = data.join("qemu-node/serial.log");
    let nodes = || -> Vec<serde_json::Value> {
        let out = Command::new(lattice_hw_tests::workspace_bin("lattice"))
            .args(["nodes", "--json"])
            .env("LATTICE_CLI_CONFIG", &cli_config)
            .output()
            .unwrap();
        serde_json::from_slice(&out.stdout).unwrap_or_default()
    };
    let both = wait_for(REGISTER_TIMEOUT, Duration::from_secs(2), || {
        let n = nodes();
        let online = |owner: &str| n.iter().any(|v| v["owner"] == owner && v["online"] == true);
        (online("local") && online("qemu")).then_some(n)
    })
    .unwrap_or_else(|| {
        panic!(
            "the local and the QEMU node are not both online: {:?}\nlattice up:\n{}\nserial:\n{}",
            nodes(),
            read(&log),
            read(&serial)
        )
    });
    eprintln!(
        "FIGURE lattice up --qemu-node to both nodes online: {:.1} s",
        started.elapsed().as_secs_f64()
    );
    assert_eq!(both.len(), 2, "{both:?}");
    // The guest's own broker URL names the host as the guest sees it (else it could not be
    // online at all); its machine is the image's, not this host.
    let guest = both.iter().find(|v| v["owner"] == "qemu").unwrap();
    let inventory: serde_json::Value =
        serde_json::from_str(guest["inventory"].as_str().unwrap_or("{}")).unwrap();
    let host = std::fs::read_to_string("/proc/sys/kernel/hostname").unwrap();
    assert!(
        inventory["hostname"].is_string() && inventory["hostname"] != host.trim(),
        "{guest}"
    );
    // Stopping `lattice up` powers the guest off in order, and nothing is left running.
    let stopping = Instant::now();
    let term = Command::new("kill")
        .args(["-TERM", &up.id().to_string()])
        .status()
        .unwrap();
    assert!(term.success());
    let exited = wait_for(Duration::from_secs(200), Duration::from_secs(1), || {
        up.try_wait().unwrap()
    });
    assert!(exited.is_some(), "lattice up did not stop: {}", read(&log));
    eprintln!(
        "FIGURE lattice up stopped with its QEMU node powered off: {:.1} s",
        stopping.elapsed().as_secs_f64()
    );
    let console = read(&serial);
    assert!(
        console.contains("reboot: Power down"),
        "the guest was not powered off in order:\n{}",
        console
            .chars()
            .rev()
            .take(4000)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<String>()
    );
    let left = Command::new("pgrep")
        .args(["-f", &data.join("qemu-node").to_string_lossy()])
        .output()
        .unwrap();
    assert!(
        left.stdout.is_empty(),
        "QEMU still running: {}",
        String::from_utf8_lossy(&left.stdout)
    );
}
