//! Where the tenant comes from: a setting, and optionally a path into its JSON value.
//!
//! `app.current_tenant_id` reads the setting as it is. `request.jwt.claims:app_metadata.tenant_id`
//! reads the setting `request.jwt.claims` (where PostgREST puts the verified JWT's claims, as
//! JSON) and takes `app_metadata` -> `tenant_id` in it. A path is keys separated by dots; a key
//! with other characters is written in double quotes (`request.jwt.claims:"https://example.com/tenant"`,
//! a doubled `""` for a quote in it); a number picks an element of an array. What the path finds:
//! a string is the tenant as it is, a number its text, an array a list of tenants (for tables
//! protected with `tenant_list`); anything else, or nothing, is no tenant.

use std::fmt;

/// A tenant setting spec, parsed.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Spec {
    /// The setting's name (dotted, checked).
    pub(crate) name: String,
    /// Keys into the setting's JSON value; empty for the value as it is.
    pub(crate) path: Vec<String>,
}

#[derive(Debug, PartialEq)]
pub(crate) struct SpecError(pub(crate) String);

impl fmt::Display for SpecError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

fn valid_name(name: &str) -> bool {
    name.contains('.')
        && !name.starts_with('.')
        && !name.ends_with('.')
        && !name.contains("..")
        && name
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '$')
}

/// Parses `name` or `name:path`.
pub(crate) fn parse(text: &str) -> Result<Spec, SpecError> {
    let (name, path) = match text.split_once(':') {
        Some((n, p)) => (n, Some(p)),
        None => (text, None),
    };
    if !valid_name(name) {
        return Err(SpecError(format!(
            "\"{name}\" is not a custom setting name (letters, digits and underscores, with a dot)"
        )));
    }
    let path = match path {
        None => Vec::new(),
        Some(p) => parse_path(p)?,
    };
    Ok(Spec {
        name: name.to_string(),
        path,
    })
}

fn parse_path(p: &str) -> Result<Vec<String>, SpecError> {
    let bad = |why: &str| SpecError(format!("bad JSON path \"{p}\": {why}"));
    let mut keys = Vec::new();
    let mut chars = p.chars().peekable();
    loop {
        let mut key = String::new();
        if chars.peek() == Some(&'"') {
            chars.next();
            loop {
                match chars.next() {
                    None => return Err(bad("unterminated quote")),
                    Some('"') if chars.peek() == Some(&'"') => {
                        chars.next();
                        key.push('"');
                    }
                    Some('"') => break,
                    Some(c) => key.push(c),
                }
            }
            if key.is_empty() {
                return Err(bad("empty key"));
            }
        } else {
            while let Some(&c) = chars.peek() {
                if c == '.' {
                    break;
                }
                if !(c.is_ascii_alphanumeric() || c == '_' || c == '$' || c == '-') {
                    return Err(bad(
                        "quote a key with other characters than letters, digits, _ $ -",
                    ));
                }
                key.push(c);
                chars.next();
            }
            if key.is_empty() {
                return Err(bad("empty key"));
            }
        }
        keys.push(key);
        match chars.next() {
            None => return Ok(keys),
            Some('.') => continue,
            Some(_) => return Err(bad("a quoted key must be followed by a dot or the end")),
        }
    }
}

/// What a spec finds in a setting's value.
#[derive(Debug, PartialEq)]
pub(crate) enum Found {
    None,
    One(Vec<u8>),
    Many(Vec<Vec<u8>>),
}

fn scalar(v: &serde_json::Value) -> Option<Vec<u8>> {
    match v {
        serde_json::Value::String(s) => Some(s.as_bytes().to_vec()),
        serde_json::Value::Number(n) => Some(n.to_string().into_bytes()),
        _ => None,
    }
}

