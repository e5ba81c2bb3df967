//! One connection to one Redis (a single server or a Cluster node),
//! through the `redis` crate: it connects, authenticates, selects the
//! database and parses replies. We keep only what it does not do for us:
//! sending our ready-made pipelines (one write for a whole batch) and
//! reading their replies one by one, so each command's fate is known.

use std::time::Duration;

use super::redis::{Failure, RedisConfig};

/// A Redis that stops answering for this long counts as gone; resending a
/// ZADD is safe, so the job is sent again over a new connection.
const IO_TIMEOUT: Duration = Duration::from_secs(30);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(2);

pub(super) struct Connection {
    inner: redis::Connection,
}

impl Connection {
    /// Connects to `host:port` with `config`'s credentials and database.
    pub(super) fn open(config: &RedisConfig, host: &str, port: u16) -> Result<Self, Failure> {
        let fail = |e: redis::RedisError| Failure::Connection(format!("redis {host}:{port}: {e}"));
        let mut settings = redis::RedisConnectionInfo::default().set_db(config.db as i64);
        if let Some(u) = &config.username {
            settings = settings.set_username(u);
        }
        if let Some(p) = &config.password {
            settings = settings.set_password(p);
        }
        let info = redis::IntoConnectionInfo::into_connection_info(redis::ConnectionAddr::Tcp(
            host.to_owned(),
            port,
        ))
        .map_err(fail)?
        .set_redis_settings(settings);
        let client = redis::Client::open(info).map_err(fail)?;
        let inner = client
            .get_connection_with_timeout(CONNECT_TIMEOUT)
            .map_err(fail)?;
        inner.set_read_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
        inner.set_write_timeout(Some(IO_TIMEOUT)).map_err(fail)?;
        Ok(Self { inner })
    }

    /// Writes ready-made RESP commands; their replies are read with `reply`.
    pub(super) fn write(&mut self, bytes: &[u8]) -> Result<(), Failure> {
        self.inner
            .send_packed_command(bytes)
            .map_err(|e| Failure::Connection(format!("redis write: {e}")))
    }

    /// The next reply; an error reply is a `Value::ServerError`, not a
    /// failure (only a broken connection or unreadable reply is one).
    pub(super) fn reply(&mut self) -> Result<redis::Value, Failure> {
        self.inner
            .recv_response()
            .map_err(|e| Failure::Connection(format!("redis read: {e}")))
    }

    /// One command and its reply (CLUSTER SLOTS).
    pub(super) fn query(&mut self, cmd: &redis::Cmd) -> Result<redis::Value, Failure> {
        self.write(&cmd.get_packed_command())?;
        self.reply()
    }
}

/// The text Redis sent for an error reply, e.g. `OOM command not allowed
/// when used memory > 'maxmemory'.`
pub(super) fn error_text(e: &redis::ServerError) -> String {
    match e.details() {
        Some(d) => format!("{} {d}", e.code()),
        None => e.code().to_owned(),
    }
}
