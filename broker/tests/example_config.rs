//! `deploy/broker.example.toml` documents every configuration key with its default.
//! These tests keep it honest: the file loads through the broker's own loader (so a
//! misspelled or removed key fails on `deny_unknown_fields`), the values it sets equal
//! `NodeConfig::default()` (so a changed default fails), and every key of the config
//! tree appears in it, set or commented out (so a new key fails until documented).

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;

use broker::config::{CliArgs, NodeConfig};

fn example_path() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/broker.example.toml")
}

/// `key` → value and `section.key` → value for every key of a serialized config.
fn flatten(table: &toml::Table, prefix: &str, out: &mut BTreeMap<String, String>) {
    for (key, value) in table {
        let name = format!("{prefix}{key}");
        match value {
            toml::Value::Table(section) => flatten(section, &format!("{name}."), out),
            other => {
                out.insert(name, other.to_string());
            }
        }
    }
}

/// `key = value` → `key`, when the key is one lowercase word (prose has spaces
/// or capitals before any `=`).
fn setting_key(line: &str) -> Option<&str> {
    let (key, _) = line.split_once('=')?;
    let key = key.trim();
    (!key.is_empty() && key.chars().all(|c| c.is_ascii_lowercase() || c == '_')).then_some(key)
}

/// Keys the example names, set (`key = …`) or commented out (`# key = …`), with the
/// `[section]` they appear under.
fn keys_named_in(text: &str) -> BTreeSet<String> {
    let mut keys = BTreeSet::new();
    let mut section = String::new();
    for line in text.lines() {
        let line = line.trim();
        if let Some(name) = line.strip_prefix('[').and_then(|l| l.strip_suffix(']')) {
            section = format!("{name}.");
            continue;
        }
        let setting = line.strip_prefix('#').map(str::trim).unwrap_or(line);
        if let Some(key) = setting_key(setting) {
            keys.insert(format!("{section}{key}"));
        }
    }
    keys
}

fn default_table() -> toml::Table {
    toml::Table::try_from(NodeConfig::default()).expect("the defaults serialize")
}

/// Loading the example gives exactly the defaults.
#[test]
fn example_sets_every_value_to_its_default() {
    let args = CliArgs {
        config: Some(example_path()),
        ..CliArgs::default()
    };
    // A node needs a secret and a token to start; the test gives them (and leaves
    // them out of the comparison).
    let dir = tempfile::tempdir().expect("tempdir");
    let token = dir.path().join("token");
    std::fs::write(&token, "token-0123456789abcdef\n").expect("write");
    let env = [
        (
            "BROKER_CLUSTER_SECRET".to_string(),
            "secret-0123456789abcdef".to_string(),
        ),
        (
            "BROKER_SECURITY_BOOTSTRAP_TOKEN_FILE".to_string(),
            token.display().to_string(),
        ),
    ];
    let loaded = NodeConfig::load(&args, env)
        .unwrap_or_else(|e| panic!("{} does not load: {e}", example_path().display()));
    let mut loaded_values = BTreeMap::new();
    flatten(
        &toml::Table::try_from(loaded).expect("the loaded config serializes"),
        "",
        &mut loaded_values,
    );
    loaded_values.remove("cluster_secret");
    loaded_values.remove("security.bootstrap_token_file");
    let mut defaults = BTreeMap::new();
    flatten(&default_table(), "", &mut defaults);
    let drift: Vec<String> = defaults
        .keys()
        .chain(loaded_values.keys())
        .collect::<BTreeSet<_>>()
        .into_iter()
        .filter(|key| defaults.get(*key) != loaded_values.get(*key))
        .map(|key| {
            format!(
                "{key}: default {}, example {}",
                defaults.get(key).map_or("(unset)", String::as_str),
                loaded_values.get(key).map_or("(unset)", String::as_str),
            )
        })
        .collect();
    assert!(
        drift.is_empty(),
        "deploy/broker.example.toml differs from NodeConfig::default():\n{}",
        drift.join("\n")
    );
}

/// Every key of the config tree is named in the example, and it names no other.
#[test]
fn example_names_every_key() {
    let text = std::fs::read_to_string(example_path()).expect("read the example");
    let mut values = BTreeMap::new();
    flatten(&default_table(), "", &mut values);
    let mut expected: BTreeSet<String> = values.into_keys().collect();
    // `None` by default, so absent from the serialized defaults.
    for key in [
        "cluster_secret",
        "security.cluster_secret_file",
        "security.bootstrap_token_file",
        "tls.cert_file",
        "tls.key_file",
        "tls.ca_file",
        "storage.disk_full_ratio",
    ] {
        expected.insert(key.to_string());
    }
    let named = keys_named_in(&text);
    let missing: Vec<_> = expected.difference(&named).collect();
    let unknown: Vec<_> = named.difference(&expected).collect();
    assert!(
        missing.is_empty(),
        "keys missing from deploy/broker.example.toml: {missing:?}"
    );
    assert!(
        unknown.is_empty(),
        "deploy/broker.example.toml names keys the broker does not have: {unknown:?}"
    );
}

/// The commented-out settings are valid too, once uncommented.
#[test]
fn commented_out_settings_load() {
    let text = std::fs::read_to_string(example_path()).expect("read the example");
    let uncommented: String = text
        .lines()
        .map(|line| match line.strip_prefix("# ") {
            Some(rest) if setting_key(rest).is_some() => rest,
            _ => line,
        })
        .map(|line| format!("{line}\n"))
        .collect();
    // The files the example names live here, and the secret comes from its file:
    // a secret given both ways is refused on purpose.
    let dir = tempfile::tempdir().expect("tempdir");
    let files = dir.path().display().to_string();
    let uncommented: String = uncommented
        .replace("/etc/broker/", &format!("{files}/"))
        // With the TLS keys set, the node is reached over https.
        .replace("advertise_url = \"http://", "advertise_url = \"https://")
        .lines()
        .filter(|line| setting_key(line) != Some("cluster_secret"))
        .map(|line| format!("{line}\n"))
        .collect();
    std::fs::write(
        dir.path().join("cluster-secret"),
        "secret-0123456789abcdef\n",
    )
    .expect("write");
    std::fs::write(dir.path().join("admin-token"), "token-0123456789abcdef\n").expect("write");
    let path = dir.path().join("broker.toml");
    std::fs::write(&path, uncommented).expect("write");
    let args = CliArgs {
        config: Some(path),
        ..CliArgs::default()
    };
    let config = NodeConfig::load(&args, std::iter::empty())
        .unwrap_or_else(|e| panic!("the example with its comments removed does not load: {e}"));
    assert!(config.cluster_secret.is_some());
    assert!(config.bootstrap_token.is_some());
    assert!(config.tls.ca_file.is_some());
}
