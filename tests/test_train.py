"""`tng train` on a few tiny images: runs, checkpoints, resumes, and lowers the loss."""
from __future__ import annotations

import os
import re
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from tng.jobs.cli import main


def _losses(text: str) -> list[float]:
    return [float(x) for x in re.findall(r"loss ([0-9.]+)", text)]


def _smooth_photos(folder: Path, count: int, seed: int, side: int = 128) -> Path:
    """count smooth RGB pictures of side² (random 8×8 colours, bicubic) in a new folder, to train on."""
    folder.mkdir()
    rng = np.random.default_rng(seed)
    for i in range(count):
        small = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
        Image.fromarray(small).resize((side, side), Image.BICUBIC).save(folder / f"{i}.png")
    return folder


def test_train_checkpoints_resumes_and_learns(tmp_path, capsys, monkeypatch):
    rng = np.random.default_rng(0)
    data = tmp_path / "data"
    data.mkdir()
    for i in range(3):  # smooth random images, one smaller than the crop
        small = rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)
        side = 48 if i == 0 else 96
        Image.fromarray(small).resize((side, side), Image.BICUBIC).save(data / f"{i}.png")
    (data / "broken.png").write_bytes(b"not an image")
    out = tmp_path / "ckpt"
    common = ["--batch", "2", "--crop", "64", "--log-every", "5", "--n", "16", "--m", "24", "--lr", "1e-3"]
    assert main(["train", str(data), str(out), "--steps", "40", *common]) == 0
    first = capsys.readouterr()
    losses = _losses(first.out)
    assert len(losses) == 8 and np.mean(losses[-2:]) < 0.5 * np.mean(losses[:2]), losses
    assert "skipping" in first.err and "broken.png" in first.err
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["step"] == 40
    resume = ["--steps", "50", "--resume", str(out / "last.pt"), "--val", str(data), "--val-crop", "64"]
    assert main(["train", str(data), str(out), *resume, *common]) == 0
    second = capsys.readouterr().out
    assert "resumed" in second and "at step 40" in second
    assert torch.load(out / "last.pt", weights_only=True)["step"] == 50
    # The final validation coded real bitstreams at qualities 1, 4 and 8.
    rows = (out / "validation.csv").read_text().splitlines()
    assert rows[0] == "step,minutes,quality,bpp,psnr" and [r.split(",")[2] for r in rows[1:]] == ["1", "4", "8"]
    assert all(float(r.split(",")[3]) > 0 for r in rows[1:])

    # `tng export`: the checkpoint becomes a weights file with a new id that codes and decodes;
    # ids are never reused.
    models = tmp_path / "models"
    weights = models / "tiny.safetensors"
    models.mkdir()
    assert main(["export", str(out / "last.pt"), str(weights), "--model-id", "1000", "--name", "tiny-test"]) == 0
    assert "model id 1000 (tiny-test), step 50" in capsys.readouterr().out
    from tng.codec import Codec
    from tng.codec.registry import load_weights

    lm = load_weights(weights)
    assert (lm.model_id, lm.name) == (1000, "tiny-test") and lm.metadata["steps"] == "50"
    monkeypatch.setenv("TNG_MODEL_PATH", str(models))
    codec = Codec(model_id=1000, device="cpu")
    rgb = np.asarray(Image.open(data / "1.png").convert("RGB"))
    enc = codec.encode(rgb, quality=4)
    assert np.array_equal(Codec(device="cpu").decode(enc.data).rgb, enc.reconstruction)
    assert main(["export", str(out / "last.pt"), str(models / "again.safetensors"), "--model-id", "1000",
                 "--name", "again"]) == 1
    assert "model id 1000 exists already" in capsys.readouterr().err and not (models / "again.safetensors").exists()


