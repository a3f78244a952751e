"""Tables of results: Markdown and LaTeX, the protocol line that says how each number was
obtained, and the per-direction tables of a benchmark results file."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from ucdir_core.config.run import RunConfig
from ucdir_core.method.params import ROWS


def mean_over_directions(report: dict[str, dict[str, float]]) -> dict[str, float]:
    """Each metric's mean over the retrieval directions of a report."""
    keys = metric_order(next(iter(report.values())))
    return {k: float(np.mean([row[k] for row in report.values()])) for k in keys}


def provenance(cfg: RunConfig, epoch_note: str) -> str:
    """One line saying how a number was obtained."""
    return (f"dataset {cfg.dataset}, domains {cfg.domains[0]}/{cfg.domains[1]}, split {cfg.split}, backbone "
            f"{cfg.backbone}, {cfg.image_size} px, {cfg.epochs} epochs, {epoch_note}, seed {cfg.seed}")


def metric_order(keys) -> list[str]:
    """P@k columns by k, then mAP (JSON files store them alphabetically)."""
    return sorted(keys, key=lambda k: (k == "mAP", int(k[2:]) if k.startswith("P@") else 0, k))


def markdown_table(rows: dict[str, dict[str, float]], fmt: str = "{:.1f}") -> str:
    """``{row name: {metric: value}}`` as a Markdown table, metrics in :func:`metric_order`."""
    cols = metric_order(next(iter(rows.values())))
    lines = ["| | " + " | ".join(cols) + " |", "|---|" + "---:|" * len(cols)]
    lines += [f"| {name} | " + " | ".join(fmt.format(v[c]) for c in cols) + " |" for name, v in rows.items()]
    return "\n".join(lines)


def latex_table(rows: dict[str, dict[str, float]], caption: str) -> str:
    """The same rows as a booktabs LaTeX table with ``caption``."""
    cols = metric_order(next(iter(rows.values())))
    body = "\n".join(f"{name.replace('_', chr(92) + '_')} & " + " & ".join(f"{v[c]:.1f}" for c in cols) + r" \\"
                     for name, v in rows.items())
    head = " & ".join(cols)
    return ("\\begin{table}[t]\n\\centering\n\\begin{tabular}{l" + "r" * len(cols) + "}\n\\toprule\n & " + head
            + r" \\" + "\n\\midrule\n" + body + "\n\\bottomrule\n\\end{tabular}\n\\caption{" + caption
            + "}\n\\end{table}\n")


def counts_table(counts: dict[str, dict[str, int]]) -> str:
    """Markdown table: classes as rows, domains as columns, with totals."""
    classes = sorted({c for per in counts.values() for c in per})
    doms = list(counts)
    lines = ["| class | " + " | ".join(doms) + " |", "|---|" + "---:|" * len(doms)]
    lines += [f"| {c} | " + " | ".join(str(counts[d].get(c, 0)) for d in doms) + " |" for c in classes]
    lines.append("| **total** | " + " | ".join(str(sum(counts[d].values())) for d in doms) + " |")
    return "\n".join(lines)


def last_best_table(s: dict) -> str:
    """Markdown: last-epoch and best-epoch results of a run summary, labelled."""
    rows = {}
    for direction, m in s["last"]["eval"].items():
        rows[f"{direction}, last epoch ({s['last']['epoch']})"] = m
    for direction, m in s["best"]["eval"].items():
        rows[f"{direction}, best epoch ({s['best']['epoch']}; selected on evaluation labels)"] = m
    return markdown_table(rows)


def tables_from_results(path: str | Path):
    """Per-direction tables (one per split) from a benchmark results JSON (``results/pacs.json``)."""
    res = json.loads(Path(path).read_text())
    cfg = res.get("config", {})
    out = {}
    order = ["baseline", "centred", *ROWS, "oracle"]  # the anchors below and above the methods
    for split, methods in res["results"].items():
        rows = {}
        for method in sorted(methods, key=lambda m: order.index(m) if m in order else len(order)):
            for direction, m in sorted(methods[method].items()):
                rows[f"{method} {direction}"] = m
        # the benchmark's regime line already names backbone, resolution, epochs and which epoch
        setting = res.get("regime") or (f"backbone {cfg.get('backbone')}, {cfg.get('image_size')} px, "
                                        f"{cfg.get('epochs')} epochs, last epoch")
        protocol = f"Protocol: {res.get('dataset', 'pacs')}, split {split}, seed {res.get('seed')}; {setting}"
        if "centred" in methods or "oracle" in methods:
            protocol += ("; anchors from the untrained features: centred = each domain's mean removed (no "
                         "labels), oracle = LDA fitted with the class labels (a ceiling, not a method)")
        out[f"{res.get('dataset', 'pacs')}, split {split}"] = (protocol, rows)
    return out


def save_tables(tables, stem: Path) -> list[Path]:
    """Write the tables as ``stem.md`` and ``stem.tex``."""
    md = "\n\n".join(f"### {t}\n\n{p}\n\n{markdown_table(r)}" for t, (p, r) in tables.items())
    tex = "\n".join(latex_table(r, f"{t}. {p}") for t, (p, r) in tables.items())
    stem.parent.mkdir(parents=True, exist_ok=True)
    paths = [stem.with_suffix(".md"), stem.with_suffix(".tex")]
    paths[0].write_text(md + "\n")
    paths[1].write_text(tex)
    return paths


