//! `lattice-image`: the Lattice provider OS image.
//!
//! A provider writes the image to a USB stick or SD card (or a hobbyist boots it in QEMU) and
//! the machine joins the fleet by itself. This crate plans and builds that image from Debian
//! packages without loop mounts, writes the provisioning string into an existing image,
//! lists what an image contains, and boots it in QEMU. The `lattice image` subcommands are thin
//! wrappers around it.
//!
//! - [`arch`]: everything that depends on the CPU architecture.
//! - [`layout`]: the GPT layout (A/B roots, data, ESP, config), offsets and identifiers.
//! - [`boot`], [`system`]: the text of the files the image carries (GRUB, RAUC, fstab, units).
//! - [`plan`]: a build as a list of steps, free of I/O; [`build`] executes it through a
//!   [`tools::Runner`] (real programs, or a fake in tests).
//! - [`gpt`]: reads and checks the partition table of an existing image.
//! - [`provision`], [`inspect`], [`qemu`]: what the provider or hobbyist does with an image.

pub mod arch;
pub mod boot;
pub mod build;
pub mod gpt;
pub mod inspect;
pub mod layout;
pub mod plan;
pub mod provision;
pub mod qemu;
pub mod system;
pub mod tools;