def test_fine_tune_from_shipped_weights(tmp_path, capsys):
    data = tmp_path / "data"
    data.mkdir()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (64, 64, 3), dtype=np.uint8)).save(data / "a.png")
    assert main(["train", str(data), str(tmp_path / "ft"), "--steps", "2", "--batch", "1", "--crop", "64",
                 "--init", "1", "--log-every", "1", "--rate", "rounded"]) == 0
    out = capsys.readouterr().out
    assert "initialised from model 1" in out
    ck = torch.load(tmp_path / "ft" / "last.pt", weights_only=True)
    from tng.codec.model import LAMBDAS, LEGACY_LAMBDAS, remap_levels
    from tng.codec.registry import export_weights, load_model, load_weights

    m1 = load_model(1)
    assert (ck["n"], ck["m"]) == (m1.net.n, m1.net.m)
    # Model 1 was trained for the legacy λ table: its gains start from their place in the current one
    # (two Adam steps of lr 3e-4 move them by at most 6e-4 more).
    assert m1.lambdas == LEGACY_LAMBDAS and "gain vectors moved" in out
    moved = remap_levels(m1.net.log_gain, LEGACY_LAMBDAS, LAMBDAS)
    assert torch.allclose(ck["model"]["log_gain"], moved, atol=1e-3)
    # Weights exported now record the table they were trained for.
    export_weights(ck["model"], ck["n"], ck["m"], 99, tmp_path / "ft.safetensors", "ft")
    ft = load_weights(tmp_path / "ft.safetensors")
    assert ft.lambdas == LAMBDAS
    from tng.codec import TNGError

    ft.metadata["lambdas"] = "0.1,oops"  # a damaged table is named, not a bare ValueError
    with pytest.raises(TNGError, match="bad λ table"):
        ft.lambdas


def test_remap_levels_is_linear_in_log_lambda():
    from tng.codec.model import remap_levels

    old = (1.0, 2.0, 4.0)
    table = torch.tensor([[0.0, 10.0], [1.0, 20.0], [3.0, 20.0]])
    assert torch.equal(remap_levels(table, old, old), table)
    moved = remap_levels(table, old, (0.5, 2 ** 0.5, 2.0, 2 ** 1.5, 8.0))
    expected = [[-1.0, 0.0], [0.5, 15.0], [1.0, 20.0], [2.0, 20.0], [5.0, 20.0]]  # ends: continued segments
    assert torch.allclose(moved, torch.tensor(expected))


def test_two_ray_workers_keep_identical_weights_and_resume_both_ways(tmp_path, capsys):
    """DDP on 2 CPU workers under a real local Ray; checkpoints resume in either mode."""
    import ray

    from tng.jobs.cli import parser
    from tng.jobs.train import weights_digest
    from tng.jobs.train_ray import train_ray

    data = tmp_path / "data"
    data.mkdir()
    rng = np.random.default_rng(2)
    for i in range(3):
        Image.fromarray(rng.integers(0, 255, (6, 6, 3), dtype=np.uint8)).resize((96, 96), Image.BICUBIC).save(data / f"{i}.png")
    out = tmp_path / "ddp"
    common = [str(data), str(out), "--batch", "2", "--crop", "64", "--n", "16", "--m", "16", "--log-every", "3"]
    try:
        # Ray Train's workers ask for a CPU each and its controller for none: 2 workers fit in 2 CPUs.
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False,
                 _system_config={"prestart_worker_first_driver": False, "enable_metrics_collection": False})
        result = train_ray(parser().parse_args(["train", *common, "--steps", "4", "--workers", "2"]))
        # Every rank hashed its own weights after the last step: DDP kept them bit-identical, and
        # rank 0 saved exactly those, in the single-process format.
        ck = torch.load(out / "last.pt", weights_only=True)
        assert set(ck) == {"model", "optimizer", "step", "elapsed", "n", "m", "synthesis", "context", "seed", "opt_start",
                       "pixels"} and ck["step"] == 4
        assert result["step"] == 4 and result["digests"] == [weights_digest(ck["model"])] * 2
        # A 2-worker checkpoint resumes in one process...
        assert main(["train", *common, "--steps", "6", "--resume", str(out / "last.pt")]) == 0
        assert "resumed" in capsys.readouterr().out
        single = torch.load(out / "last.pt", weights_only=True)
        assert single["step"] == 6 and weights_digest(single["model"]) != weights_digest(ck["model"])
        # ...and a single-process one on 2 workers, which continue from its weights and step.
        result = train_ray(parser().parse_args(["train", *common, "--steps", "8", "--workers", "2",
                                            "--resume", str(out / "last.pt")]))
        final = torch.load(out / "last.pt", weights_only=True)
        assert result["step"] == final["step"] == 8 and result["digests"] == [weights_digest(final["model"])] * 2
    finally:
        ray.shutdown()