/// The tenant (or tenants) in a setting's text. Without a path: the text itself; with one: the
/// value at the path in the text's JSON (text that is not JSON finds nothing). An empty text, an
/// empty string, or an empty array finds nothing.
pub(crate) fn find(raw: &[u8], path: &[String]) -> Found {
    if raw.is_empty() {
        return Found::None;
    }
    if path.is_empty() {
        return Found::One(raw.to_vec());
    }
    let Ok(json) = serde_json::from_slice::<serde_json::Value>(raw) else {
        return Found::None;
    };
    let mut at = &json;
    for key in path {
        let next = match at {
            serde_json::Value::Object(m) => m.get(key),
            serde_json::Value::Array(a) => key.parse::<usize>().ok().and_then(|i| a.get(i)),
            _ => None,
        };
        match next {
            Some(v) => at = v,
            None => return Found::None,
        }
    }
    match at {
        serde_json::Value::Array(items) => {
            let all: Vec<Vec<u8>> = items.iter().filter_map(scalar).collect();
            if all.is_empty() {
                Found::None
            } else {
                Found::Many(all)
            }
        }
        v => match scalar(v) {
            Some(s) if !s.is_empty() => Found::One(s),
            _ => Found::None,
        },
    }
}

/// A list of tenants in a setting: what `find` found, where a single text is split at commas
/// (`a,b,c`) or read as a JSON array (`["a","b"]`). Empty items are dropped.
pub(crate) fn list(found: Found) -> Vec<Vec<u8>> {
    match found {
        Found::None => Vec::new(),
        Found::Many(v) => v,
        Found::One(text) => {
            let trimmed = text.trim_ascii();
            if trimmed.first() == Some(&b'[') {
                if let Ok(serde_json::Value::Array(items)) =
                    serde_json::from_slice::<serde_json::Value>(trimmed)
                {
                    return items
                        .iter()
                        .filter_map(scalar)
                        .filter(|s| !s.is_empty())
                        .collect();
                }
            }
            trimmed
                .split(|b| *b == b',')
                .map(|s| s.trim_ascii().to_vec())
                .filter(|s| !s.is_empty())
                .collect()
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn specs_parse() {
        assert_eq!(
            parse("app.current_tenant_id").unwrap(),
            Spec {
                name: "app.current_tenant_id".into(),
                path: vec![]
            }
        );
        assert_eq!(
            parse("request.jwt.claims:app_metadata.tenant_id")
                .unwrap()
                .path,
            vec!["app_metadata", "tenant_id"]
        );
        assert_eq!(
            parse(r#"request.jwt.claims:"https://x.io/t""q".0"#)
                .unwrap()
                .path,
            vec![r#"https://x.io/t"q"#, "0"]
        );
        for bad in [
            "app",
            "app.x:",
            "app.x:a..b",
            "app.x:\"a",
            "app.x:a b",
            "search_path",
            "a.b;c",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn values_are_found() {
        let claims =
            br#"{"sub":"u1","app_metadata":{"tenant_id":"acme","orgs":["a","b",7]},"n":42}"#;
        let p = |s: &str| parse(&format!("x.y:{s}")).unwrap().path;
        assert_eq!(
            find(claims, &p("app_metadata.tenant_id")),
            Found::One(b"acme".to_vec())
        );
        assert_eq!(find(claims, &p("n")), Found::One(b"42".to_vec()));
        assert_eq!(
            find(claims, &p("app_metadata.orgs.1")),
            Found::One(b"b".to_vec())
        );
        assert_eq!(
            find(claims, &p("app_metadata.orgs")),
            Found::Many(vec![b"a".to_vec(), b"b".to_vec(), b"7".to_vec()])
        );
        assert_eq!(find(claims, &p("missing")), Found::None);
        assert_eq!(find(claims, &p("app_metadata")), Found::None);
        assert_eq!(find(b"not json", &p("a")), Found::None);
        assert_eq!(find(b"", &[]), Found::None);
        assert_eq!(find(b"acme", &[]), Found::One(b"acme".to_vec()));
    }

    #[test]
    fn lists_split() {
        assert_eq!(
            list(Found::One(b" a, b ,,c ".to_vec())),
            vec![b"a".to_vec(), b"b".to_vec(), b"c".to_vec()]
        );
        assert_eq!(
            list(Found::One(br#"["a", 2]"#.to_vec())),
            vec![b"a".to_vec(), b"2".to_vec()]
        );
        assert!(list(Found::None).is_empty());
        assert!(list(Found::One(b" , ".to_vec())).is_empty());
    }
}
