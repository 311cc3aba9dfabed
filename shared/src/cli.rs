//! Flags every binary shares (`--redis-url`, `--namespace`, `--log-format`) and logging set-up.

use clap::{Args, ValueEnum};

/// Connection and logging options common to all renderfleet binaries.
#[derive(Args, Clone, Debug)]
pub struct Common {
    /// Redis URL: redis://[user:pass@]host:port/db
    #[arg(
        long,
        env = "REDIS_URL",
        default_value = "redis://127.0.0.1:6379/0",
        hide_env_values = true,
        global = true
    )]
    pub redis_url: String,
    /// Fleet namespace; every key of the fleet starts with `{<ns>}:`
    #[arg(
        long,
        env = "RENDERFLEET_NAMESPACE",
        default_value = "rf",
        global = true
    )]
    pub namespace: String,
    /// Log format on stderr
    #[arg(long, env = "RENDERFLEET_LOG_FORMAT", value_enum, default_value_t = LogFormat::Text, global = true)]
    pub log_format: LogFormat,
}

/// How logs are written.
#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum)]
pub enum LogFormat {
    Text,
    Json,
}

/// Install the tracing subscriber. `RUST_LOG` overrides `default_filter`.
pub fn init_tracing(format: LogFormat, default_filter: &str) {
    use tracing_subscriber::EnvFilter;
    let filter =
        EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new(default_filter));
    // Colour only for a person at a terminal; log files and collectors get plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_ansi(ansi);
    let _ = match format {
        LogFormat::Text => builder.try_init(),
        LogFormat::Json => builder.json().try_init(),
    };
}

/// The host:port part of a Redis URL, for messages (never the password).
pub fn redis_addr(url: &str) -> String {
    let rest = url.split_once("://").map(|(_, r)| r).unwrap_or(url);
    let rest = rest.rsplit_once('@').map(|(_, r)| r).unwrap_or(rest);
    rest.split('/').next().unwrap_or(rest).to_owned()
}

#[cfg(test)]
mod tests {
    #[test]
    fn redis_addr_hides_credentials() {
        assert_eq!(
            super::redis_addr("redis://agent:s3cret@redis:6379/0"),
            "redis:6379"
        );
        assert_eq!(
            super::redis_addr("redis://127.0.0.1:7000"),
            "127.0.0.1:7000"
        );
    }
}
