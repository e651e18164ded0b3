use super::*;
use base64::Engine as _;
use kwg_contract::keys::PrivateKey;

fn b64(bytes: &[u8]) -> String {
    base64::engine::general_purpose::STANDARD.encode(bytes)
}

const CERT: &str = "-----BEGIN CERTIFICATE-----\nMIIBdzCCAR2gAwIBAgIBADAKBggqhkjOPQQDAjAjMSEwHwYDVQQDDBhrM3Mtc2Vy\ndmVyLWNhQDE3MDAwMDAwMDAwHhcNMjMxMTE0MjIxMzIwWhcNMzMxMTExMjIxMzIw\n-----END CERTIFICATE-----\n";
const KEY: &str = "-----BEGIN EC PRIVATE KEY-----\nMHcCAQEEIIx5nq3dF0gQ1xYwqYvQ8eW3nqHkZ2v3bq8b8hKcqH3xoAoGCCqGSM49\nAwEHoUQDQgAEexample+private+key+material+that+must+not+leak0000\n-----END EC PRIVATE KEY-----\n";
const TOKEN: &str = "kwg-ci.7f3b2c9a1e8d4f60b5a2c7e9d1f3a8b6";
const JWT: &str = "eyJhbGciOiJSUzI1NiIsImtpZCI6IjEyMyJ9.eyJzdWIiOiJzeXN0ZW06c2VydmljZWFjY291bnQ6a3dnOmNpIn0.c2lnbmF0dXJlLWJ5dGVzLWhlcmUtMTIzNDU2Nzg5MA";

fn kubeconfig_fixture() -> String {
    format!(
        r#"apiVersion: v1
kind: Config
current-context: dev
clusters:
- name: dev
  cluster:
    server: https://192.0.2.1:6443
    certificate-authority-data: {ca}
contexts:
- name: dev
  context: {{cluster: dev, user: alice, namespace: emojivoto}}
users:
- name: alice
  user:
    client-certificate-data: {cert}
    client-key-data: {key}
- name: ci
  user:
    token: {TOKEN}
- name: oidc
  user:
    auth-provider:
      config:
        id-token: {JWT}
        refresh-token: 1//0gLrefresh-token-value
        client-secret: s3cr3t-value
- name: basic
  user:
    username: admin
    password: "hunter2 is long"
"#,
        ca = b64(CERT.as_bytes()),
        cert = b64(CERT.as_bytes()),
        key = b64(KEY.as_bytes()),
    )
}

fn assert_clean(out: &str, secrets: &[&str]) {
    for s in secrets {
        assert!(!out.contains(s), "{s:?} left in:\n{out}");
    }
    for marker in [
        "BEGIN CERTIFICATE",
        "PRIVATE KEY-----\nM",
        "LS0tLS1C",
        "eyJ",
    ] {
        assert!(!out.contains(marker), "{marker:?} left in:\n{out}");
    }
}

#[test]
fn a_kubeconfig_keeps_its_shape_and_loses_every_credential() {
    let out = redact(&kubeconfig_fixture(), &[]);
    assert_clean(
        &out,
        &[
            TOKEN,
            JWT,
            "1//0gLrefresh",
            "s3cr3t-value",
            "hunter2",
            &b64(KEY.as_bytes())[..40],
            &b64(CERT.as_bytes())[..40],
        ],
    );
    assert!(out.contains("server: https://192.0.2.1:6443"), "{out}");
    assert!(out.contains("username: admin"), "{out}");
    assert!(out.contains("client-key-data: REDACTED"), "{out}");
    assert!(
        out.contains("certificate-authority-data: REDACTED"),
        "{out}"
    );
    assert!(out.contains("token: REDACTED"), "{out}");
    // Still YAML a reader can follow.
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    assert_eq!(doc["users"][1]["name"], "ci");
}

