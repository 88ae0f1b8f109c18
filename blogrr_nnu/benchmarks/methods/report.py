"""Tables, CSV, the threshold-sensitivity plot and the Markdown page of ``blogrr_benchmark``."""
from __future__ import annotations

import csv
import io
import json
import math
from pathlib import Path

import numpy as np

from blogrr_nnu.benchmarks.common import _plain, render_tables, table
from blogrr_nnu.benchmarks.methods.thresholds import wilcoxon_p
from blogrr_nnu.image_io import atomic_write

BEGIN, END = "<!-- blogrr_benchmark:begin -->", "<!-- blogrr_benchmark:end -->"
PLOT_HEIGHT_IN = 7.0  # room for the legends below the two panels
BLOGRR_KEYS = ("blogrr", "blogrr_plain", "blogrr_gmm", "blogrr_fused", "blogrr_stats", "blogrr_reference")
CEILING = "supervised_10x"  # label-free rows are reported as fractions of the converged full supervision


def _pm(stat: dict, digits: int) -> str:
    if stat["mean"] is None:
        return "-"
    return f"{stat['mean']:.{digits}f} ± {stat['std']:.{digits}f}"


def _p(p: float) -> str:
    if p is None or not math.isfinite(p):
        return "-"
    return (f"{p:.1e}" if p < 1e-3 else f"{p:.3f}") + (" *" if p < 0.05 else "")


def pick_ours(rows: list[dict], requested: str | None) -> str | None:
    """The row the p-values compare against: ``requested``, else the first BLOGRR row present."""
    keys = [r["key"] for r in rows]
    if requested:
        if requested not in keys:
            raise ValueError(f"--ours {requested!r} is not a row of this benchmark (rows: {', '.join(keys)})")
        return requested
    return next((k for k in BLOGRR_KEYS if k in keys), None)


def derive(result: dict, ours: str | None) -> dict:
    """p-values of ``ours`` vs every row (paired per-case Dice), and BLOGRR's fractions of its ceilings."""
    rows = {r["key"]: r for r in result["rows"]}
    cases = result["test_cases"]
    dice = {k: np.asarray([r["per_case"][c]["dice"] for c in cases], float) for k, r in rows.items()}
    p = {k: (wilcoxon_p(dice[ours], d) if ours and k != ours else None) for k, d in dice.items()}
    mean = {k: float(np.mean(d)) for k, d in dice.items()}
    fractions = []
    for k in BLOGRR_KEYS:
        if k not in rows:
            continue
        curve = next((c for c in result["curves"] if c["group"] == k), {})
        f = {"key": k, "label": rows[k]["label"], "dice": mean[k], "learned_raw_dice": curve.get("learned_raw_dice"),
             "oracle_case": mean.get(f"{k}_oracle_case"), "ub": mean.get(f"{k}_ub"),
             "dae_oracle_case": mean.get("dae_oracle_case"), "supervised": mean.get("supervised"),
             CEILING: mean.get(CEILING)}
        for ref in ("oracle_case", "ub", "dae_oracle_case", "supervised", CEILING):
            f[f"fraction_of_{ref}"] = mean[k] / f[ref] if f[ref] else None
        # does T adapt per case? its taus against every case's own best threshold on the same maps
        learned, oracle = curve.get("learned_taus"), rows.get(f"{k}_oracle_case", {}).get("taus")
        if learned and oracle:
            o = [oracle[c] for c in cases]
            f["learned_tau_range"] = [min(learned), max(learned)]
            f["oracle_tau_range"] = [min(o), max(o)]
            f["range_ratio"], f["range_ratio_drop_one"] = _range_ratio(learned, o)
            f["spearman_learned_vs_oracle"] = _spearman(learned, o)
            f["tau_spread_ratio"] = _spread_ratio(learned, o)
            f["oracle_on_learned_slope"] = _log_slope(learned, o)
        fractions.append(f)
    ceiling = {k: (v / mean[CEILING] if mean.get(CEILING) else None) for k, v in mean.items()}
    return {"ours": ours, "p_values": p, "mean_dice": mean, "fractions": fractions, "fraction_of_ceiling": ceiling}


def _spearman(a, b) -> float | None:
    from scipy.stats import spearmanr

    if len(a) < 3 or np.ptp(a) == 0 or np.ptp(b) == 0:
        return None
    return float(spearmanr(a, b).statistic)


def _log_taus(learned, oracle) -> tuple[np.ndarray, np.ndarray] | None:
    """log of both tau lists, or ``None`` where they cannot be compared in log (under 3 cases, a threshold <= 0)."""
    lo, oo = (np.asarray(x, np.float64) for x in (learned, oracle))
    if len(lo) < 3 or min(lo.min(), oo.min()) <= 0:
        return None
    return np.log(lo), np.log(oo)


