//! The stable hash of a [`WorkloadSpec`], stored on each container as
//! [`crate::runtime::LABEL_SPEC`]: a container whose label differs from the hash of the
//! desired spec was made from another spec and is replaced.
//!
//! The hash is SHA-256 over the spec's postcard encoding (the wire format, which only changes
//! with a protocol bump), prefixed by a version tag so a future change of the scheme is a
//! deliberate one. It must not change between two builds of latticed for the same spec:
//! otherwise an upgrade would recreate every container instead of adopting it.

use lattice_wire::msg::WorkloadSpec;
use sha2::{Digest, Sha256};

/// Domain and version tag mixed into every hash.
const TAG: &[u8] = b"lattice-spec-v1\0";

/// The hex SHA-256 of `spec` (64 characters).
pub fn spec_hash(spec: &WorkloadSpec) -> String {
    let mut hasher = Sha256::new();
    hasher.update(TAG);
    match postcard::to_allocvec(spec) {
        Ok(mut bytes) => {
            // Protocol 2 added `upstreams` as the last field. A spec without any hashes as it
            // did under protocol 1 (its empty list is the encoding's last byte, 0), so
            // upgrading latticed recreates no container that has none.
            if spec.upstreams.is_empty() && bytes.last() == Some(&0) {
                bytes.pop();
            }
            hasher.update(&bytes)
        }
        // postcard cannot fail on a struct of strings, numbers and vectors; should it ever,
        // the Debug form still covers every field deterministically within one build.
        Err(_) => hasher.update(format!("{spec:?}").as_bytes()),
    }
    hex::encode(hasher.finalize())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reconcile::tests::spec;
    use lattice_wire::msg::RestartPolicy;

    #[test]
    fn equal_specs_hash_equal_and_any_field_change_changes_it() {
        let a = spec("w-1");
        assert_eq!(spec_hash(&a), spec_hash(&a.clone()));
        assert_eq!(spec_hash(&a).len(), 64);
        let mut b = a.clone();
        b.env[0].1 = "2".to_string();
        assert_ne!(spec_hash(&a), spec_hash(&b));
        let mut c = a.clone();
        c.restart = RestartPolicy::Never;
        assert_ne!(spec_hash(&a), spec_hash(&c));
        let mut d = a.clone();
        d.ports.clear();
        assert_ne!(spec_hash(&a), spec_hash(&d));
        let mut e = a.clone();
        e.upstreams.push(lattice_wire::msg::UpstreamSpec {
            name: "w-2-80".into(),
            workload: "w-2".into(),
            port: 80,
            env: "X".into(),
        });
        assert_ne!(spec_hash(&a), spec_hash(&e));
    }

    #[test]
    fn hash_is_stable_across_builds() {
        // Pinned: if this changes, every node upgrading recreates all of its containers.
        assert_eq!(
            spec_hash(&spec("w-1")),
            "0846eb99f04e196acc5bec23e09bd35ee052393ecd59f88548a0f79874a54dc6",
            "the spec hash scheme changed"
        );
    }
}
