"""The sandbox inbox on disk: what is written, how it is listed and read back, the cap, and ids that
could reach outside the folder."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from postwire.core import sandbox_store as store

RAW = (b"From: =?utf-8?q?J=C3=BCrgen?= <jurgen@example.com>\r\nTo: a@nowhere.invalid, b@nowhere.invalid\r\n"
       b"Subject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n  from the sandbox\r\nMIME-Version: 1.0\r\n"
       b"Content-Type: text/plain; charset=utf-8\r\n\r\nHello\r\n")
T0 = datetime(2025, 3, 14, 9, 30, 15, 123456, tzinfo=UTC)


def test_a_message_is_stored_as_its_bytes_and_an_index_entry(tmp_path: Path) -> None:
    folder = tmp_path / "sandbox"
    msg = store.store_message(folder, "bounce+x@bounces.test", ["a@nowhere.invalid", "b@nowhere.invalid"],
                              RAW, helo="dispatcher.test", peer="127.0.0.1", now=T0)
    assert msg.id.startswith("20250314T093015.123456Z-") and store.is_message_id(msg.id)
    assert (folder / f"{msg.id}.eml").read_bytes() == RAW
    assert json.loads((folder / f"{msg.id}.json").read_text()) == {
        "id": msg.id, "mail_from": "bounce+x@bounces.test",
        "recipients": ["a@nowhere.invalid", "b@nowhere.invalid"],
        "received_at": "2025-03-14T09:30:15.123456+00:00",
        "size": len(RAW), "subject": "Grüße from the sandbox", "from": "Jürgen <jurgen@example.com>",
        "to": "a@nowhere.invalid, b@nowhere.invalid", "helo": "dispatcher.test", "peer": "127.0.0.1"}
    assert sorted(p.name for p in folder.iterdir()) == [f"{msg.id}.eml", f"{msg.id}.json"]  # no leftovers

    [listed] = store.list_messages(folder)
    assert listed == msg and listed.raw is None
    read = store.read_message(folder, msg.id)
    assert read is not None and read.raw == RAW and read.received_at == T0
    assert read.email()["Subject"].split() == ["Grüße", "from", "the", "sandbox"]
    assert read.email().get_content().strip() == "Hello"


def test_newest_first_with_limit_and_offset(tmp_path: Path) -> None:
    ids = [store.store_message(tmp_path, "", [f"r{i}@x.test"], RAW, now=T0 + timedelta(seconds=i)).id
           for i in range(5)]
    assert [m.id for m in store.list_messages(tmp_path, limit=2)] == [ids[4], ids[3]]
    assert [m.id for m in store.list_messages(tmp_path, limit=2, offset=2)] == [ids[2], ids[1]]
    assert [m.id for m in store.list_messages(tmp_path, limit=10, offset=4)] == [ids[0]]
    assert store.list_messages(tmp_path, limit=10, offset=5) == []
    assert store.list_messages(tmp_path, limit=0) == [] and store.list_messages(tmp_path, offset=-1) == []
    assert store.count_messages(tmp_path) == 5
    assert store.list_messages(tmp_path / "never-made") == [] and store.count_messages(tmp_path / "no") == 0


def test_only_the_newest_are_kept(tmp_path: Path) -> None:
    ids = [store.store_message(tmp_path, "", ["r@x.test"], RAW, keep=3, now=T0 + timedelta(seconds=i)).id
           for i in range(5)]
    assert [m.id for m in store.list_messages(tmp_path)] == ids[:1:-1]
    assert sorted(p.stem for p in tmp_path.iterdir()) == sorted(ids[2:] * 2)  # .eml and .json each
    assert store.read_message(tmp_path, ids[0]) is None


@pytest.mark.parametrize("bad", ["", "..", "../etc/passwd", "/etc/passwd", "x.json",
                                 "20250314T093015.123456Z-" + "0" * 31 + "/",
                                 "../20250314T093015.123456Z-" + "0" * 32,
                                 "20250314T093015.123456Z-" + "A" * 32,
                                 "20250314T093015.123456Z-" + "0" * 32 + "\n"])
def test_read_message_takes_message_ids_only(tmp_path: Path, bad: str) -> None:
    folder = tmp_path / "sandbox"
    store.store_message(folder, "", ["r@x.test"], RAW)
    (tmp_path / "passwd.json").write_text("{}")
    assert store.read_message(folder, bad) is None
    assert not store.delete_message(folder, bad)


def test_a_well_formed_id_that_is_not_there_is_none(tmp_path: Path) -> None:
    assert store.read_message(tmp_path, store.new_message_id()) is None


def test_delete_message(tmp_path: Path) -> None:
    keep, gone = (store.store_message(tmp_path, "", ["r@x.test"], RAW).id for _ in range(2))
    assert store.delete_message(tmp_path, gone) and not store.delete_message(tmp_path, gone)
    assert [m.id for m in store.list_messages(tmp_path)] == [keep]


def test_what_a_reader_cannot_use_is_skipped_and_swept(tmp_path: Path) -> None:
    good = store.store_message(tmp_path, "", ["r@x.test"], RAW, now=T0)
    half_written = store.new_message_id(T0 + timedelta(seconds=1))  # .eml there, no .json yet
    (tmp_path / f"{half_written}.eml").write_bytes(RAW)
    broken = store.new_message_id(T0 + timedelta(seconds=2))
    (tmp_path / f"{broken}.json").write_text("{not json")
    (tmp_path / f".{good.id}.eml.1234abcd.tmp").write_bytes(b"partial")
    assert [m.id for m in store.list_messages(tmp_path)] == [good.id]
    assert store.read_message(tmp_path, half_written) is None and store.read_message(tmp_path, broken) is None
    store.sweep(tmp_path)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(
        [f"{good.id}.eml", f"{good.id}.json", f"{broken}.json"])


def test_a_message_without_the_usual_headers_is_still_stored(tmp_path: Path) -> None:
    msg = store.store_message(tmp_path, "", ["r@x.test"], b"no headers at all\r\n")
    assert (msg.subject, msg.header_from, msg.header_to) == ("", "", "")
    read = store.read_message(tmp_path, msg.id)
    assert read is not None and read.raw == b"no headers at all\r\n"
    with pytest.raises(ValueError, match="read_message"):
        store.list_messages(tmp_path)[0].email()
