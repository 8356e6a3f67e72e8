"""Plain-text views of the service's JSON answers, for the ``sitetune`` command line.

Pure functions: JSON in, text out (no printing). Fields the contract allows to be null or
absent render as ``-`` rather than failing, so a newer server does not break the CLI.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

BAR_WIDTH = 20
_SKIPPED_METRICS = frozenset({"cases", "site", "seed", "epoch", "epochs"})
_CANDIDATE_KEYS = ("candidate", "new")
_REFERENCE_KEYS = ("production", "baseline", "base", "parent")


def _cell(value: Any) -> str:
    return "-" if value is None or value == "" else str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    """Left-aligned columns, two spaces apart; ``None`` cells as ``-``."""
    cells = [[_cell(v) for v in row] for row in [headers, *rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    return "\n".join(
        "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip() for row in cells
    )


def duration(seconds: float | None) -> str:
    """``75`` -> ``"1m15s"``; ``None`` -> ``"-"``."""
    if seconds is None:
        return "-"
    seconds = max(0, round(float(seconds)))
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes:02d}m"
    return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


def numeric_metrics(metrics: Any, prefix: str = "") -> list[tuple[str, float]]:
    """Numeric leaves of a (nested) metrics dict as ``("site_B dice/LV", 0.95)`` pairs."""
    if not isinstance(metrics, dict):
        return []
    out: list[tuple[str, float]] = []
    for key, value in metrics.items():
        if key in _SKIPPED_METRICS:
            continue
        name = f"{prefix} {key}".strip()
        if isinstance(value, dict):
            out.extend(numeric_metrics(value, name))
        elif isinstance(value, int | float) and not isinstance(value, bool):
            out.append((name, float(value)))
    return out


def metric_headline(metrics: Any, limit: int = 3) -> str:
    """The first ``limit`` numeric metrics, e.g. ``"dice/LV 0.953, dice/myo 0.912"``."""
    items = numeric_metrics(metrics)
    shown = ", ".join(f"{k} {v:.3f}" for k, v in items[:limit])
    more = f" (+{len(items) - limit} more)" if len(items) > limit else ""
    return (shown + more) or "-"


def evaluation_headline(evaluation: Any, limit: int = 3) -> str:
    """A job's evaluation in one line; candidate vs production when both are given."""
    if not isinstance(evaluation, dict):
        return "-" if evaluation is None else str(evaluation)
    candidate = next((evaluation[k] for k in _CANDIDATE_KEYS if k in evaluation), None)
    ref_key = next((k for k in _REFERENCE_KEYS if isinstance(evaluation.get(k), dict)), None)
    if isinstance(candidate, dict) and ref_key is not None:
        reference = dict(numeric_metrics(evaluation[ref_key]))
        parts = [
            f"{k} {v:.3f}" + (f" ({ref_key} {reference[k]:.3f})" if k in reference else "")
            for k, v in numeric_metrics(candidate)[:limit]
        ]
        return ", ".join(parts) or "-"
    return metric_headline(evaluation, limit)


# -- jobs ------------------------------------------------------------------------------


def _progress(job: dict) -> dict:
    progress = job.get("progress")
    return progress if isinstance(progress, dict) else {}


def _val_metric(val: Any) -> tuple[str, float] | None:
    """The validation metric to show: a Dice if there is one, else the first number."""
    items = numeric_metrics(val)
    dice = [item for item in items if "dice" in item[0].lower()]
    mean = [item for item in dice if "mean" in item[0].lower()]
    chosen = mean or dice or items
    return chosen[0] if chosen else None


def epoch_text(job: dict) -> str:
    """``"3/10"`` (``"-"`` before the first epoch is known)."""
    progress = _progress(job)
    if progress.get("epochs") is None:
        return "-"
    return f"{progress.get('epoch') or 0}/{progress['epochs']}"


def progress_line(job: dict, bar: bool = True) -> str:
    """One line: state, epoch bar, train loss, ETA, a validation metric (the longest last)."""
    parts = [f"job {job.get('job_id', '?')} {job.get('state', '?')}"]
    progress = _progress(job)
    epochs = progress.get("epochs")
    if epochs:
        epoch = progress.get("epoch") or 0
        if bar:
            filled = round(BAR_WIDTH * min(epoch, epochs) / epochs)
            parts.append("[" + "#" * filled + "-" * (BAR_WIDTH - filled) + "]")
        parts.append(f"epoch {epoch}/{epochs}")
    if isinstance(progress.get("train_loss"), int | float):
        parts.append(f"loss {progress['train_loss']:.4f}")
    if progress.get("eta_s") is not None and job.get("state") == "running":
        parts.append(f"ETA {duration(progress['eta_s'])}")
    val = _val_metric(progress.get("val"))
    if val is not None:
        parts.append(f"val {val[0]} {val[1]:.3f}")
    return "  ".join(parts)


