"""The Filebeat configuration and index template in deploy/filebeat, checked offline.

Neither Filebeat nor Elasticsearch runs here: these tests check that the files parse, that
the inputs read the stack's real log files, and that every field the processes log has a
mapping in the index template.
"""

from __future__ import annotations

import fnmatch
import io
import json
import logging
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from opentelemetry.sdk.trace import TracerProvider

from ops.envoy_listeners import ACCESS_LOG_FORMAT
from ops.stack import Stack
from ops.topology import load_topology
from services.common.errors import FailedPrecondition
from services.common.logs import AUDIT_LOGGER, TraceContextFilter, ecs_formatter
from services.shipment import audit
from services.shipment.domain import Change
from services.shipment.store import TransitionRecord
from services.task.audit import log_task_transition
from services.task.model import TaskInput, TaskRecord

DEPLOY = Path(__file__).resolve().parents[2] / "deploy" / "filebeat"
APP_INPUT = "envios-app"
ENVOY_INPUT = "envios-envoy"


def load_config() -> dict[str, Any]:
    config: dict[str, Any] = yaml.safe_load((DEPLOY / "filebeat.yml").read_text())
    return config


def load_template() -> dict[str, Any]:
    template: dict[str, Any] = json.loads((DEPLOY / "index-template.json").read_text())
    return template


def inputs_by_id() -> dict[str, dict[str, Any]]:
    return {entry["id"]: entry for entry in load_config()["filebeat.inputs"]}


def mapping_of(template: dict[str, Any], dotted: str) -> dict[str, Any] | None:
    """Return the mapping of a field given by its dotted path, or None when unmapped."""
    node: dict[str, Any] = {"properties": template["template"]["mappings"]["properties"]}
    for part in dotted.split("."):
        properties = node.get("properties", {})
        if part not in properties:
            return None
        node = properties[part]
    return node


