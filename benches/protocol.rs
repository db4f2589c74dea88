//! Codec micro-benchmarks of the broker's hot paths: decoding a Produce request (records
//! stay shared `Bytes`), encoding a Fetch response around stored batches (no record copy),
//! and validating the produced batches as the storage does.

use bytes::{BufMut, Bytes, BytesMut};
use criterion::{Criterion, Throughput, criterion_group, criterion_main};
use kafka_protocol::messages::produce_request::{PartitionProduceData, TopicProduceData};
use kafka_protocol::messages::{ApiKey, ProduceRequest, RequestHeader, TopicName};
use kafka_protocol::protocol::{Encodable, StrBytes};
use osprey::protocol::fetch_response::{self, PartitionOut, TopicOut};

const PARTITIONS: i32 = 8;
/// One 16 KiB batch of 1 KiB records per partition, as the storage benches use.
const RECORDS_PER_BATCH: usize = 16;
const RECORD_BYTES: usize = 1024;

fn batch() -> Bytes {
    let b = shards::batch::build::batch(
        RECORDS_PER_BATCH,
        RECORD_BYTES,
        0,
        shards::batch::build::ProducerFields::NONE,
        b'x',
    );
    Bytes::from(b)
}

fn produce_frame() -> Bytes {
    let b = batch();
    let req = ProduceRequest::default()
        .with_acks(-1)
        .with_timeout_ms(30_000)
        .with_topic_data(vec![
            TopicProduceData::default()
                .with_name(TopicName(StrBytes::from_static_str("bench")))
                .with_partition_data(
                    (0..PARTITIONS)
                        .map(|p| {
                            PartitionProduceData::default()
                                .with_index(p)
                                .with_records(Some(b.clone()))
                        })
                        .collect(),
                ),
        ]);
    let version = 9;
    let header = RequestHeader::default()
        .with_request_api_key(ApiKey::Produce as i16)
        .with_request_api_version(version)
        .with_correlation_id(1);
    let mut buf = BytesMut::new();
    header
        .encode(&mut buf, ApiKey::Produce.request_header_version(version))
        .unwrap();
    req.encode(&mut buf, version).unwrap();
    buf.freeze()
}

fn bench_codec(c: &mut Criterion) {
    let frame = produce_frame();
    let mut g = c.benchmark_group("codec");
    g.throughput(Throughput::Bytes(frame.len() as u64));
    g.bench_function("decode produce v9, 8 x 16 KiB", |b| {
        b.iter(|| {
            let req = osprey::protocol::decode_request(frame.clone()).unwrap();
            let body: ProduceRequest = req.decode().unwrap();
            assert_eq!(body.topic_data[0].partition_data.len(), PARTITIONS as usize);
        })
    });
    let stored = batch();
    g.throughput(Throughput::Bytes(
        (stored.len() * PARTITIONS as usize) as u64,
    ));
    g.bench_function("encode fetch v12, 8 x 16 KiB (pieces)", |b| {
        b.iter(|| {
            let topics = vec![TopicOut {
                name: "bench".to_string(),
                partitions: (0..PARTITIONS)
                    .map(|p| PartitionOut {
                        partition: p,
                        error_code: 0,
                        high_watermark: 16,
                        last_stable_offset: 16,
                        log_start_offset: 0,
                        diverging_epoch: None,
                        aborted: None,
                        records: vec![stored.clone()],
                    })
                    .collect(),
            }];
            let (pieces, len) = fetch_response::encode(12, 1, 0, 0, 0, topics);
            assert!(len > stored.len() * PARTITIONS as usize && !pieces.is_empty());
        })
    });
    let mut many = BytesMut::new();
    for _ in 0..64 {
        many.put_slice(&stored);
    }
    let many = many.freeze();
    g.throughput(Throughput::Bytes(many.len() as u64));
    g.bench_function("validate 64 x 16 KiB batches (CRC32C)", |b| {
        b.iter(|| shards::batch::validate(&many, usize::MAX).unwrap())
    });
    g.finish();
}

criterion_group!(benches, bench_codec);
criterion_main!(benches);
