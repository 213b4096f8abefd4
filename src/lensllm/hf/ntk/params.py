"""Which parameters the eNTK is measured over.

Subsets (the ``params`` argument of :func:`select_parameters`):

``"all"``
    Every parameter of the model, trainable or frozen (for a peft model: base weights and
    adapters).  Tied tensors count once.
``"last"``
    The last transformer block plus every parameterised module that runs after it (the
    final norm and the LM head).  The block list is found generically: the
    ``nn.ModuleList`` of same-type modules holding the most parameters (for an
    encoder-decoder that is the decoder, whose blocks carry cross-attention; ties go to
    the list registered last).  "Runs after it" is read from the module call order of one
    forward pass on the first probe example.  With tied input/output embeddings the shared
    matrix is included for its LM-head role only: the outputs of the modules that use it
    *before* the last block (the input embeddings) are detached during the measurement,
    so its gradient is the head gradient and backpropagation stops at the last block, as
    for an untied head.
``"lora"``
    The trainable parameters of a peft model (the adapters, plus any ``modules_to_save``).
a list of parameter-name prefixes
    Every parameter whose name equals a prefix or continues it after a dot
    (``"transformer.h.3"`` matches ``transformer.h.3.attn.c_attn.weight`` but not
    ``transformer.h.30...``); names include aliases of tied tensors, so ``["lm_head"]``
    selects a tied LM head (with its full gradient, input-embedding path included).
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

import torch
from torch import nn

from lensllm.errors import InputError
from lensllm.hf.ntk.examples import target_loss

SUBSET_NAMES = ("all", "last", "lora")

LossFn = Callable[[nn.Module, Mapping[str, torch.Tensor]], torch.Tensor]


@dataclass(frozen=True)
class ParameterSelection:
    """The parameter tensors one eNTK is measured over, in gradient-row order.

    ``cut_modules`` names modules whose outputs are detached during the measurement (the
    input-embedding use of a tied LM head under ``"last"``).
    """

    subset: str
    names: tuple[str, ...]
    tensors: tuple[nn.Parameter, ...] = field(repr=False)
    cut_modules: tuple[str, ...] = ()
    block_list: str | None = None

    @property
    def numel(self) -> int:
        """P, the total number of selected scalars (the length of a gradient row)."""
        return sum(t.numel() for t in self.tensors)

    def summary(self) -> dict[str, object]:
        return {"subset": self.subset, "tensors": len(self.names), "params": self.numel,
                "block_list": self.block_list, "cut_modules": list(self.cut_modules)}


def _aliases(model: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Every (name, parameter) pair, tied tensors under each of their names."""
    return list(model.named_parameters(remove_duplicate=False))


def _dedupe(pairs: list[tuple[str, nn.Parameter]]) -> tuple[list[str], list[nn.Parameter]]:
    seen: set[int] = set()
    names, tensors = [], []
    for name, tensor in pairs:
        if id(tensor) not in seen:
            seen.add(id(tensor))
            names.append(name)
            tensors.append(tensor)
    return names, tensors


def find_block_list(model: nn.Module) -> tuple[str, nn.ModuleList]:
    """The model's transformer block list: the largest ModuleList of same-type modules.

    "Largest" counts parameters, so an encoder-decoder yields its decoder (cross-attention
    makes its blocks bigger); ties go to the list registered last.
    """
    best: tuple[int, int, str, nn.ModuleList] | None = None
    for order, (name, module) in enumerate(model.named_modules()):
        if not isinstance(module, nn.ModuleList) or len(module) == 0:
            continue
        if len({type(block) for block in module}) != 1:
            continue
        size = sum(p.numel() for p in module.parameters())
        if size > 0 and (best is None or (size, order) > best[:2]):
            best = (size, order, name, module)
    if best is None:
        raise InputError(
            "ntk: params='last' needs a transformer block list (an nn.ModuleList of "
            f"blocks) and {type(model).__name__} has none; use params='all' or a list of "
            "parameter-name prefixes"
        )
    return best[2], best[3]


