"""blogrr_benchmark: threshold rules against brute force, and a --quick run whose table blogrr_evaluate confirms."""
from __future__ import annotations

import csv
import json
import os
import shutil

import numpy as np
import pytest

from blogrr_nnu.benchmarks.methods import thresholds as T
from blogrr_nnu.benchmarks.methods import report as R
from blogrr_nnu.commands.benchmark import main as benchmark_main
from blogrr_nnu.commands.evaluate import main as evaluate_main
from blogrr_nnu.planners.api import plan_and_preprocess
from template_cases import write_template_dataset

DATASET = "Dataset984_BenchTiny"


def _brute_dice(amap, target, t):
    p, g = amap > t, target > 0
    return 1.0 if p.sum() + g.sum() == 0 else 2 * (p & g).sum() / (p.sum() + g.sum())


def test_dice_curves_match_thresholding_voxel_by_voxel():
    rng = np.random.default_rng(0)
    amap = rng.gamma(2.0, 1.0, (12, 10, 9))
    amap[:2] = -np.inf  # outside the brain: never above a threshold
    target = np.zeros(amap.shape, bool)
    target[4:8, 3:7, 2:6] = True
    amap[target] += 1.5
    target[0, 0, 0] = True  # a label voxel outside the brain can never be found
    cv = T.CaseValues.from_arrays(amap, target)
    ts = np.array([-1.0, 0.0, 0.7, 1.9, 2.5, 3.33, 5.0, 99.0])
    assert np.allclose(cv.dice(ts), [_brute_dice(amap, target, t) for t in ts], rtol=0, atol=1e-12)
    # both empty is a perfect case, as blogrr_evaluate scores it
    assert T.CaseValues.from_arrays(amap, np.zeros_like(target)).dice(np.array([1e9]))[0] == 1.0


def test_label_free_rules_hit_their_rates_and_oracles_dominate():
    rng = np.random.default_rng(1)
    healthy = [T.CaseValues.from_arrays(rng.normal(0, s, 4000)) for s in (1.0, 2.0)]
    t1 = T.fpr_threshold(healthy, 0.01)
    assert abs(T.false_positive_rate(healthy, t1) - 0.01) < 1e-3
    # the per-case rule weighs both cases alike; the pooled percentile counts voxels (same sizes here: close)
    pooled = np.concatenate([h.values for h in healthy])
    assert np.mean(pooled > T.percentile(healthy, 99.0)) == pytest.approx(0.01, abs=1e-3)
    cases = []
    for shift in (1.0, 3.0, 6.0):
        a = rng.normal(0, 1, (20, 20, 20))
        g = np.zeros(a.shape, bool)
        g[5:12, 5:12, 5:12] = True
        a[g] += shift
        cases.append(T.CaseValues.from_arrays(a, g))
    grid = T.candidate_grid(cases, extra=[t1])
    d = T.dice_matrix(cases, grid)
    ub, i = T.best_global(d, grid)
    per_case = T.per_case_oracle(d, grid)
    assert d[:, i].mean() >= d[:, np.searchsorted(grid, t1)].mean()
    assert all(c.dice(np.array([t]))[0] >= c.dice(np.array([ub]))[0] for c, t in zip(cases, per_case))
    assert len(set(np.round(per_case, 6))) > 1  # cases with different contrast want different thresholds


def test_wilcoxon_p_value_edge_cases():
    assert T.wilcoxon_p([0.5, 0.6, 0.7], [0.5, 0.6, 0.7]) == 1.0
    assert np.isnan(T.wilcoxon_p([0.5], [0.4]))
    better = np.linspace(0.6, 0.9, 12)
    assert T.wilcoxon_p(better, better - 0.1 - np.linspace(0, 0.05, 12)) < 0.01