def _spread_ratio(learned, oracle) -> float | None:
    """sd of log learned tau over sd of log oracle tau: how much of the per-case spread T gives, less driven by
    the two most extreme cases than the ranges are."""
    logs = _log_taus(learned, oracle)
    if logs is None or np.ptp(logs[1]) == 0:
        return None
    return float(logs[0].std() / logs[1].std())


def _log_slope(learned, oracle) -> float | None:
    """Least-squares slope of log oracle tau on log learned tau over the cases: 1 when T's taus spread on the scale
    the cases' optima do, above 1 when T is too flat (compresses), below 1 when it overshoots."""
    logs = _log_taus(learned, oracle)
    if logs is None or np.ptp(logs[0]) == 0:
        return None
    return float(np.polyfit(logs[0], logs[1], 1)[0])


def _range_ratio(learned, oracle) -> tuple[float | None, list[float] | None]:
    """Width of the learned tau range over the width of the per-case oracle range, and its min and max over the
    case sets that leave one test case out: a range hangs on the two most extreme cases, so one case can move it."""
    lo, oo = (np.asarray(x, np.float64) for x in (learned, oracle))
    if np.ptp(oo) == 0:
        return None, None
    keep = [np.arange(len(oo)) != i for i in range(len(oo))] if len(oo) >= 3 else []
    drop = [float(np.ptp(lo[k]) / np.ptp(oo[k])) for k in keep if np.ptp(oo[k]) > 0]
    return float(np.ptp(lo) / np.ptp(oo)), ([min(drop), max(drop)] if drop else None)


def _ratio_with_interval(f) -> str:
    r, d = f.get("range_ratio"), f.get("range_ratio_drop_one")
    return _frac(r) if r is None or not d else f"{r:.2f} ({d[0]:.2f}-{d[1]:.2f})"


def _range(r) -> str:
    return "-" if not r else f"{r[0]:.2f}-{r[1]:.2f}"


def _frac(x) -> str:
    return "-" if x is None else f"{x:.2f}"


def tables(result: dict, derived: dict) -> list[dict]:
    ours = derived["ours"]
    main = []
    for r in result["rows"]:
        m = r["summary"]
        hd = _pm(m["hd95_mm"], 1) + (f" ({m['hd95_mm']['n_nan']} undef.)" if m["hd95_mm"]["n_nan"] else "")
        label = f"**{r['label']}** (ours)" if r["key"] == ours else r["label"]
        main.append([label, _pm(m["dice"], 3), hd, "ref." if r["key"] == ours else _p(derived["p_values"][r["key"]]),
                     _frac(derived.get("fraction_of_ceiling", {}).get(r["key"])), "yes" if r["oracle"] else "",
                     f"`{r['key']}`"])
    out = [table("Test cases: Dice and HD95 (mean ± std over cases)",
                 ["method", "Dice", "HD95 (mm)", f"p vs {ours or '-'} (Wilcoxon, Dice)",
                  "fraction of converged full supervision", "oracle", "row"], main)]
    if derived["fractions"]:
        fr = [[f["label"], f"{f['dice']:.3f}", _frac(f["learned_raw_dice"]), _frac(f["ub"]), _frac(f["oracle_case"]),
               _frac(f["fraction_of_oracle_case"]), _frac(f["fraction_of_dae_oracle_case"]),
               _frac(f["fraction_of_supervised"]), _frac(f[f"fraction_of_{CEILING}"]), _range(f.get("learned_tau_range")),
               _range(f.get("oracle_tau_range")), _ratio_with_interval(f), _frac(f.get("tau_spread_ratio")),
               _frac(f.get("oracle_on_learned_slope")), _frac(f.get("spearman_learned_vs_oracle"))] for f in derived["fractions"]]
        out.append(table("BLOGRR against its ceilings (mean Dice) and how much its τ adapts per case",
                         ["BLOGRR", "Dice", "learned τ as a plain threshold", "best global τ, same maps",
                          "per-case oracle τ, same maps", "fraction of own per-case oracle",
                          "fraction of DAE per-case oracle", "fraction of full supervision (same budget)",
                          "fraction of converged full supervision", "learned τ range",
                          "per-case oracle τ range",
                          "range ratio, learned / oracle (leaving one case out: min-max)",
                          "τ spread, learned / oracle (sd of log τ)",
                          "slope of log oracle τ on log learned τ (1: T's scale right; > 1: too flat)",
                          "Spearman ρ (learned vs oracle τ)"], fr))
    tm = result["timing"]
    stock = tm.get("supervised")
    trow = []
    for k, t in tm.items():
        per_it = t.get("seconds_per_iteration")
        ratio_it = per_it / stock["seconds_per_iteration"] if stock and per_it else None
        ratio_tr = t["seconds"] / stock["seconds"] if stock and t.get("seconds") else None
        ratio_pr = t["predict_seconds_per_case"] / stock["predict_seconds_per_case"] if stock else None
        trow.append([k, "yes" if t.get("trained_now") else ("no (reused)" if "seconds" in t else "-"),
                     f"{t['seconds']:.0f}" if "seconds" in t else "-", t.get("iterations", "-"),
                     f"{per_it:.3f}" if per_it else "-", _frac(ratio_it), _frac(ratio_tr),
                     f"{t['predict_seconds_per_case']:.2f}", _frac(ratio_pr)])
    for k, t in tm.items():
        c = t.get("val_ema_dice")
        if c:
            trow.append([k, f"(nnU-Net's validation pseudo-Dice, EMA: {c['half']:.3f} at half of its training, "
                            f"{c['end']:.3f} at the end, best {c['max']:.3f})"] + [""] * 7)
    out.append(table("Time (training from each run's checkpoint; prediction: median seconds per test case)",
                     ["method", "trained in this run", "train s", "training iterations", "s / iteration",
                      "per-iteration ratio to stock nnU-Net", "train-time ratio to stock nnU-Net", "predict s / case",
                      "predict ratio to stock nnU-Net"], trow))
    return out


