"""Benchmark helpers: the naive evaluation agrees with the blocked one; the README table builder."""

import json
from pathlib import Path

import numpy as np
import pytest

from benchmarks.pacs import base_config, means_table, regime_text
from benchmarks.retrieval import blocked, make_data, naive, reference


@pytest.mark.parametrize("impl", [naive, reference])
def test_naive_and_blocked_agree(impl):
    a, la, b, lb = make_data(300, 16, 7)
    want = {k: v for k, v in impl(a, la, b, lb, (1, 5, 15)).items() if not k.startswith("seconds")}
    assert 5 < want["mAP"] < 95  # not a degenerate case
    got = blocked(a, la, b, lb, (1, 5, 15))
    assert set(got) == set(want)
    for k, v in want.items():
        assert got[k] == pytest.approx(v, rel=1e-5, abs=1e-4), k


def test_retrieval_summary_prints_the_ratios():
    from benchmarks.retrieval import summary

    rows = [{"impl": "blocked", "seconds": 3.0, "peak_gib": 0.5, "mAP": 50.0},
            {"impl": "blocked-P@k-only", "seconds": 2.0},
            {"impl": "reference", "seconds": 6.0, "seconds_pk": 5.0, "seconds_map": 0.5},
            {"impl": "naive", "skipped": "needs about 9 GiB"}]
    text = "\n".join(summary(rows))
    assert "P@k + mAP takes 1.50x the time of P@k alone" in text and "peak 0.500 GiB" in text
    assert "mAP on top of P@k 1.000 s (the reference's mAP from its argsorted matrix: 0.500 s)" in text
    assert ("reference (numpy argsort, loop over queries; P@k + mAP) 6.000 s: "
            "2.00x the time of blocked P@k + mAP") in text
    assert "2.50x the time of blocked P@k alone" in text and "naive" not in text


def test_means_table_from_results():
    row = {"P@1": 50.0, "P@5": 40.0, "P@15": 30.0, "mAP": 20.0}
    res = {"seed": 0, "results": {"full": {"baseline": {"a->b": row, "b->a": {**row, "P@1": 30.0}}}},
           "seeds": {"1": {"full": {"baseline": {"a->b": row, "b->a": row}}}}}
    text = means_table(res)
    assert "| baseline (seed 1: P@1 50.0, mAP 20.0) | 40.0 | 40.0 | 30.0 | 20.0 |" in text
    assert "mean over 2 directions" in text


def test_means_table_over_chosen_pairs():
    row = {"P@1": 50.0, "P@5": 40.0, "P@15": 30.0, "mAP": 20.0}
    dirs = {"a->b": row, "b->a": row, "a->c": {**row, "P@1": 10.0}, "c->a": {**row, "P@1": 10.0}}
    res = {"seed": 0, "results": {"full": {"baseline": dirs}}}
    text = means_table(res, [("c", "a")])
    assert "| baseline | 10.0 | 40.0 | 30.0 | 20.0 |" in text and "mean over 2 directions of c-a" in text
    with pytest.raises(ValueError):
        means_table(res, [("b", "c")])


def test_regime_text_names_what_trains_and_the_momentum():
    cfg = base_config("../shared/data/pacs")
    text = regime_text(cfg)
    assert f"stem + stages 0-{cfg.trunk_blocks - 1} frozen" in text and f"key momentum {cfg.momentum}" in text
    assert f"{cfg.epochs} epochs" in text and f"{cfg.image_size} px" in text
    assert "end to end" in regime_text(cfg.replace(trunk_blocks=None, cached_views=0))


