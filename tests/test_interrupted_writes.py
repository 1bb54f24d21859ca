"""Writes cut short. A full disk in the middle of every command that writes: one line ``vistok: error: cannot write
FILE: ...`` with exit 2, the input untouched, no partial file under the final name, no temporary
left behind, and an earlier checkpoint intact and resumable.

The disk is "filled" with a per-process file-size limit (``RLIMIT_FSIZE``, with ``SIGXFSZ``
ignored), which makes every write past the limit fail with ``EFBIG`` the way a full disk fails with
``ENOSPC``; this needs no root and no mount. All cases run in one child process (one torch import)
that reports each case's exit code and stderr as JSON lines on its stdout (a pipe, which the limit
does not touch). A ``kill -9`` in the middle of writing a checkpoint: the previous checkpoint
survives, resume removes the half-written temporary and ends with the weights of an uninterrupted run.
"""

import hashlib
import json
import signal
import subprocess
import sys
import textwrap

import torch

import vistok
from vistok.atomic import TMP_MARK
from vistok.train.config import load_train_config
from vistok.train.trainer import train

from conftest import tiny_train_overrides

DRIVER = textwrap.dedent("""
    import contextlib, io, json, resource, signal, sys
    from vistok.cli import main
    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)
    hard = resource.getrlimit(resource.RLIMIT_FSIZE)[1]
    for limit, args in json.loads(sys.stdin.read()):
        err = io.StringIO()
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit if limit else hard, hard))
        with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
            code = main(args)
        resource.setrlimit(resource.RLIMIT_FSIZE, (hard, hard))
        print(json.dumps({"code": code, "err": err.getvalue()}), flush=True)
""")


def run_limited(cases):
    """Run ``[(byte_limit or 0 for none, argv), ...]`` in one child; returns [(code, stderr)]."""
    payload = json.dumps([(limit, [str(a) for a in argv]) for limit, argv in cases])
    p = subprocess.run([sys.executable, "-c", DRIVER], input=payload, capture_output=True, text=True, timeout=600)
    assert p.returncode == 0, p.stderr[-3000:]
    rows = [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]
    assert len(rows) == len(cases), p.stdout + p.stderr[-3000:]
    return [(r["code"], r["err"]) for r in rows]


def digest(folder):
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.rglob("*")) if p.is_file()}


def assert_full_disk_error(code, err, target):
    errors = [line for line in err.splitlines() if line.startswith("vistok: error:")]
    assert code == 2 and len(errors) == 1, err
    assert errors[0].startswith(f"vistok: error: cannot write {target}") and "File too large" in errors[0], errors[0]
    assert "Traceback" not in err, err


def leftovers(folder):
    return sorted(p.name for p in folder.rglob("*") if p.is_file() and (TMP_MARK in p.name or p.suffix == ".part"))


def test_every_writer_fails_cleanly_on_a_full_disk(model_dir, media_dir, tmp_path):
    classes = tmp_path / "classes"
    for name in ("a", "b"):
        (classes / name).mkdir(parents=True)
        (classes / name / "x.png").write_bytes((media_dir / "image0.png").read_bytes())
    made = tmp_path / "made"
    setup = run_limited([(0, ["encode", model_dir, media_dir / "clip0.mp4", made / "t.npz"]),
                         (0, ["compress", model_dir, media_dir / "clip0.mp4", made / "c.vtok"])])
    assert [c for c, _ in setup] == [0, 0], setup
    inputs = {"media": digest(media_dir), "made": digest(made), "model": digest(model_dir)}

    out = tmp_path / "out"
    cases = {  # name: (argv, the file whose write must fail)
        "encode": (["encode", model_dir, media_dir / "clip0.mp4", out / "t.npz"], out / "t.npz"),
        "reconstruct video": (["reconstruct", model_dir, media_dir / "clip0.mp4", out / "r.mp4"], out / "r.mp4"),
        "reconstruct image": (["reconstruct", model_dir, media_dir / "image0.png", out / "r.png"], out / "r.png"),
        "decode": (["decode", model_dir, made / "t.npz", out / "d.mp4"], out / "d.mp4"),
        "compress": (["compress", model_dir, media_dir / "clip0.mp4", out / "c.vtok"], out / "c.vtok"),
        "decompress": (["decompress", made / "c.vtok", out / "d.gif", "--model", model_dir], out / "d.gif"),
        "encode-set": (["encode-set", model_dir, classes, out / "set.npz", "--size", "16"], out / "set.npz"),
        "shard": (["shard", media_dir, out / "shards"], out / "shards" / "shard-000000.tar"),
        "eval": (["eval", model_dir, media_dir / "image0.png", "--out", out / "ev", "--no-lpips", "--no-fid",
                  "--no-fvd", "--no-block-means"], out / "ev" / "eval.json"),
    }
    results = run_limited([(60, argv) for argv, _ in cases.values()])
    for (name, (_, target)), (code, err) in zip(cases.items(), results):
        assert_full_disk_error(code, err, target)
        assert not target.exists(), name
    assert leftovers(out) == []
    assert {"media": digest(media_dir), "made": digest(made), "model": digest(model_dir)} == inputs