def test_a_workers_train_error_reaches_the_user_as_its_own_line(tmp_path, capsys):
    """Library code raises RunError; the CLI alone makes it one line and exit 1, also when it comes
    back from a Ray Train worker."""
    from ray.train import WorkerGroupError

    from tng.jobs.common import RunError
    from tng.jobs.train_ray import _failure_reason

    assert main(["train", str(tmp_path / "none"), str(tmp_path / "out"), "--steps", "1"]) == 1
    assert capsys.readouterr().err == f"tng: error: no readable images under {tmp_path / 'none'}\n"
    failed = WorkerGroupError("", {1: ValueError("bad"), 0: RunError("no readable images under s3://x")})
    assert _failure_reason(failed) == "no readable images under s3://x"
    assert _failure_reason(WorkerGroupError("", {0: RuntimeError("boom")})) == "training failed: boom"


def test_quality_samples_weigh_every_level_the_same():
    from tng.jobs.train import sample_qualities

    torch.manual_seed(0)
    q = sample_qualities(200_000, "cpu")
    assert q.min() == 1 and q.max() == 8
    # A level's share: the samples nearest to it (within ½); end levels as many as the others.
    share = torch.bincount(q.round().long(), minlength=9)[1:].double() / len(q)
    assert torch.allclose(share, torch.full((8,), 1 / 8, dtype=torch.double), atol=0.005), share


def test_rounded_rate_is_the_rate_of_the_coded_latents_and_trains():
    from tng.codec.entropy_models import SCALE_LEVELS, SCALE_MIN, SCALE_STEP, Z_RADIUS, GaussianConditional
    from tng.codec.model import TNGModel

    torch.manual_seed(0)
    net = TNGModel(16, 16)
    x, q = torch.rand(2, 3, 64, 64), torch.tensor([1.0, 6.5])
    r = net(x, q, rounded_rate=True)
    with torch.no_grad():  # the same bits from the rounded latents, computed by hand
        g, _ = net.gains(q)
        y = net.g_a(x) * g
        z = torch.round(net.h_a(y)).clamp(-Z_RADIUS, Z_RADIUS)
        mean, idx = net.h_s(z)
        scale = SCALE_MIN * torch.exp(SCALE_STEP * idx.clamp(0, SCALE_LEVELS - 1))
        bits_y = -torch.log2(GaussianConditional.likelihood(torch.round(y - mean), scale)).sum((1, 2, 3))
        bits_z = -torch.log2(net.z_prior.likelihood(z)).sum((1, 2, 3))
    assert torch.allclose(r["bits_y"], bits_y) and torch.allclose(r["bits_z"], bits_z)
    noisy = net(x, q)["bits_y"]  # the noise estimate differs from it, and from call to call
    assert not torch.allclose(noisy, bits_y) and not torch.allclose(noisy, net(x, q)["bits_y"])
    # Straight-through: the rate's gradient reaches the analysis transform and the hyper-prior.
    r["bits_y"].sum().add(r["bits_z"].sum()).backward()
    assert net.g_a[0].weight.grad.abs().sum() > 0 and net.h_a[0].weight.grad.abs().sum() > 0
    assert net.z_prior.biases[0].grad.abs().sum() > 0


def test_rounded_rate_predicts_the_file_size_and_the_noisy_estimate_does_not(codec):
    from tng.codec.registry import DEFAULT_MODEL_ID, load_model

    sample = Path(__file__).parents[1] / "samples" / "astronaut.png"
    rgb = np.asarray(Image.open(sample).convert("RGB"))[:256, 128:384].copy()
    net = load_model(DEFAULT_MODEL_ID).net  # the default model, as the codec fixture codes with
    x = torch.from_numpy(rgb).permute(2, 0, 1)[None].float() / 255
    torch.manual_seed(0)
    with torch.no_grad():
        for q in (1.0, 8.0):
            size = len(codec.encode(rgb, quality=q).data)
            rounded = net(x, torch.tensor([q]), rounded_rate=True)
            noisy = net(x, torch.tensor([q]))
            est, est_noisy = ((r["bits_y"] + r["bits_z"]).item() / 8 for r in (rounded, noisy))
            # The coded bytes: the estimate plus the header and scale-table rounding (tens of bytes).
            assert est < size < est * 1.03 + 64, (q, est, size)
            if q == 1.0:  # at low rates the noisy estimate is far off (2.65x on photo crops)
                assert est_noisy > 1.5 * size, (est_noisy, size)


