"""A training run's state as a few portable files: what one GPU window hands to the next.

A lent device brings back at most 8 files of at most 16 MiB each, so a checkpoint (`last.pt`: one
file of weights and Adam moments, ~50 MB for model 7's size) cannot come back as it is. A state
folder holds the same run in pieces:

    state.json                    step, elapsed, crop pixels seen, model size, the optimiser's
                                  settings and step counts, the seed, and every file below with its sha256
    weights-sSTEP-K.safetensors   the fp32 weights, split so that no file exceeds MAX_FILE
    adam-sSTEP-K.safetensors      Adam's two moments in bf16 (precision Adam does not need; half
                                  the bytes). Optional: without them the run restarts Adam, with a
                                  learning-rate warm-up (`tng train --warmup-steps`)

`tng train --state-out DIR` writes one beside every checkpoint, `--resume DIR` continues one, and
scripts/gpu-train picks the newest (by step) of the state folders it is given.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import torch
from safetensors.torch import load_file, save_file

from tng.jobs.common import RunError

FORMAT = "tng-train-state-1"
MAX_FILE = 15 * 2**20  # under the device's 16 MiB a file, with room for safetensors' header
INDEX = "state.json"


def is_state(path: str | os.PathLike) -> bool:
    return (Path(path) / INDEX).is_file()


def state_step(folder: str | os.PathLike) -> int:
    """The step a state folder stands at; -1 where there is no readable state."""
    try:
        return int(json.loads((Path(folder) / INDEX).read_text())["step"])
    except (OSError, ValueError, KeyError, TypeError):
        return -1


def newest_state(folders: list[str | os.PathLike]) -> Path | None:
    """The folder holding the furthest-trained state (the first of equals), or None."""
    best, best_step = None, -1
    for f in folders:
        step = state_step(f)
        if step > best_step:
            best, best_step = Path(f), step
    return best


def _shards(tensors: dict[str, torch.Tensor], prefix: str) -> list[tuple[str, dict[str, torch.Tensor]]]:
    """Pack tensors, in name order, into files of at most MAX_FILE bytes."""
    out: list[tuple[str, dict[str, torch.Tensor]]] = []
    size = MAX_FILE + 1
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        nbytes = t.numel() * t.element_size()
        if nbytes > MAX_FILE:
            raise RunError(f"tensor {name} ({nbytes / 2**20:.1f} MiB) is larger than a state file may be")
        if size + nbytes > MAX_FILE:
            out.append((f"{prefix}-{len(out)}.safetensors", {}))
            size = 0
        out[-1][1][name] = t
        size += nbytes
    return out


def save_state(ck: dict, folder: str | os.PathLike, moments: bool = True) -> list[Path]:
    """Write checkpoint ck (the dict `tng train` saves as last.pt) as the state in folder, replacing
    the state there (other files, a log say, stay); returns the state's files. moments=False leaves
    Adam's moments out.

    Shard names carry the step and the index is renamed into place last, so a crash leaves the old
    state or the new one whole; the old shards are removed after."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    opt = ck.get("optimizer") if moments else None
    tag = f"s{ck['step']}"
    files = dict(_shards({k: v.float() for k, v in ck["model"].items()}, f"weights-{tag}"))
    index = {k: ck[k] for k in ("step", "elapsed", "n", "m", "synthesis", "context")}
    index.update(format=FORMAT, seed=ck.get("seed"), opt_start=ck.get("opt_start", 0), pixels=ck.get("pixels", 0))
    if opt is not None:
        state = opt["state"]
        groups = [{k: (list(v) if isinstance(v, tuple) else v) for k, v in g.items()} for g in opt["param_groups"]]
        index["adam"] = {"param_groups": groups, "steps": {str(i): float(s["step"]) for i, s in state.items()}}
        moments_t = {f"{i}.{k}": s[k].to(torch.bfloat16) for i, s in state.items() for k in ("exp_avg", "exp_avg_sq")}
        files.update(_shards(moments_t, f"adam-{tag}"))
    old = set(_index_files(folder))
    index["files"] = {}
    for name, tensors in files.items():
        save_file(tensors, str(folder / (name + ".tmp")))
        os.replace(folder / (name + ".tmp"), folder / name)
        index["files"][name] = hashlib.sha256((folder / name).read_bytes()).hexdigest()
    (folder / (INDEX + ".tmp")).write_text(json.dumps(index, indent=1))
    os.replace(folder / (INDEX + ".tmp"), folder / INDEX)
    for name in old - set(files):
        (folder / name).unlink(missing_ok=True)
    return [folder / INDEX] + [folder / n for n in files]


def _index_files(folder: Path) -> list[str]:
    try:
        return list(json.loads((folder / INDEX).read_text())["files"])
    except (OSError, ValueError, KeyError, TypeError):
        return []


def load_state(folder: str | os.PathLike, device: str | torch.device = "cpu") -> dict:
    """A state folder as the checkpoint dict `tng train --resume` takes ("optimizer" only when the
    moments are there). Files that are missing or whose bytes differ from the index are named."""
    folder = Path(folder)
    try:
        index = json.loads((folder / INDEX).read_text())
    except (OSError, ValueError) as e:
        raise RunError(f"cannot read training state {folder}: {e}") from None
    if index.get("format") != FORMAT:
        raise RunError(f"{folder}: not a training state of format {FORMAT} (found {index.get('format')!r})")
    tensors: dict[str, torch.Tensor] = {}
    for name, digest in index["files"].items():
        path = folder / name
        if not path.is_file():
            raise RunError(f"training state {folder} lacks {name}")
        if hashlib.sha256(path.read_bytes()).hexdigest() != digest:
            raise RunError(f"training state {folder}: {name} is damaged (sha256 differs from {INDEX})")
        tensors.update({f"{name.split('-')[0]}:{k}": v for k, v in load_file(str(path), device=str(device)).items()})
    ck = {k: index[k] for k in ("step", "elapsed", "n", "m", "synthesis", "context", "seed", "opt_start", "pixels")}
    ck["model"] = {k.split(":", 1)[1]: v for k, v in tensors.items() if k.startswith("weights:")}
    if "adam" in index:
        groups = [dict(g, betas=tuple(g["betas"])) for g in index["adam"]["param_groups"]]
        state = {int(i): {"step": torch.tensor(s), "exp_avg": tensors[f"adam:{i}.exp_avg"].float(),
                          "exp_avg_sq": tensors[f"adam:{i}.exp_avg_sq"].float()}
                 for i, s in index["adam"]["steps"].items()}
        ck["optimizer"] = {"state": state, "param_groups": groups}
    return ck
