"""Re-vendor a CRD's openAPIV3Schema from a local clone: ``python tests/deploy/crds/vendor.py CLONE REF PATH``.

Keeps one compact JSON file per served version (``<group>_<plural>.<version>.json``), without the
``description`` texts (most of the bytes; validation never reads them), with a ``$comment`` naming the source.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
# where a schema maps names to subschemas: a key "description" there is a field, not an annotation
_NAME_MAPS = ("properties", "patternProperties", "definitions", "$defs")


def strip_descriptions(node: Any, *, names: bool = False) -> Any:
    """The schema without annotation ``description`` strings (a field named description is kept)."""
    if isinstance(node, list):
        return [strip_descriptions(x) for x in node]
    if not isinstance(node, dict):
        return node
    if names:
        return {k: strip_descriptions(v) for k, v in node.items()}
    return {
        k: strip_descriptions(v, names=k in _NAME_MAPS)
        for k, v in node.items()
        if not (k == "description" and isinstance(v, str))
    }


def vendor(clone: Path, ref: str, path: str, source: str) -> list[Path]:
    import yaml

    text = subprocess.run(["git", "show", f"{ref}:{path}"], cwd=clone, capture_output=True, text=True, check=True)
    crd = yaml.safe_load(text.stdout)
    written = []
    for version in crd["spec"]["versions"]:
        schema = strip_descriptions(version["schema"]["openAPIV3Schema"])
        commit = subprocess.run(
            ["git", "rev-list", "-n1", ref], cwd=clone, capture_output=True, text=True, check=True
        ).stdout.strip()
        header = f"{crd['spec']['names']['kind']} {version['name']}: {source} {ref} ({commit}) {path}"
        out = HERE / f"{crd['spec']['group']}_{crd['spec']['names']['plural']}.{version['name']}.json"
        out.write_text(json.dumps({"$comment": header, **schema}, separators=(",", ":"), sort_keys=True) + "\n")
        written.append(out)
    return written


if __name__ == "__main__":
    clone, ref, path = sys.argv[1:4]
    source = sys.argv[4] if len(sys.argv) > 4 else Path(clone).name
    for p in vendor(Path(clone), ref, path, source):
        print(p, p.stat().st_size)
