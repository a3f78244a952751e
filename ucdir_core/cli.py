"""The ``ucdir`` command: train, evaluate, index, retrieve, and data tools.

Errors in the user's input (missing folders, broken data, bad options, unreadable or crafted files)
are answered with one line on stderr and exit status 2, never a traceback.

Parsing needs only the torch-free config layer (:mod:`ucdir_core.config`,
:mod:`ucdir_core.method.params`), so ``ucdir --help`` and a bad option answer at once; each command
imports what it runs (torch, the data pipeline, faiss) when it starts.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from ucdir_core.align.params import ALIGNMENTS
from ucdir_core.base.errors import DataError
from ucdir_core.base.text import distinguishable, error_line, escape_controls, printable
from ucdir_core.config.presets import PRESETS, get_preset, preset_for_method
from ucdir_core.config.rows import ROWS, row_config
from ucdir_core.config.run import RunConfig, override_key
from ucdir_core.method.params import METHOD_PARAMS


def config_epilog(preset: str) -> str:
    """The config keys with the values that preset ``preset`` gives them and their valid values
    (``train --help``): the shared keys, then the keys of the preset's method."""
    cfg = get_preset(preset)
    head = (f"Config keys (use with --set key=value), with the values of preset {preset}, the one this command "
            "uses (--preset NAME, or --root without --preset: folder; neither: digits; `ucdir train --preset NAME "
            "--help` lists another's), and their valid values:")
    notes = {"num_clusters": "  (from the folders: the number of class folders both domains share)"} \
        if preset == "folder" else {}

    def lines(obj, ranges):
        return [f"  {name:34s} {getattr(obj, name)!r}{notes.get(name, '')}"
                + (f"  ({ranges[name]})" if name in ranges else "") for name in type(obj).keys()]

    params = cfg.method_params
    return "\n".join([head, *lines(cfg, RunConfig.ranges()), "",
                      f"Keys of method {cfg.method} (another method's keys are refused; --method NAME switches):",
                      *lines(params, type(params).ranges()), "",
                      "Keys of the alignment stage (label-free, fitted on the trained embeddings; none: off):",
                      *lines(cfg.alignment_params, type(cfg.alignment_params).ranges())])


def _add_config_options(p: argparse.ArgumentParser, preset: str = "digits") -> None:
    cfg = get_preset(preset)
    p.add_argument("--preset", choices=sorted(PRESETS),
                   help="named preset (default: folder when --root is given, with K = the number of class "
                        "folders both domains share; digits, the embedded benchmark, otherwise)")
    p.add_argument("--root", help="dataset root holding one folder per domain (default: the preset's; "
                                  "digits is built under $UCDIR_DATA or ~/.cache/ucdir)")
    p.add_argument("--domains", nargs=2, metavar=("A", "B"), help="the two domain folder names (default: the preset's)")
    p.add_argument("--split", choices=["full", "heldout"], help="full: train and evaluate on all images (the "
                   "reference protocol); heldout: seeded per-class 80/20 split (default: full)")
    p.add_argument("--epochs", type=int, help=f"number of epochs (default: the {preset} preset's, {cfg.epochs})")
    p.add_argument("--method", choices=sorted(METHOD_PARAMS), help=f"training method (default: the {preset} preset's, "
                   f"{cfg.method})")
    p.add_argument("--backbone", help="efficientnet_lite0 | resnet50_moco | small_cnn | tv:NAME | timm:NAME "
                   f"(default: the {preset} preset's, {cfg.backbone})")
    p.add_argument("--checkpoint", help="MoCo v2 checkpoint file for --backbone resnet50_moco")
    p.add_argument("--seed", type=int, help="random seed (default 0)")
    p.add_argument("--device", help="auto (cuda, mps, cpu), cpu, cuda, cuda:1, mps (default auto)")
    p.add_argument("--row", choices=ROWS, help="train one row of the method's table instead of the whole method "
                   "(UCDIR's loss ablation: instance, +cluster, ...; ProtoOT's: protoot_in_domain, protoot)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, repeatable (see the list below)")