def test_range_ratio_and_how_far_one_case_moves_it():
    # the widest oracle tau (3.0) belongs to a case T gives 1.5: without it the oracle range halves
    ratio, drop = R._range_ratio([1.0, 1.2, 1.4, 1.5], [0.5, 1.0, 1.5, 3.0])
    assert ratio == pytest.approx(0.5 / 2.5)
    assert drop == pytest.approx([0.3 / 2.0, 0.4 / 1.0])  # leaving out the first case / the last case
    assert R._range_ratio([1.0, 2.0], [1.0, 1.0]) == (None, None)  # every case wants the same tau
    assert R._range_ratio([1.0, 2.0], [1.0, 3.0]) == (0.5, None)  # two cases: nothing to leave out
    # optima spread twice as far (in log) as T's taus around the same line: slope 2; and T's own scale: 1
    e = np.exp(1.0)
    assert R._log_slope([1.0, e, e * e], [0.5, 0.5 * e ** 2, 0.5 * e ** 4]) == pytest.approx(2.0)
    assert R._log_slope([1.0, 2.0, 4.0], [3.0, 6.0, 12.0]) == pytest.approx(1.0)
    assert R._log_slope([1.0, 1.0, 1.0], [1.0, 2.0, 3.0]) is None  # a constant T has no scale


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("bench")
    write_template_dataset(root / "raw", name=DATASET, n_healthy=5, n_tumor=5, n_test=3, spacing=6.0, seed=7)
    plan_and_preprocess(DATASET, ["3d_cpu"], raw=str(root / "raw"), preprocessed=str(root / "pre"), num_processes=2)
    md = root / "out" / "bench.md"
    md.parent.mkdir()
    md.write_text("# My benchmark\n\nHand-written reading above.\n\n<!-- blogrr_benchmark:begin -->\nold\n"
                  "<!-- blogrr_benchmark:end -->\n\nHand-written text below.\n")
    argv = ["-d", DATASET, "--quick", "-device", "cpu", "--raw", str(root / "raw"), "--preprocessed", str(root / "pre"),
            "--results", str(root / "res"), "-o", str(md)]
    assert benchmark_main(argv) == 0
    return root, md, argv


def _rows(md):
    with open(md.with_suffix(".csv")) as fh:
        return {r["row"]: r for r in csv.DictReader(fh)}


def test_quick_table_equals_blogrr_evaluate_on_the_same_masks(quick_run, tmp_path):
    root, md, _ = quick_run
    rows = _rows(md)
    expected = {"blogrr", "blogrr_gmm", "blogrr_fused", "blogrr_stats", "blogrr_reference", "dae_sb_p99", "dae_sb_p95", "dae_sb_fpr1",
                "dae_sb_fpr5", "dae_ub", "dae_oracle_case", "blogrr_oracle_case", "blogrr_reference_oracle_case", "cgc",
                "cgc_fused", "supervised", "supervised_10x", "gmm", "intensity_flair_ub", "intensity_flair_oracle_case",
                "intensity_flair_sb_p99", "blogrr_plain", "blogrr_plain_oracle_case", "dae_normative_sb_p99",
                "dae_normative_oracle_case"}
    assert expected <= set(rows)
    text = md.read_text()
    for key, row in rows.items():
        out = tmp_path / f"{key}.json"
        assert evaluate_main(["-ref", str(root / "raw" / DATASET / "labelsTs"), "-pred", row["masks"], "-o", str(out),
                              "--csv", str(tmp_path / f"{key}.csv")]) == 0
        metrics = json.loads(out.read_text())["summary"]["metrics"]
        assert float(row["dice_mean"]) == pytest.approx(metrics["dice"]["mean"], abs=1e-12), key
        assert float(row["dice_std"]) == pytest.approx(metrics["dice"]["std"], abs=1e-12), key
        if metrics["hd95_mm"]["mean"] is not None:
            assert float(row["hd95_mean_mm"]) == pytest.approx(metrics["hd95_mm"]["mean"], abs=1e-9), key
        # the Markdown row shows the same numbers
        shown = f"{metrics['dice']['mean']:.3f} ± {metrics['dice']['std']:.3f} | "
        assert any(f"`{key}`" in line and shown in line for line in text.splitlines()), key
    # hand-written text around the generated block is kept; the old block is replaced
    assert "Hand-written reading above." in text and "Hand-written text below." in text and "\nold\n" not in text
    # the plot: two panels (reconstruction maps, intensities) at 110 dpi, a curve in each family's colour
    import matplotlib.image as mpimg
    from matplotlib.colors import to_rgb

    img = mpimg.imread(md.with_name("bench_sensitivity.png"))[..., :3]
    assert img.shape[:2] == (round(R.PLOT_HEIGHT_IN * 110), round(2 * 6.5 * 110))
    data = json.loads(md.with_suffix(".json").read_text())["result"]
    n_recon = sum(not c["group"].startswith("intensity") for c in data["curves"])
    import matplotlib.pyplot as plt

    with plt.style.context("default"):  # as the plot is drawn (nnU-Net restyles matplotlib process-wide)
        colours = [to_rgb(f"C{i}") for i in range(n_recon)]
    for i, rgb in enumerate(colours):
        assert (np.abs(img - np.asarray(rgb)).max(-1) < 0.05).sum() > 50, f"no curve in colour C{i}"


