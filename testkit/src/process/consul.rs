//! Consul agents for tests: `consul agent -dev` children of the test (their own ports and data
//! directory, killed on drop), from `sluice-kvstore-consul`'s `test-harness` feature, the one
//! place that knows how to start and wait for one. `SLUICE_CONSUL_BIN` names the binary
//! (deploy/dev/install-consul puts one in `.consul/bin/`).

pub use sluice_kvstore_consul::testing::{
    consul_binary, ConsulAgent, ConsulAgentBuilder, HarnessError,
};

/// A plain development agent, or the test fails with why it could not start one.
pub fn consul_agent() -> ConsulAgent {
    ConsulAgent::start().unwrap_or_else(|error| panic!("{error}"))
}
