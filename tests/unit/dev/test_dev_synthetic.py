"""Synthetic citizens: deterministic, valid, realistic households (speed: bench/synthetic.py)."""

from __future__ import annotations

from collections import Counter

from ikd_dev.synthetic import HOUSEHOLD_SIZE, citizen, generate_citizens
from ikd_shared.events.profile_v1 import CitizenProfile
from ikd_shared.nik import parse_nik
from ikd_shared.regions import REGENCIES


def test_same_seed_same_people_and_index_access_agrees() -> None:
    people = generate_citizens(500, seed=42)
    assert people == generate_citizens(500, seed=42)
    assert [citizen(42, i) for i in (0, 1, 77, 499)] == [people[i] for i in (0, 1, 77, 499)]
    assert generate_citizens(10, seed=42, start=100) == people[100:110]
    assert generate_citizens(50, seed=43) != people[:50]


def test_every_generated_citizen_validates() -> None:
    for person in generate_citizens(3000, seed=1):
        again = CitizenProfile.model_validate(person.model_dump())
        assert again == person
        info = parse_nik(person.nik)
        assert info.birth_date == person.date_of_birth
        assert info.sex is person.sex


def test_niks_are_unique_and_mostly_kabupaten_cirebon() -> None:
    people = generate_citizens(40_000, seed=9)
    assert len({p.nik for p in people}) == len(people)
    regencies = Counter(p.nik[:4] for p in people)
    assert regencies["3209"] / len(people) > 0.5
    assert set(regencies) <= set(REGENCIES)
    districts = {p.nik[:6] for p in people if p.nik.startswith("3209")}
    assert len(districts) == len(REGENCIES["3209"].districts)


def test_households_share_card_address_and_district() -> None:
    people = generate_citizens(HOUSEHOLD_SIZE * 50, seed=2)
    for start in range(0, len(people), HOUSEHOLD_SIZE):
        household = people[start : start + HOUSEHOLD_SIZE]
        assert len({p.family_card_number for p in household}) == 1
        assert len({p.address for p in household}) == 1
        assert len({p.nik[:6] for p in household}) == 1
        head, *children = household[0], *household[2:]
        assert all(child.date_of_birth > head.date_of_birth for child in children)
    assert len({p.family_card_number for p in people}) == 50
