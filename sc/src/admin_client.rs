//! A small blocking client for the SC's public API: one TCP connection, one request at a time.
//!
//! For tests, the CLI and tools until the native SDK (`sluice-client`) covers administration.
//! Frames are read by hand (not with the strict decoder) so that error responses echoing an
//! unknown API key can be read too; a declared length above [`RESPONSE_BYTES_MAX`] is refused
//! before anything of that size is allocated.
//!
//! ```no_run
//! use sluice_sc::admin_client::AdminClient;
//! use sluice_proto::object::{TopicName, TopicSpec};
//! let mut client = AdminClient::connect("127.0.0.1:9003".parse().unwrap())?;
//! let response = client.create_topic(TopicName::new("orders").unwrap(), TopicSpec::computed(3, 1))?;
//! assert!(response.error_code.is_ok(), "{:?}", response.message);
//! # Ok::<(), sluice_sc::admin_client::ClientError>(())
//! ```

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

use sluice_proto::api::admin::{
    AdminResponse, CreateSpuGroupRequest, CreateTopicRequest, DeleteSpuGroupRequest,
    DeleteTopicRequest, DescribeTopicRequest, DescribeTopicResponse, ListPartitionsRequest,
    ListPartitionsResponse, ListSpuGroupsRequest, ListSpuGroupsResponse, ListSpusRequest,
    ListSpusResponse, ListTopicsRequest, ListTopicsResponse, RebalanceLeadersRequest,
    RebalanceLeadersResponse, RegisterSpuRequest, UnregisterSpuRequest,
};
use sluice_proto::api::metadata::{
    MetadataRequest, MetadataResponse, MetadataWatchRequest, MetadataWatchUpdate,
};
use sluice_proto::api::{ApiVersion, Decode, Request};
use sluice_proto::codec::{DecodeError, EncodeError};
use sluice_proto::frame::encode_request;
use sluice_proto::ids::{CorrelationId, SpuId};
use sluice_proto::object::{SpuGroupName, SpuGroupSpec, SpuSpec, TopicName, TopicSpec};

/// Largest response accepted.
pub const RESPONSE_BYTES_MAX: u32 = 64 * 1024 * 1024;
/// Default bound on connecting and on waiting for one response.
pub const TIMEOUT_DEFAULT: Duration = Duration::from_secs(10);

/// What a call can fail with. Retrying is safe for reads; for a mutation whose response was
/// lost (`Io`, `Closed`) the outcome is unknown: list before retrying.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    /// Connecting, sending or receiving failed (including a timeout).
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
    /// The request does not encode.
    #[error("encode: {0}")]
    Encode(#[from] EncodeError),
    /// The response does not decode.
    #[error("decode: {0}")]
    Decode(#[from] DecodeError),
    /// The response is not the one expected (wrong correlation id or oversized).
    #[error("unexpected response: {0}")]
    Unexpected(String),
}

/// A raw response frame.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RawFrame {
    /// The API key number, as sent.
    pub api_key: u16,
    /// The API version, as sent.
    pub api_version: u16,
    /// The correlation id.
    pub correlation_id: i32,
    /// The body.
    pub body: Vec<u8>,
}

/// A blocking connection to the SC's public API.
pub struct AdminClient {
    stream: TcpStream,
    next_correlation_id: i32,
}

impl AdminClient {
    /// Connects with [`TIMEOUT_DEFAULT`] for connecting and for each response.
    pub fn connect(address: SocketAddr) -> Result<AdminClient, ClientError> {
        let stream = TcpStream::connect_timeout(&address, TIMEOUT_DEFAULT)?;
        stream.set_read_timeout(Some(TIMEOUT_DEFAULT))?;
        stream.set_nodelay(true)?;
        Ok(AdminClient { stream, next_correlation_id: 1 })
    }

    /// Sets the bound on waiting for one response.
    pub fn set_timeout(&mut self, timeout: Duration) -> Result<(), ClientError> {
        self.stream.set_read_timeout(Some(timeout))?;
        Ok(())
    }

    /// Writes raw bytes (for tests of malformed input).
    pub fn send_raw(&mut self, bytes: &[u8]) -> Result<(), ClientError> {
        self.stream.write_all(bytes)?;
        Ok(())
    }

    /// Reads one response frame.
    pub fn read_frame(&mut self) -> Result<RawFrame, ClientError> {
        let mut prefix = [0u8; 4];
        self.stream.read_exact(&mut prefix)?;
        let declared = u32::from_be_bytes(prefix);
        if !(8..=RESPONSE_BYTES_MAX).contains(&declared) {
            return Err(ClientError::Unexpected(format!("frame declares {declared} bytes")));
        }
        let mut rest = vec![0u8; declared as usize];
        self.stream.read_exact(&mut rest)?;
        Ok(RawFrame {
            api_key: u16::from_be_bytes([rest[0], rest[1]]),
            api_version: u16::from_be_bytes([rest[2], rest[3]]),
            correlation_id: i32::from_be_bytes([rest[4], rest[5], rest[6], rest[7]]),
            body: rest.split_off(8),
        })
    }

