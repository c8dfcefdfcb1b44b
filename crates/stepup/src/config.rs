//! The configuration file, its defaults and `STEPUP_*` environment overrides.
//!
//! Precedence: environment > file > default. An environment variable names a key by its
//! path in upper case joined with `_`, for example `STEPUP_KAFKA_BROKERS` for `kafka.brokers`
//! or `STEPUP_ENGINE_SIGNALS_MAX_SPEED_KMH` for `engine.signals.max_speed_kmh`. Its value is
//! read as a TOML value (`1000`, `true`, `["a", "b"]`) and otherwise as a string.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use stepup_api::ApiConfig;
use stepup_engine::EngineConfig;
use stepup_kafka::KafkaConfig;
use stepup_policy::PolicyConfig;

/// Keys whose default is absent from the serialized defaults, so the resolver cannot see them.
const OPTIONAL_KEYS: [&[&str]; 5] = [
    &["kafka", "decisions_topic"],
    &["api", "admin_token_file"],
    &["policy", "watch"],
    &["cluster", "instance_id"],
    &["cluster", "advertised_grpc"],
];

/// Variables with the `STEPUP_` prefix that are not configuration keys.
const NON_CONFIG_VARS: [&str; 4] = [
    "STEPUP_CONFIG",
    "STEPUP_LOG",
    "STEPUP_TEST_KAFKA",
    "STEPUP_CI_CACHE",
];

/// The whole configuration file.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Kafka brokers, topics and consumer group.
    #[serde(default)]
    pub kafka: KafkaConfig,
    /// gRPC server.
    #[serde(default)]
    pub api: ApiConfig,
    /// Prometheus endpoint.
    #[serde(default)]
    pub metrics: MetricsConfig,
    /// GeoIP databases.
    #[serde(default)]
    pub geo: GeoConfig,
    /// Rule files and the sandbox.
    #[serde(default)]
    pub policy: PolicyConfig,
    /// Signals, decisions, learning and actions.
    #[serde(default)]
    pub engine: EngineConfig,
    /// Identity of this instance among several in one consumer group.
    #[serde(default)]
    pub cluster: ClusterConfig,
}

/// Identity of an instance and the address other instances reach it at.
#[derive(Clone, Debug, Default, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct ClusterConfig {
    /// Unique id of this instance on the instances topic. Default: `<host name>-<gRPC port>`.
    /// Keep it stable across restarts, so a restarted instance replaces its own claim.
    #[serde(default)]
    pub instance_id: Option<String>,
    /// `host:port` other instances use to forward gRPC calls here. Default: the gRPC listen
    /// address, with the host name in place of an unspecified address such as `0.0.0.0`.
    #[serde(default)]
    pub advertised_grpc: Option<String>,
}

// === impl ClusterConfig ===

impl ClusterConfig {
    /// Returns the membership of an instance whose gRPC server listens on `listening`.
    pub fn membership(&self, listening: std::net::SocketAddr) -> stepup_kafka::Membership {
        let host = host_name();
        let advertised = self.advertised_grpc.clone().unwrap_or_else(|| {
            if listening.ip().is_unspecified() {
                format!("{host}:{}", listening.port())
            } else {
                listening.to_string()
            }
        });
        let instance_id = self
            .instance_id
            .clone()
            .unwrap_or_else(|| format!("{host}-{}", listening.port()));
        stepup_kafka::Membership::new(instance_id, advertised)
    }
}

/// Returns the machine's host name, or `localhost` if it cannot be read.
fn host_name() -> String {
    gethostname::gethostname()
        .into_string()
        .ok()
        .filter(|name| !name.is_empty())
        .unwrap_or_else(|| "localhost".to_owned())
}

/// Prometheus endpoint settings.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsConfig {
    /// Address of the HTTP server that serves `/metrics`. Default `127.0.0.1:9464`.
    #[serde(default = "default_metrics_listen")]
    pub listen: String,
}

impl Default for MetricsConfig {
    fn default() -> Self {
        Self {
            listen: default_metrics_listen(),
        }
    }
}

fn default_metrics_listen() -> String {
    "127.0.0.1:9464".into()
}

/// GeoIP database paths. An empty string turns a database off.
#[derive(Clone, Debug, Deserialize, Serialize)]
#[serde(deny_unknown_fields)]
pub struct GeoConfig {
    /// GeoIP2 or GeoLite2 City database (`.mmdb`, or `.mmdb.xz` read into memory). Default: the
    /// GeoLite2 City file of July 2018 shipped in `data/geoip/`.
    #[serde(default = "default_city_db")]
    pub city_db: String,
    /// GeoLite2 ASN database (`.mmdb`) or an ASN table `start_ip,end_ip,asn,org` (`.csv` or
    /// `.csv.gz`). Default: the IPv4 ASN table shipped in `data/geoip/`.
    #[serde(default = "default_asn_db")]
    pub asn_db: String,
    /// GeoIP2 Anonymous IP database, optional. Default: none.
    #[serde(default)]
    pub anonymous_ip_db: String,
    /// Extra AS numbers to treat as hosting networks. Default: none.
    #[serde(default)]
    pub hosting_asns: Vec<u32>,
}

