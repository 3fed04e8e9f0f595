"""Signed model bundles: a detached Ed25519 signature (``cryptography``) over the manifest and the graphs.

The sha256 that :func:`algan.runtime.verify.verify_model` checks lives in the bundle it checks: whoever can write the
bundle can rewrite it. A signature made with a private key that never leaves the training workstation cannot be
forged that way. Signing is opt-in: ``algan-export --sign KEY`` writes ``algan.sig`` into the bundle; a daemon whose
config lists ``model.trusted_keys`` refuses a bundle that is unsigned, signed by another key, or changed after
signing (exit 2, one line). ``algan-edge keygen`` makes a key pair.

``algan.sig`` (JSON)::

    {"format": 1, "algorithm": "ed25519", "key_id": "<16 hex>", "files": {"algan.json": "<sha256>", ...},
     "signature": "<base64 of the 64-byte signature>"}

The signed message is :data:`DOMAIN` followed by the canonical JSON (sorted keys, no spaces) of ``{"files",
"key_id"}``; ``files`` holds the sha256 of every file of :data:`SIGNED_FILES` present when signing. A public key is
written ``ed25519:<base64 of the 32 raw bytes>``; its key id is the first 16 hex digits of the sha256 of those bytes.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import os
from collections.abc import Sequence
from pathlib import Path

from algan.contract import FP16_ONNX_FILE, MANIFEST_FILE, ONNX_FILE, SIGNATURE_FILE, WEIGHTS_FILE
from algan.runtime.errors import ModelError

#: the bundle files a signature covers, when present (the TensorRT engine is built on the device: not signed; its
#: sidecar records the sha256 of the signed graph it was built from)
SIGNED_FILES = (MANIFEST_FILE, ONNX_FILE, FP16_ONNX_FILE, WEIGHTS_FILE)
#: prefix of the signed message (a signature of this kind cannot be replayed as another)
DOMAIN = b"algan-bundle-signature-v1\n"
#: how a public key is written
KEY_PREFIX = "ed25519:"


class SignatureError(ModelError):
    """A bundle without a valid signature of a trusted key, or a key that cannot be read (exit status 2)."""

    exit_code = 2


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def key_id(raw: bytes) -> str:
    """Key id of a raw 32-byte Ed25519 public key: the first 16 hex digits of its sha256."""
    return hashlib.sha256(raw).hexdigest()[:16]


def public_key_text(raw: bytes) -> str:
    """``ed25519:<base64>`` of a raw public key."""
    return KEY_PREFIX + base64.b64encode(raw).decode("ascii")


def parse_public_key(text: str) -> bytes:
    """The raw 32 bytes of ``ed25519:<base64>`` (a trailing comment after a space is ignored).

    Raises:
        ValueError: not of that form (one line, without echoing the text).
    """
    word = text.strip().split()[0] if text.strip() else ""
    if not word.startswith(KEY_PREFIX):
        raise ValueError("a public key is written 'ed25519:<base64>' (algan-edge keygen prints it)")
    try:
        raw = base64.b64decode(word[len(KEY_PREFIX):], validate=True)
    except (binascii.Error, ValueError):
        raise ValueError("the public key after 'ed25519:' is not valid base64") from None
    if len(raw) != 32:
        raise ValueError(f"an Ed25519 public key has 32 bytes, this one {len(raw)}")
    return raw


def generate_key(private_path: Path) -> tuple[Path, str]:
    """Write a new Ed25519 private key (PKCS#8 PEM, mode 0600) to ``private_path`` and its public key
    (``ed25519:<base64> algan-bundle-key``) to ``<private_path>.pub``; never overwrites.

    Returns:
        ``(public key file, public key text)``.

    Raises:
        FileExistsError: either file exists.
        OSError: they cannot be written.
    """
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    pub_path = private_path.with_name(private_path.name + ".pub")
    if pub_path.exists():
        raise FileExistsError(f"{pub_path} exists")
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                            serialization.NoEncryption())
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    fd = os.open(private_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "wb") as f:
        f.write(pem)
    text = public_key_text(raw)
    pub_path.write_text(f"{text} algan-bundle-key\n")
    return pub_path, text


def _load_private(path: Path):  # noqa: ANN202
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    try:
        data = path.read_bytes()
    except OSError as e:
        raise SignatureError(f"cannot read the signing key {path} ({e.strerror or e}); give the private key file "
                             "from algan-edge keygen") from None
    try:
        key = serialization.load_pem_private_key(data, password=None)
    except (ValueError, TypeError):
        raise SignatureError(f"{path} is not an unencrypted PEM private key; give the private key file from "
                             "algan-edge keygen (not the .pub file)") from None
    if not isinstance(key, Ed25519PrivateKey):
        raise SignatureError(f"{path} is not an Ed25519 key; make one with algan-edge keygen")
    return key


def check_signing_key(path: Path) -> None:
    """Refuse an unusable signing key before any work is done.

    Raises:
        SignatureError: unreadable, not PEM, or not Ed25519.
    """
    _load_private(path)


def _message(files: dict[str, str], kid: str) -> bytes:
    return DOMAIN + json.dumps({"files": files, "key_id": kid}, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(bundle: Path, private_key: Path) -> Path:
    """Write ``bundle/algan.sig``: the Ed25519 signature of ``private_key`` over the :data:`SIGNED_FILES` present.

    Returns:
        The signature file.

    Raises:
        SignatureError: the key cannot be used, or the bundle has no manifest.
    """
    from cryptography.hazmat.primitives import serialization

    key = _load_private(private_key)
    if not (bundle / MANIFEST_FILE).is_file():
        raise SignatureError(f"{bundle} is not a model bundle ({MANIFEST_FILE} missing); nothing to sign")
    files = {name: _sha256(bundle / name) for name in SIGNED_FILES if (bundle / name).is_file()}
    raw = key.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    kid = key_id(raw)
    sig = key.sign(_message(files, kid))
    out = bundle / SIGNATURE_FILE
    tmp = bundle / f".{SIGNATURE_FILE}.tmp"
    tmp.write_text(json.dumps({"format": 1, "algorithm": "ed25519", "key_id": kid, "files": files,
                               "signature": base64.b64encode(sig).decode("ascii")}, indent=2) + "\n")
    os.chmod(tmp, 0o644)
    os.replace(tmp, out)
    return out


def verify_bundle_signature(bundle: Path, graph: Path, trusted: Sequence[str]) -> str:
    """Check ``bundle/algan.sig`` against the ``trusted`` public keys (``ed25519:<base64>``), then the sha256 of
    every signed file, and that the manifest and ``graph`` (the file the runner loads; an engine is covered through
    the signed graph its sidecar names) are signed.

    Returns:
        The key id that signed it.

    Raises:
        SignatureError: unsigned, a key not trusted, a bad signature, a file changed after signing, or the loaded
        graph not covered; one line saying how to fix it.
    """
    from cryptography.exceptions import InvalidSignature
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

    path = bundle / SIGNATURE_FILE
    resign = f"sign it with algan-export --sign KEY {bundle} (a key listed in model.trusted_keys)"
    if os.path.islink(path) or not path.is_file():
        raise SignatureError(f"{bundle} is not signed ({SIGNATURE_FILE} missing) and model.trusted_keys is set; "
                             f"{resign}")
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
        files = doc["files"]
        kid = str(doc["key_id"])
        sig = base64.b64decode(doc["signature"], validate=True)
        if doc.get("algorithm") != "ed25519" or not isinstance(files, dict):
            raise ValueError
    except (OSError, ValueError, KeyError, TypeError, binascii.Error):
        raise SignatureError(f"{path} is damaged (not a signature file of algan-export --sign); {resign}") from None
    keys = {key_id(raw): raw for raw in (parse_public_key(t) for t in trusted)}
    raw = keys.get(kid)
    if raw is None:
        raise SignatureError(f"{bundle} is signed by key {kid}, which is not in model.trusted_keys "
                             f"({', '.join(sorted(keys)) or 'none'}); add its public key or {resign}")
    try:
        Ed25519PublicKey.from_public_bytes(raw).verify(sig, _message(files, kid))
    except InvalidSignature:
        raise SignatureError(f"{path}: the signature does not verify with key {kid} (the signature file was "
                             f"changed); {resign}") from None
    for name, want in files.items():
        if name not in SIGNED_FILES:
            raise SignatureError(f"{path} signs an unexpected file {name!r}; {resign}")
        f = bundle / name
        try:
            got = _sha256(f)
        except OSError:
            raise SignatureError(f"{f} is signed but cannot be read; copy the bundle again") from None
        if got != want:
            raise SignatureError(f"{f} was changed after the bundle was signed (sha256 {got[:12]}... != "
                                 f"{str(want)[:12]}...); copy the bundle again or re-export and {resign}")
    if MANIFEST_FILE not in files:
        raise SignatureError(f"{path} does not sign {MANIFEST_FILE}; {resign}")
    if graph.suffix == ".onnx" and graph.name not in files:
        raise SignatureError(f"{graph} is not covered by the signature of {bundle}; {resign}")
    if graph.suffix == ".onnx":
        return kid
    for name in SIGNED_FILES:  # the file a runner loads must be one of the signed ones (or built from one)
        if (bundle / name).is_file() and name not in files:
            raise SignatureError(f"{bundle / name} is not covered by the signature of {bundle}; {resign}")
    return kid
