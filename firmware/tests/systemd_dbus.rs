//! The systemd envelope over a real D-Bus: a private `dbus-daemon` started by the test, and a
//! stand-in for systemd's manager served on it with zbus. What is checked is what systemd would
//! receive: method names, unit names, modes, and each property's name, D-Bus type and value
//! (systemd rejects a property sent with the wrong type). systemd's own behaviour is exercised
//! on the image in QEMU (hw-tests).
//!
//! Needs `dbus-daemon` (Debian's `dbus-daemon`, installed by `scripts/test`); skipped with a
//! printed reason without it.

use latticed::cgroup::systemd::dbus::{DbusSystemd, NO_SUCH_UNIT};
use latticed::cgroup::{CgroupManager, EnvelopeLimits, SystemdManager, ENVELOPE_CPU_WEIGHT};
use std::collections::HashSet;
use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use zbus::zvariant::{OwnedObjectPath, OwnedValue};

/// One call as the manager received it: method, unit, and (name, signature, value) of each
/// property.
#[derive(Debug, Clone, PartialEq)]
struct Received {
    method: &'static str,
    unit: String,
    extra: String,
    properties: Vec<(String, String, String)>,
}

#[derive(Debug, zbus::DBusError)]
#[zbus(prefix = "org.freedesktop.systemd1")]
enum SdError {
    #[zbus(error)]
    ZBus(zbus::Error),
    NoSuchUnit(String),
    UnitExists(String),
}

#[derive(Default, Clone)]
struct FakeSystemd {
    calls: Arc<Mutex<Vec<Received>>>,
    loaded: Arc<Mutex<HashSet<String>>>,
}

fn describe(props: &[(String, OwnedValue)]) -> Vec<(String, String, String)> {
    props
        .iter()
        .map(|(n, v)| (n.clone(), v.value_signature().to_string(), format!("{v:?}")))
        .collect()
}

fn job() -> OwnedObjectPath {
    OwnedObjectPath::try_from("/org/freedesktop/systemd1/job/1").unwrap()
}

#[zbus::interface(name = "org.freedesktop.systemd1.Manager")]
impl FakeSystemd {
    async fn get_unit(&self, name: String) -> Result<OwnedObjectPath, SdError> {
        if self.loaded.lock().unwrap().contains(&name) {
            Ok(OwnedObjectPath::try_from("/org/freedesktop/systemd1/unit/x").unwrap())
        } else {
            Err(SdError::NoSuchUnit(format!("Unit {name} not loaded.")))
        }
    }

    async fn start_transient_unit(
        &self,
        name: String,
        mode: String,
        properties: Vec<(String, OwnedValue)>,
        _aux: Vec<(String, Vec<(String, OwnedValue)>)>,
    ) -> Result<OwnedObjectPath, SdError> {
        if !self.loaded.lock().unwrap().insert(name.clone()) {
            return Err(SdError::UnitExists(format!("Unit {name} already exists.")));
        }
        self.calls.lock().unwrap().push(Received {
            method: "StartTransientUnit",
            unit: name,
            extra: mode,
            properties: describe(&properties),
        });
        Ok(job())
    }

    async fn set_unit_properties(
        &self,
        name: String,
        runtime: bool,
        properties: Vec<(String, OwnedValue)>,
    ) -> Result<(), SdError> {
        self.calls.lock().unwrap().push(Received {
            method: "SetUnitProperties",
            unit: name,
            extra: format!("runtime={runtime}"),
            properties: describe(&properties),
        });
        Ok(())
    }

    async fn stop_unit(&self, name: String, mode: String) -> Result<OwnedObjectPath, SdError> {
        self.loaded.lock().unwrap().remove(&name);
        self.calls.lock().unwrap().push(Received {
            method: "StopUnit",
            unit: name,
            extra: mode,
            properties: vec![],
        });
        Ok(job())
    }
}

/// A private bus; killed on drop.
struct Bus {
    daemon: Child,
    address: String,
    _dir: tempfile::TempDir,
}

