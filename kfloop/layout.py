"""Every location in the workspace, named once.

The workspace is one storage root (a local directory or an S3 bucket + prefix) shared by every step, command
and server. Each key below is built here and nowhere else, so two stages agree on where a thing lives without
importing each other, and a change of layout is one edit. Keys are relative to the storage root, with ``/``
separators; a prefix has no trailing slash.

    lake/<dataset>/                      raw and clean Parquet datasets (+ _manifest.json, _lock, _active/)
    quarantine/<dataset>/<run>.parquet   rows ingest could not read, with the reason
    quarantine/<dataset>_contract/...    rows the data contract quarantined
    quarantine/<dataset>_too_late/...    new rows older than the allowed lateness, with the reason
    reports/<dataset>/quality/           data-quality reports (<run>.json/.html/.md, latest.json)
    reports/<model>/periodic/            periodic reports (<id>.json/.html/.pdf, latest.json, deliveries/<id>.json)
    reports/catalog.{json,html}          the catalog (`kfloop catalog`): datasets, feature views, models, now
    features/<view>.*                    Feast offline source, progress state, stale entities, lease
    features/freshness/<view>/<hour>/    minute samples of event → online lag, one object per writer
    feast/                               Feast registry and the SQLite online store (embedded default)
    training_sets/<service>/<run>/       point-in-time training sets (<split>.parquet, manifest), latest.json
    registry/<model>/                    model versions (<vN>/model.json, files incl. the reference profile,
                                         decision.json), stages.json
    <inference_log.prefix>/<model>/      the inference log (prefix from config, default inference-log)
    monitoring/<model>/                  drift checks (checks/<id>.json/.prom), their Evidently snapshots and
                                         reports (evidently/<id>.json/.html), latest.json, latest.prom,
                                         retrain/ (episode markers, last.json, lease, handled alerts),
                                         runs/<run>.json and pipeline_runs.prom (pipeline run records),
                                         requests/<hour>/<writer>.json (serving's request samples),
                                         report.prom (the periodic report's deliveries)
    audit/<kind>/<id>.json               detailed records of one kind (retrain decisions)
    audit/log/<seq>.json, _head.json     the hash-chained audit trail of every state change, one object per record
    lineage/events/<date>/<run>.jsonl    OpenLineage run events of one step run (START, then COMPLETE or FAIL)
    audit/config/<hash>.json, _last.json the configs `config.change` records saw (for the next diff)
    forget/secret.key, tombstones/<h>.json  erasure's keyed-hash secret; one tombstone per erased entity (ingest drops
                                         its rows), named by the keyed hash of key and value, never the value
    evidently_ui/                        the Evidently UI workspace, one project per model (local storage;
                                         with S3 it is ./.kfloop/evidently_ui, filled from the snapshots)
    adhoc/<run>/                         scratch workspaces of `kfloop data check --input FILE`
    .kfloop/                             storage's own probes (e.g. the S3 conditional-write self-test)

Beside a local workspace (or in ``./.kfloop`` when the workspace is S3), ``kfloop run`` keeps kfp.local's
``pipeline_root/`` and the task log ``last-run.log``; a local retrain logs to ``retrain-logs/<run>.log``.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from kfloop.config import Config

LAKE = "lake"
QUARANTINE = "quarantine"
REPORTS = "reports"
FEATURES = "features"
FEAST_DIR = "feast"
TRAINING_SETS = "training_sets"
REGISTRY = "registry"
MONITORING = "monitoring"
AUDIT = "audit"
FORGET = "forget"
LINEAGE = "lineage"
EVIDENTLY_UI = "evidently_ui"
ADHOC = "adhoc"

#: Lake data files are partitioned Hive-style by the event date: ``<dataset>/data/event_date=YYYY-MM-DD/``.
PARTITION_COLUMN = "event_date"

#: The splits of a training set, in the order they are cut from time (oldest rows train).
SPLITS = ("train", "validation", "test")
#: Name of the pointer to the newest run's output, beside the runs it points into.
LATEST = "latest.json"
#: A model version's card, in the registry and in every directory a model is loaded from.
CARD_FILE = "model.json"
#: A model version's reference profile (its training data as the drift check compares it), beside the card.
REFERENCE_PROFILE_FILE = "reference_profile.arrow"
#: The newest drift check's Prometheus metrics (text exposition format), beside the ``latest.json`` pointer.
LATEST_METRICS = "latest.prom"


#: Feast's files under FEAST_DIR in the embedded default (a config may point the registry elsewhere).
FEAST_REGISTRY_FILE = "registry.db"
FEAST_SQLITE_FILE = "online.db"
#: Local working directory when the workspace is not a local directory.
LOCAL_WORKDIR = ".kfloop"
RUN_LOG = "last-run.log"
PIPELINE_ROOT = "pipeline_root"
RETRAIN_LOGS = "retrain-logs"


def local_workdir(storage_type: str, root: str) -> Path:
    """Where local runs keep task logs, kfp.local outputs and scratch: the workspace itself when it is a
    local directory, else ``./.kfloop``."""
    return Path(root if storage_type == "local" else LOCAL_WORKDIR)


def retrain_log_path(workdir: Path, run_name: str) -> Path:
    """The log of a retrain started locally (``kfloop run`` in its own process), beside the task log."""
    return workdir / RETRAIN_LOGS / f"{run_name}.log"


def probe_key(token: str) -> str:
    """A throw-away object a storage backend writes to test what the endpoint supports."""
    return f"{LOCAL_WORKDIR}/conditional-write-probe/{token}"


# --- lake ----------------------------------------------------------------------------------------
def dataset_prefix(dataset: str) -> str:
    return f"{LAKE}/{dataset}"


def manifest_key(dataset: str) -> str:
    """The dataset's manifest: the files that make up its current version."""
    return f"{dataset_prefix(dataset)}/_manifest.json"