def preset_name(args: argparse.Namespace) -> str:
    """The preset a train command uses: ``--preset``, else ``folder`` with ``--root``, else ``digits``;
    with ``--method`` naming another method than the preset's, that method's counterpart of it
    (``--method protoot`` on ``folder`` is ``protoot_folder``) where one exists."""
    preset = getattr(args, "preset", None) or ("folder" if getattr(args, "root", None) else "digits")
    method = getattr(args, "method", None)
    if method and method != get_preset(preset).method:
        try:
            return preset_for_method(preset, method)
        except ValueError:
            return preset  # no counterpart: the preset with the method's default parameters
    return preset


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run config a ``ucdir train`` command describes. With ``--resume`` on a folder that holds
    a run, its saved config, with the options given on top (only :data:`RESUMABLE_KEYS` may change).

    Raises:
        ValueError: options that do not fit (one line), e.g. the paper's backbone without its checkpoint.
    """
    from ucdir_core.data.folders import with_folder_clusters
    from ucdir_core.training.runs import RunFolder

    direct = {k: getattr(args, k) for k in ("root", "split", "epochs", "method", "backbone", "checkpoint", "seed",
                                             "device")}
    changes = {k: v for k, v in direct.items() if v is not None}
    if args.domains:
        changes["domains"] = tuple(args.domains)
    run = RunFolder(args.run_dir) if getattr(args, "run_dir", None) else None
    if getattr(args, "resume", False) and run is not None and run.exists():
        return run.config().pinned().replace(**changes).with_overrides(args.set)
    preset = preset_name(args)
    cfg = get_preset(preset).replace(**changes)
    if getattr(args, "row", None):
        cfg = row_config(cfg, args.row)
    cfg = cfg.with_overrides(args.set)
    paper_backbone = get_preset(preset).backbone
    if cfg.backbone == "resnet50_moco" and cfg.checkpoint is None:
        raise ValueError(f"preset {preset} trains the paper's backbone, ResNet-50 from MoCo v2: pass --checkpoint FILE "
                         "(MoCo v2's moco_v2_800ep_pretrain.pth.tar), or choose another backbone on purpose with "
                         "--backbone NAME (it is recorded in config.json)")
    if cfg.backbone != paper_backbone:
        print(f"note: preset {preset}'s backbone is {paper_backbone}; training {cfg.backbone} as asked (recorded in "
              "config.json)")
    if preset.removeprefix("protoot_") == "folder":
        if cfg.root is None or not args.domains and "domains" not in _set_keys(args.set):
            raise ValueError(f"preset {preset} needs --root DIR and --domains A B (the two domain folders to "
                             "retrieve between)")
        if "num_clusters" not in _set_keys(args.set):
            cfg = with_folder_clusters(cfg)
    return cfg


def _set_keys(overrides: list[str]) -> set[str]:
    """The config keys that ``--set key=value`` options name."""
    return {override_key(s) for s in overrides}


def _add_train_parser(sub, preset: str) -> None:
    """``ucdir train``: its options, with the values of ``preset`` in the help."""
    p = sub.add_parser("train", help="train a method (UCDIR or ProtoOT) on two domains",
                       epilog=config_epilog(preset), formatter_class=argparse.RawDescriptionHelpFormatter,
                       description="Train UCDIR or ProtoOT (--method). A run folder receives config.json, "
                                   "history.jsonl (one JSON line per epoch), last.pt (every epoch, written "
                                   "atomically; the one before is kept as prev.pt), best.pt, split.json, "
                                   "manifest.json, dataset.json and summary.json. One process at a time may write "
                                   "a run folder.")
    _add_config_options(p, preset)
    p.add_argument("--run-dir", required=True, help="run folder (created if missing; a folder that already "
                   "holds a run needs --resume or --overwrite)")
    reuse = p.add_mutually_exclusive_group()
    reuse.add_argument("--resume", action="store_true", help="continue the run in --run-dir from its last "
                       "checkpoint, with its saved config")
    reuse.add_argument("--overwrite", action="store_true", help="replace the run in --run-dir (its config, "
                       "history, checkpoints, split and manifest are deleted first)")
    p.add_argument("--allow-unmatched-classes", action="store_true",
                   help="keep classes found in one domain only (default: refuse)")
    p.add_argument("--quiet", action="store_true", help="no progress bars (a log that is not a terminal gets "
                   "none either: plain lines, one per epoch)")
    p.add_argument("--json", action="store_true", help="end with the summary's last and best epochs as JSON instead "
                   "of the closing lines")


def build_parser(argv: list[str] | None = None) -> argparse.ArgumentParser:
    """The ``ucdir`` parser; ``train --help`` shows the values of the preset that ``argv`` selects."""
    pre = argparse.ArgumentParser(add_help=False)
    pre.add_argument("--preset")
    pre.add_argument("--root")
    pre.add_argument("--method")
    known, _ = pre.parse_known_args(argv if argv is not None else sys.argv[1:])
    if known.method not in (None, *METHOD_PARAMS):
        known.method = None  # the full parser refuses it
    preset = preset_name(known) if known.preset in (None, *PRESETS) else "digits"
    parser = argparse.ArgumentParser(prog="ucdir", description="Unsupervised cross-domain image retrieval (UCDIR, "
                                     "Hu & Lee, ECCV 2022).")
    sub = parser.add_subparsers(dest="command", required=True)

    _add_train_parser(sub, preset)

    p = sub.add_parser("evaluate", help="P@k and mAP of a trained run, both directions")
    p.add_argument("run_dir", help="a run folder made by `ucdir train`")
    p.add_argument("--which", choices=["last", "best"], default="last",
                   help="checkpoint to evaluate (default last; best is chosen on evaluation labels)")
    p.add_argument("--json", help="also write the report to this file")
    p.add_argument("--align", choices=ALIGNMENTS, help="also evaluate after this label-free alignment stage, "
                   "fitted now on the run's training embeddings with the domain as the batch variable (the run's own "
                   "settings if it was trained with it, else the defaults); writes nothing")

    p = sub.add_parser("index", help="write a run's gallery indexes (embeddings and a faiss index) for fast "
                                     "retrieval, or export them",
                       description="Embed a gallery with the run's key encoder and write it beside the run, in "
                                   "RUN/index/NAME/: embeddings.npy (float32, unit rows), index.faiss (faiss's format; "
                                   "exact inner product, HNSW from 50,000 images) and meta.json (the checkpoint and "
                                   "its digest, each file's relative path, size and digest, each row's domain). By "
                                   "default one index per domain of the run (its evaluated images; training writes "
                                   "them too). An index that is up to date is left alone. `ucdir retrieve` uses an "
                                   "index made from the same checkpoint bytes over unchanged files.")
    p.add_argument("run_dir", help="a run folder made by `ucdir train`")
    p.add_argument("--gallery", metavar="DIR", help="index this folder of images (sub-folders included) instead of "
                                                    "the run's domains; search it with `ucdir retrieve --index NAME`")
    p.add_argument("--name", help="name of the --gallery index (default: the folder's name; NAME@best with "
                                  "--which best)")
    p.add_argument("--which", choices=["last", "best"], default="last", help="checkpoint (default last)")
    p.add_argument("--export", metavar="DIR", help="also write the indexes' rows to DIR/embeddings.npy (float32, "
                                                   "unit rows) and DIR/items.json ([{path, domain}], one per row)")

    p = sub.add_parser("retrieve", help="query images in, the top-k images of the other domain out",
                       description="Rank the run's evaluated images of one domain by cosine similarity to each "
                                   "query image. Prints, per query, which domain was searched, then rank, score "
                                   "and path. Searches the run's index (`ucdir index`) when it is up to date; "
                                   "otherwise embeds the gallery in memory (slow) and says so on stderr. Writes "
                                   "nothing.")
    p.add_argument("run_dir", help="a run folder made by `ucdir train`")
    p.add_argument("query", help="a query image, or a folder of query images")
    gallery = p.add_mutually_exclusive_group()
    gallery.add_argument("--gallery-domain", help="domain to search (default: the domain other than the query's; "
                                                  "the run's second domain for a query from neither domain's folder)")
    gallery.add_argument("--index", metavar="NAME", help="search the run's index NAME instead (made by `ucdir "
                                                         "index RUN --gallery DIR --name NAME`)")
    p.add_argument("--top-k", type=int, default=10, help="number of results (default 10)")
    p.add_argument("--which", choices=["last", "best"], default="last", help="checkpoint (default last)")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table: {query, query_domain, "
                   "gallery_domain, results: [{rank, path, score}]} (a list of them for a folder)")

    data = sub.add_parser("data", help="dataset tools").add_subparsers(dest="data_command", required=True)
    p = data.add_parser("check", help="count images per domain and class; list broken files; write a manifest")
    p.add_argument("root", help="dataset root: ROOT/<domain>/<class>/<image>")
    p.add_argument("--dataset", help="known benchmark name: restrict to its domains and classes")
    p.add_argument("--domains", nargs="+", help="domains to check (default: every folder in ROOT)")
    p.add_argument("--json", help="write the manifest to this file")
    p.add_argument("--workers", type=int, help="decoding processes (default: CPU count)")
    p.add_argument("--allow-unmatched-classes", action="store_true",
                   help="exit 0 even when a class is missing from a domain")

    p = data.add_parser("prepare", help="download, verify and lay out a public benchmark")
    p.add_argument("name", choices=["office_home", "domainnet", "pacs", "office31", "digits"])
    p.add_argument("--root", required=True, help="where to put ROOT/<domain>/<class>/<image>")
    p.add_argument("--mirror", help="base URL serving the archives under their file names (default: the "
                                    "official locations)")
    p.add_argument("--remove-archives", action="store_true", help="delete the downloaded archives afterwards")

    p = data.add_parser("digits", help="build the embedded handwritten/printed digits benchmark offline")
    p.add_argument("out", help="output folder")
    p.add_argument("--seed", type=int, default=0, help="seed of the printed domain's jitter (default 0)")
    p.add_argument("--per-class", type=int, default=200, help="printed digits per class (default 200)")
    return parser


def _cmd_train(args) -> int:
    from ucdir_core.base.distributed import init_from_env, is_main
    from ucdir_core.training.build import train
    from ucdir_core.training.runs import RunFolder, closing_lines

    init_from_env()  # joins the process group under torchrun; nothing otherwise
    cfg = config_from_args(args)
    # progress bars on a terminal only; a log redirected to a file gets the plain per-epoch lines
    history = train(cfg, args.run_dir, resume=args.resume, progress=not args.quiet and sys.stderr.isatty(),
                    allow_unmatched_classes=args.allow_unmatched_classes, command=sys.argv, overwrite=args.overwrite,
                    log=lambda line: print(escape_controls(line)))  # a path in a line cannot split it
    if not is_main():
        return 0
    run = RunFolder(args.run_dir)
    summary = json.loads(run.file("summary.json").read_text())
    if args.json:
        print(json.dumps({k: summary[k] for k in ("last", "best") if k in summary}, indent=2))
    else:
        for line in closing_lines(run.path, run.header().get("untrained"), summary):
            print(escape_controls(line))
    return 0 if history else 1


def evaluate_run(run_dir: str, which: str, align: str | None = None) -> dict:
    """``ucdir evaluate``'s report (:func:`ucdir_core.inference.loading.evaluate_run`, imported when called)."""
    from ucdir_core.inference.loading import evaluate_run as evaluate

    return evaluate(run_dir, which, align)