def test_int8_synthesis_stage_tunes_only_the_decoder_and_exports_a_new_model(tmp_path, capsys, monkeypatch):
    """`--stage int8-synthesis`: model 6's weights get a calibrated 8-bit synthesis; only g_s moves,
    so streams keep model 6's bits; the export is an int8 model that codes and decodes; resume keeps the stage."""
    data = _smooth_photos(tmp_path / "data", 2, seed=4)
    out = tmp_path / "qat"
    common = ["--batch", "1", "--crop", "64", "--log-every", "1", "--stage", "int8-synthesis"]
    assert main(["train", str(data), str(out), "--steps", "2", "--init", "6", "--lr", "1e-3", *common]) == 0
    assert "int8 synthesis calibrated" in capsys.readouterr().out
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["synthesis"] == "int8"
    from tng.codec.registry import load_model, load_weights

    m6 = load_model(6).net.state_dict()
    for k, v in ck["model"].items():
        if k.startswith("int8."):
            continue
        same = torch.equal(v, m6[k])
        assert same != k.startswith("g_s."), k  # g_s trained, nothing else touched
    assert main(["train", str(data), str(out), "--steps", "3", "--resume", str(out / "last.pt"), *common]) == 0
    assert "at step 2" in capsys.readouterr().out
    assert main(["export", str(out / "last.pt"), str(tmp_path / "q.safetensors"), "--model-id", "1001", "--name", "q"]) == 0
    lm = load_weights(tmp_path / "q.safetensors")
    assert lm.metadata["synthesis"] == "int8"
    from tng.codec import Codec

    img = np.asarray(Image.open(data / "0.png"))
    enc = Codec(device="cpu", model=lm).encode(img, quality=3)
    assert np.array_equal(Codec(device="cpu", model=lm).decode(enc.data).rgb, enc.reconstruction)
    # without weights to start from the stage has nothing to quantise: one line, exit 1
    assert main(["train", str(data), str(tmp_path / "x"), "--steps", "1", *common]) == 1
    assert "give --init" in capsys.readouterr().err


def test_a_checkerboard_context_is_added_trained_jointly_and_exported(tmp_path, capsys):
    """`--context checkerboard` on weights without one: it starts as a context that changes nothing
    and learns with the rest; the checkpoint resumes, exports to a model that codes exactly, and
    `--context none` takes it off again."""
    data = _smooth_photos(tmp_path / "data", 2, seed=5)
    out = tmp_path / "ctx"
    common = ["--batch", "1", "--crop", "64", "--log-every", "1", "--rate", "rounded", "--lr", "1e-3"]
    assert main(["train", str(data), str(out), "--steps", "2", "--init", "7", "--context", "checkerboard", *common]) == 0
    assert "checkerboard context model added" in capsys.readouterr().out
    ck = torch.load(out / "last.pt", weights_only=True)
    assert ck["context"] == "checkerboard" and ck["model"]["context.layers.2.weight"].abs().sum() > 0
    assert main(["train", str(data), str(out), "--steps", "3", "--resume", str(out / "last.pt"), *common]) == 0
    assert "at step 2" in capsys.readouterr().out
    weights = tmp_path / "c.safetensors"
    assert main(["export", str(out / "last.pt"), str(weights), "--model-id", "1002", "--name", "c"]) == 0
    from tng.codec import Codec
    from tng.codec.registry import load_weights

    lm = load_weights(weights)
    assert lm.metadata["context"] == "checkerboard" and lm.context is not None
    img = np.asarray(Image.open(data / "0.png"))
    enc = Codec(device="cpu", model=lm).encode(img, quality=5)
    assert np.array_equal(Codec(device="cpu", model=lm).decode(enc.data).rgb, enc.reconstruction)
    assert main(["train", str(data), str(tmp_path / "off"), "--steps", "1", "--init", str(weights),
                 "--context", "none", *common]) == 0
    ck = torch.load(tmp_path / "off" / "last.pt", weights_only=True)
    assert ck["context"] is None and not any(k.startswith("context.") for k in ck["model"])


