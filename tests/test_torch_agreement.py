#!/usr/bin/python3
"""clapp's training step against PyTorch autograd (tools/torch_twin.py).

build/twin_step runs ONE step of a small pipeline through the graph and
writes the initial weights, the gradients, the updated weights and every loss
element's random draws; the twin redoes the step with the same weights, input
and draws. Checked, relative to the largest magnitude of each tensor:
gradients, weights after the Adam step and the loss values within 1e-4, for
CLAPP-s and InfoNCE with a BPTT GRU level (target=conv3, grad_target) and a
two-layer module, each with the loss element's default negatives (neg_draw=
per_step: N per (context, k) pair) and with neg_draw=shared (N per context
for all k). The input is loud enough that every hinge is partly active, so
the masks are exercised. Controls that must fail: a changed negative index
(both layouts), a per-step dump read as if every k shared its context's
first negatives (what a twin ignoring per-step draws computes) and e-prop
instead of BPTT.

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

        def step(pipe, out, neg_draw, *sets):
            """neg_draw None: the loss element's default (per step)."""
            cmd = [twin_step, os.path.join(source, "tests", "pipelines", pipe), "--input", xin,
                   "--out", os.path.join(tmp, out), "--seed", "3"]
            if neg_draw:
                sets = tuple("%s.neg_draw=%s" % (l, neg_draw)
                             for l in ("loss1", "loss3", "loss_gru")) + sets
            for s in sets:
                cmd += ["--set", s]
            r = subprocess.run(cmd, capture_output=True, text=True)
            if r.returncode != 0:
                print(r.stderr)
            return r.returncode, os.path.join(tmp, out)

        for pipe, neg_draw in (("twin_clapp_s.pipe", None), ("twin_clapp_s.pipe", "shared"),
                               ("twin_infonce.pipe", None), ("twin_infonce.pipe", "shared")):
            layout = neg_draw or "per_step"
            out = "%s-%s" % (pipe.split(".")[0], layout)
            rc, d = step(pipe, out, neg_draw)
            pipe = "%s [%s]" % (pipe, layout if neg_draw else "default: per_step")
            expect(rc == 0, "%s: twin_step ran" % pipe)
            if rc:
                continue
            with open(os.path.join(d, "draws.json")) as f:
                draws = json.load(f)
            # the dump holds the negatives in the layout the loss used: N per
            # (context, k) pair per step (pair_off[K] pairs), N per context shared
            n_want = {l["name"]: (l["pair_off"][-1] if layout == "per_step" else l["contexts"]) *
                      l["negatives"] for l in draws["losses"]}
            expect(all(l["neg_layout"] == layout and len(l["neg"][0]) == l["n_neg"] ==
                       n_want[l["name"]] for l in draws["losses"]) and len(draws["losses"]) == 3,
                   "%s: draws.json has %s negatives, %s per loss"
                   % (pipe, layout, [len(l["neg"][0]) for l in draws["losses"]]))
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
            if pipe.startswith("twin_clapp_s.pipe"):
                act = [(l["pos_active"], l["neg_active"]) for l in draws["losses"]]
                expect(all(0.05 < a < 0.95 for pair in act for a in pair),
                       "%s: hinges partly active in every loss %s" % (pipe, act))
                # control 1: one negative index changed per context (shared) or
                # per pair (per step) of loss3 (draws the twin did not see) must
                # be visible in loss3.W
                bad = json.loads(json.dumps(draws))
                l3 = [l for l in bad["losses"] if l["name"] == "loss3"][0]
                npool = l3["pool_off"][-1]
                for i in range(0, len(l3["neg"][0]), l3["negatives"]):
                    l3["neg"][0][i] = (l3["neg"][0][i] + npool // 2) % npool
                _, rows_bad = tt.check(d, xin, draws=bad)
                e = [r["grad_rel"] for r in rows_bad if r.get("name") == "loss3.W"][0]
                expect(e > 10 * TOL, "%s control: changed negatives are detected (loss3.W rel %.2e)"
                       % (pipe, e))
            if layout == "per_step":
                # control 3: every pair (context r, step k) given the negatives a
                # twin reading the dump as shared would use (entries r*N..r*N+N-1
                # for all k): the per-step draws must matter, in every W
                bad = json.loads(json.dumps(draws))
                for l in bad["losses"]:
                    neg, N, K = l["neg"][0], l["negatives"], l["steps"]
                    same = list(neg)
                    for kk in range(K):
                        pair = l["pair_off"][kk]
                        for b in range(l["lanes"]):
                            for t in range(l["lo"][b], l["hi"][b] - kk - 1):
                                r = l["ctx_off"][b] + t - l["lo"][b]
                                same[pair * N:(pair + 1) * N] = neg[r * N:(r + 1) * N]
                                pair += 1
                    l["neg"][0] = same
                _, rows_bad = tt.check(d, xin, draws=bad)
                e = {r["name"]: r["grad_rel"] for r in rows_bad if r["name"].endswith(".W")}
                expect(min(e.values()) > 10 * TOL,
                       "%s control: per-step draws read as shared are detected (W rel %s)"
                       % (pipe, ", ".join("%s %.2e" % kv for kv in sorted(e.items()))))

        # control 2: e-prop's gradient is not BPTT's; the conv layers still agree
        rc, d = step("twin_clapp_s.pipe", "eprop", None, "gru.mode=eprop")
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
