"""Deterministic synthetic citizens for the demo, tests and benchmarks.

`citizen(seed, index)` is a pure function: the same seed and index give the same person on
every machine and every day (ages count from a fixed reference date). `generate_citizens`
yields `citizen(seed, 0..count-1)` quickly (households are computed once for their members).

People live in households of four (head, spouse, two children) that share a family card
(No. KK), an address and the district their NIKs are registered in. Most households live in
Kabupaten Cirebon (32.09), the rest in neighbouring regencies. NIKs are unique for up to
`UNIQUE_PER_DISTRICT` people per district (about five million people in all).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass

from ikd_shared.events.profile_v1 import (
    Address,
    BloodType,
    CitizenProfile,
    MaritalStatus,
    Nationality,
    Religion,
)
from ikd_shared.nik import Sex, make_nik
from ikd_shared.regions import PROVINCES, REGENCIES

REFERENCE_DATE = dt.date(2025, 1, 1)
HOUSEHOLD_SIZE = 4
_SERIALS = 9999
_DATE_LANES = 8  # birth dates are nudged into one of 8 lanes to keep NIKs unique
UNIQUE_PER_DISTRICT = _SERIALS * _DATE_LANES

MALE_NAMES = (
    "Agus",
    "Budi",
    "Dedi",
    "Eko",
    "Fajar",
    "Hendra",
    "Iwan",
    "Joko",
    "Rudi",
    "Slamet",
    "Ahmad",
    "Asep",
    "Bambang",
    "Dadang",
    "Endang",
    "Ujang",
    "Wahyu",
    "Yusuf",
    "Rizky",
    "Dimas",
    "Aditya",
    "Bayu",
    "Cecep",
    "Darmawan",
    "Firman",
    "Gilang",
    "Hadi",
    "Imam",
    "Kurniawan",
    "Lukman",
    "Mulyadi",
    "Nanang",
    "Oman",
    "Purnomo",
    "Rahmat",
    "Sutrisno",
    "Taufik",
    "Usman",
    "Wawan",
    "Yoga",
    "Sugeng",
    "Teguh",
    "Arif",
    "Heri",
    "Irfan",
    "Ridwan",
    "Sholeh",
    "Tarno",
)
FEMALE_NAMES = (
    "Siti",
    "Sri",
    "Dewi",
    "Ani",
    "Yuli",
    "Rina",
    "Nur",
    "Wati",
    "Euis",
    "Neneng",
    "Ayu",
    "Dian",
    "Fitri",
    "Indah",
    "Lestari",
    "Maya",
    "Nining",
    "Putri",
    "Ratna",
    "Sari",
    "Tuti",
    "Wulan",
    "Yanti",
    "Aisyah",
    "Cucu",
    "Dini",
    "Eka",
    "Fatimah",
    "Hana",
    "Iis",
    "Kartika",
    "Lilis",
    "Mega",
    "Nia",
    "Oom",
    "Puspita",
    "Rahayu",
    "Suminah",
    "Tini",
    "Umi",
    "Winda",
    "Yayah",
    "Zahra",
    "Nurhayati",
    "Kusmiati",
    "Rohimah",
    "Titin",
    "Khodijah",
)
FAMILY_NAMES = (
    "Santoso",
    "Wijaya",
    "Saputra",
    "Hidayat",
    "Kusuma",
    "Pratama",
    "Setiawan",
    "Nugroho",
    "Gunawan",
    "Permana",
    "Suryadi",
    "Hermawan",
    "Ramadhan",
    "Sulaiman",
    "Firmansyah",
    "Maulana",
    "Hakim",
    "Syahputra",
    "Susanto",
    "Wibowo",
    "Supriatna",
    "Sudrajat",
    "Rohman",
    "Sobari",
    "Suhendar",
    "Mulyana",
    "Kurnia",
    "Effendi",
    "Siregar",
    "Lubis",
    "Nasution",
    "Halim",
    "Tanjung",
    "Rahman",
    "Fauzi",
    "Iskandar",
    "Purnama",
    "Hasanah",
    "Zakaria",
)
STREET_NAMES = (
    "Siliwangi",
    "Ahmad Yani",
    "Sudirman",
    "Diponegoro",
    "Kartini",
    "Pemuda",
    "Pangeran Cakrabuana",
    "Sunan Gunung Jati",
    "Raya Sumber",
    "Kesambi",
    "Tuparev",
    "Dr. Wahidin",
    "Pramuka",
    "Merdeka",
    "Veteran",
    "Pahlawan",
    "Kalijaga",
    "Cipto Mangunkusumo",
    "Fatahillah",
    "Raya Plered",
    "Nyi Ageng Serang",
    "Kebon Melati",
    "Pasar Baru",
    "Masjid Agung",
)
VILLAGE_PREFIXES = (
    "Sumber",
    "Kali",
    "Tegal",
    "Karang",
    "Ci",
    "Wana",
    "Jati",
    "Sindang",
    "Suka",
    "Mekar",
    "Pasir",
    "Gunung",
    "Kedung",
    "Tanjung",
    "Babakan",
)
VILLAGE_SUFFIXES = (
    "sari",
    "jaya",
    "mulya",
    "wangi",
    "asih",
    "rahayu",
    "makmur",
    "kulon",
    "wetan",
    "lor",
    "kidul",
    "harja",
    "tengah",
    "anyar",
    "indah",
)
OCCUPATIONS_ADULT = (
    "Wiraswasta",
    "Petani/Pekebun",
    "Karyawan Swasta",
    "Pedagang",
    "Buruh Harian Lepas",
    "Pegawai Negeri Sipil",
    "Guru",
    "Nelayan/Perikanan",
    "Sopir",
    "Perangkat Desa",
    "Karyawan BUMN",
    "Perawat",
    "Tukang Batu",
    "Penjahit",
)
OCCUPATION_HOME = "Mengurus Rumah Tangga"
OCCUPATION_STUDENT = "Pelajar/Mahasiswa"
OCCUPATION_NONE = "Belum/Tidak Bekerja"
OCCUPATION_RETIRED = "Pensiunan"

# Weights per 1000 (Indonesian census shares, roughly).
RELIGIONS = (
    (Religion.ISLAM, 870),
    (Religion.KRISTEN, 70),
    (Religion.KATOLIK, 31),
    (Religion.HINDU, 17),
    (Religion.BUDDHA, 7),
    (Religion.KONGHUCU, 3),
    (Religion.KEPERCAYAAN, 2),
)
BLOOD_TYPES = (
    (BloodType.O, 400),
    (BloodType.A, 260),
    (BloodType.B, 260),
    (BloodType.AB, 50),
    (BloodType.UNKNOWN, 30),
)


def _table(weights: tuple[tuple[object, int], ...]) -> tuple[object, ...]:
    return tuple(value for value, weight in weights for _ in range(weight))


_RELIGION_TABLE = _table(RELIGIONS)
_BLOOD_TABLE = _table(BLOOD_TYPES)


@dataclass(frozen=True, slots=True)
class _District:
    code: str  # six digits
    name: str
    regency: str
    province: str
    place_of_birth: str
    postal_code: str


def _districts() -> tuple[_District, ...]:
    districts = []
    for regency in REGENCIES.values():
        town = regency.name.removeprefix("Kabupaten ").removeprefix("Kota ")
        for number, name in regency.districts.items():
            postal = f"{regency.postal_prefix}{1 + int(number) % 6}{int(number) % 100:02d}"
            districts.append(
                _District(
                    code=f"{regency.code}{number}",
                    name=name,
                    regency=regency.name,
                    province=PROVINCES[regency.code[:2]],
                    place_of_birth=town,
                    postal_code=postal,
                )
            )
    return tuple(districts)


DISTRICTS = _districts()
"""Every district a synthetic citizen lives in; Kabupaten Cirebon's 40 make up most of them."""


