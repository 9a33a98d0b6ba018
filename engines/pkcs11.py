"""The ``pkcs11`` engine: keys generated and used inside a PKCS#11 token.

Built on python-pkcs11, tested against SoftHSM2 2.6. Quirks, citing PKCS#11 v2.40:

- The key id (hex SHA-256 of the SPKI) is known only after generation, so a key pair is
  generated under a random temporary CKA_ID/CKA_LABEL and then both objects are renamed
  with C_SetAttributeValue (Lamassu does the same). CKA_ID holds the ASCII bytes of the
  hex key id and CKA_LABEL the key id, as in Lamassu, so its tokens stay readable.
- Private keys are CKA_TOKEN, CKA_PRIVATE, CKA_SENSITIVE, not CKA_EXTRACTABLE (so the
  token sets CKA_NEVER_EXTRACTABLE, §4.9) and carry CKA_SIGN only.
- Data is hashed on the host (see ``engines.remote_key``). CKM_ECDSA (Mechanisms §2.3.6)
  signs that digest and returns raw ``r || s``, which is DER-encoded into the
  ECDSA-Sig-Value of RFC 3279 §2.2.3 with ``encode_dss_signature``. RSA uses CKM_RSA_PKCS
  (Mechanisms §2.1.6) over the DER DigestInfo of RFC 8017 §9.2, which is exactly
  EMSA-PKCS1-v1_5; that keeps one host-side hashing path for both key kinds.
- Key objects are looked up once per key id and kept (their handles are valid for the
  session's life, §4.4), so a signature is one C_Sign, not two C_FindObjects first.
- One R/W session is opened at start and the user logs in once. Login state belongs to
  the application and is shared by all its sessions (§2.6; C_Login, C_Logout in §5.6),
  so a process opens one engine per token and a second one is refused. python-pkcs11
  is not safe when two threads use one session, so every token call holds a lock.
"""

from __future__ import annotations

import re
import secrets
import threading
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from pathlib import Path

import pkcs11
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from pkcs11 import Attribute, Mechanism, MechanismFlag, ObjectClass
from pkcs11 import KeyType as P11KeyType
from pkcs11 import exceptions as p11e
from pkcs11.util.ec import encode_ec_public_key, encode_named_curve_parameters
from pydantic import SecretStr

from contracts.keys import KeyType
from engines.base import KeySpec, PrivateKey, PublicKey, key_id_of
from engines.errors import (
    EngineError,
    EngineMisconfigured,
    EngineUnavailable,
    KeyNotFound,
)
from engines.remote_key import RemoteEcPrivateKey, RemoteRsaPrivateKey

__all__ = ["Pkcs11Engine"]

_KEY_ID = re.compile(r"^[0-9a-f]{64}$")

# RFC 5480 §2.1.1.1 named curves, by the names asn1crypto (python-pkcs11) knows.
_CURVES = {KeyType.EC_P256: "secp256r1", KeyType.EC_P384: "secp384r1"}
_EC_BITS = {KeyType.EC_P256: 256, KeyType.EC_P384: 384}
_RSA_BITS = {KeyType.RSA_2048: 2048, KeyType.RSA_3072: 3072, KeyType.RSA_4096: 4096}

# DER of DigestInfo without the digest: RFC 8017 §9.2, Note 1.
_DIGEST_INFO_PREFIX = {
    "sha256": bytes.fromhex("3031300d060960864801650304020105000420"),
    "sha384": bytes.fromhex("3041300d060960864801650304020205000430"),
    "sha512": bytes.fromhex("3051300d060960864801650304020305000440"),
}

_UNAVAILABLE = (
    p11e.DeviceError,
    p11e.DeviceRemoved,
    p11e.SessionClosed,
    p11e.SessionHandleInvalid,
    p11e.TokenNotPresent,
    p11e.UserNotLoggedIn,
)


@contextmanager
def _translated() -> Iterator[None]:
    """Map python-pkcs11 exceptions onto the engine error tree, in one place."""
    try:
        yield
    except p11e.NoSuchKey as exc:
        raise KeyNotFound(str(exc)) from exc
    except _UNAVAILABLE as exc:
        raise EngineUnavailable(f"PKCS#11 token: {type(exc).__name__}") from exc
    except p11e.PKCS11Error as exc:
        raise EngineError(f"PKCS#11: {type(exc).__name__} {exc}".rstrip()) from exc


