//! ListObjects(V2) over a bucket's sorted index: prefix, delimiter (common prefixes), a marker
//! to resume after, and a page size. Pure.

use std::collections::BTreeMap;
use std::ops::Bound;

use super::Entry;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListQuery {
    pub prefix: String,
    pub delimiter: Option<String>,
    /// Resume strictly after this key or common prefix (StartAfter, Marker, or the decoded
    /// continuation token).
    pub after: Option<String>,
    pub max_keys: usize,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ListPage {
    pub objects: Vec<(String, Entry)>,
    pub common_prefixes: Vec<String>,
    pub truncated: bool,
    /// The last key or common prefix returned, when truncated: the next page starts after it.
    pub next_marker: Option<String>,
}

pub fn list(objects: &BTreeMap<String, Entry>, q: &ListQuery) -> ListPage {
    let mut page = ListPage::default();
    if q.max_keys == 0 {
        return page;
    }
    let start = match &q.after {
        Some(after) if after.as_str() >= q.prefix.as_str() => Bound::Excluded(after.clone()),
        _ => Bound::Included(q.prefix.clone()),
    };
    let delimiter = q.delimiter.as_deref().filter(|d| !d.is_empty());
    let mut count = 0usize;
    let mut last: Option<String> = None;
    for (key, entry) in objects.range((start, Bound::Unbounded)) {
        if !key.starts_with(&q.prefix) {
            break; // sorted: no later key has the prefix
        }
        let rest = &key[q.prefix.len()..];
        let common = delimiter.and_then(|d| {
            rest.find(d)
                .map(|i| format!("{}{}", q.prefix, &rest[..i + d.len()]))
        });
        let item = common.clone().unwrap_or_else(|| key.clone());
        if q.after
            .as_ref()
            .is_some_and(|a| item.as_str() <= a.as_str())
            || last.as_deref() == Some(item.as_str())
        {
            continue; // a common prefix already returned (on this page or an earlier one)
        }
        if count == q.max_keys {
            page.truncated = true;
            page.next_marker = last;
            return page;
        }
        count += 1;
        match common {
            Some(p) => page.common_prefixes.push(p),
            None => page.objects.push((key.clone(), entry.clone())),
        }
        last = Some(item);
    }
    page
}

#[cfg(test)]
mod tests {
    use super::*;

    fn index(keys: &[&str]) -> BTreeMap<String, Entry> {
        keys.iter()
            .map(|k| {
                (
                    k.to_string(),
                    Entry {
                        size: 1,
                        etag: "e".into(),
                        last_modified_ms: 0,
                        blobs: None,
                    },
                )
            })
            .collect()
    }

    fn keys(p: &ListPage) -> Vec<&str> {
        p.objects.iter().map(|(k, _)| k.as_str()).collect()
    }

    #[test]
    fn prefix_and_delimiter_group_into_common_prefixes() {
        let idx = index(&[
            "a.txt",
            "photos/2023/x.jpg",
            "photos/2024/y.jpg",
            "photos/top.jpg",
            "videos/v.mp4",
        ]);
        let q = ListQuery {
            delimiter: Some("/".into()),
            max_keys: 1000,
            ..Default::default()
        };
        let p = list(&idx, &q);
        assert_eq!(keys(&p), vec!["a.txt"]);
        assert_eq!(p.common_prefixes, vec!["photos/", "videos/"]);
        let q = ListQuery {
            prefix: "photos/".into(),
            delimiter: Some("/".into()),
            max_keys: 1000,
            ..Default::default()
        };
        let p = list(&idx, &q);
        assert_eq!(keys(&p), vec!["photos/top.jpg"]);
        assert_eq!(p.common_prefixes, vec!["photos/2023/", "photos/2024/"]);
        assert!(!p.truncated);
    }

    #[test]
    fn pages_resume_after_the_marker_and_never_repeat_a_common_prefix() {
        let idx = index(&["a/1", "a/2", "a/3", "b", "c/1", "d"]);
        let mut seen = Vec::new();
        let mut after = None;
        loop {
            let q = ListQuery {
                delimiter: Some("/".into()),
                after: after.clone(),
                max_keys: 1,
                ..Default::default()
            };
            let p = list(&idx, &q);
            seen.extend(p.common_prefixes.iter().cloned());
            seen.extend(keys(&p).into_iter().map(String::from));
            if !p.truncated {
                break;
            }
            after = p.next_marker.clone();
            assert!(after.is_some());
        }
        assert_eq!(seen, vec!["a/", "b", "c/", "d"]);
    }

    #[test]
    fn pages_without_delimiter_cover_every_key_once() {
        let all: Vec<String> = (0..25).map(|i| format!("k{i:03}")).collect();
        let idx = index(&all.iter().map(String::as_str).collect::<Vec<_>>());
        let mut got = Vec::new();
        let mut after = None;
        let mut pages = 0;
        loop {
            let p = list(
                &idx,
                &ListQuery {
                    after: after.clone(),
                    max_keys: 10,
                    ..Default::default()
                },
            );
            pages += 1;
            got.extend(keys(&p).into_iter().map(String::from));
            if !p.truncated {
                break;
            }
            after = p.next_marker;
        }
        assert_eq!(got, all);
        assert_eq!(pages, 3);
    }

    #[test]
    fn start_after_before_the_prefix_is_ignored_and_zero_keys_is_empty() {
        let idx = index(&["x/1", "x/2", "y"]);
        let p = list(
            &idx,
            &ListQuery {
                prefix: "x/".into(),
                after: Some("a".into()),
                max_keys: 5,
                ..Default::default()
            },
        );
        assert_eq!(keys(&p), vec!["x/1", "x/2"]);
        let p = list(
            &idx,
            &ListQuery {
                max_keys: 0,
                ..Default::default()
            },
        );
        assert!(p.objects.is_empty() && !p.truncated);
    }
}