def data_prefix(dataset: str) -> str:
    """The dataset's Parquet files, partitioned by event date."""
    return f"{dataset_prefix(dataset)}/data"


def part_key(dataset: str, date: str, run_id: str, n: int) -> str:
    """Where a run stores a data file; the run id in the name lets cleanup tell whose file it is."""
    return f"{data_prefix(dataset)}/{PARTITION_COLUMN}={date}/part-{run_id}-{n:05d}.parquet"


def part_run_id(key: str) -> str | None:
    """The run that wrote a data file (see :func:`part_key`); None for a name no run of ours gives."""
    name = key.rsplit("/", 1)[-1]
    if not (name.startswith("part-") and name.endswith(".parquet")):
        return None
    run, _, n = name[len("part-") : -len(".parquet")].rpartition("-")
    return run if run and n.isdigit() else None


def lake_lock_key(dataset: str) -> str:
    """The lease every commit to the dataset's manifest holds."""
    return f"{dataset_prefix(dataset)}/_lock"


def active_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/_active"


def active_key(dataset: str, run_id: str) -> str:
    """A running writer's heartbeat: cleanup never deletes the staged files of a run that is alive."""
    return f"{active_prefix(dataset)}/{run_id}.json"


def run_records_prefix(dataset: str) -> str:
    return f"{dataset_prefix(dataset)}/_runs"


def run_record_key(dataset: str, run_id: str) -> str:
    """What one committed run did (rows, files, lease token), written just before the manifest."""
    return f"{run_records_prefix(dataset)}/{run_id}.json"


def clean_dataset(dataset: str) -> str:
    """Name of the clean dataset the validate stage derives from a lake dataset."""
    return f"{dataset}_clean"


# --- quarantine and reports ----------------------------------------------------------------------
def quarantine_prefix(dataset: str) -> str:
    return f"{QUARANTINE}/{dataset}"


def quarantine_key(dataset: str, run_id: str) -> str:
    """Rows one ingest run could not read or cast, with the reason and the raw record."""
    return f"{quarantine_prefix(dataset)}/{run_id}.parquet"


def contract_quarantine_key(dataset: str, run_id: str) -> str:
    """Rows one validate run quarantined under the data contract."""
    return f"{quarantine_prefix(dataset + '_contract')}/{run_id}.parquet"


