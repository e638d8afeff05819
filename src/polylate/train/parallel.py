"""Cross-lingual training pairs from installed software translations (gettext catalogs).

Every Linux system that ships translated programs carries a parallel corpus: each
``<locale_dir>/<lang>/LC_MESSAGES/<domain>.mo`` maps English interface strings (``msgid``) to
their human translation (``msgstr``). OPUS publishes the same kind of data (GNOME, KDE,
Ubuntu) as standard MT training corpora. ``shared/data`` has no cross-lingual pairs, and
this source covers ~130 languages on a desktop-ish Debian image, so it is the weak
cross-lingual supervision for training (translation as query, English as document).

Strings are cleaned of what is markup rather than language (format specifiers, mnemonic
markers, tags, escapes) and kept only when they read as a phrase of at least ``min_words``
words. Each English string is used at most once, paired with one of its translations, and
languages are visited round-robin (alphabetically) so that a few big locales do not take the
whole sample.
"""

from __future__ import annotations

import gettext
import random
import re
from collections.abc import Iterable
from pathlib import Path

from polylate.train.data import Pair

DEFAULT_LOCALE_DIR = Path("/usr/share/locale")

# catalogs that are name lists (countries, languages, scripts, currencies), not sentences
_SKIP_DOMAINS = ("iso_",)
_FORMAT = re.compile(r"%(?:\d+\$)?[-+ #0']*\d*(?:\.\d+)?(?:hh|h|ll|l|L|q|j|z|t|I64|I32)?[diouxXeEfgGcsSpn%]"
                     r"|%\(\w+\)[sdif]|\{[\w.:!]*\}|\$\{?\w+\}?")
_TAG = re.compile(r"</?[A-Za-z][^<>]*>|&(?:lt|gt|amp|quot|apos|nbsp|#\d+);")
_MNEMONIC = re.compile(r"\(_\w\)|\(&\w\)|_(?=\w)|&(?=\w)")
_SPACES = re.compile(r"\s+")
_EMPTY_QUOTES = re.compile(r"[\"'`“”„«»‘’‚‹›「」『』]\s*[\"'“”«»‘’‹›「」『』]")


def clean(text: str) -> str:
    """Interface string → plain text (no format specifiers, tags, mnemonics, escapes)."""
    text = _TAG.sub(" ", text)
    text = _FORMAT.sub(" ", text)
    text = _MNEMONIC.sub("", text)
    text = text.replace("\\n", " ").replace("\\t", " ")
    text = _EMPTY_QUOTES.sub(" ", text)
    return _SPACES.sub(" ", text).strip(" \t:;,")


def _usable(en: str, min_words: int, max_chars: int) -> bool:
    return (len(en.split()) >= min_words and len(en) <= max_chars
            and sum(c.isalpha() for c in en) >= 0.6 * len(en.replace(" ", "")))


def read_catalog(path: str | Path) -> dict[str, str]:
    """One ``.mo`` file → {English msgid: translation}, singular entries only, contexts
    dropped, untranslated entries (empty or equal to the msgid) skipped."""
    with open(path, "rb") as f:
        catalog = gettext.GNUTranslations(f)._catalog
    out = {}
    for key, value in catalog.items():
        if not isinstance(key, str) or not key or not value or key == value:
            continue  # plural forms have (msgid, n) keys; "" is the header
        out[key.split("\x04", 1)[-1]] = value  # "context\x04msgid"
    return out


def catalog_files(locale_dir: str | Path = DEFAULT_LOCALE_DIR,
                  languages: Iterable[str] | None = None) -> dict[str, list[Path]]:
    """{language: [.mo files]} under ``locale_dir`` (English locales and name lists left out)."""
    root = Path(locale_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"locale directory {root} does not exist")
    wanted = set(languages) if languages is not None else None
    out: dict[str, list[Path]] = {}
    for path in sorted(root.glob("*/LC_MESSAGES/*.mo")):
        lang = path.parts[-3]
        if lang.split("_")[0].split("@")[0] == "en" or path.stem.startswith(_SKIP_DOMAINS):
            continue
        if wanted is None or lang in wanted:
            out.setdefault(lang, []).append(path)
    return out


def load_gettext_pairs(locale_dir: str | Path = DEFAULT_LOCALE_DIR, limit: int | None = None,
                       seed: int = 0, languages: Iterable[str] | None = None,
                       min_words: int = 3, max_chars: int = 160,
                       exclude: Iterable[str] = ()) -> list[Pair]:
    """Pairs (translation → English) drawn round-robin over languages, each English string
    once. ``exclude``: English strings not to use (e.g. ones already in a held-out set)."""
    files = catalog_files(locale_dir, languages)
    if not files:
        raise ValueError(f"no translated gettext catalogs under {locale_dir}")
    excluded = {clean(e) for e in exclude}
    by_lang: dict[str, list[tuple[str, str]]] = {}
    for lang, paths in files.items():
        seen: dict[str, str] = {}
        for path in paths:
            try:
                catalog = read_catalog(path)
            except (OSError, LookupError, ValueError):
                continue  # a corrupt or oddly-encoded catalog is skipped, not fatal
            for msgid, msgstr in catalog.items():
                en, tr = clean(msgid), clean(msgstr)
                if en in seen or en in excluded or not tr or tr == en or not _usable(en, min_words, max_chars):
                    continue
                if len(tr) > 3 * max_chars:
                    continue
                seen[en] = tr
        if seen:
            by_lang[lang] = sorted(seen.items())
    rng = random.Random(seed)
    for rows in by_lang.values():
        rng.shuffle(rows)
    langs = sorted(by_lang)
    cursor = dict.fromkeys(langs, 0)
    used: set[str] = set()
    pairs: list[Pair] = []
    while langs and (limit is None or len(pairs) < limit):
        for lang in list(langs):
            rows, i = by_lang[lang], cursor[lang]
            while i < len(rows) and rows[i][0] in used:
                i += 1
            if i == len(rows):
                langs.remove(lang)
                continue
            en, tr = rows[i]
            cursor[lang] = i + 1
            used.add(en)
            pairs.append(Pair(tr, en))
            if limit is not None and len(pairs) >= limit:
                break
    return pairs


__all__ = ["DEFAULT_LOCALE_DIR", "catalog_files", "clean", "load_gettext_pairs", "read_catalog"]
