#!/usr/bin/env python3
"""Generate pgvigil's Grafana dashboards (dashboards/*.json) with the Grafana Foundation SDK.

    python dashboards/generate.py          # rewrite the JSON files
    python dashboards/generate.py --check  # exit 1 if a committed file is stale or off-schema

`python` is the one with the pinned SDK that scripts/install-test-deps.sh installs
($PGVIGIL_PYTHON_TOOLS, by default ~/.cache/pgvigil/python-tools/bin/python); the SDK needs no
network once installed.

What is shown (panels, queries, annotations) is plain data in panels.py; this file only turns it
into dashboards with the SDK's typed builders, which are generated from the schemas Grafana
publishes (the pinned SDK is the one for Grafana 11.6). `mypy --strict dashboards` type-checks
every builder call against them. `--check` then:

1. regenerates every dashboard and compares it with the committed file, byte for byte;
2. decodes each committed file with the SDK's models and encodes it again: a key the schema does
   not know is dropped by the round trip and reported, and so is a value the models change, or
   a unit that is not one of the SDK's (models/units.py).

Grafana's annotation schema leaves data-source-specific keys open; the SDK types only `expr`. The
Prometheus data source also reads `titleFormat`, `tagKeys`, `textFormat` and `step`: those four,
and nothing else, are added by PrometheusAnnotation below and accepted by the round trip.
"""

import json
import os
import sys
import typing

sys.dont_write_bytecode = True  # no __pycache__ in the source tree

try:
    import grafana_foundation_sdk  # noqa: F401
except ImportError:
    sys.exit("dashboards/generate.py needs the pinned Grafana Foundation SDK: run "
             "scripts/install-test-deps.sh, then use ~/.cache/pgvigil/python-tools/bin/python "
             "(or $PGVIGIL_PYTHON_TOOLS/bin/python)")

from grafana_foundation_sdk.builders import dashboard as dash
from grafana_foundation_sdk.builders import gauge, prometheus, stat, table, timeseries
from grafana_foundation_sdk.builders import common as common_builders
from grafana_foundation_sdk.cog import builder as cogbuilder
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.cog.plugins import register_default_plugins
from grafana_foundation_sdk.models import common, units
from grafana_foundation_sdk.models import dashboard as model
from grafana_foundation_sdk.models import prometheus as prom_model

import panels
from panels import Annotation, P, Q, Row

HERE = os.path.dirname(os.path.abspath(__file__))
DS = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
GRID_WIDTH = 24

# Keys the Prometheus data source reads from an annotation query beside the typed `expr`.
PROMETHEUS_ANNOTATION_KEYS = ("titleFormat", "tagKeys", "textFormat", "step")
ANNOTATION_STEP = "60s"

AnyPanel = (
    timeseries.Panel | stat.Panel | gauge.Panel | table.Panel
)


# --- annotations -------------------------------------------------------------------------------


class PrometheusAnnotationQuery(model.AnnotationQuery):
    """An annotation query of the Prometheus data source: Grafana's AnnotationQuery plus the keys
    that data source reads to title, tag and describe the events it makes."""

    def __init__(self, title_format: str, tag_keys: str, text_format: str, step: str) -> None:
        super().__init__()
        self.title_format = title_format
        self.tag_keys = tag_keys
        self.text_format = text_format
        self.step = step

    def to_json(self) -> dict[str, object]:
        payload = super().to_json()
        payload.update(titleFormat=self.title_format, tagKeys=self.tag_keys,
                       textFormat=self.text_format, step=self.step)
        return payload


class PrometheusAnnotation(cogbuilder.Builder[model.AnnotationQuery]):
    def __init__(self, a: Annotation) -> None:
        self._internal = PrometheusAnnotationQuery(
            title_format=a.title, tag_keys=",".join(a.tags), text_format=a.text, step=ANNOTATION_STEP)
        self._internal.name = a.name
        self._internal.datasource = DS
        self._internal.enable = True
        self._internal.hide = False
        self._internal.icon_color = a.color
        self._internal.expr = a.expr

    def build(self) -> model.AnnotationQuery:
        return self._internal


def builtin_annotation() -> dash.AnnotationQuery:
    """Grafana's own annotations and alerts, as every new dashboard has them."""
    return (dash.AnnotationQuery()
            .name("Annotations & Alerts")
            .datasource(model.DataSourceRef(type_val="grafana", uid="-- Grafana --"))
            .enable(True)
            .hide(True)
            .icon_color("rgba(0, 211, 255, 1)")
            .type("dashboard")
            .built_in(1))


# --- panels ------------------------------------------------------------------------------------