def test_tables_from_results_protocol_names_each_fact_once(tmp_path):
    from ucdir_core.companion import tables_from_results

    row = {"P@1": 50.0, "P@5": 40.0, "P@15": 30.0, "mAP": 20.0}
    cfg = base_config("../shared/data/pacs")
    res = {"dataset": "pacs", "seed": 0, "config": cfg.to_dict(), "regime": regime_text(cfg),
           "results": {"full": {"full": {"a->b": row}, "baseline": {"a->b": row}}}}
    path = tmp_path / "r.json"
    path.write_text(json.dumps(res))
    protocol, rows = tables_from_results(path)["pacs, split full"]
    assert list(rows) == ["baseline a->b", "full a->b"]
    assert protocol.count(f"{cfg.epochs} epochs") == 1 and protocol.count("last epoch") == 1
    assert "split full" in protocol and "seed 0" in protocol and f"key momentum {cfg.momentum}" in protocol
    del res["regime"]
    path.write_text(json.dumps(res))
    protocol, _ = tables_from_results(path)["pacs, split full"]
    assert f"backbone {cfg.backbone}, {cfg.image_size} px, {cfg.epochs} epochs, last epoch" in protocol


def test_means_table_shows_the_share_of_the_gap_each_row_closes():
    def rows(p1, m):
        return {"a->b": {"P@1": p1, "P@5": 0.0, "P@15": 0.0, "mAP": m}}

    res = {"seed": 0, "results": {"full": {"oracle": rows(90.0, 80.0), "full": rows(60.0, 40.0),
                                           "baseline": rows(50.0, 30.0), "centred": rows(52.0, 31.0)}}}
    text = means_table(res)
    assert "gap closed" in text
    assert "| full | 60.0 | 0.0 | 0.0 | 40.0 | 25 % / 20 % |" in text
    order = [line.split("|")[1].strip() for line in text.splitlines() if line.startswith("| ") and "| row |" not in line]
    assert order == ["baseline", "centred", "full", "oracle"]


def test_end_to_end_config_keeps_the_paper_path_and_its_phase_proportions():
    from benchmarks.pacs import end_to_end_config
    from ucdir_core.config.presets import get_preset

    paper = get_preset("domainnet")
    cfg = end_to_end_config("../shared/data/pacs", ("photo", "sketch"), epochs=10, image_size=64)
    assert cfg.trunk_blocks is None and cfg.head_init == "random" and cfg.mlp and cfg.lr == paper.lr
    assert cfg.freeze_bn and not end_to_end_config("x", freeze_bn=False).freeze_bn
    assert end_to_end_config("x", head_init="pca").head_init == "pca"
    p, q = cfg.method_params, paper.method_params
    assert (p.self_entropy_weight, p.distance_of_distance_weight, p.cluster_contrastive_weight, p.self_entropy_temperature,
            cfg.num_clusters) == (q.self_entropy_weight, q.distance_of_distance_weight, q.cluster_contrastive_weight,
                                  q.self_entropy_temperature, paper.num_clusters)
    assert (p.clustering_start, p.cluster_contrastive_ramp_after, p.cluster_contrastive_ramp_end, p.self_entropy_start,
            p.distance_of_distance_start) == (1, 1, 5, 5, 5)
    assert cfg.image_size == 64 and cfg.epochs == 10


def test_alignment_and_end_to_end_tables():
    from benchmarks.pacs import alignment_table, end_to_end_table

    res = {"seed": 0, "alignment": {"full": {"full": {"a-b": {"domain_mixing": 0.1, "class_agreement": 80.0},
                                                       "a-c": {"domain_mixing": 0.3, "class_agreement": 60.0}},
                                              "baseline": {"a-b": {"domain_mixing": 0.0, "class_agreement": 50.0}}}}}
    text = alignment_table(res)
    assert "| full | 0.200 | 70.0 |" in text and text.index("| baseline") < text.index("| full")
    row = {"P@1": 30.0, "P@5": 20.0, "P@15": 10.0, "mAP": 5.0}
    res["end_to_end"] = {"pair": ["a", "b"], "wall_seconds": 600.0, "results": {"instance": {"a->b": row}},
                         "alignment": {"instance": {"domain_mixing": 0.25}},
                         "config": {"backbone": "x", "image_size": 64, "epochs": 8, "lr": 2e-4, "momentum": 0.99,
                                    "freeze_bn": True, "seed": 0}}
    assert "| instance | 30.0 | 20.0 | 10.0 | 5.0 | 0.250 |" in end_to_end_table(res)