    /// Sends `request` and returns its correlation id without waiting.
    pub fn send<R: Request>(&mut self, request: &R) -> Result<CorrelationId, ClientError> {
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id = self.next_correlation_id.wrapping_add(1);
        let mut out = Vec::new();
        encode_request(&mut out, ApiVersion(0), correlation_id, request)?;
        self.stream.write_all(&out)?;
        Ok(correlation_id)
    }

    /// Sends `request` and decodes its response as `T`.
    pub fn call<R: Request, T: for<'a> Decode<'a>>(
        &mut self,
        request: &R,
    ) -> Result<T, ClientError> {
        let correlation_id = self.send(request)?;
        self.receive(correlation_id)
    }

    /// Reads the next frame and decodes it as `T`, checking the correlation id.
    pub fn receive<T: for<'a> Decode<'a>>(
        &mut self,
        correlation_id: CorrelationId,
    ) -> Result<T, ClientError> {
        let frame = self.read_frame()?;
        if frame.correlation_id != correlation_id.get() {
            return Err(ClientError::Unexpected(format!(
                "correlation id {} instead of {correlation_id}",
                frame.correlation_id
            )));
        }
        Ok(T::decode(ApiVersion(frame.api_version), &frame.body)?)
    }

    /// Creates a topic.
    pub fn create_topic(
        &mut self,
        name: TopicName,
        spec: TopicSpec,
    ) -> Result<AdminResponse, ClientError> {
        self.call(&CreateTopicRequest { name, spec, dry_run: false })
    }

    /// Deletes a topic.
    pub fn delete_topic(&mut self, name: TopicName) -> Result<AdminResponse, ClientError> {
        self.call(&DeleteTopicRequest { name })
    }

    /// Lists every topic.
    pub fn list_topics(&mut self) -> Result<ListTopicsResponse, ClientError> {
        self.call(&ListTopicsRequest { names: None })
    }

    /// Describes one topic.
    pub fn describe_topic(
        &mut self,
        name: TopicName,
    ) -> Result<DescribeTopicResponse, ClientError> {
        self.call(&DescribeTopicRequest { name })
    }

    /// Registers a custom SPU.
    pub fn register_spu(&mut self, spec: SpuSpec) -> Result<AdminResponse, ClientError> {
        self.call(&RegisterSpuRequest { spec })
    }

    /// Unregisters a custom SPU.
    pub fn unregister_spu(&mut self, id: SpuId) -> Result<AdminResponse, ClientError> {
        self.call(&UnregisterSpuRequest { id })
    }

    /// Lists every SPU.
    pub fn list_spus(&mut self) -> Result<ListSpusResponse, ClientError> {
        self.call(&ListSpusRequest)
    }

    /// Creates an SPU group.
    pub fn create_spu_group(
        &mut self,
        name: SpuGroupName,
        spec: SpuGroupSpec,
    ) -> Result<AdminResponse, ClientError> {
        self.call(&CreateSpuGroupRequest { name, spec })
    }

    /// Deletes an SPU group.
    pub fn delete_spu_group(&mut self, name: SpuGroupName) -> Result<AdminResponse, ClientError> {
        self.call(&DeleteSpuGroupRequest { name })
    }

    /// Lists every SPU group.
    pub fn list_spu_groups(&mut self) -> Result<ListSpuGroupsResponse, ClientError> {
        self.call(&ListSpuGroupsRequest)
    }

    /// Lists partitions (of one topic, or all).
    pub fn list_partitions(
        &mut self,
        topic: Option<TopicName>,
    ) -> Result<ListPartitionsResponse, ClientError> {
        self.call(&ListPartitionsRequest { topic })
    }

    /// Moves leadership back to preferred replicas that are online and in sync (of `topic`, or
    /// of every topic).
    pub fn rebalance_leaders(
        &mut self,
        topic: Option<TopicName>,
    ) -> Result<RebalanceLeadersResponse, ClientError> {
        self.call(&RebalanceLeadersRequest { topic })
    }

    /// Client metadata of `topics` (all when `None`).
    pub fn metadata(
        &mut self,
        topics: Option<Vec<TopicName>>,
    ) -> Result<MetadataResponse, ClientError> {
        self.call(&MetadataRequest { topics })
    }

    /// Subscribes this connection to metadata updates; read them with
    /// [`AdminClient::next_watch_update`]. Use a separate connection for other calls.
    pub fn watch_metadata(
        &mut self,
        topics: Option<Vec<TopicName>>,
    ) -> Result<CorrelationId, ClientError> {
        self.send(&MetadataWatchRequest { topics })
    }

    /// The next pushed metadata update of the subscription `correlation_id`.
    pub fn next_watch_update(
        &mut self,
        correlation_id: CorrelationId,
    ) -> Result<MetadataWatchUpdate, ClientError> {
        self.receive(correlation_id)
    }
}
