"""Pretrained encoder weights from local files, never from the network.

`load_encoder_weights(encoder, path)` reads a safetensors file or a torch state dict
(loaded with weights_only=True: tensors only, never code) and puts it into a timm
`features_only` encoder. It accepts what people actually have on disk: timm's and
torchvision's ImageNet classifiers (the classifier head is ignored), state dicts saved
from DataParallel/DDP or torch.compile (`module.`, `_orig_mod.` prefixes), dicts wrapped
as {"state_dict": ...} or {"model": ...}, and gancolor checkpoints (their
generator.encoder.* tensors). Anything that does not fit is one line naming the file
and the keys that differ.

`cached_pretrained_file(name)` finds timm's ImageNet weights when they are already in
the local Hugging Face or torch hub cache, without any network call.
"""

from __future__ import annotations

import logging
import os
import pickle
import re
from pathlib import Path
from urllib.parse import urlparse

import torch
from torch import nn

from gancolor.errors import CheckpointError, ConfigError

log = logging.getLogger("gancolor.nets")

WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "net")
STRIP_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "encoder.")
GANCOLOR_ENCODER_PREFIX = "generator.encoder."  # in a gancolor checkpoint's nets
# Classifier heads of timm / torchvision models: a features_only encoder has none.
HEAD_PREFIXES = ("fc.", "head.", "head_", "classifier.", "last_linear.", "pre_logits.")


NOT_WEIGHTS = "not a safetensors file or a torch state dict"


def load_failure(exc: BaseException, file: Path) -> str:
    """Why torch.load(weights_only=True) or safetensors could not read `file`, in words
    of gancolor's: torch's own messages run to several sentences and advise
    weights_only=False, which would let the file run code (and cut to one line, they
    stop mid-sentence)."""
    text = str(exc)
    if "GLOBAL" in text or "Unsupported global" in text:
        # weights_only=True met a class or function: pickled objects, maybe code.
        return "it holds pickled objects other than tensors, which could run code: give a plain state dict or .safetensors"
    if file.suffix.lower() == ".safetensors" or isinstance(exc, pickle.UnpicklingError) or "Weights only load failed" in text:
        return NOT_WEIGHTS
    if "PytorchStreamReader" in text or "zip archive" in text or isinstance(exc, EOFError):
        return f"{NOT_WEIGHTS} (a truncated or damaged one?)"
    if isinstance(exc, OSError) and exc.strerror:  # the file itself: permissions, a disk error
        return exc.strerror[:1].lower() + exc.strerror[1:]
    # Anything else is the unpickler choking on bytes that are no pickle: KeyError(101),
    # IndexError('pop from empty list')... say nothing of its internals.
    return NOT_WEIGHTS


def weights_file(path: str | os.PathLike, where: str) -> Path:
    """`path` expanded, when it names a file; else a ConfigError saying what it names."""
    file = Path(path).expanduser()
    if file.is_dir():
        raise ConfigError(f"{where}: {file} is a folder: give the weights file in it (.safetensors, .pth, .pt)")
    if not file.is_file():
        raise ConfigError(f"{where}: weights file not found: {file}")
    return file


def read_state_dict(path: str | os.PathLike, where: str = "generator.encoder.weights", encoder: bool = True) -> dict[str, torch.Tensor]:
    """The tensors of a weights file, flat {name: tensor}, on the CPU. `encoder`: the
    file is for a DynamicUNet encoder, so a gancolor checkpoint without one is refused
    as such (rather than as a list of missing keys)."""
    file = weights_file(path, where)
    try:
        if file.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(file), device="cpu")
        else:
            state = torch.load(file, map_location="cpu", weights_only=True)
    except Exception as exc:  # not a weights file, truncated, pickled code...
        raise CheckpointError(f"{where}: cannot read {file}: {load_failure(exc, file)}") from None
    return _unwrap(state, file, where, encoder)


def _unwrap(state, file: Path, where: str, encoder: bool) -> dict[str, torch.Tensor]:
    if isinstance(state, dict) and state.get("format") == "gancolor-checkpoint":
        return _gancolor_checkpoint_tensors(state, file, where, encoder)
    for key in WRAPPER_KEYS:
        if isinstance(state, dict) and isinstance(state.get(key), dict):
            state = state[key]
            break
    if not isinstance(state, dict) or not state or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise CheckpointError(f"{where}: {file} does not hold a state dict (a mapping of names to tensors)")
    return dict(state)


def _gancolor_checkpoint_tensors(ckpt: dict, file: Path, where: str, encoder: bool) -> dict[str, torch.Tensor]:
    """A gancolor checkpoint's net tensors, for its generator.encoder.* part: the nets
    also hold non-tensor state (an image pool's `_extra_state`) that is no weight."""
    nets = ckpt.get("nets")
    nets = {k: v for k, v in nets.items() if isinstance(v, torch.Tensor)} if isinstance(nets, dict) else {}
    if encoder and not any(k.startswith(GANCOLOR_ENCODER_PREFIX) for k in nets):
        config = ckpt.get("config")
        model = config.get("model") if isinstance(config, dict) else None
        name = model.get("name") if isinstance(model, dict) else None
        kind = f" (model={name})" if isinstance(name, str) else ""
        owners = sorted({k.split(".", 1)[0] for k in nets})
        held = f"; its nets: {', '.join(owners)}" if owners else ""
        raise CheckpointError(
            f"{where}: {file} is a gancolor checkpoint{kind} with no {GANCOLOR_ENCODER_PREFIX.rstrip('.')} weights{held} "
            "(give one trained with generator=dynamic_unet, or the encoder's own weights file)"
        )
    return nets