def sensitivity_plot(result: dict, derived: dict, path: Path) -> Path:
    """Mean Dice vs one global threshold per family of maps; BLOGRR's learned per-case taus marked."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    recon = [c for c in result["curves"] if not c["group"].startswith("intensity")]
    inten = [c for c in result["curves"] if c["group"].startswith("intensity")]
    panels = [p for p in (recon, inten) if p]
    # nnU-Net's progress plot calls seaborn.set(font_scale=2.5) for the whole process: draw with defaults
    with plt.style.context("default"):
        fig, axes = plt.subplots(1, len(panels), figsize=(6.5 * len(panels), PLOT_HEIGHT_IN), squeeze=False)
        for ax, curves, xlabel in zip(axes[0], panels, ("global threshold on the anomaly map (normalised units)",
                                                         "global threshold on the intensity (z-score within the brain)")):
            _curves(ax, curves, derived, xlabel)
            if curves is inten:  # below the brain's median every voxel is "tumour": nothing to see there
                ax.set_xlim(left=-1.0)
        fig.suptitle("Threshold sensitivity: mean Dice vs one global threshold. Ticks at the bottom: learned per-case "
                     "τ; dotted: label-free P99 / 1 % FPR", fontsize=9)
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png", dpi=110)
        plt.close(fig)
    atomic_write(path, lambda tmp: Path(tmp).write_bytes(buf.getvalue()))
    return path


def _curves(ax, curves: list[dict], derived: dict, xlabel: str) -> None:
    styles = ("-", "--", "-.")  # dotted is kept for the label-free thresholds' vertical lines
    for i, c in enumerate(curves):
        color = f"C{i}"
        ax.plot(c["thresholds"], c["mean_dice"], color=color, ls=styles[i % len(styles)], lw=1.6, label=c["label"])
        if c.get("learned_taus"):
            lt = np.asarray(c["learned_taus"])
            ax.plot(lt, np.full_like(lt, -0.025 - 0.02 * i), "|", color=color, ms=10, mew=1.5)
            d = derived["mean_dice"].get(c["group"])
            if d is not None:
                ax.plot([lt.mean()], [d], "o", color=color, ms=7,
                        label=f"{c['label']}, learned per-case τ: Dice {d:.2f} (at mean τ)")
        for name, t in c.get("sb", {}).items():
            if name in ("sb_p99", "sb_fpr1"):
                ax.axvline(t, color=color, ls=":", lw=1)
    ax.set_xlabel(xlabel)
    ax.set_ylabel("mean Dice over test cases")
    ax.set_ylim(-0.1, 1.0)
    ax.grid(alpha=0.3)
    # below the axes: inside, the legend of the reconstruction panel covered the curves' peak
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.13), ncol=1, frameon=False)


def _csv_text(header: list[str], rows: list[list]) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def csv_files(result: dict, derived: dict) -> dict[str, str]:
    """name suffix -> CSV text (summary per row, per case, timing)."""
    summary = [[r["key"], r["label"], r["group"], int(r["oracle"]), r["summary"]["dice"]["mean"],
                r["summary"]["dice"]["std"], r["summary"]["hd95_mm"]["mean"], r["summary"]["hd95_mm"]["std"],
                r["summary"]["hd95_mm"]["n_nan"], derived["p_values"][r["key"]], r["folder"]] for r in result["rows"]]
    learned = {c["group"]: dict(zip(result["test_cases"], c["learned_taus"]))
               for c in result["curves"] if c.get("learned_taus")}  # BLOGRR: T's tau of each case
    per_case = [[c, r["key"], r["per_case"][c]["dice"], r["per_case"][c]["hd95_mm"],
                 r.get("taus", learned.get(r["key"], {})).get(c, "")]
                for r in result["rows"] for c in result["test_cases"]]
    timing = [[k, t.get("seconds"), t.get("iterations"), t.get("seconds_per_iteration"), t["predict_seconds_per_case"],
               int(bool(t.get("trained_now")))] for k, t in result["timing"].items()]
    return {"": _csv_text(["row", "method", "group", "oracle", "dice_mean", "dice_std", "hd95_mean_mm", "hd95_std_mm",
                           "hd95_undefined", "p_vs_ours", "masks"], summary),
            "_per_case": _csv_text(["case", "row", "dice", "hd95_mm", "tau"], per_case),
            "_timing": _csv_text(["method", "train_s", "training_iterations", "s_per_iteration", "predict_s_per_case",
                                  "trained_in_this_run"], timing)}


def markdown(result: dict, derived: dict, header: dict, plot_name: str) -> str:
    """The generated block (between the markers)."""
    s = header
    lines = [BEGIN, f"_Generated by `blogrr_benchmark` on {s['date']}; re-running the command replaces this block "
             "only._", "", f"command: `{s['command']}`", "", f"machine: {s['machine']}", "",
             f"dataset {s['dataset']}, configuration {s['configuration']}, fold {s['fold']}, device {s['device']}; "
             f"{len(result['test_cases'])} test cases; label-free (SB) thresholds from "
             f"{len(result['healthy_heldout'])} held-out healthy case(s) of the fold"
             + ("; **--quick** (a few iterations: numbers say nothing about the methods)" if s["quick"] else "") + "."]
    lines.append(render_tables(tables(result, derived)))
    lines += ["", f"![threshold sensitivity]({plot_name})", "",
              "- Every row is a folder of native-grid masks scored with `blogrr_evaluate`'s metrics (paths in the CSV);"
              " HD95 mean over cases where it is defined (an empty prediction has none).",
              "- Oracle rows choose thresholds with the test labels: ceilings, not methods. SB rows use no label.",
              "- Threshold rows are `map > t` without post-processing; trained rows are `blogrr_predict`'s output.",
              "- p: two-sided Wilcoxon signed-rank test on paired per-case Dice (* p < 0.05)."]
    lines += [f"- {n}" for n in result["notes"]]
    return "\n".join(lines + [END])


def write_block(md_path: Path, block: str) -> Path:
    """Write the generated block (``BEGIN`` ... ``END``) into a page, atomically: it replaces the page's earlier
    block and keeps the hand-written text around it; a page without one gets the block appended."""
    old = md_path.read_text() if md_path.is_file() else ""
    if BEGIN in old and END in old:
        text = old[: old.index(BEGIN)] + block + old[old.index(END) + len(END):]
    else:
        text = (old.rstrip() + "\n\n" if old.strip() else "# Benchmark\n\n") + block + "\n"
    return atomic_write(md_path, lambda tmp: Path(tmp).write_text(text))


def write_outputs(result: dict, derived: dict, header: dict, md_path: Path) -> list[Path]:
    """``<name>.md`` (generated block replaced, text around it kept), ``<name>.csv`` (+ per case, timing),
    ``<name>_sensitivity.png`` and ``<name>.json``; all written atomically."""
    md_path = Path(md_path)
    md_path.parent.mkdir(parents=True, exist_ok=True)
    stem = md_path.with_suffix("")
    plot = sensitivity_plot(result, derived, Path(f"{stem}_sensitivity.png"))
    block = markdown(result, derived, header, plot.name)
    written = [write_block(md_path, block), plot]
    for suffix, body in csv_files(result, derived).items():
        written.append(atomic_write(Path(f"{stem}{suffix}.csv"), lambda tmp, b=body: Path(tmp).write_text(b)))
    payload = json.dumps(_plain({"header": header, "result": result, "derived": derived}), indent=1, default=str)
    written.append(atomic_write(Path(f"{stem}.json"), lambda tmp: Path(tmp).write_text(payload)))
    return written
