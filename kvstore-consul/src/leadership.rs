//! Leader election on one Consul key, with fencing tokens and loss detection.
//!
//! A [`Leadership`] owns, while it campaigns or leads, one session and its renewer thread; while
//! it leads, also one monitor thread that watches the lock key. Loss is reported once per term
//! on the channel from [`Leadership::losses`] and makes [`Leadership::is_leader`] false.
//!
//! Invariants:
//! - a term is identified by its [`FencingToken`] (key, `LockIndex`, session); every write a
//!   leader makes on the strength of its leadership should carry or check it (e.g. a
//!   [`crate::TxnOp::CheckSession`] on the lock key);
//! - after any loss the session is abandoned (destroyed when possible) and the next campaign
//!   creates a fresh one;
//! - [`Leadership::resign`] releases the lock (no lock delay for the successor) and then
//!   destroys the session.
//!
//! Failure modes: loss is detected when renewal answers that the session is gone, when no
//! renewal succeeded for a whole TTL (Consul invalidates only after 2 x TTL, so the old leader
//! steps down before a successor can acquire), or when the key is taken or deleted. Consul errors
//! during a campaign are returned to the caller, who retries.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::time::{Duration, Instant};

use crossbeam_channel::{Receiver, Sender};

use crate::client::{Blocking, ConsulClient};
use crate::error::ConsulError;
use crate::session::{SessionConfig, SessionLoss, SessionRenewer};
use crate::types::{Indexed, KvEntry, LockIndex, SessionId};
use crate::watch::{KeyWatch, WatchOptions};

/// Loss events kept until the owner reads them (one per term is sent).
const LOSS_EVENTS_MAX: usize = 16;

/// Settings of a [`Leadership`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipConfig {
    /// The lock key, e.g. `sluice/sc/leader`.
    pub key: String,
    /// Value written when the lock is acquired (e.g. the candidate's address).
    pub value: Vec<u8>,
    /// The session each term uses.
    pub session: SessionConfig,
    /// Pause before trying again when the key is free but acquisition failed (lock delay).
    pub retry_interval: Duration,
    /// Longest wait of one blocking query on the key (while campaigning and while leading).
    pub watch_wait: Duration,
}

impl LeadershipConfig {
    /// Settings for `key` with `value`, a session of `ttl` named after the key, 1 s lock delay.
    pub fn new(key: impl Into<String>, value: impl Into<Vec<u8>>, ttl: Duration) -> Self {
        let key = key.into();
        Self {
            session: SessionConfig::new(format!("leadership {key}"), ttl),
            key,
            value: value.into(),
            retry_interval: Duration::from_millis(250),
            watch_wait: Duration::from_secs(30),
        }
    }
}

/// Proof of one leadership term: the lock key, its `LockIndex` when acquired, and the session.
/// A newer term has a larger `LockIndex` on the same key.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct FencingToken {
    /// The lock key.
    pub key: String,
    /// The key's `LockIndex` right after this term's acquisition.
    pub lock_index: LockIndex,
    /// The session holding the lock.
    pub session: SessionId,
}

/// Why a term ended without resigning.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LossReason {
    /// The session was invalidated or could not be renewed.
    Session(SessionLoss),
    /// Another session holds the key now (`None`: no session holds it, e.g. force-released).
    LockTaken {
        /// The new holder, if any.
        holder: Option<SessionId>,
    },
    /// The key was deleted.
    LockDeleted,
}

impl std::fmt::Display for LossReason {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Self::Session(loss) => loss.fmt(formatter),
            Self::LockTaken { holder: Some(holder) } => {
                write!(formatter, "lock taken by session {holder}")
            }
            Self::LockTaken { holder: None } => {
                formatter.write_str("lock released by someone else")
            }
            Self::LockDeleted => formatter.write_str("lock key deleted"),
        }
    }
}

/// A lost term: which one and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LeadershipLoss {
    /// The term that ended.
    pub token: FencingToken,
    /// Why.
    pub reason: LossReason,
}

/// State shared with the renewer and monitor threads of one session.
struct TermShared {
    /// The term being led, if any.
    held: Mutex<Option<FencingToken>>,
    session_dead: AtomicBool,
    lost: AtomicBool,
    finished: AtomicBool,
    loss_sender: Sender<LeadershipLoss>,
}

impl TermShared {
    fn report_loss(&self, reason: LossReason) {
        let token = self.held.lock().unwrap_or_else(PoisonError::into_inner).clone();
        if self.finished.load(Ordering::Acquire) {
            return;
        }
        let Some(token) = token else { return };
        if !self.lost.swap(true, Ordering::AcqRel) {
            tracing::warn!(key = %token.key, lock_index = %token.lock_index, %reason, "leadership lost");
            // Bounded; the owner only needs the first report, so a full channel drops it.
            let _ = self.loss_sender.try_send(LeadershipLoss { token, reason });
        }
    }
}

struct SessionTerm {
    session: SessionId,
    renewer: SessionRenewer,
    shared: Arc<TermShared>,
}

