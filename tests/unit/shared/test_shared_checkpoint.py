"""Signed notes, checkpoints and cosignatures against the C2SP specs' and Go's test vectors."""

from __future__ import annotations

import base64
import hashlib

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from hypothesis import given
from hypothesis import strategies as st

from ikd_shared import checkpoint as cp

# c2sp.org/signed-note, "Example"
SPEC_VKEY = "example.com/foo+530d903a+AekyeRrm56hApGFkyQR4ZCbV54Id2LKaANYcrnKv3U2k"
SPEC_NOTE = (
    "This is an example message.\n\n"
    "— example.com/foo Uw2QOkn8srV1yJGh2VYRlL1Tnagv1YEq6TfXppzi2ONncAlTgK7Ztg1ERYNZXsYjOBH3mFXm"
    "RKuwHjG1Yu72IneyaQM=\n"
)
# golang.org/x/mod/sumdb/note, note_test.go (TestSign, TestOpen)
PETER_SKEY_SEED = "AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
PETER_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
ENOCH_VKEY = "EnochRoot+af0cfe78+ATtqJ7zOtqQtYqOo0CpvDXNlMhV3HeJDpjrASKGLWdop"
PETER_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
PETER_SIG = (
    "— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSNXgKvqfqdngotp"
    "RZb6KE6RyyBwJnAM=\n"
)
ENOCH_SIG = (
    "— EnochRoot rwz+eBzmZa0SO3NbfRGzPCpDckykFXSdeX+MNtCOXm2/5n2tiOHp+vAF1aGrQ5ovTG01oOTGwnWLox"
    "33WWd1RvMc+QQ=\n"
)
# c2sp.org/tlog-checkpoint
SPEC_CHECKPOINT = (
    "example.com/behind-the-sofa\n20852163\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n"
)


def peter() -> cp.Signer:
    seed = base64.b64decode(PETER_SKEY_SEED)
    assert seed[0] == cp.ED25519
    return cp.Signer("PeterNeumann", Ed25519PrivateKey.from_private_bytes(seed[1:]))


def test_the_spec_example_verifies_with_its_vkey() -> None:
    verifier = cp.parse_vkey(SPEC_VKEY)
    assert verifier.vkey == SPEC_VKEY
    note, verified = cp.open_note(SPEC_NOTE, [verifier])
    assert note.text == "This is an example message.\n"
    assert [v.verifier.name for v in verified] == ["example.com/foo"]


def test_go_vectors_sign_byte_for_byte() -> None:
    signer = peter()
    assert signer.verifier.vkey == PETER_VKEY
    assert signer.sign(PETER_TEXT) == PETER_TEXT + "\n" + PETER_SIG


def test_unknown_keys_are_ignored_and_a_known_bad_signature_rejects() -> None:
    peter_key, enoch_key = cp.parse_vkey(PETER_VKEY), cp.parse_vkey(ENOCH_VKEY)
    both = PETER_TEXT + "\n" + PETER_SIG + ENOCH_SIG
    _, verified = cp.open_note(both, [peter_key])
    assert [v.verifier.name for v in verified] == ["PeterNeumann"]
    _, verified = cp.open_note(both, [peter_key, enoch_key])
    assert {v.verifier.name for v in verified} == {"PeterNeumann", "EnochRoot"}
    with pytest.raises(cp.NoteError, match="no signature of a trusted key"):
        cp.open_note(PETER_TEXT + "\n" + ENOCH_SIG, [peter_key])
    tampered = PETER_TEXT.replace("answer", "answers") + "\n" + PETER_SIG
    with pytest.raises(cp.NoteError, match="does not verify"):
        cp.open_note(tampered, [peter_key])


@pytest.mark.parametrize(
    "message",
    [
        PETER_TEXT + PETER_SIG,  # no blank line
        PETER_TEXT + "\n" + PETER_SIG.rstrip("\n"),  # no final newline
        PETER_TEXT + "\n" + PETER_SIG.replace("— ", "-- "),
        PETER_TEXT + "\n" + PETER_SIG.replace("PeterNeumann", "Peter+Neumann"),
        PETER_TEXT + "\n" + "— PeterNeumann AAAA\n",  # shorter than a key id and a byte
        PETER_TEXT.replace("\n", "\r\n", 1) + "\n" + PETER_SIG,
        PETER_TEXT + "\n" + PETER_SIG * (cp.MAX_SIGNATURES + 1),
    ],
    ids=["no-blank", "no-newline", "dash", "plus", "short", "control", "too-many"],
)
def test_malformed_notes_are_refused(message: str) -> None:
    with pytest.raises(cp.NoteError):
        cp.open_note(message, [cp.parse_vkey(PETER_VKEY)])