def _cmd_evaluate(args) -> int:
    report = evaluate_run(args.run_dir, args.which, args.align)
    text = json.dumps(report, indent=2)
    print(text)
    if args.json:
        Path(args.json).write_text(text + "\n")
    return 0


def _note(line: str) -> None:
    print(f"ucdir: note: {escape_controls(line)}", file=sys.stderr)


def _cmd_index(args) -> int:
    from ucdir_core.inference.index import export, index_run

    if args.export and Path(args.export).exists() and not Path(args.export).is_dir():
        raise ValueError(f"--export {printable(args.export)} exists and is not a folder")
    results = index_run(args.run_dir, args.which, args.gallery, args.name, progress=sys.stderr.isatty(),
                        log=_note)
    for r in results:
        print(r.line())
    if args.export:
        emb, items = export([r.index for r in results], args.export)
        rows = sum(r.index.meta["count"] for r in results)
        print(f"exported {rows} rows: {printable(emb)}, {printable(items)}")
    return 0


def _cmd_retrieve(args) -> int:
    from ucdir_core.inference.retrieval import retrieve

    found = retrieve(args.run_dir, args.query, args.gallery_domain, args.top_k, args.which, index=args.index,
                     note=_note)
    if args.json:
        out = [r.to_dict() for r in found]
        print(json.dumps(out[0] if len(out) == 1 and Path(args.query).is_file() else out, indent=2))
        return 0
    for i, r in enumerate(found):
        source = f"from {r.query_domain}" if r.query_domain else "from neither domain of the run"
        print(("\n" if i else "") + f"query {printable(r.query)} ({source}); searching {printable(r.gallery_domain)}")
        print(f"{'rank':>4}  {'score':>6}  path")
        for h in r.results:
            print(f"{h['rank']:4d}  {h['score']:6.4f}  {printable(h['path'])}")
    if found:
        print("(score: cosine similarity of the embeddings, from -1 to 1; higher is closer)")
    return 0


