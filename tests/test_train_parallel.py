"""polylate.train.parallel: translation → English pairs from gettext catalogs."""

from __future__ import annotations

import struct
from pathlib import Path

import pytest

from polylate.train.parallel import catalog_files, clean, load_gettext_pairs, read_catalog

HEADER = "Content-Type: text/plain; charset=UTF-8\nPlural-Forms: nplurals=2; plural=(n != 1);\n"


def write_mo(path: Path, entries: dict[str, str]) -> Path:
    """A GNU .mo file (magic, counts, two (length, offset) tables, NUL-ended strings)."""
    entries = {"": HEADER, **entries}
    keys = sorted(entries)
    ids = [k.encode() for k in keys]
    strs = [entries[k].encode() for k in keys]
    n = len(keys)
    start = 28 + 16 * n
    table_ids, table_strs, blob = [], [], b""
    for data, table in ((ids, table_ids), (strs, table_strs)):
        for s in data:
            table.append((len(s), start + len(blob)))
            blob += s + b"\0"
    head = struct.pack("<7I", 0x950412DE, 0, n, 28, 28 + 8 * n, 0, 0)
    body = b"".join(struct.pack("<2I", *t) for t in table_ids + table_strs)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(head + body + blob)
    return path


@pytest.fixture
def locale_dir(tmp_path):
    root = tmp_path / "locale"
    write_mo(root / "fr" / "LC_MESSAGES" / "app.mo", {
        "Could not open the file %s": "Impossible d'ouvrir le fichier %s",
        "Save the current _document": "Enregistrer le _document actuel",
        "menu\x04Close all open windows": "Fermer toutes les fenêtres ouvertes",
        "Untranslated message stays out": "Untranslated message stays out",
        "Too short": "Trop court",
        "Show hidden files in the list": "",
    })
    write_mo(root / "de" / "LC_MESSAGES" / "app.mo", {
        "Could not open the file %s": "Die Datei %s konnte nicht geöffnet werden",
        "Show hidden files in the list": "Versteckte Dateien in der Liste anzeigen",
        "Delete the selected items now": "Die ausgewählten Elemente jetzt löschen",
    })
    write_mo(root / "ja" / "LC_MESSAGES" / "app.mo", {
        "Save the current _document": "現在のドキュメントを保存(_S)",
        "Print the selected pages only": "選択したページのみ印刷",
    })
    write_mo(root / "en_GB" / "LC_MESSAGES" / "app.mo", {"Pick a color for the text": "Pick a colour for the text"})
    write_mo(root / "fr" / "LC_MESSAGES" / "iso_3166.mo", {"United States of America": "États-Unis d'Amérique"})
    return root


def test_clean_strips_markup_not_words():
    assert clean("Opening “%s” files.") == "Opening files."
    assert clean("_Open the file <b>%1$s</b>") == "Open the file"
    assert clean("Ouvrir(_O)") == "Ouvrir"
    assert clean("Save &As...") == "Save As..."
    assert clean("Don't stop {count} now") == "Don't stop now"


def test_read_catalog_skips_header_untranslated_and_contexts(locale_dir):
    cat = read_catalog(locale_dir / "fr" / "LC_MESSAGES" / "app.mo")
    assert "" not in cat and "Untranslated message stays out" not in cat
    assert "Show hidden files in the list" not in cat  # empty translation
    assert cat["Close all open windows"] == "Fermer toutes les fenêtres ouvertes"


def test_catalog_files_leave_out_english_and_name_lists(locale_dir):
    files = catalog_files(locale_dir)
    assert sorted(files) == ["de", "fr", "ja"]
    assert all(p.name == "app.mo" for paths in files.values() for p in paths)
    assert sorted(catalog_files(locale_dir, ["ja"])) == ["ja"]


def test_pairs_round_robin_each_english_string_once(locale_dir):
    pairs = load_gettext_pairs(locale_dir, seed=0)
    english = [p.positive for p in pairs]
    assert len(english) == len(set(english))
    assert set(english) == {"Could not open the file", "Save the current document", "Close all open windows",
                            "Show hidden files in the list", "Delete the selected items now",
                            "Print the selected pages only"}
    assert "Too short" not in english  # fewer than three words
    by_en = {p.positive: p.query for p in pairs}
    assert by_en["Show hidden files in the list"] == "Versteckte Dateien in der Liste anzeigen"
    assert by_en["Save the current document"] in ("Enregistrer le document actuel", "現在のドキュメントを保存")
    # one string per language per round (de, fr, ja)
    assert pairs[2].query in ("現在のドキュメントを保存", "選択したページのみ印刷")
    assert sum(p.query in ("現在のドキュメントを保存", "選択したページのみ印刷") for p in pairs) >= 1
    assert load_gettext_pairs(locale_dir, seed=0) == pairs  # deterministic


def test_limit_and_exclude(locale_dir):
    assert len(load_gettext_pairs(locale_dir, limit=2)) == 2
    pairs = load_gettext_pairs(locale_dir, exclude=["Could not open the file %s"])
    assert "Could not open the file" not in {p.positive for p in pairs}


def test_missing_or_empty_locale_dir_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="does not exist"):
        load_gettext_pairs(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="no translated gettext catalogs"):
        load_gettext_pairs(tmp_path / "empty")


def test_a_corrupt_catalog_is_skipped(locale_dir):
    (locale_dir / "de" / "LC_MESSAGES" / "broken.mo").write_bytes(b"not a catalog at all, too short?")
    pairs = load_gettext_pairs(locale_dir)
    assert "Delete the selected items now" in {p.positive for p in pairs}


def test_cli_train_adds_gettext_pairs(tmp_path, shared_data, locale_dir):
    from safetensors.torch import load_file
    from typer.testing import CliRunner

    from polylate.cli import app

    out = tmp_path / "heads.safetensors"
    args = ["train", str(shared_data / "scifact"), "-o", str(out), "--limit", "8", "--batch-size", "8",
            "--heads-only", "--doc-maxlen", "48", "--dims", "128"]
    res = CliRunner().invoke(app, [*args, "--gettext-pairs", "4", "--locale-dir", str(locale_dir)])
    assert res.exit_code == 0, res.output
    assert "trained on 12 items" in res.output
    assert load_file(str(out))["heads.128.weight"].shape == (128, 384)
    res = CliRunner().invoke(app, [*args, "--overwrite", "--gettext-pairs", "4", "--locale-dir", str(tmp_path / "none")])
    assert res.exit_code == 2 and "--gettext-pairs" in res.output and "does not exist" in res.output