def _draws(seed: int, kind: int, number: int) -> tuple[int, ...]:
    """Sixteen pseudo-random 32-bit numbers for (seed, kind, number)."""
    digest = hashlib.blake2b(
        f"{seed}:{kind}:{number}".encode(), digest_size=64, person=b"ikd-synthetic"
    ).digest()
    return tuple(int.from_bytes(digest[i : i + 4], "little") for i in range(0, 64, 4))


@dataclass(frozen=True, slots=True)
class _Household:
    district: _District
    ordinal: int  # the household's number within its district
    family_name: str
    address: Address
    family_card_number: str
    head_birth: dt.date
    spouse_birth: dt.date
    married: bool
    religion: Religion


def _household(seed: int, number: int) -> _Household:
    r = _draws(seed, 0, number)
    count = len(DISTRICTS)
    district = DISTRICTS[(number + seed) % count]
    ordinal = number // count
    head_age_days = 365 * 28 + r[0] % (365 * 42)  # 28..70 years
    head_birth = REFERENCE_DATE - dt.timedelta(days=head_age_days)
    spouse_birth = head_birth + dt.timedelta(days=int(r[1] % (365 * 8)) - 365 * 2)
    issued = REFERENCE_DATE - dt.timedelta(days=r[2] % (365 * 15))
    card = f"{district.code}{issued:%d%m%y}{1 + ordinal % _SERIALS:04d}"
    village = (
        VILLAGE_PREFIXES[r[3] % len(VILLAGE_PREFIXES)]
        + VILLAGE_SUFFIXES[r[4] % len(VILLAGE_SUFFIXES)]
    )
    address = Address(
        street=f"Jl. {STREET_NAMES[r[5] % len(STREET_NAMES)]} No. {1 + r[6] % 180}",
        rt=f"{1 + r[7] % 12:03d}",
        rw=f"{1 + r[8] % 8:03d}",
        village=village,
        district=district.name,
        regency=district.regency,
        province=district.province,
        postal_code=district.postal_code,
    )
    religion = _RELIGION_TABLE[r[9] % len(_RELIGION_TABLE)]
    assert isinstance(religion, Religion)
    return _Household(
        district=district,
        ordinal=ordinal,
        family_name=FAMILY_NAMES[r[10] % len(FAMILY_NAMES)],
        address=address,
        family_card_number=card,
        head_birth=head_birth,
        spouse_birth=spouse_birth,
        married=r[11] % 10 != 0,
        religion=religion,
    )


