#!/usr/bin/python3
"""Learning-curve table and plot of tools/bench-phoneme (and tools/bench-video).

Reads WORK/train/<data>-<enc>-s<seed>/train.jsonl (its "snapshot" events give
the minutes and the audio seen at every snapshot) and
WORK/eval/<data>-<enc>-s<seed>-snap<k>.<ev>.json, WORK/eval/random-s<seed>.<ev>.json
(clapp eval reports: per probe the mean and sd over probe seeds). Every point of
a curve is the mean over encoder seeds of the per-seed accuracy (itself the mean
over probe seeds); the error bar is the sd over encoder seeds. Writes
WORK/curves.json, WORK/curves.png and prints a markdown table of the last
snapshot and of the best snapshot within the budget."""
import argparse
import json
import os
import statistics


def load(path):
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def snapshots(work, run):
    """{k: (minutes, hours of audio)} from the run's metrics."""
    out = {}
    path = os.path.join(work, "train", run, "train.jsonl")
    if not os.path.exists(path):
        return out
    for line in open(path):
        try:
            r = json.loads(line)
        except ValueError:
            continue
        if r.get("event") == "snapshot":
            out[int(r["k"])] = (r["seconds"] / 60.0, r["media_seconds"] / 3600.0)
    return out


def mean_sd(xs):
    if not xs:
        return None, None
    return statistics.mean(xs), (statistics.stdev(xs) if len(xs) > 1 else 0.0)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("work")
    ap.add_argument("--minutes", type=float, required=True)
    ap.add_argument("--snapshots", type=int, required=True)
    ap.add_argument("--seeds", required=True)
    ap.add_argument("--encoders", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--evals", required=True)
    ap.add_argument("--random-of", default="",
                    help="ENC:NAME ... the baseline of each encoder: WORK/eval/NAME-s<seed>.<ev>.json "
                         "(default: random for every encoder)")
    ap.add_argument("--title", default="Phoneme probes")
    ap.add_argument("--plot-encoders", default="",
                    help="ENC ... draw only these encoders' curves (default: all; the table has all)")
    ap.add_argument("--png", default="curves.png", help="plot file name inside WORK (default curves.png)")
    a = ap.parse_args()
    seeds, encs, datas, evals = a.seeds.split(), a.encoders.split(), a.data.split(), a.evals.split()
    ev_dir = os.path.join(a.work, "eval")

    base_of = dict(x.split(":", 1) for x in a.random_of.split())
    for enc in encs:
        base_of.setdefault(enc, "random")
    curves = []
    random = {}   # (baseline name, eval, element) -> mean, sd over encoder seeds
    for name in sorted(set(base_of.values())):
        for ev in evals:
            per, probe_sd, by_seed = {}, {}, {}
            for s in seeds:
                r = load(os.path.join(ev_dir, "%s-s%s.%s.json" % (name, s, ev)))
                if not r:
                    continue
                for p in r["probes"].values():
                    per.setdefault(p["element"], []).append(p["accuracy"])
                    by_seed.setdefault(p["element"], {})[s] = p["accuracy"]
                    probe_sd.setdefault(p["element"], []).append(p["sd"])
            for el, xs in per.items():
                m, sd = mean_sd(xs)
                random[(name, ev, el)] = {"mean": m, "sd": sd, "seeds": xs, "probe_sd": max(probe_sd[el]),
                                          "by_seed": by_seed[el]}
    for data in datas:
        for enc in encs:
            points = {}
            for s in seeds:
                run = "%s-%s-s%s" % (data, enc, s)
                snaps = snapshots(a.work, run)
                for k in range(1, a.snapshots + 1):
                    for ev in evals:
                        r = load(os.path.join(ev_dir, "%s-snap%d.%s.json" % (run, k, ev)))
                        if not r or k not in snaps:
                            continue
                        for name, p in r["probes"].items():
                            pt = points.setdefault((ev, p["element"], k), {"acc": [], "min": [], "hours": [], "by_seed": {},
                                                                             "probe_sd": []})
                            pt["acc"].append(p["accuracy"])
                            pt["by_seed"][s] = p["accuracy"]
                            pt["probe_sd"].append(p["sd"])
                            pt["min"].append(snaps[k][0])
                            pt["hours"].append(snaps[k][1])
            for (ev, el, k), pt in sorted(points.items()):
                m, sd = mean_sd(pt["acc"])
                base = random.get((base_of[enc], ev, el))
                # the gain of each encoder seed over the random init it started from (same seed)
                paired = [pt["by_seed"][s] - base["by_seed"][s] for s in seeds
                          if base and s in pt["by_seed"] and s in base["by_seed"]]
                gm, gsd = mean_sd(paired)
                curves.append({"data": data, "encoder": enc, "element": el, "eval": ev, "snapshot": k,
                               "minutes": statistics.mean(pt["min"]), "hours": statistics.mean(pt["hours"]),
                               "accuracy": m, "sd": sd, "seeds": pt["acc"], "probe_sd": max(pt["probe_sd"]),
                               "random": base["mean"] if base else None,
                               "gain": (m - base["mean"]) if base else None,
                               "paired_gain": gm, "paired_gain_sd": gsd, "paired_seeds": len(paired)})
    with open(os.path.join(a.work, "curves.json"), "w") as f:
        json.dump({"curves": curves,
                   "random": [dict(name=k[0], eval=k[1], element=k[2], **v) for k, v in random.items()],
                   "minutes": a.minutes, "snapshots": a.snapshots, "seeds": seeds}, f, indent=1)

    def cell(c):
        if c is None:
            return ""
        g = "" if c["gain"] is None else " (%+.1f)" % (100 * c["gain"])
        if c["paired_seeds"] > 1:
            g = " (%+.1f ± %.1f)" % (100 * c["paired_gain"], 100 * c["paired_gain_sd"])
        if len(c["seeds"]) < 2:   # no spread to show: say how many seeds there are
            return "%.1f (1 seed)%s" % (100 * c["accuracy"], g)
        return "%.1f ± %.1f%s" % (100 * c["accuracy"], 100 * c["sd"], g)

    print("%s: accuracy %% (mean ± sd over %d encoder seeds; in brackets the gain over the random-init encoder "
          "of the same architecture: mean ± sd over seeds of each seed's gain over its own initialisation), "
          "budget %g min" % (a.title, len(seeds), a.minutes))
    print()
    for which in ("last", "best"):
        print("%s snapshot%s:" % ("Last" if which == "last" else "Best",
                                 "" if which == "last" else " within the budget (by the mean over seeds)"))
        print()
        print("| trained on | encoder | probe on | " + " | ".join(evals) + " |")
        print("|---" * (3 + len(evals)) + "|")
        for name, el in sorted({(k[0], k[2]) for k in random}):
            cells = []
            for ev in evals:
                r = random.get((name, ev, el))
                cells.append(("%.1f ± %.1f" % (100 * r["mean"], 100 * r["sd"]) if len(r["seeds"]) > 1 else
                              "%.1f (1 seed)" % (100 * r["mean"])) if r else "")
            print("| — | %s (random init) | %s | %s |" % (name, el, " | ".join(cells)))
        for data in datas:
            for enc in encs:
                for el in sorted({c["element"] for c in curves if c["encoder"] == enc and c["data"] == data}):
                    cells = []
                    for ev in evals:
                        cs = [c for c in curves if (c["data"], c["encoder"], c["element"], c["eval"]) ==
                              (data, enc, el, ev)]
                        if not cs:
                            cells.append("")
                            continue
                        pick = max(cs, key=lambda c: c["snapshot"]) if which == "last" else \
                            max(cs, key=lambda c: c["accuracy"])
                        cells.append(cell(pick) + ("" if which == "last" else " @%.0f min" % pick["minutes"]))
                    print("| %s | %s | %s | %s |" % (data, enc, el, " | ".join(cells)))
        print()

    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("(no matplotlib: no plot)")
        return
    fig, axes = plt.subplots(2, len(evals), figsize=(6 * len(evals), 9), squeeze=False)
    for col, ev in enumerate(evals):
        for row, xkey in enumerate(("minutes", "hours")):
            ax = axes[row][col]
            for (name, e2, el), r in sorted(random.items()):
                if e2 == ev:
                    ax.axhline(100 * r["mean"], ls="--", lw=1, color="gray")
                    ax.text(0.01, 100 * r["mean"], "%s %s" % (name, el), va="bottom", fontsize=7, color="gray",
                            transform=ax.get_yaxis_transform())
            shown = set(a.plot_encoders.split()) or set(encs)
            keys = sorted({(c["data"], c["encoder"], c["element"]) for c in curves
                           if c["eval"] == ev and c["encoder"] in shown})
            colors = plt.get_cmap("tab20").colors
            for i, key in enumerate(keys):
                cs = sorted((c for c in curves if c["eval"] == ev and (c["data"], c["encoder"], c["element"]) == key),
                            key=lambda c: c["snapshot"])
                # every curve starts at its random init (0 minutes, 0 hours)
                x0, y0, e0 = ([0.0], [100 * cs[0]["random"]], [0.0]) if cs[0]["random"] is not None else ([], [], [])
                ax.errorbar(x0 + [c[xkey] for c in cs], y0 + [100 * c["accuracy"] for c in cs],
                            yerr=e0 + [100 * c["sd"] for c in cs], marker="o", ms=3, capsize=2,
                            color=colors[i % len(colors)], ls="-" if key[2] != "gru" else "--",
                            label="%s: %s @ %s" % key)
            ax.set_xlabel("training minutes" if xkey == "minutes" else "hours of media seen")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title("%s — %s" % (a.title, ev))
            ax.set_xlim(left=0)
            ax.grid(alpha=0.3)
            if row == 0:
                ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(os.path.join(a.work, a.png), dpi=90)
    print("plot: %s" % os.path.join(a.work, a.png))


if __name__ == "__main__":
    main()