def _open_session(driver: Path, label: str, pin: SecretStr) -> pkcs11.Session:
    if not driver.is_file():
        raise EngineMisconfigured(f"PKCS11_DRIVER: {driver} does not exist")
    try:
        lib = pkcs11.lib(str(driver))
    except p11e.PKCS11Error as exc:
        raise EngineMisconfigured(
            f"PKCS11_DRIVER: cannot load {driver}: {exc}"
        ) from exc
    try:
        token = lib.get_token(token_label=label)
    except p11e.NoSuchToken as exc:
        raise EngineMisconfigured(f"PKCS11_LABEL: no token labelled {label!r}") from exc
    except p11e.MultipleTokensReturned as exc:
        raise EngineMisconfigured(
            f"PKCS11_LABEL: several tokens are labelled {label!r}"
        ) from exc
    try:
        return token.open(rw=True, user_pin=pin.get_secret_value())
    except (p11e.PinIncorrect, p11e.PinInvalid, p11e.PinLenRange) as exc:
        raise EngineMisconfigured(
            f"PKCS11_PIN: token {label!r} rejected the PIN"
        ) from exc
    except p11e.PinLocked as exc:
        raise EngineMisconfigured(
            f"PKCS11_PIN: the user PIN of {label!r} is locked"
        ) from exc
    except p11e.UserAlreadyLoggedIn as exc:
        # Login state is per application (§2.6), and python-pkcs11's Session.close()
        # calls C_Logout, so a second engine sharing the first one's login would be
        # logged out behind its back. One engine per token per process, then.
        raise EngineMisconfigured(
            f"PKCS11_LABEL: token {label!r} is already open in this process"
        ) from exc
    except p11e.PKCS11Error as exc:
        raise EngineUnavailable(
            f"PKCS11_LABEL: cannot open {label!r}: {exc!r}"
        ) from exc


def _to_public_key(obj: pkcs11.PublicKey) -> PublicKey:
    """Read a token public key object into a cryptography key."""
    if obj.key_type is P11KeyType.EC:
        key = serialization.load_der_public_key(encode_ec_public_key(obj))
    else:
        modulus = int.from_bytes(obj[Attribute.MODULUS], "big")
        exponent = int.from_bytes(obj[Attribute.PUBLIC_EXPONENT], "big")
        key = rsa.RSAPublicNumbers(exponent, modulus).public_key()
    if not isinstance(key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey):
        raise EngineError(f"unexpected public key type {type(key).__name__}")
    return key


def _ecdsa_der(raw: bytes) -> bytes:
    """PKCS#11 ``r || s`` (Mechanisms §2.3.1) to DER ECDSA-Sig-Value (RFC 3279 §2.2.3)."""
    half = len(raw) // 2
    r, s = int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
    return encode_dss_signature(r, s)


