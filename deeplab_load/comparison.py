"""Baseline-vs-boosted per-class IoU comparison, laid out like the paper's Table 1.

Inputs are `metrics.results_dict` results (results.json of `deeplab_load.evaluate` or of a run).
"""

MEAN_COLUMN = "mIoU"


def compare(results_a, results_b, path_a="A", path_b="B"):
    """Rows ``(name, iou_a, iou_b)`` in percent (None where a class has no IoU), mIoU last.

    Raises ValueError if the two results do not have the same class list.
    """
    classes_a, classes_b = list(results_a["class_names"]), list(results_b["class_names"])
    if classes_a != classes_b:
        only_a = [c for c in classes_a if c not in classes_b]
        only_b = [c for c in classes_b if c not in classes_a]
        raise ValueError(f"class lists differ: {path_a} has {len(classes_a)} classes, {path_b} "
                         f"has {len(classes_b)}; only in {path_a}: {only_a}, only in {path_b}: "
                         f"{only_b}" + ("" if only_a or only_b else " (different order)"))

    def percent(value):
        return None if value is None else 100.0 * value

    rows = [(name, percent(results_a["per_class_iou"][name]),
             percent(results_b["per_class_iou"][name])) for name in classes_a]
    rows.append((MEAN_COLUMN, percent(results_a["miou"]), percent(results_b["miou"])))
    return rows


def better(value_a, value_b):
    """0 or 1 for the strictly better of two percentages rounded to 2 decimals, None if tied."""
    if value_a is None or value_b is None or round(value_a, 2) == round(value_b, 2):
        return None
    return 0 if value_a > value_b else 1


def _cell(value):
    return "n/a" if value is None else f"{value:.2f}"


def format_text(rows, names):
    """Console table: class, both values (better marked with *), difference B - A."""
    width = max(len(row[0]) for row in rows)
    col = max(9, *(len(name) + 1 for name in names))
    lines = [f"{'class':<{width}}  {names[0]:>{col}}  {names[1]:>{col}}  {'diff':>7}"]
    lines.append("-" * len(lines[0]))
    for name, value_a, value_b in rows:
        if name == MEAN_COLUMN:
            lines.append("-" * len(lines[0]))
        winner = better(value_a, value_b)
        cells = [_cell(v) + ("*" if winner == i else " ") for i, v in enumerate((value_a, value_b))]
        diff = "" if value_a is None or value_b is None else f"{value_b - value_a:+.2f}"
        lines.append(f"{name:<{width}}  {cells[0]:>{col}}  {cells[1]:>{col}}  {diff:>7}")
    return "\n".join(lines)


def format_markdown(rows, names, columns_per_block=11):
    """Paper Table 1 layout: blocks of class columns, one row per method, better value bold."""
    blocks = []
    for start in range(0, len(rows), columns_per_block):
        block = rows[start:start + columns_per_block]
        header = "| Method | " + " | ".join(row[0] for row in block) + " |"
        rule = "|---|" + "---:|" * len(block)
        lines = [header, rule]
        for index, name in enumerate(names):
            cells = []
            for _, value_a, value_b in block:
                value = (value_a, value_b)[index]
                text = _cell(value)
                cells.append(f"**{text}**" if better(value_a, value_b) == index else text)
            lines.append(f"| {name} | " + " | ".join(cells) + " |")
        blocks.append("\n".join(lines))
    return "\n\n".join(blocks) + "\n"
