"""Model ids -> weights files, loading (safetensors, no pickle) and exporting trained checkpoints.

A model id names one weights file forever: every `.tng` file records the id and a digest of the
weights, and must decode in every later version, so shipped files are never changed or removed,
only added. Shipped weights live in `codec/weights/`, xz-compressed (`tng-N.safetensors.xz`: the
bytes inside, and so the digest, are the exported file's); more folders can be listed in the
TNG_MODEL_PATH environment variable (os.pathsep-separated), e.g. for weights fine-tuned on an
archive's own images. The id is read from each file's metadata.

A weights file holds everything a decoder needs, in the form it needs it: float transforms
(g_a, g_s, h_a; fp16 except GDN parameters), gain vectors, the integer hyper-synthesis, and the
integer probability tables of z and y. Nothing that selects a probability is recomputed at load.
"""
from __future__ import annotations

import functools
import hashlib
import json
import lzma
import os
from dataclasses import dataclass
from pathlib import Path

import safetensors
import safetensors.torch
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from .entropy_models import EntropyModel
from .errors import TNGError
from .exactsynth import ExactSynthesis
from .intnet import WEIGHT_BITS, ExactHyper
from .intsynth import Int8Synthesis, integer_tensors
from .model import LAMBDAS, LEGACY_LAMBDAS, TNGModel

SHIPPED_DIR = Path(__file__).parent / "weights"
DEFAULT_MODEL_ID = 7  # the best shipped model (BENCHMARKS.md); every id stays decodable
WEIGHTS_FORMAT = "tng-weights-1"


@dataclass
class LoadedModel:
    model_id: int
    name: str
    digest: bytes  # first 4 bytes of the file's sha256, recorded in every stream
    net: TNGModel  # float parts, eval mode, on CPU (callers move a copy to their device); its
    # entropy models hold the stored integer tables
    hyper: ExactHyper  # the integer hyper-synthesis
    metadata: dict[str, str]
    synth: ExactSynthesis | Int8Synthesis  # the decoder's integer synthesis: derived from net at load
    # (exact), or stored in the file (int8)
    context: list[tuple[torch.Tensor, torch.Tensor, dict]] | None = None  # integer context network, if any

    @property
    def lambdas(self) -> tuple[float, ...]:
        """The λ of each quality level the gains were trained for (training only; decoding never needs it)."""
        if "lambdas" not in self.metadata:
            return LEGACY_LAMBDAS
        try:
            table = tuple(float(v) for v in self.metadata["lambdas"].split(","))
        except ValueError:
            table = ()
        if len(table) != len(LAMBDAS) or not all(0 < a < b for a, b in zip(table, table[1:])):
            raise TNGError(f"weights of model {self.model_id} ({self.name}): bad λ table {self.metadata['lambdas']!r}")
        return table


def _entropy_models(net: TNGModel) -> dict[str, EntropyModel]:
    """The entropy models by the prefix of their tables in a weights file: z_table, y_tables, y_offsets."""
    return {"z": net.z_prior, "y": net.y_prior}


def _header_metadata(head: bytes) -> dict[str, str]:
    """The metadata of a safetensors file from its first bytes: an 8-byte little-endian length, then a
    JSON header whose "__metadata__" holds it."""
    if len(head) < 8:
        raise ValueError("too short for a safetensors header")
    n = int.from_bytes(head[:8], "little")
    if len(head) < 8 + n:
        raise ValueError("truncated safetensors header")
    return json.loads(head[8 : 8 + n]).get("__metadata__") or {}


def _metadata(path: Path) -> dict[str, str]:
    """A weights file's metadata without reading its tensors. Shipped weights are xz-compressed
    (`*.safetensors.xz`, 30 % smaller: what a lent GPU's 64 MiB carries is mostly weights); their
    digest, like any file's, is that of the safetensors bytes."""
    if path.suffix != ".xz":
        with safe_open(path, "pt") as fh:
            return fh.metadata() or {}
    dec, head = lzma.LZMADecompressor(), b""
    with path.open("rb") as f:
        while len(head) < 8 or len(head) < 8 + int.from_bytes(head[:8], "little"):
            chunk = f.read(1 << 16)
            if not chunk:
                break
            head += dec.decompress(chunk)
    return _header_metadata(head)