class Pkcs11Engine:
    """Keys inside one PKCS#11 token, reached through one logged-in session."""

    def __init__(self, driver: Path, label: str, pin: SecretStr) -> None:
        self._session = _open_session(driver, label, pin)
        self._label = label
        self._lock = threading.Lock()
        self._closed = False
        self._signers: dict[str, PrivateKey] = {}

    @property
    def name(self) -> str:
        return "pkcs11"

    def create_key(self, spec: KeySpec) -> str:
        temporary = f"lamassu-tmp-{secrets.token_hex(16)}"
        with self._lock, _translated():
            public, private = self._generate(spec.key_type, temporary)
            try:
                key_id = key_id_of(_to_public_key(public))
                for obj in (public, private):
                    obj[Attribute.ID] = key_id.encode("ascii")
                    obj[Attribute.LABEL] = key_id
            except BaseException:
                private.destroy()
                public.destroy()
                raise
        return key_id

    def _generate(
        self, key_type: KeyType, temporary: str
    ) -> tuple[pkcs11.PublicKey, pkcs11.PrivateKey]:
        private_template = {Attribute.SENSITIVE: True, Attribute.EXTRACTABLE: False}
        if key_type.is_rsa:
            key_kind, bits, public_template = P11KeyType.RSA, key_type.rsa_bits, {}
        else:
            params = encode_named_curve_parameters(_CURVES[key_type])
            key_kind, bits = P11KeyType.EC, None
            public_template = {Attribute.EC_PARAMS: params}
        return self._session.generate_keypair(
            key_kind,
            bits,
            id=temporary.encode("ascii"),
            label=temporary,
            store=True,
            capabilities=MechanismFlag.SIGN | MechanismFlag.VERIFY,
            public_template=public_template,
            private_template=private_template,
        )

    def _find(self, object_class: ObjectClass, key_id: str) -> pkcs11.Key:
        if not _KEY_ID.match(key_id):
            raise KeyNotFound(f"malformed key id {key_id!r}")
        try:
            return self._session.get_key(object_class, id=key_id.encode("ascii"))
        except p11e.NoSuchKey as exc:
            raise KeyNotFound(f"no key {key_id} in token {self._label!r}") from exc

    def _find_public(self, key_id: str) -> pkcs11.PublicKey:
        found = self._find(ObjectClass.PUBLIC_KEY, key_id)
        if not isinstance(found, pkcs11.PublicKey):
            raise EngineError(f"object {key_id} is not a public key")
        return found

    def _find_private(self, key_id: str) -> pkcs11.SignMixin:
        found = self._find(ObjectClass.PRIVATE_KEY, key_id)
        if not isinstance(found, pkcs11.SignMixin):
            raise EngineError(f"object {key_id} is not a private key")
        return found

    def public_key(self, key_id: str) -> PublicKey:
        with self._lock, _translated():
            return _to_public_key(self._find_public(key_id))

    def signer(self, key_id: str) -> PrivateKey:
        with self._lock:
            found = self._signers.get(key_id)
        if found is None:
            found = self._new_signer(key_id)
            with self._lock:
                found = self._signers.setdefault(key_id, found)
        return found

    def _new_signer(self, key_id: str) -> PrivateKey:
        with self._lock, _translated():
            public_key = _to_public_key(self._find_public(key_id))
            private = self._find_private(key_id)

        if isinstance(public_key, ec.EllipticCurvePublicKey):

            def sign_ecdsa(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
                del algorithm  # CKM_ECDSA signs whatever digest it is given.
                with self._lock, _translated():
                    raw = private.sign(digest, mechanism=Mechanism.ECDSA)
                return _ecdsa_der(raw)

            return RemoteEcPrivateKey(public_key, sign_ecdsa)

        def sign_rsa(digest: bytes, algorithm: hashes.HashAlgorithm) -> bytes:
            digest_info = _DIGEST_INFO_PREFIX[algorithm.name] + digest
            with self._lock, _translated():
                signature: bytes = private.sign(
                    digest_info, mechanism=Mechanism.RSA_PKCS
                )
            return signature

        return RemoteRsaPrivateKey(public_key, sign_rsa)

    def delete_key(self, key_id: str) -> None:
        with self._lock, _translated():
            self._signers.pop(key_id, None)
            self._find(ObjectClass.PRIVATE_KEY, key_id).destroy()
            with suppress(KeyNotFound):  # a key imported without its public half
                self._find(ObjectClass.PUBLIC_KEY, key_id).destroy()

    def list_keys(self) -> list[str]:
        with self._lock, _translated():
            objects = self._session.get_objects(
                {Attribute.CLASS: ObjectClass.PRIVATE_KEY}
            )
            ids = [
                bytes(obj[Attribute.ID]).decode("ascii", "replace") for obj in objects
            ]
        return sorted(i for i in ids if _KEY_ID.match(i))

    def key_types(self) -> list[KeyType]:
        """The key types this token can generate and sign with (its mechanism list)."""
        with self._lock, _translated():
            slot = self._session.token.slot
            mechanisms = slot.get_mechanisms()
            offered: list[KeyType] = []
            for generate, sign, kinds in (
                (Mechanism.EC_KEY_PAIR_GEN, Mechanism.ECDSA, _EC_BITS),
                (Mechanism.RSA_PKCS_KEY_PAIR_GEN, Mechanism.RSA_PKCS, _RSA_BITS),
            ):
                if not {generate, sign} <= mechanisms:
                    continue
                info = slot.get_mechanism_info(generate)
                low, high = info.min_key_length or 0, info.max_key_length or 1 << 16
                offered += [k for k, bits in kinds.items() if low <= bits <= high]
        return offered

    def close(self) -> None:
        """Close the session; python-pkcs11 logs out first (C_Logout, §5.6)."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
            # If the token went away there is nothing left to release.
            with suppress(p11e.PKCS11Error):
                self._session.close()