def test_end_to_end_trials_table_groups_runs_and_marks_unfinished_ones():
    from benchmarks.pacs import end_to_end_trials_table

    def run(method, head, p1, epochs_run, epochs=4):
        row = {"a->b": {"P@1": p1, "mAP": 10.0}, "b->a": {"P@1": p1 + 2, "mAP": 20.0}}
        return {"method": method, "head_init": head, "bn": "frozen", "lr": 2e-4, "epochs": epochs,
                "epochs_run": epochs_run, "history": [{"a->b": {"P@1": 0.0, "mAP": 0.0}, "b->a": {"P@1": 0.0, "mAP": 0.0}},
                                                      row]}

    text = end_to_end_trials_table({"runs": [run("instance", "random", 30.0, 4), run("full", "random", 40.0, 4),
                                             run("full", "pca", 50.0, 3)]})
    assert "| random (the reference) | frozen statistics | 0.0002 | 4 | 31.0 / 15.0 | 41.0 / 15.0 |" in text
    assert "| identity + PCA (this project's) | frozen statistics | 0.0002 | 3 of 4 |  | 51.0 / 15.0 |" in text


def test_readme_shows_the_recorded_end_to_end_trials():
    from benchmarks.pacs import end_to_end_trials_table

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "results" / "pacs_end_to_end_gpu.json").read_text())
    assert end_to_end_trials_table(doc) in (root / "docs" / "results.md").read_text()


def test_results_file_regime_matches_the_preset_and_another_regime_is_refused(tmp_path, capsys):
    from benchmarks.pacs import main, regime_differences

    root = Path(__file__).resolve().parents[1]
    cfg = base_config("../shared/data/pacs")
    committed = json.loads((root / "results" / "pacs.json").read_text())["config"]
    assert regime_differences(committed, cfg) == []  # the committed results are the preset's
    assert regime_differences(None, cfg) == []
    other = {**committed, "momentum": 0.5, "lr": 0.1}
    assert regime_differences(other, cfg) == ["lr", "momentum"]
    out = tmp_path / "res.json"
    out.write_text(json.dumps({"config": other, "results": {"full": {}}}))
    before = out.read_bytes()
    assert main(["--root", "../shared/data/pacs", "--out", str(out), "--pairs", "photo-sketch"]) == 2
    assert "another regime (differs in lr, momentum)" in capsys.readouterr().err
    assert out.read_bytes() == before


def test_every_protoot_trial_is_a_valid_config_on_the_tuning_pairs_only():
    from benchmarks.protoot_trials import ART_SKETCH, PHOTO_SKETCH, TRIALS, trial_config

    for name, (_, changes, pairs) in TRIALS.items():
        assert set(pairs) <= {PHOTO_SKETCH, ART_SKETCH}, name  # labels choose on the tuning pairs only
        for pair in pairs:
            cfg = trial_config("pacs", pair, changes)
            assert cfg.method == "protoot" and cfg.domains == pair and cfg.seed == 0, name
    assert trial_config("pacs", PHOTO_SKETCH, {}) == trial_config("pacs", PHOTO_SKETCH, TRIALS["cross_1.0"][1])


def test_protoot_trials_table_and_the_recorded_file():
    from benchmarks.protoot_trials import TRIALS, trials_table

    row = {"mean": {"P@1": 60.0, "mAP": 50.0}, "alignment": {"domain_mixing": 0.01, "class_agreement": 77.0}}
    doc = {"trials": {"cross_0.1": {"description": "weight 0.1", "pairs": {"photo-sketch": row}},
                      "released": {"description": "released", "pairs": {"photo-sketch": row, "art_painting-sketch": row}}}}
    lines = trials_table(doc).splitlines()
    assert lines[2] == "| released | 60.0 / 50.0 | 0.010 / 77.0 | 60.0 / 50.0 | 0.010 / 77.0 |"  # TRIALS order
    assert lines[3] == "| weight 0.1 | 60.0 / 50.0 | 0.010 / 77.0 |  |  |"
    recorded = json.loads((Path(__file__).parents[1] / "results" / "protoot_trials.json").read_text())
    assert set(recorded["trials"]) == set(TRIALS)
    for name, (_, _, pairs) in TRIALS.items():
        assert set(recorded["trials"][name]["pairs"]) == {"-".join(p) for p in pairs}, name


