"""The shared training engine: exact resume, refusals that leave checkpoints alone, 2-process DDP."""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from squeeze.errors import SqueezeError
from squeeze.train.engine import EngineConfig, epoch_indices, fit
from squeeze.train.state import CHECKPOINT

from tiny_task import TinyTask

HERE = Path(__file__).parent


def _cfg(path: Path, **kw) -> EngineConfig:
    return EngineConfig(path, progress=False, **kw)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_kill_after_one_epoch_and_resume_matches_uninterrupted(tmp_path: Path) -> None:
    full = fit(TinyTask(), _cfg(tmp_path / "full"))
    run = tmp_path / "killed"
    fit(TinyTask(), _cfg(run, max_epochs=1))
    saved = (run / CHECKPOINT).read_bytes()
    with pytest.raises(RuntimeError, match="simulated kill"):
        fit(TinyTask(crash_at_epoch=1), _cfg(run, resume=True))
    assert (run / CHECKPOINT).read_bytes() == saved  # the failed run left the checkpoint alone
    resumed = fit(TinyTask(), _cfg(run, resume=True))
    assert _same(full.module, resumed.module)
    assert [r["epoch"] for r in resumed.log] == [1, 2, 3]
    assert [r["acc"] for r in resumed.log] == [r["acc"] for r in full.log]
    assert (run / "log.csv").read_text().splitlines()[0].startswith("epoch,train_loss,acc")


def test_refusals_leave_the_checkpoint_untouched(tmp_path: Path) -> None:
    fit(TinyTask(epochs=1), _cfg(tmp_path))
    ckpt = tmp_path / CHECKPOINT
    saved = ckpt.read_bytes()
    with pytest.raises(SqueezeError, match="already holds a checkpoint"):
        fit(TinyTask(epochs=1), _cfg(tmp_path))
    with pytest.raises(SqueezeError, match="another model or config.*lr"):
        fit(TinyTask(epochs=2, lr=0.5), _cfg(tmp_path, resume=True))
    assert ckpt.read_bytes() == saved
    with pytest.raises(SqueezeError, match="no checkpoint"):
        fit(TinyTask(), _cfg(tmp_path / "empty", resume=True))


@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupt_checkpoint_is_refused(tmp_path: Path, damage: str) -> None:
    fit(TinyTask(epochs=1), _cfg(tmp_path))
    ckpt = tmp_path / CHECKPOINT
    data = bytearray(ckpt.read_bytes())
    if damage == "truncate":
        data = data[: len(data) // 2]
    else:
        data[-20] ^= 0xFF  # a weight byte: only the checksum notices
    ckpt.write_bytes(bytes(data))
    with pytest.raises(SqueezeError, match="corrupt"):
        fit(TinyTask(epochs=2), _cfg(tmp_path, resume=True))
    assert ckpt.read_bytes() == bytes(data)


def test_bf16_mixed_runs_the_step_in_bfloat16_and_is_part_of_the_identity(tmp_path: Path) -> None:
    seen: list[torch.dtype] = []

    class Probe(TinyTask):
        def train_step(self, ctx, batch):  # type: ignore[no-untyped-def]
            seen.append((torch.randn(2, 2) @ torch.randn(2, 2)).dtype)  # a matmul outside the module's forward
            return super().train_step(ctx, batch)

    full = fit(Probe(epochs=1), _cfg(tmp_path / "f32"))
    assert set(seen) == {torch.float32}
    seen.clear()
    mixed = fit(Probe(epochs=1), _cfg(tmp_path / "bf16", precision="bf16-mixed"))
    assert set(seen) == {torch.bfloat16}
    assert all(p.dtype == torch.float32 for p in mixed.module.parameters())  # master weights stay float32
    assert not _same(full.module, mixed.module)  # the products really ran in bfloat16
    assert abs(mixed.log[0]["train_loss"] - full.log[0]["train_loss"]) < 0.05
    with pytest.raises(SqueezeError, match="another model or config.*precision"):
        fit(TinyTask(epochs=2), _cfg(tmp_path / "bf16", resume=True))
    with pytest.raises(SqueezeError, match="precision 'fp8' is unknown"):
        _cfg(tmp_path, precision="fp8")


def test_epoch_indices_split_one_global_batch() -> None:
    whole = epoch_indices(40, 8, epoch=3, seed=1)
    parts = [epoch_indices(40, 8, epoch=3, seed=1, rank=r, world=2) for r in range(2)]
    for step, batch in enumerate(whole):
        assert sorted(torch.cat([parts[0][step], parts[1][step]]).tolist()) == sorted(batch.tolist())
    assert not torch.equal(whole[0], epoch_indices(40, 8, epoch=4, seed=1)[0])
    with pytest.raises(SqueezeError, match="does not split"):
        epoch_indices(40, 8, 0, 0, world=3)


def test_two_gloo_processes_hold_identical_weights(tmp_path: Path) -> None:
    script = tmp_path / "ddp_tiny.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {str(HERE)!r})
        torch.set_num_threads(1)
        from safetensors.torch import save_file
        from squeeze.train.engine import EngineConfig, fit
        from tiny_task import TinyTask
        res = fit(TinyTask(epochs=2), EngineConfig({str(tmp_path / 'run')!r}, devices=2, progress=False))
        save_file({{k: v.contiguous() for k, v in res.module.state_dict().items()}},
                  {str(tmp_path)!r} + f"/rank{{res.rank}}.safetensors")
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    env.pop("MASTER_PORT", None)
    proc = subprocess.run([sys.executable, str(script)], env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stderr[-3000:]
    w0, w1 = load_file(str(tmp_path / "rank0.safetensors")), load_file(str(tmp_path / "rank1.safetensors"))
    assert w0.keys() == w1.keys()
    for key in w0:
        assert torch.equal(w0[key], w1[key]), key
    assert (tmp_path / "run" / CHECKPOINT).is_file()
    start = TinyTask().build()[0].state_dict()
    assert any(not torch.equal(w0[k], start[k]) for k in w0 if k.endswith("weight"))  # it trained


def test_epoch_end_time_is_taken_before_the_evaluation(tmp_path: Path) -> None:
    import time

    evaluated: list[float] = []

    class SlowEval(TinyTask):
        def evaluate(self, module):  # type: ignore[no-untyped-def]
            evaluated.append(time.time())
            time.sleep(0.5)
            return super().evaluate(module)

    log = fit(SlowEval(epochs=2), _cfg(tmp_path)).log
    # each epoch ends before its evaluation starts (0.05 s: `ended` is rounded to 0.1 s)
    assert all(e["ended"] <= t + 0.05 for e, t in zip(log, evaluated))