def too_late_prefix(dataset: str) -> str:
    return quarantine_prefix(dataset + "_too_late")


def dataset_names(dataset: str) -> set[str]:
    """Every name a lake dataset occupies under ``lake/`` and ``quarantine/``: two datasets (the source and
    the attribute tables) must not share one."""
    return {dataset, clean_dataset(dataset), dataset + "_contract", dataset + "_too_late"}


def too_late_key(dataset: str, run_id: str) -> str:
    """New rows one ingest run kept out of the lake as older than the allowed lateness, with the reason."""
    return f"{too_late_prefix(dataset)}/{run_id}.parquet"


def report_prefix(dataset: str) -> str:
    """Data-quality reports of a dataset: ``<run>.{json,html,md}`` and ``latest.json``."""
    return f"{REPORTS}/{dataset}/quality"


def report_key(dataset: str, run_id: str, ext: str) -> str:
    """One run's report in one format: ``json`` (the record), ``html`` (the page), ``md`` (the step's summary)."""
    return f"{report_prefix(dataset)}/{run_id}.{ext}"


def periodic_report_prefix(model: str) -> str:
    """Periodic reports of a model (``kfloop report``): ``<id>.{json,html,pdf}``, ``latest.json``, ``deliveries/``."""
    return f"{REPORTS}/{model}/periodic"


def catalog_key(ext: str) -> str:
    """The catalog as last written (``json``: its data, ``html``: the page); a dataset or model name never has a
    dot, so it cannot clash with ``reports/<dataset>/``."""
    return f"{REPORTS}/catalog.{ext}"


def periodic_report_key(model: str, report_id: str, ext: str) -> str:
    """One periodic report in one format: ``json`` (its data), ``html`` (the page), ``pdf`` (the page printed)."""
    return f"{periodic_report_prefix(model)}/{report_id}.{ext}"


def report_delivery_key(model: str, record_id: str) -> str:
    """One delivery of a periodic report to the alert webhooks (append-only: what the delivery metrics count)."""
    return f"{periodic_report_prefix(model)}/deliveries/{record_id}.json"


# --- features and Feast --------------------------------------------------------------------------
def offline_key(view: str) -> str:
    """The Feast offline source of a view: one Parquet file, replaced atomically on each update."""
    return f"{FEATURES}/{view}.parquet"


def state_key(view: str) -> str:
    """Per-view progress: newest event computed, newest materialized, row counts."""
    return f"{FEATURES}/{view}.state.json"


def stale_key(view: str) -> str:
    """Entities whose online values the feature stage invalidated (rows recomputed or gone), until the
    next materialization rewrites or deletes them: one Parquet column of entity keys."""
    return f"{FEATURES}/{view}.stale.parquet"


def freshness_prefix(view: str) -> str:
    """The view's freshness history: one object per writer per hour of minute samples (event → online lag)."""
    return f"{FEATURES}/freshness/{view}"


def freshness_key(view: str, hour: str, writer: str) -> str:
    """One writer's minute samples of one hour (``hour``: ``YYYY-MM-DDTHH``, UTC): each writer owns its objects,
    so workers and materialize runs never overwrite each other's samples."""
    return f"{freshness_prefix(view)}/{hour}/{writer}.json"


def view_lease_key(view: str) -> str:
    """The lease one feature or materialize run holds while it changes the view's table, state and online rows."""
    return f"{FEATURES}/{view}.lease"


def feast_project(config: Config) -> str:
    """The Feast project (it prefixes every online-store key and table): the kfloop project with dashes as
    underscores, since Feast project names are identifiers."""
    return config.features.feast_project or config.project.replace("-", "_")


# --- training sets -------------------------------------------------------------------------------
def training_set_prefix(service: str) -> str:
    """All training sets of a Feast feature service, and ``latest.json`` pointing at the newest."""
    return f"{TRAINING_SETS}/{service}"


def training_set_run_prefix(service: str, run_id: str) -> str:
    return f"{training_set_prefix(service)}/{run_id}"


def split_key(service: str, run_id: str, split: str) -> str:
    return f"{training_set_run_prefix(service, run_id)}/{split}.parquet"