def test_the_results_document_shows_the_recorded_protoot_trials_and_the_readme_links_them():
    from benchmarks.protoot_trials import trials_table

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "results" / "protoot_trials.json").read_text())
    assert trials_table(doc) in (root / "docs" / "results.md").read_text()
    assert "docs/results.md#protoot-trials-on-the-tuning-pairs" in (root / "README.md").read_text()


def test_the_readme_answer_is_computed_from_the_results_file():
    """Every number of the README's answer paragraph comes from results/pacs.json (it cannot drift)."""
    from benchmarks.pacs import answer_paragraph

    root = Path(__file__).resolve().parents[1]
    text = answer_paragraph(json.loads((root / "results" / "pacs.json").read_text()))
    assert " ".join(text.split()) in " ".join((root / "README.md").read_text().split())


def test_the_readme_harmony_answer_is_computed_from_the_results_file():
    """The README's numbers on the alignment stage (both methods and the untrained backbone, with and
    without Harmony, and the class-discovery diagnostic) come from results/pacs.json."""
    from benchmarks.pacs import harmony_paragraph

    root = Path(__file__).resolve().parents[1]
    text = harmony_paragraph(json.loads((root / "results" / "pacs.json").read_text()))
    assert " ".join(text.split()) in " ".join((root / "README.md").read_text().split())


def test_aligned_rows_follow_their_own_rows_in_the_tables():
    from benchmarks.pacs import ALIGNED_ROWS, TABLE_ORDER

    for row, base in ALIGNED_ROWS.items():
        assert TABLE_ORDER.index(row) == TABLE_ORDER.index(base) + 1
    assert TABLE_ORDER[-1] == "oracle"


def test_discovery_table_averages_over_pairs_per_row():
    from benchmarks.pacs import discovery_table

    res = {"seed": 0, "class_discovery": {"full": {
        "full+harmony": {"a-b": {"adjusted_rand": 0.4, "balance": 0.9}, "a-c": {"adjusted_rand": 0.2, "balance": 0.7}},
        "full": {"a-b": {"adjusted_rand": 0.3, "balance": 0.5}, "a-c": {"adjusted_rand": 0.1, "balance": 0.3}}}}}
    text = discovery_table(res)
    assert "mean over 2 pairs" in text
    assert "| full | 0.20 | 0.40 |" in text and "| full+harmony | 0.30 | 0.80 |" in text
    assert text.index("| full |") < text.index("| full+harmony |")


def test_aligned_rows_fit_harmony_with_the_regimes_settings_on_the_right_embeddings(monkeypatch):
    import benchmarks.pacs as bench

    calls = []
    monkeypatch.setattr(bench.C, "compare_alignment", lambda *a: calls.append(("features", a)) or "cmp")
    monkeypatch.setattr(bench.C, "run_alignment", lambda *a: calls.append(("run", a)) or "cmp")
    monkeypatch.setattr(bench, "run_row", lambda cfg, row, runs: calls.append(("trained", row)))
    cfg = base_config("x").replace(domains=("photo", "sketch")).with_overrides(["harmony_theta=2"])
    features = {"train": "TRAIN", "test": "TEST", "test_labels": "LABELS"}
    assert bench.run_aligned_row(cfg, "baseline+harmony", Path("runs"), features) == "cmp"
    kind, (train, test, labels, _, params) = calls.pop()
    assert (kind, train, test, labels) == ("features", "TRAIN", "TEST", "LABELS")
    assert (params.alignment, params.harmony_theta) == ("harmony", 2.0)
    assert bench.run_aligned_row(cfg, "protoot+harmony", Path("runs"), features) == "cmp"
    (_, trained), (kind, (run_dir, params)) = calls
    assert trained == "protoot" and run_dir == Path("runs") / bench.C.run_name(cfg, "protoot")
    assert params.alignment == "harmony"


