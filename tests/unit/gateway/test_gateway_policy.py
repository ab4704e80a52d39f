"""The policy file is validated at start; a broken one names its problem."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from ikd_gateway.bootstrap import check_or_exit
from ikd_gateway.config import GatewaySettings
from ikd_shared.events.profile_v1 import PROFILE_FIELDS
from ikd_shared.legal import LegalBasis
from ikd_shared.policy import DEFAULT_POLICY, AgencyKind, PolicyError, load_policy, parse_policy
from tests.support.gateway_factories import POLICY

GOOD_SERVICE = """
    - code: skck
      name: Police clearance
      fields: [nik, full_name]
      purpose: {code: police-clearance, text: Issue a police clearance}
      legal_basis: legal_obligation
      legal_reference: UU 2/2002
      retention_days: 365
"""


def document(service: str = GOOD_SERVICE, agency_code: str = "polres-cirebon") -> str:
    return f"""
mpp: {{code: mpp-test, name: MPP Test, regency_code: "3209"}}
agencies:
  - code: {agency_code}
    name: Kepolisian Resor Cirebon
    kind: national_office
    services:{service}
"""


def test_sample_policy_covers_a_whole_mpp() -> None:
    kinds = {kind: 0 for kind in AgencyKind}
    for agency in POLICY.agencies:
        kinds[agency.kind] += 1
    services = [s for a in POLICY.agencies for s in a.services]
    assert len(POLICY.agencies) == 37
    assert all(count >= 2 for count in kinds.values()), kinds
    assert len({s.code for s in services}) >= 30
    assert {s.legal_basis for s in services} >= {
        LegalBasis.CONSENT,
        LegalBasis.CONTRACT,
        LegalBasis.LEGAL_OBLIGATION,
        LegalBasis.PUBLIC_TASK,
        LegalBasis.VITAL_INTEREST,
    }
    assert all(s.fields <= set(PROFILE_FIELDS) for s in services)


def test_a_valid_minimal_policy_parses() -> None:
    policy = parse_policy(document())
    assert policy.agency("polres-cirebon").service("skck") is not None


@pytest.mark.parametrize(
    ("service", "problem"),
    [
        (
            GOOD_SERVICE.replace("[nik, full_name]", "[nik, salary]"),
            "[polres-cirebon].services[skck].fields: unknown profile fields: salary",
        ),
        (
            GOOD_SERVICE.replace("legal_obligation", "because_we_can"),
            "[polres-cirebon].services[skck].legal_basis",
        ),
        (
            GOOD_SERVICE.replace("retention_days: 365", "retention_days: 0"),
            "[polres-cirebon].services[skck].retention_days",
        ),
        (
            GOOD_SERVICE.replace("      retention_days: 365\n", ""),
            "[polres-cirebon].services[skck].retention_days: Field required",
        ),
        (GOOD_SERVICE + GOOD_SERVICE, "lists service skck twice"),
        (GOOD_SERVICE.replace("[nik, full_name]", "[]"), "[polres-cirebon].services[skck].fields"),
        (
            GOOD_SERVICE.replace("legal_obligation", "consent") + "      registration: true\n",
            "registration needs legal_basis legal_obligation or public_task",
        ),
    ],
)
def test_an_invalid_policy_is_refused_naming_the_problem(service: str, problem: str) -> None:
    with pytest.raises(PolicyError) as caught:
        parse_policy(document(service), origin="policy.yaml")
    assert problem in str(caught.value)
    assert str(caught.value).startswith("policy.yaml: ")


def test_registration_is_off_unless_the_policy_allows_it() -> None:
    assert parse_policy(document()).agency("polres-cirebon").services[0].registration is False
    allowed = parse_policy(document(GOOD_SERVICE + "      registration: true\n"))
    assert allowed.agency("polres-cirebon").services[0].registration is True


def test_bad_agency_codes_and_yaml_are_refused() -> None:
    with pytest.raises(PolicyError, match=r"agencies\[Polres_Cirebon\]\.code"):
        parse_policy(document(agency_code="Polres_Cirebon"))
    with pytest.raises(PolicyError, match="not valid YAML"):
        parse_policy("agencies: [")
    with pytest.raises(PolicyError, match="cannot read policy file"):
        load_policy(Path("/nonexistent/policy.yaml"))


def _settings(tmp_path: Path, policy_text: str, agency: str) -> GatewaySettings:
    policy_file = tmp_path / "policy.yaml"
    policy_file.write_text(policy_text)
    return GatewaySettings(
        agency=agency,
        policy_file=policy_file,
        database_url="postgresql://u@127.0.0.1:1/d",
        token_jwks=json.dumps({"keys": []}),
        pseudonym_key="k" * 40,
        environment="development",
    )


def test_gateway_refuses_to_start_with_an_invalid_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    bad = document(GOOD_SERVICE.replace("legal_obligation", "whim"))
    with pytest.raises(SystemExit) as stopped:
        check_or_exit(_settings(tmp_path, bad, "polres-cirebon"))
    assert stopped.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1
    assert "invalid policy" in err[0]
    assert "[polres-cirebon].services[skck].legal_basis" in err[0]


def test_gateway_refuses_an_agency_missing_from_the_policy(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit):
        check_or_exit(_settings(tmp_path, document(), "bank-bjb"))
    assert "agency 'bank-bjb' is not in the policy" in capsys.readouterr().err


def test_sample_policy_loads_from_the_default_path() -> None:
    assert load_policy(DEFAULT_POLICY) == POLICY
