"""Numbers in a lesson's prose that none of its outputs print: after a retraining, the sentences to re-read.

    python experiments/prose_numbers.py notebooks/0*.ipynb

A decimal (0.91, 12.3), percentage (45%) or head (L1H0) in a markdown cell is listed with its cell when no output of the same
notebook contains it (rounded outputs count: 0.913 in an output covers 0.91 in prose). Thresholds and constants in
prose (FVU <= 0.10) are listed too; read them, do not silence them."""

import json
import re
import sys

NUMBER = re.compile(r"(?<![\w.])-?\d+\.\d+|\d+(?:\.\d+)?%|\bL\dH\d+\b")


def outputs_text(cells: list[dict]) -> str:
    parts = []
    for c in cells:
        for o in c.get("outputs", []):
            parts.append("".join(o.get("text", "")))
            for k, v in o.get("data", {}).items():
                if k.startswith("text/plain") or k == "text/html" or k == "text/markdown":
                    parts.append("".join(v))
        if c["cell_type"] == "code":
            parts.append("".join(c["source"]))  # a constant the code sets is not a result
    return "\n".join(parts)


def printed_forms(text: str) -> set[str]:
    """Every printed number, and each rounded to fewer decimals (and as a percentage)."""
    forms = set()
    forms |= set(re.findall(r"L\dH\d+", text))
    for m in re.finditer(r"-?\d+\.\d+|-?\d+", text):
        s = m.group()
        forms.add(s)
        if "." in s:
            x = float(s)
            for d in range(len(s.split(".")[1])):
                forms.add(f"{x:.{d}f}")
            for d in range(3):
                forms.add(f"{100 * x:.{d}f}%")
    return forms


def main(paths: list[str]) -> None:
    for path in paths:
        cells = json.load(open(path))["cells"]
        forms = printed_forms(outputs_text(cells))
        for i, c in enumerate(cells):
            if c["cell_type"] != "markdown":
                continue
            text = "".join(c["source"])
            missing = [n for n in NUMBER.findall(text) if n.lstrip("-") not in forms and n not in forms]
            if missing:
                print(f"{path} cell {i} ({c.get('id', '')}): {', '.join(missing)}")


if __name__ == "__main__":
    main(sys.argv[1:])
