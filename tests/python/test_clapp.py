"""The Python package (python/clapp) against the installed prefix: features
equal `clapp extract`'s on the same samples, push/pull in chunks equal one
extract, training writes a checkpoint that reads back as numpy arrays and
changes the features, errors name their cause. Run by CTest (test_python)
with PYTHONPATH at the prefix's package folder and CLAPP_TEST_PREFIX set."""
import os
import shutil
import struct
import subprocess
import sys

import numpy as np
import pytest

import clapp

PREFIX = os.environ["CLAPP_TEST_PREFIX"]
SOURCE = os.environ["CLAPP_TEST_SOURCE_DIR"]
CONV = os.path.join(SOURCE, "tests", "host", "conv.pipe")
LEARN = """source rate=16000 block=2048 lanes=2 mode=window window_align=160
! conv1d name=enc out=8 kernel=10 stride=5 pad=2
! clapp name=loss steps=2 negatives=2 window=64
"""


def signal(n, seed):
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    return (0.4 * np.sin(2 * np.pi * 440 * t) + 0.1 * rng.standard_normal(n)).astype(np.float32)


def write_wav(path, x, rate=16000):
    """Mono IEEE-float WAV, so that the decoder reads exactly these samples."""
    data = np.asarray(x, dtype="<f4").tobytes()
    with open(path, "wb") as f:
        f.write(b"RIFF" + struct.pack("<I", 4 + 24 + 12 + 8 + len(data)) + b"WAVE")
        f.write(b"fmt " + struct.pack("<IHHIIHH", 16, 3, 1, rate, rate * 4, 4, 32))
        f.write(b"fact" + struct.pack("<II", 4, len(x)))
        f.write(b"data" + struct.pack("<I", len(data)) + data)


def cli_extract(tmp_path, x, element, *args, rate=16000):
    write_wav(tmp_path / "sig.wav", x, rate)
    (tmp_path / "m.tsv").write_text("sig.wav\n")
    subprocess.run([os.path.join(PREFIX, "bin", "clapp"), "extract", CONV, "--data", str(tmp_path / "m.tsv"),
                    "--out", str(tmp_path / "x"), "--element", element, "-q", *args], check=True)
    return np.load(tmp_path / "x" / f"sig.{element}.npy")


def test_version():
    assert clapp.version().count(".") == 2


def test_extract_equals_cli(tmp_path):
    x = signal(20000, 1)
    p = clapp.Pipeline(CONV)
    got = p.extract(x, 16000)                      # the last layer, conv1d1
    ref = cli_extract(tmp_path, x, "conv1d1", "--random-init")
    assert got.shape == ref.shape == (999, 16)
    assert np.abs(ref).max() > 1e-3
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))
    # an override reaches the graph: the source's gain scales the input
    raw = clapp.Pipeline(CONV, source0__gain=0.5).extract(x, 16000, element="source0")
    np.testing.assert_array_equal(raw[:, 0], 0.5 * x)


def test_extract_resamples_as_files(tmp_path):
    """Samples at 44.1 kHz give what the same samples in a 44.1 kHz file give."""
    x = signal(30000, 3)
    got = clapp.Pipeline(CONV).extract(x, 44100, element="conv1d0")
    ref = cli_extract(tmp_path, x, "conv1d0", "--random-init", rate=44100)
    assert got.shape == ref.shape and abs(got.shape[0] - 30000 * 16000 / 44100 / 5) < 3
    np.testing.assert_allclose(got, ref, rtol=0, atol=1e-5 * (1 + np.abs(ref).max()))


def test_push_pull_equals_extract():
    x = signal(15000, 2)
    p = clapp.Pipeline(CONV)
    whole = p.extract(x, 16000, element=["conv1d0", "conv1d1"])
    parts = []
    for a in range(0, len(x), 3333):
        p.push(x[a:a + 3333])
        parts.append(p.pull(["conv1d0", "conv1d1"]))
    p.end()
    parts.append(p.pull(["conv1d0", "conv1d1"]))
    p.close()
    for el in ("conv1d0", "conv1d1"):
        got = np.concatenate([d[el] for d in parts])
        assert got.shape == whole[el].shape
        np.testing.assert_allclose(got, whole[el], rtol=0, atol=1e-6)


