#!/usr/bin/python3
"""clapp's training step against PyTorch autograd (tools/torch_twin.py).

build/twin_step runs ONE step of a small pipeline through the graph and
writes the initial weights, the gradients, the updated weights and every loss
element's random draws; the twin redoes the step with the same weights, input
and draws. Checked, relative to the largest magnitude of each tensor:
gradients, weights after the Adam step and the loss values within 1e-4, for
CLAPP-s and InfoNCE with a BPTT GRU level (target=conv3, grad_target) and a
two-layer module. The input is loud enough that every hinge is partly active,
so the masks are exercised. Controls that must fail: a changed negative index
and e-prop instead of BPTT.

  test_torch_agreement.py BUILD_DIR SOURCE_DIR      (exit 77: torch missing)
"""
import importlib.util
import json
import os
import shutil
import subprocess
import sys
import tempfile

TOL = 1e-4
failures = []


def expect(cond, what):
    print("%s: %s" % ("ok  " if cond else "FAIL", what))
    if not cond:
        failures.append(what)


def main():
    if len(sys.argv) != 3:
        print(__doc__)
        return 2
    build, source = sys.argv[1], sys.argv[2]
    try:
        import numpy as np
        import torch
    except ImportError as e:
        print("SKIP: PyTorch/numpy not importable by %s (%s); tools/setup installs python3-torch"
              % (sys.executable, e))
        return 77
    spec = importlib.util.spec_from_file_location("torch_twin",
                                                  os.path.join(source, "tools", "torch_twin.py"))
    tt = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(tt)
    torch.set_num_threads(1)

    tmp = tempfile.mkdtemp(prefix="clapp-torch-")
    try:
        # 3 lanes x 2560 samples: harmonics + noise at an amplitude where the
        # hinges of every loss are partly active at initialisation
        rng = np.random.default_rng(7)
        t = np.arange(2560) / 16000.0
        x = np.stack([30.0 * np.sin(2 * np.pi * (120 + 40 * b) * t) +
                      5.0 * rng.standard_normal(2560) for b in range(3)]).astype(np.float32)
        xin = os.path.join(tmp, "x.npy")
        np.save(xin, x)
        twin_step = os.path.join(build, "twin_step")

        def step(pipe, out, *sets):
            cmd = [twin_step, os.path.join(source, "tests", "pipelines", pipe), "--input", xin,
                   "--out", os.path.join(tmp, out), "--seed", "3"]
            # twin_step's draws.json holds one negative set per context: compare
            # with neg_draw=shared (per-step draws are checked in tests/test_loss_draws.c)
            for s in ("loss1.neg_draw=shared", "loss3.neg_draw=shared",
                      "loss_gru.neg_draw=shared") + sets:
                cmd += ["--set", s]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr)
            return r.returncode, os.path.join(tmp, out)

        for pipe, out in (("twin_clapp_s.pipe", "clapp_s"), ("twin_infonce.pipe", "infonce")):
            rc, d = step(pipe, out)
            expect(rc == 0, "%s: twin_step ran" % pipe)
            if rc:
                continue
            with open(os.path.join(d, "draws.json")) as f:
                draws = json.load(f)
            worst, rows = tt.check(d, xin)
            for r in rows:
                if r["kind"] == "loss":
                    print("      %-10s loss %.7g (clapp %.7g) rel %.1e" % (r["name"], r["twin"],
                                                                        r["clapp"], r["rel"]))
                else:
                    print("      %-16s |g|max %.3g grad rel %.1e weight rel %.1e"
                          % (r["name"], r["grad_max"], r["grad_rel"], r["weight_rel"]))
            expect(worst["grad"] <= TOL, "%s: gradients agree (worst %.2e)" % (pipe, worst["grad"]))
            expect(worst["weight"] <= TOL,
                   "%s: weights after Adam agree (worst %.2e)" % (pipe, worst["weight"]))
            expect(worst["loss"] <= TOL, "%s: loss values agree (worst %.2e)" % (pipe, worst["loss"]))
            names = sorted(r["name"] for r in rows if r["kind"] == "tensor")
            clapp_names = sorted(tt.read_safetensors(os.path.join(d, "grads.safetensors")))
            expect(names == clapp_names and len(names) == 13,
                   "%s: the twin has exactly clapp's %d learning tensors" % (pipe, len(names)))
            expect(min(r["grad_max"] for r in rows if r["kind"] == "tensor") > 1e-3,
                   "%s: every gradient is non-trivial" % pipe)
            if pipe == "twin_clapp_s.pipe":
                act = [(l["pos_active"], l["neg_active"]) for l in draws["losses"]]
                expect(all(0.05 < a < 0.95 for pair in act for a in pair),
                       "hinges partly active in every loss %s" % act)
                # control 1: one negative index changed per context of loss3
                # (draws the twin did not see) must be visible in loss3.W
                bad = json.loads(json.dumps(draws))
                l3 = [l for l in bad["losses"] if l["name"] == "loss3"][0]
                npool = l3["pool_off"][-1]
                for i in range(0, len(l3["neg"][0]), l3["negatives"]):
                    l3["neg"][0][i] = (l3["neg"][0][i] + npool // 2) % npool
                _, rows_bad = tt.check(d, xin, draws=bad)
                e = [r["grad_rel"] for r in rows_bad if r.get("name") == "loss3.W"][0]
                expect(e > 10 * TOL, "control: changed negatives are detected (loss3.W rel %.2e)" % e)

        # control 2: e-prop's gradient is not BPTT's; the conv layers still agree
        rc, d = step("twin_clapp_s.pipe", "eprop", "gru.mode=eprop")
        expect(rc == 0, "eprop: twin_step ran")
        if rc == 0:
            _, rows = tt.check(d, xin, allow_eprop=True)
            g = {r["name"]: r["grad_rel"] for r in rows if r["kind"] == "tensor"}
            expect(g["gru.weight_hh"] > 100 * TOL and g["conv1.weight"] <= TOL,
                   "control: e-prop differs from BPTT (gru.weight_hh rel %.2e, conv1.weight %.2e)"
                   % (g["gru.weight_hh"], g["conv1.weight"]))
            try:
                tt.check(d, xin)
                refused = False
            except ValueError:
                refused = True
            expect(refused, "check refuses to compare mode=eprop without allow_eprop")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
