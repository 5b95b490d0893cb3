//! A node registered straight in the store (a token spent for it), for tests that run the
//! gateway in process. Included with `#[path]` by the tests that need it.

use lattice_fleet::store::{NewNode, Store, TokenRow};
use lattice_wire::IdentityKey;

/// Registers node `id` with identity `key` in `store`.
pub async fn register(store: &Store, id: &str, key: &IdentityKey) {
    let hash = format!("hash-{id}");
    store
        .insert_token(&TokenRow {
            id: format!("t-{id}"),
            secret_hash: hash.clone(),
            owner: None,
            max_uses: 1,
            uses: 0,
            expires_ms: u64::MAX / 2,
            created_ms: 1,
        })
        .await
        .unwrap();
    store
        .register_node(
            &hash,
            &NewNode {
                id: id.into(),
                identity_key: key.public().to_string(),
                encryption_key: "unused".into(),
                broker_secret_hash: "unused".into(),
                inventory: "{}".into(),
            },
            1,
        )
        .await
        .unwrap();
}
