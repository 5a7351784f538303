//! Sessions: create, renew, destroy, and a background renewer thread.
//!
//! Ownership: a [`SessionRenewer`] owns one thread that renews one session every TTL/2; the
//! renewer's owner stops it with [`SessionRenewer::stop`] (or by dropping it), which joins the
//! thread. The session itself is not destroyed by the renewer.
//!
//! Failure modes: Consul invalidates a session somewhere between TTL and 2 x TTL after its last
//! renewal. The renewer reports a loss once: when Consul answers that the session is gone
//! ([`SessionLoss::Invalidated`]), or when no renewal succeeded for a whole TTL
//! ([`SessionLoss::RenewalTimedOut`]): past that point Consul may already have invalidated the
//! session, so a lock holder must assume it lost the lock. Transient errors before that are
//! retried every [`RENEW_RETRY_INTERVAL`].

use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, RecvTimeoutError, Sender};
use serde::{Deserialize, Serialize};

use crate::client::{encode_path, Call, ConsulClient};
use crate::error::ConsulError;
use crate::types::{duration_text, SessionId};

/// Shortest session TTL Consul accepts.
pub const SESSION_TTL_MIN: Duration = Duration::from_secs(10);

/// Longest session TTL Consul accepts.
pub const SESSION_TTL_MAX: Duration = Duration::from_secs(24 * 60 * 60);

/// Longest lock delay Consul accepts.
pub const LOCK_DELAY_MAX: Duration = Duration::from_secs(60);

/// Pause between renewal attempts after a transient failure.
pub const RENEW_RETRY_INTERVAL: Duration = Duration::from_millis(500);

/// What happens to the locks of a session when it is invalidated.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum SessionBehavior {
    /// Locks are released; the keys stay.
    #[default]
    Release,
    /// Locked keys are deleted.
    Delete,
}

impl SessionBehavior {
    fn as_str(self) -> &'static str {
        match self {
            Self::Release => "release",
            Self::Delete => "delete",
        }
    }
}

/// Settings of a new session.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionConfig {
    /// Human-readable name (shown by `consul` tools).
    pub name: String,
    /// Time to live without a renewal, between [`SESSION_TTL_MIN`] and [`SESSION_TTL_MAX`].
    pub ttl: Duration,
    /// After the session is invalidated, how long its locks cannot be acquired by others
    /// (at most [`LOCK_DELAY_MAX`]); an explicit release has no delay.
    pub lock_delay: Duration,
    /// What happens to held locks on invalidation.
    pub behavior: SessionBehavior,
    /// Health checks the session depends on (ids on the agent's node): the session is
    /// invalidated as soon as one turns critical. Empty: Consul's default, the node's
    /// `serfHealth`. Non-empty replaces the default, so list `serfHealth` too if wanted.
    pub checks: Vec<String>,
}

impl SessionConfig {
    /// A session named `name` with the given TTL, a 1 s lock delay and the release behavior.
    pub fn new(name: impl Into<String>, ttl: Duration) -> Self {
        Self {
            name: name.into(),
            ttl,
            lock_delay: Duration::from_secs(1),
            behavior: SessionBehavior::Release,
            checks: Vec::new(),
        }
    }

    fn validate(&self) -> Result<(), ConsulError> {
        if self.ttl < SESSION_TTL_MIN || self.ttl > SESSION_TTL_MAX {
            return Err(ConsulError::Config {
                reason: format!(
                    "session TTL {:?} is outside Consul's range {SESSION_TTL_MIN:?}..={SESSION_TTL_MAX:?}",
                    self.ttl
                ),
            });
        }
        if self.lock_delay > LOCK_DELAY_MAX {
            return Err(ConsulError::Config {
                reason: format!(
                    "lock delay {:?} is over Consul's maximum {LOCK_DELAY_MAX:?}",
                    self.lock_delay
                ),
            });
        }
        Ok(())
    }
}

#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct WireSessionCreate<'a> {
    name: &'a str,
    #[serde(rename = "TTL")]
    ttl: String,
    lock_delay: String,
    behavior: &'static str,
    #[serde(skip_serializing_if = "<[String]>::is_empty")]
    checks: &'a [String],
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSessionId {
    #[serde(rename = "ID")]
    id: String,
}

/// A session as Consul describes it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SessionInfo {
    /// Session id.
    pub id: SessionId,
    /// Name given at creation.
    pub name: String,
    /// Node the session is bound to.
    pub node: String,
    /// Lock delay.
    pub lock_delay: Duration,
    /// Behavior on invalidation.
    pub behavior: SessionBehavior,
    /// TTL text as Consul stores it (e.g. `"10s"`).
    pub ttl: String,
}

#[derive(Deserialize)]
#[serde(rename_all = "PascalCase")]
struct WireSessionInfo {
    #[serde(rename = "ID")]
    id: String,
    #[serde(default)]
    name: String,
    #[serde(default)]
    node: String,
    /// Nanoseconds.
    #[serde(default)]
    lock_delay: u64,
    #[serde(default)]
    behavior: String,
    #[serde(rename = "TTL", default)]
    ttl: String,
}

