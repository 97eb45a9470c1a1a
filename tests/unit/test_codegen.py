"""The generated code in gen/ matches the protos."""

from pathlib import Path

from ops.codegen import GEN, generate, stale_files


def test_generated_code_is_fresh(tmp_path: Path) -> None:
    generate(tmp_path)
    assert stale_files(tmp_path, GEN) == [], "gen/ is stale; run `python -m ops.codegen`"


def test_hand_edit_detected(tmp_path: Path) -> None:
    fresh, edited = tmp_path / "fresh", tmp_path / "edited"
    generate(fresh)
    generate(edited)
    (edited / "envios" / "task" / "v1" / "task_pb2.py").write_text("# edited by hand\n")
    (edited / "envios" / "extra.py").write_text("")
    assert stale_files(fresh, edited) == ["envios/extra.py", "envios/task/v1/task_pb2.py"]
