"""One fine-tuning run: (candidate, task, subset size, seed) -> :class:`RunResult`.

The loop is hand-written rather than built on ``transformers.Trainer``: on a CPU the
Trainer's per-step bookkeeping, its DataLoader workers and its checkpoint-to-disk
early stopping cost more than the tiny models' steps themselves, it writes files
(``output_dir``) the run must not leave behind, and owning the loop makes the
quantities the scaling law needs -- the step count ``t`` where early stopping ended,
tokens seen, FLOPs, best-validation test loss -- exact rather than reconstructed
from logs.

A run:

1. seeds torch (inside a forked RNG, so the caller's RNG state is untouched), loads
   the candidate (LoRA adapters are initialised from that seed) and tokenises the
   task (cached);
2. measures the zero-shot test and validation losses;
3. trains with AdamW, linear warmup then linear/cosine decay, gradient clipping,
   evaluating the validation loss every ``eval_every`` steps and stopping after
   ``patience`` evaluations without improvement (or at the step/epoch caps);
4. measures the test loss of the final weights and of the best-validation weights
   (kept in memory, never on disk).

Losses are mean negative log-likelihoods per scored token (nats), summed over the
whole split before dividing, so padding and batch composition do not change them.
Tokens and FLOPs are counted as :mod:`lensllm.hf.flops` describes.

Memory: ``batch_size`` is the effective batch of an optimiser step; it is computed in
micro-batches of ``micro_batch_size`` examples (default: the whole batch), their
gradients accumulated, so the step is the same whatever the micro-batch (up to
round-off, and to dropout, whose random masks are drawn per micro-batch).  On an
out-of-memory error the run halves its micro-batch and redoes the step (the optimiser
has not moved yet), and records it; only at micro-batch 1 does it fail.  Precision and
loss scaling: :mod:`lensllm.hf.amp`.

Determinism: the same candidate, task, size, seed, config and torch thread count give
bit-identical losses.  The thread count matters because CPU kernels split reductions
by thread; set :attr:`TrainConfig.num_threads` to pin it (it is recorded either way).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import torch

from lensllm.errors import InputError
from lensllm.hf.amp import (
    Precision,
    loss_sum,
    peak_memory,
    release_memory,
    resolve_precision,
    scored_tokens,
)
from lensllm.hf.candidates import Candidate, load_candidate
from lensllm.hf.device import resolve_device
from lensllm.hf.flops import batch_tokens, model_costs
from lensllm.hf.runtime import torch_threads
from lensllm.hf.tasks import Task, TokenizedSplit
from lensllm.hf.trainconfig import (  # re-exported: the training API lives here
    MAX_AUTO_EVAL_INTERVAL,
    SCHEDULES,
    StepPlan,
    TrainConfig,
)

__all__ = ["MAX_AUTO_EVAL_INTERVAL", "SCHEDULES", "Progress", "RunResult", "StepPlan",
           "TrainConfig", "run_finetune"]

STAGES = ("zero_shot", "train", "eval", "test", "done")


@dataclass(frozen=True)
class Progress:
    """What a run reports to its progress callback.

    ``stage`` is ``"zero_shot"`` (before training), ``"train"`` (after each optimiser
    step), ``"eval"`` (after each validation), ``"test"`` (final test evaluations) or
    ``"done"``.  ``max_steps`` is the step cap; early stopping may end sooner.
    ``test_loss`` (the best-validation checkpoint's) is set from ``"test"`` on.
    """

    stage: str
    step: int
    max_steps: int
    train_loss: float | None = None
    val_loss: float | None = None
    best_val_loss: float | None = None
    test_loss: float | None = None


ProgressCallback = Callable[[Progress], None]


@dataclass
class RunResult:
    """The record of one fine-tuning run; :meth:`to_dict` gives a JSON-able dict.

    Losses are per scored token, in nats.  ``test_loss`` (the best-validation
    checkpoint's test loss) is the number a loss-vs-size curve uses; ``steps`` is the
    optimiser step where training ended (the law's ``t``), ``best_step`` the step of
    the best validation loss.  ``val_history`` lists ``{step, val_loss, train_loss}``
    per evaluation (``train_loss``: mean over the steps since the previous one;
    ``None`` at step 0).  ``stop_reason`` is ``early_stopping``, ``max_steps``,
    ``max_epochs``, ``diverged`` (non-finite training loss) or ``no_training``
    (size 0).
    """

    candidate: str
    candidate_id: str
    task: str
    task_id: str
    size: int
    seed: int
    method: str
    zero_shot_test_loss: float
    zero_shot_val_loss: float
    test_loss: float
    final_test_loss: float
    best_val_loss: float
    final_val_loss: float
    best_step: int
    steps: int
    epochs: float
    stop_reason: str
    tokens_seen: int
    target_tokens_seen: int
    train_flops: float
    eval_tokens: int
    eval_flops: float
    trainable_params: int
    total_params: int
    wall_time_s: float
    train_time_s: float
    eval_time_s: float
    torch_threads: int
    hyperparameters: dict[str, Any]
    candidate_identity: dict[str, Any]
    task_identity: dict[str, Any]
    val_history: list[dict[str, float | None]] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)
    #: where it ran ("cpu", "cuda:0"); not part of the run's identity
    device: str = "cpu"
    #: the Hessian measurement at the end of the run, when asked for (see run_finetune)
    hessian: dict[str, Any] | None = None
    #: the precision it ran in (``auto`` resolved) and its final micro-batch size
    precision: str = "fp32"
    micro_batch_size: int = 0
    #: out-of-memory recoveries: ``{step, stage, micro_batch_size}`` (the size after it)
    oom_retries: list[dict[str, Any]] = field(default_factory=list)
    #: training tokens per second of training time (None without training)
    train_tokens_per_s: float | None = None
    #: peak memory allocated on the GPU during the run (None on a CPU)
    peak_memory_bytes: int | None = None

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of every field (``hessian`` only when it was measured)."""
        out = asdict(self)
        if out["hessian"] is None:
            del out["hessian"]
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RunResult:
        """Rebuild a record from :meth:`to_dict` output (extra keys are ignored)."""
        known = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in known})


class _Session:
    """One run's model, data and running counters (tokens, FLOPs, clocks, early stopping)."""

    def __init__(
        self,
        model: Any,
        pad_id: int,
        encoder_decoder: bool,
        plan: StepPlan,
        notify: ProgressCallback,
        precision: Precision,
        micro_batch_size: int,
    ) -> None:
        self.model = model
        self.precision = precision
        self.micro = micro_batch_size
        self.eval_batch = plan.eval_batch_size
        self.oom_retries: list[dict[str, Any]] = []
        self.pad_id = pad_id
        self.encoder_decoder = encoder_decoder
        self.plan = plan
        self.notify = notify
        self.costs, self.total_params, self.trainable_params = model_costs(model)
        self.device = next(model.parameters()).device
        self.trainable = [p for p in model.parameters() if p.requires_grad]
        self.eval_tokens = 0
        self.eval_flops = 0.0
        self.eval_time = 0.0
        self.tokens_seen = 0
        self.target_tokens_seen = 0
        self.train_flops = 0.0
        self.train_time = 0.0
        self.step = 0
        self.best_step = 0
        self.best_val = math.nan
        self.final_val = math.nan
        self.best_state: list[torch.Tensor] | None = None
        self.history: list[dict[str, float | None]] = []
        self.stop_reason = "no_training"

    def evaluate(self, split: TokenizedSplit) -> float:
        """Mean NLL per scored token over a split; charges its tokens, FLOPs and time."""
        started = time.perf_counter()
        order = np.argsort(split.lengths, kind="stable").tolist()  # less padding
        total, scored_total, start = 0.0, 0, 0
        self.model.eval()
        while start < len(order):
            rows = order[start : start + self.eval_batch]
            try:
                batch = self._on_device(split.collate(rows, self.pad_id))
                with torch.inference_mode(), self.precision.autocast():
                    summed, scored = loss_sum(self.model, batch, self.encoder_decoder)
            except torch.OutOfMemoryError:
                pass  # handled below, once the failed batch's tensors are released
            else:
                total += float(summed)
                scored_total += scored
                start += len(rows)
                enc_tokens, dec_tokens = batch_tokens(batch, self.encoder_decoder)
                self.eval_tokens += enc_tokens + dec_tokens
                self.eval_flops += enc_tokens * self.costs.encoder_eval
                self.eval_flops += dec_tokens * self.costs.decoder_eval
                continue
            # A sum over examples: a smaller batch gives the same loss.
            self.eval_batch = self._shrink(self.eval_batch, "eval")
        self.eval_time += time.perf_counter() - started
        return total / scored_total if scored_total else math.nan

    def train(
        self,
        train_split: TokenizedSplit,
        val_split: TokenizedSplit,
        zero_shot_val: float,
        config: TrainConfig,
        learning_rate: float,
        seed: int,
    ) -> None:
        """Train until early stopping or a cap; keep the best-validation weights in memory."""
        plan = self.plan
        self.best_val = self.final_val = zero_shot_val
        self.history = [{"step": 0, "val_loss": zero_shot_val, "train_loss": None}]
        if len(train_split) == 0 or plan.max_steps == 0:
            return
        optimizer = torch.optim.AdamW(
            _param_groups(self.model, config.weight_decay), lr=learning_rate
        )
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, _schedule(config.schedule, plan.warmup_steps, plan.max_steps)
        )
        order_rng = torch.Generator().manual_seed(seed)  # data order depends on the seed only
        bad_evals = 0
        window: list[float] = []
        while True:
            order = torch.randperm(len(train_split), generator=order_rng).tolist()
            for start in range(0, len(order), config.batch_size):
                rows = order[start : start + config.batch_size]
                loss = self._step(train_split, rows, optimizer, scheduler, config.max_grad_norm)
                window.append(loss)
                self.notify(
                    Progress(
                        "train",
                        self.step,
                        plan.max_steps,
                        train_loss=loss,
                        best_val_loss=self.best_val,
                    )
                )
                if not math.isfinite(loss):
                    self.stop_reason = "diverged"
                    return
                if self.step % plan.eval_every == 0 or self.step == plan.max_steps:
                    val = self.evaluate(val_split)
                    self.final_val = val
                    self.history.append(
                        {
                            "step": self.step,
                            "val_loss": val,
                            "train_loss": sum(window) / len(window),
                        }
                    )
                    window = []
                    if val < self.best_val:
                        self.best_val, self.best_step, bad_evals = val, self.step, 0
                        self.best_state = [p.detach().clone() for p in self.trainable]
                    else:
                        bad_evals += 1
                    self.notify(
                        Progress(
                            "eval",
                            self.step,
                            plan.max_steps,
                            val_loss=val,
                            best_val_loss=self.best_val,
                        )
                    )
                    if bad_evals >= config.patience:
                        self.stop_reason = "early_stopping"
                        return
                if self.step >= plan.max_steps:
                    epochs_cap = plan.steps_per_epoch * config.max_epochs
                    self.stop_reason = "max_epochs" if self.step == epochs_cap else "max_steps"
                    return

    def _step(
        self,
        split: TokenizedSplit,
        rows: list[int],
        optimizer: torch.optim.Optimizer,
        scheduler: torch.optim.lr_scheduler.LRScheduler,
        max_grad_norm: float | None,
    ) -> float:
        """One optimiser step on the examples ``rows`` (the effective batch), in
        micro-batches; on out-of-memory the micro-batch halves and the step is redone."""
        started = time.perf_counter()
        self.model.train()
        while True:
            try:
                loss, scored, tokens = self._accumulate(split, rows, optimizer)
                break
            except torch.OutOfMemoryError:
                pass  # handled below, once the failed pass's activations are released
            optimizer.zero_grad(set_to_none=True)
            self.micro = self._shrink(self.micro, "train")
        self.precision.step(optimizer, self.trainable, max_grad_norm)
        scheduler.step()
        self.train_time += time.perf_counter() - started
        self.step += 1
        self.tokens_seen += tokens[0] + tokens[1]
        self.target_tokens_seen += scored
        self.train_flops += tokens[0] * self.costs.encoder_train
        self.train_flops += tokens[1] * self.costs.decoder_train
        return loss

    def _accumulate(
        self, split: TokenizedSplit, rows: list[int], optimizer: torch.optim.Optimizer
    ) -> tuple[float, int, tuple[int, int]]:
        """Gradients of the batch's mean token loss, summed over its micro-batches.

        Each micro-batch's summed loss is divided by the scored tokens of the *whole*
        batch, so the accumulated gradient is the full batch's whatever the split.
        Returns (mean loss, scored tokens, (encoder tokens, decoder tokens)).
        """
        optimizer.zero_grad(set_to_none=True)
        batches = [split.collate(rows[i : i + self.micro], self.pad_id)
                   for i in range(0, len(rows), self.micro)]
        scored = sum(scored_tokens(b, self.encoder_decoder) for b in batches)
        total, enc, dec = 0.0, 0, 0
        for batch in batches:
            batch = self._on_device(batch)
            with self.precision.autocast():
                summed, _ = loss_sum(self.model, batch, self.encoder_decoder)
            self.precision.backward(summed / max(scored, 1))
            total += float(summed.detach())
            enc_tokens, dec_tokens = batch_tokens(batch, self.encoder_decoder)
            enc, dec = enc + enc_tokens, dec + dec_tokens
        return total / max(scored, 1), scored, (enc, dec)

    def _shrink(self, size: int, stage: str) -> int:
        """Half the batch after an out-of-memory error (recorded); at 1, give up."""
        release_memory(self.device)
        # a training step is numbered as it will be once done; an evaluation by the step
        # whose weights it evaluates (0: the pretrained model)
        step = self.step + 1 if stage == "train" else self.step
        if size <= 1:
            where = f"at training step {step}" if stage == "train" else (
                f"evaluating after step {step}")
            raise InputError(
                f"out of {self.device.type.upper()} memory {where} even with one example "
                "per batch; lower max_length, set gradient_checkpointing: true, use method: "
                "lora, or pick a smaller model"
            )
        size = max(1, size // 2)
        self.oom_retries.append({"step": step, "stage": stage, "micro_batch_size": size})
        return size

    def _on_device(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.device.type == "cpu":
            return batch
        return {key: value.to(self.device, non_blocking=True) for key, value in batch.items()}

    def restore_best(self) -> None:
        """Put the best-validation weights back (only the trainable tensors changed)."""
        if self.best_state is None:
            return
        with torch.no_grad():
            for param, saved in zip(self.trainable, self.best_state, strict=True):
                param.copy_(saved)


def run_finetune(
    candidate: Candidate,
    task: Task,
    size: int,
    *,
    seed: int = 0,
    config: TrainConfig | None = None,
    progress: ProgressCallback | None = None,
    cache_dir: Path | str | None = None,
    device: str | None = "auto",
    hessian: dict[str, int] | None = None,
) -> RunResult:
    """Fine-tune ``candidate`` on the first ``size`` training examples of ``task``.

    ``size=0`` measures the zero-shot losses only.  ``cache_dir`` (optional) keeps
    tokenised tasks on disk for later processes; nothing else is written anywhere.
    ``progress`` receives a :class:`Progress` after every step and evaluation.
    ``device``: ``auto`` (a visible GPU, else the CPU), ``cpu`` or ``cuda``.
    ``hessian`` (``{"probe_size", "samples"}``): after the test evaluation, measure the
    per-layer Hessian trace of the probe loss at the best-validation weights, the
    Hessian-weighted distance of those weights from the pretrained ones, and the
    train/test gap (see :func:`_measure_hessian`).
    """
    config = config or TrainConfig()
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise InputError(f"run: 'seed' must be an integer >= 0, got {seed!r}")
    size = task.check_size(size)
    info = candidate.checkpoint()
    if info.is_encoder_decoder and task.kind == "text":
        raise InputError(
            f"task {task.name!r} is plain text (language modelling), which needs a causal "
            f"LM; candidate {candidate.name!r} is an encoder-decoder model"
        )
    notify = progress or _ignore
    plan = StepPlan.for_size(size, config)
    started = time.perf_counter()
    with torch_threads(config.num_threads) as threads, torch.random.fork_rng(devices=[]), \
            peak_memory(resolve_device(device)) as peak:
        torch.manual_seed(seed)  # LoRA's adapter init and dropout draw from it
        model, tokenizer = load_candidate(candidate, device=device)
        _check_context_length(model, config.max_length, candidate.name)
        where = next(model.parameters()).device
        precision = Precision(resolve_precision(config.precision, where), where.type)
        if config.gradient_checkpointing:
            # Non-reentrant checkpointing needs no input gradients (LoRA freezes the
            # embeddings, which the reentrant variant would need to require grads).
            base = model.get_base_model() if hasattr(model, "get_base_model") else model
            enable = getattr(base, "activation_checkpointing_enable", None)  # transformers>=5.2x
            if enable is not None:
                enable(activation_checkpointing_kwargs={"use_reentrant": False})
            else:
                base.gradient_checkpointing_enable(
                    gradient_checkpointing_kwargs={"use_reentrant": False})
        tokenized = task.tokenize(
            tokenizer,
            max_length=config.max_length,
            encoder_decoder=info.is_encoder_decoder,
            cache_dir=cache_dir,
        )
        session = _Session(model, _pad_id(tokenizer), info.is_encoder_decoder, plan, notify,
                           precision, config.micro_batch_size or config.batch_size)
        initial = None
        if hessian is not None:
            from lensllm.hf.hessian import snapshot

            initial = snapshot(model)  # θ0 of what training moves, for the distance
        test_split, val_split = tokenized.split("test"), tokenized.split("validation")
        zero_test = session.evaluate(test_split)
        zero_val = session.evaluate(val_split)
        notify(Progress("zero_shot", 0, plan.max_steps, val_loss=zero_val, best_val_loss=zero_val))
        session.train(
            tokenized.train(size),
            val_split,
            zero_val,
            config,
            candidate.effective_learning_rate,
            seed,
        )
        final_test = session.evaluate(test_split) if session.step else zero_test
        if session.best_step == session.step:
            best_test = final_test
        elif session.best_step == 0:
            # The best weights are the pretrained ones (LoRA adapters start as a no-op).
            best_test = zero_test
        else:
            session.restore_best()
            best_test = session.evaluate(test_split)
        notify(
            Progress(
                "test",
                session.step,
                plan.max_steps,
                val_loss=session.final_val,
                best_val_loss=session.best_val,
                test_loss=best_test,
            )
        )

    result = RunResult(
        candidate=candidate.name,
        candidate_id=candidate.identity_hash(),
        task=task.name,
        task_id=task.identity_hash(),
        size=size,
        seed=seed,
        method=candidate.method,
        zero_shot_test_loss=zero_test,
        zero_shot_val_loss=zero_val,
        test_loss=best_test,
        final_test_loss=final_test,
        best_val_loss=session.best_val,
        final_val_loss=session.final_val,
        best_step=session.best_step,
        steps=session.step,
        epochs=session.step / plan.steps_per_epoch if plan.steps_per_epoch else 0.0,
        stop_reason=session.stop_reason,
        tokens_seen=session.tokens_seen,
        target_tokens_seen=session.target_tokens_seen,
        train_flops=session.train_flops,
        eval_tokens=session.eval_tokens,
        eval_flops=session.eval_flops,
        trainable_params=session.trainable_params,
        total_params=session.total_params,
        wall_time_s=time.perf_counter() - started,
        train_time_s=session.train_time,
        eval_time_s=session.eval_time,
        torch_threads=threads,
        hyperparameters={
            **candidate.method_settings(),
            **config.identity(),
            # What the settings above resolved to for this subset size.
            "resolved": {
                "eval_batch_size": plan.eval_batch_size,
                "steps_per_epoch": plan.steps_per_epoch,
                "max_steps": plan.max_steps,
                "eval_every": plan.eval_every,
                "warmup_steps": plan.warmup_steps,
                "precision": precision.name,
                "micro_batch_size": config.micro_batch_size or config.batch_size,
                "gradient_checkpointing": config.gradient_checkpointing,
            },
        },
        candidate_identity=candidate.identity(),
        task_identity=task.identity(),
        val_history=session.history,
        versions=_versions(candidate.method),
        device=str(session.device),
        precision=precision.name,
        micro_batch_size=session.micro,
        oom_retries=session.oom_retries,
        train_tokens_per_s=(session.tokens_seen / session.train_time
                            if session.train_time > 0 else None),
        peak_memory_bytes=peak["bytes"],
    )
    if initial is not None:
        # After the record is made, so its times and eval FLOPs stay those of the run.
        with torch_threads(config.num_threads):
            result.hessian = _measure_hessian(
                session, model, tokenizer, task, tokenized.train(size), initial, hessian,
                config.max_length, info.is_encoder_decoder, seed, best_test)
    notify(
        Progress(
            "done",
            session.step,
            plan.max_steps,
            val_loss=session.final_val,
            best_val_loss=session.best_val,
            test_loss=best_test,
        )
    )
    return result


# --- pieces --------------------------------------------------------------------------


def _measure_hessian(session: _Session, model: Any, tokenizer: Any, task: Task,
                     train: TokenizedSplit, initial: list[torch.Tensor],
                     settings: dict[str, int], max_length: int, encoder_decoder: bool,
                     seed: int, test_loss: float) -> dict[str, Any]:
    """The Hessian measurement at the run's final (best-validation) weights: trace and
    distance per layer on the task's probe set, plus the train loss on the run's own
    subset and the gap test - train (what the PAC-Bayes bound's complexity term bounds)."""
    from lensllm.hf.hessian import measure_hessian

    probe = task.probe_set(tokenizer, int(settings["probe_size"]), max_length=max_length,
                           encoder_decoder=encoder_decoder)
    measured = measure_hessian(model, probe, samples=int(settings["samples"]), seed=seed,
                               reference=initial).to_dict()
    train_loss = session.evaluate(train) if len(train) else None
    measured.update(train_loss=train_loss,
                    gap=None if train_loss is None else test_loss - train_loss)
    return measured


def _ignore(_: Progress) -> None:
    """The default progress callback: report nothing."""


def _check_context_length(model: Any, max_length: int, name: str) -> None:
    config = model.config
    limit = getattr(config, "n_positions", None) or getattr(config, "max_position_embeddings", None)
    if isinstance(limit, int) and max_length > limit:
        raise InputError(
            f"candidate {name!r}: max_length {max_length} exceeds the model's context of "
            f"{limit} positions; lower max_length to {limit} or less"
        )


def _pad_id(tokenizer: Any) -> int:
    """Padding id: pad, else EOS, else 0 -- padded positions are masked either way."""
    for value in (tokenizer.pad_token_id, tokenizer.eos_token_id):
        if isinstance(value, int):
            return value
    return 0


def _param_groups(model: Any, weight_decay: float) -> list[dict[str, Any]]:
    """AdamW groups: no weight decay on biases and norm gains (vectors), as usual."""
    decay = [p for p in model.parameters() if p.requires_grad and p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.requires_grad and p.ndim < 2]
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


def _schedule(kind: str, warmup: int, total: int) -> Callable[[int], float]:
    """Learning-rate multiplier per step: linear warmup, then decay to zero at ``total``."""

    def factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        if kind == "constant":
            return 1.0
        progress = min(1.0, (step - warmup) / max(1, total - warmup))
        if kind == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * progress))
        return 1.0 - progress

    return factor


def _versions(method: str) -> dict[str, str]:
    import transformers

    versions = {"torch": torch.__version__, "transformers": transformers.__version__}
    if method == "lora":
        import peft

        versions["peft"] = peft.__version__
    return versions
