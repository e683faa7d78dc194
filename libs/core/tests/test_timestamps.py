from datetime import UTC, datetime

from google.protobuf.timestamp_pb2 import Timestamp

from postwire.core.timestamps import stamp_now


def test_a_stamp_reads_back_as_the_current_utc_time() -> None:
    before = datetime.now(UTC)
    ts = Timestamp()
    stamp_now(ts)
    after = datetime.now(UTC)
    assert before.replace(microsecond=0) <= ts.ToDatetime(UTC) <= after
    assert 0 <= ts.nanos < 1_000_000_000