impl Default for GeoConfig {
    fn default() -> Self {
        Self {
            city_db: default_city_db(),
            asn_db: default_asn_db(),
            anonymous_ip_db: String::new(),
            hosting_asns: Vec::new(),
        }
    }
}

fn default_city_db() -> String {
    "data/geoip/geolite2-2018/GeoLite2-City-2018-07.mmdb.xz".into()
}

fn default_asn_db() -> String {
    "data/geoip/asn/asn-ipv4.csv.gz".into()
}

/// Reasons the configuration cannot be used.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("failed to read config file `{path}`: {source}")]
    Read {
        /// File path.
        path: PathBuf,
        /// I/O error.
        source: std::io::Error,
    },
    /// The file is not valid TOML or has wrong keys or values.
    #[error("invalid config file `{path}`: {message}")]
    Parse {
        /// File path, or `<defaults>` when no file was given.
        path: String,
        /// Parser message, naming the key.
        message: String,
    },
    /// An environment variable names no key.
    #[error("unknown environment variable `{0}`; see docs/configuration.md for the key names")]
    UnknownVariable(String),
    /// A value passed parsing but is not usable.
    #[error("invalid configuration: {0}")]
    Invalid(String),
}

// === impl Config ===

impl Config {
    /// Loads the file (if any), applies `STEPUP_*` overrides from `env`, and validates.
    pub fn load(path: Option<&Path>, env: &BTreeMap<String, String>) -> Result<Self, ConfigError> {
        let (origin, mut table) = match path {
            Some(path) => {
                let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
                    path: path.to_owned(),
                    source,
                })?;
                let table: toml::Table =
                    toml::from_str(&text).map_err(|err| ConfigError::Parse {
                        path: path.display().to_string(),
                        message: format!("{}{}", err.message(), span_hint(&text, err.span())),
                    })?;
                (path.display().to_string(), table)
            }
            None => ("<defaults>".to_owned(), toml::Table::new()),
        };
        apply_env(&mut table, env)?;

        let config: Config =
            toml::Value::Table(table)
                .try_into()
                .map_err(|err: toml::de::Error| ConfigError::Parse {
                    path: origin,
                    message: err.to_string(),
                })?;
        config.validate()?;
        Ok(config)
    }

    /// Prints the configuration as TOML on standard output.
    pub fn print(&self) -> anyhow::Result<()> {
        print!("{}", toml::to_string_pretty(self)?);
        Ok(())
    }

    fn validate(&self) -> Result<(), ConfigError> {
        self.engine.validate().map_err(ConfigError::Invalid)?;
        self.kafka
            .validate()
            .map_err(|err| ConfigError::Invalid(format!("`kafka`: {err}")))?;
        self.policy
            .validate()
            .map_err(|err| ConfigError::Invalid(err.to_string()))?;
        for (key, value) in [
            ("api.listen", &self.api.listen),
            ("metrics.listen", &self.metrics.listen),
        ] {
            if value.parse::<std::net::SocketAddr>().is_err() {
                return Err(ConfigError::Invalid(format!(
                    "`{key}` is `{value}`; use an IP address and port such as 127.0.0.1:50051"
                )));
            }
        }
        if self.kafka.brokers.trim().is_empty() {
            return Err(ConfigError::Invalid(
                "`kafka.brokers` is empty; use host:port".into(),
            ));
        }
        Ok(())
    }
}

fn span_hint(text: &str, span: Option<std::ops::Range<usize>>) -> String {
    let Some(span) = span else {
        return String::new();
    };
    let line = text[..span.start.min(text.len())].lines().count().max(1);
    format!(" (line {line})")
}

/// Writes every `STEPUP_*` variable of `env` into `table` at the key path it names.
fn apply_env(table: &mut toml::Table, env: &BTreeMap<String, String>) -> Result<(), ConfigError> {
    let defaults = toml::Table::try_from(Config::default())
        .expect("the default configuration serializes to a TOML table");
    for (name, value) in env {
        let Some(rest) = name.strip_prefix("STEPUP_") else {
            continue;
        };
        if NON_CONFIG_VARS.contains(&name.as_str()) {
            continue;
        }
        let path = resolve_path(&defaults, rest)
            .or_else(|| resolve_optional(rest))
            .ok_or_else(|| ConfigError::UnknownVariable(name.clone()))?;
        insert_at(table, &path, parse_env_value(value));
    }
    Ok(())
}

/// Finds the key path whose upper-case `_`-joined form is `name`, guided by the defaults.
fn resolve_path(defaults: &toml::Table, name: &str) -> Option<Vec<String>> {
    for (key, value) in defaults {
        let upper = key.to_uppercase();
        if name == upper {
            return Some(vec![key.clone()]);
        }
        let Some(rest) = name
            .strip_prefix(&upper)
            .and_then(|rest| rest.strip_prefix('_'))
        else {
            continue;
        };
        if let toml::Value::Table(inner) = value
            && let Some(mut path) = resolve_path(inner, rest)
        {
            path.insert(0, key.clone());
            return Some(path);
        }
    }
    None
}