#[test]
fn pem_blocks_and_json_fields_are_redacted() {
    let text =
        format!("{CERT}{KEY}{{\"token\":\"{TOKEN}\",\"privateKey\":\"abc\",\"user\":\"alice\"}}");
    let out = redact(&text, &[]);
    assert_clean(&out, &[TOKEN, "example+private+key"]);
    assert!(out.contains("-----REDACTED CERTIFICATE-----"), "{out}");
    assert!(out.contains("-----REDACTED EC PRIVATE KEY-----"), "{out}");
    assert!(out.contains(r#""token":"REDACTED""#), "{out}");
    assert!(out.contains(r#""user":"alice""#), "{out}");
}

#[test]
fn wireguard_private_keys_go_and_named_public_keys_stay() {
    let private = PrivateKey::generate();
    let secret = b64(private.as_bytes());
    let public = private.public_key().to_string();
    let other = PrivateKey::generate().public_key().to_string();
    let text = format!(
        "[Interface]\nPrivateKey = {secret}\n\n[Peer]\nPublicKey = {public}\nEndpoint = 192.0.2.1:31820\n\
         private_key={hex}\npublic_key={pubhex}\nstray {other} in a log\n",
        hex = hex(private.as_bytes()),
        pubhex = private.public_key().to_hex(),
    );
    let out = redact(&text, std::slice::from_ref(&public));
    assert_clean(&out, &[&secret, &hex(private.as_bytes()), &other]);
    assert!(out.contains(&format!("PublicKey = {public}")), "{out}");
    assert!(out.contains("PrivateKey = REDACTED"), "{out}");
    assert!(out.contains("Endpoint = 192.0.2.1:31820"), "{out}");
}

fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

#[test]
fn bearer_tokens_in_logs_are_redacted() {
    let log = format!(
        "2026-01-01T00:00:00Z DEBUG kube_client: request headers={{\"authorization\": \"Bearer {TOKEN}\"}}\n\
         curl -H 'Authorization: Bearer {JWT}' https://192.0.2.1:6443/version\n\
         Authorization: Basic YWRtaW46aHVudGVyMg==\n\
         WARN lease renewal failed error=the Kubernetes API server https://192.0.2.1:6443 is unreachable (connection refused)\n"
    );
    let out = redact(&log, &[]);
    assert_clean(&out, &[TOKEN, JWT, "YWRtaW46aHVudGVyMg"]);
    assert!(out.contains("Bearer REDACTED"), "{out}");
    assert!(out.contains("is unreachable (connection refused)"), "{out}");
}

#[test]
fn a_kubeconfig_exec_plugin_keeps_its_command_and_env_names_only_every_argument_goes() {
    let text = r#"apiVersion: v1
kind: Config
users:
- name: vault
  user:
    exec:
      apiVersion: client.authentication.k8s.io/v1
      command: vault-k8s-login
      args: ["--role", "dev", "--auth-token", "hvs.CAESIJ9vault-secret", "--password=pw-in-arg", "-p", "short-flag-secret", "get-token", "positional-secret-token"]
      env:
      - name: VAULT_TOKEN
        value: hvs.CAESIvault-env-secret
      - name: AWS_PROFILE
        value: prod-profile-name
      interactiveMode: Never
- name: sso
  user:
    auth-provider:
      name: oidc
      config:
        idp-issuer-url: https://issuer.example
        extra: opaque-provider-secret
- name: files
  user:
    client-certificate: /home/alice/.kube/alice.crt
    client-key: /home/alice/.kube/alice.key
    as-user-extra: {scopes: [impersonated-secret-scope]}
"#;
    let out = kubeconfig(text, &[]);
    assert_clean(
        &out,
        &[
            "hvs.CAESIJ9vault-secret",
            "hvs.CAESIvault-env-secret",
            "prod-profile-name",
            "pw-in-arg",
            "short-flag-secret",
            "positional-secret-token",
            "opaque-provider-secret",
            "impersonated-secret-scope",
        ],
    );
    let doc: serde_json::Value = serde_yaml_ng::from_str(&out).unwrap();
    let exec = &doc["users"][0]["user"]["exec"];
    assert_eq!(exec["command"], "vault-k8s-login", "{out}");
    assert_eq!(exec["apiVersion"], "client.authentication.k8s.io/v1");
    // Every argument goes, whatever flag (or none) precedes it; their number stays.
    let args = exec["args"].as_array().unwrap();
    assert_eq!(args.len(), 9, "{out}");
    assert!(args.iter().all(|a| a == REDACTED), "{out}");
    assert_eq!(exec["env"][0]["name"], "VAULT_TOKEN");
    assert_eq!(exec["env"][0]["value"], REDACTED);
    assert_eq!(exec["env"][1]["value"], REDACTED);
    assert_eq!(doc["users"][1]["user"]["auth-provider"]["name"], "oidc");
    assert_eq!(
        doc["users"][2]["user"]["client-key"],
        "/home/alice/.kube/alice.key"
    );
}

#[test]
fn the_existing_kubeconfig_checks_hold_through_the_structural_pass() {
    let out = kubeconfig(&kubeconfig_fixture(), &[]);
    assert_clean(
        &out,
        &[TOKEN, JWT, "1//0gLrefresh", "s3cr3t-value", "hunter2"],
    );
    assert!(out.contains("server: https://192.0.2.1:6443"), "{out}");
    assert!(out.contains("username: admin"), "{out}");
}

#[test]
fn a_kubeconfig_whose_structure_cannot_be_read_is_left_out_with_a_note() {
    // The text pass alone would keep an exec plugin's arguments in clear.
    let broken = "users:\n- name: a\n  user:\n    exec:\n      args: [--password, hunter2\n";
    let other_shape = "users: {a: {exec: {args: [hunter2]}}}\n";
    for text in [broken, "- hunter2\n", other_shape] {
        let out = kubeconfig(text, &[]);
        assert!(
            out.starts_with("# kubeconfig left out of the bundle: ")
                && out.contains("so its credentials could not be found to redact"),
            "{out}"
        );
        assert_clean(&out, &["hunter2"]);
    }
}

#[test]
fn url_user_info_goes_up_to_the_last_at_sign_as_go_reads_it() {
    assert_eq!(
        redact("proxy-url: http://u:p@ss@proxy:3128/a@b x@y", &[]),
        "proxy-url: http://REDACTED@proxy:3128/a@b x@y"
    );
}

#[test]
fn secret_words_anywhere_in_a_field_name_and_url_passwords_are_redacted() {
    let text = "[default]\naws_access_key_id = AKIAIOSFODNN7EXAMPLE\n\
                aws_secret_access_key = wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY\n\
                {\"apiKey\": \"sk-live-123456\", \"user\": \"alice\"}\n\
                client_secret_value: abcdef-secret\n\
                proxy-url: https://alice:p4ss-w0rd@proxy.example:3128/path\n\
                tokens:\n  keep-this-line: 1\n";
    let out = redact(text, &[]);
    assert_clean(
        &out,
        &[
            "AKIAIOSFODNN7EXAMPLE",
            "wJalrXUtnFEMI",
            "sk-live-123456",
            "abcdef-secret",
            "p4ss-w0rd",
            "alice:",
        ],
    );
    assert!(out.contains("aws_secret_access_key = REDACTED"), "{out}");
    assert!(out.contains(r#""apiKey": "REDACTED""#), "{out}");
    assert!(
        out.contains("https://REDACTED@proxy.example:3128/path"),
        "{out}"
    );
    // A user name alone in a URL (often a token itself) goes too.
    assert_eq!(
        redact("proxy-url: http://ghp_tok3n@proxy:8080", &[]),
        "proxy-url: http://REDACTED@proxy:8080"
    );
    assert!(out.contains(r#""user": "alice""#), "{out}");
    // A path stays; a secret word in the name of an object or list keeps the JSON whole.
    let json =
        r#"{"tokenFile": "/var/run/secrets/token", "peerSecrets": {"n": 1}, "apiKeys": ["k"]}"#;
    let out_json = redact(json, &[]);
    let doc: serde_json::Value = serde_json::from_str(&out_json).expect(&out_json);
    assert_eq!(doc["tokenFile"], "/var/run/secrets/token");
    assert_eq!(doc["peerSecrets"]["n"], 1);
    // A section name with a secret word does not swallow the next line.
    assert!(out.contains("keep-this-line: 1"), "{out}");
}

#[test]
fn keys_starting_with_plus_or_slash_are_redacted_but_not_inside_longer_base64() {
    let plus = format!("+{}E=", "A".repeat(41));
    let slash = format!("/{}", &plus[1..]);
    assert_eq!(plus.len(), 44);
    let long = format!("Zm9v{plus}");
    let text = format!("peer key {plus}\nkey:{slash}\nblob {long}\n");
    let out = redact(&text, &[]);
    assert!(!out.contains(&slash), "{out}");
    assert!(out.contains("peer key REDACTED\nkey:REDACTED\n"), "{out}");
    // Part of a longer base64 run: not a key on its own.
    assert!(out.contains(&long), "{out}");
}
