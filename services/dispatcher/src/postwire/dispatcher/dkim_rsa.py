"""RSA signatures for dkimpy from OpenSSL.

dkimpy computes RSASSA-PKCS1-v1_5 in pure Python: about 9 ms per RSA-2048 signature here, holding the
GIL, which caps a router at roughly 100 signed messages a second. The same signature from OpenSSL (the
``cryptography`` package) takes a fraction of a millisecond. :func:`install` points dkimpy's one signing
step at it; canonicalisation, header selection and the DKIM-Signature header stay dkimpy's. PKCS#1 v1.5
is deterministic, so the signature bytes are exactly the ones dkimpy would have produced.
"""

from __future__ import annotations

import functools
from typing import Any

import dkim
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa, utils

_HASHES: dict[str, type[hashes.HashAlgorithm]] = {"sha256": hashes.SHA256, "sha1": hashes.SHA1}


@functools.lru_cache(maxsize=1024)
def _private_key(n: int, e: int, d: int, p: int, q: int, dmp1: int, dmq1: int,
                 iqmp: int) -> rsa.RSAPrivateKey:
    """Build (once per key) an OpenSSL key from the numbers dkimpy parsed out of the PEM."""
    return rsa.RSAPrivateNumbers(p, q, d, dmp1, dmq1, iqmp, rsa.RSAPublicNumbers(e, n)).private_key()


def rsa_sign(hash_obj: Any, private_key: dict[str, int]) -> bytes:
    """dkimpy's ``RSASSA_PKCS1_v1_5_sign(hash, private_key)``, computed by OpenSSL."""
    key = _private_key(private_key["modulus"], private_key["publicExponent"],
                       private_key["privateExponent"], private_key["prime1"], private_key["prime2"],
                       private_key["exponent1"], private_key["exponent2"], private_key["coefficient"])
    algorithm = _HASHES[hash_obj.name]()
    return key.sign(hash_obj.digest(), padding.PKCS1v15(), utils.Prehashed(algorithm))


def install() -> None:
    """Make dkim.sign use :func:`rsa_sign` (idempotent)."""
    dkim.RSASSA_PKCS1_v1_5_sign = rsa_sign
