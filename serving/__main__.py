"""The cluster components: ``python -m kfloop.serving transformer|predictor|log-sink``.

The InferenceService runs each as its own container; the config arrives as JSON in ``KFLOOP_CONFIG_JSON``
(secrets as the env vars it names), and KServe's controller passes its usual flags (``--model_name``,
``--predictor_host``, ``--http_port`` …), parsed here with KServe's own parser.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from kfloop.config import Config, config_from_json, load_config
from kfloop.errors import ConfigError


def _config(path: str | None) -> Config:
    if path:
        return load_config(path)
    text = os.environ.get("KFLOOP_CONFIG_JSON")
    if not text:
        raise ConfigError("no config: set KFLOOP_CONFIG_JSON (the InferenceService does) or pass --config")
    return config_from_json(text)


def main(argv: list[str] | None = None) -> None:
    from kfloop._prometheus import drop_inherited_feast_dir
    from kfloop.serving._kserve import import_kserve

    drop_inherited_feast_dir()
    argv = sys.argv[1:] if argv is None else argv
    import_kserve()  # before any kserve import: KServe parses sys.argv at its first import
    import kserve.model_server as kserve_server
    from kserve.logging import logger as log

    from kfloop.serving.champion import input_mismatch
    from kfloop.serving.predictor import Predictor
    from kfloop.serving.server import every, open_inference_log, open_lookup, open_request_samples, run_server
    from kfloop.serving.transformer import Transformer
    from kfloop.storage import open_storage, resolve_credentials

    ours = argparse.ArgumentParser(prog="python -m kfloop.serving", add_help=True)
    ours.add_argument("role", choices=["transformer", "predictor", "log-sink"])
    ours.add_argument("--config", default=None, help="kfloop.yaml (default: $KFLOOP_CONFIG_JSON)")
    ours.add_argument("--model_dir", default="/mnt/models", help="predictor: the version's files")
    args, rest = ours.parse_known_args(argv)
    if args.role == "log-sink":
        from kfloop.serving.log_sink import main as sink_main

        sink_main(rest)
        return
    kargs, _ = kserve_server.parser.parse_known_args(rest)
    config = _config(args.config)
    name = config.training.model_name
    http_port, grpc_port = kargs.http_port, kargs.grpc_port
    if args.role == "predictor":
        predictor = Predictor(name, Path(args.model_dir), max_rows=config.serving.max_batch_rows)
        predictor.load()
        mismatch = input_mismatch(config, predictor.model)
        if mismatch:  # serving it would fail every request: not ready, saying why
            log.error("%s; not ready", mismatch)
            predictor.refuse(mismatch)
        run_server(
            config,
            [predictor],
            http_port=http_port,
            grpc_port=grpc_port,
            background=[],
            on_stop=lambda: None,
            not_ready=lambda: predictor.not_ready_reason or None,
        )
        return
    from kserve.predictor_config import PredictorConfig

    creds = resolve_credentials(config.storage, os.environ) if config.storage.type == "s3" else None
    storage = open_storage(config.storage, creds)
    lookup = open_lookup(config, storage, os.environ)
    # with a KServe request logger configured, the sink writes the log; otherwise the transformer does
    log = None if config.serving.inference_log.sink_url else open_inference_log(config, storage)
    transformer = Transformer(config, lookup, predictor=None, log=log)
    transformer.load()
    transformer.probe_store()
    # the transformer answers the client (the predictor behind it counts the same requests again): it records them
    samples = open_request_samples(config, storage)

    def stop() -> None:
        samples.close()
        if log is not None:
            log.close()

    predictor_config = PredictorConfig(
        predictor_host=kargs.predictor_host,
        predictor_protocol=kargs.predictor_protocol,
        predictor_use_ssl=kargs.predictor_use_ssl,
        predictor_request_timeout_seconds=kargs.predictor_request_timeout_seconds,
        predictor_request_retries=kargs.predictor_request_retries,
        predictor_health_check=kargs.enable_predictor_health_check,
    )

    run_server(
        config,
        [transformer],
        not_ready=transformer.not_ready_reason,
        warm_up=True,
        http_port=http_port,
        grpc_port=grpc_port,
        background=[lambda: every(config.serving.store_check_seconds, transformer.probe), samples.run],
        on_stop=stop,
        predictor_config=predictor_config,
    )


if __name__ == "__main__":
    main()
