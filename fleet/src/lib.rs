//! The Lattice fleet manager.
pub mod store;