def _tuning_doc():
    cell = lambda p1, ap, mix: {"P@1": p1, "mAP": ap, "domain_mixing": mix, "class_agreement": 70.0,  # noqa: E731
                                "adjusted_rand": 0.3, "balance": 0.5}
    pairs = ("photo-sketch", "art_painting-sketch")
    return {"none": {p: {"baseline": cell(40, 30, 0.05), "full": cell(50, 40, 0.05), "protoot": cell(55, 42, 0.05)}
                     for p in pairs},
            "settings": {
                "theta 1, K 10, 20 PCs": {p: {"baseline": cell(60, 30, 0.3), "full": cell(48, 41, 0.3),
                                              "protoot": cell(50, 43, 0.3)} for p in pairs},
                "theta 2, K 10, 20 PCs": {p: {"baseline": cell(30, 30, 0.3), "full": cell(52, 40, 0.2),
                                              "protoot": cell(50, 40, 0.2)} for p in pairs}}}


def test_harmony_tuning_chooses_on_the_trained_methods_p1_and_marks_its_choice():
    from benchmarks.harmony_tuning import CHOOSING, GRID, chosen, settings, tuning_table

    doc = _tuning_doc()
    # baseline's P@1 (60 vs 30) chooses nothing; full + protoot: 49 vs 51
    assert CHOOSING == ("full", "protoot") and chosen(doc) == "theta 2, K 10, 20 PCs"
    text = tuning_table(doc)
    assert "| none (as they are) | 40.0 / 30.0 / 0.050 | 50.0 / 40.0 / 0.050 | 55.0 / 42.0 / 0.050 |" in text
    assert "| **theta 2, K 10, 20 PCs (chosen)** |" in text and "| theta 1, K 10, 20 PCs |" in text
    assert len(settings()) == int(np.prod([len(v) for v in GRID.values()]))


def test_the_chosen_harmony_setting_is_the_stage_default_and_its_table_is_in_the_results_document():
    from benchmarks.harmony_tuning import tuning_table
    from ucdir_core.align.params import AlignmentParams

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "results" / "harmony_tuning.json").read_text())
    defaults = AlignmentParams()
    assert {k: getattr(defaults, k) for k in doc["chosen_params"]} == doc["chosen_params"]
    assert doc["pairs"] == ["photo-sketch", "art_painting-sketch"]  # the tuning pairs only
    assert tuning_table(doc) in (root / "docs" / "results.md").read_text()


def test_the_alignment_default_rule_and_its_sentence():
    from benchmarks.alignment_default import decide, pacs_checks, sentence

    row = lambda p1: {"P@1": p1, "mAP": 10.0}  # noqa: E731
    dirs = lambda p1: {"photo->sketch": row(0.0), "sketch->photo": row(0.0), "cartoon->photo": row(p1),  # noqa: E731
                       "photo->cartoon": row(p1)}
    res = {"results": {s: {"full": dirs(50.0), "full+harmony": dirs(48.0)} for s in ("full", "heldout")}}
    checks = pacs_checks(res)
    assert checks["pacs untouched, full"]["P@1"] == 50.0 and checks["pacs untouched, full"]["directions"] == 2
    assert checks["pacs untouched, heldout"]["aligned P@1"] == 48.0  # the tuning pair's directions left out
    assert not decide(checks)
    checks["digits"] = {"P@1": 40.0, "mAP": 30.0, "aligned P@1": 41.0, "aligned mAP": 31.0}
    doc = {"checks": checks, "align_by_default": decide(checks), "harmony_setting": "theta 2, K 30, 50 PCs"}
    text = sentence(doc)
    assert "does not align by default" in text and "pacs untouched, full, pacs untouched, heldout)" in text
    assert "digits: P@1 40.0 -> 41.0" in text
    assert decide({"digits": checks["digits"]})


