"""The NIK (Nomor Induk Kependudukan): Indonesia's 16-digit population number.

Layout: PP RR DD dd mm yy SSSS
  PP province, RR regency, DD district (Kemendagri codes);
  dd mm yy the birth date, with 40 added to the day for women;
  SSSS a serial that is never 0000.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from enum import StrEnum
from typing import Annotated

from pydantic import AfterValidator

from ikd_shared.regions import PROVINCES

NIK_LENGTH = 16
FEMALE_DAY_OFFSET = 40


class Sex(StrEnum):
    MALE = "male"
    FEMALE = "female"


class NikRejection(StrEnum):
    """Why a NIK was rejected; machine-readable, used as the API error code suffix."""

    LENGTH = "length"
    NON_DIGITS = "non_digits"
    UNKNOWN_PROVINCE = "unknown_province"
    IMPOSSIBLE_DATE = "impossible_date"
    SERIAL_ZERO = "serial_zero"


_MESSAGES = {
    NikRejection.LENGTH: "a NIK has exactly 16 digits",
    NikRejection.NON_DIGITS: "a NIK holds digits only",
    NikRejection.UNKNOWN_PROVINCE: "the first two digits are not an Indonesian province code",
    NikRejection.IMPOSSIBLE_DATE: (
        "digits 7-12 are not a possible birth date (DDMMYY, +40 for women)"
    ),
    NikRejection.SERIAL_ZERO: "the serial (last four digits) is never 0000",
}


class InvalidNik(ValueError):
    def __init__(self, reason: NikRejection) -> None:
        self.reason = reason
        super().__init__(f"invalid NIK ({reason.value}): {_MESSAGES[reason]}")


@dataclass(frozen=True, slots=True)
class NikInfo:
    """What a valid NIK encodes."""

    value: str
    province_code: str
    regency_code: str  # four digits, province included
    district_code: str  # six digits, province and regency included
    birth_date: dt.date
    sex: Sex
    serial: str

    @property
    def province(self) -> str:
        return PROVINCES[self.province_code]


def _century_year(yy: int, today: dt.date) -> int:
    # Two-digit years: the latest year not after today's.
    year = 2000 + yy
    return year if year <= today.year else year - 100


def parse_nik(value: str, *, today: dt.date | None = None) -> NikInfo:
    """Parse and check a NIK; raise InvalidNik naming the first rule it breaks."""
    if value and not (value.isascii() and value.isdigit()):
        raise InvalidNik(NikRejection.NON_DIGITS)
    if len(value) != NIK_LENGTH:
        raise InvalidNik(NikRejection.LENGTH)
    if value[:2] not in PROVINCES:
        raise InvalidNik(NikRejection.UNKNOWN_PROVINCE)
    day, month, yy = int(value[6:8]), int(value[8:10]), int(value[10:12])
    sex = Sex.MALE
    if day > FEMALE_DAY_OFFSET:
        day -= FEMALE_DAY_OFFSET
        sex = Sex.FEMALE
    today = today or dt.date.today()
    try:
        birth_date = dt.date(_century_year(yy, today), month, day)
    except ValueError:
        raise InvalidNik(NikRejection.IMPOSSIBLE_DATE) from None
    if birth_date > today:
        raise InvalidNik(NikRejection.IMPOSSIBLE_DATE)
    if value[12:] == "0000":
        raise InvalidNik(NikRejection.SERIAL_ZERO)
    return NikInfo(
        value=value,
        province_code=value[:2],
        regency_code=value[:4],
        district_code=value[:6],
        birth_date=birth_date,
        sex=sex,
        serial=value[12:],
    )


def encode_birth_digits(birth_date: dt.date, sex: Sex) -> str:
    """The DDMMYY part of a NIK for a birth date and sex."""
    day = birth_date.day + (FEMALE_DAY_OFFSET if sex is Sex.FEMALE else 0)
    return f"{day:02d}{birth_date.month:02d}{birth_date.year % 100:02d}"


def make_nik(district_code: str, birth_date: dt.date, sex: Sex, serial: int) -> str:
    """Build a NIK from its parts (used by the synthetic generator and tests)."""
    if len(district_code) != 6 or not district_code.isdigit():
        raise ValueError("district_code must be six digits")
    if not 1 <= serial <= 9999:
        raise ValueError("serial must be 1..9999")
    return f"{district_code}{encode_birth_digits(birth_date, sex)}{serial:04d}"


def _validate(value: str) -> str:
    parse_nik(value)
    return value


Nik = Annotated[str, AfterValidator(_validate)]
"""A NIK string checked with parse_nik when a pydantic model is validated."""