def leaf_fields(document: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a JSON document to {dotted path: value}; lists count as leaves."""
    leaves: dict[str, Any] = {}
    for key, value in document.items():
        path = f"{prefix}{key}"
        if isinstance(value, dict):
            leaves.update(leaf_fields(value, path + "."))
        else:
            leaves[path] = value
    return leaves


def matching_inputs(path: Path, state_dir: Path) -> list[str]:
    matched = []
    for input_id, entry in inputs_by_id().items():
        for pattern in entry["paths"]:
            if fnmatch.fnmatch(str(path), pattern.replace("${ENVIOS_STATE_DIR}", str(state_dir))):
                matched.append(input_id)
    return matched


def is_envios_process(command: tuple[str, ...]) -> bool:
    module = command[2] if len(command) > 2 and command[1] == "-m" else ""
    return command[0] == sys.executable and module.split(".")[0] in ("services", "gateway")


def test_config_parses_with_unique_inputs() -> None:
    entries = load_config()["filebeat.inputs"]
    ids = [entry["id"] for entry in entries]
    assert len(ids) == len(set(ids))
    assert all(entry["type"] == "filestream" for entry in entries)


def test_app_input_decodes_ndjson_to_root() -> None:
    (parser,) = inputs_by_id()[APP_INPUT]["parsers"]
    assert parser["ndjson"]["target"] == ""
    assert parser["ndjson"]["add_error_key"] is True


def test_output_default_host_local() -> None:
    output = load_config()["output.elasticsearch"]
    assert output["hosts"] == ["${ELASTICSEARCH_URL:http://127.0.0.1:9200}"]


def test_output_index_matches_template() -> None:
    config = load_config()
    template = load_template()
    index = config["output.elasticsearch"]["index"]
    assert any(fnmatch.fnmatch(index, pattern) for pattern in template["index_patterns"])
    assert fnmatch.fnmatch(index, config["setup.template.pattern"])
    assert config["setup.template.json.name"] == config["setup.template.name"]
    assert config["setup.template.json.data_stream"] is True
    assert "data_stream" in template


def test_template_outranks_builtin_logs() -> None:
    # Elasticsearch 8 ships a `logs` template for logs-*-* with priority 100.
    assert load_template()["priority"] > 100


def test_lifecycle_policy_named_and_valid() -> None:
    settings = load_template()["template"]["settings"]
    policy = json.loads((DEPLOY / "ilm-policy.json").read_text())
    assert settings["index.lifecycle.name"] == "envios-logs"
    assert "rollover" in policy["policy"]["phases"]["hot"]["actions"]
    assert "delete" in policy["policy"]["phases"]["delete"]["actions"]


def test_inputs_cover_every_stack_log(tmp_path: Path) -> None:
    stack = Stack(load_topology(), tmp_path / "state", {})
    programs = stack.programs()
    assert programs
    for program in programs:
        matched = matching_inputs(stack.log_path(program.name), stack.state_dir)
        assert len(matched) == 1, (program.name, matched)
        if is_envios_process(program.command):
            assert matched == [APP_INPUT], program.name
        else:
            assert APP_INPUT not in matched, program.name
    assert matching_inputs(stack.log_path("envoy"), stack.state_dir) == [ENVOY_INPUT]
    supervisord_log = stack.logs_dir / "supervisord.log"
    assert len(matching_inputs(supervisord_log, stack.state_dir)) == 1


def test_envoy_access_fields_mapped() -> None:
    template = load_template()
    unmapped = [
        key for key in ACCESS_LOG_FORMAT if mapping_of(template, f"envoy.access.{key}") is None
    ]
    assert unmapped == []


class Capture(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.setFormatter(ecs_formatter("shipment", "shipment-primary-1"))
        self.addFilter(TraceContextFilter())
        self.lines = io.StringIO()

    def emit(self, record: logging.LogRecord) -> None:
        self.lines.write(self.format(record) + "\n")

    def documents(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.lines.getvalue().splitlines()]


@pytest.fixture
def captured() -> Any:
    handler = Capture()
    audit_logger = logging.getLogger(AUDIT_LOGGER)
    level = audit_logger.level
    audit_logger.addHandler(handler)
    audit_logger.setLevel(logging.INFO)
    yield handler
    audit_logger.removeHandler(handler)
    audit_logger.setLevel(level)


def log_every_event_kind() -> None:
    record = TransitionRecord("r1", "pending", "handling", "", "picking", 1, 2, True, True, "t1")
    late = TransitionRecord("r2", "handling", "pending", "picking", "", 1, 3, False, True, "")
    rejected = FailedPrecondition(
        "not allowed", reason="INVALID_TRANSITION", metadata={"current_status": "handling"}
    )
    task = TaskRecord(
        id="t1",
        type="transition",
        input=TaskInput(("s1",), "shipped"),
        state="FAILED",
        attempts=2,
        error_message="dead-lettered",
        worker="worker-primary-1",
    )
    tracer = TracerProvider().get_tracer("test")
    with tracer.start_as_current_span("rpc"):
        audit.log_recorded("s1", 2, record, "primary")
        audit.log_recorded("s1", 2, late, "primary")
        audit.log_rejected("s1", Change(status="delivered", task_id="t1"), rejected, "primary")
        log_task_transition(task, "RUNNING", "primary")
    try:
        raise ValueError("boom")
    except ValueError:
        logging.getLogger(AUDIT_LOGGER).exception("unexpected failure")


def test_logged_fields_all_mapped(captured: Capture) -> None:
    log_every_event_kind()
    template = load_template()
    documents = captured.documents()
    assert len(documents) == 5
    for document in documents:
        unmapped = [path for path in leaf_fields(document) if mapping_of(template, path) is None]
        assert unmapped == [], document


def test_envios_strings_mapped_as_keyword(captured: Capture) -> None:
    log_every_event_kind()
    template = load_template()
    for document in captured.documents():
        for path, value in leaf_fields(document).items():
            mapping = mapping_of(template, path)
            assert mapping is not None, path
            if path.startswith(("envios.", "event.", "trace.", "span.")) and isinstance(value, str):
                assert mapping["type"] == "keyword", path


def test_trace_ids_logged_in_span(captured: Capture) -> None:
    log_every_event_kind()
    documents = captured.documents()
    assert all(len(leaf_fields(doc)["trace.id"]) == 32 for doc in documents[:4])
    assert "trace.id" not in leaf_fields(documents[4])
