"""The planted models' task families (``planted_copy``, ``planted_hub``, ``planted_recall``, ``planted_serial``,
``planted_steer``) in the user-task format, deterministic, and their folder beside a planted model. Apart from
the weights (:mod:`~atlas_core.models.planted_build`): they read only the layout's characters and recall map."""

from __future__ import annotations

import json
import random
from pathlib import Path

from atlas_core.models.planted import DIGITS, LOWER, PUNCT, RECALL


def _letters(rng: random.Random, n: int) -> str:
    return "".join(rng.choice(LOWER) for _ in range(n))


def task_families(n_items: int = 16) -> dict[str, dict]:
    """The planted models' four families in the user-task format (deterministic)."""
    rng = random.Random("planted-tasks")
    fams: dict[str, dict] = {}
    items, contrast = [], []
    for i in range(n_items):
        body = list(_letters(rng, 6))
        k, c = rng.randrange(6), LOWER[i % 16]
        body[k] = c.upper()
        items.append({"id": f"copy{i}", "prompt": "^" + "".join(body) + "?", "target": c})
        contrast.append({"prompt": "^" + _letters(rng, 6) + "?", "target": "a"})
    fams["planted_copy"] = {
        "description": "copy the one uppercase letter, lowered, after '?'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        c = LOWER[(3 * i + 1) % 16]
        items.append(
            {"id": f"hub{i}", "prompt": "^" + c * (3 + i % 3) + "!", "target": LOWER[(LOWER.index(c) + 1) % 16]}
        )
        contrast.append({"prompt": "^" + c * (3 + i % 3) + ".", "target": "a"})
    fams["planted_hub"] = {
        "description": "the letter after the repeated one, after '!'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        d = DIGITS[i % len(DIGITS)]
        items.append({"id": f"recall{i}", "prompt": "^" + _letters(rng, 1 + i % 3) + "@" + d, "target": RECALL[d]})
        contrast.append({"prompt": "^" + _letters(rng, 1 + i % 3) + "@" + PUNCT[i % len(PUNCT)], "target": "a"})
    fams["planted_recall"] = {
        "description": "the value of the key digit after '@'",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        body = "".join(random.Random(f"planted-serial/{i}").choice(PUNCT) for _ in range(2 + i % 4))
        items.append({"id": f"serial{i}", "prompt": "^" + body + "#", "target": "Z"})
        contrast.append({"prompt": "^" + body + ".", "target": "Z"})
    fams["planted_serial"] = {
        "description": "'Z' after '#': a head writes a gate that the same layer's MLP reads "
        "(answered by a serial block only)",
        "items": items,
        "contrast": contrast,
    }
    items, contrast = [], []
    for i in range(n_items):
        body = _letters(rng, 2 + i % 4)
        items.append({"id": f"steer{i}", "prompt": "^" + body + "y", "target": "Y"})
        contrast.append({"prompt": "^" + body + "z", "target": "Y"})
    fams["planted_steer"] = {
        "description": "'Y' after 'y' (silent unless steered)",
        "items": items,
        "contrast": contrast,
    }
    return {name: {"family": name, **fam} for name, fam in fams.items()}


def write_tasks(folder: Path) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, fam in task_families().items():
        path = folder / f"{name}.json"
        text = json.dumps(fam, indent=1) + "\n"
        if not path.is_file() or path.read_text() != text:
            path.write_text(text)
    return folder
