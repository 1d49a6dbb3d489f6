"""Hugging Face `transformers` vision towers: CLIP (production default) and any pooled vision model (`hf`).

Nothing is downloaded: `model` is a local folder or a hub id already in the local HF cache. Preprocessing
(size / mean / std) comes from the folder's image-processor config, applied by our own letterbox transform
instead of the processor's resize-and-crop (product photos are tall or wide; cropping cuts them).
"""

from __future__ import annotations

from pathlib import Path

import torch
from torch import nn

from setenc.plumbing.errors import SetencError
from setenc.photos.decode import ImageTransform
from setenc.plumbing.paths import file_sha256
from setenc.photos.backbones.base import TorchSpec, short_hash

CLIP_DEFAULT = "openai/clip-vit-base-patch32"


def resolve_model(model: str | Path) -> Path:
    """A local model folder, or the snapshot folder of a hub id in the local HF cache."""
    path = Path(model).expanduser()
    if path.is_dir():
        return path
    try:
        from huggingface_hub import snapshot_download

        return Path(snapshot_download(str(model), local_files_only=True))
    except Exception:  # noqa: BLE001 -- not cached, not a valid repo id, offline: all mean the same to the user
        looks_like_folder = path.is_absolute() or str(model).startswith((".", "~")) or str(model).count("/") != 1
        hub_id = "openai/clip-vit-base-patch32" if looks_like_folder else str(model)
        what = "folder not found" if looks_like_folder else "not a local folder and not in the local Hugging Face cache"
        raise SetencError(
            f"{model}: {what}, and nothing is downloaded here. On a machine with internet run "
            f"`hf download {hub_id} --local-dir DIR`, copy DIR here and pass it: --backbone_kwargs.model DIR "
            "(train.py) or --model DIR (evaluate.py, export.py)"
        ) from None


def weight_files(folder: Path) -> list[Path]:
    """The weight files `from_pretrained` reads: safetensors if any, else PyTorch .bin."""
    files = sorted(folder.glob("*.safetensors")) or sorted(folder.glob("*.bin"))
    if not files:
        raise SetencError(f"{folder}: no *.safetensors or *.bin weight files; save the model with save_pretrained()")
    return files


def _side(size: object) -> int | None:
    """Square side from a processor size (dict or SizeDict): height, else shortest_edge."""
    if size is None:
        return None
    get = size.get if isinstance(size, dict) else (lambda k: getattr(size, k, None))
    return get("height") or get("shortest_edge")


def processor_geometry(folder: Path) -> tuple[int, tuple[float, ...], tuple[float, ...]]:
    """(input size, mean, std) from the folder's image-processor config: crop size if it crops, else size."""
    from transformers import AutoImageProcessor

    try:
        proc = AutoImageProcessor.from_pretrained(folder, local_files_only=True)
    except Exception as e:  # noqa: BLE001
        raise SetencError(
            f"{folder}: cannot read its image-processor config ({e}); save one there with "
            "AutoImageProcessor.from_pretrained(<hub id>).save_pretrained(folder)"
        ) from None
    crop = _side(getattr(proc, "crop_size", None)) if getattr(proc, "do_center_crop", False) else None
    size = crop or _side(getattr(proc, "size", None))
    if not size:
        raise SetencError(f"{folder}: its image-processor config gives no input size")
    return int(size), tuple(proc.image_mean), tuple(proc.image_std)


def _load(cls: type, folder: Path, allow_missing: str = "", **kw) -> tuple[nn.Module, list[str]]:
    """`cls.from_pretrained(folder)` offline -> (model, names of weights it had to initialise at random).

    Weights the model lacks (a full CLIP's text tower) are expected and not reported; weights the checkpoint
    lacks are an error, except names containing `allow_missing`.
    """
    from transformers.utils import logging

    verbosity, bar = logging.get_verbosity(), logging.is_progress_bar_enabled()
    logging.set_verbosity_error()  # the per-key load report would list every unused text-tower weight
    logging.disable_progress_bar()  # a "Loading weights" bar per model would clutter quiet runs
    try:
        model, info = cls.from_pretrained(folder, local_files_only=True, output_loading_info=True, **kw)
    except Exception as e:  # noqa: BLE001
        raise SetencError(f"{folder}: cannot load the model with {cls.__name__} ({type(e).__name__}: {e})") from None
    finally:
        logging.set_verbosity(verbosity)
        if bar:
            logging.enable_progress_bar()
    missing = sorted(info.get("missing_keys", ()))
    bad = [k for k in missing if not (allow_missing and allow_missing in k)]
    if bad:
        raise SetencError(
            f"{folder}: the checkpoint lacks {len(bad)} weights of {cls.__name__} (e.g. {bad[:3]}); "
            "it is not a complete checkpoint of this kind of model"
        )
    return model, missing


class ClipTower(nn.Module):
    """CLIP vision tower + projection: pixels -> `image_embeds` (projection dim)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.model(pixel_values=x).image_embeds  # (B, P)


class PooledTower(nn.Module):
    """Any vision model: image features if it has them (CLIP, SigLIP), else pooler output, else the CLS token."""

    def __init__(self, model: nn.Module, use_pooler: bool):
        super().__init__()
        self.model, self.use_pooler = model, use_pooler

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if hasattr(self.model, "get_image_features"):
            out = self.model.get_image_features(pixel_values=x)
            return out if isinstance(out, torch.Tensor) else out.pooler_output  # (B, D)
        out = self.model(pixel_values=x)
        pooled = getattr(out, "pooler_output", None)
        return pooled if self.use_pooler and pooled is not None else out.last_hidden_state[:, 0]  # (B, D)


def _label(model: str | Path) -> str:
    return Path(str(model).rstrip("/")).name


def clip(model: str | Path = CLIP_DEFAULT) -> TorchSpec:
    """`CLIPVisionModelWithProjection` from a folder / cached hub id; vectors are its `image_embeds`."""
    from transformers import AutoConfig, CLIPVisionModelWithProjection

    folder = resolve_model(model)
    files = weight_files(folder)
    _, mean, std = processor_geometry(folder)
    config = AutoConfig.from_pretrained(folder, local_files_only=True)
    if config.model_type not in ("clip", "clip_vision_model"):
        raise SetencError(f"{folder}: holds a {config.model_type!r} model, not CLIP; use the `hf` backbone for it")
    vision = getattr(config, "vision_config", config)  # a full CLIP folder holds both towers
    vision.projection_dim = getattr(config, "projection_dim", vision.projection_dim)  # kept at the top level there
    transform = ImageTransform(vision.image_size, mean, std)  # position embeddings are fixed to image_size
    key = short_hash([file_sha256(f) for f in files], vars(transform))

    def build() -> nn.Module:
        return ClipTower(_load(CLIPVisionModelWithProjection, folder, config=vision)[0])

    return TorchSpec("clip", f"clip:{_label(model)}:{key}", transform, build)


def hf(model: str | Path) -> TorchSpec:
    """Any `transformers` vision model folder (DINOv2, ViT, SigLIP, ...) through `AutoModel`, pooled."""
    from transformers import AutoModel

    folder = resolve_model(model)
    files = weight_files(folder)
    transform = ImageTransform(*processor_geometry(folder))
    key = short_hash([file_sha256(f) for f in files], vars(transform))

    def build() -> nn.Module:
        net, missing = _load(AutoModel, folder, allow_missing="pooler")
        # a checkpoint without trained pooler weights gets a random pooler: use the CLS token instead
        return PooledTower(net, use_pooler=not missing)

    return TorchSpec("hf", f"hf:{_label(model)}:{key}", transform, build)
