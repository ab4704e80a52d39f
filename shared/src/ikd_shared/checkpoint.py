"""C2SP signed notes, tlog checkpoints and Ed25519 cosignatures, exactly as the specs say.

- c2sp.org/signed-note: text ending in a newline, a blank line, then signature lines
  `— <key name> base64(uint32 key id || signature)`; the key id of an Ed25519 key is
  SHA-256(name || 0x0A || 0x01 || public key)[:4]; a verifier key (vkey) is
  `<name>+<hex key id>+base64(type || public key)`. Go's golang.org/x/mod/sumdb/note reads them.
- c2sp.org/tlog-checkpoint: the note text is origin, tree size, base64 root hash (RFC 6962).
- c2sp.org/tlog-cosignature (Ed25519, type 0x04): a witness signs `cosignature/v1`, a
  `time <unix seconds>` line and the checkpoint text; the signature is timestamp || Ed25519.

Opening a note follows the spec (and Go's `note.Open`): signatures of unknown keys are ignored,
a known key's bad signature rejects the whole note, and at least one known key must verify.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

ED25519 = 0x01
COSIGNATURE_V1 = 0x04
SIGNATURE_PREFIX = "\u2014 "  # em dash, space
MAX_SIGNATURES = 100  # as Go's note.Open; the spec asks for at least 16
MAX_NOTE_BYTES = 1 << 20
HASH_SIZE = 32
_DECIMAL = re.compile(r"0|[1-9][0-9]{0,19}")


class NoteError(ValueError):
    """A note, checkpoint or key that is malformed or whose signatures do not verify."""


def valid_name(name: str) -> bool:
    """Non-empty, no Unicode space and no plus (signed-note, key names)."""
    return bool(name) and "+" not in name and not any(c.isspace() for c in name)


def raw_public_key(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def key_id(name: str, signature_type: int, public_key: bytes) -> int:
    digest = hashlib.sha256(name.encode() + b"\n" + bytes([signature_type]) + public_key).digest()
    return int.from_bytes(digest[:4], "big")


@dataclass(frozen=True, slots=True)
class Verifier:
    """A trusted key: name, signature type and Ed25519 public key (what a vkey encodes)."""

    name: str
    signature_type: int
    public_key: Ed25519PublicKey

    @property
    def key_id(self) -> int:
        return key_id(self.name, self.signature_type, raw_public_key(self.public_key))

    @property
    def vkey(self) -> str:
        material = bytes([self.signature_type]) + raw_public_key(self.public_key)
        return f"{self.name}+{self.key_id:08x}+{base64.b64encode(material).decode()}"

    def verify(self, text: bytes, signature: bytes) -> int | None:
        """Check a signature (without its key id); the cosignature's timestamp, or 0.

        None if it does not verify.
        """
        if self.signature_type == ED25519:
            return 0 if _ed25519_ok(self.public_key, signature, text) else None
        if len(signature) != 8 + 64:
            return None
        timestamp = int.from_bytes(signature[:8], "big")
        if timestamp >= 1 << 63:
            return None
        message = cosignature_message(text, timestamp)
        return timestamp if _ed25519_ok(self.public_key, signature[8:], message) else None


def _ed25519_ok(key: Ed25519PublicKey, signature: bytes, message: bytes) -> bool:
    try:
        key.verify(signature, message)
    except InvalidSignature:
        return False
    return True


def parse_vkey(vkey: str) -> Verifier:
    """A verifier key `<name>+<hex id>+<base64(type || key)>` of type Ed25519 or cosignature."""
    parts = vkey.strip().split("+", 2)  # the base64 key may hold a plus itself
    if len(parts) != 3 or not valid_name(parts[0]) or not re.fullmatch(r"[0-9a-f]{8}", parts[1]):
        raise NoteError("a verifier key is <name>+<8 hex digits>+<base64 key>")
    try:
        material = base64.b64decode(parts[2], validate=True)
    except binascii.Error:
        raise NoteError("the verifier key's key is not base64") from None
    if len(material) != 33 or material[0] not in (ED25519, COSIGNATURE_V1):
        raise NoteError("only Ed25519 (0x01) and cosignature/v1 (0x04) keys are supported")
    verifier = Verifier(parts[0], material[0], Ed25519PublicKey.from_public_bytes(material[1:]))
    if verifier.key_id != int(parts[1], 16):
        raise NoteError("the verifier key's id does not match its name and key")
    return verifier


@dataclass(frozen=True, slots=True)
class Signer:
    """A private key that signs notes (type 0x01) or cosigns checkpoints (type 0x04)."""

    name: str
    private_key: Ed25519PrivateKey
    signature_type: int = ED25519

    def __post_init__(self) -> None:
        if not valid_name(self.name):
            raise NoteError(f"invalid key name {self.name!r}")
        if self.signature_type not in (ED25519, COSIGNATURE_V1):
            raise NoteError("only Ed25519 (0x01) and cosignature/v1 (0x04) signers")

    @property
    def verifier(self) -> Verifier:
        return Verifier(self.name, self.signature_type, self.private_key.public_key())

    def signature_line(self, text: str, timestamp: int | None = None) -> str:
        """`— <name> base64(key id || signature)` over a note text; cosigners need a time."""
        body = _check_text(text)
        if self.signature_type == ED25519:
            signature = self.private_key.sign(body)
        else:
            if timestamp is None or not 0 <= timestamp < 1 << 63:
                raise NoteError("a cosignature needs a POSIX timestamp below 2**63")
            message = cosignature_message(body, timestamp)
            signature = timestamp.to_bytes(8, "big") + self.private_key.sign(message)
        blob = self.verifier.key_id.to_bytes(4, "big") + signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"

    def sign(self, text: str, timestamp: int | None = None) -> str:
        return f"{text}\n{self.signature_line(text, timestamp)}"


def cosignature_message(text: bytes, timestamp: int) -> bytes:
    return b"cosignature/v1\ntime " + str(timestamp).encode() + b"\n" + text


@dataclass(frozen=True, slots=True)
class Signature:
    name: str
    key_id: int
    signature: bytes  # without the key id

    @property
    def line(self) -> str:
        blob = self.key_id.to_bytes(4, "big") + self.signature
        return f"{SIGNATURE_PREFIX}{self.name} {base64.b64encode(blob).decode()}\n"


@dataclass(frozen=True, slots=True)
class Note:
    text: str
    signatures: tuple[Signature, ...]

    def render(self) -> str:
        return self.text + "\n" + "".join(s.line for s in self.signatures)


@dataclass(frozen=True, slots=True)
class Verified:
    """A signature of a trusted key that verified; `timestamp` of a cosignature (else 0)."""

    verifier: Verifier
    signature: Signature
    timestamp: int


def _check_text(text: str) -> bytes:
    if not text.endswith("\n"):
        raise NoteError("a note text ends with a newline")
    if any(ord(c) < 0x20 and c != "\n" for c in text):
        raise NoteError("a note holds no control characters but newlines")
    return text.encode()


def parse_signature_line(line: str) -> Signature:
    """One line without its newline: `— <name> <base64>`."""
    if not line.startswith(SIGNATURE_PREFIX):
        raise NoteError("a signature line starts with an em dash and a space")
    name, sep, encoded = line[len(SIGNATURE_PREFIX) :].partition(" ")
    if not sep or not valid_name(name) or not encoded or " " in encoded:
        raise NoteError("malformed signature line")
    try:
        blob = base64.b64decode(encoded, validate=True)
    except binascii.Error:
        raise NoteError("a signature is not base64") from None
    if len(blob) < 5:
        raise NoteError("a signature is a key id and at least one byte")
    return Signature(name, int.from_bytes(blob[:4], "big"), blob[4:])


def parse_note(message: str | bytes) -> Note:
    """Split a signed note into its text and signatures (none verified yet)."""
    if isinstance(message, bytes):
        if len(message) > MAX_NOTE_BYTES:
            raise NoteError("the note is too large")
        try:
            message = message.decode("utf-8")
        except UnicodeDecodeError:
            raise NoteError("a note is UTF-8") from None
    if len(message) > MAX_NOTE_BYTES:
        raise NoteError("the note is too large")
    if any(ord(c) < 0x20 and c != "\n" for c in message):
        raise NoteError("a note holds no control characters but newlines")
    split = message.rfind("\n\n")
    if split < 0:
        raise NoteError("a note has a blank line before its signatures")
    text, block = message[: split + 1], message[split + 2 :]
    if not block.endswith("\n"):
        raise NoteError("the signature block ends with a newline")
    lines = block[:-1].split("\n")
    if len(lines) > MAX_SIGNATURES:
        raise NoteError("too many signatures")
    return Note(text, tuple(parse_signature_line(line) for line in lines))


def open_note(message: str | bytes, verifiers: Iterable[Verifier]) -> tuple[Note, list[Verified]]:
    """Parse and verify: unknown keys ignored, a known key's bad signature rejects the note."""
    note = parse_note(message)
    known = {(v.name, v.key_id): v for v in verifiers}
    body = note.text.encode()
    verified: list[Verified] = []
    seen: set[tuple[str, int]] = set()
    for signature in note.signatures:
        key = (signature.name, signature.key_id)
        verifier = known.get(key)
        if verifier is None or key in seen:
            continue
        seen.add(key)
        timestamp = verifier.verify(body, signature.signature)
        if timestamp is None:
            raise NoteError(f"the signature of {signature.name} does not verify")
        verified.append(Verified(verifier, signature, timestamp))
    if not verified:
        raise NoteError("no signature of a trusted key")
    return note, verified