def _weight_files() -> dict[int, Path]:
    dirs = [SHIPPED_DIR] + [Path(p) for p in os.environ.get("TNG_MODEL_PATH", "").split(os.pathsep) if p]
    found: dict[int, Path] = {}
    for d in dirs:
        for f in sorted([*d.glob("*.safetensors"), *d.glob("*.safetensors.xz")]):
            meta = _metadata(f)
            if meta.get("format") != WEIGHTS_FORMAT:
                continue
            mid = int(meta["model_id"])
            if mid in found and found[mid] != f:
                raise TNGError(f"model id {mid} is claimed by both {found[mid]} and {f}")
            found[mid] = f
    return found


def available_models() -> dict[int, Path]:
    """Every model id this installation can decode, with its weights file."""
    return _weight_files()


@functools.lru_cache(maxsize=8)
def load_model(model_id: int = DEFAULT_MODEL_ID) -> LoadedModel:
    """The model of a registered id (shipped or on TNG_MODEL_PATH), loaded once per process."""
    files = _weight_files()
    if model_id not in files:
        known = ", ".join(map(str, sorted(files))) or "none"
        raise TNGError(f"unknown model id {model_id} (this installation has: {known}; see TNG_MODEL_PATH)")
    return load_weights(files[model_id])


def load_weights(path: str | os.PathLike) -> LoadedModel:
    """Load one weights file, registered or not (e.g. a checkpoint exported for validation)."""
    path = Path(path)
    raw = path.read_bytes()
    if path.suffix == ".xz":
        try:
            raw = lzma.decompress(raw)
        except lzma.LZMAError as e:
            raise TNGError(f"weights file {path}: {e}") from None
    try:
        tensors = safetensors.torch.load(raw)
        meta = _header_metadata(raw)
    except (safetensors.SafetensorError, ValueError) as e:
        raise TNGError(f"{path} is not a TNG weights file ({e})") from None
    if meta.get("format") != WEIGHTS_FORMAT:
        raise TNGError(f"{path} is not a TNG weights file")
    synthesis = meta.get("synthesis", "exact")
    try:
        net = TNGModel(int(meta["n"]), int(meta["m"]), synthesis, meta.get("context"))
    except ValueError as e:
        raise TNGError(f"weights file {path}: {e} (a newer TNG wrote it?)") from None
    floats = {k: v.float() for k, v in tensors.items()
              if k.split(".")[0] in ("g_a", "g_s", "h_a", "z_prior", "log_gain", "log_inv_gain", "int8")}
    missing, unexpected = net.load_state_dict(floats, strict=False)
    if unexpected or any(not k.startswith(("h_s.", "context.")) for k in missing):
        raise TNGError(f"weights file {path} does not match the model (missing {missing[:3]})")
    hyper = ExactHyper(_integer_network(net.h_s.layers, tensors, "h_s"))
    context = _integer_network(net.context.layers, tensors, "context") if net.context is not None else None
    net.eval().requires_grad_(False)
    net.g_a.to(memory_format=torch.channels_last)  # the analysis runs channels-last (coder.py)
    for kind, model in _entropy_models(net).items():
        model.load_tables({name: tensors[f"{kind}_{name}"].numpy() for name in model.TABLE_NAMES})
    if synthesis == "int8":
        synth = Int8Synthesis({k: v for k, v in tensors.items() if k.startswith("s8.")}, net.log_inv_gain)
    else:
        synth = ExactSynthesis(net.g_s, net.log_inv_gain)
    net.g_s.to(memory_format=torch.channels_last)  # refinement runs it channels-last too (refine.py)
    return LoadedModel(int(meta["model_id"]), meta.get("name", path.stem), hashlib.sha256(raw).digest()[:4], net,
                       hyper, meta, synth, context)


