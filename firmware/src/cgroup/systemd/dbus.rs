//! [`DbusSystemd`]: [`SystemdSlice`] over D-Bus (zbus), the real way to give systemd the
//! envelope's limits.
//!
//! Each call runs on a short-lived thread with its own current-thread tokio runtime and its own
//! bus connection: the [`CgroupManager`](super::super::CgroupManager) methods are synchronous
//! and are called both from async code and from blocking threads, and zbus must not be driven
//! from inside another runtime. Envelope changes are rare (start, a CPU cap change every few
//! seconds at most), so a connection per call costs nothing that matters and never goes stale
//! when dbus restarts.

use super::{PropertyValue, SystemdSlice, UnitProperty};
use crate::cgroup::CgroupError;
use zbus::zvariant::Value;

const DESTINATION: &str = "org.freedesktop.systemd1";
const PATH: &str = "/org/freedesktop/systemd1";
const MANAGER: &str = "org.freedesktop.systemd1.Manager";
/// The error systemd answers `GetUnit` with for a unit that is not loaded.
pub const NO_SUCH_UNIT: &str = "org.freedesktop.systemd1.NoSuchUnit";

/// systemd's manager on a bus: the system bus, or a given address (tests).
#[derive(Debug, Clone, Default)]
pub struct DbusSystemd {
    address: Option<String>,
}

impl DbusSystemd {
    /// systemd on the system bus.
    pub fn system() -> Self {
        DbusSystemd { address: None }
    }

    /// A manager at `address` (`unix:path=…`).
    pub fn at(address: impl Into<String>) -> Self {
        DbusSystemd {
            address: Some(address.into()),
        }
    }

    /// Calls `method` with `body`; the reply's error name (if any) is kept for the caller.
    fn call<B>(&self, method: &'static str, body: B) -> Result<(), CallError>
    where
        B: serde::Serialize + zbus::zvariant::DynamicType + Send,
    {
        let address = self.address.clone();
        std::thread::scope(|s| {
            s.spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .map_err(|e| CallError::Other(format!("runtime for D-Bus: {e}")))?;
                rt.block_on(async move {
                    let conn = match &address {
                        None => zbus::Connection::system().await,
                        Some(a) => match zbus::connection::Builder::address(a.as_str()) {
                            Ok(b) => b.build().await,
                            Err(e) => Err(e),
                        },
                    }
                    .map_err(|e| CallError::Other(format!("connecting to the system bus: {e}")))?;
                    conn.call_method(Some(DESTINATION), PATH, Some(MANAGER), method, &body)
                        .await
                        .map(|_| ())
                        .map_err(CallError::from)
                })
            })
            .join()
            .unwrap_or_else(|_| Err(CallError::Other("D-Bus call thread panicked".into())))
        })
    }
}

#[derive(Debug)]
enum CallError {
    /// systemd answered with a D-Bus error.
    Method {
        name: String,
        message: String,
    },
    Other(String),
}

impl From<zbus::Error> for CallError {
    fn from(e: zbus::Error) -> Self {
        match e {
            zbus::Error::MethodError(name, message, _) => CallError::Method {
                name: name.to_string(),
                message: message.unwrap_or_default(),
            },
            e => CallError::Other(e.to_string()),
        }
    }
}

fn failed(operation: &'static str, unit: &str, e: CallError) -> CgroupError {
    CgroupError::Systemd {
        operation,
        unit: unit.to_string(),
        message: match e {
            CallError::Method { name, message } => format!("{name}: {message}"),
            CallError::Other(m) => m,
        },
    }
}

/// The properties as D-Bus `a(sv)`.
pub fn encode(properties: &[UnitProperty]) -> Vec<(&'static str, Value<'static>)> {
    properties
        .iter()
        .map(|p| {
            let v = match &p.value {
                PropertyValue::U64(n) => Value::U64(*n),
                PropertyValue::Str(s) => Value::from(s.clone()),
                PropertyValue::Pids(pids) => Value::from(pids.clone()),
                PropertyValue::Bytes(bytes) => Value::from(bytes.clone()),
            };
            (p.name, v)
        })
        .collect()
}

impl SystemdSlice for DbusSystemd {
    fn unit_loaded(&self, unit: &str) -> Result<bool, CgroupError> {
        match self.call("GetUnit", (unit,)) {
            Ok(()) => Ok(true),
            Err(CallError::Method { name, .. }) if name == NO_SUCH_UNIT => Ok(false),
            Err(e) => Err(failed("GetUnit", unit, e)),
        }
    }

    fn start_transient_unit(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), CgroupError> {
        let aux: Vec<(&str, Vec<(&str, Value<'_>)>)> = Vec::new();
        self.call(
            "StartTransientUnit",
            (unit, "fail", encode(properties), aux),
        )
        .map_err(|e| failed("StartTransientUnit", unit, e))
    }

    fn set_unit_properties(
        &self,
        unit: &str,
        properties: &[UnitProperty],
    ) -> Result<(), CgroupError> {
        self.call("SetUnitProperties", (unit, true, encode(properties)))
            .map_err(|e| failed("SetUnitProperties", unit, e))
    }

    fn stop_unit(&self, unit: &str) -> Result<(), CgroupError> {
        self.call("StopUnit", (unit, "fail"))
            .map_err(|e| failed("StopUnit", unit, e))
    }
}
