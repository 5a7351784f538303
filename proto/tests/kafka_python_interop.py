"""Interop helper for proto/tests/kafka_python.rs: builds and reads Kafka RecordBatch v2 with
kafka-python's own implementation (kafka.record.default_records), so that Sluice's encoder and
decoder are checked against an independent one.

Usage:
  kafka_python_interop.py build <out-file>   < spec.json
      Builds one batch per entry of spec["batches"] with DefaultRecordBatchBuilder and writes
      them back to back to <out-file>.
  kafka_python_interop.py read <in-file>
      Reads every batch in <in-file> with MemoryRecords/DefaultRecordBatch, checks the CRC and
      prints the decoded fields as JSON on stdout.

Bytes are hex strings in JSON; null keys/values are JSON null.
"""

import json
import sys

import kafka
import kafka.codec as codec
from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder
from kafka.record.memory_records import MemoryRecords

CODECS = {"none": 0, "gzip": 1, "snappy": 2, "lz4": 3, "zstd": 4}
AVAILABLE = {
    "none": True,
    "gzip": codec.has_gzip(),
    "snappy": codec.has_snappy(),
    "lz4": codec.has_lz4(),
    "zstd": codec.has_zstd(),
}


def unhex(value):
    return None if value is None else bytes.fromhex(value)


def enhex(value):
    return None if value is None else bytes(value).hex()


def require_codecs(names):
    missing = [name for name in names if not AVAILABLE[name]]
    if missing:
        sys.stderr.write(
            "kafka-python lacks codec libraries for %s; run deploy/dev/setup "
            "(pip install python-snappy lz4 zstandard)\n" % ", ".join(missing))
        sys.exit(3)


def build(out_path):
    spec = json.load(sys.stdin)
    require_codecs([batch["codec"] for batch in spec["batches"]])
    out = bytearray()
    for batch in spec["batches"]:
        producer = batch.get("producer") or {
            "producer_id": -1, "producer_epoch": -1, "base_sequence": -1}
        builder = DefaultRecordBatchBuilder(
            magic=2, compression_type=CODECS[batch["codec"]], is_transactional=False,
            producer_id=producer["producer_id"], producer_epoch=producer["producer_epoch"],
            base_sequence=producer["base_sequence"], batch_size=1 << 24)
        for offset, record in enumerate(batch["records"]):
            headers = [(key, unhex(value)) for key, value in record["headers"]]
            metadata = builder.append(
                offset, timestamp=record["timestamp"], key=unhex(record["key"]),
                value=unhex(record["value"]), headers=headers)
            if metadata is None:
                raise SystemExit("record %d did not fit" % offset)
        out += builder.build()
    with open(out_path, "wb") as handle:
        handle.write(out)


def read(in_path):
    with open(in_path, "rb") as handle:
        data = handle.read()
    records = MemoryRecords(data)
    batches = []
    position = 0
    while records.has_next():
        batch = records.next_batch()
        if not isinstance(batch, DefaultRecordBatch):
            raise SystemExit("not a v2 batch: %r" % (batch,))
        # Fields without a public property in every kafka-python version (2.0.2 has none for
        # the leader epoch, producer state and record count) come from kafka-python's own
        # header struct, applied to the batch's bytes.
        (_, length, leader_epoch, _, _, _, _, _, _, producer_id, producer_epoch,
         base_sequence, records_count) = DefaultRecordBatch.HEADER_STRUCT.unpack_from(
             data, position)
        position += DefaultRecordBatch.AFTER_LEN_OFFSET + length
        crc_valid = batch.validate_crc()
        decoded = []
        for record in batch:
            decoded.append({
                "offset": record.offset,
                "timestamp": record.timestamp,
                "key": enhex(record.key),
                "value": enhex(record.value),
                "headers": [[key, enhex(value)] for key, value in record.headers],
            })
        batches.append({
            "base_offset": batch.base_offset,
            "leader_epoch": leader_epoch,
            "magic": batch.magic,
            "crc_valid": crc_valid,
            "compression_type": batch.compression_type,
            "timestamp_type": batch.timestamp_type,
            "last_offset_delta": batch.last_offset_delta,
            "first_timestamp": batch.first_timestamp,
            "max_timestamp": batch.max_timestamp,
            "producer_id": producer_id,
            "producer_epoch": producer_epoch,
            "base_sequence": base_sequence,
            "records_count": records_count,
            "kafka_python": kafka.__version__,
            "records": decoded,
        })
    json.dump({"batches": batches, "available": AVAILABLE}, sys.stdout)


def main():
    if len(sys.argv) != 3 or sys.argv[1] not in ("build", "read"):
        raise SystemExit(__doc__)
    if sys.argv[1] == "build":
        build(sys.argv[2])
    else:
        read(sys.argv[2])


if __name__ == "__main__":
    main()