def test_training_keeps_its_last_checkpoint_when_the_disk_fills(media_dir, tmp_path):
    run = tmp_path / "run"
    train = ["train", "tiny", "--out", run, "--quiet"]
    for s in tiny_train_overrides(media_dir, steps=6):
        train += ["--set", s]
    # Three steps on a roomy disk (checkpoint at step 3), then steps 4-6 on a disk too small for the
    # step-6 checkpoint (the metrics log still fits), then the same on a roomy disk again.
    (first, _), (full, err), (again, _) = run_limited([(0, train + ["--steps", "3"]),
                                                       (80_000, train + ["--resume"]),
                                                       (0, train + ["--resume"])])
    assert first == 0
    assert_full_disk_error(full, err, run)
    assert leftovers(run) == []
    assert again == 0
    rows = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in rows] == [1, 2, 3, 4, 5, 6]
    assert (run / "model" / "model.safetensors").is_file()


# Trains in a child that SIGKILLs itself halfway through writing its N-th checkpoint: the first half
# of the bytes reach the temporary file, then the process dies with no chance to clean up.
KILLER = textwrap.dedent("""
    import os, signal, sys, torch
    from vistok.cli import main
    real, calls, die_at = torch.save, [0], int(sys.argv[1])
    def save(state, f):
        calls[0] += 1
        if calls[0] == die_at:
            real(state, f)
            f.flush()
            f.truncate(f.tell() // 2)
            os.kill(os.getpid(), signal.SIGKILL)
        return real(state, f)
    torch.save = save
    sys.exit(main(sys.argv[2:]))
""")


def test_kill_9_while_writing_a_checkpoint_then_resume(media_dir, tmp_path):
    overrides = tiny_train_overrides(media_dir, steps=6)
    argv = ["train", "tiny", "--out", str(tmp_path / "run"), "--quiet"] + [a for s in overrides for a in ("--set", s)]
    p = subprocess.run([sys.executable, "-c", KILLER, "2"] + argv, capture_output=True, text=True, timeout=300)
    assert p.returncode == -signal.SIGKILL, p.stderr[-2000:]  # killed while writing the step-6 checkpoint
    run = tmp_path / "run"
    assert leftovers(run), "the kill should have left a half-written temporary"
    assert torch.load(run / "checkpoint.pt", weights_only=True)["step"] == 3  # the step-3 one, intact
    resumed = train(load_train_config("tiny", overrides), run, quiet=True, resume=True)
    assert resumed.step == 6 and leftovers(run) == []
    train(load_train_config("tiny", overrides), tmp_path / "full", quiet=True)
    a, b = vistok.load_tokenizer(run), vistok.load_tokenizer(tmp_path / "full")
    for (k, va), vb in zip(a.state_dict().items(), b.state_dict().values()):
        assert torch.equal(va, vb), k