def _select_last(model: nn.Module, probe: Mapping[str, torch.Tensor],
                 loss_fn: LossFn) -> ParameterSelection:
    list_name, blocks = find_block_list(model)
    last_block = blocks[-1]
    inside_last = {id(m) for m in last_block.modules()}
    owners = [(name, module) for name, module in model.named_modules(remove_duplicate=False)
              if id(module) not in inside_last and any(True for _ in
                                                        module.parameters(recurse=False))]
    clock = itertools.count()
    starts: dict[str, list[int]] = {}
    block_span: list[int] = []

    def record_start(name: str) -> Callable[..., None]:
        def hook(module: nn.Module, args: object) -> None:
            starts.setdefault(name, []).append(next(clock))
        return hook

    handles = [module.register_forward_pre_hook(record_start(name)) for name, module in owners]
    handles.append(last_block.register_forward_pre_hook(
        lambda module, args: block_span.append(next(clock))))
    handles.append(last_block.register_forward_hook(
        lambda module, args, output: block_span.append(next(clock))))
    try:
        with torch.no_grad():
            loss_fn(model, probe)
    finally:
        for handle in handles:
            handle.remove()
    if not block_span:
        raise InputError(
            f"ntk: params='last': the last block {list_name}.{len(blocks) - 1} did not run in "
            "a forward pass; use a list of parameter-name prefixes instead"
        )
    block_start, block_end = min(block_span), max(block_span)
    after = [name for name, module in owners if max(starts.get(name, [-1])) > block_end]
    pairs = [(f"{list_name}.{len(blocks) - 1}.{n}", p)
             for n, p in last_block.named_parameters()]
    for module_name in after:
        module = model.get_submodule(module_name)
        pairs += [(f"{module_name}.{n}" if module_name else n, p)
                  for n, p in module.named_parameters(recurse=False)]
    names, tensors = _dedupe(pairs)
    chosen = {id(t) for t in tensors}
    # Modules that ran before the last block and own a selected tensor: tied embeddings.
    cut = [name for name, module in owners
           if name not in after and min(starts.get(name, [block_start])) < block_start
           and any(id(p) in chosen for p in module.parameters(recurse=False))]
    return ParameterSelection("last", tuple(names), tuple(tensors), tuple(cut), list_name)


def _select_lora(model: nn.Module) -> ParameterSelection:
    if not hasattr(model, "peft_config"):
        raise InputError(
            f"ntk: params='lora' needs a peft model (peft.get_peft_model(...)); "
            f"{type(model).__name__} has no adapters"
        )
    names, tensors = _dedupe([(n, p) for n, p in model.named_parameters() if p.requires_grad])
    if not tensors:
        raise InputError("ntk: params='lora': the peft model has no trainable parameters")
    return ParameterSelection("lora", tuple(names), tuple(tensors))


def _select_prefixes(model: nn.Module, prefixes: Sequence[str]) -> ParameterSelection:
    if len(prefixes) == 0:
        raise InputError("ntk: the list of parameter-name prefixes is empty")
    aliases = _aliases(model)
    pairs: list[tuple[str, nn.Parameter]] = []
    for prefix in prefixes:
        if not isinstance(prefix, str) or not prefix.strip(". "):
            raise InputError(f"ntk: parameter-name prefix {prefix!r} must be a non-empty string")
        stem = prefix.strip().rstrip(".")
        hits = [(n, p) for n, p in aliases if n == stem or n.startswith(stem + ".")]
        if not hits:
            sample = ", ".join(n for n, _ in aliases[:3])
            raise InputError(
                f"ntk: parameter-name prefix {prefix!r} matches no parameter of "
                f"{type(model).__name__} (names look like: {sample}, ...)"
            )
        pairs += hits
    names, tensors = _dedupe(pairs)
    return ParameterSelection("prefixes", tuple(names), tuple(tensors))


def select_parameters(model: nn.Module, params: str | Sequence[str] = "last", *,
                      probe: Mapping[str, torch.Tensor] | None = None,
                      loss_fn: LossFn | None = None) -> ParameterSelection:
    """Resolve a parameter subset (see the module docstring) to concrete tensors.

    ``"last"`` runs one no-grad forward pass of ``loss_fn`` (default
    :func:`lensllm.hf.ntk.examples.target_loss`) on the example ``probe`` to learn the module
    call order.
    """
    if not isinstance(model, nn.Module):
        raise InputError(f"ntk: 'model' must be a torch.nn.Module (got {type(model).__name__})")
    if isinstance(params, str):
        if params == "all":
            names, tensors = _dedupe(_aliases(model))
            if not tensors:
                raise InputError(f"ntk: {type(model).__name__} has no parameters")
            return ParameterSelection("all", tuple(names), tuple(tensors))
        if params == "lora":
            return _select_lora(model)
        if params == "last":
            if probe is None:
                raise InputError("ntk: params='last' needs a probe example to trace the model")
            return _select_last(model, probe, loss_fn or target_loss)
        raise InputError(
            f"ntk: unknown parameter subset {params!r}; use 'all', 'last', 'lora' or a list "
            "of parameter-name prefixes (e.g. ['transformer.h.3'])"
        )
    if not isinstance(params, Sequence):
        raise InputError(
            "ntk: 'params' must be 'all', 'last', 'lora' or a list of parameter-name prefixes"
        )
    return _select_prefixes(model, list(params))
