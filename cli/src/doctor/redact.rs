//! Redaction of what goes into a `--bundle`: private keys, tokens, passwords and certificates
//! (PEM or base64), wherever they appear: kubeconfig, state, logs. Public keys named by the
//! caller stay (they identify peers and are no secret).

use std::sync::LazyLock;

use regex::Regex;
use serde_yaml_ng::Value;

/// What replaces a secret.
pub const REDACTED: &str = "REDACTED";

static PEM: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(?s)-----BEGIN ([A-Z0-9 ]+)-----.*?(-----END [A-Z0-9 ]+-----|\z)").unwrap()
});
/// `key: value`, `key=value`, `"key": "value"` for the names secrets go by.
static FIELD: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(
        r#"(?i)("?[a-z0-9_.-]*(?:token|password|passwd|pwd|secret|private[_-]?key|preshared[_-]?key|api[_-]?key|access[_-]?key|credential|client-key-data|client-certificate-data|certificate-authority-data|cookie)[a-z0-9_.-]*"?[ \t]*[:=][ \t]*)("?)([^"\s,}\[{][^"\s,}]*)"#,
    )
    .unwrap()
});
/// `scheme://user:password@host` and `scheme://token@host`: the whole user info goes (a
/// user name in a URL is often a token itself), up to the LAST `@` before the path as Go's
/// net/url reads it (`http://u:p@ss@proxy` has the password `p@ss`).
static URL_USERINFO: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b([a-z][a-z0-9+.-]*://)[^/\s]*@").unwrap());
static AUTH_HEADER: LazyLock<Regex> =
    LazyLock::new(|| Regex::new(r"(?i)\b(bearer|basic)(\s+)[A-Za-z0-9\-._~+/]+=*").unwrap());
static JWT: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"eyJ[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]{4,}\.[A-Za-z0-9_-]*").unwrap()
});
/// Base64 of `-----BEGIN` (certificate or key data without its field name).
static PEM_B64: LazyLock<Regex> = LazyLock::new(|| Regex::new(r"LS0tLS1C[A-Za-z0-9+/=]+").unwrap());
/// A 32-byte key in base64 (WireGuard's format) or hex (its UAPI's), not inside a longer
/// base64 or hex run (the regex crate has no look-behind: group 1 takes the character before).
static KEY32: LazyLock<Regex> = LazyLock::new(|| {
    Regex::new(r"(^|[^A-Za-z0-9+/_])([A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=|[0-9a-fA-F]{64}\b)")
        .unwrap()
});

/// Redacts `text`, keeping the keys of `public` (base64) readable.
pub fn redact(text: &str, public: &[String]) -> String {
    let s = PEM.replace_all(text, "-----REDACTED $1-----");
    // A file's path or name (`tokenFile`, `password_path`) is no secret and tells where to look.
    let s = FIELD.replace_all(&s, |c: &regex::Captures| {
        let name = c[1]
            .trim_end_matches([' ', '\t', ':', '=', '"'])
            .to_ascii_lowercase();
        match name.ends_with("file") || name.ends_with("path") {
            true => c[0].to_string(),
            false => format!("{}{}{REDACTED}", &c[1], &c[2]),
        }
    });
    let s = URL_USERINFO.replace_all(&s, format!("${{1}}{REDACTED}@").as_str());
    let s = AUTH_HEADER.replace_all(&s, format!("${{1}}${{2}}{REDACTED}").as_str());
    let s = JWT.replace_all(&s, REDACTED);
    let s = PEM_B64.replace_all(&s, REDACTED);
    KEY32
        .replace_all(&s, |c: &regex::Captures| {
            let k = &c[2];
            match public.iter().any(|p| p == k) {
                true => c[0].to_string(),
                false => format!("{}{REDACTED}", &c[1]),
            }
        })
        .into_owned()
}

/// A kubeconfig: every credential under `users[].user` is blanked by structure (what is kept
/// says which auth method and which exec plugin run, and nothing more), then the text pass runs.
/// A kubeconfig whose structure cannot be read (not YAML, not a mapping, `users` not a list)
/// is left out, a note in its place: the text pass alone would keep exec arguments in clear.
pub fn kubeconfig(text: &str, public: &[String]) -> String {
    let left_out = |why: &str| {
        format!(
            "# kubeconfig left out of the bundle: {why}, so its credentials could not be found to redact\n"
        )
    };
    let mut doc = match serde_yaml_ng::from_str::<Value>(text) {
        Ok(doc) if doc.is_mapping() => doc,
        Ok(_) => return left_out("it is not a YAML mapping"),
        Err(e) => return left_out(&format!("it is not YAML kwg can read ({e})")),
    };
    match doc.get_mut("users") {
        None | Some(Value::Null) => {}
        Some(Value::Sequence(users)) => {
            for u in users {
                if let Some(user) = u.get_mut("user") {
                    user_entry(user);
                }
            }
        }
        Some(_) => return left_out("its users is not a list"),
    }
    match serde_yaml_ng::to_string(&doc) {
        Ok(text) => redact(&text, public),
        Err(e) => left_out(&format!("it could not be written back ({e})")),
    }
}

fn user_entry(user: &mut Value) {
    let Some(m) = user.as_mapping_mut() else {
        return blank(user);
    };
    for (k, v) in m.iter_mut() {
        match k.as_str().unwrap_or_default() {
            // Paths and the user's name: no secret, and they tell which method is used.
            "username" | "client-certificate" | "client-key" | "tokenFile" => {}
            "exec" => exec(v),
            "auth-provider" => keep_only(v, &["name"]),
            _ => blank(v),
        }
    }
}

fn exec(v: &mut Value) {
    let Some(m) = v.as_mapping_mut() else {
        return blank(v);
    };
    for (k, v) in m.iter_mut() {
        match k.as_str().unwrap_or_default() {
            "command" | "apiVersion" | "installHint" | "interactiveMode" | "provideClusterInfo" => {
            }
            // Every argument: a secret hides behind any flag (`-p`) or none (a positional
            // token); how many there are still shows.
            "args" => blank(v),
            "env" => {
                for e in v.as_sequence_mut().into_iter().flatten() {
                    keep_only(e, &["name"]);
                }
            }
            _ => blank(v),
        }
    }
}

/// Blanks every value of the mapping `v` but those of `keep`.
fn keep_only(v: &mut Value, keep: &[&str]) {
    let Some(m) = v.as_mapping_mut() else {
        return blank(v);
    };
    for (k, v) in m.iter_mut() {
        if !keep.contains(&k.as_str().unwrap_or_default()) {
            blank(v);
        }
    }
}

/// Replaces every scalar under `v` (keys stay, so the shape can still be read).
fn blank(v: &mut Value) {
    match v {
        Value::Sequence(s) => s.iter_mut().for_each(blank),
        Value::Mapping(m) => m.iter_mut().for_each(|(_, v)| blank(v)),
        Value::Tagged(t) => blank(&mut t.value),
        Value::Null | Value::Bool(_) => {}
        _ => *v = Value::String(REDACTED.into()),
    }
}

#[cfg(test)]
mod tests;
