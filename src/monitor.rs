//! `MONITOR` on a connection of its own: every command the server runs, as a line of text.

use std::sync::Arc;

use futures_util::StreamExt;
use tokio::sync::oneshot;

use crate::connection::Connection;
use crate::error::{Error, ErrorKind, Result};

/// Called with each line the server sends (`1339518083.107412 [0 127.0.0.1:60866] "keys" "*"`),
/// then once with `None` when the monitor ends (stopped, or the connection was lost).
pub type OnLine = Arc<dyn Fn(Option<String>) + Send + Sync>;

/// A running monitor; dropping it does not stop it, [`Monitor::stop`] does.
pub struct Monitor {
    stop: std::sync::Mutex<Option<oneshot::Sender<()>>>,
}

impl Monitor {
    /// Opens a connection with `source`'s settings and puts it in monitor mode; lines go to
    /// `on_line` in order.
    ///
    /// # Errors
    /// `ERR_INVALID_ARG` on a cluster (monitor one node with a client of its own); the
    /// connection's errors; `ERR_TIMEOUT` after `connectTimeout`.
    pub async fn start(source: &Connection, on_line: OnLine) -> Result<Monitor> {
        if source.is_cluster() {
            return Err(Error::invalid_argument(
                "monitor() on a cluster is not supported: monitor one node with a client of its own (client.nodes() lists them)",
            ));
        }
        let config = source.config();
        let client = crate::settings::build_client(config)?;
        let made = client.get_async_monitor();
        let monitor = match config.connect_timeout {
            Some(limit) => tokio::time::timeout(limit, made).await.map_err(|_| {
                Error::new(
                    ErrorKind::Timeout,
                    format!(
                        "monitor connection to {} not made within connectTimeout ({} ms)",
                        source.addr(),
                        limit.as_millis()
                    ),
                )
            })?,
            None => made.await,
        }
        .map_err(|e| Error::from_redis(&e, source.addr()))?;
        let (stop, stopped) = oneshot::channel();
        tokio::spawn(async move {
            let mut lines = monitor.into_on_message::<String>();
            let mut stopped = stopped;
            loop {
                tokio::select! {
                    line = lines.next() => match line {
                        Some(line) => on_line(Some(line)),
                        None => break,
                    },
                    _ = &mut stopped => break,
                }
            }
            on_line(None);
        });
        Ok(Monitor {
            stop: std::sync::Mutex::new(Some(stop)),
        })
    }

    /// Ends the monitor and its connection.
    pub fn stop(&self) {
        if let Some(stop) = self.stop.lock().expect("stop").take() {
            let _ = stop.send(());
        }
    }
}
