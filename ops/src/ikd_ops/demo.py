"""The demo: seed clients' data, then walk one citizen through the whole flow.

the IKD shown once at the MPP's reception, naming services at three agencies -> prefill there,
and a fourth agency holds nothing -> a consent given and revoked with the citizen's own
credential -> the citizen's trail, read with a credential for that purpose alone.
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

from ikd_dev.issuer import IssuerKey, mint_credential
from ikd_dev.synthetic import citizen, iter_citizens
from ikd_ops.platform import Platform, PlatformError
from ikd_shared import checkpoint
from ikd_shared.credentials import Purpose
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.merkle import ProofError
from ikd_shared.transparency import verify_inclusion_bundle

DEMO_SEED = 2026
WALKTHROUGH_SEED = 7
CREDENTIAL_ISSUER = "https://dukcapil.kemendagri.go.id/ikd"
BULK_BATCH = 500
RECEPTION_CLIENT = "mpp-reception"
PUBLIC_TASK_SERVICES = (
    ("polres-cirebon", "skck"),
    ("dinsos-cirebon", "social-assistance"),
    ("disnaker-cirebon", "job-seeker-card"),
)
"""What the citizen came for at reception: one service at each of three agencies."""
CONSENT_SERVICE = ("bank-bjb", "bjb-savings-account")
"""The fourth agency: not chosen at reception, so it holds nothing until the citizen consents."""
CONSENTED_FIELDS = [
    "nik",
    "full_name",
    "date_of_birth",
    "address.street",
    "address.village",
    "address.regency",
    "occupation",
]
MIN_TRAIL_ENTRIES = 6

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


def wait_for(probe: Callable[[], bool], timeout: float = 20.0, max_interval: float = 0.05) -> float:
    """Poll until probe() holds, the pauses doubling up to `max_interval`; return the seconds
    it took."""
    started, interval = time.monotonic(), 0.05
    while not probe():
        if time.monotonic() - started > timeout:
            raise PlatformError(f"not reached within {timeout} s")
        time.sleep(interval)
        interval = min(interval * 2, max_interval)
    return time.monotonic() - started


class Walkthrough:
    def __init__(self, platform: Platform, key_dir: Path, say: Say, index: int) -> None:
        self.platform = platform
        self.key = read_issuer_key(key_dir)
        self.key_dir = key_dir
        self.say = say
        self.profile: CitizenProfile = citizen(WALKTHROUGH_SEED, index)

    def credential(self, purpose: Purpose) -> str:
        """A fresh credential, as the citizen's IKD app presents it for one purpose."""
        return mint_credential(
            self.key,
            kid="dev-dukcapil-1",
            issuer=CREDENTIAL_ISSUER,
            purpose=purpose,
            profile=self.profile,
        )

    def prefill(self, agency: str, service: str) -> httpx.Response:
        # The NIK goes in the body: URLs end up in access logs.
        return self.platform.call(
            "POST",
            f"{self.platform.endpoints.gateways[agency]}/v1/prefill/{service}/lookup",
            client_id=f"backend-{agency}",
            json={"nik": self.profile.nik},
            expect=(200, 403, 404),
        )

    def _served(self, agency: str, service: str) -> Callable[[], bool]:
        return lambda: self.prefill(agency, service).status_code == 200

    def wait_served(self, agency: str, service: str) -> float:
        # Each refused poll is a denial that counts towards the backend's throttle: poll gently.
        return wait_for(self._served(agency, service), max_interval=1.0)

    def run(self) -> dict[str, Any]:
        pseudonym = self.verify_at_reception()
        self.prefill_everywhere()
        consent_id = self.grant_consent()
        purge_seconds = self.revoke_consent(consent_id)
        trail, proofs_verified = self.read_trail()
        return {
            "pseudonym": pseudonym,
            "trail": trail,
            "revocation_purge_seconds": purge_seconds,
            "proofs_verified": proofs_verified,
        }

    def verify_at_reception(self) -> str:
        p, who = self.platform, self.profile
        wanted = ", ".join(f"{service} ({agency})" for agency, service in PUBLIC_TASK_SERVICES)
        self.say(f"1. {who.full_name} (NIK {who.nik}) shows the IKD once, at the MPP's reception,")
        self.say(f"   and picks the services they came for: {wanted}")
        verified = p.call(
            "POST",
            f"{p.endpoints.identity}/v1/verifications",
            client_id=RECEPTION_CLIENT,
            # the services the citizen came for: an agency holds them only for these
            json={
                "credential": self.credential(Purpose.VERIFICATION),
                "services": [service for _, service in PUBLIC_TASK_SERVICES],
            },
        ).json()
        self.say(
            f"   verified: pseudonym {verified['pseudonym'][:16]}…, version {verified['version']}; "
            + ", ".join(
                f"{r['service']} until {r['expires_at'][:10]}" for r in verified["relationships"]
            )
        )
        return str(verified["pseudonym"])

    def prefill_everywhere(self) -> None:
        self.say("2. prefill at the three counters, nobody types anything")
        for agency, service in PUBLIC_TASK_SERVICES:
            took = self.wait_served(agency, service)
            fields = sorted(self.prefill(agency, service).json()["fields"])
            self.say(
                f"   {agency}/{service}: {len(fields)} fields after {took * 1000:.0f} ms: "
                + ", ".join(fields)
            )
        denied = self.prefill(*CONSENT_SERVICE)
        self.say(
            f"   {'/'.join(CONSENT_SERVICE)}: {denied.status_code} "
            f"{denied.json().get('code')} (a fourth agency, not chosen: it holds nothing, "
            "and the answer does not tell whether the citizen exists)"
        )

    def grant_consent(self) -> str:
        p = self.platform
        self.say("3. the citizen consents at the MPP officer's desk, showing the IKD for it")
        expires = dt.datetime.now(dt.UTC) + dt.timedelta(days=30)
        consent = p.call(
            "POST",
            f"{p.endpoints.identity}/v1/consents",
            client_id="mpp-officer",
            json={
                "credential": self.credential(Purpose.CONSENT),
                "agency": CONSENT_SERVICE[0],
                "service": CONSENT_SERVICE[1],
                "fields": CONSENTED_FIELDS,
                "purpose_code": "account-opening",
                "purpose_text": "Open a savings account at bank bjb KCP Sumber",
                "expires_at": expires.isoformat(),
            },
        ).json()["consent"]
        took = self.wait_served(*CONSENT_SERVICE)
        fields = sorted(self.prefill(*CONSENT_SERVICE).json()["fields"])
        self.say(
            f"   {'/'.join(CONSENT_SERVICE)}: {len(fields)} consented fields after "
            f"{took * 1000:.0f} ms: " + ", ".join(fields)
        )
        return str(consent["consent_id"])

    def revoke_consent(self, consent_id: str) -> float:
        p = self.platform
        self.say("4. the citizen revokes the consent, showing the IKD again")
        p.call(
            "POST",
            f"{p.endpoints.identity}/v1/consents/{consent_id}/revoke",
            client_id="mpp-officer",
            json={"credential": self.credential(Purpose.CONSENT)},
        )
        # The consent was the bank's only relationship with the citizen: the row goes (404).
        purge = wait_for(lambda: self.prefill(*CONSENT_SERVICE).status_code == 404)
        self.say(
            f"   purged from {CONSENT_SERVICE[0]}'s view: prefill refused "
            f"{purge * 1000:.0f} ms after revocation"
        )
        return purge

    def read_trail(self) -> tuple[dict[str, Any], int]:
        p = self.platform
        self.say(
            "5. the citizen reads their own processing trail with an IKD credential issued for "
            "that alone (the counter's or the consent's would be refused), with proofs"
        )
        public_key = tree_head_public_key(p, self.key_dir)
        # With witnesses configured, wait for a checkpoint one of them cosigned (every few s).
        witnessed = bool(p.call("GET", f"{p.endpoints.audit}/v1/log/info").json()["witnesses"])
        trail: dict[str, Any] = {}

        def complete() -> bool:
            nonlocal trail
            trail = p.call(
                "POST",
                f"{p.endpoints.audit}/v1/citizen/trail",
                json={"credential": self.credential(Purpose.TRAIL)},
            ).json()
            # verified (3 views), prefills, the denial and the consent's reads are all in
            enough = len(trail["accesses"]) >= MIN_TRAIL_ENTRIES
            return enough and (not witnessed or bool(trail.get("witnesses")))

        wait_for(complete, timeout=30)
        verified = 0
        for access in trail["accesses"]:
            try:
                verify_inclusion_bundle(access, public_key)
                verdict, verified = "proof OK", verified + 1
            except (ProofError, KeyError, ValueError) as error:
                verdict = f"PROOF FAILED: {error}"
            self.say("   " + describe_entry(access["entry"]) + f"  {verdict}")
        self.say(
            f"   {verified}/{len(trail['accesses'])} inclusion proofs verify against the "
            f"signed tree head of size {trail['tree_head']['tree_size']}"
        )
        witnesses = ", ".join(w["name"] for w in trail.get("witnesses", [])) or "none yet"
        self.say(f"   the checkpoint they refer to is cosigned by: {witnesses}")
        return trail, verified


def describe_entry(entry: dict[str, Any]) -> str:
    return (
        f"{entry['occurred_at'][:19]} {entry['agency']:<15} "
        f"{entry.get('service') or '-':<20} {entry['channel']:<8} {entry['outcome']:<7} "
        f"{len(entry['fields']):>2} fields"
    )


def tree_head_public_key(platform: Platform, key_dir: Path) -> Ed25519PublicKey:
    """The key that signs tree heads: from the verifier key we keep if we can, else the log's.

    `make up` writes log.vkey from the signer's key; only the signer reads the private key.
    """
    local = key_dir / "log.vkey"
    if local.exists():  # trust the key we hold, not one the server hands out
        return checkpoint.parse_vkey(local.read_text()).public_key
    pem = platform.call(
        "GET", f"{platform.endpoints.audit}/v1/log/public-key", client_id="auditor-demo"
    ).text
    public = load_pem_public_key(pem.encode())
    assert isinstance(public, Ed25519PublicKey)
    return public
