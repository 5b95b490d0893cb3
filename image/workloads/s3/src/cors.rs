//! A bucket's CORS configuration and how requests match it (S3's rules): the first rule whose
//! origin pattern, method and (for a preflight) every requested header match decides the
//! answer. Origin and header patterns may hold one `*` wildcard. Pure logic; the HTTP side is in
//! `server`.

use serde::{Deserialize, Serialize};

/// One CORSRule, as stored in the bucket's metadata.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct CorsRule {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub id: Option<String>,
    pub allowed_origins: Vec<String>,
    pub allowed_methods: Vec<String>,
    #[serde(default)]
    pub allowed_headers: Vec<String>,
    #[serde(default)]
    pub expose_headers: Vec<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_age_seconds: Option<i32>,
}

const METHODS: [&str; 5] = ["GET", "PUT", "HEAD", "POST", "DELETE"];

/// Checks a configuration as S3 does on PutBucketCors; the error names the bad rule.
pub fn validate(rules: &[CorsRule]) -> Result<(), String> {
    if rules.is_empty() {
        return Err("a CORS configuration needs at least one rule".into());
    }
    if rules.len() > 100 {
        return Err(format!("{} CORS rules; S3 allows at most 100", rules.len()));
    }
    for (i, rule) in rules.iter().enumerate() {
        if rule.allowed_origins.is_empty() || rule.allowed_methods.is_empty() {
            return Err(format!(
                "CORS rule {i}: AllowedOrigin and AllowedMethod are required"
            ));
        }
        for m in &rule.allowed_methods {
            if !METHODS.contains(&m.as_str()) {
                return Err(format!(
                    "CORS rule {i}: unsupported AllowedMethod {m:?} (GET, PUT, HEAD, POST, DELETE)"
                ));
            }
        }
        for o in rule.allowed_origins.iter().chain(&rule.allowed_headers) {
            if o.matches('*').count() > 1 {
                return Err(format!("CORS rule {i}: {o:?} holds more than one wildcard"));
            }
        }
    }
    Ok(())
}

/// `pattern` with at most one `*` against `value`; case-insensitive when `fold` (headers).
fn wildcard_match(pattern: &str, value: &str, fold: bool) -> bool {
    let (p, v) = if fold {
        (pattern.to_ascii_lowercase(), value.to_ascii_lowercase())
    } else {
        (pattern.into(), value.into())
    };
    match p.split_once('*') {
        None => p == v,
        Some((head, tail)) => {
            v.len() >= head.len() + tail.len() && v.starts_with(head) && v.ends_with(tail)
        }
    }
}

/// The rule that allows `origin` to use `method` with `request_headers` (preflight's
/// `Access-Control-Request-Headers`; empty for a simple request).
pub fn find_rule<'a>(
    rules: &'a [CorsRule],
    origin: &str,
    method: &str,
    request_headers: &[&str],
) -> Option<&'a CorsRule> {
    rules.iter().find(|rule| {
        rule.allowed_origins
            .iter()
            .any(|o| wildcard_match(o, origin, false))
            && rule
                .allowed_methods
                .iter()
                .any(|m| m.eq_ignore_ascii_case(method))
            && request_headers.iter().all(|h| {
                rule.allowed_headers
                    .iter()
                    .any(|p| wildcard_match(p, h, true))
            })
    })
}

/// The `Access-Control-*` headers of an answer allowed by `rule`.
pub fn allow_headers(
    rule: &CorsRule,
    origin: &str,
    preflight: Option<(&str, &[&str])>,
) -> Vec<(&'static str, String)> {
    let any_origin = rule.allowed_origins.iter().any(|o| o == "*");
    let mut out = vec![(
        "access-control-allow-origin",
        if any_origin {
            "*".to_owned()
        } else {
            origin.to_owned()
        },
    )];
    if !any_origin {
        out.push(("vary", "Origin".to_owned()));
    }
    match preflight {
        Some((method, headers)) => {
            out.push(("access-control-allow-methods", method.to_ascii_uppercase()));
            if !headers.is_empty() {
                out.push(("access-control-allow-headers", headers.join(", ")));
            }
            if let Some(age) = rule.max_age_seconds {
                out.push(("access-control-max-age", age.to_string()));
            }
        }
        None => {
            if !rule.expose_headers.is_empty() {
                out.push((
                    "access-control-expose-headers",
                    rule.expose_headers.join(", "),
                ));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rule(origins: &[&str], methods: &[&str], headers: &[&str]) -> CorsRule {
        CorsRule {
            id: None,
            allowed_origins: origins.iter().map(|s| s.to_string()).collect(),
            allowed_methods: methods.iter().map(|s| s.to_string()).collect(),
            allowed_headers: headers.iter().map(|s| s.to_string()).collect(),
            expose_headers: vec!["ETag".into()],
            max_age_seconds: Some(600),
        }
    }

    #[test]
    fn origin_method_and_headers_must_all_match() {
        let rules = vec![rule(
            &["https://console.example"],
            &["PUT", "GET"],
            &["content-type", "x-amz-*"],
        )];
        assert!(find_rule(
            &rules,
            "https://console.example",
            "PUT",
            &["Content-Type", "x-amz-date"]
        )
        .is_some());
        assert!(find_rule(&rules, "https://evil.example", "PUT", &[]).is_none());
        assert!(find_rule(&rules, "https://console.example", "DELETE", &[]).is_none());
        assert!(find_rule(&rules, "https://console.example", "PUT", &["authorization"]).is_none());
    }

    #[test]
    fn wildcards_in_origins() {
        let rules = vec![rule(&["https://*.example.com"], &["GET"], &[])];
        assert!(find_rule(&rules, "https://app.example.com", "GET", &[]).is_some());
        assert!(find_rule(&rules, "https://example.org", "GET", &[]).is_none());
        let star = [rule(&["*"], &["GET"], &["*"])];
        let h = allow_headers(&star[0], "https://x", Some(("GET", &["range"])));
        assert!(h.contains(&("access-control-allow-origin", "*".into())));
        assert!(h.contains(&("access-control-max-age", "600".into())));
    }

    #[test]
    fn validation_names_the_bad_rule() {
        assert!(validate(&[]).is_err());
        let err =
            validate(&[rule(&["*"], &["GET"], &[]), rule(&["*"], &["PATCH"], &[])]).unwrap_err();
        assert!(err.contains("rule 1") && err.contains("PATCH"), "{err}");
        assert_eq!(validate(&[rule(&["*"], &["GET"], &[])]), Ok(()));
    }
}
