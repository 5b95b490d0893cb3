//! Conversions from the machine readings in [`crate::inventory`] to the wire types of
//! `lattice-wire` (structurally identical; kept apart so the reader has no wire dependency).

use crate::inventory;
use lattice_wire::msg;

impl From<inventory::Inventory> for msg::Inventory {
    fn from(i: inventory::Inventory) -> Self {
        msg::Inventory {
            hostname: i.hostname,
            cpu_model: i.cpu_model,
            cpu_count: i.cpu_count,
            memory_bytes: i.memory_bytes,
            disk_total_bytes: i.disk_total_bytes,
            disk_free_bytes: i.disk_free_bytes,
            kernel: i.kernel,
            arch: i.arch,
        }
    }
}

impl From<inventory::Usage> for msg::Usage {
    fn from(u: inventory::Usage) -> Self {
        msg::Usage {
            cpu_percent_x100: u.cpu_percent_x100,
            memory_used_bytes: u.memory_used_bytes,
            memory_total_bytes: u.memory_total_bytes,
            disk_used_bytes: u.disk_used_bytes,
            disk_total_bytes: u.disk_total_bytes,
            load1_x100: u.load1_x100,
            uptime_secs: u.uptime_secs,
        }
    }
}

/// The machine's inventory as the wire type.
pub fn read_inventory(
    data_dir: &std::path::Path,
) -> Result<msg::Inventory, inventory::InventoryError> {
    inventory::read_inventory(data_dir).map(Into::into)
}