def test_the_readme_says_whether_new_data_is_aligned_by_default_from_the_results_file():
    from benchmarks.alignment_default import sentence
    from ucdir_core.config.presets import get_preset

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "results" / "alignment_default.json").read_text())
    assert " ".join(sentence(doc).split()) in " ".join((root / "README.md").read_text().split())
    assert get_preset("folder").alignment_params.alignment == ("harmony" if doc["align_by_default"] else "none")


def test_alignment_trials_table_averages_the_pairs_and_shows_the_aligned_evaluation():
    from benchmarks.alignment_trials import TRIALS, trials_table

    def run(p1, aligned=None):
        r = {"mean": {"P@1": p1, "mAP": 30.0}, "alignment": {"domain_mixing": 0.1, "class_agreement": 70.0}}
        if aligned is not None:
            r["aligned"] = {"mean": {"P@1": aligned, "mAP": 32.0}, "domain_mixing": 0.3, "class_agreement": 71.0}
        return r

    doc = {"trials": {"across_harmony": {"description": "d2", "pairs": {"photo-sketch": run(50.0, 48.0),
                                                                        "art_painting-sketch": run(40.0, 42.0)}},
                      "full": {"description": "d1", "pairs": {"photo-sketch": run(46.0)}}}}
    lines = trials_table(doc).splitlines()
    assert list(TRIALS)[0] == "full" and lines[2].startswith("| d1 (photo-sketch) | 46.0 / 30.0 / 0.100 / 70.0 |  |")
    assert lines[3] == ("| d2 (photo-sketch, art_painting-sketch) | 45.0 / 30.0 / 0.100 / 70.0 | "
                        "45.0 / 32.0 / 0.300 / 71.0 |  |")
    for i, key in enumerate(("art_painting-cartoon", "art_painting-photo", "cartoon-photo", "cartoon-sketch")):
        doc["trials"]["full"]["pairs"][key] = run(60.0 + 2 * i)  # the untouched pairs: their own column
    line = trials_table(doc).splitlines()[2]
    assert line == "| d1 (photo-sketch) | 46.0 / 30.0 / 0.100 / 70.0 |  | 63.0 / 30.0 |"
    for i, key in enumerate(("art_painting-cartoon", "art_painting-photo", "cartoon-photo", "cartoon-sketch")):
        doc["trials"]["across_harmony"]["pairs"][key] = run(60.0, 61.0 + 2 * i)  # and after the run's stage
    assert trials_table(doc).splitlines()[3].endswith("| 60.0 / 30.0 (after its stage 64.0 / 32.0) |")
    from benchmarks.alignment_trials import twelve_table

    # 12 directions: only trials run on all 6 pairs, the mean of the pairs' means
    assert twelve_table(doc).splitlines()[2:] == [
        "| `across_harmony` | 55.0 / 30.0 / 0.100 / 70.0 | 57.7 / 32.0 / 0.300 / 71.0 |"]


def test_every_alignment_trial_is_a_valid_config_of_ucdir_on_the_tuning_pairs():
    from benchmarks.alignment_trials import PAIRS, TRIALS, trial_config

    assert {frozenset(p) for p in PAIRS} == {frozenset(("photo", "sketch")), frozenset(("art_painting", "sketch"))}
    for name, (_, changes) in TRIALS.items():
        cfg = trial_config("pacs", PAIRS[0], changes)
        assert cfg.method == "ucdir" and cfg.seed == 0 and cfg.split == "full", name
        flat = cfg.flat()
        assert all(flat[key] == (list(value) if isinstance(value, tuple) else value)
                   for key, value in changes.items()), name
    assert trial_config("pacs", PAIRS[0], {}) == trial_config("pacs", PAIRS[0], TRIALS["full"][1])