def query(q: Q, ref_id: str) -> prometheus.Dataquery:
    out = (prometheus.Dataquery()
           .expr(q.expr)
           .legend_format(q.legend or "__auto")
           .ref_id(ref_id)
           .datasource(DS))
    if q.table:
        return out.instant().format(prom_model.PromQueryFormat.TABLE)
    return out.range()


def thresholds(steps: panels.Steps | None) -> dash.ThresholdsConfig:
    steps = steps or ((None, "green"),)
    return (dash.ThresholdsConfig()
            .mode(model.ThresholdsMode.ABSOLUTE)
            .steps([model.Threshold(value=v, color=c) for v, c in steps]))


UP_DOWN: list[model.ValueMapping] = [model.ValueMap(options={
    "0": model.ValueMappingResult(text="DOWN", color="red"),
    "1": model.ValueMappingResult(text="UP", color="green"),
})]


def reduce_last() -> common_builders.ReduceDataOptions:
    return common_builders.ReduceDataOptions().calcs(["lastNotNull"]).fields("").values(False)


def timeseries_panel(p: P) -> timeseries.Panel:
    return (timeseries.Panel()
            .draw_style(common.GraphDrawStyle.LINE)
            .line_width(1)
            .fill_opacity(10)
            .show_points(common.VisibilityMode.NEVER)
            .span_nulls(False)
            .thresholds_style(common_builders.GraphThresholdsStyleConfig().mode(
                common.GraphThresholdsStyleMode.LINE if p.steps else common.GraphThresholdsStyleMode.OFF))
            .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.PALETTE_CLASSIC))
            .legend(common_builders.VizLegendOptions()
                    .display_mode(common.LegendDisplayMode.TABLE)
                    .placement(common.LegendPlacement.BOTTOM)
                    .show_legend(True)
                    .calcs(["lastNotNull", "max"]))
            .tooltip(common_builders.VizTooltipOptions()
                     .mode(common.TooltipDisplayMode.MULTI)
                     .sort(common.SortOrder.DESCENDING)))


def stat_panel(p: P) -> stat.Panel:
    out = (stat.Panel()
           .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
           .reduce_options(reduce_last())
           .color_mode(common.BigValueColorMode.BACKGROUND)
           .graph_mode(common.BigValueGraphMode.NONE)
           .text_mode(common.BigValueTextMode.AUTO)
           .orientation(common.VizOrientation.AUTO)
           .justify_mode(common.BigValueJustifyMode.AUTO))
    return out.mappings(UP_DOWN) if p.up_down else out


def gauge_panel(p: P) -> gauge.Panel:
    return (gauge.Panel()
            .color_scheme(dash.FieldColor().mode(model.FieldColorModeId.THRESHOLDS))
            .reduce_options(reduce_last())
            .show_threshold_markers(True)
            .show_threshold_labels(False))


def table_panel(p: P) -> table.Panel:
    hidden = {"Time": True, "__name__": True, "job": True}
    return (table.Panel()
            .show_header(True)
            .cell_height(common.TableCellHeight.SM)
            .footer(common_builders.TableFooterOptions().show(False).reducer(["sum"]).fields([]))
            .with_transformation(model.DataTransformerConfig(id_val="merge", options={}))
            .with_transformation(model.DataTransformerConfig(id_val="organize", options={"excludeByName": hidden})))


KINDS: dict[str, typing.Callable[[P], AnyPanel]] = {
    "timeseries": timeseries_panel, "stat": stat_panel, "gauge": gauge_panel, "table": table_panel,
}


def panel(p: P, pid: int, x: int, y: int) -> AnyPanel:
    out = KINDS[p.kind](p)
    out = (out.id(pid)
           .title(p.title)
           .description(p.desc)
           .datasource(DS)
           .grid_pos(model.GridPos(h=p.h, w=p.w, x=x, y=y))
           .unit(p.unit)
           .thresholds(thresholds(p.steps)))
    if p.min is not None:
        out = out.min(p.min)
    if p.max is not None:
        out = out.max(p.max)
    for i, q in enumerate(p.queries):
        out = out.with_target(query(q, chr(ord("A") + i)))
    return out


# --- dashboards --------------------------------------------------------------------------------


def variables(with_datname: bool) -> list[cogbuilder.Builder[model.VariableModel]]:
    def label_values(name: str, label: str, q: str) -> dash.QueryVariable:
        return (dash.QueryVariable(name)
                .label(label)
                .datasource(DS)
                .query(q)
                .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED)
                .multi(True)
                .include_all(True)
                .all_value(".+")
                .sort(model.VariableSort.ALPHABETICAL_ASC))

    out: list[cogbuilder.Builder[model.VariableModel]] = [
        dash.DatasourceVariable("datasource").label("Data source").type("prometheus"),
        label_values("target", "Target", "label_values(pgvigil_up, target)"),
    ]
    if with_datname:
        out.append(label_values("datname", "Database",
                                'label_values(pgvigil_connections{target=~"$target"}, datname)'))
    return out


