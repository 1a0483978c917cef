#!/usr/bin/python3
"""The PyTorch twin of a clapp pipeline: the same layers, the same CLAPP-s /
InfoNCE losses with each module's input detached, the same Adam step, written
as fast as PyTorch allows on the CPU. Used to benchmark clapp against PyTorch
(tools/bench) and to check clapp's numbers (tests/test_torch_agreement.py).

  torch_twin.py bench PIPE [--steps N] [--warmup N] [--frozen] [--json] [--set NAME.KEY=VALUE]...
      time training steps (or, with --frozen, feature extraction: forward
      through every layer under no_grad) on synthetic blocks of the source's
      lanes x block samples.
  torch_twin.py check DIR --input X.npy [--tol 1e-4]
      redo the step that build/twin_step wrote into DIR (pipeline.txt,
      init.safetensors, draws.json) and compare the gradients, the updated
      weights and the loss values with its grads.safetensors/after.safetensors.

Elements: conv1d (Conv1d + ReLU), gru_eprop (torch.nn.GRU, i.e. BPTT over the
block: PyTorch has no e-prop, so a twin of mode=eprop trains differently; the
check refuses it) and clapp in modes clapp-s, hinge-cpc and infonce (not the
lane-level `clapp` mode, retro or learn=/lr= overrides).

The loss, for one element with context c [B, Dc, T], target z [B, Dz, T]
(z = c without target=) and W [K, Dz, Dc]: contexts are the steps
[w0, w0 + W - 1) of every lane (one window start for all lanes), the
predictions of all K steps are ONE matmul [ns, Dc] x [Dc, K*Dz], positives
z_{t+k} and the negatives are gathered by index. neg_draw=per_step (the
default, as GIM and the vision code draw them): N pool indices per
(context, k) pair, scores one bmm [ns*K, 1, Dz] x [ns*K, Dz, N];
neg_draw=shared: N per context for all k, one bmm [ns, K, Dz] x [ns, Dz, N].
Every (context, k) pair has weight 1 / (K_eff * P_k), negatives
1 / (K_eff * P_k * N): the mean over k of the mean over pairs, the clapp loss
element's normalisation, in both layouts.

draws.json (twin_step) gives each loss's negatives in the loss's own layout
("neg_layout"; dumps without it are shared): per step, pair i of step k
(lanes in order, contexts t = lo .. hi-k-1) uses neg[0][(pair_off[k-1] + i)
* N + n]; shared, context row r uses neg[0][r * N + n] for every k.
"""
import argparse
import json
import math
import os
import resource
import shlex
import struct
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

DEFAULTS = {
    "source": {"rate": "16000", "block": "20480", "lanes": "8"},
    "conv1d": {"out": "512", "kernel": "10", "stride": "5", "pad": "2", "activation": "relu",
               "bias": "true"},
    "gru_eprop": {"hidden": "256", "mode": "eprop"},
    "clapp": {"mode": "clapp-s", "steps": "12", "negatives": "10", "window": "128", "retro": "false",
              "detach_context": "false", "target": "", "grad_target": "auto",
              "neg_draw": "per_step", "neg_exclude_self": "false", "context": ""},
}


def parse_pipeline(text, sets=()):
    """Pipeline text (a .pipe file or `clapp run --dump-graph` output) into
    [(type, {key: value})], every key filled from DEFAULTS."""
    body = " ".join(line.split("#", 1)[0] for line in text.splitlines())
    elems = []
    for i, seg in enumerate(body.split("!")):
        toks = shlex.split(seg)
        if not toks:
            raise ValueError("tools/torch_twin.py: empty element in the pipeline")
        etype, kv = toks[0], dict(DEFAULTS.get(toks[0], {}))
        for t in toks[1:]:
            k, _, v = t.partition("=")
            kv[k] = v
        kv.setdefault("name", "%s%d" % (etype, i))
        elems.append((etype, kv))
    for s in sets:
        key, _, v = s.partition("=")
        name, _, k = key.partition(".")
        for _, kv in elems:
            if kv["name"] == name:
                kv[k] = v
                break
        else:
            raise ValueError("tools/torch_twin.py: --set %s: no element %s" % (s, name))
    return elems