@pytest.mark.parametrize(
    "vkey",
    [
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a3+ZRpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # unknown type
        "PeterNeumann+c74f20a3",
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
    ],
)
def test_bad_verifier_keys_are_refused(vkey: str) -> None:
    with pytest.raises(cp.NoteError):
        cp.parse_vkey(vkey)


def test_a_vkey_whose_base64_holds_a_plus_round_trips() -> None:
    while "+" not in (vkey := cp.Signer("w", Ed25519PrivateKey.generate()).verifier.vkey)[2:]:
        pass
    assert cp.parse_vkey(vkey).vkey == vkey


def test_key_id_is_the_spec_formula() -> None:
    signer = peter()
    raw = cp.raw_public_key(signer.private_key.public_key())
    digest = hashlib.sha256(b"PeterNeumann\n\x01" + raw).digest()
    assert signer.verifier.key_id == int.from_bytes(digest[:4], "big") == 0xC74F20A3


def test_the_spec_checkpoint_parses_and_renders_back() -> None:
    parsed = cp.Checkpoint.parse(SPEC_CHECKPOINT)
    assert (parsed.origin, parsed.size) == ("example.com/behind-the-sofa", 20852163)
    assert parsed.text() == SPEC_CHECKPOINT


@pytest.mark.parametrize(
    "text",
    [
        "origin\n012\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",  # leading zero
        "origin\n-1\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n",
        "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2\n",  # not 32 bytes
        "origin\n12\n",
        "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=",  # no final newline
        "origin\n12\nCsUYapGGPo4dkMgIAUqom/Xajj7h2fB2MPA3j2jxq2I=\n\n",  # empty extension
    ],
)
def test_malformed_checkpoints_are_refused(text: str) -> None:
    with pytest.raises(cp.NoteError):
        cp.Checkpoint.parse(text)


def test_a_cosignature_is_the_tlog_cosignature_message_signed_with_type_4() -> None:
    log = cp.Signer("example.com/log", Ed25519PrivateKey.generate())
    witness_key = Ed25519PrivateKey.generate()
    witness = cp.Signer("witness.example/w1", witness_key, cp.COSIGNATURE_V1)
    text = cp.Checkpoint("example.com/log", 5, bytes(32)).text()
    note = log.sign(text) + witness.signature_line(text, 1679315147)
    opened = cp.open_checkpoint(note, log.verifier, [witness.verifier])
    assert opened.checkpoint.size == 5
    (cosigned,) = opened.cosignatures
    assert cosigned.timestamp == 1679315147
    # the message and key id written out from the spec, checked with the bare key
    raw = cp.raw_public_key(witness_key.public_key())
    assert cosigned.signature.key_id == int.from_bytes(
        hashlib.sha256(b"witness.example/w1\n\x04" + raw).digest()[:4], "big"
    )
    message = b"cosignature/v1\ntime 1679315147\n" + text.encode()
    assert cosigned.signature.signature[:8] == (1679315147).to_bytes(8, "big")
    witness_key.public_key().verify(cosigned.signature.signature[8:], message)
    # the same key as a plain note signer has another id: the cosignature is not its signature
    plain = cp.Verifier("witness.example/w1", cp.ED25519, witness_key.public_key())
    with pytest.raises(cp.NoteError, match="no signature of a trusted key"):
        cp.open_checkpoint(witness.sign(text, 1), plain)


def test_a_checkpoint_of_another_origin_or_signer_is_refused() -> None:
    log = cp.Signer("example.com/log", Ed25519PrivateKey.generate())
    other = cp.Checkpoint("example.com/other", 5, bytes(32)).text()
    with pytest.raises(cp.NoteError, match="origin"):
        cp.open_checkpoint(log.sign(other), log.verifier)
    impostor = cp.Signer("example.com/log", Ed25519PrivateKey.generate())
    text = cp.Checkpoint("example.com/log", 5, bytes(32)).text()
    with pytest.raises(cp.NoteError):
        cp.open_checkpoint(impostor.sign(text), log.verifier)


@given(
    lines=st.lists(
        st.text(
            st.characters(min_codepoint=0x20, max_codepoint=0x2FFF, exclude_characters="\n"),
            min_size=1,
            max_size=40,
        ),
        min_size=1,
        max_size=5,
    )
)
def test_any_text_signed_opens_to_the_same_text(lines: list[str]) -> None:
    signer = peter()
    text = "\n".join(lines) + "\n"
    note, verified = cp.open_note(signer.sign(text), [signer.verifier])
    assert note.text == text
    assert len(verified) == 1