impl ConsulClient {
    /// Creates a session bound to the agent's node.
    ///
    /// # Errors
    /// [`ConsulError::Config`] for a TTL or lock delay out of range (nothing sent); transport
    /// errors and error statuses.
    ///
    /// ```no_run
    /// use std::time::Duration;
    /// use sluice_kvstore_consul::SessionConfig;
    /// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
    /// let session = client.session_create(&SessionConfig::new("sluice-sc", Duration::from_secs(10)))?;
    /// let acquired = client.kv_acquire("sluice/leader", b"sc-1", &session)?;
    /// client.session_destroy(&session)?;
    /// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
    /// ```
    pub fn session_create(&self, config: &SessionConfig) -> Result<SessionId, ConsulError> {
        config.validate()?;
        let wire = WireSessionCreate {
            name: &config.name,
            ttl: duration_text(config.ttl),
            lock_delay: duration_text(config.lock_delay),
            behavior: config.behavior.as_str(),
            checks: &config.checks,
        };
        let body = serde_json::to_vec(&wire).map_err(|error| ConsulError::Config {
            reason: format!("cannot encode the session: {error}"),
        })?;
        let reply =
            self.execute(Call::new("PUT", "/v1/session/create".into()).body(&body))?.success()?;
        let created: WireSessionId = reply.json()?;
        Ok(SessionId::new(created.id))
    }

    /// Renews a session's TTL.
    ///
    /// # Errors
    /// [`ConsulError::InvalidSession`] when the session no longer exists; transport errors and
    /// error statuses.
    pub fn session_renew(&self, session: &SessionId) -> Result<(), ConsulError> {
        self.session_renew_within(session, self.request_timeout())
    }

    pub(crate) fn session_renew_within(
        &self,
        session: &SessionId,
        timeout: Duration,
    ) -> Result<(), ConsulError> {
        let path = format!("/v1/session/renew/{}", encode_path(session.as_str()));
        let reply = self.execute(Call::new("PUT", path).timeout(timeout))?;
        if reply.status == 404 {
            return Err(reply.into_error());
        }
        reply.success()?;
        Ok(())
    }

    /// Destroys a session, releasing (or deleting) its locks (succeeds for an unknown session).
    ///
    /// # Errors
    /// Transport errors and error statuses.
    pub fn session_destroy(&self, session: &SessionId) -> Result<(), ConsulError> {
        let path = format!("/v1/session/destroy/{}", encode_path(session.as_str()));
        self.execute(Call::new("PUT", path))?.success()?;
        Ok(())
    }

    /// Describes a session, `None` when it does not exist.
    ///
    /// # Errors
    /// Transport errors and error statuses.
    pub fn session_info(&self, session: &SessionId) -> Result<Option<SessionInfo>, ConsulError> {
        let path = format!("/v1/session/info/{}", encode_path(session.as_str()));
        let reply = self.execute(Call::new("GET", path))?.success()?;
        let sessions: Option<Vec<WireSessionInfo>> = reply.json()?;
        let Some(wire) = sessions.unwrap_or_default().into_iter().next() else { return Ok(None) };
        Ok(Some(SessionInfo {
            id: SessionId::new(wire.id),
            name: wire.name,
            node: wire.node,
            lock_delay: Duration::from_nanos(wire.lock_delay),
            behavior: if wire.behavior == "delete" {
                SessionBehavior::Delete
            } else {
                SessionBehavior::Release
            },
            ttl: wire.ttl,
        }))
    }
}

/// Why a renewed session must be considered gone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SessionLoss {
    /// Consul said the session does not exist (its text is kept).
    Invalidated {
        /// Consul's message.
        message: String,
    },
    /// No renewal succeeded for a whole TTL; Consul may have invalidated the session.
    RenewalTimedOut {
        /// Time since the last successful renewal was sent.
        since_last_renewal: Duration,
        /// The last renewal error.
        last_error: String,
    },
}

impl std::fmt::Display for SessionLoss {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Invalidated { message } => write!(formatter, "session invalidated: {message}"),
            Self::RenewalTimedOut { since_last_renewal, last_error } => write!(
                formatter,
                "no renewal for {} ms (last error: {last_error})",
                since_last_renewal.as_millis()
            ),
        }
    }
}

/// Renews a session every TTL/2 on a background thread until stopped or the session is lost.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_kvstore_consul::{SessionConfig, SessionRenewer};
/// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
/// let config = SessionConfig::new("worker", Duration::from_secs(10));
/// let session = client.session_create(&config)?;
/// let renewer = SessionRenewer::start(client.clone(), session.clone(), config.ttl);
/// // ... later, or when renewer.loss() yields:
/// renewer.stop();
/// client.session_destroy(&session)?;
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
pub struct SessionRenewer {
    stop_sender: Option<Sender<()>>,
    thread: Option<JoinHandle<()>>,
    loss: Receiver<SessionLoss>,
}