/// Campaigns for, holds and resigns leadership of one key.
///
/// ```no_run
/// use std::time::Duration;
/// use sluice_kvstore_consul::{Leadership, LeadershipConfig};
/// # let client = sluice_kvstore_consul::ConsulClient::from_env()?;
/// let config = LeadershipConfig::new("sluice/sc/leader", "sc-1:9003", Duration::from_secs(10));
/// let mut leadership = Leadership::new(client, config);
/// let losses = leadership.losses();
/// let token = loop {
///     if let Some(token) = leadership.campaign(Duration::from_secs(30))? {
///         break token;
///     }
/// };
/// println!("leading with lock index {}", token.lock_index);
/// // Lead until `losses` yields (then stop acting as leader at once) or until shutdown:
/// # let _ = losses;
/// leadership.resign()?;
/// # Ok::<(), sluice_kvstore_consul::ConsulError>(())
/// ```
pub struct Leadership {
    client: ConsulClient,
    config: LeadershipConfig,
    term: Option<SessionTerm>,
    loss_sender: Sender<LeadershipLoss>,
    loss_receiver: Receiver<LeadershipLoss>,
}

impl std::fmt::Debug for Leadership {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("Leadership")
            .field("key", &self.config.key)
            .field("token", &self.fencing_token())
            .finish_non_exhaustive()
    }
}

impl Leadership {
    /// A candidate for `config.key`. Does no I/O until [`Self::campaign`].
    pub fn new(client: ConsulClient, config: LeadershipConfig) -> Self {
        let (loss_sender, loss_receiver) = crossbeam_channel::bounded(LOSS_EVENTS_MAX);
        Self { client, config, term: None, loss_sender, loss_receiver }
    }

    /// Loss events, one per lost term. Clone it into a `select!` beside other work.
    pub fn losses(&self) -> Receiver<LeadershipLoss> {
        self.loss_receiver.clone()
    }

    /// The current term's token while leading and not lost.
    pub fn fencing_token(&self) -> Option<FencingToken> {
        let term = self.term.as_ref()?;
        if term.shared.lost.load(Ordering::Acquire) {
            return None;
        }
        term.shared.held.lock().unwrap_or_else(PoisonError::into_inner).clone()
    }

    /// Whether this candidate leads now (acquired and no loss noticed).
    pub fn is_leader(&self) -> bool {
        self.fencing_token().is_some()
    }

    /// The session of the current campaign or term, if one exists.
    pub fn session(&self) -> Option<&SessionId> {
        self.term.as_ref().map(|term| &term.session)
    }

    /// Tries to become leader for up to `timeout`: `Some(token)` when it won (or already
    /// leads), `None` when another candidate still holds the key at the deadline.
    ///
    /// # Errors
    /// Consul errors (retriable ones may be retried by calling again).
    pub fn campaign(&mut self, timeout: Duration) -> Result<Option<FencingToken>, ConsulError> {
        if let Some(token) = self.fencing_token() {
            return Ok(Some(token));
        }
        let deadline = Instant::now() + timeout;
        loop {
            let session = self.live_session()?;
            match self.client.kv_acquire(&self.config.key, &self.config.value, &session) {
                Ok(true) => {
                    if let Some(token) = self.confirm_term(&session)? {
                        return Ok(Some(token));
                    }
                    continue;
                }
                Ok(false) => {}
                Err(ConsulError::InvalidSession { .. }) => {
                    // Expired (or the cluster lost its state): the next round makes a new one.
                    if let Some(term) = &self.term {
                        term.shared.session_dead.store(true, Ordering::Release);
                    }
                    if Instant::now() >= deadline {
                        return Ok(None);
                    }
                    continue;
                }
                Err(error) => return Err(error),
            }
            let now = Instant::now();
            if now >= deadline {
                return Ok(None);
            }
            self.wait_for_free_key(deadline - now)?;
        }
    }

    /// The live session, creating a fresh one after a loss.
    fn live_session(&mut self) -> Result<SessionId, ConsulError> {
        let usable = self.term.as_ref().is_some_and(|term| {
            !term.shared.session_dead.load(Ordering::Acquire)
                && !term.shared.lost.load(Ordering::Acquire)
        });
        if !usable {
            self.end_term();
            let session = self.client.session_create(&self.config.session)?;
            let shared = Arc::new(TermShared {
                held: Mutex::new(None),
                session_dead: AtomicBool::new(false),
                lost: AtomicBool::new(false),
                finished: AtomicBool::new(false),
                loss_sender: self.loss_sender.clone(),
            });
            let renewer_shared = Arc::clone(&shared);
            let renewer = SessionRenewer::start_with(
                self.client.clone(),
                session.clone(),
                self.config.session.ttl,
                move |loss| {
                    renewer_shared.session_dead.store(true, Ordering::Release);
                    renewer_shared.report_loss(LossReason::Session(loss));
                },
            );
            self.term = Some(SessionTerm { session, renewer, shared });
        }
        match &self.term {
            Some(term) => Ok(term.session.clone()),
            None => Err(ConsulError::Config { reason: "no session after creating one".into() }),
        }
    }

