"""The SWORD zText reader: versification tables, verse text, errors."""

from pathlib import Path

import pytest

from aigc.data.sword import iter_verses, osis_to_text
from aigc.data.versification import VERSIFICATIONS, index_size
from aigc.errors import DataError

ROOT = Path("/usr/share/sword")
MODULES = {"engWEB2015eb": "sword-text-web", "engKJV2006eb": "sword-text-kjv", "spaRV1909eb": "sword-text-sparv"}


def _installed(module: str) -> bool:
    return (ROOT / "mods.d" / f"{module}.conf").is_file()


_cache: dict[str, dict[str, str]] = {}


def verses(module: str) -> dict[str, str]:
    """All verses of an installed module (read once per test session)."""
    if not _installed(module):
        pytest.skip(f"needs `apt-get install {MODULES[module]}`")
    if module not in _cache:
        _cache[module] = dict(iter_verses(module, ROOT))
    return _cache[module]


def test_versification_tables_match_known_totals():
    kjv_ot, kjv_nt = VERSIFICATIONS["KJV"]
    assert (len(kjv_ot), len(kjv_nt)) == (39, 27)
    assert sum(sum(c) for _, c in kjv_ot + kjv_nt) == 31102  # the KJV's verse count
    assert index_size(kjv_ot) == 24115 and index_size(kjv_nt) == 8246


@pytest.mark.parametrize("module", list(MODULES))
def test_index_size_matches_module_files(module):
    if not _installed(module):
        pytest.skip(f"needs `apt-get install {MODULES[module]}`")
    conf = (ROOT / "mods.d" / f"{module}.conf").read_text()
    v11n = next(line.split("=", 1)[1] for line in conf.splitlines() if line.startswith("Versification="))
    data = ROOT / "modules" / "texts" / "ztext" / module
    for testament, books in zip(("ot", "nt"), VERSIFICATIONS[v11n]):
        assert (data / f"{testament}.bzv").stat().st_size // 10 == index_size(books)


@pytest.mark.parametrize(
    "module, key, text",
    [
        ("engWEB2015eb", "Gen.1.1", "In the beginning, God created the heavens and the earth."),
        ("engKJV2006eb", "Gen.1.1", "In the beginning God created the heaven and the earth."),
        ("spaRV1909eb", "Gen.1.1", "EN el principio crió Dios los cielos y la tierra."),
        ("engWEB2015eb", "John.3.16", "For God so loved the world, that he gave his only born Son, "
         "that whoever believes in him should not perish, but have eternal life."),
        ("engKJV2006eb", "John.3.16", "For God so loved the world, that he gave his only begotten Son, "
         "that whosoever believeth in him should not perish, but have everlasting life."),
        ("spaRV1909eb", "John.3.16", "Porque de tal manera amó Dios al mundo, que ha dado á su Hijo "
         "unigénito, para que todo aquel que en él cree, no se pierda, mas tenga vida eterna."),
        ("engKJV2006eb", "Rev.22.21", "The grace of our Lord Jesus Christ be with you all. Amen."),
        ("spaRV1909eb", "Gen.2.12", "Y el oro de aquella tierra es bueno: hay allí también bdelio y piedra cornerina."),
    ],
)
def test_known_verses(module, key, text):
    assert verses(module)[key] == text


def test_web_has_all_canonical_verses_and_no_glossary():
    web = verses("engWEB2015eb")
    assert len(web) > 31_000
    assert "Tob.1.1" in web  # WEB includes the deuterocanon (NRSVA versification)
    assert web["Rev.22.21"] == "The grace of the Lord Jesus Christ be with all the saints. Amen."
    assert all("<" not in t and "\x00" not in t for t in web.values())


def test_kjv_and_rv1909_keys_align():
    kjv, rv = verses("engKJV2006eb"), verses("spaRV1909eb")
    shared = kjv.keys() & rv.keys()
    assert len(shared) > 31_000
    assert "Salmo de David" in rv["Ps.3.1"] and "A Psalm of David" in kjv["Ps.3.1"]


def test_osis_cleaning():
    note = '<note placement="foot"><reference type="annotateRef">1:1 </reference>a note</note>'
    assert osis_to_text(f"<w>God</w>{note}<w>created</w>.") == "God created."
    assert osis_to_text(f"<w>God</w>{note}, and") == "God, and"
    assert osis_to_text('<title type="x-heading">Heading</title> Text &amp; more') == "Text & more"
    assert osis_to_text('<title canonical="true" type="psalm">A Psalm.</title> <l/>Verse') == "A Psalm. Verse"
    added = '<transChange type="added">{}</transChange>'
    assert osis_to_text(f"<w>sáca</w>{added.format('lo')} de") == "sácalo de"
    assert osis_to_text(f"<w>díjo</w>{added.format('le')}<w>Dios</w>") == "díjole Dios"
    assert osis_to_text(f"<w>allí</w>{added.format('también')}<w>bdelio</w>") == "allí también bdelio"
    assert osis_to_text("¶ Word") == "Word"


def test_missing_module_names_the_debian_package(tmp_path):
    with pytest.raises(DataError, match="apt-get install sword-text-web"):
        list(iter_verses("engWEB2015eb", tmp_path))


def test_unknown_versification_is_a_clear_error(tmp_path):
    (tmp_path / "mods.d").mkdir()
    (tmp_path / "mods.d" / "odd.conf").write_text("[Odd]\nModDrv=zText\nVersification=Synodal\n")
    with pytest.raises(DataError, match="versification 'Synodal'"):
        list(iter_verses("Odd", tmp_path))
