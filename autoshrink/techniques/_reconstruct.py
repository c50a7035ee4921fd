"""Least-squares reconstruction of layers after structured pruning, without labels.

After channels are removed, a layer that consumed them (a convolution or Linear layer with
fewer inputs now) computes something else. Its weights and bias are refitted so that, on a
few hundred calibration inputs, its output matches the unpruned model's output of the same
layer (only the output channels it kept), by ridge-regularised least squares on the normal
equations (He et al., ICCV 2017, channel pruning with reconstruction, done here in closed form
for all the remaining weights). The fit always has an intercept: a layer without a bias (a
convolution followed by BatchNorm, as in most CNNs) gets one, which takes up the mean of the
channels removed from its input (FLAP's bias compensation; the variance ranking of
`autoshrink.techniques._importance` counts on it). Layers are refitted in forward order, each on the inputs the
already-refitted student gives it, so errors do not pile up. Grouped and depthwise
convolutions (no mixing across channels) are left as they are.

Example:
    >>> import torch
    >>> teacher = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 4))
    >>> student = torch.nn.Sequential(torch.nn.Linear(8, 12), torch.nn.ReLU(), torch.nn.Linear(12, 4))
    >>> with torch.no_grad():  # the student: the teacher with its last 4 hidden units pruned
    ...     _ = student[0].weight.copy_(teacher[0].weight[:12]), student[0].bias.copy_(teacher[0].bias[:12])
    ...     _ = student[2].weight.copy_(teacher[2].weight[:, :12]), student[2].bias.copy_(teacher[2].bias)
    >>> errors = reconstruct(student, teacher, ["2"], {}, torch.randn(256, 8))
    >>> errors["2"][1] < errors["2"][0]
    True
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from autoshrink.inputs import Inputs, batch_size, call_model, tree_index
from autoshrink.techniques._patches import layer_rows

#: Rows (samples x positions) of one batch that enter the normal equations; a random subset
#: of a convolution's output positions beyond it.
ROWS_PER_BATCH = 2048
#: Rows per unknown (weights of one output channel) after which no more batches are read: a
#: large input gives many positions per image, so a few images are enough.
ROWS_PER_UNKNOWN = 20
BATCH = 32
#: Ridge term, relative to the mean diagonal of the inputs' Gram matrix.
RIDGE = 1e-4


def refittable(module: nn.Module) -> bool:
    """A layer reconstruction can refit: a Linear layer or an ungrouped 2-D convolution. A
    subclass with its own ``forward`` (a convolution that pads itself first) is refitted as its
    parent computes; the refit is checked on the layer's real output and undone if it is worse."""
    return isinstance(module, nn.Linear) or (isinstance(module, nn.Conv2d) and module.groups == 1)


class _Stopped(BaseException):
    """Raised inside a paused forward that is no longer needed: it ends there (a BaseException, so
    that a model catching its own errors does not catch it)."""


class _Walk:
    """One forward of a model on one batch, run in a thread of its own and paused at each layer
    of a `_Lockstep` (the first time that layer is called), the layer's input or output handed over;
    it goes on only when told to, so the layers it reaches next compute with whatever was
    refitted meanwhile."""

    def __init__(self, model: nn.Module, inputs: Inputs, local: threading.local) -> None:
        self.seen: dict[str, torch.Tensor] = {}
        self._model, self._inputs, self._local = model, inputs, local
        self._to_main: queue.Queue[tuple[str, Any]] = queue.Queue()
        self._to_walk: queue.Queue[bool] = queue.Queue()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._paused = False
        self._threads = torch.get_num_threads()  # a new thread would start from the machine's default

    def _run(self) -> None:
        self._local.walk = self
        torch.set_num_threads(self._threads)
        try:
            with torch.no_grad():  # grad mode is per thread
                call_model(self._model, self._inputs)
            self._to_main.put(("end", None))
        except _Stopped:
            self._to_main.put(("stopped", None))
        except BaseException as exc:  # noqa: BLE001 -- handed to the fitting thread, raised there
            self._to_main.put(("error", exc))

    def pause(self, name: str, tensor: torch.Tensor) -> None:
        """Called in this walk's thread by a layer's hook: hand ``tensor`` over, wait to go on."""
        if name in self.seen:  # a layer called twice: its first call is the one refitted
            return
        self.seen[name] = tensor.detach()
        self._to_main.put(("at", name))
        if not self._to_walk.get():
            raise _Stopped

    def reach(self, name: str) -> torch.Tensor:
        """Run on until layer ``name`` is reached (it may have been already); its tensor."""
        while name not in self.seen:
            if self._thread.ident is None:
                self._thread.start()
            elif self._paused:
                self._to_walk.put(True)
            else:
                break  # the forward has ended
            kind, value = self._to_main.get()
            self._paused = kind == "at"
            if kind == "error":
                raise value
        if name not in self.seen:
            raise RuntimeError(f"layer {name!r} was not called by the model's forward")
        return self.seen[name]

    def stop(self) -> None:
        if self._paused:
            self._to_walk.put(False)
            self._to_main.get()
            self._paused = False
        if self._thread.ident is not None:
            self._thread.join()