def read_safetensors(path):
    with open(path, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        hdr = json.loads(f.read(n))
        data = f.read()
    out = {}
    for name, d in hdr.items():
        if name == "__metadata__" or d["dtype"] != "F32":
            continue
        a, b = d["data_offsets"]
        out[name] = np.frombuffer(data[a:b], dtype="<f4").reshape(d["shape"]).copy()
    return out


def as_bool(v):
    return str(v).lower() in ("1", "true", "yes", "on")


class Twin(torch.nn.Module):
    def __init__(self, elems, lanes, samples):
        super().__init__()
        self.elems = elems
        self.layers = torch.nn.ModuleDict()
        self.W = torch.nn.ParameterDict()
        self.names = {}          # clapp name "element.param" -> parameter
        self.index_cache = {}
        self.relu = {kv["name"]: kv["activation"] == "relu" for t, kv in elems if t == "conv1d"}
        shapes = {}
        cin, T, last = 1, samples, None
        for etype, kv in elems[1:]:
            name = kv["name"]
            if as_bool(kv.get("learn", "true")) is False or "lr" in kv:
                raise ValueError("tools/torch_twin.py: %s: learn=/lr= are not supported" % name)
            if etype == "conv1d":
                k, s, p, o = (int(kv[x]) for x in ("kernel", "stride", "pad", "out"))
                m = torch.nn.Conv1d(cin, o, k, stride=s, padding=p, bias=as_bool(kv["bias"]))
                self.layers[name] = m
                self.names[name + ".weight"] = m.weight
                if m.bias is not None:
                    self.names[name + ".bias"] = m.bias
                cin, T = o, (T + 2 * p - k) // s + 1
                shapes[name], last = (cin, T), name
            elif etype == "gru_eprop":
                h = int(kv["hidden"])
                m = torch.nn.GRU(cin, h, batch_first=True)
                self.layers[name] = m
                for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
                    self.names["%s.%s" % (name, p)] = getattr(m, p + "_l0")
                cin = h
                shapes[name], last = (cin, T), name
            elif etype == "clapp":
                if kv["mode"] not in ("clapp-s", "hinge-cpc", "infonce") or as_bool(kv["retro"]):
                    raise ValueError("tools/torch_twin.py: %s: mode=%s retro=%s not supported"
                                     % (name, kv["mode"], kv["retro"]))
                dz = shapes[kv["target"]][0] if kv["target"] else shapes[last][0]
                dc = shapes[last][0]
                K = int(kv["steps"])
                bound = 1.0 / math.sqrt(dc)
                w = torch.nn.Parameter(torch.empty(K, dz, dc).uniform_(-bound, bound))
                self.W[name] = w
                self.names[name + ".W"] = w
            else:
                raise ValueError("tools/torch_twin.py: element type %s has no twin" % etype)

    def load_clapp(self, weights):
        with torch.no_grad():
            for name, p in self.names.items():
                if name not in weights:
                    raise KeyError("tools/torch_twin.py: %s missing from the checkpoint" % name)
                src = torch.from_numpy(weights[name])
                if tuple(src.shape) != tuple(p.shape):
                    raise ValueError("tools/torch_twin.py: %s: clapp %s, twin %s"
                                     % (name, tuple(src.shape), tuple(p.shape)))
                p.copy_(src)

    def _layer(self, etype, name, inp):
        m = self.layers[name]
        if etype == "conv1d":
            y = m(inp)
            return F.relu(y, inplace=True) if self.relu[name] else y   # conv backward does not need y
        y, _ = m(inp.transpose(1, 2))      # h0 = 0: every lane starts its sequence
        return y.transpose(1, 2)

    def _indices(self, B, T, L, K):
        """Pool rows of every context s = b*(L-1) + i (lane b, window step i)
        and of its targets for k = 1..K, and the pair weights (w0 is added
        later). Invalid (s, k) pairs point at the context row with weight 0."""
        key = (B, T, L, K)
        if key not in self.index_cache:
            i = torch.arange(L - 1).repeat(B)
            b = torch.arange(B).repeat_interleave(L - 1)
            k = torch.arange(1, K + 1)
            valid = (i[:, None] + k[None, :]) < L
            tgt = b[:, None] * T + torch.where(valid, i[:, None] + k[None, :], i[:, None])
            pk = valid.sum(0).to(torch.float64)
            keff = float((pk > 0).sum())
            wpos = torch.where(valid, 1.0 / (keff * pk.clamp(min=1))[None, :],
                               torch.zeros((), dtype=torch.float64)).to(torch.float32)
            # per-step draws: the pair number (pair_off[k-1] + b * (L - k) + i)
            # of every (s, k) in the loss's enumeration (invalid pairs: 0)
            off = torch.cat((torch.zeros(1, dtype=torch.int64),
                             torch.cumsum(B * (L - k).clamp(min=0), 0)))   # [K + 1]: pair_off
            pair = torch.where(valid, off[None, :-1] + b[:, None] * (L - k)[None, :] + i[:, None],
                               torch.zeros((), dtype=torch.int64))
            self.index_cache[key] = (b * T + i, tgt.reshape(-1), wpos, pair, off)
        return self.index_cache[key]

    @staticmethod
    def _neg_layout(kv, draws, ns, npairs, N):
        """The layout of a dump's negatives ("per_step" or "shared"), checked
        against the element's neg_draw and the number of entries."""
        neg = draws["neg"][0] if draws["neg"] else []
        layout = draws.get("neg_layout")
        if layout is None:   # dumps before neg_layout: one set per context
            layout = "shared" if len(neg) == ns * N else "unknown"
        if layout != kv["neg_draw"]:
            raise ValueError("tools/torch_twin.py: %s: draws.json has %s negatives, the pipeline "
                             "says neg_draw=%s" % (kv["name"], layout, kv["neg_draw"]))
        want = (npairs if layout == "per_step" else ns) * N
        if len(neg) != want or draws.get("n_neg", want) != want:
            raise ValueError("tools/torch_twin.py: %s: %d %s negatives in draws.json, expected %d"
                             % (kv["name"], len(neg), layout, want))
        return layout

    def _loss(self, kv, z, c, draws, gen):
        W = self.W[kv["name"]]
        B, dz, T = z.shape
        dc = c.shape[1]
        K, N, win = int(kv["steps"]), int(kv["negatives"]), int(kv["window"])
        L = win if 0 < win < T else T
        if L < 2:
            return z.sum() * 0.0
        ctx, tgt, wpos, pair, off = self._indices(B, T, L, K)
        ns = ctx.numel()
        npairs = int(off[-1])
        if draws is not None:
            if any(lo != draws["lo"][0] for lo in draws["lo"]) or \
               any(h - lo != L for lo, h in zip(draws["lo"], draws["hi"])):
                raise ValueError("tools/torch_twin.py: unequal lane windows are not supported")
            if draws["pair_off"] != off.tolist():
                raise ValueError("tools/torch_twin.py: %s: pair_off %s, the twin enumerates %s"
                                 % (kv["name"], draws["pair_off"], off.tolist()))
            per_step = self._neg_layout(kv, draws, ns, npairs, N) == "per_step"
            w0 = draws["w0"]
            neg = torch.tensor(draws["neg"][0], dtype=torch.int64)
            if per_step:   # [ns, K, N] in (context, k) order; invalid pairs read pair 0
                neg = neg.view(npairs, N)[pair].reshape(-1)
        else:
            per_step = kv["neg_draw"] == "per_step"
            w0 = int(torch.randint(0, T - L + 1, (1,), generator=gen))
            neg = torch.randint(0, B * T, (ns * (K if per_step else 1) * N,), generator=gen)
        if as_bool(kv["detach_context"]):
            c = c.detach()
        nneg = neg.numel()
        # One time-major copy of z and ONE gather of every row the loss reads
        # (contexts too when c is z): a single scatter-add in backward.
        zpool = z.transpose(1, 2).reshape(B * T, dz)
        # (split, not slicing: slice backward would zero-fill the whole parent per slice)
        if c is z:
            S, zt, zn = zpool[torch.cat((ctx + w0, tgt + w0, neg))].split([ns, ns * K, nneg])
        else:
            S = c[:, :, w0:w0 + L - 1].transpose(1, 2).reshape(ns, dc)
            zt, zn = zpool[torch.cat((tgt + w0, neg))].split([ns * K, nneg])
        zt = zt.view(ns, K, dz)
        pred = (S @ W.reshape(K * dz, dc).t()).view(ns, K, dz)       # all K predictions: one matmul
        upos = (pred * zt).sum(-1)                                    # [ns, K]
        if per_step:                                                  # N of its own per (s, k)
            uneg = torch.bmm(pred.reshape(ns * K, 1, dz),
                             zn.view(ns * K, N, dz).transpose(1, 2)).view(ns, K, N)
        else:                                                         # N per context, all k
            uneg = torch.bmm(pred, zn.view(ns, N, dz).transpose(1, 2))   # [ns, K, N]
        if kv["mode"] == "infonce":
            lse = torch.logsumexp(torch.cat((upos[..., None], uneg), -1), -1)
            return ((lse - upos) * wpos).sum()
        return (F.relu(1.0 - upos) * wpos).sum() + \
            (F.relu(1.0 + uneg) * (wpos / N)[..., None]).sum()

    def forward(self, x, draws=None, gen=None, learn=True):
        """x [B, 1, T]. Learning: the sum of the losses and each loss; frozen:
        the output of every layer."""
        outs, cur, module_start, last, losses = {}, x, True, None, []
        module = []   # layers of the current module
        by_name = {d["name"]: d for d in draws["losses"]} if draws else {}
        for etype, kv in self.elems[1:]:
            name = kv["name"]
            if etype == "clapp":
                module_start = True
                in_module, module = kv["target"] in module, []
                if not learn:
                    continue
                if kv["context"]:
                    raise ValueError("tools/torch_twin.py: context= (direct feedback) is not modelled")
                c = outs[last]
                if kv["target"]:
                    z = outs[kv["target"]]
                    # grad_target=auto: the CLAPP modes train the target (appendix); InfoNCE and
                    # hinge-CPC only inside the context's module (CPC end to end), not across (GIM)
                    gt = kv["grad_target"]
                    if gt == "auto":
                        gt = kv["mode"] in ("clapp-s", "clapp") or in_module
                    if not as_bool(gt):
                        z = z.detach()
                else:
                    z = c
                losses.append((name, self._loss(kv, z, c, by_name.get(name) if draws else None, gen)))
                continue
            inp = cur.detach() if module_start and learn else cur
            cur = self._layer(etype, name, inp)
            outs[name], last, module_start = cur, name, False
            module.append(name)
        if not learn:
            return outs
        return sum(l for _, l in losses), losses


def make_optimizer(twin, lr=2e-4):
    return torch.optim.Adam(twin.parameters(), lr=lr, betas=(0.9, 0.999), eps=1e-8)


def synthetic_block(lanes, samples, seed):
    """Speech-like lanes (harmonics with a drifting pitch plus noise)."""
    t = np.arange(samples) / 16000.0
    rng = np.random.default_rng(seed)
    x = np.empty((lanes, 1, samples), np.float32)
    for b in range(lanes):
        f0 = 90.0 + 15.0 * ((seed + b) % 11)
        phase = 2 * np.pi * np.cumsum(f0 * (1.0 + 0.2 * np.sin(2 * np.pi * t * 3.0))) / 16000.0
        x[b, 0] = 0.3 * np.sin(phase) + 0.15 * np.sin(2 * phase) + 0.08 * np.sin(3 * phase) + \
            0.025 * rng.standard_normal(samples)
    return torch.from_numpy(x)


def matmul_peak():
    a = torch.rand(1536, 1536)
    b = torch.rand(1536, 1536)
    best = 0.0
    for _ in range(8):
        t0 = time.perf_counter()
        torch.mm(a, b)
        best = max(best, 2.0 * 1536 ** 3 / (time.perf_counter() - t0) * 1e-9)
    return best


def cmd_bench(a):
    torch.set_num_threads(a.threads)
    with open(a.pipe) as f:
        elems = parse_pipeline(f.read(), a.set)
    src = elems[0][1]
    lanes, samples, rate = int(src["lanes"]), int(src["block"]), float(src["rate"])
    torch.manual_seed(1)
    twin = Twin(elems, lanes, samples)
    opt = make_optimizer(twin)
    gen = torch.Generator().manual_seed(1)
    times, peak = [], matmul_peak()
    for s in range(a.warmup + a.steps):
        x = synthetic_block(lanes, samples, s)
        t0 = time.perf_counter()
        if a.frozen:
            with torch.no_grad():
                twin(x, learn=False)
        else:
            opt.zero_grad(set_to_none=True)
            loss, _ = twin(x, gen=gen)
            loss.backward()
            opt.step()
        if s >= a.warmup:
            times.append(time.perf_counter() - t0)
    peak = max(peak, matmul_peak())
    times.sort()
    med = times[len(times) // 2]
    res = {"pipeline": a.pipe, "mode": "frozen" if a.frozen else "train", "lanes": lanes,
           "block": samples, "steps": a.steps, "threads": torch.get_num_threads(),
           "step_seconds_median": med, "step_seconds_min": times[0], "step_seconds_max": times[-1],
           "windows_per_second": lanes / med, "audio_seconds_per_second": lanes * samples / rate / med,
           "matmul_peak_gflops": peak,
           "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0,
           "torch": torch.__version__}
    if a.json:
        print(json.dumps(res))
    else:
        for k, v in res.items():
            print("%-26s %s" % (k, "%.4g" % v if isinstance(v, float) else v))
    return 0


def rel_err(a, b):
    """max |a - b| / max |b| over a tensor (0 when both are 0)."""
    scale = float(np.max(np.abs(b))) if b.size else 0.0
    diff = float(np.max(np.abs(a - b))) if b.size else 0.0
    return diff / scale if scale > 0 else diff


def check(dirname, input_path, draws=None, allow_eprop=False):
    """Redo twin_step's step in DIR with PyTorch. Returns (worst, rows): the
    largest relative errors of gradients, updated weights and loss values,
    and one row per loss / tensor. draws: override draws.json (tests)."""
    with open(os.path.join(dirname, "pipeline.txt")) as f:
        elems = parse_pipeline(f.read())
    for t, kv in elems:
        if t == "gru_eprop" and kv["mode"] != "bptt" and not allow_eprop:
            raise ValueError("tools/torch_twin.py: %s runs mode=%s; torch.nn.GRU is BPTT, so only "
                             "mode=bptt can agree" % (kv["name"], kv["mode"]))
    init = read_safetensors(os.path.join(dirname, "init.safetensors"))
    grads = read_safetensors(os.path.join(dirname, "grads.safetensors"))
    after = read_safetensors(os.path.join(dirname, "after.safetensors"))
    if draws is None:
        with open(os.path.join(dirname, "draws.json")) as f:
            draws = json.load(f)
    x = np.load(input_path).astype(np.float32)
    x = torch.from_numpy(x.reshape(x.shape[0], 1, x.shape[-1]))
    twin = Twin(elems, x.shape[0], x.shape[-1])
    twin.load_clapp(init)
    opt = make_optimizer(twin)
    opt.zero_grad(set_to_none=True)
    total, losses = twin(x, draws=draws)
    total.backward()
    worst = {"grad": 0.0, "weight": 0.0, "loss": 0.0}
    rows = []
    cl = {d["name"]: d["loss"] for d in draws["losses"]}
    for name, l in losses:
        e = abs(float(l) - cl[name]) / max(abs(cl[name]), 1e-30)
        worst["loss"] = max(worst["loss"], e)
        rows.append({"kind": "loss", "name": name, "rel": e, "twin": float(l), "clapp": cl[name]})
    grad_t = {n: p.grad.numpy().copy() if p.grad is not None else np.zeros(p.shape, np.float32)
              for n, p in twin.names.items()}
    opt.step()
    # ReLU ties: pre-activations so close to 0 that the two sides' rounding
    # may pick different sides of the kink (each flips one gradient term)
    ties = {}
    with torch.no_grad():
        outs = twin(x, learn=False)
        prev = None
        for t, kv in elems[1:]:
            if t == "conv1d" and twin.relu[kv["name"]]:
                pre = twin.layers[kv["name"]](x if prev is None else outs[prev])
                ties[kv["name"]] = int((pre.abs() <= 1e-7 * pre.abs().max()).sum())
            if t != "clapp":
                prev = kv["name"]
    for n, p in twin.names.items():
        w = p.detach().numpy()
        row = {"kind": "tensor", "name": n, "grad_rel": rel_err(grad_t[n], grads[n]),
               "weight_rel": rel_err(w, after[n]),
               "update_rel": rel_err(w - init[n], after[n] - init[n]),
               "grad_max": float(np.max(np.abs(grads[n]))),
               "relu_ties": ties.get(n.split(".")[0], 0) if n.endswith(".weight") else 0}
        worst["grad"] = max(worst["grad"], row["grad_rel"])
        worst["weight"] = max(worst["weight"], row["weight_rel"])
        rows.append(row)
    return worst, rows


def cmd_check(a):
    torch.set_num_threads(a.threads)
    worst, rows = check(a.dir, a.input)
    if a.json:
        print(json.dumps({"worst": worst, "tol": a.tol, "rows": rows}))
    else:
        for r in rows:
            if r["kind"] == "loss":
                print("%-22s loss rel %.2e (twin %.9g, clapp %.9g)"
                      % (r["name"], r["rel"], r["twin"], r["clapp"]))
            else:
                print("%-22s grad rel %.2e  weight rel %.2e  update rel %.2e  (max|g| %.3g)"
                      % (r["name"], r["grad_rel"], r["weight_rel"], r["update_rel"], r["grad_max"]))
        print("worst: grad %.2e weight %.2e loss %.2e (tol %.0e)"
              % (worst["grad"], worst["weight"], worst["loss"], a.tol))
    return 0 if max(worst.values()) <= a.tol else 1


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("bench")
    b.add_argument("pipe")
    b.add_argument("--steps", type=int, default=8)
    b.add_argument("--warmup", type=int, default=2)
    b.add_argument("--frozen", action="store_true")
    b.add_argument("--json", action="store_true")
    b.add_argument("--threads", type=int, default=2)
    b.add_argument("--set", action="append", default=[])
    c = sub.add_parser("check")
    c.add_argument("dir")
    c.add_argument("--input", required=True)
    c.add_argument("--tol", type=float, default=1e-4)
    c.add_argument("--json", action="store_true")
    c.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    return cmd_bench(a) if a.cmd == "bench" else cmd_check(a)


if __name__ == "__main__":
    sys.exit(main())