def _strip_prefixes(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Drop wrapper prefixes shared by every key, repeatedly (module.backbone.conv1...)."""
    changed = True
    while changed:
        changed = False
        for prefix in STRIP_PREFIXES:
            if all(k.startswith(prefix) for k in state):
                state = {k[len(prefix) :]: v for k, v in state.items()}
                changed = True
    return state


def _views(state: dict[str, torch.Tensor]) -> list[dict[str, torch.Tensor]]:
    """Ways to read `state` as an encoder's tensors: as it is (prefixes shared by all
    keys dropped), or only its encoder part (a whole DynamicUNet or gancolor checkpoint)."""
    views = [_strip_prefixes(state)]
    for prefix in (GANCOLOR_ENCODER_PREFIX, "encoder."):
        part = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if part:
            views.append(_strip_prefixes(part))
    return views


def _source_key(key: str, source: dict) -> str | None:
    """The key in a full model's state dict for `key` of its features_only wrapper.

    timm's feature wrapper flattens top-level Sequentials into its own children, so
    `stem.0.weight` of the classifier is `stem_0.weight` in the encoder.
    """
    if key in source:
        return key
    first, _, rest = key.partition(".")
    match = re.fullmatch(r"(.+)_(\d+)", first)
    if match:
        candidate = f"{match.group(1)}.{match.group(2)}.{rest}"
        if candidate in source:
            return candidate
    return None


def _summary(label: str, keys: list[str]) -> str:
    return f"{label} ({len(keys)}): {', '.join(keys[:4])}{', ...' if len(keys) > 4 else ''}"


def fit_state_dict(
    encoder: nn.Module, state: dict[str, torch.Tensor], source: str, target: str = "the encoder"
) -> dict[str, torch.Tensor]:
    """`state` renamed to `encoder`'s keys, or one CheckpointError listing what differs
    (`target` names the net in that line: any timm model fits the same way)."""
    own = encoder.state_dict()
    # The view that names the most of the encoder's tensors is the one meant.
    state = max(_views(state), key=lambda view: sum(_source_key(k, view) is not None for k in own))
    fitted: dict[str, torch.Tensor] = {}
    used: set[str] = set()
    missing, reshaped = [], []
    for key, tensor in own.items():
        src = _source_key(key, state)
        if src is None:
            # Older torchvision files carry no BatchNorm step counters; nothing reads them.
            if key.endswith("num_batches_tracked"):
                fitted[key] = tensor
                continue
            missing.append(key)
            continue
        used.add(src)
        if state[src].shape != tensor.shape:
            reshaped.append(f"{key} {tuple(state[src].shape)} vs {tuple(tensor.shape)}")
            continue
        fitted[key] = state[src].to(tensor.dtype)
    unexpected = sorted(
        k for k in set(state) - used if not k.startswith(HEAD_PREFIXES) and not k.endswith("num_batches_tracked")
    )
    problems = [
        _summary(label, keys)
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("different shape", reshaped))
        if keys
    ]
    if problems:
        raise CheckpointError(f"{source} does not fit {target}: " + "; ".join(problems))
    return fitted


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike, where: str = "generator.encoder.weights") -> None:
    """Load a weights file into a timm features_only encoder (see the module doc)."""
    state = read_state_dict(path, where)
    encoder.load_state_dict(fit_state_dict(encoder, state, f"{where}: {Path(path).expanduser()}"))


def cached_pretrained_file(name: str) -> Path | None:
    """timm's default ImageNet weights for model `name` if a previous download left them
    in the local cache (Hugging Face hub or torch hub), else None. Never downloads:
    only paths are checked, as with HF_HUB_OFFLINE=1."""
    try:
        from timm.models import get_pretrained_cfg

        cfg = get_pretrained_cfg(name)
    except Exception:  # an unknown or untagged name: nothing to look for
        return None
    if cfg is None:
        return None
    candidates: list[Path] = []
    if getattr(cfg, "file", None):
        candidates.append(Path(cfg.file).expanduser())
    hub_id = getattr(cfg, "hf_hub_id", None)
    if hub_id:
        try:
            from huggingface_hub import try_to_load_from_cache

            filenames = [cfg.hf_hub_filename] if getattr(cfg, "hf_hub_filename", None) else []
            for filename in [*filenames, "model.safetensors", "pytorch_model.bin"]:
                found = try_to_load_from_cache(hub_id.split("@")[0], filename)
                if isinstance(found, str):
                    candidates.append(Path(found))
        except ImportError:
            pass
    if getattr(cfg, "url", None):
        candidates.append(Path(torch.hub.get_dir()) / "checkpoints" / os.path.basename(urlparse(cfg.url).path))
    return next((p for p in candidates if p.is_file()), None)
