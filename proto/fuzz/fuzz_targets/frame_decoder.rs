//! Feeds arbitrary bytes through `FrameDecoder` in pseudo-random chunkings and checks that
//! every chunking yields the same frames and errors as one whole feed and as `decode_header`
//! over the buffer; then decodes every frame body as every known message type, and re-encodes
//! whatever decodes to check it decodes back to the same value. Any panic is a bug.

#![no_main]

use std::ops::Range;

use sluice_proto::api::admin::*;
use sluice_proto::api::api_versions::*;
use sluice_proto::api::control::*;
use sluice_proto::api::fetch::*;
use sluice_proto::api::list_offsets::*;
use sluice_proto::api::metadata::*;
use sluice_proto::api::produce::*;
use sluice_proto::api::replication::*;
use sluice_proto::api::stream_fetch::*;
use sluice_proto::api::{ApiVersion, Decode, Encode};
use sluice_proto::frame::{decode_header, FrameDecoder, FrameError, FrameHeader};

/// Small enough that fuzz inputs reach the limit; large enough for real bodies.
const FRAME_BYTES_MAX: u32 = 4096;

#[derive(Debug, PartialEq)]
enum Event {
    Frame(FrameHeader, Vec<u8>),
    Error(FrameError),
}

/// Drains every frame available; stops after a fatal error.
fn drain(decoder: &mut FrameDecoder, events: &mut Vec<Event>) -> bool {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => events.push(Event::Frame(frame.header, frame.body.to_vec())),
            Ok(None) => return true,
            Err(error) => {
                let fatal = error.is_fatal();
                events.push(Event::Error(error));
                if fatal {
                    return false;
                }
            }
        }
    }
}

fn decode_chunked(stream: &[u8], mut seed: u64) -> Vec<Event> {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX);
    let mut events = Vec::new();
    let mut rest = stream;
    while !rest.is_empty() {
        seed = seed.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        let len = ((seed >> 33) as usize % 17 + 1).min(rest.len());
        decoder.feed(&rest[..len]);
        rest = &rest[len..];
        if !drain(&mut decoder, &mut events) {
            break;
        }
    }
    events
}

fn decode_in_place(stream: &[u8]) -> Vec<Event> {
    let mut events = Vec::new();
    let mut position = 0;
    loop {
        match decode_header(&stream[position..], FRAME_BYTES_MAX) {
            Ok(None) => return events,
            Ok(Some(located)) => {
                let body = &stream[position..][located.body.clone()];
                events.push(Event::Frame(located.header, body.to_vec()));
                position += located.frame_len();
            }
            Err(error) => {
                let fatal = error.is_fatal();
                if let FrameError::UnknownApiKey { frame_len, .. }
                | FrameError::UnsupportedVersion { frame_len, .. } = &error
                {
                    position += frame_len;
                }
                events.push(Event::Error(error));
                if fatal {
                    return events;
                }
            }
        }
    }
}

/// Decodes `body` as the type; whatever decodes must survive a re-encode and decode unchanged.
macro_rules! check {
    ($ty:ty, $version:expr, $body:expr) => {
        if let Ok(value) = <$ty as Decode>::decode($version, $body) {
            let mut out = Vec::new();
            value.encode($version, &mut out).expect("a decoded value re-encodes");
            let again =
                <$ty as Decode>::decode($version, &out).expect("a re-encoded value decodes");
            assert_eq!(again, value);
        }
    };
}

fn check_produce(version: ApiVersion, body: &[u8]) {
    if let Ok(request) = ProduceRequest::<Range<usize>>::decode(version, body) {
        let view = request.map_records(|range| &body[range]);
        let mut out = Vec::new();
        view.encode(version, &mut out).expect("a decoded produce re-encodes");
        let again = ProduceRequest::<Range<usize>>::decode(version, &out).expect("decodes again");
        assert_eq!(again.map_records(|range| &out[range]), view);
    }
}

fn decode_every_type(version: ApiVersion, body: &[u8]) {
    check_produce(version, body);
    check!(ProduceResponse, version, body);
    check!(FetchRequest, version, body);
    check!(FetchResponse<&[u8]>, version, body);
    check!(StreamFetchRequest, version, body);
    check!(StreamFetchPush<&[u8]>, version, body);
    check!(StreamFetchCredit, version, body);
    check!(StreamFetchCancel, version, body);
    check!(ListOffsetsRequest, version, body);
    check!(ListOffsetsResponse, version, body);
    check!(ApiVersionsRequest, version, body);
    check!(ApiVersionsResponse, version, body);
    check!(FollowerFetchRequest, version, body);
    check!(LeaderEpochEndOffsetRequest, version, body);
    check!(LeaderEpochEndOffsetResponse, version, body);
    check!(MetadataRequest, version, body);
    check!(MetadataResponse, version, body);
    check!(MetadataWatchRequest, version, body);
    check!(MetadataWatchUpdate, version, body);
    check!(AdminResponse, version, body);
    check!(CreateTopicRequest, version, body);
    check!(DeleteTopicRequest, version, body);
    check!(ListTopicsRequest, version, body);
    check!(ListTopicsResponse, version, body);
    check!(DescribeTopicRequest, version, body);
    check!(DescribeTopicResponse, version, body);
    check!(RegisterSpuRequest, version, body);
    check!(UnregisterSpuRequest, version, body);
    check!(ListSpusRequest, version, body);
    check!(ListSpusResponse, version, body);
    check!(CreateSpuGroupRequest, version, body);
    check!(DeleteSpuGroupRequest, version, body);
    check!(ListSpuGroupsRequest, version, body);
    check!(ListSpuGroupsResponse, version, body);
    check!(ListPartitionsRequest, version, body);
    check!(ListPartitionsResponse, version, body);
    check!(SpuRegisterRequest, version, body);
    check!(SpuRegisterResponse, version, body);
    check!(HeartbeatRequest, version, body);
    check!(HeartbeatResponse, version, body);
    check!(SpuUpdate, version, body);
    check!(ReplicaUpdate, version, body);
    check!(RequestSnapshot, version, body);
    check!(LiveReplicaStatus, version, body);
    check!(AlterInSyncRequest, version, body);
    check!(AlterInSyncResponse, version, body);
    check!(RebalanceLeadersRequest, version, body);
    check!(RebalanceLeadersResponse, version, body);
    check!(AlterTopicPartitionsRequest, version, body);
    check!(ReassignPartitionsRequest, version, body);
    check!(ReassignPartitionsResponse, version, body);
    check!(DecommissionSpuRequest, version, body);
}

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    let Some((seed_bytes, stream)) = data.split_first_chunk::<8>() else {
        return;
    };
    let seed = u64::from_le_bytes(*seed_bytes);
    let mut single = FrameDecoder::new(FRAME_BYTES_MAX);
    single.feed(stream);
    let mut at_once = Vec::new();
    drain(&mut single, &mut at_once);
    assert_eq!(decode_chunked(stream, seed), at_once);
    assert_eq!(decode_in_place(stream), at_once);
    // Bodies as the framing delivers them, and the raw stream as one body.
    for event in &at_once {
        if let Event::Frame(header, body) = event {
            decode_every_type(header.api_version, body);
        }
    }
    decode_every_type(ApiVersion(0), stream);
});