def training_set_manifest_key(service: str, run_id: str) -> str:
    """What a training set is: features, label, rows and time range per split, content hash, lineage."""
    return f"{training_set_run_prefix(service, run_id)}/manifest.json"


def latest_key(prefix: str) -> str:
    """The ``latest.json`` pointer under a prefix of runs (training sets, quality reports)."""
    return f"{prefix}/{LATEST}"


# --- model registry ------------------------------------------------------------------------------
def registry_prefix(model: str) -> str:
    return f"{REGISTRY}/{model}"


def model_version_prefix(model: str, version: str) -> str:
    return f"{registry_prefix(model)}/{version}"


def model_card_key(model: str, version: str) -> str:
    """The version's card (metrics, lineage, file checksums); its presence is what makes a version exist."""
    return f"{model_version_prefix(model, version)}/{CARD_FILE}"


def decision_key(model: str, version: str) -> str:
    """The evaluation gate's decision on a version: the record of why it was or was not promoted."""
    return f"{model_version_prefix(model, version)}/decision.json"


def stages_key(model: str) -> str:
    """Which version is champion, every version's stage, and the promotion history."""
    return f"{registry_prefix(model)}/stages.json"


# --- serving and monitoring ----------------------------------------------------------------------
def inference_log_prefix(log_prefix: str, model: str) -> str:
    """One model's inference log under the configured log prefix."""
    return f"{log_prefix.strip('/')}/{model}"


def monitoring_prefix(model: str) -> str:
    """Drift snapshots, reports and verdicts of one model."""
    return f"{MONITORING}/{model}"


def drift_checks_prefix(model: str) -> str:
    """Every drift check of one model, named by its (time-sortable) check id."""
    return f"{monitoring_prefix(model)}/checks"


def drift_check_key(model: str, check_id: str, ext: str) -> str:
    """One drift check's output: ``json`` (the verdict record) or ``prom`` (its Prometheus metrics)."""
    return f"{drift_checks_prefix(model)}/{check_id}.{ext}"


def drift_snapshots_prefix(model: str) -> str:
    """The Evidently snapshots and HTML reports of a model's drift checks, named by check id."""
    return f"{monitoring_prefix(model)}/evidently"


def drift_snapshot_key(model: str, check_id: str) -> str:
    """One drift check's Evidently snapshot (JSON, as an Evidently workspace stores it)."""
    return f"{drift_snapshots_prefix(model)}/{check_id}.json"


def drift_report_key(model: str, check_id: str) -> str:
    """One drift check's Evidently HTML report."""
    return f"{drift_snapshots_prefix(model)}/{check_id}.html"


def model_snapshot_name(version: str) -> str:
    """The name a version's model-metrics snapshot has among the check snapshots (no check id looks like it)."""
    return f"model-{version}"


def evidently_workspace(storage_type: str, root: str) -> Path:
    """The Evidently UI workspace directory (one project per model): inside a local workspace, else
    ``./.kfloop/evidently_ui`` (Evidently's workspace is a directory; ``kfloop dashboard`` fills it from the
    snapshots stored in the workspace)."""
    return local_workdir(storage_type, root) / EVIDENTLY_UI


def retrain_prefix(model: str) -> str:
    """Retraining state of one model: episode markers, the last run started, alerts already handled."""
    return f"{monitoring_prefix(model)}/retrain"


def retrain_lease_key(model: str, version: str, episode: str) -> str:
    """The lease a retrain decision holds: one per champion version and drift episode."""
    return f"{retrain_prefix(model)}/lease/{version}/{episode}"


def retrain_episode_key(model: str, version: str, episode: str) -> str:
    """The run a drift episode started (its presence means the episode has had its one retrain)."""
    return f"{retrain_prefix(model)}/episodes/{version}/{episode}.json"


def retrain_last_key(model: str) -> str:
    """The newest retrain started, whatever the episode: where the cooldown counts from."""
    return f"{retrain_prefix(model)}/last.json"


def alert_delivery_key(model: str, digest: str) -> str:
    """An Alertmanager alert already handled (digest of groupKey, fingerprint, startsAt), created exclusively."""
    return f"{retrain_prefix(model)}/alerts/{digest}.json"