def _lane_date(approximate: dt.date, lane: int) -> dt.date:
    """The date at or before `approximate` whose ordinal is `lane` modulo the lane count."""
    ordinal = approximate.toordinal()
    return dt.date.fromordinal(ordinal - (ordinal % _DATE_LANES) + lane - _DATE_LANES)


def _person(seed: int, index: int, household: _Household) -> CitizenProfile:
    role = index % HOUSEHOLD_SIZE
    r = _draws(seed, 1, index)
    local = household.ordinal * HOUSEHOLD_SIZE + role
    serial = 1 + local % _SERIALS
    lane = (local // _SERIALS) % _DATE_LANES
    if role == 0:
        sex = Sex.MALE if r[0] % 10 else Sex.FEMALE  # one household in ten is headed by a woman
        approximate = household.head_birth
    elif role == 1:
        sex = Sex.FEMALE if household.married else Sex(("male", "female")[r[0] % 2])
        approximate = household.spouse_birth
    else:
        sex = Sex.MALE if r[0] % 2 else Sex.FEMALE
        youngest_parent = max(household.head_birth, household.spouse_birth)
        offset = 365 * 19 + r[1] % (365 * 20)  # born 19..39 years after the younger parent
        approximate = min(
            youngest_parent + dt.timedelta(days=offset), REFERENCE_DATE - dt.timedelta(days=30)
        )
    birth = _lane_date(approximate, lane)
    age = (REFERENCE_DATE - birth).days // 365
    names = MALE_NAMES if sex is Sex.MALE else FEMALE_NAMES
    given = names[r[2] % len(names)]
    if r[3] % 3 == 0:
        given = f"{given} {names[r[4] % len(names)]}"
    full_name = given if r[5] % 4 == 0 else f"{given} {household.family_name}"
    if role >= 2 or not household.married:
        marital = MaritalStatus.BELUM_KAWIN if age < 25 or r[6] % 3 else MaritalStatus.KAWIN
        if role < 2 and age >= 25:
            marital = (MaritalStatus.CERAI_HIDUP, MaritalStatus.CERAI_MATI)[r[6] % 2]
    else:
        marital = MaritalStatus.KAWIN
    if age < 6:
        occupation = OCCUPATION_NONE
    elif age < 22:
        occupation = OCCUPATION_STUDENT
    elif age >= 60 and r[7] % 2:
        occupation = OCCUPATION_RETIRED
    elif role == 1 and sex is Sex.FEMALE and r[7] % 2:
        occupation = OCCUPATION_HOME
    else:
        occupation = OCCUPATIONS_ADULT[r[8] % len(OCCUPATIONS_ADULT)]
    blood = _BLOOD_TABLE[r[9] % len(_BLOOD_TABLE)]
    assert isinstance(blood, BloodType)
    district = household.district
    born_elsewhere = DISTRICTS[r[11] % len(DISTRICTS)]
    place = district.place_of_birth if r[10] % 5 else born_elsewhere.place_of_birth
    # Built with model_construct: every value above is valid by construction (the unit tests
    # validate generated citizens), and skipping validation keeps the generator fast.
    return CitizenProfile.model_construct(
        nik=make_nik(district.code, birth, sex, serial),
        full_name=full_name,
        place_of_birth=place,
        date_of_birth=birth,
        sex=sex,
        blood_type=blood,
        address=household.address,
        religion=household.religion,
        marital_status=marital,
        occupation=occupation,
        nationality=Nationality.WNI,
        family_card_number=household.family_card_number,
    )


def citizen(seed: int, index: int) -> CitizenProfile:
    """The index-th synthetic citizen of a seed (the same as generate_citizens(...)[index])."""
    if index < 0:
        raise ValueError("index must be >= 0")
    return _person(seed, index, _household(seed, index // HOUSEHOLD_SIZE))


def iter_citizens(count: int, *, seed: int = 0, start: int = 0) -> Iterator[CitizenProfile]:
    """Citizens start..start+count-1 of a seed, lazily."""
    household: _Household | None = None
    household_number = -1
    for index in range(start, start + count):
        number = index // HOUSEHOLD_SIZE
        if number != household_number:
            household, household_number = _household(seed, number), number
        assert household is not None
        yield _person(seed, index, household)


def generate_citizens(count: int, *, seed: int = 0, start: int = 0) -> list[CitizenProfile]:
    """A list of `count` synthetic citizens of a seed, from `start`."""
    return list(iter_citizens(count, seed=seed, start=start))