def layout(items: tuple[P | Row, ...]) -> typing.Iterator[tuple[P | Row, int, int, int]]:
    """(item, id, x, y): rows span the grid; panels fill it left to right and wrap."""
    pid, x, y, row_h = 1, 0, 0, 0
    for item in items:
        if isinstance(item, Row):
            if x:
                y, x = y + row_h, 0
            yield item, pid, 0, y
            pid, y, row_h = pid + 1, y + 1, 0
            continue
        if x + item.w > GRID_WIDTH:
            y, x, row_h = y + row_h, 0, 0
        yield item, pid, x, y
        pid, x, row_h = pid + 1, x + item.w, max(row_h, item.h)


def dashboard(d: panels.Dashboard) -> dash.Dashboard:
    out = (dash.Dashboard(d.title)
           .uid(d.uid)
           .tags(["pgvigil", "postgresql"])
           .timezone("")
           .editable()
           .tooltip(model.DashboardCursorSync.CROSSHAIR)
           .version(1)
           .refresh("30s")
           .fiscal_year_start_month(0)
           .time("now-3h", "now")
           .live_now(False)
           .link(dash.DashboardLink("pgvigil")
                 .type(model.DashboardLinkType.DASHBOARDS)
                 .tags(["pgvigil"])
                 .as_dropdown(True)
                 .include_vars(True)
                 .keep_time(True))
           .annotation(builtin_annotation())
           .variables(variables(d.datname)))
    for a in panels.ANNOTATIONS:
        out = out.annotation(PrometheusAnnotation(a))
    for item, pid, x, y in layout(d.items):
        if isinstance(item, Row):
            out = out.with_row(dash.Row(item.title).id(pid).grid_pos(model.GridPos(h=1, w=GRID_WIDTH, x=0, y=y)))
        else:
            out = out.with_panel(panel(item, pid, x, y))
    return out


def render(d: panels.Dashboard) -> str:
    return JSONEncoder(sort_keys=True, indent=2).encode(dashboard(d).build()) + "\n"


def path_of(d: panels.Dashboard) -> str:
    return os.path.join(HERE, d.uid.removeprefix("pgvigil-") + ".json")


# --- checks ------------------------------------------------------------------------------------

UNITS = {v for k, v in vars(units).items() if not k.startswith("_") and isinstance(v, str)}


def schema_problems(committed: dict[str, typing.Any]) -> list[str]:
    """What the SDK's models do not round-trip in a dashboard: unknown keys, changed values and
    unknown units."""
    register_default_plugins()
    decoded = model.Dashboard.from_json(committed)
    again = json.loads(JSONEncoder().encode(decoded))
    problems: list[str] = []

    def walk(a: object, b: object, at: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for key, value in a.items():
                if key == "unit" and value not in UNITS:
                    problems.append(f"{at}.unit: {value!r} is not a Grafana unit")
                if key not in b:
                    allowed = at.startswith(".annotations.list[") and key in PROMETHEUS_ANNOTATION_KEYS
                    if not allowed:
                        problems.append(f"{at}.{key}: not in the schema")
                else:
                    walk(value, b[key], f"{at}.{key}")
        elif isinstance(a, list) and isinstance(b, list) and len(a) == len(b):
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{at}[{i}]")
        elif a != b:
            problems.append(f"{at}: {a!r} reads back as {b!r}")

    walk(committed, again, "")
    return problems


def check() -> list[str]:
    problems = []
    for d in panels.DASHBOARDS:
        path = path_of(d)
        name = os.path.relpath(path, os.path.dirname(HERE))
        try:
            with open(path) as f:
                text = f.read()
        except FileNotFoundError:
            problems.append(f"{name}: missing, run dashboards/generate.py")
            continue
        if text != render(d):
            problems.append(f"{name}: stale, run dashboards/generate.py")
        problems += [f"{name}: {p}" for p in schema_problems(json.loads(text))]
    return problems


def main() -> None:
    if "--check" in sys.argv[1:]:
        problems = check()
        if problems:
            print("\n".join(problems), file=sys.stderr)
            sys.exit(1)
        return
    for d in panels.DASHBOARDS:
        with open(path_of(d), "w") as f:
            f.write(render(d))


if __name__ == "__main__":
    main()
