"""``certiqa compare-methods``: certified benchmark statements from result files.

    certiqa compare-methods runs/*.csv --methods methods.csv [--human mos.csv] \\
        [--eps 0.25] [--family-alpha 0.01] [--out statements.csv] [--plot statements.png]

The methods table (CSV or .xlsx) has columns ``path`` and ``method`` and optionally
``source`` (the input image a method processed, for per-source wins); its paths are those
the certify run was given. The human table has ``path`` and a score column (higher is
better unless ``--human-lower-better``). The statements are :func:`certiqa.statements.compare`'s.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Any, Sequence

from .data import _read_rows as read_table
from .runner import RunRefused, read_results
from .statements import Assignment, LevelNotMet, Statements, compare

__all__ = ["add_parser", "read_assignments", "read_human_scores", "format_statements", "write_statements",
           "plot_statements"]


def read_assignments(path: str | Path) -> dict[str, Assignment]:
    """path -> :class:`Assignment` from a table with columns path, method and optionally source."""
    header, rows = read_table(Path(path))
    missing = [c for c in ("path", "method") if c not in header]
    if missing:
        raise ValueError(f"{path}: the methods table needs columns path and method (and optionally source); "
                         f"it has {header}.")
    out: dict[str, Assignment] = {}
    for number, row in enumerate(rows, start=2):
        if not row.get("path") or not row.get("method"):
            raise ValueError(f"{path}, row {number}: empty path or method.")
        if row["path"] in out:
            raise ValueError(f"{path}, row {number}: {row['path']} is listed twice; give each image one method.")
        out[row["path"]] = Assignment(row["method"], row.get("source") or None)
    return out


def read_human_scores(path: str | Path, column: str = "score", lower_better: bool = False) -> dict[str, float]:
    """path -> human score from a table with columns path and ``column``, negated when lower is better."""
    header, rows = read_table(Path(path))
    if "path" not in header or column not in header:
        raise ValueError(f"{path}: the human-score table needs columns path and {column}; it has {header}.")
    out = {}
    for number, row in enumerate(rows, start=2):
        try:
            score = float(row[column])
        except ValueError:
            raise ValueError(f"{path}, row {number}: score {row[column]!r} is not a number.") from None
        out[row["path"]] = -score if lower_better else score
    return out


def _num(value: float | None, digits: int = 4) -> str:
    return "-" if value is None else f"{value:.{digits}g}" if math.isfinite(value) else str(value)


def _ranked(s: Statements) -> list[str]:
    """Methods by certified rank interval, then by mean smoothed quality (best first)."""
    sign = 1.0 if s.lower_better else -1.0
    return sorted(s.methods, key=lambda m: (s.rank_best[m], s.rank_worst[m], sign * (s.mean_median[m] or 0.0)))


def format_statements(statements: Sequence[Statements]) -> str:
    """The statements as text tables, one block per radius."""
    blocks = []
    for s in statements:
        direction = "lower is better" if s.lower_better else "higher is better"
        lines = [f"eps {s.eps:g}: every statement below holds at family level {s.level:.4g} "
                 f"(the {sum(s.images.values())} images' alphas add up to {s.met:.4g}); scores: {direction}"]
        header = ("method", "images", "mean score", "certified mean", "mean width", "max width", "rank", "base mean")
        body = [(m, str(s.images[m]), _num(s.mean_median[m]),
                 f"[{_num(s.mean_lower[m])}, {_num(s.mean_upper[m])}]", _num(s.mean_width[m]), _num(s.max_width[m]),
                 f"{s.rank_best[m]}" if s.rank_best[m] == s.rank_worst[m] else f"{s.rank_best[m]}-{s.rank_worst[m]}",
                 _num(s.mean_clean[m]))
                for m in _ranked(s)]
        widths = [max(len(r[i]) for r in [header, *body]) for i in range(len(header))]
        for r in [header, tuple("-" * w for w in widths), *body]:
            lines.append("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))))
        lines.append("certified order (a > b: a is above b whatever eps-perturbation each image had): "
                     + (", ".join(f"{a} > {b}" for a, b in s.diagram) or "none"))
        for record in s.records():
            if record["kind"] == "pair":
                wins = (f"; per source {record['source_wins']} wins, {record['source_losses']} losses, "
                        f"{record['source_undecided']} undecided" if record["source_wins"] is not None else "")
                largest = record["largest_eps"]
                lines.append(f"  {record['method']} vs {record['other']}: {record['certified']}{wins}; order certified "
                             f"up to eps {'-' if largest is None else f'{largest:g}'}")
        if s.kendall is not None and s.spearman is not None:
            k = s.kendall
            lines.append(f"against human scores ({s.human_images} images): KROCC in [{k.lower:.4f}, {k.upper:.4f}] "
                         f"(of {k.pairs} pairs {k.concordant} certainly concordant, {k.discordant} certainly "
                         f"discordant, {k.undecided} undecided); SROCC in [{s.spearman[0]:.4f}, {s.spearman[1]:.4f}]")
        if len(statements) > 1:
            lines.append(f"(a largest eps is chosen among {len(statements)} radii: it holds at level "
                         f"{s.largest_eps_level:.4g})")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks)


def _plain(value: Any) -> Any:
    """JSON-safe: a non-finite float becomes its text ('inf', '-inf')."""
    return str(value) if isinstance(value, float) and not math.isfinite(value) else value


def write_statements(statements: Sequence[Statements], path: str | Path) -> None:
    """All records (:meth:`Statements.records`) as .csv (one row each, union of columns) or .json."""
    path = Path(path)
    records = [r for s in statements for r in s.records()]
    if path.suffix.lower() == ".json":
        path.write_text(json.dumps([{k: _plain(v) for k, v in r.items()} for r in records], indent=2) + "\n")
        return
    import csv

    columns = list(dict.fromkeys(k for r in records for k in r))
    with open(path, "w", newline="", encoding="utf-8") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows({k: "" if v is None else v for k, v in r.items()} for r in records)


def plot_statements(statements: Sequence[Statements], path: str | Path) -> None:
    """Per radius two panels: each method's mean score with its certified interval (and the
    base model's mean score), and the certified order as a diagram (an arrow a -> b: a is
    certainly above b; height: best certified rank). Needs matplotlib (``certiqa[plot]``)."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise ImportError("--plot needs matplotlib: pip install 'certiqa[plot]'.") from None
    fig, axes = plt.subplots(len(statements), 2, figsize=(12, 0.5 + 3.2 * len(statements)), squeeze=False)
    for (left, right), s in zip(axes, statements):
        order = _ranked(s)
        for y, m in enumerate(reversed(order)):
            left.plot([s.mean_lower[m], s.mean_upper[m]], [y, y], lw=4, color="tab:blue", alpha=0.6,
                      label="certified mean" if y == 0 else None)
            left.plot(s.mean_median[m], y, "o", color="tab:blue", label="smoothed mean" if y == 0 else None)
            if s.mean_clean[m] is not None:
                left.plot(s.mean_clean[m], y, "x", color="tab:red", label="base model mean" if y == 0 else None)
        left.set_yticks(range(len(order)), list(reversed(order)))
        left.set_xlabel("score" + (" (lower is better)" if s.lower_better else " (higher is better)"))
        left.set_title(f"eps {s.eps:g}, family level {s.level:.3g}")
        left.legend(fontsize=7)
        left.grid(alpha=0.3)
        levels: dict[int, list[str]] = {}
        for m in order:
            levels.setdefault(s.rank_best[m], []).append(m)
        place = {m: (x - (len(ms) - 1) / 2, -rank) for rank, ms in levels.items() for x, m in enumerate(ms)}
        for a, b in s.diagram:
            right.annotate("", xy=place[b], xytext=place[a],
                           arrowprops={"arrowstyle": "->", "color": "0.4", "shrinkA": 12, "shrinkB": 12})
        for m, (x, y) in place.items():
            right.text(x, y, m, ha="center", va="center", fontsize=8,
                       bbox={"boxstyle": "round", "facecolor": "white", "edgecolor": "tab:blue"})
        xs = [x for x, _ in place.values()]
        ys = [y for _, y in place.values()]
        right.set_xlim(min(xs) - 1, max(xs) + 1)
        right.set_ylim(min(ys) - 0.7, max(ys) + 0.7)
        right.axis("off")
        right.set_title("certified order (arrow: certainly above)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _run(args: argparse.Namespace) -> int:
    if args.out and Path(args.out).suffix.lower() not in (".csv", ".json"):
        raise SystemExit(f"certiqa: error: --out must end in .csv or .json, got {args.out!r}.")
    if args.plot and Path(args.plot).suffix.lower() != ".png":
        raise SystemExit(f"certiqa: error: --plot must end in .png, got {args.plot!r}.")
    try:
        rows = [row for path in args.results for row in read_results(path)]
        assignments = read_assignments(args.methods)
        human = read_human_scores(args.human, args.human_column, args.human_lower_better) if args.human else None
        statements = compare(rows, assignments, human=human, eps=args.eps, family_alpha=args.family_alpha,
                             lower_better=args.lower_better)
        if args.plot:
            plot_statements(statements, args.plot)
    except RunRefused as err:
        raise SystemExit(f"certiqa: error: {err}") from None
    except (LevelNotMet, ValueError, FileNotFoundError, ImportError) as err:
        raise SystemExit(f"certiqa: error: {err}") from None
    print(format_statements(statements))
    if args.out:
        write_statements(statements, args.out)
        print(f"wrote the statements to {args.out}", file=sys.stderr)
    return 0


def add_parser(sub: argparse._SubParsersAction) -> None:
    """Register ``compare-methods`` on the ``certiqa`` command's subparsers."""
    parser = sub.add_parser(
        "compare-methods",
        help="certified statements about methods from certify result files",
        description="Which method is certifiably above which, the most any eps-manipulation could gain, certified "
                    "rank intervals and bounds on KROCC/SROCC against human scores, at a stated family level.",
    )
    parser.add_argument("results", nargs="+", metavar="RESULTS", help="certify result files (.csv, .jsonl, .json)")
    parser.add_argument("--methods", required=True, metavar="TABLE",
                        help="CSV/.xlsx with columns path, method and optionally source")
    parser.add_argument("--human", metavar="SCORES", help="CSV/.xlsx with columns path and --human-column")
    parser.add_argument("--human-column", default="score", help="the human-score column (score)")
    parser.add_argument("--human-lower-better", action="store_true", help="lower human scores mean better quality")
    parser.add_argument("--eps", type=float, nargs="+", default=None,
                        help="radii to state (default: every radius in the rows)")
    parser.add_argument("--family-alpha", type=float, default=None, metavar="A",
                        help="require the statements to hold at family level A (refused when the rows' alphas add "
                             "up to more); default: state the level the rows meet")
    direction = parser.add_mutually_exclusive_group()
    direction.add_argument("--lower-better", dest="lower_better", action="store_const", const=True, default=None,
                           help="lower scores are better (only for rows that do not record it)")
    direction.add_argument("--higher-better", dest="lower_better", action="store_const", const=False,
                           help="higher scores are better (only for rows that do not record it)")
    parser.add_argument("--out", metavar="FILE", help="write every statement to .csv or .json")
    parser.add_argument("--plot", metavar="PNG", help="plot the intervals and the certified order (needs matplotlib)")
    parser.set_defaults(func=_run)
