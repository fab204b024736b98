"""The Grafana dashboards: committed as built, and every query names a metric the agent emits."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from builders import full_snapshot
from temper.serve.dashboards import build_dashboards, main, metric_names_in, stale_files
from temper.serve.metrics import build_registry, render_metrics

COMMITTED = Path(__file__).resolve().parents[2] / "charts" / "temper" / "dashboards"
DASHBOARDS = build_dashboards()


def emitted_names() -> set[str]:
    """Sample names as the exposition spells them, for a snapshot with every field set."""
    text = render_metrics(build_registry(full_snapshot)).decode()
    return {s.name for family in text_string_to_metric_families(text) for s in family.samples}


def queries(model: dict[str, Any]) -> Iterator[str]:
    for panel in model["panels"]:
        yield from (target["expr"] for target in panel["targets"])
    for variable in model["templating"]["list"]:
        if variable["type"] == "query":
            yield variable["query"]["query"]


def test_the_committed_dashboards_are_the_built_ones() -> None:
    stale = stale_files(COMMITTED)
    assert not stale, (
        f"{stale}: run `python -m temper.serve.dashboards --out charts/temper/dashboards`"
    )


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_every_query_names_only_metrics_the_agent_emits(name: str) -> None:
    emitted = emitted_names()
    for expr in queries(DASHBOARDS[name]):
        used = metric_names_in(expr)
        assert used, f"{expr!r} names no Temper metric"
        assert used <= emitted, f"{expr!r} names {sorted(used - emitted)}, never emitted"


@pytest.mark.parametrize("name", sorted(DASHBOARDS))
def test_dashboards_are_identified_and_their_panels_placed(name: str) -> None:
    model = DASHBOARDS[name]
    assert model["uid"]
    assert model["title"]
    assert name == f"{model['uid']}.json"
    ids = [panel["id"] for panel in model["panels"]]
    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in model["panels"])


def test_dashboards_pick_a_data_source_and_nodes() -> None:
    for model in DASHBOARDS.values():
        variables = {v["name"]: v for v in model["templating"]["list"]}
        assert (variables["datasource"]["type"], variables["datasource"]["query"]) == (
            "datasource",
            "prometheus",
        )
        assert variables["instance"]["definition"] == "label_values(temper_agent_mode, instance)"
        assert model["schemaVersion"] == 39


def test_metric_names_are_found_as_the_exposition_spells_them() -> None:
    expr = (
        'sum by (tier) (rate(temper_tier_samples_total{instance=~"$instance"}[$__rate_interval]))'
        " / on() group_left temper_layer_cpus"
    )
    assert metric_names_in(expr) == {"temper_tier_samples_total", "temper_layer_cpus"}
    assert metric_names_in("$temper_var + my_temper_x") == set()


def test_check_lists_stale_files_and_out_fixes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--out", str(tmp_path)]) == 0
    assert main(["--check", str(tmp_path)]) == 0
    (tmp_path / "temper-node.json").write_text("{}\n")
    (tmp_path / "old.json").write_text("{}\n")
    assert main(["--check", str(tmp_path)]) == 1
    err = capsys.readouterr().err
    assert "temper-node.json: differs" in err
    assert "old.json: not built here" in err
    assert "temper-agent-cost.json" not in err
