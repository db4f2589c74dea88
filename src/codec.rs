//! Record codecs of stored batches (attributes bits 0-2: 1 gzip, 2 snappy, 3 lz4, 4 zstd),
//! which the storage engine does not have: bounded decompression (ListOffsets by
//! timestamp, the log cleaner, the key check of compacted topics) and compression (the
//! log cleaner compresses a cleaned batch again with its own codec).
//!
//! Runs on: any shard (pure functions).

use bytes::{Bytes, BytesMut};
use kafka_protocol::compression::{Compressor, Decompressor, Gzip, Lz4, Snappy, Zstd};

/// Most bytes the records of one stored batch may expand to when the broker looks inside
/// it (ListOffsets, the log cleaner): a batch stored by any producer can be a
/// decompression bomb.
pub const DECOMPRESSED_BATCH_MAX_BYTES: u64 = 64 * 1024 * 1024;

/// The header of xerial-framed snappy (Java clients' SnappyOutputStream).
const SNAPPY_XERIAL_MAGIC: &[u8] = b"\x82SNAPPY\x00";

/// The records section of a compressed batch, decompressed (codec: attributes bits 0-2),
/// refused past `DECOMPRESSED_BATCH_MAX_BYTES`. ListOffsets uses it, and every store's log
/// cleaner and key check of compacted topics (`shards::Store::set_decompressor`).
pub fn decompress(codec: u8, compressed: &[u8]) -> Result<Vec<u8>, String> {
    use std::io::Read;
    let limit = DECOMPRESSED_BATCH_MAX_BYTES;
    let bounded = |r: &mut dyn Read| -> Result<Vec<u8>, String> {
        let mut out = Vec::new();
        r.take(limit + 1)
            .read_to_end(&mut out)
            .map_err(|e| format!("decompressing codec {codec}: {e}"))?;
        if out.len() as u64 > limit {
            return Err(format!(
                "batch records expand past {limit} bytes (codec {codec})"
            ));
        }
        Ok(out)
    };
    match codec {
        1 => bounded(&mut flate2::read::GzDecoder::new(compressed)),
        // Java clients frame snappy (xerial: magic header, then blocks); librdkafka sends
        // it raw. kafka-protocol's decoder handles the framed form; its fallback for the
        // raw form drops the first 8 bytes, so raw snappy is decoded here, its stated
        // length checked against the limit before anything is allocated.
        2 if compressed.starts_with(SNAPPY_XERIAL_MAGIC) => {
            let mut buf = Bytes::copy_from_slice(compressed);
            Snappy::decompress(&mut buf, |b: &mut Bytes| Ok(b.to_vec()))
                .map_err(|e| format!("decompressing codec {codec}: {e:#}"))
        }
        2 => {
            let len = snap::raw::decompress_len(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))?;
            if len as u64 > limit {
                return Err(format!(
                    "batch records expand past {limit} bytes (codec {codec})"
                ));
            }
            snap::raw::Decoder::new()
                .decompress_vec(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))
        }
        3 => bounded(
            &mut lz4::Decoder::new(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))?,
        ),
        4 => bounded(
            &mut zstd::stream::read::Decoder::new(compressed)
                .map_err(|e| format!("decompressing codec {codec}: {e}"))?,
        ),
        other => Err(format!("unknown compression codec {other}")),
    }
}

/// Compresses a batch's records with `codec` (attributes bits 0-2), as producers do; the
/// stores' compressor (`shards::Store::set_compressor`). The output is bounded by its input
/// (`plain` is at most a decompressed batch).
pub fn compress(codec: u8, plain: &[u8]) -> Result<Vec<u8>, String> {
    let mut out = BytesMut::with_capacity(plain.len() / 2 + 64);
    let r = match codec {
        1 => Gzip::compress(&mut out, |b: &mut BytesMut| {
            b.extend_from_slice(plain);
            Ok(())
        }),
        2 => Snappy::compress(&mut out, |b: &mut BytesMut| {
            b.extend_from_slice(plain);
            Ok(())
        }),
        3 => Lz4::compress(&mut out, |b: &mut BytesMut| {
            b.extend_from_slice(plain);
            Ok(())
        }),
        4 => Zstd::compress(&mut out, |b: &mut BytesMut| {
            b.extend_from_slice(plain);
            Ok(())
        }),
        other => return Err(format!("unknown compression codec {other}")),
    };
    r.map_err(|e| format!("compressing codec {codec}: {e:#}"))?;
    Ok(out.to_vec())
}

#[cfg(test)]
mod tests {
    use super::*;

    // Proves every codec's compression reads back through the bounded decompression.
    #[test]
    fn compress_round_trips() {
        let plain: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_be_bytes())
            .collect();
        for codec in 1..=4 {
            let c = compress(codec, &plain).unwrap();
            assert!(c.len() < plain.len(), "codec {codec}");
            assert_eq!(decompress(codec, &c).unwrap(), plain, "codec {codec}");
        }
        assert!(compress(5, &plain).is_err());
        // Raw snappy, as librdkafka sends it.
        let raw = snap::raw::Encoder::new().compress_vec(&plain).unwrap();
        assert_eq!(decompress(2, &raw).unwrap(), plain);
    }
}