impl Bus {
    fn start() -> Option<Bus> {
        let dir = tempfile::tempdir().unwrap();
        let listen = format!("unix:path={}", dir.path().join("bus").display());
        let mut daemon = match Command::new("dbus-daemon")
            .args([
                "--config-file=/usr/share/dbus-1/session.conf",
                "--nofork",
                "--print-address=1",
            ])
            .arg(format!("--address={listen}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
        {
            Ok(d) => d,
            Err(e) => {
                eprintln!("SKIPPED: dbus-daemon cannot be started ({e}); install dbus-daemon");
                return None;
            }
        };
        let mut line = String::new();
        BufReader::new(daemon.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        assert!(line.starts_with("unix:"), "dbus-daemon printed {line:?}");
        Some(Bus {
            daemon,
            address: line.trim().to_string(),
            _dir: dir,
        })
    }
}

impl Drop for Bus {
    fn drop(&mut self) {
        let _ = self.daemon.kill();
        let _ = self.daemon.wait();
    }
}

async fn serve(bus: &Bus, fake: FakeSystemd) -> zbus::Connection {
    zbus::connection::Builder::address(bus.address.as_str())
        .unwrap()
        .name("org.freedesktop.systemd1")
        .unwrap()
        .serve_at("/org/freedesktop/systemd1", fake)
        .unwrap()
        .build()
        .await
        .expect("serving the fake manager")
}

/// A stand-in manager served on `bus`, and a `SystemdManager` for node `n-1` talking to it.
async fn manager(
    bus: &Bus,
) -> (
    FakeSystemd,
    zbus::Connection,
    SystemdManager,
    tempfile::TempDir,
) {
    let fake = FakeSystemd::default();
    let server = serve(bus, fake.clone()).await;
    let root = tempfile::tempdir().unwrap();
    let mgr = SystemdManager::new(
        "n-1",
        root.path(),
        2,
        Box::new(DbusSystemd::at(bus.address.clone())),
    )
    .unwrap();
    (fake, server, mgr, root)
}

fn prop<'a>(r: &'a Received, name: &str) -> &'a (String, String, String) {
    r.properties
        .iter()
        .find(|(n, _, _)| n == name)
        .unwrap_or_else(|| panic!("{name} not sent in {r:?}"))
}

#[tokio::test(flavor = "multi_thread")]
async fn the_slice_is_made_changed_and_stopped_through_the_managers_methods() {
    let Some(bus) = Bus::start() else { return };
    let (fake, _server, mgr, _root) = manager(&bus).await;
    let limits = EnvelopeLimits::new(50, 1 << 30, 512).unwrap();

    // The manager's methods are synchronous and called from async code: as latticed does.
    mgr.ensure(&limits).unwrap();
    mgr.ensure(&limits).unwrap();
    mgr.set_cpu_percent(25).unwrap();
    mgr.add_process(4242).unwrap();
    mgr.remove().unwrap();

    let calls = fake.calls.lock().unwrap().clone();
    let slice = "lattice-n\\x2d1.slice";
    let methods: Vec<(&str, &str)> = calls.iter().map(|c| (c.method, c.unit.as_str())).collect();
    assert_eq!(
        methods,
        [
            ("StartTransientUnit", slice),
            ("SetUnitProperties", slice),
            ("SetUnitProperties", slice),
            ("StartTransientUnit", "lattice-n\\x2d1-pid4242.scope"),
            ("StopUnit", slice),
        ]
    );
    let start = &calls[0];
    assert_eq!(start.extra, "fail");
    // 50 % of 2 CPUs = one CPU second per second.
    assert_eq!(prop(start, "CPUQuotaPerSecUSec").1, "t");
    assert!(
        prop(start, "CPUQuotaPerSecUSec").2.contains("1000000"),
        "{start:?}"
    );
    assert_eq!(prop(start, "MemoryMax").1, "t");
    assert!(prop(start, "MemoryMax")
        .2
        .contains(&(1u64 << 30).to_string()));
    assert_eq!(prop(start, "MemorySwapMax").1, "t");
    assert_eq!(prop(start, "TasksMax").1, "t");
    // systemd's CPUWeight is a `t` (1..=10000, default 100): a `u` would be refused.
    let weight = prop(start, "CPUWeight");
    assert_eq!(weight.1, "t");
    assert!(
        weight.2.contains(&ENVELOPE_CPU_WEIGHT.to_string()),
        "{weight:?}"
    );
    assert_eq!(
        prop(&calls[1], "CPUWeight").1,
        "t",
        "sent again on later ensures"
    );
    assert_eq!(prop(start, "Description").1, "s");
    assert_eq!(calls[1].extra, "runtime=true");
    let cpu = prop(&calls[2], "CPUQuotaPerSecUSec");
    assert!(cpu.1 == "t" && cpu.2.contains("500000"), "{cpu:?}");
    assert_eq!(prop(&calls[3], "PIDs").1, "au");
    assert_eq!(prop(&calls[3], "Slice").1, "s");
    assert_eq!(calls[4].extra, "fail");
}

#[tokio::test(flavor = "multi_thread")]
async fn systemds_refusals_come_back_with_its_error_name() {
    let Some(bus) = Bus::start() else { return };
    let (fake, _server, mgr, _root) = manager(&bus).await;
    // A scope that exists already: systemd says UnitExists, and the error says so.
    mgr.add_process(7).unwrap();
    let err = mgr.add_process(7).unwrap_err().to_string();
    assert!(err.contains("org.freedesktop.systemd1.UnitExists"), "{err}");
    assert_eq!(
        fake.calls.lock().unwrap().len(),
        1,
        "the refused call changed nothing"
    );
    // GetUnit's NoSuchUnit is "not loaded", not an error: remove of nothing is fine.
    assert!(NO_SUCH_UNIT.ends_with("NoSuchUnit"));
    mgr.remove().unwrap();

    // No manager on the bus at all: a clear error, not a hang.
    drop(_server);
    let err = mgr.set_cpu_percent(10).unwrap_err().to_string();
    assert!(err.contains("SetUnitProperties"), "{err}");
}