def test_the_readme_headline_is_the_results_files_table():
    from benchmarks.pacs import headline
    from ucdir_core.companion.results import read_results

    root = Path(__file__).resolve().parents[1]
    text = headline(read_results(root / "results" / "pacs.json"))
    assert "| full+harmony |" in text and "`protoot+harmony`" in text
    assert " ".join(text.split()) in " ".join((root / "README.md").read_text().split())


def test_the_results_document_shows_the_recorded_alignment_trials():
    from benchmarks.alignment_trials import TRIALS, trials_table

    root = Path(__file__).resolve().parents[1]
    doc = json.loads((root / "results" / "alignment_trials.json").read_text())
    assert set(doc["trials"]) == set(TRIALS)
    assert trials_table(doc) in (root / "docs" / "results.md").read_text()
    from benchmarks.alignment_trials import twelve_table

    assert twelve_table(doc) in (root / "docs" / "results.md").read_text()


def test_the_default_invocation_is_the_grid_and_the_extra_parts_have_their_own(tmp_path, monkeypatch):
    """``benchmarks.pacs`` without arguments runs every row once (seed 0) and no end-to-end run;
    ``--rows instance full protoot --seeds 0 1`` adds the second seeds, ``--end-to-end-only`` the
    end-to-end part alone (the commands of ``make bench-pacs`` and ``make bench-pacs-extra``)."""
    import benchmarks.pacs as bench
    from ucdir_core.config.rows import ROWS

    row = {"P@1": 50.0, "P@5": 40.0, "P@15": 30.0, "mAP": 20.0}
    report = {"photo->sketch": row, "sketch->photo": row}
    measures = {"eval": report, "domain_mixing": 0.1, "class_agreement": 70.0, "adjusted_rand": 0.3, "balance": 0.5}
    trained, e2e = [], []
    monkeypatch.setattr(bench.C, "untrained_features", lambda cfg: {})
    monkeypatch.setattr(bench.C, "anchor_rows", lambda cfg, features=None: (
        {a: report if a != "oracle" else {d: {k: 90.0 for k in row} for d in report} for a in bench.ANCHORS},
        {a: {"domain_mixing": 0.1, "class_agreement": 70.0} for a in bench.ANCHORS}))
    monkeypatch.setattr(bench, "run_aligned_row", lambda cfg, r, runs, features=None: {"after": measures, "before": measures})

    def run_row(cfg, r, runs):
        trained.append((cfg.split, r, cfg.seed))
        return report, {"domain_mixing": 0.1, "class_agreement": 70.0}, 1.0

    monkeypatch.setattr(bench, "run_row", run_row)
    monkeypatch.setattr(bench, "run_end_to_end", lambda cfg, runs: e2e.append(cfg) or {"config": {}, "results": {}})
    out = str(tmp_path / "pacs.json")
    args = ["--out", out, "--runs", str(tmp_path / "runs"), "--pairs", "photo-sketch"]
    assert bench.main(args) == 0
    assert sorted(trained) == sorted((s, r, 0) for s in ("full", "heldout") for r in ROWS) and not e2e
    trained.clear()
    assert bench.main([*args, "--rows", "instance", "full", "protoot", "--seeds", "0", "1"]) == 0
    assert sorted(t for t in trained if t[2] == 1) == [("full", r, 1) for r in sorted(bench.SEEDED)] and not e2e
    trained.clear()
    assert bench.main([*args, "--end-to-end-only"]) == 0
    assert not trained and len(e2e) == 1
    assert len(json.loads(Path(out).read_text())["invocations"]) == 3
    make = (Path(__file__).resolve().parents[1] / "Makefile").read_text()
    recipes = {line.strip() for line in make.splitlines() if line.startswith("\t$(BENCH_PACS)")}
    assert recipes == {"$(BENCH_PACS)", "$(BENCH_PACS) --rows instance full protoot --seeds 0 1",
                       "$(BENCH_PACS) --end-to-end-only"}
