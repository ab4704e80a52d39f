"""The demo: seed clients' data, then walk one citizen through the whole flow.

verify at a counter -> prefill at three agencies -> consent -> revoke -> the citizen's trail.
"""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.serialization import load_pem_private_key, load_pem_public_key

from ikd_audit.domain.merkle import ProofError
from ikd_audit.domain.verify import verify_inclusion_bundle
from ikd_ops.platform import Platform, PlatformError
from ikd_shared.credentials import IssuerKey, mint_credential
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.synthetic import citizen, iter_citizens

DEMO_SEED = 2026
WALKTHROUGH_SEED = 7
CREDENTIAL_ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
CREDENTIAL_AUDIENCE = "ikd-mpp"
BULK_BATCH = 500

Say = Callable[[str], None]


def seed(
    platform: Platform,
    *,
    webhook_agency: str,
    webhook_service: str,
    webhook_url: str,
    webhook_secret_file: Path,
    citizens: int,
    say: Say,
) -> None:
    """Register the demo webhook (once) and load synthetic citizens (idempotent)."""
    gateway = platform.endpoints.gateways[webhook_agency]
    backend = f"backend-{webhook_agency}"
    registered = platform.call("GET", f"{gateway}/v1/webhooks/endpoints", client_id=backend).json()
    if webhook_secret_file.exists() and any(e["url"] == webhook_url for e in registered):
        say(f"webhook of {webhook_agency} already registered")
    else:
        for endpoint in registered:
            if endpoint["url"] == webhook_url:
                platform.call(
                    "DELETE", f"{gateway}/v1/webhooks/endpoints/{endpoint['id']}", client_id=backend
                )
        created = platform.call(
            "POST",
            f"{gateway}/v1/webhooks/endpoints",
            client_id=backend,
            json={"url": webhook_url, "service": webhook_service, "description": "demo receiver"},
        ).json()
        webhook_secret_file.write_text(created["secret"])
        webhook_secret_file.chmod(0o600)
        say(f"webhook of {webhook_agency} registered: {webhook_url}")
    totals: dict[str, int] = {}
    batch: list[dict[str, Any]] = []

    def flush() -> None:
        result = platform.call(
            "POST",
            f"{platform.endpoints.identity}/v1/feed/profiles",
            client_id="dukcapil-feed",
            json={"profiles": batch},
        ).json()
        for key, value in result.items():
            totals[key] = totals.get(key, 0) + int(value)
        batch.clear()

    for profile in iter_citizens(citizens, seed=DEMO_SEED):
        batch.append(profile.model_dump(mode="json"))
        if len(batch) == BULK_BATCH:
            flush()
    if batch:
        flush()
    say("citizens from Dukcapil's feed: " + ", ".join(f"{v} {k}" for k, v in totals.items()))


