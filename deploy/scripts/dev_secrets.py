"""Create the development key files under .run/dev/ once (never used outside development).

- token-signing.pem / token-jwks.json: the identity service's access-token key and its JWKS
- dukcapil-issuer.pem / dukcapil-jwks.json: a development IKD issuer and the trust anchors
- tree-head.pem: the audit service's signed-tree-head key
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ikd_dev.issuer import generate_issuer_key, public_jwk
from ikd_shared.auth import TokenIssuer


def write_pem(path: Path, key: Ed25519PrivateKey) -> None:
    path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    path.chmod(0o600)


def main(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    if (out / "token-jwks.json").exists():
        return
    token_key = Ed25519PrivateKey.generate()
    write_pem(out / "token-signing.pem", token_key)
    issuer = TokenIssuer(token_key, kid="dev-token-1", issuer="ikd-identity")
    (out / "token-jwks.json").write_text(json.dumps(issuer.jwks(), indent=2))

    dukcapil = generate_issuer_key("EdDSA")
    assert isinstance(dukcapil, Ed25519PrivateKey)
    write_pem(out / "dukcapil-issuer.pem", dukcapil)
    anchors = {"keys": [public_jwk(dukcapil, "dev-dukcapil-1")]}
    (out / "dukcapil-jwks.json").write_text(json.dumps(anchors, indent=2))

    write_pem(out / "tree-head.pem", Ed25519PrivateKey.generate())
    print(f"development keys written to {out}")


if __name__ == "__main__":
    main(Path(sys.argv[1] if len(sys.argv) > 1 else ".run/dev"))