def test_quick_oracle_rows_dominate_their_twins(quick_run):
    root, md, _ = quick_run
    data = json.loads(md.with_suffix(".json").read_text())["result"]
    rows = {r["key"]: r for r in data["rows"]}
    checked = 0
    for r in rows.values():
        for twin in r["twins"]:
            for case in data["test_cases"]:
                assert r["per_case"][case]["dice"] >= rows[twin]["per_case"][case]["dice"] - 1e-12 or \
                    r["key"].endswith("_ub"), (r["key"], twin, case)
            assert r["summary"]["dice"]["mean"] >= rows[twin]["summary"]["dice"]["mean"] - 1e-12, (r["key"], twin)
            checked += 1
    assert checked >= 8  # DAE: UB vs 4 SB rules, per-case vs UB; FLAIR and each BLOGRR: per-case vs UB
    # the sensitivity curve (computed on sorted values) agrees with the scored UB masks
    for curve in data["curves"]:
        i = int(np.argmin(np.abs(np.asarray(curve["thresholds"]) - curve["ub"])))
        assert curve["mean_dice"][i] == pytest.approx(rows[f"{curve['group']}_ub"]["summary"]["dice"]["mean"],
                                                      abs=1e-12)
    # how much BLOGRR's tau adapts, recomputed from the files a user has: the predictor's per-case tau (its JSON)
    # and every case's best threshold found by thresholding the written native map against the label
    from scipy.stats import spearmanr

    from blogrr_nnu.image_io import read_image

    derived = json.loads(md.with_suffix(".json").read_text())["derived"]
    raw = root / "raw" / DATASET
    work = root / "res" / DATASET / "benchmark" / "quick" / "3d_cpu_fold0" / "predictions"
    for f in derived["fractions"]:
        pred = work / f["key"] / "anomaly_maps"
        grid = next(c for c in data["curves"] if c["group"] == f["key"])["thresholds"]
        learned, oracle = [], []
        for case in data["test_cases"]:
            learned.append(json.loads((pred / f"{case}.json").read_text())["tau"])
            amap = read_image(pred / f"{case}_anomaly.nii.gz")[0]
            brain = np.any(np.stack([read_image(p)[0] != 0 for p in (raw / "imagesTs").glob(f"{case}_*.nii.gz")]), 0)
            label = read_image(raw / "labelsTs" / f"{case}.nii.gz")[0] > 0
            dice = [_brute_dice(np.where(brain, amap, -np.inf), label, t) for t in grid]
            oracle.append(grid[int(np.argmax(dice))])
        assert f["learned_tau_range"] == pytest.approx([min(learned), max(learned)], abs=1e-6)
        assert f["oracle_tau_range"] == pytest.approx([min(oracle), max(oracle)], abs=1e-9)
        if np.ptp(oracle) > 0:
            assert f["range_ratio"] == pytest.approx(np.ptp(learned) / np.ptp(oracle), rel=1e-6)
            drop = [np.ptp(learned[:i] + learned[i + 1:]) / np.ptp(oracle[:i] + oracle[i + 1:])
                    for i in range(len(oracle)) if np.ptp(oracle[:i] + oracle[i + 1:]) > 0]
            assert f["range_ratio_drop_one"] == pytest.approx([min(drop), max(drop)], rel=1e-6)
        if min(learned + oracle) > 0 and np.ptp(oracle) > 0:
            assert f["tau_spread_ratio"] == pytest.approx(np.std(np.log(learned)) / np.std(np.log(oracle)), rel=1e-6)
        if min(learned + oracle) > 0 and np.ptp(learned) > 0:
            assert f["oracle_on_learned_slope"] == pytest.approx(np.polyfit(np.log(learned), np.log(oracle), 1)[0],
                                                                 rel=1e-6)
        # the per-case CSV carries both taus of every case (what a user checks a single case with)
        with open(md.parent / f"{md.stem}_per_case.csv") as fh:
            tau = {(r["case"], r["row"]): float(r["tau"]) for r in csv.DictReader(fh) if r["tau"]}
        assert [tau[c, f["key"]] for c in data["test_cases"]] == pytest.approx(learned, abs=1e-6)
        assert [tau[c, f"{f['key']}_oracle_case"] for c in data["test_cases"]] == pytest.approx(oracle, abs=1e-9)
        if f.get("spearman_learned_vs_oracle") is not None:
            assert f["spearman_learned_vs_oracle"] == pytest.approx(spearmanr(learned, oracle).statistic, abs=1e-9)
    assert rows["dae_ub"]["taus"][data["test_cases"][0]] == pytest.approx(
        next(c for c in data["curves"] if c["group"] == "dae")["ub"])