def read_issuer_key(key_dir: Path) -> IssuerKey:
    key = load_pem_private_key((key_dir / "dukcapil-issuer.pem").read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def wait_for(probe: Callable[[], bool], timeout: float = 20.0) -> float:
    """Poll until probe() holds; return the seconds it took."""
    started = time.monotonic()
    while not probe():
        if time.monotonic() - started > timeout:
            raise PlatformError(f"not reached within {timeout} s")
        time.sleep(0.05)
    return time.monotonic() - started


class Walkthrough:
    def __init__(self, platform: Platform, key_dir: Path, say: Say, index: int) -> None:
        self.platform = platform
        self.key = read_issuer_key(key_dir)
        self.key_dir = key_dir
        self.say = say
        self.profile: CitizenProfile = citizen(WALKTHROUGH_SEED, index)

    def credential(self) -> str:
        return mint_credential(
            self.key,
            kid="dev-dukcapil-1",
            issuer=CREDENTIAL_ISSUER,
            audience=CREDENTIAL_AUDIENCE,
            profile=self.profile,
        )

    def prefill(self, agency: str, service: str) -> httpx.Response:
        return self.platform.call(
            "GET",
            f"{self.platform.endpoints.gateways[agency]}/v1/prefill/{service}",
            client_id=f"backend-{agency}",
            params={"nik": self.profile.nik},
            expect=(200, 403, 404),
        )

    def _served(self, agency: str, service: str) -> Callable[[], bool]:
        return lambda: self.prefill(agency, service).status_code == 200

    def run(self) -> dict[str, Any]:
        p, say = self.platform, self.say
        say(
            f"1. {self.profile.full_name} (NIK {self.profile.nik}) shows an IKD at the police counter"
        )
        verified = p.call(
            "POST",
            f"{p.endpoints.identity}/v1/verifications",
            client_id="counter-polres",
            json={"credential": self.credential()},
        ).json()
        say(f"   verified: pseudonym {verified['pseudonym'][:16]}…, version {verified['version']}")

        say("2. prefill at three agencies, nobody types anything")
        for agency, service in (
            ("polres-cirebon", "skck"),
            ("dinsos-cirebon", "social-assistance"),
        ):
            took = wait_for(self._served(agency, service))
            fields = self.prefill(agency, service).json()["fields"]
            say(
                f"   {agency}/{service}: {len(fields)} fields after {took * 1000:.0f} ms: "
                f"{', '.join(sorted(fields))}"
            )
        denied = self.prefill("bank-bjb", "bjb-savings-account")
        say(
            f"   bank-bjb/bjb-savings-account: {denied.status_code} {denied.json().get('code')} "
            "(consent-based service, no consent yet)"
        )

        say("3. the citizen consents at the MPP officer's desk")
        now = dt.datetime.now(dt.UTC)
        consent = p.call(
            "POST",
            f"{p.endpoints.identity}/v1/consents",
            client_id="mpp-officer",
            json={
                "nik": self.profile.nik,
                "officer_id": "officer-demo",
                "agency": "bank-bjb",
                "service": "bjb-savings-account",
                "fields": [
                    "nik",
                    "full_name",
                    "date_of_birth",
                    "address.street",
                    "address.village",
                    "address.regency",
                    "occupation",
                ],
                "purpose_code": "account-opening",
                "purpose_text": "Open a savings account at bank bjb KCP Sumber",
                "expires_at": (now + dt.timedelta(days=30)).isoformat(),
            },
        ).json()["consent"]
        took = wait_for(lambda: self.prefill("bank-bjb", "bjb-savings-account").status_code == 200)
        fields = self.prefill("bank-bjb", "bjb-savings-account").json()["fields"]
        say(
            f"   bank-bjb/bjb-savings-account: {len(fields)} consented fields after "
            f"{took * 1000:.0f} ms: {', '.join(sorted(fields))}"
        )

        say("4. the citizen revokes the consent")
        p.call(
            "POST",
            f"{p.endpoints.identity}/v1/consents/{consent['consent_id']}/revoke",
            client_id="mpp-officer",
            json={"officer_id": "officer-demo"},
        )
        purge = wait_for(lambda: self.prefill("bank-bjb", "bjb-savings-account").status_code == 403)
        say(
            f"   purged from bank-bjb's view: prefill refused {purge * 1000:.0f} ms after revocation"
        )

        say("5. the citizen reads their own processing trail, with proofs")
        public_key = tree_head_public_key(p, self.key_dir)

        def trail_complete() -> bool:
            self._trail = p.call(
                "POST",
                f"{p.endpoints.audit}/v1/citizen/trail",
                json={"credential": self.credential()},
            ).json()
            return len(self._trail["accesses"]) >= 4

        wait_for(trail_complete, timeout=30)
        verified_proofs = 0
        for access in self._trail["accesses"]:
            entry = access["entry"]
            try:
                verify_inclusion_bundle(access, public_key)
                verdict, verified_proofs = "proof OK", verified_proofs + 1
            except (ProofError, KeyError, ValueError) as error:
                verdict = f"PROOF FAILED: {error}"
            say(
                f"   {entry['occurred_at'][:19]} {entry['agency']:<15} {entry.get('service') or '-':<20}"
                f" {entry['channel']:<8} {entry['outcome']:<7} {len(entry['fields']):>2} fields  {verdict}"
            )
        say(
            f"   {verified_proofs}/{len(self._trail['accesses'])} inclusion proofs verify against the "
            f"signed tree head of size {self._trail['tree_head']['tree_size']}"
        )
        return {
            "pseudonym": verified["pseudonym"],
            "trail": self._trail,
            "revocation_purge_seconds": purge,
            "proofs_verified": verified_proofs,
        }


def tree_head_public_key(platform: Platform, key_dir: Path) -> Ed25519PublicKey:
    """The key that signs tree heads: from the key we hold if we can, else from the log."""
    local = key_dir / "tree-head.pem"
    if local.exists():  # trust the key we hold, not one the server hands out
        key = load_pem_private_key(local.read_bytes(), password=None)
        assert isinstance(key, Ed25519PrivateKey)
        return key.public_key()
    pem = platform.call(
        "GET", f"{platform.endpoints.audit}/v1/log/public-key", client_id="auditor-demo"
    ).text
    public = load_pem_public_key(pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    return public