def job_table(jobs: Sequence[dict]) -> str:
    """``sitetune jobs list``."""
    if not jobs:
        return "no jobs"
    rows = [
        (
            j.get("job_id"),
            j.get("state"),
            j.get("base"),
            epoch_text(j),
            j.get("created_at"),
            _version_ref(j),
        )
        for j in jobs
    ]
    return table(("JOB", "STATE", "BASE", "EPOCH", "CREATED", "VERSION"), rows)


def _version_ref(job: dict) -> str | None:
    """The version a job produced, as ``name:version`` when the base names the model."""
    result = job.get("result")
    version = result.get("version") if isinstance(result, dict) else None
    if version is None:
        return None
    name = str(job.get("base") or "").partition(":")[0]
    return f"{name}:{version}" if name and ":" not in str(version) else str(version)


def promotion_text(job: dict) -> str:
    """``"yes (...)"`` or ``"no (why)"`` for a finished job's result."""
    result = job.get("result") if isinstance(job.get("result"), dict) else {}
    promotion = result.get("promotion")
    if result.get("promoted"):
        if isinstance(promotion, dict) and promotion.get("to_version") is not None:
            return f"yes (production {promotion.get('from_version')} -> {promotion['to_version']})"
        return "yes"
    if isinstance(promotion, str) and promotion:
        return f"no ({promotion})"
    if isinstance(promotion, dict):
        error = promotion.get("error")
        reason = (
            promotion.get("reason")
            or promotion.get("message")
            or (error.get("message") if isinstance(error, dict) else error)
        )
        if reason:
            return f"no ({reason})"
    config = job.get("config") if isinstance(job.get("config"), dict) else {}
    if not config.get("auto_promote"):
        return "no (auto-promote was off; use `sitetune models promote`)"
    return "no"


def job_summary(job: dict) -> str:
    """State, timings, error and result of one job (``status`` and the end of ``--follow``)."""
    lines = [progress_line(job, bar=False)]
    base = job.get("base")
    if base:
        lines.append(f"base: {base}")
    times = [
        f"{label} {job[key]}"
        for label, key in (("created", "created_at"), ("started", "started_at"))
        if job.get(key)
    ]
    if job.get("finished_at"):
        times.append(f"finished {job['finished_at']}")
    if times:
        lines.append(", ".join(times))
    if job.get("error"):
        error = job["error"]
        message = error.get("message", error) if isinstance(error, dict) else error
        lines.append(f"error: {message}")
    if isinstance(job.get("result"), dict):
        lines.append(f"version: {_version_ref(job) or '-'}")
        lines.append(f"evaluation: {evaluation_headline(job['result'].get('evaluation'))}")
        lines.append(f"promoted: {promotion_text(job)}")
    return "\n".join(lines)


# -- models ----------------------------------------------------------------------------


def _aliases(aliases: Any) -> str:
    if not isinstance(aliases, dict) or not aliases:
        return "-"
    return ", ".join(f"{alias}={version}" for alias, version in sorted(aliases.items()))


def models_table(answer: dict) -> str:
    """``sitetune models list``."""
    models = answer.get("models") or []
    if not models:
        return "no models"
    rows = [
        (
            m.get("name"),
            (m.get("aliases") or {}).get("production"),
            _aliases(m.get("aliases")),
            ",".join(str(v) for v in m.get("versions") or []),
        )
        for m in models
    ]
    return table(("NAME", "PRODUCTION", "ALIASES", "VERSIONS"), rows)


def model_details(model: dict) -> str:
    """``sitetune models show NAME``: aliases, then each version with its card summary."""
    aliases = model.get("aliases") or {}
    by_version: dict[Any, list[str]] = {}
    for alias, version in aliases.items():
        by_version.setdefault(version, []).append(alias)
    lines = [f"{model.get('name')}  aliases: {_aliases(aliases)}"]
    for version in model.get("versions") or []:
        number = version.get("version")
        card = version.get("card") or {}
        tags = f"  [{', '.join(sorted(by_version[number]))}]" if number in by_version else ""
        lines.append(
            f"version {number}{tags}  created {version.get('created_at')} "
            f"by {version.get('created_by')}  parent {version.get('parent') or '-'}"
        )
        labels = ", ".join(str(label.get("name")) for label in card.get("labels") or [])
        lines.append(f"  {card.get('modality', '-')}  labels: {labels or '-'}")
        metrics = card.get("metrics") or {}
        nested = {k: v for k, v in metrics.items() if isinstance(v, dict)}
        for group, values in nested.items():
            lines.append(f"  {group}: {metric_headline(values, limit=4)}")
        flat = {k: v for k, v in metrics.items() if not isinstance(v, dict)}
        if numeric_metrics(flat):
            lines.append(f"  metrics: {metric_headline(flat, limit=4)}")
    return "\n".join(lines)


