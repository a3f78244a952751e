"""Layer 9, the companion: what the notebooks call and show.

``paths`` (project root, output folders, paths as committed files show them), ``experiments``
(configs from notebook parameters, train-or-load, untrained features, anchors), ``tables``,
``figures`` (functions returning Figures), ``display`` (a figure saved and shown inline with its
caption, the config as a short table, a training log cleared once done),
``qualitative`` (sample grids, retrieval grids), ``results`` (a benchmark's results file, an
ablation's runs), ``report_checks`` (executed notebooks against their sources) and ``notebooks``
(build and run them with papermill).

The names a notebook uses are gathered here, so that a notebook reads ``from ucdir_core import
companion as C`` and calls ``C.<name>``.
"""

from ucdir_core.align.params import AlignmentParams
from ucdir_core.companion.display import (CONFIG_KEYS, DISPLAY_DPI, GRID_DISPLAY_DPI, CaptionedFigure, config_table,
                                          show_figure, transient_log)
from ucdir_core.companion.experiments import (SMOKE, aligned_embeddings, anchor_rows, baseline_report, class_names,
                                              compare_alignment, embedding_diagnostics, full_row, method_runs, method_title,
                                              notebook_config, run_alignment, run_embeddings, run_name, summary, switch_on_epochs,
                                              tables_by_training, train_or_load, untrained_features)
from ucdir_core.companion.paths import (OutputDirs, config_text, dataset_location, dataset_name, display_path,
                                        output_dirs, project_root, results_path)
from ucdir_core.companion.qualitative import evaluated_paths, quantile_queries, retrieval_grid, sample_grid
from ucdir_core.companion.results import ablation_histories, ablation_over_directions, has_alignment, load_results
from ucdir_core.companion.tables import (alignment_answer, alignment_settings, benchmark_alignment_table, counts_table, last_best_table,
                                         latex_table, markdown_table, mean_over_directions, metric_order, provenance,
                                         save_tables, tables_from_results)
from ucdir_core.config.rows import ROWS, row_config
from ucdir_core.evaluation.metrics import per_query_precision

__all__ = [
    "CONFIG_KEYS", "CaptionedFigure", "DISPLAY_DPI", "GRID_DISPLAY_DPI", "SMOKE", "OutputDirs", "ablation_histories",
    "ablation_over_directions", "anchor_rows", "baseline_report",
    "class_names", "compare_alignment", "config_table", "config_text", "counts_table", "dataset_location", "dataset_name", "display_path",
    "AlignmentParams", "aligned_embeddings", "alignment_answer", "alignment_settings", "benchmark_alignment_table", "embedding_diagnostics", "evaluated_paths", "full_row", "method_runs", "method_title", "ROWS", "row_config", "has_alignment", "last_best_table", "latex_table", "load_results", "markdown_table",
    "mean_over_directions", "metric_order", "notebook_config", "output_dirs", "per_query_precision", "project_root",
    "provenance", "quantile_queries", "results_path", "retrieval_grid", "run_alignment", "run_embeddings", "run_name", "sample_grid",
    "save_tables", "show_figure", "summary", "switch_on_epochs", "tables_by_training", "tables_from_results",
    "train_or_load", "transient_log",
    "untrained_features",
]
