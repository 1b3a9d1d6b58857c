"""YAML that people read (alert rules, the chart's values, manifests to apply): multi-line strings as ``|``
blocks, everything else plain, whatever another library did to PyYAML's global representers."""

from __future__ import annotations

import yaml

__all__ = ["BlockDumper"]


class BlockDumper(yaml.SafeDumper):
    """A safe dumper writing multi-line strings (PromQL, a ConfigMap's kfloop.yaml) as ``|`` blocks."""


def _str(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


BlockDumper.add_representer(str, _str)
