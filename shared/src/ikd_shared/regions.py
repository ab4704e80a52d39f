"""Indonesian administrative region codes (Kemendagri) as used in the NIK.

Provinces are complete. Regencies and districts are listed where the project needs them
(the sample MPP is Kabupaten Cirebon, 32.09); the NIK check accepts any regency and district
code of a known province, since Dukcapil issues codes faster than any static table follows.
"""

from __future__ import annotations

from dataclasses import dataclass

PROVINCES: dict[str, str] = {
    "11": "Aceh",
    "12": "Sumatera Utara",
    "13": "Sumatera Barat",
    "14": "Riau",
    "15": "Jambi",
    "16": "Sumatera Selatan",
    "17": "Bengkulu",
    "18": "Lampung",
    "19": "Kepulauan Bangka Belitung",
    "21": "Kepulauan Riau",
    "31": "DKI Jakarta",
    "32": "Jawa Barat",
    "33": "Jawa Tengah",
    "34": "DI Yogyakarta",
    "35": "Jawa Timur",
    "36": "Banten",
    "51": "Bali",
    "52": "Nusa Tenggara Barat",
    "53": "Nusa Tenggara Timur",
    "61": "Kalimantan Barat",
    "62": "Kalimantan Tengah",
    "63": "Kalimantan Selatan",
    "64": "Kalimantan Timur",
    "65": "Kalimantan Utara",
    "71": "Sulawesi Utara",
    "72": "Sulawesi Tengah",
    "73": "Sulawesi Selatan",
    "74": "Sulawesi Tenggara",
    "75": "Gorontalo",
    "76": "Sulawesi Barat",
    "81": "Maluku",
    "82": "Maluku Utara",
    "91": "Papua",
    "92": "Papua Barat",
    "93": "Papua Selatan",
    "94": "Papua Tengah",
    "95": "Papua Pegunungan",
    "96": "Papua Barat Daya",
}


@dataclass(frozen=True, slots=True)
class Regency:
    code: str  # four digits: province + regency
    name: str
    postal_prefix: str
    districts: dict[str, str]  # two-digit district code -> name


REGENCIES: dict[str, Regency] = {
    "3209": Regency(
        code="3209",
        name="Kabupaten Cirebon",
        postal_prefix="45",
        districts={
            "01": "Waled",
            "02": "Ciledug",
            "03": "Losari",
            "04": "Babakan",
            "05": "Karangsembung",
            "06": "Lemahabang",
            "07": "Susukan Lebak",
            "08": "Sedong",
            "09": "Astanajapura",
            "10": "Pangenan",
            "11": "Mundu",
            "12": "Beber",
            "13": "Talun",
            "14": "Sumber",
            "15": "Dukupuntang",
            "16": "Palimanan",
            "17": "Plumbon",
            "18": "Weru",
            "19": "Kedawung",
            "20": "Gunung Jati",
            "21": "Kapetakan",
            "22": "Klangenan",
            "23": "Arjawinangun",
            "24": "Panguragan",
            "25": "Ciwaringin",
            "26": "Susukan",
            "27": "Gegesik",
            "28": "Kaliwedi",
            "29": "Gebang",
            "30": "Depok",
            "31": "Pasaleman",
            "32": "Pabuaran",
            "33": "Karangwareng",
            "34": "Tengah Tani",
            "35": "Plered",
            "36": "Gempol",
            "37": "Greged",
            "38": "Suranenggala",
            "39": "Jamblang",
            "40": "Pabedilan",
        },
    ),
    "3274": Regency(
        code="3274",
        name="Kota Cirebon",
        postal_prefix="45",
        districts={
            "01": "Harjamukti",
            "02": "Lemahwungkuk",
            "03": "Pekalipan",
            "04": "Kesambi",
            "05": "Kejaksan",
        },
    ),
    "3212": Regency(
        code="3212",
        name="Kabupaten Indramayu",
        postal_prefix="45",
        districts={"01": "Haurgeulis", "16": "Indramayu", "17": "Sindang", "18": "Cantigi"},
    ),
    "3210": Regency(
        code="3210",
        name="Kabupaten Majalengka",
        postal_prefix="45",
        districts={"01": "Lemahsugih", "13": "Majalengka", "17": "Jatiwangi", "19": "Kadipaten"},
    ),
    "3208": Regency(
        code="3208",
        name="Kabupaten Kuningan",
        postal_prefix="45",
        districts={"01": "Darma", "09": "Kuningan", "14": "Cilimus", "20": "Luragung"},
    ),
    "3273": Regency(
        code="3273",
        name="Kota Bandung",
        postal_prefix="40",
        districts={"01": "Sukasari", "07": "Coblong", "14": "Sumur Bandung", "19": "Cibiru"},
    ),
    "3171": Regency(
        code="3171",
        name="Kota Jakarta Selatan",
        postal_prefix="12",
        districts={"01": "Jagakarsa", "04": "Cilandak", "06": "Kebayoran Baru", "10": "Tebet"},
    ),
    "3329": Regency(
        code="3329",
        name="Kabupaten Brebes",
        postal_prefix="52",
        districts={"01": "Salem", "07": "Bumiayu", "12": "Brebes", "14": "Losari"},
    ),
}


def province_name(code: str) -> str | None:
    return PROVINCES.get(code)
