//! # sluice-sc: the Streaming Controller
//!
//! The SC is the authoritative coordinator of a Sluice cluster. It keeps every cluster object
//! (SPUs, SPU groups, topics, partitions) in a [`store::MetadataStore`], caches it in memory,
//! runs one controller per object kind, assigns replicas to `(SPU, core)` pairs, elects leaders
//! and tells SPUs what to host. It never runs an async runtime: plain threads and bounded
//! crossbeam channels only.
//!
//! ## Where the pieces fit
//!
//! ```text
//!   MetadataStore (embedded files | Consul)
//!        |  list(kind) at revision R, then watch(kinds, R): Put / Delete / Resync
//!        v
//!   listener thread ---- changes ----> pure reducer (changes, cache) -> actions
//!        ^                                   |  e.g. "topic T needs 12 partitions":
//!        |                                   |  assignment::assign_replicas(cluster, load, request)
//!        |                                   v
//!        +------- store writes <------ action step (put-if-version with the fencing token,
//!                 (and SPU messages)        messages to SPUs)
//! ```
//!
//! - [`store`]: the trait every backend implements, the embedded file-backed backend, the Consul
//!   backend and the typed JSON layer. Every backend runs the same conformance suite
//!   (`sc/tests/store_conformance.rs`).
//! - [`assignment`]: pure, I/O-free core-aware replica placement. The topic
//!   reducer calls it with the cache's view of the cluster; the action step writes the
//!   resulting partitions. It only ever adds partitions; it never moves existing ones.
//! - [`cache`]: the in-memory copy of every object, written only by the cache sync thread from
//!   the store's watch; everyone else reads immutable [`cache::Snapshot`]s.
//! - [`controllers`]: the reconcile loop (listener, pure [`controllers::reducer`], action step)
//!   for SPU groups, SPUs, topics and partitions.
//! - [`server`]: the public admin and metadata API; [`admin_client`] is its blocking client.
//! - [`spu_link`]: the SPU connection manager (registration, updates, heartbeats, live status,
//!   in-sync set proposals).
//! - [`ha`]: which SC is active (a Consul session lock), standbys, takeover, fencing of every
//!   write with the term's token ([`store::FencedStore`]), fail-stop on loss.
//! - [`config`] and [`process`]: the `sluice-sc` binary's flags and thread start-up.
//! - [`security`]: ACL enforcement settings, the authorizer over the cached bindings, tokens;
//!   [`server::access`] checks each public request.
//!
//! ## Thread map (who owns what, which channels connect them)
//!
//! ```text
//!  main thread: parse config, Sc::start, wait for SIGTERM/SIGINT (signal-hook sets the shared
//!  |            shutdown flag), Sc::shutdown joins the threads below; exits 1 after a lost
//!  |            leadership
//!  |
//!  +-- sc-alive             (Consul only) passes this SC's Consul TTL check every third of its
//!  |                        TTL; the leadership session depends on that check.
//!  |
//!  +-- sc-leadership        (Consul only) campaigns for the lock; on winning starts the term
//!  |                        (the two threads below, over a FencedStore, then opens the gates);
//!  |                        on a loss sets the shutdown flag; at shutdown joins the term's
//!  |                        threads, releases the lock, deregisters the check. With the
//!  |                        embedded store Sc::start starts the term itself.
//!  |
//!  +-- sc-cache-sync        OWNS the cache contents. store.list(every kind) -> store.watch()
//!  |                        crossbeam Receiver<WatchEvent> (bounded, WATCH_CHANNEL_EVENTS_MAX)
//!  |                        -> applies events -> publishes Arc<Snapshot>; on Resync lists again.
//!  |                        Signals subscribers on bounded(1) channels (coalesced "changed").
//!  |
//!  +-- sc-controllers       wakes on the "changed" signal or every 500 ms; pure reduce over the
//!  |                        snapshot; writes actions to the store (put/delete-if-version).
//!  |                        Never writes the cache: its writes come back through the watch.
//!  |
//!  +-- sc-public-accept --> sc-admin-<peer> (one per connection, <= server::CONNECTIONS_MAX):
//!  |                        a standby (gate closed) answers NotController; active: reads snapshots, writes admin changes to the store, waits for the
//!  |                        cache to show them; a metadata watch holds a "changed" receiver
//!  |                        and pushes updates from the same thread.
//!  |
//!  +-- sc-private-accept -> sc-spu-<peer> (one per SPU, <= spu_link::SPU_CONNECTIONS_MAX):
//!                           a standby refuses with NotController; active: registration, full then delta updates on "changed", heartbeats,
//!                           SPU liveness and live replica status written to the store,
//!                           leaders' in-sync set proposals judged and stored; the SPU is
//!                           offline as soon as its connection ends.
//! ```
//!
//! Shared state is exactly: the `Arc<dyn MetadataStore>` (internally synchronized; the term's
//! threads get it wrapped in a `FencedStore`), the `Arc<Cache>` (one writer), the two gates
//! (`OnceLock`s opened once per process) and one `AtomicBool` shutdown flag. Socket and channel waits
//! time out every 100 ms (the controller every 500 ms) to check that flag, so shutdown is
//! prompt; connection threads are detached and exit on their next check.
//!
//! ## Invariants every later module relies on
//!
//! - Every store write is conditional (put-if-version, delete-if-version) and may carry the
//!   active SC's fencing token, so a deposed SC cannot overwrite a newer leader's decisions.
//! - Store versions are strictly increasing across the whole store and across restarts; a
//!   watcher that falls behind the bounded history is told to resync with a full list.

#![forbid(unsafe_op_in_unsafe_fn)]
#![warn(missing_docs)]

pub mod admin_client;
pub mod assignment;
pub mod cache;
pub mod config;
pub mod controllers;
pub mod ha;
pub mod metrics;
pub mod objects;
pub mod process;
pub mod security;
pub mod server;
pub mod spu_link;
pub mod store;