def _integer_network(layers: torch.nn.ModuleList, tensors: dict[str, torch.Tensor],
                     prefix: str) -> list[tuple[torch.Tensor, torch.Tensor, dict]]:
    """An integer network's stored layers (PREFIX.i.weight, PREFIX.i.bias), for its exact path, and
    copied into its float twin: the copy is exactly the integer network (weights on the
    2**-WEIGHT_BITS grid), which is what fine-tuning from shipped weights starts from."""
    out = []
    for i, layer in enumerate(layers):
        try:
            w, b = tensors[f"{prefix}.{i}.weight"], tensors[f"{prefix}.{i}.bias"]
        except KeyError as e:
            raise TNGError(f"weights file lacks {e.args[0]}") from None
        layer.weight.data.copy_(w.double() / 2**WEIGHT_BITS)
        layer.bias.data.copy_(b.double() / 2**WEIGHT_BITS)
        kw = {"transposed": layer.transposed, "stride": layer.stride, "pad": layer.pad}
        out.append((w.to(torch.int64), b.to(torch.int64), kw))
    return out


def export_weights(state: dict[str, torch.Tensor], n: int, m: int, model_id: int, path: str | os.PathLike,
                   name: str, extra_metadata: dict[str, str] | None = None) -> None:
    """Turn a training state_dict into a self-contained weights file (see module docstring)."""
    synthesis = "int8" if any(k.startswith("int8.") for k in state) else "exact"
    context = "checkerboard" if any(k.startswith("context.") for k in state) else None
    net = TNGModel(n, m, synthesis, context)
    net.load_state_dict(state)
    out: dict[str, torch.Tensor] = {}
    for k, v in net.state_dict().items():
        part = k.split(".")[0]
        if part in ("g_a", "g_s", "h_a"):
            keep32 = ".beta" in k or ".gamma" in k  # GDN parameters are small: keep full precision
            out[k] = v.float() if keep32 else v.half()
        elif part in ("z_prior", "log_gain", "log_inv_gain", "int8"):
            out[k] = v.float()
    if synthesis == "int8":  # the decoder's integer network, from the exported float one
        g_s = net.g_s
        for k, v in net.state_dict().items():  # the fp16 weights as stored are the ones quantised
            if k.startswith("g_s.") and k in out and out[k].dtype == torch.float16:
                g_s.get_parameter(k[4:]).data.copy_(out[k].float())
        out.update(integer_tensors(g_s, net.int8))
        Int8Synthesis({k: v for k, v in out.items() if k.startswith("s8.")}, net.log_inv_gain)  # bounds hold
    integer_nets = {"h_s": net.h_s} | ({"context": net.context} if net.context is not None else {})
    for prefix, integer_net in integer_nets.items():
        for i, (w, b, _) in enumerate(integer_net.export()):
            if w.abs().max() >= 2**15:
                raise ValueError(f"{prefix} layer {i} weights out of int16 range")
            out[f"{prefix}.{i}.weight"] = w.to(torch.int16)
            out[f"{prefix}.{i}.bias"] = b.to(torch.int32)
    for kind, model in _entropy_models(net).items():
        out.update({f"{kind}_{name}": torch.from_numpy(t) for name, t in model.export_tables().items()})
    meta = {"format": WEIGHTS_FORMAT, "model_id": str(model_id), "name": name, "n": str(n), "m": str(m),
            "lambdas": ",".join(repr(v) for v in LAMBDAS), "synthesis": synthesis}  # the table training used (model.LAMBDAS)
    if context:  # files without the key (models 1-7) have no context model
        meta["context"] = context
    meta.update(extra_metadata or {})
    save_file({k: v.contiguous() for k, v in out.items()}, str(path), metadata=meta)