def alignment_answer(table, domains: tuple[str, str]) -> str:
    """The answer to "aligned by what?" for one execution, every number read from ``table``: rows
    ``before``, ``UCDIR full``, ``UCDIR full + Harmony``, ``ProtoOT``, ``ProtoOT + Harmony``;
    columns ``P@1``, ``mAP`` (means of both directions), ``domain_mixing``, ``class_agreement``,
    ``adjusted_rand``, ``balance`` (:func:`~ucdir_core.companion.experiments.embedding_diagnostics`)."""
    t = table

    def pair(col: str, method: str, fmt: str) -> str:
        return f"{t.loc[method, col]:{fmt}} -> {t.loc[f'{method} + Harmony', col]:{fmt}}"

    trained = max(t.loc["UCDIR full", "domain_mixing"], t.loc["ProtoOT", "domain_mixing"])
    verdict = "leave the two domains apart" if trained < 0.2 else "mix the two domains"
    lifts = [m for m in ("UCDIR full", "ProtoOT") if t.loc[f"{m} + Harmony", "P@1"] > t.loc[m, "P@1"]]
    p1 = ("lifts P@1 for " + " and ".join(lifts)) if lifts else "does not lift P@1 for either method"
    return (
        f"**On {domains[0]}/{domains[1]} here, both trained methods {verdict}:** domain mixing "
        f"{t.loc['UCDIR full', 'domain_mixing']:.3f} after UCDIR `full` and {t.loc['ProtoOT', 'domain_mixing']:.3f} "
        f"after ProtoOT ({t.loc['before', 'domain_mixing']:.3f} before training; 0 = apart, 1 = mixed). "
        f"Harmony, fitted without labels on each run's training embeddings with the domain as the batch "
        f"variable, moves domain mixing {pair('domain_mixing', 'UCDIR full', '.3f')} (UCDIR) and "
        f"{pair('domain_mixing', 'ProtoOT', '.3f')} (ProtoOT). It {p1}: mean P@1 "
        f"{pair('P@1', 'UCDIR full', '.1f')} and {pair('P@1', 'ProtoOT', '.1f')}, mAP "
        f"{pair('mAP', 'UCDIR full', '.1f')} and {pair('mAP', 'ProtoOT', '.1f')}. Clusters of both domains found "
        f"without labels (k-means, K = the number of classes) hold the two domains with balance "
        f"{pair('balance', 'UCDIR full', '.2f')} and {pair('balance', 'ProtoOT', '.2f')} (1 = in proportion) and "
        f"match the classes with an adjusted Rand index of {pair('adjusted_rand', 'UCDIR full', '.2f')} and "
        f"{pair('adjusted_rand', 'ProtoOT', '.2f')}: how well the classes are found without labels, not the "
        f"domain offset alone, bounds what alignment can add to P@1.")


#: the benchmark rows without and with the alignment stage, as a results file names them
BENCHMARK_ALIGNED = (("baseline", "baseline+harmony"), ("full", "full+harmony"), ("protoot", "protoot+harmony"))


def benchmark_alignment_table(res: dict | None) -> str | None:
    """Markdown quoting a benchmark results file (``results/<dataset>.json``): for the untrained
    backbone, UCDIR ``full`` and ProtoOT without and with the alignment stage, mean P@1 and mAP over
    the directions (full split, and P@1 held out), domain mixing, class agreement and the class-discovery
    diagnostic (adjusted Rand index, balance) over the pairs (full split); None when the file lacks
    the aligned rows."""
    if not res or any(r not in res.get("results", {}).get("full", {}) for pair in BENCHMARK_ALIGNED for r in pair):
        return None
    full, held = res["results"]["full"], res["results"].get("heldout", {})
    al, cd = res["alignment"]["full"], res["class_discovery"]["full"]

    def mean(table: dict, row: str, key: str) -> str:
        vals = [v[key] for v in table.get(row, {}).values()]
        return f"{np.mean(vals):.{3 if key == 'domain_mixing' else 2 if key in ('adjusted_rand', 'balance') else 1}f}" \
            if vals else ""

    n_dirs, n_pairs = len(full["full"]), len(al["full"])
    lines = [f"Quoted from `results/{res.get('dataset', 'the dataset')}.json` (the benchmark; {n_dirs} directions, "
             f"{n_pairs} pairs; last epoch; seed {res.get('seed', 0)}):", "",
             "| row | P@1 | mAP | P@1 held out | domain mixing | class agreement (%) | adjusted Rand index | balance |",
             "|---|---:|---:|---:|---:|---:|---:|---:|"]
    for pair in BENCHMARK_ALIGNED:
        for row in pair:
            lines.append(f"| {row} | {mean(full, row, 'P@1')} | {mean(full, row, 'mAP')} | {mean(held, row, 'P@1')} | "
                         f"{mean(al, row, 'domain_mixing')} | {mean(al, row, 'class_agreement')} | "
                         f"{mean(cd, row, 'adjusted_rand')} | {mean(cd, row, 'balance')} |")
    return "\n".join(lines)


def alignment_settings(params) -> str:
    """The alignment stage's settings in words (``AlignmentParams``), for a provenance line."""
    if params.alignment != "harmony":
        return f"alignment {params.alignment}"
    return (f"Harmony's settings: theta {params.harmony_theta:g}, {params.harmony_clusters} clusters, "
            f"{params.harmony_pcs} principal components, seed {params.harmony_seed}")
