//! Accounts, API tokens and the audit log, on both backends.

use super::super::*;
use super::{postgres, sqlite};
use crate::api::Role;

on_both!(
    emails_are_unique_and_hashes_stay_in_the_store,
    tokens_resolve_until_expiry_or_disable_and_delete_is_scoped,
    audit_filters_and_pages_never_overlap,
    expired_and_surplus_login_tokens_are_pruned,
);

fn account(id: &str, email: &str, role: Role) -> AccountRow {
    AccountRow {
        id: id.into(),
        email: email.into(),
        name: id.into(),
        role,
        password_hash: format!("$argon2id$hash-of-{id}"),
        created_ms: 1,
        disabled: false,
    }
}

fn api_token(id: &str, account: &str, hash: &str, expires_ms: u64) -> ApiTokenRow {
    ApiTokenRow {
        id: id.into(),
        account_id: account.into(),
        name: "t".into(),
        secret_hash: hash.into(),
        created_ms: 1,
        expires_ms,
    }
}

async fn emails_are_unique_and_hashes_stay_in_the_store(s: Store) {
    assert!(s
        .create_account(&account("a-1", "ann@x.org", Role::Consumer))
        .await
        .unwrap());
    assert!(!s
        .create_account(&account("a-2", "ann@x.org", Role::Provider))
        .await
        .unwrap());
    let a = s.account_by_email("ann@x.org").await.unwrap().unwrap();
    assert_eq!((a.id.as_str(), a.role), ("a-1", Role::Consumer));
    assert_eq!(a.password_hash, "$argon2id$hash-of-a-1");
    let json = serde_json::to_string(&a).unwrap();
    assert!(!json.contains("argon2"), "{json}");
    assert_eq!(s.accounts().await.unwrap().len(), 1);
    assert!(s.account("a-2").await.unwrap().is_none());
}

async fn tokens_resolve_until_expiry_or_disable_and_delete_is_scoped(s: Store) {
    s.create_account(&account("a-1", "ann@x.org", Role::Provider))
        .await
        .unwrap();
    s.create_account(&account("a-2", "bob@x.org", Role::Consumer))
        .await
        .unwrap();
    s.insert_api_token(&api_token("k-1", "a-1", "h1", 1000))
        .await
        .unwrap();
    s.insert_api_token(&api_token("k-2", "a-2", "h2", 1000))
        .await
        .unwrap();
    assert_eq!(
        s.token_principal("h1", 999).await.unwrap(),
        Some(("a-1".to_string(), Role::Provider))
    );
    assert_eq!(s.token_principal("h1", 1000).await.unwrap(), None);
    assert_eq!(s.token_principal("nope", 1).await.unwrap(), None);
    // Scoped: a-2 can neither see nor delete a-1's token.
    let mine = s.api_tokens(Some("a-2")).await.unwrap();
    assert_eq!(
        mine.iter().map(|t| t.id.as_str()).collect::<Vec<_>>(),
        ["k-2"]
    );
    assert!(s
        .delete_api_token("k-1", Some("a-2"))
        .await
        .unwrap()
        .is_none());
    assert!(s.token_principal("h1", 1).await.unwrap().is_some());
    assert_eq!(s.api_tokens(None).await.unwrap().len(), 2);
    let gone = s.delete_api_token("k-1", Some("a-1")).await.unwrap();
    assert_eq!(gone.map(|t| t.id), Some("k-1".into()));
    assert_eq!(s.token_principal("h1", 1).await.unwrap(), None);
    assert!(s.delete_api_token("k-2", None).await.unwrap().is_some());
    s.insert_api_token(&api_token("k-3", "a-2", "h3", 1000))
        .await
        .unwrap();
    // A role change shows in the next lookup (also after a lookup this process may have
    // remembered); a disabled account's tokens stop working.
    assert_eq!(
        s.token_principal("h3", 1).await.unwrap(),
        Some(("a-2".to_string(), Role::Consumer))
    );
    let a2 = s
        .update_account("a-2", Some(Role::Provider), None)
        .await
        .unwrap();
    assert_eq!(
        a2.map(|a| (a.role, a.disabled)),
        Some((Role::Provider, false))
    );
    assert_eq!(
        s.token_principal("h3", 1).await.unwrap(),
        Some(("a-2".to_string(), Role::Provider))
    );
    s.update_account("a-2", None, Some(true)).await.unwrap();
    assert_eq!(s.token_principal("h3", 1).await.unwrap(), None);
    assert!(s
        .update_account("a-9", None, Some(true))
        .await
        .unwrap()
        .is_none());
}