def test_rerun_reuses_runs_and_refuses_a_dataset_without_test_labels(quick_run, tmp_path, capsys):
    root, md, argv = quick_run
    md2 = tmp_path / "again.md"
    argv2 = [a if a != str(md) else str(md2) for a in argv] + ["--methods", "dae", "supervised"]
    bench = root / "res" / DATASET / "benchmark"
    dae_ckpt = bench / "quick_results" / DATASET / "DAETrainer__blogrr_plans__3d_cpu" / "fold_0" / "checkpoint_final.pth"
    preds = bench / "quick" / "3d_cpu_fold0" / "predictions"
    (test_id,) = [p.name[: -len("_0000.nii.gz")] for p in (root / "raw" / DATASET / "imagesTs").glob("*_0000.nii.gz")][:1]
    before = {k: (preds / k / f"{test_id}.nii.gz").stat().st_mtime_ns for k in ("dae", "supervised")}
    os.utime(dae_ckpt)  # as if the DAE had been retrained: its cached predictions must not be reused
    env = {k: os.environ.get(k) for k in ("BLOGRR_raw", "BLOGRR_preprocessed", "BLOGRR_results")}
    assert benchmark_main(argv2) == 0
    assert {k: os.environ.get(k) for k in env} == env  # the caller's environment is left as it was
    after = {k: (preds / k / f"{test_id}.nii.gz").stat().st_mtime_ns for k in ("dae", "supervised")}
    assert after["dae"] > before["dae"] and after["supervised"] == before["supervised"]
    data = json.loads(md2.with_suffix(".json").read_text())["result"]
    assert not data["timing"]["dae"]["trained_now"] and not data["timing"]["supervised"]["trained_now"]
    first = {r["row"]: r for r in _rows(md).values()}
    for key, row in _rows(md2).items():
        assert row["dice_mean"] == first[key]["dice_mean"], key
    raw2 = tmp_path / "raw"
    shutil.copytree(root / "raw" / DATASET, raw2 / DATASET)
    shutil.rmtree(raw2 / DATASET / "labelsTs")
    bad = [a if a != str(root / "raw") else str(raw2) for a in argv2]
    capsys.readouterr()
    assert benchmark_main(bad) == 2
    err = capsys.readouterr().err
    assert "no test case with a label" in err and "labelsTs" in err


def test_pooled_table_across_datasets_by_hand():
    from scipy.stats import wilcoxon

    from blogrr_nnu.benchmarks.methods.seeds import pooled

    def run(name, dice):  # dice: row -> per-case Dice
        cases = [f"{name}_{i}" for i in range(len(next(iter(dice.values()))))]
        rows = [{"key": k, "label": k, "oracle": k.endswith("oracle_case"),
                 "per_case": {c: {"dice": d} for c, d in zip(cases, v)}} for k, v in dice.items()]
        return {"dataset": name, "result": {"rows": rows, "test_cases": cases}, "derived": {"ours": "blogrr"}}

    a = run("A", {"blogrr": [0.8, 0.7, 0.6], "dae_sb_p99": [0.6, 0.65, 0.5], "supervised_10x": [0.9, 0.9, 0.9]})
    b = run("B", {"blogrr": [0.5, 0.9, 0.7, 0.8, 0.75], "dae_sb_p99": [0.55, 0.7, 0.6, 0.7, 0.72],
                  "supervised_10x": [0.85, 0.95, 0.9, 0.9, 0.9], "only_in_b": [0.1] * 5})
    p = pooled([a, b], "blogrr")
    rows = {r["key"]: r for r in p["rows"]}
    assert set(rows) == {"blogrr", "dae_sb_p99", "supervised_10x"}  # rows present on every dataset only
    r = rows["blogrr"]
    assert r["per_dataset"] == pytest.approx([0.7, 0.73]) and r["mean_of_means"] == pytest.approx(0.715)
    assert r["range"] == pytest.approx(0.03) and r["n_cases"] == 8
    assert r["pooled_dice"] == pytest.approx(np.mean([0.8, 0.7, 0.6, 0.5, 0.9, 0.7, 0.8, 0.75]))
    ceiling = np.mean([0.9, 0.9, 0.9, 0.85, 0.95, 0.9, 0.9, 0.9])
    assert r["fraction_of_ceiling"] == pytest.approx(r["pooled_dice"] / ceiling)
    ours = [0.8, 0.7, 0.6, 0.5, 0.9, 0.7, 0.8, 0.75]
    dae = [0.6, 0.65, 0.5, 0.55, 0.7, 0.6, 0.7, 0.72]
    assert rows["dae_sb_p99"]["p_vs_ours"] == pytest.approx(wilcoxon(ours, dae).pvalue)
    assert r["p_vs_ours"] is None


