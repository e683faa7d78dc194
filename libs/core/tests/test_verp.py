"""VERP return paths: round trip, length limit, and rejection of anything not made with our secret."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from postwire.core.ids import new_message_id
from postwire.core.settings import PostwireSettings, verp_secret_bytes
from postwire.core.verp import InvalidVerp, decode, encode, matches

SECRET = b"test-secret-0123456789abcdef"
DOMAIN = "bounces.postwire.test"
RECIPIENTS = [
    "a@example.com",
    "First.Last+tag@Example.COM",
    "UPPER@EXAMPLE.ORG",
    "jörg@bücher.de",
    "user@xn--bcher-kva.de",
    "用户@例子.广告",
    '"quoted local"@example.net',
    ("x" * 64) + "@" + ".".join(["a" * 63] * 3) + ".com",  # longest legal address
]


@pytest.mark.parametrize("recipient", RECIPIENTS)
def test_round_trip_and_local_part_fits(recipient: str) -> None:
    mid = new_message_id()
    address = encode(mid, recipient, SECRET, DOMAIN)
    local, _, domain = address.rpartition("@")
    assert len(local.encode()) <= 64 and address.isascii() and domain == DOMAIN
    decoded = decode(address, SECRET, DOMAIN)
    assert decoded.message_id == mid
    assert matches(decoded, recipient)
    assert not matches(decoded, "someone-else@example.com")


def test_longest_message_id_still_fits() -> None:
    address = encode("z" * 32, RECIPIENTS[-1], SECRET, DOMAIN)
    assert len(address.rpartition("@")[0]) == 64
    assert decode(address, SECRET).message_id == "z" * 32


def test_case_changes_by_mtas_are_tolerated() -> None:
    mid = new_message_id()
    address = encode(mid, "Bob@Example.com", SECRET, DOMAIN)
    decoded = decode(f"<{address.upper()}>", SECRET, DOMAIN.upper())
    assert decoded.message_id == mid
    assert matches(decoded, "bob@EXAMPLE.com")


def test_idn_forms_of_a_recipient_match_each_other() -> None:
    decoded = decode(encode(new_message_id(), "Jörg@Bücher.de", SECRET, DOMAIN), SECRET)
    assert matches(decoded, "jörg@xn--bcher-kva.de")


def test_every_single_character_change_is_rejected() -> None:
    address = encode(new_message_id(), "a@example.com", SECRET, DOMAIN)
    local = address.rpartition("@")[0]
    for i, ch in enumerate(local):
        if ch == "-" or i < 3:
            continue
        other = "1" if ch != "1" else "2"
        with pytest.raises(InvalidVerp):
            decode(local[:i] + other + local[i + 1:] + "@" + DOMAIN, SECRET)


def test_wrong_secret_is_rejected() -> None:
    address = encode(new_message_id(), "a@example.com", SECRET, DOMAIN)
    with pytest.raises(InvalidVerp, match="tag"):
        decode(address, b"another-secret-0123456789")


def test_same_local_part_on_another_domain_is_rejected() -> None:
    address = encode(new_message_id(), "a@example.com", SECRET, DOMAIN)
    moved = address.replace(DOMAIN, "bounces.evil.test")
    with pytest.raises(InvalidVerp, match="tag"):
        decode(moved, SECRET)
    with pytest.raises(InvalidVerp, match="bounce domain"):
        decode(moved, SECRET, DOMAIN)


def test_recipient_swap_is_rejected() -> None:
    mid = new_message_id()
    a = encode(mid, "a@example.com", SECRET, DOMAIN).split("-")
    b = encode(mid, "b@example.com", SECRET, DOMAIN).split("-")
    with pytest.raises(InvalidVerp):
        decode("-".join([a[0], a[1], b[2], a[3]]), SECRET)


@pytest.mark.parametrize("address", [
    "", "postmaster@bounces.postwire.test", "pw1-abc@bounces.postwire.test", "not an address",
    "pw1-" + "0" * 26 + "-" + "0" * 10 + "-" + "0" * 16 + "@bounces.postwire.test",
    "pw1-" + "0" * 26 + "-" + "0" * 10 + "-" + "0" * 16 + "x@bounces.postwire.test",
])
def test_forged_or_foreign_addresses_are_rejected(address: str) -> None:
    with pytest.raises(InvalidVerp):
        decode(address, SECRET)


def test_encode_refuses_malformed_input() -> None:
    with pytest.raises(ValueError):
        encode("Has-Upper", "a@example.com", SECRET, DOMAIN)
    with pytest.raises(ValueError):
        encode(new_message_id(), "no-at-sign", SECRET, DOMAIN)
    with pytest.raises(ValueError):
        encode(new_message_id(), "a@example.com", b"", DOMAIN)


def test_secret_from_the_environment_wins(tmp_path: Path) -> None:
    settings = PostwireSettings(data_dir=tmp_path, verp_secret="s" * 32)  # type: ignore[arg-type]
    assert verp_secret_bytes(settings) == b"s" * 32
    assert not (tmp_path / "verp.key").exists()


def test_secret_file_is_created_once_private_and_reused(tmp_path: Path) -> None:
    settings = PostwireSettings(data_dir=tmp_path / "data", verp_secret=None)
    first = verp_secret_bytes(settings)
    assert len(first) == 64
    key = tmp_path / "data" / "verp.key"
    assert stat.S_IMODE(os.stat(key).st_mode) == 0o600
    assert verp_secret_bytes(settings) == first
    assert [p.name for p in key.parent.iterdir()] == ["verp.key"]  # no temporary file left behind


def test_a_short_secret_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="at least"):
        verp_secret_bytes(PostwireSettings(data_dir=tmp_path, verp_secret="short"))  # type: ignore[arg-type]