# --- checkpoints -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Checkpoint:
    """The note text of a tlog checkpoint: origin, tree size, root hash (and extension lines)."""

    origin: str
    size: int
    root_hash: bytes
    extensions: tuple[str, ...] = ()

    def text(self) -> str:
        lines = [self.origin, str(self.size), base64.b64encode(self.root_hash).decode()]
        return "\n".join([*lines, *self.extensions]) + "\n"

    @classmethod
    def parse(cls, text: str) -> Checkpoint:
        if not text.endswith("\n"):
            raise NoteError("a checkpoint text ends with a newline")
        lines = text[:-1].split("\n")
        if len(lines) < 3 or not all(lines):
            raise NoteError("a checkpoint has at least three non-empty lines")
        origin, size, root = lines[:3]
        if not _DECIMAL.fullmatch(size) or int(size) >= 1 << 63:
            raise NoteError("the tree size is a decimal without leading zeroes")
        try:
            root_hash = base64.b64decode(root, validate=True)
        except binascii.Error:
            raise NoteError("the root hash is not base64") from None
        if len(root_hash) != HASH_SIZE or base64.b64encode(root_hash).decode() != root:
            raise NoteError("the root hash is 32 bytes in canonical base64")
        return cls(origin, int(size), root_hash, tuple(lines[3:]))


