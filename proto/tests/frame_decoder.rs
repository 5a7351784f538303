//! Frame decoder: any split of a byte stream decodes identically, oversize frames are rejected
//! after four bytes, unknown keys and versions are typed and leave the stream usable.

mod common;

use proptest::prelude::*;
use sluice_proto::api::fetch::{FetchPartitionHeader, FetchPartitionResponse};
use sluice_proto::api::stream_fetch::{StreamFetchCredit, StreamFetchPush};
use sluice_proto::api::{api_versions::ApiVersionsRequest, ApiKey, ApiVersion, Decode};
use sluice_proto::error_code::ErrorCode;
use sluice_proto::frame::*;
use sluice_proto::ids::{CorrelationId, Offset, PartitionId};

#[derive(Debug, PartialEq)]
enum Event {
    Frame(FrameHeader, Vec<u8>),
    Error(FrameError),
}

fn drain(decoder: &mut FrameDecoder, events: &mut Vec<Event>) {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => events.push(Event::Frame(frame.header, frame.body.to_vec())),
            Ok(None) => return,
            Err(error) => {
                let fatal = error.is_fatal();
                events.push(Event::Error(error));
                if fatal {
                    return;
                }
            }
        }
    }
}

fn decode_with_splits(stream: &[u8], splits: &[usize]) -> Vec<Event> {
    let mut decoder = FrameDecoder::new(1024);
    let mut events = Vec::new();
    let mut start = 0;
    let mut cuts: Vec<usize> = splits.iter().map(|cut| cut % (stream.len() + 1)).collect();
    cuts.sort_unstable();
    cuts.push(stream.len());
    for cut in cuts {
        decoder.feed(&stream[start..cut]);
        start = cut;
        drain(&mut decoder, &mut events);
        if matches!(events.last(), Some(Event::Error(error)) if error.is_fatal()) {
            break;
        }
    }
    events
}

fn raw_frame(key: u16, version: u16, correlation_id: i32, body: &[u8]) -> Vec<u8> {
    let mut frame = Vec::new();
    frame.extend_from_slice(&(8 + body.len() as u32).to_be_bytes());
    frame.extend_from_slice(&key.to_be_bytes());
    frame.extend_from_slice(&version.to_be_bytes());
    frame.extend_from_slice(&correlation_id.to_be_bytes());
    frame.extend_from_slice(body);
    frame
}

fn sample_stream() -> Vec<u8> {
    let mut stream = Vec::new();
    encode_request(&mut stream, ApiVersion(0), CorrelationId(1), &ApiVersionsRequest).unwrap();
    stream.extend(raw_frame(9999, 0, 2, &[1, 2, 3]));
    stream.extend(raw_frame(ApiKey::Fetch.number(), 7, 3, &[]));
    let credit = StreamFetchCredit { stream: CorrelationId(1), credit_bytes: 10 };
    encode_request(&mut stream, ApiVersion(0), CorrelationId(4), &credit).unwrap();
    stream
}

#[test]
fn byte_by_byte_equals_whole() {
    let stream = sample_stream();
    let whole = decode_with_splits(&stream, &[]);
    assert_eq!(whole.len(), 4);
    let every_byte: Vec<usize> = (0..stream.len()).collect();
    assert_eq!(decode_with_splits(&stream, &every_byte), whole);
    assert!(matches!(
        &whole[1],
        Event::Error(FrameError::UnknownApiKey { api_key: 9999, correlation_id, frame_len: 15 })
            if *correlation_id == CorrelationId(2)
    ));
    assert!(matches!(
        &whole[2],
        Event::Error(FrameError::UnsupportedVersion { api_key: ApiKey::Fetch, api_version, .. })
            if *api_version == ApiVersion(7)
    ));
    let Event::Frame(header, body) = &whole[3] else { panic!("expected a frame") };
    assert_eq!(header.api_key, ApiKey::StreamFetchCredit);
    assert_eq!(StreamFetchCredit::decode(header.api_version, body).unwrap().credit_bytes, 10);
}