class _Lockstep:
    """Forwards of ``model`` on each batch of ``parts``, walked together through the layers
    ``names``: `at` gives a batch's input (``output=False``) or output of a layer, every forward
    is paused there until the next layer is asked for. So each batch is run once, however many
    layers are refitted, and a student's layer sees the inputs its already-refitted predecessors
    give it (a prefix forward per layer and batch cost the square of the depth: 224 of the 289 s of
    pruning a pretrained EfficientNet-Lite1). The price is memory: every batch's forward is alive
    at once, in student and teacher, so the activations held are those of one forward on all the
    calibration inputs (`autoshrink.techniques._importance.SAMPLES`), not of one batch."""

    def __init__(self, model: nn.Module, names: Sequence[str], parts: Sequence[Inputs], *, output: bool) -> None:
        local = threading.local()
        self._walks = [_Walk(model, part, local) for part in parts]
        self._handles = []
        for name in dict.fromkeys(names):

            def hook(_: nn.Module, args: tuple[Any, ...], out: Any = None, name: str = name) -> None:
                walk = getattr(local, "walk", None)
                if walk is not None:  # a call from a walk's thread, not the fitting one's
                    walk.pause(name, out if output else args[0])

            module = model.get_submodule(name)
            self._handles.append(
                module.register_forward_hook(hook) if output else module.register_forward_pre_hook(hook)
            )

    def at(self, batch: int, name: str) -> torch.Tensor:
        walk = self._walks[batch]
        tensor = walk.reach(name)
        walk.seen[name] = torch.empty(0)  # handed over: the walk no longer keeps it
        return tensor

    def close(self) -> None:
        for walk in self._walks:
            walk.stop()
        for handle in self._handles:
            handle.remove()


def _refit(module: nn.Module, gram: torch.Tensor, cross: torch.Tensor, check: tuple[torch.Tensor, torch.Tensor]) -> tuple[float, float]:
    """Set ``module``'s weights to the ridge solution of the normal equations, if that lowers its
    real output error on ``check`` (an input batch and the teacher's output for it); the
    relative output error there before and after."""
    x, y = check

    def error() -> float:  # ``y`` holds the teacher's output channels the student kept
        with torch.no_grad():
            out = module(x)
        return float((out - y).norm() / y.norm().clamp_min(1e-30))

    before = error()
    saved = {k: v.clone() for k, v in module.state_dict().items()}
    had_bias = module.bias is not None
    ridge = RIDGE * float(gram.diagonal().mean()) * torch.eye(gram.shape[0], dtype=gram.dtype)
    ridge[-1, -1] = 0  # the intercept is not shrunk
    solution = torch.linalg.solve(gram + ridge, cross).T  # (out, d + 1)
    cols = module.weight[0].numel()
    with torch.no_grad():
        module.weight.copy_(solution[:, :cols].reshape(module.weight.shape).to(module.weight.dtype))
        intercept = solution[:, cols].to(module.weight.dtype)
        if had_bias:
            module.bias.copy_(intercept)
        else:  # the removed channels' mean is taken up here (FLAP's bias compensation)
            module.bias = nn.Parameter(intercept)
    after = error()
    if not after < before:  # the refit did not help (or the layer computes otherwise): undone
        if not had_bias:
            module.bias = None
        module.load_state_dict(saved)
        return before, before
    return before, after


def reconstruct(
    student: nn.Module,
    teacher: nn.Module,
    names: Sequence[str],
    kept_outputs: dict[str, list[int]],
    inputs: Inputs,
    seed: int = 0,
) -> dict[str, tuple[float, float]]:
    """Refit each layer ``names`` of ``student`` (in forward order) so that its output on
    ``inputs`` matches the same-named layer of ``teacher``, restricted to the output channels
    the student kept (``kept_outputs[name]``, all of them if absent).

    Returns each layer's relative output error (``||student - teacher|| / ||teacher||`` on the
    last calibration batch, its real output, held out of the fit when there are two batches or
    more) before and after; a layer is changed only where that held-out error falls, so a layer
    with more unknowns than calibration rows (a classifier after pooling) is not overfitted.
    """
    gen = torch.Generator().manual_seed(seed)
    errors: dict[str, tuple[float, float]] = {}
    total = batch_size(inputs)
    starts = list(range(0, total, BATCH))
    held_out = starts.pop() if len(starts) > 1 else None
    parts = [tree_index(inputs, torch.arange(s, min(s + BATCH, total)))
             for s in ([held_out] if held_out is not None else []) + starts]  # fmt: skip
    xs = _Lockstep(student, names, parts, output=False)
    ys = _Lockstep(teacher, names, parts, output=True)
    try:
        for name in names:
            module = student.get_submodule(name)
            gram: torch.Tensor | None = None
            cross: torch.Tensor | None = None
            check: tuple[torch.Tensor, torch.Tensor] | None = None
            kept = torch.tensor(kept_outputs[name]) if name in kept_outputs else None
            rows = 0
            for i in range(len(parts)):
                x, y = xs.at(i, name), ys.at(i, name)  # every batch reaches the layer before it is refitted
                if gram is not None and rows >= ROWS_PER_UNKNOWN * gram.shape[0]:
                    continue  # the normal equations are well determined already
                if kept is not None:  # channels are dim 1 of a convolution's output, the last of a Linear's
                    y = y.index_select(1 if isinstance(module, nn.Conv2d) else -1, kept)
                if check is None:
                    check = (x, y)
                    if held_out is not None:
                        continue  # the check batch is not fitted on
                x2, y2 = (t[0] for t in layer_rows(module, x, y, gen, ROWS_PER_BATCH))  # one group: refittable
                x2 = torch.cat([x2, torch.ones(x2.shape[0], 1, dtype=x2.dtype)], 1)  # the intercept
                # float32 products of one batch, summed in float64 over the batches
                rows += x2.shape[0]
                g, c = (x2.T @ x2).double(), (x2.T @ y2).double()
                gram, cross = (g, c) if gram is None else (gram + g, cross + c)
            assert gram is not None and cross is not None and check is not None
            errors[name] = _refit(module, gram, cross, check)
    finally:
        xs.close()
        ys.close()
    return errors
