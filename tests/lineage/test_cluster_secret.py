"""Step pods get the OpenLineage backend's token from its Kubernetes Secret when events go over HTTP."""

from __future__ import annotations

from kfloop.cluster_env import secret_env_refs
from kfloop.config import parse_config
from tests.conftest import demo_config


def test_the_lineage_token_is_a_step_secret_only_for_the_http_transport() -> None:
    data = demo_config().model_dump(mode="json")
    data["governance"]["lineage"] = {
        "transport": "http",
        "url": "http://marquez:5000",
        "api_key": {"env": "OPENLINEAGE_API_KEY", "secret_name": "kfloop-lineage", "secret_key": "api-key"},
    }
    refs = secret_env_refs(parse_config(data), online_store=False)
    want = [("OPENLINEAGE_API_KEY", "kfloop-lineage", "api-key")]
    assert [(r.env, r.secret_name, r.secret_key) for r in refs] == want
    data["governance"]["lineage"]["transport"] = "file"
    assert secret_env_refs(parse_config(data), online_store=False) == []