async fn audit_filters_and_pages_never_overlap(s: Store) {
    for i in 0..25u64 {
        s.insert_audit(&AuditEntry {
            id: format!("au-{i:02}"),
            // Several entries share a millisecond: pages must still neither skip nor repeat.
            at_ms: 100 + i / 3,
            actor: if i % 2 == 0 { "a-1" } else { "a-2" }.into(),
            action: if i % 5 == 0 {
                "login.failure"
            } else {
                "login.success"
            }
            .into(),
            target: "x".into(),
            detail: String::new(),
        })
        .await
        .unwrap();
    }
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let page = s
            .audit(&AuditFilter {
                before: before.clone(),
                limit: 4,
                ..AuditFilter::default()
            })
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        let last = page.last().unwrap();
        before = Some((last.at_ms, last.id.clone()));
        seen.extend(page.into_iter().map(|e| e.id));
    }
    let mut want: Vec<String> = (0..25).map(|i| format!("au-{i:02}")).collect();
    want.reverse();
    assert_eq!(seen, want, "newest first, each entry once");
    let f = |actor: Option<&str>, action: Option<&str>, since, until| AuditFilter {
        actor: actor.map(Into::into),
        action: action.map(Into::into),
        since_ms: since,
        until_ms: until,
        before: None,
        limit: 100,
    };
    let a1 = s.audit(&f(Some("a-1"), None, None, None)).await.unwrap();
    assert_eq!(a1.len(), 13);
    assert!(a1.iter().all(|e| e.actor == "a-1"));
    let failures = s
        .audit(&f(Some("a-1"), Some("login.failure"), None, None))
        .await
        .unwrap();
    // i in {0, 10, 20}
    assert_eq!(failures.len(), 3, "{failures:?}");
    let window = s.audit(&f(None, None, Some(101), Some(103))).await.unwrap();
    assert_eq!(window.len(), 6);
    assert!(window.iter().all(|e| (101..103).contains(&e.at_ms)));
}

async fn expired_and_surplus_login_tokens_are_pruned(s: Store) {
    s.create_account(&account("a-1", "ann@x.org", Role::Consumer))
        .await
        .unwrap();
    s.create_account(&account("a-2", "bob@x.org", Role::Consumer))
        .await
        .unwrap();
    for i in 0..5u64 {
        let mut t = api_token(&format!("k-l{i}"), "a-1", &format!("hl{i}"), 1000);
        t.name = "login".into();
        t.created_ms = 10 + i;
        s.insert_api_token(&t).await.unwrap();
    }
    s.insert_api_token(&api_token("k-ci", "a-1", "hci", 1000))
        .await
        .unwrap();
    s.insert_api_token(&api_token("k-old", "a-1", "hold", 50))
        .await
        .unwrap();
    let mut bobs = api_token("k-b", "a-2", "hb", 50);
    bobs.name = "login".into();
    s.insert_api_token(&bobs).await.unwrap();
    assert_eq!(s.count_api_tokens("a-1", "login").await.unwrap(), 2);
    // Keep the 2 newest login tokens; drop the expired one; leave other accounts alone.
    assert_eq!(s.prune_api_tokens("a-1", "login", 2, 100).await.unwrap(), 4);
    let mut left: Vec<String> = s
        .api_tokens(Some("a-1"))
        .await
        .unwrap()
        .into_iter()
        .map(|t| t.id)
        .collect();
    left.sort();
    assert_eq!(left, ["k-ci", "k-l3", "k-l4"]);
    assert_eq!(s.api_tokens(Some("a-2")).await.unwrap().len(), 1);
    // A new password takes every token of that account with it, and only of that account.
    assert!(s.set_password("a-1", "$argon2id$new").await.unwrap());
    assert!(s.api_tokens(Some("a-1")).await.unwrap().is_empty());
    assert_eq!(s.api_tokens(Some("a-2")).await.unwrap().len(), 1);
    let a = s.account("a-1").await.unwrap().unwrap();
    assert_eq!(a.password_hash, "$argon2id$new");
    assert!(!s.set_password("a-9", "x").await.unwrap());
}
