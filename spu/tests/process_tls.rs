//! TLS with real processes: an SC (private listener with TLS) and `sluice-spu` children with
//! `--tls-*`, certificates from a dev CA in a temporary directory.
//!
//! What is checked: an SPU registers over mutual TLS and serves produce and fetch through TLS
//! on its shared and per-core ports, never with sendfile; the SC refuses a registration whose
//! certificate names another SPU, naming both; a leader refuses a follower fetch whose
//! certificate names another SPU; certificates of another CA are refused both ways; plaintext
//! on a TLS port and TLS on a plaintext port are told apart clearly and the SPU lives on;
//! replication with RF 3 and acks `all` over mutual TLS loses nothing acknowledged when the
//! leader is killed; rotating the SPU's certificate files while a producer and a tailing
//! consumer run loses nothing and new connections get the new certificate.

mod process_common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;

use process_common::replicated::{log_batches, read_all, register_custom, Replicated};
use process_common::tls::{Pki, CLUSTER};
use process_common::{
    batch, follower_fetch_request, metric_sum, record_values, scrape, start_spu, wait_for,
    EmbeddedSc, ServerProcess, SpuClient, CONDITION_TIMEOUT,
};
use sluice_proto::api::control::{SpuRegisterRequest, SpuRegisterResponse};
use sluice_proto::api::fetch::{FetchResponse, Isolation};
use sluice_proto::api::produce::Acks;
use sluice_proto::api::{ApiKey, ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::{encode_frame, FrameDecoder, FrameHeader};
use sluice_proto::ids::{CorrelationId, Offset, PartitionId, SpuId};
use sluice_proto::object::{Endpoint, PartitionKey, TopicName, TopicSpec};
use sluice_tls::rustls::pki_types::pem::PemObject;
use sluice_tls::rustls::pki_types::CertificateDer;
use sluice_tls::{looks_like_tls, spu_name, ClientStream, TlsError};

/// An SC with TLS on its private listener and SPU 1 with TLS, `cores` cores.
struct TlsCluster {
    spu: sluice_testkit::process::SpuProcess,
    sc: EmbeddedSc,
    pki: Pki,
    _dir: tempfile::TempDir,
}

impl TlsCluster {
    fn start(cores: u16, extra: &[&str]) -> TlsCluster {
        let dir = tempfile::tempdir().expect("temporary directory");
        let pki = Pki::new("test CA");
        let sc = EmbeddedSc::start_with(pki.sc_args(EmbeddedSc::args(&dir.path().join("sc"))));
        register_custom(&sc, 1);
        let mut flags = pki.spu_flags(&pki.spu_files(1), "optional");
        flags.extend(extra.iter().map(|flag| (*flag).to_owned()));
        let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
        // Returns once the SPU wrote its ready file: it registered over mutual TLS.
        let spu = start_spu(1, sc.private_address, &dir.path().join("spu"), cores, &flags);
        TlsCluster { spu, sc, pki, _dir: dir }
    }

    fn client(&self, address: SocketAddr) -> SpuClient {
        SpuClient::connect_tls(address, &self.pki.client(None), &spu_name(1, CLUSTER))
            .expect("a TLS connection to the SPU")
    }

    /// Creates a topic (RF 1) and waits until the SPU serves every partition through TLS.
    fn create_topic(&self, name: &str, partitions: u32) -> TopicName {
        let topic = TopicName::new(name).unwrap();
        let created = self
            .sc
            .admin()
            .create_topic(topic.clone(), TopicSpec::computed(partitions, 1))
            .expect("create a topic");
        assert!(created.error_code.is_ok(), "{created:?}");
        let mut client = self.client(self.spu.public_address);
        for partition in 0..partitions {
            wait_for("the partition to be served", || {
                let (header, _) =
                    client.fetch(&topic, partition, Offset(0), (0, 0), Isolation::ReadUncommitted);
                (header.error_code == ErrorCode::None).then_some(())
            });
        }
        topic
    }
}

/// Produces `count` one-record batches; returns the acknowledged (offset, value) pairs.
fn produce_values(
    client: &mut SpuClient,
    topic: &TopicName,
    partition: u32,
    prefix: &str,
    count: usize,
    acks: Acks,
) -> Vec<(Offset, Vec<u8>)> {
    (0..count)
        .map(|index| {
            let value = format!("{prefix}-{index}-{}", "x".repeat(1000)).into_bytes();
            let outcome = client.produce(topic, partition, &batch(&[&value], 1), acks);
            assert_eq!(outcome.error_code, ErrorCode::None, "record {index}");
            (outcome.base_offset.expect("an offset"), value)
        })
        .collect()
}

#[test]
fn an_spu_registers_over_mutual_tls_and_serves_through_tls_without_sendfile() {
    // Without direct reads and the tail cache a plaintext fetch would use sendfile: TLS must
    // copy through rustls instead.
    let cluster = TlsCluster::start(2, &["--direct-reads=false", "--tail-cache-bytes=0"]);
    let topic = cluster.create_topic("secure", 2);
    for partition in 0..2 {
        let mut shared = cluster.client(cluster.spu.public_address);
        let produced = produce_values(&mut shared, &topic, partition, "shared", 50, Acks::Leader);
        for address in cluster.spu.core_addresses.clone() {
            let mut client = cluster.client(address);
            let fetched = client.fetch_values(&topic, partition, Offset(0), produced.len());
            assert_eq!(fetched, produced, "partition {partition} through {address}");
        }
    }
    let metrics = scrape(cluster.spu.metrics_address);
    assert_eq!(metric_sum(&metrics, "sluice_spu_fetch_zero_copy_bytes_total"), 0);
    assert!(metric_sum(&metrics, "sluice_spu_fetch_copied_bytes_total") > 0, "{metrics}");
}

/// Sends a registration as `claimed` over `stream`; returns the SC's answer.
fn register_as(stream: &mut ClientStream, claimed: i32) -> SpuRegisterResponse {
    let request = SpuRegisterRequest {
        id: SpuId(claimed),
        cores: 1,
        core_public_ports: vec![1],
        core_private_ports: vec![2],
        public_endpoint: Endpoint::new("127.0.0.1", 1),
        private_endpoint: Endpoint::new("127.0.0.1", 2),
        version: "test".into(),
        incarnation: 1,
    };
    let header = FrameHeader {
        api_key: ApiKey::SpuRegister,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(0),
    };
    let mut out = Vec::new();
    encode_frame(&mut out, &header, &request).unwrap();
    stream.write_all(&out).unwrap();
    stream.flush().unwrap();
    let mut decoder = FrameDecoder::new(1 << 20);
    let mut chunk = [0u8; 4096];
    stream.socket().set_read_timeout(Some(CONDITION_TIMEOUT)).unwrap();
    loop {
        if let Some(frame) = decoder.next_frame().unwrap() {
            return SpuRegisterResponse::decode(frame.header.api_version, &frame.body).unwrap();
        }
        let read = stream.read(&mut chunk).expect("the SC's answer");
        assert!(read > 0, "the SC closed without an answer");
        decoder.feed(&chunk[..read]);
    }
}

#[test]
fn the_sc_refuses_a_registration_whose_certificate_names_another_spu() {
    let dir = tempfile::tempdir().unwrap();
    let pki = Pki::new("test CA");
    let sc = EmbeddedSc::start_with(pki.sc_args(EmbeddedSc::args(&dir.path().join("sc"))));
    register_custom(&sc, 5001);
    register_custom(&sc, 5002);
    let certificate = pki.spu_files(5001);
    let tls = pki.client(Some(&certificate));
    let connect = || {
        let socket = TcpStream::connect(sc.private_address).unwrap();
        // The SPU verifies the SC by its name, whatever its address.
        let mut stream = ClientStream::connect(socket, tls.config(), "sc.default").unwrap();
        stream.handshake(CONDITION_TIMEOUT).expect("mutual TLS with the SC");
        stream
    };
    match register_as(&mut connect(), 5002) {
        SpuRegisterResponse::Refused { error_code, reason } => {
            assert_eq!(error_code, ErrorCode::AuthorizationFailed);
            assert!(reason.contains("spu-5001.default"), "the certificate's identity: {reason}");
            assert!(reason.contains("claims SPU 5002"), "the id claimed: {reason}");
        }
        accepted => panic!("a certificate of SPU 5001 registered as 5002: {accepted:?}"),
    }
    // The same certificate registers as its own id.
    assert_eq!(register_as(&mut connect(), 5001), SpuRegisterResponse::Accepted);
    // A client without a certificate does not get past the handshake.
    let anonymous = pki.client(None);
    let socket = TcpStream::connect(sc.private_address).unwrap();
    let mut stream = ClientStream::connect(socket, anonymous.config(), "sc.default").unwrap();
    let refused = stream.handshake(CONDITION_TIMEOUT).and_then(|()| {
        // TLS 1.3: the server's refusal arrives after the client's handshake finished.
        let mut byte = [0u8; 1];
        stream.socket().set_read_timeout(Some(CONDITION_TIMEOUT)).unwrap();
        match stream.read(&mut byte) {
            Ok(0) => Err(TlsError::Incomplete("closed")),
            Ok(_) => Ok(()),
            Err(source) => Err(TlsError::Handshake { peer: String::new(), source }),
        }
    });
    assert!(refused.is_err(), "the SC's private listener took a client without certificate");
}

/// A TLS connection to `address` presenting `certificate`, or the handshake's error (with TLS
/// 1.3 a client certificate is refused after the client's side finished: the first read
/// reports it).
fn tls_exchange(
    address: SocketAddr,
    tls: &sluice_tls::ClientTls,
    server_name: &str,
) -> Result<SpuClient, String> {
    let mut client =
        SpuClient::connect_tls(address, tls, server_name).map_err(|error| error.to_string())?;
    let request = sluice_proto::api::api_versions::ApiVersionsRequest;
    client.send(&request);
    match client.read_frame_or_eof(CONDITION_TIMEOUT) {
        Ok(Some(_)) => Ok(client),
        Ok(None) => Err("no answer".into()),
        Err(()) => Err("closed".into()),
    }
}

#[test]
fn the_public_listeners_may_present_a_certificate_of_another_ca() {
    // Clients trust a CA of their own; the cluster's links keep the cluster CA.
    let clients = Pki::new("clients CA");
    let public = clients.issue("public", &[&spu_name(1, CLUSTER), "127.0.0.1"]);
    let flags = [
        format!("--public-tls-cert={}", public.cert.display()),
        format!("--public-tls-key={}", public.key.display()),
        format!("--public-tls-ca={}", clients.ca_path().display()),
    ];
    let flags: Vec<&str> = flags.iter().map(String::as_str).collect();
    // Registration at the SC (private TLS, cluster CA) succeeded when `start` returns.
    let cluster = TlsCluster::start(1, &flags);
    let topic = TopicName::new("public-ca").unwrap();
    let created = cluster.sc.admin().create_topic(topic.clone(), TopicSpec::computed(1, 1));
    assert!(created.expect("create a topic").error_code.is_ok());
    let name = spu_name(1, CLUSTER);
    let mut client =
        SpuClient::connect_tls(cluster.spu.public_address, &clients.client(None), &name)
            .expect("a client of the clients' CA connects to the public port");
    wait_for("the partition to be served", || {
        let (header, _) = client.fetch(&topic, 0, Offset(0), (0, 0), Isolation::ReadUncommitted);
        (header.error_code == ErrorCode::None).then_some(())
    });
    let produced = produce_values(&mut client, &topic, 0, "public", 10, Acks::Leader);
    assert_eq!(client.fetch_values(&topic, 0, Offset(0), produced.len()), produced);
    // A client trusting only the cluster CA refuses the public certificate, ...
    let refused =
        SpuClient::connect_tls(cluster.spu.public_address, &cluster.pki.client(None), &name);
    assert!(refused.is_err(), "the public port presented the cluster certificate");
    // ... and the private port still presents the cluster certificate and wants one of it.
    let private = cluster.spu.core_private_addresses[0];
    let own = cluster.pki.spu_files(2);
    tls_exchange(private, &cluster.pki.client(Some(&own)), &name).expect("private, cluster CA");
    let from_clients = tls_exchange(private, &clients.client(Some(&public)), &name);
    assert!(from_clients.is_err(), "the private port accepted the clients' CA");
}

#[test]
fn other_cas_and_the_wrong_protocol_are_refused_clearly_and_the_spu_lives_on() {
    let mut cluster = TlsCluster::start(1, &[]);
    let topic = cluster.create_topic("guarded", 1);
    let private = cluster.spu.core_private_addresses[0];
    let public = cluster.spu.public_address;
    let stranger = Pki::new("another CA");
    let stranger_spu = stranger.spu_files(2);

    // A certificate of another CA on the private port: refused.
    let from_stranger =
        tls_exchange(private, &stranger.client(Some(&stranger_spu)), "spu-1.default");
    assert!(from_stranger.is_err(), "a certificate of another CA was accepted");
    // The private port requires a certificate.
    let anonymous = tls_exchange(private, &cluster.pki.client(None), "spu-1.default");
    assert!(anonymous.is_err(), "the private port accepted a client without certificate");
    // A client trusting another CA refuses the SPU.
    let error = SpuClient::connect_tls(public, &stranger.client(None), "spu-1.default")
        .err()
        .expect("a client trusting another CA connected");
    assert!(error.to_string().contains("certificate"), "{error}");
    // A certificate of this CA works on both ports.
    let own = cluster.pki.spu_files(2);
    tls_exchange(private, &cluster.pki.client(Some(&own)), "spu-1.default").expect("private");
    tls_exchange(public, &cluster.pki.client(Some(&own)), "spu-1.default").expect("public");
    wait_for("handshake failures counted", || {
        let failures = metric_sum(
            &scrape(cluster.spu.metrics_address),
            "sluice_spu_tls_handshake_failures_total",
        );
        (failures >= 2).then_some(())
    });

    // Plaintext on the TLS port: the answer is a TLS record, then the connection closes.
    let mut plaintext = SpuClient::connect(public);
    plaintext.send(&sluice_proto::api::api_versions::ApiVersionsRequest);
    let answer = plaintext.read_raw(CONDITION_TIMEOUT).expect("an answer");
    assert!(looks_like_tls(&answer), "plaintext on a TLS port got {answer:?}");
    let rest = plaintext.read_raw(CONDITION_TIMEOUT);
    assert!(matches!(rest.as_deref(), Ok([]) | Err(_)), "still open: {rest:?}");

    // TLS on a plaintext port (another SPU, without TLS): the TLS client reports an alert.
    let plain = process_common::Cluster::start(1);
    let error = SpuClient::connect_tls(
        plain.spu.public_address,
        &cluster.pki.client(None),
        "spu-1.default",
    )
    .err()
    .expect("TLS to a plaintext port connected");
    assert!(error.to_string().to_lowercase().contains("alert"), "{error}");
    let mismatches =
        metric_sum(&scrape(plain.spu.metrics_address), "sluice_spu_tls_port_mismatches_total");
    assert_eq!(mismatches, 1);
    let mut plain = plain;
    plain.spu.child_mut().assert_running();

    // The TLS SPU lives on and serves.
    cluster.spu.child_mut().assert_running();
    let mut client = cluster.client(public);
    let produced = produce_values(&mut client, &topic, 0, "after", 5, Acks::Leader);
    assert_eq!(client.fetch_values(&topic, 0, Offset(0), 5), produced);
    let metrics = scrape(cluster.spu.metrics_address);
    assert!(metric_sum(&metrics, "sluice_spu_tls_port_mismatches_total") >= 1, "{metrics}");
}

/// A follower fetch claiming `claimed` over a TLS connection presenting `presented`'s
/// certificate; the partition's error code.
fn follower_fetch_as(
    cluster: &Replicated,
    leader: i32,
    topic: &TopicName,
    presented: i32,
    claimed: i32,
) -> ErrorCode {
    let pki = cluster.tls.as_ref().unwrap();
    let tls = pki.client(Some(&pki.spu_files(presented)));
    let address = cluster.spus[leader as usize - 1].as_ref().unwrap().core_private_addresses[0];
    let mut client = SpuClient::connect_tls(address, &tls, &spu_name(leader, CLUSTER))
        .expect("mutual TLS with the leader");
    let request = follower_fetch_request(SpuId(claimed), topic, 0, Offset(0), None, (0, 0));
    let frame = client.call(&request);
    let response = FetchResponse::<&[u8]>::decode(frame.header.api_version, &frame.body).unwrap();
    response.topics[0].partitions[0].header.error_code
}

#[test]
fn replication_over_mutual_tls_loses_nothing_acknowledged_when_the_leader_dies() {
    let mut cluster = Replicated::start_tls(3);
    let topic = cluster.create_topic("replicated", 1, 3, 2);
    let key = PartitionKey::new(topic.clone(), PartitionId(0));
    let (leader, mut client) = cluster.leader_client(&topic, 0);
    let acknowledged = produce_values(&mut client, &topic, 0, "first", 50, Acks::All);
    drop(client);
    let entry = cluster.partition(&topic, 0);
    assert_eq!(entry.status.in_sync_replicas.len(), 3);
    let leader_log = log_batches(&cluster.data_dir(leader.get()), leader.get(), &key);
    assert_eq!(leader_log.len(), 50);
    for spu in 1..=3 {
        assert_eq!(log_batches(&cluster.data_dir(spu), spu, &key), leader_log, "SPU {spu}");
    }

    // A follower's certificate decides who it is, not its claim.
    let follower = (1..=3).find(|spu| *spu != leader.get()).unwrap();
    let other = (1..=3).find(|spu| *spu != leader.get() && *spu != follower).unwrap();
    assert_eq!(
        follower_fetch_as(&cluster, leader.get(), &topic, follower, other),
        ErrorCode::AuthorizationFailed
    );
    assert_ne!(
        follower_fetch_as(&cluster, leader.get(), &topic, follower, follower),
        ErrorCode::AuthorizationFailed
    );
    let leader_metrics = scrape(cluster.spu(leader.get()).metrics_address);
    assert_eq!(metric_sum(&leader_metrics, "sluice_spu_identity_refusals_total"), 1);

    // kill -9 of the leader: an in-sync follower takes over and serves every acknowledged
    // record.
    cluster.kill(leader.get());
    wait_for("a new leader", || {
        let entry = cluster.partition(&topic, 0);
        (entry.spec.leader != leader).then_some(())
    });
    let (_, mut client) = cluster.leader_client(&topic, 0);
    let more = produce_values(&mut client, &topic, 0, "second", 20, Acks::All);
    assert_eq!(more.first().unwrap().0, Offset(50), "the new leader continues at the old end");
    let read = read_all(&mut cluster, &topic);
    for (offset, value) in acknowledged.iter().chain(&more) {
        assert_eq!(read.get(offset), Some(value), "acknowledged record at {offset}");
    }
    assert_eq!(read.len(), 70, "no record twice, nothing else");
}

#[test]
fn rotating_the_certificate_under_a_running_producer_and_consumer_loses_nothing() {
    let cluster = TlsCluster::start(1, &[]);
    let topic = cluster.create_topic("rotated", 1);
    let files = cluster.pki.spu_files(1);
    let old_der = CertificateDer::from_pem_file(&files.cert).unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    // How many records the producer had acknowledged when it stopped (usize::MAX: running).
    let produced = Arc::new(std::sync::atomic::AtomicUsize::new(usize::MAX));
    // A tailing consumer on a connection opened before the rotation, reading committed records
    // as they come until it has every acknowledged one.
    let consumer = {
        let mut client = cluster.client(cluster.spu.public_address);
        let (topic, produced) = (topic.clone(), Arc::clone(&produced));
        std::thread::spawn(move || {
            let mut read = Vec::new();
            let mut next = Offset(0);
            while read.len() < produced.load(Ordering::Acquire) {
                let (header, records) =
                    client.fetch(&topic, 0, next, (100, 1), Isolation::ReadCommitted);
                assert_eq!(header.error_code, ErrorCode::None);
                for (offset, value) in record_values(&records) {
                    if offset >= next {
                        next = offset.next();
                        read.push((offset, value));
                    }
                }
            }
            read
        })
    };
    let producer = {
        let mut client = cluster.client(cluster.spu.public_address);
        let (topic, stop) = (topic.clone(), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut acknowledged = Vec::new();
            while !stop.load(Ordering::Relaxed) || acknowledged.len() < 200 {
                let index = acknowledged.len();
                let value = format!("rotating-{index}").into_bytes();
                let outcome = client.produce(&topic, 0, &batch(&[&value], 1), Acks::Leader);
                assert_eq!(outcome.error_code, ErrorCode::None, "record {index}");
                acknowledged.push((outcome.base_offset.unwrap(), value));
            }
            acknowledged
        })
    };
    // New key and certificate, written over the files the SPU loaded.
    cluster.pki.issue("spu-1", &[&spu_name(1, CLUSTER), "127.0.0.1"]);
    let new_der = CertificateDer::from_pem_file(&files.cert).unwrap();
    assert_ne!(old_der, new_der);
    let presented = |client: &SpuClient| match client.stream() {
        ClientStream::Tls(stream) => stream.conn.peer_certificates().unwrap()[0].clone(),
        ClientStream::Plain(_) => unreachable!("a TLS client"),
    };
    wait_for("new connections to get the new certificate", || {
        let client = cluster.client(cluster.spu.public_address);
        (presented(&client) == new_der).then_some(())
    });
    stop.store(true, Ordering::Relaxed);
    let acknowledged = producer.join().expect("the producer (on its first connection)");
    produced.store(acknowledged.len(), Ordering::Release);
    let tailed = consumer.join().expect("the consumer (on its first connection)");
    assert_eq!(tailed, acknowledged, "the consumer read every acknowledged record, once, in order");
    let mut client = cluster.client(cluster.spu.public_address);
    let fetched = client.fetch_values(&topic, 0, Offset(0), acknowledged.len());
    assert_eq!(fetched, acknowledged, "every acknowledged record, once, in order");
}