@dataclass(frozen=True, slots=True)
class SignedCheckpoint:
    checkpoint: Checkpoint
    note: Note
    log_signature: Verified
    cosignatures: tuple[Verified, ...]


def open_checkpoint(
    message: str | bytes,
    log: Verifier,
    witnesses: Sequence[Verifier] = (),
    *,
    origin: str | None = None,
) -> SignedCheckpoint:
    """A checkpoint signed by the log's key, with the cosignatures of known witnesses."""
    note, verified = open_note(message, [log, *witnesses])
    by_log = [v for v in verified if v.verifier == log]
    if not by_log:
        raise NoteError("the checkpoint is not signed by the log's key")
    checkpoint = Checkpoint.parse(note.text)
    if checkpoint.origin != (origin or log.name):
        raise NoteError(f"the checkpoint's origin is {checkpoint.origin!r}, not the log's")
    cosigned = tuple(v for v in verified if v.verifier != log)
    return SignedCheckpoint(checkpoint, note, by_log[0], cosigned)


def signer_from_pem(name: str, pem: str | bytes, signature_type: int = ED25519) -> Signer:
    key = serialization.load_pem_private_key(pem.encode() if isinstance(pem, str) else pem, None)
    if not isinstance(key, Ed25519PrivateKey):
        raise NoteError("not an Ed25519 private key")
    return Signer(name, key, signature_type)