#[test]
fn oversize_rejected_after_four_bytes_without_allocation() {
    let mut decoder = FrameDecoder::new(FRAME_BYTES_MAX_DEFAULT);
    decoder.feed(&u32::MAX.to_be_bytes());
    let error = decoder.next_frame().unwrap_err();
    assert_eq!(error, FrameError::TooLarge { declared: u32::MAX, max: FRAME_BYTES_MAX_DEFAULT });
    assert_eq!(error.error_code(), ErrorCode::FrameTooLarge);
    assert!(error.is_fatal());
    assert_eq!(error.correlation_id(), None);
    assert_eq!(decoder.buffered_len(), 0);
    assert_eq!(
        decode_header(&u32::MAX.to_be_bytes(), FRAME_BYTES_MAX_DEFAULT),
        Err(FrameError::TooLarge { declared: u32::MAX, max: FRAME_BYTES_MAX_DEFAULT })
    );
}

#[test]
fn declared_length_below_header_is_fatal() {
    let mut decoder = FrameDecoder::new(1024);
    decoder.feed(&[0, 0, 0, 7]);
    assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { declared: 7 }));
    decoder.feed(&sample_stream());
    assert_eq!(decoder.next_frame(), Err(FrameError::TooShort { declared: 7 }));
}

#[test]
fn many_pushes_share_one_correlation_id() {
    let header = FrameHeader {
        api_key: ApiKey::StreamFetch,
        api_version: ApiVersion(0),
        correlation_id: CorrelationId(42),
    };
    let mut stream = Vec::new();
    let partition = FetchPartitionHeader::error(PartitionId(0), ErrorCode::None);
    for records in [&[1u8][..], &[2, 3][..]] {
        let push = StreamFetchPush::Records(FetchPartitionResponse { header: partition, records });
        encode_frame(&mut stream, &header, &push).unwrap();
    }
    // A pushed header written by hand with its records appended afterwards (the splice path).
    let start = begin_frame(&mut stream, &header);
    StreamFetchPush::encode_records_header(&partition, 1, &mut stream);
    finish_frame(&mut stream, start, 1).unwrap();
    stream.push(4);
    let end = StreamFetchPush::<&[u8]>::End { error_code: ErrorCode::None, next_offset: Offset(4) };
    encode_frame(&mut stream, &header, &end).unwrap();

    let mut decoder = FrameDecoder::new(1024);
    decoder.feed(&stream);
    let mut records = Vec::new();
    while let Some(frame) = decoder.next_frame().unwrap() {
        assert_eq!(frame.header, header);
        match StreamFetchPush::decode(frame.header.api_version, &frame.body).unwrap() {
            StreamFetchPush::Records(partition) => records.extend_from_slice(partition.records),
            StreamFetchPush::End { next_offset, .. } => assert_eq!(next_offset, Offset(4)),
        }
    }
    assert_eq!(records, [1, 2, 3, 4]);
}

#[test]
fn encode_rolls_back_on_error() {
    let mut out = vec![1, 2];
    let header = FrameHeader {
        api_key: ApiKey::ApiVersions,
        api_version: ApiVersion(3),
        correlation_id: CorrelationId(0),
    };
    assert!(encode_frame(&mut out, &header, &ApiVersionsRequest).is_err());
    assert_eq!(out, [1, 2]);
}

fn arbitrary_frame() -> impl Strategy<Value = Vec<u8>> {
    let key = prop_oneof![
        4 => proptest::sample::select(ApiKey::ALL).prop_map(ApiKey::number),
        1 => any::<u16>(),
    ];
    let version = prop_oneof![4 => Just(0u16), 1 => any::<u16>()];
    (key, version, any::<i32>(), proptest::collection::vec(any::<u8>(), 0..64)).prop_map(
        |(key, version, correlation_id, body)| raw_frame(key, version, correlation_id, &body),
    )
}

proptest! {
    #![proptest_config(common::proptest_config(512))]

    #[test]
    fn any_split_decodes_identically(
        frames in proptest::collection::vec(arbitrary_frame(), 0..8),
        tail in proptest::collection::vec(any::<u8>(), 0..16),
        splits in proptest::collection::vec(any::<usize>(), 0..24),
    ) {
        let mut stream: Vec<u8> = frames.concat();
        stream.extend(tail);
        let whole = decode_with_splits(&stream, &[]);
        prop_assert_eq!(decode_with_splits(&stream, &splits), whole);
    }
}