def _cmd_data(args) -> int:
    from ucdir_core.base.io import write_json
    from ucdir_core.data import datasets
    from ucdir_core.data.checks import check_dataset
    from ucdir_core.data.digits import build_digits

    if args.data_command == "check":
        bench = datasets.get_benchmark(args.dataset) if args.dataset else None
        domains = args.domains or (list(bench.domains) if bench else None)
        if bench and not args.domains:
            domains = [d for d in domains if (Path(args.root) / d).is_dir()] or domains
        report = check_dataset(args.root, domains, classes=bench.classes if bench else None, workers=args.workers)
        for d, counts in report.counts.items():
            shown = distinguishable(counts)  # two folders whose names look alike are shown apart
            print(f"{printable(d)}: {sum(counts.values())} images, {len(counts)} classes: "
                  + ", ".join(f"{shown[c]} {n}" for c, n in counts.items()))
        for d, first in report.same_folder.items():
            print(f"{printable(d)}: the same folder as {printable(first)}, counted once")
        print(f"total: {report.total} images")
        for kind, paths in report.problems.items():
            if paths:
                print(f"{kind}: {len(paths)} files, e.g. {printable(paths[0])}")
        shown = distinguishable(c for missing in report.missing_classes.values() for c in missing)
        for d, missing in report.missing_classes.items():
            print(f"classes missing from {printable(d)}: {', '.join(shown[c] for c in missing)}")
        if args.json:
            write_json(Path(args.json), report.to_dict())
        if report.empty_domains:
            raise DataError(f"domains without usable images: {', '.join(report.empty_domains)}")
        if not report.usable:
            raise DataError("fewer than two domains with usable images")
        if report.missing_classes and not args.allow_unmatched_classes:
            raise DataError("classes are missing from some domains (see above; "
                                     "--allow-unmatched-classes accepts this)")
        return 0
    if args.data_command == "prepare":
        report = datasets.prepare(args.name, args.root, mirror=args.mirror, keep_archives=not args.remove_archives)
        print(json.dumps(report, indent=2))
        return 0
    if args.data_command == "digits":

        out = build_digits(args.out, seed=args.seed, per_class=args.per_class, overwrite=True)
        print(f"wrote {printable(out)}")
        return 0
    raise AssertionError(args.data_command)


def check_args(args: argparse.Namespace) -> None:
    """Refuse option values no command can use, in one line, before any work starts."""
    for option in ("top_k", "per_class", "workers"):
        value = getattr(args, option, None)
        if value is not None and value < 1:
            raise ValueError(f"--{option.replace('_', '-')} must be at least 1, got {value}")


def main(argv: list[str] | None = None) -> int:
    """Run one command; any error in the user's input or files ends in one line and exit status 2."""
    args = build_parser(argv).parse_args(argv)  # torch-free: help and option errors answer at once
    from PIL import Image

    handlers = {"train": _cmd_train, "evaluate": _cmd_evaluate, "index": _cmd_index, "retrieve": _cmd_retrieve,
                "data": _cmd_data}
    try:
        check_args(args)
        return handlers[args.command](args)
    except (ValueError, TypeError, OSError, Image.DecompressionBombError) as exc:  # DataError is a ValueError
        print(f"ucdir: error: {error_line(exc)}", file=sys.stderr)  # a worker's error: its own line
        return 2
    except KeyboardInterrupt:
        print("ucdir: interrupted; `ucdir train --resume --run-dir DIR` continues from the last checkpoint",
              file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
