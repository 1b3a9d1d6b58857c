"""``kfloop lineage``'s two walks over the graph of :mod:`kfloop.lineage.graph`.

Back from a model version: the training set it was trained on, that set's feature views and clean dataset version,
the data contract that clean version passed, and the raw source files (with their hashes) of the ingest runs in
the lake version it was validated from. Forward from a source file: every model version whose back-walk reaches
it. Each hop uses the events; where they are missing (a workspace from before lineage, ``transport: none``, a
lost file) it falls back to the workspace's own records (model cards, training-set manifests, lake manifests) and
the node says ``origin: records``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from kfloop import lake, layout
from kfloop.config import Config
from kfloop.lineage.graph import EventIndex, facet, load_index, version_of
from kfloop.lineage.steps import lake_runs, source_dataset, view_names
from kfloop.registry import ModelRegistry
from kfloop.storage import Storage

EVENTS, RECORDS = "events", "records"


@dataclass
class Node:
    """One node of a walk: what it is, its name and version, where the answer came from, and what it came from."""

    kind: str  # model | training_set | feature_view | clean_dataset | contract | raw_dataset | source_file
    name: str
    version: str | None
    origin: str
    details: dict = field(default_factory=dict)
    children: list[Node] = field(default_factory=list)

    def to_dict(self) -> dict:
        return {
            "kind": self.kind,
            "name": self.name,
            "version": self.version,
            "origin": self.origin,
            "details": self.details,
            "children": [c.to_dict() for c in self.children],
        }

    def walk(self) -> list[Node]:
        """This node and every node under it, depth first."""
        return [self, *(n for c in self.children for n in c.walk())]


class Walker:
    """The walks over one workspace (its events read once)."""

    def __init__(self, config: Config, storage: Storage, index: EventIndex | None = None) -> None:
        self.config = config
        self.storage = storage
        self.index = index or load_index(storage, config.governance.lineage.namespace_for(config.project))

    # --- back ------------------------------------------------------------------------------------------------
    def back(self, model: str, version: str) -> Node:
        """The lineage of ``model`` ``version`` (ModelNotFoundError when the registry does not know it)."""
        mv = ModelRegistry(self.storage, model).get(version)
        card = mv.card
        train = self.index.producer("train", layout.registry_prefix(model), version)
        service = (card.get("feature_service") or {}).get("name") or self.config.features.service
        if train is not None:
            ts = next((version_of(i) for i in train.inputs if i["name"] == layout.training_set_prefix(service)), None)
            origin = EVENTS
        else:
            ts, origin = (card.get("training_set") or {}).get("run_id"), RECORDS
        node = Node("model", model, version, origin, {"stage": mv.stage, "created": card.get("created")})
        contract = ((card.get("lineage") or {}).get("contract") or {}).get("hash")
        if ts:
            node.children.append(self._training_set(service, ts, contract))
        return node

    def _training_set(self, service: str, run_id: str, contract: str | None) -> Node:
        run = self.index.producer("training_set", layout.training_set_prefix(service), run_id)
        clean_name = layout.clean_dataset(self.config.source.dataset)
        if run is not None:
            views = [i["name"] for i in run.inputs if i["name"].startswith(layout.FEATURES + "/")]
            clean = next((version_of(i) for i in run.inputs if i["name"] == layout.dataset_prefix(clean_name)), None)
            node = Node("training_set", layout.training_set_prefix(service), run_id, EVENTS)
            report = None
        else:
            manifest = self._json(layout.training_set_manifest_key(service, run_id))
            node = Node("training_set", layout.training_set_prefix(service), run_id, RECORDS)
            if manifest is None:
                node.details["missing"] = "no events and no manifest (erased or expired)"
                return node
            views = [layout.offline_key(v) for v in view_names(self.config)]
            clean, report = manifest.get("input_content_hash"), manifest.get("quality_report")
            node.details["rows"] = sum((manifest.get("rows") or {}).values())
        for name in views:
            view = Path(name).name.removesuffix(".parquet")
            node.children.append(Node("feature_view", view, None, node.origin, {"offline": name}))
        if clean:
            node.children.append(self._clean(clean, report, contract))
        return node

    def _clean(self, version: str, report: str | None, contract: str | None) -> Node:
        dataset = self.config.source.dataset
        name = layout.dataset_prefix(layout.clean_dataset(dataset))
        run = self.index.producer("validate", name, version)
        if run is not None:
            out = next(o for o in run.outputs if o["name"] == name)
            raw = next((i for i in run.inputs if i["name"] == layout.dataset_prefix(dataset)), {})
            terms = facet(out, "kfloop_contract")
            node = Node("clean_dataset", name, version, EVENTS, {"validate_run": run.kfloop_run_id})
            node.children.append(
                Node(
                    "contract",
                    terms.get("hash", "?")[:12],
                    terms.get("hash"),
                    EVENTS,
                    {k: terms.get(k) for k in ("report", "gatePassed", "qualityScore", "checks")},
                )
            )
            node.children.append(self._raw(version_of(raw), facet(raw, "kfloop_lakeRuns").get("runs", []), EVENTS))
            return node
        clean = lake.read_manifest(self.storage, layout.clean_dataset(dataset))
        runs = clean.runs if clean else []
        found = next((r for r in runs if report and r.get("report") == report), None)
        if found is None and clean is not None and clean.content_hash == version and runs:
            found = runs[-1]
        node = Node("clean_dataset", name, version, RECORDS)
        if found is None:
            node.details["missing"] = "no events and no clean-manifest run for this version"
            return node
        node.details["validate_run"] = found.get("run_id")
        node.children.append(
            Node("contract", (contract or "?")[:12], contract, RECORDS, {"report": found.get("report")})
        )
        ids = lake_runs(self.storage, self.config, found.get("input_commits"))
        node.children.append(self._raw(found.get("input_content_hash"), ids, RECORDS))
        return node

    def _raw(self, version: str | None, ingest_runs: list[str], origin: str) -> Node:
        node = Node("raw_dataset", layout.dataset_prefix(self.config.source.dataset), version, origin)
        manifest = None
        for run_id in ingest_runs:
            run = self.index.ingest_run(run_id)
            if run is not None and run.inputs:
                src = run.inputs[0]
                file = facet(src, "kfloop_sourceFile")
                details = {"uri": file.get("uri"), "sha256": file.get("sha256"), "ingest_run": run_id}
                node.children.append(Node("source_file", src["name"], file.get("sha256"), EVENTS, details))
                continue
            manifest = manifest or lake.read_manifest(self.storage, self.config.source.dataset)
            rec = next((r for r in (manifest.runs if manifest else []) if r.get("run_id") == run_id), {})
            uri, sha = rec.get("source", "?"), rec.get("source_sha256")
            details = {"uri": uri, "sha256": sha, "ingest_run": run_id}
            node.children.append(Node("source_file", source_dataset(uri)[1], sha, RECORDS, details))
        return node

    # --- forward ---------------------------------------------------------------------------------------------
    def forward(self, source: str) -> Node:
        """Every model version (of the config's model and any other a train event names) whose lineage reaches the
        source file ``source`` (a path, URI, object key or sha256), newest last."""
        node = Node("source_file", source, None, EVENTS)
        models = {self.config.training.model_name}
        models |= {o["name"].removeprefix(layout.REGISTRY + "/") for r in self.index.by_job("train") for o in r.outputs}
        for model in sorted(models):
            for mv in ModelRegistry(self.storage, model).list():
                back = self.back(model, mv.version)
                hits = [n for n in back.walk() if n.kind == "source_file" and _matches(n, source)]
                if hits:
                    node.version = node.version or hits[0].version
                    node.details.setdefault("uri", hits[0].details.get("uri"))
                    origin = RECORDS if any(n.origin == RECORDS for n in back.walk()) else EVENTS
                    ts = next((n for n in back.walk() if n.kind == "training_set"), None)
                    details = {"stage": mv.stage, "training_set": ts.version if ts else None}
                    node.children.append(Node("model", model, mv.version, origin, details))
        return node

    def _json(self, key: str) -> dict | None:
        try:
            return json.loads(self.storage.read_text(key))
        except (FileNotFoundError, ValueError):
            return None


def _matches(node: Node, source: str) -> bool:
    """``source`` names this file: its URI as ingested, its dataset name (absolute path, object key), its sha256,
    or a trailing part of its path."""
    uri, name = node.details.get("uri") or "", node.name
    if source in (uri, name, node.version):
        return True
    if source_dataset(source)[1] == name:
        return True
    return name.endswith("/" + source.lstrip("/")) or uri.endswith("/" + source.lstrip("/"))