def alias_moved(answer: dict) -> str:
    """The answer of promote / rollback."""
    return (
        f"{answer.get('name')}: {answer.get('alias', 'production')} "
        f"{answer.get('from_version') or '-'} -> {answer.get('to_version')}"
    )


def tokens_table(principals: Sequence[dict]) -> str:
    """Principals (never their tokens)."""
    rows = [
        (p["id"][:12], p["name"], ",".join(p["roles"]), p["created_at"], p.get("last_used_at"),
         "revoked" if p.get("revoked_at") else "active")
        for p in principals
    ]  # fmt: skip
    return table(["id", "name", "roles", "created", "last used", "state"], rows)


# -- inference -------------------------------------------------------------------------


def size(n_bytes: float) -> str:
    """``1536`` -> ``"1.5 KB"``."""
    value = float(n_bytes)
    for unit in ("B", "KB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GB"  # pragma: no cover


def _number(value: Any, unit: str, digits: int = 1) -> str:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return "-"
    return f"{value:.{digits}f} {unit}".rstrip()


def _median(phase: Any) -> Any:
    stats = phase.get("thickness_mm") if isinstance(phase, dict) else None
    return stats.get("median") if isinstance(stats, dict) else None


def inference_headline(kind: str, answer: dict) -> str:
    """The result in one line: label volumes, ED/ES thickness, or the lesion burden."""
    if kind == "thickness":
        parts = [f"{role.upper()} median {_number(_median(answer.get(role)), 'mm')}"
                 for role in ("ed", "es") if isinstance(answer.get(role), dict)]  # fmt: skip
        if answer.get("thickening_pct") is not None:
            parts.append(f"thickening {_number(answer['thickening_pct'], '%')}")
        return ", ".join(parts) or "-"
    if kind == "lesions":
        count = answer.get("count")
        noun = "lesion" if count == 1 else "lesions"
        return f"{_cell(count)} {noun}, {_number(answer.get('total_ml'), 'mL', 2)}"
    labels = answer.get("labels") if isinstance(answer.get("labels"), dict) else {}
    return (
        ", ".join(
            f"{name} {_number((v or {}).get('volume_ml'), 'mL')}" for name, v in labels.items()
        )
        or "-"
    )


def inference_summary(kind: str, answer: dict, output_dir: str, written: Sequence[str]) -> str:
    """One case's result (``sitetune segment|thickness|lesions`` on one input)."""
    model = answer.get("model") if isinstance(answer.get("model"), dict) else None
    made_by = f"{model.get('name')}:{model.get('version')}" if model else "mask"
    lines = [f"result {answer.get('result_id')}  ({made_by}, {_cell(answer.get('backend'))})"]
    if kind == "thickness":
        rows = [
            (p.get("index"), p.get("role"), *(((p.get("thickness_mm") or {}).get(k))
             for k in ("median", "p95", "max")), (p.get("volumes_ml") or {}).get("myocardium"),
             (p.get("volumes_ml") or {}).get("blood_pool"))
            for p in answer.get("phases") or [] if isinstance(p, dict)
        ]  # fmt: skip
        headers = ("PHASE", "ROLE", "MEDIAN_MM", "P95_MM", "MAX_MM", "MYO_ML", "POOL_ML")
        lines += [table(headers, rows), inference_headline(kind, answer)]
    elif kind == "lesions":
        lines.append(inference_headline(kind, answer))
        rows = [(les.get("id"), les.get("volume_ml"),
                 " ".join(f"{c:.1f}" for c in les.get("centroid_mm") or []))
                for les in answer.get("lesions") or [] if isinstance(les, dict)]  # fmt: skip
        if rows:
            lines.append(table(("LESION", "VOLUME_ML", "CENTROID_MM"), rows))
    else:
        labels = answer.get("labels") if isinstance(answer.get("labels"), dict) else {}
        rows = [(name, (v or {}).get("volume_ml")) for name, v in labels.items()]
        lines.append(table(("LABEL", "VOLUME_ML"), rows))
    lines.append(f"written to {output_dir}: {', '.join(written)}")
    return "\n".join(lines)


def cases_table(kind: str, cases: Sequence[dict]) -> str:
    """A batch: each case's status, its result in one line (or the error) and its folder.

    ``cases``: ``{case, status, result | error {code, message}, output_dir}`` each."""
    rows = []
    for case in cases:
        error = case.get("error")
        if error:
            what = f"{error.get('code')}: {error.get('message')}"
        else:
            what = inference_headline(kind, case.get("result") or {})
        rows.append((case.get("case"), case.get("status"), what, case.get("output_dir")))
    done = sum(case.get("status") == "done" for case in cases)
    footer = f"{done} of {len(cases)} cases done"
    return table(("CASE", "STATUS", "RESULT", "OUTPUT"), rows) + "\n" + footer
