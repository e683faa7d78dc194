"""OpenSSL-backed RSA signing gives dkimpy exactly the signature its own code would."""

from __future__ import annotations

import base64
import hashlib

import dkim
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from dkim.crypto import RSASSA_PKCS1_v1_5_sign, parse_pem_private_key

from postwire.dispatcher import dkim_rsa

MESSAGE = b"From: a@example.com\r\nTo: b@example.org\r\nSubject: hi\r\n\r\n" + b"body line\r\n" * 50


def _pem(bits: int) -> bytes:
    key = rsa.generate_private_key(public_exponent=65537, key_size=bits)
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.TraditionalOpenSSL,
                             serialization.NoEncryption())


def test_the_signature_bytes_equal_dkimpys_own() -> None:
    for bits in (1024, 2048):
        key = parse_pem_private_key(_pem(bits))
        for algorithm in (hashlib.sha256, hashlib.sha1):
            digest = algorithm(b"canonicalised headers")
            assert dkim_rsa.rsa_sign(digest, key) == RSASSA_PKCS1_v1_5_sign(digest, key)


def test_a_message_signed_through_dkim_sign_verifies_against_the_public_key() -> None:
    pem = _pem(2048)
    public = serialization.load_pem_private_key(pem, None).public_key().public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    record = b"v=DKIM1; k=rsa; p=" + base64.b64encode(public)
    dkim_rsa.install()
    signed = dkim.sign(MESSAGE, b"s1", b"example.com", pem, include_headers=[b"from", b"to", b"subject"])
    assert dkim.RSASSA_PKCS1_v1_5_sign is dkim_rsa.rsa_sign
    assert dkim.verify(signed + MESSAGE, dnsfunc=lambda name, timeout=5: record)
    assert not dkim.verify(signed + MESSAGE.replace(b"body", b"bodY"), dnsfunc=lambda name, timeout=5: record)