def test_the_gpu_training_script_runs_as_written(tmp_path):
    """scripts/gpu-train from this checkout, as a lent GPU runs it (here on the CPU, a few seconds):
    the bigger model from scratch, its state exported to weights whose integer decoder is exact."""
    import subprocess
    import sys

    data = _smooth_photos(tmp_path / "data", 1, seed=6, side=256)
    out = tmp_path / "out"
    env = dict(os.environ, PYTHON=sys.executable, DATA=str(data), OUT=str(out), TRAIN_DIR=str(tmp_path / "run"),
               BATCH="1", STATE_DIRS=str(tmp_path / "no-state"))  # not the state a session may have beside it
    root = Path(__file__).parents[1]
    r = subprocess.run(["bash", "scripts/gpu-train", "0.02", "--", "--threads", "2"], cwd=root, env=env,
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-2000:]
    assert "from scratch at 128/192" in (out / "train.log").read_text()
    assert "torch" in (out / "env.txt").read_text()
    assert main(["export", str(out), str(tmp_path / "w.safetensors"), "--model-id", "1001", "--name", "chain"]) == 0
    from tng.codec import Codec
    from tng.codec.registry import load_weights

    lm = load_weights(tmp_path / "w.safetensors")
    assert lm.metadata["context"] == "checkerboard" and (lm.net.n, lm.net.m) == (128, 192)
    img = np.asarray(Image.open(data / "0.png"))[:64, :64].copy()
    enc = Codec(device="cpu", model=lm).encode(img, quality=4)
    assert np.array_equal(Codec(device="cpu", model=lm).decode(enc.data).rgb, enc.reconstruction)


def _grads_after_step(model: torch.nn.Module, x: torch.Tensor, q: torch.Tensor, bf16: bool) -> tuple[float, torch.Tensor]:
    """The loss and the (clipped) gradient of one train_step that leaves the weights as they are."""
    from tng.jobs.train import train_step

    loss = train_step(model, torch.optim.SGD(model.parameters(), lr=0.0), x, q, bf16)[0].item()
    return loss, torch.cat([p.grad.flatten() for p in model.parameters()])


def test_fast_path_matches_the_reference_path():
    """bf16 autocast and channels-last (what a GPU window trains with) compute the loss and the
    gradients of the plain fp32 path: within float rounding for the layout, within bf16's for autocast."""
    import copy

    from tng.codec.model import TNGModel

    torch.manual_seed(0)
    ref = TNGModel(32, 48, context="checkerboard")
    x = torch.nn.functional.interpolate(torch.rand(2, 3, 16, 16), size=128, mode="bicubic").clamp(0, 1)
    q = torch.tensor([2.0, 6.5])
    torch.manual_seed(1)
    loss0, g0 = _grads_after_step(ref, x, q, bf16=False)
    nhwc = copy.deepcopy(ref).to(memory_format=torch.channels_last)
    xl = x.contiguous(memory_format=torch.channels_last)
    for model, bf16, loss_tol, grad_tol in ((nhwc, False, 2e-4, 3e-3), (nhwc, True, 3e-3, 3e-2)):
        torch.manual_seed(1)  # the same rate noise
        loss, g = _grads_after_step(model, xl, q, bf16)
        assert abs(loss - loss0) <= loss_tol * abs(loss0), (bf16, loss, loss0)
        rel = ((g - g0).norm() / g0.norm()).item()
        assert rel <= grad_tol, (bf16, rel)
        assert torch.equal(torch.cat([p.flatten() for p in model.parameters()]),
                           torch.cat([p.flatten() for p in ref.parameters()]))


def test_crops_are_flipped_windows_of_the_photos_and_follow_the_seed():
    import random

    from tng.jobs.train import Crops

    rng = np.random.default_rng(3)
    photos = [rng.integers(0, 255, (70, 90, 3), dtype=np.uint8), rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)]
    crops = Crops(photos, 48, "cpu")  # the second is smaller than the crop: mirrored up to it
    assert crops.images[1].shape == (3, 48, 50)
    a, b = crops.batch(16, random.Random(5)), crops.batch(16, random.Random(5))
    assert a.dtype == torch.uint8 and a.shape == (16, 3, 48, 48) and torch.equal(a, b)
    assert not torch.equal(a, crops.batch(16, random.Random(6)))
    flips_seen = set()
    for c in a:
        for flips in ((), (2,), (1,), (2, 1)):
            c0 = c.flip(flips) if flips else c
            if any(torch.equal(c0, img[:, y : y + 48, x : x + 48]) for img in crops.images
                   for y in range(img.shape[1] - 47) for x in range(img.shape[2] - 47)):
                flips_seen.add(flips)
                break
        else:
            raise AssertionError("a crop that is no window of any photo")
    assert len(flips_seen) >= 3  # 16 crops: every flip shows up (a chance of 4·(3/4)^16 ≈ 4 % to miss one)