impl std::fmt::Debug for SessionRenewer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter.debug_struct("SessionRenewer").finish_non_exhaustive()
    }
}

impl SessionRenewer {
    /// Starts renewing `session` (whose TTL is `ttl`). The first renewal happens after TTL/2.
    pub fn start(client: ConsulClient, session: SessionId, ttl: Duration) -> Self {
        let (loss_sender, loss) = crossbeam_channel::bounded(1);
        Self::start_with(client, session, ttl, move |reason| {
            // Capacity 1 and a single report: this cannot block.
            let _ = loss_sender.try_send(reason);
        })
        .with_loss(loss)
    }

    /// Starts renewing `session` and calls `on_loss` (once, on the renewer thread) if it is lost.
    pub fn start_with<F>(
        client: ConsulClient,
        session: SessionId,
        ttl: Duration,
        on_loss: F,
    ) -> Self
    where
        F: FnOnce(SessionLoss) + Send + 'static,
    {
        let (stop_sender, stop_receiver) = crossbeam_channel::bounded(1);
        let thread =
            std::thread::Builder::new().name("consul-session-renew".into()).spawn(move || {
                if let Some(reason) = renew_loop(&client, &session, ttl, &stop_receiver) {
                    tracing::warn!(session = %session, %reason, "Consul session lost");
                    on_loss(reason);
                }
            });
        let thread = match thread {
            Ok(thread) => Some(thread),
            Err(error) => {
                tracing::error!(%error, "cannot start the session renewal thread");
                None
            }
        };
        Self { stop_sender: Some(stop_sender), thread, loss: crossbeam_channel::never() }
    }

    fn with_loss(mut self, loss: Receiver<SessionLoss>) -> Self {
        self.loss = loss;
        self
    }

    /// Yields once if the session is lost (never yields for renewers made by
    /// [`Self::start_with`], which report through their callback).
    pub fn loss(&self) -> &Receiver<SessionLoss> {
        &self.loss
    }

    /// Whether the renewal thread still runs (false after a loss or a stop).
    pub fn is_running(&self) -> bool {
        self.thread.as_ref().is_some_and(|thread| !thread.is_finished())
    }

    /// Stops renewing and joins the thread (at most one in-flight renewal long).
    pub fn stop(mut self) {
        self.shutdown();
    }

    fn shutdown(&mut self) {
        // Dropping the sender wakes the thread's wait.
        self.stop_sender.take();
        if let Some(thread) = self.thread.take() {
            if thread.join().is_err() {
                tracing::error!("the session renewal thread panicked");
            }
        }
    }
}

impl Drop for SessionRenewer {
    fn drop(&mut self) {
        self.shutdown();
    }
}

/// Renews until stopped (`None`) or the session is lost (`Some(reason)`).
fn renew_loop(
    client: &ConsulClient,
    session: &SessionId,
    ttl: Duration,
    stop: &Receiver<()>,
) -> Option<SessionLoss> {
    let interval = ttl / 2;
    // A renewal must not outlive the margin left before the TTL runs out.
    let renew_timeout = (ttl / 4).min(client.request_timeout());
    let mut last_success = Instant::now();
    let mut next_attempt = last_success + interval;
    loop {
        match stop.recv_timeout(next_attempt.saturating_duration_since(Instant::now())) {
            Err(RecvTimeoutError::Timeout) => {}
            Ok(()) | Err(RecvTimeoutError::Disconnected) => return None,
        }
        let attempt_start = Instant::now();
        match client.session_renew_within(session, renew_timeout) {
            Ok(()) => {
                last_success = attempt_start;
                next_attempt = attempt_start + interval;
            }
            Err(ConsulError::InvalidSession { message, .. }) => {
                return Some(SessionLoss::Invalidated { message });
            }
            Err(error) => {
                let since_last_renewal = attempt_start.saturating_duration_since(last_success);
                tracing::debug!(session = %session, %error, "session renewal failed");
                if Instant::now().saturating_duration_since(last_success) >= ttl {
                    return Some(SessionLoss::RenewalTimedOut {
                        since_last_renewal,
                        last_error: error.to_string(),
                    });
                }
                // Never retry past the point where the TTL is surely spent.
                next_attempt = (Instant::now() + RENEW_RETRY_INTERVAL).min(last_success + ttl);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ttl_and_lock_delay_are_validated() {
        assert!(SessionConfig::new("a", Duration::from_secs(10)).validate().is_ok());
        assert!(SessionConfig::new("a", Duration::from_secs(9)).validate().is_err());
        let mut config = SessionConfig::new("a", Duration::from_secs(10));
        config.lock_delay = Duration::from_secs(61);
        assert!(config.validate().is_err());
    }
}