def latest_metrics_key(model: str) -> str:
    """The newest drift check's metrics under a fixed name (what a textfile collector or scraper reads)."""
    return f"{monitoring_prefix(model)}/{LATEST_METRICS}"


def pipeline_runs_prefix(model: str) -> str:
    """One record per training pipeline run (``kfloop run``): what the pipeline-success SLO counts."""
    return f"{monitoring_prefix(model)}/runs"


def pipeline_run_key(model: str, run_id: str) -> str:
    """One run's record (start, end, outcome, failed gate, reason), rewritten atomically when the run ends."""
    return f"{pipeline_runs_prefix(model)}/{run_id}.json"


def pipeline_runs_metrics_key(model: str) -> str:
    """The runs counted by outcome, as a Prometheus counter (kfloop_pipeline_runs_total) for a textfile collector."""
    return f"{monitoring_prefix(model)}/pipeline_runs.prom"


def request_samples_prefix(model: str) -> str:
    """The model's served requests per minute (count, server errors, request-time buckets): what the serving
    SLOs count without Prometheus. One object per serving process per hour."""
    return f"{monitoring_prefix(model)}/requests"


def request_samples_key(model: str, hour: str, writer: str) -> str:
    """One serving process's minute samples of one hour (``hour``: ``YYYY-MM-DDTHH``, UTC): each process owns
    its objects, so replicas (and a restarted replica, whose counters start again at zero) never overwrite
    each other's counts."""
    return f"{request_samples_prefix(model)}/{hour}/{writer}.json"


def audit_prefix() -> str:
    return AUDIT


def audit_kind_prefix(kind: str) -> str:
    """The audit records of one kind (``retrain``: retraining decisions)."""
    return f"{AUDIT}/{kind}"


def audit_key(kind: str, record_id: str) -> str:
    """One append-only audit record (a new object each, never rewritten): ``record_id`` sorts by time."""
    return f"{audit_kind_prefix(kind)}/{record_id}.json"


def audit_log_prefix() -> str:
    return f"{AUDIT}/log"


def audit_log_key(seq: int) -> str:
    """Record ``seq`` of the hash-chained audit trail (created once, never rewritten; zero-padded so keys sort)."""
    return f"{audit_log_prefix()}/{seq:012d}.json"


def audit_head_key() -> str:
    """The newest record's number and hash as last written: a hint for appends, and how a cut-off tail is noticed."""
    return f"{audit_log_prefix()}/_head.json"


def audit_config_key(config_hash: str) -> str:
    """A config as one ``config.change`` record saw it (content-addressed), so the next change can be diffed."""
    return f"{AUDIT}/config/{config_hash}.json"


def audit_config_last_key() -> str:
    """Which ``config.change`` record is the newest (its number and hash): spares a walk of the whole trail."""
    return f"{AUDIT}/config/_last.json"


def audit_config_lock_key() -> str:
    """The lease two runs starting together take, so one config change is recorded once."""
    return f"{AUDIT}/config/_lock"


def forget_secret_key() -> str:
    """The workspace's secret for erasure's keyed hashes (HMAC): created on the first ``kfloop forget``."""
    return f"{FORGET}/secret.key"


def tombstone_prefix() -> str:
    return f"{FORGET}/tombstones"


def tombstone_key(digest: str) -> str:
    """One erased entity (``digest``: keyed hash of its key and value): ingest drops rows that hash to it."""
    return f"{tombstone_prefix()}/{digest}.json"


def lineage_events_prefix() -> str:
    return f"{LINEAGE}/events"


def lineage_events_key(date: str, run_id: str) -> str:
    """The OpenLineage events of one step run (``date``: its start, YYYY-MM-DD), rewritten whole at each event."""
    return f"{lineage_events_prefix()}/{date}/{run_id}.jsonl"


def adhoc_prefix(run_id: str) -> str:
    """The scratch workspace of one ``kfloop data check --input FILE`` (its own lake, kept for review)."""
    return f"{ADHOC}/{run_id}"