def test_train_checkpoint(tmp_path):
    for i in range(4):
        write_wav(tmp_path / f"a{i}.wav", signal(8000, 10 + i))
    (tmp_path / "train.tsv").write_text("".join(f"a{i}.wav\n" for i in range(4)))
    ck = tmp_path / "enc.safetensors"
    p = clapp.Pipeline(LEARN)
    x = signal(6000, 20)
    before = p.extract(x, 16000, element="enc")
    res = p.train(tmp_path / "train.tsv", epochs=2, checkpoint=ck, lr=1e-3)
    assert res["blocks"] == 4 and res["files_failed"] == 0          # 4 windows a pass in 2 lanes, 2 epochs
    assert np.isfinite(res["loss"]["loss"]) and res["loss"]["loss"] > 0
    tensors = clapp.read_checkpoint(ck)
    assert tensors["enc.weight"].shape[0] == 8 and np.isfinite(tensors["enc.weight"]).all()
    assert "enc.bias" in tensors and not any(k.startswith("__optim__") for k in tensors)
    assert any(k.startswith("__optim__") for k in clapp.read_checkpoint(ck, optimizer=True))
    meta = clapp.checkpoint_metadata(ck)
    assert meta["blocks"] == "4" and "conv1d" in meta["pipeline"]
    after = p.extract(x, 16000, element="enc")
    assert after.shape == before.shape and np.abs(after - before).max() > 1e-6
    # a fresh pipeline with the checkpoint computes the same features
    again = clapp.Pipeline(LEARN, checkpoint=ck).extract(x, 16000, element="enc")
    np.testing.assert_array_equal(again, after)
    # resume continues the run: two more epochs after the first two
    res2 = p.train(tmp_path / "train.tsv", epochs=4, checkpoint=ck, resume=True, lr=1e-3)
    assert res2["blocks"] == 8


def test_errors(tmp_path):
    with pytest.raises(clapp.ClappError, match="nosuch"):
        clapp.Pipeline("source ! nosuch")
    with pytest.raises(clapp.ClappError, match="rate"):
        clapp.Pipeline(CONV, source0__rate="abc")
    with pytest.raises(clapp.ClappError, match="8000.5 Hz"):
        clapp.Pipeline(CONV).extract(np.zeros(100, np.float32), 8000.5)
    with pytest.raises(clapp.ClappError, match="missing.safetensors"):
        clapp.Pipeline(CONV, checkpoint=tmp_path / "missing.safetensors")


def test_elements():
    els = {e["id"]: e for e in clapp.elements()}
    assert els["source"]["kind"] == "source" and els["source"]["file"] is None
    conv = els["conv1d"]
    assert conv["kind"] == "layer" and conv["file"].endswith("conv1d.so")
    kernel = [p for p in conv["params"] if p["name"] == "kernel"][0]
    assert kernel["type"] == "int" and kernel["default"] == "10" and kernel["min"] == 1
    act = [p for p in conv["params"] if p["name"] == "activation"][0]
    assert act["choices"] == ["relu", "none"]


def test_moved_prefix(tmp_path):
    """The installed prefix works from anywhere: the package finds libclapp
    through a relative path, libclapp its plugins beside itself."""
    moved = tmp_path / "elsewhere"
    shutil.copytree(PREFIX, moved, symlinks=True)
    pydir = next(moved.glob("lib*/python3*/dist-packages"))
    code = ("import clapp, numpy as np; "
            "e = {x['id']: x for x in clapp.elements()}; print(e['conv1d']['file']); "
            f"print(clapp.Pipeline({CONV!r}).extract(np.ones(5000, np.float32), 16000).shape)")
    env = dict(os.environ, PYTHONPATH=str(pydir), CLAPP_PLUGIN_PATH="")
    env.pop("CLAPP_LIBRARY", None)
    out = subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True,
                         text=True).stdout.split("\n")
    assert out[0].startswith(str(moved)), out
    assert out[1] == "(249, 16)", out