    /// After a successful acquire: reads the lock index and starts the monitor.
    fn confirm_term(&mut self, session: &SessionId) -> Result<Option<FencingToken>, ConsulError> {
        let Some(term) = &self.term else { return Ok(None) };
        let indexed = self.client.kv_get_indexed(&self.config.key)?;
        let Some(entry) = indexed.value.filter(|entry| entry.session.as_ref() == Some(session))
        else {
            // Lost between acquire and read (session invalidated): campaign again.
            return Ok(None);
        };
        let token = FencingToken {
            key: self.config.key.clone(),
            lock_index: entry.lock_index,
            session: session.clone(),
        };
        *term.shared.held.lock().unwrap_or_else(PoisonError::into_inner) = Some(token.clone());
        tracing::info!(key = %token.key, lock_index = %token.lock_index, session = %token.session, "leadership acquired");
        let snapshot = Indexed { index: indexed.index, value: Some(entry) };
        self.spawn_monitor(Arc::clone(&term.shared), token.clone(), snapshot)?;
        Ok(Some(token))
    }

    fn spawn_monitor(
        &self,
        shared: Arc<TermShared>,
        token: FencingToken,
        snapshot: Indexed<Option<KvEntry>>,
    ) -> Result<(), ConsulError> {
        let options = WatchOptions::with_wait(self.config.watch_wait);
        let mut watch =
            KeyWatch::starting_from(self.client.clone(), token.key.clone(), snapshot, options);
        std::thread::Builder::new()
            .name("consul-leadership-monitor".into())
            .spawn(move || monitor_lock(&mut watch, &shared, &token))
            .map(|_| ())
            .map_err(|error| ConsulError::Config {
                reason: format!("cannot start the leadership monitor: {error}"),
            })
    }

    /// Blocks until the key looks free (or `remaining` passes); pauses when it already is
    /// free, which means a lock delay is running.
    fn wait_for_free_key(&self, remaining: Duration) -> Result<(), ConsulError> {
        let indexed = self.client.kv_get_indexed(&self.config.key)?;
        let held_by_other =
            indexed.value.as_ref().and_then(|entry| entry.session.as_ref()).is_some();
        if !held_by_other {
            std::thread::sleep(self.config.retry_interval.min(remaining));
            return Ok(());
        }
        let wait = self.config.watch_wait.min(remaining).max(Duration::from_millis(1));
        let blocking = Blocking { index: indexed.index.max(crate::ConsulIndex::new(1)), wait };
        self.client.kv_get_at(&self.config.key, Some(blocking))?;
        Ok(())
    }

    /// Stops the current session's threads and destroys it (best effort), without releasing.
    fn end_term(&mut self) {
        if let Some(term) = self.term.take() {
            term.shared.finished.store(true, Ordering::Release);
            term.renewer.stop();
            if let Err(error) = self.client.session_destroy(&term.session) {
                tracing::debug!(%error, "could not destroy an abandoned session");
            }
        }
    }

    /// Gives up leadership (or the campaign): releases the lock if held, stops renewing and
    /// destroys the session.
    ///
    /// # Errors
    /// The first Consul error; the session is still destroyed when possible and otherwise
    /// expires after its TTL.
    pub fn resign(mut self) -> Result<(), ConsulError> {
        self.resign_in_place()
    }

    fn resign_in_place(&mut self) -> Result<(), ConsulError> {
        let Some(term) = self.term.take() else { return Ok(()) };
        term.shared.finished.store(true, Ordering::Release);
        let held = term.shared.held.lock().unwrap_or_else(PoisonError::into_inner).take();
        let released = match held {
            Some(token) => self.client.kv_release(&token.key, &term.session).map(|_| ()),
            None => Ok(()),
        };
        term.renewer.stop();
        let destroyed = self.client.session_destroy(&term.session);
        released.and(destroyed)
    }
}

impl Drop for Leadership {
    fn drop(&mut self) {
        if let Err(error) = self.resign_in_place() {
            tracing::warn!(%error, key = %self.config.key, "resigning on drop failed");
        }
    }
}

/// Watches the lock key while leading; reports when another session or nobody holds it.
fn monitor_lock(watch: &mut KeyWatch, shared: &TermShared, token: &FencingToken) {
    loop {
        if shared.finished.load(Ordering::Acquire) || shared.lost.load(Ordering::Acquire) {
            return;
        }
        let change = match watch.poll() {
            Ok(Some(change)) => change,
            // Errors: the watch backs off; a long outage is reported by the renewer.
            Ok(None) | Err(_) => continue,
        };
        let reason = match change.current {
            None => Some(LossReason::LockDeleted),
            Some(entry) if entry.session.as_ref() != Some(&token.session) => {
                Some(LossReason::LockTaken { holder: entry.session })
            }
            Some(_) => None,
        };
        if let Some(reason) = reason {
            shared.report_loss(reason);
            return;
        }
    }
}
