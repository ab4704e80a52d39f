"""How long a consent may last: the policy's consent_max_days, by default the retention."""

from __future__ import annotations

import pytest

from ikd_shared.policy import PolicyError, ServicePolicy, parse_policy


def _document(legal_basis: str, extra: str = "") -> str:
    return f"""
mpp: {{code: mpp-test, name: MPP Test, regency_code: "3209"}}
agencies:
  - code: bank-test
    name: Bank Test Cabang Sumber
    kind: state_owned_company
    services:
      - code: savings
        name: Savings account
        fields: [nik, full_name]
        purpose: {{code: account-opening, text: Open a savings account}}
        legal_basis: {legal_basis}
        legal_reference: POJK 12/2017
        retention_days: 365{extra}
"""


def _service(text: str) -> ServicePolicy:
    return parse_policy(text).agency("bank-test").services[0]


def test_the_limit_defaults_to_the_retention() -> None:
    assert _service(_document("consent")).consent_limit_days == 365
    assert _service(_document("consent", "\n        consent_max_days: 90")).consent_limit_days == 90


@pytest.mark.parametrize(
    ("legal_basis", "days"),
    [("consent", 366), ("contract", 30), ("legal_obligation", 30), ("consent", 0)],
)
def test_a_limit_beyond_the_retention_or_without_consent_is_refused(
    legal_basis: str, days: int
) -> None:
    with pytest.raises(PolicyError) as error:
        parse_policy(_document(legal_basis, f"\n        consent_max_days: {days}"))
    assert "consent_max_days" in str(error.value)