def test_training_state_files_resume_the_run(tmp_path, capsys, monkeypatch):
    """A state folder (what a GPU window hands back) resumes like last.pt; files stay under the
    size limit; a damaged or missing file is named; without the moments Adam restarts, warmed up."""
    import tng.jobs.train_state as ts
    from tng.jobs.common import RunError

    data = _smooth_photos(tmp_path / "data", 2, seed=4, side=96)
    monkeypatch.setattr(ts, "MAX_FILE", 200_000)  # small files: the state is split into several
    common = ["--batch", "2", "--crop", "64", "--n", "16", "--m", "24", "--log-every", "2", "--context", "checkerboard"]
    run = tmp_path / "run"
    assert main(["train", str(data), str(run), "--steps", "4", "--state-out", str(tmp_path / "state"), *common]) == 0
    capsys.readouterr()
    files = sorted(p.name for p in (tmp_path / "state").iterdir())
    assert len([f for f in files if f.startswith("weights-s4-")]) > 1 and any(f.startswith("adam-s4-") for f in files)
    assert all((tmp_path / "state" / f).stat().st_size <= 200_000 + 8192 for f in files)
    ck, st = torch.load(run / "last.pt", weights_only=True), ts.load_state(tmp_path / "state")
    assert st["step"] == ck["step"] == 4 and st["pixels"] == 4 * 2 * 64 * 64
    assert all(torch.equal(st["model"][k], v.float()) for k, v in ck["model"].items())
    for i, s in ck["optimizer"]["state"].items():
        for k in ("exp_avg", "exp_avg_sq"):
            assert torch.allclose(st["optimizer"]["state"][i][k], s[k], rtol=1e-2, atol=0)
    # Resumed from the state or from last.pt, the next steps are the same run.
    for src, out in ((tmp_path / "state", "a"), (run / "last.pt", "b")):
        assert main(["train", str(data), str(tmp_path / out), "--steps", "8", "--resume", str(src), *common]) == 0
    text = capsys.readouterr().out
    assert text.count("at step 4") == 2 and "Adam restarts" not in text
    la, lb = (_losses(part) for part in text.split("resumed")[1:])
    assert np.allclose(la, lb, rtol=0.02), (la, lb)
    # Without the moments: Adam starts again and the learning rate ramps up from the resumed step.
    assert main(["train", str(data), str(run), "--steps", "6", "--resume", str(run / "last.pt"), "--state-out",
                 str(tmp_path / "light"), "--state-without-moments", *common]) == 0
    capsys.readouterr()
    assert not any(p.name.startswith("adam-") for p in (tmp_path / "light").iterdir())
    assert main(["train", str(data), str(tmp_path / "c"), "--steps", "10", "--resume", str(tmp_path / "light"),
                 "--warmup-steps", "4", *common]) == 0
    text = capsys.readouterr().out
    assert "at step 6 " in text and "Adam restarts, warm-up 4 steps" in text
    # step 8: half way up the 4-step ramp (1.5e-4); step 10: past it, in the last 15 % of the budget (÷10)
    assert re.findall(r"step (\d+) \S+ lr ([0-9.e+-]+)", text) == [("8", "1.5e-04"), ("10", "3.0e-05")]
    # Damage is named, not a bare exception.
    shard = next(p for p in sorted((tmp_path / "state").iterdir()) if p.name.startswith("weights-"))
    shard.write_bytes(shard.read_bytes()[:-1] + b"x")
    with pytest.raises(RunError, match="damaged"):
        ts.load_state(tmp_path / "state")
    shard.unlink()
    assert main(["train", str(data), str(tmp_path / "d"), "--steps", "9", "--resume", str(tmp_path / "state"), *common]) == 1
    assert "lacks weights-s4-" in capsys.readouterr().err


