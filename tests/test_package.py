"""The package's top-level names, imported when first used."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_the_cli_starts_without_importing_torch():
    """`polylate --help` and option errors answer in well under a second: torch (~3 s to
    import) is loaded by the commands that use it, not by ``import polylate``."""
    code = "import sys, polylate.cli; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "False"


def test_top_level_names_resolve_to_their_modules():
    import polylate
    from polylate import ColBERT, Index, PlaidIndex, load_model, maxsim
    from polylate.index.plaid import PlaidIndex as plaid_index
    from polylate.model.colbert import ColBERT as colbert
    from polylate.scoring import maxsim as scoring_maxsim

    assert Index is PlaidIndex is plaid_index and ColBERT is colbert and maxsim is scoring_maxsim
    assert callable(load_model) and set(polylate.__all__) <= set(dir(polylate))
    assert set(polylate.__all__) == {*polylate._WHERE, "Index", "__version__"}  # the two lists agree
    assert all(getattr(polylate, name) is not None for name in polylate.__all__)
    with pytest.raises(AttributeError, match="no attribute 'Indx'"):
        polylate.Indx  # noqa: B018
    code = "import polylate; print(polylate.index.plaid.PlaidIndex.__name__, polylate.scoring.maxsim.__name__)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["PlaidIndex", "maxsim"]  # submodules after a plain import, as before


def test_demo_rows_shorten_long_texts_visibly():
    from polylate.cli import _shortened

    text = "La photosynthèse permet aux plantes de transformer la lumière du soleil en énergie chimique."
    assert _shortened(text, 200) == text
    cut = _shortened(text, 60)
    assert cut.endswith("…") and len(cut) <= 60 and text.startswith(cut[:-1]) and text[len(cut) - 1] == " "
    assert _shortened("长城是中国古代修建的军事防御工程", 10) == "长城是中国古代修建…"


def test_a_trained_model_is_named_for_where_it_was_saved_and_its_first_base():
    from polylate.model.identity import fine_tuned_name, first_base

    assert fine_tuned_name("jina-colbert-v2", "mine") == "mine (fine-tuned from jina-colbert-v2)"
    again = fine_tuned_name("mine (fine-tuned from jina-colbert-v2)", "mine2")
    assert again == "mine2 (fine-tuned from jina-colbert-v2)"  # not "(fine-tuned from mine (...))"
    assert first_base(again) == "jina-colbert-v2" and first_base("jina-colbert-v2") == "jina-colbert-v2"
    assert fine_tuned_name("", "mine") == "mine"


def test_command_help_is_reflowed_for_the_terminal():
    """rich keeps a docstring's line breaks: help paragraphs must reach it as one line each."""
    import re

    from polylate import cli

    helps = {c.callback.__name__: c.help for g in (cli.app, cli.index_app, cli.qdrant_app) for c in g.registered_commands}
    assert all(helps.values()) and len(helps) >= 15
    assert not [name for name, text in helps.items() if re.search(r"(?<!\n)\n(?!\n)", text)]
    assert helps["index_add"].startswith("Add documents without rebuilding.\n\nCommitted atomically")
