//! A minimal SPU speaking the control protocol to a real SC over TCP: registers, reads the SC's
//! updates, sends reports and requests. Dropping it closes the connection.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use sluice_proto::api::control::{
    AlterInSyncRequest, AlterInSyncResponse, ReplicaAssignment, ReplicaUpdate, SpuRegisterRequest,
    SpuRegisterResponse,
};
use sluice_proto::api::metadata::{Change, Changes};
use sluice_proto::api::{ApiKey, ApiVersion, Decode, Request};
use sluice_proto::frame::{encode_request, Frame, FrameDecoder};
use sluice_proto::ids::{CorrelationId, SpuId};
use sluice_proto::object::{Endpoint, PartitionKey};

use sluice_testkit::process::CONDITION_TIMEOUT;

/// A test SPU on one control connection.
pub struct TestSpu {
    stream: TcpStream,
    decoder: FrameDecoder,
    next_correlation_id: i32,
}

impl TestSpu {
    /// Connects to the SC's private address.
    pub fn connect(address: SocketAddr) -> TestSpu {
        let stream = TcpStream::connect(address).unwrap();
        stream.set_read_timeout(Some(Duration::from_millis(50))).unwrap();
        TestSpu { stream, decoder: FrameDecoder::new(64 << 20), next_correlation_id: 1 }
    }

    /// Connects and registers as `id`, which must be accepted.
    pub fn connect_registered(address: SocketAddr, id: i32) -> TestSpu {
        let mut spu = TestSpu::connect(address);
        assert_eq!(spu.register(id), SpuRegisterResponse::Accepted, "SPU {id} registers");
        spu
    }

    /// Sends `request`; returns its correlation id.
    pub fn send<R: Request>(&mut self, request: &R) -> CorrelationId {
        let mut out = Vec::new();
        let correlation_id = CorrelationId(self.next_correlation_id);
        self.next_correlation_id += 1;
        encode_request(&mut out, ApiVersion(0), correlation_id, request).unwrap();
        self.stream.write_all(&out).unwrap();
        correlation_id
    }

    /// The next frame whose key is not `Heartbeat` (heartbeats are skipped, not answered).
    pub fn next(&mut self) -> Frame {
        let deadline = Instant::now() + CONDITION_TIMEOUT;
        let mut chunk = [0u8; 8192];
        loop {
            while let Some(frame) = self.decoder.next_frame().unwrap() {
                // Heartbeats and security snapshots (sent at registration and on ACL or token
                // changes) are beside what these tests check.
                if !matches!(frame.header.api_key, ApiKey::Heartbeat | ApiKey::SecurityUpdate) {
                    return frame;
                }
            }
            assert!(Instant::now() < deadline, "no frame from the SC in time");
            match self.stream.read(&mut chunk) {
                Ok(0) => panic!("the SC closed the connection"),
                Ok(read) => self.decoder.feed(&chunk[..read]),
                Err(error) if error.kind() == std::io::ErrorKind::WouldBlock => {}
                Err(error) => panic!("read: {error}"),
            }
        }
    }

    /// The next frame, which must have `key`, decoded.
    pub fn next_as<T: for<'a> Decode<'a>>(&mut self, key: ApiKey) -> T {
        let frame = self.next();
        assert_eq!(frame.header.api_key, key);
        T::decode(frame.header.api_version, &frame.body).unwrap()
    }

    /// The next replica update, skipping SPU updates (peers' liveness changes come as those).
    pub fn next_replica_update(&mut self) -> ReplicaUpdate {
        loop {
            let frame = self.next();
            match frame.header.api_key {
                ApiKey::SpuUpdate => continue,
                ApiKey::ReplicaUpdate => {
                    return ReplicaUpdate::decode(frame.header.api_version, &frame.body).unwrap()
                }
                other => panic!("{other} instead of a replica update"),
            }
        }
    }

    /// Registers as `id` (4 cores, fixed endpoints) as a newly started process (a fresh
    /// incarnation).
    pub fn register(&mut self, id: i32) -> SpuRegisterResponse {
        static INCARNATIONS: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
        let incarnation = INCARNATIONS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        self.register_incarnation(id, incarnation)
    }

    /// Registers as `id` from the process `incarnation` (the same one again: a reconnection).
    pub fn register_incarnation(&mut self, id: i32, incarnation: u64) -> SpuRegisterResponse {
        self.send(&SpuRegisterRequest {
            id: SpuId(id),
            cores: 4,
            core_public_ports: vec![],
            core_private_ports: vec![],
            public_endpoint: Endpoint::new("127.0.0.1", 19005),
            private_endpoint: Endpoint::new("127.0.0.1", 19006),
            version: "test-0.1".into(),
            incarnation,
        });
        self.next_as(ApiKey::SpuRegister)
    }

    /// Sends an in-sync proposal and waits for its answer (skipping the SC's pushes).
    pub fn alter_in_sync(&mut self, request: &AlterInSyncRequest) -> AlterInSyncResponse {
        let correlation_id = self.send(request);
        loop {
            let frame = self.next();
            if frame.header.api_key == ApiKey::AlterInSync {
                assert_eq!(frame.header.correlation_id, correlation_id, "answers in order");
                return AlterInSyncResponse::decode(frame.header.api_version, &frame.body).unwrap();
            }
        }
    }

    /// Reads replica updates until one carries an assignment of `key` satisfying `condition`.
    pub fn wait_for_assignment(
        &mut self,
        key: &PartitionKey,
        condition: impl Fn(&ReplicaAssignment) -> bool,
    ) -> ReplicaAssignment {
        loop {
            let frame = self.next();
            if frame.header.api_key != ApiKey::ReplicaUpdate {
                continue;
            }
            let update = ReplicaUpdate::decode(frame.header.api_version, &frame.body).unwrap();
            let assignments: Vec<ReplicaAssignment> = match update.changes {
                Changes::Full(assignments) => assignments,
                Changes::Delta { changes, .. } => changes
                    .into_iter()
                    .filter_map(|change| match change {
                        Change::Upsert(assignment) => Some(assignment),
                        Change::Remove(_) => None,
                    })
                    .collect(),
            };
            if let Some(found) =
                assignments.into_iter().find(|found| found.key == *key && condition(found))
            {
                return found;
            }
        }
    }
}
