"""NIK rules, property-tested: valid NIKs parse back to their parts; each kind of bad one fails."""

from __future__ import annotations

import datetime as dt

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from ikd_shared.nik import InvalidNik, NikRejection, Sex, make_nik, parse_nik
from ikd_shared.regions import PROVINCES

TODAY = dt.date(2026, 6, 15)
provinces = st.sampled_from(sorted(PROVINCES))
rest_of_district = st.text("0123456789", min_size=4, max_size=4)
birth_dates = st.dates(min_value=dt.date(TODAY.year - 99, 1, 1), max_value=TODAY)
sexes = st.sampled_from(list(Sex))
serials = st.integers(min_value=1, max_value=9999)
unknown_provinces = st.text("0123456789", min_size=2, max_size=2).filter(
    lambda code: code not in PROVINCES
)


@given(provinces, rest_of_district, birth_dates, sexes, serials)
def test_valid_nik_parses_to_its_parts(province, rest, birth, sex, serial) -> None:
    nik = make_nik(province + rest, birth, sex, serial)
    info = parse_nik(nik, today=TODAY)
    assert info.province_code == province
    assert info.province == PROVINCES[province]
    assert info.district_code == province + rest
    assert info.birth_date == birth
    assert info.sex is sex
    assert int(info.serial) == serial


def _rejection(value: str) -> NikRejection:
    with pytest.raises(InvalidNik) as error:
        parse_nik(value, today=TODAY)
    assert str(error.value)  # carries a human-readable message
    return error.value.reason


@given(st.text("0123456789", max_size=40).filter(lambda v: len(v) != 16))
def test_wrong_length(value) -> None:
    assert _rejection(value) is NikRejection.LENGTH


@given(st.text(min_size=16, max_size=16).filter(lambda v: not (v.isascii() and v.isdigit())))
def test_non_digits(value) -> None:
    assert _rejection(value) is NikRejection.NON_DIGITS


@given(unknown_provinces, rest_of_district, birth_dates, sexes, serials)
def test_unknown_province(province, rest, birth, sex, serial) -> None:
    assert _rejection(make_nik(province + rest, birth, sex, serial)) is (
        NikRejection.UNKNOWN_PROVINCE
    )


@given(
    provinces, rest_of_district, st.integers(0, 99), st.integers(0, 99), st.integers(0, 99), serials
)
def test_impossible_birth_date(province, rest, day, month, yy, serial) -> None:
    real_day = day - 40 if day > 40 else day
    try:
        year = 2000 + yy if 2000 + yy <= TODAY.year else 1900 + yy
        possible = dt.date(year, month, real_day) <= TODAY
    except ValueError:
        possible = False
    assume(not possible)
    value = f"{province}{rest}{day:02d}{month:02d}{yy:02d}{serial:04d}"
    assert _rejection(value) is NikRejection.IMPOSSIBLE_DATE


@given(provinces, rest_of_district, birth_dates, sexes)
def test_serial_zero(province, rest, birth, sex) -> None:
    value = make_nik(province + rest, birth, sex, 1)[:12] + "0000"
    assert _rejection(value) is NikRejection.SERIAL_ZERO


def test_women_have_forty_added_to_the_day() -> None:
    info = parse_nik("3209085306780001", today=TODAY)
    assert (info.sex, info.birth_date) == (Sex.FEMALE, dt.date(1978, 6, 13))