fn resolve_optional(name: &str) -> Option<Vec<String>> {
    OPTIONAL_KEYS
        .iter()
        .find(|path| path.join("_").to_uppercase() == name)
        .map(|path| path.iter().map(|key| key.to_string()).collect())
}

fn insert_at(table: &mut toml::Table, path: &[String], value: toml::Value) {
    let (last, parents) = path
        .split_last()
        .expect("a resolved path has at least one key");
    let mut current = table;
    for key in parents {
        let entry = current
            .entry(key.clone())
            .or_insert_with(|| toml::Table::new().into());
        if !entry.is_table() {
            *entry = toml::Table::new().into();
        }
        current = entry
            .as_table_mut()
            .expect("the entry was just made a table");
    }
    current.insert(last.clone(), value);
}

fn parse_env_value(raw: &str) -> toml::Value {
    let wrapped = format!("value = {raw}");
    match toml::from_str::<toml::Table>(&wrapped) {
        Ok(mut table) => table.remove("value").unwrap_or_else(|| raw.into()),
        Err(_) => toml::Value::String(raw.to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn write(text: &str) -> tempfile::NamedTempFile {
        let file = tempfile::NamedTempFile::new().unwrap();
        std::fs::write(file.path(), text).unwrap();
        file
    }

    #[test]
    fn defaults_load_without_file() {
        let config = Config::load(None, &env(&[])).unwrap();
        assert_eq!(config.kafka.events_topic, "stepup.events");
        assert_eq!(config.api.listen, "127.0.0.1:50051");
        assert_eq!(config.engine.signals.max_speed_kmh, 1000.0);
    }

    #[test]
    fn env_overrides_file_and_nested_keys() {
        let file = write("[kafka]\nbrokers = \"10.0.0.1:9092\"\n");
        let vars = env(&[
            ("STEPUP_KAFKA_BROKERS", "127.0.0.1:19092"),
            ("STEPUP_ENGINE_SIGNALS_MAX_SPEED_KMH", "900"),
            ("STEPUP_KAFKA_GROUP_ID", "risk"),
            ("STEPUP_LOG", "debug"),
            ("PATH", "/bin"),
        ]);
        let config = Config::load(Some(file.path()), &vars).unwrap();
        assert_eq!(config.kafka.brokers, "127.0.0.1:19092");
        assert_eq!(config.kafka.group_id, "risk");
        assert_eq!(config.engine.signals.max_speed_kmh, 900.0);
    }

    #[test]
    fn rejects_typo_key_naming_it() {
        let file = write("[kafka]\nbrokerz = \"127.0.0.1:9092\"\n");
        let message = Config::load(Some(file.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(message.contains("brokerz"), "{message}");
    }

    #[test]
    fn rejects_wrong_type_naming_key() {
        let file = write("[engine.signals]\nmax_speed_kmh = \"fast\"\n");
        let message = Config::load(Some(file.path()), &env(&[]))
            .unwrap_err()
            .to_string();
        assert!(message.contains("max_speed_kmh"), "{message}");
    }

    #[test]
    fn rejects_unknown_env_variable() {
        let err = Config::load(None, &env(&[("STEPUP_KAFKA_BROKER", "x:1")])).unwrap_err();
        assert_eq!(
            err.to_string(),
            "unknown environment variable `STEPUP_KAFKA_BROKER`; see docs/configuration.md for the key names"
        );
    }

    #[test]
    fn env_sets_keys_without_default() {
        let vars = env(&[
            ("STEPUP_POLICY_WATCH", "false"),
            ("STEPUP_API_ADMIN_TOKEN_FILE", "/run/secrets/stepup-admin"),
        ]);
        let config = Config::load(None, &vars).unwrap();
        assert_eq!(config.policy.watch, Some(false));
        assert_eq!(
            config.api.admin_token_file.as_deref(),
            Some(Path::new("/run/secrets/stepup-admin"))
        );
    }

    #[test]
    fn rejects_bad_listen_address() {
        let err = Config::load(None, &env(&[("STEPUP_API_LISTEN", "localhost")])).unwrap_err();
        assert!(err.to_string().contains("`api.listen`"), "{err}");
    }

    #[test]
    fn rejects_out_of_range_value() {
        let vars = env(&[("STEPUP_ENGINE_LEARNING_MAX_SCORE_WITHOUT_MFA", "3")]);
        let err = Config::load(None, &vars).unwrap_err();
        assert!(err.to_string().contains("max_score_without_mfa"), "{err}");
    }

    #[test]
    fn shipped_example_config_loads() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../deploy/stepup.toml");
        Config::load(Some(&path), &env(&[])).unwrap();
    }
}