def test_intensity_baseline_channels_are_found_by_name():
    from blogrr_nnu.benchmarks.methods.comparison import intensity_channels

    assert intensity_channels({"0": "T1", "1": "T2", "2": "FLAIR"}) == [(2, "FLAIR"), (1, "T2")]
    assert intensity_channels({"0": "T1w", "1": "T2-FLAIR", "2": "t2w"}) == [(1, "T2-FLAIR"), (2, "t2w")]
    assert intensity_channels({"0": "T1", "1": "T1ce"}) == []


@pytest.mark.slow
def test_label_free_rows_do_not_depend_on_the_test_labels(quick_run, tmp_path):
    """Everything again from scratch with every test label replaced (one emptied, the others mirrored along the first
    axis and grown, so place, size and emptiness all change; same grids): the masks of every row that claims to use
    no test label are bit-identical."""
    from scipy import ndimage

    from blogrr_nnu.image_io import read_image, write_image

    root, md, _ = quick_run
    raw2 = tmp_path / "raw"
    shutil.copytree(root / "raw" / DATASET, raw2 / DATASET)
    for i, p in enumerate(sorted((raw2 / DATASET / "labelsTs").glob("*.nii.gz"))):
        data, geo = read_image(p)
        new = np.zeros_like(data) if i == 0 else ndimage.binary_dilation(np.flip(data, 0) > 0, iterations=i)
        write_image(p, np.ascontiguousarray(new.astype(data.dtype)), geo)
    plan_and_preprocess(DATASET, ["3d_cpu"], raw=str(raw2), preprocessed=str(tmp_path / "pre"), num_processes=2)
    md2 = tmp_path / "perm.md"
    assert benchmark_main(["-d", DATASET, "--quick", "-device", "cpu", "--raw", str(raw2), "--preprocessed",
                           str(tmp_path / "pre"), "--results", str(tmp_path / "res"), "-o", str(md2)]) == 0
    first = {r["key"]: r for r in json.loads(md.with_suffix(".json").read_text())["result"]["rows"]}
    second = {r["key"]: r for r in json.loads(md2.with_suffix(".json").read_text())["result"]["rows"]}
    # label-free: not an oracle, and not full supervision (which uses training labels and nnU-Net's unseeded trainer)
    label_free = [k for k, r in first.items() if not r["oracle"] and not k.startswith("supervised")]
    assert {"blogrr", "blogrr_reference", "dae_sb_p99", "cgc_fused", "gmm", "intensity_flair_sb_p99"} <= set(label_free)
    cases = json.loads(md.with_suffix(".json").read_text())["result"]["test_cases"]
    for k in label_free:
        for c in cases:
            a = read_image(f"{first[k]['folder']}/{c}.nii.gz")[0]
            b = read_image(f"{second[k]['folder']}/{c}.nii.gz")[0]
            assert np.array_equal(a, b), (k, c)
    # ... while the rows that do read the test labels moved
    assert any(first[k]["taus"] != second[k]["taus"] for k in first if k.endswith("_oracle_case"))


def test_healthy_scans_with_other_channels_are_refused_before_any_training(tmp_path):
    """The SB rows predict healthy cases with the tumour scans' channel numbering: a dataset whose healthy scans
    have other channels must stop at once with the file and the way out, not fail after hours of training."""
    from blogrr_nnu.benchmarks.methods.comparison import Setting
    from blogrr_nnu.benchmarks.methods.suite import run_benchmark

    raw = tmp_path / "Dataset990_Mixed"
    raw.mkdir()
    (raw / "dataset.json").write_text(json.dumps({
        "channel_names": {"0": "T1", "1": "T2", "2": "FLAIR"}, "channel_names_healthy": {"0": "T1", "1": "T2", "2": "PD"},
        "file_ending": ".nii.gz"}))
    s = Setting(dataset=raw.name, configuration="3d_cpu", fold="0", methods=["dae"], raw=raw,
                preprocessed=tmp_path / "missing", work=tmp_path / "work")
    with pytest.raises(ValueError, match=r"dataset.json: healthy scans have other channels.*same channels"):
        run_benchmark(s)
    assert not (tmp_path / "work").exists()