def test_gpu_train_windows_chain_on_cpu(tmp_path):
    """scripts/gpu-train as a chain of windows, on the CPU: a window from scratch hands back its state
    (≤ 8 files of ≤ 16 MiB, what a device call returns), --prepare carries the newest state with the
    photos that fit, the next window continues it, and --keep makes a window's state the committed one."""
    import json
    import shutil
    import subprocess
    import sys

    repo = tmp_path / "repo"  # a checkout of its own: --prepare and --keep write into the repository
    (repo / "scripts").mkdir(parents=True)
    shutil.copy(Path(__file__).parents[1] / "scripts" / "gpu-train", repo / "scripts" / "gpu-train")
    subprocess.run(["git", "init", "-q", str(repo)], check=True)
    data = _smooth_photos(tmp_path / "photos", 3, seed=5, side=96)
    shared = tmp_path / "shared-state"  # as ../shared/gpu-state, where a session may find a window's files
    env = dict(os.environ, PYTHON=sys.executable, SIZE="16,24", TOTAL_MINUTES="2", BATCH="2", CROP="64",
               LOG_EVERY="2", WARMUP="2", NO_WHEELS="1", STATE_DIRS=f"training/state .gpu/state {shared}")

    def gpu_train(*args: str, **more: str) -> str:
        r = subprocess.run(["bash", "scripts/gpu-train", *args], cwd=repo, env=dict(env, **more),
                           capture_output=True, text=True, timeout=300)
        assert r.returncode == 0, r.stdout + r.stderr
        return r.stdout

    def returned(out: Path) -> dict:
        files = list(out.iterdir())
        assert len(files) <= 8 and all(f.stat().st_size <= 16 * 2**20 for f in files), files
        assert {"state.json", "train.log", "env.txt"} <= {f.name for f in files}
        return json.loads((out / "state.json").read_text())

    gpu_train("0.05", OUT=str(tmp_path / "w1"), DATA=str(data), TRAIN_DIR=str(tmp_path / "run1"))
    first = returned(tmp_path / "w1")
    assert first["step"] >= 1 and (first["n"], first["m"]) == (16, 24)
    assert "from scratch at 16/24" in (tmp_path / "w1" / "train.log").read_text()

    shutil.copytree(tmp_path / "w1", shared)
    prepared = gpu_train("--prepare", DATA=str(data))
    assert re.search(r"\d+ MiB are left for training photos", prepared) and "prepared .gpu/data: 3 of 3 photos" in prepared
    assert json.loads((repo / ".gpu" / "state" / "state.json").read_text())["step"] == first["step"]

    gpu_train("0.05", OUT=str(tmp_path / "w2"), TRAIN_DIR=str(tmp_path / "run2"))  # on .gpu/data, as on a device
    second = returned(tmp_path / "w2")
    log = (tmp_path / "w2" / "train.log").read_text()
    assert f"resumed .gpu/state at step {first['step']} " in log
    assert second["step"] > first["step"] and second["elapsed"] > first["elapsed"]
    assert second["pixels"] == second["step"] * 2 * 64 * 64

    kept = gpu_train("--keep", str(tmp_path / "w2"))
    assert re.search(r"carries \d+ MiB of a call's 64 MiB", kept)
    assert json.loads((repo / "training" / "state" / "state.json").read_text())["step"] == second["step"]
    gpu_train("--prepare", DATA=str(data))  # the committed state is now the newest: nothing more to carry
    assert not (repo / ".gpu" / "state").exists()


def test_a_failed_compile_falls_back_to_the_eager_step(tmp_path, capsys, monkeypatch):
    """--compile on a device whose compiler breaks must not lose the window: the step runs uncompiled."""
    class Broken(torch.nn.Module):
        def forward(self, *args, **kwargs):
            raise RuntimeError("inductor: no working C compiler\nmore lines")

    monkeypatch.setattr(torch, "compile", lambda net: Broken())
    data = _smooth_photos(tmp_path / "data", 1, seed=6, side=64)
    assert main(["train", str(data), str(tmp_path / "run"), "--steps", "4", "--batch", "1", "--crop", "64",
                 "--n", "16", "--m", "24", "--log-every", "2", "--compile"]) == 0
    out = capsys.readouterr().out
    assert "torch.compile failed, training uncompiled: RuntimeError: inductor: no working C compiler" in out
    assert len(_losses(out)) == 2 and torch.load(tmp_path / "run" / "last.pt", weights_only=True)["step"] == 4
